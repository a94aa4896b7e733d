use std::{
    collections::HashMap,
    sync::atomic::{AtomicUsize, Ordering},
};

use clap::Parser;

use super::*;

/// `brokerscope run`'s flags as the binary will mount them.
#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    run: RunArgs,
}

fn parse(flags: &[&str]) -> RunArgs {
    Cli::try_parse_from(std::iter::once("brokerscope").chain(flags.iter().copied()))
        .unwrap_or_else(|e| panic!("{flags:?}: {e}"))
        .run
}

fn no_env(_: &str) -> Option<String> {
    None
}

/// A file in the temp dir removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(contents: &str) -> TempFile {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "brokerscope-config-test-{}-{}.toml",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn load_file(contents: &str, flags: &[&str]) -> Result<Config, ConfigError> {
    let file = TempFile::new(contents);
    let mut args = parse(flags);
    args.config = Some(file.0.clone());
    Config::load_with_env(&args, no_env)
}

fn invalid(config: &Config) -> String {
    config.validate().unwrap_err().to_string()
}

#[test]
fn defaults() {
    let c = Config::default();
    assert_eq!(c.listen.to_string(), "127.0.0.1:9464");
    assert_eq!(c.log.format, LogFormat::Human);
    assert_eq!(c.log.level, "info");
    assert!(c.targets.discover);
    assert!(c.targets.pids.is_empty() && c.targets.processes.is_empty());
    assert_eq!(c.capture.ring_size, 16 * 1024 * 1024);
    assert_eq!(c.capture.capture_cap, observer_common::DEFAULT_CAPTURE_CAP);
    assert!(!c.capture.outgoing);
    assert!(c.protocols.is_empty());
    assert_eq!(c.metrics.max_destinations, 500);
    assert_eq!(c.correlation.pending_max, 100_000);
    assert_eq!(c.correlation.pending_ttl_seconds, 60.0);
    assert_eq!(c.duration_seconds, None);
    c.validate().unwrap();
    // No file, no flags, no environment: the defaults.
    assert_eq!(
        Config::load_with_env(&RunArgs::default(), no_env).unwrap(),
        c
    );
    // An empty file too.
    assert_eq!(load_file("", &[]).unwrap(), c);
}

#[test]
fn flags_parse_into_config() {
    let args = parse(&[
        "--listen",
        "0.0.0.0:9100",
        "--log-format",
        "json",
        "--log-level",
        "debug,observer::capture=trace",
        "--pid",
        "12",
        "--pid",
        "13",
        "--process",
        "beam.smp",
        "--port",
        "5672",
        "--no-discover",
        "--protocol",
        "5673=amqp",
        "--protocol",
        "4223 = NATS",
        "--ring-size",
        "65536",
        "--capture-cap",
        "4096",
        "--outgoing",
        "--max-destinations",
        "50",
        "--pending-max",
        "10",
        "--pending-ttl",
        "2.5",
        "--duration",
        "3",
        "--print-config",
    ]);
    assert!(args.print_config);
    let c = Config::load_with_env(&args, no_env).unwrap();
    assert_eq!(c.listen.to_string(), "0.0.0.0:9100");
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(c.log.level, "debug,observer::capture=trace");
    assert_eq!(c.targets.pids, [12, 13]);
    assert_eq!(c.targets.processes, ["beam.smp"]);
    assert_eq!(c.targets.ports, [5672]);
    assert!(!c.targets.discover);
    assert_eq!(
        c.protocols,
        BTreeMap::from([(4223, "nats".to_string()), (5673, "amqp".to_string())])
    );
    assert_eq!(c.capture.ring_size, 65536);
    assert_eq!(c.capture.capture_cap, 4096);
    assert!(c.capture.outgoing);
    assert_eq!(c.metrics.max_destinations, 50);
    assert_eq!(c.correlation.pending_max, 10);
    assert_eq!(c.correlation.pending_ttl_seconds, 2.5);
    assert_eq!(c.duration_seconds, Some(3.0));
}

