//! Span synthesis: decoded events and correlator observations in, [`Span`]s out.
//!
//! | span | kind | from | to | made when |
//! | --- | --- | --- | --- | --- |
//! | `send {destination}` | PRODUCER | the publish | the broker's confirm (PUBACK, PubAck, produce response) | the publish → confirm observation; at the publish itself (zero duration) when no confirm is expected: MQTT QoS 0, AMQP outside confirm mode, NATS without reply inbox, Kafka acks=0 |
//! | `deliver {destination}` | INTERNAL | the publish | the delivery to a consumer | the publish → deliver observation (one per consumer connection): the time the message spent in the broker |
//! | `process {destination}` | CONSUMER | the delivery | the consumer's ack / nack / reject (Kafka: the offset commit) | the deliver → settle observation; at the delivery itself (zero duration) when it needs no settlement (no-ack consumers, MQTT QoS 0, NATS core) |
//!
//! Broker-side time is its own `deliver` span rather than an event on the `process` span: the
//! observer that sees the delivery may not have seen the publish (another node of a cluster),
//! so `process` must not depend on it; and a span shows the time in the broker on the timeline
//! next to the consumer's processing. `deliver` and `process` are both children of `send`
//! (see [`super::ids`] for how every observer computes the same `send` span id).
//!
//! Attributes follow the OpenTelemetry messaging semantic conventions; see [`Synthesizer`].
//! Sampling ([`Sampling`]) is decided here, before a span is built.
use std::{collections::HashMap, sync::Arc, time::Duration};

use opentelemetry::{
    KeyValue, Value,
    trace::{SpanId, SpanKind, TraceId},
};

use super::ids::{Identity, TraceParent, addr_hash, ratio_sampled};
use crate::{
    capture::ConnId,
    correlate::{Awaits, MessageInfo, Observation, Relation, Settlement},
    event::{BrokerEvent, ConnRef, EventKind, System},
};

/// One synthesized span (times: ns since the epoch).
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent_span_id: Option<SpanId>,
    /// The parent was made elsewhere: by the producer's instrumentation (traceparent) or, for
    /// `process`, by whichever observer saw the publish.
    pub parent_is_remote: bool,
    /// W3C `tracestate` the message carried along with its traceparent.
    pub trace_state: Option<String>,
    pub name: String,
    pub kind: SpanKind,
    pub start_ns: u64,
    pub end_ns: u64,
    pub attributes: Vec<KeyValue>,
    /// `error.type` when the operation failed: the span's status is then Error.
    pub error: Option<String>,
}

impl Span {
    pub fn attr(&self, key: &str) -> Option<&Value> {
        self.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| &kv.value)
    }

    pub fn duration_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }
}

/// Which spans are kept.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampling {
    /// Fraction of traces kept, decided from the trace id (every observer decides the same).
    /// A message's own `traceparent` decides instead, by its sampled flag.
    pub ratio: f64,
    /// Always keep spans longer than this.
    pub keep_slower_than: Option<Duration>,
    /// Always keep failed operations (nack, reject, error replies).
    pub keep_errors: bool,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            ratio: 1.0,
            keep_slower_than: None,
            keep_errors: true,
        }
    }
}

/// What synthesis did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SynthStats {
    /// Spans made (and handed on).
    pub spans: u64,
    /// Spans not made: the sampler said no.
    pub sampled_out: u64,
    /// Observations without a start event: the correlator was not built with
    /// `keeping_message_info(true)`.
    pub no_start: u64,
}

/// Client ids remembered per connection (bounded).
const MAX_CLIENT_IDS: usize = 100_000;

/// Turns events and observations into spans. Feed it every event (after the correlator saw it,
/// with what [`crate::correlate::Correlator::observe`] returned) and every observation with
/// the event that completed it.
///
/// Attributes (where the wire gives them): `messaging.system` (`rabbitmq`, `kafka`, `mqtt`,
/// `nats`), `messaging.operation.type` (`send`, `receive` for `deliver`, `process`),
/// `messaging.operation.name` (the protocol method: `basic.publish`, `PUBLISH`, `PUB`,
/// `Produce`, …), `messaging.destination.name` (RabbitMQ: the exchange, empty for the default
/// one; else topic or subject), `messaging.destination.subscription.name` (the AMQP queue a
/// delivery came from), `messaging.rabbitmq.destination.routing_key`,
/// `messaging.rabbitmq.message.delivery_tag`, `messaging.destination.partition.id`,
/// `messaging.kafka.offset`, `messaging.consumer.group.name`, `messaging.message.id`,
/// `messaging.message.conversation_id`, `messaging.message.body.size`,
/// `messaging.batch.message_count` (Kafka), `messaging.client.id`, `server.address` /
/// `server.port` (the broker's side of the connection), `network.peer.address` /
/// `network.peer.port` (the client's), `process.pid` (the broker), `error.type`.
pub struct Synthesizer {
    sampling: Sampling,
    client_ids: HashMap<ConnId, Arc<str>>,
    stats: SynthStats,
}

