"""unittest tests of c-examples/python/epoll_loop.py (run by tests/python.rs).

Run by hand from the repository root, after `cargo build`:

    EPOLL_LOOP_LIB=target/debug/libepoll_loop.so PYTHONPATH=c-examples/python \\
        python3 -m unittest -v tests/python/test_epoll_loop.py
"""

import doctest
import errno
import gc
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import epoll_loop
from epoll_loop import EPOLLIN, EPOLLOUT, EchoServer, Loop


def load_tests(loader, tests, ignore):
    # The select.epoll migration example in the module's docstring runs too.
    tests.addTests(doctest.DocTestSuite(epoll_loop))
    return tests


class LoopTestCase(unittest.TestCase):
    def setUp(self):
        self.loop = Loop()
        self.addCleanup(self.loop.close)

    def socketpair(self):
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        return a, b


class TestLoading(unittest.TestCase):
    MODULE_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "c-examples", "python")

    def run_python(self, code, env_changes, cwd=None, module_dir=None):
        env = dict(os.environ)
        env.pop("EPOLL_LOOP_LIB", None)
        env.update(env_changes)
        env["PYTHONPATH"] = module_dir or self.MODULE_DIR
        return subprocess.run(
            [sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
        )

    def test_env_var_names_the_library(self):
        self.assertEqual(epoll_loop.LIBRARY_PATH, os.environ["EPOLL_LOOP_LIB"])
        self.assertEqual(epoll_loop.library_version().count("."), 2)

    def test_env_var_may_name_a_directory(self):
        lib_dir = os.path.dirname(os.environ["EPOLL_LOOP_LIB"])
        r = self.run_python("import epoll_loop; print(epoll_loop.LIBRARY_PATH)", {"EPOLL_LOOP_LIB": lib_dir})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), os.path.join(lib_dir, "libepoll_loop.so"))

    def test_a_wrong_env_var_is_an_import_error_that_says_what_to_do(self):
        r = self.run_python("import epoll_loop", {"EPOLL_LOOP_LIB": "/nonexistent/libepoll_loop.so"})
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("ImportError", r.stderr)
        self.assertIn("/nonexistent/libepoll_loop.so", r.stderr)
        self.assertIn("EPOLL_LOOP_LIB", r.stderr)

    def test_next_to_the_module(self):
        with tempfile.TemporaryDirectory() as d:
            shutil.copy(os.path.join(self.MODULE_DIR, "epoll_loop.py"), d)
            shutil.copy(os.environ["EPOLL_LOOP_LIB"], os.path.join(d, "libepoll_loop.so"))
            r = self.run_python(
                "import epoll_loop; print(epoll_loop.LIBRARY_PATH)", {"LD_LIBRARY_PATH": ""}, module_dir=d
            )
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stdout.strip(), os.path.join(d, "libepoll_loop.so"))

    def test_system_search_path(self):
        # What `make install` gives: libepoll_loop.so.0 where the loader looks.
        with tempfile.TemporaryDirectory() as d:
            shutil.copy(os.environ["EPOLL_LOOP_LIB"], os.path.join(d, "libepoll_loop.so.0"))
            r = self.run_python(
                "import epoll_loop; print(epoll_loop.LIBRARY_PATH); "
                "l = epoll_loop.Loop(); print(l.poll(0)); l.close()",
                {"LD_LIBRARY_PATH": d},
            )
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stdout.split(), ["libepoll_loop.so.0", "0"])


