//! Synthesis from hand-built events: names, kinds, attributes, trace relations, sampling.
use std::time::Duration;

use opentelemetry::{
    Value,
    trace::{SpanId, SpanKind, TraceId},
};

use super::*;
use crate::{
    capture::{ConnId, Direction},
    correlate::{Correlator, CorrelatorConfig},
    event::{BrokerEvent, ConnRef, Destination, EventKind, MessageProps, System},
};

const MS: u64 = 1_000_000;
const IN: Direction = Direction::Ingress;
const OUT: Direction = Direction::Egress;
pub(super) const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

pub(super) fn ev(
    conn: u64,
    ts_ms: u64,
    system: System,
    kind: EventKind,
    dir: Direction,
) -> BrokerEvent {
    BrokerEvent::new(
        1_700_000_000_000 * MS + ts_ms * MS,
        system,
        kind,
        ConnRef {
            id: ConnId(conn),
            pid: Some(4242),
            local: "10.0.0.1:5672".parse().unwrap(),
            peer: format!("10.0.0.{}:{}", 100 + conn, 40000 + conn)
                .parse()
                .unwrap(),
        },
        dir,
    )
}

/// One observer: a correlator keeping message info and a synthesizer.
pub(super) struct Observer {
    c: Correlator,
    s: Synthesizer,
    pub spans: Vec<Span>,
}

impl Observer {
    pub(super) fn new(sampling: Sampling) -> Self {
        Self {
            c: Correlator::new(CorrelatorConfig::default()).keeping_message_info(true),
            s: Synthesizer::new(sampling),
            spans: Vec::new(),
        }
    }

    pub(super) fn feed(&mut self, events: &[BrokerEvent]) -> &mut Self {
        for e in events {
            let (s, spans) = (&mut self.s, &mut self.spans);
            let awaits = self
                .c
                .observe(e, &mut |o| s.observation(&o, e, &mut |x| spans.push(x)));
            s.event(e, awaits, &mut |x| spans.push(x));
        }
        self
    }

