//! Unix-domain sockets: addresses (filesystem paths and Linux abstract names,
//! written `@name`), socket creation, binding that never removes a live
//! socket's path, connecting, and `SO_PEERCRED`. Shared by the stream and the
//! datagram transports.

// The stream and datagram transports on top of this are being written; until
// they land some of it has no caller outside the tests.
#![allow(dead_code)]

use super::fault::{self, Op};
use super::{Errno, Result, cvt};
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Bytes in `sun_path`.
const SUN_PATH: usize = 108;
/// Offset of `sun_path` in `sockaddr_un` (the family before it).
const PATH_OFFSET: usize = size_of::<libc::sa_family_t>();

/// A Unix socket address: a filesystem path, an abstract name, or unnamed
/// (an unbound peer).
#[derive(Clone, Copy)]
pub struct UnixAddr {
    raw: libc::sockaddr_un,
    len: libc::socklen_t,
}

impl std::fmt::Debug for UnixAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UnixAddr({})", String::from_utf8_lossy(&self.text()))
    }
}

impl PartialEq for UnixAddr {
    fn eq(&self, other: &Self) -> bool {
        self.name_bytes() == other.name_bytes()
    }
}

impl UnixAddr {
    /// Parses an address as a C caller writes it (the bytes before the NUL):
    /// `@name` is the abstract name `name`, anything else a filesystem path.
    /// `EINVAL` for an empty path, a bare `@` or an embedded NUL;
    /// `ENAMETOOLONG` when it does not fit `sun_path` (107 bytes for a path,
    /// which keeps its NUL; 107 for an abstract name, after its leading NUL).
    pub fn parse(text: &[u8]) -> Result<UnixAddr> {
        if text.is_empty() || text == b"@" || text.contains(&0) {
            return Err(Errno::EINVAL);
        }
        // SAFETY: sockaddr_un is plain old data; all-zero is a valid value.
        let mut raw: libc::sockaddr_un = unsafe { zeroed() };
        raw.sun_family = libc::AF_UNIX as libc::sa_family_t;
        // Abstract: a NUL, then the name, its end given by the length. A
        // path keeps its terminating NUL inside sun_path.
        let (start, bytes, len) = match text.strip_prefix(b"@") {
            Some(name) => (1, name, 1 + name.len()),
            None => (0, text, text.len() + 1),
        };
        if len > SUN_PATH {
            return Err(Errno::ENAMETOOLONG);
        }
        for (dst, &b) in raw.sun_path[start..].iter_mut().zip(bytes) {
            *dst = b as libc::c_char;
        }
        let len = PATH_OFFSET + len;
        Ok(UnixAddr {
            raw,
            len: len as libc::socklen_t,
        })
    }

    /// The address the kernel wrote into `raw` with length `len` (from
    /// `getsockname`, `getpeername`, `recvfrom`, `accept`).
    pub fn from_raw(raw: &libc::sockaddr_un, len: libc::socklen_t) -> UnixAddr {
        let len = (len as usize).clamp(PATH_OFFSET, size_of::<libc::sockaddr_un>());
        UnixAddr {
            raw: *raw,
            len: len as libc::socklen_t,
        }
    }

    /// The name's bytes as stored after the family: empty when unnamed, a
    /// leading NUL when abstract, a path without its NUL.
    fn name_bytes(&self) -> Vec<u8> {
        let n = self.len as usize - PATH_OFFSET;
        let bytes: Vec<u8> = self.raw.sun_path[..n.min(SUN_PATH)]
            .iter()
            .map(|&c| c as u8)
            .collect();
        if bytes.first() == Some(&0) {
            return bytes;
        }
        // A path: up to its NUL (the kernel may report the length with or
        // without it).
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        bytes[..end].to_vec()
    }

    /// True for an abstract name (`@name`).
    pub fn is_abstract(&self) -> bool {
        self.name_bytes().first() == Some(&0)
    }

