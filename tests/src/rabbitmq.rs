//! A private RabbitMQ per test: Debian's rabbitmq-server 3.10 run by hand as root (no systemd,
//! no `rabbitmq` user), on 127.0.0.1 with its own AMQP and distribution ports, node name,
//! mnesia/log directories, HOME (Erlang cookie) and epmd — nothing shared with other tests or a
//! system broker. Plus the client side: the pika workload (fixtures/amqp_workload.py) and a tiny
//! JSON reader for the ground truth it prints.
//!
//! How it runs: `/usr/lib/rabbitmq/bin/rabbitmq-server` directly (the /usr/sbin wrapper would
//! `su rabbitmq` and use /var/lib/rabbitmq); that script stays as the parent of beam.smp and
//! forwards SIGTERM as a graceful stop. Every RABBITMQ_* location comes from the environment.
//! epmd is our own foreground `epmd -port P` (ERL_EPMD_PORT=P for the broker and rabbitmqctl),
//! started outside the broker's cgroup and killed by PID, so no `epmd -daemon` outlives the test
//! or is shared with anyone. Startup takes ~6 s on a 2-CPU VM.
use std::{
    fs,
    io::{Read, Write},
    net::TcpStream,
    ops::Index,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use crate::{Cgroup, Proc, TempDir, free_port, spawn, wait_for_port, wait_until};

const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
const CTL: &str = "/usr/lib/rabbitmq/bin/rabbitmqctl";
/// The pika workload script.
pub const WORKLOAD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/amqp_workload.py");
const START_TIMEOUT: Duration = Duration::from_secs(60);

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A running broker; stopped (rabbitmqctl stop, then SIGKILL by PID) and its files removed on
/// drop. Declare it after the [`Cgroup`] it runs in, so it is dropped first.
pub struct RabbitMq {
    /// `/bin/sh rabbitmq-server`, the parent of beam.smp.
    pub proc: Proc,
    /// The AMQP listener, 127.0.0.1 only.
    pub port: u16,
    /// Erlang distribution listener of the node (rabbitmqctl talks to it).
    pub dist_port: u16,
    /// Our private epmd.
    pub epmd_port: u16,
    /// The beam.smp process that owns the AMQP listener and every client connection.
    pub pid_beam: u32,
    /// e.g. `bs-test-1234-0@localhost`; also marks every process of this broker (its
    /// RABBITMQ_NODENAME environment variable), see [`node_processes`].
    pub node: String,
    epmd: Option<Proc>,
    dir: Option<TempDir>,
    keep_dir: bool,
}

impl RabbitMq {
    /// Starts rabbitmq-server inside `cgroup` and waits (up to 60 s) until an AMQP handshake
    /// works and `rabbitmqctl await_startup` returns. Panics, naming the log, if it does not.
    pub fn start(cgroup: &Cgroup) -> Self {
        assert!(
            Path::new(SERVER).exists(),
            "rabbitmq-server is not installed ({SERVER} missing): cargo xtask setup \
             (apt-get install -y rabbitmq-server)"
        );
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let node = format!("bs-test-{}-{n}@localhost", std::process::id());
        let dir = TempDir::new(&format!("rabbitmq-{n}"));
        for d in ["home", "mnesia", "log"] {
            fs::create_dir_all(dir.join(d)).unwrap();
        }
        let port = free_port();
        let dist_port = loop {
            let p = free_port();
            if p != port {
                break p;
            }
        };
        let conf = dir.join("rabbitmq.conf");
        fs::write(
            &conf,
            format!(
                "listeners.tcp.1 = 127.0.0.1:{port}\n\
                 loopback_users.guest = true\n\
                 disk_free_limit.absolute = 1MB\n\
                 log.console = false\n\
                 log.file.level = info\n"
            ),
        )
        .unwrap();
        fs::write(dir.join("enabled_plugins"), "[].\n").unwrap();
        // Replaces /etc/rabbitmq/rabbitmq-env.conf, which the scripts would otherwise source.
        fs::write(dir.join("rabbitmq-env.conf"), "").unwrap();

        let epmd_port = free_port();
        let epmd = spawn(
            Command::new("epmd")
                .args(["-port", &epmd_port.to_string(), "-address", "127.0.0.1"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            None,
        );
        assert!(
            wait_for_port(epmd_port, Duration::from_secs(10)),
            "epmd (erlang-base) did not listen on {epmd_port}; is rabbitmq-server installed? \
             cargo xtask setup"
        );

        let mut cmd = Command::new(SERVER);
        clean_env(&mut cmd);
        let s = |p: PathBuf| p.into_os_string();
        cmd.current_dir(&dir.path)
            .env("HOME", dir.join("home"))
            .env("RABBITMQ_NODENAME", &node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", port.to_string())
            .env("RABBITMQ_DIST_PORT", dist_port.to_string())
            .env("ERL_EPMD_PORT", epmd_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", s(dir.join("mnesia")))
            .env("RABBITMQ_LOG_BASE", s(dir.join("log")))
            .env("RABBITMQ_CONFIG_FILE", s(conf.clone()))
            .env(
                "RABBITMQ_ADVANCED_CONFIG_FILE",
                s(dir.join("advanced.config")),
            )
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                s(dir.join("enabled_plugins")),
            )
            .env("RABBITMQ_CONF_ENV_FILE", s(dir.join("rabbitmq-env.conf")))
            .env("RABBITMQ_PID_FILE", s(dir.join("rabbitmq.pid")))
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.join("startup_log")).unwrap())
            .stderr(fs::File::create(dir.join("startup_err")).unwrap());
        let proc = spawn(&mut cmd, Some(cgroup));

        let mut me = Self {
            proc,
            port,
            dist_port,
            epmd_port,
            pid_beam: 0,
            node,
            epmd: Some(epmd),
            dir: Some(dir),
            keep_dir: false,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = me.proc.child.try_wait() {
                me.fail(&format!("rabbitmq-server exited during startup ({status})"));
            }
            if amqp_handshake(port, Duration::from_secs(2)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                let why = amqp_handshake(port, Duration::from_secs(2)).unwrap_err();
                me.fail(&format!(
                    "no AMQP handshake on 127.0.0.1:{port} within {START_TIMEOUT:?}: {why}"
                ));
            }
            thread::sleep(Duration::from_millis(100));
        }
        let root = me.proc.pid();
        let mut beam = None;
        wait_until(Duration::from_secs(5), || {
            beam = find_beam(root, port);
            beam.is_some()
        });
        match beam {
            Some(pid) => me.pid_beam = pid,
            None => me.fail(&format!("no beam.smp under pid {root} listens on {port}")),
        }
        let left = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(10);
        match me.ctl(&["await_startup"], left) {
            Ok(out) if out.status.success() => {}
            Ok(out) => me.fail(&format!(
                "rabbitmqctl await_startup failed ({}): {}{}",
                out.status, out.stdout, out.stderr
            )),
            Err(e) => me.fail(&format!("rabbitmqctl await_startup: {e}")),
        }
        me
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/%2F`
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2F", self.port)
    }

    /// The beam.smp process that owns the AMQP listener, looked up in /proc: a descendant of the
    /// started process whose comm is "beam.smp" and that holds the socket listening on `port`.
    pub fn broker_pid(&self) -> u32 {
        find_beam(self.proc.pid(), self.port).unwrap_or_else(|| {
            panic!(
                "no beam.smp under pid {} listens on {}; see {}",
                self.proc.pid(),
                self.port,
                self.log_path().display()
            )
        })
    }

    /// The broker's scratch directory (config, mnesia, logs, HOME).
    pub fn dir(&self) -> &Path {
        &self.dir.as_ref().unwrap().path
    }

    /// The broker's main log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir().join("log").join(format!("{}.log", self.node))
    }

    /// What the broker wrote to its pid file (RABBITMQ_PID_FILE), once started.
    pub fn pid_file(&self) -> Option<u32> {
        fs::read_to_string(self.dir().join("rabbitmq.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Every live process of this broker (the script, beam.smp and its helpers), by the
    /// RABBITMQ_NODENAME they inherited.
    pub fn processes(&self) -> Vec<u32> {
        node_processes(&self.node)
    }

    /// Runs `rabbitmqctl -n NODE ARGS` (in the test's own cgroup), killed by PID after `timeout`.
    pub fn ctl(&self, args: &[&str], timeout: Duration) -> Result<Output, String> {
        let mut cmd = Command::new(CTL);
        clean_env(&mut cmd);
        let ctl_port = free_port();
        cmd.env("HOME", self.dir().join("home"))
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .env(
                "RABBITMQ_CONF_ENV_FILE",
                self.dir().join("rabbitmq-env.conf"),
            )
            .env("RABBITMQ_CTL_DIST_PORT_MIN", ctl_port.to_string())
            .env("RABBITMQ_CTL_DIST_PORT_MAX", ctl_port.to_string())
            .args(["-n", &self.node])
            .args(args);
        run_with_timeout(&mut cmd, None, timeout)
    }

    /// Runs `rabbitmqctl ARGS` (bounded by 30 s) and panics, naming `what`, the command and its
    /// output, unless it succeeds. Returns stdout.
    pub fn ctl_ok(&self, what: &str, args: &[&str]) -> String {
        const CTL_TIMEOUT: Duration = Duration::from_secs(30);
        match self.ctl(args, CTL_TIMEOUT) {
            Ok(out) if out.status.success() => out.stdout,
            Ok(out) => panic!(
                "{what}: rabbitmqctl -n {} {} failed ({}):\n{}{}\n(broker log: {})",
                self.node,
                args.join(" "),
                out.status,
                out.stdout,
                out.stderr,
                self.log_path().display()
            ),
            Err(e) => panic!(
                "{what}: {e} (rabbitmqctl bounded by {CTL_TIMEOUT:?}; broker log: {})",
                self.log_path().display()
            ),
        }
    }

    /// `rabbitmqctl add_vhost NAME`.
    pub fn add_vhost(&self, name: &str) {
        self.ctl_ok(&format!("add vhost {name:?}"), &["add_vhost", name]);
    }

    /// `rabbitmqctl add_user USER PASSWORD`, then, when given, `set_permissions -p VHOST USER
    /// CONFIGURE WRITE READ` (regular expressions; `"^$"` grants nothing, `".*"` everything).
    /// A new user has no tags and no permissions anywhere else.
    pub fn add_user(
        &self,
        user: &str,
        password: &str,
        vhost_permissions: Option<(&str, &str, &str, &str)>,
    ) {
        assert!(
            !user.starts_with('-') && !password.starts_with('-'),
            "add_user: a leading '-' would be read as an option by rabbitmqctl"
        );
        self.ctl_ok(&format!("add user {user:?}"), &["add_user", user, password]);
        if let Some((vhost, configure, write, read)) = vhost_permissions {
            self.set_permissions(user, vhost, configure, write, read);
        }
    }

    /// `rabbitmqctl set_permissions -p VHOST USER CONFIGURE WRITE READ`.
    pub fn set_permissions(
        &self,
        user: &str,
        vhost: &str,
        configure: &str,
        write: &str,
        read: &str,
    ) {
        self.ctl_ok(
            &format!("permissions of {user:?} on vhost {vhost:?}"),
            &["set_permissions", "-p", vhost, user, configure, write, read],
        );
    }

    /// `rabbitmqctl set_user_tags USER TAGS…` (e.g. `administrator`).
    pub fn set_user_tags(&self, user: &str, tags: &[&str]) {
        let mut args = vec!["set_user_tags", user];
        args.extend(tags);
        self.ctl_ok(&format!("tags of {user:?}"), &args);
    }

    /// `amqp://USER:PASSWORD@127.0.0.1:PORT/VHOST` (user, password and vhost percent-encoded).
    pub fn amqp_url_for(&self, user: &str, password: &str, vhost: &str) -> String {
        let enc = |s: &str| {
            s.bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect::<String>()
        };
        format!(
            "amqp://{}:{}@127.0.0.1:{}/{}",
            enc(user),
            enc(password),
            self.port,
            enc(vhost)
        )
    }

    /// Runs a workload scenario against this broker (client in the test's own cgroup).
    pub fn workload(&self, scenario: &str, extra: &[&str]) -> Workload {
        run_workload(&self.amqp_url(), scenario, extra, None)
    }

    fn fail(&mut self, why: &str) -> ! {
        self.keep_dir = true;
        let tail = |p: PathBuf| {
            let text = fs::read_to_string(&p).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(25);
            format!("--- {} ---\n{}\n", p.display(), lines[from..].join("\n"))
        };
        let dir = self.dir().to_path_buf();
        panic!(
            "rabbitmq-server did not start: see {} (and {}); is it installed? cargo xtask setup\n\
             {why}\n{}{}",
            self.log_path().display(),
            dir.join("startup_err").display(),
            tail(self.log_path()),
            tail(dir.join("startup_err")),
        );
    }

    fn stop(&mut self) {
        let root = self.proc.pid();
        let gone = |me: &mut Self, t: Duration| {
            wait_until(t, || {
                matches!(me.proc.child.try_wait(), Ok(Some(_)) | Err(_))
                    && node_processes(&me.node).is_empty()
            })
        };
        if matches!(self.proc.child.try_wait(), Ok(None)) && self.pid_beam != 0 {
            // Graceful: the node halts, then the script's `wait` returns and it exits.
            let _ = self.ctl(&["stop"], Duration::from_secs(20));
            if !gone(self, Duration::from_secs(20)) {
                // The script traps TERM and forwards it to beam.smp (another graceful stop).
                // SAFETY: signalling our own child.
                unsafe { libc::kill(root as i32, libc::SIGTERM) };
                gone(self, Duration::from_secs(10));
            }
        }
        // Whatever is left of what we started: kill by PID (the script first, so it cannot
        // restart anything), until nothing carries our node name.
        for _ in 0..50 {
            let pids = node_processes(&self.node);
            if pids.is_empty() {
                break;
            }
            let mut pids = pids;
            pids.sort_by_key(|&p| p != root);
            for pid in pids {
                // SAFETY: a process this harness started (it carries our unique node name).
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
            thread::sleep(Duration::from_millis(100));
        }
        self.proc.stop();
        if let Some(mut epmd) = self.epmd.take() {
            epmd.stop();
        }
    }
}

impl Drop for RabbitMq {
    fn drop(&mut self) {
        self.stop();
        if self.keep_dir
            && let Some(dir) = self.dir.take()
        {
            eprintln!("rabbitmq: keeping {} for inspection", dir.path.display());
            std::mem::forget(dir);
        }
    }
}

/// Removes inherited variables that would change what the scripts do (a systemd NOTIFY_SOCKET
/// makes rabbitmq-server exec erl directly, RABBITMQ_ALLOW_INPUT starts a shell, …).
fn clean_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("RABBITMQ_")
            || k.starts_with("ERL_")
            || k == "NOTIFY_SOCKET"
            || k == "detached"
        {
            cmd.env_remove(&*k);
        }
    }
}

/// Connects, sends the AMQP 0-9-1 protocol header and expects a connection.start frame
/// (frame type 1, channel 0, class 10 method 10) back.
pub fn amqp_handshake(port: u16, timeout: Duration) -> Result<(), String> {
    let addr = ([127, 0, 0, 1], port).into();
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(timeout)).unwrap();
    s.write_all(b"AMQP\x00\x00\x09\x01")
        .map_err(|e| format!("send header: {e}"))?;
    let mut head = [0u8; 11];
    s.read_exact(&mut head)
        .map_err(|e| format!("read connection.start: {e}"))?;
    if head[0] == 1 && head[1..3] == [0, 0] && head[7..11] == [0, 10, 0, 10] {
        Ok(())
    } else {
        Err(format!("not a connection.start frame: {head:02x?}"))
    }
}

/// (pid, ppid, comm) of every process.
fn process_table() -> Vec<(u32, u32, String)> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (open, close) = (stat.find('(')?, stat.rfind(')')?);
        let comm = stat[open + 1..close].to_string();
        let ppid = stat[close + 1..].split_whitespace().nth(1)?.parse().ok()?;
        Some((pid, ppid, comm))
    })
    .collect()
}

