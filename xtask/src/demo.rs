//! `cargo xtask demo`: brokerscope capturing a real broker on this machine, start to finish.
//!
//! Starts Mosquitto on a private loopback port in a cgroup of its own, attaches
//! `brokerscope capture` to it, publishes and subscribes with mosquitto_pub/sub, prints what
//! was captured, and stops everything it started (by PID).
use std::{
    fs,
    io::Write,
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{cargo, is_root, run_cmd, setup};

const PORT: u16 = 18831;

pub fn run() -> Result<()> {
    setup::run()?;
    if !is_root() {
        bail!("the demo loads eBPF programs: run it as root (sudo -E cargo xtask demo)");
    }
    run_cmd(cargo().args([
        "build",
        "--release",
        "--package",
        "observer",
        "--bin",
        "brokerscope",
    ]))?;
    let binary = PathBuf::from("target/release/brokerscope");

    let cgroup = cgroup_dir("brokerscope-demo")?;
    let data = std::env::temp_dir().join(format!("brokerscope-demo-{}", std::process::id()));
    fs::create_dir_all(&data)?;
    let conf = data.join("mosquitto.conf");
    fs::write(
        &conf,
        format!("listener {PORT} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
    )?;
    let mut broker = Guard(spawn_in_cgroup(
        Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        &cgroup,
    )?);
    wait_for_port(PORT)?;
    println!(
        "demo: mosquitto pid {} on 127.0.0.1:{PORT} in cgroup {}",
        broker.0.id(),
        cgroup.display()
    );

    let mut capture = Guard(
        Command::new(&binary)
            .args([
                "capture",
                "--pid",
                &broker.0.id().to_string(),
                "--duration",
                "4",
            ])
            .spawn()
            .context("starting brokerscope capture")?,
    );
    thread::sleep(Duration::from_millis(1000));
    let mut sub = Guard(
        Command::new("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &PORT.to_string(),
                "-t",
                "demo/#",
                "-C",
                "3",
                "-i",
                "demo-sub",
            ])
            .stdout(Stdio::null())
            .spawn()?,
    );
    thread::sleep(Duration::from_millis(300));
    for i in 1..=3 {
        run_cmd(
            Command::new("mosquitto_pub")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &PORT.to_string(),
                    "-t",
                    "demo/orders",
                    "-q",
                    "1",
                    "-i",
                    "demo-pub",
                ])
                .args(["-m", &format!("order {i}")]),
        )?;
    }
    let _ = sub.0.wait();
    let status = capture.0.wait()?;
    let _ = std::io::stdout().flush();
    broker.stop();
    let _ = fs::remove_dir_all(&data);
    let _ = fs::remove_dir(&cgroup);
    if !status.success() {
        bail!("brokerscope capture failed: {status}");
    }
    println!("demo: done — above, each line is one reassembled piece of a Mosquitto connection");
    Ok(())
}

/// Kills the child (by its PID) when dropped, so a failed demo leaves nothing running.
struct Guard(Child);

impl Guard {
    fn stop(&mut self) {
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

fn cgroup_dir(name: &str) -> Result<PathBuf> {
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

fn spawn_in_cgroup(cmd: &mut Command, cgroup: &std::path::Path) -> Result<Child> {
    let procs = cgroup.join("cgroup.procs");
    // SAFETY: the closure only writes a file between fork and exec.
    unsafe {
        cmd.pre_exec(move || fs::write(&procs, std::process::id().to_string()));
    }
    cmd.spawn()
        .context("starting the broker (is it installed? cargo xtask setup)")
}

fn wait_for_port(port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(50));
    }
    bail!("broker did not start listening on {port} within 10 s")
}