class TestRegistration(LoopTestCase):
    def test_socketpair_driven_through_callbacks(self):
        a, b = self.socketpair()
        got = []

        def on_a(fd, events):
            self.assertEqual(fd, a.fileno())
            self.assertTrue(events & EPOLLIN)
            data = a.recv(100)
            got.append(data)
            if data == b"ping":
                a.send(b"pong")

        def on_b(fd, events):
            got.append(b.recv(100))
            self.loop.stop()

        self.loop.register(a, EPOLLIN, on_a)  # an object with fileno()
        self.loop.register(b.fileno(), select.EPOLLIN, on_b)  # select's constants work
        b.send(b"ping")
        self.assertEqual(self.loop.run(), 1)
        self.assertEqual(got, [b"ping", b"pong"])

    def test_poll_returns_the_number_of_callbacks_and_times_out(self):
        a, b = self.socketpair()
        calls = []
        self.loop.register(a, EPOLLOUT, lambda fd, ev: calls.append(ev))
        self.loop.register(b, EPOLLOUT, lambda fd, ev: calls.append(ev))
        self.assertEqual(self.loop.poll(0), 2)
        self.loop.unregister(a)
        self.loop.unregister(b)
        t0 = time.monotonic()
        self.assertEqual(self.loop.poll(0.05), 0)
        self.assertGreaterEqual(time.monotonic() - t0, 0.045)

    def test_modify_and_oneshot(self):
        a, b = self.socketpair()
        events = []
        self.loop.register(a, EPOLLIN, lambda fd, ev: events.append(ev))
        self.assertEqual(self.loop.poll(0), 0)
        self.loop.modify(a, EPOLLOUT | epoll_loop.EPOLLONESHOT)
        self.assertEqual(self.loop.poll(0), 1)
        self.assertEqual(self.loop.poll(0), 0)  # disarmed until modified again
        self.loop.modify(a, EPOLLOUT)
        self.assertEqual(self.loop.poll(0), 1)
        self.assertTrue(all(ev & EPOLLOUT for ev in events))

    def test_callback_may_unregister_others_in_the_same_batch(self):
        a, b = self.socketpair()
        calls = []

        def first(fd, ev):
            calls.append(fd)
            other = b.fileno() if fd == a.fileno() else a.fileno()
            self.loop.unregister(other)

        self.loop.register(a, EPOLLOUT, first)
        self.loop.register(b, EPOLLOUT, first)
        self.assertEqual(self.loop.poll(0), 1)
        self.assertEqual(len(calls), 1)

    def test_callbacks_are_kept_alive_by_the_loop(self):
        a, b = self.socketpair()
        hits = []
        self.loop.register(a, EPOLLIN, (lambda h: lambda fd, ev: h.append(a.recv(10)))(hits))
        gc.collect()
        b.send(b"x")
        self.assertEqual(self.loop.poll(1), 1)
        self.assertEqual(hits, [b"x"])

    def test_run_returns_0_when_nothing_is_left(self):
        a, b = self.socketpair()
        self.loop.register(a, EPOLLOUT, lambda fd, ev: self.loop.unregister(fd))
        self.assertEqual(self.loop.run(), 0)
        self.assertEqual(self.loop.run(), 0)

    def test_stop_before_run_is_remembered(self):
        a, b = self.socketpair()
        self.loop.register(a, EPOLLIN, lambda fd, ev: None)
        self.loop.stop()
        self.assertEqual(self.loop.run(), 1)

    def test_a_stop_is_consumed_by_the_next_poll_never_later(self):
        # libuv's rule, as epoll_loop_poll/_run: a pending stop makes poll not
        # wait, and that poll consumes it; a later run is not ended by it.
        a, b = self.socketpair()
        self.loop.register(a, EPOLLIN, lambda fd, ev: self.loop.unregister(fd))
        self.loop.stop()
        t0 = time.monotonic()
        self.assertEqual(self.loop.poll(30), 0)
        self.assertLess(time.monotonic() - t0, 5, "poll with a stop pending must not wait")
        threading.Timer(0.05, lambda: b.send(b"x")).start()
        self.assertEqual(self.loop.run(), 0, "the stop was consumed by the poll")
        # A stop from a callback inside poll is consumed by that poll too.
        fired = []
        self.loop.call_later(0, lambda: (fired.append(1), self.loop.stop()))
        self.assertEqual(self.loop.poll(5), 1)
        self.loop.call_later(0.05, lambda: fired.append(2))
        self.assertEqual(self.loop.run(), 0)
        self.assertEqual(fired, [1, 2])

    def test_stop_from_another_thread_wakes_a_blocked_poll(self):
        a, b = self.socketpair()
        self.loop.register(a, EPOLLIN, lambda fd, ev: None)
        threading.Timer(0.05, self.loop.stop).start()
        t0 = time.monotonic()
        self.assertEqual(self.loop.poll(30), 0)
        self.assertLess(time.monotonic() - t0, 5)

    def test_stop_and_wake_from_another_thread(self):
        a, b = self.socketpair()
        self.loop.register(a, EPOLLIN, lambda fd, ev: None)
        threading.Timer(0.05, self.loop.wake).start()
        t0 = time.monotonic()
        self.assertEqual(self.loop.poll(5), 0)
        self.assertLess(time.monotonic() - t0, 4)
        threading.Timer(0.05, self.loop.stop).start()
        self.assertEqual(self.loop.run(), 1)

    def test_stats(self):
        a, b = self.socketpair()
        self.loop.register(a, EPOLLOUT, lambda fd, ev: None)
        self.loop.poll(0)
        st = self.loop.stats()
        self.assertEqual(st["registered"], 1)
        self.assertGreaterEqual(st["callbacks"], 1)
        self.assertEqual(st["timers_pending"], 0)

    def test_fileno_nests_in_select_epoll(self):
        a, b = self.socketpair()
        self.loop.register(a, EPOLLIN, lambda fd, ev: a.recv(10))
        outer = select.epoll()
        self.addCleanup(outer.close)
        outer.register(self.loop.fileno(), select.EPOLLIN)
        self.assertEqual(outer.poll(0), [])
        b.send(b"x")
        self.assertEqual(outer.poll(1), [(self.loop.fileno(), select.EPOLLIN)])
        self.assertEqual(self.loop.poll(0), 1)

    def test_fromfd_adopts_an_epoll_fd(self):
        with select.epoll() as ep:
            fd = os.dup(ep.fileno())
        with Loop.fromfd(fd) as loop:
            self.assertEqual(loop.fileno(), fd)
        with self.assertRaises(OSError) as cm:
            os.fstat(fd)  # the loop closed it
        self.assertEqual(cm.exception.errno, errno.EBADF)


