//! Synthesized spans end to end: `brokerscope run` exporting over OTLP (gRPC and HTTP) to a
//! real receiver while real clients run workloads. Exact span counts, names, kinds,
//! attributes and parent/trace relations per protocol; a producer's own `traceparent`
//! joined; two observers on two NATS cluster nodes whose spans join with no coordination.
use std::{
    collections::{BTreeMap, BTreeSet},
    process::Command,
    time::Duration,
};

use tests::{
    CANARY, Cgroup, TRACEPARENT, TempDir,
    daemon::Daemon,
    free_port,
    mosquitto::Mosquitto,
    nats::NatsServer,
    otlp::{OtlpReceiver, ReceivedSpan},
    rabbitmq::RabbitMq,
    require_root, spawn,
    tansu::{LATENCY_TOPIC, Tansu},
    wait_for_port,
};

const WAIT: Duration = Duration::from_secs(20);

/// "KIND name" → count.
fn by_name(spans: &[ReceivedSpan]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for s in spans {
        *out.entry(format!("{} {}", s.kind, s.name)).or_default() += 1;
    }
    out
}

fn expect(rows: &[(&str, usize)]) -> BTreeMap<String, usize> {
    rows.iter().map(|(k, n)| (k.to_string(), *n)).collect()
}

fn named<'a>(spans: &'a [ReceivedSpan], name: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|s| s.name == name).collect()
}

/// Every `process` and `deliver` span hangs off a `send` span of its own trace; one trace
/// per message; attributes every span has.
fn check_tree(
    spans: &[ReceivedSpan],
    send: &str,
    deliver: &str,
    process: &str,
    n: usize,
    system: &str,
) {
    let sends: BTreeMap<&str, &ReceivedSpan> = named(spans, send)
        .into_iter()
        .map(|s| (s.trace_id.as_str(), s))
        .collect();
    assert_eq!(sends.len(), n, "one trace per message");
    for s in sends.values() {
        assert_eq!(s.kind, "PRODUCER");
        assert_eq!(s.attr_str("messaging.operation.type"), Some("send"));
        assert!(s.end_ns >= s.start_ns);
    }
    for name in [deliver, process] {
        let children = named(spans, name);
        assert_eq!(children.len(), n, "{name}");
        for c in children {
            let parent = sends
                .get(c.trace_id.as_str())
                .unwrap_or_else(|| panic!("{name} span in a trace without a send span: {c:#?}"));
            assert_eq!(
                c.parent_span_id, parent.span_id,
                "{name} is a child of send"
            );
            assert!(
                c.start_ns >= parent.start_ns,
                "{name} starts after the publish"
            );
        }
    }
    for s in spans {
        assert_eq!(s.attr_str("messaging.system"), Some(system), "{s:#?}");
        assert_eq!(s.resource_str("service.name"), Some("brokerscope"));
        assert!(s.resource_str("host.name").is_some());
        assert!(s.attr_i64("process.pid").is_some() && s.attr_i64("server.port").is_some());
        assert!(s.attr_str("network.peer.address").is_some());
        assert!(!format!("{s:?}").contains(CANARY));
    }
}

fn start(pid: u32, rx: &OtlpReceiver, protocol: &str) -> Daemon {
    let pid = pid.to_string();
    let endpoint = rx.endpoint();
    Daemon::start(&[
        "--no-discover",
        "--pid",
        &pid,
        "--otlp-endpoint",
        &endpoint,
        "--otlp-protocol",
        protocol,
    ])
}

