//! AMQP 0-9-1 (RabbitMQ) decoder.
//!
//! What lives where:
//! - this file: the public API ([`AmqpDecoder`], [`looks_like_amqp`], frame-size bounds) and the
//!   per-direction framer — protocol header, frame headers, buffering of partial frames, body
//!   streaming, oversize skipping and resynchronisation;
//! - `session`: connection/channel state and the frame → [`BrokerEvent`] mapping (login, vhost,
//!   channels, publisher confirms, consumer tags, message assembly);
//! - `wire`: argument reader, field tables and their bounded text rendering, content properties;
//! - `tests`: byte-level encoders and the tests.
//!
//! Framing. A frame is `type u8, channel u16, size u32, payload[size], 0xCE`. Method and content
//! header frames are parsed straight from the caller's slice when whole ("check then parse": the
//! frame-end octet is verified first); only a frame split across calls is copied, and only that
//! one frame. Body frames are never buffered: their bytes feed the message's
//! [`Fingerprint`](crate::event::Fingerprint) as they arrive. A frame larger than the limit (the
//! negotiated frame_max, [`MAX_FRAME`] until tune/tune-ok is seen) is skipped without buffering
//! and counted `oversize`.
//!
//! Resync rule. After a gap, a malformed frame (bad type, bad frame-end octet, undecodable
//! arguments, absurd size) or when joined mid-stream, the framer looks for the first offset where
//! `type ∈ {1,2,3,8}`, `size ≤ limit`, the octet at `offset + 7 + size` is 0xCE, and the payload
//! starts plausibly (a known method, class 60 for a header, an empty heartbeat on channel 0). It
//! waits for the bytes needed to decide a candidate rather than skip it, so the boundary found
//! does not depend on how the stream was chunked; the scan window never exceeds `limit + 8`
//! bytes. Bytes passed over count as `skipped_bytes`, each episode as one `resync`; partial
//! messages of that direction are dropped.
mod session;
#[cfg(test)]
mod tests;
mod wire;

use std::fmt;

use session::{Bad, Session, method_name};

use crate::{
    capture::Direction,
    event::{BrokerEvent, System},
    protocol::{Ctx, DecoderStats, ProtocolDecoder},
};

/// Frame payload limit before connection.tune/tune-ok negotiate one (RabbitMQ's default
/// frame_max is 131072; 1 MiB leaves room for brokers configured higher).
pub const MAX_FRAME: usize = 1 << 20;
/// Upper bound on a negotiated frame_max (0 = "unlimited" also maps here).
pub const MAX_NEGOTIATED_FRAME: usize = 16 << 20;
/// Lower bound on a negotiated frame_max (AMQP's frame-min-size).
pub const MIN_FRAME: usize = 4096;
/// A frame header claiming more than this is not skipped as oversize but treated as lost sync:
/// no broker sends such frames, desynchronised bytes do.
const ABSURD_FRAME: u32 = 256 << 20;

const PROTOCOL_HEADERS: [&[u8; 8]; 3] = [
    b"AMQP\x00\x00\x09\x01",
    b"AMQP\x01\x01\x00\x09",
    b"AMQP\x01\x01\x09\x01",
];

const FRAME_METHOD: u8 = 1;
const FRAME_HEADER: u8 = 2;
const FRAME_BODY: u8 = 3;
const FRAME_HEARTBEAT: u8 = 8;
const FRAME_END: u8 = 0xCE;

/// True if `bytes` (the first bytes a client sent) start an AMQP 0-9-1 connection (or a legacy
/// 0-9 / 0-8 header); `None` while they are a proper prefix of one.
pub fn looks_like_amqp(bytes: &[u8]) -> Option<bool> {
    let n = bytes.len().min(8);
    if !PROTOCOL_HEADERS.iter().any(|h| h[..n] == bytes[..n]) {
        Some(false)
    } else if n < 8 {
        None
    } else {
        Some(true)
    }
}

