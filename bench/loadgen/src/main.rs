//! loadgen: a TCP echo load generator for `make bench`.
//!
//! C connections each send S-byte messages and wait for the whole echo before
//! sending the next (ping-pong; `--depth N` keeps N messages in flight). K idle
//! connections are opened first and held open without traffic. Each thread
//! drives its share of the connections on its own level-triggered epoll set;
//! the default is one thread, pinned with `--cpu` so it cannot steal the
//! server's core. After `--warmup` seconds the measurement runs for
//! `--duration` seconds and reports messages/s, MB/s (payload bytes echoed per
//! second, one direction, 10^6 bytes) and latency percentiles (from the start of
//! a message's send to the last byte of its echo), as a table or as JSON.
//!
//! The load generator's own CPU time (getrusage) is reported too, and with
//! `--server-pid` the server's (from /proc/PID/stat): a run is valid only when
//! the load generator is not the busier side.

use hdrhistogram::Histogram;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const USAGE: &str = "\
usage: loadgen --port PORT [options]

  --host HOST        server address (default 127.0.0.1; loopback only)
  --port PORT        server port (required)
  --conns C          active connections (default 50; 0 with --hold)
  --size S           message size in bytes (default 1024)
  --depth N          messages in flight per connection (default 1: ping-pong)
  --idle K           idle connections opened first and held (default 0)
  --duration D       measured seconds (default 2)
  --warmup W         seconds of load before measuring (default 0.5)
  --threads T        threads, each with its own epoll set (default 1)
  --cpu LIST         pin thread i to CPU LIST[i % len] (e.g. 0 or 0,2)
  --server-pid PID   also report the server's CPU use over the window
  --verify           check every echoed byte (costs CPU; for smoke tests)
  --hold SECS        with --conns 0: open the idle connections, print
                     'idle ready', hold them SECS seconds, exit
  --json             print one JSON object instead of the table
  --help             this text
";

#[derive(Debug, Clone)]
struct Args {
    addr: SocketAddr,
    conns: usize,
    size: usize,
    depth: usize,
    idle: usize,
    duration: f64,
    warmup: f64,
    threads: usize,
    cpus: Vec<usize>,
    server_pid: Option<u32>,
    verify: bool,
    hold: Option<f64>,
    json: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut host = "127.0.0.1".to_string();
    let mut port: Option<u16> = None;
    let mut a = Args {
        addr: "127.0.0.1:0".parse().expect("static address"),
        conns: 50,
        size: 1024,
        depth: 1,
        idle: 0,
        duration: 2.0,
        warmup: 0.5,
        threads: 1,
        cpus: Vec::new(),
        server_pid: None,
        verify: false,
        hold: None,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        fn num<T: std::str::FromStr>(name: &str, v: String) -> Result<T, String> {
            v.parse().map_err(|_| format!("bad {name} '{v}'"))
        }
        match flag.as_str() {
            "--host" => host = val("--host")?,
            "--port" => port = Some(num("--port", val("--port")?)?),
            "--conns" => a.conns = num("--conns", val("--conns")?)?,
            "--size" => a.size = num("--size", val("--size")?)?,
            "--depth" => a.depth = num("--depth", val("--depth")?)?,
            "--idle" => a.idle = num("--idle", val("--idle")?)?,
            "--duration" => a.duration = num("--duration", val("--duration")?)?,
            "--warmup" => a.warmup = num("--warmup", val("--warmup")?)?,
            "--threads" => a.threads = num("--threads", val("--threads")?)?,
            "--cpu" => {
                a.cpus = val("--cpu")?
                    .split(',')
                    .map(|s| num("--cpu", s.to_string()))
                    .collect::<Result<_, _>>()?
            }
            "--server-pid" => a.server_pid = Some(num("--server-pid", val("--server-pid")?)?),
            "--verify" => a.verify = true,
            "--hold" => a.hold = Some(num("--hold", val("--hold")?)?),
            "--json" => a.json = true,
            "--help" | "-h" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    let port = port.ok_or("--port is required")?;
    let ip: std::net::IpAddr = host
        .parse()
        .map_err(|_| format!("--host must be a numeric address, got '{host}'"))?;
    if !ip.is_loopback() {
        return Err(format!(
            "--host {ip} is not a loopback address: loadgen only loads this machine"
        ));
    }
    a.addr = SocketAddr::new(ip, port);
    if a.size == 0 || a.depth == 0 || a.threads == 0 {
        return Err("--size, --depth and --threads must be at least 1".into());
    }
    if !(a.duration > 0.0 && a.duration <= 3600.0 && (0.0..=600.0).contains(&a.warmup)) {
        return Err("--duration must be in (0, 3600] and --warmup in [0, 600]".into());
    }
    if a.conns == 0 && a.hold.is_none() {
        return Err("--conns 0 only makes sense with --hold".into());
    }
    Ok(a)
}

mod sys {
    //! The few syscalls std does not wrap: epoll, CPU affinity, rlimits, rusage.
    use std::io;
    use std::os::fd::{FromRawFd, OwnedFd, RawFd};

    fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }

    pub fn epoll_create() -> io::Result<OwnedFd> {
        // SAFETY: plain syscall with a valid flag.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: epoll_create1 returned a new descriptor that we alone own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    pub fn epoll_ctl(ep: RawFd, op: i32, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `ev` is a valid epoll_event; the kernel checks both descriptors.
        cvt(unsafe { libc::epoll_ctl(ep, op, fd, &mut ev) })?;
        Ok(())
    }

    pub fn epoll_wait(ep: RawFd, evs: &mut [libc::epoll_event], ms: i32) -> io::Result<usize> {
        let max = evs.len().min(i32::MAX as usize) as i32;
        // SAFETY: `evs` is valid for `max` writable entries.
        let n = unsafe { libc::epoll_wait(ep, evs.as_mut_ptr(), max, ms) };
        match cvt(n) {
            Ok(n) => Ok(n as usize),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Pins the calling thread to one CPU.
    pub fn pin_to(cpu: usize) -> io::Result<()> {
        // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: CPU_SET writes one bit of `set`; it checks `cpu` against the set size.
        unsafe { libc::CPU_SET(cpu, &mut set) };
        // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is this thread.
        cvt(unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) })?;
        Ok(())
    }

    /// Raises the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit.
    pub fn raise_nofile() -> u64 {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `lim` is a valid, writable rlimit.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return 1024;
        }
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: raising the soft limit up to the hard limit is always allowed.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
        lim.rlim_cur
    }

