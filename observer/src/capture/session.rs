//! The capture loop: ring records in, ordered per-connection byte streams out.
//!
//! [`CaptureSession`] owns the loaded programs, the resolved targets and the connection table.
//! It reads the ring in batches (records are borrowed from the ring, never copied unless a
//! stream must hold out-of-order data), feeds each chunk to its stream's reassembler and hands
//! the results to a [`StreamSink`] as [`StreamEvent`]s. Housekeeping runs every 100 ms: lost
//! ranges from the kernel become exact gaps, stalled holes time out, targets are re-resolved
//! (new PIDs, new listeners) and connection owners are filled in.
use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use observer_common::{ConnOp, ProcOp, chunk_flags, pid_flags};
use tokio::io::unix::AsyncFd;

use super::{
    CaptureError, Connection, Direction, KernelConfig, KernelCounters, Programs, TargetSpec,
    connections::Table,
    discover,
    procfs::{Lookup, ProcFs, SocketOwners},
    records::{self, Chunk, ConnRecordExt, ProcRecordExt, Record},
    targets::{CgroupTree, CgroupTreeError, Resolver, Target, TargetError},
};
use crate::stream::{GapReason, Piece, ReassemblyConfig};

/// What a sink receives. Times are wall-clock nanoseconds since the Unix epoch.
#[derive(Debug)]
pub enum StreamEvent<'a> {
    /// A new connection (accepted, connected, or first seen mid-stream).
    Opened { conn: &'a Connection, ts_ns: u64 },
    /// In-order bytes of one direction.
    Data {
        conn: &'a Connection,
        dir: Direction,
        ts_ns: u64,
        seq: u32,
        bytes: &'a [u8],
    },
    /// Bytes of one direction that will never be seen.
    Gap {
        conn: &'a Connection,
        dir: Direction,
        ts_ns: u64,
        seq: u32,
        len: u32,
        reason: GapReason,
    },
    /// One direction ended (FIN reached, RST, or connection closed).
    End {
        conn: &'a Connection,
        dir: Direction,
        ts_ns: u64,
        reset: bool,
    },
    /// The connection is gone; no more events for it.
    Closed { conn: &'a Connection, ts_ns: u64 },
    /// A process became a target (at start, or a new PID of a followed name).
    TargetAdded { target: &'a Target },
    /// A target process exited or stopped matching.
    TargetRemoved { pid: u32 },
}

/// Consumer of stream events (the `capture` printer, decoders, tests).
pub trait StreamSink {
    fn event(&mut self, event: StreamEvent<'_>);
}

impl<F: FnMut(StreamEvent<'_>)> StreamSink for F {
    fn event(&mut self, event: StreamEvent<'_>) {
        self(event)
    }
}

/// Userspace counters (kernel counters are in [`KernelCounters`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionStats {
    pub records: u64,
    pub chunk_records: u64,
    pub control_records: u64,
    /// Records that did not parse (object/build mismatch): counted, skipped.
    pub malformed_records: u64,
    pub bytes_delivered: u64,
    pub gap_bytes_lost: u64,
    pub gap_bytes_truncated: u64,
    pub gap_bytes_unknown: u64,
    pub gaps: u64,
    pub connections_opened: u64,
    pub connections_closed: u64,
    /// Chunks for connections already closed (late retransmissions).
    pub late_chunks: u64,
    pub lost_ranges: u64,
    /// Bytes captured more than once (TCP retransmissions, overlaps), dropped by reassembly;
    /// counted when a connection closes.
    pub bytes_duplicate: u64,
}

#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub kernel: KernelConfig,
    pub reassembly: ReassemblyConfig,
    /// How often targets are re-resolved (new PIDs, new listeners).
    pub refresh_interval: Duration,
    /// The host's cgroup v2 mount (`--cgroup-root`); absent: found in mountinfo
    /// ([`CgroupTree::detect`]).
    pub cgroup_root: Option<PathBuf>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            kernel: KernelConfig::default(),
            reassembly: ReassemblyConfig::default(),
            refresh_interval: Duration::from_secs(1),
            cgroup_root: None,
        }
    }
}