class TestTimers(LoopTestCase):
    def test_one_shot_repeating_and_stopped_timers(self):
        fired = []
        t1 = self.loop.timer_start(1, 0, lambda tid: fired.append(("once", tid)))
        t2 = self.loop.timer_start(1, 0, lambda tid: fired.append(("never", tid)))
        ticks = []

        def tick(tid):
            ticks.append(tid)
            if len(ticks) == 3:
                self.loop.timer_stop(tid)

        t3 = self.loop.timer_start(1, 1, tick)
        self.assertEqual(len({t1, t2, t3}), 3)
        self.loop.timer_stop(t2)
        self.assertEqual(self.loop.run(), 0)
        self.assertEqual(fired, [("once", t1)])
        self.assertEqual(ticks, [t3] * 3)
        with self.assertRaises(FileNotFoundError) as cm:  # fired: gone
            self.loop.timer_stop(t1)
        self.assertEqual(cm.exception.errno, errno.ENOENT)

    def test_call_later_takes_seconds_and_arguments(self):
        got = []
        t0 = time.monotonic()
        self.loop.call_later(0.03, got.append, "late")
        self.loop.call_later(0, got.append, "soon")
        self.assertEqual(self.loop.run(), 0)
        self.assertEqual(got, ["soon", "late"])
        self.assertGreaterEqual(time.monotonic() - t0, 0.029)

    def test_timer_ids_are_not_reused(self):
        ids = [self.loop.timer_start(0, 0, lambda tid: None) for _ in range(3)]
        self.loop.run()
        self.assertGreater(self.loop.timer_start(0, 0, lambda tid: None), max(ids))



class TestErrors(LoopTestCase):
    def test_ebadf(self):
        a, b = self.socketpair()
        fd = a.fileno()
        a.close()
        with self.assertRaises(OSError) as cm:
            self.loop.register(fd, EPOLLIN, lambda fd, ev: None)
        self.assertEqual(cm.exception.errno, errno.EBADF)
        self.assertEqual(cm.exception.strerror, os.strerror(errno.EBADF))

    def test_eexist(self):
        a, b = self.socketpair()
        self.loop.register(a, EPOLLIN, lambda fd, ev: None)
        with self.assertRaises(FileExistsError) as cm:
            self.loop.register(a, EPOLLIN, lambda fd, ev: None)
        self.assertEqual(cm.exception.errno, errno.EEXIST)
        # select.epoll raises the same
        ep = select.epoll()
        self.addCleanup(ep.close)
        ep.register(a, select.EPOLLIN)
        with self.assertRaises(FileExistsError):
            ep.register(a, select.EPOLLIN)

    def test_eperm_for_a_regular_file(self):
        with tempfile.TemporaryFile() as f:
            with self.assertRaises(PermissionError) as cm:
                self.loop.register(f, EPOLLIN, lambda fd, ev: None)
            self.assertEqual(cm.exception.errno, errno.EPERM)

    def test_enoent_and_einval(self):
        a, b = self.socketpair()
        with self.assertRaises(FileNotFoundError):
            self.loop.unregister(a)
        with self.assertRaises(FileNotFoundError):
            self.loop.modify(a, EPOLLIN)
        with self.assertRaises(OSError) as cm:
            self.loop.register(a, 0x40000, lambda fd, ev: None)  # not an epoll bit
        self.assertEqual(cm.exception.errno, errno.EINVAL)

    def test_unregister_after_close_frees_the_slot(self):
        a, b = self.socketpair()
        fd = a.fileno()
        self.loop.register(fd, EPOLLIN, lambda fd, ev: None)
        a.close()
        self.loop.unregister(fd)
        self.assertEqual(self.loop.stats()["registered"], 0)

    def test_ebusy_inside_a_callback(self):
        a, b = self.socketpair()
        seen = []

        def cb(fd, ev):
            for call in (lambda: self.loop.poll(0), self.loop.run, self.loop.close):
                try:
                    call()
                except OSError as e:
                    seen.append(e.errno)
            self.loop.unregister(fd)

        self.loop.register(a, EPOLLOUT, cb)
        self.assertEqual(self.loop.poll(0), 1)
        self.assertEqual(seen, [errno.EBUSY] * 3)
        self.assertFalse(self.loop.closed)

    def test_closed_loop_raises_value_error(self):
        loop = Loop()
        with loop:
            pass
        self.assertTrue(loop.closed)
        loop.close()  # idempotent
        for call in (loop.fileno, lambda: loop.poll(0), loop.run, loop.stop, loop.wake):
            with self.assertRaises(ValueError):
                call()


