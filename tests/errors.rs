//! Error codes and their messages, through the C ABI: every code any "Errors:"
//! line of the header names has its own message from `epoll_loop_strerror`,
//! each message is true in the situations that return its code, and
//! name-resolution failures come back as the library's `EPOLL_LOOP_EAI_*`
//! codes (from the C API, from a C demo, from the Python binding).

mod support;

use ::epoll_loop::ffi::*;
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CStr, c_char, c_int, c_void};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::c::{Link, compile_c};
use support::ffi::{Loop, SendPtr};
use support::process::output_within;
use support::{Scratch, assert_success, have_tool, lib_dir, out_dir, root, tool_or_skip};

fn msg(code: c_int) -> String {
    let p = epoll_loop_strerror(code);
    assert!(!p.is_null());
    // SAFETY: epoll_loop_strerror returns a static NUL-terminated string.
    unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_owned()
}

fn header() -> String {
    std::fs::read_to_string(root().join("include/epoll_loop.h")).expect("read the header")
}

/// The header's `#define NAME <integer>` lines.
fn int_defines(h: &str) -> BTreeMap<String, i64> {
    h.lines()
        .filter_map(|l| {
            let mut w = l.strip_prefix("#define ")?.split_whitespace();
            let (name, value) = (w.next()?, w.next()?);
            let v = value.trim_matches(|c| c == '(' || c == ')');
            let n = match v.strip_prefix("0x") {
                Some(hex) => i64::from_str_radix(hex, 16).ok()?,
                None => v.parse().ok()?,
            };
            Some((name.to_owned(), n))
        })
        .collect()
}

/// The text of every "Errors:" paragraph of the header's doc comments (up to
/// the next label), with the name of the declaration it documents.
fn errors_paragraphs(h: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = h;
    while let Some(start) = rest.find("/**") {
        let Some(len) = rest[start..].find("*/") else {
            break;
        };
        let doc = &rest[start..start + len];
        let after = &rest[start + len + 2..];
        let decl = after.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        let text: String = doc
            .lines()
            .map(|l| l.trim().trim_start_matches('*').trim())
            .collect::<Vec<_>>()
            .join(" ");
        if let Some(i) = text.find("Errors:") {
            let e = &text[i + "Errors:".len()..];
            let end = ["Ownership:", "Thread safety:"]
                .iter()
                .filter_map(|l| e.find(l))
                .min()
                .unwrap_or(e.len());
            out.push((decl.trim().to_owned(), e[..end].to_owned()));
        }
        rest = after;
    }
    out
}

/// Tokens `prefix[A-Z0-9_]*` in `text`, with a trailing `*` kept (a wildcard).
fn tokens<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    let mut v = Vec::new();
    let mut i = 0;
    while let Some(j) = text[i..].find(prefix) {
        let s = i + j;
        let before = text[..s].chars().next_back();
        let mut e = s + prefix.len();
        while e < text.len() {
            let c = text.as_bytes()[e];
            if c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_' {
                e += 1;
            } else {
                break;
            }
        }
        if e < text.len() && text.as_bytes()[e] == b'*' {
            e += 1;
        }
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') && e > s + prefix.len() {
            v.push(&text[s..e]);
        }
        i = e.max(s + 1);
    }
    v
}

