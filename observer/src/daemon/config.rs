//! Configuration of `brokerscope run`: command-line flags, environment variables, a TOML file.
//!
//! Precedence, highest first: **command-line flags > environment variables > TOML config file >
//! built-in defaults**. Environment variables are read by clap (`env = …` on each flag of
//! [`RunArgs`]), so a flag always beats its variable; the file is read only when `--config` (or
//! `BROKERSCOPE_CONFIG`) names one. [`Config::load`] applies the layers in order and then
//! [`Config::validate`]s the result, so a bad value is reported whichever layer it came from.
//!
//! Lists given on the command line (`--pid`, `--process`, `--port`) replace the file's list;
//! `--protocol PORT=SYSTEM` entries are merged into the file's `[protocols]` table, the flag
//! winning for the same port.
//!
//! [`Config::to_toml`] prints the effective configuration (`--print-config`); its output is a
//! valid config file that loads back to the same [`Config`].
use std::{
    collections::BTreeMap,
    fmt,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    str::FromStr,
};

use serde::{Deserialize, Serialize};

/// Protocol families `--protocol PORT=SYSTEM` and `[protocols]` accept.
pub const SYSTEMS: [&str; 4] = ["amqp", "mqtt", "nats", "kafka"];

/// Where `/metrics` and the health endpoints listen unless configured otherwise.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 9464);
/// Default ring buffer size: 16 MiB.
pub const DEFAULT_RING_SIZE: u32 = 16 << 20;
/// Smallest ring buffer the kernel accepts (one page).
pub const MIN_RING_SIZE: u32 = 4096;
/// Default cap of distinct `destination` label values per metric family.
pub const DEFAULT_MAX_DESTINATIONS: usize = 500;
/// Default cap of each correlation pending table.
pub const DEFAULT_PENDING_MAX: usize = 100_000;
/// Default time an unmatched publish/delivery is kept, in seconds.
pub const DEFAULT_PENDING_TTL_SECONDS: f64 = 60.0;

/// Environment variable (no flag of its own but `--no-discover`): `BROKERSCOPE_DISCOVER=false`
/// turns auto-discovery off (`true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`).
pub const ENV_DISCOVER: &str = "BROKERSCOPE_DISCOVER";