#[test]
fn bad_flags_are_rejected_by_clap() {
    for flags in [
        &["--protocol", "5673"][..],
        &["--protocol", "5673=stomp"],
        &["--protocol", "x=amqp"],
        &["--protocol", "0=amqp"],
        &["--listen", "localhost"],
        &["--log-format", "xml"],
        &["--port", "70000"],
    ] {
        let err = Cli::try_parse_from(std::iter::once("brokerscope").chain(flags.iter().copied()))
            .unwrap_err()
            .to_string();
        assert!(err.contains(flags[0]), "{flags:?}: {err}");
    }
    let err = "5673=stomp".parse::<ProtocolOverride>().unwrap_err();
    assert!(
        err.contains("PORT=SYSTEM") && err.contains("amqp, mqtt, nats, kafka"),
        "{err}"
    );
}

const FILE: &str = r#"
listen = "127.0.0.1:9999"
duration_seconds = 30

[log]
format = "json"
level = "warn"

[targets]
pids = [1, 2]
processes = ["mosquitto"]
ports = [1883]
discover = true

[capture]
ring_size = 1048576
capture_cap = 2048
outgoing = true

[protocols]
1884 = "mqtt"
5673 = "amqp"

[metrics]
max_destinations = 20

[[metrics.destination_rules]]
pattern = "orders.*.created"
replacement = "orders.{id}.created"

[correlation]
pending_max = 1000
pending_ttl_seconds = 5.5
"#;

#[test]
fn file_beats_defaults() {
    let c = load_file(FILE, &[]).unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:9999");
    assert_eq!(c.duration_seconds, Some(30.0));
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(c.log.level, "warn");
    assert_eq!(c.targets.pids, [1, 2]);
    assert_eq!(c.targets.processes, ["mosquitto"]);
    assert_eq!(c.targets.ports, [1883]);
    assert_eq!(c.capture.ring_size, 1 << 20);
    assert_eq!(c.capture.capture_cap, 2048);
    assert!(c.capture.outgoing);
    assert_eq!(c.protocols.len(), 2);
    assert_eq!(c.protocols[&1884], "mqtt");
    assert_eq!(c.metrics.max_destinations, 20);
    assert_eq!(
        c.metrics.destination_rules,
        [DestinationRule {
            pattern: "orders.*.created".into(),
            replacement: "orders.{id}.created".into()
        }]
    );
    assert_eq!(c.correlation.pending_max, 1000);
    assert_eq!(c.correlation.pending_ttl_seconds, 5.5);

    // Keys left out keep their defaults.
    let c = load_file("[capture]\noutgoing = true\n", &[]).unwrap();
    assert_eq!(c.capture.ring_size, DEFAULT_RING_SIZE);
    assert_eq!(c.listen, DEFAULT_LISTEN);
}

#[test]
fn flags_beat_file() {
    let c = load_file(
        FILE,
        &[
            "--listen",
            "127.0.0.1:1",
            "--log-level",
            "trace",
            "--pid",
            "7",
            "--protocol",
            "5673=kafka",
            "--ring-size",
            "8192",
            "--max-destinations",
            "3",
            "--pending-ttl",
            "1",
            "--duration",
            "2",
        ],
    )
    .unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:1");
    assert_eq!(c.log.level, "trace");
    assert_eq!(c.log.format, LogFormat::Json, "not given: the file's");
    assert_eq!(c.targets.pids, [7], "a flag list replaces the file's");
    assert_eq!(c.targets.processes, ["mosquitto"], "not given: the file's");
    assert_eq!(c.protocols[&5673], "kafka", "a flag wins for its port");
    assert_eq!(c.protocols[&1884], "mqtt", "other ports stay");
    assert_eq!(c.capture.ring_size, 8192);
    assert_eq!(c.capture.capture_cap, 2048);
    assert_eq!(c.metrics.max_destinations, 3);
    assert_eq!(c.correlation.pending_ttl_seconds, 1.0);
    assert_eq!(c.duration_seconds, Some(2.0));
}

