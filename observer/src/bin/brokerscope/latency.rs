//! `brokerscope latency`: capture for a while, correlate, then print latency quantiles per
//! system / destination / stage (publish→confirm, publish→deliver, deliver→ack) with a
//! sparkline of each histogram, message counts per destination and optionally the slowest
//! messages — as tables or one JSON document (`--json`, field names in the README). The
//! aggregation itself is the library's [`observer::live::LiveStats`].
use std::process::ExitCode;

use clap::Args;
use observer::{
    capture::CaptureSession,
    correlate::{Correlator, CorrelatorConfig, Relation},
    event::BrokerEvent,
    live::{LiveStats, LogHistogram, Report},
    protocol::{infer::Inference, pipeline::DecodePipeline},
    render,
};
use serde_json::json;

use crate::{
    CaptureOptions, TargetArgs,
    capture::{announce_targets, print_summary},
    drive,
    trace::parse_protocols,
};

#[derive(Args, Debug)]
pub struct LatencyArgs {
    /// With no --pid, --process or --port: every broker found on the host.
    #[command(flatten)]
    pub targets: TargetArgs,
    #[command(flatten)]
    pub options: CaptureOptions,
    /// One JSON document instead of tables (stable field names; see README).
    #[arg(long)]
    pub json: bool,
    /// Also list the N slowest messages with their ids and timings.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub slowest: usize,
    /// Decode PORT as SYSTEM (amqp, mqtt, nats, kafka) whatever its first bytes say (repeatable).
    #[arg(long = "protocol", value_name = "PORT=SYSTEM")]
    pub protocols: Vec<String>,
}

/// Human units: ns, µs, ms, s with three significant digits.
pub fn human_ns(ns: u64) -> String {
    let (v, unit) = match ns {
        0..1_000 => return format!("{ns}ns"),
        1_000..1_000_000 => (ns as f64 / 1e3, "µs"),
        1_000_000..1_000_000_000 => (ns as f64 / 1e6, "ms"),
        _ => (ns as f64 / 1e9, "s"),
    };
    if v >= 100.0 {
        format!("{v:.0}{unit}")
    } else if v >= 10.0 {
        format!("{v:.1}{unit}")
    } else {
        format!("{v:.2}{unit}")
    }
}

/// One character per power of two from the lowest to the highest non-empty one, height by
/// count (`·` for an empty one), and where it starts.
fn sparkline(h: &LogHistogram) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let octaves = h.octaves();
    let top = octaves.iter().map(|(_, c)| *c).max().unwrap_or(0);
    if top == 0 {
        return String::new();
    }
    let bars: String = octaves
        .iter()
        .map(|(_, c)| match c {
            0 => '·',
            c => BARS[((c * 8).div_ceil(top) as usize).clamp(1, 8) - 1],
        })
        .collect();
    format!("{bars} from {} (×2 each)", human_ns(octaves[0].0))
}

