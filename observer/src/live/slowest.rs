//! [`Slowest`]: the N slowest observations, kept in a min-heap of at most N entries (the
//! fastest of them on top, replaced when something slower arrives).
use std::{cmp::Reverse, collections::BinaryHeap};

use serde::Serialize;

use super::Stage;
use crate::{correlate::Observation, event::BrokerEvent};

/// One slow message: what it was, where, and when it started and ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SlowMessage {
    pub system: &'static str,
    pub destination: Option<String>,
    pub stage: &'static str,
    /// `ack`, `nack`, `reject` for confirms and settlements.
    pub settlement: Option<&'static str>,
    pub latency_ns: u64,
    /// Wall clock, ns since the epoch: the start event (publish or delivery) …
    pub start_ns: u64,
    /// … and the event that completed the observation.
    pub end_ns: u64,
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    /// AMQP delivery tag (of the delivery; of the confirm for publish → confirm).
    pub delivery_tag: Option<u64>,
    pub offset: Option<i64>,
    pub packet_id: Option<u32>,
    pub channel: Option<u32>,
    /// The client's address of the start event's connection.
    pub client: String,
}

impl SlowMessage {
    /// From an observation and the event that completed it; ids come from the start event
    /// when the observation carries it, else from `end`.
    pub fn of(o: &Observation, end: &BrokerEvent) -> Self {
        let s = o.start.as_deref();
        Self {
            system: o.labels.system.as_str(),
            destination: o.labels.destination.as_deref().map(str::to_owned),
            stage: Stage::of(o.relation).as_str(),
            settlement: o.settlement.map(|s| s.as_str()),
            latency_ns: o.latency_ns,
            start_ns: s.map_or(end.ts_ns.saturating_sub(o.latency_ns), |s| s.ts_ns),
            end_ns: end.ts_ns,
            message_id: s
                .and_then(|s| s.message_id.clone())
                .or_else(|| end.props.as_ref().and_then(|p| p.message_id.clone())),
            correlation_id: s.and_then(|s| s.correlation_id.clone()),
            delivery_tag: s.and_then(|s| s.delivery_tag).or(end.delivery_tag),
            offset: s.and_then(|s| s.offset).or(end.offset),
            packet_id: s.and_then(|s| s.packet_id).or(end.packet_id),
            channel: s.and_then(|s| s.channel).or(end.channel),
            client: s.map_or(end.conn.peer, |s| s.conn.peer).to_string(),
        }
    }
}

/// Bounded: at most `capacity` entries, the slowest seen so far.
#[derive(Debug)]
pub struct Slowest {
    capacity: usize,
    /// (latency, arrival) so equal latencies keep their arrival order; min on top.
    heap: BinaryHeap<Reverse<(u64, u64, Entry)>>,
    seq: u64,
}

/// Heap payload; compared by nothing (the key decides).
#[derive(Debug)]
struct Entry(SlowMessage);

impl PartialEq for Entry {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl Slowest {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            heap: BinaryHeap::with_capacity(capacity.min(4096) + 1),
            seq: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Would a message this slow be kept? (Lets callers skip building it.)
    pub fn admits(&self, latency_ns: u64) -> bool {
        self.capacity > 0
            && (self.heap.len() < self.capacity
                || self
                    .heap
                    .peek()
                    .is_some_and(|Reverse((l, _, _))| latency_ns > *l))
    }

    pub fn push(&mut self, m: SlowMessage) {
        if !self.admits(m.latency_ns) {
            return;
        }
        self.seq += 1;
        // Among equal latencies the earlier one stays: later arrivals rank lower.
        self.heap
            .push(Reverse((m.latency_ns, u64::MAX - self.seq, Entry(m))));
        if self.heap.len() > self.capacity {
            self.heap.pop();
        }
    }

    /// Slowest first (equal latencies: earliest first).
    pub fn sorted(&self) -> Vec<SlowMessage> {
        let mut v: Vec<&(u64, u64, Entry)> = self.heap.iter().map(|Reverse(x)| x).collect();
        v.sort_by_key(|x| Reverse((x.0, x.1)));
        v.into_iter().map(|(_, _, e)| e.0.clone()).collect()
    }
}
