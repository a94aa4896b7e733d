//! `cargo xtask bench overhead --broker mosquitto|nats|rabbitmq`: what the observer costs a
//! broker, driven by our own load generator (loadgen/, `brokerscope-loadgen`).
//!
//! The broker runs in its own cgroup on a private loopback port; the load generator (publisher
//! and subscriber in one process, outside that cgroup) sends MQTT QoS 1, NATS PUB or AMQP with
//! publisher confirms. Two phases, each with observer-off and observer-on rounds alternating in
//! one run (the observer is the daemon, `brokerscope run --pid <broker>`, started for each
//! observed round): saturation (as fast as the broker confirms, bounded window), then 50% of
//! the saturation throughput measured without the observer. Reported per phase: throughput and
//! p50/p99 publish → delivery latency, on/off ratios of the medians with their spread (min–max of
//! the per-round-pair ratios), and what the observer counted.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{
    bench::{cpu_ns, daemon_counts, start_daemon},
    cargo,
    procs::{PrivateMosquitto, PrivateNats, PrivateRabbitMq, observer_binary},
    run_cmd,
};

pub struct LoadArgs {
    pub broker: String,
    /// `saturation`, `half`, or `both`.
    pub load: String,
    pub rounds: u32,
    pub messages: u32,
    pub payload: usize,
    pub window: u32,
}

/// One loadgen run's results.
#[derive(Clone, Copy, Default)]
struct Sample {
    rate: f64,
    p50_us: f64,
    p99_us: f64,
}

enum Broker {
    Mosquitto(PrivateMosquitto),
    Nats(PrivateNats),
    Rabbit(PrivateRabbitMq),
}

impl Broker {
    fn pid(&self) -> u32 {
        match self {
            Broker::Mosquitto(b) => b.pid(),
            Broker::Nats(b) => b.pid(),
            Broker::Rabbit(b) => b.beam,
        }
    }
}

fn loadgen_binary() -> Result<PathBuf> {
    run_cmd(cargo().args(["build", "--release", "--package", "loadgen"]))?;
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| "target".into(), PathBuf::from);
    let bin = target.join("release/brokerscope-loadgen");
    bin.canonicalize()
        .with_context(|| format!("{} missing after the build", bin.display()))
}

pub fn overhead(a: &LoadArgs) -> Result<()> {
    let (proto, port) = match a.broker.as_str() {
        "mosquitto" => ("mqtt", 18840),
        "nats" => ("nats", 18841),
        "rabbitmq" => ("amqp", 18842),
        other => bail!("--broker {other:?}: expected mosquitto, nats or rabbitmq"),
    };
    if a.rounds == 0 || a.messages == 0 {
        bail!("--rounds and --messages must be at least 1");
    }
    let observer = observer_binary()?;
    let loadgen = loadgen_binary()?;
    let broker = match a.broker.as_str() {
        // Mosquitto's defaults drop QoS 1 messages for a slow subscriber beyond 1000 queued
        // and allow 20 in flight to it: a benchmark needs all of them delivered.
        "mosquitto" => Broker::Mosquitto(PrivateMosquitto::start_with(
            "brokerscope-bench-mqtt",
            port,
            "max_queued_messages 0\nmax_inflight_messages 0\n",
        )?),
        "nats" => Broker::Nats(PrivateNats::start("brokerscope-bench-nats", port)?),
        _ => Broker::Rabbit(PrivateRabbitMq::start("brokerscope-bench-amqp", port)?),
    };
    let pid = broker.pid();
    println!(
        "overhead: {} (pid {pid}, port {port}), {proto} via brokerscope-loadgen, {} messages of \
         {} B per round, window {}, {} rounds per side, observer = brokerscope run --pid {pid}",
        a.broker, a.messages, a.payload, a.window, a.rounds
    );
    let run = Runner {
        loadgen: &loadgen,
        observer: &observer,
        proto,
        port,
        pid,
        args: a,
    };
    // A first run pays for connection setup, queue creation and cold caches: not counted.
    let warm = run.round(0, false)?.0;
    println!("warm-up (not counted): {:.0} msgs/s", warm.rate);
    let mut saturation = None;
    if a.load != "half" {
        let rows = run.phase("saturation", 0)?;
        saturation = Some(median(&rows.0, |s| s.rate));
        summary("saturation", &rows);
    }
    if a.load != "saturation" {
        let full = match saturation {
            Some(r) => r,
            None => {
                println!("calibrating: one saturation round without the observer");
                run.round(0, false)?.0.rate
            }
        };
        let rate = (full / 2.0).max(1.0) as u64;
        println!("half load: {rate} msgs/s (50% of {full:.0})");
        let rows = run.phase("half", rate)?;
        summary("half", &rows);
    }
    drop(broker);
    println!("report complete");
    Ok(())
}

struct Runner<'a> {
    loadgen: &'a Path,
    observer: &'a Path,
    proto: &'a str,
    port: u16,
    pid: u32,
    args: &'a LoadArgs,
}

