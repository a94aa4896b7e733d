use super::*;
use crate::{
    capture::Direction,
    event::{ConnRef, Destination},
};

const IN: Direction = Direction::Ingress;
const OUT: Direction = Direction::Egress;
const MS: u64 = 1_000_000;

fn ev(conn: u64, ts_ms: u64, system: System, kind: EventKind, dir: Direction) -> BrokerEvent {
    BrokerEvent::new(
        ts_ms * MS,
        system,
        kind,
        ConnRef {
            id: ConnId(conn),
            pid: Some(1),
            local: "127.0.0.1:5672".parse().unwrap(),
            peer: format!("127.0.0.1:{}", 40000 + conn).parse().unwrap(),
        },
        dir,
    )
}

fn run(c: &mut Correlator, events: &[BrokerEvent]) -> Vec<Observation> {
    let mut out = Vec::new();
    for e in events {
        c.observe(e, &mut |o| out.push(o));
    }
    out
}

/// relation, destination, latency (ms), count, settlement
type Row = (Relation, Option<String>, u64, u64, Option<Settlement>);

fn summary(obs: &[Observation]) -> Vec<Row> {
    obs.iter()
        .map(|o| {
            (
                o.relation,
                o.labels.destination.as_deref().map(String::from),
                o.latency_ns / MS,
                o.count,
                o.settlement,
            )
        })
        .collect()
}

fn amqp_publish(conn: u64, ts: u64, ch: u32, seq: Option<u64>, rk: &str, fp: u64) -> BrokerEvent {
    let mut e = ev(conn, ts, System::Amqp, EventKind::Publish, IN);
    e.channel = Some(ch);
    e.publish_seq = seq;
    e.fingerprint = Some(fp);
    e.destination = Some(Destination {
        vhost: Some("/".into()),
        exchange: Some(String::new()),
        routing_key: Some(rk.into()),
        ..Default::default()
    });
    e
}

fn amqp_deliver(conn: u64, ts: u64, ch: u32, tag: u64, rk: &str, fp: u64) -> BrokerEvent {
    let mut e = ev(conn, ts, System::Amqp, EventKind::Deliver, OUT);
    e.channel = Some(ch);
    e.delivery_tag = Some(tag);
    e.consumer_tag = Some("ctag".into());
    e.fingerprint = Some(fp);
    e.destination = Some(Destination {
        vhost: Some("/".into()),
        exchange: Some(String::new()),
        routing_key: Some(rk.into()),
        queue: Some(rk.into()),
        ..Default::default()
    });
    e
}

fn amqp_settle(
    conn: u64,
    ts: u64,
    kind: EventKind,
    ch: u32,
    tag: u64,
    multiple: bool,
) -> BrokerEvent {
    let mut e = ev(conn, ts, System::Amqp, kind, IN);
    e.channel = Some(ch);
    e.delivery_tag = Some(tag);
    e.multiple = Some(multiple);
    e
}

fn amqp_confirm(conn: u64, ts: u64, ch: u32, seq: u64) -> BrokerEvent {
    let mut e = ev(conn, ts, System::Amqp, EventKind::Confirm, OUT);
    e.channel = Some(ch);
    e.delivery_tag = Some(seq);
    e.publish_seq = Some(seq);
    e
}

#[test]
fn amqp_confirm_deliver_and_multiple_ack() {
    let mut c = Correlator::new(CorrelatorConfig::default());
    let obs = run(
        &mut c,
        &[
            amqp_publish(1, 0, 1, Some(1), "q", 11),
            amqp_publish(1, 1, 1, Some(2), "q", 22),
            amqp_confirm(1, 3, 1, 1),
            amqp_confirm(1, 4, 1, 2),
            amqp_deliver(2, 5, 1, 1, "q", 11),
            amqp_deliver(2, 7, 1, 2, "q", 22),
            amqp_settle(2, 20, EventKind::Ack, 1, 2, true),
        ],
    );
    let q = Some("q".to_owned());
    let x = Some("amq.default/q".to_owned());
    assert_eq!(
        summary(&obs),
        vec![
            (
                Relation::PublishConfirm,
                x.clone(),
                3,
                1,
                Some(Settlement::Ack)
            ),
            (Relation::PublishConfirm, x, 3, 1, Some(Settlement::Ack)),
            (Relation::PublishDeliver, q.clone(), 5, 1, None),
            (Relation::PublishDeliver, q.clone(), 6, 1, None),
            (
                Relation::DeliverSettle,
                q.clone(),
                15,
                1,
                Some(Settlement::Ack)
            ),
            (Relation::DeliverSettle, q, 13, 1, Some(Settlement::Ack)),
        ]
    );
    assert_eq!(c.stats(), &CorrelatorStats::default());
    assert!(c.in_flight().values().all(|&n| n == 0));
}

