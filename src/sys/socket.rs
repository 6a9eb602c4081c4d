//! TCP socket calls: name resolution, listen, accept, recv, send (always
//! `MSG_NOSIGNAL`), shutdown, addresses, `SO_LINGER`, `SO_ERROR`, `SIOCOUTQ`,
//! and the reserve descriptor for `EMFILE`.

use super::fault::{self, Op};
use super::{Errno, Result, cvt};
use std::ffi::CString;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

fn to_raw(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in6.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

fn from_raw(ss: &libc::sockaddr_storage) -> Result<SocketAddr> {
    match i32::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin: &libc::sockaddr_in = unsafe { &*(ss as *const libc::sockaddr_storage).cast() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Ok(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6: &libc::sockaddr_in6 =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let port = u16::from_be(sin6.sin6_port);
            Ok(SocketAddr::V6(SocketAddrV6::new(
                ip,
                port,
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => Err(Errno::EAFNOSUPPORT),
    }
}

/// glibc's `EAI_ADDRFAMILY` (a GNU extension the `libc` crate does not export).
const EAI_ADDRFAMILY: i32 = -9;

/// getaddrinfo's `EAI_*` codes and the library's codes for them.
const EAI_CODES: [(i32, Errno); 11] = [
    (libc::EAI_BADFLAGS, Errno::EAI_BADFLAGS),
    (libc::EAI_NONAME, Errno::EAI_NONAME),
    (libc::EAI_AGAIN, Errno::EAI_AGAIN),
    (libc::EAI_FAIL, Errno::EAI_FAIL),
    (libc::EAI_NODATA, Errno::EAI_NODATA),
    (libc::EAI_FAMILY, Errno::EAI_FAMILY),
    (libc::EAI_SOCKTYPE, Errno::EAI_SOCKTYPE),
    (libc::EAI_SERVICE, Errno::EAI_SERVICE),
    (EAI_ADDRFAMILY, Errno::EAI_ADDRFAMILY),
    (libc::EAI_MEMORY, Errno::EAI_MEMORY),
    (libc::EAI_OVERFLOW, Errno::EAI_OVERFLOW),
];

/// The library code for getaddrinfo's result `eai` (non-zero). `EAI_SYSTEM`
/// is the errno `system` saved right after the call (`EIO` if that was 0); a
/// code this table does not know (none that getaddrinfo returns without
/// `AI_IDN`, which is not used) counts as `EAI_FAIL`.
fn eai_to_errno(eai: i32, system: Errno) -> Errno {
    if eai == libc::EAI_SYSTEM {
        return if system.0 > 0 {
            system
        } else {
            Errno(libc::EIO)
        };
    }
    EAI_CODES
        .iter()
        .find(|(c, _)| *c == eai)
        .map_or(Errno::EAI_FAIL, |&(_, e)| e)
}

/// getaddrinfo's `EAI_*` value behind a library code, if it is one.
pub fn eai_of(e: Errno) -> Option<i32> {
    EAI_CODES.iter().find(|(_, x)| *x == e).map(|&(c, _)| c)
}

/// Frees a getaddrinfo result list on drop.
struct AddrInfoList(*mut libc::addrinfo);

impl Drop for AddrInfoList {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: a list getaddrinfo returned, freed exactly once.
            unsafe { libc::freeaddrinfo(self.0) };
        }
    }
}

/// The TCP addresses of `host` with `port`, in getaddrinfo's order (never
/// empty). A numeric IPv4 or IPv6 address is parsed without a lookup; a name
/// goes to `getaddrinfo(3)` (`AF_UNSPEC`, `SOCK_STREAM`), which blocks while
/// it asks `/etc/hosts`, DNS and whatever else `nsswitch.conf` names.
///
/// Errors: the `EAI_*` code as the library's [`Errno::EAI_NONAME`] and
/// friends (so `to_negative()` is the C constant `EPOLL_LOOP_EAI_*`),
/// `EAI_SYSTEM` as the errno behind it, `EINVAL` for a host with a NUL byte.
pub fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let c_host = CString::new(host).map_err(|_| Errno::EINVAL)?;
    // SAFETY: addrinfo is plain old data; all-zero is the documented "no hints" base.
    let mut hints: libc::addrinfo = unsafe { zeroed() };
    hints.ai_family = libc::AF_UNSPEC;
    hints.ai_socktype = libc::SOCK_STREAM;
    hints.ai_protocol = libc::IPPROTO_TCP;
    let mut res: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: `c_host` is NUL-terminated, a NULL service is allowed, `hints` is a
    // valid addrinfo and `res` a writable pointer.
    let rc = unsafe { libc::getaddrinfo(c_host.as_ptr(), std::ptr::null(), &hints, &mut res) };
    if rc != 0 {
        let system = Errno::last();
        return Err(eai_to_errno(rc, system));
    }
    let list = AddrInfoList(res);
    let mut addrs = Vec::new();
    let mut p = list.0;
    while !p.is_null() {
        // SAFETY: `p` is a node of the list getaddrinfo returned, alive until `list` drops.
        let ai = unsafe { &*p };
        p = ai.ai_next;
        if ai.ai_addr.is_null() || ai.ai_addrlen as usize > size_of::<libc::sockaddr_storage>() {
            continue;
        }
        // SAFETY: all-zero sockaddr_storage is valid.
        let mut ss: libc::sockaddr_storage = unsafe { zeroed() };
        // SAFETY: `ai_addr` holds `ai_addrlen` bytes, which fit in `ss` (checked above).
        unsafe {
            std::ptr::copy_nonoverlapping(
                ai.ai_addr.cast::<u8>(),
                (&mut ss as *mut libc::sockaddr_storage).cast::<u8>(),
                ai.ai_addrlen as usize,
            )
        };
        if let Ok(mut a) = from_raw(&ss) {
            a.set_port(port);
            if !addrs.contains(&a) {
                addrs.push(a);
            }
        }
    }
    if addrs.is_empty() {
        return Err(Errno::EAI_NODATA);
    }
    Ok(addrs)
}

fn setsockopt_int(fd: RawFd, level: i32, name: i32, value: i32) -> Result<()> {
    // SAFETY: passes a pointer to a live i32 and its exact size.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            size_of::<i32>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// A new non-blocking, close-on-exec TCP socket of `addr`'s family.
fn tcp_socket(addr: &SocketAddr) -> Result<OwnedFd> {
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    fault::before(Op::Socket, 0)?;
    // SAFETY: plain syscall with valid constants.
    let raw = cvt(unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    // SAFETY: socket() returned a new descriptor we alone own.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// A non-blocking, close-on-exec TCP socket bound to `addr` and listening.
/// `SO_REUSEADDR` is always set; `SO_REUSEPORT` when `reuse_port`.
/// `backlog <= 0` means `SOMAXCONN`.
pub fn tcp_listen(addr: &SocketAddr, backlog: i32, reuse_port: bool) -> Result<OwnedFd> {
    let fd = tcp_socket(addr)?;
    let raw = fd.as_raw_fd();
    setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    if reuse_port {
        setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    }
    let (ss, len) = to_raw(addr);
    // SAFETY: `ss` holds a valid sockaddr of `len` bytes.
    cvt(unsafe { libc::bind(raw, (&ss as *const libc::sockaddr_storage).cast(), len) })?;
    let backlog = if backlog <= 0 {
        libc::SOMAXCONN
    } else {
        backlog
    };
    // SAFETY: plain syscall on our socket.
    cvt(unsafe { libc::listen(raw, backlog) })?;
    Ok(fd)
}

/// A non-blocking, close-on-exec TCP socket with a connect to `addr` started.
/// `EINPROGRESS` is success here: completion is signalled by `EPOLLOUT`, and
/// `SO_ERROR` then tells the outcome.
pub fn tcp_connect(addr: &SocketAddr) -> Result<OwnedFd> {
    let fd = tcp_socket(addr)?;
    let raw = fd.as_raw_fd();
    let (ss, len) = to_raw(addr);
    loop {
        let r = fault::before(Op::Connect, 0).and_then(|_| {
            // SAFETY: `ss` holds a valid sockaddr of `len` bytes.
            cvt(unsafe { libc::connect(raw, (&ss as *const libc::sockaddr_storage).cast(), len) })
        });
        match r {
            Ok(_) => return Ok(fd),
            Err(Errno::EINTR) => continue,
            Err(e) if e.0 == libc::EINPROGRESS => return Ok(fd),
            Err(e) => return Err(e),
        }
    }
}

/// `accept4(SOCK_NONBLOCK | SOCK_CLOEXEC)`; the peer address is not fetched.
pub fn accept(listener: &OwnedFd) -> Result<OwnedFd> {
    let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    fault::before(Op::Accept, 0)?;
    // SAFETY: NULL address pointers are allowed by accept4.
    let raw = cvt(unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            flags,
        )
    })?;
    // SAFETY: accept4 returned a new descriptor we alone own.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// `recv(2)` into `buf`; 0 means the peer shut down its writing half.
pub fn recv(fd: RawFd, buf: &mut [u8]) -> Result<usize> {
    let len = fault::before(Op::Recv, buf.len())?;
    // SAFETY: `buf` is valid for `len <= buf.len()` writable bytes.
    let n = cvt(unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), len, 0) })?;
    Ok(n as usize)
}

/// `send(2)` with `MSG_NOSIGNAL` (a closed peer gives `EPIPE`, never `SIGPIPE`).
pub fn send(fd: RawFd, buf: &[u8]) -> Result<usize> {
    let len = fault::before(Op::Send, buf.len())?;
    // SAFETY: `buf` is valid for `len <= buf.len()` readable bytes.
    let n = cvt(unsafe {
        libc::send(
            fd,
            buf.as_ptr().cast(),
            len,
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    })?;
    Ok(n as usize)
}

/// `shutdown(SHUT_WR)`: sends FIN after what is queued in the kernel.
pub fn shutdown_write(fd: RawFd) -> Result<()> {
    fault::before(Op::Shutdown, 0)?;
    // SAFETY: plain syscall.
    cvt(unsafe { libc::shutdown(fd, libc::SHUT_WR) })?;
    Ok(())
}

/// Sets `SO_LINGER {on, 0}` so that `close` sends RST instead of FIN.
pub fn set_linger_zero(fd: RawFd) -> Result<()> {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: passes a pointer to a live linger struct and its exact size.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// Bytes the socket has sent or still holds that the peer has not acknowledged
/// (`SIOCOUTQ`, alias `TIOCOUTQ`); a FIN sent and not yet acknowledged counts
/// as one. 0 means the peer's kernel has everything we ever wrote.
pub fn unacked(fd: RawFd) -> Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one int through the pointer, which is live and ours.
    cvt(unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n as *mut libc::c_int) })?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// The pending socket error (`SO_ERROR`), if any.
pub fn take_error(fd: RawFd) -> Result<Option<Errno>> {
    let mut v: i32 = 0;
    let mut len = size_of::<i32>() as libc::socklen_t;
    // SAFETY: `v` and `len` are live and sized for SO_ERROR's int.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut v as *mut i32).cast(),
            &mut len,
        )
    })?;
    Ok((v != 0).then_some(Errno(v)))
}

