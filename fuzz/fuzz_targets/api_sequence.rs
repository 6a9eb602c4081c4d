//! Fuzz target: a byte string decodes into a sequence of C-API calls on one
//! loop and real fds (pipes and eventfds that are opened, closed and reopened,
//! so fd numbers get reused), with the dispatch rules checked after each step
//! against a model:
//! - no callback for an fd that is not registered, nor for an older
//!   registration of the same number (each registration has its own token);
//! - an `ONESHOT` registration fires once until `modify` re-arms it;
//! - a one-shot timer fires once; a stopped timer never; a timer started by a
//!   timer callback not in the same `poll`; timer ids only grow;
//! - every post runs exactly once, in the next `poll`;
//! - `poll` returns the number of callbacks it ran;
//! - return codes: `EEXIST`, `ENOENT`, `EINVAL` exactly where the model says;
//! - `stop` makes `run` return 1 at once; `get_stats` agrees with the model;
//! - freeing the loop leaves no fd behind.
//!
//! Callbacks act too (unregister another fd, stop a timer, start a timer,
//! drain their fd), driven by the same input.

#![no_main]

use ::epoll_loop::ffi::*;
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{c_int, c_void};

const SLOTS: usize = 6;
const MAX_OPS: usize = 256;
const MAX_SLOW_POLLS: u32 = 8;

const IN: u32 = EPOLL_LOOP_IN;
const OUT: u32 = EPOLL_LOOP_OUT;
const ERR: u32 = EPOLL_LOOP_ERR;
const HUP: u32 = EPOLL_LOOP_HUP;
const ET: u32 = EPOLL_LOOP_ET;
const ONESHOT: u32 = EPOLL_LOOP_ONESHOT;
const EXCLUSIVE: u32 = EPOLL_LOOP_EXCLUSIVE;

#[derive(Clone, Copy)]
struct Slot {
    /// Read end (the eventfd itself for an eventfd).
    rfd: c_int,
    /// Write end (the eventfd itself for an eventfd).
    wfd: c_int,
    /// Unique per opened file.
    file: u64,
}

struct Reg {
    token: u64,
    events: u32,
    armed: bool,
    /// The file registered (the number may have been closed and reused since).
    file: u64,
}

#[derive(Default)]
struct Model {
    lp: usize,
    slots: [Option<Slot>; SLOTS],
    /// By fd number, as the loop keys them.
    regs: BTreeMap<c_int, Reg>,
    /// Pending timers: id -> repeating.
    timers: BTreeMap<u64, bool>,
    /// Timers started from a timer callback in the current poll.
    started_in_timer: BTreeSet<u64>,
    last_timer_id: u64,
    posts_pending: u32,
    callbacks: u32,
    next_token: u64,
    next_file: u64,
    actions: Vec<u8>,
    action_pos: usize,
}

impl Model {
    fn action(&mut self) -> u8 {
        let b = self.actions.get(self.action_pos).copied().unwrap_or(0);
        self.action_pos += 1;
        b
    }

    fn lp(&self) -> *mut epoll_loop {
        self.lp as *mut epoll_loop
    }

    fn live_file(&self, fd: c_int) -> Option<u64> {
        self.slots
            .iter()
            .flatten()
            .find(|s| s.rfd == fd)
            .map(|s| s.file)
    }
}

thread_local! {
    static M: RefCell<Model> = RefCell::new(Model::default());
}

fn exclusive_ok(ev: u32) -> bool {
    ev & !(IN | OUT | ERR | HUP | ET | EXCLUSIVE) == 0
}

/// Unregisters the `k`-th registered fd (model order); the loop must agree.
fn unregister_nth(m: &mut Model, k: u8) {
    if m.regs.is_empty() {
        return;
    }
    let fd = *m.regs.keys().nth(k as usize % m.regs.len()).unwrap();
    // SAFETY: the live loop of this input.
    let rc = unsafe { epoll_loop_unregister(m.lp(), fd) };
    assert_eq!(rc, 0, "unregister of registered fd {fd}");
    m.regs.remove(&fd);
}

fn stop_nth_timer(m: &mut Model, k: u8) {
    if m.timers.is_empty() {
        return;
    }
    let id = *m.timers.keys().nth(k as usize % m.timers.len()).unwrap();
    // SAFETY: the live loop of this input.
    let rc = unsafe { epoll_loop_timer_stop(m.lp(), id) };
    assert_eq!(rc, 0, "timer_stop of pending timer {id}");
    m.timers.remove(&id);
}

