use std::sync::Arc;

use super::*;
use crate::{
    capture::Direction,
    correlate::{Correlator, CorrelatorConfig},
    event::ConnRef,
};

fn ev(conn: u64, system: System, kind: EventKind) -> BrokerEvent {
    BrokerEvent::new(
        1_000_000,
        system,
        kind,
        ConnRef {
            id: ConnId(conn),
            pid: Some(1),
            local: "127.0.0.1:1883".parse().unwrap(),
            peer: "127.0.0.1:40000".parse().unwrap(),
        },
        Direction::Ingress,
    )
}

fn topic(e: &mut BrokerEvent, t: &str) {
    e.destination = Some(Destination {
        topic: Some(t.into()),
        ..Default::default()
    });
}

fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    text.lines().find(|l| l.starts_with(prefix))
}

fn value(text: &str, prefix: &str) -> f64 {
    line(text, prefix)
        .unwrap_or_else(|| panic!("no line {prefix:?} in\n{text}"))
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn message_counters_gauges_and_histograms() {
    let metrics = Arc::new(Metrics::new());
    let mut r = Recorder::new(metrics.clone(), Labeler::new(100, Vec::new()));
    r.event(&ev(1, System::Mqtt, EventKind::ConnectionOpened));
    r.event(&ev(2, System::Mqtt, EventKind::ConnectionOpened));
    for t in ["a/1", "a/2"] {
        let mut s = ev(2, System::Mqtt, EventKind::Subscribe);
        topic(&mut s, t);
        r.event(&s);
    }
    for i in 0..3 {
        let mut p = ev(1, System::Mqtt, EventKind::Publish);
        topic(&mut p, &format!("sensor/{i}/temp"));
        p.body_size = Some(10);
        r.event(&p);
    }
    let mut k = ev(3, System::Kafka, EventKind::Deliver);
    topic(&mut k, "orders");
    k.record_count = Some(5);
    k.body_size = Some(500);
    r.event(&k);
    let mut auth = ev(4, System::Amqp, EventKind::Auth);
    auth.outcome = Some(Outcome::Failure);
    r.event(&auth);
    let mut err = ev(4, System::Amqp, EventKind::Error);
    err.reply_code = Some(404);
    r.event(&err);
    r.event(&ev(2, System::Mqtt, EventKind::ConnectionClosed));
    let text = metrics.encode();
    assert_eq!(
        value(
            &text,
            "brokerscope_messages_published_total{system=\"mqtt\",destination=\"sensor/{n}/temp\"}"
        ),
        3.0
    );
    assert_eq!(
        value(
            &text,
            "brokerscope_published_bytes_total{system=\"mqtt\",destination=\"sensor/{n}/temp\"}"
        ),
        30.0
    );
    assert_eq!(
        value(
            &text,
            "brokerscope_messages_delivered_total{system=\"kafka\",destination=\"orders\"}"
        ),
        5.0
    );
    assert_eq!(
        value(&text, "brokerscope_connections_active{system=\"mqtt\"}"),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "brokerscope_connections_opened_total{system=\"mqtt\"}"
        ),
        2.0
    );
    assert_eq!(
        value(&text, "brokerscope_subscriptions_active{system=\"mqtt\"}"),
        0.0,
        "the closed connection took its subscriptions"
    );
    assert_eq!(
        value(&text, "brokerscope_auth_failures_total{system=\"amqp\"}"),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "brokerscope_protocol_errors_total{system=\"amqp\",code=\"404\"}"
        ),
        1.0
    );
    assert!(text.trim_end().ends_with("# EOF"));
}

#[test]
fn observations_fill_histograms_with_counts() {
    let metrics = Arc::new(Metrics::new());
    let mut r = Recorder::new(metrics.clone(), Labeler::new(100, Vec::new()));
    let mut c = Correlator::new(CorrelatorConfig::default());
    let mut p = ev(1, System::Kafka, EventKind::Publish);
    topic(&mut p, "orders");
    p.destination.as_mut().unwrap().partition = Some(0);
    p.record_count = Some(4);
    let mut ok = p.clone();
    ok.kind = EventKind::Confirm;
    ok.direction = Direction::Egress;
    ok.offset = Some(0);
    ok.ts_ns += 250_000;
    for e in [&p, &ok] {
        r.event(e);
        c.observe(e, &mut |o| r.observation(&o));
    }
    let text = metrics.encode();
    let base = "brokerscope_publish_confirm_latency_seconds";
    assert!(text.contains(&format!("# TYPE {base} histogram")));
    assert!(text.contains(&format!("# UNIT {base} seconds")));
    assert_eq!(
        value(
            &text,
            &format!("{base}_count{{system=\"kafka\",destination=\"orders\"}}")
        ),
        4.0,
        "one sample per record"
    );
    assert_eq!(
        value(
            &text,
            &format!("{base}_bucket{{le=\"0.0002\",system=\"kafka\",destination=\"orders\"}}")
        ),
        0.0
    );
    assert_eq!(
        value(
            &text,
            &format!("{base}_bucket{{le=\"0.0003\",system=\"kafka\",destination=\"orders\"}}")
        ),
        4.0
    );
    assert_eq!(
        value(
            &text,
            "brokerscope_messages_confirmed_total{system=\"kafka\",destination=\"orders\"}"
        ),
        4.0
    );
}