const HOUSEKEEPING: Duration = Duration::from_millis(100);
/// Records handled per wake-up before timers get a turn.
const BATCH: usize = 8192;
/// Drain-timer interval while drains find records. The kernel writes records without waking us
/// until `KernelConfig::wake_bytes` are waiting, so below that this timer is what reads them.
const DRAIN_BUSY: Duration = Duration::from_millis(2);
/// Drain-timer interval once it has backed off (doubling per empty drain): the longest a record
/// waits to be read when the ring is quiet, and the wake-ups per second when idle (20).
const DRAIN_IDLE: Duration = Duration::from_millis(50);
/// Tries to find a connection's owning fd before settling for the listener's pid.
const OWNER_ATTEMPTS: u8 = 5;
/// Discovery registers no comm once this many are registered: the kernel's TARGET_COMMS map
/// holds 256 (observer-ebpf/src/maps.rs), the rest is left to `--process` names.
const MAX_COMMS: usize = 128;

pub struct CaptureSession {
    /// Registered with the async reactor only while `run` runs (registration needs a runtime).
    ring: Option<RingBuf<MapData>>,
    state: State,
}

struct State {
    programs: Programs,
    resolver: Resolver,
    spec: TargetSpec,
    /// Comms in the kernel's TARGET_COMMS map (as the kernel keys them: at most 15 bytes).
    comms: BTreeSet<String>,
    targets: BTreeMap<u32, Target>,
    /// Ports currently enabled in the kernel, and ports seen missing once (removed when twice).
    ports_on: BTreeSet<u16>,
    ports_missing: BTreeSet<u16>,
    table: Table,
    owners: SocketOwners,
    owners_refreshed: Option<Instant>,
    clock_offset_ns: i128,
    capture_cap: u32,
    stats: SessionStats,
    refresh_interval: Duration,
    last_refresh: Instant,
    refresh_now: bool,
    lost: Vec<(observer_common::StreamKey, observer_common::LostRange)>,
}

