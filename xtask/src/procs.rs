//! Helpers for tasks that start brokers: cgroups, children stopped by PID, port waits.
use std::{
    fs,
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Child, Command},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{cargo, is_root, run_cmd, setup};

/// Setup, a root check, and a release build of brokerscope; returns the binary's absolute path.
pub fn release_binary(task: &str) -> Result<PathBuf> {
    setup::run()?;
    if !is_root() {
        bail!("{task} loads eBPF programs: run it as root (sudo -E cargo xtask …)");
    }
    run_cmd(cargo().args([
        "build",
        "--release",
        "--package",
        "observer",
        "--bin",
        "brokerscope",
    ]))?;
    Ok(fs::canonicalize("target/release/brokerscope")?)
}

/// The daemon binary a benchmark runs: `$BROKERSCOPE_BIN` when set (the CI smoke tests pass the
/// binary they built), else a fresh release build of this checkout.
pub fn observer_binary() -> Result<PathBuf> {
    match std::env::var_os("BROKERSCOPE_BIN") {
        Some(bin) => {
            if !is_root() {
                bail!("the benchmark loads eBPF programs: run it as root");
            }
            Ok(PathBuf::from(bin))
        }
        None => release_binary("the benchmark"),
    }
}

/// A private Mosquitto on 127.0.0.1:`port` in a cgroup of its own with a scratch directory;
/// stopped (by PID) and cleaned up on drop.
pub struct PrivateMosquitto {
    pub broker: Guard,
    pub cgroup: PathBuf,
    pub data: PathBuf,
}

impl PrivateMosquitto {
    pub fn start(name: &str, port: u16) -> Result<Self> {
        Self::start_with(name, port, "")
    }

    /// Like [`PrivateMosquitto::start`], with `extra` lines appended to its config.
    pub fn start_with(name: &str, port: u16, extra: &str) -> Result<Self> {
        let cgroup = cgroup_dir(name)?;
        let data = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        fs::create_dir_all(&data)?;
        let conf = data.join("mosquitto.conf");
        fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n{extra}"),
        )?;
        let broker = Guard(spawn_in_cgroup(
            Command::new("mosquitto")
                .arg("-c")
                .arg(&conf)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null()),
            &cgroup,
        )?);
        // Built before waiting, so a broker that never listens is still stopped and cleaned up.
        let me = Self {
            broker,
            cgroup,
            data,
        };
        wait_for_port(port)?;
        Ok(me)
    }

    pub fn pid(&self) -> u32 {
        self.broker.0.id()
    }
}

impl Drop for PrivateMosquitto {
    fn drop(&mut self) {
        self.broker.stop();
        let _ = fs::remove_dir_all(&self.data);
        let _ = fs::remove_dir(&self.cgroup);
    }
}

/// Kills the child (by its PID) when dropped, so a failed demo leaves nothing running.
pub struct Guard(pub Child);

impl Guard {
    pub fn stop(&mut self) {
        // SAFETY: signalling a child we started.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            self.stop();
        }
    }
}

pub fn cgroup_dir(name: &str) -> Result<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts")?;
    let root = mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && f[2] == "cgroup2").then(|| PathBuf::from(f[1]))
        })
        .context("no cgroup v2 mounted")?;
    let dir = root.join(format!("{name}-{}", std::process::id()));
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

pub fn spawn_in_cgroup(cmd: &mut Command, cgroup: &std::path::Path) -> Result<Child> {
    let procs = std::ffi::CString::new(
        cgroup
            .join("cgroup.procs")
            .into_os_string()
            .into_encoded_bytes(),
    )?;
    // SAFETY: only open/write/close between fork and exec; "0" moves the writing process.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
            libc::close(fd);
            if ok {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    cmd.spawn()
        .context("starting the broker (is it installed? cargo xtask setup)")
}

pub fn wait_for_port(port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(50));
    }
    bail!("broker did not start listening on {port} within 10 s")
}

/// A private nats-server on 127.0.0.1:`port` (no JetStream, no monitoring) in a cgroup of its
/// own; stopped by PID on drop.
pub struct PrivateNats {
    pub broker: Guard,
    pub cgroup: PathBuf,
}

impl PrivateNats {
    pub fn start(name: &str, port: u16) -> Result<Self> {
        let cgroup = cgroup_dir(name)?;
        let exe = if std::path::Path::new("/usr/sbin/nats-server").exists() {
            "/usr/sbin/nats-server"
        } else {
            "nats-server"
        };
        let broker = Guard(spawn_in_cgroup(
            Command::new(exe)
                .args(["-a", "127.0.0.1", "-p", &port.to_string()])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null()),
            &cgroup,
        )?);
        let me = Self { broker, cgroup };
        wait_for_port(port)?;
        Ok(me)
    }

    pub fn pid(&self) -> u32 {
        self.broker.0.id()
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.broker.stop();
        let _ = fs::remove_dir(&self.cgroup);
    }
}

