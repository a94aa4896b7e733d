//! AMQP 0-9-1 end to end: a private RabbitMQ (Debian rabbitmq-server) in its own cgroup, a real
//! pika client running known workloads, and brokerscope decoding the beam.smp process's traffic.
//! Every event kind is checked against the workload's own ground truth, by exact count and field.
use std::{
    collections::BTreeSet,
    process::{Command, Stdio},
    time::Duration,
};

use observer::{
    capture::{Direction, TargetSpec, session::SessionConfig},
    event::{BrokerEvent, EventKind, Outcome, System},
};
use tests::{CANARY, Cgroup, Tracer, of, rabbitmq::RabbitMq, require_root, wait_until};

fn dest_queue(e: &BrokerEvent) -> Option<&str> {
    e.destination.as_ref()?.queue.as_deref()
}

fn dest_exchange(e: &BrokerEvent) -> Option<&str> {
    e.destination.as_ref()?.exchange.as_deref()
}

fn routing_key(e: &BrokerEvent) -> Option<&str> {
    e.destination.as_ref()?.routing_key.as_deref()
}

fn message_id(e: &BrokerEvent) -> Option<&str> {
    e.props.as_ref()?.message_id.as_deref()
}

#[test]
fn rabbitmq_workload_is_decoded_exactly() {
    require_root();
    let cgroup = Cgroup::create("amqp");
    let broker = RabbitMq::start(&cgroup);
    let beam = broker.broker_pid();
    let tracer = Tracer::start(
        TargetSpec {
            pids: vec![beam],
            ..Default::default()
        },
        SessionConfig::default(),
    );

    let full = broker.workload("full", &[]);
    assert!(full.success(), "workload failed: {}", full.output.stderr);
    let truth = full.json();
    let bad = broker.workload("badlogin", &[]);
    assert!(
        bad.success(),
        "badlogin workload failed: {}",
        bad.output.stderr
    );

    let n = truth["count"].u64().unwrap() as usize;
    let client_port = truth["client_port"].u64().unwrap() as u16;
    // Both connections are closed by the time the workloads exit; wait for the observer to see it.
    assert!(
        wait_until(Duration::from_secs(10), || tracer
            .events
            .count(EventKind::ConnectionClosed)
            >= 2),
        "connections not closed: {:?}",
        tracer
            .events
            .snapshot()
            .iter()
            .map(|e| e.kind)
            .collect::<Vec<_>>()
    );
    let (events, stats, ended) = tracer.finish();
    assert!(ended.caught_up);
    assert_eq!(ended.kernel.get(observer_common::Counter::ChunksLost), 0);

    let full_conn: Vec<&BrokerEvent> = events
        .iter()
        .filter(|e| e.conn.peer.port() == client_port)
        .collect();
    assert!(
        !full_conn.is_empty(),
        "no events for the workload's connection (client port {client_port})"
    );
    let conn_id = full_conn[0].conn.id;
    let ev: Vec<BrokerEvent> = events
        .iter()
        .filter(|e| e.conn.id == conn_id)
        .cloned()
        .collect();
    for e in &ev {
        assert_eq!(e.system, System::Amqp);
        assert_eq!(e.conn.pid, Some(beam), "events carry the broker's pid");
        assert_eq!(e.conn.local.port(), broker.port);
    }

    // Connection and login.
    assert_eq!(of(&ev, EventKind::ConnectionOpened).len(), 1);
    assert_eq!(of(&ev, EventKind::ConnectionClosed).len(), 1);
    let auth = of(&ev, EventKind::Auth);
    assert_eq!(auth.len(), 1, "{auth:?}");
    assert_eq!(auth[0].user.as_deref(), Some("guest"));
    assert_eq!(auth[0].mechanism.as_deref(), Some("PLAIN"));
    assert_eq!(auth[0].outcome, Some(Outcome::Success));
    assert_eq!(of(&ev, EventKind::ChannelOpened).len(), 2);
    assert_eq!(of(&ev, EventKind::ChannelClosed).len(), 2);
    assert_eq!(of(&ev, EventKind::Error).len(), 0);

    // Topology.
    let declares = of(&ev, EventKind::Declare);
    let declared_queues: BTreeSet<&str> = declares.iter().filter_map(|e| dest_queue(e)).collect();
    let declared_exchanges: BTreeSet<&str> = declares
        .iter()
        .filter(|e| dest_queue(e).is_none())
        .filter_map(|e| dest_exchange(e))
        .collect();
    assert_eq!(declares.len(), 5, "{declares:?}");
    assert_eq!(
        declared_queues,
        BTreeSet::from(["bs.orders", "bs.topic.q", "bs.temp"])
    );
    assert_eq!(
        declared_exchanges,
        BTreeSet::from(["bs.topic", "bs.temp.x"])
    );
    for d in &declares {
        assert_eq!(d.destination.as_ref().unwrap().vhost.as_deref(), Some("/"));
    }
    let binds = of(&ev, EventKind::Bind);
    assert_eq!(binds.len(), 1);
    assert_eq!(dest_queue(binds[0]), Some("bs.topic.q"));
    assert_eq!(dest_exchange(binds[0]), Some("bs.topic"));
    assert_eq!(routing_key(binds[0]), Some("orders.#"));
    let deletes = of(&ev, EventKind::Delete);
    assert_eq!(deletes.len(), 2);
    assert!(deletes.iter().any(|e| dest_queue(e) == Some("bs.temp")));
    assert!(
        deletes
            .iter()
            .any(|e| dest_queue(e).is_none() && dest_exchange(e) == Some("bs.temp.x"))
    );

    // Publishes and publisher confirms: 2N + 1, sequence numbers 1..=2N+1 on one channel.
    let publishes = of(&ev, EventKind::Publish);
    let total = truth["published_total"].u64().unwrap() as usize;
    assert_eq!(total, 2 * n + 1);
    assert_eq!(publishes.len(), total);
    let seqs: Vec<u64> = publishes
        .iter()
        .map(|e| e.publish_seq.expect("confirm mode"))
        .collect();
    assert_eq!(seqs, (1..=total as u64).collect::<Vec<_>>());
    assert!(publishes.iter().all(|e| e.direction == Direction::Ingress));
    let to_default = publishes
        .iter()
        .filter(|e| dest_exchange(e) == Some("") && routing_key(e) == Some("bs.orders"));
    assert_eq!(to_default.count(), n + 1);
    let to_topic: Vec<_> = publishes
        .iter()
        .filter(|e| dest_exchange(e) == Some("bs.topic"))
        .collect();
    assert_eq!(to_topic.len(), n);
    assert_eq!(routing_key(to_topic[3]), Some("orders.eu.3"));
    let first = publishes[0];
    assert_eq!(first.body_size, Some("order-0".len() as u64));
    assert_eq!(message_id(first), Some("m-0"));
    let props = first.props.as_ref().unwrap();
    assert_eq!(props.correlation_id.as_deref(), Some("c-0"));
    assert_eq!(props.content_type.as_deref(), Some("text/plain"));
    assert_eq!(props.traceparent.as_deref(), truth["traceparent"].str());
    assert!(publishes[1].props.as_ref().unwrap().traceparent.is_none());

    let confirms = of(&ev, EventKind::Confirm);
    assert_eq!(confirms.len(), truth["confirms"].u64().unwrap() as usize);
    let mut confirmed: Vec<u64> = confirms
        .iter()
        .map(|e| e.publish_seq.or(e.delivery_tag).unwrap())
        .collect();
    confirmed.sort_unstable();
    assert_eq!(confirmed, seqs, "every publish confirmed once");
    assert!(confirms.iter().all(|e| e.direction == Direction::Egress));

    // Consumers, deliveries and settlements.
    assert_eq!(of(&ev, EventKind::Subscribe).len(), 2);
    assert_eq!(of(&ev, EventKind::Unsubscribe).len(), 2);
    let delivers = of(&ev, EventKind::Deliver);
    assert_eq!(
        delivers.len(),
        truth["delivered_total"].u64().unwrap() as usize
    );
    assert_eq!(delivers.len(), 2 * n + 2);
    let tags: Vec<u64> = delivers.iter().map(|e| e.delivery_tag.unwrap()).collect();
    assert_eq!(
        tags,
        (1..=delivers.len() as u64).collect::<Vec<_>>(),
        "consumer channel tags in order"
    );
    let redelivered: Vec<_> = delivers
        .iter()
        .filter(|e| e.redelivered == Some(true))
        .collect();
    assert_eq!(redelivered.len(), 1);
    assert_eq!(
        redelivered[0].delivery_tag,
        truth["redelivered_tags"].u64s().first().copied()
    );
    assert_eq!(message_id(redelivered[0]), Some("t-0"));
    let get_ok: Vec<_> = delivers
        .iter()
        .filter(|e| e.method == Some("basic.get-ok"))
        .collect();
    assert_eq!(get_ok.len(), 1);
    assert_eq!(message_id(get_ok[0]), Some("m-get"));
    assert_eq!(get_ok[0].message_count, Some(0));
    // The same message is recognisable on both sides: publish and deliver fingerprints agree.
    let m0_deliver = delivers
        .iter()
        .find(|e| message_id(e) == Some("m-0"))
        .unwrap();
    assert_eq!(m0_deliver.fingerprint, first.fingerprint);
    assert!(first.fingerprint.is_some());
    assert_eq!(
        m0_deliver.props.as_ref().unwrap().traceparent,
        props.traceparent
    );
    assert_eq!(routing_key(m0_deliver), Some("bs.orders"));

    let acks = of(&ev, EventKind::Ack);
    assert_eq!(acks.len(), truth["acked"].u64().unwrap() as usize);
    assert!(
        acks.iter()
            .all(|e| e.direction == Direction::Ingress && e.multiple != Some(true))
    );
    let nacks = of(&ev, EventKind::Nack);
    assert_eq!(nacks.len(), 1);
    assert_eq!(nacks[0].requeue, Some(true));
    assert_eq!(
        nacks[0].delivery_tag,
        truth["nacked_tags"].u64s().first().copied()
    );
    assert_eq!(of(&ev, EventKind::Reject).len(), 0);
    assert_eq!(of(&ev, EventKind::Return).len(), 0);

    // The refused login: its own connection, an auth failure, and never the password.
    let failures: Vec<_> = events
        .iter()
        .filter(|e| e.kind == EventKind::Auth && e.outcome == Some(Outcome::Failure))
        .collect();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].user.as_deref(), Some("guest"));
    assert_eq!(failures[0].reply_code, Some(403));
    assert!(
        !format!("{events:?}").contains(CANARY),
        "a credential reached an event"
    );

    // Decoder health: nothing malformed in real traffic.
    assert_eq!(stats.decoder.malformed, 0);
    assert_eq!(stats.decoder.resyncs, 0);
    assert_eq!(
        stats.connections_decoded.get(&System::Amqp).copied(),
        Some(2)
    );
}