/// The trace a message belongs to.
struct Ctx {
    identity: Identity,
    trace_id: TraceId,
    /// The producer's span, from the message's traceparent.
    remote_parent: Option<SpanId>,
    flag_sampled: Option<bool>,
    trace_state: Option<String>,
}

impl Ctx {
    fn of(m: &MessageInfo, offset: Option<i64>) -> Self {
        let identity = Identity::of(m, offset).unwrap_or_else(|| Identity::local(m));
        let tp = m.traceparent.as_deref().and_then(TraceParent::parse);
        Self {
            identity,
            trace_id: tp.map_or_else(|| identity.trace_id(), |t| t.trace_id),
            remote_parent: tp.map(|t| t.span_id),
            flag_sampled: tp.map(|t| t.sampled),
            trace_state: tp.and(m.tracestate.clone()),
        }
    }

    fn send_span_id(&self) -> SpanId {
        self.identity.span_id("send", &[])
    }
}

impl Synthesizer {
    pub fn new(sampling: Sampling) -> Self {
        Self {
            sampling,
            client_ids: HashMap::new(),
            stats: SynthStats::default(),
        }
    }

    pub fn stats(&self) -> &SynthStats {
        &self.stats
    }

    /// Feeds one event; `awaits` is what the correlator returned for it. Makes the spans of
    /// messages that complete nothing later (zero duration), and remembers client ids.
    pub fn event(&mut self, e: &BrokerEvent, awaits: Awaits, out: &mut impl FnMut(Span)) {
        if let Some(id) = &e.client_id
            && !self.client_ids.contains_key(&e.conn.id)
        {
            if self.client_ids.len() >= MAX_CLIENT_IDS {
                self.client_ids.clear();
            }
            self.client_ids.insert(e.conn.id, Arc::from(id.as_str()));
        }
        match e.kind {
            EventKind::Publish if !awaits.confirm => {
                let m = MessageInfo::of(e);
                self.send(&m, None, None, u64::from(e.record_count.unwrap_or(1)), out);
            }
            EventKind::Deliver if !awaits.settle => {
                let m = MessageInfo::of(e);
                self.process(&m, None, None, u64::from(e.record_count.unwrap_or(1)), out);
            }
            EventKind::ConnectionClosed => {
                self.client_ids.remove(&e.conn.id);
            }
            _ => {}
        }
    }

    /// Feeds one observation and the event that completed it.
    pub fn observation(&mut self, o: &Observation, end: &BrokerEvent, out: &mut impl FnMut(Span)) {
        let Some(start) = o.start.as_deref() else {
            self.stats.no_start += 1;
            return;
        };
        match o.relation {
            Relation::PublishConfirm => self.send(start, Some(end), o.settlement, o.count, out),
            Relation::PublishDeliver => self.deliver(start, end, o.count, out),
            Relation::DeliverSettle => self.process(start, Some(end), o.settlement, o.count, out),
        }
    }

    fn keep(&mut self, ctx: &Ctx, duration_ns: u64, error: bool) -> bool {
        let s = &self.sampling;
        let keep = ctx
            .flag_sampled
            .unwrap_or_else(|| ratio_sampled(ctx.trace_id, s.ratio))
            || (error && s.keep_errors)
            || s.keep_slower_than
                .is_some_and(|t| u128::from(duration_ns) > t.as_nanos());
        if keep {
            self.stats.spans += 1;
        } else {
            self.stats.sampled_out += 1;
        }
        keep
    }

