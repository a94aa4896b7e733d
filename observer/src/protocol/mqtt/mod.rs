//! MQTT 3.1, 3.1.1 and 5.0 decoder.
//!
//! What lives where:
//! - this file: the public API ([`MqttDecoder`], [`looks_like_mqtt`], [`MAX_PACKET`]) and the
//!   per-direction framer — fixed headers, buffering of partial packets, PUBLISH payload
//!   streaming, oversize skipping and resynchronisation;
//! - `session`: connection state and the packet → [`BrokerEvent`] mapping (login, protocol
//!   version, topic aliases, in-flight QoS 1/2 packet ids, SUBSCRIBE ↔ SUBACK matching);
//! - `wire`: variable byte integers, the body reader, MQTT 5 properties, bounded text;
//! - `tests`: byte-level encoders and the tests.
//!
//! Framing. A packet is `type:4 flags:4`, the remaining length (variable byte integer, 1–4
//! bytes), then that many bytes. The header is checked before anything is parsed: a known type
//! with the flags the spec requires for it, sent the way that type may travel, with a length
//! the type (and, once known, the protocol version) allows. Packets other than PUBLISH are
//! parsed straight from the caller's slice when whole; only a packet split across calls is
//! copied, and only that one. A PUBLISH is never buffered whole: its variable header (topic,
//! packet id, properties) is parsed — in place, or from a copy of just those bytes when split —
//! and its payload feeds the [`Fingerprint`](crate::event::Fingerprint) as it arrives; the event
//! is emitted when the payload ends. A packet longer than [`MAX_PACKET`] is counted `oversize`
//! and skipped without buffering; an oversize PUBLISH still yields its event (topic, QoS, real
//! `body_size`, no fingerprint) when its variable header fits in [`MAX_PACKET`].
//!
//! Resync rule. MQTT has no frame delimiter. Each direction starts at a packet boundary only
//! when the connection start was seen (the client's first bytes are a CONNECT; the broker's
//! bytes once a CONNECT was decoded). Otherwise, and after a gap or a malformed packet, the
//! framer looks for the first offset where
//! 1. a plausible fixed header (as above) starts a packet of at most [`MAX_PACKET`] bytes,
//! 2. whose body is plausible (protocol name; non-zero packet id; topic within the packet,
//!    UTF-8 without control characters, no wildcards in a topic name; …),
//! 3. and the bytes right after it start another plausible fixed header whose first (up to 4)
//!    body bytes are plausible too — or, at the end of the known stream (a gap or the end of
//!    the direction), the candidate ends exactly there (or what follows it is a plausible start
//!    cut short by that end).
//!
//! It waits for the bytes needed to decide a candidate rather than skip it, so the boundary
//! found does not depend on how the stream was chunked (a false candidate claiming a long
//! length delays the scan until its bytes arrive; it is rejected on its first bytes whenever
//! they already disagree). The live scan window never exceeds `MAX_PACKET + 9` bytes. Bytes
//! passed over count as `skipped_bytes`, each episode as one `resync` (joining mid-stream
//! counts only if it has to skip bytes); a PUBLISH cut by a gap is dropped. The few packets
//! after a proven one are on probation: one longer than 64 KiB must be proven the same way
//! before it is believed (an oversize one cannot be, and is scanned past), and PUBLISH topics
//! must pass the topic check — so a false boundary in binary payload bytes cannot make the
//! framer swallow megabytes of real packets as one bogus packet.
//!
//! Secrets. The CONNECT password and AUTH data are skipped in place, never copied into state or
//! events; every buffer that held packet bytes is zeroed before it is cleared or dropped, and
//! `Debug` shows buffer lengths only.
mod session;
#[cfg(test)]
mod tests;
mod wire;

use std::fmt;

use session::{Publishing, Session};
use wire::{Var, varint};

use crate::{
    capture::Direction,
    event::{BrokerEvent, System},
    protocol::{Ctx, DecoderStats, ProtocolDecoder},
};

