//! The `brokerscope` binary's answers to bad input: clear messages and the documented exit codes.
use std::process::{Command, Output};

fn brokerscope(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_brokerscope"))
        .args(args)
        .output()
        .expect("run brokerscope")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// brokerscope as user nobody with no capabilities at all.
fn as_nobody() -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
    ])
    .arg(env!("CARGO_BIN_EXE_brokerscope"));
    cmd
}

fn is_root() -> bool {
    // SAFETY: no arguments.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn nonexistent_pid_exits_2_with_a_hint() {
    if !is_root() {
        eprintln!("needs root (privileges are checked first); run via cargo xtask test");
        return;
    }
    let o = brokerscope(&["capture", "--pid", "4000000000"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("no process with pid 4000000000"), "{err}");
    assert!(err.contains("ps -p"), "{err}");
}

#[test]
fn unknown_process_name_exits_2_with_a_hint() {
    if !is_root() {
        return;
    }
    let o = brokerscope(&["capture", "--process", "no-such-broker-xyz"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no running process is named \"no-such-broker-xyz\""),
        "{}",
        stderr(&o)
    );
}

#[test]
fn port_without_listener_exits_2() {
    if !is_root() {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let o = brokerscope(&["capture", "--port", &port.to_string()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("no process is listening on TCP port {port}")),
        "{}",
        stderr(&o)
    );
}

#[test]
fn no_target_is_a_usage_error() {
    let o = brokerscope(&["capture"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--pid PID, --process NAME or --port PORT"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bad_ring_size_is_a_usage_error() {
    if !is_root() {
        return;
    }
    let me = std::process::id().to_string();
    let o = brokerscope(&["capture", "--pid", &me, "--ring-size", "1000"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("power of two"), "{}", stderr(&o));
}

/// Without privileges the message names each missing capability.
#[test]
fn unprivileged_run_names_missing_capabilities() {
    if !is_root() || Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("needs root and setpriv (util-linux) to drop privileges");
        return;
    }
    let o = as_nobody()
        .args(["capture", "--pid", "1"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    for cap in ["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"] {
        assert!(err.contains(cap), "{err}");
    }
    let o = as_nobody().arg("check").output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("privileges") && out.contains("FAIL"), "{out}");
}

#[test]
fn check_passes_on_this_host_as_root() {
    if !is_root() {
        return;
    }
    let o = brokerscope(&["check"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    for row in [
        "kernel",
        "cgroup v2",
        "program type cgroup_skb",
        "program type sock_ops",
        "attach",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(row) && l.contains(" ok ")),
            "row {row} not ok:\n{out}"
        );
    }
}

fn run_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_brokerscope"));
    cmd.arg("run").args(args);
    for var in [
        "BROKERSCOPE_CONFIG",
        "BROKERSCOPE_LISTEN",
        "BROKERSCOPE_MAX_DESTINATIONS",
        "BROKERSCOPE_DISCOVER",
        "BROKERSCOPE_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run brokerscope run")
}

/// `run --print-config`: defaults ← file ← environment ← flags, printed as TOML that loads back.
#[test]
fn run_print_config_shows_precedence() {
    let dir = std::env::temp_dir().join(format!("brokerscope-cli-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("brokerscope.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:9999\"\n[metrics]\nmax_destinations = 11\n[correlation]\npending_max = 7\n",
    )
    .unwrap();
    let file_arg = file.to_str().unwrap();
    let o = run_with(
        &[
            "--config",
            file_arg,
            "--print-config",
            "--max-destinations",
            "33",
        ],
        &[
            ("BROKERSCOPE_MAX_DESTINATIONS", "22"),
            ("BROKERSCOPE_LISTEN", "127.0.0.1:8888"),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let printed = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        printed.contains("listen = \"127.0.0.1:8888\""),
        "env beats file:\n{printed}"
    );
    assert!(
        printed.contains("max_destinations = 33"),
        "flag beats env:\n{printed}"
    );
    assert!(
        printed.contains("pending_max = 7"),
        "file beats default:\n{printed}"
    );
    assert!(
        printed.contains("discover = true"),
        "discovery is on by default:\n{printed}"
    );
    // What it printed is a valid configuration file with the same effect.
    std::fs::write(&file, &printed).unwrap();
    let again = run_with(&["--config", file_arg, "--print-config"], &[]);
    assert_eq!(String::from_utf8_lossy(&again.stdout), printed);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn run_bad_configuration_is_a_usage_error() {
    let dir = std::env::temp_dir().join(format!("brokerscope-cli-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[metrics]\nmax_destination = 5\n").unwrap();
    let o = run_with(&["--config", file.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("bad.toml") && err.contains("max_destination"),
        "{err}"
    );

    let o = run_with(&["--config", "/nonexistent/brokerscope.toml"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("/nonexistent/brokerscope.toml"),
        "{}",
        stderr(&o)
    );

    let o = run_with(&["--ring-size", "1000"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("ring"), "{}", stderr(&o));

    let o = run_with(&["--protocol", "5672=smtp"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("smtp"), "{}", stderr(&o));

    let o = run_with(&["--no-discover"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("nothing to watch"), "{}", stderr(&o));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The daemon without privileges says which capabilities are missing (and does not serve).
#[test]
fn unprivileged_daemon_names_missing_capabilities() {
    if !is_root() || Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("needs root and setpriv (util-linux) to drop privileges");
        return;
    }
    let o = as_nobody()
        .args(["run", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    for cap in ["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"] {
        assert!(err.contains(cap), "{err}");
    }
}

/// A small rotated audit log: `audit.jsonl.1` (older) and `audit.jsonl`.
fn audit_log(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("bs-cli-audit-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let rec = |time: &str, action: &str, outcome: &str, user: &str, text: &str| {
        let reason = if text.is_empty() {
            String::new()
        } else {
            format!(
                r#","reason":{{"code":403,"text":{}}}"#,
                serde_json::json!(text)
            )
        };
        format!(
            r#"{{"time":"{time}","node":"n1","event":{{"action":"{action}","outcome":"{outcome}"}},"messaging":{{"system":"rabbitmq"}},"user":{{"name":"{user}"}},"resource":{{"type":"queue","name":"orders"}}{reason},"connection":"c1","protocol_method":"queue.declare"}}"#
        )
    };
    let file = dir.join("audit.jsonl");
    std::fs::write(
        dir.join("audit.jsonl.1"),
        rec(
            "2026-05-01T10:00:00.000000000Z",
            "queue.created",
            "success",
            "alice",
            "",
        ) + "\n",
    )
    .unwrap();
    std::fs::write(
        &file,
        [
            rec(
                "2026-05-01T11:00:00.000000000Z",
                "access.denied",
                "failure",
                "bob",
                "ACCESS_REFUSED - \"x\", refused",
            ),
            rec(
                "2026-05-01T12:00:00.000000000Z",
                "queue.deleted",
                "success",
                "alice",
                "",
            ),
        ]
        .join("\n")
            + "\n",
    )
    .unwrap();
    (dir, file)
}

#[test]
fn audit_query_and_export_read_the_rotated_log() {
    let (dir, file) = audit_log("ok");
    let file = file.to_str().unwrap();
    let o = brokerscope(&["audit", "query", "--file", file]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    let actions: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["event"]["action"].to_string()
        })
        .collect();
    assert_eq!(
        actions,
        [
            "\"queue.created\"",
            "\"access.denied\"",
            "\"queue.deleted\""
        ]
    );

    let o = brokerscope(&[
        "audit", "query", "--file", file, "--action", "queue.*", "--user", "alice",
    ]);
    assert_eq!(String::from_utf8(o.stdout).unwrap().lines().count(), 2);
    let o = brokerscope(&[
        "audit",
        "query",
        "--file",
        file,
        "--outcome",
        "failure",
        "--system",
        "amqp",
        "--since",
        "2026-05-01T10:30:00Z",
        "--until",
        "2026-05-01T11:30:00+00:00",
    ]);
    let out = String::from_utf8(o.stdout).unwrap();
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("\"bob\""));
    // Relative times: everything in the log is older than 15 minutes.
    let o = brokerscope(&["audit", "query", "--file", file, "--since", "15m"]);
    assert!(o.status.success());
    assert!(o.stdout.is_empty());

    let o = brokerscope(&["audit", "export", "--format", "csv", "--file", file]);
    assert!(o.status.success(), "{}", stderr(&o));
    let csv = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(
        lines[0].starts_with("time,node,event.action,event.outcome,messaging.system,user.name")
    );
    assert!(
        csv.contains("\"ACCESS_REFUSED - \"\"x\"\", refused\""),
        "{csv}"
    );

    let o = brokerscope(&[
        "audit",
        "export",
        "--format",
        "json",
        "--file",
        file,
        "--action",
        "access.denied",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["reason"]["code"], 403);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn audit_bad_input_exits_2_with_what_to_do() {
    let (dir, file) = audit_log("bad");
    let file = file.to_str().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (
            &["audit", "query", "--file", file, "--since", "yesterday"],
            "RFC 3339",
        ),
        (
            &["audit", "export", "--format", "xml", "--file", file],
            "use json or csv",
        ),
        (
            &["audit", "query", "--file", file, "--outcome", "maybe"],
            "success, failure or unknown",
        ),
        (
            &["audit", "query", "--file", file, "--system", "redis"],
            "rabbitmq",
        ),
        (
            &["audit", "query", "--file", "/nonexistent/audit.jsonl"],
            "--file",
        ),
    ];
    for (args, hint) in cases {
        let o = brokerscope(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(hint), "{args:?}: {}", stderr(&o));
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_duration_is_a_usage_error() {
    for args in [
        &["latency", "--duration", "soon"][..],
        &["latency", "--pid", "1", "--duration=-5s"],
        &["capture", "--pid", "1", "--duration", "0s"],
        &["trace", "--min-latency", "fast"],
    ] {
        let o = brokerscope(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("e.g. 30s, 500ms, 2m or plain seconds"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
}
