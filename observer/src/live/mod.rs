//! Live latency statistics in memory, for `brokerscope latency` (and anything else that wants
//! quantiles without Prometheus).
//!
//! - this file: [`LiveStats`], fed like the daemon's metrics recorder — every event through
//!   [`LiveStats::event`], every correlator [`Observation`] through
//!   [`LiveStats::observation`] — and its [`Report`] (serde; the `--json` document);
//! - `histogram`: [`LogHistogram`], log-linear buckets from 1 µs to ~137 s, < 1 % error;
//! - `slowest`: [`Slowest`], the N slowest observations (a bounded min-heap).
//!
//! Stages: [`Stage`] per [`Relation`] — publish → confirm, publish → deliver, deliver → ack.
//! Only positive outcomes enter a stage's histogram (a confirm, an ack); a publisher nack, a
//! consumer nack or reject counts as an error of its destination instead (and may still be
//! among the slowest). Keys are (system, destination, stage) with destinations named by
//! [`destination_name`] (the observation's labels already are). Message counts per destination
//! come from events (published, delivered, protocol errors) and from observations
//! (confirmed, acked, nacked, rejected: a settlement nothing matched is not counted).
//!
//! Build the correlator with [`Correlator::keeping_message_info`](crate::correlate::Correlator::keeping_message_info)
//! so observations carry their start event: the slowest list then has message ids and the
//! start time of each message; without it ids come from the end event only.
pub mod histogram;
pub mod slowest;

use std::collections::BTreeMap;

use serde::Serialize;

pub use histogram::LogHistogram;
pub use slowest::{SlowMessage, Slowest};

use crate::{
    correlate::{Observation, Relation, Settlement},
    event::{BrokerEvent, EventKind, System},
    metrics::destination_name,
};

/// Which latency: the [`Relation`] of an observation, named for its positive outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    PublishConfirm,
    PublishDeliver,
    DeliverAck,
}

impl Stage {
    pub fn of(r: Relation) -> Self {
        match r {
            Relation::PublishConfirm => Stage::PublishConfirm,
            Relation::PublishDeliver => Stage::PublishDeliver,
            Relation::DeliverSettle => Stage::DeliverAck,
        }
    }

    /// `publish_confirm`, `publish_deliver`, `deliver_ack` (JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::PublishConfirm => "publish_confirm",
            Stage::PublishDeliver => "publish_deliver",
            Stage::DeliverAck => "deliver_ack",
        }
    }

    /// `publish→confirm`, … (tables).
    pub fn arrow(self) -> &'static str {
        match self {
            Stage::PublishConfirm => "publish→confirm",
            Stage::PublishDeliver => "publish→deliver",
            Stage::DeliverAck => "deliver→ack",
        }
    }
}

/// Where a count or latency belongs: system and destination name (None: the event named none).
pub type DestKey = (System, Option<String>);

/// Message counts of one destination.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DestCounts {
    pub published: u64,
    pub delivered: u64,
    pub confirmed: u64,
    pub acked: u64,
    /// Publisher nacks (confirm mode) and consumer nacks.
    pub nacked: u64,
    pub rejected: u64,
    /// Protocol errors (error replies; Kafka responses with an error code).
    pub protocol_errors: u64,
}

impl DestCounts {
    /// Nacks, rejects and protocol errors.
    pub fn errors(&self) -> u64 {
        self.nacked + self.rejected + self.protocol_errors
    }
}

/// The aggregator (see the module doc).
#[derive(Debug)]
pub struct LiveStats {
    stages: BTreeMap<(System, Option<String>, Stage), LogHistogram>,
    destinations: BTreeMap<DestKey, DestCounts>,
    slowest: Slowest,
    first_ns: Option<u64>,
    last_ns: u64,
    events: u64,
    observations: u64,
}

impl LiveStats {
    /// Keeps the `slowest` slowest observations (0: none).
    pub fn new(slowest: usize) -> Self {
        Self {
            stages: BTreeMap::new(),
            destinations: BTreeMap::new(),
            slowest: Slowest::new(slowest),
            first_ns: None,
            last_ns: 0,
            events: 0,
            observations: 0,
        }
    }

    fn dest(&mut self, system: System, name: Option<String>) -> &mut DestCounts {
        self.destinations.entry((system, name)).or_default()
    }

    /// Counts one decoded event (call for every event, before or after the correlator).
    pub fn event(&mut self, e: &BrokerEvent) {
        self.events += 1;
        self.first_ns.get_or_insert(e.ts_ns);
        self.last_ns = self.last_ns.max(e.ts_ns);
        let name = || e.destination.as_ref().and_then(destination_name);
        let messages = u64::from(e.record_count.unwrap_or(1));
        match e.kind {
            EventKind::Publish => self.dest(e.system, name()).published += messages,
            EventKind::Deliver => self.dest(e.system, name()).delivered += messages,
            EventKind::Error => self.dest(e.system, name()).protocol_errors += 1,
            EventKind::Response
                if e.system == System::Kafka && e.reply_code.is_some_and(|c| c != 0) =>
            {
                self.dest(e.system, name()).protocol_errors += 1
            }
            _ => {}
        }
    }