/// Largest packet (fixed header included) decoded in full. Mosquitto accepts up to 256 MB; this
/// only bounds memory: larger packets are skipped unbuffered (an oversize PUBLISH still yields
/// its event).
pub const MAX_PACKET: usize = 1 << 20;
/// Body bytes of the packet after a resync candidate that must agree as well.
const NEXT_PREFIX: usize = 4;
/// Resync window: a candidate packet, the next packet's fixed header (≤ 5 bytes) and the first
/// `NEXT_PREFIX` bytes of its body.
const WINDOW: usize = MAX_PACKET + 5 + NEXT_PREFIX;
/// Proven-garbage bytes in front of the window are dropped once this many accumulate (or half
/// the buffer): one move of the window per 64 KiB of progress, not per call.
const DRAIN: usize = 64 << 10;
/// Packets after a resync's proven one that are on probation: a false boundary must not make
/// the framer swallow real packets into a long bogus one.
const PROBATION: u8 = 4;
/// On probation, a packet longer than this is not taken on its word: the scan must prove it
/// (whole, and followed by a plausible header) like a resync candidate.
const TRUST: usize = 64 << 10;

const CONNECT: u8 = 1;
const CONNACK: u8 = 2;
const PUBLISH: u8 = 3;
const PUBACK: u8 = 4;
const PUBREC: u8 = 5;
const PUBREL: u8 = 6;
const PUBCOMP: u8 = 7;
const SUBSCRIBE: u8 = 8;
const SUBACK: u8 = 9;
const UNSUBSCRIBE: u8 = 10;
const UNSUBACK: u8 = 11;
const PINGREQ: u8 = 12;
const PINGRESP: u8 = 13;
const DISCONNECT: u8 = 14;
const AUTH: u8 = 15;

/// True if `first_client_bytes` start an MQTT CONNECT: 0x10, the remaining length, then the
/// protocol name "MQTT" (3.1.1, 5.0) or "MQIsdp" (3.1). `None` while they are a proper prefix of
/// one.
pub fn looks_like_mqtt(first_client_bytes: &[u8]) -> Option<bool> {
    let b = first_client_bytes;
    match b.first() {
        None => return None,
        Some(&0x10) => {}
        Some(_) => return Some(false),
    }
    let n = match varint(&b[1..]) {
        Var::Need => return None,
        Var::Bad => return Some(false),
        Var::Ok { len, .. } => 1 + len,
    };
    let rest = &b[n..];
    let prefix = |want: &[u8]| {
        let k = rest.len().min(want.len());
        if rest[..k] != want[..k] {
            Some(false)
        } else if k < want.len() {
            None
        } else {
            Some(true)
        }
    };
    match (prefix(b"\0\x04MQTT"), prefix(b"\0\x06MQIsdp")) {
        (Some(true), _) | (_, Some(true)) => Some(true),
        (Some(false), Some(false)) => Some(false),
        _ => None,
    }
}

/// One connection's MQTT decoder (both directions).
#[derive(Debug, Default)]
pub struct MqttDecoder {
    /// Indexed by `Direction as usize`.
    framers: [Framer; 2],
    session: Session,
    stats: DecoderStats,
}

impl MqttDecoder {
    pub fn new() -> Self {
        Self::default()
    }
}

#[derive(Default)]
struct Framer {
    phase: Phase,
    /// `Start`: the client's first bytes; `Frame`/`Packet`/`PubHead`: the first bytes of the
    /// one partial packet (fixed header included); `Resync`: the scan window.
    buf: Vec<u8>,
    /// `Resync`: bytes of `buf` before this are proven not to start a packet.
    head: usize,
    /// `Payload`: the PUBLISH being streamed.
    publishing: Option<Publishing>,
    /// The packet at the boundary was just proven by the resync scan.
    proven: bool,
    /// Packets still on probation after a resync (see `PROBATION`); meanwhile PUBLISH topics
    /// must pass the scan's topic check too.
    probation: u8,
}

// Manual: `buf` may hold a partial CONNECT (with its password); show its length only.
impl fmt::Debug for Framer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Framer")
            .field("phase", &self.phase)
            .field("buffered", &self.buf.len())
            .field("publishing", &self.publishing)
            .finish()
    }
}