/// One connection's AMQP decoder (both directions).
#[derive(Debug, Default)]
pub struct AmqpDecoder {
    /// Indexed by `Direction as usize`.
    framers: [Framer; 2],
    session: Session,
    stats: DecoderStats,
}

impl AmqpDecoder {
    pub fn new() -> Self {
        Self::default()
    }
}

#[derive(Default)]
struct Framer {
    phase: Phase,
    /// `Start`: the protocol header so far; `Frame`/`Payload`: the one partial frame;
    /// `Resync`: the scan window.
    buf: Vec<u8>,
    /// `Resync`: bytes of `buf` before this are proven not to start a frame.
    head: usize,
}

// Manual: `buf` may hold a partial start-ok (with its password); show its length only.
impl fmt::Debug for Framer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Framer")
            .field("phase", &self.phase)
            .field("buffered", &self.buf.len())
            .finish()
    }
}

#[derive(Clone, Copy, Debug, Default)]
enum Phase {
    /// Nothing seen: a protocol header, or bytes from the middle of a connection.
    #[default]
    Start,
    /// At a frame boundary (`buf` may hold the first < 7 bytes of a header).
    Frame,
    /// A method/header/heartbeat frame of `total` bytes; `buf` holds its first bytes.
    Payload { ty: u8, channel: u16, total: usize },
    /// Streaming a body frame's payload.
    Body {
        channel: u16,
        left: u32,
        track: bool,
    },
    /// Skipping an oversize frame's payload.
    Skip { left: u32 },
    /// Expecting the frame-end octet of a streamed frame (`body`: its channel, tracked?).
    End { body: Option<(u16, bool)> },
    /// Looking for a provable frame boundary. `counted`: this episode is already in `resyncs`
    /// (a mid-stream join counts only if it has to skip bytes).
    Resync { counted: bool },
}

/// How one call of `feed` ended.
enum Fed {
    /// Every byte consumed (or buffered).
    All,
    /// A resync proved a frame at the start of `window`: decode `window`, then `data[used..]`.
    Replay { used: usize, window: Vec<u8> },
}

enum Class {
    /// Not a frame: lost sync.
    Invalid,
    Oversize,
    Body,
    Whole,
}

fn classify(ty: u8, size: u32, limit: usize) -> Class {
    match ty {
        _ if size > ABSURD_FRAME => Class::Invalid,
        FRAME_METHOD | FRAME_HEADER | FRAME_BODY | FRAME_HEARTBEAT if size as usize > limit => {
            Class::Oversize
        }
        FRAME_BODY => Class::Body,
        FRAME_METHOD | FRAME_HEADER | FRAME_HEARTBEAT => Class::Whole,
        _ => Class::Invalid,
    }
}

fn frame_header(h: &[u8]) -> (u8, u16, u32) {
    (
        h[0],
        u16::from_be_bytes([h[1], h[2]]),
        u32::from_be_bytes([h[3], h[4], h[5], h[6]]),
    )
}

/// First offset ≥ `from` in `buf` that provably starts a frame: `(true, offset)`; or
/// `(false, offset)` of the first candidate that cannot be decided without more bytes.
fn scan(buf: &[u8], from: usize, limit: usize) -> (bool, usize) {
    let mut i = from;
    while i + 7 <= buf.len() {
        let (ty, ch, size) = frame_header(&buf[i..i + 7]);
        let size = size as usize;
        let plausible = match ty {
            FRAME_METHOD => size >= 4,
            FRAME_HEADER => size >= 14,
            FRAME_BODY => true,
            FRAME_HEARTBEAT => size == 0 && ch == 0,
            _ => false,
        };
        if plausible && size <= limit {
            let end = i + 7 + size;
            if end >= buf.len() {
                return (false, i);
            }
            if buf[end] == FRAME_END && payload_plausible(ty, &buf[i + 7..end]) {
                return (true, i);
            }
        }
        i += 1;
    }
    (false, i)
}

