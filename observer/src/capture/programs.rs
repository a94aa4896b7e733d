//! Loading the embedded kernel object, attaching its programs, and the maps userspace drives.
//!
//! One [`Programs`] per observer: the tracepoints attach once, the cgroup programs (cgroup_skb
//! ingress/egress and sock_ops) once per target cgroup, always as bpf links, which the kernel
//! attaches in multi-attach mode (other agents' programs keep running) and detaches when the
//! observer exits, even on SIGKILL.
use std::{
    collections::HashMap as StdHashMap,
    fs::File,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, SockOps, TracePoint,
        cgroup_skb::CgroupSkbLink, sock_ops::SockOpsLink,
    },
};
use observer_common::{
    Counter, DEFAULT_CAPTURE_CAP, LostRange, MAX_CAPTURE_CAP, StreamKey, globals, maps,
};

use super::CaptureError;

/// The kernel object built by observer/build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/observer"));

/// What the kernel side is asked to do.
#[derive(Clone, Debug)]
pub struct KernelConfig {
    /// Ring buffer size in bytes (a power of two, at least one page).
    pub ring_bytes: u32,
    /// Payload bytes copied per packet at most (≤ 512 KiB).
    pub capture_cap: u32,
    /// Also capture connections the target processes open themselves.
    pub track_outgoing: bool,
    /// Bytes waiting in the ring at which the kernel wakes the reader; below it the reader finds
    /// records on its drain timer. None: [`KernelConfig::DEFAULT_WAKE_FRACTION`] of the ring.
    pub ring_wake_bytes: Option<u32>,
}

impl Default for KernelConfig {
    fn default() -> Self {
        Self {
            ring_bytes: 16 << 20,
            capture_cap: DEFAULT_CAPTURE_CAP,
            track_outgoing: false,
            ring_wake_bytes: None,
        }
    }
}

impl KernelConfig {
    /// Default wake threshold: this fraction of the ring, so the reader is woken long before
    /// the ring fills even if its timer is late.
    pub const DEFAULT_WAKE_FRACTION: u32 = 16;

    /// The wake threshold the kernel programs use.
    pub fn wake_bytes(&self) -> u32 {
        self.ring_wake_bytes
            .unwrap_or(self.ring_bytes / Self::DEFAULT_WAKE_FRACTION)
            .max(1)
    }

    pub fn validate(&self) -> Result<(), CaptureError> {
        let page = 4096;
        if self.ring_bytes < page || !self.ring_bytes.is_power_of_two() {
            return Err(CaptureError::Config(format!(
                "ring size {} bytes is invalid: use a power of two of at least {page} bytes (e.g. 16777216)",
                self.ring_bytes
            )));
        }
        if self.capture_cap == 0 || self.capture_cap > MAX_CAPTURE_CAP {
            return Err(CaptureError::Config(format!(
                "capture cap {} bytes is invalid: use 1..={MAX_CAPTURE_CAP}",
                self.capture_cap
            )));
        }
        if let Some(wake) = self.ring_wake_bytes
            && (wake == 0 || wake > self.ring_bytes)
        {
            return Err(CaptureError::Config(format!(
                "ring wake-up threshold {wake} bytes is invalid: use 1..={} (the ring size)",
                self.ring_bytes
            )));
        }
        Ok(())
    }
}

struct CgroupLinks {
    _ingress: CgroupSkbLink,
    _egress: CgroupSkbLink,
    _sock_ops: SockOpsLink,
}

/// Loaded programs, their attachments and the maps userspace reads and writes.
pub struct Programs {
    ebpf: Ebpf,
    pub(crate) ring: Option<RingBuf<MapData>>,
    ports: Array<MapData, u32>,
    pids: HashMap<MapData, u32, u32>,
    comms: HashMap<MapData, [u8; 16], u32>,
    counters: PerCpuArray<MapData, u64>,
    lost: HashMap<MapData, StreamKey, LostRange>,
    cgroups: StdHashMap<PathBuf, CgroupLinks>,
    config: KernelConfig,
}

