//! Kafka wire-protocol decoder.
//!
//! What lives where:
//! - this file: the public API ([`KafkaDecoder`], [`looks_like_kafka`], [`MAX_MESSAGE`]) and the
//!   per-direction framer — size prefixes, buffering of partial messages, oversize skipping and
//!   resynchronisation;
//! - `wire`: the reader (classic and flexible encodings: compact strings/arrays, tagged fields),
//!   the per-API table (names, flexible-version thresholds) and error names;
//! - `session`: correlation of responses to requests, topic-id cache, SASL state, and the
//!   request/response → [`BrokerEvent`] mapping;
//! - `records`: record batches (counts, offsets, producer, codec; first-record headers, through
//!   gzip/snappy/lz4/zstd decompression);
//! - `stream`: Fetch responses over [`MAX_MESSAGE`], decoded as they stream past;
//! - `tests`: a small Kafka encoder and the tests.
//!
//! Framing. Every message is `i32 size` + `size` bytes. Requests start with header v1
//! (api_key i16, api_version i16, correlation_id i32, client_id nullable i16-string) or, for
//! flexible versions, v2 (v1 + tagged fields); responses with header v0 (correlation_id) or v1
//! (+ tagged fields) — except ApiVersions responses, always v0. A response has neither api key
//! nor version: they come from the request with the same correlation id (kept per connection,
//! bounded; acks=0 produces expect none). The flexible-version thresholds per API are those of
//! apache/kafka's `clients/src/main/resources/common/message/*.json` (`flexibleVersions`), in
//! `wire`. A message wholly inside the caller's slice is decoded in place ("check then parse":
//! size and header are validated first); only a message split across calls is copied, and only
//! that one, up to [`MAX_MESSAGE`]. A larger Fetch response is decoded while it streams (its
//! structure from a 64 KiB window, its batches one at a time); any other larger message is
//! skipped without buffering — its first bytes are kept for the header, so it still yields a
//! Request/Response event with an `oversize` attr — and counted `oversize`. A body that does
//! not decode is counted `malformed` and skipped by its size prefix (its header event is still
//! emitted): Kafka framing stays reliable while in sync.
//!
//! Resync rule. A size prefix or header that cannot be a message (size < header, size over
//! [`ABSURD_MESSAGE`], api key/version out of range) means lost sync: counted `malformed`, and
//! the framer hunts; so does a gap (`on_gap`, counted as a resync), after which the partial
//! message of that direction is dropped. Hunting tests every byte offset (the gap may have ended
//! on a boundary, so the first byte is a candidate) with strict checks. A request candidate
//! needs size ≤ 100 MiB (the broker's socket.request.max.bytes default), a known api key, a
//! version known for it, a non-negative correlation id, a printable client id (≤
//! [`MAX_HUNT_CLIENT_ID`] bytes) — once requests were seen, the connection's client id and a
//! correlation id just after the last one — and, if it is at most 64 KiB, a body that decodes
//! to its last byte. A response candidate needs the correlation id of a request we wait for.
//! The framer waits for the bytes a candidate needs rather than skip it, so the boundary found
//! does not depend on chunking. Bytes passed over count as `skipped_bytes`, each episode as one
//! `resync`. The first message of a fresh direction is checked as strictly: if it fails, the
//! decoder joined mid-stream — that resync is counted, nothing is malformed.
//!
//! Events (`System::Kafka`, `method` = API name). Every request → `Request` (attrs
//! `api_version`, `correlation_id`; `client_id`); every response → `Response` with `reply_code`
//! (top-level or first non-zero partition error; i16 as u16, so -1 reads 65535), `reply_text`
//! (error message or name) and `latency_ns`. Produce → one `Publish` per partition (record
//! count, batch bytes, fingerprint of the record bytes, first record's trace headers, acks,
//! producer, codec); its response → `Confirm` (offset = base offset) or `Nack` per partition.
//! Fetch response → one `Deliver` per partition with records (offset = first record handed to
//! the consumer, i.e. from the fetch offset; `last_offset`, `high_watermark`,
//! `last_stable_offset`). OffsetCommit → `Ack` per partition (group, offset), its partition
//! errors → `Error`. JoinGroup → `Subscribe`, SyncGroup/Heartbeat → `Control`, LeaveGroup →
//! `Unsubscribe`. SaslAuthenticate → `Auth` when the exchange ends (user from PLAIN or the
//! SCRAM client-first message; passwords are never copied). CreateTopics/CreatePartitions/
//! CreateAcls → `Declare`, DeleteTopics/DeleteAcls → `Delete`, (Incremental)AlterConfigs →
//! `Control` (config names only, never values). Lag: a Fetch `Response` carries one
//! `("hw", "topic/partition=N")` attr per partition (records or not, at most 64), each
//! `Deliver` its `high_watermark`; `latency_ns` is set only for fetches that returned records
//! (the raw time is `elapsed_ns`; `long_poll` = "true" when the broker had nothing to return).
//!
//! Not decoded: SASL tokens after a SaslHandshake v0 (sent without Kafka headers; clients since
//! Kafka 1.0 use SaslAuthenticate) — such a connection resyncs after them.
mod records;
mod session;
mod stream;
#[cfg(test)]
mod tests;
mod wire;

