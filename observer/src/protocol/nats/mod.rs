//! NATS client protocol decoder (core protocol, headers, and JetStream on top of it).
//!
//! What lives where:
//! - this file: the public API ([`NatsDecoder`], [`looks_like_nats`], size limits) and the
//!   per-direction framer — control lines, payload streaming, resynchronisation;
//! - `wire`: control-line parsing, the `NATS/1.0` header block, a small borrowed JSON scanner;
//! - `session`: connection state and the op → [`BrokerEvent`] mapping (login, subscriptions,
//!   reply inboxes, PubAck confirms, JetStream deliveries, acks and API requests);
//! - `js`: JetStream subject and payload shapes (`$JS.ACK.…`, `$JS.API.…`, PubAck JSON);
//! - `tests`: the tests.
//!
//! Framing. NATS is a text protocol: a control line ending in CRLF (bare LF accepted) whose
//! first token is the op (case-insensitive); PUB/HPUB/MSG/HMSG lines end with byte counts and
//! are followed by that many payload bytes and a CRLF. Control lines are parsed straight from
//! the caller's slice when whole ("check then parse": the line end is found first); only a
//! line split across calls is copied, up to [`MAX_CONTROL_LINE`] (INFO and CONNECT up to
//! [`MAX_JSON_LINE`]). Payload bytes are never buffered: they feed the message's
//! [`Fingerprint`](crate::event::Fingerprint) as they pass. Two bounded exceptions: an HPUB/HMSG
//! header block (≤ [`MAX_HEADER_BLOCK`] bytes, decoded for trace context and message ids) and
//! the payloads of JetStream control traffic that must be read — acks, API requests, replies
//! on inboxes we wait on — when they are ≤ [`MAX_CAPTURE`] bytes. A message over the payload
//! limit (max_payload from the server's INFO, [`DEFAULT_MAX_PAYLOAD`] before it, capped at
//! [`MAX_NEGOTIATED_PAYLOAD`]) is skipped without events and counted `oversize`; a byte count
//! over the cap is garbage (malformed).
//!
//! Resync rule. A line that is not a frame (unknown op for its direction, bad arguments or
//! numbers, JSON that does not parse, over the line limit), or a payload not followed by CRLF,
//! is counted `malformed` and starts a resync; so does a gap (`on_gap`), after which the
//! partial line or message of that direction is dropped. Resyncing skips to the next line
//! start (after a gap we are mid-line, so the first bytes are never a candidate) and takes the
//! first line that parses fully as an op of its direction — known op, right argument count,
//! printable tokens, numbers, sizes within the current limit, valid JSON. Lines that do not
//! are skipped without counting them malformed. Within a payload the byte count says where it
//! ends, so a "\r\nMSG …" inside one is never mistaken for a line; while resyncing nothing says
//! that, so a message accepted as a candidate only syncs once its trailing CRLF checks out
//! (if not, its bytes are skipped too and the hunt goes on). Bytes passed over count as
//! `skipped_bytes`, each episode as one `resync`. A fresh decoder whose first line is not a
//! frame is taken as joined mid-stream: that resync is counted, nothing is malformed. Every
//! decision depends on the bytes only, never on how they were chunked.
mod js;
mod session;
#[cfg(test)]
mod tests;
mod wire;

use std::fmt;

use session::{InFlight, Session};
use wire::{Bad, Op, Partial};

use crate::{
    event::{BrokerEvent, System},
    protocol::{Ctx, DecoderStats, ProtocolDecoder},
};

/// Longest control line (without CRLF): nats-server's default max_control_line.
pub const MAX_CONTROL_LINE: usize = 4096;
/// Longest INFO / CONNECT line: they carry JSON that outgrows max_control_line (cluster URL
/// lists, user JWTs) and the server's limit does not apply to them the same way.
pub const MAX_JSON_LINE: usize = 64 << 10;
/// Payload limit until the server's INFO states max_payload (nats-server's default).
pub const DEFAULT_MAX_PAYLOAD: usize = 1 << 20;
/// Largest max_payload accepted from an INFO (nats-server refuses to configure more); a byte
/// count above it is not a message but lost sync.
pub const MAX_NEGOTIATED_PAYLOAD: usize = 64 << 20;
/// Bytes of an HPUB/HMSG header block kept for decoding (the rest streams past).
pub const MAX_HEADER_BLOCK: usize = 16 << 10;
/// Largest JetStream control payload (ack, API request, PubAck/API reply) read for its content.
pub const MAX_CAPTURE: usize = 4096;

