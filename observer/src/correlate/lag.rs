//! Kafka consumer lag from the wire, per group, topic and partition: the newest high watermark
//! any fetch response reported for the partition, minus the offset the group last committed
//! (OffsetCommit requests). No JMX, no admin client: both numbers travel between clients and the
//! broker anyway. Bounded: at most `cap` partitions and `cap` group/partition pairs are kept;
//! the rest are counted as dropped.
use std::collections::HashMap;

use crate::event::{BrokerEvent, EventKind, System};

/// One lag reading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lag {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub high_watermark: i64,
    pub committed: i64,
    /// `high_watermark - committed`, never negative.
    pub lag: i64,
}

#[derive(Debug)]
pub struct LagTracker {
    high_watermarks: HashMap<(String, i32), i64>,
    committed: HashMap<(String, String, i32), i64>,
    cap: usize,
    /// Entries not kept because a table was full.
    pub dropped: u64,
}

impl Default for LagTracker {
    fn default() -> Self {
        Self::new(100_000)
    }
}

impl LagTracker {
    pub fn new(cap: usize) -> Self {
        Self {
            high_watermarks: HashMap::new(),
            committed: HashMap::new(),
            cap,
            dropped: 0,
        }
    }

    /// Feeds one event; only Kafka fetch results and offset commits matter.
    pub fn observe(&mut self, e: &BrokerEvent) {
        if e.system != System::Kafka {
            return;
        }
        // Per-partition high watermarks ride on fetch responses as `hw` = "topic/partition=N"
        // (partitions without records too) and on deliveries as `high_watermark`.
        for (k, v) in &e.attrs {
            if *k == "hw"
                && let Some((tp, n)) = v.rsplit_once('=')
                && let Some((topic, partition)) = tp.rsplit_once('/')
                && let (Ok(partition), Ok(n)) = (partition.parse(), n.parse())
            {
                self.set_high_watermark(topic, partition, n);
            }
        }
        let dest = e.destination.as_ref();
        let topic_partition = dest.and_then(|d| Some((d.topic.as_deref()?, d.partition?)));
        if e.kind == EventKind::Deliver
            && let Some((topic, partition)) = topic_partition
            && let Some(hw) = attr(e, "high_watermark").and_then(|v| v.parse().ok())
        {
            self.set_high_watermark(topic, partition, hw);
        }
        if e.kind == EventKind::Ack
            && let (Some((topic, partition)), Some(group), Some(offset)) = (
                topic_partition,
                dest.and_then(|d| d.group.as_deref()),
                e.offset,
            )
        {
            let key = (group.to_owned(), topic.to_owned(), partition);
            if self.committed.len() < self.cap || self.committed.contains_key(&key) {
                self.committed.insert(key, offset);
            } else {
                self.dropped += 1;
            }
        }
    }

    fn set_high_watermark(&mut self, topic: &str, partition: i32, hw: i64) {
        let key = (topic.to_owned(), partition);
        if self.high_watermarks.len() < self.cap || self.high_watermarks.contains_key(&key) {
            // Responses can arrive out of order across connections: keep the newest (largest).
            let slot = self.high_watermarks.entry(key).or_insert(hw);
            *slot = (*slot).max(hw);
        } else {
            self.dropped += 1;
        }
    }

    /// Lag of every group/partition with both a commit and a high watermark, sorted.
    pub fn lag(&self) -> Vec<Lag> {
        let mut keys: Vec<&(String, String, i32)> = self.committed.keys().collect();
        keys.sort();
        keys.into_iter()
            .filter_map(|(g, t, p)| self.lag_of(g, t, *p))
            .collect()
    }

    /// Lag of one group on one partition, once both numbers have been seen.
    pub fn lag_of(&self, group: &str, topic: &str, partition: i32) -> Option<Lag> {
        let committed = *self
            .committed
            .get(&(group.to_owned(), topic.to_owned(), partition))?;
        let high_watermark = *self.high_watermarks.get(&(topic.to_owned(), partition))?;
        Some(Lag {
            group: group.to_owned(),
            topic: topic.to_owned(),
            partition,
            high_watermark,
            committed,
            lag: (high_watermark - committed).max(0),
        })
    }
}

fn attr<'a>(e: &'a BrokerEvent, name: &str) -> Option<&'a str> {
    e.attrs
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        capture::{ConnId, Direction},
        event::{ConnRef, Destination},
    };

    fn event(kind: EventKind) -> BrokerEvent {
        let conn = ConnRef {
            id: ConnId(1),
            pid: None,
            local: "127.0.0.1:9092".parse().unwrap(),
            peer: "127.0.0.1:40000".parse().unwrap(),
        };
        BrokerEvent::new(0, System::Kafka, kind, conn, Direction::Ingress)
    }

    fn commit(group: &str, topic: &str, partition: i32, offset: i64) -> BrokerEvent {
        let mut e = event(EventKind::Ack);
        e.destination = Some(Destination {
            group: Some(group.into()),
            topic: Some(topic.into()),
            partition: Some(partition),
            ..Default::default()
        });
        e.offset = Some(offset);
        e
    }

    #[test]
    fn lag_is_high_watermark_minus_commit() {
        let mut t = LagTracker::default();
        let mut fetch = event(EventKind::Response);
        fetch.attrs = vec![("hw", "orders/0=20".into()), ("hw", "orders/1=7".into())];
        t.observe(&fetch);
        t.observe(&commit("g", "orders", 0, 10));
        t.observe(&commit("g", "orders", 1, 7));
        t.observe(&commit("other", "payments", 0, 3)); // no high watermark seen: no reading
        let lag = t.lag();
        assert_eq!(lag.len(), 2);
        assert_eq!((lag[0].partition, lag[0].lag), (0, 10));
        assert_eq!((lag[1].partition, lag[1].lag), (1, 0));
        // A newer high watermark from a delivery; an older one is ignored.
        let mut d = event(EventKind::Deliver);
        d.destination = Some(Destination {
            topic: Some("orders".into()),
            partition: Some(0),
            ..Default::default()
        });
        d.attrs = vec![("high_watermark", "25".into())];
        t.observe(&d);
        fetch.attrs = vec![("hw", "orders/0=22".into())];
        t.observe(&fetch);
        assert_eq!(t.lag()[0].lag, 15);
    }

    #[test]
    fn tables_are_bounded() {
        let mut t = LagTracker::new(2);
        for p in 0..5 {
            t.observe(&commit("g", "t", p, 1));
        }
        assert_eq!(t.committed.len(), 2);
        assert_eq!(t.dropped, 3);
    }
}
