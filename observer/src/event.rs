//! `BrokerEvent`: one vocabulary for every protocol.
//!
//! Decoders turn frames into these; correlation, metrics, spans, audit and the terminal views
//! only ever see these. Field names are the stable names of `brokerscope trace --json`.
//! Credentials never enter an event: decoders keep the user name and drop secrets.
use std::{fmt, net::SocketAddr};

use crate::capture::{ConnId, Direction};

/// Which protocol family produced the event (`system` in JSON and metric labels).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum System {
    Amqp,
    Mqtt,
    Nats,
    Kafka,
}

impl System {
    pub const ALL: [System; 4] = [System::Amqp, System::Mqtt, System::Nats, System::Kafka];

    /// The system named as in [`System::as_str`] (`amqp`, `mqtt`, `nats`, `kafka`).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            System::Amqp => "amqp",
            System::Mqtt => "mqtt",
            System::Nats => "nats",
            System::Kafka => "kafka",
        }
    }
}

/// What happened (`kind` in JSON).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    ConnectionOpened,
    ConnectionClosed,
    /// Login: `user`, `mechanism`, `outcome`.
    Auth,
    /// Client → broker message.
    Publish,
    /// Broker → publisher acknowledgement of a publish (publisher confirms, PUBACK, PubAck).
    Confirm,
    /// Broker → consumer message.
    Deliver,
    /// Consumer → broker settlement.
    Ack,
    Nack,
    Reject,
    /// A message the broker handed back to its publisher as unroutable (AMQP basic.return).
    Return,
    Subscribe,
    Unsubscribe,
    Declare,
    Delete,
    Bind,
    Unbind,
    Purge,
    /// A channel (AMQP) opened or closed; channels carry the other events.
    ChannelOpened,
    ChannelClosed,
    /// Protocol state that matters for interpretation but is not a message: qos, flow control,
    /// connection blocked/unblocked, confirm.select, tx.*, recover, tune, heartbeat settings.
    Control,
    Request,
    Response,
    /// A protocol-level error reply (e.g. channel.close with a 4xx/5xx code).
    Error,
}

impl EventKind {
    pub const ALL: [EventKind; 23] = [
        EventKind::ConnectionOpened,
        EventKind::ConnectionClosed,
        EventKind::Auth,
        EventKind::Publish,
        EventKind::Confirm,
        EventKind::Deliver,
        EventKind::Ack,
        EventKind::Nack,
        EventKind::Reject,
        EventKind::Return,
        EventKind::Subscribe,
        EventKind::Unsubscribe,
        EventKind::Declare,
        EventKind::Delete,
        EventKind::Bind,
        EventKind::Unbind,
        EventKind::Purge,
        EventKind::ChannelOpened,
        EventKind::ChannelClosed,
        EventKind::Control,
        EventKind::Request,
        EventKind::Response,
        EventKind::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::ConnectionOpened => "connection.opened",
            EventKind::ConnectionClosed => "connection.closed",
            EventKind::Auth => "auth",
            EventKind::Publish => "publish",
            EventKind::Confirm => "confirm",
            EventKind::Deliver => "deliver",
            EventKind::Ack => "ack",
            EventKind::Nack => "nack",
            EventKind::Reject => "reject",
            EventKind::Return => "return",
            EventKind::Subscribe => "subscribe",
            EventKind::Unsubscribe => "unsubscribe",
            EventKind::Declare => "declare",
            EventKind::Delete => "delete",
            EventKind::Bind => "bind",
            EventKind::Unbind => "unbind",
            EventKind::Purge => "purge",
            EventKind::ChannelOpened => "channel.opened",
            EventKind::ChannelClosed => "channel.closed",
            EventKind::Control => "control",
            EventKind::Request => "request",
            EventKind::Response => "response",
            EventKind::Error => "error",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Outcome of an `auth` (and of operations that can be refused).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    Unknown,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Unknown => "unknown",
        }
    }
}

/// The connection an event happened on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnRef {
    pub id: ConnId,
    pub pid: Option<u32>,
    /// Broker side.
    pub local: SocketAddr,
    pub peer: SocketAddr,
}

/// Where a message goes or what an operation acts on. Only the fields the protocol has are set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Destination {
    pub vhost: Option<String>,
    pub exchange: Option<String>,
    pub routing_key: Option<String>,
    pub queue: Option<String>,
    pub topic: Option<String>,
    pub partition: Option<i32>,
    pub subject: Option<String>,
    /// Consumer group (Kafka group id) where the operation belongs to one.
    pub group: Option<String>,
    /// What a declare/delete/bind acts on: "exchange", "queue", "topic", …
    pub resource: Option<&'static str>,
}