/// Flags of `brokerscope run`. Every field is an `Option`, a `Vec` or an off-by-default switch, so
/// "not given" is distinguishable from "given" and the layers below (file, defaults) show through.
///
/// Environment variables: `BROKERSCOPE_CONFIG`, `BROKERSCOPE_LISTEN`, `BROKERSCOPE_LOG_FORMAT`,
/// `BROKERSCOPE_LOG`, `BROKERSCOPE_MAX_DESTINATIONS`, `BROKERSCOPE_RING_SIZE`,
/// `BROKERSCOPE_CAPTURE_CAP`, `BROKERSCOPE_CGROUP_ROOT`, `BROKERSCOPE_PENDING_MAX`,
/// `BROKERSCOPE_PENDING_TTL`, `BROKERSCOPE_KUBERNETES`, `BROKERSCOPE_KUBE_API_URL`,
/// `BROKERSCOPE_NODE_NAME`, `BROKERSCOPE_K8S_METRIC_LABELS` (each the
/// same as its flag, which wins over it), and the env-only `BROKERSCOPE_DISCOVER=false` (same
/// as `--no-discover`, read by [`Config::load`]).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RunArgs {
    /// TOML configuration file (see docs/configuration.md; `--print-config` shows every key).
    #[arg(long, env = "BROKERSCOPE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Address of the HTTP server for /metrics, /healthz, /readyz, /health [default: 127.0.0.1:9464].
    #[arg(long, env = "BROKERSCOPE_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Log line format on stderr [default: human].
    #[arg(long, env = "BROKERSCOPE_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Log level or tracing filter, e.g. `debug` or `info,observer::capture=debug` [default: info].
    #[arg(long, env = "BROKERSCOPE_LOG", value_name = "LEVEL_OR_FILTER")]
    pub log_level: Option<String>,
    /// Process id of a broker (repeatable).
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Process name (comm or executable name, e.g. beam.smp, mosquitto) (repeatable).
    #[arg(long = "process", value_name = "NAME")]
    pub processes: Vec<String>,
    /// The process listening on this TCP port; only this port is captured (repeatable).
    #[arg(long = "port", value_name = "PORT")]
    pub ports: Vec<u16>,
    /// Do not discover brokers automatically (watch only --pid/--process/--port targets);
    /// the environment variable BROKERSCOPE_DISCOVER=false does the same.
    #[arg(long)]
    pub no_discover: bool,
    /// Decode PORT as SYSTEM (amqp, mqtt, nats, kafka) whatever its first bytes say (repeatable).
    #[arg(long = "protocol", value_name = "PORT=SYSTEM")]
    pub protocols: Vec<ProtocolOverride>,
    /// Ring buffer size in bytes (power of two, at least 4096) [default: 16777216].
    #[arg(long, env = "BROKERSCOPE_RING_SIZE", value_name = "BYTES")]
    pub ring_size: Option<u32>,
    /// Payload bytes copied per packet at most; the rest is reported as a truncation gap [default: 524288].
    #[arg(long, env = "BROKERSCOPE_CAPTURE_CAP", value_name = "BYTES")]
    pub capture_cap: Option<u32>,
    /// Also capture connections the targets open themselves (e.g. cluster links).
    #[arg(long)]
    pub outgoing: bool,
    /// The host's cgroup v2 mount, e.g. /host/sys/fs/cgroup in a container with a private cgroup
    /// namespace [default: found in /proc/self/mountinfo].
    #[arg(long, env = "BROKERSCOPE_CGROUP_ROOT", value_name = "PATH")]
    pub cgroup_root: Option<PathBuf>,
    /// Distinct destination label values per metric family before new ones go to the overflow series [default: 500].
    #[arg(long, env = "BROKERSCOPE_MAX_DESTINATIONS", value_name = "N")]
    pub max_destinations: Option<usize>,
    /// Cap of each correlation pending table [default: 100000].
    #[arg(long, env = "BROKERSCOPE_PENDING_MAX", value_name = "N")]
    pub pending_max: Option<usize>,
    /// How long an unmatched publish/delivery is kept, in seconds [default: 60].
    #[arg(long, env = "BROKERSCOPE_PENDING_TTL", value_name = "SECONDS")]
    pub pending_ttl: Option<f64>,
    /// Stop after this many seconds (else at Ctrl-C / SIGTERM).
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// Export synthesized spans over OTLP (also on when an OTLP endpoint is configured).
    #[arg(long)]
    pub spans: bool,
    /// OTLP endpoint, e.g. http://collector:4317 (gRPC) or http://collector:4318 (HTTP)
    /// [default: OTEL_EXPORTER_OTLP_ENDPOINT, else the protocol's localhost default].
    #[arg(long, env = "BROKERSCOPE_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// OTLP transport: grpc or http/protobuf [default: OTEL_EXPORTER_OTLP_PROTOCOL, else
    /// http/protobuf].
    #[arg(long, env = "BROKERSCOPE_OTLP_PROTOCOL", value_name = "PROTOCOL")]
    pub otlp_protocol: Option<String>,
    /// Fraction of messages whose spans are exported, decided from the trace id [default: 1].
    #[arg(long, env = "BROKERSCOPE_SPAN_SAMPLE_RATIO", value_name = "RATIO")]
    pub span_sample_ratio: Option<f64>,
    /// Always export spans of messages slower than this, in milliseconds, whatever the ratio.
    #[arg(long, env = "BROKERSCOPE_SPAN_KEEP_SLOWER_THAN", value_name = "MS")]
    pub span_keep_slower_than: Option<f64>,
    /// Write audit records to this file (rotated by size; mode 0600).
    #[arg(long, env = "BROKERSCOPE_AUDIT_FILE", value_name = "PATH")]
    pub audit_file: Option<PathBuf>,
    /// Write audit records to standard output.
    #[arg(long)]
    pub audit_stdout: bool,
    /// Rotate the audit file when it reaches this size [default: 104857600].
    #[arg(long, env = "BROKERSCOPE_AUDIT_MAX_BYTES", value_name = "BYTES")]
    pub audit_max_bytes: Option<u64>,
    /// Rotated audit files kept [default: 5].
    #[arg(long, env = "BROKERSCOPE_AUDIT_KEEP", value_name = "N")]
    pub audit_keep: Option<usize>,
    /// `standard` (connections, logins, access, resources) or `full` (also every publish).
    #[arg(long, env = "BROKERSCOPE_AUDIT_LEVEL", value_name = "LEVEL")]
    pub audit_level: Option<AuditLevelName>,
    /// Kubernetes pod metadata about brokers: auto (on in a cluster or with --kube-api-url),
    /// on, off [default: auto].
    #[arg(long, env = "BROKERSCOPE_KUBERNETES", value_name = "MODE")]
    pub kubernetes: Option<KubernetesMode>,
    /// Kubernetes API server URL (http:// allowed, e.g. for kubectl proxy)
    /// [default: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT].
    #[arg(long, env = "BROKERSCOPE_KUBE_API_URL", value_name = "URL")]
    pub kube_api_url: Option<String>,
    /// This node's name: the pods listed are the ones scheduled here [default: the host name].
    #[arg(long, env = "BROKERSCOPE_NODE_NAME", value_name = "NAME")]
    pub node_name: Option<String>,
    /// Add namespace, pod and workload labels to the per-broker metric families.
    #[arg(long, env = "BROKERSCOPE_K8S_METRIC_LABELS")]
    pub k8s_metric_labels: bool,
}