#[test]
fn destination_cap_overflows_and_is_reported() {
    let metrics = Arc::new(Metrics::new());
    let mut r = Recorder::new(metrics.clone(), Labeler::new(5, Vec::new()));
    for i in 0..50 {
        let mut p = ev(1, System::Mqtt, EventKind::Publish);
        topic(
            &mut p,
            &format!("room-{}", char::from(b'a' + (i % 26) as u8)).repeat(1 + i / 26),
        );
        r.event(&p);
    }
    let c = Correlator::new(CorrelatorConfig::default());
    r.health(None, &Default::default(), &Default::default(), &c, 0);
    let text = metrics.encode();
    assert_eq!(value(&text, "brokerscope_destinations "), 5.0);
    assert_eq!(
        value(&text, "brokerscope_destinations_overflow_total "),
        45.0
    );
    assert_eq!(
        value(
            &text,
            "brokerscope_messages_published_total{system=\"mqtt\",destination=\"__overflow__\"}"
        ),
        45.0
    );
    let series = text
        .lines()
        .filter(|l| l.starts_with("brokerscope_messages_published_total{"))
        .count();
    assert_eq!(series, 6);
}

#[test]
fn known_health_series_exist_at_zero_from_the_start() {
    let m = Metrics::new();
    let before = m.encode();
    assert!(!before.contains("brokerscope_correlations_evicted_total{"));
    m.init_known_series();
    let text = m.encode();
    for series in [
        "brokerscope_kernel_events_total{counter=\"chunks_lost\"}",
        "brokerscope_stream_gap_bytes_total{reason=\"lost\"}",
        "brokerscope_connections_undecoded_total{reason=\"unsupported\"}",
        "brokerscope_parse_errors_total{system=\"kafka\"}",
        "brokerscope_resyncs_total{system=\"amqp\"}",
        "brokerscope_oversize_frames_total{system=\"nats\"}",
        "brokerscope_skipped_bytes_total{system=\"mqtt\"}",
        "brokerscope_messages_in_flight{system=\"mqtt\"}",
        "brokerscope_correlations_evicted_total{relation=\"publish_confirm\"}",
        "brokerscope_correlations_unmatched_total{relation=\"deliver_settle\"}",
        "brokerscope_correlations_pending{relation=\"publish_deliver\"}",
    ] {
        assert_eq!(value(&text, series), 0.0, "{series} in\n{text}");
    }
}

#[test]
fn queue_declare_ok_sets_depth_and_consumers_and_purge_ok_does_not() {
    let metrics = Arc::new(Metrics::new());
    let mut r = Recorder::new(metrics.clone(), Labeler::new(10, vec![]));
    let queue = |e: &mut BrokerEvent| {
        e.destination = Some(Destination {
            queue: Some("orders".into()),
            vhost: Some("/".into()),
            ..Default::default()
        });
    };
    let mut ok = ev(1, System::Amqp, EventKind::Control);
    ok.method = Some("queue.declare-ok");
    queue(&mut ok);
    ok.message_count = Some(7);
    ok.consumer_count = Some(2);
    r.event(&ok);
    // purge-ok's message_count is what was purged, not what is left.
    let mut purge = ev(1, System::Amqp, EventKind::Control);
    purge.method = Some("queue.purge-ok");
    queue(&mut purge);
    purge.message_count = Some(99);
    r.event(&purge);
    let text = metrics.encode();
    let labels = "{system=\"amqp\",destination=\"orders\",vhost=\"/\"}";
    assert_eq!(
        value(&text, &format!("brokerscope_queue_messages{labels}")),
        7.0
    );
    assert_eq!(
        value(&text, &format!("brokerscope_queue_consumers{labels}")),
        2.0
    );
}