#[test]
fn mqtt_spans_over_grpc() {
    require_root();
    let cgroup = Cgroup::create("spans-mqtt");
    let broker = Mosquitto::start(&cgroup);
    let rx = OtlpReceiver::start_grpc();
    let d = start(broker.pid(), &rx, "grpc");
    let truth = broker
        .workload("confirm-latency", &["--count", "20"])
        .json();
    assert_eq!(truth["published"].u64(), Some(20));
    let spans = rx.wait_for(WAIT, |s| s.len() >= 60);
    d.stop();
    assert_eq!(
        by_name(&spans),
        expect(&[
            ("PRODUCER send latency/t", 20),
            ("INTERNAL deliver latency/t", 20),
            ("CONSUMER process latency/t", 20),
        ])
    );
    check_tree(
        &spans,
        "send latency/t",
        "deliver latency/t",
        "process latency/t",
        20,
        "mqtt",
    );
    let sub_port = truth["client_ports"]["subscriber"].u64().unwrap() as i64;
    for p in named(&spans, "process latency/t") {
        assert_eq!(p.attr_str("messaging.operation.type"), Some("process"));
        assert_eq!(p.attr_i64("network.peer.port"), Some(sub_port));
        assert_eq!(p.attr_str("messaging.destination.name"), Some("latency/t"));
        assert_eq!(p.attr_i64("messaging.message.body.size"), Some(100));
    }
    // Each publish waited for its PUBACK: the send span lasts from PUBLISH to PUBACK.
    assert!(
        named(&spans, "send latency/t")
            .iter()
            .all(|s| s.end_ns > s.start_ns)
    );
}

#[test]
fn rabbitmq_spans_over_http_and_a_producers_traceparent() {
    require_root();
    let cgroup = Cgroup::create("spans-amqp");
    let broker = RabbitMq::start(&cgroup);
    let rx = OtlpReceiver::start_http();
    let d = start(broker.broker_pid(), &rx, "http/protobuf");
    let truth = broker
        .workload("confirm-latency", &["--count", "20"])
        .json();
    assert_eq!(truth["published"].u64(), Some(20));
    let spans = rx.wait_for(WAIT, |s| s.len() >= 60);
    let latency: Vec<ReceivedSpan> = spans
        .iter()
        .filter(|s| s.name.ends_with("latency") || s.name == "send amq.default")
        .cloned()
        .collect();
    assert_eq!(
        by_name(&latency),
        expect(&[
            ("PRODUCER send amq.default", 20),
            ("INTERNAL deliver latency", 20),
            ("CONSUMER process latency", 20),
        ])
    );
    check_tree(
        &latency,
        "send amq.default",
        "deliver latency",
        "process latency",
        20,
        "rabbitmq",
    );
    let mut tags = BTreeSet::new();
    for p in named(&latency, "process latency") {
        assert_eq!(
            p.attr_str("messaging.rabbitmq.destination.routing_key"),
            Some("latency")
        );
        assert_eq!(
            p.attr_str("messaging.destination.subscription.name"),
            Some("latency")
        );
        tags.insert(
            p.attr_i64("messaging.rabbitmq.message.delivery_tag")
                .unwrap(),
        );
    }
    assert_eq!(tags, (1..=20).collect(), "one delivery tag per message");
    for s in named(&latency, "send amq.default") {
        assert_eq!(s.attr_str("messaging.destination.name"), Some(""));
        assert_eq!(
            s.attr_str("messaging.operation.name"),
            Some("basic.publish")
        );
    }

    // The `full` workload's first message carries a W3C traceparent: its spans join that
    // trace, the send span a child of the producer's own span.
    broker.workload("full", &[]).json();
    let (trace, parent) = (&TRACEPARENT[3..35], &TRACEPARENT[36..52]);
    let spans = rx.wait_for(WAIT, |s| {
        s.iter().filter(|s| s.trace_id == trace).count() >= 3
    });
    d.stop();
    let traced: Vec<_> = spans.iter().filter(|s| s.trace_id == trace).collect();
    let send = traced
        .iter()
        .find(|s| s.kind == "PRODUCER")
        .expect("a send span in the producer's trace");
    assert_eq!(send.parent_span_id, parent);
    assert_eq!(send.attr_str("messaging.message.id"), Some("m-0"));
    let process = traced
        .iter()
        .find(|s| s.kind == "CONSUMER")
        .expect("a process span in the producer's trace");
    assert_eq!(process.parent_span_id, send.span_id);
    assert_eq!(process.name, "process bs.orders");
}

