//! Types shared by the kernel programs (`observer-ebpf`) and userspace (`observer`).
//!
//! Everything here is `#[repr(C)]` with explicit padding so both sides agree byte for byte;
//! sizes are asserted at compile time. Ring-buffer records all start with a `u32` kind
//! ([`EventKind`]) so the reader can dispatch before it knows the record's type.
#![no_std]

/// Map names, as the kernel object defines them and userspace looks them up.
pub mod maps {
    /// RingBuf carrying every record below.
    pub const EVENTS: &str = "EVENTS";
    /// Array<u32> indexed by local TCP port (host order): non-zero = capture this port.
    pub const TARGET_PORTS: &str = "TARGET_PORTS";
    /// HashMap<u64 socket cookie, u32>: outgoing connections of target processes.
    pub const TARGET_COOKIES: &str = "TARGET_COOKIES";
    /// HashMap<u32 tgid, u32>: target processes (for listen/connect/exit hooks).
    pub const TARGET_PIDS: &str = "TARGET_PIDS";
    /// HashMap<[u8; 16] comm, u32>: process names whose exec is reported.
    pub const TARGET_COMMS: &str = "TARGET_COMMS";
    /// PerCpuArray<u64> indexed by [`crate::Counter`].
    pub const COUNTERS: &str = "COUNTERS";
    /// LruHashMap<[`crate::StreamKey`], [`crate::LostRange`]>: stream bytes the ring dropped.
    pub const LOST_RANGES: &str = "LOST_RANGES";
    /// PerCpuArray<[`crate::ChunkRecord`]>: staging area for one chunk (too big for the stack).
    pub const SCRATCH: &str = "SCRATCH";
}

/// Global variables the loader sets before loading (`EbpfLoader::set_global`).
pub mod globals {
    /// u32: most payload bytes copied from one packet; the rest is reported as truncated.
    pub const CAPTURE_CAP: &str = "CAPTURE_CAP";
    /// u32: non-zero = follow connections the target processes open themselves.
    pub const TRACK_OUTGOING: &str = "TRACK_OUTGOING";
    /// u32: bytes waiting in the ring at which a write wakes the reader; below it records are
    /// written without a wake-up and the reader finds them on its drain timer.
    pub const RING_WAKE_BYTES: &str = "RING_WAKE_BYTES";
}

/// Bytes of payload carried by one chunk record at most.
pub const CHUNK_DATA_MAX: usize = 4096;
/// Upper bound for the per-packet capture cap. GSO/GRO packets are not limited to 64 KiB: on
/// loopback here TCP sends up to tso_max_size (524280 bytes), and 93 KiB packets were seen in
/// tests, so the bound covers the largest TSO packet.
pub const MAX_CAPTURE_CAP: u32 = 512 * 1024;
/// Default per-packet capture cap: whole packets, whatever their size.
pub const DEFAULT_CAPTURE_CAP: u32 = MAX_CAPTURE_CAP;
/// Chunks one packet may be split into (CAPTURE_CAP is clamped to this many chunks).
pub const MAX_CHUNKS_PER_PACKET: u32 = (MAX_CAPTURE_CAP as usize / CHUNK_DATA_MAX) as u32;
/// Entries in TARGET_PORTS: one per TCP port.
pub const PORT_SLOTS: u32 = 65536;

/// First field of every ring record.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A [`ChunkRecord`]: payload bytes (or only flags) of one TCP packet.
    Chunk = 1,
    /// A [`ConnRecord`]: connection established, closed, or a listener opened.
    Conn = 2,
    /// A [`ProcRecord`]: process exec or exit.
    Proc = 3,
}

impl EventKind {
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Chunk),
            2 => Some(Self::Conn),
            3 => Some(Self::Proc),
            _ => None,
        }
    }
}

/// Bits of [`ChunkRecord::flags`].
pub mod chunk_flags {
    /// Packet left the broker's socket (else it arrived at it).
    pub const EGRESS: u32 = 1 << 0;
    /// Addresses are IPv6 (else IPv4 in the first 4 bytes).
    pub const IPV6: u32 = 1 << 1;
    pub const FIN: u32 = 1 << 8;
    pub const SYN: u32 = 1 << 9;
    pub const RST: u32 = 1 << 10;
    pub const PSH: u32 = 1 << 11;
    pub const ACK: u32 = 1 << 12;
    /// Shift that turns the TCP header's flag byte into the bits above.
    pub const TCP_FLAGS_SHIFT: u32 = 8;
}

/// Header of a chunk record; `captured` payload bytes follow it in the ring.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ChunkHeader {
    pub kind: u32,
    pub flags: u32,
    /// CLOCK_MONOTONIC nanoseconds when the program saw the packet.
    pub ts_ns: u64,
    pub cookie: u64,
    /// TCP sequence number of the packet's first payload byte.
    pub seq: u32,
    /// Payload bytes in the whole packet (the real length, whatever was copied).
    pub payload_len: u32,
    /// Offset of this chunk's first byte within the packet payload.
    pub offset: u32,
    /// Payload bytes following this header.
    pub captured: u32,
    /// Broker-side address (IPv4 in the first 4 bytes, network order).
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    /// Host order.
    pub local_port: u16,
    pub remote_port: u16,
    /// How many chunk records this packet produced in total (1 for a flags-only packet).
    pub chunks: u16,
    pub _pad: u16,
}
pub const CHUNK_HEADER_SIZE: usize = core::mem::size_of::<ChunkHeader>();

