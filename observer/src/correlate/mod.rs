//! Correlation: state that spans events (and connections), turned into latency observations.
//!
//! - this file: [`Correlator`] — publish → confirm, publish → deliver (time in the broker) and
//!   deliver → ack/nack/reject (consumer processing time), per protocol;
//! - `pending`: the bounded, TTL'd tables the correlator waits in;
//! - `message`: [`MessageInfo`], the start event of an observation, kept on request
//!   ([`Correlator::keeping_message_info`]) for sinks that describe single messages (spans);
//! - `lag`: Kafka consumer lag from the wire.
//!
//! How each relation is matched:
//!
//! | relation | AMQP | MQTT | NATS | Kafka |
//! | --- | --- | --- | --- | --- |
//! | publish → confirm | channel + publish sequence (confirm mode) | packet id (PUBACK for QoS 1, PUBCOMP for QoS 2) | subject + body fingerprint of a publish with a reply inbox (JetStream PubAck) | topic/partition, in order per connection (acks ≠ 0) |
//! | publish → deliver | vhost + exchange + routing key + fingerprint | topic + fingerprint | subject + fingerprint | exactly: topic/partition/offset (offsets known from the produce response) |
//! | deliver → settle | channel + delivery tag (`multiple` honoured); no-ack consumers excluded | packet id (QoS ≥ 1) | the `$JS.ACK` reply subject's stream/consumer/sequences | committed offset of topic/partition |
//!
//! Fan-out: a publish stays matchable until its TTL; each delivery to a different connection
//! gives one observation (a second delivery of the same body to the same connection matches
//! the next identical publish, so repeated bodies do not stretch latencies). Redeliveries are
//! not publish → deliver observations. Kafka observations count records (`count`).
//!
//! Bounded: every table has a cap and a TTL; evicted entries that never matched, and
//! settlements or confirms that found nothing to match, are counted in [`CorrelatorStats`].
//! Entries of a connection leave when it closes (its unconfirmed publishes and unacked
//! deliveries can no longer be settled on it).
pub mod lag;
pub mod message;
pub mod pending;

use std::{
    collections::{HashMap, HashSet},
    hash::BuildHasher,
    sync::Arc,
};

pub use message::MessageInfo;
use pending::{GLOBAL, Pending, Slot};

use crate::{
    FastMap, FastState,
    capture::ConnId,
    event::{BrokerEvent, EventKind, System},
};

/// Which latency an [`Observation`] measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Relation {
    PublishConfirm,
    PublishDeliver,
    DeliverSettle,
}

impl Relation {
    pub const ALL: [Relation; 3] = [
        Relation::PublishConfirm,
        Relation::PublishDeliver,
        Relation::DeliverSettle,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Relation::PublishConfirm => "publish_confirm",
            Relation::PublishDeliver => "publish_deliver",
            Relation::DeliverSettle => "deliver_settle",
        }
    }
}

/// How a publish or a delivery was settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Settlement {
    /// Confirmed by the broker / acked by the consumer.
    Ack,
    Nack,
    Reject,
}

impl Settlement {
    pub fn as_str(self) -> &'static str {
        match self {
            Settlement::Ack => "ack",
            Settlement::Nack => "nack",
            Settlement::Reject => "reject",
        }
    }
}

/// The labels a latency is reported under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Labels {
    pub system: System,
    /// Display name of the destination (see [`crate::metrics::destination_name`]); shared,
    /// since every waiting entry and observation carries it.
    pub destination: Option<Arc<str>>,
    pub vhost: Option<Arc<str>>,
    /// The broker process (`event.conn.pid`), for per-broker (pod) labels.
    pub pid: Option<u32>,
}

/// One measured latency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    pub relation: Relation,
    pub labels: Labels,
    pub latency_ns: u64,
    /// Messages this observation stands for (Kafka record ranges; 1 elsewhere).
    pub count: u64,
    /// For confirms and settlements.
    pub settlement: Option<Settlement>,
    /// The event the observation started at (the publish; the delivery for settlements), when
    /// the correlator keeps it ([`Correlator::keeping_message_info`]). The end is the event
    /// being observed.
    pub start: Option<Arc<MessageInfo>>,
}

