//! A private nats-server per test: Debian's nats-server 2.9 in the foreground, on 127.0.0.1 with
//! a free port, JetStream on with its own store directory, monitoring off, logging to a file in
//! its scratch directory. Optionally with a single user/password (config-file `authorization`
//! block). Plus the client side: the nats-py workload (fixtures/nats_workload.py).
//!
//! nats-server 2.9 puts JetStream data under `<store_dir>/jetstream`, and two servers must never
//! share a store directory, so every instance gets its own (in its scratch directory). The
//! global account ($G) — which a plain `authorization { user, password }` user belongs to — has
//! JetStream enabled when the server-level `jetstream` block is present. The server is ready
//! for clients once its first INFO line says so (`"jetstream":true` included).
use std::{
    fs,
    io::{BufRead, BufReader},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use crate::{Cgroup, Proc, TempDir, free_port, mosquitto::run_script, rabbitmq::Workload, spawn};

/// The nats-py workload script.
pub const WORKLOAD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/nats_workload.py");
const START_TIMEOUT: Duration = Duration::from_secs(20);

static NEXT: AtomicU32 = AtomicU32::new(0);

/// `/usr/sbin/nats-server` (Debian), or whatever `nats-server` is on PATH.
fn server_exe() -> &'static str {
    if Path::new("/usr/sbin/nats-server").exists() {
        "/usr/sbin/nats-server"
    } else {
        "nats-server"
    }
}

/// A running server; stopped by PID (SIGTERM, then SIGKILL) and its files removed on drop.
/// Declare it after the [`Cgroup`] it runs in, so it is dropped first.
pub struct NatsServer {
    /// The nats-server process itself (owns the listener and every client connection).
    pub proc: Proc,
    /// The client listener, 127.0.0.1 only.
    pub port: u16,
    /// (user, password) when started with [`NatsServer::start_with_user`].
    pub credentials: Option<(String, String)>,
    /// The INFO line the server greeted the readiness probe with.
    pub info: String,
    dir: TempDir,
    keep_dir: bool,
}