/// The address a socket is bound to.
pub fn local_addr(fd: RawFd) -> Result<SocketAddr> {
    // SAFETY: all-zero sockaddr_storage is valid.
    let mut ss: libc::sockaddr_storage = unsafe { zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `ss`/`len` describe a writable buffer large enough for any address.
    cvt(unsafe {
        libc::getsockname(
            fd,
            (&mut ss as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    })?;
    from_raw(&ss)
}

/// The address of a connected socket's peer.
pub fn peer_addr(fd: RawFd) -> Result<SocketAddr> {
    // SAFETY: all-zero sockaddr_storage is valid.
    let mut ss: libc::sockaddr_storage = unsafe { zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `ss`/`len` describe a writable buffer large enough for any address.
    cvt(unsafe {
        libc::getpeername(
            fd,
            (&mut ss as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    })?;
    from_raw(&ss)
}

/// Opens `/dev/null` read-only: the spare descriptor kept for `EMFILE` handling.
pub fn open_reserve() -> Result<OwnedFd> {
    fault::before(Op::OpenReserve, 0)?;
    // SAFETY: the path is a valid NUL-terminated string.
    let raw = cvt(unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) })?;
    // SAFETY: open returned a new descriptor we alone own.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_accept_send_recv_roundtrip() {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let l = tcp_listen(&addr, 0, false).unwrap();
        let bound = local_addr(l.as_raw_fd()).unwrap();
        assert_ne!(bound.port(), 0);
        assert_eq!(accept(&l).map(|_| ()), Err(Errno::EAGAIN));
        let mut c = std::net::TcpStream::connect(bound).unwrap();
        let s = loop {
            match accept(&l) {
                Ok(s) => break s,
                Err(Errno::EAGAIN) => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(peer_addr(s.as_raw_fd()).unwrap(), c.local_addr().unwrap());
        assert_eq!(send(s.as_raw_fd(), b"hi").unwrap(), 2);
        use std::io::{Read, Write};
        let mut b = [0u8; 2];
        c.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"hi");
        c.write_all(b"yo").unwrap();
        let mut got = [0u8; 8];
        let n = loop {
            match recv(s.as_raw_fd(), &mut got) {
                Ok(n) => break n,
                Err(Errno::EAGAIN) => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(&got[..n], b"yo");
        assert_eq!(take_error(s.as_raw_fd()).unwrap(), None);
        drop(c);
    }

    #[test]
    fn numeric_hosts_resolve_without_a_lookup() {
        assert_eq!(
            resolve("127.0.0.1", 80).unwrap(),
            vec!["127.0.0.1:80".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(
            resolve("::1", 7).unwrap(),
            vec!["[::1]:7".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(resolve("a\0b", 1), Err(Errno::EINVAL));
    }

    #[test]
    fn localhost_resolves_to_loopback_with_the_port() {
        let addrs = resolve("localhost", 4242).unwrap();
        assert!(!addrs.is_empty());
        for a in addrs {
            assert!(a.ip().is_loopback(), "{a}");
            assert_eq!(a.port(), 4242);
        }
    }

    #[test]
    fn unresolvable_names_give_an_eai_code() {
        // No DNS server may be reachable: then the answer is EAI_AGAIN (or
        // EAI_FAIL), with one EAI_NONAME; any of them, never an errno.
        let e = resolve("no-such-host.invalid", 80).unwrap_err();
        assert!(eai_of(e).is_some(), "{e:?}");
        assert!((3000..3100).contains(&e.0), "{e:?}");
    }

    #[test]
    fn eai_codes_map_to_library_codes_and_back() {
        let system = Errno(libc::EMFILE);
        assert_eq!(eai_to_errno(libc::EAI_NONAME, system), Errno::EAI_NONAME);
        assert_eq!(eai_to_errno(libc::EAI_AGAIN, system), Errno::EAI_AGAIN);
        assert_eq!(eai_to_errno(libc::EAI_SYSTEM, system), system);
        assert_eq!(eai_to_errno(libc::EAI_SYSTEM, Errno(0)), Errno(libc::EIO));
        assert_eq!(eai_to_errno(-999, system), Errno::EAI_FAIL);
        for (eai, e) in EAI_CODES {
            assert_eq!(eai_to_errno(eai, system), e);
            assert_eq!(eai_of(e), Some(eai));
            assert_eq!(e.0, 3000 - eai, "3000 + n for EAI value -n");
            assert!(e.is_library());
        }
        assert_eq!(eai_of(Errno(libc::ENOENT)), None);
        let text = Errno::EAI_NONAME.to_string();
        assert!(
            !text.is_empty() && !text.contains("3002"),
            "Display uses gai_strerror, not a bare number: {text:?}"
        );
    }

    #[test]
    fn v6_addresses_roundtrip() {
        let a: SocketAddr = "[::1]:8080".parse().unwrap();
        let (ss, _) = to_raw(&a);
        assert_eq!(from_raw(&ss).unwrap(), a);
    }
}