/// What the event just observed now waits for (see [`Correlator::observe`]): a publish that
/// expects no confirm, or a delivery that needs no settlement, completes nothing later.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Awaits {
    /// A publish now waits for its confirm.
    pub confirm: bool,
    /// A delivery now waits for the consumer's ack/nack/reject.
    pub settle: bool,
}

/// Table sizes and time to live.
#[derive(Clone, Debug)]
pub struct CorrelatorConfig {
    pub max_pending: usize,
    pub ttl_ns: u64,
}

impl Default for CorrelatorConfig {
    fn default() -> Self {
        Self {
            max_pending: 100_000,
            ttl_ns: 60_000_000_000,
        }
    }
}

/// What did not match, per relation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CorrelatorStats {
    /// Waiting entries dropped (cap or TTL) before anything matched them.
    pub evicted: [u64; 3],
    /// Confirms / deliveries / settlements with nothing to match.
    pub unmatched: [u64; 3],
}

impl CorrelatorStats {
    pub fn evicted(&self, r: Relation) -> u64 {
        self.evicted[r as usize]
    }

    pub fn unmatched(&self, r: Relation) -> u64 {
        self.unmatched[r as usize]
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    /// AMQP channel (+ publish sequence for confirms).
    Channel(u32),
    ChannelSeq(u32, u64),
    /// MQTT packet id.
    PacketId(u32),
    /// Destination identity (hashed) + body fingerprint.
    Body(u64, u64),
    /// Kafka topic/partition.
    TopicPartition(String, i32),
    /// JetStream delivery: stream, consumer, stream sequence, consumer sequence.
    JsDelivery(String, String, i64, u64),
    /// NATS reply inbox.
    Inbox(String),
}

#[derive(Debug)]
struct Waiting {
    labels: Labels,
    /// Kafka offsets [first, first + count); `count` 1 elsewhere.
    first: i64,
    count: u64,
    /// AMQP delivery tag.
    tag: u64,
    /// Publish → deliver: connections it was delivered to (bounded).
    delivered_to: DeliveredTo,
    matched: bool,
    /// The start event, when kept.
    start: Option<Arc<MessageInfo>>,
}

impl Waiting {
    fn one(labels: Labels, start: Option<Arc<MessageInfo>>) -> Self {
        Self {
            labels,
            first: 0,
            count: 1,
            tag: 0,
            delivered_to: DeliveredTo::default(),
            matched: false,
            start,
        }
    }
}

const MAX_FANOUT_TRACKED: usize = 64;

/// The connections a publish was delivered to (bounded by [`MAX_FANOUT_TRACKED`]). Most
/// publishes reach one consumer: that one is stored inline, so matching allocates nothing.
#[derive(Debug, Default)]
struct DeliveredTo {
    first: Option<ConnId>,
    more: Vec<ConnId>,
}

impl DeliveredTo {
    fn contains(&self, conn: &ConnId) -> bool {
        self.first.as_ref() == Some(conn) || self.more.contains(conn)
    }

