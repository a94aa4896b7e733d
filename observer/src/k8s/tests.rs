//! The API client and cache against a local HTTP server that answers like the Kubernetes API.
use std::{
    io::{BufRead, BufReader, Write},
    net::TcpListener,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::*;

const ID_MQTT: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const ID_INIT: &str = "2222222222222222222222222222222222222222222222222222222222222222";
const ID_RMQ: &str = "3333333333333333333333333333333333333333333333333333333333333333";
const ID_NATS: &str = "4444444444444444444444444444444444444444444444444444444444444444";
const ID_JOB: &str = "5555555555555555555555555555555555555555555555555555555555555555";
const ID_BARE: &str = "6666666666666666666666666666666666666666666666666666666666666666";
const UID_MQTT: &str = "0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9";

fn pod(
    name: &str,
    uid: &str,
    owner: Option<(&str, &str)>,
    hash: Option<&str>,
    containers: &[(&str, &str)],
) -> serde_json::Value {
    let owners: Vec<_> = owner
        .map(|(k, n)| serde_json::json!({"apiVersion": "apps/v1", "kind": k, "name": n, "uid": "x", "controller": true}))
        .into_iter()
        .collect();
    let mut labels = serde_json::json!({"app": "x"});
    if let Some(h) = hash {
        labels["pod-template-hash"] = h.into();
    }
    serde_json::json!({
        "metadata": {"name": name, "namespace": "messaging", "uid": uid, "labels": labels,
                     "ownerReferences": owners, "resourceVersion": "1"},
        "spec": {"nodeName": "node-a", "containers": [{"name": "ignored", "image": "x"}]},
        "status": {"phase": "Running", "containerStatuses": containers.iter().map(|(n, id)|
            serde_json::json!({"name": n, "containerID": id, "ready": true})).collect::<Vec<_>>()}
    })
}

fn pod_list() -> String {
    let mut mqtt = pod(
        "mqtt-7d9f8c6b5d-x2x4q",
        UID_MQTT,
        Some(("ReplicaSet", "mqtt-7d9f8c6b5d")),
        Some("7d9f8c6b5d"),
        &[("mosquitto", &format!("containerd://{ID_MQTT}"))],
    );
    mqtt["status"]["initContainerStatuses"] = serde_json::json!([{"name": "init-config", "containerID": format!("containerd://{ID_INIT}")}]);
    serde_json::json!({
        "kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "9"},
        "items": [
            mqtt,
            pod("rabbitmq-0", "u-rmq", Some(("StatefulSet", "rabbitmq")), None,
                &[("rabbitmq", &format!("cri-o://{ID_RMQ}"))]),
            pod("nats-abcde", "u-nats", Some(("DaemonSet", "nats")), None,
                &[("nats", &format!("docker://{ID_NATS}"))]),
            pod("backup-28999440-zz", "u-job", Some(("Job", "backup-28999440")), None,
                &[("backup", &format!("containerd://{ID_JOB}"))]),
            pod("bare", "u-bare", None, None, &[("main", &format!("containerd://{ID_BARE}"))]),
            // A container still being created has no id yet.
            pod("pending", "u-pending", None, None, &[]),
        ]
    })
    .to_string()
}

/// One answer of the fake API server.
#[derive(Clone)]
enum Answer {
    Json(u16, String),
    Slow(Duration, String),
}

#[derive(Default)]
struct Seen {
    /// Request target and Authorization header of each request.
    requests: Vec<(String, Option<String>)>,
}

/// A fake API server answering each request with `answer(n)` (n counts from 0).
fn serve(answer: impl Fn(usize) -> Answer + Send + 'static) -> (String, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s = seen.clone();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let target = line.split_whitespace().nth(1).unwrap_or("").to_owned();
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
            s.lock().unwrap().requests.push((target, auth));
            let (status, body) = match answer(n) {
                Answer::Json(status, body) => (status, body),
                Answer::Slow(d, body) => {
                    std::thread::sleep(d);
                    (200, body)
                }
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, seen)
}

fn client(url: &str, token: Option<&std::path::Path>) -> ApiClient {
    ApiClient::new(&ApiConfig {
        url: url.into(),
        token_file: token.map(Into::into),
        ca_file: None,
        timeout: Duration::from_secs(2),
    })
    .unwrap()
}

fn temp_token(text: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!(
        "bs-k8s-token-{}-{}",
        std::process::id(),
        text.len()
    ));
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn lists_the_node_pods_with_the_token_and_field_selector() {
    let (url, seen) = serve(|_| Answer::Json(200, pod_list()));
    let token = temp_token("secret-token\n");
    let pods = client(&url, Some(&token)).list_pods("node-a").unwrap();
    std::fs::remove_file(&token).unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.requests,
        vec![(
            "/api/v1/pods?fieldSelector=spec.nodeName=node-a".to_owned(),
            Some("Bearer secret-token".to_owned())
        )]
    );
    assert_eq!(pods.len(), 6);
    let cache = PodCache::new();
    cache.install(pods, 100);
    let hit = |id: &str| match cache.lookup(Some(id), None) {
        Lookup::Hit(m) => (*m).clone(),
        other => panic!("{id}: {other:?}"),
    };
    let m = hit(ID_MQTT);
    assert_eq!(
        m,
        PodMeta {
            namespace: "messaging".into(),
            pod: "mqtt-7d9f8c6b5d-x2x4q".into(),
            uid: UID_MQTT.into(),
            container: "mosquitto".into(),
            workload_kind: "Deployment".into(),
            workload_name: "mqtt".into(),
            replicaset: Some("mqtt-7d9f8c6b5d".into()),
            node: "node-a".into(),
        }
    );
    assert_eq!(hit(ID_INIT).container, "init-config");
    let kinds: Vec<_> = [ID_RMQ, ID_NATS, ID_JOB, ID_BARE]
        .iter()
        .map(|id| {
            let m = hit(id);
            (m.workload_kind, m.workload_name, m.container)
        })
        .collect();
    let s = |a: &str, b: &str, c: &str| (a.to_owned(), b.to_owned(), c.to_owned());
    assert_eq!(
        kinds,
        vec![
            s("StatefulSet", "rabbitmq", "rabbitmq"),
            s("DaemonSet", "nats", "nats"),
            s("Job", "backup-28999440", "backup"),
            s("Pod", "bare", "main"),
        ]
    );
    // By pod UID when the container id is unknown (container name then empty).
    match cache.lookup(Some("ffff"), Some(UID_MQTT)) {
        Lookup::Hit(m) => assert_eq!(
            (m.pod.as_str(), m.container.as_str()),
            ("mqtt-7d9f8c6b5d-x2x4q", "")
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(cache.lookup(Some("ffff"), None), Lookup::Miss);
    let st = cache.stats();
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(
        (
            st.hits.load(Relaxed),
            st.misses.load(Relaxed),
            st.errors.load(Relaxed)
        ),
        (7, 1, 0)
    );
}

#[test]
fn errors_name_what_to_do() {
    let forbidden = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"pods is forbidden: User \"system:serviceaccount:obs:brokerscope\" cannot list resource \"pods\"","reason":"Forbidden","code":403}"#;
    let cases: Vec<(Answer, &str, &str)> = vec![
        (Answer::Json(401, "{}".into()), "unauthorized", "token"),
        (
            Answer::Json(403, forbidden.into()),
            "forbidden",
            "list pods",
        ),
        (Answer::Json(500, "oops".into()), "status", "500: oops"),
        (
            Answer::Json(200, "{\"items\": [".into()),
            "json",
            "not valid JSON",
        ),
        (
            Answer::Json(200, "{\"items\": 5}".into()),
            "json",
            "not valid JSON",
        ),
        // Slower than the client's timeout.
        (
            Answer::Slow(Duration::from_secs(4), pod_list()),
            "request",
            "reachable",
        ),
    ];
    for (answer, kind, text) in cases {
        let (url, _) = serve(move |_| answer.clone());
        let e = client(&url, None).list_pods("node-a").unwrap_err();
        assert_eq!(e.kind(), kind, "{e}");
        assert!(e.to_string().contains(text), "{e}");
    }
    let e = client("http://127.0.0.1:1", None)
        .list_pods("n")
        .unwrap_err();
    assert_eq!(e.kind(), "request", "{e}");
    for bad in ["ftp://x", "127.0.0.1:6443", "https://"] {
        let e = ApiClient::new(&ApiConfig {
            url: bad.into(),
            token_file: None,
            ca_file: None,
            timeout: Duration::from_secs(1),
        })
        .unwrap_err();
        assert_eq!(e.kind(), "url", "{bad}: {e}");
    }
    let e = ApiClient::new(&ApiConfig {
        url: "https://10.0.0.1:443".into(),
        token_file: None,
        ca_file: Some("/nonexistent/ca.crt".into()),
        timeout: Duration::from_secs(1),
    })
    .unwrap_err();
    assert!(e.to_string().contains("/nonexistent/ca.crt"), "{e}");
    let not_pem = temp_token("not a certificate");
    let e = ApiClient::new(&ApiConfig {
        url: "https://10.0.0.1:443".into(),
        token_file: None,
        ca_file: Some(not_pem.clone()),
        timeout: Duration::from_secs(1),
    })
    .unwrap_err();
    std::fs::remove_file(&not_pem).unwrap();
    assert_eq!(e.kind(), "ca", "{e}");
}

#[test]
fn in_cluster_url_from_the_environment() {
    let env = |h: &'static str, p: Option<&'static str>| {
        move |k: &str| match k {
            "KUBERNETES_SERVICE_HOST" => Some(h.to_owned()),
            "KUBERNETES_SERVICE_PORT" => p.map(str::to_owned),
            _ => None,
        }
    };
    assert_eq!(
        ApiConfig::in_cluster_url(env("10.96.0.1", Some("443"))).as_deref(),
        Some("https://10.96.0.1:443")
    );
    assert_eq!(
        ApiConfig::in_cluster_url(env("fd00::1", Some("6443"))).as_deref(),
        Some("https://[fd00::1]:6443")
    );
    assert_eq!(
        ApiConfig::in_cluster_url(env("10.96.0.1", None)).as_deref(),
        Some("https://10.96.0.1:443")
    );
    assert_eq!(ApiConfig::in_cluster_url(|_| None), None);
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn refresher_survives_errors_and_refreshes_on_a_rate_limited_miss() {
    // First answer 500, then the list; the period is long, so only misses bring refreshes.
    let (url, seen) = serve(|n| {
        if n == 0 {
            Answer::Json(500, "down".into())
        } else {
            Answer::Json(200, pod_list())
        }
    });
    let refresher = PodCache::start(
        client(&url, None),
        CacheConfig {
            node: "node-a".into(),
            refresh: Duration::from_secs(3600),
            min_interval: Duration::from_millis(300),
            max_entries: 100,
        },
    )
    .unwrap();
    let cache = refresher.cache().clone();
    use std::sync::atomic::Ordering::Relaxed;
    wait_for("the first (failing) request", || {
        cache.stats().api_errors.load(Relaxed) == 1
    });
    // Not loaded yet: an error lookup, which (like a miss) asks for an early retry.
    assert_eq!(cache.lookup(Some(ID_MQTT), None), Lookup::Error);
    wait_for("the second request", || cache.generation() == 1);
    let started = Instant::now();
    assert!(matches!(cache.lookup(Some(ID_MQTT), None), Lookup::Hit(_)));
    // Many misses within the rate limit: one more request, not one per miss.
    for _ in 0..50 {
        assert_eq!(cache.lookup(Some("unknown"), None), Lookup::Miss);
    }
    wait_for("the miss refresh", || cache.generation() == 2);
    assert!(started.elapsed() >= Duration::from_millis(250));
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(seen.lock().unwrap().requests.len(), 3);
    assert_eq!(cache.generation(), 2);
    drop(refresher);
}

#[test]
fn the_cap_drops_and_counts_containers() {
    let (url, _) = serve(|_| Answer::Json(200, pod_list()));
    let pods = client(&url, None).list_pods("node-a").unwrap();
    let cache = PodCache::new();
    cache.install(pods, 3);
    assert_eq!(cache.len(), 3);
    // Six containers with ids (mqtt + its init container, rabbitmq, nats, job, bare).
    assert_eq!(
        cache
            .stats()
            .evictions
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
}

#[test]
fn brokers_combine_proc_and_the_api() {
    // A fake procfs with one pod process (pid 10) and one host process (pid 11).
    let root = std::env::temp_dir().join(format!("bs-k8s-proc-{}", std::process::id()));
    let pod_dir = root.join("10");
    std::fs::create_dir_all(&pod_dir).unwrap();
    std::fs::write(
        pod_dir.join("cgroup"),
        format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{ID_MQTT}.scope\n",
            UID_MQTT.replace('-', "_")
        ),
    )
    .unwrap();
    std::fs::write(pod_dir.join("environ"), b"HOSTNAME=from-proc\0").unwrap();
    std::fs::create_dir_all(root.join("11")).unwrap();
    std::fs::write(root.join("11/cgroup"), "0::/user.slice\n").unwrap();
    let proc = crate::capture::procfs::ProcFs::new(&root);

    // /proc alone.
    let alone = Brokers::new(proc.clone(), None);
    let m = alone.resolve(10).unwrap();
    assert_eq!(m.container_id.as_deref(), Some(ID_MQTT));
    assert_eq!(m.pod_uid.as_deref(), Some(UID_MQTT));
    assert_eq!(m.pod_name.as_deref(), Some("from-proc"));
    assert_eq!(m.workload_name, None);
    assert_eq!(
        m.metric_labels().collect::<Vec<_>>(),
        vec![("pod", "from-proc")]
    );
    assert!(alone.resolve(11).is_none());

    // With the API: unknown until the cache loads, then the API's names.
    let cache = PodCache::new();
    let brokers = Brokers::new(proc, Some(cache.clone()));
    let before = brokers.resolve(10).unwrap();
    assert_eq!(before.workload_name, None);
    let (url, _) = serve(|_| Answer::Json(200, pod_list()));
    cache.install(client(&url, None).list_pods("node-a").unwrap(), 100);
    let after = brokers.resolve(10).unwrap();
    std::fs::remove_dir_all(&root).unwrap();
    assert_ne!(after.id, before.id);
    assert_eq!(
        after.metric_labels().collect::<Vec<_>>(),
        vec![
            ("namespace", "messaging"),
            ("pod", "mqtt-7d9f8c6b5d-x2x4q"),
            ("workload", "mqtt")
        ]
    );
    let attrs = after.resource_attributes();
    for (k, v) in [
        ("k8s.deployment.name", "mqtt"),
        ("k8s.replicaset.name", "mqtt-7d9f8c6b5d"),
        ("k8s.container.name", "mosquitto"),
        ("k8s.node.name", "node-a"),
        ("k8s.pod.uid", UID_MQTT),
        ("container.id", ID_MQTT),
    ] {
        assert!(
            attrs.contains(&(k.to_owned(), v.to_owned())),
            "{k} in {attrs:?}"
        );
    }
    // Same cache generation: the same Arc (and id) comes back without a lookup.
    let again = brokers.resolve(10).unwrap();
    assert!(Arc::ptr_eq(&after, &again));
    // A refresh with the same content keeps the id.
    cache.install(client(&url, None).list_pods("node-a").unwrap(), 100);
    assert_eq!(brokers.resolve(10).unwrap().id, after.id);
}