#[derive(Clone, Copy, Debug, Default)]
enum Phase {
    /// Nothing seen in this direction yet.
    #[default]
    Start,
    /// At a packet boundary (`buf` may hold the first bytes of the packet).
    Frame,
    /// A packet other than PUBLISH of `total` bytes, header `hlen` bytes.
    Packet { b0: u8, hlen: usize, total: usize },
    /// A PUBLISH's variable header is being collected.
    PubHead {
        b0: u8,
        hlen: usize,
        rem: u32,
        oversize: bool,
    },
    /// Streaming a PUBLISH payload (`Framer::publishing`).
    Payload { left: u32 },
    /// Skipping an oversize packet.
    Skip { left: u32 },
    /// Looking for a provable packet boundary. `counted`: this episode is already in `resyncs`.
    Resync { counted: bool },
}

/// How one call of `feed` ended.
enum Fed {
    /// Every byte consumed (or buffered).
    All,
    /// A resync proved a packet at the start of `window`: decode `window`, then `data[used..]`.
    Replay { used: usize, window: Vec<u8> },
}

/// Zeroes then clears: buffers may have held a CONNECT or AUTH.
fn wipe(buf: &mut Vec<u8>) {
    buf.fill(0);
    buf.clear();
}

/// Removes `n` bytes from the front, zeroing the bytes the shift leaves behind.
fn drain_front(buf: &mut Vec<u8>, n: usize) {
    let len = buf.len();
    buf.copy_within(n.., 0);
    buf[len - n..].fill(0);
    buf.truncate(len - n);
}

/// Result of reading a fixed header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hdr {
    Need,
    /// Not a packet this decoder accepts here.
    Bad,
    Ok {
        b0: u8,
        rem: u32,
        hlen: usize,
    },
}

/// A known type with the flags the spec requires, travelling a way it may travel.
fn first_byte_ok(b0: u8, dir: Direction) -> bool {
    let (ty, flags) = (b0 >> 4, b0 & 0x0F);
    let flags_ok = match ty {
        // QoS 3 does not exist; DUP must be 0 for QoS 0.
        PUBLISH => (flags >> 1) & 3 != 3 && flags & 0b1110 != 0b1000,
        PUBREL | SUBSCRIBE | UNSUBSCRIBE => flags == 0b0010,
        _ => flags == 0,
    };
    let ingress = dir == Direction::Ingress;
    flags_ok
        && match ty {
            CONNECT | SUBSCRIBE | UNSUBSCRIBE | PINGREQ => ingress,
            CONNACK | SUBACK | UNSUBACK | PINGRESP => !ingress,
            PUBLISH | PUBACK | PUBREC | PUBREL | PUBCOMP | DISCONNECT | AUTH => true,
            _ => false,
        }
}

/// Remaining lengths a type allows: exact for 3.x (`Some(3 | 4)`), 5.0's minimums for 5.0, the
/// loosest of both while the version is unknown.
fn length_ok(b0: u8, rem: u32, version: Option<u8>) -> bool {
    let v3 = version.is_some_and(|v| v < 5);
    let v5 = version.is_some_and(|v| v >= 5);
    let props = u32::from(v5);
    match b0 >> 4 {
        CONNECT => rem >= 10,
        CONNACK | UNSUBACK if v3 => rem == 2,
        CONNACK | UNSUBACK => rem >= 2 + props,
        PUBLISH => rem >= 2 + if (b0 >> 1) & 3 > 0 { 2 } else { 0 } + props,
        PUBACK | PUBREC | PUBREL | PUBCOMP if v3 => rem == 2,
        PUBACK | PUBREC | PUBREL | PUBCOMP => rem >= 2,
        SUBSCRIBE => rem >= 5 + props,
        SUBACK => rem >= 3 + props,
        UNSUBSCRIBE => rem >= 4 + props,
        PINGREQ | PINGRESP => rem == 0,
        DISCONNECT => !v3 || rem == 0,
        AUTH => !v3,
        _ => false,
    }
}

fn header(b: &[u8], dir: Direction, version: Option<u8>) -> Hdr {
    let Some(&b0) = b.first() else {
        return Hdr::Need;
    };
    // Reject on the first byte already, so garbage fails fast instead of waiting for a length.
    if !first_byte_ok(b0, dir) {
        return Hdr::Bad;
    }
    match varint(&b[1..]) {
        Var::Need => Hdr::Need,
        Var::Bad => Hdr::Bad,
        Var::Ok { value, len } if length_ok(b0, value, version) => Hdr::Ok {
            b0,
            rem: value,
            hlen: 1 + len,
        },
        Var::Ok { .. } => Hdr::Bad,
    }
}

