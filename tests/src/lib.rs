//! Shared helpers for the end-to-end tests: cgroups, processes started inside them (and stopped
//! by PID), a background observer that records every stream event, deterministic payloads, and
//! brokers on private loopback ports.
pub mod daemon;
pub mod metrics;
pub mod mosquitto;
pub mod nats;
pub mod otlp;
pub mod prometheus;
pub mod rabbitmq;
pub mod tansu;
use std::{
    collections::BTreeMap,
    ffi::CString,
    fs,
    io::{BufRead, BufReader},
    net::SocketAddr,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, mpsc},
    thread,
    time::{Duration, Instant},
};

use observer::{
    capture::{
        CaptureSession, ConnId, Direction, KernelCounters, SessionStats, StreamEvent, StreamSink,
        TargetSpec, session::SessionConfig,
    },
    event::{BrokerEvent, EventKind},
    protocol::{
        EventSink,
        infer::Inference,
        pipeline::{DecodePipeline, PipelineStats},
    },
    stream::GapReason,
};

/// Deterministic, non-repeating-looking bytes for payload `seed`.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn require_root() {
    // SAFETY: no arguments.
    assert!(
        unsafe { libc::geteuid() } == 0,
        "end-to-end tests load eBPF programs and create cgroups: run them as root (cargo xtask test)"
    );
}

/// A cgroup v2 directory of our own; removed on drop (after its processes are gone).
pub struct Cgroup {
    pub path: PathBuf,
}