/// A Brokers table where pid 10 runs in pod `mqtt-7d9f8c6b5d-x2x4q` of Deployment `mqtt` and
/// pid 11 is a host process (fake procfs, pod list installed in the cache directly).
fn brokers_with_a_pod(tag: &str) -> (Arc<crate::k8s::Brokers>, std::path::PathBuf) {
    let id = "1".repeat(64);
    let root = std::env::temp_dir().join(format!("bs-metrics-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(root.join("10")).unwrap();
    std::fs::create_dir_all(root.join("11")).unwrap();
    std::fs::write(
        root.join("10/cgroup"),
        format!("0::/kubepods/besteffort/pod0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9/{id}\n"),
    )
    .unwrap();
    std::fs::write(root.join("11/cgroup"), "0::/user.slice\n").unwrap();
    let list: crate::k8s::pods::PodList = serde_json::from_value(serde_json::json!({"items": [{
        "metadata": {"name": "mqtt-7d9f8c6b5d-x2x4q", "namespace": "messaging",
            "uid": "0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9",
            "labels": {"pod-template-hash": "7d9f8c6b5d"},
            "ownerReferences": [{"kind": "ReplicaSet", "name": "mqtt-7d9f8c6b5d", "controller": true}]},
        "spec": {"nodeName": "node-a"},
        "status": {"containerStatuses": [{"name": "mosquitto", "containerID": format!("containerd://{id}")}]}
    }]}))
    .unwrap();
    let cache = crate::k8s::PodCache::new();
    cache.install(list.items.into_iter().map(|p| p.entries()).collect(), 100);
    let brokers = crate::k8s::Brokers::new(crate::capture::procfs::ProcFs::new(&root), Some(cache));
    (Arc::new(brokers), root)
}

#[test]
fn broker_labels_on_per_broker_families_only_when_asked() {
    let (brokers, root) = brokers_with_a_pod("labels");
    let pod = r#"namespace="messaging",pod="mqtt-7d9f8c6b5d-x2x4q",workload="mqtt""#;
    for on in [true, false] {
        let metrics = Arc::new(Metrics::new());
        let mut r = Recorder::new(metrics.clone(), Labeler::new(100, Vec::new()));
        if on {
            r = r.with_broker_labels(brokers.clone());
        }
        let mut c = Correlator::new(CorrelatorConfig::default());
        for (conn, pid, n) in [(1u64, 10u32, 3), (2, 11, 2)] {
            let mut open = ev(conn, System::Mqtt, EventKind::ConnectionOpened);
            open.conn.pid = Some(pid);
            r.event(&open);
            for i in 0..n {
                let mut p = ev(conn, System::Mqtt, EventKind::Publish);
                p.conn.pid = Some(pid);
                p.packet_id = Some(i + 1);
                p.qos = Some(1);
                topic(&mut p, "t");
                r.event(&p);
                c.observe(&p, &mut |o| r.observation(&o));
                let mut ack = ev(conn, System::Mqtt, EventKind::Confirm);
                ack.conn.pid = Some(pid);
                ack.direction = Direction::Egress;
                ack.packet_id = Some(i + 1);
                ack.ts_ns += 1000;
                r.event(&ack);
                c.observe(&ack, &mut |o| r.observation(&o));
            }
        }
        let text = metrics.encode();
        if on {
            assert_eq!(
                value(
                    &text,
                    &format!(
                        r#"brokerscope_messages_published_total{{system="mqtt",destination="t",{pod}}}"#
                    )
                ),
                3.0
            );
            assert_eq!(
                value(
                    &text,
                    r#"brokerscope_messages_published_total{system="mqtt",destination="t"}"#
                ),
                2.0
            );
            assert_eq!(
                value(
                    &text,
                    &format!(
                        r#"brokerscope_messages_confirmed_total{{system="mqtt",destination="t",{pod}}}"#
                    )
                ),
                3.0
            );
            assert_eq!(
                value(
                    &text,
                    &format!(
                        r#"brokerscope_publish_confirm_latency_seconds_count{{system="mqtt",destination="t",{pod}}}"#
                    )
                ),
                3.0
            );
            assert_eq!(
                value(
                    &text,
                    &format!(r#"brokerscope_connections_active{{system="mqtt",{pod}}}"#)
                ),
                1.0
            );
            assert_eq!(
                value(&text, r#"brokerscope_connections_active{system="mqtt"}"#),
                1.0
            );
        } else {
            assert!(!text.contains("workload="), "{text}");
            assert_eq!(
                value(
                    &text,
                    r#"brokerscope_messages_published_total{system="mqtt",destination="t"}"#
                ),
                5.0
            );
            assert_eq!(
                value(
                    &text,
                    r#"brokerscope_publish_confirm_latency_seconds_count{system="mqtt",destination="t"}"#
                ),
                5.0
            );
        }
    }
    std::fs::remove_dir_all(&root).unwrap();
}
