//! A private Prometheus (Debian's `prometheus` 2.42) for the dashboard and alert tests: its own
//! loopback port, storage directory and config (1 s scrape and rule evaluation), stopped by PID
//! on drop; a small client of its HTTP API (`/api/v1/query`, `/series`, `/label/…/values`,
//! `/rules`, `/targets`); and `promtool`.
use std::{
    fmt::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use crate::{
    Proc, TempDir, free_port,
    metrics::http_get,
    rabbitmq::{Json, Output, run_with_timeout},
    spawn, wait_until,
};

pub const PROMETHEUS: &str = "/usr/bin/prometheus";
pub const PROMTOOL: &str = "/usr/bin/promtool";

/// One scrape target: the address and the `node` label it gets at scrape time (as the
/// DaemonSet's ServiceMonitor relabeling gives it).
pub struct Target {
    pub addr: SocketAddr,
    pub node: String,
}

/// A running Prometheus; SIGTERM by PID on drop, then its storage is removed.
pub struct Prometheus {
    proc: Proc,
    pub addr: SocketAddr,
    dir: TempDir,
}

fn installed(path: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: cargo xtask setup (apt-get install -y prometheus)"
    );
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` as job `brokerscope` every second, with `rules`
    /// loaded and evaluated every second; returns once `/-/ready` answers 200.
    pub fn start(targets: &[Target], rules: &[PathBuf]) -> Self {
        installed(PROMETHEUS);
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let dir = TempDir::new(&format!("prometheus-{port}"));
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n",
        );
        config.push_str("rule_files:\n");
        for r in rules {
            writeln!(config, "  - {}", r.display()).unwrap();
        }
        config.push_str("scrape_configs:\n  - job_name: brokerscope\n    static_configs:\n");
        for t in targets {
            writeln!(
                config,
                "      - targets: [\"{}\"]\n        labels:\n          node: \"{}\"",
                t.addr, t.node
            )
            .unwrap();
        }
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, &config).unwrap();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let mut cmd = Command::new(PROMETHEUS);
        cmd.arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--storage.tsdb.retention.time=1h")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let mut me = Self {
            proc: spawn(&mut cmd, None),
            addr,
            dir,
        };
        let ready = wait_until(Duration::from_secs(30), || {
            if let Ok(Some(status)) = me.proc.child.try_wait() {
                panic!(
                    "prometheus exited ({status}):\n{}\nconfig:\n{config}",
                    me.logs()
                );
            }
            http_get(addr, "/-/ready").is_ok_and(|r| r.status == 200)
        });
        assert!(ready, "prometheus not ready in 30 s:\n{}", me.logs());
        me
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// GET an API path; the `data` of a `status: success` answer, else an error with the
    /// body (Prometheus names what was wrong with a query in `error`).
    pub fn api(&self, path_and_query: &str) -> Result<Json, String> {
        let r = http_get(self.addr, path_and_query)?;
        let body = String::from_utf8_lossy(&r.body);
        let v = Json::parse(&body).map_err(|e| format!("{path_and_query}: {e}: {body}"))?;
        if r.status != 200 || v["status"].str() != Some("success") {
            return Err(format!("{path_and_query}: HTTP {}: {body}", r.status));
        }
        Ok(v["data"].clone())
    }

    /// An instant query now: its result (a vector's samples, or a scalar).
    pub fn query(&self, expr: &str) -> Result<Json, String> {
        self.api(&format!("/api/v1/query?query={}", urlencode(expr)))
            .map(|d| d["result"].clone())
    }

    /// The values of `label` on series matching `selector` (Grafana's
    /// `label_values(selector, label)`).
    pub fn label_values(&self, label: &str, selector: &str) -> Result<Vec<String>, String> {
        let d = self.api(&format!(
            "/api/v1/label/{label}/values?match[]={}",
            urlencode(selector)
        ))?;
        Ok(d.strs().into_iter().map(str::to_owned).collect())
    }

    /// Every rule group Prometheus loaded, with each rule's health and last error.
    pub fn rules(&self) -> Result<Json, String> {
        self.api("/api/v1/rules").map(|d| d["groups"].clone())
    }

    /// The health (`up`, `down`, `unknown`) of every active target.
    pub fn target_health(&self) -> Result<Vec<String>, String> {
        let d = self.api("/api/v1/targets")?;
        Ok(d["activeTargets"]
            .arr()
            .iter()
            .filter_map(|t| t["health"].str().map(str::to_owned))
            .collect())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.proc.stop();
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters (a query parameter).
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            write!(out, "%{b:02X}").unwrap();
        }
    }
    out
}

/// Runs `promtool ARGS` in `dir` (bounded by 60 s).
pub fn promtool(dir: &Path, args: &[&str]) -> Output {
    installed(PROMTOOL);
    let mut cmd = Command::new(PROMTOOL);
    cmd.current_dir(dir).args(args);
    run_with_timeout(&mut cmd, None, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("promtool {args:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::urlencode;

    #[test]
    fn urlencode_keeps_unreserved_and_encodes_the_rest() {
        assert_eq!(urlencode("a-b_c.d~1"), "a-b_c.d~1");
        assert_eq!(
            urlencode("rate(x{a=~\".*\"}[1m]) > 0"),
            "rate%28x%7Ba%3D~%22.%2A%22%7D%5B1m%5D%29%20%3E%200"
        );
        assert_eq!(urlencode("→"), "%E2%86%92");
    }
}
