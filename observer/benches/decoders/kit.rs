//! Decoder-benchmark kit, shared by `benches/decoders` (criterion + report) and its smoke test
//! `tests/decoder_bench.rs`: the fixture sessions, their replay through the daemon's decode
//! path ([`DecodePipeline`]: protocol inference, then the protocol's session decoder) cut into
//! segments of a given size, a counting allocator, and the per-protocol figures.
//!
//! The fixtures (`benches/fixtures/*.bin`) are the protocols' realistic test sessions, written
//! by the test encoders (`BROKERSCOPE_WRITE_FIXTURES=1 cargo test -p observer --lib
//! bench_fixture`; the same test fails when a fixture no longer matches its script).
#![allow(dead_code)] // each including binary uses a different part

use std::{
    alloc::{GlobalAlloc, Layout, System as SysAlloc},
    collections::HashMap,
    hint::black_box,
    net::SocketAddr,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Instant,
};

use observer::{
    capture::{ConnId, Connection, Direction, StreamEvent, StreamSink},
    event::{BrokerEvent, EventKind, System},
    protocol::{EventSink, infer::Inference, pipeline::DecodePipeline},
};

/// Counts allocations (and reallocations, which may move) of the whole process; install it
/// with `#[global_allocator]` in the binary.
pub struct Counting;