#[test]
fn env_only_discover_sits_between_file_and_flag() {
    let file = TempFile::new("[targets]\ndiscover = true\n");
    let env = |value: &'static str| move |var: &str| (var == ENV_DISCOVER).then(|| value.into());
    let mut args = RunArgs {
        config: Some(file.0.clone()),
        ..RunArgs::default()
    };
    assert!(
        Config::load_with_env(&args, no_env)
            .unwrap()
            .targets
            .discover
    );
    assert!(
        !Config::load_with_env(&args, env("false"))
            .unwrap()
            .targets
            .discover
    );
    assert!(
        !Config::load_with_env(&args, env("0"))
            .unwrap()
            .targets
            .discover
    );
    assert!(
        Config::load_with_env(&args, env("yes"))
            .unwrap()
            .targets
            .discover
    );
    let err = Config::load_with_env(&args, env("maybe"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "BROKERSCOPE_DISCOVER=\"maybe\" is not understood: use true or false \
         (false turns auto-discovery off, like --no-discover)"
    );
    args.no_discover = true;
    assert!(
        !Config::load_with_env(&args, env("true"))
            .unwrap()
            .targets
            .discover
    );
}

/// Environment variables go through clap's `env =`; setting them in this process would race with
/// the other tests, so `env_beats_file_and_flag_beats_env` runs this test alone in a child
/// process with its own environment. On its own (no marker variable) it does nothing.
#[test]
fn env_child() {
    let Ok(file) = std::env::var("BROKERSCOPE_TEST_ENV_CHILD") else {
        return;
    };
    // Every variable set, no flags: the variables win over the file.
    let c = Config::load(&parse(&[])).unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:2000");
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(c.log.level, "debug");
    assert_eq!(c.capture.ring_size, 32768);
    assert_eq!(c.capture.capture_cap, 100);
    assert_eq!(c.metrics.max_destinations, 7);
    assert_eq!(c.correlation.pending_max, 8);
    assert_eq!(c.correlation.pending_ttl_seconds, 9.0);
    assert!(!c.targets.discover);
    // From the file (BROKERSCOPE_CONFIG) where no variable is set.
    assert_eq!(c.targets.processes, ["from-file"]);
    assert_eq!(parse(&[]).config.as_deref(), Some(Path::new(&file)));
    // Flags win over the variables.
    let c = Config::load(&parse(&[
        "--listen",
        "127.0.0.1:3000",
        "--log-format",
        "human",
        "--log-level",
        "warn",
        "--ring-size",
        "4096",
        "--capture-cap",
        "200",
        "--max-destinations",
        "70",
        "--pending-max",
        "80",
        "--pending-ttl",
        "90",
    ]))
    .unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:3000");
    assert_eq!(c.log.format, LogFormat::Human);
    assert_eq!(c.log.level, "warn");
    assert_eq!(c.capture.ring_size, 4096);
    assert_eq!(c.capture.capture_cap, 200);
    assert_eq!(c.metrics.max_destinations, 70);
    assert_eq!(c.correlation.pending_max, 80);
    assert_eq!(c.correlation.pending_ttl_seconds, 90.0);
    println!("env_child checked");
}

#[test]
fn env_beats_file_and_flag_beats_env() {
    let file = TempFile::new(
        "listen = \"127.0.0.1:1000\"\n\
         [log]\nformat = \"human\"\nlevel = \"error\"\n\
         [targets]\nprocesses = [\"from-file\"]\ndiscover = true\n\
         [capture]\nring_size = 8192\ncapture_cap = 10\n\
         [metrics]\nmax_destinations = 1\n\
         [correlation]\npending_max = 1\npending_ttl_seconds = 1\n",
    );
    let env: HashMap<&str, &str> = HashMap::from([
        ("BROKERSCOPE_LISTEN", "127.0.0.1:2000"),
        ("BROKERSCOPE_LOG_FORMAT", "json"),
        ("BROKERSCOPE_LOG", "debug"),
        ("BROKERSCOPE_RING_SIZE", "32768"),
        ("BROKERSCOPE_CAPTURE_CAP", "100"),
        ("BROKERSCOPE_MAX_DESTINATIONS", "7"),
        ("BROKERSCOPE_PENDING_MAX", "8"),
        ("BROKERSCOPE_PENDING_TTL", "9"),
        ("BROKERSCOPE_DISCOVER", "false"),
    ]);
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["daemon::config::tests::env_child", "--exact", "--nocapture"])
        .env_clear()
        .envs(env)
        .env("BROKERSCOPE_CONFIG", &file.0)
        .env("BROKERSCOPE_TEST_ENV_CHILD", &file.0)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("env_child checked"),
        "child failed:\n{stdout}\n{stderr}"
    );
}

