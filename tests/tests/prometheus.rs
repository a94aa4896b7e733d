//! The Grafana dashboards (grafana/dashboards/) and Prometheus alert rules (deploy/prometheus/)
//! against the real thing: promtool checks and unit-tests the rules; the dashboards' structure
//! is checked; then a private Prometheus scrapes the real daemon watching real brokers
//! (Mosquitto, RabbitMQ, NATS with JetStream, tansu) while workloads make every panel's data —
//! messages on all four protocols, acks, a nack, a JetStream term, a redelivery, a refused
//! publish, an unroutable return, a refused login, an AMQP 404, Kafka lag — and every panel
//! target, variable query and alert expression is evaluated through Prometheus' HTTP API.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use tests::{
    Cgroup,
    daemon::Daemon,
    mosquitto::{Mosquitto, run_script},
    nats::NatsServer,
    prometheus::{Prometheus, Target, promtool},
    rabbitmq::{Json, RabbitMq},
    require_root,
    tansu::{LATENCY_TOPIC, Tansu},
    wait_until,
};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

const DASHBOARDS: [&str; 2] = [
    "grafana/dashboards/brokerscope-overview.json",
    "grafana/dashboards/brokerscope-destination.json",
];

fn dashboard(path: &str) -> Json {
    Json::parse(&read(path)).unwrap_or_else(|e| panic!("{path} is not valid JSON: {e}"))
}

/// Every panel, the ones inside rows included.
fn panels(d: &Json) -> Vec<&Json> {
    let mut out = Vec::new();
    for p in d["panels"].arr() {
        out.push(p);
        out.extend(p["panels"].arr());
    }
    out
}

/// (panel title, target expression) of every panel target.
fn targets(d: &Json) -> Vec<(String, String)> {
    panels(d)
        .into_iter()
        .flat_map(|p| {
            let title = p["title"].str().unwrap_or("?").to_owned();
            p["targets"]
                .arr()
                .iter()
                .map(move |t| (title.clone(), t["expr"].str().unwrap_or("").to_owned()))
        })
        .collect()
}

fn variables(d: &Json) -> &[Json] {
    d["templating"]["list"].arr()
}

/// `$name` / `${name…}` references in `text` (Grafana's global `$__…` variables excluded).
fn references(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = text.as_bytes();
    for (i, _) in text.match_indices('$') {
        let rest = &text[i + 1..];
        let rest = rest.strip_prefix('{').unwrap_or(rest);
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() && !name.starts_with("__") && b.get(i + 1) != Some(&b'$') {
            out.insert(name);
        }
    }
    out
}

/// A dashboard expression as Grafana would send it: the time-range variables become `2m`
/// (the whole workload fits in that window), `$node` the given node, the others match all.
fn substitute(expr: &str, node: &str) -> String {
    expr.replace("$__rate_interval", "2m")
        .replace("$__interval", "2m")
        .replace("$__range", "2m")
        .replace("$node", node)
        .replace("$system", ".*")
        .replace("$destination", ".*")
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let dir = repo("deploy/prometheus");
    for args in [
        &["check", "rules", "alerts.yaml"][..],
        &["test", "rules", "alerts.test.yaml"][..],
    ] {
        let out = promtool(&dir, args);
        assert!(
            out.status.success(),
            "promtool {}: {}\n{}{}",
            args.join(" "),
            out.status,
            out.stdout,
            out.stderr
        );
        eprintln!("promtool {}: {}", args.join(" "), out.stdout.trim());
    }
    // Every alert has a firing case and a quiet case in the unit tests.
    let tests = read("deploy/prometheus/alerts.test.yaml");
    for name in alert_names() {
        let cases: Vec<&str> = tests
            .split("- eval_time:")
            .filter(|c| c.contains(&format!("alertname: {name}\n")))
            .collect();
        assert!(
            cases.iter().any(|c| c.contains("exp_alerts: []")),
            "{name}: no unit test where it stays quiet"
        );
        assert!(
            cases.iter().any(|c| c.contains("exp_labels:")),
            "{name}: no unit test where it fires"
        );
    }
}