/// True if the first bytes the client sent start with `CONNECT {` or the first bytes the server
/// sent start with `INFO {`; `None` while what is there is a proper prefix of those.
pub fn looks_like_nats(client_first: &[u8], server_first: &[u8]) -> Option<bool> {
    let prefix = |bytes: &[u8], want: &[u8]| {
        let n = bytes.len().min(want.len());
        if bytes[..n] != want[..n] {
            Some(false)
        } else if n < want.len() {
            None
        } else {
            Some(true)
        }
    };
    match (
        prefix(server_first, b"INFO {"),
        prefix(client_first, b"CONNECT {"),
    ) {
        (Some(true), _) | (_, Some(true)) => Some(true),
        (Some(false), Some(false)) => Some(false),
        // Clients wait for INFO: one that spoke first without CONNECT is not NATS.
        (None, Some(false)) => Some(false),
        (Some(false), None) if client_first.is_empty() => None,
        (Some(false), None) => Some(false),
        (None, None) => None,
    }
}

/// One connection's NATS decoder (both directions).
#[derive(Debug, Default)]
pub struct NatsDecoder {
    /// Indexed by `Direction as usize`.
    framers: [Framer; 2],
    session: Session,
    stats: DecoderStats,
}

impl NatsDecoder {
    pub fn new() -> Self {
        Self::default()
    }
}

#[derive(Default)]
struct Framer {
    phase: Phase,
    hunt: Hunt,
    /// The current control line when split across calls (≤ its cap + 1 bytes).
    line: Vec<u8>,
    /// The current header block when split across calls (≤ MAX_HEADER_BLOCK bytes).
    hdr: Vec<u8>,
    /// The captured payload of the current message (≤ MAX_CAPTURE bytes).
    body: Vec<u8>,
    /// The message whose payload is streaming; None while skipping an oversize one.
    msg: Option<InFlight>,
    /// Bytes of a message accepted while hunting: skipped if its trailer does not check out.
    tentative: u64,
}

// Manual: `line` may hold a partial CONNECT (with its password); show lengths only.
impl fmt::Debug for Framer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Framer")
            .field("phase", &self.phase)
            .field("hunt", &self.hunt)
            .field("line", &self.line.len())
            .field("hdr", &self.hdr.len())
            .field("body", &self.body.len())
            .field("msg", &self.msg)
            .finish()
    }
}

impl Drop for Framer {
    fn drop(&mut self) {
        self.line.fill(0);
    }
}

impl Framer {
    /// Appends to the line buffer without leaving copies behind: the line may be a CONNECT
    /// carrying credentials, and a growing `Vec` would free its old allocation unzeroed.
    fn push_line(&mut self, bytes: &[u8]) {
        let need = self.line.len() + bytes.len();
        if need > self.line.capacity() {
            let mut grown = Vec::with_capacity(need.max(2 * self.line.capacity()).max(128));
            grown.extend_from_slice(&self.line);
            self.line.fill(0);
            self.line = grown;
        }
        self.line.extend_from_slice(bytes);
    }

    fn clear_line(&mut self) {
        self.line.fill(0);
        self.line.clear();
    }

    /// Drops the partial line and message (gap, end).
    fn drop_partial(&mut self) {
        self.clear_line();
        self.hdr.clear();
        self.body.clear();
        self.msg = None;
        self.tentative = 0;
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Phase {
    /// At the start of a line (`Framer::line` holds its first bytes if split).
    #[default]
    Line,
    /// Skipping through the next '\n'.
    Skip,
    /// `left` of the `hdr` header block bytes; `body` payload bytes follow.
    Headers {
        left: usize,
        hdr: usize,
        body: usize,
    },
    Body {
        left: usize,
    },
    /// Expecting the CRLF after a payload (`cr`: the '\r' was seen).
    Trailer {
        cr: bool,
    },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Hunt {
    /// At the start of the direction: the first line decides whether we joined mid-stream.
    #[default]
    Joining,
    Synced,
    /// Looking for a line that parses fully.
    Hunting,
}

/// The first '\n': eight bytes at a time (std's memchr is not public), then bytewise.
fn find_lf(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    for word in bytes.chunks_exact(8) {
        let w = u64::from_le_bytes(word.try_into().unwrap()) ^ (ONES * u64::from(b'\n'));
        // Some byte of `w` is zero iff this is non-zero.
        if w.wrapping_sub(ONES) & !w & HIGH != 0 {
            break;
        }
        i += 8;
    }
    bytes[i..].iter().position(|&b| b == b'\n').map(|p| i + p)
}

/// The first bytes (enough to hold an op and its separator) of `a` followed by `b`.
fn head<'h>(buf: &'h mut [u8; 9], a: &[u8], b: &[u8]) -> &'h [u8] {
    let n = a.len().min(9);
    buf[..n].copy_from_slice(&a[..n]);
    let m = b.len().min(9 - n);
    buf[n..n + m].copy_from_slice(&b[..m]);
    &buf[..n + m]
}

impl NatsDecoder {
    /// Counts a line (or tentative message) that is not a frame: malformed in sync, just
    /// skipped while hunting.
    fn reject(f: &mut Framer, stats: &mut DecoderStats, skipped: u64, oversize: bool) {
        match f.hunt {
            Hunt::Synced => {
                stats.malformed += 1;
                if oversize {
                    stats.oversize += 1;
                }
                stats.resyncs += 1;
            }
            Hunt::Joining => stats.resyncs += 1,
            Hunt::Hunting => {}
        }
        f.hunt = Hunt::Hunting;
        stats.skipped_bytes += skipped;
    }