    fn push(&mut self, conn: ConnId) {
        if self.first.is_none() {
            self.first = Some(conn);
        } else if self.more.len() + 1 < MAX_FANOUT_TRACKED {
            self.more.push(conn);
        }
    }
}

/// Turns events into [`Observation`]s. Feed every event in capture order.
pub struct Correlator {
    confirms: Pending<Key, Waiting>,
    published: Pending<Key, Waiting>,
    deliveries: Pending<Key, Waiting>,
    /// NATS inbox → the publish waiting on it (a core reply there is not a confirm).
    inboxes: Pending<Key, Key>,
    /// AMQP consumers that need no acks: consumer tags per connection (looked up by `&str`,
    /// no allocation per delivery); `no_ack_len` counts the tags for the cap.
    no_ack: FastMap<ConnId, HashSet<String, FastState>>,
    no_ack_len: usize,
    /// Publish → deliver: per (publish key hash, receiving connection), the id after the last
    /// publish matched there. Deliveries to one connection come in publish order, so matching
    /// resumes there instead of rescanning every identical earlier publish.
    cursors: FastMap<(u64, ConnId), u64>,
    max_no_ack: usize,
    /// Labels by destination, shared by every entry and observation (no allocation per event).
    labels: LabelCache,
    /// Hashes destination identities ([`Correlator::dest_key`]); seeded per process.
    hasher: FastState,
    /// Keep each start event's [`MessageInfo`] for [`Observation::start`].
    keep_info: bool,
    stats: CorrelatorStats,
}

impl Correlator {
    pub fn new(config: CorrelatorConfig) -> Self {
        let table = || Pending::new(config.max_pending, config.ttl_ns);
        Self {
            confirms: table(),
            published: table(),
            deliveries: table(),
            inboxes: Pending::new(config.max_pending, config.ttl_ns),
            no_ack: FastMap::default(),
            no_ack_len: 0,
            cursors: FastMap::default(),
            max_no_ack: config.max_pending,
            labels: LabelCache::default(),
            hasher: FastState::default(),
            keep_info: false,
            stats: CorrelatorStats::default(),
        }
    }

    /// Opt-in: keep a [`MessageInfo`] of every waiting publish and delivery and hand it out as
    /// [`Observation::start`] (spans need it). Off by default: it costs an allocation per
    /// message that the metrics-only path does not pay. (A builder method rather than a
    /// [`CorrelatorConfig`] field, so existing struct literals of the config stay valid.)
    pub fn keeping_message_info(mut self, keep: bool) -> Self {
        self.keep_info = keep;
        self
    }

    fn info(&self, e: &BrokerEvent) -> Option<Arc<MessageInfo>> {
        self.keep_info.then(|| Arc::new(MessageInfo::of(e)))
    }

    pub fn stats(&self) -> &CorrelatorStats {
        &self.stats
    }

    /// Entries waiting, per relation.
    pub fn pending(&self, r: Relation) -> usize {
        match r {
            Relation::PublishConfirm => self.confirms.len(),
            Relation::PublishDeliver => self.published.len(),
            Relation::DeliverSettle => self.deliveries.len(),
        }
    }

    /// Messages delivered and not yet settled, per system.
    pub fn in_flight(&self) -> HashMap<System, u64> {
        let mut out = HashMap::new();
        for w in self.deliveries.values() {
            *out.entry(w.labels.system).or_default() += w.count;
        }
        out
    }

    /// Messages delivered and not yet settled, per system and broker pid.
    pub fn in_flight_by_broker(&self) -> HashMap<(System, Option<u32>), u64> {
        let mut out = HashMap::new();
        for w in self.deliveries.values() {
            *out.entry((w.labels.system, w.labels.pid)).or_default() += w.count;
        }
        out
    }

    /// Drops entries older than the TTL (call periodically with the wall clock).
    pub fn expire(&mut self, now_ns: u64) {
        let stats = &mut self.stats;
        self.confirms.expire(now_ns, |_| {
            stats.evicted[Relation::PublishConfirm as usize] += 1
        });
        self.published.expire(now_ns, |w| {
            if !w.matched {
                stats.evicted[Relation::PublishDeliver as usize] += 1
            }
        });
        self.deliveries.expire(now_ns, |_| {
            stats.evicted[Relation::DeliverSettle as usize] += 1
        });
        self.inboxes.expire(now_ns, |_| {});
    }

