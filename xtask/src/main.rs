//! Project tasks. Everything privileged, slow or environment-dependent is orchestrated here.
//!
//! - `setup`: installs what this machine lacks (nightly rust-src, bpf-linker against LLVM 22,
//!   the Debian packages the tests use); idempotent and quick when everything is present.
//! - `test`: setup, then the whole test suite (unit tests in parallel, kernel/broker tests serially).
//! - `demo`: a private Mosquitto in its own cgroup, watched by `brokerscope capture`.
//! - `image`: the container image's runtime stage, built with buildah from a local static binary.
mod bench;
mod bench_load;
mod bench_pipe;
mod demo;
mod image;
mod procs;
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
    /// Build the container image (deploy/container/Containerfile's runtime stage) with buildah
    /// from a static musl binary built here.
    Image {
        /// Image name and tag.
        #[arg(long, default_value = concat!("localhost/brokerscope:", env!("CARGO_PKG_VERSION")))]
        tag: String,
        /// Use this static binary instead of building one.
        #[arg(long)]
        binary: Option<std::path::PathBuf>,
        /// A private buildah store (vfs driver) instead of the default one.
        #[arg(long)]
        root: Option<std::path::PathBuf>,
    },
    /// Benchmarks (run as root).
    Bench {
        #[command(subcommand)]
        bench: Bench,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// Broker throughput and CPU with and without the observer, interleaved rounds.
    Overhead {
        #[arg(long, default_value_t = 200_000)]
        messages: u32,
        #[arg(long, default_value_t = 5)]
        rounds: u32,
        #[arg(long, default_value_t = 64)]
        payload: usize,
        /// What runs in the observed rounds: `capture` (kernel capture and reassembly only) or
        /// `run` (the daemon: capture, decode, correlation, metrics).
        #[arg(long, default_value = "capture", value_parser = ["capture", "run"])]
        mode: String,
        /// Drive this broker with brokerscope-loadgen (MQTT QoS 1, NATS, AMQP with confirms)
        /// and observe with `brokerscope run`, reporting throughput and p50/p99 latency
        /// ratios; without it, the Mosquitto + mosquitto_pub bench above.
        #[arg(long, value_parser = ["mosquitto", "nats", "rabbitmq"])]
        broker: Option<String>,
        /// With --broker: saturation, half (50% of saturation), or both in turn.
        #[arg(long, default_value = "both", value_parser = ["saturation", "half", "both"])]
        load: String,
        /// With --broker: unconfirmed messages the publisher may have in flight.
        #[arg(long, default_value_t = 1000)]
        window: u32,
    },
    /// Events per second the observer sustains without kernel losses, and its CPU per event.
    Pipeline {
        /// Offered MQTT QoS 0 publishes per second, one step each.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "25000,50000,100000,200000,400000"
        )]
        rates: Vec<u32>,
        /// Seconds per step.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        #[arg(long, default_value_t = 16 << 20)]
        ring_size: u64,
        /// Publisher connections sharing the offered rate.
        #[arg(long, default_value_t = 8)]
        connections: u32,
        /// Also write `key value` lines here.
        #[arg(long)]
        report: Option<std::path::PathBuf>,
    },
    /// Kernel cost per captured packet, per non-target packet, and for other cgroups.
    Kernel {
        #[arg(long, default_value_t = 5)]
        rounds: u32,
        /// Round trips per loop.
        #[arg(long, default_value_t = 20_000)]
        iterations: u32,
        #[arg(long)]
        report: Option<std::path::PathBuf>,
    },
    /// Observer RSS with many open connections and under connection churn.
    Memory {
        #[arg(long, default_value_t = 10_000)]
        connections: u32,
        #[arg(long, default_value_t = 100_000)]
        churn: u32,
        #[arg(long, default_value_t = 1_000)]
        batch: u32,
        #[arg(long)]
        report: Option<std::path::PathBuf>,
    },
    /// (internal) TCP echo server the kernel benchmark starts in a cgroup.
    #[command(hide = true)]
    Echo {
        #[arg(long = "port", required = true)]
        ports: Vec<u16>,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().task {
        Task::Setup => setup::run(),
        Task::Test { args } => test(&args),
        Task::Demo => demo::run(),
        Task::Image { tag, binary, root } => image::run(&image::ImageArgs { tag, binary, root }),
        Task::Bench {
            bench:
                Bench::Overhead {
                    messages,
                    rounds,
                    payload,
                    mode: _,
                    broker: Some(broker),
                    load,
                    window,
                },
        } => bench_load::overhead(&bench_load::LoadArgs {
            broker,
            load,
            rounds,
            messages,
            payload,
            window,
        }),
        Task::Bench {
            bench:
                Bench::Overhead {
                    messages,
                    rounds,
                    payload,
                    mode,
                    broker: None,
                    ..
                },
        } => bench::overhead(&bench::OverheadArgs {
            messages,
            rounds,
            payload,
            daemon: mode == "run",
        }),
        Task::Bench {
            bench:
                Bench::Pipeline {
                    rates,
                    seconds,
                    ring_size,
                    connections,
                    report,
                },
        } => bench_pipe::pipeline(&bench_pipe::PipelineArgs {
            rates,
            seconds,
            ring_size,
            connections,
            report,
        }),
        Task::Bench {
            bench:
                Bench::Kernel {
                    rounds,
                    iterations,
                    report,
                },
        } => bench_pipe::kernel(&bench_pipe::KernelArgs {
            rounds,
            iterations,
            report,
        }),
        Task::Bench {
            bench:
                Bench::Memory {
                    connections,
                    churn,
                    batch,
                    report,
                },
        } => bench_pipe::memory(&bench_pipe::MemoryArgs {
            connections,
            churn,
            batch,
            report,
        }),
        Task::Bench {
            bench: Bench::Echo { ports },
        } => bench_pipe::echo(&ports),
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
    let mut totals = TestTotals::default();
    // Unit tests (no shared kernel state) run in parallel.
    let unit = run_tests(
        cargo()
            .args(["test", "--workspace", "--exclude", "tests", "--"])
            .args(args),
        &mut totals,
    );
    // End-to-end tests share the kernel, cgroups and brokers: one at a time. The daemon they
    // start is a release build, as users run it (a debug build's decoding would compete with
    // the broker and clients for the CPU and distort latencies).
    let daemon = procs::release_binary("the test suite")?;
    let end_to_end = run_tests(
        cargo()
            .args(["test", "--package", "tests", "--", "--test-threads=1"])
            .args(args)
            .env("BROKERSCOPE_BIN", daemon),
        &mut totals,
    );
    println!(
        "\nall test binaries: {} passed, {} failed, {} ignored",
        totals.passed, totals.failed, totals.ignored
    );
    unit?;
    end_to_end
}

#[derive(Default)]
struct TestTotals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

/// Runs a `cargo test`, echoing its output and adding up its "test result:" lines.
fn run_tests(cmd: &mut Command, totals: &mut TestTotals) -> Result<()> {
    use std::io::{BufRead, BufReader};
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let stdout = child.stdout.take().expect("piped stdout");
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let count = |word: &str| -> u64 {
                rest.split(';')
                    .find_map(|part| part.trim().strip_suffix(word))
                    .and_then(|n| n.trim().rsplit(' ').next()?.parse().ok())
                    .unwrap_or(0)
            };
            totals.passed += count(" passed");
            totals.failed += count(" failed");
            totals.ignored += count(" ignored");
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
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