    /// A whole control line (`raw`: without its '\n'; `consumed`: its bytes with the '\n').
    fn line(
        f: &mut Framer,
        session: &mut Session,
        stats: &mut DecoderStats,
        ctx: &Ctx<'_>,
        raw: &[u8],
        consumed: usize,
        out: &mut dyn FnMut(BrokerEvent),
    ) {
        let content = raw.strip_suffix(b"\r").unwrap_or(raw);
        if content.is_empty() {
            return; // a stray empty line: nothing to decode, nothing wrong
        }
        let op = match wire::parse(ctx.dir, content) {
            Ok(op) => op,
            Err(bad) => return Self::reject(f, stats, consumed as u64, bad == Bad::Oversize),
        };
        let Op::Msg(m) = op else {
            match session.control(ctx, op, out) {
                Ok(()) => {
                    stats.frames += 1;
                    f.hunt = Hunt::Synced;
                }
                Err(()) => Self::reject(f, stats, consumed as u64, false),
            }
            return;
        };
        let hunting = f.hunt != Hunt::Synced;
        if m.total > session.payload_limit() as u64 {
            if hunting || m.total > MAX_NEGOTIATED_PAYLOAD as u64 {
                return Self::reject(f, stats, consumed as u64, false);
            }
            stats.oversize += 1;
            f.msg = None;
        } else {
            f.msg = Some(session.begin(&m));
            f.tentative = if hunting {
                consumed as u64 + m.total
            } else {
                0
            };
        }
        // Both ≤ MAX_NEGOTIATED_PAYLOAD here.
        let (hdr, total) = (m.hdr as usize, m.total as usize);
        f.phase = if hdr > 0 {
            Phase::Headers {
                left: hdr,
                hdr,
                body: total - hdr,
            }
        } else if total > 0 {
            Phase::Body { left: total }
        } else {
            Phase::Trailer { cr: false }
        };
    }