/// Staging buffer: a header and room for one chunk.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ChunkRecord {
    pub header: ChunkHeader,
    pub data: [u8; CHUNK_DATA_MAX],
}

/// What a [`ConnRecord`] reports.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnOp {
    /// The broker accepted a connection on a captured port.
    Accepted = 1,
    /// A target process's outgoing connection was established.
    Connected = 2,
    /// A captured connection reached TCP_CLOSE.
    Closed = 3,
    /// A target process started listening; the port was added to TARGET_PORTS.
    Listen = 4,
}

impl ConnOp {
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Accepted),
            2 => Some(Self::Connected),
            3 => Some(Self::Closed),
            4 => Some(Self::Listen),
            _ => None,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnRecord {
    pub kind: u32,
    pub op: u32,
    pub ts_ns: u64,
    pub cookie: u64,
    /// Process that ran the hook, where it runs in process context (listen, connect); else 0.
    pub pid: u32,
    /// AF_INET (2) or AF_INET6 (10).
    pub family: u32,
    /// Next sequence number expected from the peer (first byte of the ingress stream).
    pub rcv_nxt: u32,
    /// Next sequence number the socket sends (first byte of the egress stream).
    pub snd_nxt: u32,
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    pub local_port: u16,
    pub remote_port: u16,
    /// TCP state before the change (Closed only).
    pub old_state: u32,
}

/// Values of TARGET_PIDS entries (bits).
pub mod pid_flags {
    /// The process is a target (its exit is reported, its outgoing connections may be followed).
    pub const TARGET: u32 = 1 << 0;
    /// Ports it starts listening on are captured at once (not when it was selected by `--port`).
    pub const FOLLOW_LISTEN: u32 = 1 << 1;
}

/// What a [`ProcRecord`] reports.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcOp {
    Exec = 1,
    Exit = 2,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcRecord {
    pub kind: u32,
    pub op: u32,
    pub ts_ns: u64,
    pub pid: u32,
    pub _pad: u32,
    pub comm: [u8; 16],
}

/// Identifies one direction of one connection in LOST_RANGES.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StreamKey {
    pub cookie: u64,
    /// 1 = egress, 0 = ingress.
    pub egress: u32,
    pub _pad: u32,
}

/// Payload the ring could not take for one stream, since userspace last collected it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LostRange {
    /// Sequence number of the first lost byte.
    pub first_seq: u32,
    /// Sequence number one past the last lost byte (may wrap).
    pub end_seq: u32,
    pub chunks: u32,
    pub bytes: u32,
}

/// Per-CPU counters, indices into COUNTERS.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Packets of captured sockets (after filtering).
    PacketsMatched = 0,
    /// Chunk records written to the ring.
    ChunksEmitted = 1,
    /// Chunk records the ring had no room for.
    ChunksLost = 2,
    /// Payload bytes in lost chunks.
    BytesLost = 3,
    /// Packets whose payload exceeded CAPTURE_CAP.
    PacketsTruncated = 4,
    /// Payload bytes beyond CAPTURE_CAP (not copied).
    BytesTruncated = 5,
    /// bpf_skb_load_bytes failures.
    CopyFailures = 6,
    /// Packets of captured ports whose headers could not be parsed (e.g. IPv6 extension headers).
    HeadersUnsupported = 7,
    /// Connection and process records written.
    ControlEmitted = 8,
    /// Connection and process records the ring had no room for.
    ControlLost = 9,
    /// Payload bytes copied into the ring.
    BytesCaptured = 10,
}

impl Counter {
    pub const ALL: [Counter; 11] = [
        Counter::PacketsMatched,
        Counter::ChunksEmitted,
        Counter::ChunksLost,
        Counter::BytesLost,
        Counter::PacketsTruncated,
        Counter::BytesTruncated,
        Counter::CopyFailures,
        Counter::HeadersUnsupported,
        Counter::ControlEmitted,
        Counter::ControlLost,
        Counter::BytesCaptured,
    ];
    pub const COUNT: u32 = Self::ALL.len() as u32;

    pub const fn name(self) -> &'static str {
        match self {
            Counter::PacketsMatched => "packets_matched",
            Counter::ChunksEmitted => "chunks_emitted",
            Counter::ChunksLost => "chunks_lost",
            Counter::BytesLost => "bytes_lost",
            Counter::PacketsTruncated => "packets_truncated",
            Counter::BytesTruncated => "bytes_truncated",
            Counter::CopyFailures => "copy_failures",
            Counter::HeadersUnsupported => "headers_unsupported",
            Counter::ControlEmitted => "control_emitted",
            Counter::ControlLost => "control_lost",
            Counter::BytesCaptured => "bytes_captured",
        }
    }
}

// Layouts are part of the kernel/user contract: no implicit padding anywhere.
const _: () = assert!(CHUNK_HEADER_SIZE == 80);
const _: () = assert!(core::mem::size_of::<ConnRecord>() == 80);
const _: () = assert!(core::mem::size_of::<ProcRecord>() == 40);
const _: () = assert!(core::mem::size_of::<StreamKey>() == 16);
const _: () = assert!(core::mem::size_of::<LostRange>() == 16);
const _: () = assert!((MAX_CAPTURE_CAP as usize).is_multiple_of(CHUNK_DATA_MAX));
// `ChunkHeader::chunks` is a u16.
const _: () = assert!(MAX_CHUNKS_PER_PACKET <= u16::MAX as u32);

#[cfg(feature = "user")]
mod pod {
    use super::*;
    unsafe impl aya::Pod for StreamKey {}
    unsafe impl aya::Pod for LostRange {}
}
