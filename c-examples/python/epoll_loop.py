"""epoll_loop: Python bindings (ctypes, standard library only) for libepoll_loop.

A callback event loop on Linux epoll, shaped like :class:`select.epoll`, plus
timers and the library's echo server.

Finding the library, first match wins:

1. the environment variable ``EPOLL_LOOP_LIB``: a path to ``libepoll_loop.so``
   (or to a directory holding it);
2. ``libepoll_loop.so`` (or ``.so.0``) next to this module;
3. the system's search path: ``ctypes.util.find_library('epoll_loop')``, then
   ``libepoll_loop.so.0`` through the dynamic loader (``LD_LIBRARY_PATH``,
   ``ld.so.cache``), as installed by ``make install``.

:data:`LIBRARY_PATH` says which one was loaded.

Coming from select.epoll
------------------------

The same registration calls, with a callback instead of a loop over the
returned events. This ``select.epoll`` code::

    ep = select.epoll()
    ep.register(sock.fileno(), select.EPOLLIN)
    while True:
        for fd, events in ep.poll(1.0):
            handle(fd, events)

becomes (``select.EPOLL*`` constants work as they are; so do this module's):

>>> import socket
>>> a, b = socket.socketpair()
>>> seen = []
>>> def handle(fd, events):
...     seen.append(a.recv(100))
...     loop.unregister(fd)              # run() returns when nothing is left
>>> with Loop() as loop:
...     loop.register(a, EPOLLIN, handle)   # a socket or its fileno()
...     _ = b.send(b'ping')
...     loop.run()                      # or: while ...: loop.poll(1.0)
0
>>> seen
[b'ping']
>>> a.close(); b.close()

Differences from ``select.epoll``:

* ``poll(timeout)`` dispatches the events to the callbacks and returns how
  many callbacks ran, instead of returning the events. Timeouts are seconds,
  as in :mod:`select` (``None`` or negative: wait forever).
* ``register`` takes the callback as third argument and has no default mask.
* Registering twice raises ``FileExistsError`` (``EEXIST``), as
  ``select.epoll`` does; a regular file raises ``PermissionError`` (``EPERM``).

Errors are ``OSError(errno, strerror)`` (so Python picks the subclass:
``FileExistsError``, ``PermissionError``, ``FileNotFoundError`` for ``ENOENT``,
...). Calls on a closed loop raise ``ValueError``, as ``select.epoll`` does.

Callbacks run inside :meth:`Loop.poll` / :meth:`Loop.run`, on the thread that
calls them. An exception raised by a callback does not get lost: the loop
keeps the first one, lets the current dispatch finish (and ends a ``run``),
then raises it from ``poll``/``run``. Signals: while the main thread waits in
``poll``/``run`` (and nothing else set :func:`signal.set_wakeup_fd`), a signal
wakes the loop, so Ctrl-C raises ``KeyboardInterrupt`` at once, as it does in
``select.epoll.poll``.

ctypes itself cannot carry an exception out of a callback: it prints it
("Exception ignored on calling ctypes callback function") and goes on. The
dispatch code catches everything a callback raises, and for the one place it
cannot (a signal handler raising on a trampoline's first instruction) the
module installs, when the first Loop is made, a :data:`sys.unraisablehook` that
hands exceptions escaping its own trampolines to their loop and passes all
others to the hook that was there before.

The loop keeps every registered callable (and its ctypes trampolines) alive
while it may still call it. Only :meth:`Loop.stop` and :meth:`Loop.wake` may be
called from other threads.
"""

import ctypes
import ctypes.util
import errno as _errno
import os
import select as _select
import signal as _signal
import socket as _socket
import sys as _sys
import threading as _threading
import weakref as _weakref

__all__ = [
    "Loop",
    "EchoServer",
    "LIBRARY_PATH",
    "library_version",
    "EPOLLIN",
    "EPOLLOUT",
    "EPOLLPRI",
    "EPOLLERR",
    "EPOLLHUP",
    "EPOLLRDHUP",
    "EPOLLET",
    "EPOLLONESHOT",
    "EPOLLEXCLUSIVE",
    "LOG_ERROR",
    "LOG_WARN",
    "LOG_INFO",
    "LOG_DEBUG",
]

