//! The run-time version, matching the `EPOLL_LOOP_VERSION_*` macros in the header.

use super::guard::boundary;
use std::ffi::c_char;

const fn parse(s: &str) -> u32 {
    let b = s.as_bytes();
    let mut i = 0;
    let mut v = 0u32;
    while i < b.len() {
        v = v * 10 + (b[i] - b'0') as u32;
        i += 1;
    }
    v
}

pub(crate) const MAJOR: u32 = parse(env!("CARGO_PKG_VERSION_MAJOR"));
pub(crate) const MINOR: u32 = parse(env!("CARGO_PKG_VERSION_MINOR"));
pub(crate) const PATCH: u32 = parse(env!("CARGO_PKG_VERSION_PATCH"));
const VERSION_CSTR: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");

/// The library's version as `(major << 16) | (minor << 8) | patch`.
///
/// Returns: the same value as `EPOLL_LOOP_VERSION_HEX` in the header the library
/// was built with; compare the two to detect a header/library mismatch.
/// Errors: none.
/// Ownership: nothing to free.
/// Thread safety: safe from any thread.
#[unsafe(no_mangle)]
pub extern "C" fn epoll_loop_version() -> u32 {
    boundary(|| (MAJOR << 16) | (MINOR << 8) | PATCH)
}

/// The library's version as a string, for example "0.1.0".
///
/// Returns: a static NUL-terminated string equal to `EPOLL_LOOP_VERSION_STRING`.
/// Errors: none.
/// Ownership: the string is static; never free it.
/// Thread safety: safe from any thread.
#[unsafe(no_mangle)]
pub extern "C" fn epoll_loop_version_string() -> *const c_char {
    boundary(|| VERSION_CSTR.as_ptr().cast())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_matches_the_crate() {
        let v = epoll_loop_version();
        let s = format!("{}.{}.{}", v >> 16, (v >> 8) & 0xff, v & 0xff);
        assert_eq!(s, env!("CARGO_PKG_VERSION"));
        // SAFETY: static NUL-terminated string.
        let vs = unsafe { std::ffi::CStr::from_ptr(epoll_loop_version_string()) };
        assert_eq!(vs.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    }
}