    /// User + system CPU seconds of this process (all threads).
    pub fn self_cpu_s() -> f64 {
        // SAFETY: rusage is plain data; all-zero is a valid value.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `ru` is a valid, writable rusage.
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(ru.ru_utime) + tv(ru.ru_stime)
    }

    /// Clock ticks per second for /proc/PID/stat.
    pub fn clk_tck() -> f64 {
        // SAFETY: plain libc call.
        let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if t > 0 { t as f64 } else { 100.0 }
    }
}

/// User + system CPU seconds of another process (all its threads).
fn proc_cpu_s(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 of `rest`.
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / sys::clk_tck())
}

/// Pseudo-random pattern; message `m` of connection `c` is `PAT[shift(c, m)..][..size]`.
fn pattern(len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

fn shift(conn: usize, msg: u64) -> usize {
    ((msg as usize).wrapping_mul(7).wrapping_add(conn)) % 251
}

struct Conn {
    id: usize,
    stream: TcpStream,
    /// Messages whose send has begun.
    started: u64,
    /// Bytes of message `started - 1` sent so far (== size when complete).
    send_off: usize,
    /// Bytes of echo received in total.
    recv_bytes: u64,
    /// Messages fully echoed.
    done: u64,
    /// Send start times (ns since the base instant) of the messages in flight.
    times: VecDeque<u64>,
    want_out: bool,
}

/// What one thread measured.
struct Tally {
    hist: Histogram<u64>,
    msgs: u64,
    bytes: u64,
}

struct Shared {
    args: Args,
    pat: Vec<u8>,
    base: Instant,
    t_measure: u64,
    t_end: u64,
    failed: AtomicBool,
}

fn now_ns(base: Instant) -> u64 {
    base.elapsed().as_nanos() as u64
}

fn fail(sh: &Shared, msg: String) -> io::Error {
    sh.failed.store(true, Ordering::Relaxed);
    io::Error::other(msg)
}

/// Sends until the connection has `depth` messages in flight (or the socket is full).
fn pump_send(sh: &Shared, c: &mut Conn, now: u64) -> io::Result<()> {
    let size = sh.args.size;
    loop {
        if c.send_off == size || c.started == 0 {
            // The current message is complete: start another if the window allows.
            if c.started - c.done >= sh.args.depth as u64 {
                break;
            }
            c.started += 1;
            c.send_off = 0;
            c.times.push_back(now);
        }
        let s = shift(c.id, c.started - 1);
        let msg = &sh.pat[s..s + size];
        match c.stream.write(&msg[c.send_off..]) {
            Ok(0) => return Err(fail(sh, format!("conn {}: send returned 0", c.id))),
            Ok(n) => c.send_off += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(fail(sh, format!("conn {}: send: {e}", c.id))),
        }
    }
    Ok(())
}

fn needs_out(sh: &Shared, c: &Conn) -> bool {
    c.started > 0 && c.send_off < sh.args.size
}

fn verify(sh: &Shared, c: &Conn, data: &[u8]) -> io::Result<()> {
    let size = sh.args.size as u64;
    let mut off = c.recv_bytes;
    let mut rest = data;
    while !rest.is_empty() {
        let msg = off / size;
        let pos = (off % size) as usize;
        let take = rest.len().min(sh.args.size - pos);
        let s = shift(c.id, msg) + pos;
        if rest[..take] != sh.pat[s..s + take] {
            return Err(fail(
                sh,
                format!(
                    "conn {}: echoed bytes differ from what was sent (message {msg}, offset {pos})",
                    c.id
                ),
            ));
        }
        rest = &rest[take..];
        off += take as u64;
    }
    if off > c.started * size {
        return Err(fail(
            sh,
            format!("conn {}: received more bytes than were sent", c.id),
        ));
    }
    Ok(())
}

/// Reads what is there and completes messages; returns false on EOF.
fn on_readable(sh: &Shared, c: &mut Conn, buf: &mut [u8], tally: &mut Tally) -> io::Result<()> {
    let size = sh.args.size as u64;
    loop {
        let n = match c.stream.read(buf) {
            Ok(0) => {
                return Err(fail(
                    sh,
                    format!("conn {}: the server closed the connection", c.id),
                ));
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(fail(sh, format!("conn {}: recv: {e}", c.id))),
        };
        if sh.args.verify {
            verify(sh, c, &buf[..n])?;
        }
        c.recv_bytes += n as u64;
        let complete = c.recv_bytes / size;
        if complete > c.done {
            let now = now_ns(sh.base);
            while c.done < complete {
                c.done += 1;
                let t0 = c.times.pop_front().unwrap_or(now);
                if now >= sh.t_measure && now < sh.t_end {
                    tally.msgs += 1;
                    tally.bytes += size;
                    let _ = tally.hist.record(now.saturating_sub(t0).max(1));
                }
            }
            if now < sh.t_end {
                pump_send(sh, c, now)?;
            }
        }
        if n < buf.len() {
            return Ok(());
        }
    }
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let mut tries = 0;
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(10)) {
            Ok(s) => return Ok(s),
            // A full accept queue or a burst of SYNs: retry a few times.
            Err(e) if tries < 5 && e.kind() != io::ErrorKind::ConnectionRefused => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
                let _ = e;
            }
            Err(e) => return Err(e),
        }
    }
}