class TestCallbackExceptions(LoopTestCase):
    def test_exception_is_raised_from_poll_after_the_dispatch(self):
        a, b = self.socketpair()
        calls = []

        def bad(fd, ev):
            calls.append("bad")
            raise ZeroDivisionError("in a callback")

        def good(fd, ev):
            calls.append("good")

        self.loop.register(a, EPOLLOUT, bad)
        self.loop.register(b, EPOLLOUT, good)
        with self.assertRaises(ZeroDivisionError) as cm:
            self.loop.poll(0)
        self.assertEqual(str(cm.exception), "in a callback")
        self.assertEqual(sorted(calls), ["bad", "good"])  # the batch finished
        self.loop.unregister(a)
        self.assertEqual(self.loop.poll(0), 1)  # the loop still works

    def test_exception_ends_run(self):
        def boom(tid):
            raise RuntimeError("timer")

        self.loop.timer_start(0, 1, boom)  # repeating: run would never end
        with self.assertRaises(RuntimeError):
            self.loop.run()
        self.assertEqual(self.loop.stats()["timers_pending"], 1)

    def test_nothing_is_printed_as_unraisable(self):
        unraisable = []
        old = sys.unraisablehook
        sys.unraisablehook = unraisable.append
        try:
            loop = Loop()
            loop.call_later(0, lambda: 1 / 0)
            with self.assertRaises(ZeroDivisionError):
                loop.run()
            loop.close()
        finally:
            sys.unraisablehook = old
        self.assertEqual(unraisable, [])

    @unittest.skipUnless(threading.current_thread() is threading.main_thread(), "signals need the main thread")
    def test_ctrl_c_interrupts_a_blocked_run(self):
        a, b = self.socketpair()
        self.loop.register(a, EPOLLIN, lambda fd, ev: None)  # never ready
        timer = threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        self.addCleanup(timer.cancel)
        t0 = time.monotonic()
        with self.assertRaises(KeyboardInterrupt):
            self.loop.run()
        self.assertLess(time.monotonic() - t0, 5)
        self.assertEqual(signal.set_wakeup_fd(-1), -1)  # put back as it was
        self.assertEqual(self.loop.stats()["registered"], 1)  # the internal fd is not counted


class TestEchoServer(unittest.TestCase):
    def test_round_trip_from_a_loop_client(self):
        with EchoServer("127.0.0.1", 0) as srv:
            self.assertGreater(srv.port, 0)
            client = socket.create_connection(("127.0.0.1", srv.port))
            self.addCleanup(client.close)
            client.setblocking(False)
            payload = os.urandom(200_000)
            received = bytearray()
            out = memoryview(payload)

            with Loop() as loop:

                def on_client(fd, events):
                    nonlocal out
                    if events & EPOLLOUT and out:
                        try:
                            out = out[client.send(out) :]
                        except BlockingIOError:
                            pass
                        if not out:
                            loop.modify(client, EPOLLIN)
                    if events & EPOLLIN:
                        received.extend(client.recv(65536))
                        if len(received) == len(payload):
                            loop.unregister(client)
                            loop.timer_stop(deadline)

                loop.register(client, EPOLLIN | EPOLLOUT, on_client)
                deadline = loop.call_later(10, loop.stop)  # should it hang
                self.assertEqual(loop.run(), 0)  # 0: nothing left, not stopped
            self.assertEqual(bytes(received), payload)
            client.close()  # before stopping the server, so it need not linger
            st = srv.stats()
            self.assertEqual(st["accepted"], 1)
            self.assertEqual(st["bytes_in"], len(payload))
            self.assertEqual(st["bytes_out"], len(payload))
        with self.assertRaises(ValueError):
            srv.stats()
        srv.stop()  # idempotent

    def test_options_and_log(self):
        lines = []
        srv = EchoServer(port=0, threads=2, backlog=64, max_connections=5, log=lambda lvl, msg: lines.append((lvl, msg)))
        try:
            with socket.create_connection(("127.0.0.1", srv.port)) as c:
                c.sendall(b"hi")
                self.assertEqual(c.recv(10), b"hi")
        finally:
            srv.stop()
        self.assertTrue(any("new connection" in msg for _, msg in lines), lines)
        self.assertTrue(all(lvl in (epoll_loop.LOG_ERROR, epoll_loop.LOG_WARN, epoll_loop.LOG_INFO) for lvl, _ in lines))

    def test_errors(self):
        with self.assertRaises(OSError) as cm:
            EchoServer(threads=0)
        self.assertEqual(cm.exception.errno, errno.EINVAL)
        with EchoServer() as first:
            with self.assertRaises(OSError) as cm:
                EchoServer(port=first.port)
            self.assertEqual(cm.exception.errno, errno.EADDRINUSE)

    def test_config_struct_matches_the_library(self):
        # echo_server_config_init writes struct_size = sizeof(echo_server_config)
        # as the library sees it; the binding's ctypes mirror must agree.
        import ctypes

        buf = ctypes.create_string_buffer(1024)
        epoll_loop._config_init(ctypes.addressof(buf))
        cfg = epoll_loop._EchoServerConfig.from_buffer(buf)
        self.assertEqual(cfg.struct_size, ctypes.sizeof(epoll_loop._EchoServerConfig))
        # The default backlog is SOMAXCONN (socket.SOMAXCONN is the same constant).
        import socket

        self.assertEqual(
            (cfg.host, cfg.port, cfg.backlog, cfg.threads),
            (b"127.0.0.1", 8888, socket.SOMAXCONN, 1),
        )
        self.assertEqual(cfg.max_pending_bytes, 256 * 1024)
        self.assertEqual(cfg.log_level, epoll_loop.LOG_INFO)