/// The alert names of alerts.yaml, in order.
fn alert_names() -> Vec<String> {
    let names: Vec<String> = read("deploy/prometheus/alerts.yaml")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(str::to_owned)
        .collect();
    assert!(names.len() >= 10, "alerts.yaml: {names:?}");
    names
}

#[test]
fn prometheusrule_holds_the_same_groups_as_alerts_yaml() {
    let rules = read("deploy/prometheus/alerts.yaml");
    let operator = read("deploy/prometheus/prometheusrule.yaml");
    for line in [
        "apiVersion: monitoring.coreos.com/v1",
        "kind: PrometheusRule",
        "  namespace: brokerscope",
    ] {
        assert!(operator.lines().any(|l| l == line), "no {line:?}");
    }
    let groups = &rules[rules.find("\ngroups:\n").expect("alerts.yaml: groups:") + 1..];
    let spec_at = operator
        .find("\nspec:\n")
        .expect("prometheusrule.yaml: spec:");
    let spec = &operator[spec_at + "\nspec:\n".len()..];
    let dedented: String = spec
        .lines()
        .map(|l| {
            assert!(l.is_empty() || l.starts_with("  "), "spec: line {l:?}");
            format!("{}\n", l.strip_prefix("  ").unwrap_or(l))
        })
        .collect();
    let differ = dedented
        .lines()
        .zip(groups.lines())
        .position(|(a, b)| a != b);
    assert!(
        differ.is_none() && dedented.lines().count() == groups.lines().count(),
        "prometheusrule.yaml spec: must be alerts.yaml's groups indented by two spaces; \
         they differ from line {} of the groups",
        differ.map_or(dedented.lines().count().min(groups.lines().count()), |i| i) + 1
    );
    // And it is a valid rule file by itself.
    let dir = tests::TempDir::new("prometheusrule");
    std::fs::write(dir.join("spec.yaml"), &dedented).unwrap();
    let out = promtool(&dir.path, &["check", "rules", "spec.yaml"]);
    assert!(out.status.success(), "{}{}", out.stdout, out.stderr);
}

