//! Kubernetes metadata end to end: a Mosquitto in a cgroup shaped like a kubelet's
//! (`kubepods.slice/…/kubepods-besteffort-pod<uid>.slice/cri-containerd-<id>.scope`), a fake
//! API server (a thread here) listing its pod, owned by ReplicaSet `mqtt-7d9f8c6b5d`, and the
//! real daemon with `--kube-api-url`: metric series, audit records and span resources carry
//! the pod; the API saw the node's field selector and the token from the token file.
use std::{
    fs,
    io::{BufRead, BufReader, Write},
    net::TcpListener,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use tests::{
    Cgroup, TempDir, daemon::Daemon, metrics::Scrape, mosquitto::Mosquitto, otlp::OtlpReceiver,
    rabbitmq::Json, require_root,
};

const SETTLE: Duration = Duration::from_secs(20);
const NODE: &str = "node-e2e";
const NAMESPACE: &str = "messaging";
const POD: &str = "mqtt-7d9f8c6b5d-x2x4q";

/// The kubelet-shaped cgroup tree under a directory of this run, removed leaf first.
struct PodCgroup {
    top: PathBuf,
    leaf: Cgroup,
}

impl PodCgroup {
    fn create(uid: &str, id: &str) -> Self {
        let base = Cgroup::create("k8s");
        let top = base.path.clone();
        // The base's own Drop would try to remove a non-empty directory: we remove it below.
        std::mem::forget(base);
        let leaf = top
            .join("kubepods.slice")
            .join("kubepods-besteffort.slice")
            .join(format!(
                "kubepods-besteffort-pod{}.slice",
                uid.replace('-', "_")
            ))
            .join(format!("cri-containerd-{id}.scope"));
        fs::create_dir_all(&leaf).unwrap_or_else(|e| panic!("create {}: {e}", leaf.display()));
        Self {
            top,
            leaf: Cgroup { path: leaf },
        }
    }
}

impl Drop for PodCgroup {
    fn drop(&mut self) {
        // The leaf goes first (Cgroup's Drop waits for its processes to leave), then its parents.
        let leaf = std::mem::replace(&mut self.leaf.path, PathBuf::new());
        drop(Cgroup { path: leaf.clone() });
        let mut dir = leaf.parent().map(PathBuf::from);
        while let Some(d) = dir {
            let _ = fs::remove_dir(&d);
            if d == self.top {
                break;
            }
            dir = d.parent().map(PathBuf::from);
        }
    }
}

/// Requests the fake API server saw: target and Authorization header.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// A fake Kubernetes API answering every GET with `body`.
fn fake_api(body: String) -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen: Seen = Arc::default();
    let s = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let mut auth = None;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':')
                    && k.eq_ignore_ascii_case("authorization")
                {
                    auth = Some(v.trim().to_owned());
                }
            }
            let target = line.split_whitespace().nth(1).unwrap_or("").to_owned();
            s.lock().unwrap().push((target, auth));
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, seen)
}

fn pod_list(uid: &str, id: &str) -> String {
    format!(
        r#"{{"kind":"PodList","apiVersion":"v1","metadata":{{"resourceVersion":"1"}},"items":[
  {{"metadata":{{"name":"{POD}","namespace":"{NAMESPACE}","uid":"{uid}",
     "labels":{{"app":"mqtt","pod-template-hash":"7d9f8c6b5d"}},
     "ownerReferences":[{{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"mqtt-7d9f8c6b5d","uid":"rs-uid","controller":true,"blockOwnerDeletion":true}}]}},
   "spec":{{"nodeName":"{NODE}","containers":[{{"name":"mosquitto","image":"eclipse-mosquitto:2"}}]}},
   "status":{{"phase":"Running","containerStatuses":[{{"name":"mosquitto","ready":true,"restartCount":0,
     "image":"eclipse-mosquitto:2","containerID":"containerd://{id}"}}]}}}},
  {{"metadata":{{"name":"other","namespace":"default","uid":"11111111-2222-3333-4444-555555555555"}},
   "spec":{{"nodeName":"{NODE}"}},
   "status":{{"containerStatuses":[{{"name":"other","containerID":"containerd://{other}"}}]}}}}
]}}"#,
        other = "f".repeat(64)
    )
}

fn counter(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.sum(&format!("brokerscope_{name}_total"), labels)
}