#[test]
fn to_toml_round_trips() {
    let mut full = load_file(FILE, &["--protocol", "4222=nats"]).unwrap();
    full.metrics.destination_rules.push(DestinationRule {
        pattern: "tenant.*.**".into(),
        replacement: "tenant.$1.{rest}".into(),
    });
    full.correlation.pending_ttl_seconds = 0.25;
    full.kubernetes = KubernetesConfig {
        enabled: KubernetesMode::On,
        api_url: Some("http://127.0.0.1:8001".into()),
        token_file: "/tmp/token".into(),
        ca_file: "/tmp/ca.crt".into(),
        node_name: Some("node-a".into()),
        metric_labels: true,
        refresh_seconds: 12.5,
    };
    for config in [Config::default(), full] {
        let text = config.to_toml();
        let file = TempFile::new(&text);
        let args = RunArgs {
            config: Some(file.0.clone()),
            ..RunArgs::default()
        };
        assert_eq!(
            Config::load_with_env(&args, no_env).unwrap(),
            config,
            "{text}"
        );
    }
    let text = Config::default().to_toml();
    assert!(text.starts_with("# brokerscope run"), "{text}");
    for key in [
        "listen = \"127.0.0.1:9464\"",
        "[log]",
        "format = \"human\"",
        "[targets]",
        "discover = true",
        "[capture]",
        "ring_size = 16777216",
        "[metrics]",
        "max_destinations = 500",
        "[correlation]",
        "pending_ttl_seconds = 60.0",
        "[kubernetes]",
        "enabled = \"auto\"",
        "metric_labels = false",
        "refresh_seconds = 30.0",
    ] {
        assert!(text.contains(key), "{key} missing in\n{text}");
    }
}

#[test]
fn unreadable_file() {
    let args = RunArgs {
        config: Some("/nonexistent/brokerscope.toml".into()),
        ..RunArgs::default()
    };
    let err = Config::load_with_env(&args, no_env).unwrap_err();
    assert!(matches!(err, ConfigError::ReadFile { .. }));
    let msg = err.to_string();
    assert!(
        msg.starts_with("cannot read config file /nonexistent/brokerscope.toml: "),
        "{msg}"
    );
    assert!(msg.contains("--config or BROKERSCOPE_CONFIG"), "{msg}");
}

#[test]
fn file_errors_name_file_line_and_key() {
    let cases = [
        // (file, line, text in the message)
        (
            "listen = \"127.0.0.1:1\"\nlisen = 1\n",
            2,
            "unknown field `lisen`",
        ),
        (
            "[capture]\nring_size = 4096\nring-size = 1\n",
            3,
            "unknown field `ring-size`",
        ),
        (
            "[capture]\nring_size = \"big\"\n",
            2,
            "invalid type: string \"big\"",
        ),
        ("[log]\nformat = \"xml\"\n", 2, "unknown variant `xml`"),
        ("listen = \"nowhere\"\n", 1, "invalid socket address"),
        ("[targets\n", 1, ""),
        (
            "[protocols]\nabc = \"amqp\"\n",
            1,
            "`abc` is not a port: [protocols] keys are port numbers 1-65535, e.g. 5673 = \"amqp\"",
        ),
        (
            "[[metrics.destination_rules]]\npattern = \"a.*\"\n",
            1,
            "missing field `replacement`",
        ),
    ];
    for (contents, line, text) in cases {
        let file = TempFile::new(contents);
        let args = RunArgs {
            config: Some(file.0.clone()),
            ..RunArgs::default()
        };
        let err = Config::load_with_env(&args, no_env).unwrap_err();
        let msg = err.to_string();
        let ConfigError::ParseFile { line: got, .. } = &err else {
            panic!("{contents:?}: {msg}");
        };
        let path = file.0.display().to_string();
        assert!(
            msg.starts_with(&format!("config file {path}, line {line} `")),
            "{contents:?}: {got:?} {msg}"
        );
        assert!(msg.contains(text), "{contents:?}: {msg}");
        assert!(
            msg.ends_with("--print-config` prints every valid key)"),
            "{msg}"
        );
    }
}