impl Destination {
    /// One display name: the queue or topic or subject; for AMQP publishes the exchange and
    /// routing key ("amq.default" for the default exchange).
    pub fn name(&self) -> Option<String> {
        let mut out = String::new();
        self.write_name(&mut out).then_some(out)
    }

    /// Appends [`Destination::name`] to `out` (no allocation once `out` has room, for per-event
    /// lookups); false, with nothing appended, if there is none.
    pub fn write_name(&self, out: &mut String) -> bool {
        if let Some(t) = &self.topic {
            out.push_str(t);
            return true;
        }
        if let Some(s) = &self.subject {
            out.push_str(s);
            return true;
        }
        match (&self.exchange, &self.routing_key, &self.queue) {
            (_, _, Some(q)) if self.exchange.is_none() => out.push_str(q),
            (Some(x), Some(rk), _) => {
                out.push_str(if x.is_empty() { "amq.default" } else { x });
                out.push('/');
                out.push_str(rk);
            }
            (Some(x), None, _) => out.push_str(if x.is_empty() { "amq.default" } else { x }),
            (None, Some(rk), _) => out.push_str(rk),
            (_, _, Some(q)) => out.push_str(q),
            (None, None, None) => return false,
        }
        true
    }
}

/// Message properties kept for correlation and tracing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MessageProps {
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    pub content_type: Option<String>,
    pub delivery_mode: Option<u8>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    /// Other headers, rendered as text (bounded by the decoder).
    pub headers: Vec<(String, String)>,
}

/// One event. Optional fields are set where the protocol gives them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerEvent {
    /// Wall clock, ns since the epoch: the capture time of the packet that completed the frame.
    pub ts_ns: u64,
    pub system: System,
    pub kind: EventKind,
    pub conn: ConnRef,
    /// Which way the frame went.
    pub direction: Direction,
    /// Protocol operation, e.g. "basic.publish".
    pub method: Option<&'static str>,
    /// AMQP channel / HTTP2-like stream id.
    pub channel: Option<u32>,
    pub destination: Option<Destination>,
    pub user: Option<String>,
    pub mechanism: Option<String>,
    pub outcome: Option<Outcome>,
    pub delivery_tag: Option<u64>,
    /// Publisher-confirm sequence number of a publish / confirm.
    pub publish_seq: Option<u64>,
    /// Confirms/acks: covers every tag up to `delivery_tag`.
    pub multiple: Option<bool>,
    pub requeue: Option<bool>,
    pub redelivered: Option<bool>,
    pub consumer_tag: Option<String>,
    pub packet_id: Option<u32>,
    pub offset: Option<i64>,
    pub record_count: Option<u32>,
    pub reply_code: Option<u16>,
    pub reply_text: Option<String>,
    /// Message body size in bytes (from the content header / length field).
    pub body_size: Option<u64>,
    /// Fast hash of the body bytes seen plus their length: recognises the same message later.
    pub fingerprint: Option<u64>,
    pub props: Option<MessageProps>,
    /// Queue depth and consumers where the wire reveals them (declare-ok, get-ok).
    pub message_count: Option<u32>,
    pub consumer_count: Option<u32>,
    /// MQTT quality of service, retain and duplicate flags.
    pub qos: Option<u8>,
    pub retain: Option<bool>,
    pub dup: Option<bool>,
    /// The client's own name for itself (MQTT client id, NATS `name`).
    pub client_id: Option<String>,
    /// Where replies go (NATS reply subject, AMQP reply-to).
    pub reply_to: Option<String>,
    /// Request → response time, on `response` events (Kafka fetch: without the long-poll wait).
    pub latency_ns: Option<u64>,
    /// Protocol-specific extras (e.g. MQTT keepalive, NATS lang/version), rendered by name.
    pub attrs: Vec<(&'static str, String)>,
}

impl BrokerEvent {
    pub fn new(
        ts_ns: u64,
        system: System,
        kind: EventKind,
        conn: ConnRef,
        direction: Direction,
    ) -> Self {
        Self {
            ts_ns,
            system,
            kind,
            conn,
            direction,
            method: None,
            channel: None,
            destination: None,
            user: None,
            mechanism: None,
            outcome: None,
            delivery_tag: None,
            publish_seq: None,
            multiple: None,
            requeue: None,
            redelivered: None,
            consumer_tag: None,
            packet_id: None,
            offset: None,
            record_count: None,
            reply_code: None,
            reply_text: None,
            body_size: None,
            fingerprint: None,
            props: None,
            message_count: None,
            consumer_count: None,
            qos: None,
            retain: None,
            dup: None,
            client_id: None,
            reply_to: None,
            latency_ns: None,
            attrs: Vec::new(),
        }
    }
}