    /// `send`: publish → confirm (or the publish alone).
    fn send(
        &mut self,
        m: &MessageInfo,
        end: Option<&BrokerEvent>,
        settlement: Option<Settlement>,
        count: u64,
        out: &mut impl FnMut(Span),
    ) {
        let offset = end.and_then(|e| e.offset).or(m.offset);
        let ctx = Ctx::of(m, offset);
        let end_ns = end.map_or(m.ts_ns, |e| e.ts_ns.max(m.ts_ns));
        let error = error_type(m.system, settlement, end);
        if !self.keep(&ctx, end_ns - m.ts_ns, error.is_some()) {
            return;
        }
        let mut attrs = self.common(m, &m.conn, "send", m.method.unwrap_or(send_name(m.system)));
        destination_attrs(&mut attrs, m, false);
        if m.system == System::Kafka {
            if let Some(o) = offset {
                attrs.push(KeyValue::new("messaging.kafka.offset", o));
            }
            attrs.push(batch(m.record_count.map_or(count, u64::from)));
        }
        if let Some(e) = &error {
            attrs.push(KeyValue::new("error.type", e.clone()));
        }
        out(Span {
            trace_id: ctx.trace_id,
            span_id: ctx.send_span_id(),
            parent_span_id: ctx.remote_parent,
            parent_is_remote: ctx.remote_parent.is_some(),
            trace_state: ctx.trace_state,
            name: span_name("send", m, false),
            kind: SpanKind::Producer,
            start_ns: m.ts_ns,
            end_ns,
            attributes: attrs,
            error,
        });
    }

    /// `deliver`: publish → delivery, the time in the broker.
    fn deliver(
        &mut self,
        publish: &MessageInfo,
        end: &BrokerEvent,
        count: u64,
        out: &mut impl FnMut(Span),
    ) {
        let ctx = Ctx::of(publish, None);
        let end_ns = end.ts_ns.max(publish.ts_ns);
        if !self.keep(&ctx, end_ns - publish.ts_ns, false) {
            return;
        }
        let delivery = MessageInfo::of(end);
        let mut attrs = self.common(
            &delivery,
            &end.conn,
            "receive",
            end.method.unwrap_or(deliver_name(end.system)),
        );
        destination_attrs(&mut attrs, &delivery, true);
        if end.system == System::Kafka {
            if let Some(o) = publish.offset {
                attrs.push(KeyValue::new("messaging.kafka.offset", o));
            }
            attrs.push(batch(count));
        }
        out(Span {
            trace_id: ctx.trace_id,
            span_id: ctx
                .identity
                .span_id("deliver", &[addr_hash(&end.conn.peer), end.ts_ns]),
            parent_span_id: Some(ctx.send_span_id()),
            parent_is_remote: false,
            trace_state: ctx.trace_state,
            name: span_name("deliver", &delivery, true),
            kind: SpanKind::Internal,
            start_ns: publish.ts_ns,
            end_ns,
            attributes: attrs,
            error: None,
        });
    }

    /// `process`: delivery → settlement (or the delivery alone).
    fn process(
        &mut self,
        m: &MessageInfo,
        end: Option<&BrokerEvent>,
        settlement: Option<Settlement>,
        count: u64,
        out: &mut impl FnMut(Span),
    ) {
        let ctx = Ctx::of(m, None);
        let end_ns = end.map_or(m.ts_ns, |e| e.ts_ns.max(m.ts_ns));
        let error = error_type(m.system, settlement, end);
        if !self.keep(&ctx, end_ns - m.ts_ns, error.is_some()) {
            return;
        }
        let mut attrs = self.common(
            m,
            &m.conn,
            "process",
            m.method.unwrap_or(deliver_name(m.system)),
        );
        destination_attrs(&mut attrs, m, true);
        if m.system == System::Amqp
            && let Some(tag) = m.delivery_tag
        {
            attrs.push(KeyValue::new(
                "messaging.rabbitmq.message.delivery_tag",
                tag as i64,
            ));
        }
        if m.system == System::Kafka {
            if let Some(o) = m.offset {
                attrs.push(KeyValue::new("messaging.kafka.offset", o));
            }
            attrs.push(batch(count));
            // Fetches do not name the group; the commit that settled them does.
            let group = m
                .destination
                .as_ref()
                .and_then(|d| d.group.clone())
                .or_else(|| end.and_then(|e| e.destination.as_ref()?.group.clone()));
            if let Some(g) = group
                && !attrs
                    .iter()
                    .any(|kv| kv.key.as_str() == "messaging.consumer.group.name")
            {
                attrs.push(KeyValue::new("messaging.consumer.group.name", g));
            }
        }
        if let Some(e) = &error {
            attrs.push(KeyValue::new("error.type", e.clone()));
        }
        out(Span {
            trace_id: ctx.trace_id,
            span_id: ctx
                .identity
                .span_id("process", &[addr_hash(&m.conn.peer), m.ts_ns, end_ns]),
            parent_span_id: Some(ctx.send_span_id()),
            parent_is_remote: true,
            trace_state: ctx.trace_state,
            name: span_name("process", m, true),
            kind: SpanKind::Consumer,
            start_ns: m.ts_ns,
            end_ns,
            attributes: attrs,
            error,
        });
    }