use std::fmt;

use session::Session;
use stream::FetchStream;

use crate::{
    capture::Direction,
    event::{BrokerEvent, System},
    protocol::{Ctx, DecoderStats, ProtocolDecoder},
};

/// Largest message buffered (one per direction at most). A Fetch response up to this size is
/// decoded whole; larger ones are skipped (counted `oversize`) after their header.
pub const MAX_MESSAGE: usize = 16 << 20;
/// A size prefix above this is lost sync, not a message.
pub const ABSURD_MESSAGE: usize = 1 << 30;
/// Largest size a resync candidate may claim (broker's socket.request.max.bytes default).
const HUNT_MAX_SIZE: usize = 100 << 20;
/// Longest client id a resync (or first-message) candidate may carry.
pub const MAX_HUNT_CLIENT_ID: usize = 1024;
/// Bytes needed to decide any candidate: size, header fixed part, client id.
const HEAD_MAX: usize = 4 + 10 + MAX_HUNT_CLIENT_ID;
/// Resync candidates up to this size (prefix included) must decode whole to be accepted.
const VERIFY_MAX: usize = 64 << 10;
/// Most bytes held while deciding a candidate.
const HUNT_WINDOW: usize = if VERIFY_MAX > HEAD_MAX {
    VERIFY_MAX
} else {
    HEAD_MAX
};
/// First bytes of an oversize message kept for its header.
const OVERSIZE_HEAD: usize = HEAD_MAX;

/// True if `client_first` (the first bytes a client sent) starts like a Kafka request: i32
/// size, api_key 0..=100, api_version 0..=20, a correlation id, and a nullable client id of
/// printable bytes. `None` while undecided.
pub fn looks_like_kafka(client_first: &[u8]) -> Option<bool> {
    let c = Cat {
        a: client_first,
        b: &[],
    };
    if client_first.is_empty() {
        return None;
    }
    if c.len() >= 4 && !(10..=HUNT_MAX_SIZE).contains(&(c.i32(0) as usize)) {
        return Some(false);
    }
    if c.len() < 4 {
        return if client_first[0] == 0 {
            None
        } else {
            Some(false)
        };
    }
    if c.len() >= 8 {
        let (key, version) = (c.i16(4), c.i16(6));
        if !(0..=wire::MAX_API_KEY).contains(&key)
            || !(0..=wire::MAX_API_VERSION).contains(&version)
        {
            return Some(false);
        }
    }
    if c.len() < 14 {
        return None;
    }
    let id_len = c.i16(12);
    if id_len == -1 {
        return Some(true);
    }
    if id_len < 0
        || id_len as usize > MAX_HUNT_CLIENT_ID
        || 10 + id_len as usize > c.i32(0) as usize
    {
        return Some(false);
    }
    let id = &client_first[14..client_first.len().min(14 + id_len as usize)];
    if !id.iter().all(|b| (0x20..0x7f).contains(b)) {
        return Some(false);
    }
    if id.len() < id_len as usize {
        None
    } else {
        Some(true)
    }
}

pub use session::TopicIds;

/// One connection's Kafka decoder (both directions).
#[derive(Debug)]
pub struct KafkaDecoder {
    /// Indexed by `Direction as usize`.
    framers: [Framer; 2],
    session: Session,
    stats: DecoderStats,
    /// Largest message buffered per direction ([`MAX_MESSAGE`]; tests lower it).
    limits: [usize; 2],
}

impl Default for KafkaDecoder {
    fn default() -> Self {
        Self {
            framers: Default::default(),
            session: Session::default(),
            stats: DecoderStats::default(),
            limits: [MAX_MESSAGE; 2],
        }
    }
}