impl NatsServer {
    /// `nats-server -a 127.0.0.1 -p PORT -js -sd DIR/jetstream -l DIR/nats-server.log` inside
    /// `cgroup`; waits until it greets clients with JetStream enabled.
    pub fn start(cgroup: &Cgroup) -> Self {
        let (n, dir) = scratch();
        let port = free_port();
        let mut cmd = Command::new(server_exe());
        cmd.args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.join("jetstream"))
            .args(["-n", &format!("bs-nats-{n}"), "-l"])
            .arg(dir.join("nats-server.log"));
        Self::launch(cgroup, cmd, dir, port, None)
    }

    /// Like [`NatsServer::start`], from a config file with `authorization { user, password }`
    /// and `jetstream { store_dir }`: only `user`/`password` may connect.
    pub fn start_with_user(cgroup: &Cgroup, user: &str, password: &str) -> Self {
        Self::start_with_permissions(cgroup, user, password, None)
    }

    /// Like [`NatsServer::start_with_user`], the user with `permissions` (the inside of a NATS
    /// `permissions { … }` block, e.g. `publish: { deny: ["audit.secret"] }`) when given: a
    /// client that publishes or subscribes where it may not gets `-ERR 'Permissions Violation
    /// for Publish to "…"'` (or `… for Subscription to …`) and stays connected.
    pub fn start_with_permissions(
        cgroup: &Cgroup,
        user: &str,
        password: &str,
        permissions: Option<&str>,
    ) -> Self {
        let (n, dir) = scratch();
        let port = free_port();
        let q = |s: &str| {
            assert!(
                !s.is_empty() && !s.contains(['"', '\\', '\n', '$']),
                "nats config: {s:?} cannot be quoted as is"
            );
            format!("\"{s}\"")
        };
        let conf = format!(
            "# brokerscope test server {n}\n\
             server_name: \"bs-nats-{n}\"\n\
             listen: \"127.0.0.1:{port}\"\n\
             log_file: \"{log}\"\n\
             jetstream {{\n  store_dir: \"{store}\"\n}}\n\
             authorization {{\n  users = [\n    {{ user: {user}, password: {password}{perms} }}\n  ]\n}}\n",
            log = dir.join("nats-server.log").display(),
            store = dir.join("jetstream").display(),
            user = q(user),
            password = q(password),
            perms = permissions
                .map(|p| format!(", permissions: {{ {p} }}"))
                .unwrap_or_default(),
        );
        let conf_path = dir.join("nats-server.conf");
        fs::write(&conf_path, conf).unwrap();
        let mut cmd = Command::new(server_exe());
        cmd.arg("-c").arg(&conf_path);
        Self::launch(
            cgroup,
            cmd,
            dir,
            port,
            Some((user.to_string(), password.to_string())),
        )
    }

    fn launch(
        cgroup: &Cgroup,
        mut cmd: Command,
        dir: TempDir,
        port: u16,
        credentials: Option<(String, String)>,
    ) -> Self {
        cmd.current_dir(&dir.path)
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.join("stdout")).unwrap())
            .stderr(fs::File::create(dir.join("stderr")).unwrap());
        let proc = spawn(&mut cmd, Some(cgroup));
        let mut me = Self {
            proc,
            port,
            credentials,
            info: String::new(),
            dir,
            keep_dir: false,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = me.proc.child.try_wait() {
                me.fail(&format!("nats-server exited during startup ({status})"));
            }
            match server_info(port, Duration::from_secs(2)) {
                Ok(info) if info.contains("\"jetstream\":true") => {
                    me.info = info;
                    break;
                }
                Ok(info) if Instant::now() > deadline => {
                    me.fail(&format!("JetStream not enabled: {info}"))
                }
                Err(e) if Instant::now() > deadline => {
                    me.fail(&format!("no INFO on 127.0.0.1:{port}: {e}"))
                }
                _ => thread::sleep(Duration::from_millis(20)),
            }
        }
        me
    }

    /// The server's PID: it owns the listener and every client connection.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// `nats://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The scratch directory (config, JetStream store, log).
    pub fn dir(&self) -> &Path {
        &self.dir.path
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("nats-server.log")
    }

    /// JetStream's store directory (the server adds `jetstream/` below it).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.join("jetstream")
    }

    /// Runs `nats_workload.py --url URL [--user U --password P] --scenario NAME EXTRA…` (client
    /// in the test's own cgroup). The server's credentials, if any, are passed along
    /// (`badlogin` replaces the password with its canary).
    pub fn workload(&self, scenario: &str, extra: &[&str]) -> Workload {
        let url = self.url();
        let mut args = vec!["--url", url.as_str()];
        if let Some((user, password)) = &self.credentials {
            args.extend(["--user", user, "--password", password]);
        }
        args.extend(["--scenario", scenario]);
        args.extend(extra);
        run_script(WORKLOAD, &args, None)
    }

    fn fail(&mut self, why: &str) -> ! {
        self.keep_dir = true;
        let mut tails = String::new();
        for name in ["nats-server.log", "stderr"] {
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
            "nats-server did not start: {why}; is it installed? cargo xtask setup \
             (apt-get install -y nats-server)\n{tails}"
        );
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.proc.stop();
        if self.keep_dir {
            eprintln!(
                "nats-server: keeping {} for inspection",
                self.dir.path.display()
            );
            // Leak the TempDir so its Drop does not remove the directory.
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

fn scratch() -> (u32, TempDir) {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    (n, TempDir::new(&format!("nats-server-{n}")))
}

/// Connects to 127.0.0.1:`port` and returns the server's first line (`INFO {...}`), then
/// closes without sending CONNECT.
pub fn server_info(port: u16, timeout: Duration) -> Result<String, String> {
    let addr = ([127, 0, 0, 1], port).into();
    let s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .map_err(|e| format!("read INFO: {e}"))?;
    let line = line.trim_end().to_string();
    if line.starts_with("INFO {") {
        Ok(line)
    } else {
        Err(format!("not an INFO line: {line:?}"))
    }
}
