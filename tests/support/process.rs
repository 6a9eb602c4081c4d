//! Child processes: output collected as it comes, bounded waits, signals; and
//! measurements of a process (CPU time, resident memory).

use std::ffi::c_int;
use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Bytes a child wrote to one of its pipes so far.
pub type Captured = Arc<Mutex<Vec<u8>>>;

/// Collects everything a pipe delivers, in a thread, until EOF.
pub fn collect<R: Read + Send + 'static>(mut r: R) -> (Captured, JoinHandle<()>) {
    let bytes = Captured::default();
    let b = bytes.clone();
    let h = thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => b.lock().unwrap().extend_from_slice(&buf[..n]),
            }
        }
    });
    (bytes, h)
}

/// What was captured so far, as text.
pub fn snapshot(c: &Captured) -> String {
    String::from_utf8_lossy(&c.lock().unwrap()).into_owned()
}

/// The last `n` bytes of `s` (fewer, to start on a character boundary).
pub fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Waits for `child` at most `limit`; `None` if it is still running then.
pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `sig` to `pid` (a child of this process, not yet reaped).
pub fn signal(pid: u32, sig: c_int) {
    // SAFETY: kill(2) takes plain integers; `pid` is our own child, not yet reaped.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
}

/// A child process whose stdout and stderr are collected as they come (so a
/// full pipe never stalls it), killed and reaped on drop unless waited for.
pub struct Running {
    pub name: String,
    pub pid: u32,
    child: Option<Child>,
    stdout: Captured,
    stderr: Captured,
    readers: Vec<JoinHandle<()>>,
}

impl Running {
    /// Spawns `cmd` with stdout and stderr piped (stdin as `cmd` sets it).
    pub fn spawn(name: &str, cmd: &mut Command) -> Running {
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Running::adopt(name, child)
    }

    /// Takes over a spawned child, collecting whichever of its stdout and
    /// stderr are pipes not taken yet.
    pub fn adopt(name: &str, mut child: Child) -> Running {
        let mut readers = Vec::new();
        let stdout = match child.stdout.take() {
            Some(p) => {
                let (c, h) = collect(p);
                readers.push(h);
                c
            }
            None => Captured::default(),
        };
        let stderr = match child.stderr.take() {
            Some(p) => {
                let (c, h) = collect(p);
                readers.push(h);
                c
            }
            None => Captured::default(),
        };
        Running {
            name: name.to_string(),
            pid: child.id(),
            child: Some(child),
            stdout,
            stderr,
            readers,
        }
    }

    /// Its stdout so far.
    pub fn stdout(&self) -> String {
        snapshot(&self.stdout)
    }

    /// Its stderr so far.
    pub fn stderr(&self) -> String {
        snapshot(&self.stderr)
    }

    /// The exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().unwrap().try_wait().unwrap()
    }

    /// Panics (with its output) if the process has exited.
    pub fn assert_alive(&mut self, when: &str) {
        if let Some(st) = self.try_wait() {
            self.exited(st, &format!("died {when}"));
        }
    }

    /// Panics: it exited (`st`), `how`; with its output.
    fn exited(&self, st: ExitStatus, how: &str) -> ! {
        use std::os::unix::process::ExitStatusExt;
        thread::sleep(Duration::from_millis(100)); // the rest of its output
        panic!(
            "{} {how}: {st} (signal {:?})\n--- stdout (tail) ---\n{}\n--- stderr ---\n{}",
            self.name,
            st.signal(),
            tail(&self.stdout(), 3000),
            self.stderr()
        );
    }

    /// Waits until its stdout so far satisfies `done` and returns what `done`
    /// found; panics (with its output) when it exits first or after `limit`.
    pub fn wait_for_stdout<T>(
        &mut self,
        limit: Duration,
        what: &str,
        done: impl Fn(&str) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(t) = done(&self.stdout()) {
                return t;
            }
            if let Some(st) = self.try_wait() {
                self.exited(st, &format!("exited before {what}"));
            }
            assert!(
                Instant::now() < deadline,
                "{}: no {what} within {limit:?}:\n--- stdout ---\n{}\n--- stderr ---\n{}",
                self.name,
                tail(&self.stdout(), 3000),
                self.stderr()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Line `n` (0 first) of its stdout, once written whole, within `limit`.
    pub fn wait_for_line(&mut self, limit: Duration, n: usize) -> String {
        self.wait_for_stdout(limit, &format!("stdout line {}", n + 1), |out| {
            let whole = &out[..out.rfind('\n').map_or(0, |i| i + 1)];
            whole.lines().nth(n).map(str::to_string)
        })
    }

    /// The port of its start line, "... listening on HOST:PORT[, ...]", which
    /// it must print within `limit` (a demo started with port 0).
    pub fn wait_for_port(&mut self, limit: Duration) -> u16 {
        let port = self.wait_for_stdout(limit, "a 'listening on' line", |out| {
            out.lines()
                .find_map(|l| l.split("listening on ").nth(1))
                .map(|rest| rest.split(',').next().unwrap_or(rest))
                .and_then(|hp| hp.rsplit(':').next())
                .and_then(|p| p.trim().parse::<u16>().ok())
        });
        assert_ne!(port, 0, "{}: the start line names port 0", self.name);
        port
    }

    /// Sends it `sig`.
    pub fn signal(&self, sig: c_int) {
        signal(self.pid, sig);
    }

    /// Waits at most `limit` for it to exit (then kills it and panics with its
    /// output), and for the rest of its output.
    pub fn wait(mut self, limit: Duration) -> Output {
        let mut child = self.child.take().unwrap();
        let Some(status) = wait_timeout(&mut child, limit) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{} still running after {limit:?}:\n--- stdout (tail) ---\n{}\n--- stderr ---\n{}",
                self.name,
                tail(&self.stdout(), 3000),
                self.stderr()
            );
        };
        for h in self.readers.drain(..) {
            h.join().unwrap();
        }
        let stdout = self.stdout.lock().unwrap().clone();
        let stderr = self.stderr.lock().unwrap().clone();
        Output {
            status,
            stdout,
            stderr,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = wait_timeout(&mut child, Duration::from_secs(10));
        }
    }
}

/// Runs `cmd` (stdin as it sets it) to the end, at most `limit`.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let name = cmd.get_program().to_string_lossy().into_owned();
    Running::spawn(&name, cmd).wait(limit)
}

/// Runs `cmd` with `input` on its stdin (written by a thread, then closed), at
/// most `limit`.
pub fn output_with_input(cmd: &mut Command, input: Vec<u8>, limit: Duration) -> Output {
    let name = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(&input); // the program may exit before reading it all
    });
    let o = Running::adopt(&name, child).wait(limit);
    writer.join().unwrap();
    o
}

/// Resident set size of process `pid` in KiB (VmRSS).
pub fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// This process's resident set size in KiB.
pub fn own_rss_kib() -> u64 {
    rss_kib(std::process::id())
}

/// User + system CPU time of this whole process.
pub fn cpu_time() -> Duration {
    // SAFETY: all-zero rusage is valid; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid, writable rusage.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) }, 0);
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

static SERIAL: Mutex<()> = Mutex::new(());

/// Held by the tests of one binary that count the process's fds or CPU time,
/// so that they run one at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}
