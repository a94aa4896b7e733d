use std::sync::Arc;

use super::*;
use crate::{
    capture::{ConnId, Direction},
    correlate::{Correlator, CorrelatorConfig, Labels},
    event::{ConnRef, Destination},
};

const MS: u64 = 1_000_000;

fn ev(conn: u64, ts_ns: u64, kind: EventKind, dir: Direction) -> BrokerEvent {
    BrokerEvent::new(
        ts_ns,
        System::Amqp,
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

fn obs(
    relation: Relation,
    dest: &str,
    latency_ns: u64,
    settlement: Option<Settlement>,
) -> Observation {
    Observation {
        relation,
        labels: Labels {
            system: System::Amqp,
            destination: Some(Arc::from(dest)),
            vhost: None,
            pid: None,
        },
        latency_ns,
        count: 1,
        settlement,
        start: None,
    }
}

/// A deterministic pseudo-random stream (xorshift), uniform in [0, 1).
fn uniform(seed: &mut u64) -> f64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    (*seed >> 11) as f64 / (1u64 << 53) as f64
}

#[test]
fn histogram_buckets_cover_the_range_within_one_percent() {
    for ns in [
        1_024u64,
        1_500,
        999_999,
        50 * MS,
        3_000_000_000,
        100_000_000_000,
    ] {
        let (low, high) = LogHistogram::bounds(LogHistogram::index(ns));
        assert!(low <= ns && ns < high, "{ns} not in [{low}, {high})");
        let mid = low + (high - low) / 2;
        let err = (mid as f64 - ns as f64).abs() / ns as f64;
        assert!(err <= 0.01, "{ns}: midpoint {mid} off by {err}");
    }
    // Bounds are contiguous.
    for i in 0..histogram::BUCKETS - 1 {
        assert_eq!(LogHistogram::bounds(i).1, LogHistogram::bounds(i + 1).0);
    }
    // Out of range values are clamped into the first and last bucket, but min/max stay exact.
    let mut h = LogHistogram::new();
    h.record(10);
    h.record(500_000_000_000);
    assert_eq!(h.min(), 10);
    assert_eq!(h.max(), 500_000_000_000);
    assert_eq!(
        h.quantile(0.0),
        10.max(LogHistogram::bounds(0).0 + 8).min(h.max())
    );
    assert_eq!(h.quantile(1.0), 500_000_000_000);
}

#[test]
fn quantiles_of_a_known_distribution_are_within_one_percent() {
    // Log-uniform between 10 µs and 10 s: quantile q is 10 µs · 10^(6q), exactly known.
    let mut h = LogHistogram::new();
    let mut values = Vec::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..200_000 {
        let v = (10_000.0 * 10f64.powf(6.0 * uniform(&mut seed))) as u64;
        h.record(v);
        values.push(v);
    }
    values.sort_unstable();
    for q in [0.5, 0.9, 0.99, 0.999] {
        let exact = values[((q * values.len() as f64).ceil() as usize) - 1] as f64;
        let got = h.quantile(q) as f64;
        let err = (got - exact).abs() / exact;
        assert!(err < 0.01, "q{q}: {got} vs exact {exact} ({err})");
        let theory = 10_000.0 * 10f64.powf(6.0 * q);
        assert!(
            (got - theory).abs() / theory < 0.05,
            "q{q}: {got} vs {theory}"
        );
    }
    assert_eq!(h.count(), 200_000);
    assert_eq!(h.max(), *values.last().unwrap());
    assert_eq!(h.quantile(1.0), h.max());
    let in_buckets: u64 = h.buckets().map(|(_, _, c)| c).sum();
    assert_eq!(in_buckets, 200_000);
    let octaves: u64 = h.octaves().iter().map(|(_, c)| c).sum();
    assert_eq!(octaves, 200_000);
}

#[test]
fn a_constant_latency_is_reported_almost_exactly() {
    let mut h = LogHistogram::new();
    for _ in 0..20 {
        h.record(50 * MS + 123_456);
    }
    // min = max clamps every quantile to the value itself.
    assert_eq!(h.quantile(0.5), 50 * MS + 123_456);
    h.record(51 * MS);
    let p50 = h.quantile(0.5) as f64;
    assert!((p50 - 50.12e6).abs() / 50.12e6 < 0.01, "{p50}");
}

#[test]
fn slowest_is_bounded_and_ordered() {
    let mut live = LiveStats::new(5);
    let end = ev(1, 10_000 * MS, EventKind::Ack, Direction::Ingress);
    let mut seed = 42u64;
    let mut all = Vec::new();
    for _ in 0..1000 {
        let l = (uniform(&mut seed) * 1e9) as u64 + 1;
        all.push(l);
        live.observation(
            &obs(Relation::DeliverSettle, "q", l, Some(Settlement::Ack)),
            &end,
        );
    }
    all.sort_unstable_by(|a, b| b.cmp(a));
    let slow = live.slowest();
    assert_eq!(slow.len(), 5);
    let got: Vec<u64> = slow.iter().map(|m| m.latency_ns).collect();
    assert_eq!(got, all[..5]);
    assert_eq!(slow[0].start_ns, end.ts_ns - slow[0].latency_ns);
    assert_eq!(slow[0].stage, "deliver_ack");

    // Equal latencies: the first ones seen stay, in arrival order.
    let mut s = Slowest::new(2);
    for tag in 0..4 {
        let mut m = SlowMessage::of(&obs(Relation::PublishDeliver, "q", 7, None), &end);
        m.delivery_tag = Some(tag);
        s.push(m);
    }
    let tags: Vec<_> = s.sorted().iter().map(|m| m.delivery_tag).collect();
    assert_eq!(tags, [Some(0), Some(1)]);
    assert!(Slowest::new(0).sorted().is_empty());
    assert!(!Slowest::new(0).admits(u64::MAX));
}

#[test]
fn stages_counts_and_errors_per_destination() {
    let mut live = LiveStats::new(3);
    let end = ev(1, 5_000 * MS, EventKind::Ack, Direction::Ingress);
    for i in 0..10 {
        live.observation(
            &obs(
                Relation::DeliverSettle,
                "work",
                (50 + i) * MS,
                Some(Settlement::Ack),
            ),
            &end,
        );
        live.observation(
            &obs(
                Relation::PublishConfirm,
                "amq.default/work",
                MS,
                Some(Settlement::Ack),
            ),
            &end,
        );
        live.observation(&obs(Relation::PublishDeliver, "work", 2 * MS, None), &end);
    }
    live.observation(
        &obs(
            Relation::DeliverSettle,
            "work",
            900 * MS,
            Some(Settlement::Reject),
        ),
        &end,
    );
    live.observation(
        &obs(
            Relation::PublishConfirm,
            "amq.default/work",
            3 * MS,
            Some(Settlement::Nack),
        ),
        &end,
    );
    let r = live.report(10.0);
    let stage = |d: &str, s: &str| {
        r.stages
            .iter()
            .find(|x| x.destination.as_deref() == Some(d) && x.stage == s)
            .unwrap()
    };
    let ack = stage("work", "deliver_ack");
    assert_eq!(ack.count, 10, "a reject is an error, not an ack latency");
    assert!(
        (ack.p50_ns as f64 - 54e6).abs() / 54e6 < 0.01,
        "{}",
        ack.p50_ns
    );
    assert_eq!(ack.max_ns, 59 * MS);
    assert_eq!(stage("amq.default/work", "publish_confirm").count, 10);
    assert_eq!(stage("work", "publish_deliver").p50_ns, 2 * MS);
    let work = r
        .destinations
        .iter()
        .find(|d| d.destination.as_deref() == Some("work"))
        .unwrap();
    assert_eq!((work.acked, work.rejected, work.errors), (10, 1, 1));
    let x = r
        .destinations
        .iter()
        .find(|d| d.destination.as_deref() == Some("amq.default/work"))
        .unwrap();
    assert_eq!((x.confirmed, x.nacked, x.errors), (10, 1, 1));
    // The reject is the slowest observation even though it is no ack latency.
    assert_eq!(r.slowest[0].settlement, Some("reject"));
    assert_eq!(r.slowest[0].latency_ns, 900 * MS);
}

#[test]
fn events_count_messages_rates_and_protocol_errors() {
    let mut live = LiveStats::new(0);
    for i in 0..20 {
        let mut p = ev(1, i * 100 * MS, EventKind::Publish, Direction::Ingress);
        p.destination = Some(Destination {
            exchange: Some(String::new()),
            routing_key: Some("work".into()),
            ..Default::default()
        });
        live.event(&p);
        let mut d = ev(2, i * 100 * MS + MS, EventKind::Deliver, Direction::Egress);
        d.destination = Some(Destination {
            queue: Some("work".into()),
            ..Default::default()
        });
        live.event(&d);
    }
    live.event(&ev(1, 2_000 * MS, EventKind::Error, Direction::Egress));
    let r = live.report(4.0);
    let get = |n: Option<&str>| {
        r.destinations
            .iter()
            .find(|d| d.destination.as_deref() == n)
            .unwrap()
    };
    assert_eq!(get(Some("amq.default/work")).published, 20);
    assert_eq!(get(Some("amq.default/work")).publish_rate, 5.0);
    assert_eq!(get(Some("work")).delivered, 20);
    assert_eq!(get(None).protocol_errors, 1);
    assert_eq!(r.events, 41);
    assert!((live.span_seconds() - 2.0).abs() < 1e-9);
    let json = serde_json::to_value(&r).unwrap();
    assert!(json["slowest"].as_array().unwrap().is_empty());
}

#[test]
fn fed_by_a_correlator_with_message_info_the_slowest_carry_ids() {
    let mut c = Correlator::new(CorrelatorConfig::default()).keeping_message_info(true);
    let mut live = LiveStats::new(2);
    let mut d = ev(2, 1_000 * MS, EventKind::Deliver, Direction::Egress);
    d.channel = Some(1);
    d.delivery_tag = Some(7);
    d.consumer_tag = Some("ctag".into());
    d.destination = Some(Destination {
        queue: Some("work".into()),
        ..Default::default()
    });
    let mut a = ev(2, 1_050 * MS, EventKind::Ack, Direction::Ingress);
    a.channel = Some(1);
    a.delivery_tag = Some(7);
    a.multiple = Some(false);
    for e in [&d, &a] {
        live.event(e);
        c.observe(e, &mut |o| live.observation(&o, e));
    }
    let slow = live.slowest();
    assert_eq!(slow.len(), 1, "{slow:?}");
    assert_eq!(slow[0].latency_ns, 50 * MS);
    assert_eq!(slow[0].start_ns, 1_000 * MS);
    assert_eq!(slow[0].end_ns, 1_050 * MS);
    assert_eq!(slow[0].delivery_tag, Some(7));
    assert_eq!(slow[0].destination.as_deref(), Some("work"));
}