/// How much of a PUBLISH's body its variable header needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HeadNeed {
    /// At least this many bytes of the body to go on.
    More(usize),
    /// The variable header is this long.
    Done(usize),
    /// It does not fit in the packet: not a PUBLISH.
    Bad,
}

/// Walks the lengths of a PUBLISH variable header (`b` = the body so far, `rem` = body length):
/// topic (u16-prefixed), packet id if QoS > 0, 5.0 properties (varint-prefixed).
fn head_need(b: &[u8], b0: u8, rem: u32, v5: bool) -> HeadNeed {
    let rem = rem as usize;
    if b.len() < 2 {
        return HeadNeed::More(2);
    }
    let mut n = 2 + usize::from(u16::from_be_bytes([b[0], b[1]]));
    if (b0 >> 1) & 3 > 0 {
        n += 2;
    }
    if n > rem {
        return HeadNeed::Bad;
    }
    if !v5 {
        return if b.len() < n {
            HeadNeed::More(n)
        } else {
            HeadNeed::Done(n)
        };
    }
    if b.len() <= n {
        return HeadNeed::More(n + 1);
    }
    match varint(&b[n..]) {
        Var::Need => HeadNeed::More(b.len() + 1),
        Var::Bad => HeadNeed::Bad,
        Var::Ok { value, len } => {
            let total = n + len + value as usize;
            if total > rem {
                HeadNeed::Bad
            } else if b.len() < total {
                HeadNeed::More(total)
            } else {
                HeadNeed::Done(total)
            }
        }
    }
}

/// False if the first bytes of a packet's body (`body`, of its `rem`) prove it is not one:
/// decided on what is there, so a candidate is rejected before its whole body arrives when its
/// first bytes already disagree (for the resync scan only).
fn body_plausible(b0: u8, body: &[u8], rem: u32, version: Option<u8>) -> bool {
    let v5 = version.is_some_and(|v| v >= 5);
    let id_ok = body.len() < 2 || body[..2] != [0, 0];
    let prefix_of = |name: &[u8]| {
        let n = body.len().min(name.len());
        body[..n] == name[..n]
    };
    match b0 >> 4 {
        CONNECT => prefix_of(b"\0\x04MQTT") || prefix_of(b"\0\x06MQIsdp"),
        CONNACK => {
            body.first().is_none_or(|f| f & 0xFE == 0)
                && body.get(1).is_none_or(|&c| c <= 5 || c >= 0x80)
        }
        PUBLISH => {
            if head_need(body, b0, rem, v5) == HeadNeed::Bad {
                return false;
            }
            let Some(len) = body.get(..2) else {
                return true;
            };
            let end = 2 + usize::from(u16::from_be_bytes([len[0], len[1]]));
            let id = body.get(end..end + 2);
            // An empty topic needs a 5.0 topic alias.
            (end > 2 || version.is_none_or(|v| v >= 5))
                && topic_ok(&body[2..end.min(body.len())], end > body.len(), false)
                && ((b0 >> 1) & 3 == 0 || id.is_none_or(|id| id != [0, 0]))
        }
        PUBACK | PUBREC | PUBREL | PUBCOMP | SUBACK | UNSUBACK => id_ok,
        SUBSCRIBE | UNSUBSCRIBE if !v5 && body.len() >= 4 => {
            // The first topic filter (and SUBSCRIBE's options byte) fits in the packet.
            let filter = usize::from(u16::from_be_bytes([body[2], body[3]]));
            let options = usize::from(b0 >> 4 == SUBSCRIBE);
            id_ok
                && filter > 0
                && 4 + filter + options <= rem as usize
                && topic_ok(
                    &body[4..(4 + filter).min(body.len())],
                    4 + filter > body.len(),
                    true,
                )
        }
        SUBSCRIBE | UNSUBSCRIBE => id_ok,
        _ => true,
    }
}