impl KafkaDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder resolving topic ids through a map shared with the other connections.
    pub fn with_topic_ids(topic_ids: TopicIds) -> Self {
        let mut decoder = Self::default();
        decoder.session.topic_ids = topic_ids;
        decoder
    }

    /// A decoder that buffers responses only up to `limit` bytes (streaming the rest).
    #[cfg(test)]
    fn with_response_limit(limit: usize) -> Self {
        let mut d = Self::default();
        d.limits[Direction::Egress as usize] = limit;
        d
    }
}

#[derive(Default)]
struct Framer {
    phase: Phase,
    sync: Sync,
    /// `Head`: undecided bytes from `head` on (≤ HUNT_WINDOW); `Body`: the partial message with
    /// its size prefix; `Skip`: the first bytes of the oversize message.
    buf: Vec<u8>,
    head: usize,
    /// `Skip` of a Fetch response: decoded as it streams past.
    stream: Option<Box<FetchStream>>,
}

// Manual: `buf` may hold a partial SaslAuthenticate (with a password); lengths only.
impl fmt::Debug for Framer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Framer")
            .field("phase", &self.phase)
            .field("sync", &self.sync)
            .field("buffered", &self.buf.len())
            .field("stream", &self.stream.is_some())
            .finish()
    }
}

impl Drop for Framer {
    fn drop(&mut self) {
        self.buf.fill(0);
    }
}

impl Framer {
    fn clear(&mut self) {
        self.buf.fill(0);
        self.buf.clear();
        self.head = 0;
        self.stream = None;
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Phase {
    /// At a message boundary, or hunting for one.
    #[default]
    Head,
    /// A message of `total` bytes (prefix included) is being buffered.
    Body { total: usize },
    /// Skipping the rest of an oversize message.
    Skip { left: usize, total: usize },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Sync {
    /// Fresh direction: the first message decides whether we joined mid-stream.
    #[default]
    Joining,
    Synced,
    Hunting,
}

/// Two slices read as one (buffered bytes, then new ones) without copying.
#[derive(Clone, Copy)]
struct Cat<'a> {
    a: &'a [u8],
    b: &'a [u8],
}

impl Cat<'_> {
    fn len(&self) -> usize {
        self.a.len() + self.b.len()
    }
    fn at(&self, i: usize) -> u8 {
        if i < self.a.len() {
            self.a[i]
        } else {
            self.b[i - self.a.len()]
        }
    }
    fn i16(&self, i: usize) -> i16 {
        i16::from_be_bytes([self.at(i), self.at(i + 1)])
    }
    fn i32(&self, i: usize) -> i32 {
        i32::from_be_bytes([self.at(i), self.at(i + 1), self.at(i + 2), self.at(i + 3)])
    }
}

enum Verdict {
    /// More bytes are needed to decide.
    More,
    /// Not a message start.
    Bad,
    /// A message of `total` bytes, prefix included.
    Frame { total: usize },
}

/// Decides whether `c` starts a message. `strict`: hunting (or the first message).
fn check(dir: Direction, strict: bool, session: &Session, c: Cat<'_>) -> Verdict {
    if c.len() < 4 {
        return Verdict::More;
    }
    let size = c.i32(0);
    let min = if dir == Direction::Ingress { 10 } else { 4 };
    let max = if strict {
        HUNT_MAX_SIZE
    } else {
        ABSURD_MESSAGE
    };
    if size < min || size as usize > max {
        return Verdict::Bad;
    }
    let size = size as usize;
    let frame = Verdict::Frame { total: size + 4 };
    if dir == Direction::Egress {
        if c.len() < 8 {
            return Verdict::More;
        }
        return if !strict || session.awaits(c.i32(4)) {
            frame
        } else {
            Verdict::Bad
        };
    }
    if c.len() < 8 {
        return Verdict::More;
    }
    let (key, version) = (c.i16(4), c.i16(6));
    if !(0..=wire::MAX_API_KEY).contains(&key) || !(0..=wire::MAX_API_VERSION).contains(&version) {
        return Verdict::Bad;
    }
    if !strict {
        return frame;
    }
    match wire::api_info(key) {
        Some(api) if version <= api.max => {}
        _ => return Verdict::Bad,
    }
    if c.len() < 14 {
        return Verdict::More;
    }
    if c.i32(8) < 0 {
        return Verdict::Bad;
    }
    let id_len = c.i16(12);
    if id_len < -1
        || id_len.max(0) as usize > MAX_HUNT_CLIENT_ID
        || 10 + id_len.max(0) as usize > size
    {
        return Verdict::Bad;
    }
    // Judge the bytes already here first: a candidate fails at its first unprintable byte
    // without waiting for the rest (same verdict however the bytes arrive).
    let end = 14 + id_len.max(0) as usize;
    if !(14..end.min(c.len())).all(|i| (0x20..0x7f).contains(&c.at(i))) {
        return Verdict::Bad;
    }
    if c.len() < end {
        return Verdict::More;
    }
    let id: Vec<u8> = (14..end).map(|i| c.at(i)).collect();
    if !session.follows(c.i32(8), (id_len >= 0).then_some(&id[..])) {
        return Verdict::Bad;
    }
    // A plausible header can still be chance (an empty client id after four zero bytes is
    // common inside record data): a small candidate must also decode, to its last byte.
    if size + 4 <= VERIFY_MAX {
        if c.len() < size + 4 {
            return Verdict::More;
        }
        let msg: Vec<u8> = (4..size + 4).map(|i| c.at(i)).collect();
        if !session::verify_request(&msg) {
            return Verdict::Bad;
        }
    }
    frame
}

impl KafkaDecoder {
    /// A whole message (prefix included).
    fn dispatch(
        session: &mut Session,
        stats: &mut DecoderStats,
        ctx: &Ctx<'_>,
        msg: &[u8],
        out: &mut dyn FnMut(BrokerEvent),
    ) {
        stats.frames += 1;
        let body = &msg[4..];
        let r = match ctx.dir {
            Direction::Ingress => session.request(ctx, body, out),
            Direction::Egress => session.response(ctx, body, out),
        };
        if r.is_err() {
            stats.malformed += 1;
        }
    }