fn drain_fd(fd: c_int) {
    let mut buf = [0u8; 64];
    // SAFETY: reads into a stack buffer of the size given; a closed or foreign
    // fd only gives an error.
    while unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
}

unsafe extern "C" fn io_cb(_lp: *mut epoll_loop, fd: c_int, events: u32, ud: *mut c_void) {
    M.with(|m| {
        let mut m = m.borrow_mut();
        m.callbacks += 1;
        let Some(reg) = m.regs.get_mut(&fd) else {
            panic!("callback for fd {fd}, which is not registered");
        };
        assert_eq!(
            reg.token, ud as u64,
            "callback for an older registration of fd {fd}"
        );
        if reg.events & ONESHOT != 0 {
            assert!(reg.armed, "ONESHOT fd {fd} fired again without modify");
            reg.armed = false;
        }
        let allowed = (reg.events & !(ET | ONESHOT | EXCLUSIVE)) | ERR | HUP;
        assert_eq!(
            events & !allowed,
            0,
            "fd {fd}: events {events:#x} not asked for ({:#x})",
            reg.events
        );
        let a = m.action();
        match a % 5 {
            1 => {
                let k = m.action();
                unregister_nth(&mut m, k);
            }
            2 => {
                let k = m.action();
                stop_nth_timer(&mut m, k);
            }
            3 => drain_fd(fd),
            4 => {
                // Unregister itself.
                // SAFETY: the live loop of this input.
                assert_eq!(unsafe { epoll_loop_unregister(m.lp(), fd) }, 0);
                m.regs.remove(&fd);
            }
            _ => {}
        }
    });
}

unsafe extern "C" fn timer_cb(_lp: *mut epoll_loop, id: u64, _ud: *mut c_void) {
    M.with(|m| {
        let mut m = m.borrow_mut();
        m.callbacks += 1;
        assert!(
            !m.started_in_timer.contains(&id),
            "timer {id} started by a timer callback ran in the same poll"
        );
        let Some(&repeating) = m.timers.get(&id) else {
            panic!("timer {id} fired but is not pending (fired twice, or stopped)");
        };
        if !repeating {
            m.timers.remove(&id);
        }
        let a = m.action();
        match a % 4 {
            1 => {
                let k = m.action();
                stop_nth_timer(&mut m, k);
            }
            2 => {
                let mut nid = 0;
                // SAFETY: the live loop of this input; static callback.
                let rc = unsafe {
                    epoll_loop_timer_start(
                        m.lp(),
                        0,
                        0,
                        Some(timer_cb),
                        std::ptr::null_mut(),
                        &mut nid,
                    )
                };
                assert_eq!(rc, 0);
                assert!(nid > m.last_timer_id, "timer ids only grow");
                m.last_timer_id = nid;
                m.timers.insert(nid, false);
                m.started_in_timer.insert(nid);
            }
            _ => {}
        }
    });
}

unsafe extern "C" fn post_cb(_lp: *mut epoll_loop, _ud: *mut c_void) {
    M.with(|m| {
        let mut m = m.borrow_mut();
        m.callbacks += 1;
        assert!(m.posts_pending > 0, "a post ran twice");
        m.posts_pending -= 1;
    });
}

fn count_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn open_slot(m: &mut Model, i: usize, eventfd: bool) {
    if m.slots[i].is_some() {
        return;
    }
    m.next_file += 1;
    let file = m.next_file;
    if eventfd {
        // SAFETY: plain syscall with valid flags.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        assert!(fd >= 0);
        m.slots[i] = Some(Slot {
            rfd: fd,
            wfd: fd,
            file,
        });
    } else {
        let mut p = [0; 2];
        // SAFETY: `p` has room for two descriptors.
        assert_eq!(
            unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) },
            0
        );
        m.slots[i] = Some(Slot {
            rfd: p[0],
            wfd: p[1],
            file,
        });
    }
}

fn close_slot(m: &mut Model, i: usize) {
    if let Some(s) = m.slots[i].take() {
        // SAFETY: descriptors this target opened and closes once.
        unsafe {
            libc::close(s.rfd);
            if s.wfd != s.rfd {
                libc::close(s.wfd);
            }
        }
    }
}

fn events_from(b: u8) -> u32 {
    let mut ev = 0;
    for (bit, e) in [
        IN,
        OUT,
        ET,
        ONESHOT,
        EXCLUSIVE,
        EPOLL_LOOP_RDHUP,
        EPOLL_LOOP_PRI,
    ]
    .iter()
    .enumerate()
    {
        if b & (1 << bit) != 0 {
            ev |= e;
        }
    }
    ev
}

