//! File descriptors: pipes, how many this process has open, `RLIMIT_NOFILE`.

use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// A non-blocking, close-on-exec pipe: (read end, write end). Never panics, so
/// callbacks may use it.
pub fn try_pipe() -> Option<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return None;
    }
    // SAFETY: pipe2 succeeded: two new descriptors that only we own.
    Some(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A non-blocking, close-on-exec pipe: (read end, write end).
pub fn pipe() -> (OwnedFd, OwnedFd) {
    try_pipe().unwrap_or_else(|| panic!("pipe2: {}", std::io::Error::last_os_error()))
}

/// How many fds this process has open.
pub fn count_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// Waits (up to 5 s) for the fd count to fall back to `baseline`; returns the last count.
pub fn fds_settle(baseline: usize) -> usize {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let n = count_fds();
        if n <= baseline || Instant::now() > end {
            return n;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Raises the soft `RLIMIT_NOFILE` to at least `need`, up to the hard limit
/// (`u64::MAX`: to the hard limit); returns the soft limit now in force.
pub fn raise_nofile(need: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid rlimit for getrlimit to fill.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    if lim.rlim_cur < need {
        lim.rlim_cur = need.min(lim.rlim_max);
        // SAFETY: valid rlimit; only the soft limit changes, within the hard one.
        let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
        assert_eq!(rc, 0, "setrlimit: {}", std::io::Error::last_os_error());
    }
    lim.rlim_cur
}

/// [`raise_nofile`], which must reach `need` (a test that needs that many fds).
pub fn require_nofile(need: u64) {
    let got = raise_nofile(need);
    assert!(
        got >= need,
        "this test needs {need} fds; RLIMIT_NOFILE allows {got}"
    );
}