# ------------------------------------------------------------------ integer arguments
#
# ctypes wraps integers to the C type (70000 -> port 4464, 2**32 -> fd 0); the
# binding refuses what the C type cannot hold, before anything happens.

INT_MIN, INT_MAX = -(2**31), 2**31 - 1
U32_MAX, U64_MAX = 2**32 - 1, 2**64 - 1


class FilenoReturns:
    def __init__(self, value):
        self.value = value

    def fileno(self):
        return self.value


class Index:
    """An integer by __index__ (as numpy's are), not an int."""

    def __init__(self, value):
        self.value = value

    def __index__(self):
        return self.value


def listening_ports():
    """The TCP ports this process has listening sockets on (from /proc)."""
    inodes = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink("/proc/self/fd/" + name)
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            col = row.split()
            if col[3] == "0A" and col[9] in inodes:  # TCP_LISTEN
                ports.add(int(col[1].rsplit(":", 1)[1], 16))
    return ports


class TestFdArguments(LoopTestCase):
    def noop(self, fd, events):
        self.fired.append(fd)

    def setUp(self):
        super().setUp()
        self.fired = []

    def assert_nothing_registered(self):
        self.assertEqual(self.loop.stats()["registered"], 0)
        self.assertEqual(self.loop.poll(0), 0)
        self.assertEqual(self.fired, [])

    def test_register_2_to_the_32_does_not_register_stdin(self):
        with self.assertRaises(OverflowError):
            self.loop.register(2**32, EPOLLIN, self.noop)
        with self.assertRaises(FileNotFoundError):  # fd 0 is not registered
            self.loop.unregister(0)
        self.assert_nothing_registered()

    def test_register_out_of_range_registers_nothing(self):
        a, b = self.socketpair()
        n = a.fileno()
        # Each of these is `n` (writable: EPOLLOUT fires at once) in a C int.
        for bad in (n + 2**32, n - 2**32, n + 2**64, FilenoReturns(n + 2**32), INT_MAX + 1, INT_MIN - 1):
            with self.subTest(fd=bad), self.assertRaises(OverflowError):
                self.loop.register(bad, EPOLLOUT, self.noop)
        self.assert_nothing_registered()
        self.loop.register(n, EPOLLOUT, self.noop)  # no EEXIST: it really was not
        self.assertEqual(self.loop.poll(0), 1)
        self.assertEqual(self.fired, [n])

    def test_modify_and_unregister_out_of_range_change_nothing(self):
        a, b = self.socketpair()
        n = a.fileno()
        self.loop.register(a, EPOLLIN, self.noop)  # nothing to read: quiet
        for bad in (n + 2**32, n - 2**32, FilenoReturns(n + 2**64)):
            with self.subTest(fd=bad):
                with self.assertRaises(OverflowError):
                    self.loop.modify(bad, EPOLLOUT)  # would make `a` fire
                with self.assertRaises(OverflowError):
                    self.loop.unregister(bad)  # would unregister `a`
        self.assertEqual(self.loop.poll(0), 0)
        self.assertEqual(self.loop.stats()["registered"], 1)
        self.loop.unregister(n)

    def test_fd_checks_are_those_of_select_epoll(self):
        a, b = self.socketpair()
        closed, other = socket.socketpair()
        closed.close()
        other.close()
        ep = select.epoll()
        self.addCleanup(ep.close)
        cases = [
            (2**32, OverflowError),
            (INT_MAX + 1, OverflowError),
            (INT_MIN - 1, OverflowError),
            (FilenoReturns(2**32), OverflowError),
            (-1, ValueError),
            (INT_MIN, ValueError),
            (FilenoReturns(-1), ValueError),
            (closed, ValueError),  # a closed socket's fileno() is -1
            (1.0, TypeError),
            (str(a.fileno()), TypeError),
            (None, TypeError),
            (object(), TypeError),
            (Index(a.fileno()), TypeError),  # select.epoll takes no __index__ for fds
            (FilenoReturns(float(a.fileno())), TypeError),
            (FilenoReturns(str(a.fileno())), TypeError),
        ]
        for bad, exc in cases:
            with self.subTest(fd=bad):
                with self.assertRaises(exc):
                    ep.register(bad, select.EPOLLIN)
                with self.assertRaises(exc):
                    ep.unregister(bad)
                with self.assertRaises(exc):
                    ep.modify(bad, select.EPOLLIN)
                with self.assertRaises(exc):
                    self.loop.register(bad, EPOLLIN, self.noop)
                with self.assertRaises(exc):
                    self.loop.unregister(bad)
                with self.assertRaises(exc):
                    self.loop.modify(bad, EPOLLIN)
        self.assert_nothing_registered()

    def test_fromfd_out_of_range_adopts_nothing(self):
        ep = select.epoll()
        self.addCleanup(ep.close)
        n = ep.fileno()
        for bad, exc in [
            (n + 2**32, OverflowError),
            (n - 2**32, OverflowError),
            (INT_MAX + 1, OverflowError),
            (-1, ValueError),
            (INT_MIN, ValueError),
            (float(n), TypeError),
            (str(n), TypeError),
            (None, TypeError),
            (ep, TypeError),  # an int, as for select.epoll.fromfd
        ]:
            with self.subTest(epfd=bad):
                with self.assertRaises(exc):
                    Loop.fromfd(bad)
        gc.collect()  # a loop adopted by mistake would close `n` when collected
        os.fstat(n)
        a, b = self.socketpair()
        ep.register(a, select.EPOLLOUT)
        self.assertEqual(ep.poll(0), [(a.fileno(), select.EPOLLOUT)])
        with Loop.fromfd(Index(os.dup(n))) as loop:  # __index__ as select.epoll.fromfd
            self.assertNotEqual(loop.fileno(), n)