# Event bits: the <sys/epoll.h> values (the library's EPOLL_LOOP_* are equal).
EPOLLIN = 0x001
EPOLLPRI = 0x002
EPOLLOUT = 0x004
EPOLLERR = 0x008
EPOLLHUP = 0x010
EPOLLRDHUP = 0x2000
EPOLLEXCLUSIVE = 1 << 28
EPOLLONESHOT = 1 << 30
EPOLLET = 1 << 31

# Echo server log levels (EPOLL_LOOP_LOG_*).
LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG = 1, 2, 3, 4

# The C library's ABI major version this module was written for (the soname's number).
_ABI_MAJOR = 0

# ------------------------------------------------------------------ loading


def _candidates():
    env = os.environ.get("EPOLL_LOOP_LIB")
    if env:
        if os.path.isdir(env):
            env = os.path.join(env, "libepoll_loop.so")
        yield "EPOLL_LOOP_LIB", env
        return  # an explicit choice: do not silently fall back
    here = os.path.dirname(os.path.abspath(__file__))
    for name in ("libepoll_loop.so", "libepoll_loop.so.0"):
        path = os.path.join(here, name)
        if os.path.exists(path):
            yield "next to the module", path
    found = ctypes.util.find_library("epoll_loop")
    if found:
        yield "find_library", found
    yield "the dynamic loader", "libepoll_loop.so.0"


def _load():
    errors = []
    for how, path in _candidates():
        try:
            return ctypes.CDLL(path, use_errno=False), path
        except OSError as e:
            errors.append("%s (%s): %s" % (path, how, e))
    raise ImportError(
        "cannot load libepoll_loop: "
        + "; ".join(errors)
        + ". Set EPOLL_LOOP_LIB to the path of libepoll_loop.so, put the library "
        "next to epoll_loop.py, or install it (make install) where the loader finds it."
    )


_lib, LIBRARY_PATH = _load()

_c_void_p = ctypes.c_void_p
_IO_CB = ctypes.CFUNCTYPE(None, _c_void_p, ctypes.c_int, ctypes.c_uint32, _c_void_p)
_TIMER_CB = ctypes.CFUNCTYPE(None, _c_void_p, ctypes.c_uint64, _c_void_p)
_LOG_FN = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, _c_void_p)


class _LoopStats(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in (
            "iterations",
            "events",
            "callbacks",
            "timers_fired",
            "callback_ns",
            "slowest_callback_ns",
            "registered",
            "timers_pending",
        )
    ]


class _EchoServerStats(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in (
            "accepted",
            "active",
            "closed",
            "rejected",
            "bytes_in",
            "bytes_out",
            "idle_timeouts",
            "accept_errors",
        )
    ]


class _EchoServerConfig(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("host", ctypes.c_char_p),
        ("port", ctypes.c_uint16),
        ("backlog", ctypes.c_int),
        ("threads", ctypes.c_uint32),
        ("max_connections", ctypes.c_uint32),
        ("idle_timeout_ms", ctypes.c_uint32),
        ("max_pending_bytes", ctypes.c_size_t),
        ("log", _LOG_FN),
        ("log_user_data", _c_void_p),
        ("log_level", ctypes.c_int),
    ]


# The library writes (and reads) its own idea of these structs' sizes; a newer
# library may have grown them at the end. Buffers this large leave room.
_STRUCT_ROOM = 1024


def _room_for(struct_type):
    """A zeroed buffer of at least _STRUCT_ROOM bytes, viewed as struct_type."""
    buf = ctypes.create_string_buffer(max(_STRUCT_ROOM, ctypes.sizeof(struct_type)))
    return buf, struct_type.from_buffer(buf)


def _fn(name, restype, *argtypes):
    f = getattr(_lib, name)
    f.restype = restype
    f.argtypes = list(argtypes)
    return f


