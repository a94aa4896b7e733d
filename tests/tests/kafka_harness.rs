//! The Kafka harnesses themselves (no observer): tansu in a fresh cgroup of its own, found in
//! /proc (pid, listener, cgroup), both confluent-kafka workload scenarios run against it with
//! their ground truth checked; the sendfile test server and its client; and nothing of ours
//! left after drop.
use std::{fs, time::Duration};

use observer::capture::procfs::ProcFs;
use tests::{
    Cgroup, TRACEPARENT, kafka_sendfile_server,
    rabbitmq::{Json, comm},
    require_root,
    tansu::{LAG_TOPIC, ORDERS_TOPIC, SENDFILE_BATCHES, SENDFILE_RECORDS_PER_BATCH, Tansu},
    wait_until,
};

/// `pid` listens on `port` only and is the only member of `cgroup`.
fn assert_alone_in(cgroup: &Cgroup, pid: u32, port: u16) {
    let procfs = ProcFs::default();
    let ports = procfs.listening_ports(pid).expect("listening ports");
    assert_eq!(ports, vec![port], "{pid} listens on {ports:?}");
    let cg = procfs
        .cgroup_v2_path(pid)
        .expect("read cgroup")
        .expect("cgroup v2 path");
    assert!(
        cgroup.path.ends_with(cg.trim_start_matches('/')),
        "{pid} is in {cg}, not in {}",
        cgroup.path.display()
    );
    let members = fs::read_to_string(cgroup.path.join("cgroup.procs")).unwrap();
    assert_eq!(
        members.lines().collect::<Vec<_>>(),
        vec![pid.to_string()],
        "cgroup members"
    );
}

fn assert_gone(cgroup: &Cgroup, pid: u32, comm_was: &str) {
    assert!(
        wait_until(Duration::from_secs(5), || comm(pid).as_deref()
            != Some(comm_was)),
        "{comm_was} {pid} still runs"
    );
    let members = fs::read_to_string(cgroup.path.join("cgroup.procs")).unwrap();
    assert!(members.trim().is_empty(), "cgroup still holds {members}");
}

fn per_partition(j: &Json, parts: u32) -> Vec<Vec<u64>> {
    (0..parts)
        .map(|p| j[p.to_string().as_str()].u64s())
        .collect()
}

fn check_produce_consume(j: &Json) {
    assert_eq!(j["scenario"].str(), Some("produce-consume"));
    assert_eq!(j["ok"].bool(), Some(true));
    assert_eq!(j["topic"].str(), Some(ORDERS_TOPIC));
    assert_eq!(j["group"].str(), Some("bs-group"));
    assert_eq!(j["partitions"].u64(), Some(2));
    assert_eq!(j["count"].u64(), Some(20));
    assert_eq!(j["consumed_count"].u64(), Some(20));
    let ten: Vec<u64> = (0..10).collect();
    assert_eq!(
        per_partition(&j["produced"], 2),
        vec![ten.clone(), ten.clone()]
    );
    assert_eq!(per_partition(&j["consumed"], 2), vec![ten.clone(), ten]);
    // Record i went to partition i % 2 at offset i / 2, reported in produce order.
    let order: Vec<Vec<u64>> = j["produced_order"].arr().iter().map(Json::u64s).collect();
    assert_eq!(
        order,
        (0..20u64).map(|i| vec![i % 2, i / 2]).collect::<Vec<_>>()
    );
    for p in ["0", "1"] {
        assert_eq!(j["committed"][p].u64(), Some(10), "committed {p}");
        assert_eq!(
            j["high_watermarks"][p].u64(),
            Some(10),
            "high watermark {p}"
        );
        assert_eq!(j["lag"][p].u64(), Some(0), "lag {p}");
    }
    // A synchronous commit after every 5 records: 4 commits, the last one {0: 10, 1: 10}.
    let commits = j["commits"].arr();
    assert_eq!(commits.len(), 4, "commits {commits:?}");
    let last = &commits[3];
    assert_eq!((last["0"].u64(), last["1"].u64()), (Some(10), Some(10)));
    assert_eq!(j["traceparent"]["partition"].u64(), Some(0));
    assert_eq!(j["traceparent"]["offset"].u64(), Some(0));
    assert_eq!(j["traceparent"]["value"].str(), Some(TRACEPARENT));
}

fn check_half(j: &Json) {
    assert_eq!(j["scenario"].str(), Some("half"));
    assert_eq!(j["ok"].bool(), Some(true));
    assert_eq!(j["topic"].str(), Some(LAG_TOPIC));
    assert_eq!(j["group"].str(), Some("bs-lag-group"));
    assert_eq!(j["partitions"].u64(), Some(1));
    assert_eq!(j["produced"]["0"].u64s(), (0..20).collect::<Vec<_>>());
    assert_eq!(j["consumed"]["0"].u64s(), (0..10).collect::<Vec<_>>());
    assert_eq!(j["consumed_count"].u64(), Some(10));
    assert_eq!(j["high_watermarks"]["0"].u64(), Some(20));
    assert_eq!(j["committed"]["0"].u64(), Some(10));
    assert_eq!(j["lag"]["0"].u64(), Some(10));
    assert_eq!(j["commits"].arr().len(), 1);
}