pub fn run(args: LatencyArgs) -> anyhow::Result<ExitCode> {
    let forced = parse_protocols(&args.protocols)?;
    let mut session = CaptureSession::start(
        args.targets.spec_or_discover(),
        args.options.session_config(),
    )?;
    if session.targets().next().is_none() {
        eprintln!("no broker process found yet; waiting for one to start");
    }
    announce_targets(&session);
    let started = std::time::Instant::now();
    let mut live = LiveStats::new(args.slowest);
    let mut correlator =
        Correlator::new(CorrelatorConfig::default()).keeping_message_info(args.slowest > 0);
    let mut last_expire = 0u64;
    let sink = |e: &BrokerEvent| {
        live.event(e);
        correlator.observe(e, &mut |o| live.observation(&o, e));
        if e.ts_ns.saturating_sub(last_expire) >= 1_000_000_000 {
            correlator.expire(e.ts_ns);
            last_expire = e.ts_ns;
        }
    };
    let mut pipeline = DecodePipeline::new(Inference::new(forced), sink);
    drive(&mut session, &mut pipeline, args.options.duration)?;
    let stats = pipeline.stats();
    drop(pipeline);
    let window = args
        .options
        .duration
        .unwrap_or_else(|| started.elapsed().as_secs_f64());
    let report = live.report(window);
    let cstats = correlator.stats();
    let correlation: Vec<String> = Relation::ALL
        .iter()
        .map(|r| {
            format!(
                "{}: pending={} evicted={} unmatched={}",
                r.as_str(),
                correlator.pending(*r),
                cstats.evicted(*r),
                cstats.unmatched(*r)
            )
        })
        .collect();
    if args.json {
        let mut doc = serde_json::to_value(&report)?;
        doc["decoder"] = json!({
            "events": stats.events,
            "frames": stats.decoder.frames,
            "malformed": stats.decoder.malformed,
            "resyncs": stats.decoder.resyncs,
            "oversize": stats.decoder.oversize,
            "skipped_bytes": stats.decoder.skipped_bytes,
            "connections_unknown": stats.connections_unknown,
        });
        let s = session.stats();
        doc["capture"] = json!({
            "gaps": s.gaps,
            "gap_bytes_lost": s.gap_bytes_lost,
            "gap_bytes_truncated": s.gap_bytes_truncated,
            "malformed_records": s.malformed_records,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print_tables(&live, &report);
    }
    eprintln!(
        "decoded: {} events, {} observations ; frames={} malformed={} resyncs={} oversize={} skipped_bytes={} unknown_connections={}",
        stats.events,
        live.observations(),
        stats.decoder.frames,
        stats.decoder.malformed,
        stats.decoder.resyncs,
        stats.decoder.oversize,
        stats.decoder.skipped_bytes,
        stats.connections_unknown,
    );
    eprintln!("correlation: {}", correlation.join(" ; "));
    print_summary(&session)?;
    Ok(ExitCode::SUCCESS)
}

fn print_tables(live: &LiveStats, report: &Report) {
    let dest = |d: &Option<String>| d.clone().unwrap_or_else(|| "-".into());
    let width = report
        .stages
        .iter()
        .map(|s| dest(&s.destination).chars().count())
        .chain(
            report
                .destinations
                .iter()
                .map(|d| dest(&d.destination).chars().count()),
        )
        .max()
        .unwrap_or(0)
        .max(11);
    if report.stages.is_empty() {
        println!("no latencies observed in {:.1}s", report.window_seconds);
    } else {
        println!(
            "{:<6} {:<width$} {:<16} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}  HISTOGRAM",
            "SYSTEM", "DESTINATION", "STAGE", "COUNT", "P50", "P90", "P99", "P99.9", "MAX"
        );
        for ((system, destination, stage), h) in live.stages() {
            println!(
                "{:<6} {:<width$} {:<16} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}  {}",
                system.as_str(),
                dest(destination),
                stage.arrow(),
                h.count(),
                human_ns(h.quantile(0.5)),
                human_ns(h.quantile(0.9)),
                human_ns(h.quantile(0.99)),
                human_ns(h.quantile(0.999)),
                human_ns(h.max()),
                sparkline(h)
            );
        }
    }
    if !report.destinations.is_empty() {
        println!();
        println!(
            "{:<6} {:<width$} {:>9} {:>9} {:>9} {:>9} {:>7} {:>9} {:>9}",
            "SYSTEM",
            "DESTINATION",
            "PUBLISHED",
            "DELIVERED",
            "CONFIRMED",
            "ACKED",
            "ERRORS",
            "PUB/S",
            "DELIV/S"
        );
        for d in &report.destinations {
            println!(
                "{:<6} {:<width$} {:>9} {:>9} {:>9} {:>9} {:>7} {:>9.1} {:>9.1}",
                d.system,
                dest(&d.destination),
                d.published,
                d.delivered,
                d.confirmed,
                d.acked,
                d.errors,
                d.publish_rate,
                d.deliver_rate
            );
        }
    }
    if !report.slowest.is_empty() {
        println!();
        println!("slowest:");
        for m in &report.slowest {
            let mut ids = Vec::new();
            if let Some(id) = &m.message_id {
                ids.push(format!("message_id={id}"));
            }
            if let Some(t) = m.delivery_tag {
                ids.push(format!("delivery_tag={t}"));
            }
            if let Some(o) = m.offset {
                ids.push(format!("offset={o}"));
            }
            if let Some(p) = m.packet_id {
                ids.push(format!("packet_id={p}"));
            }
            if let Some(c) = m.channel {
                ids.push(format!("channel={c}"));
            }
            if let Some(s) = m.settlement {
                ids.push(format!("settlement={s}"));
            }
            println!(
                "{:>8} {} {} {} start={} end={} client={} {}",
                human_ns(m.latency_ns),
                m.system,
                m.stage,
                dest(&m.destination),
                render::rfc3339(m.start_ns),
                render::rfc3339(m.end_ns),
                m.client,
                ids.join(" ")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units() {
        assert_eq!(human_ns(999), "999ns");
        assert_eq!(human_ns(1_500), "1.50µs");
        assert_eq!(human_ns(50_123_000), "50.1ms");
        assert_eq!(human_ns(250_000_000), "250ms");
        assert_eq!(human_ns(2_000_000_000), "2.00s");
    }

    #[test]
    fn durations() {
        assert_eq!(crate::parse_duration("30s"), Ok(30.0));
        assert_eq!(crate::parse_duration("500ms"), Ok(0.5));
        assert_eq!(crate::parse_duration("2m"), Ok(120.0));
        assert_eq!(crate::parse_duration("7"), Ok(7.0));
        assert!(crate::parse_duration("soon").is_err());
        assert!(crate::parse_duration("-1s").is_err());
        assert!(crate::parse_duration("0").is_err());
    }
}