/// The errno values of the names the header's Errors: lines may use.
fn errno_value(name: &str) -> Option<c_int> {
    Some(match name {
        "E2BIG" => libc::E2BIG,
        "EACCES" => libc::EACCES,
        "EADDRINUSE" => libc::EADDRINUSE,
        "EADDRNOTAVAIL" => libc::EADDRNOTAVAIL,
        "EAFNOSUPPORT" => libc::EAFNOSUPPORT,
        "EAGAIN" => libc::EAGAIN,
        "EBADF" => libc::EBADF,
        "EBUSY" => libc::EBUSY,
        "ECONNABORTED" => libc::ECONNABORTED,
        "ECONNREFUSED" => libc::ECONNREFUSED,
        "ECONNRESET" => libc::ECONNRESET,
        "EDEADLK" => libc::EDEADLK,
        "EEXIST" => libc::EEXIST,
        "EHOSTUNREACH" => libc::EHOSTUNREACH,
        "EINVAL" => libc::EINVAL,
        "EMFILE" => libc::EMFILE,
        "EMSGSIZE" => libc::EMSGSIZE,
        "ENETUNREACH" => libc::ENETUNREACH,
        "ENFILE" => libc::ENFILE,
        "ENOBUFS" => libc::ENOBUFS,
        "ENOENT" => libc::ENOENT,
        "ENOMEM" => libc::ENOMEM,
        "ENOSPC" => libc::ENOSPC,
        "ENOTCONN" => libc::ENOTCONN,
        "ENOTRECOVERABLE" => libc::ENOTRECOVERABLE,
        "EPERM" => libc::EPERM,
        "EPIPE" => libc::EPIPE,
        "ESHUTDOWN" => libc::ESHUTDOWN,
        "ETIMEDOUT" => libc::ETIMEDOUT,
        _ => return None,
    })
}

/// Every code named in an Errors: line: `(code, name, where)`.
fn codes_in_errors_lines() -> Vec<(c_int, String, String)> {
    let h = header();
    let defines = int_defines(&h);
    let lib_consts: Vec<(&String, &i64)> = defines
        .iter()
        .filter(|(n, v)| n.starts_with("EPOLL_LOOP_E") && **v <= -3000)
        .collect();
    let mut out = Vec::new();
    for (decl, text) in errors_paragraphs(&h) {
        for t in tokens(&text, "-E") {
            let name = &t[1..];
            let v = errno_value(name).unwrap_or_else(|| {
                panic!("{decl}: add {name} to errno_value() in tests/errors.rs")
            });
            out.push((-v, name.to_owned(), decl.clone()));
        }
        for t in tokens(&text, "EPOLL_LOOP_E") {
            if let Some(prefix) = t.strip_suffix('*') {
                let matched: Vec<_> = lib_consts
                    .iter()
                    .filter(|(n, _)| n.starts_with(prefix))
                    .collect();
                assert!(!matched.is_empty(), "{decl}: {t} matches no constant");
                for (n, v) in matched {
                    out.push((**v as c_int, (*n).clone(), decl.clone()));
                }
            } else {
                let v = *defines
                    .get(t)
                    .unwrap_or_else(|| panic!("{decl}: {t} is not #defined in the header"));
                // EPOLL_LOOP_EXCLUSIVE and the other event bits are no error codes.
                if v < 0 {
                    out.push((v as c_int, t.to_owned(), decl.clone()));
                }
            }
        }
    }
    out
}

#[test]
fn the_header_parser_sees_the_errors_lines() {
    let codes = codes_in_errors_lines();
    let names: BTreeSet<&str> = codes.iter().map(|(_, n, _)| n.as_str()).collect();
    for n in [
        "EINVAL",
        "EBADF",
        "EBUSY",
        "ENOSPC",
        "EPOLL_LOOP_EAI_NONAME",
    ] {
        assert!(
            names.contains(n),
            "{n} not found in any Errors: line: {names:?}"
        );
    }
    assert_eq!(
        tokens("`-EINVAL` (x), `-EPIPE`.", "-E"),
        ["-EINVAL", "-EPIPE"]
    );
    assert_eq!(
        tokens(
            "`EPOLL_LOOP_EAI_*` (`EPOLL_LOOP_EAI_NONAME`)",
            "EPOLL_LOOP_E"
        ),
        ["EPOLL_LOOP_EAI_*", "EPOLL_LOOP_EAI_NONAME"]
    );
    assert!(tokens("EPOLL_LOOP_IN", "EPOLL_LOOP_E").is_empty());
}

