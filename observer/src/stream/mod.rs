//! TCP reassembly for one direction of one connection.
//!
//! The kernel programs (cgroup_skb) capture packets as the kernel sees them: retransmissions,
//! overlaps, out-of-order segments (ingress sees network arrival order) and holes that will never
//! be filled because a packet was truncated by the capture cap or its ring record was dropped.
//! A [`Reassembler`] turns those captures back into the byte stream, in order, as [`Piece`]s:
//! [`Piece::Data`] for stream bytes, [`Piece::Gap`] for every byte the capture lost (so protocol
//! decoders downstream know exactly how much to skip and can resync), and one final
//! [`Piece::End`].
//!
//! # Coordinates
//! Sequence numbers are `u32` and wrap. Internally every position is a `u64` offset from the
//! first byte of the stream ("absolute" offset), so ordering is plain integer ordering; a `u32`
//! sequence number is mapped to the absolute offset nearest to the next expected byte (within
//! ±2³¹, the usual `(a.wrapping_sub(b) as i32)` rule). Anything before the next expected byte has
//! already been delivered or given up on, so it is a retransmission.
//!
//! # Policy
//! - In-order bytes are handed out straight from the caller's buffer (no copy, no allocation);
//!   only bytes beyond a hole are copied into held storage.
//! - Every byte is delivered at most once. Bytes already delivered (or skipped) are trimmed from
//!   later segments; between held segments the first arrival wins, and held data also wins over
//!   a later segment overlapping it.
//! - [`Reassembler::missing`] marks ranges the kernel reported as never captured
//!   ([`GapReason::Truncated`], [`GapReason::Lost`]). A mark is only permission to skip: when the
//!   next expected byte lies in a marked range and no captured data covers it, a gap is emitted up
//!   to the end of the mark or the next captured data, whichever comes first. Captured data always
//!   wins over a mark.
//! - A hole nobody explains is waited for at most `hold_timeout_ns`, counted from when the hole was
//!   first observed (the earliest arrival among the data, marks or FIN held behind it), in the
//!   callers' clock (`ts_ns`/`now_ns`). Timeouts fire in [`Reassembler::tick`] only. A timed-out
//!   hole becomes [`GapReason::Unknown`].
//! - Held storage is bounded: more than `max_held_bytes` held data bytes, or more held ranges
//!   than `max(max_held_bytes / 256, 64)` (so tiny segments cannot blow up bookkeeping), skips
//!   the earliest hole as [`GapReason::Unknown`] until back under the bound.
//! - Adjacent gaps of the same reason produced by one call are merged into one [`Piece::Gap`];
//!   lengths stay exact: bytes delivered + gap bytes always equal the extent the stream reached.
//! - After [`Piece::End`] every input is ignored.

use std::collections::BTreeMap;

#[cfg(test)]
mod tests;

/// Why bytes of the stream are missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GapReason {
    /// The packet was longer than the capture cap; its tail was never captured.
    Truncated,
    /// The capture record was dropped (ring buffer full); the kernel reported the range.
    Lost,
    /// Nobody explained the hole: it outlived the hold timeout, held storage overflowed, or the
    /// stream was flushed (RST, close) with the hole still open.
    Unknown,
}

/// One piece of the reassembled stream, in stream order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    /// In-order stream bytes; `ts_ns` is the capture time of the packet that carried them.
    Data {
        /// Sequence number of `bytes[0]`.
        seq: u32,
        /// Capture time of the packet that carried the bytes.
        ts_ns: u64,
        /// The bytes (borrowed from the caller's segment when they arrived in order).
        bytes: &'a [u8],
    },
    /// `len` bytes starting at `seq` will never be seen.
    Gap {
        /// Sequence number of the first missing byte.
        seq: u32,
        /// Number of missing bytes (never 0).
        len: u32,
        /// Why they are missing.
        reason: GapReason,
        /// When the loss was reported, or when the reassembler gave up on the hole.
        ts_ns: u64,
    },
    /// The stream ended (FIN reached in order, or RST). No more pieces after this.
    End {
        /// Time of the call that ended the stream.
        ts_ns: u64,
        /// Ended by RST (or flushed because of one) rather than FIN or close.
        reset: bool,
    },
}