/// One thread's share of the active connections on its own epoll set.
fn worker(
    sh: Arc<Shared>,
    streams: Vec<(usize, TcpStream)>,
    cpu: Option<usize>,
) -> io::Result<Tally> {
    if let Some(cpu) = cpu {
        sys::pin_to(cpu).map_err(|e| io::Error::other(format!("pin to CPU {cpu}: {e}")))?;
    }
    let ep = sys::epoll_create()?;
    let epfd = ep.as_raw_fd();
    let mut conns: Vec<Conn> = Vec::with_capacity(streams.len());
    for (i, (id, stream)) in streams.into_iter().enumerate() {
        stream.set_nonblocking(true)?;
        stream.set_nodelay(true)?;
        sys::epoll_ctl(
            epfd,
            libc::EPOLL_CTL_ADD,
            stream.as_raw_fd(),
            libc::EPOLLIN as u32,
            i as u64,
        )?;
        conns.push(Conn {
            id,
            stream,
            started: 0,
            send_off: 0,
            recv_bytes: 0,
            done: 0,
            times: VecDeque::with_capacity(sh.args.depth + 1),
            want_out: false,
        });
    }
    let mut tally = Tally {
        hist: Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds"),
        msgs: 0,
        bytes: 0,
    };
    let mut buf = vec![0u8; (sh.args.size * sh.args.depth).clamp(64 * 1024, 1 << 20)];
    let mut evs = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    // Kick off every connection.
    let now = now_ns(sh.base);
    for (i, c) in conns.iter_mut().enumerate() {
        pump_send(&sh, c, now)?;
        let want = needs_out(&sh, c);
        if want {
            let bits = (libc::EPOLLIN | libc::EPOLLOUT) as u32;
            sys::epoll_ctl(
                epfd,
                libc::EPOLL_CTL_MOD,
                c.stream.as_raw_fd(),
                bits,
                i as u64,
            )?;
            c.want_out = true;
        }
    }
    loop {
        if sh.failed.load(Ordering::Relaxed) {
            return Err(io::Error::other("another thread failed"));
        }
        let n = sys::epoll_wait(epfd, &mut evs, 5)?;
        if now_ns(sh.base) >= sh.t_end {
            break;
        }
        for ev in &evs[..n] {
            let i = ev.u64 as usize;
            let bits = ev.events;
            let c = &mut conns[i];
            if bits & libc::EPOLLOUT as u32 != 0 {
                pump_send(&sh, c, now_ns(sh.base))?;
            }
            if bits & (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 {
                on_readable(&sh, c, &mut buf, &mut tally)?;
            }
            let want = needs_out(&sh, c);
            if want != c.want_out {
                let bits = libc::EPOLLIN as u32 | if want { libc::EPOLLOUT as u32 } else { 0 };
                sys::epoll_ctl(
                    epfd,
                    libc::EPOLL_CTL_MOD,
                    c.stream.as_raw_fd(),
                    bits,
                    i as u64,
                )?;
                c.want_out = want;
            }
        }
    }
    Ok(tally)
}

/// Opens `k` connections and checks (with one echo on the last) that the server
/// has accepted them all.
fn open_idle(addr: SocketAddr, k: usize) -> io::Result<Vec<TcpStream>> {
    let mut v = Vec::with_capacity(k);
    for _ in 0..k {
        v.push(connect(addr)?);
    }
    if let Some(last) = v.last_mut() {
        last.set_read_timeout(Some(Duration::from_secs(30)))?;
        last.write_all(b"?")?;
        let mut b = [0u8; 1];
        last.read_exact(&mut b)?;
        if b[0] != b'?' {
            return Err(io::Error::other("idle check: wrong echo"));
        }
    }
    Ok(v)
}

fn pct(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(q) as f64 / 1000.0
    }
}