#[test]
fn every_code_in_an_errors_line_has_its_own_message() {
    let mut bad = Vec::new();
    for (code, name, decl) in codes_in_errors_lines() {
        let m = msg(code);
        if m == "unknown error" || !m.contains(name.as_str()) {
            bad.push(format!("{name} ({code}) from {decl}: {m:?}"));
        }
        assert_eq!(msg(-code), m, "the positive spelling of {name}");
    }
    assert!(
        bad.is_empty(),
        "codes without their own message:\n{}",
        bad.join("\n")
    );
}

#[test]
fn library_codes_are_in_their_reserved_ranges_and_distinct() {
    let defines = int_defines(&header());
    let mut seen = BTreeMap::new();
    for (name, v) in &defines {
        // The error constants; the event bits (EPOLL_LOOP_ERR, _ET, ...) are positive.
        if !name.starts_with("EPOLL_LOOP_E") || *v >= 0 {
            continue;
        }
        assert!(
            (-3199..=-3000).contains(v),
            "{name} = {v}: not a library code"
        );
        if name.starts_with("EPOLL_LOOP_EAI_") {
            assert!(
                (-3099..=-3000).contains(v),
                "{name} = {v}: outside -3000..-3099"
            );
        } else {
            assert!(
                *v <= -3100,
                "{name} = {v}: -3000..-3099 is name resolution's"
            );
        }
        if let Some(other) = seen.insert(*v, name) {
            panic!("{name} and {other} are both {v}");
        }
        let m = msg(*v as c_int);
        assert!(m.contains(name.as_str()), "strerror({name}) = {m:?}");
    }
    let eai: Vec<_> = defines
        .keys()
        .filter(|n| n.starts_with("EPOLL_LOOP_EAI_"))
        .collect();
    for want in [
        "ADDRFAMILY",
        "AGAIN",
        "BADFLAGS",
        "FAIL",
        "FAMILY",
        "MEMORY",
        "NODATA",
        "NONAME",
        "OVERFLOW",
        "SERVICE",
        "SOCKTYPE",
    ] {
        let n = format!("EPOLL_LOOP_EAI_{want}");
        assert!(defines.contains_key(&n), "{n} missing: {eai:?}");
    }
    // EPOLL_LOOP_EAI_x is glibc's EAI_x - 3000 (so bindings can convert).
    assert_eq!(EPOLL_LOOP_EAI_NONAME, libc::EAI_NONAME - 3000);
    assert_eq!(EPOLL_LOOP_EAI_AGAIN, libc::EAI_AGAIN - 3000);
    assert_eq!(EPOLL_LOOP_EAI_FAIL, libc::EAI_FAIL - 3000);
    assert_eq!(EPOLL_LOOP_EAI_NODATA, libc::EAI_NODATA - 3000);
    assert_eq!(EPOLL_LOOP_EAI_MEMORY, libc::EAI_MEMORY - 3000);
    assert_eq!(EPOLL_LOOP_EAI_OVERFLOW, libc::EAI_OVERFLOW - 3000);
}

// ---------------------------------------------------------------------------
// The messages in the situations that return them

const EAI_CODES: [c_int; 11] = [
    EPOLL_LOOP_EAI_ADDRFAMILY,
    EPOLL_LOOP_EAI_AGAIN,
    EPOLL_LOOP_EAI_BADFLAGS,
    EPOLL_LOOP_EAI_FAIL,
    EPOLL_LOOP_EAI_FAMILY,
    EPOLL_LOOP_EAI_MEMORY,
    EPOLL_LOOP_EAI_NODATA,
    EPOLL_LOOP_EAI_NONAME,
    EPOLL_LOOP_EAI_OVERFLOW,
    EPOLL_LOOP_EAI_SERVICE,
    EPOLL_LOOP_EAI_SOCKTYPE,
];

/// A name that never resolves (RFC 6761). Without a reachable DNS server
/// getaddrinfo says EAI_AGAIN (or EAI_FAIL) instead of EAI_NONAME: any EAI code.
const UNRESOLVABLE: &CStr = c"no-such-host.invalid";