/// When to ask the Kubernetes API about the brokers' pods.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum KubernetesMode {
    /// On when `KUBERNETES_SERVICE_HOST` is set or an API URL is given.
    #[default]
    Auto,
    On,
    Off,
}

/// `[kubernetes]`: pod metadata about the brokers from the Kubernetes API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesConfig {
    pub enabled: KubernetesMode,
    /// API server URL; absent: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// Service-account token (read before every request; a missing file sends none).
    pub token_file: PathBuf,
    /// CA bundle of the API server (https only).
    pub ca_file: PathBuf,
    /// Node whose pods are listed; absent: the host name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Adds `namespace`, `pod`, `workload` labels to the per-broker metric families.
    pub metric_labels: bool,
    /// Full refresh period of the pod list, in seconds (a cache miss refreshes sooner).
    pub refresh_seconds: f64,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        KubernetesConfig {
            enabled: KubernetesMode::Auto,
            api_url: None,
            token_file: crate::k8s::DEFAULT_TOKEN_FILE.into(),
            ca_file: crate::k8s::DEFAULT_CA_FILE.into(),
            node_name: None,
            metric_labels: false,
            refresh_seconds: 30.0,
        }
    }
}

impl KubernetesConfig {
    /// The API URL to use, when the API is on (`env` looks up `KUBERNETES_SERVICE_*`).
    pub fn api(&self, env: impl Fn(&str) -> Option<String>) -> Option<String> {
        let url = self
            .api_url
            .clone()
            .or_else(|| crate::k8s::ApiConfig::in_cluster_url(&env));
        match self.enabled {
            KubernetesMode::Off => None,
            KubernetesMode::Auto | KubernetesMode::On => url,
        }
    }
}

/// How much the audit trail records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AuditLevelName {
    /// Connections, logins, access denials, resources, consumers, subscriptions, ACLs, config.
    #[default]
    Standard,
    /// Also one record per published message (never its body).
    Full,
}

/// `[spans]`: synthesized OpenTelemetry spans.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpansConfig {
    /// Export spans (also implied by an endpoint here or in OTEL_EXPORTER_OTLP_ENDPOINT).
    pub enabled: bool,
    /// OTLP endpoint; absent: OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, else localhost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// `grpc` or `http/protobuf`; absent: OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Fraction of messages exported (0..=1), decided from the trace id.
    pub sample_ratio: f64,
    /// Messages slower than this (ms) are always exported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_slower_than_ms: Option<f64>,
    /// Messages that failed (nack, reject, refused) are always exported.
    pub keep_errors: bool,
    /// Spans waiting for export at most; more are dropped and counted.
    pub queue: usize,
    /// `service.name` of the spans' resource (OTEL_SERVICE_NAME overrides).
    pub service_name: String,
}

impl Default for SpansConfig {
    fn default() -> Self {
        SpansConfig {
            enabled: false,
            endpoint: None,
            protocol: None,
            sample_ratio: 1.0,
            keep_slower_than_ms: None,
            keep_errors: true,
            queue: 8192,
            service_name: "brokerscope".into(),
        }
    }
}

/// `[audit]`: the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// File to write (rotated); absent and `stdout` false: no audit trail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Write to standard output instead of a file.
    pub stdout: bool,
    /// Rotate at this size in bytes.
    pub max_bytes: u64,
    /// Rotated files kept.
    pub keep: usize,
    pub level: AuditLevelName,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            file: None,
            stdout: false,
            max_bytes: 100 << 20,
            keep: 5,
            level: AuditLevelName::Standard,
        }
    }
}

