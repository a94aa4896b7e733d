//! Preflight: can this host run the observer, and if not, what to do about it.
//!
//! [`run_checks`] backs `brokerscope check`; [`ensure_tracefs`] and [`require_privileges`] are
//! used by the loader itself so a failure there says the same thing `check` would.
use std::{
    fs,
    path::{Path, PathBuf},
};

use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{is_map_supported, is_program_supported},
};

use super::{CaptureError, KernelConfig, Programs, procfs::ProcFs, targets::CgroupTree};

/// Result of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Pass,
    /// Works, but something is worth knowing (an optional feature is missing).
    Warn,
    Fail,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    /// What to do when it is not a pass.
    pub fix: Option<String>,
}

fn check(
    name: &'static str,
    status: Status,
    detail: impl Into<String>,
    fix: Option<&str>,
) -> Check {
    Check {
        name,
        status,
        detail: detail.into(),
        fix: fix.map(str::to_owned),
    }
}

/// Capability numbers from linux/capability.h.
const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_SYS_RESOURCE: u32 = 24;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Effective capabilities of this process (from /proc/self/status).
pub fn effective_caps() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

fn has(caps: u64, cap: u32) -> bool {
    caps & (1u64 << cap) != 0
}

/// Capabilities the observer cannot work without that this process lacks.
pub fn missing_capabilities(caps: u64) -> Vec<&'static str> {
    let admin = has(caps, CAP_SYS_ADMIN);
    let mut missing = Vec::new();
    if !(has(caps, CAP_BPF) || admin) {
        missing.push("CAP_BPF");
    }
    if !(has(caps, CAP_PERFMON) || admin) {
        missing.push("CAP_PERFMON");
    }
    if !has(caps, CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    missing
}

/// Fails with a message naming each missing capability.
pub fn require_privileges() -> Result<(), CaptureError> {
    let missing = missing_capabilities(effective_caps());
    if missing.is_empty() {
        return Ok(());
    }
    Err(CaptureError::Privileges(format!(
        "this process lacks {}; run as root (sudo brokerscope …) or grant them \
         (setcap cap_bpf,cap_perfmon,cap_net_admin,cap_sys_resource,cap_sys_ptrace,cap_dac_read_search+ep brokerscope)",
        missing.join(", ")
    )))
}

/// Mounts tracefs at /sys/kernel/tracing when no tracefs is mounted (tracepoints need it).
pub fn ensure_tracefs() -> Result<PathBuf, CaptureError> {
    for dir in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if Path::new(dir).join("events").is_dir() {
            return Ok(PathBuf::from(dir));
        }
    }
    let target = c"/sys/kernel/tracing";
    // SAFETY: constant NUL-terminated strings.
    let rc = unsafe {
        libc::mount(
            c"tracefs".as_ptr(),
            target.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(CaptureError::NoTracefs(std::io::Error::last_os_error()));
    }
    Ok(PathBuf::from("/sys/kernel/tracing"))
}