    /// Feeds one event; `out` receives the observations it completes. Returns what the event
    /// now waits for (a publish for its confirm, a delivery for its settlement).
    pub fn observe(&mut self, e: &BrokerEvent, out: &mut impl FnMut(Observation)) -> Awaits {
        let conn = e.conn.id;
        let mut awaits = Awaits::default();
        match e.kind {
            EventKind::Publish => awaits.confirm = self.on_publish(e),
            EventKind::Confirm | EventKind::Nack if self.is_confirm(e) => {
                let settlement = if e.kind == EventKind::Confirm {
                    Settlement::Ack
                } else {
                    Settlement::Nack
                };
                self.on_confirm(e, settlement, out);
            }
            EventKind::Deliver => awaits.settle = self.on_deliver(e, out),
            EventKind::Ack => self.on_settle(e, Settlement::Ack, out),
            EventKind::Nack => self.on_settle(e, Settlement::Nack, out),
            EventKind::Reject => self.on_settle(e, Settlement::Reject, out),
            EventKind::Subscribe if e.system == System::Amqp => {
                if let Some(tag) = &e.consumer_tag
                    && e.attrs.iter().any(|(k, v)| *k == "no_ack" && v == "true")
                    && self.no_ack_len < self.max_no_ack
                    && self.no_ack.entry(conn).or_default().insert(tag.clone())
                {
                    self.no_ack_len += 1;
                }
            }
            EventKind::Unsubscribe if e.system == System::Amqp => {
                if let Some(tag) = &e.consumer_tag
                    && let Some(tags) = self.no_ack.get_mut(&conn)
                    && tags.remove(tag.as_str())
                {
                    self.no_ack_len -= 1;
                    if tags.is_empty() {
                        self.no_ack.remove(&conn);
                    }
                }
            }
            EventKind::ChannelClosed => {
                if let Some(ch) = e.channel {
                    // Unacked deliveries go back to the queue; unconfirmed publishes are lost.
                    self.deliveries
                        .remove_key(conn.0, &Key::Channel(ch), |_| {});
                }
            }
            EventKind::ConnectionClosed => {
                self.confirms.remove_scope(conn.0, |_| {});
                self.deliveries.remove_scope(conn.0, |_| {});
                self.inboxes.remove_scope(conn.0, |_| {});
                if let Some(tags) = self.no_ack.remove(&conn) {
                    self.no_ack_len -= tags.len();
                }
                self.cursors.retain(|(_, c), _| *c != conn);
            }
            _ => {}
        }
        awaits
    }

    /// Broker → publisher settlements (a consumer's nack is not one).
    fn is_confirm(&self, e: &BrokerEvent) -> bool {
        e.kind == EventKind::Confirm || e.direction == crate::capture::Direction::Egress
    }

    /// Returns whether the publish waits for a confirm.
    fn on_publish(&mut self, e: &BrokerEvent) -> bool {
        let conn = e.conn.id.0;
        let labels = self.labels.of(e);
        let info = self.info(e);
        let dest = self.dest_key(e);
        let stats = &mut self.stats;
        // Publish → confirm: only publishes the broker will confirm.
        let confirm_key = match e.system {
            System::Amqp => e
                .publish_seq
                .map(|s| Key::ChannelSeq(e.channel.unwrap_or(0), s)),
            System::Mqtt => e
                .packet_id
                .filter(|_| e.qos.unwrap_or(0) > 0)
                .map(Key::PacketId),
            System::Nats => e
                .reply_to
                .as_ref()
                .and_then(|_| Some(Key::Body(dest?, e.fingerprint?))),
            System::Kafka => {
                let acks0 = e.attrs.iter().any(|(k, v)| *k == "acks" && v == "0");
                (!acks0)
                    .then(|| topic_partition(e))
                    .flatten()
                    .map(|(t, p)| Key::TopicPartition(t, p))
            }
        };
        let awaits = confirm_key.is_some();
        if let Some(key) = confirm_key {
            if let (System::Nats, Some(inbox)) = (e.system, &e.reply_to) {
                self.inboxes.insert(
                    conn,
                    Key::Inbox(inbox.clone()),
                    e.ts_ns,
                    key.clone(),
                    |_| {},
                );
            }
            let mut w = Waiting::one(labels.clone(), info.clone());
            w.count = u64::from(e.record_count.unwrap_or(1));
            self.confirms.insert(conn, key, e.ts_ns, w, |_| {
                stats.evicted[Relation::PublishConfirm as usize] += 1
            });
        }
        // Publish → deliver (Kafka: once the confirm tells the offsets).
        if e.system != System::Kafka
            && let (Some(dest), Some(fp)) = (dest, e.fingerprint)
        {
            self.published.insert(
                GLOBAL,
                Key::Body(dest, fp),
                e.ts_ns,
                Waiting::one(labels, info),
                |w| {
                    if !w.matched {
                        stats.evicted[Relation::PublishDeliver as usize] += 1
                    }
                },
            );
        }
        awaits
    }

