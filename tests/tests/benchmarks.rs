//! Smoke runs of `cargo xtask bench overhead --broker …`: each broker once with tiny counts (one
//! round per side, a few thousand messages), checking the report is complete — both phases, a
//! row per round with numbers, the three on/off ratios per phase — and that the observer in the
//! observed rounds counted every published message without kernel losses. No timed assertions:
//! the figures themselves belong in BENCHMARKS.md, not here.
use std::{path::Path, process::Command};

const MESSAGES: u64 = 3000;

/// Runs the bench for `broker` from the workspace root; returns its stdout, failing with the
/// whole output when it did not succeed.
fn bench(broker: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(root)
        .args([
            "run",
            "--quiet",
            "--package",
            "xtask",
            "--",
            "bench",
            "overhead",
        ])
        .args(["--broker", broker, "--rounds", "1", "--load", "both"])
        .args(["--messages", &MESSAGES.to_string()])
        .output()
        .expect("running cargo xtask bench overhead");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "bench overhead --broker {broker} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn check(broker: &str) {
    let out = bench(broker);
    assert!(
        out.ends_with("report complete\n"),
        "incomplete report:\n{out}"
    );
    assert!(out.contains("half load: "), "no half-load phase:\n{out}");
    for phase in ["saturation", "half"] {
        let rows: Vec<&str> = out
            .lines()
            .filter(|l| {
                let mut f = l.split_whitespace();
                f.next() == Some(phase) && f.next().is_some_and(|r| r.parse::<u32>().is_ok())
            })
            .collect();
        assert_eq!(
            rows.len(),
            2,
            "{phase}: expected one off and one on round:\n{out}"
        );
        for row in &rows {
            let f: Vec<&str> = row.split_whitespace().collect();
            // phase round observer msgs/s p50 p99 broker-ns/msg; the broker's CPU comes in clock
            // ticks (10 ms), so a tiny round may show 0.
            for (i, v) in f[3..7].iter().enumerate() {
                let v: f64 = v
                    .parse()
                    .unwrap_or_else(|_| panic!("not a number in {row:?}"));
                assert!(
                    v.is_finite() && (v > 0.0 || i == 3 && v == 0.0),
                    "{phase}: a zero or bad figure in {row:?}"
                );
            }
        }
        let on = rows
            .iter()
            .find(|r| r.split_whitespace().nth(2) == Some("on"))
            .unwrap();
        let counted = |k: &str| -> u64 {
            on.split_whitespace()
                .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('=')?.parse().ok())
                .unwrap_or_else(|| panic!("no {k}= in the observed round {on:?}"))
        };
        assert!(
            counted("published_total") >= MESSAGES,
            "{phase}: the observer counted fewer than {MESSAGES} publishes: {on:?}"
        );
        assert_eq!(counted("chunks_lost"), 0, "{phase}: kernel losses: {on:?}");
        assert!(
            on.contains(" ns/msg (") && on.contains(" without idle "),
            "{phase}: no daemon CPU per message (raw and without idle) in {on:?}"
        );
        for what in ["throughput", "p50 latency", "p99 latency"] {
            let prefix = format!("{phase} {what}: ");
            let line = out
                .lines()
                .find(|l| l.starts_with(&prefix))
                .unwrap_or_else(|| panic!("no {prefix:?} summary:\n{out}"));
            let ratio: f64 = line
                .split("ratio on/off ")
                .nth(1)
                .and_then(|r| r.split(' ').next()?.parse().ok())
                .unwrap_or_else(|| panic!("no ratio in {line:?}"));
            assert!(ratio.is_finite() && ratio > 0.0, "bad ratio in {line:?}");
        }
    }
}

#[test]
fn mosquitto_overhead_bench_reports() {
    check("mosquitto");
}

#[test]
fn nats_overhead_bench_reports() {
    check("nats");
}

#[test]
fn rabbitmq_overhead_bench_reports() {
    check("rabbitmq");
}