#[test]
fn validation_errors() {
    let d = Config::default;
    let cases: Vec<(Config, &str)> = vec![
        (
            Config {
                log: LogConfig {
                    level: "observer=loud".into(),
                    ..LogConfig::default()
                },
                ..d()
            },
            "log filter \"observer=loud\" is invalid: ",
        ),
        (
            Config {
                targets: TargetsConfig {
                    pids: vec![0],
                    ..TargetsConfig::default()
                },
                ..d()
            },
            "targets.pids (--pid) = 0 is invalid: a process id is at least 1",
        ),
        (
            Config {
                targets: TargetsConfig {
                    processes: vec![" ".into()],
                    ..TargetsConfig::default()
                },
                ..d()
            },
            "targets.processes (--process) = \"\" is invalid: a process name cannot be empty; give the comm or executable name, e.g. mosquitto",
        ),
        (
            Config {
                targets: TargetsConfig {
                    ports: vec![0],
                    ..TargetsConfig::default()
                },
                ..d()
            },
            "targets.ports (--port) = 0 is invalid: give the broker's listening port, 1-65535",
        ),
        (
            Config {
                capture: CaptureConfig {
                    ring_size: 1000,
                    ..CaptureConfig::default()
                },
                ..d()
            },
            "capture.ring_size (--ring-size) = 1000 is invalid: must be a power of two of at least 4096 bytes, e.g. 16777216 (16 MiB)",
        ),
        (
            Config {
                capture: CaptureConfig {
                    ring_size: 2048,
                    ..CaptureConfig::default()
                },
                ..d()
            },
            "capture.ring_size (--ring-size) = 2048 is invalid: must be a power of two",
        ),
        (
            Config {
                capture: CaptureConfig {
                    capture_cap: 0,
                    ..CaptureConfig::default()
                },
                ..d()
            },
            "capture.capture_cap (--capture-cap) = 0 is invalid: must be between 1 and 524288 bytes",
        ),
        (
            Config {
                capture: CaptureConfig {
                    capture_cap: observer_common::MAX_CAPTURE_CAP + 1,
                    ..CaptureConfig::default()
                },
                ..d()
            },
            "capture.capture_cap (--capture-cap) = 524289 is invalid: must be between 1 and 524288 bytes",
        ),
        (
            Config {
                protocols: BTreeMap::from([(5672, "stomp".into())]),
                ..d()
            },
            "protocols (--protocol) = 5672 = \"stomp\" is invalid: unknown system; use one of: amqp, mqtt, nats, kafka",
        ),
        (
            Config {
                protocols: BTreeMap::from([(0, "amqp".into())]),
                ..d()
            },
            "protocols (--protocol) = 0 = \"amqp\" is invalid: the port must be 1-65535",
        ),
        (
            Config {
                metrics: MetricsConfig {
                    max_destinations: 0,
                    ..MetricsConfig::default()
                },
                ..d()
            },
            "metrics.max_destinations (--max-destinations) = 0 is invalid: must be at least 1 (default 500)",
        ),
        (
            Config {
                metrics: MetricsConfig {
                    destination_rules: vec![DestinationRule {
                        pattern: "".into(),
                        replacement: "x".into(),
                    }],
                    ..MetricsConfig::default()
                },
                ..d()
            },
            "metrics.destination_rules = { pattern = \"\", replacement = \"x\" } is invalid: the pattern is empty; e.g. pattern = \"orders.*.created\"",
        ),
        (
            Config {
                correlation: CorrelationConfig {
                    pending_max: 0,
                    ..CorrelationConfig::default()
                },
                ..d()
            },
            "correlation.pending_max (--pending-max) = 0 is invalid: must be at least 1 (default 100000)",
        ),
        (
            Config {
                correlation: CorrelationConfig {
                    pending_ttl_seconds: 0.0,
                    ..CorrelationConfig::default()
                },
                ..d()
            },
            "correlation.pending_ttl_seconds (--pending-ttl) = 0 is invalid: must be a number of seconds above 0 (default 60)",
        ),
        (
            Config {
                correlation: CorrelationConfig {
                    pending_ttl_seconds: f64::NAN,
                    ..CorrelationConfig::default()
                },
                ..d()
            },
            "correlation.pending_ttl_seconds (--pending-ttl) = NaN is invalid",
        ),
        (
            Config {
                duration_seconds: Some(-1.0),
                ..d()
            },
            "duration_seconds (--duration) = -1 is invalid: must be a number of seconds above 0; leave it out to run until stopped",
        ),
    ];
    for (config, expected) in cases {
        let msg = invalid(&config);
        assert!(
            msg.starts_with(expected),
            "expected {expected:?}\n     got {msg:?}"
        );
    }
}

#[test]
fn validation_errors_from_flags_and_file() {
    let err = Config::load_with_env(&parse(&["--ring-size", "5000"]), no_env)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("capture.ring_size (--ring-size) = 5000 is invalid"),
        "{err}"
    );
    let err = load_file("[protocols]\n5672 = \"amqps\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown system"), "{err}");
    let err = load_file("[log]\nlevel = \"x=y\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("log filter \"x=y\" is invalid"), "{err}");
}