fn assert_resolution_failure(what: &str, rc: c_int) {
    assert!(
        EAI_CODES.contains(&rc),
        "{what}: {rc} ({}) is not an EPOLL_LOOP_EAI_* code",
        msg(rc)
    );
    let m = msg(rc);
    assert!(
        m.contains("name resolution") || m.contains("host name"),
        "{what}: {m:?} does not say that the name did not resolve"
    );
    assert!(m.contains("EPOLL_LOOP_EAI_"), "{what}: {m:?}");
}

const NO_CBS: epoll_loop_conn_callbacks = epoll_loop_conn_callbacks {
    on_open: None,
    on_data: None,
    on_drain: None,
    on_close: None,
};

#[test]
fn an_unresolvable_host_is_an_eai_code_for_listen_connect_and_the_echo_server() {
    let lp = Loop::new();
    let mut l = std::ptr::null_mut();
    // SAFETY: live loop, valid strings and callbacks, writable out-pointer.
    let rc = unsafe {
        epoll_loop_tcp_listen(
            lp.ptr(),
            UNRESOLVABLE.as_ptr(),
            0,
            0,
            &NO_CBS,
            std::ptr::null_mut(),
            &mut l,
        )
    };
    assert_resolution_failure("epoll_loop_tcp_listen", rc);
    let mut c = std::ptr::null_mut();
    // SAFETY: as above.
    let rc = unsafe {
        epoll_loop_tcp_connect(
            lp.ptr(),
            UNRESOLVABLE.as_ptr(),
            80,
            &NO_CBS,
            std::ptr::null_mut(),
            &mut c,
        )
    };
    assert_resolution_failure("epoll_loop_tcp_connect", rc);
    assert!(
        l.is_null() && c.is_null(),
        "out-pointers untouched on failure"
    );

    let mut cfg = std::mem::MaybeUninit::<echo_server_config>::zeroed();
    // SAFETY: writable config.
    unsafe { echo_server_config_init(cfg.as_mut_ptr()) };
    // SAFETY: initialised just above.
    let mut cfg = unsafe { cfg.assume_init() };
    cfg.host = UNRESOLVABLE.as_ptr();
    cfg.port = 0;
    let mut srv = std::ptr::null_mut();
    // SAFETY: a valid config and out-pointer.
    let rc = unsafe { echo_server_start(&cfg, &mut srv) };
    assert_resolution_failure("echo_server_start", rc);
    // SAFETY: live loop, valid config and out-pointer.
    let rc = unsafe { echo_server_attach(lp.ptr(), &cfg, &mut srv) };
    assert_resolution_failure("echo_server_attach", rc);
    assert!(srv.is_null());

    // A numeric host needs no lookup and "localhost" resolves.
    for host in [c"127.0.0.1", c"localhost"] {
        // SAFETY: as above.
        let rc = unsafe {
            epoll_loop_tcp_listen(
                lp.ptr(),
                host.as_ptr(),
                0,
                0,
                &NO_CBS,
                std::ptr::null_mut(),
                &mut l,
            )
        };
        assert_eq!(rc, 0, "listen on {host:?}: {}", msg(rc));
        // SAFETY: the listener just made.
        assert_eq!(unsafe { epoll_loop_listener_close(l) }, 0);
    }
}

#[test]
fn enoent_is_not_about_host_names_any_more() {
    let lp = Loop::new();
    // SAFETY: live loop.
    let rc = unsafe { epoll_loop_timer_stop(lp.ptr(), 12345) };
    assert_eq!(rc, -libc::ENOENT);
    let m = msg(rc);
    assert!(m.contains("timer id"), "{m:?}");
    assert!(
        !m.contains("host"),
        "ENOENT no longer means a host name: {m:?}"
    );
}

#[derive(Default)]
struct Opened {
    conn: Cell<*mut epoll_loop_conn>,
    closed: Cell<bool>,
}