    /// Whether a buffered message may hold credentials (zeroed after use).
    fn secret(dir: Direction, msg: &[u8]) -> bool {
        dir == Direction::Ingress
            && msg.len() >= 6
            && matches!(
                i16::from_be_bytes([msg[4], msg[5]]),
                wire::SASL_HANDSHAKE | wire::SASL_AUTHENTICATE
            )
    }

    fn feed(&mut self, ctx: &Ctx<'_>, data: &[u8], out: &mut dyn FnMut(BrokerEvent)) {
        let Self {
            framers,
            session,
            stats,
            limits,
        } = self;
        let f = &mut framers[ctx.dir as usize];
        let limit = limits[ctx.dir as usize];
        let mut pos = 0usize;
        loop {
            match f.phase {
                Phase::Head => {
                    let c = Cat {
                        a: &f.buf[f.head..],
                        b: &data[pos..],
                    };
                    if c.len() == 0 {
                        f.clear();
                        return;
                    }
                    match check(ctx.dir, f.sync != Sync::Synced, session, c) {
                        Verdict::More => {
                            // Fewer than HUNT_WINDOW bytes: keep them for the next call.
                            f.buf.drain(..f.head);
                            f.head = 0;
                            f.buf.extend_from_slice(&data[pos..]);
                            debug_assert!(f.buf.len() < HUNT_WINDOW + 4);
                            return;
                        }
                        Verdict::Bad => {
                            match f.sync {
                                Sync::Synced => {
                                    stats.malformed += 1;
                                    stats.resyncs += 1;
                                }
                                Sync::Joining => stats.resyncs += 1,
                                Sync::Hunting => {}
                            }
                            f.sync = Sync::Hunting;
                            stats.skipped_bytes += 1;
                            if f.head < f.buf.len() {
                                f.head += 1;
                            } else {
                                pos += 1;
                            }
                        }
                        Verdict::Frame { total } => {
                            f.sync = Sync::Synced;
                            // Egress frames were judged on ≥ 8 bytes: the correlation id.
                            let corr = (ctx.dir == Direction::Egress).then(|| c.i32(4));
                            let buffered = f.buf.len() - f.head;
                            if buffered >= total {
                                // Decided inside bytes kept while hunting.
                                let buf = std::mem::take(&mut f.buf);
                                let at = f.head;
                                Self::dispatch(session, stats, ctx, &buf[at..at + total], out);
                                f.buf = buf;
                                f.head += total;
                                continue;
                            }
                            if buffered == 0 && data.len() - pos >= total && total <= limit + 4 {
                                // Whole message in the slice: decode in place.
                                Self::dispatch(session, stats, ctx, &data[pos..pos + total], out);
                                pos += total;
                                continue;
                            }
                            f.buf.drain(..f.head);
                            f.head = 0;
                            if total <= limit + 4 {
                                // One allocation for the whole message: no stale copies of a
                                // growing buffer are left behind.
                                f.buf.reserve_exact(total - f.buf.len());
                                f.phase = Phase::Body { total };
                            } else {
                                let version = corr.and_then(|c| session.fetch_stream_version(c));
                                match (corr, version) {
                                    (Some(corr), Some(v)) => {
                                        let mut st = FetchStream::new(corr, v, total - 4);
                                        st.feed(&f.buf[4.min(buffered)..], session);
                                        f.stream = Some(Box::new(st));
                                    }
                                    _ => stats.oversize += 1,
                                }
                                f.buf.truncate(OVERSIZE_HEAD);
                                f.phase = Phase::Skip {
                                    left: total - buffered,
                                    total,
                                };
                            }
                        }
                    }
                }
                Phase::Body { total } => {
                    let take = (total - f.buf.len()).min(data.len() - pos);
                    f.buf.extend_from_slice(&data[pos..pos + take]);
                    pos += take;
                    if f.buf.len() < total {
                        return;
                    }
                    let msg = std::mem::take(&mut f.buf);
                    Self::dispatch(session, stats, ctx, &msg, out);
                    f.buf = msg;
                    if Self::secret(ctx.dir, &f.buf) {
                        f.buf.fill(0);
                    }
                    f.buf.clear();
                    if f.buf.capacity() > HEAD_MAX * 4 {
                        f.buf = Vec::new();
                    }
                    f.phase = Phase::Head;
                }
                Phase::Skip { left, total } => {
                    let n = left.min(data.len() - pos);
                    if let Some(st) = &mut f.stream {
                        // Bytes of the size prefix (if some are still to come) are not fed.
                        let skip = 4usize.saturating_sub(total - left).min(n);
                        st.feed(&data[pos + skip..pos + n], session);
                    }
                    let keep = OVERSIZE_HEAD.saturating_sub(f.buf.len()).min(n);
                    f.buf.extend_from_slice(&data[pos..pos + keep]);
                    pos += n;
                    if n < left {
                        f.phase = Phase::Skip {
                            left: left - n,
                            total,
                        };
                        return;
                    }
                    stats.frames += 1;
                    let head = &f.buf[4.min(f.buf.len())..];
                    let streamed = f.stream.take().map(|st| (st.corr, st.finish()));
                    match (ctx.dir, streamed) {
                        (_, Some((corr, Some(result)))) => {
                            session.finish_stream(ctx, corr, result, out);
                        }
                        (Direction::Ingress, _) => {
                            session.oversize_request(ctx, head, total - 4, out)
                        }
                        (Direction::Egress, streamed) => {
                            if streamed.is_some() {
                                // The stream did not decode: skipped after all.
                                stats.oversize += 1;
                            }
                            session.oversize_response(ctx, head, total - 4, out)
                        }
                    }
                    f.clear();
                    f.phase = Phase::Head;
                }
            }
        }
    }
}

impl ProtocolDecoder for KafkaDecoder {
    fn system(&self) -> System {
        System::Kafka
    }

    fn on_data(&mut self, ctx: &Ctx<'_>, bytes: &[u8], out: &mut dyn FnMut(BrokerEvent)) {
        self.stats.bytes += bytes.len() as u64;
        self.feed(ctx, bytes, out);
    }

    fn on_gap(&mut self, ctx: &Ctx<'_>, _len: u32, _out: &mut dyn FnMut(BrokerEvent)) {
        let f = &mut self.framers[ctx.dir as usize];
        f.clear();
        f.phase = Phase::Head;
        f.sync = Sync::Hunting;
        self.stats.resyncs += 1;
    }

    fn on_end(&mut self, ctx: &Ctx<'_>, _out: &mut dyn FnMut(BrokerEvent)) {
        // Whatever was partial stays incomplete; free it.
        let f = &mut self.framers[ctx.dir as usize];
        f.clear();
        f.buf = Vec::new();
        f.phase = Phase::Head;
        f.sync = Sync::Hunting;
    }

    fn stats(&self) -> DecoderStats {
        DecoderStats {
            buffered_bytes: self
                .framers
                .iter()
                .map(|f| f.buf.len() - f.head + f.stream.as_ref().map_or(0, |s| s.buffered()))
                .sum(),
            ..self.stats
        }
    }
}
