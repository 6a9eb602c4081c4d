//! TCP clients on 127.0.0.1: bounded connects and reads, resets, one echo.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

/// How long a client's reads and writes may block.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// Connects to 127.0.0.1:`port` (at most 10 s), with [`IO_TIMEOUT`] on reads and writes.
pub fn try_connect(port: u16) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(10),
    )?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

/// [`try_connect`], which must work.
pub fn connect(port: u16) -> TcpStream {
    try_connect(port).unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"))
}

/// Writes `msg`, reads as many bytes back and compares.
pub fn echo_once(s: &mut TcpStream, msg: &[u8]) -> io::Result<()> {
    s.write_all(msg)?;
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back)?;
    if back != msg {
        return Err(io::Error::other("echo differs"));
    }
    Ok(())
}

/// Sends `data` to `addr` from a thread and half-closes, while this thread
/// reads until EOF (connect at most 5 s, reads and writes 30 s); returns what
/// came back.
pub fn echo_to_eof(addr: SocketAddr, data: &[u8]) -> io::Result<Vec<u8>> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut w = s.try_clone()?;
    let data = data.to_vec();
    let writer = std::thread::spawn(move || -> io::Result<()> {
        w.write_all(&data)?;
        w.shutdown(Shutdown::Write)
    });
    let mut back = Vec::new();
    let read = (&s).read_to_end(&mut back);
    let wrote = writer.join().unwrap();
    read?;
    wrote?;
    Ok(back)
}

/// Makes `close` send RST instead of FIN (`SO_LINGER` on, 0 s).
pub fn set_linger_zero(s: &TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `s` owns a valid socket fd; the option value is a `linger` that
    // outlives the call, and its exact size is passed.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::from_ref(&l).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt(SO_LINGER): {}",
        io::Error::last_os_error()
    );
}