/// Limits of one [`Reassembler`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReassemblyConfig {
    /// Most out-of-order data bytes held waiting for a hole to fill (default 4 MiB).
    pub max_held_bytes: usize,
    /// How long a hole is waited for before it becomes a [`GapReason::Unknown`] gap
    /// (default 500 ms).
    pub hold_timeout_ns: u64,
}

impl Default for ReassemblyConfig {
    fn default() -> Self {
        Self {
            max_held_bytes: 4 << 20,
            hold_timeout_ns: 500_000_000,
        }
    }
}

/// Counters of one [`Reassembler`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReassemblyStats {
    /// Bytes handed out as [`Piece::Data`].
    pub bytes_delivered: u64,
    /// Gap bytes with reason [`GapReason::Truncated`].
    pub bytes_gap_truncated: u64,
    /// Gap bytes with reason [`GapReason::Lost`].
    pub bytes_gap_lost: u64,
    /// Gap bytes with reason [`GapReason::Unknown`].
    pub bytes_gap_unknown: u64,
    /// Segments (at least partly) held because they arrived beyond a hole.
    pub segments_out_of_order: u64,
    /// Captured bytes dropped because they were already delivered, skipped or held.
    pub bytes_retransmitted: u64,
    /// Holes given up on because of the hold timeout.
    pub holes_timed_out: u64,
    /// Holes skipped because held storage exceeded its bound.
    pub window_overflows: u64,
    /// The stream's start was not known: capture joined an existing connection.
    pub joined_mid_stream: bool,
}

impl ReassemblyStats {
    /// Gap bytes of all reasons.
    pub fn bytes_gap(&self) -> u64 {
        self.bytes_gap_truncated + self.bytes_gap_lost + self.bytes_gap_unknown
    }

    /// Gap bytes of one reason.
    pub fn bytes_gap_by(&self, reason: GapReason) -> u64 {
        match reason {
            GapReason::Truncated => self.bytes_gap_truncated,
            GapReason::Lost => self.bytes_gap_lost,
            GapReason::Unknown => self.bytes_gap_unknown,
        }
    }
}

/// Held ranges allowed per byte of `max_held_bytes` (one range per this many bytes).
const BYTES_PER_HELD_RANGE: usize = 256;
/// Held ranges always allowed, whatever `max_held_bytes` says.
const MIN_HELD_RANGES: usize = 64;

/// Out-of-order data waiting for the hole before it.
#[derive(Debug)]
struct Held {
    data: Vec<u8>,
    /// Capture time; also when it was stored (it marks the hole before it as observed).
    ts_ns: u64,
}

/// A range the kernel reported as never captured (key of the map: its start).
#[derive(Debug)]
struct Mark {
    end: u64,
    reason: GapReason,
    ts_ns: u64,
}

/// A gap not yet handed out, so adjacent gaps of the same reason become one piece.
#[derive(Debug)]
struct PendingGap {
    start: u64,
    len: u64,
    reason: GapReason,
    ts_ns: u64,
}

/// Reassembles one direction of one TCP connection. See the module docs for the policy.
#[derive(Debug)]
pub struct Reassembler {
    config: ReassemblyConfig,
    max_held_ranges: usize,
    /// Sequence number of absolute offset 0; `None` until known.
    start: Option<u32>,
    /// Absolute offset of the next byte to hand out.
    next: u64,
    /// Out-of-order data by absolute start; non-overlapping, every start > `next`.
    held: BTreeMap<u64, Held>,
    held_bytes: usize,
    /// Missing marks by absolute start; non-overlapping, every end > `next`.
    marks: BTreeMap<u64, Mark>,
    /// FIN: absolute end of the stream and when it was seen.
    fin: Option<(u64, u64)>,
    ended: bool,
    pending: Option<PendingGap>,
    stats: ReassemblyStats,
}

