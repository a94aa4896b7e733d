//! A private Mosquitto per test: Debian's mosquitto 2.0 run in the foreground (no systemd, no
//! fork) from a config of our own, listening on 127.0.0.1 only, persistence off, logging to a
//! file in its scratch directory. Optionally password-protected (`allow_anonymous false` and a
//! `password_file` made with `mosquitto_passwd -b -c`). Plus the client side: the paho-mqtt
//! workload (fixtures/mqtt_workload.py), run like the AMQP one.
//!
//! Started as root, mosquitto 2.0 drops to the `mosquitto` user unless the config says
//! `user root`; it then could not write its log into our root-owned scratch directory, so the
//! config keeps root (the broker logs a warning about that). The process we start is the broker
//! itself (it never forks without `-d`): [`Mosquitto::pid`] owns the listener and every client
//! connection.
use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use crate::{
    Cgroup, Proc, TempDir, free_port,
    rabbitmq::{Workload, run_with_timeout},
    spawn,
};

/// The paho-mqtt workload script.
pub const WORKLOAD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/mqtt_workload.py");
const START_TIMEOUT: Duration = Duration::from_secs(15);

static NEXT: AtomicU32 = AtomicU32::new(0);

/// `/usr/sbin/mosquitto` (Debian), or whatever `mosquitto` is on PATH.
fn broker_exe() -> &'static str {
    if Path::new("/usr/sbin/mosquitto").exists() {
        "/usr/sbin/mosquitto"
    } else {
        "mosquitto"
    }
}

/// A running broker; stopped by PID (SIGTERM, then SIGKILL) and its files removed on drop.
/// Declare it after the [`Cgroup`] it runs in, so it is dropped first.
pub struct Mosquitto {
    /// The mosquitto process itself.
    pub proc: Proc,
    /// The MQTT listener, 127.0.0.1 only.
    pub port: u16,
    /// (user, password) when started with [`Mosquitto::start_with_password`].
    pub credentials: Option<(String, String)>,
    dir: TempDir,
    keep_dir: bool,
}

impl Mosquitto {
    /// Starts mosquitto inside `cgroup`, anonymous clients allowed, and waits until its port
    /// accepts connections.
    pub fn start(cgroup: &Cgroup) -> Self {
        Self::launch(cgroup, None, None)
    }

    /// Like [`Mosquitto::start`], but only `user` with `password` may connect
    /// (`allow_anonymous false`, a `password_file` written by `mosquitto_passwd`).
    pub fn start_with_password(cgroup: &Cgroup, user: &str, password: &str) -> Self {
        Self::launch(cgroup, Some((user, password)), None)
    }

    /// Like [`Mosquitto::start_with_password`], plus `acl_file` with `acl` as its content
    /// (mosquitto's ACL syntax, e.g. `"user U\ntopic readwrite audit/ok\n"`): every topic
    /// the file does not grant is denied (3.1.1: SUBACK 0x80, PUBLISH dropped; 5.0: reason
    /// 0x87 not authorized).
    pub fn start_with_acl(cgroup: &Cgroup, user: &str, password: &str, acl: &str) -> Self {
        Self::launch(cgroup, Some((user, password)), Some(acl))
    }

    fn launch(cgroup: &Cgroup, credentials: Option<(&str, &str)>, acl: Option<&str>) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = TempDir::new(&format!("mqtt-broker-{n}"));
        let port = free_port();
        let mut conf = format!(
            "# brokerscope test broker {n}\n\
             user root\n\
             listener {port} 127.0.0.1\n\
             persistence false\n\
             log_dest file {log}\n\
             log_type all\n\
             connection_messages true\n\
             log_timestamp true\n",
            log = dir.join("mosquitto.log").display(),
        );
        if let Some((user, password)) = credentials {
            assert!(
                !user.is_empty() && !user.contains(':') && !password.contains('\n'),
                "mosquitto_passwd: user {user:?} / password unusable"
            );
            let file = dir.join("passwd");
            let out = run_with_timeout(
                Command::new("mosquitto_passwd")
                    .args(["-b", "-c"])
                    .arg(&file)
                    .args([user, password]),
                None,
                Duration::from_secs(20),
            )
            .unwrap_or_else(|e| {
                panic!("mosquitto_passwd: {e} (is mosquitto installed? cargo xtask setup)")
            });
            assert!(
                out.status.success() && file.exists(),
                "mosquitto_passwd -b -c failed ({}): {}{}",
                out.status,
                out.stdout,
                out.stderr
            );
            // Newer 2.0.x releases warn about (and will refuse) world-readable password files.
            fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
            conf.push_str(&format!(
                "allow_anonymous false\npassword_file {}\n",
                file.display()
            ));
        } else {
            conf.push_str("allow_anonymous true\n");
        }
        if let Some(acl) = acl {
            let file = dir.join("acl");
            fs::write(&file, acl).unwrap();
            fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
            conf.push_str(&format!("acl_file {}\n", file.display()));
        }
        let conf_path = dir.join("mosquitto.conf");
        fs::write(&conf_path, conf).unwrap();