/// Message fingerprint: a 64-bit hash of the body bytes, mixed with the length. Eight bytes at
/// a time with a folded 64×64→128-bit multiply (a byte-at-a-time hash capped the decoders at
/// well under 1 GB/s on bodies), split-invariant (bytes arriving in any pieces give the same
/// value: up to 7 bytes wait in `tail`), no allocation, and stable across processes (two
/// observers agree).
#[derive(Clone, Copy, Debug)]
pub struct Fingerprint {
    hash: u64,
    len: u64,
    /// Bytes not yet hashed (fewer than 8), little-endian in the low `tail_len` bytes.
    tail: u64,
    tail_len: u8,
}

const FP_SEED: u64 = 0xcbf2_9ce4_8422_2325;
const FP_MUL: u64 = 0x9E37_79B9_7F4A_7C15;

impl Default for Fingerprint {
    fn default() -> Self {
        Self {
            hash: FP_SEED,
            len: 0,
            tail: 0,
            tail_len: 0,
        }
    }
}

#[inline(always)]
fn fold_mix(h: u64, word: u64) -> u64 {
    let m = u128::from(h ^ word) * u128::from(FP_MUL);
    (m as u64) ^ ((m >> 64) as u64)
}

impl Fingerprint {
    pub fn update(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len() as u64;
        // Complete a pending word first.
        while self.tail_len > 0 && !bytes.is_empty() {
            self.tail |= u64::from(bytes[0]) << (8 * u32::from(self.tail_len));
            self.tail_len += 1;
            bytes = &bytes[1..];
            if self.tail_len == 8 {
                self.hash = fold_mix(self.hash, self.tail);
                self.tail = 0;
                self.tail_len = 0;
            }
        }
        let mut words = bytes.chunks_exact(8);
        let mut h = self.hash;
        for w in &mut words {
            h = fold_mix(h, u64::from_le_bytes(w.try_into().expect("8 bytes")));
        }
        self.hash = h;
        for &b in words.remainder() {
            self.tail |= u64::from(b) << (8 * u32::from(self.tail_len));
            self.tail_len += 1;
        }
    }

    pub fn finish(&self) -> u64 {
        // The tail and the length go in last, so equal prefixes of different lengths differ.
        let mut x = fold_mix(self.hash, self.tail ^ u64::from(self.tail_len) << 56);
        x ^= self.len.wrapping_mul(FP_MUL);
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^ (x >> 33)
    }

    pub fn of(bytes: &[u8]) -> u64 {
        let mut f = Self::default();
        f.update(bytes);
        f.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_split_invariant_and_length_aware() {
        let body = b"hello brokerscope";
        let whole = Fingerprint::of(body);
        for split in 0..=body.len() {
            let mut f = Fingerprint::default();
            f.update(&body[..split]);
            f.update(&body[split..]);
            assert_eq!(f.finish(), whole);
        }
        assert_ne!(Fingerprint::of(b""), Fingerprint::of(b"\0"));
        assert_ne!(Fingerprint::of(b"a"), Fingerprint::of(b"b"));
    }

    #[test]
    fn fingerprint_any_pieces_and_no_collisions_among_near_bodies() {
        // Bodies of every length 0..64 cut into three pieces at every pair of points.
        let body: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
        for len in 0..body.len() {
            let b = &body[..len];
            let whole = Fingerprint::of(b);
            for i in 0..=len {
                for j in i..=len {
                    let mut f = Fingerprint::default();
                    f.update(&b[..i]);
                    f.update(&b[i..j]);
                    f.update(&b[j..]);
                    assert_eq!(f.finish(), whole, "len {len} cut at {i},{j}");
                }
            }
        }
        // Near-identical bodies (a counter, zero padding, one flipped bit) all differ.
        let mut seen = std::collections::HashSet::new();
        for n in 0u32..50_000 {
            assert!(
                seen.insert(Fingerprint::of(&n.to_le_bytes())),
                "counter {n}"
            );
        }
        for pad in (0..24).filter(|&p| p != 4) {
            // (4 zero bytes is counter 0)
            assert!(
                seen.insert(Fingerprint::of(&vec![0u8; pad])),
                "{pad} zero bytes"
            );
        }
        for bit in 0..(64 * 8) {
            let mut b = body.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(seen.insert(Fingerprint::of(&b)), "bit {bit} flipped");
        }
    }

    #[test]
    fn kinds_round_trip_by_name() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
    }

    #[test]
    fn destination_names() {
        let d = Destination {
            exchange: Some(String::new()),
            routing_key: Some("orders".into()),
            ..Default::default()
        };
        assert_eq!(d.name().as_deref(), Some("amq.default/orders"));
        let d = Destination {
            queue: Some("q1".into()),
            ..Default::default()
        };
        assert_eq!(d.name().as_deref(), Some("q1"));
    }
}