impl Cgroup {
    pub fn create(name: &str) -> Self {
        let root = observer::capture::procfs::ProcFs::default()
            .cgroup2_mount()
            .expect("read mounts")
            .expect("cgroup v2 must be mounted");
        let path = root.join(format!("brokerscope-test-{name}-{}", std::process::id()));
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        Self { path }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if fs::remove_dir(&self.path).is_ok() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A child process killed (by its PID) when dropped.
pub struct Proc {
    pub child: Child,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                thread::sleep(Duration::from_millis(10));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts `cmd` inside `cgroup` (joined between fork and exec, so every socket it creates is
/// the cgroup's), or in the test's own cgroup when `None`.
pub fn spawn(cmd: &mut Command, cgroup: Option<&Cgroup>) -> Proc {
    if let Some(cgroup) = cgroup {
        let procs = CString::new(cgroup.path.join("cgroup.procs").to_str().unwrap()).unwrap();
        // SAFETY: only async-signal-safe calls (open/write/close) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // "0" moves the writing process itself.
                let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                libc::close(fd);
                if ok {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    Proc { child }
}

/// The payload server (src/bin/payload-server.rs), started and listening.
pub struct PayloadServer {
    pub proc: Proc,
    pub port: u16,
}

/// Starts the payload server; a macro because only integration tests know the binary's path.
#[macro_export]
macro_rules! payload_server {
    ($cgroup:expr) => {
        $crate::PayloadServer::start(env!("CARGO_BIN_EXE_payload-server"), $cgroup, &[])
    };
    ($cgroup:expr, $($arg:expr),+) => {
        $crate::PayloadServer::start(env!("CARGO_BIN_EXE_payload-server"), $cgroup, &[$($arg),+])
    };
}

impl PayloadServer {
    pub fn start(exe: &str, cgroup: Option<&Cgroup>, args: &[&str]) -> Self {
        let mut proc = spawn(Command::new(exe).args(args).stdout(Stdio::piped()), cgroup);
        let stdout = proc.child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("payload-server output");
        let port = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .expect("port line");
        Self { proc, port }
    }
}

/// Everything the observer reported about one connection.
#[derive(Clone, Debug, Default)]
pub struct ConnCapture {
    pub id: Option<ConnId>,
    pub pid: Option<u32>,
    pub fd: Option<u32>,
    pub local: Option<SocketAddr>,
    pub peer: Option<SocketAddr>,
    pub preexisting: bool,
    pub outgoing: bool,
    pub closed: bool,
    /// Bytes per direction: [ingress, egress].
    pub bytes: [Vec<u8>; 2],
    pub gaps: Vec<(Direction, u32, u32, GapReason)>,
    pub ended: [bool; 2],
    pub resets: u32,
    /// Order of pieces per direction: (is_gap, length).
    pub pieces: [Vec<(bool, u32)>; 2],
}

impl ConnCapture {
    pub fn ingress(&self) -> &[u8] {
        &self.bytes[0]
    }
    pub fn egress(&self) -> &[u8] {
        &self.bytes[1]
    }
    pub fn gap_bytes(&self, dir: Direction) -> u64 {
        self.gaps
            .iter()
            .filter(|g| g.0 == dir)
            .map(|g| u64::from(g.2))
            .sum()
    }

    /// Checks the captured direction against the bytes that really went over it: every data
    /// byte equals the original at its position, and data + gaps cover exactly `expected`.
    /// Returns (data bytes, gap bytes).
    pub fn verify_against(&self, dir: Direction, expected: &[u8]) -> (usize, usize) {
        let data = &self.bytes[dir as usize];
        let (mut pos, mut consumed, mut gap_total) = (0usize, 0usize, 0usize);
        for &(is_gap, len) in &self.pieces[dir as usize] {
            let len = len as usize;
            assert!(
                pos + len <= expected.len(),
                "{dir:?}: pieces run past the {} real bytes",
                expected.len()
            );
            if is_gap {
                gap_total += len;
            } else {
                assert!(
                    data[consumed..consumed + len] == expected[pos..pos + len],
                    "{dir:?}: captured bytes differ from the real stream at offset {pos}"
                );
                consumed += len;
            }
            pos += len;
        }
        assert_eq!(
            pos,
            expected.len(),
            "{dir:?}: data + gaps must cover the whole stream"
        );
        (consumed, gap_total)
    }
}

/// What a background observer saw.
#[derive(Debug, Default)]
pub struct Captured {
    pub conns: BTreeMap<ConnId, ConnCapture>,
    pub targets_added: Vec<u32>,
}

impl Captured {
    /// The connection whose peer (client side) is `peer`.
    pub fn by_peer(&self, peer: SocketAddr) -> Option<&ConnCapture> {
        self.conns.values().find(|c| c.peer == Some(peer))
    }
    pub fn by_local_port(&self, port: u16) -> impl Iterator<Item = &ConnCapture> {
        self.conns
            .values()
            .filter(move |c| c.local.map(|a| a.port()) == Some(port))
    }
}

fn conn_entry<'a>(
    c: &'a mut Captured,
    conn: &observer::capture::Connection,
) -> &'a mut ConnCapture {
    let entry = c.conns.entry(conn.id).or_default();
    entry.id = Some(conn.id);
    entry.pid = conn.pid;
    entry.fd = conn.fd.or(entry.fd);
    entry.local = Some(conn.local);
    entry.peer = Some(conn.peer);
    entry.preexisting = conn.preexisting;
    entry.outgoing = conn.outgoing;
    entry
}

fn record(captured: &Mutex<Captured>, event: StreamEvent<'_>) {
    let mut c = captured.lock().unwrap();
    match event {
        StreamEvent::Opened { conn, .. } => {
            conn_entry(&mut c, conn);
        }
        StreamEvent::Data {
            conn, dir, bytes, ..
        } => {
            let e = conn_entry(&mut c, conn);
            e.bytes[dir as usize].extend_from_slice(bytes);
            e.pieces[dir as usize].push((false, bytes.len() as u32));
        }
        StreamEvent::Gap {
            conn,
            dir,
            seq,
            len,
            reason,
            ..
        } => {
            let e = conn_entry(&mut c, conn);
            e.gaps.push((dir, seq, len, reason));
            e.pieces[dir as usize].push((true, len));
        }
        StreamEvent::End {
            conn, dir, reset, ..
        } => {
            let e = conn_entry(&mut c, conn);
            e.ended[dir as usize] = true;
            e.resets += u32::from(reset);
        }
        StreamEvent::Closed { conn, .. } => conn_entry(&mut c, conn).closed = true,
        StreamEvent::TargetAdded { target } => c.targets_added.push(target.pid),
        StreamEvent::TargetRemoved { .. } => {}
    }
}

/// A capture session running on its own thread, feeding any sink.
pub struct Background<S> {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<thread::JoinHandle<(CaptureSession, S)>>,
}

/// The final state of a background session.
pub struct Ended<S> {
    pub sink: S,
    pub stats: SessionStats,
    pub kernel: KernelCounters,
    /// Every record the kernel wrote was read.
    pub caught_up: bool,
}

impl<S: StreamSink + Send + 'static> Background<S> {
    pub fn start(spec: TargetSpec, config: SessionConfig, sink: S) -> Self {
        let session = CaptureSession::start(spec, config).expect("start capture session");
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let thread = thread::spawn(move || {
            let (mut session, mut sink) = (session, sink);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let stop = async {
                while stop_rx.try_recv().is_err() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            };
            runtime
                .block_on(session.run(&mut sink, stop))
                .expect("capture loop");
            (session, sink)
        });
        Self {
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Stops the loop and reads everything the kernel still has; with `close_all`, every open
    /// connection is then closed (holes become gaps).
    pub fn finish(mut self, close_all: bool) -> Ended<S> {
        let _ = self.stop.take().unwrap().send(());
        let (mut session, mut sink) = self.thread.take().unwrap().join().expect("observer thread");
        let caught_up = session
            .catch_up(&mut sink, Duration::from_secs(5))
            .expect("catch up");
        if close_all {
            session.close_all(&mut sink);
        }
        let kernel = session.kernel_counters().expect("counters");
        let stats = session.stats().clone();
        Ended {
            sink,
            stats,
            kernel,
            caught_up,
        }
    }
}

/// Records stream events into shared state the test can inspect while capture runs.
struct Recorder(Arc<Mutex<Captured>>);

impl StreamSink for Recorder {
    fn event(&mut self, event: StreamEvent<'_>) {
        record(&self.0, event);
    }
}

/// A background session recording every stream event.
pub struct Observer {
    inner: Background<Recorder>,
    pub captured: Arc<Mutex<Captured>>,
}

/// The final state of an observer.
pub struct Finished {
    pub captured: Captured,
    pub stats: SessionStats,
    pub kernel: KernelCounters,
    pub caught_up: bool,
}

impl Observer {
    pub fn start(spec: TargetSpec, config: SessionConfig) -> Self {
        let captured = Arc::new(Mutex::new(Captured::default()));
        let inner = Background::start(spec, config, Recorder(captured.clone()));
        Self { inner, captured }
    }

    /// See [`Background::finish`].
    pub fn finish(self, close_all: bool) -> Finished {
        let ended = self.inner.finish(close_all);
        let captured = std::mem::take(&mut *ended.sink.0.lock().unwrap());
        Finished {
            captured,
            stats: ended.stats,
            kernel: ended.kernel,
            caught_up: ended.caught_up,
        }
    }
}

/// Decoded events, shared with the test while capture runs.
#[derive(Clone, Default)]
pub struct Events(pub Arc<Mutex<Vec<BrokerEvent>>>);

impl EventSink for Events {
    fn event(&mut self, event: &BrokerEvent) {
        self.0.lock().unwrap().push(event.clone());
    }
}

impl Events {
    pub fn snapshot(&self) -> Vec<BrokerEvent> {
        self.0.lock().unwrap().clone()
    }
    pub fn count(&self, kind: EventKind) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.kind == kind)
            .count()
    }
}

/// A background session decoding protocols, collecting every event.
pub struct Tracer {
    inner: Background<DecodePipeline<Events>>,
    pub events: Events,
}

impl Tracer {
    pub fn start(spec: TargetSpec, config: SessionConfig) -> Self {
        let events = Events::default();
        let pipeline = DecodePipeline::new(Inference::default(), events.clone());
        Self {
            inner: Background::start(spec, config, pipeline),
            events,
        }
    }

    pub fn finish(self) -> (Vec<BrokerEvent>, PipelineStats, Ended<()>) {
        let ended = self.inner.finish(true);
        let stats = ended.sink.stats();
        let events = ended.sink.sink().snapshot();
        let rest = Ended {
            sink: (),
            stats: ended.stats,
            kernel: ended.kernel,
            caught_up: ended.caught_up,
        };
        (events, stats, rest)
    }
}

/// The W3C trace context the workloads put on their first message.
pub const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The events of one kind.
pub fn of(events: &[BrokerEvent], kind: EventKind) -> Vec<&BrokerEvent> {
    events.iter().filter(|e| e.kind == kind).collect()
}

/// The events of the connection whose client side uses local port `port`.
pub fn on_port(events: &[BrokerEvent], port: u64) -> Vec<BrokerEvent> {
    events
        .iter()
        .filter(|e| u64::from(e.conn.peer.port()) == port)
        .cloned()
        .collect()
}

/// The wrong password the workloads log in with: it must never reach any output.
pub const CANARY: &str = "canary-Secr3t-pw";

/// Decodes `pid`'s traffic while `work` runs, waits until every connection seen is closed, and
/// returns the events with what `work` returned. Asserts a clean run: every record the kernel
/// wrote was read, none lost, nothing malformed, no resync, every event of `system` and from
/// `pid`, and [`CANARY`] in none of them.
pub fn trace_workload<T>(
    pid: u32,
    system: observer::event::System,
    work: impl FnOnce() -> T,
) -> (Vec<BrokerEvent>, T) {
    let tracer = Tracer::start(
        TargetSpec {
            pids: vec![pid],
            ..Default::default()
        },
        SessionConfig::default(),
    );
    let result = work();
    let all_closed = || {
        let opened = tracer.events.count(EventKind::ConnectionOpened);
        opened > 0 && tracer.events.count(EventKind::ConnectionClosed) == opened
    };
    let closed = wait_until(Duration::from_secs(10), all_closed);
    let (events, stats, ended) = tracer.finish();
    assert!(
        closed,
        "connections still open: {:?}",
        events.iter().map(|e| e.kind).collect::<Vec<_>>()
    );
    assert!(ended.caught_up, "every record the kernel wrote is read");
    assert_eq!(ended.kernel.get(observer_common::Counter::ChunksLost), 0);
    assert_eq!(stats.decoder.malformed, 0, "real traffic decodes cleanly");
    assert_eq!(stats.decoder.resyncs, 0);
    assert!(
        events
            .iter()
            .all(|e| e.system == system && e.conn.pid == Some(pid))
    );
    assert!(
        !format!("{events:?}").contains(CANARY),
        "a credential reached an event"
    );
    (events, result)
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// A port nothing listens on right now (bind to 0 and release).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A scratch directory removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("brokerscope-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        Self { path }
    }
    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Waits for a TCP listener on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    wait_until(timeout, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
}