fn kernel_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// (major, minor) of a release string such as "6.18.44-fc".
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Runs every check. Never fails: each problem becomes a row.
pub fn run_checks() -> Vec<Check> {
    let mut checks = Vec::new();
    let release = kernel_release();
    checks.push(match parse_release(&release) {
        Some(v) if v >= (5, 8) => check("kernel", Status::Pass, format!("Linux {release}"), None),
        Some(_) => check(
            "kernel",
            Status::Fail,
            format!("Linux {release}: ring buffers need 5.8 or newer"),
            Some("upgrade the kernel to 5.8+ (5.10+ recommended)"),
        ),
        None => check(
            "kernel",
            Status::Warn,
            format!("cannot parse kernel release {release:?}"),
            None,
        ),
    });

    let btf = Path::new("/sys/kernel/btf/vmlinux").exists();
    checks.push(if btf {
        check("btf", Status::Pass, "/sys/kernel/btf/vmlinux present", None)
    } else {
        check(
            "btf",
            Status::Warn,
            "no /sys/kernel/btf/vmlinux",
            Some("not needed by the current programs; future CO-RE programs need CONFIG_DEBUG_INFO_BTF=y"),
        )
    });

    let caps = effective_caps();
    let missing = missing_capabilities(caps);
    checks.push(if missing.is_empty() {
        check("privileges", Status::Pass, format!("effective capabilities {caps:#x}"), None)
    } else {
        check(
            "privileges",
            Status::Fail,
            format!("missing {}", missing.join(", ")),
            Some("run as root, or grant CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN (see README: Privileges)"),
        )
    });
    let optional: Vec<&str> = [
        (CAP_SYS_PTRACE, "CAP_SYS_PTRACE"),
        (CAP_DAC_READ_SEARCH, "CAP_DAC_READ_SEARCH"),
        (CAP_SYS_RESOURCE, "CAP_SYS_RESOURCE"),
    ]
    .into_iter()
    .filter(|(c, _)| !has(caps, *c))
    .map(|(_, n)| n)
    .collect();
    checks.push(if optional.is_empty() {
        check(
            "process access",
            Status::Pass,
            "can read other processes' fds and sockets",
            None,
        )
    } else {
        check(
            "process access",
            Status::Warn,
            format!("missing {}", optional.join(", ")),
            Some("without them connections of other users' processes cannot be tied to a pid/fd"),
        )
    });

    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) };
    let memcg_accounting = parse_release(&release).is_some_and(|v| v >= (5, 11));
    checks.push(
        if limit.rlim_cur == libc::RLIM_INFINITY || memcg_accounting {
            let cur = if limit.rlim_cur == libc::RLIM_INFINITY {
                "unlimited".to_owned()
            } else {
                format!("{} bytes", limit.rlim_cur)
            };
            check(
                "memlock",
                Status::Pass,
                format!(
                    "RLIMIT_MEMLOCK {cur}{}",
                    if memcg_accounting {
                        " (kernel accounts BPF memory to the cgroup)"
                    } else {
                        ""
                    }
                ),
                None,
            )
        } else if has(caps, CAP_SYS_RESOURCE) {
            check(
                "memlock",
                Status::Pass,
                format!("RLIMIT_MEMLOCK {} bytes; raised at start", limit.rlim_cur),
                None,
            )
        } else {
            check(
                "memlock",
                Status::Fail,
                format!(
                    "RLIMIT_MEMLOCK {} bytes and no CAP_SYS_RESOURCE",
                    limit.rlim_cur
                ),
                Some("ulimit -l unlimited, or grant CAP_SYS_RESOURCE"),
            )
        },
    );

    let proc = ProcFs::default();
    let cgroup2 = proc.cgroup2_mount().ok().flatten();
    checks.push(match &cgroup2 {
        Some(path) => check("cgroup v2", Status::Pass, format!("mounted at {}", path.display()), None),
        None => check(
            "cgroup v2",
            Status::Fail,
            "no cgroup2 filesystem mounted",
            Some("mount -t cgroup2 none /sys/fs/cgroup (or boot with systemd.unified_cgroup_hierarchy=1)"),
        ),
    });

    // Where the brokers' cgroups are looked up: in a container, the host's tree must be mounted.
    let configured = std::env::var_os("BROKERSCOPE_CGROUP_ROOT").map(PathBuf::from);
    if cgroup2.is_some() {
        checks.push(
            match CgroupTree::detect(&proc, configured.as_deref(), std::process::id()) {
                Ok(t) if t.translates() => check(
                    "cgroup tree",
                    Status::Pass,
                    format!(
                        "host tree at {} (private cgroup namespace: paths are translated)",
                        t.mount.display()
                    ),
                    None,
                ),
                Ok(t) => check("cgroup tree", Status::Pass, format!("{}", t.mount.display()), None),
                Err(e) => check(
                    "cgroup tree",
                    Status::Fail,
                    e.to_string(),
                    Some("set BROKERSCOPE_CGROUP_ROOT (or --cgroup-root for run) to the host's cgroup2 mount"),
                ),
            },
        );
    }

    checks.push(match ensure_tracefs() {
        Ok(path) => check("tracefs", Status::Pass, format!("{}", path.display()), None),
        Err(e) => check(
            "tracefs",
            Status::Fail,
            e.to_string(),
            Some("mount -t tracefs tracefs /sys/kernel/tracing"),
        ),
    });

    for (name, prog, required) in [
        ("program type cgroup_skb", ProgramType::CgroupSkb, true),
        ("program type sock_ops", ProgramType::SockOps, true),
        ("program type tracepoint", ProgramType::TracePoint, true),
    ] {
        checks.push(match is_program_supported(prog) {
            Ok(true) => check(name, Status::Pass, "loads", None),
            Ok(false) => check(
                name,
                if required { Status::Fail } else { Status::Warn },
                "not supported by this kernel",
                Some("needs CONFIG_BPF_SYSCALL, CONFIG_CGROUP_BPF, CONFIG_BPF_EVENTS"),
            ),
            Err(e) => check(
                name,
                Status::Fail,
                format!("probe failed: {e}"),
                Some("run as root"),
            ),
        });
    }
    checks.push(match is_map_supported(MapType::RingBuf) {
        Ok(true) => check("map type ringbuf", Status::Pass, "supported", None),
        Ok(false) => check(
            "map type ringbuf",
            Status::Fail,
            "not supported",
            Some("needs Linux 5.8+"),
        ),
        Err(e) => check(
            "map type ringbuf",
            Status::Fail,
            format!("probe failed: {e}"),
            Some("run as root"),
        ),
    });

    let uprobe = Path::new("/sys/bus/event_source/devices/uprobe/type").exists();
    checks.push(if uprobe {
        check(
            "uprobes",
            Status::Pass,
            "uprobe PMU present (for TLS plaintext capture later)",
            None,
        )
    } else {
        check(
            "uprobes",
            Status::Warn,
            "no uprobe PMU",
            Some("TLS plaintext capture needs CONFIG_UPROBE_EVENTS"),
        )
    });
    let kprobe = Path::new("/sys/bus/event_source/devices/kprobe/type").exists();
    checks.push(check(
        "kprobes",
        if kprobe { Status::Pass } else { Status::Warn },
        if kprobe {
            "available (not used)"
        } else {
            "not available (not used: capture is socket-level)"
        },
        None,
    ));

    // The real test: load our own object and attach every program to a scratch cgroup.
    checks.push(match (&cgroup2, missing.is_empty()) {
        (Some(root), true) => attach_probe(root),
        _ => check(
            "attach",
            Status::Fail,
            "skipped: needs cgroup v2 and privileges",
            Some("fix the rows above"),
        ),
    });
    checks
}

