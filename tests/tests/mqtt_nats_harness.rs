//! The Mosquitto and NATS harnesses themselves (no observer): each broker in a fresh cgroup of
//! its own, found in /proc (pid, listener, cgroup), every workload scenario run against it with
//! its ground truth checked, and nothing of the broker left after drop.
use std::{
    fs,
    time::{Duration, Instant},
};

use observer::capture::procfs::ProcFs;
use tests::{
    CANARY, Cgroup, TRACEPARENT,
    mosquitto::{Mosquitto, run_script},
    nats::{NatsServer, server_info},
    rabbitmq::{Json, comm},
    require_root,
};

const USER: &str = "brokerscope";
const PASSWORD: &str = "good-Pa55word";
fn count(j: &Json, what: &str) -> u64 {
    j.u64()
        .unwrap_or_else(|| panic!("{what}: not a count: {j:?}"))
}

/// `pid` runs `name`, listens on `port` and sits in `cgroup` (and nothing else does).
fn assert_broker_in(cgroup: &Cgroup, pid: u32, name: &str, port: u16) {
    assert_eq!(comm(pid).as_deref(), Some(name));
    let procfs = ProcFs::default();
    let ports = procfs.listening_ports(pid).expect("listening ports");
    assert_eq!(ports, vec![port], "{name} {pid} listens on {ports:?}");
    let cg = procfs
        .cgroup_v2_path(pid)
        .expect("read cgroup")
        .expect("cgroup v2 path");
    assert!(
        cgroup.path.ends_with(cg.trim_start_matches('/')),
        "{name} {pid} is in {cg}, not in {}",
        cgroup.path.display()
    );
    let members = fs::read_to_string(cgroup.path.join("cgroup.procs")).unwrap();
    assert_eq!(
        members.lines().collect::<Vec<_>>(),
        vec![pid.to_string()],
        "cgroup members"
    );
}

/// After drop: the process is gone (reaped) and the cgroup is empty.
fn assert_gone(cgroup: &Cgroup, pid: u32, name: &str) {
    assert_ne!(comm(pid).as_deref(), Some(name), "{name} {pid} still runs");
    let members = fs::read_to_string(cgroup.path.join("cgroup.procs")).unwrap();
    assert!(members.trim().is_empty(), "cgroup still holds {members}");
}

fn check_qos(j: &Json, n: u64) {
    assert_eq!(j["scenario"].str(), Some("qos"));
    assert_eq!(j["ok"].bool(), Some(true));
    assert_eq!(count(&j["count"], "count"), n);
    assert_eq!(j["protocol_level"].u64(), Some(4));
    for q in ["0", "1", "2"] {
        assert_eq!(count(&j["published"][q], "published"), n, "QoS {q}");
        assert_eq!(count(&j["received"][q], "received"), n, "QoS {q}");
    }
    assert_eq!(count(&j["published_total"], "published_total"), 3 * n + 2);
    assert_eq!(count(&j["received_total"], "received_total"), 3 * n + 1);
    assert_eq!(j["subscribe"]["granted_qos"].u64s(), vec![0, 1, 2]);
    assert_eq!(
        j["subscribe"]["filters"].strs(),
        ["bs/q0", "bs/q1", "bs/q2"]
    );
    // One publisher, publishes in order: paho's mids run 1..3n (+ retained, + clear).
    let mids = &j["publisher_mids"];
    let all: Vec<u64> = ["0", "1", "2"]
        .iter()
        .flat_map(|q| mids[*q].u64s())
        .collect();
    assert_eq!(all, (1..=3 * n).collect::<Vec<_>>());
    assert_eq!(
        j["wire_packet_ids"]["1"].u64s(),
        (n + 1..=2 * n).collect::<Vec<_>>()
    );
    assert_eq!(
        j["wire_packet_ids"]["2"].u64s(),
        (2 * n + 1..=3 * n).collect::<Vec<_>>()
    );
    for q in ["1", "2"] {
        assert_eq!(j["subscriber_packet_ids"][q].u64s().len() as u64, n);
    }
    let r = &j["retained"];
    assert_eq!(count(&j["retained_received"], "retained_received"), 1);
    assert_eq!(r["retain_flag"].bool(), Some(true));
    assert_eq!(r["publish_packet_id"].u64(), Some(3 * n + 1));
    assert_eq!(r["clear_packet_id"].u64(), Some(3 * n + 2));
    assert_eq!(j["client_ids"]["publisher"].str(), Some("bs-pub"));
    assert_eq!(j["client_ids"]["subscriber"].str(), Some("bs-sub"));
    assert!(count(&j["client_ports"]["publisher"], "port") > 0);
}

