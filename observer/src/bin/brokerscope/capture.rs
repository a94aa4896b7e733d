//! `brokerscope capture`: prints every reassembled piece of the targets' TCP streams — the
//! debugging view of the capture layer (time, pid, connection, direction, bytes, gaps, preview).
use std::{io::Write, process::ExitCode};

use anyhow::Context;
use clap::Args;
use observer::capture::{CaptureSession, StreamEvent};

use crate::{CaptureOptions, TargetArgs, drive, format};

#[derive(Args, Debug)]
pub struct CaptureArgs {
    #[command(flatten)]
    pub targets: TargetArgs,
    #[command(flatten)]
    pub options: CaptureOptions,
    /// Bytes shown per piece in the hex/ASCII preview.
    #[arg(long, default_value_t = 16, value_name = "BYTES")]
    pub preview: usize,
}

pub fn run(args: CaptureArgs) -> anyhow::Result<ExitCode> {
    let mut session = CaptureSession::start(args.targets.spec(), args.options.session_config())?;
    announce_targets(&session);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let preview = args.preview;
    let mut printer = |event: StreamEvent<'_>| {
        let _ = print_event(&mut out, &event, preview);
    };
    drive(&mut session, &mut printer, args.options.duration)?;
    out.flush().context("writing to stdout")?;
    drop(out);
    print_summary(&session)?;
    Ok(ExitCode::SUCCESS)
}

/// "capturing pid … ports […]" on stderr, one line per target.
pub fn announce_targets(session: &CaptureSession) {
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
}

/// Stream and kernel counters on stderr.
pub fn print_summary(session: &CaptureSession) -> anyhow::Result<()> {
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
    Ok(())
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
