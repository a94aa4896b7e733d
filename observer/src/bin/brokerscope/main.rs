//! The `brokerscope` command line: one file per subcommand.
mod capture;
mod check;
mod format;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use observer::capture::TargetSpec;

#[derive(Parser)]
#[command(
    name = "brokerscope",
    version,
    about = "Zero-instrumentation eBPF observer for message brokers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Preflight: kernel, BTF, cgroup v2, program types, privileges — and what to do.
    Check,
    /// Print each reassembled chunk of the brokers' TCP streams (the capture layer's debug view).
    Capture(capture::CaptureArgs),
}

/// Which processes to watch (selectors add up).
#[derive(Args, Clone, Debug)]
pub struct TargetArgs {
    /// Process id of a broker (repeatable).
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Process name (comm or executable name, e.g. beam.smp, mosquitto); new PIDs are followed.
    #[arg(long = "process", value_name = "NAME")]
    pub names: Vec<String>,
    /// The process listening on this TCP port; only this port is captured (repeatable).
    #[arg(long = "port", value_name = "PORT")]
    pub ports: Vec<u16>,
}

impl TargetArgs {
    pub fn spec(&self) -> TargetSpec {
        TargetSpec {
            pids: self.pids.clone(),
            names: self.names.clone(),
            ports: self.ports.clone(),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check => check::run(),
        Command::Capture(args) => capture::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("brokerscope: {e:#}");
            let usage = e
                .downcast_ref::<observer::capture::CaptureError>()
                .is_some_and(|e| e.is_usage());
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}