/// One `--protocol PORT=SYSTEM` flag, e.g. `5673=amqp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolOverride {
    pub port: u16,
    pub system: String,
}

impl FromStr for ProtocolOverride {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "expected PORT=SYSTEM, e.g. 5673=amqp (systems: {})",
                SYSTEMS.join(", ")
            )
        };
        let (port, system) = spec.split_once('=').ok_or_else(bad)?;
        let port: u16 = port.trim().parse().map_err(|_| bad())?;
        let system = system.trim().to_ascii_lowercase();
        if port == 0 || !SYSTEMS.contains(&system.as_str()) {
            return Err(bad());
        }
        Ok(ProtocolOverride { port, system })
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Human => "human",
            LogFormat::Json => "json",
        })
    }
}

/// The effective configuration of `brokerscope run` (also the schema of the TOML file: every
/// field is optional there and defaults to the built-in value).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the HTTP server (/metrics, /healthz, /readyz, /health).
    pub listen: SocketAddr,
    /// Stop after this many seconds (absent: run until SIGINT/SIGTERM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    pub log: LogConfig,
    pub targets: TargetsConfig,
    pub capture: CaptureConfig,
    /// Ports whose protocol is forced: `5673 = "amqp"`.
    #[serde(deserialize_with = "deserialize_protocols")]
    pub protocols: BTreeMap<u16, String>,
    pub metrics: MetricsConfig,
    pub correlation: CorrelationConfig,
    pub spans: SpansConfig,
    pub audit: AuditConfig,
    pub kubernetes: KubernetesConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A level (`info`) or a tracing `EnvFilter` (`info,observer::capture=debug`).
    pub level: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TargetsConfig {
    pub pids: Vec<u32>,
    pub processes: Vec<String>,
    pub ports: Vec<u16>,
    /// Discover brokers automatically (on by default).
    pub discover: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    /// Ring buffer size in bytes: a power of two, at least 4096.
    pub ring_size: u32,
    /// Payload bytes copied per packet at most: 1..=`observer_common::MAX_CAPTURE_CAP`.
    pub capture_cap: u32,
    /// Also capture connections the targets open themselves.
    pub outgoing: bool,
    /// The host's cgroup v2 mount (inside a container: where the host's /sys/fs/cgroup is
    /// mounted); absent: found in /proc/self/mountinfo.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_root: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Distinct `destination` label values per metric family before new ones go to the overflow
    /// series.
    pub max_destinations: usize,
    /// Rewrites of destination names before they become label values, first match wins.
    pub destination_rules: Vec<DestinationRule>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorrelationConfig {
    /// Cap of each correlation pending table (oldest entries are evicted and counted).
    pub pending_max: usize,
    /// How long an unmatched publish/delivery is kept, in seconds.
    pub pending_ttl_seconds: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: DEFAULT_LISTEN,
            duration_seconds: None,
            log: LogConfig::default(),
            targets: TargetsConfig::default(),
            capture: CaptureConfig::default(),
            protocols: BTreeMap::new(),
            metrics: MetricsConfig::default(),
            correlation: CorrelationConfig::default(),
            spans: SpansConfig::default(),
            audit: AuditConfig::default(),
            kubernetes: KubernetesConfig::default(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
            level: "info".to_string(),
        }
    }
}

impl Default for TargetsConfig {
    fn default() -> Self {
        TargetsConfig {
            pids: Vec::new(),
            processes: Vec::new(),
            ports: Vec::new(),
            discover: true,
        }
    }
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            ring_size: DEFAULT_RING_SIZE,
            capture_cap: observer_common::DEFAULT_CAPTURE_CAP,
            outgoing: false,
            cgroup_root: None,
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            max_destinations: DEFAULT_MAX_DESTINATIONS,
            destination_rules: Vec::new(),
        }
    }
}

impl Default for CorrelationConfig {
    fn default() -> Self {
        CorrelationConfig {
            pending_max: DEFAULT_PENDING_MAX,
            pending_ttl_seconds: DEFAULT_PENDING_TTL_SECONDS,
        }
    }
}

impl MetricsConfig {
    /// The label value for destination `name` after the first matching rule, or `None` when no
    /// rule matches (use `name` as it is).
    pub fn rewrite_destination(&self, name: &str) -> Option<String> {
        self.destination_rules.iter().find_map(|r| r.apply(name))
    }
}