fn payload_plausible(ty: u8, p: &[u8]) -> bool {
    let id = |at: usize| u16::from_be_bytes([p[at], p[at + 1]]);
    match ty {
        FRAME_METHOD => method_name(id(0), id(2)).is_some(),
        FRAME_HEADER => id(0) == 60,
        _ => true,
    }
}

impl AmqpDecoder {
    fn enter_resync(
        f: &mut Framer,
        session: &mut Session,
        stats: &mut DecoderStats,
        dir: Direction,
    ) {
        stats.resyncs += 1;
        f.phase = Phase::Resync { counted: true };
        session.lost_sync(dir);
    }

    /// A complete, end-checked frame. Returns false if the framer must resync after it.
    fn dispatch(
        session: &mut Session,
        stats: &mut DecoderStats,
        ctx: &Ctx<'_>,
        ty: u8,
        ch: u16,
        payload: &[u8],
        out: &mut dyn FnMut(BrokerEvent),
    ) -> bool {
        let r = match ty {
            FRAME_METHOD => session.method(ctx, ch, payload, out),
            FRAME_HEADER => session.content_header(ctx, ch, payload, out),
            _ => Ok(()), // heartbeat
        };
        match r {
            Ok(()) => {
                stats.frames += 1;
                true
            }
            Err(Bad::Unknown) => {
                stats.malformed += 1;
                true
            }
            Err(Bad::Undecodable) => {
                stats.malformed += 1;
                false
            }
        }
    }

