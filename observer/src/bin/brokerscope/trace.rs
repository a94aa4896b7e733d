//! `brokerscope trace`: decoded broker events as they happen, one per line (or `--json`).
use std::{collections::HashMap, io::Write, process::ExitCode};

use anyhow::Context;
use clap::Args;
use observer::{
    capture::CaptureSession,
    correlate::lag::LagTracker,
    event::{BrokerEvent, EventKind, System},
    protocol::{infer::Inference, pipeline::DecodePipeline},
    render,
};

use crate::{
    CaptureOptions, TargetArgs, Usage,
    capture::{announce_targets, print_summary},
    drive,
};

#[derive(Args, Debug)]
pub struct TraceArgs {
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

fn parse_protocols(specs: &[String]) -> Result<HashMap<u16, System>, Usage> {
    specs
        .iter()
        .map(|spec| {
            let bad = || Usage(format!("--protocol {spec:?}: expected PORT=SYSTEM, e.g. 5673=amqp (systems: amqp, mqtt, nats, kafka)"));
            let (port, system) = spec.split_once('=').ok_or_else(bad)?;
            let port: u16 = port.trim().parse().map_err(|_| bad())?;
            let system = match system.trim() {
                "amqp" => System::Amqp,
                "mqtt" => System::Mqtt,
                "nats" => System::Nats,
                "kafka" => System::Kafka,
                _ => return Err(bad()),
            };
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
    let mut session = CaptureSession::start(args.targets.spec(), args.options.session_config())?;
    announce_targets(&session);
    let stdout = std::io::stdout();
    let mut out = std::io::LineWriter::new(stdout.lock());
    let json = args.json;
    let mut shown = 0u64;
    let mut lag = LagTracker::default();
    let printer = |e: &BrokerEvent| {
        lag.observe(e);
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

fn lag_line(l: &observer::correlate::lag::Lag) -> String {
    format!(
        "kafka lag group={} topic={} partition={} high_watermark={} committed={} lag={}",
        l.group, l.topic, l.partition, l.high_watermark, l.committed, l.lag
    )
}