#[test]
fn tansu_workloads() {
    require_root();
    let cgroup = Cgroup::create("kafka-tansu");
    let tansu = Tansu::start(&cgroup);
    let pid = tansu.pid();
    let comm_was = comm(pid).expect("tansu comm");
    assert!(comm_was.starts_with("tansu"), "comm {comm_was}");
    assert_alone_in(&cgroup, pid, tansu.port);

    tansu.create_topic(ORDERS_TOPIC, 2);
    tansu.create_topic(LAG_TOPIC, 1);
    assert!(
        tansu.try_create_topic(ORDERS_TOPIC, 2).is_err(),
        "creating an existing topic must fail"
    );

    let pc = tansu.workload("produce-consume", &["--partitions", "2"]);
    check_produce_consume(&pc.json());
    let half = tansu.workload("half", &[]);
    check_half(&half.json());

    // Missing topic: the workload refuses (tansu would auto-create it on produce).
    let missing = tansu.workload("half", &["--topic", "bs-missing", "--io-timeout", "3"]);
    assert!(!missing.success(), "workload on a missing topic succeeded");

    // Clients are gone; the broker still is the only member of its cgroup.
    assert_alone_in(&cgroup, pid, tansu.port);
    drop(tansu);
    assert_gone(&cgroup, pid, &comm_was);
}

#[test]
fn sendfile_server_and_client() {
    require_root();
    let cgroup = Cgroup::create("kafka-sendfile");
    let server = kafka_sendfile_server!(Some(&cgroup));
    let pid = server.pid();
    let comm_was = comm(pid).expect("server comm");
    assert_alone_in(&cgroup, pid, server.port());

    let stats = server.stats();
    let batches = stats["batches"].arr().to_vec();
    assert_eq!(batches.len() as u64, SENDFILE_BATCHES);
    let segment_len = fs::metadata(server.segment_path()).unwrap().len();
    let sizes: u64 = batches.iter().map(|b| b["size"].u64().unwrap()).sum();
    assert_eq!(segment_len, sizes, "the segment is exactly the batches");

    let run = server.client(SENDFILE_BATCHES, None);
    let j = run.json();
    assert_eq!(j["ok"].bool(), Some(true));
    let total = SENDFILE_BATCHES * SENDFILE_RECORDS_PER_BATCH;
    assert_eq!(j["record_count"].u64(), Some(total));
    assert_eq!(j["offsets"].u64s(), (0..total).collect::<Vec<_>>());
    let fetches = j["fetches"].arr();
    assert_eq!(fetches.len() as u64, SENDFILE_BATCHES);
    let mut sent = 0;
    for (k, (f, b)) in fetches.iter().zip(&batches).enumerate() {
        let base = k as u64 * SENDFILE_RECORDS_PER_BATCH;
        assert_eq!(f["fetch_offset"].u64(), Some(base));
        assert_eq!(f["base_offset"].u64(), Some(base));
        assert_eq!(b["base_offset"].u64(), Some(base));
        assert_eq!(
            f["last_offset"].u64(),
            Some(base + SENDFILE_RECORDS_PER_BATCH - 1)
        );
        assert_eq!(f["records"].u64(), Some(SENDFILE_RECORDS_PER_BATCH));
        assert_eq!(f["high_watermark"].u64(), Some(total));
        assert_eq!(f["batch_bytes"].u64(), b["size"].u64(), "batch {k} size");
        assert_eq!(f["crc"].u64(), b["crc"].u64(), "batch {k} CRC");
        assert_eq!(
            f["values"].strs(),
            (base..base + SENDFILE_RECORDS_PER_BATCH)
                .map(|o| format!("rec-{o}"))
                .collect::<Vec<_>>()
        );
        sent += b["size"].u64().unwrap();
    }

    // The server's own account: every batch byte went out with sendfile(2).
    let stats = server.stats();
    assert_eq!(stats["fetches"].u64(), Some(SENDFILE_BATCHES));
    assert_eq!(stats["responses"].u64(), Some(SENDFILE_BATCHES + 1));
    assert_eq!(stats["sendfile_bytes"].u64(), Some(sent));
    assert!(stats["sendfile_calls"].u64().unwrap() >= SENDFILE_BATCHES);

    assert_alone_in(&cgroup, pid, server.port());
    drop(server);
    assert_gone(&cgroup, pid, &comm_was);
}
