//! Kernel capture: everything between the broker's sockets and ordered byte streams.
//!
//! - `programs`: load the embedded eBPF object, attach it, drive its maps.
//! - `records`: typed views of the raw ring records.
//! - `procfs`: /proc — processes, their cgroups, sockets and listening ports.
//! - `sockdiag`: the same TCP socket facts for our own network namespace straight from the
//!   kernel (NETLINK_SOCK_DIAG), much cheaper than /proc/net/tcp; `procfs` picks one.
//! - `discover`: which processes are brokers (process rules, well-known ports).
//! - `targets`: what the user asked for (`--pid`, `--process`, `--port`, discovery) resolved to
//!   processes.
//! - `container`: the container id and Kubernetes pod of a process, from /proc.
//! - `connections`: socket cookie → connection (pid, fd, addresses, times) and its two streams.
//! - `session`: the loop that reads the ring and turns records into [`StreamEvent`]s.
//! - `preflight`: privilege and kernel-feature checks (`brokerscope check`).
pub mod connections;
pub mod container;
pub mod discover;
pub mod preflight;
pub mod procfs;
pub mod programs;
pub mod records;
pub mod session;
pub mod sockdiag;
pub mod targets;

use std::path::PathBuf;

pub use connections::{ConnId, Connection, Direction};
pub use programs::{KernelConfig, KernelCounters, Programs};
pub use session::{CaptureSession, SessionStats, StreamEvent, StreamSink};
pub use targets::TargetSpec;

/// Why capture could not start or continue. Every message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(
        "this build has no eBPF object (built with AYA_BUILD_SKIP); rebuild without it: cargo build"
    )]
    NoObject,
    #[error("{what}: {source}{hint}", hint = permission_hint(.source))]
    Load {
        what: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("attaching {program} to {target}: {source}{hint}", hint = permission_hint(.source))]
    Attach {
        program: String,
        target: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("map {map}: {source}")]
    Map {
        map: String,
        source: aya::maps::MapError,
    },
    #[error("the eBPF object has no {0}; it does not match this build — rebuild")]
    MissingInObject(String),
    #[error("cannot open cgroup {}: {source}; is cgroup v2 mounted and the process still alive?", path.display())]
    Cgroup {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "no cgroup v2 hierarchy is mounted; mount one (mount -t cgroup2 none /sys/fs/cgroup) — `brokerscope check` shows what is available"
    )]
    NoCgroup2,
    #[error(
        "tracefs is not mounted and mounting it at /sys/kernel/tracing failed: {0}; mount it (mount -t tracefs tracefs /sys/kernel/tracing)"
    )]
    NoTracefs(std::io::Error),
    #[error("missing privileges: {0}")]
    Privileges(String),
    #[error("{0}")]
    Target(#[from] targets::TargetError),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Proc(#[from] procfs::ProcError),
    #[error("ring buffer: {0}")]
    Ring(std::io::Error),
}

impl CaptureError {
    pub(crate) fn load(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Load {
            what: what.to_owned(),
            source: Box::new(e),
        }
    }
    pub(crate) fn attach(
        program: &str,
        target: &str,
        e: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Attach {
            program: program.to_owned(),
            target: target.to_owned(),
            source: Box::new(e),
        }
    }
    pub(crate) fn map(map: &str, source: aya::maps::MapError) -> Self {
        Self::Map {
            map: map.to_owned(),
            source,
        }
    }
    /// Errors the user causes (bad selector, bad flags) as opposed to environment failures.
    pub fn is_usage(&self) -> bool {
        matches!(self, Self::Target(_) | Self::Config(_))
    }
}

fn permission_hint(e: &impl std::fmt::Debug) -> &'static str {
    let text = format!("{e:?}");
    if text.contains("EPERM")
        || text.contains("PermissionDenied")
        || text.contains("Operation not permitted")
    {
        " — run as root or grant CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (`brokerscope check` lists what is missing)"
    } else {
        ""
    }
}