/// `root` and all its live descendants.
pub fn descendants(root: u32) -> Vec<u32> {
    let table = process_table();
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(table.iter().filter(|p| p.1 == parent).map(|p| p.0));
        i += 1;
    }
    out.retain(|&p| Path::new(&format!("/proc/{p}")).exists());
    out
}

/// Socket inodes listening (TCP LISTEN) on `port`, IPv4 or IPv6.
fn listening_inodes(port: u16) -> Vec<u64> {
    let mut out = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != "0A" {
                continue;
            }
            let local_port = f[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port)
                && let Ok(inode) = f[9].parse()
            {
                out.push(inode);
            }
        }
    }
    out
}

/// Whether `pid` holds a socket listening on `port`.
pub fn listens_on(pid: u32, port: u16) -> bool {
    let inodes = listening_inodes(port);
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            l.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse::<u64>()
                .ok()
        })
        .any(|i| inodes.contains(&i))
}

/// The comm (/proc/PID/comm) of a process, if it exists.
pub fn comm(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_string())
}

/// The beam.smp below `root` that listens on `port`.
pub fn find_beam(root: u32, port: u16) -> Option<u32> {
    descendants(root)
        .into_iter()
        .find(|&p| comm(p).as_deref() == Some("beam.smp") && listens_on(p, port))
}