/// A topic name (or, `filter`, a topic filter), or the first bytes of one (`cut`): UTF-8 (a
/// character cut by the end of a `cut` prefix is fine), no control characters (the spec forbids U+0000 and says
/// SHOULD NOT for the others), no wildcards in a name. Binary garbage fails this within a few
/// bytes, which is what makes false boundaries rare.
fn topic_ok(t: &[u8], cut: bool, filter: bool) -> bool {
    let valid = match std::str::from_utf8(t) {
        Ok(_) => t,
        Err(e) if cut && e.error_len().is_none() => &t[..e.valid_up_to()],
        Err(_) => return false,
    };
    !valid
        .iter()
        .any(|&c| c < 0x20 || c == 0x7F || (!filter && (c == b'+' || c == b'#')))
}

/// Whether a packet provably starts at `b[0]`.
enum Cand {
    /// No.
    No,
    /// Cannot tell without more bytes.
    Need,
    /// A whole plausible packet followed by a plausible fixed header.
    Yes,
    /// A whole plausible packet ending exactly where `b` ends.
    End,
}

/// `at_end`: `b` ends where the known stream ends; then a packet after the candidate cut short
/// by that end only has to start plausibly.
fn candidate(b: &[u8], dir: Direction, version: Option<u8>, at_end: bool) -> Cand {
    let (b0, rem, hlen) = match header(b, dir, version) {
        Hdr::Need => return Cand::Need,
        Hdr::Bad => return Cand::No,
        Hdr::Ok { b0, rem, hlen } => (b0, rem, hlen),
    };
    let total = hlen + rem as usize;
    if total > MAX_PACKET {
        // Cannot be proven within the window.
        return Cand::No;
    }
    if !body_plausible(b0, &b[hlen..total.min(b.len())], rem, version) {
        return Cand::No;
    }
    if b.len() < total {
        return Cand::Need;
    }
    match header(&b[total..], dir, version) {
        _ if b.len() == total => Cand::End,
        Hdr::Need if at_end => Cand::Yes,
        Hdr::Need => Cand::Need,
        Hdr::Bad => Cand::No,
        Hdr::Ok {
            b0: next,
            rem: next_rem,
            hlen: next_hlen,
        } => {
            // The next packet's first body bytes must agree too; exactly `k` of them are
            // looked at, so the decision does not depend on how many happen to be there.
            let k = (next_rem as usize).min(NEXT_PREFIX);
            let nb = &b[total + next_hlen..];
            if nb.len() < k && !at_end {
                Cand::Need
            } else if body_plausible(next, &nb[..k.min(nb.len())], next_rem, version) {
                Cand::Yes
            } else {
                Cand::No
            }
        }
    }
}

/// First offset ≥ `from` in `buf` that provably starts a packet: `(true, offset)`; or
/// `(false, offset)` of the first candidate that cannot be decided without more bytes (`at_end`:
/// no more bytes will come, a packet ending exactly at the end is proven, undecided ones are
/// not packets).
fn scan(
    buf: &[u8],
    from: usize,
    dir: Direction,
    version: Option<u8>,
    at_end: bool,
) -> (bool, usize) {
    for i in from..buf.len() {
        match candidate(&buf[i..], dir, version, at_end) {
            Cand::No => {}
            Cand::Yes => return (true, i),
            Cand::End if at_end => return (true, i),
            Cand::Need if at_end => {}
            Cand::End | Cand::Need => return (false, i),
        }
    }
    (false, buf.len())
}

impl MqttDecoder {
    fn enter_resync(f: &mut Framer, stats: &mut DecoderStats) {
        stats.resyncs += 1;
        f.phase = Phase::Resync { counted: true };
        f.publishing = None;
        f.proven = false;
    }

    /// A malformed packet starting at `buf[0]` (when buffered) or `data[start]`: count it and
    /// scan again from its second byte.
    fn malformed(f: &mut Framer, stats: &mut DecoderStats, buffered: bool) {
        stats.malformed += 1;
        stats.skipped_bytes += 1;
        Self::enter_resync(f, stats);
        f.head = usize::from(buffered);
    }