    fn on_confirm(
        &mut self,
        e: &BrokerEvent,
        settlement: Settlement,
        out: &mut impl FnMut(Observation),
    ) {
        let conn = e.conn.id.0;
        let key = match e.system {
            System::Amqp => e
                .publish_seq
                .or(e.delivery_tag)
                .map(|s| Key::ChannelSeq(e.channel.unwrap_or(0), s)),
            System::Mqtt => e.packet_id.map(Key::PacketId),
            System::Nats => self
                .dest_key(e)
                .zip(e.fingerprint)
                .map(|(d, f)| Key::Body(d, f)),
            System::Kafka => topic_partition(e).map(|(t, p)| Key::TopicPartition(t, p)),
        };
        let Some(slot) = key.and_then(|k| self.confirms.take_front(conn, &k)) else {
            self.stats.unmatched[Relation::PublishConfirm as usize] += 1;
            return;
        };
        out(Observation {
            relation: Relation::PublishConfirm,
            labels: slot.value.labels.clone(),
            latency_ns: e.ts_ns.saturating_sub(slot.ts_ns),
            count: slot.value.count,
            settlement: Some(settlement),
            start: slot.value.start.clone(),
        });
        // Kafka: the confirm names the offsets the records got.
        if e.system == System::Kafka
            && settlement == Settlement::Ack
            && let (Some(base), Some((t, p))) = (e.offset, topic_partition(e))
        {
            // The deliveries' start: the publish, now with the offsets it got.
            let start = slot.value.start.map(|i| {
                Arc::new(MessageInfo {
                    offset: Some(base),
                    ..(*i).clone()
                })
            });
            let mut w = Waiting::one(slot.value.labels, start);
            w.first = base;
            w.count = slot.value.count;
            let stats = &mut self.stats;
            self.published
                .insert(GLOBAL, Key::TopicPartition(t, p), slot.ts_ns, w, |w| {
                    if !w.matched {
                        stats.evicted[Relation::PublishDeliver as usize] += 1
                    }
                });
        }
    }

    /// Returns whether the delivery waits for a settlement.
    fn on_deliver(&mut self, e: &BrokerEvent, out: &mut impl FnMut(Observation)) -> bool {
        let conn = e.conn.id;
        let labels = self.labels.of(e);
        // A NATS core reply on an inbox: the request it answers needs no confirm.
        if e.system == System::Nats
            && let Some(subject) = e.destination.as_ref().and_then(|d| d.subject.clone())
            && let Some(slot) = self.inboxes.take_front(conn.0, &Key::Inbox(subject))
        {
            self.confirms.take_front(conn.0, &slot.value);
            return false;
        }
        let count = u64::from(e.record_count.unwrap_or(1));
        // Publish → deliver.
        if e.redelivered != Some(true) {
            let matched = match e.system {
                System::Kafka => self.kafka_published(e, count, out),
                _ => self.body_published(e, out),
            };
            if !matched {
                self.stats.unmatched[Relation::PublishDeliver as usize] += 1;
            }
        }
        // Deliver → settle: only deliveries the consumer must settle.
        let settle_key = match e.system {
            System::Amqp => {
                let auto = e.consumer_tag.as_ref().is_some_and(|t| {
                    self.no_ack
                        .get(&conn)
                        .is_some_and(|tags| tags.contains(t.as_str()))
                });
                (!auto && e.delivery_tag.is_some())
                    .then(|| (conn.0, Key::Channel(e.channel.unwrap_or(0))))
            }
            System::Mqtt => e
                .packet_id
                .filter(|_| e.qos.unwrap_or(0) > 0)
                .map(|id| (conn.0, Key::PacketId(id))),
            System::Nats => js_delivery(e).map(|k| (GLOBAL, k)),
            System::Kafka => topic_partition(e).map(|(t, p)| (GLOBAL, Key::TopicPartition(t, p))),
        };
        let awaits = settle_key.is_some();
        if let Some((scope, key)) = settle_key {
            let mut w = Waiting::one(labels, self.info(e));
            w.tag = e.delivery_tag.unwrap_or(0);
            w.first = e.offset.unwrap_or(0);
            w.count = count;
            let stats = &mut self.stats;
            self.deliveries.insert(scope, key, e.ts_ns, w, |_| {
                stats.evicted[Relation::DeliverSettle as usize] += 1
            });
        }
        awaits
    }

