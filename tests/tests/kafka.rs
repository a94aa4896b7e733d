//! Kafka end to end: a private tansu broker (Kafka protocol) in its own cgroup with real
//! librdkafka clients (confluent-kafka), and a sendfile-serving fetch server; brokerscope decodes
//! produce → confirm with offsets, fetched deliveries, offset commits, request latencies and the
//! consumer lag, exactly as the clients saw them.
use std::collections::BTreeMap;

use observer::{
    correlate::lag::LagTracker,
    event::{BrokerEvent, EventKind, System},
};
use tests::{
    Cgroup, TRACEPARENT, kafka_sendfile_server, of,
    rabbitmq::Json,
    require_root,
    tansu::{SENDFILE_BATCHES, SENDFILE_RECORDS_PER_BATCH, Tansu},
    trace_workload,
};

fn tp(e: &BrokerEvent) -> (String, i32) {
    let d = e.destination.as_ref().expect("destination");
    (
        d.topic.clone().expect("topic"),
        d.partition.expect("partition"),
    )
}

fn trace(pid: u32, work: impl FnOnce() -> Json) -> (Vec<BrokerEvent>, Json) {
    trace_workload(pid, System::Kafka, work)
}

#[test]
fn produce_fetch_commit_and_lag_from_the_wire() {
    require_root();
    let cgroup = Cgroup::create("kafka");
    let tansu = Tansu::start(&cgroup);
    tansu.create_topic("bs-orders", 2);
    let (events, t) = trace(tansu.pid(), || {
        tansu
            .workload("produce-consume", &["--partitions", "2"])
            .json()
    });
    let n = t["count"].u64().unwrap() as usize;
    let topic = "bs-orders";

    // Produce: one publish per partition batch (one record each here), each confirmed with the
    // offset the client's delivery report got.
    let publishes: Vec<_> = of(&events, EventKind::Publish)
        .into_iter()
        .filter(|e| tp(e).0 == topic)
        .collect();
    assert_eq!(publishes.len(), n);
    assert_eq!(
        publishes
            .iter()
            .map(|e| e.record_count.unwrap() as usize)
            .sum::<usize>(),
        n
    );
    let traced: Vec<_> = publishes
        .iter()
        .filter(|e| e.props.as_ref().and_then(|p| p.traceparent.as_deref()) == Some(TRACEPARENT))
        .collect();
    assert_eq!(
        traced.len(),
        1,
        "record 0 carries traceparent in its headers"
    );
    let confirms: Vec<_> = of(&events, EventKind::Confirm)
        .into_iter()
        .filter(|e| tp(e).0 == topic)
        .collect();
    assert_eq!(confirms.len(), n);
    let mut confirmed: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for c in &confirms {
        confirmed
            .entry(tp(c).1)
            .or_default()
            .push(c.offset.unwrap());
    }
    for (p, offsets) in &confirmed {
        let produced: Vec<i64> = t["produced"][p.to_string().as_str()]
            .u64s()
            .into_iter()
            .map(|o| o as i64)
            .collect();
        assert_eq!(
            offsets, &produced,
            "partition {p}: confirmed offsets = delivery reports"
        );
    }
    assert_eq!(of(&events, EventKind::Nack).len(), 0);

    // Fetch: deliveries cover exactly the consumed offsets of each partition.
    let mut delivered: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for d in of(&events, EventKind::Deliver)
        .into_iter()
        .filter(|e| tp(e).0 == topic)
    {
        let first = d.offset.unwrap();
        delivered
            .entry(tp(d).1)
            .or_default()
            .extend(first..first + i64::from(d.record_count.unwrap()));
    }
    for (p, offsets) in &mut delivered {
        offsets.sort_unstable();
        offsets.dedup();
        let consumed: Vec<i64> = t["consumed"][p.to_string().as_str()]
            .u64s()
            .into_iter()
            .map(|o| o as i64)
            .collect();
        assert_eq!(offsets, &consumed, "partition {p}: delivered offsets");
    }
    assert_eq!(delivered.len(), 2);

    // Commits: every OffsetCommit partition is an ack with the group; the last per partition
    // equals what the broker has committed.
    let acks: Vec<_> = of(&events, EventKind::Ack)
        .into_iter()
        .filter(|e| tp(e).0 == topic)
        .collect();
    let partitions_in = |c: &Json| match c {
        Json::Obj(fields) => fields.len(),
        _ => panic!("a commit is an object of partition → offset: {c:?}"),
    };
    let expected_acks: usize = t["commits"].arr().iter().map(partitions_in).sum();
    assert_eq!(acks.len(), expected_acks);
    assert!(
        acks.iter()
            .all(|a| a.destination.as_ref().unwrap().group.as_deref() == Some("bs-group"))
    );
    let mut last: BTreeMap<i32, i64> = BTreeMap::new();
    for a in &acks {
        last.insert(tp(a).1, a.offset.unwrap());
    }
    for (p, off) in &last {
        assert_eq!(
            *off as u64,
            t["committed"][p.to_string().as_str()].u64().unwrap()
        );
    }

    // Requests and responses pair up by connection and correlation id. A request may go
    // unanswered only when its client hung up first: Kafka answers in request order, so it is
    // newer (higher correlation id) than every answered request of its connection.
    let requests = of(&events, EventKind::Request);
    let responses = of(&events, EventKind::Response);
    let corr = |e: &BrokerEvent| -> (u64, i64) {
        let id = e
            .attrs
            .iter()
            .find(|(k, _)| *k == "correlation_id")
            .map(|(_, v)| v.parse().unwrap());
        (e.conn.id.0, id.expect("correlation_id"))
    };
    let asked: BTreeMap<_, _> = requests.iter().map(|e| (corr(e), *e)).collect();
    let answered: BTreeMap<_, _> = responses.iter().map(|e| (corr(e), *e)).collect();
    for (key, resp) in &answered {
        let req = asked
            .get(key)
            .unwrap_or_else(|| panic!("response without request: {resp:?}"));
        assert_eq!(req.method, resp.method);
    }
    for (key @ (conn, id), req) in &asked {
        if !answered.contains_key(key) {
            let newest_answered = answered
                .keys()
                .filter(|(c, _)| c == conn)
                .map(|(_, i)| *i)
                .max();
            assert!(
                newest_answered.is_none_or(|n| n < *id),
                "unanswered before an answered one: {req:?}"
            );
        }
    }
    for api in [
        "ApiVersions",
        "Metadata",
        "Produce",
        "Fetch",
        "OffsetCommit",
    ] {
        assert!(
            responses.iter().any(|e| e.method == Some(api)),
            "{api} answered"
        );
    }
    let produce_responses: Vec<_> = responses
        .iter()
        .filter(|e| e.method == Some("Produce"))
        .collect();
    assert!(
        produce_responses.iter().all(|e| e.latency_ns.is_some()),
        "produce latency measured"
    );
    // A fetch that long-polled is marked, and has no latency (its wait is not broker latency).
    for f in responses.iter().filter(|e| e.method == Some("Fetch")) {
        let long_poll = f
            .attrs
            .iter()
            .any(|(k, v)| *k == "long_poll" && v == "true");
        assert_eq!(f.latency_ns.is_none(), long_poll, "{f:?}");
    }

    // Lag from the wire: everything consumed was committed.
    let mut lag = LagTracker::default();
    events.iter().for_each(|e| lag.observe(e));
    let readings: Vec<_> = lag
        .lag()
        .into_iter()
        .filter(|l| l.group == "bs-group")
        .collect();
    assert_eq!(readings.len(), 2, "{readings:?}");
    assert!(
        readings
            .iter()
            .all(|l| l.lag == 0 && l.high_watermark == 10)
    );
}