/// `brokerscope trace --json` as a user runs it: JSON lines with stable fields, filters, and no
/// credential anywhere in its output.
#[test]
fn trace_cli_prints_json_events() {
    require_root();
    let exe = std::env::current_exe().unwrap();
    let brokerscope = exe.parent().unwrap().parent().unwrap().join("brokerscope");
    assert!(
        brokerscope.exists(),
        "{} missing: build it first (cargo build -p observer)",
        brokerscope.display()
    );
    let cgroup = Cgroup::create("amqp-cli");
    let broker = RabbitMq::start(&cgroup);
    let beam = broker.broker_pid();
    let trace = Command::new(&brokerscope)
        .args([
            "trace",
            "--pid",
            &beam.to_string(),
            "--json",
            "--duration",
            "20",
        ])
        .args(["--event", "auth,publish,confirm,deliver,ack"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let full = broker.workload("full", &["--count", "3"]);
    assert!(full.success(), "{}", full.output.stderr);
    let bad = broker.workload("badlogin", &[]);
    assert!(bad.success());
    // Garbage after a valid protocol header: the broker hangs up, the decoder counts and moves on.
    {
        use std::io::{Read, Write};
        let mut raw = std::net::TcpStream::connect(("127.0.0.1", broker.port)).unwrap();
        raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        raw.write_all(b"AMQP\0\0\x09\x01").unwrap();
        let mut start = [0u8; 7];
        raw.read_exact(&mut start).unwrap(); // connection.start frame header
        let _ = raw.write_all(&[
            0x01, 0x00, 0x00, 0xff, 0xff, 0xff, 0x00, 0xde, 0xad, 0xbe, 0xef,
        ]);
        let _ = raw.write_all(&tests::pattern(7, 3000));
        let mut rest = Vec::new();
        let _ = raw.read_to_end(&mut rest);
    }
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: our own child.
    unsafe { libc::kill(trace.id() as i32, libc::SIGINT) };
    let out = trace.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stdout.contains(CANARY) && !stderr.contains(CANARY),
        "credential in trace output"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    let kinds: Vec<String> = lines
        .iter()
        .map(|l| {
            assert!(
                l.starts_with('{') && l.ends_with('}'),
                "not a JSON object: {l}"
            );
            for field in [
                "\"time\":",
                "\"system\":\"amqp\"",
                "\"pid\":",
                "\"connection\":{",
                "\"local\":",
                "\"peer\":",
            ] {
                assert!(l.contains(field), "{field} missing in {l}");
            }
            l.split("\"kind\":\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    let count = |k: &str| kinds.iter().filter(|x| *x == k).count();
    assert_eq!(count("publish"), 7, "{stdout}");
    assert_eq!(count("confirm"), 7);
    assert_eq!(count("deliver"), 8);
    assert_eq!(count("ack"), 7);
    assert_eq!(count("auth"), 2);
    assert!(
        kinds
            .iter()
            .all(|k| ["auth", "publish", "confirm", "deliver", "ack"].contains(&k.as_str())),
        "filter"
    );
    assert!(stdout.contains("\"outcome\":\"failure\"") && stdout.contains("\"user\":\"guest\""));
    assert!(
        stdout.contains("\"destination\":{") && stdout.contains("\"routing_key\":\"bs.orders\"")
    );
    assert!(stdout.contains("\"delivery_tag\":") && stdout.contains("\"publish_seq\":"));
    let malformed: u64 = stderr
        .split("malformed=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no decoder summary in {stderr}"));
    assert!(malformed >= 1, "the garbage frame is counted: {stderr}");
}