class TestEventMaskArguments(LoopTestCase):
    def test_register_refuses_masks_beyond_32_bits(self):
        # select.epoll drops the high bits of a mask; this binding refuses them.
        a, b = self.socketpair()
        fired = []
        for bad in (2**32 | EPOLLOUT, 2**64 | EPOLLOUT, -1, -EPOLLOUT, -(2**32) + EPOLLOUT):
            with self.subTest(events=bad), self.assertRaises(OverflowError):
                self.loop.register(a, bad, lambda fd, ev: fired.append(ev))
        for bad in (float(EPOLLOUT), str(EPOLLOUT), None):
            with self.subTest(events=bad), self.assertRaises(TypeError):
                self.loop.register(a, bad, lambda fd, ev: fired.append(ev))
        self.assertEqual(self.loop.stats()["registered"], 0)
        self.assertEqual(self.loop.poll(0), 0)
        self.assertEqual(fired, [])
        # 32 bits reach the library, which judges the bits themselves.
        with self.assertRaises(OSError) as cm:
            self.loop.register(a, U32_MAX, lambda fd, ev: None)
        self.assertEqual(cm.exception.errno, errno.EINVAL)
        self.loop.register(a, EPOLLOUT | epoll_loop.EPOLLET, lambda fd, ev: fired.append(ev))  # bit 31 fits
        self.loop.register(b, Index(EPOLLOUT), lambda fd, ev: fired.append(ev))
        self.assertEqual(self.loop.poll(0), 2)
        self.assertEqual(fired, [EPOLLOUT, EPOLLOUT])

    def test_modify_refuses_masks_beyond_32_bits(self):
        a, b = self.socketpair()
        fired = []
        self.loop.register(a, EPOLLIN, lambda fd, ev: fired.append(ev))  # quiet
        for bad in (2**32 | EPOLLOUT, -1, -(2**32) + EPOLLOUT):
            with self.subTest(events=bad), self.assertRaises(OverflowError):
                self.loop.modify(a, bad)
        for bad in (float(EPOLLOUT), str(EPOLLOUT), None):
            with self.subTest(events=bad), self.assertRaises(TypeError):
                self.loop.modify(a, bad)
        self.assertEqual(self.loop.poll(0), 0)  # still EPOLLIN only
        self.loop.modify(a, True)  # bool is an int, as in select.epoll: EPOLLIN
        self.assertEqual(self.loop.poll(0), 0)
        self.loop.modify(a, Index(EPOLLOUT))
        self.assertEqual(self.loop.poll(0), 1)
        self.assertEqual(fired, [EPOLLOUT])