#[test]
fn amqp_single_ack_out_of_order_nack_reject_and_no_ack_consumers() {
    let mut c = Correlator::new(CorrelatorConfig::default());
    let mut consume = ev(2, 0, System::Amqp, EventKind::Subscribe, IN);
    consume.channel = Some(2);
    consume.consumer_tag = Some("auto".into());
    consume.attrs.push(("no_ack", "true".into()));
    let mut auto = amqp_deliver(2, 1, 2, 1, "q", 5);
    auto.consumer_tag = Some("auto".into());
    let obs = run(
        &mut c,
        &[
            consume,
            auto,
            amqp_deliver(2, 1, 1, 1, "q", 1),
            amqp_deliver(2, 1, 1, 2, "q", 2),
            amqp_deliver(2, 1, 1, 3, "q", 3),
            amqp_settle(2, 2, EventKind::Ack, 1, 2, false),
            amqp_settle(2, 3, EventKind::Nack, 1, 3, false),
            amqp_settle(2, 4, EventKind::Reject, 1, 1, false),
            // Nothing waits for this one.
            amqp_settle(2, 5, EventKind::Ack, 1, 9, false),
        ],
    );
    let settles: Vec<_> = summary(&obs)
        .into_iter()
        .filter(|o| o.0 == Relation::DeliverSettle)
        .map(|o| (o.2, o.4))
        .collect();
    assert_eq!(
        settles,
        vec![
            (1, Some(Settlement::Ack)),
            (2, Some(Settlement::Nack)),
            (3, Some(Settlement::Reject)),
        ]
    );
    assert_eq!(c.stats().unmatched(Relation::DeliverSettle), 1);
    assert_eq!(
        c.pending(Relation::DeliverSettle),
        0,
        "the no-ack delivery never waited"
    );
}

#[test]
fn fan_out_gives_one_observation_per_delivery_and_repeated_bodies_match_in_order() {
    let mut c = Correlator::new(CorrelatorConfig::default());
    let obs = run(
        &mut c,
        &[
            amqp_publish(1, 0, 1, None, "q", 7),
            amqp_publish(1, 10, 1, None, "q", 7),
            amqp_deliver(2, 2, 1, 1, "q", 7),
            amqp_deliver(3, 3, 1, 1, "q", 7),
            // Same body again on connection 2: the second publish.
            amqp_deliver(2, 12, 1, 2, "q", 7),
            // Different routing key: no match.
            amqp_deliver(2, 13, 1, 3, "other", 7),
        ],
    );
    let pd: Vec<_> = summary(&obs)
        .into_iter()
        .filter(|o| o.0 == Relation::PublishDeliver)
        .map(|o| o.2)
        .collect();
    assert_eq!(pd, vec![2, 3, 2]);
    assert_eq!(c.stats().unmatched(Relation::PublishDeliver), 1);
    // Redeliveries are not time-in-broker observations.
    let mut again = amqp_deliver(4, 20, 1, 1, "q", 7);
    again.redelivered = Some(true);
    assert!(
        run(&mut c, &[again])
            .iter()
            .all(|o| o.relation != Relation::PublishDeliver)
    );
}

#[test]
fn ttl_and_cap_evictions_are_counted_and_closed_connections_leave() {
    let mut c = Correlator::new(CorrelatorConfig {
        max_pending: 2,
        ttl_ns: 100 * MS,
    });
    run(
        &mut c,
        &[
            amqp_publish(1, 0, 1, Some(1), "q", 1),
            amqp_publish(1, 1, 1, Some(2), "q", 2),
            amqp_publish(1, 2, 1, Some(3), "q", 3),
        ],
    );
    assert_eq!(c.stats().evicted(Relation::PublishConfirm), 1, "cap of 2");
    assert_eq!(c.stats().evicted(Relation::PublishDeliver), 1);
    c.expire(500 * MS);
    assert_eq!(c.stats().evicted(Relation::PublishConfirm), 3);
    assert_eq!(c.pending(Relation::PublishConfirm), 0);
    run(&mut c, &[amqp_deliver(2, 600, 1, 1, "q", 9)]);
    assert_eq!(c.in_flight().get(&System::Amqp), Some(&1));
    run(
        &mut c,
        &[ev(2, 601, System::Amqp, EventKind::ConnectionClosed, IN)],
    );
    assert_eq!(c.in_flight().get(&System::Amqp), None);
    assert_eq!(
        c.stats().evicted(Relation::DeliverSettle),
        0,
        "a close is not an eviction"
    );
}

fn mqtt(
    conn: u64,
    ts: u64,
    kind: EventKind,
    dir: Direction,
    id: Option<u32>,
    qos: u8,
) -> BrokerEvent {
    let mut e = ev(conn, ts, System::Mqtt, kind, dir);
    e.packet_id = id;
    e.qos = Some(qos);
    e.fingerprint = Some(42);
    e.destination = Some(Destination {
        topic: Some("t/1".into()),
        ..Default::default()
    });
    e
}