/// Live processes whose environment has RABBITMQ_NODENAME=`node` (everything a [`RabbitMq`]
/// started, wherever it was reparented to).
pub fn node_processes(node: &str) -> Vec<u32> {
    let needle = format!("RABBITMQ_NODENAME={node}");
    process_table()
        .into_iter()
        .filter(|(pid, _, _)| {
            // Zombies have an empty environ; they are gone for our purposes.
            fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|&b| b == 0).any(|kv| kv == needle.as_bytes()))
                .unwrap_or(false)
        })
        .map(|p| p.0)
        .collect()
}

/// A finished command.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` (in `cgroup` if given) with piped output; kills it by PID after `timeout`.
pub fn run_with_timeout(
    cmd: &mut Command,
    cgroup: Option<&Cgroup>,
    timeout: Duration,
) -> Result<Output, String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut proc = spawn(cmd, cgroup);
    let reader = |mut r: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = reader(Box::new(proc.child.stdout.take().unwrap()));
    let err = reader(Box::new(proc.child.stderr.take().unwrap()));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match proc.child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let pid = proc.pid();
                proc.stop(); // SIGTERM, then SIGKILL, by PID
                let _ = (out.join(), err.join());
                return Err(format!(
                    "{cmd:?} (pid {pid}) did not finish within {timeout:?}"
                ));
            }
            Err(e) => return Err(format!("{cmd:?}: {e}")),
        }
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// One run of fixtures/amqp_workload.py.
#[derive(Debug)]
pub struct Workload {
    pub output: Output,
}