    fn named(&self, name: &str) -> &Span {
        self.spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no span {name:?} in {:#?}", self.names()))
    }

    fn names(&self) -> Vec<&str> {
        self.spans.iter().map(|s| s.name.as_str()).collect()
    }
}

fn s(v: &str) -> Option<Value> {
    Some(Value::from(v.to_owned()))
}

fn i(v: i64) -> Option<Value> {
    Some(Value::I64(v))
}

fn attr(span: &Span, k: &str) -> Option<Value> {
    span.attr(k).cloned()
}

pub(super) fn amqp_publish(conn: u64, ts: u64, seq: Option<u64>, fp: u64) -> BrokerEvent {
    let mut e = ev(conn, ts, System::Amqp, EventKind::Publish, IN);
    e.method = Some("basic.publish");
    e.channel = Some(1);
    e.publish_seq = seq;
    e.fingerprint = Some(fp);
    e.body_size = Some(12);
    e.destination = Some(Destination {
        vhost: Some("/".into()),
        exchange: Some(String::new()),
        routing_key: Some("orders".into()),
        ..Default::default()
    });
    e.props = Some(MessageProps {
        message_id: Some("m-1".into()),
        ..Default::default()
    });
    e
}

fn amqp_confirm(conn: u64, ts: u64, seq: u64) -> BrokerEvent {
    let mut e = ev(conn, ts, System::Amqp, EventKind::Confirm, OUT);
    e.method = Some("basic.ack");
    e.channel = Some(1);
    e.delivery_tag = Some(seq);
    e
}

fn amqp_deliver(conn: u64, ts: u64, tag: u64, fp: u64) -> BrokerEvent {
    let mut e = ev(conn, ts, System::Amqp, EventKind::Deliver, OUT);
    e.method = Some("basic.deliver");
    e.channel = Some(1);
    e.delivery_tag = Some(tag);
    e.consumer_tag = Some("ctag".into());
    e.fingerprint = Some(fp);
    e.body_size = Some(12);
    e.destination = Some(Destination {
        vhost: Some("/".into()),
        exchange: Some(String::new()),
        routing_key: Some("orders".into()),
        queue: Some("orders".into()),
        ..Default::default()
    });
    e.props = Some(MessageProps {
        message_id: Some("m-1".into()),
        ..Default::default()
    });
    e
}

fn amqp_settle(conn: u64, ts: u64, kind: EventKind, tag: u64) -> BrokerEvent {
    let mut e = ev(conn, ts, System::Amqp, kind, IN);
    e.channel = Some(1);
    e.delivery_tag = Some(tag);
    e.multiple = Some(false);
    e
}

#[test]
fn amqp_send_deliver_process_with_attributes_and_one_trace() {
    let mut o = Observer::new(Sampling::default());
    o.feed(&[
        amqp_publish(1, 0, Some(1), 77),
        amqp_confirm(1, 3, 1),
        amqp_deliver(2, 5, 9, 77),
        amqp_settle(2, 20, EventKind::Ack, 9),
    ]);
    assert_eq!(
        o.names(),
        ["send amq.default", "deliver orders", "process orders"]
    );
    let send = o.named("send amq.default").clone();
    let deliver = o.named("deliver orders").clone();
    let process = o.named("process orders").clone();
    assert_eq!(send.kind, SpanKind::Producer);
    assert_eq!(deliver.kind, SpanKind::Internal);
    assert_eq!(process.kind, SpanKind::Consumer);
    assert_eq!(send.duration_ns(), 3 * MS);
    assert_eq!(deliver.duration_ns(), 5 * MS);
    assert_eq!(process.duration_ns(), 15 * MS);
    for span in [&send, &deliver, &process] {
        assert_eq!(span.trace_id, send.trace_id);
        assert_eq!(attr(span, "messaging.system"), s("rabbitmq"));
        assert_eq!(attr(span, "messaging.destination.name"), s(""));
        assert_eq!(
            attr(span, "messaging.rabbitmq.destination.routing_key"),
            s("orders")
        );
        assert_eq!(attr(span, "messaging.message.id"), s("m-1"));
        assert_eq!(attr(span, "messaging.message.body.size"), i(12));
        assert_eq!(attr(span, "server.address"), s("10.0.0.1"));
        assert_eq!(attr(span, "server.port"), i(5672));
        assert_eq!(attr(span, "process.pid"), i(4242));
        assert_eq!(span.error, None);
    }
    assert_eq!(send.parent_span_id, None, "no traceparent: a root");
    assert_eq!(deliver.parent_span_id, Some(send.span_id));
    assert_eq!(process.parent_span_id, Some(send.span_id));
    assert_eq!(attr(&send, "messaging.operation.type"), s("send"));
    assert_eq!(attr(&send, "messaging.operation.name"), s("basic.publish"));
    assert_eq!(attr(&send, "network.peer.address"), s("10.0.0.101"));
    assert_eq!(attr(&send, "network.peer.port"), i(40001));
    assert_eq!(attr(&deliver, "messaging.operation.type"), s("receive"));
    assert_eq!(attr(&process, "messaging.operation.type"), s("process"));
    assert_eq!(
        attr(&process, "messaging.operation.name"),
        s("basic.deliver")
    );
    assert_eq!(
        attr(&process, "messaging.destination.subscription.name"),
        s("orders")
    );
    assert_eq!(
        attr(&process, "messaging.rabbitmq.message.delivery_tag"),
        i(9)
    );
    assert_eq!(attr(&process, "network.peer.address"), s("10.0.0.102"));
    let ids: std::collections::HashSet<SpanId> = o.spans.iter().map(|s| s.span_id).collect();
    assert_eq!(ids.len(), 3);
}

#[test]
fn two_observers_agree_on_the_trace_and_the_send_span() {
    // Node A watches the broker the publisher talks to; node B the one the consumer reads
    // from (a cluster): neither sees the other's events.
    let mut a = Observer::new(Sampling::default());
    a.feed(&[amqp_publish(1, 0, Some(1), 77), amqp_confirm(1, 3, 1)]);
    let mut b = Observer::new(Sampling::default());
    b.feed(&[
        amqp_deliver(7, 50, 1, 77),
        amqp_settle(7, 60, EventKind::Nack, 1),
    ]);
    let send = a.named("send amq.default");
    let process = b.named("process orders");
    assert_eq!(process.trace_id, send.trace_id);
    assert_eq!(process.parent_span_id, Some(send.span_id));
    assert!(process.parent_is_remote);
    assert_eq!(process.error.as_deref(), Some("nack"));
    assert_eq!(attr(process, "error.type"), s("nack"));
    // Another body is another trace.
    let mut c = Observer::new(Sampling::default());
    c.feed(&[amqp_publish(1, 0, None, 78)]);
    assert_ne!(c.spans[0].trace_id, send.trace_id);
}

fn kafka(conn: u64, ts: u64, kind: EventKind, dir: Direction) -> BrokerEvent {
    let mut e = ev(conn, ts, System::Kafka, kind, dir);
    e.destination = Some(Destination {
        topic: Some("payments".into()),
        partition: Some(3),
        ..Default::default()
    });
    e
}

#[test]
fn kafka_batches_by_topic_partition_offset_across_observers() {
    let mut produce = kafka(1, 0, EventKind::Publish, IN);
    produce.method = Some("Produce");
    produce.record_count = Some(3);
    produce.client_id = Some("producer-1".into());
    let mut ok = kafka(1, 4, EventKind::Confirm, OUT);
    ok.offset = Some(40);
    let mut fetch = kafka(2, 6, EventKind::Deliver, OUT);
    fetch.method = Some("Fetch");
    fetch.offset = Some(40);
    fetch.record_count = Some(3);
    let mut commit = kafka(2, 9, EventKind::Ack, IN);
    commit.offset = Some(43);
    commit.destination.as_mut().unwrap().group = Some("billing".into());

    let mut a = Observer::new(Sampling::default());
    a.feed(&[produce.clone(), ok.clone()]);
    let send = a.named("send payments").clone();
    assert_eq!(attr(&send, "messaging.system"), s("kafka"));
    assert_eq!(attr(&send, "messaging.operation.name"), s("Produce"));
    assert_eq!(attr(&send, "messaging.destination.partition.id"), s("3"));
    assert_eq!(attr(&send, "messaging.kafka.offset"), i(40));
    assert_eq!(attr(&send, "messaging.batch.message_count"), i(3));
    assert_eq!(attr(&send, "messaging.client.id"), s("producer-1"));

    let mut b = Observer::new(Sampling::default());
    b.feed(&[fetch.clone(), commit.clone()]);
    let process = b.named("process payments");
    assert_eq!(process.trace_id, send.trace_id);
    assert_eq!(process.parent_span_id, Some(send.span_id));
    assert_eq!(attr(process, "messaging.consumer.group.name"), s("billing"));
    assert_eq!(attr(process, "messaging.kafka.offset"), i(40));
    assert_eq!(attr(process, "messaging.batch.message_count"), i(3));

    // One observer seeing everything also times the broker.
    let mut all = Observer::new(Sampling::default());
    all.feed(&[produce, ok, fetch, commit]);
    assert_eq!(
        all.names(),
        ["send payments", "deliver payments", "process payments"]
    );
    assert!(all.spans.iter().all(|s| s.trace_id == send.trace_id));
}

#[test]
fn traceparent_joins_the_producers_trace_and_its_flag_decides_sampling() {
    let mut p = amqp_publish(1, 0, Some(1), 5);
    p.props.as_mut().unwrap().traceparent = Some(TP.into());
    p.props.as_mut().unwrap().tracestate = Some("vendor=1".into());
    let mut d = amqp_deliver(2, 2, 1, 5);
    d.props.as_mut().unwrap().traceparent = Some(TP.into());
    let mut o = Observer::new(Sampling {
        ratio: 0.0,
        ..Default::default()
    });
    o.feed(&[p.clone(), amqp_confirm(1, 1, 1), d.clone()]);
    let trace = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
    let parent = SpanId::from_hex("00f067aa0ba902b7").unwrap();
    let send = o.named("send amq.default");
    assert_eq!(send.trace_id, trace, "sampled by its flag despite ratio 0");
    assert_eq!(send.parent_span_id, Some(parent));
    assert!(send.parent_is_remote);
    assert_eq!(send.trace_state.as_deref(), Some("vendor=1"));
    let deliver = o.named("deliver orders");
    assert_eq!(deliver.parent_span_id, Some(send.span_id));

    // Not sampled upstream: nothing, unless it failed.
    let unsampled = TP.replace("-01", "-00");
    let mut p2 = p.clone();
    p2.props.as_mut().unwrap().traceparent = Some(unsampled.clone());
    let mut d2 = d.clone();
    d2.props.as_mut().unwrap().traceparent = Some(unsampled);
    let mut o = Observer::new(Sampling::default());
    o.feed(&[
        p2,
        amqp_confirm(1, 1, 1),
        d2,
        amqp_settle(2, 9, EventKind::Reject, 1),
    ]);
    assert_eq!(o.names(), ["process orders"]);
    assert_eq!(o.spans[0].error.as_deref(), Some("reject"));
    assert_eq!(o.spans[0].trace_id, trace);
    assert_eq!(o.s.stats().sampled_out, 2);
}

#[test]
fn messages_that_await_nothing_get_zero_duration_spans() {
    // MQTT QoS 0 both ways.
    let mut p = ev(1, 0, System::Mqtt, EventKind::Publish, IN);
    p.method = Some("PUBLISH");
    p.qos = Some(0);
    p.fingerprint = Some(1);
    p.client_id = Some("sensor-7".into());
    p.destination = Some(Destination {
        topic: Some("sensors/temp".into()),
        ..Default::default()
    });
    let mut d = p.clone();
    d.conn.id = ConnId(2);
    d.conn.peer = "10.0.0.102:40002".parse().unwrap();
    d.kind = EventKind::Deliver;
    d.direction = OUT;
    d.client_id = None;
    d.ts_ns += 2 * MS;
    // NATS core publish: no reply inbox.
    let mut n = ev(3, 0, System::Nats, EventKind::Publish, IN);
    n.method = Some("PUB");
    n.fingerprint = Some(2);
    n.destination = Some(Destination {
        subject: Some("orders.created".into()),
        ..Default::default()
    });
    let mut o = Observer::new(Sampling::default());
    o.feed(&[p, d, n]);
    assert_eq!(
        o.names(),
        [
            "send sensors/temp",
            "deliver sensors/temp",
            "process sensors/temp",
            "send orders.created"
        ]
    );
    let send = o.named("send sensors/temp");
    let process = o.named("process sensors/temp");
    assert_eq!(send.duration_ns(), 0);
    assert_eq!(process.duration_ns(), 0);
    assert_eq!(attr(send, "messaging.system"), s("mqtt"));
    assert_eq!(attr(send, "messaging.client.id"), s("sensor-7"));
    assert_eq!(process.parent_span_id, Some(send.span_id));
    let nats = o.named("send orders.created");
    assert_eq!(attr(nats, "messaging.system"), s("nats"));
    assert_eq!(attr(nats, "messaging.operation.name"), s("PUB"));
    assert_eq!(
        attr(nats, "messaging.destination.name"),
        s("orders.created")
    );
    assert_eq!(nats.kind, SpanKind::Producer);
}

#[test]
fn mqtt_qos1_puback_error_reason_is_an_error_type() {
    let mut p = ev(1, 0, System::Mqtt, EventKind::Publish, IN);
    p.qos = Some(1);
    p.packet_id = Some(5);
    p.fingerprint = Some(1);
    p.destination = Some(Destination {
        topic: Some("t".into()),
        ..Default::default()
    });
    let mut ack = ev(1, 1, System::Mqtt, EventKind::Confirm, OUT);
    ack.packet_id = Some(5);
    ack.reply_code = Some(0x87);
    let mut o = Observer::new(Sampling::default());
    o.feed(&[p, ack]);
    assert_eq!(o.spans[0].error.as_deref(), Some("not_authorized"));
}

#[test]
fn ratio_sampling_agrees_across_observers_and_keeps_slow_and_failed_spans() {
    let sampling = Sampling {
        ratio: 0.5,
        keep_slower_than: Some(Duration::from_millis(100)),
        keep_errors: true,
    };
    let (mut kept, mut total) = (0, 0);
    for fp in 0..200u64 {
        let mut a = Observer::new(sampling.clone());
        a.feed(&[amqp_publish(1, 0, None, fp)]);
        let mut b = Observer::new(sampling.clone());
        b.feed(&[
            amqp_deliver(2, 1, 1, fp),
            amqp_settle(2, 2, EventKind::Ack, 1),
        ]);
        assert_eq!(a.spans.len(), b.spans.len(), "both observers decide alike");
        kept += a.spans.len();
        total += 1;
    }
    assert!((60..140).contains(&kept), "{kept} of {total}");
    let mut none = Sampling {
        ratio: 0.0,
        ..sampling
    };
    let mut o = Observer::new(none.clone());
    o.feed(&[
        amqp_deliver(2, 0, 1, 1),
        amqp_deliver(2, 0, 2, 2),
        amqp_deliver(2, 0, 3, 3),
        amqp_settle(2, 5, EventKind::Ack, 1),
        amqp_settle(2, 500, EventKind::Ack, 2),
        amqp_settle(2, 6, EventKind::Nack, 3),
    ]);
    let kept: Vec<_> = o
        .spans
        .iter()
        .map(|s| (s.duration_ns() / MS, s.error.clone()))
        .collect();
    assert_eq!(kept, [(500, None), (6, Some("nack".into()))]);
    none.keep_errors = false;
    let mut o = Observer::new(none);
    o.feed(&[
        amqp_deliver(2, 0, 3, 3),
        amqp_settle(2, 6, EventKind::Nack, 3),
    ]);
    assert!(o.spans.is_empty());
}

#[test]
fn without_message_info_observations_make_no_spans_and_are_counted() {
    let mut c = Correlator::new(CorrelatorConfig::default());
    let mut synth = Synthesizer::new(Sampling::default());
    let mut spans = Vec::new();
    for e in [amqp_publish(1, 0, Some(1), 1), amqp_confirm(1, 1, 1)] {
        let awaits = c.observe(&e, &mut |o| {
            synth.observation(&o, &e, &mut |s| spans.push(s))
        });
        synth.event(&e, awaits, &mut |s| spans.push(s));
    }
    assert!(spans.is_empty());
    assert_eq!(synth.stats().no_start, 1);
}

mod export_tests;