fn check_v5(j: &Json, n: u64) {
    assert_eq!(j["scenario"].str(), Some("v5"));
    assert_eq!(j["protocol_level"].u64(), Some(5));
    assert_eq!(count(&j["published"], "published"), n);
    assert_eq!(count(&j["received"], "received"), n);
    assert_eq!(j["topic_alias"].u64(), Some(1));
    assert_eq!(j["alias_set"].u64(), Some(1));
    assert_eq!(j["alias_reused"].u64(), Some(n - 1));
    assert!(count(&j["topic_alias_maximum"], "alias max") >= 1);
    assert_eq!(j["traceparent"].str(), Some(TRACEPARENT));
    assert_eq!(
        j["publisher_packet_ids"].u64s(),
        (1..=n).collect::<Vec<_>>()
    );
    assert_eq!(j["subscribe"]["granted_qos"].u64s(), vec![1]);
}

#[test]
fn mosquitto_harness_runs_real_workloads() {
    require_root();
    let cgroup = Cgroup::create("mqtt-anon");
    let t0 = Instant::now();
    let broker = Mosquitto::start(&cgroup);
    eprintln!(
        "mosquitto up on 127.0.0.1:{} in {:.1?}",
        broker.port,
        t0.elapsed()
    );
    let pid = broker.pid();
    assert_broker_in(&cgroup, pid, "mosquitto", broker.port);
    let conf = fs::read_to_string(broker.config_path()).unwrap();
    assert!(conf.contains("persistence false") && conf.contains("allow_anonymous true"));
    assert!(broker.password_file().is_none());

    let j = broker.workload("qos", &[]).json();
    check_qos(&j, 5);
    let j = broker.workload("v5", &[]).json();
    check_v5(&j, 5);
    // The retained message was cleared, so `qos` runs again on the same broker.
    let j = broker.workload("qos", &["--count", "2"]).json();
    check_qos(&j, 2);

    let log = fs::read_to_string(broker.log_path()).unwrap();
    assert!(log.contains("mosquitto version 2."), "{log}");
    assert!(log.contains("as bs-pub"), "log names the clients: {log}");

    drop(broker);
    assert_gone(&cgroup, pid, "mosquitto");
}

#[test]
fn mosquitto_with_password_refuses_a_wrong_one() {
    require_root();
    let cgroup = Cgroup::create("mqtt-auth");
    let broker = Mosquitto::start_with_password(&cgroup, USER, PASSWORD);
    let pid = broker.pid();
    assert_broker_in(&cgroup, pid, "mosquitto", broker.port);
    // Mosquitto 2.0 hashes with PBKDF2-SHA512 ($7$iterations$salt$hash).
    let file = fs::read_to_string(broker.password_file().unwrap()).unwrap();
    assert!(file.starts_with(&format!("{USER}:$7$")), "{file}");
    assert!(!file.contains(PASSWORD));

    let j = broker.workload("badlogin", &[]).json();
    assert_eq!(j["auth_failed"].bool(), Some(true));
    assert_eq!(j["rc"].u64(), Some(5), "3.1.1 CONNACK: not authorized");
    assert_eq!(j["user"].str(), Some(USER));
    assert_eq!(j["password_canary"].str(), Some(CANARY));
    let j = broker.workload("badlogin", &["--protocol", "5"]).json();
    assert_eq!(j["rc"].u64(), Some(0x87), "5.0 CONNACK: not authorized");

    let j = broker.workload("goodlogin", &[]).json();
    assert_eq!(j["auth_failed"].bool(), Some(false));
    assert_eq!(j["rc"].u64(), Some(0));
    assert_eq!(j["published"].u64(), Some(1));
    assert_eq!(j["packet_id"].u64(), Some(1));
    // With credentials the full workloads run too.
    check_qos(&broker.workload("qos", &["--count", "2"]).json(), 2);

    // Without credentials: refused, and the script says so.
    let port = broker.port.to_string();
    let anon = run_script(
        tests::mosquitto::WORKLOAD,
        &["--port", &port, "--scenario", "qos", "--io-timeout", "5"],
        None,
    );
    assert!(!anon.success(), "{:?}", anon.output);
    assert!(
        anon.output.stderr.contains("CONNACK refused with 5"),
        "{:?}",
        anon.output
    );

    drop(broker);
    assert_gone(&cgroup, pid, "mosquitto");
}