fn rule(pattern: &str, replacement: &str) -> DestinationRule {
    DestinationRule {
        pattern: pattern.into(),
        replacement: replacement.into(),
    }
}

#[test]
fn destination_rule_star_matches_one_segment() {
    let r = rule("orders.*.created", "orders.{id}.created");
    r.check().unwrap();
    assert_eq!(
        r.apply("orders.1234.created").as_deref(),
        Some("orders.{id}.created")
    );
    assert_eq!(
        r.apply("orders.x.created").as_deref(),
        Some("orders.{id}.created")
    );
    assert_eq!(r.apply("orders..created"), None, "a segment is not empty");
    assert_eq!(r.apply("orders.eu.1.created"), None, "one segment only");
    assert_eq!(r.apply("orders/1/created"), None, "separators are literal");
    assert_eq!(r.apply("orders.1.created.x"), None, "the whole name");
    assert_eq!(r.apply("xorders.1.created"), None);

    let r = rule("devices/*/telemetry", "devices/+/telemetry");
    assert_eq!(
        r.apply("devices/d-17/telemetry").as_deref(),
        Some("devices/+/telemetry")
    );
    assert_eq!(r.apply("devices/a.b/telemetry"), None, "`.` separates too");

    let r = rule("user-*.inbox", "user-N.inbox");
    assert_eq!(r.apply("user-42.inbox").as_deref(), Some("user-N.inbox"));
    assert_eq!(r.apply("user-.inbox"), None);

    let r = rule("*", "other");
    assert_eq!(r.apply("queue").as_deref(), Some("other"));
    assert_eq!(r.apply("a.b"), None);
    assert_eq!(r.apply(""), None);
}

#[test]
fn destination_rule_double_star_and_captures() {
    let r = rule("logs.**", "logs.{rest}");
    assert_eq!(r.apply("logs.app.error").as_deref(), Some("logs.{rest}"));
    assert_eq!(r.apply("logs.x").as_deref(), Some("logs.{rest}"));
    assert_eq!(r.apply("logs."), None);

    let r = rule("tenant.*.orders.*", "tenant.$1.orders.{id}");
    r.check().unwrap();
    assert_eq!(
        r.apply("tenant.acme.orders.9").as_deref(),
        Some("tenant.acme.orders.{id}")
    );

    let r = rule("**.*.end", "$2 after $1 costs $5$");
    r.check().unwrap_err();
    let r = rule("**.*.end", "$2 after $1 costs $$0");
    r.check().unwrap();
    assert_eq!(
        r.apply("a.b.c.end").as_deref(),
        Some("c after a.b costs $$0")
    );

    // Backtracking: the first `*` must not swallow what the rest needs.
    let r = rule("*-*.q", "$2/$1");
    assert_eq!(r.apply("a-b-c.q").as_deref(), Some("b-c/a"));
}

#[test]
fn destination_rule_check_errors() {
    let cases = [
        (
            rule("", "x"),
            "the pattern is empty; e.g. pattern = \"orders.*.created\"",
        ),
        (
            rule("a.*", ""),
            "the replacement is empty; e.g. replacement = \"orders.{id}.created\"",
        ),
        (
            rule("a.***", "x"),
            "`***` is not a wildcard; use `*` (one segment) or `**` (any number of segments)",
        ),
        (
            rule("a.*", "$2"),
            "the replacement refers to $2 but the pattern has 1 wildcard(s)",
        ),
        (
            rule("a", "$1"),
            "the replacement refers to $1 but the pattern has 0 wildcard(s)",
        ),
        (
            rule("*.*.*.*.*.*.*.*.*.*", "x"),
            "10 wildcards; a pattern may have at most 9",
        ),
    ];
    for (r, expected) in cases {
        assert_eq!(r.check().unwrap_err(), expected, "{r:?}");
    }
}

#[test]
fn first_matching_rule_wins() {
    let m = MetricsConfig {
        destination_rules: vec![rule("orders.*.created", "A"), rule("orders.**", "B")],
        ..MetricsConfig::default()
    };
    assert_eq!(
        m.rewrite_destination("orders.1.created").as_deref(),
        Some("A")
    );
    assert_eq!(m.rewrite_destination("orders.1.paid").as_deref(), Some("B"));
    assert_eq!(m.rewrite_destination("payments"), None);
}