    /// True for an unnamed address (an unbound socket).
    pub fn is_unnamed(&self) -> bool {
        self.name_bytes().is_empty()
    }

    /// The address as text, the way [`UnixAddr::parse`] reads it: `@name`
    /// for an abstract name, the path, or empty when unnamed.
    pub fn text(&self) -> Vec<u8> {
        let mut bytes = self.name_bytes();
        if bytes.first() == Some(&0) {
            bytes[0] = b'@';
        }
        bytes
    }

    /// The filesystem path, for a path address.
    pub fn path(&self) -> Option<std::path::PathBuf> {
        use std::os::unix::ffi::OsStrExt;
        if self.is_abstract() || self.is_unnamed() {
            return None;
        }
        Some(std::ffi::OsStr::from_bytes(&self.name_bytes()).into())
    }

    /// Pointer and length for `bind`, `connect`, `sendto`. The pointer is
    /// valid while `self` is.
    pub fn as_raw(&self) -> (*const libc::sockaddr, libc::socklen_t) {
        ((&self.raw as *const libc::sockaddr_un).cast(), self.len)
    }
}

/// A new non-blocking, close-on-exec Unix socket; `ty` is `SOCK_STREAM` or
/// `SOCK_DGRAM`.
pub fn unix_socket(ty: i32) -> Result<OwnedFd> {
    fault::before(Op::Socket, 0)?;
    // SAFETY: plain syscall with valid constants.
    let raw = cvt(unsafe {
        libc::socket(
            libc::AF_UNIX,
            ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    // SAFETY: socket() returned a new descriptor we alone own.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn raw_bind(fd: RawFd, addr: &UnixAddr) -> Result<()> {
    let (p, len) = addr.as_raw();
    // SAFETY: `p` points to a sockaddr_un of at least `len` bytes, alive for the call.
    cvt(unsafe { libc::bind(fd, p, len) })?;
    Ok(())
}

/// Binds `fd` (a Unix socket of type `ty`) to `addr`. A path that exists
/// already is `EADDRINUSE`, except when `unlink_stale` is set and the path is
/// a stale socket: a socket file nobody listens on (a connect to it is
/// refused). Then it is removed and the bind retried. A live socket, or a
/// path that is not a socket, is never removed.
pub fn bind_unix(fd: &OwnedFd, addr: &UnixAddr, ty: i32, unlink_stale: bool) -> Result<()> {
    match raw_bind(fd.as_raw_fd(), addr) {
        Err(Errno::EADDRINUSE) if unlink_stale => {}
        other => return other,
    }
    let Some(path) = addr.path() else {
        // An abstract name in use belongs to a live socket: it vanishes
        // with its last descriptor.
        return Err(Errno::EADDRINUSE);
    };
    if !is_stale(addr, &path, ty) {
        return Err(Errno::EADDRINUSE);
    }
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Errno(e.raw_os_error().unwrap_or(libc::EADDRINUSE))),
    }
    raw_bind(fd.as_raw_fd(), addr)
}

/// True when `path` is a socket file that refuses connections: nobody is
/// bound to it any more.
fn is_stale(addr: &UnixAddr, path: &std::path::Path, ty: i32) -> bool {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {}
        _ => return false,
    }
    let Ok(probe) = unix_socket(ty) else {
        return false;
    };
    matches!(connect_unix(&probe, addr), Err(Errno::ECONNREFUSED))
}

/// Connects a Unix socket. Non-blocking Unix connects finish at once or
/// fail: `EAGAIN` when the listener's backlog is full, `ECONNREFUSED` when
/// nobody listens, `ENOENT` when the path does not exist. `EINTR` is retried.
pub fn connect_unix(fd: &OwnedFd, addr: &UnixAddr) -> Result<()> {
    let (p, len) = addr.as_raw();
    loop {
        let r = fault::before(Op::Connect, 0).and_then(|_| {
            // SAFETY: `p` points to a sockaddr_un of at least `len` bytes.
            cvt(unsafe { libc::connect(fd.as_raw_fd(), p, len) })
        });
        match r {
            Err(Errno::EINTR) => continue,
            Err(e) if e.0 == libc::EINPROGRESS => return Ok(()),
            r => return r.map(|_| ()),
        }
    }
}

