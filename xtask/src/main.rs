//! Project tasks. Everything privileged, slow or environment-dependent is orchestrated here.
//!
//! - `setup`: installs what this machine lacks (nightly rust-src, bpf-linker against LLVM 22,
//!   the Debian packages the tests use); idempotent and quick when everything is present.
//! - `test`: setup, then the whole test suite (unit tests in parallel, kernel/broker tests serially).
//! - `demo`: a private Mosquitto in its own cgroup, watched by `brokerscope capture`.
mod demo;
mod setup;

use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the build and the tests need (idempotent).
    Setup,
    /// Setup, build, and run every test (kernel and broker tests need root).
    Test {
        /// Extra arguments for the test binaries (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Start a private Mosquitto and show brokerscope capturing its traffic.
    Demo,
}

fn main() -> ExitCode {
    let result = match Cli::parse().task {
        Task::Setup => setup::run(),
        Task::Test { args } => test(&args),
        Task::Demo => demo::run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn test(args: &[String]) -> Result<()> {
    setup::run()?;
    if !is_root() {
        bail!(
            "the test suite loads eBPF programs and starts brokers: run it as root (sudo -E cargo xtask test)"
        );
    }
    // Unit tests (no shared kernel state) run in parallel.
    run_cmd(
        cargo()
            .args(["test", "--workspace", "--exclude", "tests", "--"])
            .args(args),
    )?;
    // End-to-end tests share the kernel, cgroups and brokers: one at a time.
    run_cmd(
        cargo()
            .args(["test", "--package", "tests", "--", "--test-threads=1"])
            .args(args),
    )
}

pub fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

pub fn run_cmd(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

pub fn is_root() -> bool {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::geteuid() == 0 }
}