/// The audit scenario against an ACL granting audit/ok and denying audit/secret: the PUBLISH to
/// audit/secret refused (3.1.1: acknowledged and dropped; 5.0: PUBACK 0x87), and a wrong
/// password. Mosquitto 2.0's acl_file grants the SUBSCRIBE to audit/secret (it checks reads at
/// delivery, not subscriptions).
#[test]
fn mosquitto_audit_scenario() {
    require_root();
    let cgroup = Cgroup::create("mqtt-audit");
    let acl = format!("user {USER}\ntopic readwrite audit/ok\ntopic deny audit/secret\n");
    let broker = Mosquitto::start_with_acl(&cgroup, USER, PASSWORD, &acl);
    assert_eq!(fs::read_to_string(broker.acl_file().unwrap()).unwrap(), acl);
    for (protocol, publish_denied, bad) in [("311", 0, 5), ("5", 0x87, 0x87)] {
        let j = broker.workload("audit", &["--protocol", protocol]).json();
        eprintln!("mqtt audit {protocol}: {j:?}");
        let steps = j["steps"].arr();
        let got: Vec<(&str, Option<&str>, u64, &str)> = steps
            .iter()
            .map(|s| {
                (
                    s["op"].str().unwrap(),
                    s["topic"].str(),
                    s["rc"].u64().unwrap_or(0),
                    s["outcome"].str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("connect", None, 0, "success"),
                ("subscribe", Some("audit/ok"), 1, "success"),
                ("subscribe", Some("audit/secret"), 1, "success"),
                ("publish", Some("audit/ok"), 0, "success"),
                ("publish", Some("audit/secret"), publish_denied, "failure"),
                ("disconnect", None, 0, "success"),
                ("connect", None, bad, "failure"),
            ]
        );
        assert_eq!(j["delivered"].strs(), ["audit/ok"]);
        assert_eq!(j["password_canary"].str(), Some(CANARY));
    }
    let log = fs::read_to_string(broker.log_path()).unwrap();
    assert!(log.contains("Denied PUBLISH"), "{log}");
}

fn check_core(j: &Json, n: u64) {
    assert_eq!(j["scenario"].str(), Some("core"));
    assert_eq!(j["ok"].bool(), Some(true));
    assert_eq!(count(&j["published"]["bs.orders"], "orders"), n + 1);
    assert_eq!(count(&j["published"]["bs.work"], "work"), n);
    assert_eq!(count(&j["received"]["bs.orders"], "orders"), n + 1);
    assert_eq!(count(&j["received"]["bs.work"], "work"), n);
    assert_eq!(count(&j["received"]["bs.svc"], "svc"), 1);
    assert_eq!(count(&j["hpub"], "hpub"), 1);
    assert_eq!(count(&j["pub"], "pub"), 2 * n + 1);
    let q = &j["queue_group"];
    assert_eq!(q["queue"].str(), Some("workers"));
    let per = count(&q["per_member"]["worker-1"], "w1") + count(&q["per_member"]["worker-2"], "w2");
    assert_eq!(per, n, "each queue message to exactly one member");
    match &q["assignment"] {
        Json::Obj(kv) => assert_eq!(kv.len() as u64, n),
        other => panic!("assignment {other:?}"),
    }
    assert_eq!(j["headers"]["traceparent"].str(), Some(TRACEPARENT));
    assert_eq!(j["sids"]["bs.orders"].u64(), Some(1));
    assert_eq!(j["sids"]["bs.svc"].u64(), Some(2));
    assert_eq!(j["sids"]["inbox"].u64(), Some(3));
    assert_eq!(j["request"]["reply_payload"].str(), Some("pong:ping"));
    assert!(
        j["request"]["reply_subject"]
            .str()
            .is_some_and(|s| s.starts_with("_INBOX."))
    );
}

fn check_jetstream(j: &Json) {
    assert_eq!(j["scenario"].str(), Some("jetstream"));
    assert_eq!(j["ok"].bool(), Some(true));
    assert_eq!(j["pub_ack_seqs"].u64s(), vec![1, 2, 3, 4, 5]);
    let actions: Vec<(u64, &str, u64)> = j["actions"]
        .arr()
        .iter()
        .map(|a| {
            (
                a["stream_seq"].u64().unwrap(),
                a["action"].str().unwrap(),
                a["num_delivered"].u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        vec![
            (1, "ack", 1),
            (2, "ack", 1),
            (3, "nak", 1),
            (3, "ack", 2),
            (4, "term", 1),
            (5, "in_progress", 1),
            (5, "ack", 1),
        ]
    );
    for a in j["actions"].arr() {
        assert!(
            a["ack_subject"]
                .str()
                .is_some_and(|s| s.starts_with("$JS.ACK.BS.bsc.")),
            "{a:?}"
        );
    }
    assert_eq!(count(&j["redelivered"], "redelivered"), 1);
    assert_eq!(count(&j["deliveries"], "deliveries"), 6);
    assert_eq!(count(&j["fetches"], "fetches"), 2);
    assert_eq!(j["consumer_final"]["ack_floor_stream_seq"].u64(), Some(5));
    assert_eq!(j["consumer_final"]["num_ack_pending"].u64(), Some(0));
    assert_eq!(j["stream_deleted"].bool(), Some(true));
}

#[test]
fn nats_harness_runs_real_workloads() {
    require_root();
    let cgroup = Cgroup::create("nats-anon");
    let t0 = Instant::now();
    let server = NatsServer::start(&cgroup);
    eprintln!("nats-server up on {} in {:.1?}", server.url(), t0.elapsed());
    let pid = server.pid();
    assert_broker_in(&cgroup, pid, "nats-server", server.port);
    assert!(server.info.contains("\"version\":\"2."), "{}", server.info);
    assert!(!server.info.contains("\"auth_required\":true"));
    let info = server_info(server.port, Duration::from_secs(5)).unwrap();
    assert!(info.contains("\"jetstream\":true"), "{info}");

    check_core(&server.workload("core", &[]).json(), 5);
    let j = server.workload("jetstream", &[]).json();
    check_jetstream(&j);
    assert_eq!(j["deleted_first"].bool(), Some(false));
    // The stream was deleted at the end, so it runs again from seq 1.
    check_jetstream(&server.workload("jetstream", &[]).json());
    assert!(server.store_dir().join("jetstream").is_dir());

    drop(server);
    assert_gone(&cgroup, pid, "nats-server");
}

#[test]
fn nats_with_user_refuses_a_wrong_password() {
    require_root();
    let cgroup = Cgroup::create("nats-auth");
    let server = NatsServer::start_with_user(&cgroup, USER, PASSWORD);
    let pid = server.pid();
    assert_broker_in(&cgroup, pid, "nats-server", server.port);
    assert!(
        server.info.contains("\"auth_required\":true"),
        "{}",
        server.info
    );

    let j = server.workload("badlogin", &[]).json();
    assert_eq!(j["auth_failed"].bool(), Some(true));
    assert_eq!(j["error"].str(), Some("Authorization Violation"));
    assert_eq!(j["password_canary"].str(), Some(CANARY));
    // The user has JetStream (global account) and core NATS.
    check_core(&server.workload("core", &["--count", "3"]).json(), 3);
    check_jetstream(&server.workload("jetstream", &[]).json());

    let log = fs::read_to_string(server.log_path()).unwrap();
    assert!(log.contains("authentication error"), "{log}");

    drop(server);
    assert_gone(&cgroup, pid, "nats-server");
}

#[test]
fn workloads_fail_loudly_without_a_broker() {
    // Nothing listens on this port: each script must exit non-zero by itself, quickly.
    let port = tests::free_port().to_string();
    let url = format!("nats://127.0.0.1:{port}");
    let t0 = Instant::now();
    let runs = [
        (
            tests::mosquitto::WORKLOAD,
            vec!["--port", &port, "--scenario", "qos"],
        ),
        (
            tests::nats::WORKLOAD,
            vec!["--url", &url, "--scenario", "core"],
        ),
    ];
    for (script, mut args) in runs {
        args.extend(["--io-timeout", "3", "--timeout", "20"]);
        let w = run_script(script, &args, None);
        assert!(!w.success(), "{script}: {:?}", w.output);
        assert!(
            w.output.stderr.contains("_workload: FAIL"),
            "{script}: {:?}",
            w.output
        );
    }
    assert!(t0.elapsed() < Duration::from_secs(30));
}

/// The NATS audit scenario: a user denied publish and subscribe on audit.secret gets a
/// Permissions Violation for each and stays connected; a wrong password is refused.
#[test]
fn nats_audit_scenario() {
    require_root();
    let cgroup = Cgroup::create("nats-audit");
    let server = NatsServer::start_with_permissions(
        &cgroup,
        USER,
        PASSWORD,
        Some(r#"publish: { deny: ["audit.secret"] }, subscribe: { deny: ["audit.secret"] }"#),
    );
    let j = server.workload("audit", &[]).json();
    eprintln!("nats audit: {j:?}");
    let steps = j["steps"].arr();
    let got: Vec<(&str, Option<&str>, &str)> = steps
        .iter()
        .map(|s| {
            (
                s["op"].str().unwrap(),
                s["subject"].str(),
                s["outcome"].str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("connect", None, "success"),
            ("subscribe", Some("audit.ok"), "success"),
            ("publish", Some("audit.ok"), "success"),
            ("publish", Some("audit.secret"), "failure"),
            ("subscribe", Some("audit.secret"), "failure"),
            ("close", None, "success"),
            ("connect", None, "failure"),
        ]
    );
    for (i, what) in [(3, "publish to"), (4, "subscription to")] {
        assert_eq!(steps[i]["error"].str(), Some("Permissions Violation"));
        // As nats-py reports the server's -ERR: lowercased.
        let reported = steps[i]["reported"].str().unwrap();
        assert!(
            reported.contains(&format!(
                "permissions violation for {what} \"audit.secret\""
            )),
            "{reported}"
        );
    }
    assert_eq!(j["delivered"].strs(), ["audit.ok"]);
    assert_eq!(j["password_canary"].str(), Some(CANARY));
}