fn attach_probe(cgroup_root: &Path) -> Check {
    let scratch = cgroup_root.join(format!("brokerscope-check-{}", std::process::id()));
    let result = (|| -> Result<(), CaptureError> {
        fs::create_dir(&scratch).map_err(|e| CaptureError::Cgroup {
            path: scratch.clone(),
            source: e,
        })?;
        let mut programs = Programs::load(KernelConfig {
            ring_bytes: 1 << 16,
            ..Default::default()
        })?;
        programs.attach_cgroup(&scratch)?;
        drop(programs);
        Ok(())
    })();
    let _ = fs::remove_dir(&scratch);
    match result {
        Ok(()) => check(
            "attach",
            Status::Pass,
            "cgroup_skb ingress+egress, sock_ops, sched tracepoints loaded and attached",
            None,
        ),
        Err(e) => check("attach", Status::Fail, e.to_string(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_parsing() {
        assert_eq!(parse_release("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(parse_release("5.4.0-150-generic"), Some((5, 4)));
        assert_eq!(parse_release("garbage"), None);
    }

    #[test]
    fn capabilities_named_when_missing() {
        assert_eq!(
            missing_capabilities(0),
            vec!["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"]
        );
        let admin = (1 << CAP_SYS_ADMIN) | (1 << CAP_NET_ADMIN);
        assert!(missing_capabilities(admin).is_empty());
        let bpf_only = 1 << CAP_BPF;
        assert_eq!(
            missing_capabilities(bpf_only),
            vec!["CAP_PERFMON", "CAP_NET_ADMIN"]
        );
    }
}