    /// Decodes `data` (one direction) until it is used up or a resync proves a boundary.
    fn feed(&mut self, ctx: &Ctx<'_>, data: &[u8], out: &mut dyn FnMut(BrokerEvent)) -> Fed {
        let dir = ctx.dir;
        let Self {
            framers,
            session,
            stats,
        } = self;
        let f = &mut framers[dir as usize];
        let mut pos = 0usize;
        loop {
            let limit = session.frame_limit();
            match f.phase {
                Phase::Start => {
                    while f.buf.len() < 8 && pos < data.len() {
                        let b = data[pos];
                        if f.buf.len() < 4 && b != b"AMQP"[f.buf.len()] {
                            // Not a protocol header: joined mid-stream (or the broker's first
                            // frame). Resync from here; a frame at offset 0 costs nothing.
                            f.phase = Phase::Resync { counted: false };
                            f.head = 0;
                            break;
                        }
                        f.buf.push(b);
                        pos += 1;
                    }
                    if matches!(f.phase, Phase::Start) {
                        if f.buf.len() < 8 {
                            return Fed::All;
                        }
                        // Any "AMQP" + 4 version octets: a header (even one the peer refuses).
                        f.buf.clear();
                        f.phase = Phase::Frame;
                    }
                }
                Phase::Frame => {
                    let avail = data.len() - pos;
                    let from_buf = !f.buf.is_empty();
                    if from_buf {
                        let take = (7 - f.buf.len()).min(avail);
                        f.buf.extend_from_slice(&data[pos..pos + take]);
                        pos += take;
                        if f.buf.len() < 7 {
                            return Fed::All;
                        }
                    } else if avail < 7 {
                        f.buf.extend_from_slice(&data[pos..]);
                        return Fed::All;
                    }
                    let (ty, ch, size) = frame_header(if from_buf {
                        &f.buf[..7]
                    } else {
                        &data[pos..pos + 7]
                    });
                    match classify(ty, size, limit) {
                        Class::Invalid => {
                            stats.malformed += 1;
                            stats.skipped_bytes += 1;
                            Self::enter_resync(f, session, stats, dir);
                            // Scan again from the octet after the bogus frame start.
                            if from_buf {
                                f.head = 1;
                            } else {
                                pos += 1;
                                f.head = 0;
                            }
                        }
                        class => {
                            if from_buf {
                                f.buf.clear();
                            } else {
                                pos += 7;
                            }
                            f.phase = match class {
                                Class::Oversize => {
                                    stats.oversize += 1;
                                    if ty == FRAME_BODY {
                                        session.drop_content(dir, ch);
                                    }
                                    Phase::Skip { left: size }
                                }
                                Class::Body => {
                                    let track =
                                        session.body_start(dir, ch, size).unwrap_or_else(|()| {
                                            stats.malformed += 1;
                                            false
                                        });
                                    Phase::Body {
                                        channel: ch,
                                        left: size,
                                        track,
                                    }
                                }
                                _ => {
                                    let total = size as usize + 8;
                                    let rest = data.len() - pos;
                                    if !from_buf && rest >= total - 7 {
                                        // Whole frame in the slice: parse in place.
                                        let start = pos - 7;
                                        let frame = &data[start..start + total];
                                        if frame[total - 1] != FRAME_END {
                                            stats.malformed += 1;
                                            stats.skipped_bytes += 1;
                                            Self::enter_resync(f, session, stats, dir);
                                            pos = start + 1;
                                            f.head = 0;
                                            continue;
                                        }
                                        pos = start + total;
                                        if !Self::dispatch(
                                            session,
                                            stats,
                                            ctx,
                                            ty,
                                            ch,
                                            &frame[7..total - 1],
                                            out,
                                        ) {
                                            Self::enter_resync(f, session, stats, dir);
                                            f.head = 0;
                                            continue;
                                        }
                                        Phase::Frame
                                    } else {
                                        // Buffer it: the header back in, then the payload.
                                        f.buf.reserve(total);
                                        f.buf.extend_from_slice(&frame_header_bytes(ty, ch, size));
                                        Phase::Payload {
                                            ty,
                                            channel: ch,
                                            total,
                                        }
                                    }
                                }
                            };
                        }
                    }
                }
                Phase::Payload { ty, channel, total } => {
                    let take = (total - f.buf.len()).min(data.len() - pos);
                    f.buf.extend_from_slice(&data[pos..pos + take]);
                    pos += take;
                    if f.buf.len() < total {
                        return Fed::All;
                    }
                    if f.buf[total - 1] != FRAME_END {
                        stats.malformed += 1;
                        stats.skipped_bytes += 1;
                        Self::enter_resync(f, session, stats, dir);
                        f.head = 1;
                        continue;
                    }
                    let frame = std::mem::take(&mut f.buf);
                    let ok =
                        Self::dispatch(session, stats, ctx, ty, channel, &frame[7..total - 1], out);
                    f.buf = frame;
                    if ty == FRAME_METHOD && f.buf.get(7..9) == Some(&[0, 10][..]) {
                        // connection.* (start-ok, secure-ok, update-secret carry secrets):
                        // do not leave them in the reused buffer.
                        f.buf.fill(0);
                    }
                    f.buf.clear();
                    f.phase = Phase::Frame;
                    if !ok {
                        Self::enter_resync(f, session, stats, dir);
                        f.head = 0;
                    }
                }
                Phase::Body {
                    channel,
                    left,
                    track,
                } => {
                    if pos == data.len() {
                        return Fed::All;
                    }
                    let n = (left as usize).min(data.len() - pos);
                    if track {
                        session.body_bytes(dir, channel, &data[pos..pos + n]);
                    }
                    pos += n;
                    let left = left - n as u32;
                    f.phase = if left == 0 {
                        Phase::End {
                            body: Some((channel, track)),
                        }
                    } else {
                        Phase::Body {
                            channel,
                            left,
                            track,
                        }
                    };
                }
                Phase::Skip { left } => {
                    if pos == data.len() {
                        return Fed::All;
                    }
                    let n = (left as usize).min(data.len() - pos);
                    pos += n;
                    let left = left - n as u32;
                    f.phase = if left == 0 {
                        Phase::End { body: None }
                    } else {
                        Phase::Skip { left }
                    };
                }
                Phase::End { body } => {
                    if pos == data.len() {
                        return Fed::All;
                    }
                    if data[pos] != FRAME_END {
                        // The streamed payload was not a frame after all; rescan from this octet.
                        stats.malformed += 1;
                        Self::enter_resync(f, session, stats, dir);
                        f.head = 0;
                        continue;
                    }
                    pos += 1;
                    f.phase = Phase::Frame;
                    if let Some((channel, track)) = body {
                        stats.frames += 1;
                        if track {
                            session.body_end(ctx, channel, out);
                        }
                    }
                }
                Phase::Resync { counted } => {
                    let cap = limit + 8;
                    // Drop the proven-garbage prefix when it is large or the window is full.
                    if f.head > 0 && (f.head * 2 >= f.buf.len() || f.buf.len() >= cap) {
                        f.buf.drain(..f.head);
                        f.head = 0;
                    }
                    let take = cap.saturating_sub(f.buf.len()).min(data.len() - pos);
                    f.buf.extend_from_slice(&data[pos..pos + take]);
                    pos += take;
                    let (found, mut at) = scan(&f.buf, f.head, limit);
                    if !found && take == 0 && at == f.head && f.buf.len() >= cap {
                        // Cannot happen while limit is stable (a candidate needs ≤ cap bytes);
                        // guards progress if the limit shrank under a full window.
                        at += 1;
                    }
                    let skipped = at - f.head;
                    if skipped > 0 {
                        stats.skipped_bytes += skipped as u64;
                        if !counted {
                            stats.resyncs += 1;
                            f.phase = Phase::Resync { counted: true };
                        }
                    }
                    f.head = at;
                    if found {
                        let mut window = std::mem::take(&mut f.buf);
                        window.drain(..at);
                        f.head = 0;
                        f.phase = Phase::Frame;
                        return Fed::Replay { used: pos, window };
                    }
                    if pos == data.len() {
                        return Fed::All;
                    }
                }
            }
        }
    }
}