_int, _u32, _u64 = ctypes.c_int, ctypes.c_uint32, ctypes.c_uint64
_new = _fn("epoll_loop_new", _int, ctypes.POINTER(_c_void_p))
_from_fd = _fn("epoll_loop_from_fd", _int, _int, ctypes.POINTER(_c_void_p))
_fileno = _fn("epoll_loop_fileno", _int, _c_void_p)
_free = _fn("epoll_loop_free", _int, _c_void_p)
_register = _fn("epoll_loop_register", _int, _c_void_p, _int, _u32, _IO_CB, _c_void_p)
_modify = _fn("epoll_loop_modify", _int, _c_void_p, _int, _u32)
_unregister = _fn("epoll_loop_unregister", _int, _c_void_p, _int)
_poll = _fn("epoll_loop_poll", _int, _c_void_p, _int)
_wake = _fn("epoll_loop_wake", _int, _c_void_p)
_timer_start = _fn(
    "epoll_loop_timer_start", _int, _c_void_p, _u64, _u64, _TIMER_CB, _c_void_p, ctypes.POINTER(_u64)
)
_timer_stop = _fn("epoll_loop_timer_stop", _int, _c_void_p, _u64)
_get_stats = _fn("epoll_loop_get_stats", _int, _c_void_p, _c_void_p)
_strerror = _fn("epoll_loop_strerror", ctypes.c_char_p, _int)
_version = _fn("epoll_loop_version", _u32)
_version_string = _fn("epoll_loop_version_string", ctypes.c_char_p)
_config_init = _fn("echo_server_config_init", None, _c_void_p)
_srv_start = _fn("echo_server_start", _int, _c_void_p, ctypes.POINTER(_c_void_p))
_srv_port = _fn("echo_server_port", _int, _c_void_p)
_srv_stats = _fn("echo_server_get_stats", _int, _c_void_p, _c_void_p)
_srv_stop = _fn("echo_server_stop", _int, _c_void_p)

if _version() >> 16 != _ABI_MAJOR:
    raise ImportError(
        "%s is version %s; this module needs %d.x"
        % (LIBRARY_PATH, _version_string().decode(), _ABI_MAJOR)
    )


def library_version():
    """The loaded library's version string, e.g. '0.1.0'."""
    return _version_string().decode()


def _check(rc, what=None):
    """Returns rc if >= 0; raises OSError(errno, strerror) for -errno.

    The library's own codes (-3000 and below) are no errno: a name-resolution
    failure (EPOLL_LOOP_EAI_x, -3000..-3099, equal to EAI_x - 3000) raises
    socket.gaierror(socket.EAI_x, message), as socket.getaddrinfo would; any
    other raises OSError(-rc, message). The message is epoll_loop_strerror's.
    """
    if rc >= 0:
        return rc
    if rc <= -3000:
        message = _strerror(rc).decode()
        if rc > -3100:
            err = _socket.gaierror(rc + 3000, message)
        else:
            err = OSError(-rc, message)
    else:
        err = OSError(-rc, os.strerror(-rc))
    if what and hasattr(err, "add_note"):
        err.add_note("from " + what)
    raise err


def _trampoline(cfunctype, owner, method):
    """A ctypes callback calling ``owner.method(*args)``; holds owner weakly (no
    reference cycle), and is marked so that _unraisable_hook can route an
    exception that escapes it back to the owner."""
    ref = _weakref.ref(owner)

    def tramp(*args):
        o = ref()
        if o is not None:
            getattr(o, method)(*args)

    tramp._epoll_loop_owner = ref
    return cfunctype(tramp)


# ctypes cannot propagate an exception out of a callback; it reports it to
# sys.unraisablehook and carries on. The dispatch methods catch everything
# their callbacks raise, but a signal handler (KeyboardInterrupt) can also fire
# on a trampoline's very first instruction, before any try block. This hook
# hands such exceptions to the owning Loop (re-raised from poll/run) instead
# of printing and dropping them; everything else goes to the previous hook.
_previous_unraisable_hook = None


def _unraisable_hook(args):
    ref = getattr(args.object, "_epoll_loop_owner", None)
    owner = ref() if ref is not None else None
    if owner is not None and args.exc_value is not None:
        owner._failed(args.exc_value)
    else:
        _previous_unraisable_hook(args)


def _install_unraisable_hook():
    global _previous_unraisable_hook
    if _sys.unraisablehook is not _unraisable_hook:
        _previous_unraisable_hook = _sys.unraisablehook
        _sys.unraisablehook = _unraisable_hook


def _fd_of(fd):
    if isinstance(fd, int):
        return fd
    return fd.fileno()