    /// A whole packet other than PUBLISH. False if it did not decode.
    fn dispatch(
        session: &mut Session,
        stats: &mut DecoderStats,
        probation: &mut u8,
        ctx: &Ctx<'_>,
        b0: u8,
        body: &[u8],
        out: &mut dyn FnMut(BrokerEvent),
    ) -> bool {
        match session.packet(ctx, b0, body, out) {
            Ok(()) => {
                stats.frames += 1;
                *probation = probation.saturating_sub(1);
                true
            }
            Err(_) => false,
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
            let version = session.version();
            match f.phase {
                Phase::Start => {
                    if dir == Direction::Egress {
                        // The broker speaks after CONNECT: at a boundary if CONNECT was seen.
                        f.phase = if session.connect_seen() {
                            Phase::Frame
                        } else {
                            Phase::Resync { counted: false }
                        };
                        f.head = 0;
                        continue;
                    }
                    // Decide from at most 13 bytes (0x10, 4-byte length, "\0\x06MQIsdp").
                    let mut probe = [0u8; 13];
                    let have = f.buf.len();
                    let take = (probe.len() - have).min(data.len() - pos);
                    probe[..have].copy_from_slice(&f.buf);
                    probe[have..have + take].copy_from_slice(&data[pos..pos + take]);
                    match looks_like_mqtt(&probe[..have + take]) {
                        None => {
                            f.buf.extend_from_slice(&data[pos..]);
                            return Fed::All;
                        }
                        Some(true) => f.phase = Phase::Frame,
                        Some(false) => {
                            // Joined mid-stream: resync from here (a packet at offset 0 costs
                            // no skipped bytes).
                            f.phase = Phase::Resync { counted: false };
                            f.head = 0;
                        }
                    }
                }
                Phase::Frame => {
                    let from_buf = !f.buf.is_empty();
                    let hdr = if from_buf {
                        loop {
                            match header(&f.buf, dir, version) {
                                Hdr::Need if pos < data.len() => {
                                    f.buf.push(data[pos]);
                                    pos += 1;
                                }
                                h => break h,
                            }
                        }
                    } else {
                        header(&data[pos..], dir, version)
                    };
                    let (b0, rem, hlen) = match hdr {
                        Hdr::Need => {
                            f.buf.extend_from_slice(&data[pos..]);
                            return Fed::All;
                        }
                        Hdr::Bad => {
                            if !from_buf {
                                pos += 1;
                            }
                            Self::malformed(f, stats, from_buf);
                            continue;
                        }
                        Hdr::Ok { b0, rem, hlen } => (b0, rem, hlen),
                    };
                    let total = hlen + rem as usize;
                    let proven = std::mem::take(&mut f.proven);
                    if !proven && f.probation > 0 && total > TRUST {
                        // Soon after a resync a long packet may be a false boundary's doing:
                        // scan from here, so it is decoded only if proven (an oversize one
                        // cannot be, and is passed over).
                        f.phase = Phase::Resync { counted: true };
                        f.head = 0;
                        continue;
                    }
                    let oversize = total > MAX_PACKET;
                    if oversize {
                        stats.oversize += 1;
                    }
                    f.phase = if b0 >> 4 == PUBLISH {
                        Phase::PubHead {
                            b0,
                            hlen,
                            rem,
                            oversize,
                        }
                    } else if oversize {
                        // Bytes already buffered past the header count towards the skip.
                        let have = if from_buf { f.buf.len() - hlen } else { 0 };
                        if !from_buf {
                            pos += hlen;
                        }
                        wipe(&mut f.buf);
                        Phase::Skip {
                            left: rem - have as u32,
                        }
                    } else {
                        Phase::Packet { b0, hlen, total }
                    };
                }
                Phase::Packet { b0, hlen, total } => {
                    if f.buf.is_empty() {
                        if data.len() - pos >= total {
                            // Whole packet in the slice: parse in place.
                            let start = pos;
                            pos += total;
                            f.phase = Phase::Frame;
                            if !Self::dispatch(
                                session,
                                stats,
                                &mut f.probation,
                                ctx,
                                b0,
                                &data[start + hlen..start + total],
                                out,
                            ) {
                                pos = start + 1;
                                Self::malformed(f, stats, false);
                            }
                            continue;
                        }
                        f.buf.reserve(total);
                    }
                    let take = total.saturating_sub(f.buf.len()).min(data.len() - pos);
                    f.buf.extend_from_slice(&data[pos..pos + take]);
                    pos += take;
                    if f.buf.len() < total {
                        return Fed::All;
                    }
                    f.phase = Phase::Frame;
                    if Self::dispatch(
                        session,
                        stats,
                        &mut f.probation,
                        ctx,
                        b0,
                        &f.buf[hlen..total],
                        out,
                    ) {
                        wipe(&mut f.buf);
                    } else {
                        // The window for the scan starts at the packet's second byte.
                        Self::malformed(f, stats, true);
                    }
                }
                Phase::PubHead {
                    b0,
                    hlen,
                    rem,
                    oversize,
                } => {
                    let v5 = session.v5();
                    let buffered = !f.buf.is_empty();
                    let body = if buffered {
                        &f.buf[hlen..]
                    } else {
                        &data[pos + hlen..]
                    };
                    match head_need(body, b0, rem, v5) {
                        HeadNeed::Bad => {
                            if !buffered {
                                pos += 1;
                            }
                            Self::malformed(f, stats, buffered);
                        }
                        HeadNeed::More(n) | HeadNeed::Done(n) if hlen + n > MAX_PACKET => {
                            // Only an oversize PUBLISH: its variable header alone is too big to
                            // buffer, so it is not parsed even when whole in the slice (the
                            // outcome must not depend on chunking); skip the packet.
                            let left = if buffered {
                                let have = f.buf.len() - hlen;
                                wipe(&mut f.buf);
                                rem - have as u32
                            } else {
                                pos += hlen;
                                rem
                            };
                            f.phase = Phase::Skip { left };
                        }
                        HeadNeed::More(n) => {
                            if !buffered {
                                // Copy the header and what there is of the variable header.
                                f.buf.extend_from_slice(&data[pos..]);
                                return Fed::All;
                            }
                            let take = (hlen + n - f.buf.len()).min(data.len() - pos);
                            if take == 0 {
                                return Fed::All;
                            }
                            f.buf.extend_from_slice(&data[pos..pos + take]);
                            pos += take;
                        }
                        HeadNeed::Done(len) => {
                            let size = u64::from(rem) - len as u64;
                            let head = &body[..len];
                            let topic =
                                &head[2..2 + usize::from(u16::from_be_bytes([head[0], head[1]]))];
                            let parsed = if f.probation > 0 && !topic_ok(topic, false, false) {
                                Err(wire::Bad)
                            } else {
                                session.publish_head(ctx, b0, head, size, oversize)
                            };
                            match parsed {
                                Ok(p) => {
                                    f.publishing = Some(p);
                                    f.phase = Phase::Payload {
                                        left: rem - len as u32,
                                    };
                                    if buffered {
                                        wipe(&mut f.buf);
                                    } else {
                                        pos += hlen + len;
                                    }
                                }
                                Err(_) => {
                                    if !buffered {
                                        pos += 1;
                                    }
                                    Self::malformed(f, stats, buffered);
                                }
                            }
                        }
                    }
                }
                Phase::Payload { left } => {
                    if left > 0 {
                        if pos == data.len() {
                            return Fed::All;
                        }
                        let n = (left as usize).min(data.len() - pos);
                        if let Some(fp) = f.publishing.as_mut().and_then(|p| p.fp.as_mut()) {
                            fp.update(&data[pos..pos + n]);
                        }
                        pos += n;
                        f.phase = Phase::Payload {
                            left: left - n as u32,
                        };
                        continue;
                    }
                    f.phase = Phase::Frame;
                    if let Some(p) = f.publishing.take() {
                        if p.fp.is_some() {
                            // Oversize packets are counted as such, not as frames.
                            stats.frames += 1;
                        }
                        f.probation = f.probation.saturating_sub(1);
                        session.publish_done(ctx, p, out);
                    }
                }
                Phase::Skip { left } => {
                    if left == 0 {
                        f.phase = Phase::Frame;
                        continue;
                    }
                    if pos == data.len() {
                        return Fed::All;
                    }
                    let n = (left as usize).min(data.len() - pos);
                    pos += n;
                    f.phase = Phase::Skip {
                        left: left - n as u32,
                    };
                }
                Phase::Resync { counted } => {
                    // Drop the proven-garbage prefix when it is large or half the buffer; the
                    // live window (after `head`) stays within WINDOW, the buffer within
                    // WINDOW + DRAIN.
                    if f.head > 0 && (f.head * 2 >= f.buf.len() || f.head >= DRAIN) {
                        drain_front(&mut f.buf, f.head);
                        f.head = 0;
                    }
                    let live = f.buf.len() - f.head;
                    let take = WINDOW.saturating_sub(live).min(data.len() - pos);
                    f.buf.extend_from_slice(&data[pos..pos + take]);
                    pos += take;
                    let (found, mut at) = scan(&f.buf, f.head, dir, version, false);
                    if !found && take == 0 && at == f.head && live >= WINDOW {
                        // Cannot happen (a candidate needs ≤ WINDOW bytes); guards progress.
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
                        drain_front(&mut window, at);
                        f.head = 0;
                        f.phase = Phase::Frame;
                        (f.proven, f.probation) = (true, PROBATION);
                        return Fed::Replay { used: pos, window };
                    }
                    if pos == data.len() {
                        return Fed::All;
                    }
                }
            }
        }
    }

