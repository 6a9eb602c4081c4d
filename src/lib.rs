//! # epoll-loop
//!
//! A Linux epoll event loop with callbacks and timers, built for C callers: a
//! `cdylib`/`staticlib` with a cbindgen-generated header (`include/epoll_loop.h`).
//! The C ABI ([`ffi`]) is the only public surface; the layers below it are the
//! crate's own.
//!
//! Layers, inside out (see `docs/ARCHITECTURE.md`, whose table
//! `tests/layers.rs` holds every `use crate::` line to):
//! 1. `sys`: thin wrappers over the syscalls; all libc calls live here (and in `ffi`).
//! 2. `poller`: `Poller`, Python's `select.epoll` in safe Rust.
//! 3. `event_loop`: `EventLoop`, registry + generations + timers + waker, signals, posts.
//! 4. `stream`: listener and buffered connection (write queue, backpressure, EMFILE).
//! 5. `echo`: the echo server, built on `stream` only.
//! 6. [`ffi`]: the C ABI; handles, error codes, the panic boundary.
#![deny(unsafe_op_in_unsafe_fn)]

/// cbindgen:ignore
pub(crate) mod echo;
/// cbindgen:ignore
pub(crate) mod event_loop;
pub mod ffi;
/// cbindgen:ignore
pub(crate) mod poller;
/// cbindgen:ignore
pub(crate) mod stream;
/// cbindgen:ignore
pub(crate) mod sys;
/// cbindgen:ignore
pub(crate) mod trace;

#[cfg(test)]
mod fault_tests;

/// What tools outside the crate (the fuzz targets) need to make the library's
/// syscalls fail: the error type and the fault plan. Only with the
/// `fault-injection` feature; release builds have none of it.
/// cbindgen:ignore
#[cfg(feature = "fault-injection")]
pub mod testing {
    pub use crate::sys::Errno;
    pub use crate::sys::fault;
}
