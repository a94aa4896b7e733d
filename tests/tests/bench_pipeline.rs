//! Smoke runs of `cargo xtask bench pipeline|kernel|memory`, each tiny: the benchmark must run
//! end to end against the real kernel and broker and report every field, with sane values. No
//! timing is asserted (the figures depend on the machine).
use std::{collections::BTreeMap, path::PathBuf, process::Command};

/// Runs `cargo xtask bench ARGS --report FILE` with the daemon under test and returns its report.
fn bench(args: &[&str]) -> BTreeMap<String, f64> {
    let bin = std::env::var("BROKERSCOPE_BIN").expect(
        "BROKERSCOPE_BIN must name a release brokerscope binary (cargo xtask test sets it)",
    );
    let dir = std::env::temp_dir().join(format!("bench-smoke-{}-{}", args[0], std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let report = dir.join("report.txt");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&root)
        .args(["run", "--quiet", "--package", "xtask", "--", "bench"])
        .args(args)
        .arg("--report")
        .arg(&report)
        .env("BROKERSCOPE_BIN", bin)
        .output()
        .expect("running cargo xtask bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cargo xtask bench {args:?} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&report).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    text.lines()
        .map(|l| {
            let (k, v) = l
                .split_once(' ')
                .unwrap_or_else(|| panic!("bad line {l:?}"));
            let v: f64 = v
                .parse()
                .unwrap_or_else(|_| panic!("{k}: {v:?} is not a number"));
            (k.to_owned(), v)
        })
        .collect()
}

fn field(report: &BTreeMap<String, f64>, key: &str) -> f64 {
    *report
        .get(key)
        .unwrap_or_else(|| panic!("report lacks {key}: {report:?}"))
}

#[test]
fn pipeline_bench_reports_events_losses_and_cpu() {
    let r = bench(&["pipeline", "--rates", "2000", "--seconds", "0.5"]);
    assert_eq!(field(&r, "ring_size"), f64::from(16u32 << 20));
    assert_eq!(field(&r, "step0_offered"), 2000.0);
    let sent = field(&r, "step0_sent");
    assert!(sent >= 900.0, "{r:?}");
    // One packet per publish at this low rate, plus the connection's own records.
    assert!(field(&r, "step0_events") >= sent, "{r:?}");
    assert_eq!(field(&r, "step0_lost"), 0.0, "{r:?}");
    assert_eq!(field(&r, "step0_decoded"), sent, "{r:?}");
    assert!(field(&r, "step0_cpu_ns") > 0.0, "{r:?}");
    assert!(field(&r, "best_lossless_events_per_s") > 0.0, "{r:?}");
}

#[test]
fn kernel_bench_reports_all_three_loops() {
    let r = bench(&["kernel", "--rounds", "1", "--iterations", "300"]);
    // A request in and a reply out per round trip on the broker side, ACKs piggybacked or not.
    let packets = field(&r, "packets_per_rtt");
    assert!((1.5..=4.0).contains(&packets), "{r:?}");
    for key in ["target", "paused", "sibling", "other"] {
        assert!(field(&r, &format!("{key}_off_ns")) > 0.0, "{r:?}");
        assert!(field(&r, &format!("{key}_on_ns")) > 0.0, "{r:?}");
        assert!(field(&r, &format!("{key}_ratio")) > 0.0, "{r:?}");
        field(&r, &format!("{key}_added_ns_per_packet"));
    }
}

#[test]
fn memory_bench_reaches_its_connections_and_reads_rss() {
    let r = bench(&[
        "memory",
        "--connections",
        "200",
        "--churn",
        "400",
        "--batch",
        "100",
    ]);
    assert_eq!(field(&r, "connections_reached"), 200.0);
    assert_eq!(field(&r, "churned"), 400.0);
    // The daemon tracked every connection: 200 open at once, 600 in all.
    assert_eq!(field(&r, "daemon_active_with_open"), 200.0, "{r:?}");
    assert_eq!(field(&r, "daemon_opened_total"), 600.0, "{r:?}");
    for key in [
        "rss_idle_kib",
        "rss_open_kib",
        "rss_peak_open_kib",
        "rss_before_churn_kib",
        "rss_peak_churn_kib",
        "rss_after_kib",
    ] {
        assert!(field(&r, key) > 1024.0, "{key}: {r:?}");
    }
    assert!(field(&r, "rss_peak_churn_kib") >= field(&r, "rss_before_churn_kib"));
    assert_eq!(field(&r, "lost"), 0.0, "{r:?}");
    // The ring's pages, mapped twice, plus its position pages at most: part of the RSS.
    let ring = field(&r, "ring_mapping_rss_kib");
    assert!(
        ring <= 2.0 * 16384.0 + 64.0 && ring < field(&r, "rss_after_kib"),
        "{r:?}"
    );
}