fuzz_target!(|data: &[u8]| {
    let fds0 = count_fds();
    let mut lp = std::ptr::null_mut();
    // SAFETY: valid out-pointer.
    assert_eq!(unsafe { epoll_loop_new(&mut lp) }, 0);
    // The second half of the input drives the callbacks' actions.
    let (script, actions) = data.split_at(data.len() / 2);
    M.with(|m| {
        *m.borrow_mut() = Model {
            lp: lp as usize,
            actions: actions.to_vec(),
            ..Model::default()
        }
    });
    let mut it = script.iter().copied();
    let mut next = move || it.next();
    let mut slow_polls = 0;
    for _ in 0..MAX_OPS {
        let Some(op) = next() else { break };
        let arg = next().unwrap_or(0);
        let i = arg as usize % SLOTS;
        // SAFETY (all blocks below): `lp` is this input's live loop, driven by
        // this thread; callbacks are static functions.
        match op % 16 {
            0 => M.with(|m| open_slot(&mut m.borrow_mut(), i, arg & 0x80 != 0)),
            1 => M.with(|m| close_slot(&mut m.borrow_mut(), i)),
            2 | 3 => {
                let ev = events_from(next().unwrap_or(1));
                let (fd, file) = match M.with(|m| m.borrow().slots[i]) {
                    Some(s) => (s.rfd, s.file),
                    None => continue,
                };
                let expect = M.with(|m| {
                    let m = m.borrow();
                    if m.regs.contains_key(&fd) {
                        -libc::EEXIST
                    } else if ev & EXCLUSIVE != 0 && !exclusive_ok(ev) {
                        -libc::EINVAL
                    } else {
                        0
                    }
                });
                let token = M.with(|m| {
                    let mut m = m.borrow_mut();
                    m.next_token += 1;
                    m.next_token
                });
                let rc =
                    unsafe { epoll_loop_register(lp, fd, ev, Some(io_cb), token as *mut c_void) };
                assert_eq!(rc, expect, "register fd {fd} events {ev:#x}");
                if rc == 0 {
                    M.with(|m| {
                        m.borrow_mut().regs.insert(
                            fd,
                            Reg {
                                token,
                                events: ev,
                                armed: true,
                                file,
                            },
                        )
                    });
                }
            }
            4 => {
                let ev = events_from(next().unwrap_or(1));
                let fd = match M.with(|m| m.borrow().slots[i]) {
                    Some(s) => s.rfd,
                    None => continue,
                };
                let rc = unsafe { epoll_loop_modify(lp, fd, ev) };
                M.with(|m| {
                    let mut m = m.borrow_mut();
                    let live = m.live_file(fd);
                    match m.regs.get_mut(&fd) {
                        None => assert_eq!(rc, -libc::ENOENT, "modify of unregistered fd {fd}"),
                        Some(reg) if Some(reg.file) == live => {
                            // The kernel refuses EXCLUSIVE with other bits than
                            // IN/OUT/ET (the loop then puts the old events back).
                            if ev & EXCLUSIVE != 0 && !exclusive_ok(ev) {
                                assert_eq!(rc, -libc::EINVAL, "modify {fd} to {ev:#x}");
                            } else {
                                assert_eq!(rc, 0, "modify of live registration {fd} to {ev:#x}");
                                reg.events = ev;
                                reg.armed = true;
                            }
                        }
                        // An invalid EXCLUSIVE combination is refused as a bad
                        // argument before the kernel is asked.
                        Some(_) if ev & EXCLUSIVE != 0 && !exclusive_ok(ev) => {
                            assert_eq!(rc, -libc::EINVAL, "modify {fd} to {ev:#x}")
                        }
                        Some(_) => assert!(
                            rc == -libc::ENOENT || rc == -libc::EBADF,
                            "modify of a registration whose file was closed: {rc}"
                        ),
                    }
                });
            }
            5 => {
                // Unregister a slot's fd, or a registered number (maybe closed).
                let fd = if arg & 0x80 != 0 {
                    match M.with(|m| {
                        let m = m.borrow();
                        m.regs
                            .keys()
                            .nth(arg as usize % m.regs.len().max(1))
                            .copied()
                    }) {
                        Some(fd) => fd,
                        None => continue,
                    }
                } else {
                    match M.with(|m| m.borrow().slots[i]) {
                        Some(s) => s.rfd,
                        None => continue,
                    }
                };
                let rc = unsafe { epoll_loop_unregister(lp, fd) };
                let was = M.with(|m| m.borrow_mut().regs.remove(&fd).is_some());
                assert_eq!(
                    rc,
                    if was { 0 } else { -libc::ENOENT },
                    "unregister fd {fd}"
                );
            }
            6 | 7 => {
                if let Some(s) = M.with(|m| m.borrow().slots[i]) {
                    let one = 1u64;
                    // SAFETY: writes from a live u64 (8 bytes for an eventfd, 1 for a pipe).
                    let n = if s.wfd == s.rfd { 8 } else { 1 };
                    unsafe { libc::write(s.wfd, (&one as *const u64).cast(), n) };
                }
            }
            8 => {
                if let Some(s) = M.with(|m| m.borrow().slots[i]) {
                    drain_fd(s.rfd);
                }
            }
            9 => {
                let after = u64::from(arg % 4);
                let repeat = if arg & 0x40 != 0 {
                    u64::from(1 + arg % 3)
                } else {
                    0
                };
                let mut id = 0;
                let rc = unsafe {
                    epoll_loop_timer_start(
                        lp,
                        after,
                        repeat,
                        Some(timer_cb),
                        std::ptr::null_mut(),
                        &mut id,
                    )
                };
                assert_eq!(rc, 0);
                M.with(|m| {
                    let mut m = m.borrow_mut();
                    assert!(id > m.last_timer_id, "timer ids only grow");
                    m.last_timer_id = id;
                    m.timers.insert(id, repeat > 0);
                });
            }
            10 => {
                let (id, pending) = M.with(|m| {
                    let m = m.borrow();
                    if arg & 0x80 != 0 || m.timers.is_empty() {
                        let id = u64::from(arg & 0x7f);
                        (id, m.timers.contains_key(&id))
                    } else {
                        (
                            *m.timers.keys().nth(arg as usize % m.timers.len()).unwrap(),
                            true,
                        )
                    }
                });
                let rc = unsafe { epoll_loop_timer_stop(lp, id) };
                assert_eq!(
                    rc,
                    if pending { 0 } else { -libc::ENOENT },
                    "timer_stop {id}"
                );
                M.with(|m| m.borrow_mut().timers.remove(&id));
            }
            11 => {
                assert_eq!(
                    unsafe { epoll_loop_post(lp, Some(post_cb), std::ptr::null_mut()) },
                    0
                );
                M.with(|m| m.borrow_mut().posts_pending += 1);
            }
            12 | 13 => {
                let timeout = if arg & 0x80 != 0 && slow_polls < MAX_SLOW_POLLS {
                    slow_polls += 1;
                    1
                } else {
                    0
                };
                M.with(|m| {
                    let mut m = m.borrow_mut();
                    m.callbacks = 0;
                    m.started_in_timer.clear();
                });
                let rc = unsafe { epoll_loop_poll(lp, timeout) };
                M.with(|m| {
                    let m = m.borrow();
                    assert!(rc >= 0, "poll: {rc}");
                    assert_eq!(rc as u32, m.callbacks, "poll's count");
                    assert_eq!(m.posts_pending, 0, "posts not run by the next poll");
                });
            }
            14 => {
                // stop, then run: returns 1 at once, runs nothing.
                assert_eq!(unsafe { epoll_loop_stop(lp) }, 0);
                if arg & 1 != 0 {
                    assert_eq!(unsafe { epoll_loop_wake(lp) }, 0);
                }
                M.with(|m| m.borrow_mut().callbacks = 0);
                assert_eq!(unsafe { epoll_loop_run(lp) }, 1, "run after stop");
                M.with(|m| assert_eq!(m.borrow().callbacks, 0));
            }
            _ => {
                let mut st = epoll_loop_stats::default();
                assert_eq!(unsafe { epoll_loop_get_stats(lp, &mut st) }, 0);
                M.with(|m| {
                    let m = m.borrow();
                    assert_eq!(st.registered, m.regs.len() as u64, "registered count");
                    assert_eq!(st.timers_pending, m.timers.len() as u64, "pending timers");
                });
            }
        }
    }
    // SAFETY: the live loop; nothing runs any more.
    assert_eq!(unsafe { epoll_loop_free(lp) }, 0);
    M.with(|m| {
        let mut m = m.borrow_mut();
        for i in 0..SLOTS {
            close_slot(&mut m, i);
        }
        *m = Model::default();
    });
    assert_eq!(count_fds(), fds0, "fds leaked after free");
});
