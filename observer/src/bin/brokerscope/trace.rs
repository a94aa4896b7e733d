//! `brokerscope trace`: decoded broker events as they happen, one per line (or `--json`).
use std::{collections::HashMap, io::Write, process::ExitCode};

use anyhow::Context;
use clap::Args;
use observer::{
    capture::CaptureSession,
    correlate::{Correlator, CorrelatorConfig, Observation, lag::LagTracker},
    event::{BrokerEvent, EventKind, System},
    live::Stage,
    protocol::{infer::Inference, pipeline::DecodePipeline},
    render,
};

use crate::{
    CaptureOptions, TargetArgs, Usage,
    capture::{announce_targets, print_summary},
    drive,
    latency::human_ns,
    parse_duration,
};

#[derive(Args, Debug)]
pub struct TraceArgs {
    /// With no --pid, --process or --port: every broker found on the host.
    #[command(flatten)]
    pub targets: TargetArgs,
    #[command(flatten)]
    pub options: CaptureOptions,
    /// One JSON object per line (stable field names; see README).
    #[arg(long)]
    pub json: bool,
    /// Only these event kinds, e.g. `--event publish,deliver,ack` (repeatable).
    #[arg(long = "event", value_delimiter = ',', value_name = "KIND")]
    pub events: Vec<String>,
    /// Only events whose destination matches this glob (`*`, `?`), e.g. 'orders.*'.
    #[arg(long, value_name = "GLOB")]
    pub destination: Option<String>,
    /// Decode PORT as SYSTEM (amqp, mqtt, nats, kafka) whatever its first bytes say (repeatable).
    #[arg(long = "protocol", value_name = "PORT=SYSTEM")]
    pub protocols: Vec<String>,
    /// Only events that complete a correlation (confirm, deliver, ack/nack/reject) at least
    /// this slow, e.g. `50ms`, each with its latency, stage and the start event's time and ids.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub min_latency: Option<f64>,
}

/// Which events the user wants to see.
struct Filter {
    kinds: Vec<EventKind>,
    destination: Option<String>,
}

impl Filter {
    fn keep(&self, e: &BrokerEvent) -> bool {
        if !self.kinds.is_empty() && !self.kinds.contains(&e.kind) {
            return false;
        }
        match &self.destination {
            None => true,
            Some(glob) => e
                .destination
                .as_ref()
                .and_then(|d| d.name())
                .is_some_and(|name| render::glob_match(glob, &name)),
        }
    }
}

fn parse_kinds(names: &[String]) -> Result<Vec<EventKind>, Usage> {
    names
        .iter()
        .map(|n| {
            EventKind::parse(n.trim()).ok_or_else(|| {
                let all: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
                Usage(format!(
                    "unknown event kind {n:?}; use one of: {}",
                    all.join(", ")
                ))
            })
        })
        .collect()
}

pub fn parse_protocols(specs: &[String]) -> Result<HashMap<u16, System>, Usage> {
    specs
        .iter()
        .map(|spec| {
            let bad = || Usage(format!("--protocol {spec:?}: expected PORT=SYSTEM, e.g. 5673=amqp (systems: amqp, mqtt, nats, kafka)"));
            let (port, system) = spec.split_once('=').ok_or_else(bad)?;
            let port: u16 = port.trim().parse().map_err(|_| bad())?;
            let system = System::parse(system.trim()).ok_or_else(bad)?;
            Ok((port, system))
        })
        .collect()
}