impl Programs {
    /// Loads the object and attaches the process tracepoints. Cgroups are attached separately.
    pub fn load(config: KernelConfig) -> Result<Self, CaptureError> {
        config.validate()?;
        if OBJECT.is_empty() {
            return Err(CaptureError::NoObject);
        }
        raise_memlock();
        let track = u32::from(config.track_outgoing);
        let wake = config.wake_bytes();
        let mut ebpf = EbpfLoader::new()
            .override_global(globals::CAPTURE_CAP, &config.capture_cap, true)
            .override_global(globals::TRACK_OUTGOING, &track, true)
            .override_global(globals::RING_WAKE_BYTES, &wake, true)
            .map_max_entries(maps::EVENTS, config.ring_bytes)
            .load(OBJECT)
            .map_err(|e| CaptureError::load("loading the eBPF object", e))?;

        for name in ["capture_ingress", "capture_egress"] {
            let prog: &mut CgroupSkb = program(&mut ebpf, name)?;
            prog.load().map_err(|e| CaptureError::load(name, e))?;
        }
        let sock_ops: &mut SockOps = program(&mut ebpf, "lifecycle")?;
        sock_ops
            .load()
            .map_err(|e| CaptureError::load("lifecycle", e))?;

        super::preflight::ensure_tracefs()?;
        for (name, event) in [
            ("process_exec", "sched_process_exec"),
            ("process_exit", "sched_process_exit"),
        ] {
            let prog: &mut TracePoint = program(&mut ebpf, name)?;
            prog.load().map_err(|e| CaptureError::load(name, e))?;
            prog.attach("sched", event)
                .map_err(|e| CaptureError::attach(name, "sched", e))?;
        }

        let ring = RingBuf::try_from(take_map(&mut ebpf, maps::EVENTS)?)
            .map_err(|e| CaptureError::map(maps::EVENTS, e))?;
        let ports = Array::try_from(take_map(&mut ebpf, maps::TARGET_PORTS)?)
            .map_err(|e| CaptureError::map(maps::TARGET_PORTS, e))?;
        let pids = HashMap::try_from(take_map(&mut ebpf, maps::TARGET_PIDS)?)
            .map_err(|e| CaptureError::map(maps::TARGET_PIDS, e))?;
        let comms = HashMap::try_from(take_map(&mut ebpf, maps::TARGET_COMMS)?)
            .map_err(|e| CaptureError::map(maps::TARGET_COMMS, e))?;
        let counters = PerCpuArray::try_from(take_map(&mut ebpf, maps::COUNTERS)?)
            .map_err(|e| CaptureError::map(maps::COUNTERS, e))?;
        let lost = HashMap::try_from(take_map(&mut ebpf, maps::LOST_RANGES)?)
            .map_err(|e| CaptureError::map(maps::LOST_RANGES, e))?;
        Ok(Self {
            ebpf,
            ring: Some(ring),
            ports,
            pids,
            comms,
            counters,
            lost,
            cgroups: StdHashMap::new(),
            config,
        })
    }

    pub fn config(&self) -> &KernelConfig {
        &self.config
    }

    /// Attaches the socket programs to a cgroup v2 directory (idempotent).
    pub fn attach_cgroup(&mut self, dir: &Path) -> Result<(), CaptureError> {
        if self.cgroups.contains_key(dir) {
            return Ok(());
        }
        let what = format!("cgroup {}", dir.display());
        // aya creates bpf links here (kernel ≥ 5.7). Link attachment is always multi-attach, and
        // the kernel rejects the BPF_F_ALLOW_MULTI flag on links with EINVAL, so pass no flag.
        let mode = CgroupAttachMode::Single;
        let cgroup = File::open(dir).map_err(|e| CaptureError::Cgroup {
            path: dir.to_owned(),
            source: e,
        })?;
        let mut skb_link =
            |name: &str, kind: CgroupSkbAttachType| -> Result<CgroupSkbLink, CaptureError> {
                let prog: &mut CgroupSkb = program(&mut self.ebpf, name)?;
                let id = prog
                    .attach(&cgroup, kind, mode)
                    .map_err(|e| CaptureError::attach(name, &what, e))?;
                prog.take_link(id)
                    .map_err(|e| CaptureError::attach(name, &what, e))
            };
        let ingress = skb_link("capture_ingress", CgroupSkbAttachType::Ingress)?;
        let egress = skb_link("capture_egress", CgroupSkbAttachType::Egress)?;
        let sock_ops: &mut SockOps = program(&mut self.ebpf, "lifecycle")?;
        let id = sock_ops
            .attach(&cgroup, mode)
            .map_err(|e| CaptureError::attach("lifecycle", &what, e))?;
        let sock_ops = sock_ops
            .take_link(id)
            .map_err(|e| CaptureError::attach("lifecycle", &what, e))?;
        self.cgroups.insert(
            dir.to_owned(),
            CgroupLinks {
                _ingress: ingress,
                _egress: egress,
                _sock_ops: sock_ops,
            },
        );
        Ok(())
    }

    /// Detaches from a cgroup no target lives in any more.
    pub fn detach_cgroup(&mut self, dir: &Path) {
        self.cgroups.remove(dir);
    }