    /// Decodes `data` (one direction).
    fn feed(&mut self, ctx: &Ctx<'_>, data: &[u8], out: &mut dyn FnMut(BrokerEvent)) {
        let Self {
            framers,
            session,
            stats,
        } = self;
        let f = &mut framers[ctx.dir as usize];
        let mut pos = 0usize;
        while pos < data.len() {
            match f.phase {
                Phase::Line => {
                    let rest = &data[pos..];
                    let lf = find_lf(rest);
                    let chunk = &rest[..lf.unwrap_or(rest.len())];
                    let len = f.line.len() + chunk.len();
                    let mut h = [0u8; 9];
                    // Decide on the op and size before copying anything: garbage and oversize
                    // lines are never buffered.
                    match wire::precheck(ctx.dir, head(&mut h, &f.line, chunk), len) {
                        verdict @ (Partial::Unknown | Partial::Oversize) => {
                            f.clear_line();
                            let end = usize::from(lf.is_some());
                            Self::reject(
                                f,
                                stats,
                                (len + end) as u64,
                                verdict == Partial::Oversize,
                            );
                            pos += chunk.len() + end;
                            f.phase = if lf.is_some() {
                                Phase::Line
                            } else {
                                Phase::Skip
                            };
                        }
                        Partial::Wait => {
                            let Some(i) = lf else {
                                f.push_line(chunk);
                                pos = data.len();
                                continue;
                            };
                            pos += i + 1;
                            if f.line.is_empty() {
                                Self::line(f, session, stats, ctx, chunk, i + 1, out);
                            } else {
                                f.push_line(chunk);
                                let line = std::mem::take(&mut f.line);
                                Self::line(f, session, stats, ctx, &line, line.len() + 1, out);
                                f.line = line;
                                f.clear_line();
                            }
                        }
                    }
                }
                Phase::Skip => {
                    let rest = &data[pos..];
                    let n = find_lf(rest).map_or(rest.len(), |i| {
                        f.phase = Phase::Line;
                        i + 1
                    });
                    stats.skipped_bytes += n as u64;
                    pos += n;
                }
                Phase::Headers { left, hdr, body } => {
                    let n = left.min(data.len() - pos);
                    let chunk = &data[pos..pos + n];
                    if let Some(m) = &mut f.msg {
                        if n == hdr {
                            // The whole block is in this slice: decode it in place.
                            m.set_headers(chunk);
                        } else {
                            let keep = (MAX_HEADER_BLOCK - f.hdr.len()).min(n);
                            f.hdr.extend_from_slice(&chunk[..keep]);
                            if n == left {
                                m.set_headers(&f.hdr);
                                f.hdr.clear();
                            }
                        }
                    }
                    pos += n;
                    f.phase = match (left - n, body) {
                        (0, 0) => Phase::Trailer { cr: false },
                        (0, body) => Phase::Body { left: body },
                        (left, body) => Phase::Headers { left, hdr, body },
                    };
                }
                Phase::Body { left } => {
                    let n = left.min(data.len() - pos);
                    let chunk = &data[pos..pos + n];
                    if let Some(m) = &mut f.msg {
                        m.fp.update(chunk);
                        if m.capture {
                            f.body.extend_from_slice(chunk);
                        }
                    }
                    pos += n;
                    f.phase = if n == left {
                        Phase::Trailer { cr: false }
                    } else {
                        Phase::Body { left: left - n }
                    };
                }
                Phase::Trailer { cr } => match data[pos] {
                    b'\r' if !cr => {
                        pos += 1;
                        f.phase = Phase::Trailer { cr: true };
                    }
                    b'\n' => {
                        pos += 1;
                        f.phase = Phase::Line;
                        f.tentative = 0;
                        if let Some(m) = f.msg.take() {
                            stats.frames += 1;
                            f.hunt = Hunt::Synced;
                            session.finish(ctx, m, &f.body, out);
                        }
                        f.body.clear();
                    }
                    _ => {
                        // Not a message after all (or a broken peer): drop it and resync from
                        // this byte, which is not consumed.
                        let skipped = f.tentative + u64::from(cr);
                        f.drop_partial();
                        Self::reject(f, stats, skipped, false);
                        f.phase = Phase::Skip;
                    }
                },
            }
        }
    }
}

impl ProtocolDecoder for NatsDecoder {
    fn system(&self) -> System {
        System::Nats
    }

    fn on_data(&mut self, ctx: &Ctx<'_>, bytes: &[u8], out: &mut dyn FnMut(BrokerEvent)) {
        self.stats.bytes += bytes.len() as u64;
        self.feed(ctx, bytes, out);
    }

    fn on_gap(&mut self, ctx: &Ctx<'_>, _len: u32, _out: &mut dyn FnMut(BrokerEvent)) {
        // Where the lost bytes ended is unknown (mid-line, mid-payload): resync at the next
        // line that parses fully.
        let f = &mut self.framers[ctx.dir as usize];
        f.drop_partial();
        f.phase = Phase::Skip;
        f.hunt = Hunt::Hunting;
        self.stats.resyncs += 1;
    }

    fn on_end(&mut self, ctx: &Ctx<'_>, _out: &mut dyn FnMut(BrokerEvent)) {
        // Whatever was partial stays incomplete; free it.
        let f = &mut self.framers[ctx.dir as usize];
        f.drop_partial();
        f.line = Vec::new();
        f.hdr = Vec::new();
        f.body = Vec::new();
        f.phase = Phase::Skip;
        f.hunt = Hunt::Hunting;
    }

    fn stats(&self) -> DecoderStats {
        DecoderStats {
            buffered_bytes: self
                .framers
                .iter()
                .map(|f| f.line.len() + f.hdr.len() + f.body.len())
                .sum(),
            ..self.stats
        }
    }
}