    /// Attributes every span has: system, operation, message ids and size, connection.
    fn common(
        &self,
        m: &MessageInfo,
        conn: &ConnRef,
        op_type: &'static str,
        op_name: &'static str,
    ) -> Vec<KeyValue> {
        let mut a = Vec::with_capacity(16);
        a.push(KeyValue::new(
            "messaging.system",
            messaging_system(m.system),
        ));
        a.push(KeyValue::new("messaging.operation.type", op_type));
        a.push(KeyValue::new("messaging.operation.name", op_name));
        if let Some(id) = &m.message_id {
            a.push(KeyValue::new("messaging.message.id", id.clone()));
        }
        if let Some(id) = &m.correlation_id {
            a.push(KeyValue::new(
                "messaging.message.conversation_id",
                id.clone(),
            ));
        }
        if let Some(n) = m.body_size {
            a.push(KeyValue::new("messaging.message.body.size", n as i64));
        }
        let client = m
            .client_id
            .as_deref()
            .map(Arc::from)
            .or_else(|| self.client_ids.get(&conn.id).cloned());
        if let Some(c) = client {
            a.push(KeyValue::new("messaging.client.id", c.to_string()));
        }
        a.push(KeyValue::new("server.address", conn.local.ip().to_string()));
        a.push(KeyValue::new("server.port", i64::from(conn.local.port())));
        a.push(KeyValue::new(
            "network.peer.address",
            conn.peer.ip().to_string(),
        ));
        a.push(KeyValue::new(
            "network.peer.port",
            i64::from(conn.peer.port()),
        ));
        if let Some(pid) = conn.pid {
            a.push(KeyValue::new("process.pid", i64::from(pid)));
        }
        a
    }
}

fn batch(count: u64) -> KeyValue {
    KeyValue::new("messaging.batch.message_count", count as i64)
}

/// `messaging.system` values: RabbitMQ's and Kafka's are official; MQTT and NATS have none.
pub fn messaging_system(s: System) -> &'static str {
    match s {
        System::Amqp => "rabbitmq",
        System::Kafka => "kafka",
        System::Mqtt => "mqtt",
        System::Nats => "nats",
    }
}

fn send_name(s: System) -> &'static str {
    match s {
        System::Amqp => "basic.publish",
        System::Mqtt => "PUBLISH",
        System::Nats => "PUB",
        System::Kafka => "Produce",
    }
}

fn deliver_name(s: System) -> &'static str {
    match s {
        System::Amqp => "basic.deliver",
        System::Mqtt => "PUBLISH",
        System::Nats => "MSG",
        System::Kafka => "Fetch",
    }
}

/// The destination in a span name: low cardinality, so RabbitMQ publishes are named by the
/// exchange (`amq.default` for the default one) and deliveries by the queue they came from.
fn span_destination(m: &MessageInfo, consumer: bool) -> Option<String> {
    let d = m.destination.as_ref()?;
    match m.system {
        System::Amqp => {
            if consumer && let Some(q) = &d.queue {
                return Some(q.clone());
            }
            match d.exchange.as_deref() {
                Some("") => Some("amq.default".into()),
                Some(x) => Some(x.into()),
                None => d.queue.clone(),
            }
        }
        System::Kafka | System::Mqtt => d.topic.clone(),
        System::Nats => d.subject.clone(),
    }
}

fn span_name(op: &str, m: &MessageInfo, consumer: bool) -> String {
    match span_destination(m, consumer) {
        Some(d) => format!("{op} {d}"),
        None => op.to_owned(),
    }
}