type Rows = (Vec<Sample>, Vec<Sample>);

impl Runner<'_> {
    fn phase(&self, name: &str, rate: u64) -> Result<Rows> {
        println!(
            "{:>10} {:>5} {:>8} {:>12} {:>10} {:>10} {:>13} observer",
            "phase", "round", "observer", "msgs/s", "p50 µs", "p99 µs", "broker ns/msg"
        );
        let (mut off, mut on) = (Vec::new(), Vec::new());
        for round in 0..self.args.rounds * 2 {
            let observed = round % 2 == 1;
            let (s, broker_ns, note) = self.round(rate, observed)?;
            println!(
                "{name:>10} {round:>5} {:>8} {:>12.0} {:>10.1} {:>10.1} {broker_ns:>13.0} {note}",
                if observed { "on" } else { "off" },
                s.rate,
                s.p50_us,
                s.p99_us
            );
            if observed { on.push(s) } else { off.push(s) }
        }
        Ok((off, on))
    }

    /// One loadgen run (rate 0 = saturation); returns its sample, the broker's CPU per message
    /// and, when observed, what the daemon counted.
    fn round(&self, rate: u64, observed: bool) -> Result<(Sample, f64, String)> {
        let daemon = if observed {
            Some(start_daemon(self.observer, self.pid)?)
        } else {
            None
        };
        // The daemon's idle CPU (housekeeping, target refresh) over one second before the load,
        // so the per-message figure can be given without that fixed cost too.
        let (daemon_cpu, idle_ns_per_s) = match &daemon {
            Some(d) => {
                let before = cpu_ns(d.0.id())?;
                let t = Instant::now();
                std::thread::sleep(Duration::from_secs(1));
                let after = cpu_ns(d.0.id())?;
                let idle = (after - before) as f64 / t.elapsed().as_secs_f64();
                (after, idle)
            }
            None => (0, 0.0),
        };
        let started = Instant::now();
        let cpu_before = cpu_ns(self.pid)?;
        let out = Command::new(self.loadgen)
            .args(["--proto", self.proto, "--port", &self.port.to_string()])
            .args(["--messages", &self.args.messages.to_string()])
            .args(["--payload", &self.args.payload.to_string()])
            .args(["--window", &self.args.window.to_string()])
            .args(["--rate", &rate.to_string(), "--timeout", "120"])
            .output()
            .context("running brokerscope-loadgen")?;
        let broker_ns = (cpu_ns(self.pid)? - cpu_before) as f64 / f64::from(self.args.messages);
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "brokerscope-loadgen failed ({}): {}{}",
                out.status,
                text,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let field = |k: &str| -> Result<f64> {
            text.split_whitespace()
                .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("no {k}= in the loadgen output {text:?}"))
        };
        let sample = Sample {
            rate: field("rate")?,
            p50_us: field("p50_us")?,
            p99_us: field("p99_us")?,
        };
        let note = match daemon {
            Some(d) => {
                let counted = daemon_counts(u64::from(self.args.messages))?;
                let used = (cpu_ns(d.0.id())? - daemon_cpu) as f64;
                let idle = idle_ns_per_s * started.elapsed().as_secs_f64();
                drop(d);
                let per_msg = |ns: f64| ns / f64::from(self.args.messages);
                format!(
                    "{:.0} ns/msg ({:.0} without idle {:.1} ms/s), {counted}",
                    per_msg(used),
                    per_msg((used - idle).max(0.0)),
                    idle_ns_per_s / 1e6
                )
            }
            None => String::new(),
        };
        Ok((sample, broker_ns, note))
    }
}

fn median(v: &[Sample], f: fn(&Sample) -> f64) -> f64 {
    let mut xs: Vec<f64> = v.iter().map(f).collect();
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// The on/off ratio of the medians, and the min–max of the per-round-pair ratios.
fn ratio(rows: &Rows, f: fn(&Sample) -> f64) -> (f64, f64, f64) {
    let (off, on) = rows;
    let pairs: Vec<f64> = off.iter().zip(on).map(|(a, b)| f(b) / f(a)).collect();
    let min = pairs.iter().copied().fold(f64::INFINITY, f64::min);
    let max = pairs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (median(on, f) / median(off, f), min, max)
}

fn summary(phase: &str, rows: &Rows) {
    for (what, f) in [
        ("throughput", (|s: &Sample| s.rate) as fn(&Sample) -> f64),
        ("p50 latency", |s: &Sample| s.p50_us),
        ("p99 latency", |s: &Sample| s.p99_us),
    ] {
        let (r, min, max) = ratio(rows, f);
        println!(
            "{phase} {what}: off {:.1}, on {:.1} (medians), ratio on/off {r:.3} (rounds {min:.3}–{max:.3})",
            median(&rows.0, f),
            median(&rows.1, f)
        );
    }
}