    /// Feeds `input`, replaying windows a resync proved.
    fn drive(&mut self, ctx: &Ctx<'_>, input: &[u8], out: &mut dyn FnMut(BrokerEvent)) {
        let mut input = input;
        // Bytes a resync proved to start with a packet; they come before `input`. Each replay is
        // shorter than the one before (the resync passed over at least one byte), and at most
        // one window long.
        let mut replay: Vec<u8> = Vec::new();
        loop {
            if !replay.is_empty() {
                let mut r = std::mem::take(&mut replay);
                if let Fed::Replay { used, window } = self.feed(ctx, &r, out) {
                    replay = window;
                    replay.extend_from_slice(&r[used..]);
                }
                wipe(&mut r);
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

    /// No more bytes will follow what this direction's resync window holds (gap or end): decode
    /// what the end of the known stream proves, then drop the rest.
    fn flush(&mut self, ctx: &Ctx<'_>, out: &mut dyn FnMut(BrokerEvent)) {
        let dir = ctx.dir;
        loop {
            let version = self.session.version();
            let f = &mut self.framers[dir as usize];
            let Phase::Resync { counted } = f.phase else {
                break;
            };
            let (found, at) = scan(&f.buf, f.head, dir, version, true);
            let skipped = at - f.head;
            if skipped > 0 {
                self.stats.skipped_bytes += skipped as u64;
                if !counted {
                    self.stats.resyncs += 1;
                    f.phase = Phase::Resync { counted: true };
                }
            }
            if !found {
                break;
            }
            let mut window = std::mem::take(&mut f.buf);
            drain_front(&mut window, at);
            f.head = 0;
            f.phase = Phase::Frame;
            (f.proven, f.probation) = (true, PROBATION);
            self.drive(ctx, &window, out);
            wipe(&mut window);
        }
        let f = &mut self.framers[dir as usize];
        wipe(&mut f.buf);
        f.head = 0;
        f.publishing = None;
    }
}

impl ProtocolDecoder for MqttDecoder {
    fn system(&self) -> System {
        System::Mqtt
    }

    fn on_data(&mut self, ctx: &Ctx<'_>, bytes: &[u8], out: &mut dyn FnMut(BrokerEvent)) {
        self.stats.bytes += bytes.len() as u64;
        self.drive(ctx, bytes, out);
    }

    fn on_gap(&mut self, ctx: &Ctx<'_>, _len: u32, out: &mut dyn FnMut(BrokerEvent)) {
        // A packet proven by the end of the bytes before the gap is still decoded.
        self.flush(ctx, out);
        Self::enter_resync(&mut self.framers[ctx.dir as usize], &mut self.stats);
    }

    fn on_end(&mut self, ctx: &Ctx<'_>, out: &mut dyn FnMut(BrokerEvent)) {
        self.flush(ctx, out);
        let f = &mut self.framers[ctx.dir as usize];
        // Whatever was partial stays incomplete; free it.
        f.buf = Vec::new();
        f.phase = Phase::Resync { counted: true };
    }

    fn stats(&self) -> DecoderStats {
        DecoderStats {
            buffered_bytes: self.framers.iter().map(|f| f.buf.len()).sum(),
            malformed: self.stats.malformed + self.session.malformed,
            ..self.stats
        }
    }
}
