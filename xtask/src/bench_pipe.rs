//! `cargo xtask bench pipeline|kernel|memory`: what the observer itself can take and costs.
//!
//! - pipeline: a paced MQTT QoS 0 publisher of our own (one `write` per message, TCP_NODELAY, so
//!   one packet per message) drives a private Mosquitto at stepped rates while `brokerscope run`
//!   watches it; per step the daemon's `/metrics` kernel counters (events emitted, lost) and
//!   decoded publishes, and its CPU time from /proc/PID/stat.
//! - kernel: a TCP echo server of our own (this binary, `bench echo`) in a target cgroup, pinged
//!   from here; round-trip time with vs without the observer on the target port, on a second port
//!   of the same process (same cgroup, not a target), and on an echo server in another cgroup.
//! - memory: the daemon's VmRSS with N idle MQTT connections open to a watched Mosquitto, and
//!   while M more are opened and reset in batches (before / peak / after).
//!
//! Rounds alternate observer off / on in one run, so a busy machine's drift hits both sides.
//! `--report FILE` writes `key value` lines (what the CI smoke tests check).
use std::{
    fmt::Write as _,
    fs,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{
    bench::{cpu_ns, http_get_at},
    procs::{Guard, PrivateMosquitto, cgroup_dir, observer_binary, spawn_in_cgroup, wait_for_port},
};

const PIPE_PORT: u16 = 18850;
const KERNEL_PORTS: [u16; 3] = [18851, 18852, 18853];
const MEMORY_PORT: u16 = 18854;
const LISTEN: &str = "127.0.0.1:18855";

pub struct PipelineArgs {
    pub rates: Vec<u32>,
    pub seconds: f64,
    pub ring_size: u64,
    /// Publisher connections sharing the rate.
    pub connections: u32,
    pub report: Option<PathBuf>,
}

pub struct KernelArgs {
    pub rounds: u32,
    pub iterations: u32,
    pub report: Option<PathBuf>,
}

pub struct MemoryArgs {
    pub connections: u32,
    pub churn: u32,
    pub batch: u32,
    pub report: Option<PathBuf>,
}

/// Key/value lines for `--report`, and the tables printed as they come.
#[derive(Default)]
struct Report(String);

impl Report {
    fn set(&mut self, key: &str, value: impl std::fmt::Display) {
        let _ = writeln!(self.0, "{key} {value}");
    }
    fn write(&self, path: &Option<PathBuf>) -> Result<()> {
        if let Some(path) = path {
            fs::write(path, &self.0).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- pipeline

pub fn pipeline(args: &PipelineArgs) -> Result<()> {
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    if args.rates.is_empty() || args.rates.contains(&0) {
        bail!("--rates needs at least one rate above 0 messages per second, e.g. 50000,100000");
    }
    let binary = observer_binary()?;
    let broker = PrivateMosquitto::start("brokerscope-bench-pipe", PIPE_PORT)?;
    let daemon = Daemon::start(&binary, PIPE_PORT, args.ring_size)?;
    let mut report = Report::default();
    report.set("ring_size", args.ring_size);
    println!(
        "pipeline: mosquitto pid {}, observer `brokerscope run` pid {}, ring {} MiB, {} s per step, {} publisher connections",
        broker.pid(),
        daemon.pid(),
        args.ring_size >> 20,
        args.seconds,
        args.connections
    );
    println!(
        "| offered msg/s | sent msg/s | kernel events/s | events lost | decoded publishes | observer CPU ns/event | ns/decoded msg |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let mut best = 0.0f64;
    let mut before = daemon.settle()?;
    for (step, &rate) in args.rates.iter().enumerate() {
        let cpu_before = cpu_ns(daemon.pid())?;
        let start = Instant::now();
        let sent =
            publish_paced(PIPE_PORT, rate, args.seconds, args.connections).context("publishing")?;
        let elapsed = start.elapsed().as_secs_f64();
        // The daemon drains what is still queued before its CPU and counts are read.
        let after = daemon.settle()?;
        let cpu = (cpu_ns(daemon.pid())? - cpu_before) as f64;
        let events = after.events - before.events;
        let lost = after.lost - before.lost;
        let decoded = after.published - before.published;
        let per_event = cpu / events.max(1) as f64;
        let per_msg = cpu / decoded.max(1) as f64;
        let events_rate = events as f64 / elapsed;
        println!(
            "| {rate} | {:.0} | {events_rate:.0} | {lost} | {decoded} | {per_event:.0} | {per_msg:.0} |",
            sent as f64 / elapsed
        );
        if lost == 0 {
            best = best.max(events_rate);
        }
        before = after;
        report.set(&format!("step{step}_offered"), rate);
        report.set(&format!("step{step}_sent"), sent);
        report.set(&format!("step{step}_events"), events);
        report.set(&format!("step{step}_lost"), lost);
        report.set(&format!("step{step}_decoded"), decoded);
        report.set(&format!("step{step}_cpu_ns"), cpu);
    }
    println!("highest sustained rate with zero kernel losses: {best:.0} events/s");
    report.set("best_lossless_events_per_s", format!("{best:.0}"));
    drop(daemon);
    drop(broker);
    report.write(&args.report)
}

/// MQTT 3.1.1 CONNECT with a clean session and no keep-alive, then reads the CONNACK.
fn mqtt_connect(port: u16, client_id: &str) -> Result<TcpStream> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).context("connecting to mosquitto")?;
    s.set_nodelay(true)?;
    let mut pkt = vec![0x10, (12 + client_id.len()) as u8];
    pkt.extend_from_slice(b"\x00\x04MQTT\x04\x02\x00\x00");
    pkt.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    pkt.extend_from_slice(client_id.as_bytes());
    s.write_all(&pkt)?;
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).context("reading CONNACK")?;
    if connack[0] != 0x20 || connack[3] != 0 {
        bail!("mosquitto refused the connection: CONNACK {connack:02x?}");
    }
    Ok(s)
}

/// Publishes QoS 0 messages at `rate` per second in all for `seconds` over `connections`
/// connections (one thread each); returns how many were sent (fewer than offered when the
/// client or broker cannot keep up). Several connections give more packets for the same rate:
/// one busy socket's small writes get coalesced (TCP autocorking) into fewer, larger packets.
fn publish_paced(port: u16, rate: u32, seconds: f64, connections: u32) -> Result<u64> {
    let threads: Vec<_> = (0..connections)
        .map(|i| {
            let share = rate / connections + u32::from(i < rate % connections);
            thread::spawn(move || publish_one(port, i, share, seconds))
        })
        .collect();
    let mut sent = 0;
    for t in threads {
        sent += t
            .join()
            .map_err(|_| anyhow::anyhow!("a publisher thread panicked"))??;
    }
    Ok(sent)
}

fn publish_one(port: u16, index: u32, rate: u32, seconds: f64) -> Result<u64> {
    let mut s = mqtt_connect(port, &format!("bench-pipe-pub-{index}"))?;
    let topic = b"bench/pipe";
    let payload = [b'x'; 64];
    let mut pkt = vec![0x30, (2 + topic.len() + payload.len()) as u8];
    pkt.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    pkt.extend_from_slice(topic);
    pkt.extend_from_slice(&payload);
    let start = Instant::now();
    let total = (f64::from(rate) * seconds) as u64;
    let mut sent = 0u64;
    while sent < total {
        let elapsed = start.elapsed().as_secs_f64();
        if elapsed > seconds * 1.5 {
            break; // the rate is beyond what this machine can push: report what was sent
        }
        let due = ((elapsed * f64::from(rate)) as u64 + 1).min(total);
        while sent < due {
            s.write_all(&pkt)?;
            sent += 1;
        }
        thread::sleep(Duration::from_micros(500));
    }
    // DISCONNECT, so the broker has read everything before the socket goes.
    s.write_all(&[0xe0, 0])?;
    Ok(sent)
}

// ---------------------------------------------------------------- daemon

/// `brokerscope run` watching one port, stopped by PID on drop.
struct Daemon(Guard);

#[derive(Clone, Copy, Default)]
struct Counters {
    /// Ring records emitted by the kernel (data chunks and control records).
    events: u64,
    /// Ring records the kernel could not reserve (chunks and control).
    lost: u64,
    packets: u64,
    published: u64,
    /// Client connections the daemon saw open (running total) and open now.
    opened: u64,
    active: u64,
}

impl Daemon {
    fn start(binary: &Path, port: u16, ring_size: u64) -> Result<Self> {
        let child = Command::new(binary)
            .args(["run", "--no-discover", "--port", &port.to_string()])
            .args(["--listen", LISTEN, "--ring-size", &ring_size.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting brokerscope run")?;
        let me = Self(Guard(child));
        let deadline = Instant::now() + Duration::from_secs(20);
        while http_get("/readyz")
            .map(|r| !r.starts_with("HTTP/1.1 200"))
            .unwrap_or(true)
        {
            if let Ok(Some(status)) = me.0.0.try_wait_ref() {
                bail!("brokerscope run exited: {status}");
            }
            if Instant::now() > deadline {
                bail!("brokerscope run not ready within 20 s");
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(me)
    }

    fn pid(&self) -> u32 {
        self.0.0.id()
    }

    fn counters(&self) -> Result<Counters> {
        let text = http_get("/metrics").context("scraping the daemon's /metrics")?;
        let sum = |prefix: &str| -> u64 {
            text.lines()
                .filter(|l| l.starts_with(prefix))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>() as u64
        };
        let kernel = |name: &str| {
            sum(&format!(
                "brokerscope_kernel_events_total{{counter=\"{name}\"}}"
            ))
        };
        if !text.contains("brokerscope_kernel_events_total{") {
            bail!("the daemon's /metrics has no brokerscope_kernel_events_total series");
        }
        Ok(Counters {
            events: kernel("chunks_emitted") + kernel("control_emitted"),
            lost: kernel("chunks_lost") + kernel("control_lost"),
            packets: kernel("packets_matched"),
            published: sum("brokerscope_messages_published_total{"),
            opened: sum("brokerscope_connections_opened_total"),
            active: sum("brokerscope_connections_active"),
        })
    }

    /// Counters once they stop moving. The daemon copies the kernel's counters into /metrics
    /// once per second, so "settled" means unchanged across more than one of its ticks.
    fn settle(&self) -> Result<Counters> {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut last = self.counters()?;
        loop {
            thread::sleep(Duration::from_millis(1100));
            let now = self.counters()?;
            let still = now.published == last.published
                && now.events == last.events
                && now.packets == last.packets;
            if still || Instant::now() > deadline {
                return Ok(now);
            }
            last = now;
        }
    }

    fn rss_kib(&self) -> Result<u64> {
        rss_kib(self.pid())
    }
}

trait TryWaitRef {
    fn try_wait_ref(&self) -> std::io::Result<Option<std::process::ExitStatus>>;
}

impl TryWaitRef for std::process::Child {
    /// Whether the child has exited, without reaping it (the Guard still stops it by PID).
    fn try_wait_ref(&self) -> std::io::Result<Option<std::process::ExitStatus>> {
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: WNOWAIT leaves the child waitable; info is a valid out-pointer.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                self.id(),
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: filled by waitid; 0 when nothing has exited.
        let pid = unsafe { info.si_pid() };
        Ok((pid != 0).then(|| {
            use std::os::unix::process::ExitStatusExt;
            std::process::ExitStatus::from_raw(unsafe { info.si_status() })
        }))
    }
}

fn http_get(path: &str) -> Result<String> {
    http_get_at(LISTEN, path)
}

/// Resident kB of the process's mmapped BPF maps (the ring: the kernel maps its data pages
/// twice, so a touched 16 MiB ring shows as up to 32 MiB of VmRSS).
fn bpf_map_rss_kib(pid: u32) -> Result<u64> {
    let smaps = fs::read_to_string(format!("/proc/{pid}/smaps"))?;
    let mut in_map = false;
    let mut total = 0;
    for line in smaps.lines() {
        if line
            .split_whitespace()
            .next()
            .is_some_and(|f| f.contains('-') && !f.ends_with(':'))
        {
            in_map = line.contains("anon_inode:bpf-map");
        } else if in_map && let Some(v) = line.strip_prefix("Rss:") {
            total += v
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .unwrap_or(0);
        }
    }
    Ok(total)
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/PID/status")
}

// ---------------------------------------------------------------- kernel

/// `bench echo --port …`: echoes every connection on every port (one thread per connection),
/// until killed. Started by `kernel` inside a cgroup.
pub fn echo(ports: &[u16]) -> Result<()> {
    let mut handles = Vec::new();
    for &port in ports {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .with_context(|| format!("listening on 127.0.0.1:{port}"))?;
        handles.push(thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                thread::spawn(move || {
                    let mut conn = conn;
                    let _ = conn.set_nodelay(true);
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 || conn.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        }));
    }
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

/// Round-trip time of `iterations` 64-byte ping-pongs, in ns: the median of 20 batch means, so
/// a burst from another process on this shared machine spoils one batch, not the loop.
fn ping_pong(port: u16, iterations: u32) -> Result<f64> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_nodelay(true)?;
    let msg = [7u8; 64];
    let mut back = [0u8; 64];
    // Warm-up: connection set-up and the first packets are not part of the steady state.
    for _ in 0..100 {
        s.write_all(&msg)?;
        s.read_exact(&mut back)?;
    }
    const BATCHES: u32 = 20;
    let per_batch = iterations.div_ceil(BATCHES);
    let mut means = Vec::with_capacity(BATCHES as usize);
    for _ in 0..BATCHES {
        let start = Instant::now();
        for _ in 0..per_batch {
            s.write_all(&msg)?;
            s.read_exact(&mut back)?;
        }
        means.push(start.elapsed().as_nanos() as f64 / f64::from(per_batch));
    }
    Ok(median(&means))
}

pub fn kernel(args: &KernelArgs) -> Result<()> {
    if args.rounds == 0 || args.iterations == 0 {
        bail!("--rounds and --iterations must be at least 1");
    }
    let binary = observer_binary()?;
    let me = std::env::current_exe()?;
    let [target, sibling, other] = KERNEL_PORTS;
    let target_cg = cgroup_dir("brokerscope-bench-kern-target")?;
    let other_cg = cgroup_dir("brokerscope-bench-kern-other")?;
    let echo_cmd = |ports: &[u16]| {
        let mut c = Command::new(&me);
        c.args(["bench", "echo"]);
        for p in ports {
            c.args(["--port", &p.to_string()]);
        }
        c.stdout(Stdio::null()).stderr(Stdio::null());
        c
    };
    let result = (|| -> Result<()> {
        let _echo_target = Guard(spawn_in_cgroup(
            &mut echo_cmd(&[target, sibling]),
            &target_cg,
        )?);
        let _echo_other = Guard(spawn_in_cgroup(&mut echo_cmd(&[other]), &other_cg)?);
        for p in KERNEL_PORTS {
            wait_for_port(p)?;
        }
        println!(
            "kernel: echo servers in {} (ports {target} target, {sibling} not) and {} (port {other}); {} round trips per loop, {} rounds per side",
            target_cg.display(),
            other_cg.display(),
            args.iterations,
            args.rounds
        );
        println!(
            "| round | observer | target ns/RTT | target, daemon paused ns/RTT | same cgroup, other port ns/RTT | other cgroup ns/RTT | packets/RTT captured |"
        );
        println!("|---:|---|---:|---:|---:|---:|---:|");
        // [loop][side] → per-round mean RTTs.
        let mut rtt: [[Vec<f64>; 2]; 4] = Default::default();
        let mut per_rtt = Vec::new();
        for round in 0..args.rounds * 2 {
            let on = round % 2 == 1;
            let daemon = if on {
                Some(Daemon::start(&binary, target, 16 << 20)?)
            } else {
                None
            };
            let before = match &daemon {
                Some(d) => d.settle()?,
                None => Counters::default(),
            };
            let t = ping_pong(target, args.iterations)?;
            let packets = match &daemon {
                Some(d) => {
                    let c = d.settle()?;
                    // 100 warm-up round trips ran too.
                    (c.packets - before.packets) as f64
                        / f64::from(args.iterations.div_ceil(20) * 20 + 100)
                }
                None => f64::NAN,
            };
            // The kernel programs alone: the daemon stopped (SIGSTOP) while the ring (16 MiB,
            // far more than one loop's records) holds what they capture, so no userspace
            // wake-up, decoding or CPU contention from the daemon is in this loop.
            let paused = match &daemon {
                Some(d) => {
                    // SAFETY: signalling the daemon we started.
                    unsafe { libc::kill(d.pid() as i32, libc::SIGSTOP) };
                    let p = ping_pong(target, args.iterations);
                    // SAFETY: as above.
                    unsafe { libc::kill(d.pid() as i32, libc::SIGCONT) };
                    p?
                }
                None => ping_pong(target, args.iterations)?,
            };
            let s = ping_pong(sibling, args.iterations)?;
            let o = ping_pong(other, args.iterations)?;
            drop(daemon);
            println!(
                "| {round} | {} | {t:.0} | {paused:.0} | {s:.0} | {o:.0} | {} |",
                if on { "on" } else { "off" },
                if on {
                    format!("{packets:.2}")
                } else {
                    "-".into()
                }
            );
            let side = usize::from(on);
            rtt[0][side].push(t);
            rtt[1][side].push(paused);
            rtt[2][side].push(s);
            rtt[3][side].push(o);
            if on {
                per_rtt.push(packets);
            }
        }
        let packets = median(&per_rtt);
        let mut report = Report::default();
        report.set("packets_per_rtt", format!("{packets:.3}"));
        println!();
        println!(
            "| loop | off median ns/RTT (min–max) | on median ns/RTT (min–max) | on/off | added ns/RTT | added ns/packet |"
        );
        println!("|---|---:|---:|---:|---:|---:|");
        for (i, name) in [
            "target port",
            "target port, daemon paused (kernel only)",
            "same cgroup, other port",
            "other cgroup",
        ]
        .iter()
        .enumerate()
        {
            let (off, on) = (&rtt[i][0], &rtt[i][1]);
            let (m_off, m_on) = (median(off), median(on));
            // The server's socket sees a request in and a reply out per round trip; on the
            // target port the captured count is measured.
            let per = if i < 2 { packets.max(1.0) } else { 2.0 };
            let added = m_on - m_off;
            println!(
                "| {name} | {m_off:.0} ({:.0}–{:.0}) | {m_on:.0} ({:.0}–{:.0}) | {:.3} | {added:.0} | {:.0} |",
                min(off),
                max(off),
                min(on),
                max(on),
                m_on / m_off,
                added / per
            );
            let key = ["target", "paused", "sibling", "other"][i];
            report.set(&format!("{key}_off_ns"), format!("{m_off:.0}"));
            report.set(&format!("{key}_on_ns"), format!("{m_on:.0}"));
            report.set(&format!("{key}_ratio"), format!("{:.4}", m_on / m_off));
            report.set(
                &format!("{key}_added_ns_per_packet"),
                format!("{:.1}", added / per),
            );
        }
        report.write(&args.report)
    })();
    let _ = fs::remove_dir(&target_cg);
    let _ = fs::remove_dir(&other_cg);
    result
}

fn median(v: &[f64]) -> f64 {
    let mut xs = v.to_vec();
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

// ---------------------------------------------------------------- memory

/// Raises this process's open-file limit (inherited by the broker started after it).
fn raise_nofile(want: u64) -> Result<()> {
    let lim = libc::rlimit {
        rlim_cur: want,
        rlim_max: want,
    };
    // SAFETY: a valid rlimit struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        bail!(
            "raising the open-file limit to {want}: {} (run as root, or lower --connections)",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Closes with a reset (SO_LINGER 0): no TIME_WAIT, so churn does not run out of local ports.
fn reset(s: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and option struct.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

pub fn memory(args: &MemoryArgs) -> Result<()> {
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let binary = observer_binary()?;
    raise_nofile(u64::from(args.connections) + u64::from(args.batch) + 4096)?;
    let broker = PrivateMosquitto::start("brokerscope-bench-mem", MEMORY_PORT)?;
    let ring = 16u64 << 20;
    let daemon = Daemon::start(&binary, MEMORY_PORT, ring)?;
    let mut report = Report::default();
    thread::sleep(Duration::from_millis(500));
    let idle = daemon.rss_kib()?;
    let mut open = Vec::with_capacity(args.connections as usize);
    let mut peak_open = idle;
    for i in 0..args.connections {
        open.push(mqtt_connect(MEMORY_PORT, &format!("bench-mem-{i}"))?);
        if i % 1000 == 999 {
            peak_open = peak_open.max(daemon.rss_kib()?);
        }
    }
    let reached = open.len();
    // The daemon has seen every CONNECT (the broker answered each) once its counters settle.
    thread::sleep(Duration::from_secs(1));
    let seen_open = daemon.settle()?.active;
    let with_open = daemon.rss_kib()?;
    peak_open = peak_open.max(with_open);
    for s in open.drain(..) {
        reset(s);
    }
    thread::sleep(Duration::from_secs(1));
    let before_churn = daemon.rss_kib()?;
    let mut peak_churn = before_churn;
    let mut churned = 0u32;
    while churned < args.churn {
        let n = args.batch.min(args.churn - churned);
        let batch = (0..n)
            .map(|i| mqtt_connect(MEMORY_PORT, &format!("bench-churn-{}", churned + i)))
            .collect::<Result<Vec<_>>>()?;
        batch.into_iter().for_each(reset);
        churned += n;
        peak_churn = peak_churn.max(daemon.rss_kib()?);
    }
    thread::sleep(Duration::from_secs(2));
    let end = daemon.settle()?;
    let after = daemon.rss_kib()?;
    let ring_rss = bpf_map_rss_kib(daemon.pid())?;
    drop(daemon);
    drop(broker);
    let mib = |k: u64| k as f64 / 1024.0;
    println!(
        "memory: `brokerscope run` watching a private Mosquitto, ring {} MiB",
        ring >> 20
    );
    println!("| phase | observer VmRSS MiB |");
    println!("|---|---:|");
    println!("| idle, before connections | {:.1} |", mib(idle));
    println!("| {reached} connections open | {:.1} |", mib(with_open));
    println!("| peak while opening | {:.1} |", mib(peak_open));
    println!(
        "| after closing them (before churn) | {:.1} |",
        mib(before_churn)
    );
    println!(
        "| peak during churn of {churned} in batches of {} | {:.1} |",
        args.batch,
        mib(peak_churn)
    );
    println!("| after churn | {:.1} |", mib(after));
    println!(
        "of the last VmRSS, {:.1} MiB is the ring's mapping (BPF map pages, mapped twice by the kernel); the rest is the daemon's own",
        mib(ring_rss)
    );
    println!(
        "the daemon counted {seen_open} connections active with {reached} open, {} opened in all; kernel events lost: {}",
        end.opened, end.lost
    );
    report.set("ring_size", ring);
    report.set("connections_reached", reached);
    report.set("churned", churned);
    report.set("rss_idle_kib", idle);
    report.set("rss_open_kib", with_open);
    report.set("rss_peak_open_kib", peak_open);
    report.set("rss_before_churn_kib", before_churn);
    report.set("rss_peak_churn_kib", peak_churn);
    report.set("rss_after_kib", after);
    report.set("ring_mapping_rss_kib", ring_rss);
    report.set("daemon_active_with_open", seen_open);
    report.set("daemon_opened_total", end.opened);
    report.set("lost", end.lost);
    report.write(&args.report)
}