#[test]
fn dashboards_are_well_formed() {
    let mut uids = BTreeSet::new();
    for path in DASHBOARDS {
        let d = dashboard(path);
        let uid = d["uid"].str().unwrap_or_default();
        assert!(!uid.is_empty() && uid.len() <= 40, "{path}: uid {uid:?}");
        assert!(uids.insert(uid.to_owned()), "{path}: uid {uid} used twice");
        assert!(
            d["schemaVersion"].u64().is_some_and(|v| v >= 38),
            "{path}: schemaVersion"
        );
        assert!(d["title"].str().is_some_and(|t| !t.is_empty()));

        let vars: Vec<&str> = variables(&d)
            .iter()
            .map(|v| v["name"].str().unwrap())
            .collect();
        assert_eq!(
            vars,
            ["datasource", "node", "system", "destination"],
            "{path}"
        );
        let ds = &variables(&d)[0];
        assert_eq!(
            (ds["type"].str(), ds["query"].str()),
            (Some("datasource"), Some("prometheus")),
            "{path}: the datasource variable"
        );
        let mut used = BTreeSet::new();
        let mut ids = BTreeSet::new();
        let mut boxes: Vec<(String, [u64; 4])> = Vec::new();
        for p in panels(&d) {
            let title = p["title"].str().unwrap_or("?");
            let id = p["id"]
                .u64()
                .unwrap_or_else(|| panic!("{path} {title}: id"));
            assert!(ids.insert(id), "{path}: panel id {id} used twice");
            let g = &p["gridPos"];
            let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| {
                g[k].u64()
                    .unwrap_or_else(|| panic!("{path} {title}: gridPos.{k}"))
            });
            assert!(
                w > 0 && h > 0 && x + w <= 24,
                "{path} {title}: gridPos {x},{y} {w}x{h}"
            );
            for (other, [ox, oy, ow, oh]) in &boxes {
                let apart = x + w <= *ox || *ox + ow <= x || y + h <= *oy || *oy + oh <= y;
                assert!(apart, "{path}: {title:?} overlaps {other:?}");
            }
            boxes.push((title.to_owned(), [x, y, w, h]));
            if p["type"].str() == Some("row") {
                continue;
            }
            assert!(
                p["description"].str().is_some_and(|s| !s.is_empty()),
                "{path} {title}: description"
            );
            let datasource = &p["datasource"];
            assert_eq!(
                (datasource["type"].str(), datasource["uid"].str()),
                (Some("prometheus"), Some("${datasource}")),
                "{path} {title}: datasource"
            );
            used.insert("datasource".to_owned());
            let ts = p["targets"].arr();
            assert!(!ts.is_empty(), "{path} {title}: no target");
            let mut refs = BTreeSet::new();
            for t in ts {
                let expr = t["expr"].str().unwrap_or_default();
                assert!(
                    !expr.trim().is_empty(),
                    "{path} {title}: target without expr"
                );
                assert!(
                    refs.insert(t["refId"].str().unwrap_or_default()),
                    "{path} {title}: refId"
                );
                assert_eq!(t["datasource"]["uid"].str(), Some("${datasource}"));
                if p["type"].str() == Some("heatmap") {
                    assert_eq!(t["format"].str(), Some("heatmap"), "{path} {title}");
                    assert!(expr.contains("by (le)"), "{path} {title}: {expr}");
                }
                for r in references(expr) {
                    assert!(
                        vars.contains(&r.as_str()),
                        "{path} {title}: ${r} is not a variable"
                    );
                    used.insert(r);
                }
            }
        }
        for v in &vars {
            assert!(
                used.contains(*v),
                "{path}: variable {v} is used by no panel"
            );
        }
        for v in &variables(&d)[1..] {
            let q = v["definition"].str().unwrap_or_default();
            assert!(q.starts_with("label_values("), "{path}: {q}");
            assert_eq!(v["query"]["query"].str(), Some(q));
            for r in references(q) {
                assert!(vars.contains(&r.as_str()), "{path}: {q}: ${r}");
            }
        }
        let destination = &variables(&d)[3];
        if uid == "brokerscope-destination" {
            assert_eq!(
                destination["multi"].bool(),
                Some(false),
                "single destination"
            );
            assert_eq!(destination["includeAll"].bool(), Some(false));
        } else {
            for v in &variables(&d)[1..] {
                assert_eq!(v["multi"].bool(), Some(true), "{path}: {v:?}");
                assert_eq!(v["allValue"].str(), Some(".*"));
            }
            // Per-destination panels link to the drill-down, with the destination clicked.
            let links: Vec<&str> = panels(&d)
                .iter()
                .flat_map(|p| p["fieldConfig"]["defaults"]["links"].arr())
                .filter_map(|l| l["url"].str())
                .collect();
            assert!(
                links
                    .iter()
                    .any(|u| u.starts_with("/d/brokerscope-destination/")
                        && u.contains("var-destination=${__field.labels.destination}")),
                "{path}: no data link to the destination dashboard: {links:?}"
            );
        }
    }
}

/// `label_values(SELECTOR, LABEL)` → (LABEL, SELECTOR).
fn label_values_query(q: &str) -> (String, String) {
    let inner = q
        .strip_prefix("label_values(")
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not label_values(…): {q}"));
    let (selector, label) = inner
        .rsplit_once(',')
        .expect("label_values(selector, label)");
    (label.trim().to_owned(), selector.trim().to_owned())
}

fn num(sample: &Json) -> f64 {
    sample["value"][1]
        .str()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(f64::NAN)
}

