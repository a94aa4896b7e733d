//! Audit records end to end: `brokerscope run --audit-file` watching real brokers while real
//! clients log in (and fail to), declare, bind, purge and delete, and are refused. Exact
//! records per operation; rotation under load; `brokerscope audit query|export` over the files;
//! the canary password in none of them.
use std::{collections::BTreeMap, os::unix::fs::PermissionsExt, path::Path, time::Duration};

use tests::{
    CANARY, Cgroup, TempDir,
    daemon::{Daemon, binary},
    mosquitto::Mosquitto,
    nats::NatsServer,
    rabbitmq::{Json, RabbitMq},
    require_root,
};

/// Every record of the audit files (rotated ones first), parsed.
fn records(path: &Path) -> Vec<Json> {
    let mut files: Vec<_> = (1..10)
        .rev()
        .map(|i| path.with_extension(format!("jsonl.{i}")))
        .filter(|p| p.exists())
        .collect();
    files.push(path.to_owned());
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        assert!(
            !text.contains(CANARY),
            "the canary password is in {}",
            f.display()
        );
        for line in text.lines() {
            out.push(Json::parse(line).unwrap_or_else(|e| panic!("{e}: {line}")));
        }
    }
    out
}

/// (action, outcome, resource name or user) → count, for records of one system.
fn summary(records: &[Json], system: &str) -> BTreeMap<(String, String, String), usize> {
    let mut out = BTreeMap::new();
    for r in records {
        if r["messaging"]["system"].str() != Some(system) {
            continue;
        }
        let what = r["resource"]["name"]
            .str()
            .or(r["user"]["name"].str())
            .unwrap_or("")
            .to_owned();
        *out.entry((
            r["event"]["action"].str().unwrap_or("").to_owned(),
            r["event"]["outcome"].str().unwrap_or("").to_owned(),
            what,
        ))
        .or_default() += 1;
    }
    out
}

fn stop_and_read(d: Daemon, file: &Path) -> Vec<Json> {
    let logs = d.stop();
    assert!(!logs.contains(CANARY), "the canary password is in the logs");
    records(file)
}

#[test]
fn rabbitmq_logins_resources_and_denials() {
    require_root();
    let cgroup = Cgroup::create("audit-amqp");
    let broker = RabbitMq::start(&cgroup);
    broker.add_vhost("audit-v");
    broker.add_user("audit-admin", "admin-pw", Some(("/", ".*", ".*", ".*")));
    broker.set_user_tags("audit-admin", &["administrator"]);
    broker.add_user(
        "audit-limited",
        "limited-pw",
        Some(("audit-v", "^$", ".*", ".*")),
    );
    let dir = TempDir::new("audit-amqp");
    let file = dir.join("audit.jsonl");
    let pid = broker.broker_pid().to_string();
    let d = Daemon::start(&[
        "--no-discover",
        "--pid",
        &pid,
        "--audit-file",
        file.to_str().unwrap(),
    ]);
    let truth = broker
        .workload(
            "audit",
            &[
                "--user",
                "audit-admin",
                "--password",
                "admin-pw",
                "--limited-user",
                "audit-limited",
                "--limited-password",
                "limited-pw",
                "--limited-vhost",
                "audit-v",
            ],
        )
        .json();
    assert_eq!(truth["ok"].bool(), Some(true));
    std::thread::sleep(Duration::from_millis(500));
    let recs = stop_and_read(d, &file);
    let got = summary(&recs, "rabbitmq");
    let want = expect(&[
        ("connection.created", "success", "", 4),
        ("user.authentication.success", "success", "audit-admin", 1),
        ("vhost.opened", "success", "/", 1),
        ("exchange.created", "success", "audit.x", 1),
        ("queue.created", "success", "audit.q", 1),
        ("binding.created", "success", "audit.q", 1),
        ("queue.purged", "success", "audit.q", 1),
        ("queue.deleted", "success", "audit.q", 1),
        ("exchange.deleted", "success", "audit.x", 1),
        ("connection.closed", "success", "audit-admin", 2),
        // The canary password: refused, and nowhere in the records.
        ("user.authentication.failure", "failure", "audit-admin", 1),
        ("user.authentication.success", "success", "audit-limited", 2),
        ("vhost.opened", "success", "audit-v", 1),
        // queue.declare without configure permission: 403.
        ("access.denied", "failure", "audit.denied", 1),
        // A vhost the user may not open: 530.
        ("access.denied", "failure", "/", 1),
        ("connection.closed", "success", "audit-limited", 2),
    ]);
    assert_eq!(got, want);
    let pid = broker.broker_pid();
    for r in &recs {
        assert_eq!(r["node"].str(), Some(host().as_str()));
        assert_eq!(r["process"]["pid"].u64(), Some(u64::from(pid)));
        assert!(
            r["process"]["executable"]
                .str()
                .is_some_and(|e| e.ends_with("beam.smp"))
        );
        assert_eq!(r["server"]["port"].u64(), Some(u64::from(broker.port)));
        assert_eq!(r["client"]["ip"].str(), Some("127.0.0.1"));
        assert!(
            r["time"]
                .str()
                .is_some_and(|t| t.ends_with('Z') && t.len() == 30),
            "{r:?}"
        );
    }
    let denied: Vec<_> = recs
        .iter()
        .filter(|r| r["event"]["action"].str() == Some("access.denied"))
        .map(|r| {
            (
                r["reason"]["code"].u64(),
                r["resource"]["type"].str(),
                r["vhost"].str(),
            )
        })
        .collect();
    assert_eq!(
        denied,
        [
            (Some(403), Some("queue"), Some("audit-v")),
            (Some(530), Some("vhost"), Some("/"))
        ]
    );
    let failed = recs
        .iter()
        .find(|r| r["event"]["action"].str() == Some("user.authentication.failure"))
        .unwrap();
    assert_eq!(failed["reason"]["code"].u64(), Some(403));
    assert_eq!(truth["logins_failed"].u64(), Some(2));
}