/// What was wrong with the configuration, and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "cannot read config file {}: {source}; check the path given with --config or BROKERSCOPE_CONFIG",
        path.display()
    )]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "config file {}{}: {message}; fix that line (`brokerscope run --print-config` prints every valid key)",
        path.display(),
        line.as_ref().map(|(n, text)| format!(", line {n} `{text}`")).unwrap_or_default()
    )]
    ParseFile {
        path: PathBuf,
        /// Line number (1-based) and text of the offending line, when known.
        line: Option<(usize, String)>,
        message: String,
    },
    #[error("{var}={value:?} is not understood: {problem}")]
    Env {
        var: &'static str,
        value: String,
        problem: String,
    },
    #[error("{setting} = {value} is invalid: {problem}")]
    Invalid {
        /// The file key and its flag, e.g. `capture.ring_size (--ring-size)`.
        setting: &'static str,
        value: String,
        /// Why, and what to use instead.
        problem: String,
    },
    #[error(
        "log filter {filter:?} is invalid: {message}; use a level (error, warn, info, debug, trace) or a tracing filter such as `info,observer::capture=debug` (--log-level, BROKERSCOPE_LOG or log.level)"
    )]
    LogFilter { filter: String, message: String },
}

impl Config {
    /// The effective configuration: defaults ← file (`args.config`) ← environment ← flags, then
    /// [`validate`](Config::validate)d. Flag values already include their environment variables
    /// (clap reads them); `BROKERSCOPE_DISCOVER` is read here from the process environment.
    pub fn load(args: &RunArgs) -> Result<Config, ConfigError> {
        Config::load_with_env(args, |var| std::env::var(var).ok())
    }

    /// [`load`](Config::load) with the environment given as a lookup function (for tests and
    /// embedding). Only env-only variables (`BROKERSCOPE_DISCOVER`) are looked up.
    pub fn load_with_env(
        args: &RunArgs,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut config = match &args.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(value) = env(ENV_DISCOVER) {
            config.targets.discover = parse_bool(&value).ok_or_else(|| ConfigError::Env {
                var: ENV_DISCOVER,
                value: value.clone(),
                problem: "use true or false (false turns auto-discovery off, like --no-discover)"
                    .to_string(),
            })?;
        }
        config.apply_flags(args);
        config.validate()?;
        Ok(config)
    }

