//! The `brokerscope` command line: one file per subcommand.
mod audit;
mod capture;
mod check;
mod format;
mod latency;
mod run;
mod top;
mod trace;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use observer::capture::TargetSpec;

#[derive(Parser)]
#[command(
    name = "brokerscope",
    version,
    about = "Zero-instrumentation eBPF observer for message brokers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Preflight: kernel, BTF, cgroup v2, program types, privileges — and what to do.
    Check,
    /// Print each reassembled chunk of the brokers' TCP streams (the capture layer's debug view).
    Capture(capture::CaptureArgs),
    /// Print decoded broker events (publish, deliver, ack, auth, declare, …) as they happen.
    Trace(trace::TraceArgs),
    /// Measure for a while, then print latency quantiles per system / destination / stage.
    Latency(latency::LatencyArgs),
    /// Live view: per destination rates and latencies, per connection rates (q quits).
    Top(top::TopArgs),
    /// The daemon: find the brokers, serve Prometheus metrics and health over HTTP.
    Run(Box<observer::daemon::config::RunArgs>),
    /// Read the audit log: `query` (JSON lines) or `export --format json|csv`, with filters.
    Audit(audit::AuditArgs),
}

/// How the kernel side captures (shared by every subcommand that attaches).
#[derive(Args, Clone, Debug)]
pub struct CaptureOptions {
    /// Ring buffer size in bytes (power of two).
    #[arg(long, default_value_t = 16 << 20, value_name = "BYTES")]
    pub ring_size: u32,
    /// Payload bytes copied per packet at most (the rest is reported as a truncation gap).
    #[arg(long, default_value_t = observer_common::DEFAULT_CAPTURE_CAP, value_name = "BYTES")]
    pub capture_cap: u32,
    /// Also capture connections the targets open themselves (e.g. cluster links).
    #[arg(long)]
    pub outgoing: bool,
    /// Stop after this long (else at Ctrl-C / SIGTERM): `30s`, `500ms`, `2m`, `1h` or plain
    /// seconds.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<f64>,
}

impl CaptureOptions {
    pub fn session_config(&self) -> observer::capture::session::SessionConfig {
        observer::capture::session::SessionConfig {
            kernel: observer::capture::KernelConfig {
                ring_bytes: self.ring_size,
                capture_cap: self.capture_cap,
                track_outgoing: self.outgoing,
                ring_wake_bytes: None,
            },
            ..Default::default()
        }
    }
}

/// Seconds from `30s`, `500ms`, `2m`, `1h`, `1.5s` or plain seconds (`30`, `0.5`); positive.
pub fn parse_duration(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let (number, scale) = [
        ("ms", 1e-3),
        ("us", 1e-6),
        ("µs", 1e-6),
        ("s", 1.0),
        ("m", 60.0),
        ("h", 3600.0),
    ]
    .iter()
    .find_map(|(unit, scale)| t.strip_suffix(unit).map(|n| (n, *scale)))
    .unwrap_or((t, 1.0));
    match number.trim().parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 => Ok(n * scale),
        _ => Err(format!(
            "{text:?} is not a duration; use e.g. 30s, 500ms, 2m or plain seconds"
        )),
    }
}

/// A mistake in the command line: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// Runs the capture loop until the duration passes or SIGINT/SIGTERM, then reads what the
/// kernel still holds and closes every open connection.
pub fn drive<S: observer::capture::StreamSink>(
    session: &mut observer::capture::CaptureSession,
    sink: &mut S,
    duration: Option<f64>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let duration = duration.map(std::time::Duration::from_secs_f64);
    runtime.block_on(async {
        let stop = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            let timer = async {
                match duration {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = timer => {},
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
        };
        session.run(sink, stop).await
    })?;
    session.catch_up(sink, std::time::Duration::from_millis(500))?;
    session.close_all(sink);
    Ok(())
}

/// Which processes to watch (selectors add up).
#[derive(Args, Clone, Debug)]
pub struct TargetArgs {
    /// Process id of a broker (repeatable).
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Process name (comm or executable name, e.g. beam.smp, mosquitto); new PIDs are followed.
    #[arg(long = "process", value_name = "NAME")]
    pub names: Vec<String>,
    /// The process listening on this TCP port; only this port is captured (repeatable).
    #[arg(long = "port", value_name = "PORT")]
    pub ports: Vec<u16>,
}

impl TargetArgs {
    pub fn spec(&self) -> TargetSpec {
        TargetSpec {
            pids: self.pids.clone(),
            names: self.names.clone(),
            ports: self.ports.clone(),
            discover: false,
        }
    }

    /// Like [`spec`](Self::spec), but with no selector given: discover the brokers.
    pub fn spec_or_discover(&self) -> TargetSpec {
        let mut spec = self.spec();
        spec.discover = spec.is_empty();
        spec
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check => check::run(),
        Command::Capture(args) => capture::run(args),
        Command::Trace(args) => trace::run(args),
        Command::Latency(args) => latency::run(args),
        Command::Top(args) => top::run(args),
        Command::Run(args) => run::run(*args),
        Command::Audit(args) => audit::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("brokerscope: {e:#}");
            let usage = e.downcast_ref::<Usage>().is_some()
                || e.downcast_ref::<observer::capture::CaptureError>()
                    .is_some_and(|e| e.is_usage());
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}