#[test]
fn every_panel_variable_and_alert_has_data_from_real_brokers() {
    require_root();
    let started = Instant::now();
    let node = observer::spans::export::host_name().expect("host name");
    let (cg_mqtt, cg_amqp, cg_nats, cg_kafka) = (
        Cgroup::create("prom-mqtt"),
        Cgroup::create("prom-amqp"),
        Cgroup::create("prom-nats"),
        Cgroup::create("prom-kafka"),
    );
    // RabbitMQ takes the longest to start: meanwhile the others.
    let (rabbit, (mosquitto, nats, tansu)) = std::thread::scope(|s| {
        let rabbit = s.spawn(|| RabbitMq::start(&cg_amqp));
        let others = (
            Mosquitto::start(&cg_mqtt),
            NatsServer::start(&cg_nats),
            Tansu::start(&cg_kafka),
        );
        (rabbit.join().expect("rabbitmq start"), others)
    });
    tansu.create_topic(LATENCY_TOPIC, 1);
    tansu.create_topic("bs-lag", 1);
    let pids = [
        mosquitto.pid(),
        rabbit.broker_pid(),
        nats.pid(),
        tansu.pid(),
    ]
    .map(|p| p.to_string());
    let mut args = vec!["--no-discover"];
    for p in &pids {
        args.extend(["--pid", p.as_str()]);
    }
    let d = Daemon::start(&args);
    let prom = Prometheus::start(
        &[Target {
            addr: d.addr,
            node: node.clone(),
        }],
        &[repo("deploy/prometheus/alerts.yaml")],
    );
    eprintln!(
        "brokers, daemon and prometheus up after {:?}",
        started.elapsed()
    );

    // Traffic for every panel, in two rounds. A series appears in Prometheus with the value it
    // had at its first scrape, so what a fresh series counted before that scrape is no
    // increase to rate(): round one creates the series, round two (the same destinations,
    // after Prometheus has scraped them) moves them, as traffic on a running broker does.
    let n = ["--count", "50"];
    mosquitto.workload("confirm-latency", &n).json();
    rabbit.workload("confirm-latency", &n).json();
    let full = rabbit.workload("full", &[]).json();
    assert!(full["nacked"].u64().is_some_and(|n| n >= 1), "a nack");
    let bad = rabbit.workload("badlogin", &[]).json();
    assert_eq!(bad["auth_failed"].bool(), Some(true));
    let errors = run_script(
        &repo("tests/fixtures/amqp_errors.py").display().to_string(),
        &["--url", &rabbit.amqp_url()],
        None,
    )
    .json();
    assert_eq!(
        (errors["returned"].u64(), errors["refused"].u64()),
        (Some(1), Some(1))
    );
    assert_eq!(errors["reply_code"].u64(), Some(404));
    nats.workload("confirm-latency", &n).json();
    let js = nats.workload("jetstream", &[]).json();
    assert_eq!(js["scenario"].str(), Some("jetstream"));
    tansu.workload("confirm-latency", &n).json();
    let sel = format!("node=\"{node}\"");
    let scraped = |what: &[String]| {
        let ok = wait_until(Duration::from_secs(30), || {
            what.iter()
                .all(|q| prom.query(q).is_ok_and(|r| !r.arr().is_empty()))
        });
        assert!(
            ok,
            "prometheus never saw {:?}\ndaemon logs:\n{}",
            what.iter()
                .filter(|q| prom.query(q).map_or(true, |r| r.arr().is_empty()))
                .collect::<Vec<_>>(),
            d.logs()
        );
    };
    // Each series of round one scraped at least twice.
    scraped(
        &[
            format!("brokerscope_protocol_errors_total{{{sel},system=\"amqp\",code=\"404\"}}"),
            format!("brokerscope_messages_returned_total{{{sel}}}"),
            format!("brokerscope_messages_publish_failed_total{{{sel},system=\"amqp\"}}"),
            format!("brokerscope_queue_consumers{{{sel},system=\"amqp\"}}"),
            format!("brokerscope_auth_failures_total{{{sel},system=\"amqp\"}}"),
            format!("brokerscope_messages_rejected_total{{{sel},system=\"nats\"}}"),
            format!("brokerscope_messages_acked_total{{{sel},system=\"kafka\"}}"),
        ]
        .map(|s| format!("count_over_time({s}[2m]) >= 2")),
    );
    eprintln!("round one done after {:?}", started.elapsed());
    mosquitto.workload("confirm-latency", &n).json();
    rabbit.workload("confirm-latency", &n).json();
    nats.workload("confirm-latency", &n).json();
    let half = tansu.workload("half", &[]).json();
    assert_eq!(half["scenario"].str(), Some("half"));
    let stage = |system: &str| {
        format!(
            "sum(brokerscope_deliver_settle_latency_seconds_count{{{sel},system=\"{system}\"}}) >= 100"
        )
    };
    scraped(&[
        stage("mqtt"),
        stage("amqp"),
        stage("nats"),
        format!(
            "count_over_time(brokerscope_kafka_consumer_lag{{{sel},destination=\"bs-lag\"}}[2m]) >= 2"
        ),
        format!("brokerscope_kafka_consumer_lag{{{sel},destination=\"bs-lag\"}} > 0"),
    ]);
    eprintln!("round two done after {:?}", started.elapsed());
    assert_eq!(prom.target_health().unwrap(), ["up"]);

    // Every panel target of both dashboards: a successful query with data.
    let mut failures = Vec::new();
    let mut evaluated = 0;
    for path in DASHBOARDS {
        let dash = dashboard(path);
        for (title, expr) in targets(&dash) {
            let q = substitute(&expr, &node);
            evaluated += 1;
            match prom.query(&q) {
                Err(e) => failures.push(format!("{path} {title:?}: {e}")),
                Ok(r) if r.arr().is_empty() => {
                    failures.push(format!("{path} {title:?}: no series for {q}"))
                }
                // A quantile of buckets that did not move is NaN: the panel would be empty.
                Ok(r)
                    if expr.contains("histogram_quantile")
                        && r.arr().iter().all(|s| num(s).is_nan()) =>
                {
                    failures.push(format!("{path} {title:?}: only NaN for {q}"))
                }
                Ok(_) => {}
            }
        }
        // Every variable query has values; the node variable offers this node.
        for v in &variables(&dash)[1..] {
            let name = v["name"].str().unwrap();
            let (label, selector) = label_values_query(v["definition"].str().unwrap());
            match prom.label_values(&label, &substitute(&selector, &node)) {
                Err(e) => failures.push(format!("{path} variable {name}: {e}")),
                Ok(values) if values.is_empty() => {
                    failures.push(format!("{path} variable {name}: no values"))
                }
                Ok(values) => {
                    if name == "node" && !values.contains(&node) {
                        failures.push(format!("{path} variable node: {values:?} lacks {node}"));
                    }
                    if name == "system" {
                        assert_eq!(values, ["amqp", "kafka", "mqtt", "nats"], "{path}");
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {evaluated} panel targets or variables failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Every alert: loaded, evaluated without error, and its expression a valid query.
    let names = alert_names();
    let mut health = BTreeMap::new();
    let all_ok = wait_until(Duration::from_secs(15), || {
        health.clear();
        for g in prom.rules().unwrap().arr() {
            for r in g["rules"].arr() {
                let name = r["name"].str().unwrap_or_default().to_owned();
                let state = format!(
                    "{} {}",
                    r["health"].str().unwrap_or("?"),
                    r["lastError"].str().unwrap_or("")
                );
                health.insert(name, (state, r["query"].str().unwrap_or("").to_owned()));
            }
        }
        names
            .iter()
            .all(|n| health.get(n).is_some_and(|(s, _)| s.trim() == "ok"))
    });
    assert!(all_ok, "rules not all healthy: {health:#?}");
    assert_eq!(health.len(), names.len(), "{health:#?}");
    for (name, (_, query)) in &health {
        if let Err(e) = prom.query(query) {
            panic!("alert {name}: {e}");
        }
    }
    // Nothing is wrong with this observer: none of its alerts is even pending.
    let alerts = prom.query("ALERTS").unwrap();
    assert!(alerts.arr().is_empty(), "alerts: {alerts:?}");
    eprintln!(
        "{evaluated} panel targets, {} alerts checked in {:?}",
        names.len(),
        started.elapsed()
    );
    drop(prom);
    d.stop();
}