const USER: &str = "brokerscope";
const PASSWORD: &str = "good-Pa55word";

#[test]
fn mqtt_logins_subscriptions_and_denials() {
    require_root();
    let cgroup = Cgroup::create("audit-mqtt");
    let acl = format!("user {USER}\ntopic readwrite audit/ok\ntopic deny audit/secret\n");
    let broker = Mosquitto::start_with_acl(&cgroup, USER, PASSWORD, &acl);
    let dir = TempDir::new("audit-mqtt");
    let file = dir.join("audit.jsonl");
    let pid = broker.pid().to_string();
    let d = Daemon::start(&[
        "--no-discover",
        "--pid",
        &pid,
        "--audit-file",
        file.to_str().unwrap(),
    ]);
    for protocol in ["311", "5"] {
        let truth = broker.workload("audit", &["--protocol", protocol]).json();
        assert_eq!(truth["ok"].bool(), Some(true));
    }
    std::thread::sleep(Duration::from_millis(500));
    let recs = stop_and_read(d, &file);
    let got = summary(&recs, "mqtt");
    // Per protocol version: a login, two subscriptions (Mosquitto grants audit/secret and
    // filters deliveries instead), a publish refused only in MQTT 5 (PUBACK 0x87; 3.1.1 has no
    // way to say so), a clean disconnect, then the canary password refused.
    let want = expect(&[
        ("connection.created", "success", "", 4),
        ("user.authentication.success", "success", USER, 2),
        ("subscription.created", "success", "audit/ok", 2),
        ("subscription.created", "success", "audit/secret", 2),
        ("access.denied", "failure", "audit/secret", 1),
        ("connection.closed", "success", USER, 4),
        // The canary password: CONNACK 5 (3.1.1) and 0x87 (5.0).
        ("user.authentication.failure", "failure", USER, 2),
    ]);
    assert_eq!(got, want);
}