#[test]
fn mqtt_qos1_flows() {
    let mut c = Correlator::new(CorrelatorConfig::default());
    let obs = run(
        &mut c,
        &[
            mqtt(1, 0, EventKind::Publish, IN, Some(7), 1),
            mqtt(2, 1, EventKind::Deliver, OUT, Some(3), 1),
            mqtt(1, 2, EventKind::Confirm, OUT, Some(7), 1),
            mqtt(2, 5, EventKind::Ack, IN, Some(3), 1),
            // QoS 0 publishes wait for nothing but are still matched to their delivery.
            mqtt(1, 10, EventKind::Publish, IN, None, 0),
            mqtt(2, 11, EventKind::Deliver, OUT, None, 0),
        ],
    );
    let t = Some("t/1".to_owned());
    assert_eq!(
        summary(&obs),
        vec![
            (Relation::PublishDeliver, t.clone(), 1, 1, None),
            (
                Relation::PublishConfirm,
                t.clone(),
                2,
                1,
                Some(Settlement::Ack)
            ),
            (
                Relation::DeliverSettle,
                t.clone(),
                4,
                1,
                Some(Settlement::Ack)
            ),
            (Relation::PublishDeliver, t, 1, 1, None),
        ]
    );
    assert_eq!(c.pending(Relation::PublishConfirm), 0);
    assert_eq!(c.pending(Relation::DeliverSettle), 0);
}

#[test]
fn nats_pub_acks_core_replies_and_jetstream_acks() {
    let mut c = Correlator::new(CorrelatorConfig::default());
    let publish = |ts, subject: &str, reply: &str, fp| {
        let mut e = ev(1, ts, System::Nats, EventKind::Publish, IN);
        e.destination = Some(Destination {
            subject: Some(subject.into()),
            ..Default::default()
        });
        e.reply_to = Some(reply.into());
        e.fingerprint = Some(fp);
        e
    };
    let mut confirm = ev(1, 4, System::Nats, EventKind::Confirm, OUT);
    confirm.destination = publish(0, "orders.a", "", 1).destination;
    confirm.fingerprint = Some(1);
    let mut reply = ev(1, 6, System::Nats, EventKind::Deliver, OUT);
    reply.destination = Some(Destination {
        subject: Some("_INBOX.x.2".into()),
        ..Default::default()
    });
    let js = |kind, ts, dir| {
        let mut e = ev(2, ts, System::Nats, kind, dir);
        e.offset = Some(10);
        e.delivery_tag = Some(3);
        e.attrs.push(("stream", "ORDERS".into()));
        e.attrs.push(("consumer", "pull".into()));
        e.destination = Some(Destination {
            subject: Some("orders.a".into()),
            ..Default::default()
        });
        e.fingerprint = Some(1);
        e
    };
    let obs = run(
        &mut c,
        &[
            publish(0, "orders.a", "_INBOX.x.1", 1),
            publish(1, "svc.q", "_INBOX.x.2", 2),
            confirm,
            reply,
            js(EventKind::Deliver, 8, OUT),
            js(EventKind::Ack, 9, IN),
        ],
    );
    let a = Some("orders.a".to_owned());
    assert_eq!(
        summary(&obs),
        vec![
            (
                Relation::PublishConfirm,
                a.clone(),
                4,
                1,
                Some(Settlement::Ack)
            ),
            (Relation::PublishDeliver, a.clone(), 8, 1, None),
            (Relation::DeliverSettle, a, 1, 1, Some(Settlement::Ack)),
        ]
    );
    assert_eq!(
        c.pending(Relation::PublishConfirm),
        0,
        "the core reply cleared its request"
    );
    assert_eq!(c.stats().evicted(Relation::PublishConfirm), 0);
}

