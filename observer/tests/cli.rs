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
    let o = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_brokerscope"))
        .args(["capture", "--pid", "1"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    for cap in ["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"] {
        assert!(err.contains(cap), "{err}");
    }
    let o = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_brokerscope"))
        .arg("check")
        .output()
        .unwrap();
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
