//! What the daemon spends per decoded event after decoding: correlation and metrics.
//!
//! `cargo bench -p observer --bench events`. A QoS 1 MQTT message makes four events (publish,
//! confirm, deliver, ack); distinct bodies and a handful of topics, as in a real workload.
use std::{hint::black_box, sync::Arc};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use observer::{
    capture::{ConnId, Direction},
    correlate::{Correlator, CorrelatorConfig},
    event::{BrokerEvent, ConnRef, Destination, EventKind, System},
    metrics::{Metrics, Recorder, labels::Labeler},
};

fn event(conn: u64, ts: u64, kind: EventKind, dir: Direction, id: u32, topic: &str) -> BrokerEvent {
    let mut e = BrokerEvent::new(
        ts,
        System::Mqtt,
        kind,
        ConnRef {
            id: ConnId(conn),
            pid: Some(1),
            local: "127.0.0.1:1883".parse().unwrap(),
            peer: format!("127.0.0.1:{}", 40000 + conn).parse().unwrap(),
        },
        dir,
    );
    e.packet_id = Some(id);
    e.qos = Some(1);
    e.body_size = Some(64);
    e.fingerprint = Some(u64::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    e.destination = Some(Destination {
        topic: Some(topic.to_owned()),
        ..Default::default()
    });
    e
}

fn messages(n: u32) -> Vec<BrokerEvent> {
    let topics: Vec<String> = (0..8).map(|i| format!("sensors/site-{i}/temp")).collect();
    let mut out = Vec::with_capacity(4 * n as usize);
    for i in 0..n {
        let id = i % 65535 + 1;
        let ts = u64::from(i) * 10_000;
        let topic = &topics[i as usize % topics.len()];
        out.push(event(
            1,
            ts,
            EventKind::Publish,
            Direction::Ingress,
            id,
            topic,
        ));
        out.push(event(
            1,
            ts + 2_000,
            EventKind::Confirm,
            Direction::Egress,
            id,
            topic,
        ));
        out.push(event(
            2,
            ts + 3_000,
            EventKind::Deliver,
            Direction::Egress,
            id,
            topic,
        ));
        out.push(event(
            2,
            ts + 5_000,
            EventKind::Ack,
            Direction::Ingress,
            id,
            topic,
        ));
    }
    out
}

fn bench(c: &mut Criterion) {
    let events = messages(10_000);
    let mut group = c.benchmark_group("events");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("correlate+metrics", |b| {
        b.iter(|| {
            let mut recorder =
                Recorder::new(Arc::new(Metrics::new()), Labeler::new(500, Vec::new()));
            let mut correlator = Correlator::new(CorrelatorConfig::default());
            for e in &events {
                recorder.event(e);
                correlator.observe(e, &mut |o| recorder.observation(&o));
            }
            black_box(correlator.stats().clone())
        })
    });
    // Steady state, as in a long-running daemon: one correlator fed round after round, so the
    // publish → deliver table (entries stay for fan-out until TTL or cap) sits at its cap and
    // every publish evicts the oldest.
    let mut steady = events.clone();
    let mut recorder = Recorder::new(Arc::new(Metrics::new()), Labeler::new(500, Vec::new()));
    let mut correlator = Correlator::new(CorrelatorConfig::default());
    let mut round: u64 = 0;
    group.bench_function("correlate+metrics steady", |b| {
        b.iter(|| {
            round += 1;
            for e in steady.iter_mut() {
                e.ts_ns += 100_000_000;
                e.fingerprint = e.fingerprint.map(|f| f ^ round.rotate_left(40));
            }
            for e in &steady {
                recorder.event(e);
                correlator.observe(e, &mut |o| recorder.observation(&o));
            }
        })
    });
    black_box(correlator.stats().clone());
    group.bench_function("metrics only", |b| {
        b.iter(|| {
            let mut recorder =
                Recorder::new(Arc::new(Metrics::new()), Labeler::new(500, Vec::new()));
            for e in &events {
                recorder.event(e);
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