fn destination_attrs(a: &mut Vec<KeyValue>, m: &MessageInfo, consumer: bool) {
    let Some(d) = &m.destination else { return };
    match m.system {
        System::Amqp => {
            if let Some(x) = &d.exchange {
                a.push(KeyValue::new("messaging.destination.name", x.clone()));
            }
            if let Some(rk) = d.routing_key.as_ref().filter(|rk| !rk.is_empty()) {
                a.push(KeyValue::new(
                    "messaging.rabbitmq.destination.routing_key",
                    rk.clone(),
                ));
            }
            if consumer && let Some(q) = &d.queue {
                a.push(KeyValue::new(
                    "messaging.destination.subscription.name",
                    q.clone(),
                ));
            }
        }
        System::Kafka | System::Mqtt => {
            if let Some(t) = &d.topic {
                a.push(KeyValue::new("messaging.destination.name", t.clone()));
            }
        }
        System::Nats => {
            if let Some(s) = &d.subject {
                a.push(KeyValue::new("messaging.destination.name", s.clone()));
            }
        }
    }
    if let Some(p) = d.partition {
        a.push(KeyValue::new(
            "messaging.destination.partition.id",
            p.to_string(),
        ));
    }
    if let Some(g) = &d.group {
        a.push(KeyValue::new("messaging.consumer.group.name", g.clone()));
    }
}

/// `error.type` of a failed operation: the protocol's error code by name where the end event
/// carries one, else the settlement (`nack`, `reject`).
fn error_type(
    system: System,
    settlement: Option<Settlement>,
    end: Option<&BrokerEvent>,
) -> Option<String> {
    let code = end.and_then(|e| e.reply_code);
    let named = code.and_then(|c| match system {
        System::Kafka if c != 0 => Some(kafka_error(c)),
        System::Mqtt if c >= 0x80 => Some(mqtt_reason(c)),
        System::Amqp if c >= 300 => Some(amqp_reply(c)),
        _ => None,
    });
    named.or(match settlement {
        Some(Settlement::Nack) => Some("nack".into()),
        Some(Settlement::Reject) => Some("reject".into()),
        _ => None,
    })
}

fn amqp_reply(c: u16) -> String {
    match c {
        311 => "CONTENT_TOO_LARGE",
        312 => "NO_ROUTE",
        313 => "NO_CONSUMERS",
        320 => "CONNECTION_FORCED",
        402 => "INVALID_PATH",
        403 => "ACCESS_REFUSED",
        404 => "NOT_FOUND",
        405 => "RESOURCE_LOCKED",
        406 => "PRECONDITION_FAILED",
        501 => "FRAME_ERROR",
        502 => "SYNTAX_ERROR",
        503 => "COMMAND_INVALID",
        504 => "CHANNEL_ERROR",
        505 => "UNEXPECTED_FRAME",
        506 => "RESOURCE_ERROR",
        530 => "NOT_ALLOWED",
        540 => "NOT_IMPLEMENTED",
        541 => "INTERNAL_ERROR",
        _ => return c.to_string(),
    }
    .into()
}

fn mqtt_reason(c: u16) -> String {
    match c {
        0x80 => "unspecified_error",
        0x83 => "implementation_specific_error",
        0x87 => "not_authorized",
        0x90 => "topic_name_invalid",
        0x91 => "packet_identifier_in_use",
        0x92 => "packet_identifier_not_found",
        0x97 => "quota_exceeded",
        0x99 => "payload_format_invalid",
        _ => return format!("0x{c:02x}"),
    }
    .into()
}

fn kafka_error(c: u16) -> String {
    // Kafka error codes are i16 on the wire; negative ones arrive as large u16.
    match c as i16 {
        -1 => "UNKNOWN_SERVER_ERROR",
        1 => "OFFSET_OUT_OF_RANGE",
        2 => "CORRUPT_MESSAGE",
        3 => "UNKNOWN_TOPIC_OR_PARTITION",
        5 => "LEADER_NOT_AVAILABLE",
        6 => "NOT_LEADER_OR_FOLLOWER",
        7 => "REQUEST_TIMED_OUT",
        10 => "MESSAGE_TOO_LARGE",
        19 => "NOT_ENOUGH_REPLICAS",
        20 => "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
        29 => "TOPIC_AUTHORIZATION_FAILED",
        45 => "OUT_OF_ORDER_SEQUENCE_NUMBER",
        46 => "DUPLICATE_SEQUENCE_NUMBER",
        87 => "INVALID_RECORD",
        _ => return (c as i16).to_string(),
    }
    .into()
}