    /// Reads a TOML file (every key optional, unknown keys rejected). Not validated.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml_str(&text).map_err(|(line, message)| ConfigError::ParseFile {
            path: path.to_path_buf(),
            line,
            message,
        })
    }

    /// Parses TOML text; the error carries the offending line (number, text) and the message.
    fn from_toml_str(text: &str) -> Result<Config, (Option<(usize, String)>, String)> {
        toml::from_str(text).map_err(|e: toml::de::Error| {
            let line = e.span().map(|span| {
                let start = span.start.min(text.len());
                let number = text[..start].matches('\n').count() + 1;
                let line_text = text.lines().nth(number - 1).unwrap_or("").trim();
                (number, line_text.to_string())
            });
            (line, e.message().trim().to_string())
        })
    }

    /// Overlays what was given on the command line (or in the flags' environment variables).
    fn apply_flags(&mut self, args: &RunArgs) {
        if let Some(listen) = args.listen {
            self.listen = listen;
        }
        if let Some(format) = args.log_format {
            self.log.format = format;
        }
        if let Some(level) = &args.log_level {
            self.log.level = level.clone();
        }
        if !args.pids.is_empty() {
            self.targets.pids = args.pids.clone();
        }
        if !args.processes.is_empty() {
            self.targets.processes = args.processes.clone();
        }
        if !args.ports.is_empty() {
            self.targets.ports = args.ports.clone();
        }
        if args.no_discover {
            self.targets.discover = false;
        }
        for p in &args.protocols {
            self.protocols.insert(p.port, p.system.clone());
        }
        if let Some(ring_size) = args.ring_size {
            self.capture.ring_size = ring_size;
        }
        if let Some(cap) = args.capture_cap {
            self.capture.capture_cap = cap;
        }
        if let Some(root) = &args.cgroup_root {
            self.capture.cgroup_root = Some(root.clone());
        }
        if args.outgoing {
            self.capture.outgoing = true;
        }
        if let Some(n) = args.max_destinations {
            self.metrics.max_destinations = n;
        }
        if let Some(n) = args.pending_max {
            self.correlation.pending_max = n;
        }
        if let Some(ttl) = args.pending_ttl {
            self.correlation.pending_ttl_seconds = ttl;
        }
        if let Some(d) = args.duration {
            self.duration_seconds = Some(d);
        }
        if args.spans {
            self.spans.enabled = true;
        }
        if let Some(e) = &args.otlp_endpoint {
            self.spans.endpoint = Some(e.clone());
            self.spans.enabled = true;
        }
        if let Some(p) = &args.otlp_protocol {
            self.spans.protocol = Some(p.clone());
        }
        if let Some(r) = args.span_sample_ratio {
            self.spans.sample_ratio = r;
        }
        if let Some(ms) = args.span_keep_slower_than {
            self.spans.keep_slower_than_ms = Some(ms);
        }
        if let Some(f) = &args.audit_file {
            self.audit.file = Some(f.clone());
        }
        if args.audit_stdout {
            self.audit.stdout = true;
        }
        if let Some(b) = args.audit_max_bytes {
            self.audit.max_bytes = b;
        }
        if let Some(k) = args.audit_keep {
            self.audit.keep = k;
        }
        if let Some(l) = args.audit_level {
            self.audit.level = l;
        }
        if let Some(m) = args.kubernetes {
            self.kubernetes.enabled = m;
        }
        if let Some(u) = &args.kube_api_url {
            self.kubernetes.api_url = Some(u.clone());
        }
        if let Some(n) = &args.node_name {
            self.kubernetes.node_name = Some(n.clone());
        }
        if args.k8s_metric_labels {
            self.kubernetes.metric_labels = true;
        }
    }

    /// Checks every value; the error names the setting (file key and flag), the value, and what
    /// is allowed.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |setting: &'static str, value: String, problem: String| {
            Err(ConfigError::Invalid {
                setting,
                value,
                problem,
            })
        };
        if let Err(message) = super::logging::parse_filter(&self.log.level) {
            return Err(ConfigError::LogFilter {
                filter: self.log.level.clone(),
                message,
            });
        }
        if let Some(pid) = self.targets.pids.iter().find(|&&p| p == 0) {
            return invalid(
                "targets.pids (--pid)",
                pid.to_string(),
                "a process id is at least 1".into(),
            );
        }
        if self.targets.processes.iter().any(|p| p.trim().is_empty()) {
            return invalid(
                "targets.processes (--process)",
                "\"\"".into(),
                "a process name cannot be empty; give the comm or executable name, e.g. mosquitto"
                    .into(),
            );
        }
        if self.targets.ports.contains(&0) {
            return invalid(
                "targets.ports (--port)",
                "0".into(),
                "give the broker's listening port, 1-65535".into(),
            );
        }
        let ring = self.capture.ring_size;
        if ring < MIN_RING_SIZE || !ring.is_power_of_two() {
            return invalid(
                "capture.ring_size (--ring-size)",
                ring.to_string(),
                format!(
                    "must be a power of two of at least {MIN_RING_SIZE} bytes, e.g. {DEFAULT_RING_SIZE} (16 MiB)"
                ),
            );
        }
        let cap = self.capture.capture_cap;
        if !(1..=observer_common::MAX_CAPTURE_CAP).contains(&cap) {
            return invalid(
                "capture.capture_cap (--capture-cap)",
                cap.to_string(),
                format!(
                    "must be between 1 and {} bytes",
                    observer_common::MAX_CAPTURE_CAP
                ),
            );
        }
        if let Some(root) = &self.capture.cgroup_root
            && !root.is_absolute()
        {
            return invalid(
                "capture.cgroup_root (--cgroup-root)",
                root.display().to_string(),
                "must be an absolute path, e.g. /host/sys/fs/cgroup".into(),
            );
        }
        for (port, system) in &self.protocols {
            if *port == 0 {
                return invalid(
                    "protocols (--protocol)",
                    format!("0 = {system:?}"),
                    "the port must be 1-65535".into(),
                );
            }
            if !SYSTEMS.contains(&system.as_str()) {
                return invalid(
                    "protocols (--protocol)",
                    format!("{port} = {system:?}"),
                    format!("unknown system; use one of: {}", SYSTEMS.join(", ")),
                );
            }
        }
        if self.metrics.max_destinations == 0 {
            return invalid(
                "metrics.max_destinations (--max-destinations)",
                "0".into(),
                format!("must be at least 1 (default {DEFAULT_MAX_DESTINATIONS})"),
            );
        }
        for rule in &self.metrics.destination_rules {
            if let Err(problem) = rule.check() {
                return invalid(
                    "metrics.destination_rules",
                    format!(
                        "{{ pattern = {:?}, replacement = {:?} }}",
                        rule.pattern, rule.replacement
                    ),
                    problem,
                );
            }
        }
        if self.correlation.pending_max == 0 {
            return invalid(
                "correlation.pending_max (--pending-max)",
                "0".into(),
                format!("must be at least 1 (default {DEFAULT_PENDING_MAX})"),
            );
        }
        let ttl = self.correlation.pending_ttl_seconds;
        if !(ttl.is_finite() && ttl > 0.0) {
            return invalid(
                "correlation.pending_ttl_seconds (--pending-ttl)",
                ttl.to_string(),
                format!(
                    "must be a number of seconds above 0 (default {DEFAULT_PENDING_TTL_SECONDS})"
                ),
            );
        }
        let ratio = self.spans.sample_ratio;
        if !(0.0..=1.0).contains(&ratio) {
            return invalid(
                "spans.sample_ratio (--span-sample-ratio)",
                ratio.to_string(),
                "must be between 0 and 1 (1 exports every message)".into(),
            );
        }
        if let Some(ms) = self.spans.keep_slower_than_ms
            && !(ms.is_finite() && ms >= 0.0)
        {
            return invalid(
                "spans.keep_slower_than_ms (--span-keep-slower-than)",
                ms.to_string(),
                "must be a number of milliseconds, 0 or more".into(),
            );
        }
        if let Some(p) = &self.spans.protocol
            && !matches!(p.as_str(), "grpc" | "http/protobuf" | "http")
        {
            return invalid(
                "spans.protocol (--otlp-protocol)",
                p.clone(),
                "use grpc or http/protobuf".into(),
            );
        }
        if self.spans.queue == 0 {
            return invalid(
                "spans.queue",
                "0".into(),
                "must be at least 1 (default 8192)".into(),
            );
        }
        if self.audit.file.is_some() && self.audit.stdout {
            return invalid(
                "audit.stdout (--audit-stdout)",
                "true".into(),
                "choose one audit sink: a file (--audit-file) or standard output".into(),
            );
        }
        if self.audit.max_bytes < 4096 {
            return invalid(
                "audit.max_bytes (--audit-max-bytes)",
                self.audit.max_bytes.to_string(),
                "must be at least 4096 bytes (default 104857600)".into(),
            );
        }
        let k = &self.kubernetes;
        if let Some(url) = &k.api_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return invalid(
                "kubernetes.api_url (--kube-api-url)",
                url.clone(),
                "give http://HOST:PORT or https://HOST:PORT, e.g. https://10.96.0.1:443 or http://127.0.0.1:8001 (kubectl proxy)".into(),
            );
        }
        if let Some(n) = &k.node_name
            && (n.trim().is_empty() || n.len() > 253)
        {
            return invalid(
                "kubernetes.node_name (--node-name)",
                format!("{n:?}"),
                "give the node's name as Kubernetes knows it (spec.nodeName), e.g. from the downward API".into(),
            );
        }
        if !(k.refresh_seconds.is_finite() && k.refresh_seconds >= 1.0) {
            return invalid(
                "kubernetes.refresh_seconds",
                k.refresh_seconds.to_string(),
                "must be a number of seconds of at least 1 (default 30)".into(),
            );
        }
        if let Some(d) = self.duration_seconds
            && !(d.is_finite() && d > 0.0)
        {
            return invalid(
                "duration_seconds (--duration)",
                d.to_string(),
                "must be a number of seconds above 0; leave it out to run until stopped".into(),
            );
        }
        Ok(())
    }

    /// The configuration as a TOML file (for `--print-config`); loading it back gives `self`.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string_pretty(self).expect("a Config always serializes to TOML");
        format!(
            "# brokerscope run: effective configuration\n\
             # (precedence: command-line flags > environment variables > this file > defaults)\n\n{body}"
        )
    }
}