#[test]
fn mosquitto_in_a_pod_metrics_audit_and_spans_carry_the_pod() {
    require_root();
    // Unique per run: the pod UID and container id come from this test process's pid.
    let pid = std::process::id();
    let uid = format!("0a1b2c3d-4e5f-6071-8293-{pid:012x}");
    let id = format!("{pid:064x}");
    let cgroup = PodCgroup::create(&uid, &id);
    let broker = Mosquitto::start(&cgroup.leaf);
    let cg = fs::read_to_string(format!("/proc/{}/cgroup", broker.pid())).unwrap();
    assert!(cg.contains(&format!("cri-containerd-{id}.scope")), "{cg}");

    let (url, seen) = fake_api(pod_list(&uid, &id));
    let dir = TempDir::new("k8s-e2e");
    let token = dir.join("token");
    fs::write(&token, "e2e-token-123\n").unwrap();
    let audit = dir.join("audit.jsonl");
    let config = dir.join("brokerscope.toml");
    // token_file has no flag: it comes from the file, the rest from flags.
    fs::write(
        &config,
        format!(
            "[kubernetes]\ntoken_file = \"{}\"\nca_file = \"{}\"\n",
            token.display(),
            dir.join("absent-ca.crt").display()
        ),
    )
    .unwrap();
    let rx = OtlpReceiver::start_grpc();
    let broker_pid = broker.pid().to_string();
    let d = Daemon::start(&[
        "--config",
        config.to_str().unwrap(),
        "--no-discover",
        "--pid",
        &broker_pid,
        "--kube-api-url",
        &url,
        "--node-name",
        NODE,
        "--k8s-metric-labels",
        "--audit-file",
        audit.to_str().unwrap(),
        "--otlp-endpoint",
        &rx.endpoint(),
        "--otlp-protocol",
        "grpc",
    ]);
    let truth = broker
        .workload("confirm-latency", &["--count", "20"])
        .json();
    let n = truth["published"].u64().unwrap() as f64;
    assert_eq!(n, 20.0);

    // Metrics: every per-broker series of the run carries the pod's labels.
    let pod = [
        ("system", "mqtt"),
        ("destination", "latency/t"),
        ("namespace", NAMESPACE),
        ("pod", POD),
        ("workload", "mqtt"),
    ];
    let s = d.scrape_until(SETTLE, |s| {
        s.histogram("brokerscope_deliver_settle_latency_seconds", &pod)
            .is_some_and(|h| h.count >= n)
    });
    for family in [
        "messages_published",
        "messages_confirmed",
        "messages_delivered",
        "messages_acked",
    ] {
        assert_eq!(counter(&s, family, &pod), n, "{family}");
        // …and no series without them.
        assert_eq!(
            counter(&s, family, &[("system", "mqtt")]),
            n,
            "{family}: a series without pod labels"
        );
    }
    assert_eq!(counter(&s, "published_bytes", &pod), n * 100.0);
    for h in [
        "publish_confirm_latency_seconds",
        "publish_deliver_latency_seconds",
        "deliver_settle_latency_seconds",
    ] {
        let count = s
            .histogram(&format!("brokerscope_{h}"), &pod)
            .map(|h| h.count);
        assert_eq!(count, Some(n), "{h}");
    }
    let broker_sys = [
        ("system", "mqtt"),
        ("namespace", NAMESPACE),
        ("pod", POD),
        ("workload", "mqtt"),
    ];
    assert_eq!(counter(&s, "connections_opened", &broker_sys), 2.0);
    assert_eq!(
        counter(&s, "auth", &[("outcome", "success"), ("pod", POD)]),
        2.0
    );
    // The lookups found the pod; the API never failed.
    assert!(
        s.value("brokerscope_kubernetes_lookups_total", &[("result", "hit")])
            .is_some_and(|v| v >= 1.0),
        "{:?}",
        s.samples("brokerscope_kubernetes_lookups_total")
    );
    assert_eq!(
        s.value("brokerscope_kubernetes_api_errors_total", &[]),
        Some(0.0)
    );

    // Spans: the broker's resource.
    let spans = rx.wait_for(SETTLE, |s| s.len() >= 60);
    let logs = d.stop();
    assert_eq!(spans.len(), 60, "{logs}");
    let deployment_name = "k8s.deployment.name";
    for span in &spans {
        for (k, v) in [
            ("k8s.namespace.name", NAMESPACE),
            ("k8s.pod.name", POD),
            ("k8s.pod.uid", uid.as_str()),
            ("k8s.container.name", "mosquitto"),
            (deployment_name, "mqtt"),
            ("k8s.replicaset.name", "mqtt-7d9f8c6b5d"),
            ("k8s.node.name", NODE),
            ("container.id", id.as_str()),
            ("service.name", "brokerscope"),
        ] {
            assert_eq!(span.resource_str(k), Some(v), "{k} of {span:#?}");
        }
    }

    // Audit records: the broker's pod on every record.
    let text = fs::read_to_string(&audit).unwrap();
    let records: Vec<Json> = text.lines().map(|l| Json::parse(l).unwrap()).collect();
    assert!(
        records
            .iter()
            .filter(|r| r["event"]["action"].str() == Some("connection.created"))
            .count()
            == 2,
        "{text}"
    );
    for r in &records {
        assert_eq!(r["container"]["id"].str(), Some(id.as_str()), "{text}");
        assert_eq!(r["container"]["name"].str(), Some("mosquitto"));
        assert_eq!(r["pod"]["name"].str(), Some(POD));
        assert_eq!(r["pod"]["namespace"].str(), Some(NAMESPACE));
        assert_eq!(r["pod"]["uid"].str(), Some(uid.as_str()));
        assert_eq!(r["workload"]["kind"].str(), Some("Deployment"));
        assert_eq!(r["workload"]["name"].str(), Some("mqtt"));
    }

    // The API: the node's pods, with the token from the file.
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty());
    for (target, auth) in &seen {
        assert_eq!(
            target,
            &format!("/api/v1/pods?fieldSelector=spec.nodeName={NODE}")
        );
        assert_eq!(auth.as_deref(), Some("Bearer e2e-token-123"));
    }
    drop(broker);
}