        let proc = Self::spawn_broker(&dir, cgroup);
        let mut me = Self {
            proc,
            port,
            credentials: credentials.map(|(u, p)| (u.to_string(), p.to_string())),
            dir,
            keep_dir: false,
        };
        me.wait_ready();
        me
    }

    fn spawn_broker(dir: &TempDir, cgroup: &Cgroup) -> Proc {
        spawn(
            Command::new(broker_exe())
                .arg("-c")
                .arg(dir.join("mosquitto.conf"))
                .current_dir(&dir.path)
                .stdin(Stdio::null())
                .stdout(fs::File::create(dir.join("stdout")).unwrap())
                .stderr(fs::File::create(dir.join("stderr")).unwrap()),
            Some(cgroup),
        )
    }

    /// Stops the broker and starts it again with the same configuration and port: a new PID,
    /// as when a supervisor restarts it.
    pub fn restart(&mut self, cgroup: &Cgroup) {
        self.proc.stop();
        // The port is free again once the old process is gone.
        let port = self.port;
        assert!(
            crate::wait_until(Duration::from_secs(5), || {
                std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            }),
            "port {port} still taken after mosquitto stopped"
        );
        self.proc = Self::spawn_broker(&self.dir, cgroup);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let port = self.port;
        let me = self;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = me.proc.child.try_wait() {
                me.fail(&format!("mosquitto exited during startup ({status})"));
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
    }

    /// The broker's PID: it owns the listener and every client connection.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// The scratch directory (config, password file, log).
    pub fn dir(&self) -> &Path {
        &self.dir.path
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("mosquitto.log")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("mosquitto.conf")
    }

    /// The ACL file, when started with [`Mosquitto::start_with_acl`].
    pub fn acl_file(&self) -> Option<PathBuf> {
        Some(self.dir.join("acl")).filter(|p| p.exists())
    }

    /// The password file, when password-protected.
    pub fn password_file(&self) -> Option<PathBuf> {
        self.credentials.as_ref().map(|_| self.dir.join("passwd"))
    }

    /// Runs `mqtt_workload.py --host 127.0.0.1 --port PORT [--user U --password P] --scenario
    /// NAME EXTRA…` (client in the test's own cgroup). The broker's credentials, if any, are
    /// passed along (`badlogin` replaces the password with its canary).
    pub fn workload(&self, scenario: &str, extra: &[&str]) -> Workload {
        let port = self.port.to_string();
        let mut args = vec!["--host", "127.0.0.1", "--port", &port];
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
        for name in ["mosquitto.log", "stderr"] {
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
            "mosquitto did not start: {why}; is it installed? cargo xtask setup \
             (apt-get install -y mosquitto mosquitto-clients)\n{tails}"
        );
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.proc.stop();
        if self.keep_dir {
            eprintln!(
                "mosquitto: keeping {} for inspection",
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

/// Runs `$BROKERSCOPE_PYTHON` (default `python3`) `SCRIPT ARGS…` in `cgroup` if given, bounded by
/// 120 s; the generalisation of [`crate::rabbitmq::run_workload`] to any workload script.
pub fn run_script(script: &str, args: &[&str], cgroup: Option<&Cgroup>) -> Workload {
    let python = std::env::var("BROKERSCOPE_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut cmd = Command::new(&python);
    cmd.arg(script).args(args);
    let output = run_with_timeout(&mut cmd, cgroup, Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{script} {args:?}: {e} (is {python} installed?)"));
    Workload { output }
}