def _timeout_ms(timeout):
    """Seconds (select's unit) to the library's ms, rounded up as select.epoll does."""
    if timeout is None or timeout < 0:
        return -1
    ms = int(-(-timeout * 1000 // 1))  # ceil without importing math
    return min(ms, 2**31 - 1)


# ------------------------------------------------------------------ Loop


class Loop:
    """An event loop: ``select.epoll`` with callbacks and timers.

    ``Loop()`` creates a new epoll set; ``Loop.fromfd(epfd)`` adopts one (the loop
    then owns it). Use it as a context manager, or call :meth:`close`.
    """

    def __init__(self, _epfd=None):
        ptr = _c_void_p()
        if _epfd is None:
            _check(_new(ctypes.byref(ptr)), "epoll_loop_new")
        else:
            _check(_from_fd(_epfd, ctypes.byref(ptr)), "epoll_loop_from_fd")
        self._ptr = ptr.value
        # close() against stop()/wake() from other threads (reentrant: a signal
        # handler may call stop() while this thread is inside close()).
        self._lock = _threading.RLock()
        self._fds = {}  # fd -> callback(fd, events)
        self._timers = {}  # id -> (callback, repeating)
        self._exc = None  # first exception raised by a callback, re-raised after dispatch
        self._stop_requested = False
        self._dispatching = False
        self._internal_calls = 0
        self._wakeup = None  # (read socket, write socket) for signal.set_wakeup_fd
        self._stats_buf = _room_for(_LoopStats)  # reused by run() on every iteration
        # One trampoline of each kind for the loop's whole life: the C library
        # holds their addresses for every registration and timer.
        self._io_tramp = _trampoline(_IO_CB, self, "_on_io")
        self._timer_tramp = _trampoline(_TIMER_CB, self, "_on_timer")
        self._wakeup_tramp = _trampoline(_IO_CB, self, "_on_wakeup")
        _install_unraisable_hook()

    @classmethod
    def fromfd(cls, epfd):
        """A loop on an existing epoll descriptor, which it then owns."""
        return cls(_epfd=epfd)

    # ---------------------------------------------------------- lifecycle

    @property
    def closed(self):
        return self._ptr is None

    def _live(self):
        if self._ptr is None:
            raise ValueError("I/O operation on closed epoll object")
        return self._ptr

    def close(self):
        """Frees the loop (registered fds stay open). Idempotent."""
        with self._lock:
            ptr, self._ptr = self._ptr, None
            if ptr is None:
                return
            rc = _free(ptr)
            if rc < 0:  # EBUSY: inside one of its callbacks
                self._ptr = ptr
                _check(rc, "epoll_loop_free")
        self._fds.clear()
        self._timers.clear()
        if self._wakeup:
            for s in self._wakeup:
                s.close()
            self._wakeup = None

    def __enter__(self):
        self._live()
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        if getattr(self, "_ptr", None) is not None and not getattr(self, "_dispatching", True):
            try:
                self.close()
            except Exception:
                pass

    def fileno(self):
        """The epoll descriptor (readable when events are pending)."""
        return _check(_fileno(self._live()))

    # ---------------------------------------------------------- registrations

    def register(self, fd, events, callback):
        """Calls ``callback(fd, events)`` whenever ``fd`` (an int or an object
        with ``fileno()``) is ready for any of ``events``."""
        fd = _fd_of(fd)
        if not callable(callback):
            raise TypeError("callback must be callable")
        _check(_register(self._live(), fd, events, self._io_tramp, None), "epoll_loop_register")
        self._fds[fd] = callback

    def modify(self, fd, events):
        """Changes the events watched for a registered fd; the callback stays."""
        _check(_modify(self._live(), _fd_of(fd), events), "epoll_loop_modify")

    def unregister(self, fd):
        """Stops watching ``fd``; works after the fd was closed too."""
        fd = _fd_of(fd)
        _check(_unregister(self._live(), fd), "epoll_loop_unregister")
        self._fds.pop(fd, None)

    # ---------------------------------------------------------- timers

    def timer_start(self, after_ms, repeat_ms, callback):
        """Calls ``callback(timer_id)`` after ``after_ms`` ms, then every
        ``repeat_ms`` ms (0: once). Returns the timer id (never reused)."""
        if not callable(callback):
            raise TypeError("callback must be callable")
        if after_ms < 0 or repeat_ms < 0:
            raise ValueError("after_ms and repeat_ms must be >= 0")
        out = _u64()
        _check(
            _timer_start(
                self._live(), int(after_ms), int(repeat_ms), self._timer_tramp, None, ctypes.byref(out)
            ),
            "epoll_loop_timer_start",
        )
        self._timers[out.value] = (callback, repeat_ms > 0)
        return out.value

    def call_later(self, delay, callback, *args):
        """Calls ``callback(*args)`` once, ``delay`` seconds from now. Returns the timer id."""
        return self.timer_start(_timeout_ms(max(delay, 0)), 0, lambda _id: callback(*args))

    def timer_stop(self, timer_id):
        """Stops a pending timer; ``FileNotFoundError`` (ENOENT) if it already fired or is unknown."""
        _check(_timer_stop(self._live(), timer_id), "epoll_loop_timer_stop")
        self._timers.pop(timer_id, None)

    # ---------------------------------------------------------- running

    def poll(self, timeout=-1):
        """Waits up to ``timeout`` seconds (None or negative: forever, 0: not at
        all) and runs the callbacks of what is ready and of the due timers.
        Returns how many callbacks ran."""
        ptr = self._live()
        ms = _timeout_ms(timeout)
        if self._dispatching:  # called from one of this loop's callbacks
            _check(-_errno.EBUSY, "epoll_loop_poll")
        restore = self._arm_signal_wakeup()
        self._internal_calls = 0
        self._dispatching = True
        try:
            rc = _poll(ptr, ms)
        finally:
            self._dispatching = False
            if restore is not None:
                _signal.set_wakeup_fd(restore)
        self._raise_pending()
        return _check(rc, "epoll_loop_poll") - self._internal_calls

    def run(self):
        """Polls until :meth:`stop` (returns 1) or until nothing is registered and
        no timer is pending (returns 0). A stop requested before ``run`` makes
        it return 1 at once. Raises what a callback raised (ending the run)."""
        self._live()
        if self._dispatching:
            _check(-_errno.EBUSY, "epoll_loop_run")
        while True:
            if self._stop_requested:
                self._stop_requested = False
                return 1
            st = self._stats_struct()
            internal = 1 if self._wakeup else 0
            if st.registered - internal == 0 and st.timers_pending == 0:
                return 0
            self.poll(-1)  # raises what a callback raised

    def stop(self):
        """Makes :meth:`run` return 1 after the current iteration. Any thread."""
        with self._lock:
            self._live()
            self._stop_requested = True
            _wake(self._ptr)

    def wake(self):
        """Makes a blocked :meth:`poll` return. Any thread."""
        with self._lock:
            _check(_wake(self._live()), "epoll_loop_wake")

    def stats(self):
        """The loop's counters as a dict (see ``epoll_loop_stats`` in the header)."""
        st = self._stats_struct()
        d = {name: getattr(st, name) for name, _ in _LoopStats._fields_}
        if self._wakeup:
            d["registered"] -= 1
        return d

    def _stats_struct(self):
        buf, st = self._stats_buf
        _check(_get_stats(self._live(), ctypes.addressof(buf)), "epoll_loop_get_stats")
        return st

    # ---------------------------------------------------------- dispatch (called by C)

    def _failed(self, exc):
        if self._exc is None:
            self._exc = exc
        elif exc is not self._exc and hasattr(self._exc, "add_note"):
            self._exc.add_note("another callback raised too: %r" % (exc,))

    def _raise_pending(self):
        exc, self._exc = self._exc, None
        if exc is not None:
            raise exc

    def _on_io(self, _loop, fd, events, _ud):
        try:
            cb = self._fds.get(fd)
            if cb is not None:
                cb(fd, events)
        except BaseException as e:  # KeyboardInterrupt and SystemExit too
            self._failed(e)

    def _on_timer(self, _loop, timer_id, _ud):
        try:
            entry = self._timers.get(timer_id)
            if entry is not None:
                cb, repeating = entry
                if not repeating:
                    del self._timers[timer_id]
                cb(timer_id)
        except BaseException as e:
            self._failed(e)

    def _on_wakeup(self, _loop, _fd, _events, _ud):
        # A signal arrived: Python runs its handler as soon as this bytecode
        # runs (a KeyboardInterrupt is raised here and kept for the caller).
        self._internal_calls += 1
        try:
            while self._wakeup[0].recv(512):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        except BaseException as e:
            self._failed(e)

    def _arm_signal_wakeup(self):
        """In the main thread, points signal.set_wakeup_fd at a socket the loop
        watches, unless someone else set one. Returns the fd to restore, or None."""
        if _threading.current_thread() is not _threading.main_thread():
            return None
        if self._wakeup is None:
            r, w = _socket.socketpair()
            r.setblocking(False)
            w.setblocking(False)
            rc = _register(self._ptr, r.fileno(), EPOLLIN, self._wakeup_tramp, None)
            if rc < 0:
                r.close()
                w.close()
                return None
            self._wakeup = (r, w)
        try:
            old = _signal.set_wakeup_fd(self._wakeup[1].fileno(), warn_on_full_buffer=False)
        except ValueError:  # not the main interpreter
            return None
        if old != -1:  # someone else (asyncio) uses it: leave theirs
            _signal.set_wakeup_fd(old)
            return None
        return old


# ------------------------------------------------------------------ EchoServer


class EchoServer:
    """The library's echo server, on its own thread(s); listening once created.

    ``EchoServer(host='127.0.0.1', port=0)``; ``.port`` is the bound port,
    ``.stats()`` the counters, ``.stop()`` (or leaving a ``with`` block) stops it
    gracefully. Other arguments default to the library's defaults (backlog 10,
    1 thread, no connection limit, no idle timeout, 256 KiB pending cap).
    ``log(level, message)`` is called from the server's threads.
    """

    def __init__(
        self,
        host="127.0.0.1",
        port=0,
        *,
        backlog=None,
        threads=None,
        max_connections=None,
        idle_timeout_ms=None,
        max_pending_bytes=None,
        log=None,
        log_level=None,
    ):
        self._ptr = None
        self._log_exc = None
        buf, cfg = _room_for(_EchoServerConfig)
        _config_init(ctypes.addressof(buf))
        if cfg.struct_size > len(buf) or cfg.struct_size < ctypes.sizeof(_EchoServerConfig):
            raise ImportError("echo_server_config of %d bytes: library and module disagree" % cfg.struct_size)
        self._host = host.encode() if isinstance(host, str) else host
        cfg.host = self._host
        cfg.port = port
        for name, value in (
            ("backlog", backlog),
            ("threads", threads),
            ("max_connections", max_connections),
            ("idle_timeout_ms", idle_timeout_ms),
            ("max_pending_bytes", max_pending_bytes),
            ("log_level", log_level),
        ):
            if value is not None:
                setattr(cfg, name, value)
        self._log = log
        self._log_tramp = _trampoline(_LOG_FN, self, "_on_log") if log is not None else _LOG_FN()
        cfg.log = self._log_tramp
        ptr = _c_void_p()
        _check(_srv_start(ctypes.addressof(buf), ctypes.byref(ptr)), "echo_server_start")
        self._ptr = ptr.value
        self._port = _check(_srv_port(self._ptr))

    def _on_log(self, level, message, _ud):
        try:
            self._log(level, message.decode("utf-8", "replace"))
        except BaseException as e:
            self._failed(e)

    def _failed(self, exc):  # raised again from stop()
        if self._log_exc is None:
            self._log_exc = exc

    @property
    def port(self):
        return self._port

    def stats(self):
        """The server's counters as a dict (see ``echo_server_stats`` in the header)."""
        if self._ptr is None:
            raise ValueError("echo server is stopped")
        buf, st = _room_for(_EchoServerStats)
        _check(_srv_stats(self._ptr, ctypes.addressof(buf)), "echo_server_get_stats")
        return {name: getattr(st, name) for name, _ in _EchoServerStats._fields_}

    def stop(self):
        """Stops gracefully (flush, close, join). Idempotent. Raises what the
        log callback raised, if anything."""
        if self._ptr is not None:
            _check(_srv_stop(self._ptr), "echo_server_stop")
            self._ptr = None
        exc, self._log_exc = self._log_exc, None
        if exc is not None:
            raise exc

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def __del__(self):
        if getattr(self, "_ptr", None) is not None:
            try:
                self.stop()
            except Exception:
                pass


# Python's select constants are the same numbers; check once, cheaply.
assert (_select.EPOLLIN, _select.EPOLLOUT, _select.EPOLLET) == (EPOLLIN, EPOLLOUT, EPOLLET)