    pub fn attached_cgroups(&self) -> impl Iterator<Item = &Path> {
        self.cgroups.keys().map(PathBuf::as_path)
    }

    pub fn set_port(&mut self, port: u16, on: bool) -> Result<(), CaptureError> {
        self.ports
            .set(u32::from(port), u32::from(on), 0)
            .map_err(|e| CaptureError::map(maps::TARGET_PORTS, e))
    }

    pub fn port_enabled(&self, port: u16) -> bool {
        matches!(self.ports.get(&u32::from(port), 0), Ok(v) if v != 0)
    }

    /// Marks a process as a target with [`observer_common::pid_flags`]; 0 removes it.
    pub fn set_pid(&mut self, pid: u32, flags: u32) -> Result<(), CaptureError> {
        let result = if flags != 0 {
            self.pids.insert(pid, flags, 0)
        } else {
            self.pids.remove(&pid)
        };
        match result {
            Ok(()) => Ok(()),
            Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(CaptureError::map(maps::TARGET_PIDS, e)),
        }
    }

    /// Process names whose exec the kernel reports (comm is at most 15 bytes).
    pub fn add_comm(&mut self, name: &str) -> Result<(), CaptureError> {
        let mut key = [0u8; 16];
        let bytes = name.as_bytes();
        let n = bytes.len().min(15);
        key[..n].copy_from_slice(&bytes[..n]);
        self.comms
            .insert(key, 1, 0)
            .map_err(|e| CaptureError::map(maps::TARGET_COMMS, e))
    }

    /// Kernel counters summed over CPUs, in [`Counter::ALL`] order.
    pub fn counters(&self) -> Result<KernelCounters, CaptureError> {
        let mut out = KernelCounters::default();
        for counter in Counter::ALL {
            let values = self
                .counters
                .get(&(counter as u32), 0)
                .map_err(|e| CaptureError::map(maps::COUNTERS, e))?;
            out.values[counter as usize] = values.iter().sum();
        }
        Ok(out)
    }

    /// Takes (reads and deletes) the lost ranges the kernel recorded since the last call.
    pub fn take_lost_ranges(
        &mut self,
        out: &mut Vec<(StreamKey, LostRange)>,
    ) -> Result<(), CaptureError> {
        let keys: Vec<StreamKey> = self.lost.keys().filter_map(Result::ok).collect();
        for key in keys {
            if let Ok(range) = self.lost.get(&key, 0) {
                let _ = self.lost.remove(&key);
                out.push((key, range));
            }
        }
        Ok(())
    }
}

impl Programs {
    /// Takes the lost ranges of one connection (both directions), e.g. when it closes.
    pub fn take_lost_ranges_of(&mut self, cookie: u64, out: &mut Vec<(StreamKey, LostRange)>) {
        for egress in [0, 1] {
            let key = StreamKey {
                cookie,
                egress,
                _pad: 0,
            };
            if let Ok(range) = self.lost.get(&key, 0) {
                let _ = self.lost.remove(&key);
                out.push((key, range));
            }
        }
    }
}

/// Kernel-side counters (see [`Counter`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters {
    pub values: [u64; Counter::COUNT as usize],
}

impl KernelCounters {
    pub fn get(&self, counter: Counter) -> u64 {
        self.values[counter as usize]
    }
    pub fn iter(&self) -> impl Iterator<Item = (Counter, u64)> + '_ {
        Counter::ALL.into_iter().map(|c| (c, self.get(c)))
    }
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, CaptureError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| CaptureError::MissingInObject(name.to_owned()))?
        .try_into()
        .map_err(|e| CaptureError::load(name, e))
}

fn take_map(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map, CaptureError> {
    ebpf.take_map(name)
        .ok_or_else(|| CaptureError::MissingInObject(name.to_owned()))
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; lift it (harmless on newer ones).
fn raise_memlock() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid pointer.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wake_threshold_defaults_to_a_sixteenth_of_the_ring_and_is_validated() {
        let config = KernelConfig::default();
        assert_eq!(config.wake_bytes(), (16 << 20) / 16);
        let small = KernelConfig {
            ring_bytes: 4096,
            ..Default::default()
        };
        assert_eq!(small.wake_bytes(), 256);
        for (wake, ok) in [(1, true), (4096, true), (0, false), (8192, false)] {
            let c = KernelConfig {
                ring_bytes: 4096,
                ring_wake_bytes: Some(wake),
                ..Default::default()
            };
            assert_eq!(c.validate().is_ok(), ok, "{wake}");
            if ok {
                assert_eq!(c.wake_bytes(), wake);
            }
        }
    }
}
