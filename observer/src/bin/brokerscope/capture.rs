//! `brokerscope capture`: prints every reassembled piece of the targets' TCP streams — the
//! debugging view of the capture layer (time, pid, connection, direction, bytes, gaps, preview).
use std::{io::Write, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::Args;
use observer::{
    capture::{CaptureSession, KernelConfig, StreamEvent, session::SessionConfig},
    stream::ReassemblyConfig,
};
use observer_common::DEFAULT_CAPTURE_CAP;

use crate::{TargetArgs, format};

#[derive(Args, Debug)]
pub struct CaptureArgs {
    #[command(flatten)]
    pub targets: TargetArgs,
    /// Ring buffer size in bytes (power of two).
    #[arg(long, default_value_t = 16 << 20, value_name = "BYTES")]
    pub ring_size: u32,
    /// Payload bytes copied per packet at most (the rest is reported as a truncation gap).
    #[arg(long, default_value_t = DEFAULT_CAPTURE_CAP, value_name = "BYTES")]
    pub capture_cap: u32,
    /// Also capture connections the targets open themselves (e.g. cluster links).
    #[arg(long)]
    pub outgoing: bool,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// Bytes shown per piece in the hex/ASCII preview.
    #[arg(long, default_value_t = 16, value_name = "BYTES")]
    pub preview: usize,
}

pub fn run(args: CaptureArgs) -> anyhow::Result<ExitCode> {
    let config = SessionConfig {
        kernel: KernelConfig {
            ring_bytes: args.ring_size,
            capture_cap: args.capture_cap,
            track_outgoing: args.outgoing,
        },
        reassembly: ReassemblyConfig::default(),
        ..Default::default()
    };
    let mut session = CaptureSession::start(args.targets.spec(), config)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let preview = args.preview;
    for t in session.targets() {
        let ports: Vec<String> = t.ports.iter().map(u16::to_string).collect();
        eprintln!(
            "capturing pid {} ({}) cgroup {} ports [{}]",
            t.pid,
            t.comm,
            t.cgroup.display(),
            ports.join(", ")
        );
    }
    let mut printer = |event: StreamEvent<'_>| {
        let _ = print_event(&mut out, &event, preview);
    };
    let duration = args.duration.map(Duration::from_secs_f64);
    runtime.block_on(async {
        let stop = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            match duration {
                Some(d) => tokio::select! {
                    _ = tokio::time::sleep(d) => {},
                    _ = tokio::signal::ctrl_c() => {},
                    _ = term.recv() => {},
                },
                None => tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = term.recv() => {},
                },
            }
        };
        session.run(&mut printer, stop).await
    })?;
    session.catch_up(&mut printer, Duration::from_millis(500))?;
    session.close_all(&mut printer);
    out.flush().context("writing to stdout")?;
    drop(out);
    let kernel = session.kernel_counters()?;
    let stats = session.stats();
    eprintln!(
        "summary: {} records, {} bytes delivered, {} gaps ({} B lost, {} B truncated, {} B unknown), {} connections opened, {} closed, {} malformed records",
        stats.records,
        stats.bytes_delivered,
        stats.gaps,
        stats.gap_bytes_lost,
        stats.gap_bytes_truncated,
        stats.gap_bytes_unknown,
        stats.connections_opened,
        stats.connections_closed,
        stats.malformed_records
    );
    let counters: Vec<String> = kernel
        .iter()
        .map(|(c, v)| format!("{}={v}", c.name()))
        .collect();
    eprintln!("kernel: {}", counters.join(" "));
    Ok(ExitCode::SUCCESS)
}

fn print_event(
    out: &mut impl Write,
    event: &StreamEvent<'_>,
    preview: usize,
) -> std::io::Result<()> {
    match event {
        StreamEvent::Opened { conn, ts_ns } => writeln!(
            out,
            "{} {} pid={} open  {} ← {}{}",
            format::rfc3339(*ts_ns),
            conn.id,
            pid(conn.pid),
            conn.local,
            conn.peer,
            if conn.preexisting {
                " (open before capture: joined mid-stream)"
            } else {
                ""
            }
        ),
        StreamEvent::Data {
            conn,
            dir,
            ts_ns,
            seq,
            bytes,
        } => writeln!(
            out,
            "{} {} pid={} {:<3}   {} {} {}  {} B seq={}  {}",
            format::rfc3339(*ts_ns),
            conn.id,
            pid(conn.pid),
            dir.as_str(),
            conn.local,
            arrow(*dir),
            conn.peer,
            bytes.len(),
            seq,
            format::hex_preview(bytes, preview)
        ),
        StreamEvent::Gap {
            conn,
            dir,
            ts_ns,
            seq,
            len,
            reason,
        } => writeln!(
            out,
            "{} {} pid={} {:<3}   GAP {len} B at seq={seq} ({reason:?})",
            format::rfc3339(*ts_ns),
            conn.id,
            pid(conn.pid),
            dir.as_str()
        ),
        StreamEvent::End {
            conn,
            dir,
            ts_ns,
            reset,
        } => writeln!(
            out,
            "{} {} pid={} {:<3}   end{}",
            format::rfc3339(*ts_ns),
            conn.id,
            pid(conn.pid),
            dir.as_str(),
            if *reset { " (reset)" } else { "" }
        ),
        StreamEvent::Closed { conn, ts_ns } => {
            writeln!(
                out,
                "{} {} pid={} close",
                format::rfc3339(*ts_ns),
                conn.id,
                pid(conn.pid)
            )
        }
        StreamEvent::TargetAdded { target } => {
            writeln!(out, "target pid={} ({}) added", target.pid, target.comm)
        }
        StreamEvent::TargetRemoved { pid } => writeln!(out, "target pid={pid} gone"),
    }
}

fn pid(pid: Option<u32>) -> String {
    pid.map_or_else(|| "?".to_owned(), |p| p.to_string())
}

fn arrow(dir: observer::capture::Direction) -> &'static str {
    match dir {
        observer::capture::Direction::Ingress => "←",
        observer::capture::Direction::Egress => "→",
    }
}
