//! `brokerscope top` under tmux (an 80×24 terminal): a private RabbitMQ, the pika `slow-ack`
//! workload (a consumer that sleeps before each ack), and what the screen shows — the queue,
//! its rates, a deliver→ack p50 close to the sleep — how keys switch views, sort and filter, and
//! that quitting gives the terminal back. Without a terminal, `top` prints plain tables.
use std::{
    process::{Command, Stdio},
    time::Duration,
};

use tests::{Cgroup, daemon::binary, rabbitmq::RabbitMq, require_root, wait_until};

const SLEEP_MS: u64 = 40;

struct Tmux(String);

impl Tmux {
    fn start(name: &str, command: &str) -> Self {
        let ok = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-x",
                "80",
                "-y",
                "24",
                "-s",
                name,
                command,
            ])
            .status()
            .expect("tmux (cargo xtask setup installs it)");
        assert!(ok.success(), "tmux new-session failed");
        Self(name.to_owned())
    }

    fn screen(&self) -> String {
        let o = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.0])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        for k in keys {
            Command::new("tmux")
                .args(["send-keys", "-t", &self.0, k])
                .status()
                .unwrap();
        }
    }

    fn wait_for(&self, what: &str, f: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        if wait_until(Duration::from_secs(20), || {
            last = self.screen();
            f(&last)
        }) {
            last
        } else {
            panic!("screen never showed {what}:\n{last}")
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .status();
    }
}

/// The deliver→ack p50 in the detail pane ("deliver→ack n=20 p50=40.6ms …"), in ms.
fn ack_p50(screen: &str) -> Option<f64> {
    let line = screen.lines().find(|l| l.starts_with("deliver→ack"))?;
    let p50 = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("p50="))?;
    p50.strip_suffix("ms")?.parse().ok()
}

/// The deliver→ack p50 of the `amqp bs.slow` row (third p50/p99 pair), in ms.
fn row_ack_p50(screen: &str) -> Option<f64> {
    let row = screen.lines().find(|l| l.starts_with("amqp bs.slow "))?;
    let pair = row.split_whitespace().filter(|w| w.contains('/')).nth(2)?;
    pair.split('/').next()?.strip_suffix('m')?.parse().ok()
}

#[test]
fn top_shows_a_slow_consumer_and_answers_keys() {
    require_root();
    let cgroup = Cgroup::create("top-amqp");
    let broker = RabbitMq::start(&cgroup);
    let cmd = format!(
        "{} top --pid {}; echo TOP-EXITED; sleep 60",
        binary().display(),
        broker.broker_pid()
    );
    let tmux = Tmux::start(&format!("bstop{}", std::process::id()), &cmd);
    tmux.wait_for("the header", |s| {
        s.contains("brokerscope top — destinations")
    });
    let w = broker.workload(
        "slow-ack",
        &["--sleep-ms", &SLEEP_MS.to_string(), "--count", "20"],
    );
    assert!(w.success(), "{}", w.output.stderr);
    // The table: the queue's row with its deliver→ack p50/p99 ("41m/45m").
    let screen = tmux.wait_for("bs.slow's deliver→ack", |s| row_ack_p50(s).is_some());
    let p50 = row_ack_p50(&screen).unwrap();
    assert!(
        (p50 - SLEEP_MS as f64).abs() <= 0.1 * SLEEP_MS as f64,
        "table: deliver→ack p50 {p50} ms, consumer slept {SLEEP_MS} ms:\n{screen}"
    );
    // Select the queue's row (rows sort by name: the publish side amq.default/bs.slow is
    // first): the detail pane has its histograms.
    tmux.keys(&["Down", "Down"]);
    let screen = tmux.wait_for("bs.slow's detail", |s| s.contains("deliver→ack n=20"));
    let p50 = ack_p50(&screen).expect("deliver→ack p50 in ms");
    assert!(
        (p50 - SLEEP_MS as f64).abs() <= 0.1 * SLEEP_MS as f64,
        "detail: deliver→ack p50 {p50} ms, consumer slept {SLEEP_MS} ms:\n{screen}"
    );
    assert!(screen.contains("ring lost 0"), "{screen}");
    assert!(screen.lines().all(|l| l.chars().count() <= 80));

    // Sort by deliver→ack p99, then by name: the header says so.
    tmux.keys(&["s", "s", "s", "s", "s"]);
    tmux.wait_for("sort by d→a p99", |s| s.contains("sort: d→a p99"));
    // A filter that matches nothing empties the table; one that matches brings the row back.
    tmux.keys(&["/", "n", "o", "p", "e", "Enter"]);
    let s = tmux.wait_for("the filter applied", |s| {
        s.contains("filter: nope") && !s.contains("amqp bs.slow")
    });
    assert!(!s.contains("amqp bs.slow"));
    tmux.keys(&["/", "s", "l", "o", "w", "Enter"]);
    tmux.wait_for("the filtered row", |s| {
        s.contains("filter: slow") && s.contains("amqp bs.slow")
    });
    // The connections view.
    tmux.keys(&["c"]);
    tmux.wait_for("the connections view", |s| {
        s.contains("CLIENT") && s.contains("USER")
    });
    // Quit: the program ends and the normal screen is back.
    tmux.keys(&["q"]);
    let s = tmux.wait_for("the shell after top", |s| s.contains("TOP-EXITED"));
    assert!(
        !s.contains("brokerscope top —"),
        "alternate screen left:\n{s}"
    );
}

#[test]
fn top_without_a_terminal_prints_plain_tables() {
    require_root();
    let cgroup = Cgroup::create("top-plain");
    let broker = RabbitMq::start(&cgroup);
    let child = Command::new(binary())
        .args([
            "top",
            "--pid",
            &broker.broker_pid().to_string(),
            "--interval",
            "0.5",
        ])
        .args(["--duration", "8"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let w = broker.workload("slow-ack", &["--sleep-ms", "10", "--count", "10"]);
    assert!(w.success(), "{}", w.output.stderr);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains('\u{1b}'),
        "no terminal escapes in plain output"
    );
    assert!(
        text.lines()
            .filter(|l| l.starts_with("DESTINATION"))
            .count()
            >= 10,
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("amqp bs.slow")),
        "{text}"
    );
}