/// docs/configuration.md: the example file loads, and the error messages it quotes are real.
#[test]
fn docs_example_is_valid() {
    let doc = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/configuration.md"
    ));
    let example = doc
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a ```toml block");
    let c = load_file(example, &[]).unwrap();
    assert_eq!(c.listen.to_string(), "0.0.0.0:9464");
    assert_eq!(c.targets.processes, ["beam.smp", "mosquitto"]);
    assert_eq!(c.capture.ring_size, 32 << 20);
    assert_eq!(c.protocols[&18831], "mqtt");
    assert_eq!(
        c.metrics
            .rewrite_destination("devices/d-17/telemetry")
            .as_deref(),
        Some("devices/{device}/telemetry")
    );

    let quoted = doc
        .split("```text\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .unwrap();
    let mut lines = quoted.lines();
    let ring = Config {
        capture: CaptureConfig {
            ring_size: 1000,
            ..CaptureConfig::default()
        },
        ..Config::default()
    };
    assert_eq!(lines.next().unwrap(), invalid(&ring));
    let file_error = load_file(
        "# brokerscope\n\n[capture]\nring_size = 4096\n\n\nring-size = 1\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    let quoted = lines.next().unwrap();
    let (_, quoted_rest) = quoted.split_once(", line 7").unwrap();
    let (_, actual_rest) = file_error.split_once(", line 7").unwrap();
    assert_eq!(quoted_rest, actual_rest);
}

#[test]
fn kubernetes_section_flags_and_validation() {
    let c = Config::load_with_env(
        &parse(&[
            "--kubernetes",
            "on",
            "--kube-api-url",
            "http://127.0.0.1:8001",
            "--node-name",
            "node-a",
            "--k8s-metric-labels",
        ]),
        no_env,
    )
    .unwrap();
    let k = &c.kubernetes;
    assert_eq!(k.enabled, KubernetesMode::On);
    assert_eq!(k.api_url.as_deref(), Some("http://127.0.0.1:8001"));
    assert_eq!(k.node_name.as_deref(), Some("node-a"));
    assert!(k.metric_labels);
    let file = load_file(
        "[kubernetes]\nenabled = \"off\"\nrefresh_seconds = 5\ntoken_file = \"/t\"\n",
        &[],
    )
    .unwrap();
    assert_eq!(file.kubernetes.enabled, KubernetesMode::Off);
    assert_eq!(file.kubernetes.refresh_seconds, 5.0);
    assert_eq!(file.kubernetes.token_file, PathBuf::from("/t"));
    // auto: on with a URL or in a cluster; off: never.
    let in_cluster = |k: &str| match k {
        "KUBERNETES_SERVICE_HOST" => Some("10.96.0.1".to_owned()),
        "KUBERNETES_SERVICE_PORT" => Some("443".to_owned()),
        _ => None,
    };
    let auto = KubernetesConfig::default();
    assert_eq!(auto.api(no_env), None);
    assert_eq!(
        auto.api(in_cluster).as_deref(),
        Some("https://10.96.0.1:443")
    );
    assert_eq!(file.kubernetes.api(in_cluster), None);
    assert_eq!(k.api(in_cluster).as_deref(), Some("http://127.0.0.1:8001"));
    assert!(
        load_file("[kubernetes]\nenabled = \"maybe\"\n", &[])
            .unwrap_err()
            .to_string()
            .contains("enabled")
    );

    let mut bad = Config::default();
    bad.kubernetes.api_url = Some("10.96.0.1:443".into());
    assert_eq!(
        invalid(&bad),
        "kubernetes.api_url (--kube-api-url) = 10.96.0.1:443 is invalid: give http://HOST:PORT or https://HOST:PORT, e.g. https://10.96.0.1:443 or http://127.0.0.1:8001 (kubectl proxy)"
    );
    let mut bad = Config::default();
    bad.kubernetes.node_name = Some(" ".into());
    assert!(invalid(&bad).starts_with("kubernetes.node_name (--node-name) = \" \" is invalid"));
    let mut bad = Config::default();
    bad.kubernetes.refresh_seconds = 0.5;
    assert_eq!(
        invalid(&bad),
        "kubernetes.refresh_seconds = 0.5 is invalid: must be a number of seconds of at least 1 (default 30)"
    );
}
