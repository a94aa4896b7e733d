//! The RabbitMQ harness itself (no observer): a private rabbitmq-server in its own cgroup, the
//! beam.smp that owns the AMQP listener found through /proc, the pika workload's scenarios run
//! against it with their ground truth checked, and nothing of the broker left after drop.
use std::{fs, time::Duration, time::Instant};

use observer::capture::procfs::ProcFs;
use tests::{
    Cgroup,
    rabbitmq::{Json, RabbitMq, comm, node_processes},
    require_root,
};

fn count(j: &Json, what: &str) -> u64 {
    j.u64()
        .unwrap_or_else(|| panic!("{what}: not a count: {j:?}"))
}

#[test]
fn rabbitmq_harness_runs_real_workloads() {
    require_root();
    let cgroup = Cgroup::create("rabbitmq");
    let t0 = Instant::now();
    let broker = RabbitMq::start(&cgroup);
    eprintln!(
        "rabbitmq {} up on 127.0.0.1:{} in {:.1?}",
        broker.node,
        broker.port,
        t0.elapsed()
    );

    // The broker process: beam.smp, listening on the AMQP port, in our cgroup.
    let pid = broker.broker_pid();
    assert_eq!(pid, broker.pid_beam);
    assert_ne!(
        pid,
        broker.proc.pid(),
        "the script is beam.smp's parent, not beam.smp"
    );
    assert_eq!(comm(pid).as_deref(), Some("beam.smp"));
    let procfs = ProcFs::default();
    let ports = procfs.listening_ports(pid).expect("listening ports");
    assert!(
        ports.contains(&broker.port),
        "beam.smp {pid} listens on {ports:?}"
    );
    assert!(
        ports.contains(&broker.dist_port),
        "distribution port: {ports:?}"
    );
    let cg = procfs
        .cgroup_v2_path(pid)
        .expect("read cgroup")
        .expect("cgroup v2 path");
    assert!(
        cgroup.path.ends_with(cg.trim_start_matches('/')),
        "beam.smp is in {cg}, not in {}",
        cgroup.path.display()
    );
    let members = fs::read_to_string(cgroup.path.join("cgroup.procs")).unwrap();
    for p in [broker.proc.pid(), pid] {
        assert!(
            members.lines().any(|l| l == p.to_string()),
            "{p} not in {members}"
        );
    }
    assert_eq!(broker.pid_file(), Some(pid), "RABBITMQ_PID_FILE");
    assert!(
        broker.log_path().exists(),
        "{}",
        broker.log_path().display()
    );
    assert!(
        broker
            .amqp_url()
            .ends_with(&format!(":{}/%2F", broker.port))
    );

    // full: every count of the ground truth.
    let j = broker.workload("full", &[]).json();
    let n = 20;
    assert_eq!(j["scenario"].str(), Some("full"));
    assert_eq!(j["ok"].bool(), Some(true));
    assert_eq!(count(&j["count"], "count"), n);
    assert!(count(&j["client_port"], "client_port") > 0);
    assert_eq!(count(&j["published"][""], "published default"), n + 1);
    assert_eq!(count(&j["published"]["bs.topic"], "published topic"), n);
    assert_eq!(count(&j["published_total"], "published_total"), 2 * n + 1);
    assert_eq!(count(&j["confirms"], "confirms"), 2 * n + 1);
    assert_eq!(count(&j["delivered"]["bs.orders"], "delivered orders"), n);
    assert_eq!(
        count(&j["delivered"]["bs.topic.q"], "delivered topic"),
        n + 1
    );
    assert_eq!(count(&j["delivered_total"], "delivered_total"), 2 * n + 2);
    assert_eq!(count(&j["acked"], "acked"), 2 * n + 1);
    assert_eq!(count(&j["nacked"], "nacked"), 1);
    assert_eq!(count(&j["redelivered"], "redelivered"), 1);
    assert_eq!(count(&j["gets"]["ok"], "get-ok"), 1);
    assert_eq!(count(&j["gets"]["empty"], "get-empty"), 1);
    let tags = &j["delivery_tags"];
    assert_eq!(tags["bs.orders"].u64s(), (1..=n).collect::<Vec<_>>());
    let topic_tags = tags["bs.topic.q"].u64s();
    assert_eq!(topic_tags, (n + 1..=2 * n + 1).collect::<Vec<_>>());
    assert_eq!(tags["get"].u64s(), vec![2 * n + 2]);
    assert_eq!(j["nacked_tags"].u64s(), vec![n + 1]);
    let redelivered = j["redelivered_tags"].u64s();
    assert!(redelivered.len() == 1 && redelivered[0] > n + 1 && redelivered[0] <= 2 * n + 1);
    let ids = &j["message_ids"];
    let expected: Vec<String> = (0..n).map(|i| format!("m-{i}")).collect();
    assert_eq!(ids["bs.orders"].strs(), expected);
    assert_eq!(ids["get"].strs(), vec!["m-get"]);
    let mut topic_ids = ids["bs.topic.q"].strs();
    assert_eq!(topic_ids.len() as u64, n + 1);
    assert_eq!(topic_ids.iter().filter(|&&i| i == "t-0").count(), 2);
    topic_ids.sort_unstable();
    topic_ids.dedup();
    assert_eq!(topic_ids.len() as u64, n);
    assert_eq!(
        j["declared"]["queues"].strs(),
        ["bs.orders", "bs.topic.q", "bs.temp"]
    );
    assert_eq!(j["declared"]["exchanges"]["bs.topic"].str(), Some("topic"));
    assert_eq!(
        j["declared"]["exchanges"]["bs.temp.x"].str(),
        Some("direct")
    );
    assert_eq!(j["bound"][0]["routing_key"].str(), Some("orders.#"));
    assert_eq!(j["deleted"]["queues"].strs(), ["bs.temp"]);
    assert_eq!(j["deleted"]["exchanges"].strs(), ["bs.temp.x"]);
    assert_eq!(j["traceparent_message_id"].str(), Some("m-0"));
    assert_eq!(j["channels"]["publisher"].u64(), Some(1));
    assert_eq!(j["channels"]["consumer"].u64(), Some(2));

    // The broker agrees: the queues exist and are empty, the temporary ones are gone.
    let out = broker
        .ctl(
            &["list_queues", "-q", "name", "messages"],
            Duration::from_secs(30),
        )
        .expect("rabbitmqctl list_queues");
    assert!(out.status.success(), "{out:?}");
    let queues: Vec<Vec<&str>> = out
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .filter(|f: &Vec<&str>| f.len() == 2)
        .collect();
    for q in ["bs.orders", "bs.topic.q"] {
        assert!(queues.contains(&vec![q, "0"]), "{q} in {queues:?}");
    }
    assert!(!queues.iter().any(|f| f[0] == "bs.temp"), "{queues:?}");

    // badlogin: refused.
    let j = broker.workload("badlogin", &[]).json();
    assert_eq!(j["auth_failed"].bool(), Some(true));
    assert_eq!(j["reply_code"].u64(), Some(403));
    assert_eq!(j["password_canary"].str(), Some("canary-Secr3t-pw"));

    // slow-ack: a few messages, each acked after the sleep.
    let j = broker
        .workload("slow-ack", &["--count", "3", "--sleep-ms", "50"])
        .json();
    assert_eq!(count(&j["acked"], "slow acked"), 3);
    assert_eq!(j["delivery_tags"].u64s(), vec![1, 2, 3]);
    assert!(
        j["ack_delays_ms"]
            .arr()
            .iter()
            .all(|d| matches!(d, Json::Num(ms) if *ms >= 50.0))
    );

    // `full` leaves its queues empty, so it runs again on the same broker.
    let again = broker.workload("full", &["--count", "2"]);
    assert!(again.success(), "{:?}", again.output);

    // Drop stops the broker: nothing of our node remains, the cgroup is empty.
    let node = broker.node.clone();
    let t1 = Instant::now();
    drop(broker);
    eprintln!("rabbitmq stopped in {:.1?}", t1.elapsed());
    assert!(
        node_processes(&node).is_empty(),
        "{node} left processes behind"
    );
    assert_ne!(
        comm(pid).as_deref(),
        Some("beam.smp"),
        "beam.smp {pid} still runs"
    );
    let members = fs::read_to_string(cgroup.path.join("cgroup.procs")).unwrap();
    assert!(members.trim().is_empty(), "cgroup still holds {members}");
}

