//! Dispatch tracing, switched on by `EPOLL_LOOP_TRACE=1` in the environment.
//!
//! The library never prints on its own. With tracing on, each dispatch writes
//! one line to stderr. The variable is read once, by the library's only load-time
//! constructor (libc-level work only: `getenv` into an atomic), or lazily on first
//! use when the constructor did not run (a static link can drop it).

use crate::sys;
use std::sync::atomic::{AtomicU8, Ordering};

const UNKNOWN: u8 = 0;
const OFF: u8 = 1;
const ON: u8 = 2;

static TRACE: AtomicU8 = AtomicU8::new(UNKNOWN);

fn read_env() -> u8 {
    match sys::getenv_bytes(c"EPOLL_LOOP_TRACE") {
        Some(v) if !v.is_empty() && v != b"0" => ON,
        _ => OFF,
    }
}

#[ctor::ctor(unsafe)]
fn epoll_loop_init_trace() {
    TRACE.store(read_env(), Ordering::Relaxed);
}

/// True when dispatch tracing is on.
#[inline]
pub fn enabled() -> bool {
    match TRACE.load(Ordering::Relaxed) {
        ON => true,
        OFF => false,
        _ => {
            let v = read_env();
            TRACE.store(v, Ordering::Relaxed);
            v == ON
        }
    }
}

/// Writes one trace line (`epoll_loop: ...\n`) to stderr in a single write.
pub fn line(args: std::fmt::Arguments<'_>) {
    let msg = format!("epoll_loop: {args}\n");
    sys::write_stderr(msg.as_bytes());
}

macro_rules! trace {
    ($($arg:tt)*) => {
        if $crate::trace::enabled() {
            $crate::trace::line(format_args!($($arg)*));
        }
    };
}
pub(crate) use trace;
