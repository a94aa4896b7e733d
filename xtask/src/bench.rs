//! `cargo xtask bench overhead`: what the observer costs a broker at saturation.
//!
//! Mosquitto in its own cgroup on a private port; each round a subscriber waits for N QoS 0
//! messages that `mosquitto_pub -l` pushes as fast as it can. Rounds alternate observer off / on
//! (`brokerscope capture --pid <broker>`, output discarded; or with `--mode run` the daemon,
//! `brokerscope run --pid <broker>`, which also decodes, correlates and counts) in one run, so
//! drift on a noisy machine hits both sides alike. Reported: messages per second and broker CPU
//! per message, medians per side and their ratios, the observer's own kernel counters (losses)
//! and, for the daemon, its CPU per message and the publishes its metrics counted.
use std::{
    fs,
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::procs::{Guard, PrivateMosquitto, release_binary};

const PORT: u16 = 18832;

pub struct OverheadArgs {
    pub messages: u32,
    pub rounds: u32,
    pub payload: usize,
    /// Observe with `brokerscope run` instead of `brokerscope capture`.
    pub daemon: bool,
}

pub fn overhead(args: &OverheadArgs) -> Result<()> {
    let binary = release_binary("the benchmark")?;
    let broker = PrivateMosquitto::start("brokerscope-bench", PORT)?;
    let lines = broker.data.join("messages.txt");
    let line = "x".repeat(args.payload);
    fs::write(&lines, format!("{line}\n").repeat(args.messages as usize))?;
    let pid = broker.pid();
    println!(
        "overhead: mosquitto pid {pid}, {} QoS 0 messages of {} B per round, {} rounds per side",
        args.messages, args.payload, args.rounds
    );
    println!(
        "{:>5} {:>9} {:>12} {:>14} {:>10}",
        "round", "observer", "msgs/s", "broker ns/msg", "kernel"
    );

    let mut off = Vec::new();
    let mut on = Vec::new();
    for round in 0..args.rounds * 2 {
        let observed = round % 2 == 1;
        let observer = if !observed {
            None
        } else if args.daemon {
            Some(start_daemon(&binary, pid)?)
        } else {
            Some(start_observer(&binary, pid)?)
        };
        let observer_cpu = match &observer {
            Some(o) => cpu_ns(o.0.id())?,
            None => 0,
        };
        let (rate, cpu_ns_per_msg) = one_round(pid, &lines, args.messages)?;
        let kernel = match observer {
            Some(obs) if args.daemon => {
                let used = cpu_ns(obs.0.id())? - observer_cpu;
                let counted = daemon_counts(u64::from(args.messages))?;
                stop_observer(obs)?;
                format!(
                    "observer {:.0} ns/msg, {counted}",
                    used as f64 / f64::from(args.messages)
                )
            }
            Some(obs) => {
                let used = cpu_ns(obs.0.id())? - observer_cpu;
                format!(
                    "observer {:.0} ns/msg, {}",
                    used as f64 / f64::from(args.messages),
                    stop_observer(obs)?
                )
            }
            None => String::new(),
        };
        let cpu_ns = cpu_ns_per_msg;
        println!(
            "{round:>5} {:>9} {rate:>12.0} {cpu_ns:>14.0} {kernel}",
            if observed { "on" } else { "off" }
        );
        if observed {
            on.push((rate, cpu_ns))
        } else {
            off.push((rate, cpu_ns))
        }
    }
    drop(broker);

    let median = |v: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| {
        let mut xs: Vec<f64> = v.iter().map(f).collect();
        xs.sort_by(f64::total_cmp);
        xs[xs.len() / 2]
    };
    let (rate_off, rate_on) = (median(&off, |x| x.0), median(&on, |x| x.0));
    let (cpu_off, cpu_on) = (median(&off, |x| x.1), median(&on, |x| x.1));
    println!(
        "median throughput: off {rate_off:.0} msgs/s, on {rate_on:.0} msgs/s, ratio on/off {:.3}",
        rate_on / rate_off
    );
    println!(
        "median broker CPU: off {cpu_off:.0} ns/msg, on {cpu_on:.0} ns/msg, ratio on/off {:.3}",
        cpu_on / cpu_off
    );
    Ok(())
}

fn start_observer(binary: &Path, pid: u32) -> Result<Guard> {
    let mut child = Command::new(binary)
        .args(["capture", "--pid", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting brokerscope capture")?;
    // It prints "capturing pid …" once attached.
    let mut stderr = child.stderr.take().expect("piped");
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.ends_with(b"\n") && Instant::now() < deadline {
        if stderr.read(&mut byte)? == 0 {
            bail!(
                "brokerscope capture exited: {}",
                String::from_utf8_lossy(&seen)
            );
        }
        seen.push(byte[0]);
    }
    child.stderr = Some(stderr);
    Ok(Guard(child))
}

const DAEMON_LISTEN: &str = "127.0.0.1:18833";

pub(crate) fn start_daemon(binary: &Path, pid: u32) -> Result<Guard> {
    let child = Command::new(binary)
        .args(["run", "--no-discover", "--pid", &pid.to_string()])
        .args(["--listen", DAEMON_LISTEN])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting brokerscope run")?;
    let guard = Guard(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_get("/readyz")
        .map(|r| !r.starts_with("HTTP/1.1 200"))
        .unwrap_or(true)
    {
        if Instant::now() > deadline {
            bail!("brokerscope run not ready within 20 s");
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok(guard)
}

fn http_get(path: &str) -> Result<String> {
    http_get_at(DAEMON_LISTEN, path)
}

/// A GET to a daemon's HTTP server at `addr`; the whole response, headers included.
pub(crate) fn http_get_at(addr: &str, path: &str) -> Result<String> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text)
}

/// The daemon's count of published messages and its ring losses, once it caught up.
pub(crate) fn daemon_counts(messages: u64) -> Result<String> {
    let value = |text: &str, prefix: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = http_get("/metrics")?;
        let published = value(&text, "brokerscope_messages_published_total{");
        let lost = value(
            &text,
            "brokerscope_kernel_events_total{counter=\"chunks_lost\"}",
        );
        if Instant::now() > deadline || published >= messages {
            return Ok(format!("published_total={published} chunks_lost={lost}"));
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// Stops the observer with SIGINT and returns its kernel counter line.
fn stop_observer(mut obs: Guard) -> Result<String> {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(obs.0.id() as i32, libc::SIGINT) };
    let mut text = String::new();
    if let Some(mut err) = obs.0.stderr.take() {
        err.read_to_string(&mut text)?;
    }
    let _ = obs.0.wait();
    let kernel = text
        .lines()
        .find_map(|l| l.strip_prefix("kernel: "))
        .unwrap_or("")
        .to_owned();
    let keep = ["packets_matched", "chunks_lost", "bytes_captured"];
    Ok(kernel
        .split(' ')
        .filter(|kv| keep.iter().any(|k| kv.starts_with(k)))
        .collect::<Vec<_>>()
        .join(" "))
}

/// One round: a subscriber for N messages, a publisher pushing them; returns (msgs/s, broker
/// CPU ns per message).
fn one_round(broker: u32, lines: &PathBuf, messages: u32) -> Result<(f64, f64)> {
    let mut sub = Guard(
        Command::new("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &PORT.to_string(),
                "-t",
                "bench",
                "-q",
                "0",
            ])
            .args(["-C", &messages.to_string(), "-W", "120"])
            .stdout(Stdio::null())
            .spawn()?,
    );
    thread::sleep(Duration::from_millis(300));
    let cpu_before = cpu_ns(broker)?;
    let start = Instant::now();
    let status = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &PORT.to_string(),
            "-t",
            "bench",
            "-q",
            "0",
            "-l",
        ])
        .stdin(fs::File::open(lines)?)
        .status()?;
    if !status.success() {
        bail!("mosquitto_pub failed: {status}");
    }
    let sub_status = sub.0.wait()?;
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = (cpu_ns(broker)? - cpu_before) as f64;
    if !sub_status.success() {
        bail!("the subscriber did not receive all {messages} messages within 120 s");
    }
    Ok((f64::from(messages) / elapsed, cpu / f64::from(messages)))
}

/// utime + stime of a process, in ns.
pub(crate) fn cpu_ns(pid: u32) -> Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_comm = &stat[stat.rfind(')').context("stat format")? + 2..];
    let fields: Vec<&str> = after_comm.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // SAFETY: sysconf is always safe to call.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Ok(ticks * 1_000_000_000 / hz)
}
