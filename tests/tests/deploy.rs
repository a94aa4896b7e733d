//! Deployment: the Kubernetes manifests (deploy/kubernetes), the container image
//! (deploy/container) and the daemon in a container-like environment.
//!
//! - Every manifest is valid for Kubernetes 1.30 (`kubernetes-validate --strict`, offline: it
//!   ships the schemas); the ServiceMonitor, a CRD the validator has no schema for, is checked
//!   against the part of prometheus-operator's `monitoring.coreos.com/v1` schema it uses.
//! - The manifests agree with the binary: the ConfigMap's TOML loads, the DaemonSet's command,
//!   probes, port, env names and mounts match the daemon's flags and config; the image's
//!   entrypoint is the DaemonSet's command; the least-privilege DaemonSet differs only in its
//!   securityContext and adds exactly the capabilities brokerscope needs.
//! - End to end: `brokerscope run` in a private cgroup and mount namespace (as in a Kubernetes
//!   pod: its /sys/fs/cgroup shows only its own subtree, the host tree is bound elsewhere)
//!   counts a Mosquitto's messages in another cgroup, found automatically and with
//!   BROKERSCOPE_CGROUP_ROOT under only the least-privilege capabilities; without the host tree
//!   it refuses to start and says what to mount.
//! - The image builds (`cargo xtask image`, buildah) and its binary runs.
use std::{
    collections::BTreeSet,
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

use tests::{
    Cgroup, Proc, TempDir, daemon::binary, free_port, metrics::http_get, metrics::scrape,
    mosquitto::Mosquitto, rabbitmq::Json, require_root, spawn, wait_until,
};

/// The Kubernetes version the manifests are written for (securityContext.appArmorProfile and
/// friends need 1.30).
const KUBERNETES_VERSION: &str = "1.30.0";
/// The least-privilege DaemonSet's capabilities: nothing more, nothing less.
const CAPABILITIES: [&str; 6] = [
    "BPF",
    "PERFMON",
    "NET_ADMIN",
    "SYS_RESOURCE",
    "SYS_PTRACE",
    "DAC_READ_SEARCH",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn kube_dir() -> PathBuf {
    repo().join("deploy/kubernetes")
}

fn python() -> String {
    std::env::var("BROKERSCOPE_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The YAML documents of a file, as JSON (PyYAML comes with kubernetes-validate).
fn yaml(path: &Path) -> Vec<Json> {
    let out = Command::new(python())
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
        ])
        .arg(path)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}: {} (PyYAML is installed with kubernetes-validate by cargo xtask setup)",
        path.display(),
        text(&out)
    );
    let docs = Json::parse(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    docs.arr().to_vec()
}

/// The one document of a manifest file.
fn manifest(rel: &str) -> Json {
    let docs = yaml(&kube_dir().join(rel));
    assert_eq!(docs.len(), 1, "{rel}: one resource per file");
    docs.into_iter().next().unwrap()
}

fn kubernetes_validate(files: &[PathBuf]) -> Output {
    Command::new(python())
        .args([
            "-m",
            "kubernetes_validate",
            "--strict",
            "-k",
            KUBERNETES_VERSION,
        ])
        .args(files)
        .output()
        .expect("python3")
}

/// Every manifest file under deploy/kubernetes (both variants), kustomizations excluded.
fn manifest_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in [kube_dir(), kube_dir().join("least-privilege")] {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml")
                && p.file_name().unwrap() != "kustomization.yaml"
            {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn manifests_are_valid_kubernetes_resources() {
    let (crds, core): (Vec<PathBuf>, Vec<PathBuf>) = manifest_files()
        .into_iter()
        .partition(|p| p.file_name().unwrap() == "servicemonitor.yaml");
    assert_eq!(crds.len(), 1);
    assert!(core.len() >= 8, "{core:?}");
    let out = kubernetes_validate(&core);
    assert!(
        out.status.success(),
        "kubernetes-validate {KUBERNETES_VERSION}: {} (installed by cargo xtask setup)",
        text(&out)
    );
    // The validator does reject what Kubernetes would: an unknown field and a wrong type.
    let dir = TempDir::new("deploy-invalid");
    let daemonset = fs::read_to_string(kube_dir().join("daemonset.yaml")).unwrap();
    for (name, broken) in [
        (
            "unknown-field.yaml",
            daemonset.replace("hostPID: true", "hostPID: true\n      hostPIDs: true"),
        ),
        (
            "wrong-type.yaml",
            daemonset.replace("containerPort: 9464", "containerPort: metrics"),
        ),
    ] {
        assert_ne!(broken, daemonset);
        fs::write(dir.join(name), broken).unwrap();
        let out = kubernetes_validate(&[dir.join(name)]);
        assert!(!out.status.success(), "{name} passed:\n{}", text(&out));
    }
}

/// The parts of prometheus-operator's ServiceMonitor schema (monitoring.coreos.com/v1) this
/// manifest uses; unknown keys are refused as the CRD's structural schema would prune them.
const SERVICE_MONITOR_SCHEMA: &str = r#"{
  "type": "object", "additionalProperties": false,
  "required": ["apiVersion", "kind", "metadata", "spec"],
  "properties": {
    "apiVersion": {"const": "monitoring.coreos.com/v1"},
    "kind": {"const": "ServiceMonitor"},
    "metadata": {"type": "object", "required": ["name", "namespace"], "properties": {
      "name": {"type": "string"}, "namespace": {"type": "string"},
      "labels": {"type": "object", "additionalProperties": {"type": "string"}}}},
    "spec": {"type": "object", "additionalProperties": false, "required": ["selector", "endpoints"],
      "properties": {
        "jobLabel": {"type": "string"},
        "selector": {"type": "object", "additionalProperties": false, "properties": {
          "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}}},
        "namespaceSelector": {"type": "object", "additionalProperties": false, "properties": {
          "any": {"type": "boolean"}, "matchNames": {"type": "array", "items": {"type": "string"}}}},
        "endpoints": {"type": "array", "minItems": 1, "items": {
          "type": "object", "additionalProperties": false, "properties": {
            "port": {"type": "string"}, "path": {"type": "string"},
            "scheme": {"enum": ["http", "https"]},
            "interval": {"type": "string", "pattern": "^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
            "honorLabels": {"type": "boolean"},
            "relabelings": {"type": "array", "items": {"type": "object", "additionalProperties": false,
              "properties": {
                "sourceLabels": {"type": "array", "items": {"type": "string", "pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$"}},
                "targetLabel": {"type": "string"}, "regex": {"type": "string"},
                "replacement": {"type": "string"}, "separator": {"type": "string"},
                "action": {"enum": ["replace", "Replace", "keep", "Keep", "drop", "Drop", "labelmap", "LabelMap", "labeldrop", "LabelDrop", "labelkeep", "LabelKeep"]}}}}}}}}}}
}"#;

fn validate_service_monitor(path: &Path) -> Output {
    Command::new(python())
        .args([
            "-c",
            "import json, sys, yaml, jsonschema\n\
             schema = json.loads(sys.argv[1])\n\
             for doc in yaml.safe_load_all(open(sys.argv[2])):\n    jsonschema.validate(doc, schema)",
            SERVICE_MONITOR_SCHEMA,
        ])
        .arg(path)
        .output()
        .expect("python3")
}

#[test]
fn service_monitor_scrapes_the_metrics_port_as_job_brokerscope() {
    let path = kube_dir().join("servicemonitor.yaml");
    let out = validate_service_monitor(&path);
    assert!(out.status.success(), "{}", text(&out));
    let dir = TempDir::new("deploy-sm");
    let broken = fs::read_to_string(&path)
        .unwrap()
        .replace("honorLabels", "honourLabels");
    fs::write(dir.join("sm.yaml"), broken).unwrap();
    assert!(
        !validate_service_monitor(&dir.join("sm.yaml"))
            .status
            .success()
    );

    let sm = manifest("servicemonitor.yaml");
    let service = manifest("service.yaml");
    let spec = &sm["spec"];
    // job = the value of the jobLabel label on the Service.
    let job_label = spec["jobLabel"].str().unwrap();
    assert_eq!(
        service["metadata"]["labels"][job_label].str(),
        Some("brokerscope")
    );
    for (k, v) in obj(&spec["selector"]["matchLabels"]) {
        assert_eq!(
            service["metadata"]["labels"][k.as_str()].str(),
            v.str(),
            "{k}"
        );
    }
    assert_eq!(
        spec["namespaceSelector"]["matchNames"].strs(),
        ["brokerscope"]
    );
    let ep = &spec["endpoints"][0];
    assert_eq!(ep["port"].str(), Some("metrics"));
    assert_eq!(ep["path"].str(), Some("/metrics"));
    assert_eq!(ep["honorLabels"].bool(), Some(true));
    let node = ep["relabelings"]
        .arr()
        .iter()
        .find(|r| r["targetLabel"].str() == Some("node"))
        .expect("a relabeling setting `node`");
    assert_eq!(
        node["sourceLabels"].strs(),
        ["__meta_kubernetes_pod_node_name"]
    );
    assert_eq!(service["spec"]["ports"][0]["name"].str(), Some("metrics"));
    assert_eq!(service["spec"]["ports"][0]["port"].u64(), Some(9464));
    assert_eq!(
        service["spec"]["ports"][0]["targetPort"].str(),
        Some("metrics")
    );
}

fn obj(j: &Json) -> Vec<(String, Json)> {
    match j {
        Json::Obj(kv) => kv.clone(),
        _ => Vec::new(),
    }
}

/// The kustomizations list exactly the files next to them; the least-privilege one builds on
/// the base and swaps in its DaemonSet.
#[test]
fn kustomizations_list_every_manifest() {
    let base = manifest("kustomization.yaml");
    let listed: BTreeSet<&str> = base["resources"].strs().into_iter().collect();
    let present: BTreeSet<String> = fs::read_dir(kube_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    assert_eq!(
        listed,
        present.iter().map(String::as_str).collect::<BTreeSet<_>>()
    );
    let lp = manifest("least-privilege/kustomization.yaml");
    assert_eq!(lp["resources"].strs(), [".."]);
    assert_eq!(lp["patches"][0]["path"].str(), Some("daemonset.yaml"));
    assert_eq!(lp["patches"].arr().len(), 1);
}

/// The ConfigMap's brokerscope.toml, written to `dir`.
fn configmap_toml(dir: &TempDir) -> PathBuf {
    let cm = manifest("configmap.yaml");
    let toml = cm["data"]["brokerscope.toml"]
        .str()
        .expect("data.brokerscope.toml");
    let path = dir.join("brokerscope.toml");
    fs::write(&path, toml).unwrap();
    path
}

fn print_config(config: &Path) -> String {
    let out = Command::new(binary())
        .args(["run", "--config"])
        .arg(config)
        .arg("--print-config")
        .env_remove("BROKERSCOPE_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "--print-config: {}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn configmap_toml_loads() {
    let dir = TempDir::new("deploy-configmap");
    let printed = print_config(&configmap_toml(&dir));
    for line in [
        "listen = \"0.0.0.0:9464\"",
        "cgroup_root = \"/host/sys/fs/cgroup\"",
        "discover = true",
    ] {
        assert!(
            printed.lines().any(|l| l == line),
            "{line} not in:\n{printed}"
        );
    }
    assert!(printed.contains("[kubernetes]"), "{printed}");
}

/// The container of a DaemonSet manifest.
fn container(ds: &Json) -> &Json {
    let containers = ds["spec"]["template"]["spec"]["containers"].arr();
    assert_eq!(containers.len(), 1);
    &containers[0]
}

fn run_help() -> String {
    let out = Command::new(binary())
        .args(["run", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn daemonsets_agree_with_the_binary_and_its_config() {
    let help = run_help();
    let dir = TempDir::new("deploy-ds");
    let printed = print_config(&configmap_toml(&dir));
    let toml_value = |key: &str| -> String {
        printed
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("{key} not in:\n{printed}"))
            .trim_matches('"')
            .to_owned()
    };
    let listen: SocketAddr = toml_value("listen").parse().unwrap();
    let cgroup_root = toml_value("cgroup_root");
    let containerfile = fs::read_to_string(repo().join("deploy/container/Containerfile")).unwrap();
    let entrypoint = containerfile
        .lines()
        .find_map(|l| l.strip_prefix("ENTRYPOINT "))
        .expect("ENTRYPOINT in the Containerfile");
    let entrypoint = Json::parse(entrypoint).unwrap();

    for rel in ["daemonset.yaml", "least-privilege/daemonset.yaml"] {
        let ds = manifest(rel);
        let pod = &ds["spec"]["template"]["spec"];
        let c = container(&ds);
        // The image's entrypoint, spelled out.
        assert_eq!(c["command"], entrypoint, "{rel}");
        let command = c["command"].strs();
        assert_eq!(command[1..3], ["run", "--config"], "{rel}");
        let config_path = Path::new(command[3]);

        // Every flag-like argument is one `brokerscope run` has.
        for arg in command.iter().filter(|a| a.starts_with("--")) {
            assert!(
                help.contains(&format!("{arg} ")),
                "{rel}: {arg} unknown to run"
            );
        }
        // Every variable is one the binary reads.
        for env in c["env"].arr() {
            let name = env["name"].str().unwrap();
            assert!(
                help.contains(&format!("[env: {name}=")),
                "{rel}: {name} is not read by brokerscope run"
            );
        }
        let node = c["env"]
            .arr()
            .iter()
            .find(|e| e["name"].str() == Some("BROKERSCOPE_NODE_NAME"))
            .expect("BROKERSCOPE_NODE_NAME");
        assert_eq!(
            node["valueFrom"]["fieldRef"]["fieldPath"].str(),
            Some("spec.nodeName")
        );

        // The metrics port is where the config listens, on every address.
        let port = &c["ports"][0];
        assert_eq!(port["name"].str(), Some("metrics"));
        assert_eq!(port["containerPort"].u64(), Some(u64::from(listen.port())));
        assert!(
            listen.ip().is_unspecified(),
            "{listen}: probes and scrapes come from outside"
        );
        for (probe, path) in [
            ("startupProbe", "/healthz"),
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
        ] {
            assert_eq!(
                c[probe]["httpGet"]["path"].str(),
                Some(path),
                "{rel} {probe}"
            );
            assert_eq!(
                c[probe]["httpGet"]["port"].str(),
                Some("metrics"),
                "{rel} {probe}"
            );
        }

        // Mounts: the ConfigMap where --config points, the host cgroup tree where cgroup_root
        // points, tracefs where the loader looks for it; all read-only.
        let mounts = c["volumeMounts"].arr();
        let volume = |name: &str| {
            pod["volumes"]
                .arr()
                .iter()
                .find(|v| v["name"].str() == Some(name))
                .unwrap_or_else(|| panic!("{rel}: no volume {name}"))
                .clone()
        };
        let mount_of = |path: &Path| {
            mounts
                .iter()
                .find(|m| Path::new(m["mountPath"].str().unwrap()) == path)
                .unwrap_or_else(|| panic!("{rel}: nothing mounted at {}", path.display()))
                .clone()
        };
        assert!(
            mounts.iter().all(|m| m["readOnly"].bool() == Some(true)),
            "{rel}"
        );
        let cfg = mount_of(config_path.parent().unwrap());
        let cm = volume(cfg["name"].str().unwrap());
        assert_eq!(cm["configMap"]["name"].str(), Some("brokerscope"));
        assert!(config_path.ends_with("brokerscope.toml"));
        let cg = volume(mount_of(Path::new(&cgroup_root))["name"].str().unwrap());
        assert_eq!(cg["hostPath"]["path"].str(), Some("/sys/fs/cgroup"));
        let tr = volume(
            mount_of(Path::new("/sys/kernel/tracing"))["name"]
                .str()
                .unwrap(),
        );
        assert_eq!(tr["hostPath"]["path"].str(), Some("/sys/kernel/tracing"));
        // hostPID: the node's processes in /proc (no host /proc mount needed).
        assert_eq!(pod["hostPID"].bool(), Some(true), "{rel}");
        assert_eq!(pod["tolerations"][0]["operator"].str(), Some("Exists"));
        assert_eq!(pod["tolerations"].arr().len(), 1);
        assert_eq!(pod["serviceAccountName"].str(), Some("brokerscope"));
        assert!(c["resources"]["limits"]["memory"].str().is_some(), "{rel}");
    }
}

/// Removes every `securityContext` key.
fn without_security_context(j: &Json) -> Json {
    match j {
        Json::Obj(kv) => Json::Obj(
            kv.iter()
                .filter(|(k, _)| k != "securityContext")
                .map(|(k, v)| (k.clone(), without_security_context(v)))
                .collect(),
        ),
        Json::Arr(v) => Json::Arr(v.iter().map(without_security_context).collect()),
        other => other.clone(),
    }
}

#[test]
fn least_privilege_adds_exactly_the_listed_capabilities() {
    let base = manifest("daemonset.yaml");
    let lp = manifest("least-privilege/daemonset.yaml");
    assert_eq!(
        container(&base)["securityContext"]["privileged"].bool(),
        Some(true)
    );
    let sc = &container(&lp)["securityContext"];
    assert_eq!(sc["privileged"].bool(), Some(false));
    assert_eq!(sc["allowPrivilegeEscalation"].bool(), Some(false));
    assert_eq!(sc["capabilities"]["drop"].strs(), ["ALL"]);
    let added: BTreeSet<&str> = sc["capabilities"]["add"].strs().into_iter().collect();
    assert_eq!(added, CAPABILITIES.into_iter().collect::<BTreeSet<_>>());
    assert_eq!(sc["capabilities"]["add"].arr().len(), CAPABILITIES.len());
    // Apart from the securityContext, the same DaemonSet.
    assert_eq!(
        without_security_context(&lp),
        without_security_context(&base)
    );
}

// ---- The daemon in a container-like environment (root) ----

/// A cgroup below `parent`, removed on drop (after its processes are gone).
fn child_cgroup(parent: &Cgroup, name: &str) -> Cgroup {
    let path = parent.path.join(name);
    fs::create_dir_all(&path).unwrap();
    Cgroup { path }
}

/// Bound into the private mount namespace before the daemon starts: the host's cgroup tree at
/// `host_dir` (a hostPath volume), then a fresh cgroup2 mount instead of the original one (what
/// a container runtime gives a container with its own cgroup namespace).
const CONTAINER_SETUP: &str = r#"set -e
cg=$1; host=$2; shift 2
if [ -n "$host" ]; then mount --bind "$cg" "$host"; fi
# The kernel refuses a mount of the same filesystem on top of its own root (EBUSY): replace it.
umount "$cg"
mount -t cgroup2 container-cgroup "$cg"
exec "$@""#;

struct Agent {
    proc: Proc,
    addr: SocketAddr,
    log: PathBuf,
}

impl Agent {
    /// `brokerscope run` in its own cgroup and mount namespace, its namespace root `cgroup`;
    /// `wrap` goes before the binary (e.g. setpriv).
    fn start(
        cgroup: &Cgroup,
        host_dir: Option<&Path>,
        wrap: &[&str],
        env: &[(&str, &str)],
        args: &[&str],
        log: PathBuf,
    ) -> Self {
        let cg_mount = observer::capture::procfs::ProcFs::default()
            .cgroup2_mount()
            .unwrap()
            .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--cgroup",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
        ])
        .arg(CONTAINER_SETUP)
        .arg("sh")
        .arg(&cg_mount)
        .arg(host_dir.map(Path::as_os_str).unwrap_or_default())
        .args(wrap)
        .arg(binary())
        .arg("run")
        .args(args)
        .args(["--listen", &addr.to_string(), "--log-format", "json"])
        .env_remove("BROKERSCOPE_CONFIG")
        .env_remove("BROKERSCOPE_CGROUP_ROOT")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap());
        Self {
            proc: spawn(&mut cmd, Some(cgroup)),
            addr,
            log,
        }
    }

    fn logs(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        let ready = wait_until(Duration::from_secs(30), || {
            if let Ok(Some(status)) = self.proc.child.try_wait() {
                panic!("brokerscope run exited ({status}):\n{}", self.logs());
            }
            http_get(self.addr, "/readyz").is_ok_and(|r| r.status == 200)
        });
        assert!(ready, "not ready in 30 s:\n{}", self.logs());
    }

    fn published(&self, destination: &str) -> f64 {
        scrape(self.addr)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()))
            .sum(
                "brokerscope_messages_published_total",
                &[("system", "mqtt"), ("destination", destination)],
            )
    }
}

/// This process's capability bounding set, by name (`CAP_` prefix stripped, upper case), from
/// the kernel's numbering.
fn own_bounding_set() -> BTreeSet<&'static str> {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let bnd = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    [
        ("DAC_READ_SEARCH", 2),
        ("NET_ADMIN", 12),
        ("SYS_PTRACE", 19),
        ("SYS_RESOURCE", 24),
        ("PERFMON", 38),
        ("BPF", 39),
    ]
    .into_iter()
    .filter(|(_, bit)| bnd & (1u64 << bit) != 0)
    .map(|(name, _)| name)
    .collect()
}

#[test]
fn daemon_in_a_private_cgroup_namespace_counts_a_broker_in_another_cgroup() {
    require_root();
    let broker_cg = Cgroup::create("deploy-broker");
    let broker = Mosquitto::start(&broker_cg);
    // The agents' namespace roots are two levels down, like a pod's container cgroup.
    let pod = Cgroup::create("deploy-pod");
    let auto_cg = child_cgroup(&pod, "auto");
    let least_cg = child_cgroup(&pod, "least");
    let bare_cg = child_cgroup(&pod, "bare");
    let dir = TempDir::new("deploy-cgns");
    for d in ["host-auto", "host-least"] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
    let pid = broker.pid().to_string();
    let watch = ["--no-discover", "--pid", pid.as_str()];

    // Without the host tree: a clear refusal, not a wrong directory.
    let mut bare = Agent::start(&bare_cg, None, &[], &[], &watch, dir.join("bare.log"));
    assert!(
        wait_until(Duration::from_secs(20), || matches!(
            bare.proc.child.try_wait(),
            Ok(Some(_))
        )),
        "started without the host's cgroup tree:\n{}",
        bare.logs()
    );
    let refusal = bare.logs();
    assert!(
        refusal.contains("mount the host's /sys/fs/cgroup") && refusal.contains("--cgroup-root"),
        "{refusal}"
    );

    // Found automatically, as root with every capability.
    let host_auto = dir.join("host-auto");
    let mut auto = Agent::start(
        &auto_cg,
        Some(&host_auto),
        &[],
        &[],
        &watch,
        dir.join("auto.log"),
    );
    // Named in the environment, with only the least-privilege DaemonSet's capabilities (those
    // of them this machine's bounding set has), like the container there.
    let caps: Vec<&str> = CAPABILITIES
        .into_iter()
        .filter(|c| own_bounding_set().contains(c))
        .collect();
    let missing: Vec<&str> = CAPABILITIES
        .into_iter()
        .filter(|c| !caps.contains(c))
        .collect();
    if !missing.is_empty() {
        eprintln!("this machine's bounding set lacks {missing:?}: the agent runs without them");
    }
    let bounding = format!(
        "-all,{}",
        caps.iter()
            .map(|c| format!("+{}", c.to_ascii_lowercase()))
            .collect::<Vec<_>>()
            .join(",")
    );
    let bounding_arg = format!("--bounding-set={bounding}");
    let host_least = dir.join("host-least");
    let mut least = Agent::start(
        &least_cg,
        Some(&host_least),
        &["setpriv", &bounding_arg, "--inh-caps=-all"],
        &[("BROKERSCOPE_CGROUP_ROOT", host_least.to_str().unwrap())],
        &watch,
        dir.join("least.log"),
    );
    auto.wait_ready();
    least.wait_ready();
    // The least-privilege agent really runs without the other capabilities.
    // (unshare, sh and setpriv exec into each other: the spawned pid is brokerscope's.)
    let status = fs::read_to_string(format!("/proc/{}/status", least.proc.pid())).unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    assert_eq!(eff & (1 << 21), 0, "CAP_SYS_ADMIN must be off: {eff:#x}");
    assert_eq!(eff.count_ones() as usize, caps.len(), "{eff:#x}");

    let truth = broker.workload("confirm-latency", &[]).json();
    let n = truth["published"].u64().unwrap() as f64;
    assert_eq!(n, 200.0);
    for (name, agent) in [("auto", &auto), ("least", &least)] {
        let counted = wait_until(Duration::from_secs(15), || {
            agent.published("latency/t") >= n
        });
        assert!(
            counted,
            "{name}: {} of {n} publishes counted\n{}",
            agent.published("latency/t"),
            agent.logs()
        );
        assert_eq!(agent.published("latency/t"), n, "{name}");
        // It watched the broker in its real cgroup, not a path below its own namespace.
        let log = agent.logs();
        assert!(log.contains(&pid), "{name}: {log}");
    }
    auto.proc.stop();
    least.proc.stop();
}

// ---- The image ----

/// `buildah` with the test's private store.
fn buildah(root: &Path) -> Command {
    let mut cmd = Command::new("buildah");
    cmd.arg("--root")
        .arg(root.join("storage"))
        .arg("--runroot")
        .arg(root.join("run"))
        .args(["--storage-driver", "vfs"]);
    cmd
}

fn ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (buildah is installed by cargo xtask setup)"));
    assert!(out.status.success(), "{cmd:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn image_builds_and_its_binary_runs() {
    require_root();
    let dir = TempDir::new("deploy-image");
    let tag = format!("localhost/brokerscope-test:{}", std::process::id());
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    ok(Command::new(cargo)
        .current_dir(repo())
        .args(["xtask", "image", "--tag", &tag, "--root"])
        .arg(&dir.path));
    // The image's configuration is the Containerfile's runtime stage.
    let inspect = ok(buildah(&dir.path).args(["inspect", "--type", "image", &tag]));
    let config = &Json::parse(inspect.trim()).unwrap()["OCIv1"]["config"];
    let daemonset = manifest("daemonset.yaml");
    assert_eq!(config["Entrypoint"], container(&daemonset)["command"]);
    assert_eq!(
        config["Labels"]["org.opencontainers.image.title"].str(),
        Some("brokerscope")
    );
    assert_eq!(config["ExposedPorts"]["9464/tcp"], Json::Obj(Vec::new()));
    // Nothing in it but the binary (no shell, no libc): it runs because it is static.
    let ctr = ok(buildah(&dir.path).args(["from", &tag]));
    let ctr = ctr.trim();
    let mnt = ok(buildah(&dir.path).args(["mount", ctr]));
    let files: Vec<String> = walk(Path::new(mnt.trim()));
    ok(buildah(&dir.path).args(["umount", ctr]));
    assert_eq!(files, ["usr/local/bin/brokerscope"], "image contents");
    let version = ok(buildah(&dir.path).args([
        "run",
        "--isolation",
        "chroot",
        ctr,
        "--",
        "/usr/local/bin/brokerscope",
        "--version",
    ]));
    assert_eq!(
        version.trim(),
        format!("brokerscope {}", env!("CARGO_PKG_VERSION"))
    );
    ok(buildah(&dir.path).args(["rm", ctr]));
    ok(buildah(&dir.path).args(["rmi", "--all", "--force"]));
}

/// Regular files under `root`, relative, sorted (directories left out).
fn walk(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}
