//! MQTT end to end: a private Mosquitto (Debian package) in its own cgroup, real paho-mqtt
//! clients (3.1.1 and 5.0), and brokerscope decoding the broker's traffic. Exact event counts and
//! fields against the workload's own ground truth; a rejected login; the password never shows.
use observer::{
    capture::Direction,
    event::{BrokerEvent, EventKind, Outcome, System},
};
use tests::{
    Cgroup, TRACEPARENT, mosquitto::Mosquitto, of, on_port, rabbitmq::Json, require_root,
    trace_workload,
};

fn topic(e: &BrokerEvent) -> Option<&str> {
    e.destination.as_ref()?.topic.as_deref()
}

fn trace(broker: &Mosquitto, run: impl FnOnce() -> Vec<Json>) -> (Vec<BrokerEvent>, Vec<Json>) {
    trace_workload(broker.pid(), System::Mqtt, run)
}

#[test]
fn mqtt_311_qos_levels_retained_and_subscriptions() {
    require_root();
    let cgroup = Cgroup::create("mqtt");
    let broker = Mosquitto::start(&cgroup);
    let (events, truths) = trace(&broker, || vec![broker.workload("qos", &[]).json()]);
    let t = &truths[0];
    let n = t["count"].u64().unwrap() as usize;
    let ports = &t["client_ports"];
    let publisher = on_port(&events, ports["publisher"].u64().unwrap());
    let subscriber = on_port(&events, ports["subscriber"].u64().unwrap());
    let retained_sub = on_port(&events, ports["retained_subscriber"].u64().unwrap());

    assert_eq!(of(&events, EventKind::ConnectionOpened).len(), 3);
    let auths = of(&events, EventKind::Auth);
    assert_eq!(auths.len(), 3);
    assert!(auths.iter().all(|a| a.outcome == Some(Outcome::Success)));
    let ids: Vec<_> = auths
        .iter()
        .filter_map(|a| a.client_id.as_deref())
        .collect();
    for id in ["bs-pub", "bs-sub", "bs-sub-retained"] {
        assert!(ids.contains(&id), "{id} in {ids:?}");
    }

    // Publisher: 3N publishes at QoS 0/1/2 plus the retained message and the one clearing it.
    let pubs = of(&publisher, EventKind::Publish);
    assert_eq!(pubs.len(), t["published_total"].u64().unwrap() as usize);
    for qos in 0..=2u8 {
        let at: Vec<_> = pubs
            .iter()
            .filter(|e| topic(e) == Some(&format!("bs/q{qos}")))
            .collect();
        assert_eq!(at.len(), n, "QoS {qos} publishes");
        assert!(
            at.iter()
                .all(|e| e.qos == Some(qos) && e.direction == Direction::Ingress)
        );
        if qos > 0 {
            let wire: Vec<u64> = t["wire_packet_ids"][qos.to_string().as_str()].u64s();
            let seen: Vec<u64> = at.iter().map(|e| u64::from(e.packet_id.unwrap())).collect();
            assert_eq!(seen, wire, "packet ids of QoS {qos} publishes");
        } else {
            assert!(at.iter().all(|e| e.packet_id.is_none()));
        }
    }
    assert_eq!(pubs[0].body_size, Some("q0-0".len() as u64));
    let retained: Vec<_> = pubs
        .iter()
        .filter(|e| topic(e) == Some("bs/retained"))
        .collect();
    assert_eq!(retained.len(), 2);
    assert!(retained.iter().all(|e| e.retain == Some(true)));
    // Broker → publisher: PUBACK for QoS 1 (N + 2 retained), PUBCOMP for QoS 2 (N).
    let confirms = of(&publisher, EventKind::Confirm);
    assert_eq!(confirms.len(), 2 * n + 2);
    assert_eq!(
        confirms
            .iter()
            .filter(|e| e.method == Some("PUBCOMP"))
            .count(),
        n
    );
    assert_eq!(of(&publisher, EventKind::Deliver).len(), 0);

    // Subscriber: one SUBSCRIBE with three filters, 3N deliveries, settled per QoS.
    let subs = of(&subscriber, EventKind::Subscribe);
    assert_eq!(
        subs.iter()
            .map(|e| (topic(e).unwrap(), e.qos.unwrap()))
            .collect::<Vec<_>>(),
        [("bs/q0", 0), ("bs/q1", 1), ("bs/q2", 2)]
    );
    let delivers = of(&subscriber, EventKind::Deliver);
    assert_eq!(
        delivers.len(),
        t["received_total"].u64().unwrap() as usize - 1
    );
    assert!(
        delivers
            .iter()
            .all(|e| e.direction == Direction::Egress && e.retain != Some(true))
    );
    for qos in 1..=2u8 {
        let ids: Vec<u64> = delivers
            .iter()
            .filter(|e| e.qos == Some(qos))
            .map(|e| u64::from(e.packet_id.unwrap()))
            .collect();
        assert_eq!(
            ids,
            t["subscriber_packet_ids"][qos.to_string().as_str()].u64s()
        );
    }
    let acks = of(&subscriber, EventKind::Ack);
    assert_eq!(
        acks.len(),
        2 * n,
        "PUBACK for QoS 1 and PUBCOMP for QoS 2 deliveries"
    );
    assert!(acks.iter().all(|e| e.direction == Direction::Ingress));
    assert_eq!(of(&subscriber, EventKind::Unsubscribe).len(), 3);
    // The same message on both sides: publish and deliver fingerprints agree.
    let p = pubs.iter().find(|e| topic(e) == Some("bs/q1")).unwrap();
    let d = delivers.iter().find(|e| topic(e) == Some("bs/q1")).unwrap();
    assert_eq!(p.fingerprint, d.fingerprint);

    // The retained message reaches the late subscriber with the retain flag, and is acked.
    let r = of(&retained_sub, EventKind::Deliver);
    assert_eq!(r.len(), 1);
    assert_eq!(
        (topic(r[0]), r[0].retain, r[0].qos),
        (Some("bs/retained"), Some(true), Some(1))
    );
    assert_eq!(of(&retained_sub, EventKind::Ack).len(), 1);
    assert_eq!(of(&retained_sub, EventKind::Subscribe).len(), 1);
    assert_eq!(of(&retained_sub, EventKind::Unsubscribe).len(), 1);
    assert_eq!(of(&events, EventKind::Error).len(), 0);
}