fn unix_name(fd: RawFd, peer: bool) -> Result<UnixAddr> {
    // SAFETY: sockaddr_un is plain old data; all-zero is a valid value.
    let mut raw: libc::sockaddr_un = unsafe { zeroed() };
    let mut len = size_of::<libc::sockaddr_un>() as libc::socklen_t;
    let p = (&mut raw as *mut libc::sockaddr_un).cast();
    // SAFETY: `p` points to a sockaddr_un of `len` bytes; the kernel writes
    // at most that and stores the real length in `len`.
    cvt(unsafe {
        if peer {
            libc::getpeername(fd, p, &mut len)
        } else {
            libc::getsockname(fd, p, &mut len)
        }
    })?;
    if i32::from(raw.sun_family) != libc::AF_UNIX {
        return Err(Errno::EAFNOSUPPORT);
    }
    Ok(UnixAddr::from_raw(&raw, len))
}

/// The local address of a Unix socket (`EAFNOSUPPORT` for other sockets).
pub fn local_unix_addr(fd: RawFd) -> Result<UnixAddr> {
    unix_name(fd, false)
}

/// The peer address of a connected Unix socket (`EAFNOSUPPORT` for other
/// sockets).
pub fn peer_unix_addr(fd: RawFd) -> Result<UnixAddr> {
    unix_name(fd, true)
}

/// The peer's process id, user id and group id as the kernel recorded them
/// at connect time (`SO_PEERCRED`). `ENOTSUP` on a socket that is not a
/// Unix socket.
pub fn peer_credentials(fd: RawFd) -> Result<(i32, u32, u32)> {
    if !matches!(socket_domain(fd), Ok(libc::AF_UNIX)) {
        return Err(Errno::ENOTSUP);
    }
    // SAFETY: ucred is plain old data; all-zero is a valid value.
    let mut cred: libc::ucred = unsafe { zeroed() };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is a live ucred of `len` bytes.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    })?;
    Ok((cred.pid, cred.uid, cred.gid))
}