impl Reassembler {
    /// A reassembler waiting for its stream's start.
    pub fn new(config: ReassemblyConfig) -> Self {
        let max_held_ranges = (config.max_held_bytes / BYTES_PER_HELD_RANGE).max(MIN_HELD_RANGES);
        Self {
            config,
            max_held_ranges,
            start: None,
            next: 0,
            held: BTreeMap::new(),
            held_bytes: 0,
            marks: BTreeMap::new(),
            fin: None,
            ended: false,
            pending: None,
            stats: ReassemblyStats::default(),
        }
    }

    /// The first sequence number of the stream is known (from the connection's establishment).
    /// Call before any data; ignored once the start is known (set, or defined by the first
    /// input) or the stream ended.
    pub fn set_start(&mut self, seq: u32) {
        if self.start.is_none() && !self.ended {
            self.start = Some(seq);
        }
    }

    /// Captured payload bytes `[seq, seq + data.len())`.
    pub fn segment(&mut self, seq: u32, data: &[u8], ts_ns: u64, out: &mut impl FnMut(Piece<'_>)) {
        if self.ended || data.is_empty() {
            return;
        }
        self.ensure_start(seq);
        let raw = self.rel(seq);
        let raw_end = raw + data.len() as i128;
        let next = i128::from(self.next);
        // Bytes before `next` were delivered or skipped already.
        self.stats.bytes_retransmitted += (raw_end.min(next) - raw).max(0) as u64;
        let s = raw.max(next);
        // Bytes beyond the FIN cannot be stream bytes; drop them.
        let e = raw_end.min(i128::from(self.limit()));
        if e <= s {
            return;
        }
        let bytes = &data[(s - raw) as usize..(e - raw) as usize];
        let (s, e) = (s as u64, e as u64);
        let delivered = self.drain(Some((s, bytes, ts_ns)), out);
        // Bytes of this segment the drain went past without delivering lost to held data.
        let mut dropped = self.next.clamp(s, e) - s - delivered;
        if self.next < e {
            let from = self.next.max(s);
            let rest = &bytes[(from - s) as usize..];
            let stored = self.store(from, rest, ts_ns);
            if stored > 0 {
                self.stats.segments_out_of_order += 1;
            }
            dropped += rest.len() as u64 - stored;
            self.enforce_bound(ts_ns, out);
        }
        self.stats.bytes_retransmitted += dropped;
        self.settle(ts_ns, out);
    }

    /// Bytes `[seq, seq + len)` exist in the stream but will never be captured (reason
    /// [`GapReason::Truncated`] or [`GapReason::Lost`]). Permission to skip: when the next
    /// expected byte falls in such a range and no captured data covers it, a gap is emitted up to
    /// the end of the range or the start of the next held captured data, whichever is first.
    pub fn missing(
        &mut self,
        seq: u32,
        len: u32,
        reason: GapReason,
        ts_ns: u64,
        out: &mut impl FnMut(Piece<'_>),
    ) {
        if self.ended || len == 0 {
            return;
        }
        self.ensure_start(seq);
        let raw = self.rel(seq);
        let s = raw.max(i128::from(self.next));
        let e = (raw + i128::from(len)).min(i128::from(self.limit()));
        if e > s {
            self.add_mark(s as u64, e as u64, reason, ts_ns);
            self.drain(None, out);
            self.enforce_bound(ts_ns, out);
        }
        self.settle(ts_ns, out);
    }

    /// FIN seen: the stream ends at `end_seq` (the FIN's sequence number, one past the last data
    /// byte). End is emitted once everything before `end_seq` was emitted; a hole before it waits
    /// for the timeout like any hole. A later FIN with another `end_seq` is ignored.
    pub fn fin(&mut self, end_seq: u32, ts_ns: u64, out: &mut impl FnMut(Piece<'_>)) {
        if self.ended {
            return;
        }
        self.ensure_start(end_seq);
        if self.fin.is_none() {
            // A FIN before the next expected byte contradicts what was delivered: end right here.
            let end = self.rel(end_seq).max(i128::from(self.next)) as u64;
            self.fin = Some((end, ts_ns));
            self.cut_at(end);
        }
        self.settle(ts_ns, out);
    }

    /// RST: emit everything held in order, with gaps for the holes between (up to the FIN if one
    /// was seen), then `End { reset: true }`.
    pub fn reset(&mut self, ts_ns: u64, out: &mut impl FnMut(Piece<'_>)) {
        if self.ended {
            return;
        }
        self.flush_all(ts_ns, out);
        self.end(true, ts_ns, out);
    }

    /// Time passes: holes first observed at least `hold_timeout_ns` before `now_ns` become
    /// [`GapReason::Unknown`] gaps and the held data behind them flows.
    pub fn tick(&mut self, now_ns: u64, out: &mut impl FnMut(Piece<'_>)) {
        if self.ended || self.start.is_none() {
            return;
        }
        while let Some(since) = self.hole_since() {
            if now_ns.saturating_sub(since) < self.config.hold_timeout_ns
                || !self.skip_hole(now_ns, out)
            {
                break;
            }
            self.stats.holes_timed_out += 1;
            self.drain(None, out);
        }
        self.settle(now_ns, out);
    }

    /// Connection closed or process gone: flush everything held (gaps for the holes, up to the
    /// FIN if one was seen) and `End { reset: false }`.
    pub fn close(&mut self, ts_ns: u64, out: &mut impl FnMut(Piece<'_>)) {
        if self.ended {
            return;
        }
        self.flush_all(ts_ns, out);
        self.end(false, ts_ns, out);
    }

    /// Counters so far.
    pub fn stats(&self) -> &ReassemblyStats {
        &self.stats
    }

    /// Sequence number of the next byte to hand out, once the start is known.
    pub fn next_seq(&self) -> Option<u32> {
        self.start.map(|_| self.seq_at(self.next))
    }

    /// Out-of-order data bytes currently held.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// `End` was emitted; every input is ignored from now on.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    // --- coordinates ---

    /// Without a known start, the first input defines it: capture joined mid-stream.
    fn ensure_start(&mut self, seq: u32) {
        if self.start.is_none() {
            self.start = Some(seq);
            self.stats.joined_mid_stream = true;
        }
    }

    fn seq_at(&self, abs: u64) -> u32 {
        self.start.unwrap_or(0).wrapping_add(abs as u32)
    }

    /// Absolute offset of `seq`: the one within ±2³¹ of the next expected byte (may be < 0).
    fn rel(&self, seq: u32) -> i128 {
        let delta = seq.wrapping_sub(self.seq_at(self.next)) as i32;
        i128::from(self.next) + i128::from(delta)
    }

    /// One past the last byte the stream can have.
    fn limit(&self) -> u64 {
        self.fin.map_or(u64::MAX, |(end, _)| end)
    }

    // --- held storage ---

    /// Copies the parts of `[s, s + data.len())` no held data covers yet (first arrival wins).
    /// Returns how many bytes were stored.
    fn store(&mut self, s: u64, data: &[u8], ts_ns: u64) -> u64 {
        let e = s + data.len() as u64;
        let mut cur = s;
        if let Some((&ps, p)) = self.held.range(..s).next_back() {
            cur = cur.max(ps + p.data.len() as u64);
        }
        let mut stored = 0;
        while cur < e {
            let (free_end, resume) = match self.held.range(cur..).next() {
                Some((&hs, h)) if hs < e => (hs, hs + h.data.len() as u64),
                _ => (e, e),
            };
            if free_end > cur {
                let part = data[(cur - s) as usize..(free_end - s) as usize].to_vec();
                self.held_bytes += part.len();
                stored += part.len() as u64;
                self.held.insert(cur, Held { data: part, ts_ns });
            }
            cur = resume;
        }
        stored
    }

    /// Records `[s, e)` as never captured, where no earlier mark covers it.
    fn add_mark(&mut self, s: u64, e: u64, reason: GapReason, ts_ns: u64) {
        let mut cur = s;
        if let Some((_, p)) = self.marks.range(..s).next_back() {
            cur = cur.max(p.end);
        }
        while cur < e {
            let (free_end, resume) = match self.marks.range(cur..).next() {
                Some((&ms, m)) if ms < e => (ms, m.end),
                _ => (e, e),
            };
            if free_end > cur {
                self.marks.insert(
                    cur,
                    Mark {
                        end: free_end,
                        reason,
                        ts_ns,
                    },
                );
            }
            cur = resume;
        }
    }

    /// Drops held data and marks at or beyond `end` (the FIN).
    fn cut_at(&mut self, end: u64) {
        let beyond: usize = self
            .held
            .split_off(&end)
            .values()
            .map(|h| h.data.len())
            .sum();
        self.held_bytes -= beyond;
        if let Some(mut last) = self.held.last_entry() {
            let keep = (end - *last.key()) as usize;
            let h = last.get_mut();
            if h.data.len() > keep {
                self.held_bytes -= h.data.len() - keep;
                h.data.truncate(keep);
            }
        }
        self.marks.split_off(&end);
        if let Some(mut last) = self.marks.last_entry() {
            let m = last.get_mut();
            m.end = m.end.min(end);
        }
    }

    /// Drops marks wholly behind `next` and re-keys one `next` is inside to start at `next`.
    fn normalize_marks(&mut self) {
        while let Some(first) = self.marks.first_entry() {
            if first.get().end <= self.next {
                first.remove();
                continue;
            }
            if *first.key() < self.next {
                let mark = first.remove();
                self.marks.insert(self.next, mark);
            }
            break;
        }
    }

    fn over_bound(&self) -> bool {
        self.held_bytes > self.config.max_held_bytes
            || self.held.len() + self.marks.len() > self.max_held_ranges
    }

    /// When the earliest hole was first observed: the earliest arrival of anything behind it.
    /// `None` when there is no hole (nothing held, no FIN ahead).
    fn hole_since(&self) -> Option<u64> {
        let held = self.held.values().map(|h| h.ts_ns);
        let marks = self.marks.values().map(|m| m.ts_ns);
        let fin = self
            .fin
            .filter(|&(end, _)| end > self.next)
            .map(|(_, ts)| ts);
        held.chain(marks).chain(fin).min()
    }

    // --- emitting ---

    /// Hands out everything contiguous at `next`: held data first (it arrived first), then the
    /// incoming segment `(start, bytes, ts)`, then marks. Returns how many bytes of the incoming
    /// segment were delivered.
    fn drain<F: FnMut(Piece<'_>)>(&mut self, inc: Option<(u64, &[u8], u64)>, out: &mut F) -> u64 {
        let mut delivered = 0;
        loop {
            self.normalize_marks();
            if let Some(first) = self.held.first_entry() {
                let start = *first.key();
                if start <= self.next {
                    let held = first.remove();
                    self.held_bytes -= held.data.len();
                    // Held data never starts before `next`; trim defensively all the same.
                    let skip = ((self.next - start) as usize).min(held.data.len());
                    self.emit_data(&held.data[skip..], held.ts_ns, out);
                    continue;
                }
            }
            let held_start = self.held.first_key_value().map_or(u64::MAX, |(&k, _)| k);
            if let Some((s, bytes, ts)) = inc {
                let e = s + bytes.len() as u64;
                if s <= self.next && self.next < e {
                    let upto = e.min(held_start);
                    let part = &bytes[(self.next - s) as usize..(upto - s) as usize];
                    delivered += part.len() as u64;
                    self.emit_data(part, ts, out);
                    continue;
                }
            }
            if let Some((&ms, m)) = self.marks.first_key_value()
                && ms <= self.next
            {
                let mut upto = m.end.min(held_start);
                if let Some((s, _, _)) = inc
                    && s > self.next
                {
                    upto = upto.min(s);
                }
                let (reason, ts) = (m.reason, m.ts_ns);
                self.gap(upto - self.next, reason, ts, out);
                continue;
            }
            return delivered;
        }
    }

    /// Gap from `next` to the next thing known to exist (held data, a mark, the FIN).
    /// Returns false when there is nothing beyond `next`.
    fn skip_hole<F: FnMut(Piece<'_>)>(&mut self, ts_ns: u64, out: &mut F) -> bool {
        self.normalize_marks();
        let held = self.held.first_key_value().map(|(&k, _)| k);
        let mark = self.marks.first_key_value().map(|(&k, _)| k);
        let fin = self.fin.map(|(end, _)| end);
        match [held, mark, fin]
            .into_iter()
            .flatten()
            .filter(|&b| b > self.next)
            .min()
        {
            Some(to) => {
                self.gap(to - self.next, GapReason::Unknown, ts_ns, out);
                true
            }
            None => false,
        }
    }

    /// Skips holes until held storage is within its bound.
    fn enforce_bound<F: FnMut(Piece<'_>)>(&mut self, ts_ns: u64, out: &mut F) {
        while self.over_bound() && self.skip_hole(ts_ns, out) {
            self.stats.window_overflows += 1;
            self.drain(None, out);
        }
    }

    /// Hands out everything that is known, skipping every hole.
    fn flush_all<F: FnMut(Piece<'_>)>(&mut self, ts_ns: u64, out: &mut F) {
        if self.start.is_none() {
            return;
        }
        self.drain(None, out);
        while self.skip_hole(ts_ns, out) {
            self.drain(None, out);
        }
    }

    /// End of every public call: deliver what became contiguous, end at the FIN, and hand out
    /// the pending gap.
    fn settle<F: FnMut(Piece<'_>)>(&mut self, ts_ns: u64, out: &mut F) {
        if self.ended {
            return;
        }
        self.drain(None, out);
        if self.fin.is_some_and(|(end, _)| self.next >= end) {
            self.end(false, ts_ns, out);
        } else {
            self.flush_gap(out);
        }
    }

    fn emit_data<F: FnMut(Piece<'_>)>(&mut self, bytes: &[u8], ts_ns: u64, out: &mut F) {
        if bytes.is_empty() {
            return;
        }
        self.flush_gap(out);
        let seq = self.seq_at(self.next);
        self.next += bytes.len() as u64;
        self.stats.bytes_delivered += bytes.len() as u64;
        out(Piece::Data { seq, ts_ns, bytes });
    }

    /// Gap of `len` bytes at `next`; merged with the pending gap when adjacent and same reason.
    fn gap<F: FnMut(Piece<'_>)>(&mut self, len: u64, reason: GapReason, ts_ns: u64, out: &mut F) {
        if len == 0 {
            return;
        }
        let start = self.next;
        self.next += len;
        match reason {
            GapReason::Truncated => self.stats.bytes_gap_truncated += len,
            GapReason::Lost => self.stats.bytes_gap_lost += len,
            GapReason::Unknown => self.stats.bytes_gap_unknown += len,
        }
        if let Some(p) = &mut self.pending
            && p.reason == reason
            && p.start + p.len == start
            && p.len + len <= u64::from(u32::MAX)
        {
            p.len += len;
            return;
        }
        self.flush_gap(out);
        self.pending = Some(PendingGap {
            start,
            len,
            reason,
            ts_ns,
        });
    }

    fn flush_gap<F: FnMut(Piece<'_>)>(&mut self, out: &mut F) {
        let Some(p) = self.pending.take() else { return };
        let (mut start, mut left) = (p.start, p.len);
        // A gap piece holds at most u32::MAX bytes; longer ones (only from absurd input) split.
        while left > 0 {
            let len = left.min(u64::from(u32::MAX));
            out(Piece::Gap {
                seq: self.seq_at(start),
                len: len as u32,
                reason: p.reason,
                ts_ns: p.ts_ns,
            });
            start += len;
            left -= len;
        }
    }

    fn end<F: FnMut(Piece<'_>)>(&mut self, reset: bool, ts_ns: u64, out: &mut F) {
        self.flush_gap(out);
        self.ended = true;
        self.held.clear();
        self.held_bytes = 0;
        self.marks.clear();
        out(Piece::End { ts_ns, reset });
    }
}