fn frame_header_bytes(ty: u8, ch: u16, size: u32) -> [u8; 7] {
    let [c0, c1] = ch.to_be_bytes();
    let [s0, s1, s2, s3] = size.to_be_bytes();
    [ty, c0, c1, s0, s1, s2, s3]
}

impl ProtocolDecoder for AmqpDecoder {
    fn system(&self) -> System {
        System::Amqp
    }

    fn on_data(&mut self, ctx: &Ctx<'_>, bytes: &[u8], out: &mut dyn FnMut(BrokerEvent)) {
        self.stats.bytes += bytes.len() as u64;
        let mut input = bytes;
        // Bytes a resync proved to start with a frame; they come before `input`. Each replay is
        // shorter than the one before (the resync passed over at least one octet), and at most
        // one window (≤ limit + 8) long.
        let mut replay: Vec<u8> = Vec::new();
        loop {
            if !replay.is_empty() {
                let r = std::mem::take(&mut replay);
                if let Fed::Replay { used, window } = self.feed(ctx, &r, out) {
                    replay = window;
                    replay.extend_from_slice(&r[used..]);
                }
                continue;
            }
            match self.feed(ctx, input, out) {
                Fed::All => break,
                Fed::Replay { used, window } => {
                    input = &input[used..];
                    replay = window;
                }
            }
        }
    }

    fn on_gap(&mut self, ctx: &Ctx<'_>, _len: u32, _out: &mut dyn FnMut(BrokerEvent)) {
        let f = &mut self.framers[ctx.dir as usize];
        f.buf.clear();
        f.head = 0;
        Self::enter_resync(f, &mut self.session, &mut self.stats, ctx.dir);
    }

    fn on_end(&mut self, ctx: &Ctx<'_>, _out: &mut dyn FnMut(BrokerEvent)) {
        // Whatever was partial stays incomplete; free it.
        let f = &mut self.framers[ctx.dir as usize];
        f.buf = Vec::new();
        f.head = 0;
        f.phase = Phase::Resync { counted: true };
        // Nothing was lost, so confirm numbering stays valid (broker acks may still follow
        // a client's FIN); only messages cut off by the end are dropped.
        self.session.drop_all_content(ctx.dir);
    }

    fn stats(&self) -> DecoderStats {
        DecoderStats {
            buffered_bytes: self.framers.iter().map(|f| f.buf.len()).sum(),
            ..self.stats
        }
    }
}