    fn body_published(&mut self, e: &BrokerEvent, out: &mut impl FnMut(Observation)) -> bool {
        let (Some(dest), Some(fp)) = (self.dest_key(e), e.fingerprint) else {
            return false;
        };
        let conn = e.conn.id;
        let key = Key::Body(dest, fp);
        let cursor_key = (dest ^ fp.rotate_left(17), conn);
        let from = self.cursors.get(&cursor_key).copied().unwrap_or(0);
        let Some(slot) = self
            .published
            .first_from(GLOBAL, &key, from, |w| !w.delivered_to.contains(&conn))
        else {
            return false;
        };
        if self.cursors.len() >= self.max_no_ack {
            // Bounded: losing the cursors only costs a rescan.
            self.cursors.clear();
        }
        self.cursors.insert(cursor_key, slot.id + 1);
        slot.value.matched = true;
        slot.value.delivered_to.push(conn);
        out(Observation {
            relation: Relation::PublishDeliver,
            labels: self.labels.of(e),
            latency_ns: e.ts_ns.saturating_sub(slot.ts_ns),
            count: 1,
            settlement: None,
            start: slot.value.start.clone(),
        });
        true
    }

    /// Kafka: every delivered record whose produce was seen, exactly by offset.
    fn kafka_published(
        &mut self,
        e: &BrokerEvent,
        count: u64,
        out: &mut impl FnMut(Observation),
    ) -> bool {
        let (Some((t, p)), Some(first)) = (topic_partition(e), e.offset) else {
            return false;
        };
        let end = first.saturating_add(count as i64);
        let labels = self.labels.of(e);
        let mut any = false;
        for slot in self.published.iter_mut(GLOBAL, &Key::TopicPartition(t, p)) {
            let w = &mut slot.value;
            let (lo, hi) = (w.first.max(first), (w.first + w.count as i64).min(end));
            if lo < hi {
                w.matched = true;
                any = true;
                out(Observation {
                    relation: Relation::PublishDeliver,
                    labels: labels.clone(),
                    latency_ns: e.ts_ns.saturating_sub(slot.ts_ns),
                    count: (hi - lo) as u64,
                    settlement: None,
                    start: w.start.clone(),
                });
            }
        }
        any
    }