#[test]
fn nats_jetstream_spans_over_grpc() {
    require_root();
    let cgroup = Cgroup::create("spans-nats");
    let broker = NatsServer::start(&cgroup);
    let rx = OtlpReceiver::start_grpc();
    let d = start(broker.pid(), &rx, "grpc");
    let truth = broker
        .workload("confirm-latency", &["--count", "20"])
        .json();
    assert_eq!(truth["published"].u64(), Some(20));
    let spans = rx.wait_for(WAIT, |s| {
        s.iter().filter(|s| s.name.ends_with("latency.s")).count() >= 60
    });
    d.stop();
    let latency: Vec<ReceivedSpan> = spans
        .iter()
        .filter(|s| s.name.ends_with("latency.s"))
        .cloned()
        .collect();
    assert_eq!(
        by_name(&latency),
        expect(&[
            ("PRODUCER send latency.s", 20),
            ("INTERNAL deliver latency.s", 20),
            ("CONSUMER process latency.s", 20),
        ])
    );
    check_tree(
        &latency,
        "send latency.s",
        "deliver latency.s",
        "process latency.s",
        20,
        "nats",
    );
}

#[test]
fn kafka_spans_over_http() {
    require_root();
    let cgroup = Cgroup::create("spans-kafka");
    let broker = Tansu::start(&cgroup);
    broker.create_topic(LATENCY_TOPIC, 1);
    let rx = OtlpReceiver::start_http();
    let d = start(broker.pid(), &rx, "http/protobuf");
    let truth = broker
        .workload("confirm-latency", &["--count", "20"])
        .json();
    assert_eq!(truth["published"].u64(), Some(20));
    let spans = rx.wait_for(WAIT, |s| s.len() >= 60);
    d.stop();
    let send = format!("send {LATENCY_TOPIC}");
    let deliver = format!("deliver {LATENCY_TOPIC}");
    let process = format!("process {LATENCY_TOPIC}");
    assert_eq!(
        by_name(&spans),
        expect(&[
            (&format!("PRODUCER {send}"), 20),
            (&format!("INTERNAL {deliver}"), 20),
            (&format!("CONSUMER {process}"), 20),
        ])
    );
    check_tree(&spans, &send, &deliver, &process, 20, "kafka");
    let offsets: BTreeSet<i64> = named(&spans, &send)
        .iter()
        .map(|s| {
            assert_eq!(s.attr_str("messaging.destination.partition.id"), Some("0"));
            s.attr_i64("messaging.kafka.offset").unwrap()
        })
        .collect();
    assert_eq!(
        offsets,
        (0..20).collect(),
        "offsets from the produce responses"
    );
    let group = truth["group"].str().unwrap();
    for p in named(&spans, &process) {
        assert_eq!(p.attr_str("messaging.consumer.group.name"), Some(group));
    }
}