#[test]
fn kafka_offsets_match_exactly_and_commits_settle_ranges() {
    let mut c = Correlator::new(CorrelatorConfig::default());
    let kafka = |conn, ts, kind, dir, offset: Option<i64>, count: u32| {
        let mut e = ev(conn, ts, System::Kafka, kind, dir);
        e.destination = Some(Destination {
            topic: Some("orders".into()),
            partition: Some(0),
            ..Default::default()
        });
        e.offset = offset;
        e.record_count = Some(count);
        e.attrs.push(("acks", "1".into()));
        e
    };
    let obs = run(
        &mut c,
        &[
            kafka(1, 0, EventKind::Publish, IN, None, 3),
            kafka(1, 2, EventKind::Publish, IN, None, 2),
            kafka(1, 4, EventKind::Confirm, OUT, Some(100), 3),
            kafka(1, 5, EventKind::Confirm, OUT, Some(103), 2),
            // One fetch returns offsets 101..=104 (the consumer started at 101).
            kafka(2, 10, EventKind::Deliver, OUT, Some(101), 4),
            // Commit 103: records 101 and 102 are done.
            kafka(2, 20, EventKind::Ack, IN, Some(103), 0),
            kafka(2, 30, EventKind::Ack, IN, Some(105), 0),
        ],
    );
    let o = Some("orders".to_owned());
    assert_eq!(
        summary(&obs),
        vec![
            (
                Relation::PublishConfirm,
                o.clone(),
                4,
                3,
                Some(Settlement::Ack)
            ),
            (
                Relation::PublishConfirm,
                o.clone(),
                3,
                2,
                Some(Settlement::Ack)
            ),
            (Relation::PublishDeliver, o.clone(), 10, 2, None),
            (Relation::PublishDeliver, o.clone(), 8, 2, None),
            (
                Relation::DeliverSettle,
                o.clone(),
                10,
                2,
                Some(Settlement::Ack)
            ),
            (Relation::DeliverSettle, o, 20, 2, Some(Settlement::Ack)),
        ]
    );
    assert_eq!(c.pending(Relation::DeliverSettle), 0);
    assert_eq!(c.in_flight().get(&System::Kafka), None);
    // acks=0 produces wait for no confirm.
    let mut fire = kafka(1, 40, EventKind::Publish, IN, None, 1);
    fire.attrs = vec![("acks", "0".into())];
    run(&mut c, &[fire]);
    assert_eq!(c.pending(Relation::PublishConfirm), 0);
}

#[test]
fn message_info_is_kept_only_on_request_and_awaits_tells_what_waits() {
    let events = [
        amqp_publish(1, 0, 1, Some(1), "q", 11),
        amqp_publish(1, 1, 1, None, "q", 22),
        amqp_confirm(1, 3, 1, 1),
        amqp_deliver(2, 5, 1, 1, "q", 11),
        amqp_settle(2, 9, EventKind::Ack, 1, 1, false),
    ];
    let mut plain = Correlator::new(CorrelatorConfig::default());
    let mut awaits = Vec::new();
    let mut obs = Vec::new();
    for e in &events {
        awaits.push(plain.observe(e, &mut |o| obs.push(o)));
    }
    assert!(obs.iter().all(|o| o.start.is_none()));
    let confirm_only = Awaits {
        confirm: true,
        settle: false,
    };
    assert_eq!(
        awaits,
        vec![
            confirm_only,
            Awaits::default(),
            Awaits::default(),
            Awaits {
                confirm: false,
                settle: true
            },
            Awaits::default(),
        ]
    );

    let mut kept = Correlator::new(CorrelatorConfig::default()).keeping_message_info(true);
    let obs = run(&mut kept, &events);
    let starts: Vec<_> = obs
        .iter()
        .map(|o| {
            let s = o.start.as_ref().expect("kept");
            (o.relation, s.kind, s.ts_ns / MS, s.fingerprint, s.conn.id)
        })
        .collect();
    assert_eq!(
        starts,
        vec![
            (
                Relation::PublishConfirm,
                EventKind::Publish,
                0,
                Some(11),
                ConnId(1)
            ),
            (
                Relation::PublishDeliver,
                EventKind::Publish,
                0,
                Some(11),
                ConnId(1)
            ),
            (
                Relation::DeliverSettle,
                EventKind::Deliver,
                5,
                Some(11),
                ConnId(2)
            ),
        ]
    );
}

#[test]
fn kafka_deliveries_start_at_the_publish_with_the_offsets_the_confirm_gave() {
    let mut c = Correlator::new(CorrelatorConfig::default()).keeping_message_info(true);
    let tp = || {
        Some(Destination {
            topic: Some("t".into()),
            partition: Some(0),
            ..Default::default()
        })
    };
    let mut produce = ev(1, 0, System::Kafka, EventKind::Publish, IN);
    produce.destination = tp();
    produce.record_count = Some(3);
    let mut ok = ev(1, 2, System::Kafka, EventKind::Confirm, OUT);
    ok.destination = tp();
    ok.offset = Some(40);
    let mut fetch = ev(2, 5, System::Kafka, EventKind::Deliver, OUT);
    fetch.destination = tp();
    fetch.offset = Some(40);
    fetch.record_count = Some(3);
    let obs = run(&mut c, &[produce, ok, fetch]);
    assert_eq!(obs.len(), 2);
    assert_eq!(obs[0].start.as_ref().unwrap().offset, None);
    let deliver = &obs[1];
    assert_eq!(deliver.relation, Relation::PublishDeliver);
    assert_eq!(deliver.start.as_ref().unwrap().offset, Some(40));
    assert_eq!(deliver.start.as_ref().unwrap().record_count, Some(3));
}