/// `[protocols]` keys are strings in TOML: parse them as ports with a message that says so.
fn deserialize_protocols<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<u16, String>, D::Error> {
    BTreeMap::<String, String>::deserialize(deserializer)?
        .into_iter()
        .map(|(port, system)| match port.trim().parse::<u16>() {
            Ok(p) => Ok((p, system)),
            Err(_) => Err(serde::de::Error::custom(format!(
                "`{port}` is not a port: [protocols] keys are port numbers 1-65535, e.g. 5673 = \"amqp\""
            ))),
        })
        .collect()
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Rewrites destination names into label values so that ids in names do not explode the label
/// cardinality: `pattern = "orders.*.created"`, `replacement = "orders.{id}.created"`.
///
/// Pattern syntax (matched against the whole name):
/// - `*` matches one or more characters within one segment (segments are separated by `.` or
///   `/`), so `orders.*.created` matches `orders.1234.created` but not `orders.eu.1234.created`,
///   and `user-*` matches `user-42`;
/// - `**` matches one or more characters of any kind, separators included (`logs.**` matches
///   `logs.app.error`);
/// - every other character matches itself.
///
/// The replacement is used literally, except that `$1` … `$9` insert what the first … ninth
/// wildcard matched (`tenant.*.orders.*` → `tenant.$1.orders.{id}` keeps the tenant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DestinationRule {
    pub pattern: String,
    pub replacement: String,
}