/// Two NATS servers in a cluster, each in its own cgroup with its own observer: the publish is
/// seen by one observer, the delivery by the other. Neither knows of the other, yet the
/// delivery's process span names the publish's send span as its parent in the same trace.
#[test]
fn two_observers_on_two_cluster_nodes_join_one_trace() {
    require_root();
    let dir = TempDir::new("spans-cluster");
    let (c1, c2) = (Cgroup::create("spans-node1"), Cgroup::create("spans-node2"));
    let (p1, p2, r1, r2) = (free_port(), free_port(), free_port(), free_port());
    let node = |cgroup: &Cgroup, name: &str, port: u16, route: u16, peer: u16| {
        spawn(
            Command::new("nats-server")
                .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-n", name])
                .args([
                    "--cluster_name",
                    "bs",
                    "--cluster",
                    &format!("nats://127.0.0.1:{route}"),
                ])
                .args(["--routes", &format!("nats://127.0.0.1:{peer}")])
                .arg("-l")
                .arg(dir.join(format!("{name}.log")))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null()),
            Some(cgroup),
        )
    };
    let n1 = node(&c1, "node1", p1, r1, r2);
    let n2 = node(&c2, "node2", p2, r2, r1);
    assert!(
        wait_for_port(p1, WAIT) && wait_for_port(p2, WAIT),
        "cluster nodes listening"
    );
    let rx = OtlpReceiver::start_grpc();
    let d1 = start(n1.pid(), &rx, "grpc");
    let d2 = start(n2.pid(), &rx, "grpc");
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/nats_workload.py"
        ))
        .args([
            "--url",
            &format!("nats://127.0.0.1:{p1}"),
            "--scenario",
            "cluster",
        ])
        .args(["--url2", &format!("nats://127.0.0.1:{p2}"), "--count", "10"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let spans = rx.wait_for(WAIT, |s| {
        s.iter().filter(|s| s.name == "process bs.cluster").count() >= 10
            && s.iter().filter(|s| s.name == "send bs.cluster").count() >= 10
    });
    d1.stop();
    d2.stop();
    let sends = named(&spans, "send bs.cluster");
    let processes = named(&spans, "process bs.cluster");
    assert_eq!((sends.len(), processes.len()), (10, 10));
    // The two sides came from different observers: different broker pids on the spans.
    assert!(
        sends
            .iter()
            .all(|s| s.attr_i64("process.pid") == Some(i64::from(n1.pid())))
    );
    assert!(
        processes
            .iter()
            .all(|s| s.attr_i64("process.pid") == Some(i64::from(n2.pid())))
    );
    for p in &processes {
        let send = sends
            .iter()
            .find(|s| s.trace_id == p.trace_id)
            .unwrap_or_else(|| panic!("no send span in the trace of {p:#?}"));
        assert_eq!(
            p.parent_span_id, send.span_id,
            "process is a child of the other node's send"
        );
    }
    drop((n1, n2));
}

/// Wrong passwords (the canary) sent to Mosquitto (3.1.1 and 5.0) and nats-server while every
/// output is on: audit records (full level), spans, debug JSON logs, /metrics and /health.
/// The canary is in none of them.
#[test]
fn the_canary_password_reaches_no_output() {
    require_root();
    let cgroup = Cgroup::create("spans-canary");
    let mqtt = Mosquitto::start_with_password(&cgroup, "brokerscope", "good-Pa55word");
    let nats = NatsServer::start_with_user(&cgroup, "brokerscope", "good-Pa55word");
    let rx = OtlpReceiver::start_http();
    let dir = TempDir::new("spans-canary");
    let audit = dir.join("audit.jsonl");
    let (p1, p2) = (mqtt.pid().to_string(), nats.pid().to_string());
    let endpoint = rx.endpoint();
    let d = Daemon::start(&[
        "--no-discover",
        "--pid",
        &p1,
        "--pid",
        &p2,
        "--otlp-endpoint",
        &endpoint,
        "--otlp-protocol",
        "http/protobuf",
        "--audit-file",
        audit.to_str().unwrap(),
        "--audit-level",
        "full",
        "--log-level",
        "debug",
    ]);
    for t in [
        mqtt.workload("badlogin", &[]).json(),
        mqtt.workload("badlogin", &["--protocol", "5"]).json(),
        nats.workload("badlogin", &[]).json(),
    ] {
        assert_eq!(
            t["password_canary"].str(),
            Some(CANARY),
            "the workload sent the canary"
        );
    }
    // Good logins and messages too, so every output has content.
    mqtt.workload("qos", &[]).json();
    let s = d.scrape_until(WAIT, |s| {
        s.sum("brokerscope_auth_total", &[("outcome", "failure")]) >= 3.0
    });
    assert_eq!(
        s.sum("brokerscope_auth_total", &[("outcome", "failure")]),
        3.0
    );
    let metrics = d.get("/metrics").unwrap().1;
    let health = d.get("/health").unwrap().1;
    let spans = rx.wait_for(WAIT, |s| !s.is_empty());
    let logs = d.stop();
    let records = std::fs::read_to_string(&audit).unwrap();
    assert_eq!(
        records.matches("user.authentication.failure").count(),
        3,
        "{records}"
    );
    assert!(!spans.is_empty() && !logs.is_empty());
    for (what, text) in [
        ("audit records", records),
        ("spans", format!("{spans:?}")),
        ("logs", logs),
        ("/metrics", metrics),
        ("/health", health),
    ] {
        assert!(
            !text.contains(CANARY),
            "the canary password is in the {what}"
        );
        assert!(
            !text.contains("good-Pa55word"),
            "the real password is in the {what}"
        );
    }
}
