//! # epoll-loop
//!
//! A Linux epoll event loop with callbacks and timers, built for C callers: a
//! `cdylib`/`staticlib` with a cbindgen-generated header (`include/epoll_loop.h`).
//!
//! Layers, inside out (see `docs/ARCHITECTURE.md`):
//! 1. [`sys`]: thin wrappers over the syscalls; all libc calls live here (and in `ffi`).
//! 2. [`poller`]: [`poller::Poller`], Python's `select.epoll` in safe Rust.
//! 3. [`event_loop`]: [`event_loop::EventLoop`], registry + generations + timers + waker.
//! 4. [`tcp`]: listener and buffered connection (write queue, backpressure, EMFILE).
//! 5. [`echo`]: the echo server, built on `tcp` only.
//! 6. [`ffi`]: the C ABI; pointer checks, error codes, the panic boundary.
#![deny(unsafe_op_in_unsafe_fn)]

/// cbindgen:ignore
pub mod echo;
/// cbindgen:ignore
pub mod event_loop;
pub mod ffi;
/// cbindgen:ignore
pub mod poller;
/// cbindgen:ignore
pub mod stream;
/// cbindgen:ignore
pub mod sys;
/// cbindgen:ignore
pub(crate) mod trace;

#[cfg(test)]
mod fault_tests;