class TestTimerArguments(LoopTestCase):
    def test_timer_start_out_of_range_starts_nothing(self):
        fired = []
        for after, repeat in [(2**64, 0), (0, 2**64), (2**64 + 5, 2**64 + 5), (-1, 0), (0, -1), (-(2**64), 0)]:
            with self.subTest(after_ms=after, repeat_ms=repeat), self.assertRaises(OverflowError):
                self.loop.timer_start(after, repeat, fired.append)
        for after, repeat in [(1.5, 0), (0, 0.5), ("1", 0), (0, "1"), (None, 0), (0, None)]:
            with self.subTest(after_ms=after, repeat_ms=repeat), self.assertRaises(TypeError):
                self.loop.timer_start(after, repeat, fired.append)
        with self.assertRaises(TypeError):
            self.loop.timer_start(0, 0, None)
        self.assertEqual(self.loop.stats()["timers_pending"], 0)
        self.assertEqual(self.loop.poll(0.01), 0)  # 2**64 wrapped would be 0: due now
        self.assertEqual(fired, [])

    def test_timer_start_takes_the_whole_uint64_range(self):
        fired = []
        tid = self.loop.timer_start(U64_MAX, U64_MAX, fired.append)
        self.assertEqual(self.loop.stats()["timers_pending"], 1)
        self.assertEqual(self.loop.poll(0), 0)
        self.loop.timer_stop(tid)
        once = self.loop.timer_start(Index(0), False, fired.append)  # __index__ and bool
        self.assertEqual(self.loop.run(), 0)
        self.assertEqual(fired, [once])

    def test_timer_stop_out_of_range_stops_nothing(self):
        fired = []
        tid = self.loop.timer_start(0, 0, fired.append)
        for bad in (tid + 2**64, tid - 2**64, -1):  # the first two are `tid` in a uint64
            with self.subTest(timer_id=bad), self.assertRaises(OverflowError):
                self.loop.timer_stop(bad)
        for bad in (float(tid), str(tid), None):
            with self.subTest(timer_id=bad), self.assertRaises(TypeError):
                self.loop.timer_stop(bad)
        self.assertEqual(self.loop.poll(0), 1)
        self.assertEqual(fired, [tid])
        with self.assertRaises(FileNotFoundError):
            self.loop.timer_stop(Index(tid))  # fired: gone (and __index__ works)

    def test_call_later_refusals_start_nothing(self):
        fired = []
        for bad, exc in [
            (U64_MAX // 1000 + 1, OverflowError),  # its ms do not fit in a uint64
            (2**64, OverflowError),
            (float("inf"), OverflowError),
            (1e300, OverflowError),
            (float("nan"), ValueError),
            ("1", TypeError),
            (None, TypeError),
        ]:
            with self.subTest(delay=bad), self.assertRaises(exc):
                self.loop.call_later(bad, fired.append, "x")
        with self.assertRaises(TypeError):  # checked now, not when it would fire
            self.loop.call_later(0, None)
        self.assertEqual(self.loop.stats()["timers_pending"], 0)
        self.assertEqual(self.loop.poll(0.01), 0)
        self.assertEqual(fired, [])
        far = self.loop.call_later(U64_MAX // 1000, fired.append, "far")  # fits
        self.assertEqual(self.loop.stats()["timers_pending"], 1)
        self.loop.timer_stop(far)
        self.loop.call_later(-1e300, fired.append, "now")  # negative: at once
        self.loop.call_later(False, fired.append, "bool")
        self.assertEqual(self.loop.run(), 0)
        self.assertEqual(fired, ["now", "bool"])


class TestPollTimeout(LoopTestCase):
    # A wake is queued before each poll, so a timeout that is (wrongly) taken
    # makes poll return at once instead of waiting for days.

    def test_timeout_checks_are_those_of_select_epoll(self):
        ep = select.epoll()
        self.addCleanup(ep.close)
        for bad, exc in [
            (INT_MAX // 1000 + 1, OverflowError),  # 2147484000 ms
            (2147483.6471, OverflowError),  # rounds up to INT_MAX + 1 ms
            (2**31, OverflowError),
            (2**64, OverflowError),
            (1e300, OverflowError),
            (float("inf"), OverflowError),
            (float("nan"), ValueError),
            ("1", TypeError),
            (b"1", TypeError),
        ]:
            with self.subTest(timeout=bad):
                with self.assertRaises(exc):
                    ep.poll(bad)
                self.loop.wake()
                with self.assertRaises(exc):
                    self.loop.poll(bad)

    def test_the_largest_timeouts_are_accepted(self):
        for ok in (INT_MAX // 1000, 2147483.647, -1e300, float("-inf"), -(2**64), None, -1):
            with self.subTest(timeout=ok):
                self.loop.wake()
                self.assertEqual(self.loop.poll(ok), 0)  # woken, not refused
        self.assertEqual(self.loop.poll(False), 0)  # bool is an int: 0 s


class TestEchoServerArguments(unittest.TestCase):
    def assert_refused(self, exc, *args, **kwargs):
        before = listening_ports()
        try:
            srv = EchoServer(*args, **kwargs)
        except exc:
            pass
        else:
            port = srv.port
            srv.stop()
            self.fail("EchoServer(%r, %r) started, on port %d" % (args, kwargs, port))
        self.assertEqual(listening_ports(), before, "a refused EchoServer left a listener")

    def test_listening_ports_sees_a_server(self):
        with EchoServer() as srv:
            self.assertIn(srv.port, listening_ports())
        self.assertNotIn(srv.port, listening_ports())

    def test_port_out_of_range_starts_nothing(self):
        self.assert_refused(OverflowError, "127.0.0.1", 70000)  # would be 4464
        self.assert_refused(OverflowError, port=-1)  # would be 65535
        self.assert_refused(OverflowError, port=2**16)  # would be 0: any port
        self.assert_refused(OverflowError, port=2**64)
        for bad in (1.5, "80", None):
            with self.subTest(port=bad):
                self.assert_refused(TypeError, port=bad)

    def test_every_integer_option_is_range_checked(self):
        cases = {
            "backlog": ([INT_MAX + 1, INT_MIN - 1, 2**32 + 10], [1.0, "10"]),
            "threads": ([2**32 + 1, -1, 2**64 + 1], [1.0, "2"]),  # 2**32+1 would be 1 thread
            "max_connections": ([2**32, -1], [5.0, "5"]),  # 2**32 would be 0: no limit
            "idle_timeout_ms": ([2**32 + 5, -1], [0.5, "5"]),  # 2**32+5 would be 5 ms
            "max_pending_bytes": ([2**64, 2**64 + 1024, -1], [1e6, "1024"]),
            "log_level": ([INT_MAX + 1, INT_MIN - 1, 2**32 + epoll_loop.LOG_INFO], [3.0, "3"]),
        }
        for name, (overflows, wrong_types) in cases.items():
            for bad in overflows:
                with self.subTest(option=name, value=bad):
                    self.assert_refused(OverflowError, port=0, **{name: bad})
            for bad in wrong_types:
                with self.subTest(option=name, value=bad):
                    self.assert_refused(TypeError, port=0, **{name: bad})

    def test_meaningless_values_are_value_errors_or_the_librarys_einval(self):
        import logging

        # log levels run the other way in logging: WARNING (30) would log everything
        for bad in (0, -1, 5, logging.WARNING, logging.DEBUG):
            with self.subTest(log_level=bad):
                self.assert_refused(ValueError, port=0, log_level=bad, log=lambda lvl, msg: None)
        self.assert_refused(ValueError, "127.0.0.1\0.example.com", 0)  # C would see "127.0.0.1"
        self.assert_refused(TypeError, 127, 0)
        self.assert_refused(TypeError, port=0, log="print")
        for name in ("threads", "max_pending_bytes"):  # in range; the library says EINVAL
            with self.subTest(option=name):
                self.assert_refused(OSError, port=0, **{name: 0})
        for big in ((1 << 30) + 1, 2**63, 2**64 - 1):  # past the library's 1 GiB maximum
            with self.subTest(max_pending_bytes=big):
                self.assert_refused(OSError, port=0, max_pending_bytes=big)

    def test_the_extremes_of_each_range_are_accepted(self):
        lines = []
        for options in (
            # max_pending_bytes: the library's documented maximum, 1 GiB.
            dict(backlog=INT_MAX, max_connections=U32_MAX, idle_timeout_ms=U32_MAX, max_pending_bytes=1 << 30),
            dict(
                backlog=INT_MIN, threads=Index(2), log_level=epoll_loop.LOG_DEBUG, log=lambda lvl, msg: lines.append(lvl)
            ),
            dict(host=None, backlog=-1, log_level=epoll_loop.LOG_ERROR, log=lambda lvl, msg: lines.append(lvl)),
        ):
            with self.subTest(**{k: v for k, v in options.items() if k != "log"}):
                with EchoServer(port=0, **options) as srv:
                    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as c:
                        c.sendall(b"hi")
                        self.assertEqual(c.recv(10), b"hi")
        self.assertIn(epoll_loop.LOG_DEBUG, lines)  # the second one logged in detail

    def test_the_c_type_table_matches_the_config_struct(self):
        import ctypes

        fields = dict(epoll_loop._EchoServerConfig._fields_)
        for name, c_type in epoll_loop._CONFIG_C_TYPES.items():
            with self.subTest(field=name):
                self.assertEqual(epoll_loop._C_RANGES[c_type], epoll_loop._c_range(fields[name]))
        self.assertEqual(epoll_loop._C_RANGES["size_t"], (0, 2 ** (8 * ctypes.sizeof(ctypes.c_size_t)) - 1))
        self.assertEqual(epoll_loop._C_RANGES["int"], (INT_MIN, INT_MAX))


if __name__ == "__main__":
    unittest.main()