    fn on_settle(&mut self, e: &BrokerEvent, s: Settlement, out: &mut impl FnMut(Observation)) {
        let conn = e.conn.id.0;
        let mut settled: Vec<Slot<Waiting>> = Vec::new();
        match e.system {
            System::Amqp => {
                let key = Key::Channel(e.channel.unwrap_or(0));
                let tag = e.delivery_tag.unwrap_or(0);
                if e.multiple == Some(true) {
                    let upto = if tag == 0 { u64::MAX } else { tag };
                    self.deliveries
                        .take_while(conn, &key, |w| w.tag <= upto, |s| settled.push(s));
                } else {
                    settled.extend(self.deliveries.take_where(conn, &key, |w| w.tag == tag));
                }
            }
            System::Mqtt => {
                if let Some(id) = e.packet_id {
                    settled.extend(self.deliveries.take_front(conn, &Key::PacketId(id)));
                }
            }
            System::Nats => {
                if let Some(k) = js_delivery(e) {
                    settled.extend(self.deliveries.take_front(GLOBAL, &k));
                }
            }
            System::Kafka => {
                // A commit of offset X settles every delivered record before X.
                if let (Some((t, p)), Some(x)) = (topic_partition(e), e.offset) {
                    let key = Key::TopicPartition(t, p);
                    self.deliveries.take_while(
                        GLOBAL,
                        &key,
                        |w| w.first + w.count as i64 <= x,
                        |s| settled.push(s),
                    );
                    // A range the commit cuts: settle its head, keep the rest waiting.
                    if let Some(slot) = self
                        .deliveries
                        .iter_mut(GLOBAL, &key)
                        .next()
                        .filter(|s| s.value.first < x)
                    {
                        let head = (x - slot.value.first) as u64;
                        out(Observation {
                            relation: Relation::DeliverSettle,
                            labels: slot.value.labels.clone(),
                            latency_ns: e.ts_ns.saturating_sub(slot.ts_ns),
                            count: head,
                            settlement: Some(s),
                            start: slot.value.start.clone(),
                        });
                        slot.value.first = x;
                        slot.value.count -= head;
                        return;
                    }
                }
            }
        }
        if settled.is_empty() {
            self.stats.unmatched[Relation::DeliverSettle as usize] += 1;
        }
        for slot in settled {
            out(Observation {
                relation: Relation::DeliverSettle,
                labels: slot.value.labels,
                latency_ns: e.ts_ns.saturating_sub(slot.ts_ns),
                count: slot.value.count,
                settlement: Some(s),
                start: slot.value.start,
            });
        }
    }
}

/// Labels of events, by destination: built once per destination, then shared (two `Arc`
/// clones per event instead of a name copy and two allocations). Keyed by a hash of what the
/// labels are made of and checked on every hit, so a collision costs a rebuild, never wrong
/// labels. Bounded: cleared when full.
#[derive(Default)]
struct LabelCache {
    hasher: FastState,
    map: FastMap<u64, Labels>,
    /// A destination name that is not a field as is (an AMQP exchange and routing key) is
    /// written here for the lookup (no allocation per event).
    name: String,
}

const LABEL_CACHE_MAX: usize = 4096;

impl LabelCache {
    fn of(&mut self, e: &BrokerEvent) -> Labels {
        let d = e.destination.as_ref();
        let name = d.and_then(|d| crate::metrics::destination_display(d, &mut self.name));
        let vhost = d.and_then(|d| d.vhost.as_deref());
        let hash = self.hasher.hash_one((e.system, name, vhost, e.conn.pid));
        if let Some(l) = self.map.get(&hash)
            && l.system == e.system
            && l.pid == e.conn.pid
            && l.destination.as_deref() == name
            && l.vhost.as_deref() == vhost
        {
            return l.clone();
        }
        let labels = Labels {
            system: e.system,
            destination: name.map(Arc::from),
            vhost: vhost.map(Arc::from),
            pid: e.conn.pid,
        };
        if self.map.len() >= LABEL_CACHE_MAX {
            self.map.clear();
        }
        self.map.insert(hash, labels.clone());
        labels
    }
}

impl Correlator {
    /// The destination identity publishes and deliveries share (not the display name: an AMQP
    /// delivery's queue is not in its publish).
    /// Hashed: a 64-bit collision between two destinations with equal fingerprints is
    /// negligible, and hashing avoids an allocation per message.
    fn dest_key(&self, e: &BrokerEvent) -> Option<u64> {
        let d = e.destination.as_ref()?;
        match e.system {
            System::Amqp => {
                let x = d.exchange.as_deref()?;
                let rk = d.routing_key.as_deref().unwrap_or("");
                let vhost = d.vhost.as_deref().unwrap_or("");
                Some(self.hasher.hash_one((vhost, x, rk)))
            }
            System::Mqtt => d.topic.as_deref().map(|t| self.hasher.hash_one(t)),
            System::Nats => d.subject.as_deref().map(|t| self.hasher.hash_one(t)),
            System::Kafka => None,
        }
    }
}

fn topic_partition(e: &BrokerEvent) -> Option<(String, i32)> {
    let d = e.destination.as_ref()?;
    Some((d.topic.clone()?, d.partition?))
}

/// A JetStream delivery or ack: stream, consumer and both sequences.
fn js_delivery(e: &BrokerEvent) -> Option<Key> {
    let attr = |name: &str| {
        e.attrs
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    };
    Some(Key::JsDelivery(
        attr("stream")?,
        attr("consumer")?,
        e.offset?,
        e.delivery_tag?,
    ))
}

#[cfg(test)]
mod tests;