#[test]
fn lag_after_a_consumer_stops_halfway() {
    require_root();
    let cgroup = Cgroup::create("kafka-lag");
    let tansu = Tansu::start(&cgroup);
    tansu.create_topic("bs-lag", 1);
    let (events, t) = trace(tansu.pid(), || tansu.workload("half", &[]).json());

    assert_eq!(t["lag"]["0"].u64(), Some(10));
    let mut lag = LagTracker::default();
    events.iter().for_each(|e| lag.observe(e));
    let readings = lag.lag();
    assert_eq!(readings.len(), 1, "{readings:?}");
    let l = &readings[0];
    assert_eq!(
        (l.group.as_str(), l.topic.as_str(), l.partition),
        ("bs-lag-group", "bs-lag", 0)
    );
    assert_eq!((l.high_watermark, l.committed, l.lag), (20, 10, 10));
}

/// Java brokers send fetched records with sendfile(2); socket-level capture sees those bytes
/// like any others, and the decoder stays in sync after them.
#[test]
fn sendfile_fetch_responses_are_decoded() {
    require_root();
    let cgroup = Cgroup::create("kafka-sendfile");
    let server = kafka_sendfile_server!(Some(&cgroup));
    let (events, t) = trace(server.pid(), || {
        server.client(SENDFILE_BATCHES, None).json()
    });
    assert!(t["ok"].bool().unwrap_or(true));
    let stats = server.stats();
    assert!(stats["sendfile_calls"].u64().unwrap() >= SENDFILE_BATCHES);
    let delivers = of(&events, EventKind::Deliver);
    assert_eq!(delivers.len() as u64, SENDFILE_BATCHES, "{delivers:?}");
    let offsets: Vec<i64> = delivers.iter().map(|d| d.offset.unwrap()).collect();
    let expected: Vec<i64> = (0..SENDFILE_BATCHES)
        .map(|b| (b * SENDFILE_RECORDS_PER_BATCH) as i64)
        .collect();
    assert_eq!(offsets, expected);
    assert!(
        delivers
            .iter()
            .all(|d| u64::from(d.record_count.unwrap()) == SENDFILE_RECORDS_PER_BATCH)
    );
    let fetch_responses = of(&events, EventKind::Response)
        .iter()
        .filter(|e| e.method == Some("Fetch"))
        .count();
    assert_eq!(
        fetch_responses as u64, SENDFILE_BATCHES,
        "every response after a sendfile decoded in sync"
    );
}