impl CaptureSession {
    /// Checks privileges, loads and attaches the programs, and resolves the targets. A selector
    /// that matches nothing is an error here (exit code 2 in the CLI).
    pub fn start(spec: TargetSpec, config: SessionConfig) -> Result<Self, CaptureError> {
        // Usage errors first: they are the user's to fix whatever the privileges.
        if spec.is_empty() {
            return Err(super::targets::TargetError::Empty.into());
        }
        config.kernel.validate()?;
        super::preflight::require_privileges()?;
        let proc = ProcFs::default();
        let cgroups =
            match CgroupTree::detect(&proc, config.cgroup_root.as_deref(), std::process::id()) {
                Err(CgroupTreeError::NoCgroup2) => return Err(CaptureError::NoCgroup2),
                other => other.map_err(TargetError::from)?,
            };
        let resolver = Resolver::new(proc, cgroups);
        // Resolve before loading, so a typo fails fast with the right message.
        let initial = resolver.resolve(&spec, true)?;
        let mut programs = Programs::load(config.kernel.clone())?;
        let mut comms = BTreeSet::new();
        let discovery_comms = if spec.discover {
            discover::EXEC_COMMS
        } else {
            &[]
        };
        for name in spec
            .names
            .iter()
            .map(String::as_str)
            .chain(discovery_comms.iter().copied())
        {
            programs.add_comm(name)?;
            comms.insert(comm_key(name));
        }
        let ring = programs.ring.take().expect("ring taken once");
        let capture_cap = config.kernel.capture_cap;
        let mut state = State {
            programs,
            resolver,
            spec,
            comms,
            targets: BTreeMap::new(),
            ports_on: BTreeSet::new(),
            ports_missing: BTreeSet::new(),
            table: Table::new(config.reassembly),
            owners: SocketOwners::new(ProcFs::default()),
            owners_refreshed: None,
            clock_offset_ns: clock_offset_ns(),
            capture_cap,
            stats: SessionStats::default(),
            refresh_interval: config.refresh_interval,
            last_refresh: Instant::now(),
            refresh_now: false,
            lost: Vec::new(),
        };
        state.apply_targets(initial, &mut |_: StreamEvent<'_>| {})?;
        Ok(Self {
            ring: Some(ring),
            state,
        })
    }

    pub fn targets(&self) -> impl Iterator<Item = &Target> {
        self.state.targets.values()
    }

    pub fn stats(&self) -> &SessionStats {
        &self.state.stats
    }

    pub fn kernel_counters(&self) -> Result<KernelCounters, CaptureError> {
        self.state.programs.counters()
    }

    pub fn programs(&self) -> &Programs {
        &self.state.programs
    }

    pub fn open_connections(&self) -> usize {
        self.state.table.len()
    }

    /// Reads the ring and runs housekeeping until `stop` completes.
    pub async fn run<S: StreamSink>(
        &mut self,
        sink: &mut S,
        stop: impl Future<Output = ()>,
    ) -> Result<(), CaptureError> {
        let ring = self.ring.take().expect("ring present between runs");
        // SAFETY: the AsyncFd owns the ring, so its fd stays open while it is registered.
        let mut ring = unsafe { AsyncFd::register(ring) }.map_err(|e| {
            let (ring, error) = e.into_parts();
            self.ring = Some(ring);
            CaptureError::Ring(error)
        })?;
        let result = self.run_registered(&mut ring, sink, stop).await;
        self.ring = Some(ring.into_inner());
        result
    }

    async fn run_registered<S: StreamSink>(
        &mut self,
        ring: &mut AsyncFd<RingBuf<MapData>>,
        sink: &mut S,
        stop: impl Future<Output = ()>,
    ) -> Result<(), CaptureError> {
        let mut tick = tokio::time::interval(HOUSEKEEPING);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pacer = DrainPacer::new(DRAIN_BUSY, DRAIN_IDLE);
        let timer = tokio::time::sleep(pacer.interval());
        tokio::pin!(stop, timer);
        loop {
            tokio::select! {
                _ = &mut stop => return Ok(()),
                // Forced wake-ups: the kernel found at least `wake_bytes` waiting.
                guard = ring.readable_mut() => {
                    let mut guard = guard.map_err(CaptureError::Ring)?;
                    let drained = drain(guard.get_inner_mut(), &mut self.state, sink, BATCH);
                    if drained < BATCH {
                        guard.clear_ready();
                    }
                    pacer.woken();
                    timer.as_mut().reset(tokio::time::Instant::now() + pacer.interval());
                }
                // Everything below the threshold: records written without a wake-up.
                _ = &mut timer => {
                    let drained = drain(ring.get_mut(), &mut self.state, sink, BATCH);
                    pacer.drained(drained);
                    // A full batch: more is waiting; come back at once, after the others' turn.
                    let next = if drained == BATCH { Duration::ZERO } else { pacer.interval() };
                    timer.as_mut().reset(tokio::time::Instant::now() + next);
                }
                _ = tick.tick() => housekeeping(ring.get_mut(), &mut self.state, sink)?,
            }
        }
    }

    /// Processes everything in the ring now; returns the number of records read.
    pub fn drain_now<S: StreamSink>(&mut self, sink: &mut S) -> usize {
        drain(
            self.ring.as_mut().expect("not running"),
            &mut self.state,
            sink,
            usize::MAX,
        )
    }

    /// Lost ranges → gaps, hole timeouts, target refresh, owner lookups.
    pub fn housekeeping<S: StreamSink>(&mut self, sink: &mut S) -> Result<(), CaptureError> {
        housekeeping(
            self.ring.as_mut().expect("not running"),
            &mut self.state,
            sink,
        )
    }

    /// Waits until every record the kernel reports as written has been read (or `timeout`),
    /// then applies lost ranges. For tests and orderly shutdown.
    pub fn catch_up<S: StreamSink>(
        &mut self,
        sink: &mut S,
        timeout: Duration,
    ) -> Result<bool, CaptureError> {
        let deadline = Instant::now() + timeout;
        loop {
            let counters = self.state.programs.counters()?;
            let written = counters.get(observer_common::Counter::ChunksEmitted)
                + counters.get(observer_common::Counter::ControlEmitted);
            self.housekeeping(sink)?;
            if self.state.stats.records >= written {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Ends every open connection: holes become gaps, streams end, connections close.
    pub fn close_all<S: StreamSink>(&mut self, sink: &mut S) {
        let now = self.state.wall(monotonic_ns());
        for cookie in self.state.table.cookies() {
            self.state.close_connection(cookie, now, sink);
        }
    }
}

fn housekeeping<S: StreamSink>(
    ring: &mut RingBuf<MapData>,
    state: &mut State,
    sink: &mut S,
) -> Result<(), CaptureError> {
    // Take the kernel's loss records first, then drain: every chunk the kernel wrote before
    // recording a loss is then processed before the loss becomes a gap.
    state.lost.clear();
    state.programs.take_lost_ranges(&mut state.lost)?;
    drain(ring, state, sink, usize::MAX);
    state.apply_lost(sink);
    state.tick_streams(monotonic_ns(), sink);
    if state.refresh_now || state.last_refresh.elapsed() >= state.refresh_interval {
        state.refresh_targets(sink)?;
    }
    state.resolve_owners(sink);
    Ok(())
}

/// The drain timer's interval: short while drains find records, doubling per empty drain up to
/// `idle`, short again after a forced wake-up (traffic is back).
#[derive(Debug)]
struct DrainPacer {
    busy: Duration,
    idle: Duration,
    current: Duration,
}

impl DrainPacer {
    fn new(busy: Duration, idle: Duration) -> Self {
        Self {
            busy,
            idle,
            current: busy,
        }
    }

    fn interval(&self) -> Duration {
        self.current
    }

    fn drained(&mut self, records: usize) {
        self.current = if records > 0 {
            self.busy
        } else {
            (self.current * 2).min(self.idle)
        };
    }

    fn woken(&mut self) {
        self.current = self.busy;
    }
}

fn drain<S: StreamSink>(
    ring: &mut RingBuf<MapData>,
    state: &mut State,
    sink: &mut S,
    max: usize,
) -> usize {
    let mut n = 0;
    while n < max {
        let Some(item) = ring.next() else { break };
        n += 1;
        state.handle(&item, sink);
    }
    n
}

impl State {
    fn wall(&self, mono_ns: u64) -> u64 {
        (mono_ns as i128 + self.clock_offset_ns).max(0) as u64
    }

    fn handle<S: StreamSink>(&mut self, bytes: &[u8], sink: &mut S) {
        self.stats.records += 1;
        match records::parse(bytes) {
            Ok(Record::Chunk(chunk)) => {
                self.stats.chunk_records += 1;
                self.on_chunk(&chunk, sink);
            }
            Ok(Record::Conn(conn)) => {
                self.stats.control_records += 1;
                self.on_conn(&conn, sink);
            }
            Ok(Record::Proc(proc)) => {
                self.stats.control_records += 1;
                match proc.operation() {
                    Some(ProcOp::Exec) => self.refresh_now = true,
                    Some(ProcOp::Exit) => {
                        if self.targets.contains_key(&proc.pid) {
                            self.refresh_now = true;
                        }
                    }
                    None => self.stats.malformed_records += 1,
                }
            }
            Err(_) => self.stats.malformed_records += 1,
        }
    }

    fn on_chunk<S: StreamSink>(&mut self, chunk: &Chunk<'_>, sink: &mut S) {
        let h = &chunk.header;
        let ts = self.wall(h.ts_ns);
        if self.table.get_mut(h.cookie).is_none() {
            if self.table.was_closed(h.cookie) {
                self.stats.late_chunks += 1;
                return;
            }
            self.open(
                h.cookie,
                chunk.local(),
                chunk.remote(),
                ts,
                true,
                false,
                None,
                sink,
            );
        }
        let cap = self.capture_cap;
        let offset = self.clock_offset_ns;
        let stats = &mut self.stats;
        let entry = self.table.get_mut(h.cookie).expect("just inserted");
        let dir = Direction::from_egress(chunk.egress());
        let info = &entry.info;
        let stream = &mut entry.streams[dir as usize];
        let mut out = |piece: Piece<'_>| emit(stats, sink, info, dir, offset, piece);
        let seq = h.seq.wrapping_add(h.offset);
        if !chunk.data.is_empty() {
            stream.segment(seq, chunk.data, h.ts_ns, &mut out);
        }
        if h.offset == 0 && h.payload_len > cap {
            stream.missing(
                h.seq.wrapping_add(cap),
                h.payload_len - cap,
                GapReason::Truncated,
                h.ts_ns,
                &mut out,
            );
        }
        let last_chunk =
            u32::from(h.chunks.max(1)) - 1 == h.offset / observer_common::CHUNK_DATA_MAX as u32;
        if last_chunk && chunk.has(chunk_flags::RST) {
            stream.reset(h.ts_ns, &mut out);
            entry.streams[1 - dir as usize].reset(h.ts_ns, &mut |piece: Piece<'_>| {
                emit(stats, sink, info, flip(dir), offset, piece)
            });
        } else if last_chunk && chunk.has(chunk_flags::FIN) {
            stream.fin(h.seq.wrapping_add(h.payload_len), h.ts_ns, &mut out);
        }
        // Without the kernel's close report (connection older than the capture), both streams
        // ending is the close.
        let ended = entry.streams.iter().all(|s| s.is_ended());
        if ended && !entry.close_reported_by_kernel {
            self.close_connection(h.cookie, ts, sink);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn open<S: StreamSink>(
        &mut self,
        cookie: u64,
        local: SocketAddr,
        peer: SocketAddr,
        ts: u64,
        preexisting: bool,
        outgoing: bool,
        pid: Option<u32>,
        sink: &mut S,
    ) {
        let fallback_pid = pid.or_else(|| self.pid_for_port(local.port()));
        let entry = self.table.insert(cookie, local, peer);
        entry.info.preexisting = preexisting;
        entry.info.outgoing = outgoing;
        entry.info.pid = fallback_pid;
        entry.info.opened_ns = (!preexisting).then_some(ts);
        self.stats.connections_opened += 1;
        self.find_owner(cookie);
        let entry = self.table.get_mut(cookie).expect("inserted");
        sink.event(StreamEvent::Opened {
            conn: &entry.info,
            ts_ns: ts,
        });
    }

    fn on_conn<S: StreamSink>(&mut self, rec: &observer_common::ConnRecord, sink: &mut S) {
        let ts = self.wall(rec.ts_ns);
        match rec.operation() {
            Some(op @ (ConnOp::Accepted | ConnOp::Connected)) => {
                if self.table.get_mut(rec.cookie).is_some() {
                    return; // data raced ahead of the record; the streams already started
                }
                let outgoing = op == ConnOp::Connected;
                let pid = (outgoing && rec.pid != 0).then_some(rec.pid);
                self.open(
                    rec.cookie,
                    rec.local(),
                    rec.remote(),
                    ts,
                    false,
                    outgoing,
                    pid,
                    sink,
                );
                let entry = self.table.get_mut(rec.cookie).expect("opened");
                entry.close_reported_by_kernel = true;
                entry.streams[Direction::Ingress as usize].set_start(rec.rcv_nxt);
                entry.streams[Direction::Egress as usize].set_start(rec.snd_nxt);
            }
            Some(ConnOp::Closed) => self.close_connection(rec.cookie, ts, sink),
            Some(ConnOp::Listen) => {
                let port = rec.local_port;
                if let Some(t) = self.targets.get_mut(&rec.pid) {
                    t.ports.insert(port);
                }
                self.ports_on.insert(port);
                self.ports_missing.remove(&port);
            }
            None => self.stats.malformed_records += 1,
        }
    }

    fn close_connection<S: StreamSink>(&mut self, cookie: u64, ts: u64, sink: &mut S) {
        if self.table.get_mut(cookie).is_none() {
            return;
        }
        // Every chunk of this connection precedes its close in the ring, so its loss records
        // (already taken this round, or still in the kernel map) can be applied now; after the
        // close they would find no connection and the lost tail would go unreported.
        let mut lost = std::mem::take(&mut self.lost);
        let mut own: Vec<_> = Vec::new();
        lost.retain(|(key, range)| {
            if key.cookie == cookie {
                own.push((*key, *range));
                false
            } else {
                true
            }
        });
        self.programs.take_lost_ranges_of(cookie, &mut own);
        self.lost = own;
        self.apply_lost(sink);
        self.lost = lost;
        let Some(mut entry) = self.table.remove(cookie) else {
            return;
        };
        let mono = monotonic_ns();
        entry.info.closed_ns = Some(ts);
        let offset = self.clock_offset_ns;
        let stats = &mut self.stats;
        let info = &entry.info;
        for dir in [Direction::Ingress, Direction::Egress] {
            let mut out = |piece: Piece<'_>| emit(stats, sink, info, dir, offset, piece);
            entry.streams[dir as usize].close(mono, &mut out);
        }
        self.stats.connections_closed += 1;
        self.stats.bytes_duplicate += entry
            .streams
            .iter()
            .map(|s| s.stats().bytes_retransmitted)
            .sum::<u64>();
        sink.event(StreamEvent::Closed {
            conn: &entry.info,
            ts_ns: ts,
        });
    }

    fn apply_lost<S: StreamSink>(&mut self, sink: &mut S) {
        let lost = std::mem::take(&mut self.lost);
        for (key, range) in &lost {
            self.stats.lost_ranges += 1;
            let Some(entry) = self.table.get_mut(key.cookie) else {
                continue;
            };
            let dir = Direction::from_egress(key.egress != 0);
            let offset = self.clock_offset_ns;
            let stats = &mut self.stats;
            let info = &entry.info;
            let mut out = |piece: Piece<'_>| emit(stats, sink, info, dir, offset, piece);
            let len = range.end_seq.wrapping_sub(range.first_seq);
            entry.streams[dir as usize].missing(
                range.first_seq,
                len,
                GapReason::Lost,
                monotonic_ns(),
                &mut out,
            );
        }
        self.lost = lost;
    }

    fn tick_streams<S: StreamSink>(&mut self, now_mono: u64, sink: &mut S) {
        let ts = self.wall(now_mono);
        let offset = self.clock_offset_ns;
        let stats = &mut self.stats;
        let mut finished = Vec::new();
        for (&cookie, entry) in self.table.iter_mut() {
            let info = &entry.info;
            for dir in [Direction::Ingress, Direction::Egress] {
                let mut out = |piece: Piece<'_>| emit(stats, sink, info, dir, offset, piece);
                entry.streams[dir as usize].tick(now_mono, &mut out);
            }
            if !entry.close_reported_by_kernel && entry.streams.iter().all(|s| s.is_ended()) {
                finished.push(cookie);
            }
        }
        for cookie in finished {
            self.close_connection(cookie, ts, sink);
        }
    }

    fn pid_for_port(&self, port: u16) -> Option<u32> {
        self.targets
            .values()
            .find(|t| t.ports.contains(&port))
            .map(|t| t.pid)
    }

    /// Looks the connection's fd up in /proc (refreshing the tables at most every 20 ms).
    fn find_owner(&mut self, cookie: u64) -> bool {
        let Some(entry) = self.table.get_mut(cookie) else {
            return true;
        };
        if entry.info.fd.is_some() {
            return true;
        }
        entry.owner_attempts += 1;
        let (local, peer) = (entry.info.local, entry.info.peer);
        let mut owner = self.owners.find(local, peer);
        let stale = self
            .owners_refreshed
            .is_none_or(|t| t.elapsed() > Duration::from_millis(20));
        // NoFileYet: the kernel says no fd holds it now (not accepted yet, or already closed);
        // re-reading the fd tables would be wasted, a later attempt may succeed.
        if owner == Lookup::Unknown && stale {
            let pids: Vec<u32> = self.targets.keys().copied().collect();
            let _ = self.owners.refresh(&pids);
            self.owners_refreshed = Some(Instant::now());
            owner = self.owners.find(local, peer);
        }
        let entry = self.table.get_mut(cookie).expect("present");
        match owner {
            Lookup::Owner(o) => {
                entry.info.pid = Some(o.pid);
                entry.info.fd = Some(o.fd);
                true
            }
            Lookup::Unknown | Lookup::NoFileYet => false,
        }
    }

    fn resolve_owners<S: StreamSink>(&mut self, _sink: &mut S) {
        let pending: Vec<u64> = self
            .table
            .iter_mut()
            .filter(|(_, e)| e.info.fd.is_none() && e.owner_attempts < OWNER_ATTEMPTS)
            .map(|(c, _)| *c)
            .collect();
        for cookie in pending {
            self.find_owner(cookie);
        }
    }

    fn refresh_targets<S: StreamSink>(&mut self, sink: &mut S) -> Result<(), CaptureError> {
        self.refresh_now = false;
        self.last_refresh = Instant::now();
        let resolved = match self.resolver.resolve(&self.spec, false) {
            Ok(r) => r,
            Err(e) if e.is_not_found() => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        self.apply_targets(resolved, sink)
    }

    fn apply_targets<S: StreamSink>(
        &mut self,
        resolved: Vec<Target>,
        sink: &mut S,
    ) -> Result<(), CaptureError> {
        let follow_listen: BTreeSet<u32> = self.follow_listen_pids(&resolved);
        let mut fresh = BTreeMap::new();
        for mut target in resolved {
            // Ports the kernel added on listen() since the last scan stay.
            if let Some(old) = self.targets.get(&target.pid)
                && follow_listen.contains(&target.pid)
            {
                let still_on = old
                    .ports
                    .iter()
                    .copied()
                    .filter(|p| self.ports_on.contains(p));
                target.ports.extend(still_on);
            }
            fresh.insert(target.pid, target);
        }
        for (pid, target) in &fresh {
            if !self.targets.contains_key(pid) {
                let flags = pid_flags::TARGET
                    | if follow_listen.contains(pid) {
                        pid_flags::FOLLOW_LISTEN
                    } else {
                        0
                    };
                self.programs.set_pid(*pid, flags)?;
                if let Err(e) = self.programs.attach_cgroup(&target.cgroup) {
                    // The process may have exited between resolving and attaching.
                    if self.resolver.proc.exists(*pid) {
                        return Err(e);
                    }
                    continue;
                }
                self.wake_on_exec_of(target);
                sink.event(StreamEvent::TargetAdded { target });
            }
        }
        for pid in self.targets.keys() {
            if !fresh.contains_key(pid) {
                self.programs.set_pid(*pid, 0)?;
                sink.event(StreamEvent::TargetRemoved { pid: *pid });
            }
        }
        let wanted_cgroups: BTreeSet<_> = fresh.values().map(|t| t.cgroup.clone()).collect();
        let attached: Vec<_> = self
            .programs
            .attached_cgroups()
            .map(|p| p.to_owned())
            .collect();
        for cgroup in attached {
            if !wanted_cgroups.contains(&cgroup) {
                self.programs.detach_cgroup(&cgroup);
            }
        }
        let wanted_ports: BTreeSet<u16> = fresh
            .values()
            .flat_map(|t| t.ports.iter().copied())
            .collect();
        for &port in &wanted_ports {
            if !self.ports_on.contains(&port) {
                self.programs.set_port(port, true)?;
                self.ports_on.insert(port);
            }
            self.ports_missing.remove(&port);
        }
        // A port disappears only when two scans in a row miss it (a listen() between reading
        // /proc and writing the map must not be undone).
        let gone: Vec<u16> = self.ports_on.difference(&wanted_ports).copied().collect();
        for port in gone {
            if !self.ports_missing.insert(port) {
                self.programs.set_port(port, false)?;
                self.ports_on.remove(&port);
                self.ports_missing.remove(&port);
            }
        }
        self.targets = fresh;
        Ok(())
    }

    /// Targets chosen by pid, name or discovery follow new listeners; those chosen only by port
    /// do not.
    fn follow_listen_pids(&self, resolved: &[Target]) -> BTreeSet<u32> {
        resolved
            .iter()
            .filter(|t| t.follow_listen)
            .map(|t| t.pid)
            .collect()
    }

    /// A discovered broker whose comm is not a known one (a versioned tansu binary, a broker
    /// found by its port): its restart is caught at exec too, not only at the next scan.
    fn wake_on_exec_of(&mut self, target: &Target) {
        if !self.spec.discover || target.kind.is_none() || self.comms.len() >= MAX_COMMS {
            return;
        }
        let key = comm_key(&target.comm);
        // Best effort: the periodic scan finds the restarted broker anyway.
        if !key.is_empty() && !self.comms.contains(&key) && self.programs.add_comm(&key).is_ok() {
            self.comms.insert(key);
        }
    }
}

fn flip(dir: Direction) -> Direction {
    match dir {
        Direction::Ingress => Direction::Egress,
        Direction::Egress => Direction::Ingress,
    }
}

/// Hands one reassembler piece to the sink; `offset` turns its monotonic time into wall time.
fn emit<S: StreamSink>(
    stats: &mut SessionStats,
    sink: &mut S,
    conn: &Connection,
    dir: Direction,
    offset: i128,
    piece: Piece<'_>,
) {
    let wall = |mono: u64| (mono as i128 + offset).max(0) as u64;
    match piece {
        Piece::Data { seq, ts_ns, bytes } => {
            let ts = wall(ts_ns);
            stats.bytes_delivered += bytes.len() as u64;
            sink.event(StreamEvent::Data {
                conn,
                dir,
                ts_ns: ts,
                seq,
                bytes,
            });
        }
        Piece::Gap {
            seq,
            len,
            reason,
            ts_ns,
        } => {
            let ts = wall(ts_ns);
            stats.gaps += 1;
            match reason {
                GapReason::Lost => stats.gap_bytes_lost += u64::from(len),
                GapReason::Truncated => stats.gap_bytes_truncated += u64::from(len),
                GapReason::Unknown => stats.gap_bytes_unknown += u64::from(len),
            }
            sink.event(StreamEvent::Gap {
                conn,
                dir,
                ts_ns: ts,
                seq,
                len,
                reason,
            });
        }
        Piece::End { reset, ts_ns } => sink.event(StreamEvent::End {
            conn,
            dir,
            ts_ns: wall(ts_ns),
            reset,
        }),
    }
}

/// A name as the kernel's comm keeps it: at most 15 bytes (cut at a character boundary).
fn comm_key(name: &str) -> String {
    let mut end = name.len().min(15);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_owned()
}

pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Realtime minus monotonic: converts the kernel's bpf_ktime_get_ns() stamps to wall time.
fn clock_offset_ns() -> i128 {
    clock_ns(libc::CLOCK_REALTIME) as i128 - monotonic_ns() as i128
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_pacer_backs_off_when_idle_and_resets_on_records_or_wake_up() {
        let ms = Duration::from_millis;
        let mut p = DrainPacer::new(ms(2), ms(50));
        assert_eq!(p.interval(), ms(2));
        p.drained(3);
        assert_eq!(p.interval(), ms(2));
        let mut seen = vec![];
        for _ in 0..7 {
            p.drained(0);
            seen.push(p.interval());
        }
        assert_eq!(seen, [ms(4), ms(8), ms(16), ms(32), ms(50), ms(50), ms(50)]);
        p.drained(1);
        assert_eq!(p.interval(), ms(2));
        p.drained(0);
        p.drained(0);
        p.woken();
        assert_eq!(p.interval(), ms(2));
    }
}
