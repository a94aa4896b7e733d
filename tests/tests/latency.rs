//! `brokerscope latency` end to end (root): a private RabbitMQ, the pika `slow-ack` workload
//! (a consumer that sleeps --sleep-ms before each ack, prefetch 1), and the real binary
//! (`tests::daemon::binary()`, BROKERSCOPE_BIN honoured) printing its `--json` document.
//! Checked against the workload's ground truth: every ack is seen, the deliver→ack median is
//! the sleep, confirms are fast, and the slowest list names real message ids.
use std::{
    process::{Command, Stdio},
    time::Duration,
};

use tests::{Cgroup, TempDir, rabbitmq::Json, rabbitmq::RabbitMq, require_root, wait_until};

const SLEEP_MS: u64 = 50;
const COUNT: u64 = 20;

fn stage<'a>(doc: &'a Json, name: &str, dest: &str) -> &'a Json {
    doc["stages"]
        .arr()
        .iter()
        .find(|s| {
            s["system"].str() == Some("amqp")
                && s["stage"].str() == Some(name)
                && s["destination"].str() == Some(dest)
        })
        .unwrap_or_else(|| panic!("no {name} stage for {dest}: {doc:?}"))
}

#[test]
fn slow_acks_show_as_deliver_ack_latency() {
    require_root();
    let cgroup = Cgroup::create("latency");
    let broker = RabbitMq::start(&cgroup);
    let beam = broker.broker_pid();
    let dir = TempDir::new("latency");
    let (out, err) = (dir.join("stdout.json"), dir.join("stderr.log"));
    let mut child = Command::new(tests::daemon::binary())
        .args(["latency", "--pid", &beam.to_string(), "--duration", "60s"])
        .args(["--json", "--slowest", "3"])
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .stdin(Stdio::null())
        .spawn()
        .expect("brokerscope latency");
    let log = || std::fs::read_to_string(&err).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(30), || log().contains("capturing pid")),
        "brokerscope latency did not attach:\n{}",
        log()
    );

    let w = broker.workload(
        "slow-ack",
        &[
            "--sleep-ms",
            &SLEEP_MS.to_string(),
            "--count",
            &COUNT.to_string(),
        ],
    );
    assert!(w.success(), "slow-ack workload failed: {}", w.output.stderr);
    let truth = w.json();
    assert_eq!(truth["acked"].u64(), Some(COUNT));

    // Stop early (SIGINT, like Ctrl-C): the report is printed on the way out.
    std::thread::sleep(Duration::from_secs(1));
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}:\n{}", log());
    let text = std::fs::read_to_string(&out).unwrap();
    let doc = Json::parse(&text).unwrap_or_else(|e| panic!("{e}:\n{text}"));
    eprintln!("{}", log());

    let ack = stage(&doc, "deliver_ack", "bs.slow");
    assert_eq!(ack["count"].u64(), Some(COUNT), "{text}");
    let p50 = ack["p50_ns"].u64().unwrap() as f64 / 1e6;
    let sleep = SLEEP_MS as f64;
    eprintln!(
        "deliver→ack p50 {p50:.2} ms (sleep {sleep} ms; workload measured {:?} ms), p99 {:.2} ms, max {:.2} ms",
        truth["ack_delays_ms"]
            .arr()
            .iter()
            .filter_map(Json::f64)
            .collect::<Vec<_>>(),
        ack["p99_ns"].u64().unwrap() as f64 / 1e6,
        ack["max_ns"].u64().unwrap() as f64 / 1e6,
    );
    assert!(
        (p50 - sleep).abs() <= sleep * 0.1,
        "deliver→ack p50 {p50} ms, sleep {sleep} ms"
    );
    for q in ["p50_ns", "p90_ns", "p99_ns", "p999_ns", "max_ns"] {
        assert!(
            ack[q].u64().unwrap() as f64 >= sleep * 1e6 * 0.99,
            "{q}: {text}"
        );
    }
    let buckets: u64 = ack["histogram"]
        .arr()
        .iter()
        .filter_map(|b| b["count"].u64())
        .sum();
    assert_eq!(buckets, COUNT);

    // Confirms come back at once.
    let confirm = stage(&doc, "publish_confirm", "amq.default/bs.slow");
    assert_eq!(confirm["count"].u64(), Some(COUNT), "{text}");
    let confirm_p50 = confirm["p50_ns"].u64().unwrap() as f64 / 1e6;
    eprintln!("publish→confirm p50 {confirm_p50:.3} ms");
    assert!(confirm_p50 < 10.0, "publish→confirm p50 {confirm_p50} ms");
    // Publish → deliver: all 20 are published first and handed out one at a time (prefetch 1),
    // so message i waits behind i slow acks: fast at first, ~ (COUNT-1)·sleep at the end.
    if let Some(pd) = doc["stages"].arr().iter().find(|s| {
        s["stage"].str() == Some("publish_deliver") && s["destination"].str() == Some("bs.slow")
    }) {
        let min = pd["min_ns"].u64().unwrap() as f64 / 1e6;
        let max = pd["max_ns"].u64().unwrap() as f64 / 1e6;
        eprintln!("publish→deliver min {min:.3} ms max {max:.1} ms");
        assert!(min < 10.0, "first publish→deliver {min} ms");
        assert!(
            max >= (COUNT - 1) as f64 * sleep * 0.9,
            "last publish→deliver {max} ms"
        );
    }

    let counts = doc["destinations"]
        .arr()
        .iter()
        .find(|d| d["destination"].str() == Some("bs.slow"))
        .unwrap_or_else(|| panic!("no bs.slow counts: {text}"));
    assert_eq!(counts["delivered"].u64(), Some(COUNT));
    assert_eq!(counts["acked"].u64(), Some(COUNT));
    assert_eq!(counts["errors"].u64(), Some(0));

    // The slowest three: among the workload's message ids, slowest first.
    let slowest = doc["slowest"].arr();
    assert_eq!(slowest.len(), 3, "{text}");
    let ids = truth["message_ids"].strs();
    let mut last = u64::MAX;
    for m in slowest {
        let l = m["latency_ns"].u64().unwrap();
        assert!(l <= last);
        last = l;
        // (This JSON reader keeps numbers as f64: epoch ns are exact only to ~256 ns.)
        let span = m["end_ns"].f64().unwrap() - m["start_ns"].f64().unwrap();
        assert!((span - l as f64).abs() < 2_000.0, "{span} vs {l}");
        let id = m["message_id"]
            .str()
            .unwrap_or_else(|| panic!("no id: {m:?}"));
        assert!(ids.contains(&id), "{id} not among {ids:?}");
    }
}
