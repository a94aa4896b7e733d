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

/// A private Mosquitto on 127.0.0.1:`port` in a cgroup of its own with a scratch directory;
/// stopped (by PID) and cleaned up on drop.
pub struct PrivateMosquitto {
    pub broker: Guard,
    pub cgroup: PathBuf,
    pub data: PathBuf,
}

impl PrivateMosquitto {
    pub fn start(name: &str, port: u16) -> Result<Self> {
        let cgroup = cgroup_dir(name)?;
        let data = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        fs::create_dir_all(&data)?;
        let conf = data.join("mosquitto.conf");
        fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
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