    /// Records one correlator observation; `end` is the event that completed it.
    pub fn observation(&mut self, o: &Observation, end: &BrokerEvent) {
        self.observations += 1;
        let stage = Stage::of(o.relation);
        let system = o.labels.system;
        let destination = o.labels.destination.as_deref().map(str::to_owned);
        let positive = matches!(o.settlement, None | Some(Settlement::Ack));
        let counts = self.dest(system, destination.clone());
        match (o.relation, o.settlement) {
            (Relation::PublishDeliver, _) => {}
            (Relation::PublishConfirm, None | Some(Settlement::Ack)) => counts.confirmed += o.count,
            (Relation::DeliverSettle, None | Some(Settlement::Ack)) => counts.acked += o.count,
            (_, Some(Settlement::Nack)) => counts.nacked += o.count,
            (_, Some(Settlement::Reject)) => counts.rejected += o.count,
        }
        if positive {
            self.stages
                .entry((system, destination, stage))
                .or_default()
                .record_n(o.latency_ns, o.count.max(1));
        }
        if self.slowest.capacity() > 0 && self.slowest.admits(o.latency_ns) {
            self.slowest.push(SlowMessage::of(o, end));
        }
    }

    /// Histograms per (system, destination, stage), in that order.
    pub fn stages(
        &self,
    ) -> impl Iterator<Item = (&(System, Option<String>, Stage), &LogHistogram)> {
        self.stages.iter()
    }

    /// Counts per destination.
    pub fn destinations(&self) -> impl Iterator<Item = (&DestKey, &DestCounts)> {
        self.destinations.iter()
    }

    /// The slowest observations, slowest first.
    pub fn slowest(&self) -> Vec<SlowMessage> {
        self.slowest.sorted()
    }

    pub fn events(&self) -> u64 {
        self.events
    }

    pub fn observations(&self) -> u64 {
        self.observations
    }

    /// Seconds between the first and last event seen (0 before two events).
    pub fn span_seconds(&self) -> f64 {
        self.first_ns
            .map_or(0.0, |f| self.last_ns.saturating_sub(f) as f64 / 1e9)
    }

    /// Everything as one document; rates are per second of `window_seconds` (the capture's
    /// length; [`span_seconds`](Self::span_seconds) when 0).
    pub fn report(&self, window_seconds: f64) -> Report {
        let window = if window_seconds > 0.0 {
            window_seconds
        } else {
            self.span_seconds()
        };
        let rate = |n: u64| if window > 0.0 { n as f64 / window } else { 0.0 };
        Report {
            window_seconds: window,
            events: self.events,
            observations: self.observations,
            stages: self
                .stages
                .iter()
                .map(|((system, destination, stage), h)| StageReport {
                    system: system.as_str(),
                    destination: destination.clone(),
                    stage: stage.as_str(),
                    count: h.count(),
                    min_ns: h.min(),
                    mean_ns: h.mean(),
                    p50_ns: h.quantile(0.5),
                    p90_ns: h.quantile(0.9),
                    p99_ns: h.quantile(0.99),
                    p999_ns: h.quantile(0.999),
                    max_ns: h.max(),
                    histogram: h
                        .buckets()
                        .map(|(low_ns, high_ns, count)| Bucket {
                            low_ns,
                            high_ns,
                            count,
                        })
                        .collect(),
                })
                .collect(),
            destinations: self
                .destinations
                .iter()
                .map(|((system, destination), c)| DestReport {
                    system: system.as_str(),
                    destination: destination.clone(),
                    published: c.published,
                    delivered: c.delivered,
                    confirmed: c.confirmed,
                    acked: c.acked,
                    nacked: c.nacked,
                    rejected: c.rejected,
                    protocol_errors: c.protocol_errors,
                    errors: c.errors(),
                    publish_rate: rate(c.published),
                    deliver_rate: rate(c.delivered),
                })
                .collect(),
            slowest: self.slowest(),
        }
    }
}

/// The `brokerscope latency --json` document (field names are stable; see README).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub window_seconds: f64,
    pub events: u64,
    pub observations: u64,
    pub stages: Vec<StageReport>,
    pub destinations: Vec<DestReport>,
    pub slowest: Vec<SlowMessage>,
}

/// One (system, destination, stage): latency quantiles in ns and the non-empty buckets.
#[derive(Clone, Debug, Serialize)]
pub struct StageReport {
    pub system: &'static str,
    pub destination: Option<String>,
    pub stage: &'static str,
    pub count: u64,
    pub min_ns: u64,
    pub mean_ns: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
    pub histogram: Vec<Bucket>,
}

/// `count` values in `[low_ns, high_ns)`.
#[derive(Clone, Debug, Serialize)]
pub struct Bucket {
    pub low_ns: u64,
    pub high_ns: u64,
    pub count: u64,
}

/// Message counts and rates (per second) of one destination.
#[derive(Clone, Debug, Serialize)]
pub struct DestReport {
    pub system: &'static str,
    pub destination: Option<String>,
    pub published: u64,
    pub delivered: u64,
    pub confirmed: u64,
    pub acked: u64,
    pub nacked: u64,
    pub rejected: u64,
    pub protocol_errors: u64,
    pub errors: u64,
    pub publish_rate: f64,
    pub deliver_rate: f64,
}

#[cfg(test)]
mod tests;