unsafe extern "C" fn on_open(c: *mut epoll_loop_conn, ud: *mut c_void) {
    // SAFETY: user data is the test's `Opened`, which outlives the loop.
    unsafe { &*ud.cast::<Opened>() }.conn.set(c);
}

unsafe extern "C" fn on_close(_: *mut epoll_loop_conn, _: c_int, ud: *mut c_void) {
    // SAFETY: as above.
    unsafe { &*ud.cast::<Opened>() }.closed.set(true);
}

#[test]
fn enospc_from_an_address_function_says_the_buffer_is_too_small_and_epipe_says_closed() {
    let lp = Loop::new();
    let opened = Opened::default();
    let ud = (&opened as *const Opened).cast_mut().cast();
    let mut l = std::ptr::null_mut();
    // SAFETY: live loop, valid host and callbacks, writable out-pointer.
    let rc = unsafe {
        epoll_loop_tcp_listen(
            lp.ptr(),
            c"127.0.0.1".as_ptr(),
            0,
            0,
            &NO_CBS,
            std::ptr::null_mut(),
            &mut l,
        )
    };
    assert_eq!(rc, 0, "{}", msg(rc));
    // SAFETY: the listener just made.
    let port = unsafe { epoll_loop_listener_port(l) };
    assert!(port > 0);
    let cbs = epoll_loop_conn_callbacks {
        on_open: Some(on_open),
        on_close: Some(on_close),
        ..NO_CBS
    };
    let mut c = std::ptr::null_mut();
    // SAFETY: as above; `opened` outlives the loop.
    let rc = unsafe {
        epoll_loop_tcp_connect(
            lp.ptr(),
            c"127.0.0.1".as_ptr(),
            port as u16,
            &cbs,
            ud,
            &mut c,
        )
    };
    assert_eq!(rc, 0, "{}", msg(rc));
    let deadline = Instant::now() + Duration::from_secs(10);
    while opened.conn.get().is_null() && Instant::now() < deadline {
        // SAFETY: live loop driven by this thread.
        assert!(unsafe { epoll_loop_poll(lp.ptr(), 100) } >= 0);
    }
    assert_eq!(opened.conn.get(), c, "connected");

    let mut small = [0 as c_char; 4];
    // SAFETY: a live connection; `small` is writable for its length.
    let rc = unsafe {
        epoll_loop_conn_peer_address(c, small.as_mut_ptr(), small.len(), std::ptr::null_mut())
    };
    assert_eq!(rc, -libc::ENOSPC);
    let m = msg(rc);
    assert!(m.contains("buffer is too small"), "{m:?}");
    assert!(
        !m.starts_with("no space left (ENOSPC): the epoll watch limit"),
        "{m:?}"
    );
    let mut big = [0 as c_char; 64];
    // SAFETY: as above.
    let rc = unsafe {
        epoll_loop_conn_local_address(c, big.as_mut_ptr(), big.len(), std::ptr::null_mut())
    };
    assert_eq!(rc, 0);

    // SAFETY: a live connection.
    assert_eq!(unsafe { epoll_loop_conn_close(c) }, 0);
    // SAFETY: still valid until on_close is delivered from the loop.
    let rc = unsafe { epoll_loop_conn_write(c, b"x".as_ptr().cast(), 1) };
    assert_eq!(rc, -libc::EPIPE);
    let m = msg(rc);
    assert!(m.contains("connection is closing or closed"), "{m:?}");
    while !opened.closed.get() && Instant::now() < deadline {
        // SAFETY: live loop driven by this thread.
        assert!(unsafe { epoll_loop_poll(lp.ptr(), 100) } >= 0);
    }
    assert!(opened.closed.get());
    // SAFETY: the listener made above.
    assert_eq!(unsafe { epoll_loop_listener_close(l) }, 0);
}

#[derive(Default)]
struct Busy {
    running: AtomicBool,
    nested: Cell<c_int>,
}

