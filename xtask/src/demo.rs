//! `cargo xtask demo`: brokerscope capturing a real broker on this machine, start to finish.
//!
//! Starts Mosquitto on a private loopback port in a cgroup of its own, attaches
//! `brokerscope capture` to it, publishes and subscribes with mosquitto_pub/sub, prints what
//! was captured, and stops everything it started (by PID).
use std::{
    fs,
    io::Write,
    path::PathBuf,
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::{
    cargo, is_root,
    procs::{Guard, cgroup_dir, spawn_in_cgroup, wait_for_port},
    run_cmd, setup,
};

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