pub static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        unsafe { SysAlloc.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        unsafe { SysAlloc.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        unsafe { SysAlloc.realloc(p, l, n) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { SysAlloc.dealloc(p, l) }
    }
}

pub fn allocs() -> u64 {
    ALLOCS.load(Relaxed)
}

/// One recorded step of a session.
#[derive(Clone, Debug)]
pub enum Step {
    Data(Direction, Vec<u8>),
    Gap(Direction, u32),
    End(Direction),
}

pub struct Fixture {
    pub name: &'static str,
    pub system: System,
    /// The broker port (the inference hint the daemon would use).
    pub port: u16,
    pub steps: Vec<Step>,
}

const MAGIC: &[u8] = b"brokerscope-fixture 1\n";

/// Parses a fixture file (format: `testkit::fixture_bytes`).
pub fn parse(name: &'static str, bytes: &[u8]) -> Result<Vec<Step>, String> {
    let mut rest = bytes
        .strip_prefix(MAGIC)
        .ok_or_else(|| format!("{name}: not a brokerscope fixture (bad magic line)"))?;
    let mut steps = Vec::new();
    while !rest.is_empty() {
        if rest.len() < 6 {
            return Err(format!("{name}: truncated step header"));
        }
        let dir = match rest[1] {
            0 => Direction::Ingress,
            1 => Direction::Egress,
            d => return Err(format!("{name}: bad direction byte {d}")),
        };
        let len = u32::from_le_bytes(rest[2..6].try_into().unwrap());
        let kind = rest[0];
        rest = &rest[6..];
        steps.push(match kind {
            0 => {
                let n = len as usize;
                if rest.len() < n {
                    return Err(format!("{name}: truncated data step ({n} bytes announced)"));
                }
                let data = rest[..n].to_vec();
                rest = &rest[n..];
                Step::Data(dir, data)
            }
            1 => Step::Gap(dir, len),
            2 => Step::End(dir),
            k => return Err(format!("{name}: bad step kind {k}")),
        });
    }
    Ok(steps)
}

/// Every fixture: AMQP 0-9-1, MQTT 3.1.1 and 5.0, NATS (with JetStream), Kafka.
pub fn fixtures() -> Vec<Fixture> {
    let raw: [(&'static str, System, u16, &[u8]); 5] = [
        (
            "amqp",
            System::Amqp,
            5672,
            include_bytes!("../fixtures/amqp.bin"),
        ),
        (
            "mqtt311",
            System::Mqtt,
            1883,
            include_bytes!("../fixtures/mqtt311.bin"),
        ),
        (
            "mqtt5",
            System::Mqtt,
            1883,
            include_bytes!("../fixtures/mqtt5.bin"),
        ),
        (
            "nats",
            System::Nats,
            4222,
            include_bytes!("../fixtures/nats.bin"),
        ),
        (
            "kafka",
            System::Kafka,
            9092,
            include_bytes!("../fixtures/kafka.bin"),
        ),
    ];
    raw.into_iter()
        .map(|(name, system, port, bytes)| Fixture {
            name,
            system,
            port,
            steps: parse(name, bytes).unwrap_or_else(|e| panic!("{e}")),
        })
        .collect()
}

/// Segment sizes: small reads, one Ethernet MSS, and each step whole (loopback / GRO).
pub const SEGMENTS: [(&str, usize); 3] = [("256B", 256), ("1448B", 1448), ("whole", usize::MAX)];

/// Counts events; keeps their kinds only when asked (into a buffer reserved up front, so
/// the sink itself allocates nothing).
pub struct Sink {
    pub events: u64,
    pub record: bool,
    pub kinds: Vec<(Direction, EventKind)>,
}

impl EventSink for Sink {
    fn event(&mut self, e: &BrokerEvent) {
        self.events += 1;
        if self.record && self.kinds.len() < self.kinds.capacity() {
            self.kinds.push((e.direction, e.kind));
        }
        black_box(e);
    }
}

/// A pipeline that replays one fixture as new connections, each step cut into `seg`-byte
/// segments (precomputed, so replay only decodes).
pub struct Replay {
    pub pipeline: DecodePipeline<Sink>,
    /// (step index, piece) in replay order.
    pub pieces: Vec<(usize, Piece)>,
    pub bytes: u64,
    pub bytes_by_dir: [u64; 2],
    local: SocketAddr,
    next_id: u64,
}

pub enum Piece {
    Data(Direction, Vec<u8>),
    Gap(Direction, u32),
    End(Direction),
}

pub fn dir_index(d: Direction) -> usize {
    match d {
        Direction::Ingress => 0,
        Direction::Egress => 1,
    }
}

impl Replay {
    pub fn new(f: &Fixture, seg: usize) -> Self {
        let mut pieces = Vec::new();
        let mut bytes_by_dir = [0u64; 2];
        for (k, step) in f.steps.iter().enumerate() {
            match step {
                Step::Data(d, b) => {
                    bytes_by_dir[dir_index(*d)] += b.len() as u64;
                    for c in b.chunks(seg.min(b.len()).max(1)) {
                        pieces.push((k, Piece::Data(*d, c.to_vec())));
                    }
                }
                Step::Gap(d, n) => pieces.push((k, Piece::Gap(*d, *n))),
                Step::End(d) => pieces.push((k, Piece::End(*d))),
            }
        }
        let sink = Sink {
            events: 0,
            record: false,
            kinds: Vec::with_capacity(4096),
        };
        Self {
            pipeline: DecodePipeline::new(Inference::new(HashMap::new()), sink),
            pieces,
            bytes: bytes_by_dir[0] + bytes_by_dir[1],
            bytes_by_dir,
            local: SocketAddr::from(([127, 0, 0, 1], f.port)),
            next_id: 1,
        }
    }

    fn conn(&mut self) -> Connection {
        let id = self.next_id;
        self.next_id += 1;
        Connection {
            id: ConnId(id),
            cookie: id,
            pid: Some(4242),
            fd: Some(7),
            local: self.local,
            peer: SocketAddr::from(([127, 0, 0, 1], 40_000 + (id % 20_000) as u16)),
            opened_ns: Some(1_000),
            closed_ns: None,
            preexisting: false,
            outgoing: false,
        }
    }

    /// One session on a new connection: opened, every piece, closed.
    pub fn session(&mut self) {
        let conn = self.conn();
        self.pipeline.event(StreamEvent::Opened {
            conn: &conn,
            ts_ns: 1_000,
        });
        for (k, piece) in &self.pieces {
            feed(&mut self.pipeline, &conn, *k, piece);
        }
        self.pipeline.event(StreamEvent::Closed {
            conn: &conn,
            ts_ns: 9_000_000,
        });
    }

    /// One session, timing each direction's pieces: ns spent on [ingress, egress].
    pub fn session_timed(&mut self) -> [u64; 2] {
        let conn = self.conn();
        let mut ns = [0u64; 2];
        let t = Instant::now();
        self.pipeline.event(StreamEvent::Opened {
            conn: &conn,
            ts_ns: 1_000,
        });
        ns[0] += t.elapsed().as_nanos() as u64;
        for (k, piece) in &self.pieces {
            let d = match piece {
                Piece::Data(d, _) | Piece::Gap(d, _) | Piece::End(d) => *d,
            };
            let t = Instant::now();
            feed(&mut self.pipeline, &conn, *k, piece);
            ns[dir_index(d)] += t.elapsed().as_nanos() as u64;
        }
        let t = Instant::now();
        self.pipeline.event(StreamEvent::Closed {
            conn: &conn,
            ts_ns: 9_000_000,
        });
        ns[0] += t.elapsed().as_nanos() as u64;
        ns
    }
}

fn feed(p: &mut DecodePipeline<Sink>, conn: &Connection, k: usize, piece: &Piece) {
    let ts_ns = 1_000 * (k as u64 + 2);
    match piece {
        Piece::Data(dir, bytes) => p.event(StreamEvent::Data {
            conn,
            dir: *dir,
            ts_ns,
            seq: 0,
            bytes,
        }),
        Piece::Gap(dir, len) => p.event(StreamEvent::Gap {
            conn,
            dir: *dir,
            ts_ns,
            seq: 0,
            len: *len,
            reason: observer::stream::GapReason::Lost,
        }),
        Piece::End(dir) => p.event(StreamEvent::End {
            conn,
            dir: *dir,
            ts_ns,
            reset: false,
        }),
    }
}

/// Allocations of one step of a session (after warm-up), with what it decoded.
pub struct StepAllocs {
    pub step: usize,
    pub dir: Direction,
    pub bytes: usize,
    pub frames: u64,
    pub allocs: u64,
    pub kinds: Vec<EventKind>,
}

/// Untimed facts about one session of a fixture at one segment size (after `warmup`
/// sessions): frames and events per direction, allocations per step and in total.
pub struct Profile {
    pub bytes: u64,
    pub bytes_by_dir: [u64; 2],
    pub frames: u64,
    pub frames_by_dir: [u64; 2],
    pub events: u64,
    /// Allocations of the whole session (connection open/close included).
    pub allocs: u64,
    /// Allocations outside any step: connection open and close.
    pub allocs_conn: u64,
    pub steps: Vec<StepAllocs>,
    /// Decoder health over the whole run: malformed + resyncs + skipped + oversize.
    pub problems: u64,
    pub connections_decoded: u64,
}

pub fn profile(f: &Fixture, seg: usize, warmup: usize) -> Profile {
    let mut r = Replay::new(f, seg);
    for _ in 0..warmup {
        r.session();
    }
    let before = r.pipeline.stats();
    let events_before = r.pipeline.sink().events;
    r.pipeline.sink_mut().record = true;
    r.pipeline.sink_mut().kinds.clear();
    let conn = r.conn();
    let mut steps: Vec<StepAllocs> = Vec::new();
    let mut frames_by_dir = [0u64; 2];
    let mut frames_seen = before.decoder.frames;
    let a0 = allocs();
    r.pipeline.event(StreamEvent::Opened {
        conn: &conn,
        ts_ns: 1_000,
    });
    let mut allocs_conn = allocs() - a0;
    let mut total = allocs_conn;
    for (k, piece) in &r.pieces {
        let kinds_at = r.pipeline.sink().kinds.len();
        let a = allocs();
        feed(&mut r.pipeline, &conn, *k, piece);
        let n = allocs() - a;
        total += n;
        let (d, len) = match piece {
            Piece::Data(d, b) => (*d, b.len()),
            Piece::Gap(d, _) | Piece::End(d) => (*d, 0),
        };
        // stats() clones maps: read it outside the counted window.
        let frames_now = r.pipeline.stats().decoder.frames;
        let frames = frames_now - frames_seen;
        frames_seen = frames_now;
        frames_by_dir[dir_index(d)] += frames;
        let kinds: Vec<EventKind> = r.pipeline.sink().kinds[kinds_at..]
            .iter()
            .map(|(_, k)| *k)
            .collect();
        match steps.last_mut() {
            Some(s) if s.step == *k => {
                s.bytes += len;
                s.frames += frames;
                s.allocs += n;
                s.kinds.extend(kinds);
            }
            _ => steps.push(StepAllocs {
                step: *k,
                dir: d,
                bytes: len,
                frames,
                allocs: n,
                kinds,
            }),
        }
    }
    let a = allocs();
    r.pipeline.event(StreamEvent::Closed {
        conn: &conn,
        ts_ns: 9_000_000,
    });
    let n = allocs() - a;
    allocs_conn += n;
    total += n;
    let after = r.pipeline.stats();
    let d = &after.decoder;
    Profile {
        bytes: r.bytes,
        bytes_by_dir: r.bytes_by_dir,
        frames: d.frames - before.decoder.frames,
        frames_by_dir,
        events: r.pipeline.sink().events - events_before,
        allocs: total,
        allocs_conn,
        steps,
        problems: d.malformed + d.resyncs + d.skipped_bytes + d.oversize,
        connections_decoded: after
            .connections_decoded
            .get(&f.system)
            .copied()
            .unwrap_or(0),
    }
}

/// Timed figures of one fixture at one segment size over `sessions` sessions (after a
/// warm-up of the same length).
pub struct Timing {
    pub sessions: usize,
    /// ns on [ingress, egress] pieces (connection open/close counted as ingress).
    pub ns_by_dir: [u64; 2],
}

pub fn time(f: &Fixture, seg: usize, sessions: usize) -> Timing {
    let mut r = Replay::new(f, seg);
    for _ in 0..sessions {
        r.session();
    }
    let mut ns_by_dir = [0u64; 2];
    for _ in 0..sessions {
        let ns = r.session_timed();
        ns_by_dir[0] += ns[0];
        ns_by_dir[1] += ns[1];
    }
    Timing {
        sessions,
        ns_by_dir,
    }
}

/// MB/s of `bytes` in `ns`.
pub fn mbps(bytes: u64, ns: u64) -> f64 {
    bytes as f64 * 1e3 / ns.max(1) as f64
}

/// One report row: (fixture, segment, the profile, the timing).
pub struct Row<'a> {
    pub fixture: &'a str,
    pub segment: &'a str,
    pub p: Profile,
    pub t: Timing,
}

/// The markdown report: figures per protocol and segment size, then where the allocations of
/// a steady-state session come from.
pub fn report(rows: &[Row<'_>]) -> String {
    let mut s = String::new();
    s.push_str(
        "| stream | segment | B/session | frames in/out | MB/s both | MB/s in | MB/s out | ns/frame | allocs/frame | allocs/session (conn open+close) |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let (p, t) = (&r.p, &r.t);
        let n = t.sessions as u64;
        let ns = t.ns_by_dir[0] + t.ns_by_dir[1];
        s.push_str(&format!(
            "| {} | {} | {} | {}/{} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {} ({}) |\n",
            r.fixture,
            r.segment,
            p.bytes,
            p.frames_by_dir[0],
            p.frames_by_dir[1],
            mbps(p.bytes * n, ns),
            mbps(p.bytes_by_dir[0] * n, t.ns_by_dir[0]),
            mbps(p.bytes_by_dir[1] * n, t.ns_by_dir[1]),
            ns as f64 / (p.frames * n).max(1) as f64,
            p.allocs as f64 / p.frames.max(1) as f64,
            p.allocs,
            p.allocs_conn,
        ));
    }
    s
}

/// Allocation sources of one steady-state session: each step that allocated, with the events
/// it produced.
pub fn alloc_sources(name: &str, p: &Profile) -> String {
    let mut s = format!(
        "{name}: {} allocations in a session of {} frames ({} at connection open/close)\n",
        p.allocs, p.frames, p.allocs_conn
    );
    for st in p.steps.iter().filter(|st| st.allocs > 0) {
        s.push_str(&format!(
            "  step {:>2} {:?} {:>5} B {:>2} frames: {:>3} allocs; events {:?}\n",
            st.step, st.dir, st.bytes, st.frames, st.allocs, st.kinds
        ));
    }
    s
}