unsafe extern "C" fn mark_running(lp: *mut epoll_loop, _: u64, ud: *mut c_void) {
    // SAFETY: user data is the test's `Busy`, which outlives the loop.
    let b = unsafe { &*ud.cast::<Busy>() };
    // SAFETY: `lp` is the loop dispatching this callback.
    b.nested.set(unsafe { epoll_loop_poll(lp, 0) });
    b.running.store(true, Ordering::Release);
}

#[test]
fn ebusy_names_both_causes_callbacks_and_other_threads() {
    let lp = Loop::new();
    let busy = Busy::default();
    let ud = (&busy as *const Busy).cast_mut().cast();
    // SAFETY: live loop; `busy` outlives it.
    assert_eq!(
        unsafe {
            epoll_loop_timer_start(lp.ptr(), 1, 5, Some(mark_running), ud, std::ptr::null_mut())
        },
        0
    );
    let p = SendPtr(lp.ptr());
    let (from_callback, from_thread) = std::thread::scope(|s| {
        let runner = s.spawn(|| {
            let p = &p;
            // SAFETY: the loop is live for the scope; this thread drives it.
            unsafe { epoll_loop_run(p.0) }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while !busy.running.load(Ordering::Acquire) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        let mut st = epoll_loop_stats::default();
        // SAFETY: a live loop; this call from another thread must be refused.
        let rc = unsafe { epoll_loop_get_stats(p.0, &mut st) };
        // SAFETY: stop is thread-safe.
        assert_eq!(unsafe { epoll_loop_stop(p.0) }, 0);
        assert_eq!(runner.join().unwrap(), 1, "run stopped");
        (busy.nested.get(), rc)
    });
    assert_eq!(from_callback, -libc::EBUSY, "poll from a callback");
    assert_eq!(from_thread, -libc::EBUSY, "a call from another thread");
    let m = msg(-libc::EBUSY);
    assert!(
        m.contains("callbacks") && m.contains("another thread"),
        "{m:?}"
    );
}

#[test]
fn eexist_and_eperm_name_what_they_are_about() {
    let lp = Loop::new();
    assert_eq!(epoll_loop_signal_block(libc::SIGUSR2), 0);
    unsafe extern "C" fn on_sig(_: *mut epoll_loop, _: c_int, _: *mut c_void) {}
    // SAFETY: live loop, valid callback.
    let first = unsafe {
        epoll_loop_signal_start(lp.ptr(), libc::SIGUSR2, Some(on_sig), std::ptr::null_mut())
    };
    assert_eq!(first, 0);
    // SAFETY: as above.
    let rc = unsafe {
        epoll_loop_signal_start(lp.ptr(), libc::SIGUSR2, Some(on_sig), std::ptr::null_mut())
    };
    assert_eq!(rc, -libc::EEXIST);
    let m = msg(rc);
    assert!(m.contains("signal already watched"), "{m:?}");
    // SAFETY: as above.
    assert_eq!(
        unsafe { epoll_loop_signal_stop(lp.ptr(), libc::SIGUSR2) },
        0
    );

    unsafe extern "C" fn on_io(_: *mut epoll_loop, _: c_int, _: u32, _: *mut c_void) {}
    let file = File::open(root().join("Cargo.toml")).unwrap();
    // SAFETY: live loop, valid callback.
    let rc = unsafe {
        epoll_loop_register(
            lp.ptr(),
            file.as_raw_fd(),
            EPOLL_LOOP_IN,
            Some(on_io),
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, -libc::EPERM);
    assert!(msg(rc).contains("regular file"), "{}", msg(rc));
}

#[test]
fn signal_start_of_an_unblocked_signal_says_block_it_first() {
    // A fresh thread, with the mask it inherits from the harness: nothing
    // blocks SIGUSR1 there (checked), so the watch must be refused.
    let rc = std::thread::spawn(|| {
        // SAFETY: a NULL new set only reads the mask into `cur`.
        let mut cur: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        assert_eq!(
            unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut cur) },
            0
        );
        // SAFETY: `cur` is an initialised set.
        assert_eq!(
            unsafe { libc::sigismember(&cur, libc::SIGUSR1) },
            0,
            "SIGUSR1 is not blocked here"
        );
        unsafe extern "C" fn on_sig(_: *mut epoll_loop, _: c_int, _: *mut c_void) {}
        let lp = Loop::new();
        // SAFETY: live loop, valid callback.
        let rc = unsafe {
            epoll_loop_signal_start(lp.ptr(), libc::SIGUSR1, Some(on_sig), std::ptr::null_mut())
        };
        let mut st = epoll_loop_stats::default();
        // SAFETY: live loop, writable stats.
        assert_eq!(unsafe { epoll_loop_get_stats(lp.ptr(), &mut st) }, 0);
        assert_eq!(st.registered, 0, "no signalfd was registered");
        // Once blocked, the same call works.
        assert_eq!(epoll_loop_signal_block(libc::SIGUSR1), 0);
        // SAFETY: as above.
        assert_eq!(
            unsafe {
                epoll_loop_signal_start(lp.ptr(), libc::SIGUSR1, Some(on_sig), std::ptr::null_mut())
            },
            0
        );
        // SAFETY: as above.
        assert_eq!(
            unsafe { epoll_loop_signal_stop(lp.ptr(), libc::SIGUSR1) },
            0
        );
        rc
    })
    .join()
    .unwrap();
    assert_eq!(rc, EPOLL_LOOP_ENOTBLOCKED);
    assert_eq!(EPOLL_LOOP_ENOTBLOCKED, -3100);
    let m = msg(rc);
    assert!(
        m.contains("signal not blocked") && m.contains("epoll_loop_signal_block"),
        "{m:?}"
    );
}

// ---------------------------------------------------------------------------
// What programs print

#[test]
fn the_echo_server_demo_prints_the_resolution_failure() {
    let dir = out_dir("errors");
    let exe = Scratch::new(&dir, "echo_server");
    compile_c(
        &[&root().join("c-examples/echo_server.c")],
        exe.path(),
        Link::Shared,
        false,
        &[],
    );
    let o = output_within(
        Command::new(exe.path())
            .args(["--host", UNRESOLVABLE.to_str().unwrap(), "--port", "0"])
            .env("LD_LIBRARY_PATH", lib_dir())
            .stdin(Stdio::null()),
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "exit {}:\n{stderr}", o.status);
    let line = stderr
        .lines()
        .find(|l| l.contains("cannot start on no-such-host.invalid"))
        .unwrap_or_else(|| panic!("no 'cannot start' line:\n{stderr}"));
    assert!(
        line.contains("EPOLL_LOOP_EAI_") && EAI_CODES.iter().any(|&c| line.ends_with(&msg(c))),
        "the demo does not print an EAI message: {line:?}"
    );
}

#[test]
fn the_python_binding_raises_gaierror_for_an_unresolvable_host() {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    if !tool_or_skip(have_tool(&python), "python3", "the Python gaierror check") {
        return;
    }
    let script = r#"
import socket, epoll_loop
try:
    epoll_loop.EchoServer(host="no-such-host.invalid", port=0)
except socket.gaierror as e:
    eai = [getattr(socket, n) for n in dir(socket) if n.startswith("EAI_")]
    assert e.errno in eai, (e.errno, e)
    assert "EPOLL_LOOP_EAI_" in e.strerror, e.strerror
    assert isinstance(e, OSError)
    print("gaierror", e.errno)
else:
    raise SystemExit("no exception")
"#;
    let o = Command::new(&python)
        .args(["-X", "dev", "-c", script])
        .env("EPOLL_LOOP_LIB", lib_dir().join("libepoll_loop.so"))
        .env("PYTHONPATH", root().join("c-examples/python"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run python3");
    assert_success("the Python gaierror check", &o);
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("gaierror "));
}
