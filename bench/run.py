#!/usr/bin/env python3
"""Benchmark orchestrator for epoll-loop (`make bench`, `make bench-smoke`).

Builds through make and cargo only, then runs every echo server under the same
load from bench/loadgen: a fresh server per run, server and load generator
pinned to different CPUs, servers alternating (the order rotates every
configuration and repetition), each configuration repeated --reps times.
Prints medians and each server's ratio to the hand-written C epoll server,
measures server memory per idle connection, callback dispatch against a bare
epoll_wait loop, and timers, then writes bench/results/results.md,
results.json and msgs_per_s.svg.

--smoke runs a few seconds: each server must echo correctly (a large
transfer, a half-close, loadgen --verify) and the load generator and the micro
benchmarks must print numbers. It writes no results.

Python standard library only; Linux only (it reads /proc).
"""

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.path.abspath(os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target"))
BENCH_BIN = os.path.join(TARGET, "bench")
LOADGEN = os.path.join(TARGET, "release", "loadgen")
RESULTS = os.path.join(ROOT, "bench", "results")
REFERENCE = "epoll_echo"
CONTENDER = "echo_server"

# name, label, command (PORT is replaced by 0: every server picks a free port).
SERVERS = [
    ("epoll_echo", "C epoll (hand-written)", [os.path.join(BENCH_BIN, "epoll_echo"), "0"]),
    ("echo_server", "epoll_loop echo_server",
     [os.path.join(TARGET, "c-examples", "echo_server"),
      "--port", "0", "--quiet", "--threads", "1", "--backlog", "0"]),
    ("uv_echo", "C on libuv", [os.path.join(BENCH_BIN, "uv_echo"), "0"]),
    ("event_echo", "C on libevent", [os.path.join(BENCH_BIN, "event_echo"), "0"]),
    ("poll_echo", "C on poll()", [os.path.join(BENCH_BIN, "poll_echo"), "0"]),
]

CONFIGS = [
    {"key": "c1_64", "name": "C=1, 64 B", "conns": 1, "size": 64, "idle": 0},
    {"key": "c50_1k", "name": "C=50, 1 KiB", "conns": 50, "size": 1024, "idle": 0},
    {"key": "c500_1k", "name": "C=500, 1 KiB", "conns": 500, "size": 1024, "idle": 0},
    {"key": "c50_64k", "name": "C=50, 64 KiB", "conns": 50, "size": 65536, "idle": 0},
    {"key": "c50_1k_i1000", "name": "C=50, 1 KiB, 1000 idle", "conns": 50, "size": 1024,
     "idle": 1000},
    {"key": "c50_1k_i10000", "name": "C=50, 1 KiB, 10000 idle", "conns": 50, "size": 1024,
     "idle": 10000},
]
# The idle sweep: 0 / 1000 / 10000 idle connections beside C=50, 1 KiB.
SWEEP = ["c50_1k", "c50_1k_i1000", "c50_1k_i10000"]
IDLE_CONNS = 10000


def log(msg):
    print(msg, flush=True)


def die(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


# ----------------------------------------------------------------- building


def build():
    make = os.environ.get("MAKE", "make")
    steps = [
        [make, "-C", ROOT, "all", "examples"],
        ["cargo", "build", "--release", "-p", "loadgen", "--manifest-path",
         os.path.join(ROOT, "Cargo.toml")],
        [make, "-C", os.path.join(ROOT, "bench")],
    ]
    for cmd in steps:
        log("$ " + " ".join(shlex.quote(c) for c in cmd))
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        out = r.stdout.strip()
        # Show what matters: the skip lines and any failure.
        for line in out.splitlines():
            if r.returncode != 0 or line.startswith("skipping"):
                log("  " + line)
        if r.returncode != 0:
            die(f"build step failed: {' '.join(cmd)}")


def available_servers(wanted):
    found = []
    for name, label, cmd in SERVERS:
        if wanted and name not in wanted:
            continue
        if os.access(cmd[0], os.X_OK):
            found.append((name, label, cmd))
        else:
            log(f"skipping {name}: {cmd[0]} was not built")
    return found


# ----------------------------------------------------------------- processes


# Niceness of the servers and the load generator (set from --nice in main).
NICE = 0


def pin(cpu):
    """preexec_fn: pin to `cpu` (if any) and apply NICE."""

    def setup():
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        if NICE:
            os.setpriority(os.PRIO_PROCESS, 0, NICE)

    return setup


class Server:
    """A server process; the port is read from its 'listening on HOST:PORT' line."""

    def __init__(self, name, cmd, cpu):
        self.name = name
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, text=True,
                                     preexec_fn=pin(cpu))
        self.port = None
        self.output = []
        got = threading.Event()

        def reader():
            for line in self.proc.stdout:
                self.output.append(line.rstrip("\n"))
                m = re.search(r"listening on \S*:(\d+)", line)
                if m and self.port is None:
                    self.port = int(m.group(1))
                    got.set()
            got.set()

        threading.Thread(target=reader, daemon=True).start()
        if not got.wait(10) or self.port is None:
            self.stop()
            die(f"{name} did not print its port; output: {self.output[-5:]}")

    @property
    def pid(self):
        return self.proc.pid

    def rss_kib(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


CLK_TCK = os.sysconf("SC_CLK_TCK")


def machine_busy_s():
    """CPU seconds all CPUs spent busy (user, nice, system, steal; not irq/softirq)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (v[0] + v[1] + v[2] + v[7]) / CLK_TCK


def proc_cpu_s(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


class ForeignLoad:
    """How much CPU processes other than ours used meanwhile (other people's builds).

    Busy time of the whole machine (/proc/stat) minus the CPU time of the
    processes this script knows: the server, the load generator (a waited-for
    child), the keep-awake spinners and this script. The result is in CPUs
    (1.0 = one CPU fully taken by someone else).
    """

    def __init__(self, pids):
        self.pids = pids
        self.t0 = time.monotonic()
        self.busy0 = machine_busy_s()
        self.ours0 = self._ours()

    def _ours(self):
        import resource
        ch = resource.getrusage(resource.RUSAGE_CHILDREN)
        me = resource.getrusage(resource.RUSAGE_SELF)
        return (ch.ru_utime + ch.ru_stime + me.ru_utime + me.ru_stime +
                sum(proc_cpu_s(p) for p in self.pids))

    def cpus(self):
        wall = time.monotonic() - self.t0
        foreign = (machine_busy_s() - self.busy0) - (self._ours() - self.ours0)
        return max(0.0, foreign / wall) if wall > 0 else 0.0


def loadgen(port, conns, size, idle, duration, warmup, cpu, server_pid=None, depth=1,
            verify=False, timeout=120):
    cmd = [LOADGEN, "--port", str(port), "--conns", str(conns), "--size", str(size),
           "--idle", str(idle), "--depth", str(depth), "--duration", str(duration),
           "--warmup", str(warmup), "--json"]
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    if server_pid:
        cmd += ["--server-pid", str(server_pid)]
    if verify:
        cmd.append("--verify")
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=timeout, preexec_fn=pin(None))
    if r.returncode != 0:
        raise RuntimeError(f"loadgen failed ({r.returncode}): {r.stderr.strip()}")
    return json.loads(r.stdout.strip().splitlines()[-1])


SPINNER = """
import os, sys, time
os.sched_setaffinity(0, {int(sys.argv[1])})
os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
end, parent = time.monotonic() + float(sys.argv[2]), os.getppid()
while time.monotonic() < end and os.getppid() == parent:
    for _ in range(100000):
        pass
"""


class KeepAwake:
    """One SCHED_IDLE busy loop per CPU, so that no CPU sits in the idle loop.

    On a virtual machine a halted vCPU takes tens of microseconds (sometimes
    milliseconds) to wake, and a ping-pong between two CPUs wakes one at every
    message: that, not the servers, would decide the numbers at low
    concurrency. A SCHED_IDLE task runs only when nothing else wants the CPU
    and is preempted at once, so it takes no time from the servers, the load
    generator or anything else (the effect of booting with idle=poll). Each
    spinner stops by itself after `secs`, or when this script goes away.
    """

    def __init__(self, cpus, secs):
        self.procs = [subprocess.Popen([sys.executable, "-c", SPINNER, str(c), str(secs)])
                      for c in cpus]

    def stop(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait()


# ----------------------------------------------------------------- measurements


def run_load(servers, configs, args, spinner_pids):
    """Every (config, server) pair, --reps times, servers alternating.

    A run during which other processes took more than --max-foreign CPUs is
    repeated (up to --retries times, after --retry-wait seconds); the last
    attempt is kept either way and marked "contaminated".
    """
    runs = []
    total = len(servers) * len(configs) * args.reps
    n = 0
    for rep in range(args.reps):
        for ci, cfg in enumerate(configs):
            shift = (rep + ci) % len(servers)
            order = servers[shift:] + servers[:shift]
            for name, _label, cmd in order:
                n += 1
                for attempt in range(args.retries + 1):
                    if attempt:
                        time.sleep(args.retry_wait)
                    srv = Server(name, cmd, args.server_cpu)
                    fl = ForeignLoad([srv.pid] + spinner_pids)
                    try:
                        res = loadgen(srv.port, cfg["conns"], cfg["size"], cfg["idle"],
                                      args.duration, args.warmup, args.loadgen_cpu, srv.pid)
                        foreign = fl.cpus()
                    except Exception as e:  # noqa: BLE001 - reported, then fatal
                        srv.stop()
                        die(f"{name} / {cfg['name']}: {e}")
                    finally:
                        alive = srv.alive()
                        srv.stop()
                    if not alive:
                        die(f"{name} exited during {cfg['name']}: {srv.output[-5:]}")
                    res.update({"server": name, "config": cfg["key"], "rep": rep,
                                "foreign_cpus": round(foreign, 3), "attempt": attempt,
                                "contaminated": foreign > args.max_foreign})
                    cpu = res.get("server_cpu")
                    log(f"[{n:3}/{total}] {cfg['name']:<24} {name:<12} "
                        f"{res['msgs_per_s']:>10.0f} msg/s  p99 "
                        f"{res['latency_us']['p99']:>8.1f} us  "
                        f"cpu srv {100 * cpu if cpu is not None else 0:3.0f}% "
                        f"lg {100 * res['loadgen_cpu']:3.0f}% others {100 * foreign:3.0f}%"
                        + ("  (busy machine: again)" if res["contaminated"] and
                           attempt < args.retries else ""))
                    if not res["contaminated"]:
                        break
                runs.append(res)
    return runs


def warm(port, cpu):
    """Touch every code path once: the first connections allocate buffers and tables."""
    loadgen(port, 100, 1024, 0, 0.3, 0.0, cpu)


def idle_memory(servers, args):
    """RSS growth of each server over IDLE_CONNS idle connections, per connection."""
    out = {}
    for rep in range(args.mem_reps):
        for name, _label, cmd in servers:
            srv = Server(name, cmd, args.server_cpu)
            try:
                warm(srv.port, args.loadgen_cpu)
                time.sleep(0.2)
                before = srv.rss_kib()
                lg = subprocess.Popen(
                    [LOADGEN, "--port", str(srv.port), "--conns", "0", "--idle",
                     str(IDLE_CONNS), "--hold", "30"] +
                    (["--cpu", str(args.loadgen_cpu)] if args.loadgen_cpu is not None else []),
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                line = lg.stdout.readline()
                if not line.startswith("idle ready"):
                    lg.kill()
                    die(f"{name}: idle connections failed: {lg.stderr.read().strip()}")
                after = srv.rss_kib()
                for _ in range(5):
                    time.sleep(0.1)
                    after = max(after, srv.rss_kib())
                lg.terminate()
                lg.wait()
            finally:
                srv.stop()
            per = (after - before) * 1024 / IDLE_CONNS
            out.setdefault(name, []).append({"before_kib": before, "after_kib": after,
                                             "bytes_per_conn": per})
            log(f"idle memory {name:<12} RSS {before} -> {after} KiB: {per:6.0f} B per connection")
    return out


def micro(args, smoke=False):
    d_args = ["--rounds", "20000", "--reps", "1"] if smoke else ["--rounds", "200000", "--reps",
                                                                  str(max(5, args.reps))]
    t_args = ["--count", "100000", "--reps", "1"] if smoke else ["--reps", str(args.reps)]
    res = {}
    for name, extra in (("dispatch", d_args), ("timers", t_args)):
        cmd = [os.path.join(BENCH_BIN, name)] + extra + ["--json"]
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=300, preexec_fn=pin(args.server_cpu))
        if r.returncode != 0:
            die(f"{name} failed: {r.stderr.strip()}")
        res[name] = json.loads(r.stdout.strip().splitlines()[-1])
        log(f"{name}: {json.dumps(res[name])}")
    return res


# ----------------------------------------------------------------- smoke checks


def recv_all(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(1 << 20, n - len(buf)))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def check_echo(port):
    """A 4 MiB transfer (partial writes), then a half-close that must flush first."""
    data = os.urandom(4 << 20)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        t = threading.Thread(target=s.sendall, args=(data,), daemon=True)
        t.start()
        back = recv_all(s, len(data))
        t.join(10)
        if back != data:
            raise RuntimeError(f"4 MiB echo differs (got {len(back)} bytes)")
    tail = os.urandom(100_000)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(tail)
        s.shutdown(socket.SHUT_WR)
        back = recv_all(s, len(tail) + 1)
        if back != tail:
            raise RuntimeError(f"half-close: got {len(back)} of {len(tail)} bytes back")


def smoke(servers, args):
    failed = []
    for name, _label, cmd in servers:
        srv = Server(name, cmd, args.server_cpu)
        try:
            check_echo(srv.port)
            res = loadgen(srv.port, 8, 3000, 20, 0.3, 0.1, args.loadgen_cpu, srv.pid,
                          depth=3, verify=True, timeout=30)
            if not res["msgs_per_s"] > 0 or not res["latency_us"]["p99"] > 0:
                raise RuntimeError(f"loadgen printed no numbers: {res}")
            log(f"smoke {name:<12} ok: echo, half-close, loadgen --verify "
                f"{res['msgs_per_s']:.0f} msg/s p99 {res['latency_us']['p99']:.0f} us")
        except Exception as e:  # noqa: BLE001 - collected and reported
            failed.append(name)
            log(f"smoke {name:<12} FAILED: {e}")
        finally:
            srv.stop()
    micro(args, smoke=True)
    if failed:
        die(f"smoke failed for: {', '.join(failed)}")
    log("bench smoke: all servers echo correctly; loadgen, dispatch and timers report numbers")


# ----------------------------------------------------------------- summary


def med(v):
    return statistics.median(v) if v else None


def summarize(runs, servers, configs):
    summary = {}
    for cfg in configs:
        row = {}
        for name, _l, _c in servers:
            rs = [r for r in runs if r["config"] == cfg["key"] and r["server"] == name]
            if not rs:
                continue
            # Runs disturbed by other processes count only when too few clean ones exist.
            clean = [r for r in rs if not r.get("contaminated")]
            n_all = len(rs)
            if len(clean) >= 2:
                rs = clean
            mps = [r["msgs_per_s"] for r in rs]
            row[name] = {
                "n": n_all,
                "n_used": len(rs),
                "n_clean": len(clean),
                "msgs_per_s": med(mps),
                "msgs_per_s_min": min(mps),
                "msgs_per_s_max": max(mps),
                "mb_per_s": med([r["mb_per_s"] for r in rs]),
                "p50_us": med([r["latency_us"]["p50"] for r in rs]),
                "p99_us": med([r["latency_us"]["p99"] for r in rs]),
                "p999_us": med([r["latency_us"]["p999"] for r in rs]),
                "server_cpu": med([r["server_cpu"] for r in rs if r.get("server_cpu") is not None]),
                "loadgen_cpu": med([r["loadgen_cpu"] for r in rs]),
            }
            cpu = row[name]["server_cpu"]
            row[name]["server_cpu_us_per_msg"] = (cpu / row[name]["msgs_per_s"] * 1e6
                                                  if cpu and row[name]["msgs_per_s"] else None)
        ref = row.get(REFERENCE)
        for v in row.values():
            v["ratio"] = v["msgs_per_s"] / ref["msgs_per_s"] if ref else None
            v["p99_ratio"] = v["p99_us"] / ref["p99_us"] if ref and ref["p99_us"] else None
        summary[cfg["key"]] = row
    return summary


def targets(summary, memory, micro_res, configs):
    out = []

    def add(what, value, goal, ok):
        out.append({"target": what, "value": value, "goal": goal, "met": bool(ok)})

    for cfg in configs:
        row = summary.get(cfg["key"], {})
        me = row.get(CONTENDER)
        if not me or REFERENCE not in row:
            continue
        add(f"msgs/s vs C epoll, {cfg['name']}", f"{me['ratio']:.2f}x", ">= 1.00x",
            me["ratio"] >= 1.0)
        for peer in ("uv_echo", "event_echo"):
            if peer in row:
                add(f"msgs/s ahead of {peer}, {cfg['name']}",
                    f"{me['msgs_per_s'] / row[peer]['msgs_per_s']:.2f}x", "> 1.00x",
                    me["msgs_per_s"] > row[peer]["msgs_per_s"])
        add(f"p99 vs C epoll, {cfg['name']}", f"{me['p99_ratio']:.2f}x", "<= 1.10x",
            me["p99_ratio"] <= 1.10)
    base, full = summary.get(SWEEP[0], {}), summary.get(SWEEP[-1], {})
    if CONTENDER in base and CONTENDER in full:
        r = full[CONTENDER]["msgs_per_s"] / base[CONTENDER]["msgs_per_s"]
        add(f"msgs/s with {IDLE_CONNS} idle vs none (own)", f"{r:.2f}x", ">= 0.95x", r >= 0.95)
    if memory and CONTENDER in memory:
        b = med([m["bytes_per_conn"] for m in memory[CONTENDER]])
        add("server memory per idle connection", f"{b:.0f} B", "<= 512 B", b <= 512)
    if micro_res and "dispatch" in micro_res:
        d = micro_res["dispatch"]["ratio"]
        add("callback dispatch vs bare epoll_wait loop", f"{d:.2f}x", ">= 0.90x", d >= 0.90)
    return out


def fmt_k(v):
    if v is None:
        return "-"
    if v >= 100_000:
        return f"{v / 1000:.0f}k"
    if v >= 10_000:
        return f"{v / 1000:.1f}k"
    return f"{v:.0f}"


def machine_info():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass

    def ver(cmd):
        try:
            r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            return r.stdout.strip().splitlines()[0] if r.returncode == 0 and r.stdout else None
        except OSError:
            return None

    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "cc": ver(["cc", "--version"]),
        "rustc": ver(["rustc", "--version"]),
        "libuv": ver(["pkg-config", "--modversion", "libuv"]),
        "libevent": ver(["pkg-config", "--modversion", "libevent"]),
        "load_average_at_start": os.getloadavg()[0],
    }


def write_markdown(path, data, servers, configs):
    s = data["summary"]
    names = [n for n, _l, _c in servers]
    labels = {n: l for n, l, _c in servers}
    m = data["machine"]
    L = []
    L.append("# epoll-loop benchmark results")
    L.append("")
    L.append(f"Command: `{data['command']}` ({data['date']}). Machine: {m['nproc']} CPUs, "
             f"{m['cpu_model']}, Linux {m['kernel']}; {m['cc']}; {m['rustc']}; "
             f"libuv {m['libuv'] or 'absent'}, libevent {m['libevent'] or 'absent'}.")
    st = data["settings"]
    L.append("")
    L.append(f"Each cell: median of {st['reps']} runs of {st['duration']} s (after "
             f"{st['warmup']} s of warm-up), a fresh server per run, servers alternating, "
             f"server pinned to CPU {st['server_cpu']} and load generator to CPU "
             f"{st['loadgen_cpu']}"
             f"{' (both kept out of the idle loop by SCHED_IDLE spinners, as with idle=poll: on this VM a sleeping vCPU is slow to wake)' if st.get('keep_awake') else ''}"
             f"; ± is half the min-max range over the runs. Ratios are to "
             f"the hand-written C epoll server. Ping-pong: each connection waits for the whole "
             f"echo before sending again.")
    L.append("")
    L.append("## Messages per second (ratio to C epoll)")
    L.append("")
    L.append("| configuration | " + " | ".join(labels[n] for n in names) + " |")
    L.append("| --- |" + " ---: |" * len(names))
    for cfg in configs:
        row = s.get(cfg["key"], {})
        cells = []
        for n in names:
            v = row.get(n)
            if not v:
                cells.append("-")
                continue
            spread = (v["msgs_per_s_max"] - v["msgs_per_s_min"]) / 2 / v["msgs_per_s"] * 100
            cells.append(f"{fmt_k(v['msgs_per_s'])} ±{spread:.0f}% ({v['ratio']:.2f}x)")
        L.append(f"| {cfg['name']} | " + " | ".join(cells) + " |")
    L.append("")
    L.append("## Latency p50 / p99 / p99.9 in µs (p99 ratio to C epoll)")
    L.append("")
    L.append("| configuration | " + " | ".join(labels[n] for n in names) + " |")
    L.append("| --- |" + " ---: |" * len(names))
    for cfg in configs:
        row = s.get(cfg["key"], {})
        cells = []
        for n in names:
            v = row.get(n)
            cells.append("-" if not v else
                         f"{v['p50_us']:.0f} / {v['p99_us']:.0f} / {v['p999_us']:.0f} "
                         f"({v['p99_ratio']:.2f}x)")
        L.append(f"| {cfg['name']} | " + " | ".join(cells) + " |")
    L.append("")
    L.append("## CPU: server and load generator (share of one CPU), server µs per message")
    L.append("")
    L.append("| configuration | " + " | ".join(labels[n] for n in names) + " |")
    L.append("| --- |" + " ---: |" * len(names))
    for cfg in configs:
        row = s.get(cfg["key"], {})
        cells = []
        for n in names:
            v = row.get(n)
            if not v or v["server_cpu"] is None:
                cells.append("-")
                continue
            cells.append(f"{v['server_cpu'] * 100:.0f}% / {v['loadgen_cpu'] * 100:.0f}%, "
                         f"{v['server_cpu_us_per_msg']:.2f} µs")
        L.append(f"| {cfg['name']} | " + " | ".join(cells) + " |")
    L.append("")
    L.append("## Idle sweep: C=50, 1 KiB beside idle connections (ratio to the same server "
             "with none)")
    L.append("")
    L.append("| idle connections | " + " | ".join(labels[n] for n in names) + " |")
    L.append("| ---: |" + " ---: |" * len(names))
    base = s.get(SWEEP[0], {})
    for key in SWEEP:
        cfg = next(c for c in configs if c["key"] == key) if any(
            c["key"] == key for c in configs) else None
        if not cfg:
            continue
        row = s.get(key, {})
        cells = []
        for n in names:
            v, b = row.get(n), base.get(n)
            cells.append("-" if not v or not b else
                         f"{fmt_k(v['msgs_per_s'])} ({v['msgs_per_s'] / b['msgs_per_s']:.2f}x)")
        L.append(f"| {cfg['idle']} | " + " | ".join(cells) + " |")
    if data.get("idle_memory"):
        L.append("")
        L.append(f"## Server memory per idle connection (RSS growth over {IDLE_CONNS} idle "
                 "connections, divided; median)")
        L.append("")
        L.append("| server | bytes per idle connection |")
        L.append("| --- | ---: |")
        for n in names:
            if n in data["idle_memory"]:
                b = med([x["bytes_per_conn"] for x in data["idle_memory"][n]])
                L.append(f"| {labels[n]} | {b:.0f} |")
    mi = data.get("micro") or {}
    if "dispatch" in mi:
        d = mi["dispatch"]
        L.append("")
        L.append("## Loop micro-benchmarks")
        L.append("")
        L.append(f"- Dispatch (eventfd ping-pong, {d['rounds']} round trips, median of "
                 f"{d['reps']}): bare epoll_wait loop {d['bare_ns_per_round_trip']:.0f} ns per "
                 f"round trip, epoll_loop callbacks {d['loop_ns_per_round_trip']:.0f} ns: "
                 f"**{d['ratio']:.2f}x** the bare loop's throughput.")
    if "timers" in mi:
        t = mi["timers"]
        L.append(f"- Timers ({t['count']} started with epoll_loop_timer_start and fired, median "
                 f"of {t['reps']}): {t['loop_ns_per_timer']:.0f} ns per timer "
                 f"({t['loop_start_ns']:.0f} to start, {t['loop_fire_ns']:.0f} to fire); a bare "
                 f"C binary heap: {t['heap_ns_per_timer']:.0f} ns.")
    L.append("")
    L.append("## Targets")
    L.append("")
    L.append("| target | value | goal | |")
    L.append("| --- | ---: | ---: | --- |")
    for t in data["targets"]:
        L.append(f"| {t['target']} | {t['value']} | {t['goal']} | "
                 f"{'met' if t['met'] else '**missed**'} |")
    L.append("")
    runs = data.get("runs", [])
    bad = sum(1 for r in runs if r.get("contaminated"))
    retried = sum(1 for r in runs if r.get("attempt"))
    L.append(f"Noise: load average {m['load_average_at_start']:.2f} when the run started. "
             f"A run during which other processes used more than {st['max_foreign_cpus']} CPUs "
             f"was repeated (up to {st['retries']} times): {retried} of {len(runs)} runs needed "
             f"a repeat, and {bad} were still disturbed after the last attempt. Medians use the "
             "clean runs of a cell when it has at least two, else all of them. Servers and "
             f"load generator ran at nice {st.get('nice', 0)}.")
    L.append("")
    L.append("![messages per second](msgs_per_s.svg)")
    L.append("")
    with open(path, "w") as f:
        f.write("\n".join(L))


COLORS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860"]


def esc(t):
    return t.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def write_svg(path, data, servers, configs):
    """Small multiples: one panel per configuration, one bar per server, own scale."""
    s = data["summary"]
    names = [n for n, _l, _c in servers]
    labels = {n: l for n, l, _c in servers}
    cols = 3
    rows = (len(configs) + cols - 1) // cols
    pw, ph = 300, 210
    top, left = 70, 20
    width = left * 2 + cols * pw
    height = top + rows * ph + 20
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
         f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
         f'<rect width="{width}" height="{height}" fill="white"/>',
         f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">'
         f'Echo messages per second (median of {data["settings"]["reps"]}; ratio to C epoll)'
         f'</text>']
    lx = left
    for i, n in enumerate(names):
        o.append(f'<rect x="{lx}" y="36" width="12" height="12" fill="{COLORS[i % 6]}"/>')
        o.append(f'<text x="{lx + 16}" y="46">{esc(labels[n])}</text>')
        lx += 24 + 6.5 * len(labels[n])
    for k, cfg in enumerate(configs):
        row = s.get(cfg["key"], {})
        px = left + (k % cols) * pw
        py = top + (k // cols) * ph
        o.append(f'<text x="{px + pw / 2}" y="{py + 14}" text-anchor="middle" '
                 f'font-weight="bold">{esc(cfg["name"])}</text>')
        vals = [row[n]["msgs_per_s"] if n in row else 0 for n in names]
        vmax = max(vals) if vals and max(vals) > 0 else 1
        base_y = py + ph - 40
        bar_h = ph - 75
        bw = (pw - 40) / max(1, len(names))
        o.append(f'<line x1="{px + 15}" y1="{base_y}" x2="{px + pw - 15}" y2="{base_y}" '
                 f'stroke="#333"/>')
        for i, n in enumerate(names):
            v = vals[i]
            h = bar_h * v / vmax
            x = px + 20 + i * bw
            o.append(f'<rect x="{x:.1f}" y="{base_y - h:.1f}" width="{bw - 6:.1f}" '
                     f'height="{h:.1f}" fill="{COLORS[i % 6]}"><title>{esc(labels[n])}: '
                     f'{v:.0f} msg/s</title></rect>')
            o.append(f'<text x="{x + (bw - 6) / 2:.1f}" y="{base_y - h - 4:.1f}" '
                     f'text-anchor="middle" font-size="10">{fmt_k(v) if v else "-"}</text>')
            r = row.get(n, {}).get("ratio")
            if r is not None:
                o.append(f'<text x="{x + (bw - 6) / 2:.1f}" y="{base_y + 14:.1f}" '
                         f'text-anchor="middle" font-size="10">{r:.2f}x</text>')
    o.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(o) + "\n")


def print_table(data, servers, configs):
    s = data["summary"]
    names = [n for n, _l, _c in servers]
    log("")
    log("msgs/s, median (ratio to epoll_echo), p99 us:")
    log(f"{'configuration':<24}" + "".join(f"{n:>22}" for n in names))
    for cfg in configs:
        row = s.get(cfg["key"], {})
        cells = []
        for n in names:
            v = row.get(n)
            cells.append(f"{'-':>22}" if not v else
                         f"{fmt_k(v['msgs_per_s']):>7} {v['ratio']:.2f}x {v['p99_us']:>6.0f}us")
        log(f"{cfg['name']:<24}" + "".join(f"{c:>22}" for c in cells))
    log("")
    for t in data["targets"]:
        log(f"{'MET ' if t['met'] else 'MISS'}  {t['target']}: {t['value']} (goal {t['goal']})")


# ----------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="a few seconds of correctness checks")
    ap.add_argument("--reps", type=int, default=3, help="runs per configuration and server (>= 1)")
    ap.add_argument("--duration", type=float, default=1.5, help="measured seconds per run")
    ap.add_argument("--warmup", type=float, default=0.5, help="seconds of load before measuring")
    ap.add_argument("--mem-reps", type=int, default=2, help="idle-memory measurements per server")
    ap.add_argument("--servers", default="", help="comma-separated subset of server names")
    ap.add_argument("--configs", default="", help="comma-separated subset of config keys")
    ap.add_argument("--server-cpu", type=int, default=None, help="CPU for the servers")
    ap.add_argument("--loadgen-cpu", type=int, default=None, help="CPU for the load generator")
    ap.add_argument("--no-keep-awake", action="store_true",
                    help="let idle CPUs sleep (no SCHED_IDLE spinners; see KeepAwake)")
    ap.add_argument("--retries", type=int, default=1,
                    help="extra attempts for a run disturbed by other processes")
    ap.add_argument("--retry-wait", type=float, default=3.0, help="seconds before a retry")
    ap.add_argument("--max-foreign", type=float, default=0.15,
                    help="CPUs other processes may use during a run before it is repeated")
    ap.add_argument("--nice", type=int, default=-10 if os.geteuid() == 0 else 0,
                    help="niceness of servers and load generator (default -10 as root: "
                    "ahead of other people's builds on a shared machine)")
    ap.add_argument("--no-build", action="store_true", help="use what is already built")
    ap.add_argument("--no-micro", action="store_true", help="skip memory, dispatch and timers")
    ap.add_argument("--out", default=RESULTS, help="results directory")
    args = ap.parse_args()
    if args.reps < 1 or args.mem_reps < 0 or args.duration <= 0:
        die("--reps must be >= 1, --mem-reps >= 0, --duration > 0")
    global NICE
    NICE = args.nice

    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        if args.loadgen_cpu is None:
            args.loadgen_cpu = cpus[0]
        if args.server_cpu is None:
            args.server_cpu = cpus[1]
    else:
        log("only one CPU available: nothing is pinned, numbers mean little")

    if not args.no_build:
        build()
    wanted = [w for w in args.servers.split(",") if w]
    servers = available_servers(wanted)
    if not any(n == REFERENCE for n, _l, _c in servers) and not args.smoke:
        die("the reference server epoll_echo is missing")
    if args.smoke:
        smoke(servers, args)
        return
    keys = [k for k in args.configs.split(",") if k]
    configs = [c for c in CONFIGS if not keys or c["key"] in keys]
    started = time.time()
    log(f"servers: {', '.join(n for n, _l, _c in servers)}; {len(configs)} configurations x "
        f"{args.reps} reps x {args.duration} s; server CPU {args.server_cpu}, "
        f"loadgen CPU {args.loadgen_cpu}")
    data = {
        "command": "make bench" if os.environ.get("MAKELEVEL") else
        "python3 bench/run.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "machine": machine_info(),
        "settings": {"reps": args.reps, "duration": args.duration, "warmup": args.warmup,
                     "server_cpu": args.server_cpu, "loadgen_cpu": args.loadgen_cpu,
                     "keep_awake": not args.no_keep_awake and len(cpus) >= 2,
                     "retries": args.retries, "max_foreign_cpus": args.max_foreign,
                     "nice": args.nice,
                     "idle_conns_for_memory": IDLE_CONNS, "mem_reps": args.mem_reps},
        "servers": [{"name": n, "label": l, "command": c} for n, l, c in servers],
        "configs": configs,
    }
    awake = None
    if not args.no_keep_awake and len(cpus) >= 2:
        # Bounded: the spinners end by themselves after an hour at the latest.
        awake = KeepAwake([args.loadgen_cpu, args.server_cpu], 3600)
    try:
        runs = run_load(servers, configs, args, [p.pid for p in awake.procs] if awake else [])
        memory = {} if args.no_micro or args.mem_reps == 0 else idle_memory(servers, args)
        micro_res = {} if args.no_micro else micro(args)
    finally:
        if awake:
            awake.stop()
    data["runs"] = runs
    data["summary"] = summarize(runs, servers, configs)
    data["idle_memory"] = memory
    data["micro"] = micro_res
    data["targets"] = targets(data["summary"], memory, micro_res, configs)
    data["elapsed_s"] = round(time.time() - started, 1)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    write_markdown(os.path.join(args.out, "results.md"), data, servers, configs)
    write_svg(os.path.join(args.out, "msgs_per_s.svg"), data, servers, configs)
    print_table(data, servers, configs)
    log(f"\nresults: {os.path.relpath(args.out, ROOT)}/results.md, results.json, msgs_per_s.svg "
        f"({data['elapsed_s']:.0f} s)")


if __name__ == "__main__":
    main()