/// `SO_DOMAIN`: the socket's address family (`ENOTSOCK` for other fds).
pub fn socket_domain(fd: RawFd) -> Result<i32> {
    let mut v: i32 = 0;
    let mut len = size_of::<i32>() as libc::socklen_t;
    // SAFETY: `v` is a live i32 of `len` bytes.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_DOMAIN,
            (&mut v as *mut i32).cast(),
            &mut len,
        )
    })?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_paths_abstract_names_and_limits() {
        let a = UnixAddr::parse(b"/tmp/x.sock").unwrap();
        assert!(!a.is_abstract());
        assert_eq!(a.text(), b"/tmp/x.sock");
        assert_eq!(a.path().unwrap().to_str(), Some("/tmp/x.sock"));
        let b = UnixAddr::parse(b"@svc").unwrap();
        assert!(b.is_abstract());
        assert_eq!(b.text(), b"@svc");
        assert_eq!(b.path(), None);
        assert_eq!(b.as_raw().1 as usize, PATH_OFFSET + 4);
        for bad in [&b""[..], b"@", b"a\0b"] {
            assert_eq!(UnixAddr::parse(bad).unwrap_err(), Errno::EINVAL);
        }
        assert!(UnixAddr::parse(&[b'a'; 107]).is_ok());
        assert_eq!(
            UnixAddr::parse(&[b'a'; 108]).unwrap_err(),
            Errno::ENAMETOOLONG
        );
        let mut abs = vec![b'@'];
        abs.extend([b'n'; 107]);
        assert!(UnixAddr::parse(&abs).is_ok());
        abs.push(b'n');
        assert_eq!(UnixAddr::parse(&abs).unwrap_err(), Errno::ENAMETOOLONG);
    }

    #[test]
    fn stale_path_is_refused_unless_asked_and_live_one_never_removed() {
        let dir = std::env::temp_dir().join(format!("el-unix-{}", std::process::id()));
        let _ = std::fs::create_dir(&dir);
        let path = dir.join("s");
        let text = path.as_os_str().as_encoded_bytes();
        let addr = UnixAddr::parse(text).unwrap();
        let first = unix_socket(libc::SOCK_STREAM).unwrap();
        bind_unix(&first, &addr, libc::SOCK_STREAM, false).unwrap();
        // SAFETY: listen on our own socket.
        assert_eq!(unsafe { libc::listen(first.as_raw_fd(), 4) }, 0);
        // Live: refused even with unlink_stale, and the path survives.
        let second = unix_socket(libc::SOCK_STREAM).unwrap();
        let r = bind_unix(&second, &addr, libc::SOCK_STREAM, true);
        assert_eq!(r.unwrap_err(), Errno::EADDRINUSE);
        assert!(path.exists());
        drop(first);
        // Stale now: refused by default, replaced when asked.
        let third = unix_socket(libc::SOCK_STREAM).unwrap();
        let r = bind_unix(&third, &addr, libc::SOCK_STREAM, false);
        assert_eq!(r.unwrap_err(), Errno::EADDRINUSE);
        bind_unix(&third, &addr, libc::SOCK_STREAM, true).unwrap();
        assert_eq!(local_unix_addr(third.as_raw_fd()).unwrap(), addr);
        drop(third);
        // A regular file is never removed.
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"keep").unwrap();
        let fourth = unix_socket(libc::SOCK_STREAM).unwrap();
        let r = bind_unix(&fourth, &addr, libc::SOCK_STREAM, true);
        assert_eq!(r.unwrap_err(), Errno::EADDRINUSE);
        assert_eq!(std::fs::read(&path).unwrap(), b"keep");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn abstract_connect_and_peer_credentials() {
        let name = format!("@el-unix-test-{}", std::process::id());
        let addr = UnixAddr::parse(name.as_bytes()).unwrap();
        let l = unix_socket(libc::SOCK_STREAM).unwrap();
        bind_unix(&l, &addr, libc::SOCK_STREAM, false).unwrap();
        // SAFETY: listen on our own socket.
        assert_eq!(unsafe { libc::listen(l.as_raw_fd(), 4) }, 0);
        let c = unix_socket(libc::SOCK_STREAM).unwrap();
        connect_unix(&c, &addr).unwrap();
        assert_eq!(
            peer_unix_addr(c.as_raw_fd()).unwrap().text(),
            name.as_bytes()
        );
        let (pid, uid, gid) = peer_credentials(c.as_raw_fd()).unwrap();
        assert_eq!(pid as u32, std::process::id());
        // SAFETY: getuid/getgid cannot fail.
        assert_eq!((uid, gid), unsafe { (libc::getuid(), libc::getgid()) });
        let other = unix_socket(libc::SOCK_STREAM).unwrap();
        let r = bind_unix(&other, &addr, libc::SOCK_STREAM, true);
        assert_eq!(r.unwrap_err(), Errno::EADDRINUSE);
        drop(l);
        let r = connect_unix(&unix_socket(libc::SOCK_STREAM).unwrap(), &addr);
        assert_eq!(r.unwrap_err(), Errno::ECONNREFUSED);
    }

    #[test]
    fn peer_credentials_refuse_other_sockets() {
        // SAFETY: plain syscall.
        let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        assert!(raw >= 0);
        // SAFETY: a new descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        assert_eq!(
            peer_credentials(fd.as_raw_fd()).unwrap_err(),
            Errno::ENOTSUP
        );
    }
}