#[test]
fn amqp_workload_fails_loudly_without_a_broker() {
    // No broker on this port: the script must exit non-zero by itself, quickly.
    let port = tests::free_port();
    let t0 = Instant::now();
    let w = tests::rabbitmq::run_workload(
        &format!("amqp://guest:guest@127.0.0.1:{port}/%2F"),
        "full",
        &["--io-timeout", "3", "--timeout", "20"],
        None,
    );
    assert!(!w.success(), "{:?}", w.output);
    assert!(
        w.output.stderr.contains("amqp_workload: FAIL"),
        "{:?}",
        w.output
    );
    assert!(t0.elapsed() < Duration::from_secs(20));
}

/// The users, vhosts and permissions the audit tests set up, and the `audit` scenario's ground
/// truth against them: a login with declare/bind/purge/delete, a wrong password (403), a
/// queue.declare without configure rights (channel closed, 403) and a vhost without access
/// (connection closed, 530).
#[test]
fn rabbitmq_audit_scenario() {
    require_root();
    let cgroup = Cgroup::create("rabbitmq-audit");
    let broker = RabbitMq::start(&cgroup);
    broker.add_vhost("audit-v");
    broker.add_user("audit-admin", "admin-pw", Some(("/", ".*", ".*", ".*")));
    broker.set_user_tags("audit-admin", &["administrator"]);
    broker.add_user(
        "audit-limited",
        "limited-pw",
        Some(("audit-v", "^$", ".*", ".*")),
    );
    let users = broker.ctl_ok("list users", &["list_users", "-q"]);
    assert!(
        users.contains("audit-admin") && users.contains("audit-limited"),
        "{users}"
    );
    let perms = broker.ctl_ok(
        "permissions",
        &["list_user_permissions", "-q", "audit-limited"],
    );
    assert!(
        perms
            .lines()
            .any(|l| l.split_whitespace().eq(["audit-v", "^$", ".*", ".*"])),
        "{perms}"
    );
    assert_eq!(
        broker.amqp_url_for("audit-admin", "p@ss", "/"),
        format!("amqp://audit-admin:p%40ss@127.0.0.1:{}/%2F", broker.port)
    );

    let j = broker
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
    eprintln!("audit ground truth: {j:?}");
    let steps = j["steps"].arr();
    let ops: Vec<(&str, &str)> = steps
        .iter()
        .map(|s| (s["op"].str().unwrap(), s["outcome"].str().unwrap()))
        .collect();
    assert_eq!(
        ops,
        [
            ("login", "success"),
            ("exchange.declare", "success"),
            ("queue.declare", "success"),
            ("queue.bind", "success"),
            ("basic.publish", "success"),
            ("queue.purge", "success"),
            ("queue.delete", "success"),
            ("exchange.delete", "success"),
            ("close", "success"),
            ("login", "failure"),
            ("login", "success"),
            ("queue.declare", "failure"),
            ("close", "success"),
            ("login", "failure"),
        ]
    );
    let code = |i: usize| {
        (
            steps[i]["user"].str(),
            steps[i]["vhost"].str(),
            steps[i]["reply_code"].u64(),
            steps[i]["reply_text"].str(),
        )
    };
    assert_eq!(
        code(9),
        (
            Some("audit-admin"),
            Some("/"),
            Some(403),
            Some("ACCESS_REFUSED")
        )
    );
    assert_eq!(steps[11]["queue"].str(), Some("audit.denied"));
    assert_eq!(
        (steps[11]["reply_code"].u64(), steps[11]["reply_text"].str()),
        (Some(403), Some("ACCESS_REFUSED"))
    );
    assert_eq!(steps[10]["vhost"].str(), Some("audit-v"));
    assert_eq!(
        code(13),
        (
            Some("audit-limited"),
            Some("/"),
            Some(530),
            Some("NOT_ALLOWED")
        )
    );
    assert_eq!(j["purged"].u64(), Some(3));
    assert_eq!(j["logins_failed"].u64(), Some(2));
    assert_eq!(j["failures"].u64(), Some(3));
    // Nothing is left behind in either vhost.
    for vhost in ["/", "audit-v"] {
        let queues = broker.ctl_ok("queues", &["list_queues", "-q", "-p", vhost, "name"]);
        assert!(!queues.contains("audit."), "{vhost}: {queues}");
    }
}