#[test]
fn nats_logins_subscriptions_and_permission_violations() {
    require_root();
    let cgroup = Cgroup::create("audit-nats");
    let server = NatsServer::start_with_permissions(
        &cgroup,
        USER,
        PASSWORD,
        Some(r#"publish: { deny: ["audit.secret"] }, subscribe: { deny: ["audit.secret"] }"#),
    );
    let dir = TempDir::new("audit-nats");
    let file = dir.join("audit.jsonl");
    let pid = server.pid().to_string();
    let d = Daemon::start(&[
        "--no-discover",
        "--pid",
        &pid,
        "--audit-file",
        file.to_str().unwrap(),
    ]);
    let truth = server.workload("audit", &[]).json();
    assert_eq!(truth["ok"].bool(), Some(true));
    std::thread::sleep(Duration::from_millis(500));
    let recs = stop_and_read(d, &file);
    let got = summary(&recs, "nats");
    let want = expect(&[
        ("connection.created", "success", "", 2),
        ("user.authentication.success", "success", USER, 1),
        ("subscription.created", "success", "audit.ok", 1),
        // NATS acknowledges no SUB: the subscription is recorded, then its refusal.
        ("subscription.created", "success", "audit.secret", 1),
        ("access.denied", "failure", "audit.secret", 2),
        ("connection.closed", "success", USER, 2),
        ("user.authentication.failure", "failure", USER, 1),
    ]);
    assert_eq!(got, want);
}

/// `--audit-level full` under load: one record per publish, rotation by size keeps exactly
/// `keep` old files of bounded size, mode 0600, no line split; then query and export agree.
#[test]
fn rotation_under_load_and_query_export_round_trip() {
    require_root();
    let cgroup = Cgroup::create("audit-rotate");
    let broker = Mosquitto::start(&cgroup);
    let dir = TempDir::new("audit-rotate");
    let file = dir.join("audit.jsonl");
    let pid = broker.pid().to_string();
    let d = Daemon::start(&[
        "--no-discover",
        "--pid",
        &pid,
        "--audit-file",
        file.to_str().unwrap(),
        "--audit-level",
        "full",
        "--audit-max-bytes",
        "65536",
        "--audit-keep",
        "3",
    ]);
    let truth = broker
        .workload("topics", &["--count", "3000", "--topic-pattern", "rot/{i}"])
        .json();
    assert_eq!(truth["published"].u64(), Some(3001));
    let m = "brokerscope_audit_records_total";
    d.scrape_until(Duration::from_secs(15), |s| {
        s.value(m, &[]).unwrap_or(0.0) >= 3001.0
    });
    d.stop();
    let mut sizes = Vec::new();
    for name in [
        "audit.jsonl",
        "audit.jsonl.1",
        "audit.jsonl.2",
        "audit.jsonl.3",
    ] {
        let meta = std::fs::metadata(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
        assert!(meta.len() <= 65536, "{name}: {} bytes", meta.len());
        sizes.push(meta.len());
    }
    assert!(
        !dir.join("audit.jsonl.4").exists(),
        "only 3 rotated files are kept"
    );
    let recs = records(&file);
    let published: Vec<u64> = recs
        .iter()
        .filter(|r| r["event"]["action"].str() == Some("message.published"))
        .map(|r| {
            r["resource"]["name"]
                .str()
                .unwrap()
                .trim_start_matches("rot/")
                .parse()
                .unwrap()
        })
        .collect();
    // The newest records survive rotation, in order and without gaps; the workload's final
    // QoS 1 message (to rot/0) is the last.
    assert!(
        published.len() > 500,
        "{} publishes kept ({sizes:?})",
        published.len()
    );
    assert_eq!(published.last(), Some(&0));
    let kept = &published[..published.len() - 1];
    assert_eq!(
        kept,
        (kept[0]..=2999).collect::<Vec<_>>(),
        "consecutive publishes up to the last one"
    );

    // brokerscope audit query / export over the same files.
    let run = |args: &[&str]| {
        let o = std::process::Command::new(binary())
            .arg("audit")
            .args(args)
            .args(["--file", file.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    };
    let all = run(&["query"]);
    assert_eq!(all.lines().count(), recs.len());
    let connections = run(&["query", "--action", "connection.*"]);
    assert_eq!(
        connections.lines().count(),
        recs.iter()
            .filter(|r| r["event"]["action"]
                .str()
                .is_some_and(|a| a.starts_with("connection.")))
            .count()
    );
    let csv = run(&["export", "--format", "csv", "--action", "message.published"]);
    assert_eq!(
        csv.lines().count(),
        published.len() + 1,
        "header + one row per record:\n{}",
        csv.lines().take(4).collect::<Vec<_>>().join("\n")
    );
    let json = run(&[
        "export",
        "--format",
        "json",
        "--action",
        "message.published",
    ]);
    // One JSON array of the records.
    let exported = Json::parse(&json).expect("export --format json is one JSON array");
    assert_eq!(exported.arr().len(), published.len());
    assert!(
        exported
            .arr()
            .iter()
            .all(|r| r["event"]["action"].str() == Some("message.published"))
    );
}

fn expect(rows: &[(&str, &str, &str, usize)]) -> BTreeMap<(String, String, String), usize> {
    rows.iter()
        .map(|(a, o, w, n)| ((a.to_string(), o.to_string(), w.to_string()), *n))
        .collect()
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned()
}