#[test]
fn mqtt_5_topic_alias_and_user_properties() {
    require_root();
    let cgroup = Cgroup::create("mqtt5");
    let broker = Mosquitto::start(&cgroup);
    let (events, truths) = trace(&broker, || vec![broker.workload("v5", &[]).json()]);
    let t = &truths[0];
    let n = t["count"].u64().unwrap() as usize;
    let publisher = on_port(&events, t["client_ports"]["publisher"].u64().unwrap());
    let subscriber = on_port(&events, t["client_ports"]["subscriber"].u64().unwrap());
    let pubs = of(&publisher, EventKind::Publish);
    assert_eq!(pubs.len(), n);
    // Only the first PUBLISH names the topic; the rest carry alias 1, resolved per connection.
    assert!(
        pubs.iter().all(|e| topic(e) == Some("bs/v5/alias")),
        "{pubs:?}"
    );
    let ids: Vec<u64> = pubs
        .iter()
        .map(|e| u64::from(e.packet_id.unwrap()))
        .collect();
    assert_eq!(ids, t["publisher_packet_ids"].u64s());
    assert_eq!(
        pubs[0]
            .props
            .as_ref()
            .and_then(|p| p.traceparent.as_deref()),
        Some(TRACEPARENT)
    );
    assert!(
        pubs[1]
            .props
            .as_ref()
            .and_then(|p| p.traceparent.as_deref())
            .is_none()
    );
    assert_eq!(of(&publisher, EventKind::Confirm).len(), n);
    let delivers = of(&subscriber, EventKind::Deliver);
    assert_eq!(delivers.len(), n);
    assert!(delivers.iter().all(|e| topic(e) == Some("bs/v5/alias")));
    assert_eq!(
        delivers[0]
            .props
            .as_ref()
            .and_then(|p| p.traceparent.as_deref()),
        Some(TRACEPARENT)
    );
    assert_eq!(of(&subscriber, EventKind::Ack).len(), n);
    let auths = of(&events, EventKind::Auth);
    assert_eq!(auths.len(), 2);
    assert!(auths.iter().all(|a| a.outcome == Some(Outcome::Success)));
}

#[test]
fn mqtt_rejected_login_is_an_auth_failure() {
    require_root();
    let cgroup = Cgroup::create("mqtt-auth");
    let broker = Mosquitto::start_with_password(&cgroup, "brokerscope", "good-Pa55word");
    let (events, truths) = trace(&broker, || {
        vec![
            broker.workload("badlogin", &[]).json(),
            broker.workload("goodlogin", &[]).json(),
            broker.workload("badlogin", &["--protocol", "5"]).json(),
        ]
    });
    assert!(truths[0]["auth_failed"].bool().unwrap());
    let auths = of(&events, EventKind::Auth);
    assert_eq!(auths.len(), 3, "{auths:?}");
    let failed: Vec<_> = auths
        .iter()
        .filter(|a| a.outcome == Some(Outcome::Failure))
        .collect();
    assert_eq!(failed.len(), 2);
    assert!(
        failed
            .iter()
            .all(|a| a.user.as_deref() == Some("brokerscope"))
    );
    let codes: Vec<u16> = failed.iter().map(|a| a.reply_code.unwrap()).collect();
    assert!(
        codes.contains(&5) && codes.iter().any(|&c| c >= 0x80),
        "3.1.1 rc 5 and a 5.0 reason: {codes:?}"
    );
    let ok: Vec<_> = auths
        .iter()
        .filter(|a| a.outcome == Some(Outcome::Success))
        .collect();
    assert_eq!(ok.len(), 1);
    assert_eq!(ok[0].user.as_deref(), Some("brokerscope"));
    assert_eq!(of(&events, EventKind::Publish).len(), 1);
    assert_eq!(of(&events, EventKind::Confirm).len(), 1);
}