/// A private RabbitMQ (Debian's rabbitmq-server run directly as root, as tests/src/rabbitmq.rs
/// does): AMQP on 127.0.0.1:`port`, Erlang distribution on `port + 1`, our own foreground epmd
/// on `port + 2` (outside the broker's cgroup), node name, mnesia, logs and HOME in a scratch
/// directory. Stopped by PID (the script forwards SIGTERM to beam.smp) on drop.
pub struct PrivateRabbitMq {
    pub broker: Guard,
    epmd: Guard,
    pub cgroup: PathBuf,
    pub data: PathBuf,
    /// beam.smp, which owns the AMQP listener and every client connection.
    pub beam: u32,
}

impl PrivateRabbitMq {
    pub fn start(name: &str, port: u16) -> Result<Self> {
        const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
        if !std::path::Path::new(SERVER).exists() {
            bail!("rabbitmq-server is not installed ({SERVER} missing): cargo xtask setup");
        }
        let (dist, epmd_port) = (port + 1, port + 2);
        let data = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        for d in ["home", "mnesia", "log"] {
            fs::create_dir_all(data.join(d))?;
        }
        fs::write(
            data.join("rabbitmq.conf"),
            format!(
                "listeners.tcp.1 = 127.0.0.1:{port}\nloopback_users.guest = true\n\
                 disk_free_limit.absolute = 1MB\nlog.console = false\n"
            ),
        )?;
        fs::write(data.join("enabled_plugins"), "[].\n")?;
        // Replaces /etc/rabbitmq/rabbitmq-env.conf, which the scripts would otherwise source.
        fs::write(data.join("rabbitmq-env.conf"), "")?;
        let epmd = Guard(
            Command::new("epmd")
                .args(["-port", &epmd_port.to_string(), "-address", "127.0.0.1"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .context("starting epmd (erlang-base; cargo xtask setup)")?,
        );
        wait_for_port(epmd_port)?;
        let cgroup = cgroup_dir(name)?;
        let mut cmd = Command::new(SERVER);
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("RABBITMQ_") || k.starts_with("ERL_") || k == "NOTIFY_SOCKET" {
                cmd.env_remove(&*k);
            }
        }
        let node = format!("{name}-{}@localhost", std::process::id());
        cmd.current_dir(&data)
            .env("HOME", data.join("home"))
            .env("RABBITMQ_NODENAME", &node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", port.to_string())
            .env("RABBITMQ_DIST_PORT", dist.to_string())
            .env("ERL_EPMD_PORT", epmd_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", data.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", data.join("log"))
            .env("RABBITMQ_CONFIG_FILE", data.join("rabbitmq.conf"))
            .env(
                "RABBITMQ_ADVANCED_CONFIG_FILE",
                data.join("advanced.config"),
            )
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                data.join("enabled_plugins"),
            )
            .env("RABBITMQ_CONF_ENV_FILE", data.join("rabbitmq-env.conf"))
            .env("RABBITMQ_PID_FILE", data.join("rabbitmq.pid"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let broker = Guard(spawn_in_cgroup(&mut cmd, &cgroup)?);
        let mut me = Self {
            broker,
            epmd,
            cgroup,
            data,
            beam: 0,
        };
        // Ready when it answers the AMQP protocol header with connection.start (~6 s here).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = me.broker.0.try_wait() {
                bail!(
                    "rabbitmq-server exited during startup ({status}); logs in {}",
                    me.data.join("log").display()
                );
            }
            if amqp_greets(port) {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "rabbitmq-server did not answer AMQP on 127.0.0.1:{port} within 60 s; logs in {}",
                    me.data.join("log").display()
                );
            }
            thread::sleep(Duration::from_millis(200));
        }
        let procs = fs::read_to_string(me.cgroup.join("cgroup.procs"))?;
        me.beam = procs
            .lines()
            .filter_map(|l| l.trim().parse::<u32>().ok())
            .find(|pid| {
                fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim() == "beam.smp")
            })
            .context("no beam.smp in the RabbitMQ cgroup")?;
        Ok(me)
    }
}

fn amqp_greets(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut head = [0u8; 11];
    s.write_all(b"AMQP\x00\x00\x09\x01").is_ok()
        && s.read_exact(&mut head).is_ok()
        && head[0] == 1
        && head[7..11] == [0, 10, 0, 10]
}

impl Drop for PrivateRabbitMq {
    fn drop(&mut self) {
        self.broker.stop();
        // The script forwards SIGTERM; a beam.smp that outlived it is ours to end, by PID.
        if fs::read_to_string(format!("/proc/{}/comm", self.beam))
            .is_ok_and(|c| c.trim() == "beam.smp")
        {
            // SAFETY: signalling the broker process we started.
            unsafe { libc::kill(self.beam as i32, libc::SIGKILL) };
            thread::sleep(Duration::from_millis(200));
        }
        self.epmd.stop();
        let _ = fs::remove_dir_all(&self.data);
        let _ = fs::remove_dir(&self.cgroup);
    }
}
