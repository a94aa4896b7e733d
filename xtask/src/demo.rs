//! `cargo xtask demo`: brokerscope capturing a real broker on this machine, start to finish.
//!
//! Starts Mosquitto on a private loopback port in a cgroup of its own, attaches
//! `brokerscope capture` to it, publishes and subscribes with mosquitto_pub/sub, prints what
//! was captured, and stops everything it started (by PID).
use std::{
    io::Write,
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::{
    procs::{Guard, PrivateMosquitto, release_binary},
    run_cmd,
};

const PORT: u16 = 18831;

pub fn run() -> Result<()> {
    let binary = release_binary("the demo")?;
    let broker = PrivateMosquitto::start("brokerscope-demo", PORT)?;
    println!(
        "demo: mosquitto pid {} on 127.0.0.1:{PORT} in cgroup {}",
        broker.pid(),
        broker.cgroup.display()
    );

    let mut capture = Guard(
        Command::new(&binary)
            .args([
                "capture",
                "--pid",
                &broker.pid().to_string(),
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
    drop(broker);
    if !status.success() {
        bail!("brokerscope capture failed: {status}");
    }
    println!("demo: done — above, each line is one reassembled piece of a Mosquitto connection");
    Ok(())
}