impl DestinationRule {
    /// The rewritten name when `name` matches the pattern, else `None`.
    pub fn apply(&self, name: &str) -> Option<String> {
        let mut captures = [(0usize, 0usize); MAX_WILDCARDS];
        if !glob(
            self.pattern.as_bytes(),
            name.as_bytes(),
            0,
            &mut captures,
            0,
        ) {
            return None;
        }
        let mut out = String::with_capacity(self.replacement.len());
        let mut rest = self.replacement.as_str();
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            match after.as_bytes().first() {
                Some(d @ b'1'..=b'9') => {
                    let (start, end) = captures[(d - b'1') as usize];
                    out.push_str(&name[start..end]);
                    rest = &after[1..];
                }
                _ => {
                    out.push('$');
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        Some(out)
    }

    /// Why the rule cannot be used, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.pattern.is_empty() {
            return Err("the pattern is empty; e.g. pattern = \"orders.*.created\"".into());
        }
        if self.pattern.contains("***") {
            return Err(
                "`***` is not a wildcard; use `*` (one segment) or `**` (any number of segments)"
                    .into(),
            );
        }
        if self.replacement.is_empty() {
            return Err(
                "the replacement is empty; e.g. replacement = \"orders.{id}.created\"".into(),
            );
        }
        let wildcards = count_wildcards(&self.pattern);
        if wildcards > MAX_WILDCARDS {
            return Err(format!(
                "{wildcards} wildcards; a pattern may have at most {MAX_WILDCARDS}"
            ));
        }
        let bytes = self.replacement.as_bytes();
        for (i, &b) in bytes.iter().enumerate() {
            if b == b'$'
                && let Some(d @ b'1'..=b'9') = bytes.get(i + 1)
            {
                let n = (d - b'0') as usize;
                if n > wildcards {
                    return Err(format!(
                        "the replacement refers to ${n} but the pattern has {wildcards} wildcard(s)"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Wildcards (`*`, `**`) a pattern may hold, so `$1`…`$9` can name each.
const MAX_WILDCARDS: usize = 9;

fn is_separator(b: u8) -> bool {
    b == b'.' || b == b'/'
}

fn count_wildcards(pattern: &str) -> usize {
    let p = pattern.as_bytes();
    let (mut i, mut n) = (0, 0);
    while i < p.len() {
        if p[i] == b'*' {
            n += 1;
            i += if p.get(i + 1) == Some(&b'*') { 2 } else { 1 };
        } else {
            i += 1;
        }
    }
    n
}

/// Matches all of `name` against all of `pattern`, recording wildcard spans from `k` on.
fn glob(pattern: &[u8], name: &[u8], offset: usize, caps: &mut [(usize, usize)], k: usize) -> bool {
    let Some((&first, rest)) = pattern.split_first() else {
        return name.is_empty();
    };
    if first != b'*' {
        return name.first() == Some(&first) && glob(rest, &name[1..], offset + 1, caps, k);
    }
    let (any, rest) = match rest.split_first() {
        Some((b'*', r)) => (true, r),
        _ => (false, rest),
    };
    if k >= caps.len() {
        return false;
    }
    // Longest span the wildcard may take: anything, or up to the next separator.
    let limit = if any {
        name.len()
    } else {
        name.iter()
            .position(|&b| is_separator(b))
            .unwrap_or(name.len())
    };
    (1..=limit).any(|len| {
        caps[k] = (offset, offset + len);
        glob(rest, &name[len..], offset + len, caps, k + 1)
    })
}

#[cfg(test)]
mod tests;