impl Workload {
    pub fn success(&self) -> bool {
        self.output.status.success()
    }

    /// The ground truth: the JSON object on the last line of stdout. Panics with the script's
    /// output when it failed or printed none.
    pub fn json(&self) -> Json {
        assert!(
            self.success(),
            "workload failed ({}):\n{}{}",
            self.output.status,
            self.output.stderr,
            self.output.stdout
        );
        let line = self
            .output
            .stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        Json::parse(line).unwrap_or_else(|e| panic!("workload output {line:?}: {e}"))
    }
}

/// Runs `python3 fixtures/amqp_workload.py --url URL --scenario NAME EXTRA…` (the interpreter can
/// be overridden with BROKERSCOPE_PYTHON), in `cgroup` if given; bounded by 120 s.
pub fn run_workload(
    url: &str,
    scenario: &str,
    extra: &[&str],
    cgroup: Option<&Cgroup>,
) -> Workload {
    let python = std::env::var("BROKERSCOPE_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut cmd = Command::new(&python);
    cmd.arg(WORKLOAD)
        .args(["--url", url, "--scenario", scenario])
        .args(extra);
    let output = run_with_timeout(&mut cmd, cgroup, Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("amqp workload {scenario}: {e} (is {python} installed?)"));
    Workload { output }
}

/// A parsed JSON value (just enough for the workload's ground truth). Indexing a missing key or
/// element gives `Null`.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

static NULL: Json = Json::Null;

impl Index<&str> for Json {
    type Output = Json;
    fn index(&self, key: &str) -> &Json {
        match self {
            Json::Obj(kv) => kv.iter().find(|(k, _)| k == key).map_or(&NULL, |(_, v)| v),
            _ => &NULL,
        }
    }
}

impl Index<usize> for Json {
    type Output = Json;
    fn index(&self, i: usize) -> &Json {
        match self {
            Json::Arr(v) => v.get(i).unwrap_or(&NULL),
            _ => &NULL,
        }
    }
}

impl Json {
    pub fn u64(&self) -> Option<u64> {
        match *self {
            Json::Num(n) if n >= 0.0 && n.fract() == 0.0 => Some(n as u64),
            _ => None,
        }
    }
    pub fn f64(&self) -> Option<f64> {
        match *self {
            Json::Num(n) => Some(n),
            _ => None,
        }
    }
    pub fn str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn bool(&self) -> Option<bool> {
        match *self {
            Json::Bool(b) => Some(b),
            _ => None,
        }
    }
    pub fn arr(&self) -> &[Json] {
        match self {
            Json::Arr(v) => v,
            _ => &[],
        }
    }
    /// An array of non-negative integers.
    pub fn u64s(&self) -> Vec<u64> {
        self.arr().iter().filter_map(Json::u64).collect()
    }
    /// An array of strings.
    pub fn strs(&self) -> Vec<&str> {
        self.arr().iter().filter_map(Json::str).collect()
    }

    pub fn parse(text: &str) -> Result<Json, String> {
        let mut p = Parser {
            s: text.as_bytes(),
            i: 0,
        };
        let v = p.value()?;
        p.ws();
        if p.i != p.s.len() {
            return Err(format!("trailing data at byte {}", p.i));
        }
        Ok(v)
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn err<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("{what} at byte {}", self.i))
    }
    fn eat(&mut self, lit: &str) -> bool {
        if self.s[self.i..].starts_with(lit.as_bytes()) {
            self.i += lit.len();
            true
        } else {
            false
        }
    }
    fn value(&mut self) -> Result<Json, String> {
        self.ws();
        let Some(&c) = self.s.get(self.i) else {
            return self.err("unexpected end");
        };
        match c {
            b'{' => {
                self.i += 1;
                let mut kv = Vec::new();
                self.ws();
                if self.eat("}") {
                    return Ok(Json::Obj(kv));
                }
                loop {
                    self.ws();
                    let k = self.string()?;
                    self.ws();
                    if !self.eat(":") {
                        return self.err("expected ':'");
                    }
                    kv.push((k, self.value()?));
                    self.ws();
                    if self.eat("}") {
                        return Ok(Json::Obj(kv));
                    }
                    if !self.eat(",") {
                        return self.err("expected ',' or '}'");
                    }
                }
            }
            b'[' => {
                self.i += 1;
                let mut v = Vec::new();
                self.ws();
                if self.eat("]") {
                    return Ok(Json::Arr(v));
                }
                loop {
                    v.push(self.value()?);
                    self.ws();
                    if self.eat("]") {
                        return Ok(Json::Arr(v));
                    }
                    if !self.eat(",") {
                        return self.err("expected ',' or ']'");
                    }
                }
            }
            b'"' => self.string().map(Json::Str),
            _ if self.eat("true") => Ok(Json::Bool(true)),
            _ if self.eat("false") => Ok(Json::Bool(false)),
            _ if self.eat("null") => Ok(Json::Null),
            _ => {
                let start = self.i;
                while self.i < self.s.len() && b"+-0123456789.eE".contains(&self.s[self.i]) {
                    self.i += 1;
                }
                std::str::from_utf8(&self.s[start..self.i])
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .map(Json::Num)
                    .map_or_else(|| self.err("bad value"), Ok)
            }
        }
    }
    fn hex4(&mut self) -> Result<u32, String> {
        let h = self
            .s
            .get(self.i..self.i + 4)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u32::from_str_radix(h, 16).ok());
        match h {
            Some(v) => {
                self.i += 4;
                Ok(v)
            }
            None => self.err("bad \\u escape"),
        }
    }
    fn string(&mut self) -> Result<String, String> {
        if !self.eat("\"") {
            return self.err("expected string");
        }
        let mut out = Vec::new();
        loop {
            let Some(&c) = self.s.get(self.i) else {
                return self.err("unterminated string");
            };
            self.i += 1;
            match c {
                b'"' => return String::from_utf8(out).map_err(|e| e.to_string()),
                b'\\' => {
                    let Some(&e) = self.s.get(self.i) else {
                        return self.err("unterminated escape");
                    };
                    self.i += 1;
                    let ch = match e {
                        b'n' => '\n',
                        b't' => '\t',
                        b'r' => '\r',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'u' => {
                            let mut cp = self.hex4()?;
                            if (0xD800..0xDC00).contains(&cp) && self.eat("\\u") {
                                let lo = self.hex4()?;
                                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo.wrapping_sub(0xDC00));
                            }
                            char::from_u32(cp).unwrap_or('\u{FFFD}')
                        }
                        other => other as char,
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                _ => out.push(c),
            }
        }
    }
}
