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

    def test_bad_arguments(self):
        with self.assertRaises(ValueError):
            self.loop.timer_start(-1, 0, lambda tid: None)
        with self.assertRaises(TypeError):
            self.loop.timer_start(1, 0, None)


class TestErrors(LoopTestCase):
    def test_ebadf(self):
        with self.assertRaises(OSError) as cm:
            self.loop.register(-1, EPOLLIN, lambda fd, ev: None)
        self.assertEqual(cm.exception.errno, errno.EBADF)
        self.assertEqual(cm.exception.strerror, os.strerror(errno.EBADF))
        a, b = self.socketpair()
        fd = a.fileno()
        a.close()
        with self.assertRaises(OSError) as cm:
            self.loop.register(fd, EPOLLIN, lambda fd, ev: None)
        self.assertEqual(cm.exception.errno, errno.EBADF)

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


if __name__ == "__main__":
    unittest.main()
