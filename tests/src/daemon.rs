//! `brokerscope run` as users start it: the real binary, its HTTP endpoints and its logs.
use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::{
    Proc, TempDir, free_port,
    metrics::{Scrape, http_get, scrape},
    spawn, wait_until,
};

/// The `brokerscope` binary: `$BROKERSCOPE_BIN` (`cargo xtask test` builds a release binary
/// and sets it: the daemon shares two cores with the broker and the clients, and a debug
/// build's decoding would slow them), else the one cargo built next to this test.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("BROKERSCOPE_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/<test> → target/debug/brokerscope
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("brokerscope"))
        .expect("target directory");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p observer` (cargo xtask test does)",
        path.display()
    );
    path
}

/// A running daemon, stopped (SIGTERM, by PID) on drop.
pub struct Daemon {
    proc: Proc,
    pub addr: SocketAddr,
    dir: TempDir,
}

impl Daemon {
    /// `brokerscope run ARGS --listen 127.0.0.1:<free> --log-format json`, ready (`/readyz`).
    pub fn start(args: &[&str]) -> Self {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let dir = TempDir::new(&format!("daemon-{port}"));
        let log = std::fs::File::create(dir.join("stderr.log")).unwrap();
        let mut cmd = Command::new(binary());
        cmd.arg("run")
            .args(args)
            .args(["--listen", &addr.to_string(), "--log-format", "json"])
            .env_remove("BROKERSCOPE_CONFIG")
            .stdout(Stdio::null())
            .stderr(log);
        let mut daemon = Self {
            proc: spawn(&mut cmd, None),
            addr,
            dir,
        };
        let ready = wait_until(Duration::from_secs(30), || {
            if let Ok(Some(status)) = daemon.proc.child.try_wait() {
                panic!("brokerscope run exited ({status}):\n{}", daemon.logs());
            }
            daemon.get("/readyz").is_ok_and(|(code, _)| code == 200)
        });
        assert!(
            ready,
            "brokerscope run not ready in 30 s:\n{}",
            daemon.logs()
        );
        daemon
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// What it logged so far (JSON lines).
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    /// GET `path`: status code and body.
    pub fn get(&self, path: &str) -> Result<(u16, String), String> {
        let r = http_get(self.addr, path)?;
        Ok((r.status, String::from_utf8_lossy(&r.body).into_owned()))
    }

    pub fn scrape(&self) -> Scrape {
        scrape(self.addr).unwrap_or_else(|e| panic!("scraping {}: {e}\n{}", self.addr, self.logs()))
    }

    /// Scrapes until `done` holds (the daemon updates health gauges once a second and events
    /// as they are decoded); the last scrape either way.
    pub fn scrape_until(&self, timeout: Duration, mut done: impl FnMut(&Scrape) -> bool) -> Scrape {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.scrape();
            if done(&s) || Instant::now() >= deadline {
                return s;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGTERM; returns the logs once it exited.
    pub fn stop(mut self) -> String {
        self.proc.stop();
        self.logs()
    }
}