pub fn run(args: TraceArgs) -> anyhow::Result<ExitCode> {
    let filter = Filter {
        kinds: parse_kinds(&args.events)?,
        destination: args.destination.clone(),
    };
    let forced = parse_protocols(&args.protocols)?;
    let mut session = CaptureSession::start(
        args.targets.spec_or_discover(),
        args.options.session_config(),
    )?;
    if session.targets().next().is_none() {
        eprintln!("no broker process found yet; waiting for one to start");
    }
    announce_targets(&session);
    let min_latency = args.min_latency.map(|s| (s * 1e9) as u64);
    let mut correlator = min_latency
        .map(|_| Correlator::new(CorrelatorConfig::default()).keeping_message_info(true));
    let mut last_expire = 0u64;
    let stdout = std::io::stdout();
    let mut out = std::io::LineWriter::new(stdout.lock());
    let json = args.json;
    let mut shown = 0u64;
    let mut lag = LagTracker::default();
    let printer = |e: &BrokerEvent| {
        lag.observe(e);
        if let (Some(c), Some(min)) = (correlator.as_mut(), min_latency) {
            let mut slow = Vec::new();
            c.observe(e, &mut |o| {
                if o.latency_ns >= min {
                    slow.push(o)
                }
            });
            if e.ts_ns.saturating_sub(last_expire) >= 1_000_000_000 {
                c.expire(e.ts_ns);
                last_expire = e.ts_ns;
            }
            if filter.keep(e) {
                for o in &slow {
                    shown += 1;
                    let _ = if json {
                        writeln!(out, "{}", slow_json(e, o))
                    } else {
                        writeln!(out, "{}", slow_line(e, o))
                    };
                }
            }
            return;
        }
        if !filter.keep(e) {
            return;
        }
        shown += 1;
        let _ = if json {
            writeln!(out, "{}", render::to_json(e))
        } else {
            writeln!(out, "{}", render::to_line(e))
        };
        // A Kafka offset commit: show where that consumer group now stands.
        if !json
            && e.kind == EventKind::Ack
            && e.system == System::Kafka
            && let Some(d) = &e.destination
            && let (Some(group), Some(topic), Some(partition)) = (&d.group, &d.topic, d.partition)
            && let Some(l) = lag.lag_of(group, topic, partition)
        {
            let _ = writeln!(out, "{}", lag_line(&l));
        }
    };
    let mut pipeline = DecodePipeline::new(Inference::new(forced), printer);
    drive(&mut session, &mut pipeline, args.options.duration)?;
    let stats = pipeline.stats();
    drop(pipeline);
    for l in lag.lag() {
        eprintln!("{}", lag_line(&l));
    }
    out.flush().context("writing to stdout")?;
    drop(out);
    let decoded: Vec<String> = stats
        .connections_decoded
        .iter()
        .map(|(s, n)| format!("{}={n}", s.as_str()))
        .collect();
    eprintln!(
        "decoded: {shown} events shown of {} ; connections [{}] unknown={} unsupported={} ; frames={} malformed={} resyncs={} oversize={} skipped_bytes={}",
        stats.events,
        decoded.join(" "),
        stats.connections_unknown,
        stats.connections_unsupported,
        stats.decoder.frames,
        stats.decoder.malformed,
        stats.decoder.resyncs,
        stats.decoder.oversize,
        stats.decoder.skipped_bytes
    );
    print_summary(&session)?;
    Ok(ExitCode::SUCCESS)
}

/// The event, then `latency=… stage=…` and what the start event says.
fn slow_line(e: &BrokerEvent, o: &Observation) -> String {
    let mut line = format!(
        "{} latency={} stage={}",
        render::to_line(e),
        human_ns(o.latency_ns),
        Stage::of(o.relation).arrow()
    );
    if let Some(s) = o.settlement {
        line += &format!(" settlement={}", s.as_str());
    }
    if let Some(s) = &o.start {
        line += &format!(" start={}", render::rfc3339(s.ts_ns));
        if let Some(id) = &s.message_id {
            line += &format!(" start.message_id={id}");
        }
        if let Some(t) = s.delivery_tag {
            line += &format!(" start.delivery_tag={t}");
        }
        if let Some(o) = s.offset {
            line += &format!(" start.offset={o}");
        }
        if let Some(p) = s.packet_id {
            line += &format!(" start.packet_id={p}");
        }
    }
    line
}

/// The event's JSON plus `latency_ns`, `stage`, `settlement` and `start` {time, ids}.
fn slow_json(e: &BrokerEvent, o: &Observation) -> serde_json::Value {
    let mut v = render::to_json(e);
    v["latency_ns"] = o.latency_ns.into();
    v["stage"] = Stage::of(o.relation).as_str().into();
    if let Some(s) = o.settlement {
        v["settlement"] = s.as_str().into();
    }
    if let Some(s) = &o.start {
        let mut start = serde_json::Map::new();
        start.insert("time".into(), render::rfc3339(s.ts_ns).into());
        start.insert("kind".into(), s.kind.as_str().into());
        if let Some(id) = &s.message_id {
            start.insert("message_id".into(), id.clone().into());
        }
        if let Some(t) = s.delivery_tag {
            start.insert("delivery_tag".into(), t.into());
        }
        if let Some(o) = s.offset {
            start.insert("offset".into(), o.into());
        }
        if let Some(p) = s.packet_id {
            start.insert("packet_id".into(), p.into());
        }
        v["start"] = start.into();
    }
    v
}

fn lag_line(l: &observer::correlate::lag::Lag) -> String {
    format!(
        "kafka lag group={} topic={} partition={} high_watermark={} committed={} lag={}",
        l.group, l.topic, l.partition, l.high_watermark, l.committed, l.lag
    )
}