fn run(args: Args) -> Result<(), String> {
    let nofile = sys::raise_nofile();
    let need = (args.idle + args.conns + 64) as u64;
    if need > nofile {
        return Err(format!(
            "{} connections need about {need} descriptors; RLIMIT_NOFILE allows {nofile}",
            args.idle + args.conns
        ));
    }
    if let Some(&cpu) = args.cpus.first() {
        sys::pin_to(cpu).map_err(|e| format!("pin to CPU {cpu}: {e}"))?;
    }
    let idle = open_idle(args.addr, args.idle).map_err(|e| format!("idle connections: {e}"))?;
    if let Some(hold) = args.hold {
        println!("idle ready {}", idle.len());
        io::stdout().flush().map_err(|e| e.to_string())?;
        std::thread::sleep(Duration::from_secs_f64(hold));
        drop(idle);
        return Ok(());
    }
    let mut per_thread: Vec<Vec<(usize, TcpStream)>> =
        (0..args.threads).map(|_| Vec::new()).collect();
    for id in 0..args.conns {
        let s = connect(args.addr).map_err(|e| format!("connect {}: {e}", args.addr))?;
        per_thread[id % args.threads].push((id, s));
    }
    let base = Instant::now();
    let t_measure = (args.warmup * 1e9) as u64;
    let t_end = t_measure + (args.duration * 1e9) as u64;
    let sh = Arc::new(Shared {
        pat: pattern(args.size + 256),
        args: args.clone(),
        base,
        t_measure,
        t_end,
        failed: AtomicBool::new(false),
    });
    let handles: Vec<_> = per_thread
        .into_iter()
        .enumerate()
        .map(|(i, streams)| {
            let sh = sh.clone();
            let cpu = (!args.cpus.is_empty()).then(|| args.cpus[i % args.cpus.len()]);
            std::thread::Builder::new()
                .name(format!("loadgen-{i}"))
                .spawn(move || worker(sh, streams, cpu))
                .map_err(|e| format!("spawn: {e}"))
        })
        .collect::<Result<_, _>>()?;
    // Sample both processes' CPU time at the edges of the measured window.
    std::thread::sleep(Duration::from_nanos(t_measure.saturating_sub(now_ns(base))));
    let (w0, c0, s0) = (
        now_ns(base),
        sys::self_cpu_s(),
        args.server_pid.and_then(proc_cpu_s),
    );
    std::thread::sleep(Duration::from_nanos(t_end.saturating_sub(now_ns(base))));
    let (w1, c1, s1) = (
        now_ns(base),
        sys::self_cpu_s(),
        args.server_pid.and_then(proc_cpu_s),
    );
    let mut hist: Histogram<u64> =
        Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("bounds");
    let (mut msgs, mut bytes) = (0u64, 0u64);
    let mut errors = Vec::new();
    for h in handles {
        match h.join() {
            Ok(Ok(t)) => {
                hist.add(&t.hist).map_err(|e| format!("histogram: {e}"))?;
                msgs += t.msgs;
                bytes += t.bytes;
            }
            Ok(Err(e)) => errors.push(e.to_string()),
            Err(_) => errors.push("a load thread panicked".into()),
        }
    }
    drop(idle);
    if let Some(e) = errors.iter().find(|e| *e != "another thread failed") {
        return Err(e.clone());
    }
    if !errors.is_empty() {
        return Err(errors[0].clone());
    }
    let secs = args.duration;
    let wall = (w1 - w0) as f64 / 1e9;
    let lg_cpu = (c1 - c0) / wall;
    let srv_cpu = match (s0, s1) {
        (Some(a), Some(b)) => Some((b - a) / wall),
        _ => None,
    };
    let mps = msgs as f64 / secs;
    let mbs = bytes as f64 / secs / 1e6;
    let (p50, p99, p999, max, mean) = (
        pct(&hist, 0.50),
        pct(&hist, 0.99),
        pct(&hist, 0.999),
        hist.max() as f64 / 1000.0,
        hist.mean() / 1000.0,
    );
    if args.json {
        let srv = srv_cpu.map_or("null".to_string(), |v| format!("{v:.3}"));
        println!(
            "{{\"conns\": {}, \"size\": {}, \"depth\": {}, \"idle\": {}, \"duration_s\": {}, \
             \"threads\": {}, \"messages\": {msgs}, \"msgs_per_s\": {mps:.1}, \"mb_per_s\": {mbs:.3}, \
             \"latency_us\": {{\"p50\": {p50:.2}, \"p99\": {p99:.2}, \"p999\": {p999:.2}, \
             \"max\": {max:.2}, \"mean\": {mean:.2}}}, \"loadgen_cpu\": {lg_cpu:.3}, \
             \"server_cpu\": {srv}}}",
            args.conns, args.size, args.depth, args.idle, secs, args.threads
        );
    } else {
        println!(
            "loadgen: {} conns x {} B, depth {}, {} idle, {:.1} s measured ({} thread(s))",
            args.conns, args.size, args.depth, args.idle, secs, args.threads
        );
        println!(
            "{:>12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}",
            "msgs/s", "MB/s", "p50 us", "p99 us", "p99.9 us", "max us", "lg cpu", "srv cpu"
        );
        let srv = srv_cpu.map_or("-".to_string(), |v| format!("{:.0}%", v * 100.0));
        println!(
            "{mps:>12.0} {mbs:>9.1} {p50:>9.1} {p99:>9.1} {p999:>9.1} {max:>9.1} {:>7.0}% {srv:>8}",
            lg_cpu * 100.0
        );
    }
    if msgs == 0 {
        return Err("no message completed in the measured window".into());
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("loadgen: {e}");
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}
