//! Unit tests and properties of the reassembler.
use super::*;
use proptest::prelude::*;

/// An owned [`Piece`], so tests can keep what was emitted.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Data(u32, u64, Vec<u8>),
    Gap(u32, u32, GapReason, u64),
    End(u64, bool),
}

impl From<Piece<'_>> for Ev {
    fn from(p: Piece<'_>) -> Self {
        match p {
            Piece::Data { seq, ts_ns, bytes } => Ev::Data(seq, ts_ns, bytes.to_vec()),
            Piece::Gap {
                seq,
                len,
                reason,
                ts_ns,
            } => Ev::Gap(seq, len, reason, ts_ns),
            Piece::End { ts_ns, reset } => Ev::End(ts_ns, reset),
        }
    }
}

fn data(seq: u32, ts: u64, bytes: &[u8]) -> Ev {
    Ev::Data(seq, ts, bytes.to_vec())
}

/// A reassembler plus everything it emitted.
struct H {
    r: Reassembler,
    ev: Vec<Ev>,
}

impl H {
    fn new() -> Self {
        Self::with(ReassemblyConfig::default())
    }
    fn with(config: ReassemblyConfig) -> Self {
        Self {
            r: Reassembler::new(config),
            ev: Vec::new(),
        }
    }
    fn started(seq: u32) -> Self {
        let mut h = Self::new();
        h.r.set_start(seq);
        h
    }
    fn seg(&mut self, seq: u32, bytes: &[u8], ts: u64) {
        let ev = &mut self.ev;
        self.r.segment(seq, bytes, ts, &mut |p| ev.push(p.into()));
    }
    fn miss(&mut self, seq: u32, len: u32, reason: GapReason, ts: u64) {
        let ev = &mut self.ev;
        self.r
            .missing(seq, len, reason, ts, &mut |p| ev.push(p.into()));
    }
    fn fin(&mut self, seq: u32, ts: u64) {
        let ev = &mut self.ev;
        self.r.fin(seq, ts, &mut |p| ev.push(p.into()));
    }
    fn reset(&mut self, ts: u64) {
        let ev = &mut self.ev;
        self.r.reset(ts, &mut |p| ev.push(p.into()));
    }
    fn tick(&mut self, now: u64) {
        let ev = &mut self.ev;
        self.r.tick(now, &mut |p| ev.push(p.into()));
    }
    fn close(&mut self, ts: u64) {
        let ev = &mut self.ev;
        self.r.close(ts, &mut |p| ev.push(p.into()));
    }
    fn take(&mut self) -> Vec<Ev> {
        std::mem::take(&mut self.ev)
    }
    fn bytes(&self) -> Vec<u8> {
        self.ev
            .iter()
            .flat_map(|e| match e {
                Ev::Data(_, _, b) => b.clone(),
                _ => Vec::new(),
            })
            .collect()
    }
}

/// What one stream byte became.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum B {
    D(u8),
    G(GapReason),
}

/// Checks pieces are contiguous from `start`, nothing follows End and gaps are non-empty;
/// returns what each byte became and whether the stream ended.
fn flatten(start: u32, evs: &[Ev]) -> (Vec<B>, bool) {
    let mut at = start;
    let mut out = Vec::new();
    let mut ended = false;
    for e in evs {
        assert!(!ended, "piece after End: {e:?}");
        match e {
            Ev::Data(seq, _, b) => {
                assert_eq!(*seq, at, "data not contiguous");
                assert!(!b.is_empty(), "empty data piece");
                out.extend(b.iter().map(|&x| B::D(x)));
                at = at.wrapping_add(b.len() as u32);
            }
            Ev::Gap(seq, len, reason, _) => {
                assert_eq!(*seq, at, "gap not contiguous");
                assert!(*len > 0, "empty gap piece");
                out.extend(std::iter::repeat_n(B::G(*reason), *len as usize));
                at = at.wrapping_add(*len);
            }
            Ev::End(..) => ended = true,
        }
    }
    (out, ended)
}

/// Like [`flatten`] without materializing bytes (for absurdly long gaps): total length, ended.
fn span(start: u32, evs: &[Ev]) -> (u64, bool) {
    let mut at = start;
    let mut total = 0u64;
    let mut ended = false;
    for e in evs {
        assert!(!ended, "piece after End: {e:?}");
        let n = match e {
            Ev::Data(seq, _, b) => {
                assert_eq!(*seq, at, "data not contiguous");
                b.len() as u32
            }
            Ev::Gap(seq, len, _, _) => {
                assert_eq!(*seq, at, "gap not contiguous");
                *len
            }
            Ev::End(..) => {
                ended = true;
                0
            }
        };
        assert!(n > 0 || ended, "empty piece");
        at = at.wrapping_add(n);
        total += u64::from(n);
    }
    (total, ended)
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

const MS: u64 = 1_000_000;

#[test]
fn in_order_is_passed_through_zero_copy() {
    let mut r = Reassembler::new(ReassemblyConfig::default());
    r.set_start(1000);
    let a = b"hello".to_vec();
    let b = b" world".to_vec();
    let mut seen = Vec::new();
    for (seq, buf, ts) in [(1000, &a, 1), (1005, &b, 2)] {
        r.segment(seq, buf, ts, &mut |p| {
            if let Piece::Data { bytes, .. } = p {
                assert_eq!(
                    bytes.as_ptr(),
                    buf.as_ptr(),
                    "in-order data must borrow the input"
                );
            }
            seen.push(Ev::from(p));
        });
    }
    assert_eq!(
        seen,
        vec![data(1000, 1, b"hello"), data(1005, 2, b" world")]
    );
    assert_eq!(r.next_seq(), Some(1011));
    assert_eq!(r.held_bytes(), 0);
    assert_eq!(r.stats().bytes_delivered, 11);
    assert!(!r.stats().joined_mid_stream);
}

#[test]
fn retransmission_is_dropped() {
    let mut h = H::started(0);
    h.seg(0, b"abcd", 1);
    h.seg(0, b"abcd", 2);
    h.seg(2, b"cd", 3);
    assert_eq!(h.take(), vec![data(0, 1, b"abcd")]);
    assert_eq!(h.r.stats().bytes_retransmitted, 6);
    assert_eq!(h.r.next_seq(), Some(4));
}

#[test]
fn partial_overlap_is_trimmed() {
    let mut h = H::started(0);
    h.seg(0, b"abcd", 1);
    h.seg(2, b"cdef", 2);
    assert_eq!(h.take(), vec![data(0, 1, b"abcd"), data(4, 2, b"ef")]);
    assert_eq!(h.r.stats().bytes_retransmitted, 2);
}

#[test]
fn overlaps_between_held_segments_first_arrival_wins() {
    let mut h = H::started(0);
    h.seg(4, b"EFGH", 1);
    h.seg(6, b"xxIJ", 2);
    h.seg(3, b"yEz", 3); // 'y' at 3 is new, 'E','z' overlap held bytes
    assert_eq!(h.r.held_bytes(), 7);
    h.seg(0, b"abcdqqqqqqK", 4); // [3,10) held wins, 'K' at 10 new
    assert_eq!(h.bytes(), b"abcyEFGHIJK");
    assert_eq!(
        h.take(),
        vec![
            data(0, 4, b"abc"),
            data(3, 3, b"y"),
            data(4, 1, b"EFGH"),
            data(8, 2, b"IJ"),
            data(10, 4, b"K"),
        ]
    );
    assert_eq!(h.r.stats().bytes_retransmitted, 2 + 2 + 1 + 6);
    assert_eq!(h.r.held_bytes(), 0);
}

#[test]
fn out_of_order_is_held_then_released() {
    let mut h = H::started(0);
    h.seg(5, b"fgh", 1);
    assert!(h.ev.is_empty());
    assert_eq!(h.r.held_bytes(), 3);
    h.seg(0, b"abcde", 2);
    assert_eq!(h.take(), vec![data(0, 2, b"abcde"), data(5, 1, b"fgh")]);
    assert_eq!(h.r.held_bytes(), 0);
    assert_eq!(h.r.stats().segments_out_of_order, 1);
}

#[test]
fn hole_filled_exactly_by_missing() {
    let mut h = H::started(0);
    h.seg(0, b"ab", 1);
    h.seg(5, b"fg", 2);
    h.miss(2, 3, GapReason::Lost, 3);
    assert_eq!(
        h.take(),
        vec![
            data(0, 1, b"ab"),
            Ev::Gap(2, 3, GapReason::Lost, 3),
            data(5, 2, b"fg")
        ]
    );
    assert_eq!(h.r.stats().bytes_gap_lost, 3);
    assert_eq!(h.r.held_bytes(), 0);
}

#[test]
fn missing_range_partially_covered_by_data_that_arrived() {
    // Data held before the report.
    let mut h = H::started(0);
    h.seg(0, b"ab", 1);
    h.seg(4, b"ef", 2);
    h.seg(8, b"ij", 3);
    h.miss(2, 8, GapReason::Lost, 4);
    assert_eq!(
        h.take(),
        vec![
            data(0, 1, b"ab"),
            Ev::Gap(2, 2, GapReason::Lost, 4),
            data(4, 2, b"ef"),
            Ev::Gap(6, 2, GapReason::Lost, 4),
            data(8, 3, b"ij"),
        ]
    );
    // Report ahead of the data, data then arrives for part of it.
    let mut h = H::started(0);
    h.miss(4, 6, GapReason::Lost, 1);
    h.seg(6, b"gh", 2);
    h.seg(0, b"abcd", 3);
    assert_eq!(
        h.take(),
        vec![
            data(0, 3, b"abcd"),
            Ev::Gap(4, 2, GapReason::Lost, 1),
            data(6, 2, b"gh"),
            Ev::Gap(8, 2, GapReason::Lost, 1),
        ]
    );
    // In-order data arriving inside a reported range wins too.
    let mut h = H::started(0);
    h.miss(0, 10, GapReason::Lost, 1);
    assert_eq!(h.take(), vec![Ev::Gap(0, 10, GapReason::Lost, 1)]);
    let mut h = H::started(0);
    h.seg(0, b"a", 1);
    h.seg(5, b"f", 2);
    h.miss(1, 8, GapReason::Lost, 3);
    assert_eq!(h.r.next_seq(), Some(9));
    assert_eq!(h.r.stats().bytes_gap_lost, 7);
}

#[test]
fn truncation_in_the_middle() {
    let mut h = H::started(100);
    h.seg(100, b"abcd", 1);
    h.seg(104, b"ef", 2);
    h.miss(106, 4, GapReason::Truncated, 2);
    h.seg(110, b"xyz", 3);
    assert_eq!(
        h.take(),
        vec![
            data(100, 1, b"abcd"),
            data(104, 2, b"ef"),
            Ev::Gap(106, 4, GapReason::Truncated, 2),
            data(110, 3, b"xyz"),
        ]
    );
    // The truncated packet arrives after a later one.
    let mut h = H::started(100);
    h.seg(110, b"k", 1);
    h.seg(100, b"abc", 2);
    h.miss(103, 7, GapReason::Truncated, 2);
    assert_eq!(
        h.take(),
        vec![
            data(100, 2, b"abc"),
            Ev::Gap(103, 7, GapReason::Truncated, 2),
            data(110, 1, b"k")
        ]
    );
    assert_eq!(h.r.stats().bytes_gap_truncated, 7);
}

#[test]
fn hole_times_out() {
    let mut h = H::started(0);
    h.seg(0, b"ab", 0);
    h.seg(5, b"fg", 100 * MS);
    h.seg(10, b"k", 400 * MS);
    h.tick(550 * MS);
    assert_eq!(h.take(), vec![data(0, 0, b"ab")]);
    h.tick(600 * MS);
    assert_eq!(
        h.take(),
        vec![
            Ev::Gap(2, 3, GapReason::Unknown, 600 * MS),
            data(5, 100 * MS, b"fg")
        ]
    );
    // The next hole was observed when "k" arrived.
    h.tick(899 * MS);
    assert!(h.ev.is_empty());
    h.tick(900 * MS);
    assert_eq!(
        h.take(),
        vec![
            Ev::Gap(7, 3, GapReason::Unknown, 900 * MS),
            data(10, 400 * MS, b"k")
        ]
    );
    assert_eq!(h.r.stats().holes_timed_out, 2);
    // Late bytes of a skipped hole are retransmissions now.
    h.seg(2, b"cde", 950 * MS);
    assert!(h.ev.is_empty());
    assert_eq!(h.r.stats().bytes_retransmitted, 3);
    // No hole, nothing to time out.
    h.tick(10_000 * MS);
    assert!(h.ev.is_empty());
}

#[test]
fn window_overflow_skips_earliest_hole() {
    let mut h = H::with(ReassemblyConfig {
        max_held_bytes: 8,
        hold_timeout_ns: u64::MAX,
    });
    h.r.set_start(0);
    h.seg(0, b"a", 1);
    h.seg(2, b"cdefg", 2);
    h.seg(10, b"klmno", 3);
    assert_eq!(
        h.take(),
        vec![
            data(0, 1, b"a"),
            Ev::Gap(1, 1, GapReason::Unknown, 3),
            data(2, 2, b"cdefg")
        ]
    );
    assert_eq!(h.r.held_bytes(), 5);
    assert_eq!(h.r.stats().window_overflows, 1);
    // One oversized segment: skip to it and deliver it.
    h.seg(20, &[b'z'; 20], 4);
    let evs = h.take();
    assert_eq!(evs.len(), 4);
    assert_eq!(evs[0], Ev::Gap(7, 3, GapReason::Unknown, 4));
    assert_eq!(evs[2], Ev::Gap(15, 5, GapReason::Unknown, 4));
    assert_eq!(h.r.held_bytes(), 0);
    assert_eq!(h.r.next_seq(), Some(40));
}

#[test]
fn many_tiny_held_ranges_are_bounded() {
    let mut h = H::with(ReassemblyConfig {
        max_held_bytes: 1 << 20,
        hold_timeout_ns: u64::MAX,
    });
    h.r.set_start(0);
    for i in 1..20_000u32 {
        h.seg(i * 2, b"x", 1);
        assert!(h.r.held.len() <= h.r.max_held_ranges);
    }
    assert!(h.r.stats().window_overflows > 0);
    let (flat, _) = flatten(0, &h.ev);
    assert_eq!(flat.len() as u32, h.r.next_seq().unwrap());
}

#[test]
fn fin_without_holes() {
    let mut h = H::started(0);
    h.seg(0, b"abc", 1);
    h.fin(3, 2);
    assert_eq!(h.take(), vec![data(0, 1, b"abc"), Ev::End(2, false)]);
    assert!(h.r.is_ended());
    // Everything after End is ignored.
    h.seg(3, b"zzz", 3);
    h.miss(3, 5, GapReason::Lost, 3);
    h.fin(9, 3);
    h.tick(u64::MAX);
    h.reset(4);
    h.close(5);
    assert!(h.ev.is_empty());
}

#[test]
fn fin_before_the_last_data_arrives() {
    let mut h = H::started(0);
    h.seg(0, b"ab", 1);
    h.fin(5, 2);
    assert_eq!(h.take(), vec![data(0, 1, b"ab")]);
    h.seg(2, b"cdeXYZ", 3); // bytes beyond the FIN are not stream bytes
    assert_eq!(h.take(), vec![data(2, 3, b"cde"), Ev::End(3, false)]);
}

#[test]
fn fin_with_hole_waits_for_timeout() {
    let mut h = H::started(0);
    h.seg(0, b"ab", 0);
    h.seg(4, b"e", 10 * MS);
    h.fin(5, 20 * MS);
    assert_eq!(h.take(), vec![data(0, 0, b"ab")]);
    h.tick(509 * MS);
    assert!(h.ev.is_empty());
    h.tick(510 * MS);
    assert_eq!(
        h.take(),
        vec![
            Ev::Gap(2, 2, GapReason::Unknown, 510 * MS),
            data(4, 10 * MS, b"e"),
            Ev::End(510 * MS, false)
        ]
    );
    // A hole before the FIN with nothing held behind it.
    let mut h = H::started(0);
    h.seg(0, b"ab", 0);
    h.fin(5, 10 * MS);
    h.tick(509 * MS);
    assert_eq!(h.take(), vec![data(0, 0, b"ab")]);
    h.tick(510 * MS);
    assert_eq!(
        h.take(),
        vec![
            Ev::Gap(2, 3, GapReason::Unknown, 510 * MS),
            Ev::End(510 * MS, false)
        ]
    );
    // A hole before the FIN filled by a missing report.
    let mut h = H::started(0);
    h.seg(0, b"ab", 0);
    h.fin(5, 1);
    h.miss(2, 3, GapReason::Truncated, 2);
    assert_eq!(
        h.take(),
        vec![
            data(0, 0, b"ab"),
            Ev::Gap(2, 3, GapReason::Truncated, 2),
            Ev::End(2, false)
        ]
    );
}

#[test]
fn rst_flushes_held_with_gaps() {
    let mut h = H::started(0);
    h.seg(0, b"ab", 1);
    h.seg(4, b"ef", 2);
    h.miss(8, 2, GapReason::Lost, 3);
    h.seg(12, b"mn", 4);
    h.reset(5);
    assert_eq!(
        h.take(),
        vec![
            data(0, 1, b"ab"),
            Ev::Gap(2, 2, GapReason::Unknown, 5),
            data(4, 2, b"ef"),
            Ev::Gap(6, 2, GapReason::Unknown, 5),
            Ev::Gap(8, 2, GapReason::Lost, 3),
            Ev::Gap(10, 2, GapReason::Unknown, 5),
            data(12, 4, b"mn"),
            Ev::End(5, true),
        ]
    );
    assert!(h.r.is_ended());
    assert_eq!(h.r.held_bytes(), 0);
    // RST before anything: just End.
    let mut h = H::new();
    h.reset(7);
    assert_eq!(h.take(), vec![Ev::End(7, true)]);
}

#[test]
fn close_flushes_and_ends() {
    let mut h = H::started(0);
    h.seg(3, b"d", 1);
    h.fin(6, 2);
    h.close(9);
    assert_eq!(
        h.take(),
        vec![
            Ev::Gap(0, 3, GapReason::Unknown, 9),
            data(3, 1, b"d"),
            Ev::Gap(4, 2, GapReason::Unknown, 9),
            Ev::End(9, false),
        ]
    );
}

#[test]
fn sequence_wraparound() {
    let mut h = H::started(u32::MAX - 2);
    h.seg(u32::MAX - 2, b"abc", 1);
    h.seg(2, b"fg", 2); // held across the wrap
    h.seg(0, b"de", 3);
    assert_eq!(h.bytes(), b"abcdefg");
    assert_eq!(
        h.take(),
        vec![
            data(u32::MAX - 2, 1, b"abc"),
            data(0, 3, b"de"),
            data(2, 2, b"fg")
        ]
    );
    // A segment spanning the wrap, retransmitted from before it.
    let mut h = H::started(u32::MAX - 1);
    h.seg(u32::MAX - 1, b"abcd", 1);
    h.seg(u32::MAX, b"bcdef", 2);
    assert_eq!(
        h.take(),
        vec![data(u32::MAX - 1, 1, b"abcd"), data(2, 2, b"ef")]
    );
    h.miss(4, 3, GapReason::Lost, 3);
    h.fin(7, 4);
    assert_eq!(
        h.take(),
        vec![Ev::Gap(4, 3, GapReason::Lost, 3), Ev::End(4, false)]
    );
}

#[test]
fn mid_stream_join() {
    let mut h = H::new();
    assert_eq!(h.r.next_seq(), None);
    h.seg(5000, b"xyz", 1);
    assert!(h.r.stats().joined_mid_stream);
    h.seg(4990, b"0123456789", 2); // before the start: retransmission
    h.seg(4998, b"abcdefgh", 3); // [4998, 5003) before the start / delivered, "fgh" new
    assert_eq!(h.take(), vec![data(5000, 1, b"xyz"), data(5003, 3, b"fgh")]);
    assert_eq!(h.r.stats().bytes_retransmitted, 15);
    // set_start after the start was defined changes nothing.
    h.r.set_start(1);
    assert_eq!(h.r.next_seq(), Some(5006));
    // A missing report can define the start too.
    let mut h = H::new();
    h.miss(100, 10, GapReason::Lost, 1);
    assert_eq!(h.take(), vec![Ev::Gap(100, 10, GapReason::Lost, 1)]);
    assert!(h.r.stats().joined_mid_stream);
}

#[test]
fn absurd_inputs_do_not_panic() {
    let mut h = H::new();
    h.seg(7, b"", 1); // empty: does not define the start
    h.miss(7, 0, GapReason::Lost, 1);
    h.tick(u64::MAX);
    assert_eq!(h.r.next_seq(), None);
    h.fin(42, 2); // FIN before anything: empty stream
    assert_eq!(h.take(), vec![Ev::End(2, false)]);

    let mut h = H::started(0);
    h.seg(0, b"ab", 1);
    h.seg(2u32.wrapping_add(1 << 31), b"far", 2); // exactly half the space away: behind
    h.seg(2 + (1 << 31) - 1, b"edge", 3); // as far ahead as possible
    h.miss(10, u32::MAX, GapReason::Lost, 4);
    h.miss(u32::MAX, u32::MAX, GapReason::Truncated, 5);
    h.fin(1, 6); // before what was delivered: ends here
    let (total, ended) = span(0, &h.ev);
    assert!(ended);
    assert_eq!(total, h.r.stats().bytes_delivered + h.r.stats().bytes_gap());

    let mut h = H::started(0);
    h.miss(5, u32::MAX, GapReason::Lost, 1);
    h.seg(1, b"x", 1);
    h.close(2);
    let (total, ended) = span(0, &h.ev);
    assert!(ended);
    assert_eq!(total, h.r.stats().bytes_delivered + h.r.stats().bytes_gap());
    assert_eq!(total, 5 + u64::from(u32::MAX));
}

// --- properties ---

/// A stream, cut into consecutive segments: (start offset, end offset) pairs.
fn cuts(len: usize, points: &[usize]) -> Vec<(usize, usize)> {
    let mut p: Vec<usize> = points.iter().map(|&x| x % (len + 1)).collect();
    p.push(0);
    p.push(len);
    p.sort_unstable();
    p.dedup();
    p.windows(2).map(|w| (w[0], w[1])).collect()
}

/// Arrival order: segments sorted by random keys.
fn shuffled<T: Clone>(items: &[T], keys: &[u32]) -> Vec<T> {
    let mut v: Vec<(u32, usize)> = (0..items.len())
        .map(|i| (keys.get(i).copied().unwrap_or(i as u32), i))
        .collect();
    v.sort_unstable();
    v.into_iter().map(|(_, i)| items[i].clone()).collect()
}

#[derive(Debug, Clone)]
enum In {
    Seg(usize, usize),
    Miss(usize, usize, GapReason),
    Fin,
}

fn feed(h: &mut H, start: u32, stream: &[u8], inputs: &[In]) {
    for (i, input) in inputs.iter().enumerate() {
        let ts = i as u64;
        match *input {
            In::Seg(a, b) => h.seg(start.wrapping_add(a as u32), &stream[a..b], ts),
            In::Miss(a, b, reason) => {
                h.miss(start.wrapping_add(a as u32), (b - a) as u32, reason, ts)
            }
            In::Fin => h.fin(start.wrapping_add(stream.len() as u32), ts),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random cuts, random order, duplicates and overlaps: the exact stream, no gaps.
    #[test]
    fn reorders_duplicates_and_overlaps_reassemble_exactly(
        start in any::<u32>(),
        len in 0usize..1500,
        points in prop::collection::vec(any::<usize>(), 0..40),
        extra in prop::collection::vec((any::<usize>(), 0usize..300), 0..20),
        keys in prop::collection::vec(any::<u32>(), 80),
        start_known in any::<bool>(),
    ) {
        let stream = pattern(len);
        let mut inputs: Vec<In> = cuts(len, &points).into_iter().map(|(a, b)| In::Seg(a, b)).collect();
        for &(a, n) in &extra {
            let a = a % (len + 1);
            inputs.push(In::Seg(a, (a + n).min(len)));
        }
        inputs.push(In::Fin);
        let mut order = shuffled(&inputs, &keys);
        let mut h = H::new();
        if start_known {
            h.r.set_start(start);
        } else if len > 0 {
            // Joining mid-stream: the first arrival must be the stream's first bytes.
            order.insert(0, In::Seg(0, len.min(3)));
        }
        feed(&mut h, start, &stream, &order);
        let (flat, ended) = flatten(start, &h.ev);
        let expect: Vec<B> = stream.iter().map(|&b| B::D(b)).collect();
        prop_assert_eq!(flat, expect);
        prop_assert!(ended);
        prop_assert_eq!(h.r.held_bytes(), 0);
        prop_assert_eq!(h.r.stats().bytes_gap(), 0);
        prop_assert_eq!(h.r.stats().bytes_delivered, len as u64);
    }

    /// Withheld segments reported via missing(): data + gaps cover the stream exactly, data is
    /// the original, gaps are exactly the withheld bytes.
    #[test]
    fn withheld_segments_become_exact_gaps(
        start in any::<u32>(),
        len in 1usize..1500,
        points in prop::collection::vec(any::<usize>(), 0..40),
        fate in prop::collection::vec(0u8..6, 41),
        dups in prop::collection::vec(any::<usize>(), 0..10),
        keys in prop::collection::vec(any::<u32>(), 100),
    ) {
        let stream = pattern(len);
        let mut inputs = Vec::new();
        let mut sent = Vec::new();
        let mut withheld = 0u64;
        for (i, (a, b)) in cuts(len, &points).into_iter().enumerate() {
            match fate[i % fate.len()] {
                0 => {
                    inputs.push(In::Miss(a, b, GapReason::Lost));
                    withheld += (b - a) as u64;
                }
                1 => {
                    // Truncated: the head was captured, the tail reported.
                    let m = a + (b - a) / 2;
                    inputs.push(In::Seg(a, m));
                    inputs.push(In::Miss(m, b, GapReason::Truncated));
                    sent.push((a, m));
                    withheld += (b - m) as u64;
                }
                _ => {
                    inputs.push(In::Seg(a, b));
                    sent.push((a, b));
                }
            }
        }
        for &d in &dups {
            if !sent.is_empty() {
                let (a, b) = sent[d % sent.len()];
                inputs.push(In::Seg(a, b));
            }
        }
        inputs.push(In::Fin);
        let order = shuffled(&inputs, &keys);
        let mut h = H::started(start);
        feed(&mut h, start, &stream, &order);
        let (flat, ended) = flatten(start, &h.ev);
        prop_assert!(ended);
        prop_assert_eq!(flat.len(), len);
        for (i, b) in flat.iter().enumerate() {
            if let B::D(x) = b {
                prop_assert_eq!(*x, stream[i], "byte {} differs", i);
            }
        }
        prop_assert_eq!(h.r.stats().bytes_gap(), withheld);
        prop_assert_eq!(h.r.stats().bytes_gap_unknown, 0);
        prop_assert_eq!(h.r.stats().bytes_delivered + withheld, len as u64);
    }

    /// Splitting any one input segment at any point changes nothing in the output bytes.
    #[test]
    fn splitting_a_segment_anywhere_gives_identical_output(
        start in any::<u32>(),
        len in 1usize..200,
        points in prop::collection::vec(any::<usize>(), 0..8),
        fate in prop::collection::vec(0u8..4, 9),
        keys in prop::collection::vec(any::<u32>(), 20),
        small_window in any::<bool>(),
    ) {
        let stream = pattern(len);
        let inputs: Vec<In> = cuts(len, &points)
            .into_iter()
            .enumerate()
            .map(|(i, (a, b))| if fate[i % fate.len()] == 0 { In::Miss(a, b, GapReason::Lost) } else { In::Seg(a, b) })
            .collect();
        let order = shuffled(&inputs, &keys);
        let config = ReassemblyConfig {
            max_held_bytes: if small_window { 16 } else { 1 << 20 },
            hold_timeout_ns: u64::MAX,
        };
        let run = |order: &[In]| {
            let mut h = H::with(config.clone());
            h.r.set_start(start);
            feed(&mut h, start, &stream, order);
            h.close(1000);
            flatten(start, &h.ev)
        };
        let whole = run(&order);
        for (i, input) in order.iter().enumerate() {
            let In::Seg(a, b) = *input else { continue };
            for p in a + 1..b {
                let mut split = order.clone();
                split.splice(i..=i, [In::Seg(a, p), In::Seg(p, b)]);
                let out = run(&split);
                if small_window {
                    // Overflow decisions depend on arrival sizes; coverage must still be exact.
                    prop_assert_eq!(out.0.len(), whole.0.len());
                } else {
                    prop_assert_eq!(&out, &whole, "split of input {} at {}", i, p);
                }
            }
        }
    }

    /// Arbitrary inputs: no panic, pieces contiguous, nothing after End, counters exact,
    /// held storage bounded.
    #[test]
    fn arbitrary_inputs_keep_invariants(
        start in any::<u32>(),
        known in any::<bool>(),
        ops in prop::collection::vec((0u8..8, -3000i32..6000, 0usize..400, 0u64..300), 0..60),
        max_held in 0usize..600,
    ) {
        let mut h = H::with(ReassemblyConfig { max_held_bytes: max_held, hold_timeout_ns: 100 });
        if known {
            h.r.set_start(start);
        }
        let buf = pattern(400);
        let mut ts = 0;
        for &(op, off, n, dt) in &ops {
            ts += dt;
            let seq = start.wrapping_add(off as u32);
            match op {
                0..=2 => h.seg(seq, &buf[..n], ts),
                3 => h.miss(seq, n as u32, GapReason::Lost, ts),
                4 => h.miss(seq, n as u32, GapReason::Truncated, ts),
                5 => h.tick(ts),
                6 => h.fin(seq, ts),
                _ => {
                    if n % 7 == 0 { h.reset(ts) } else { h.tick(ts) }
                }
            }
            prop_assert!(h.r.held_bytes() <= max_held);
        }
        let first = h.ev.iter().find_map(|e| match e {
            Ev::Data(s, ..) | Ev::Gap(s, ..) => Some(*s),
            Ev::End(..) => None,
        });
        let base = if known { start } else { first.or(h.r.next_seq()).unwrap_or(start) };
        let (flat, _) = flatten(base, &h.ev);
        let st = h.r.stats();
        prop_assert_eq!(flat.len() as u64, st.bytes_delivered + st.bytes_gap());
        if let Some(next) = h.r.next_seq() {
            prop_assert_eq!(next, base.wrapping_add(flat.len() as u32));
        }
        h.close(ts);
        let (_, ended) = flatten(base, &h.ev);
        prop_assert!(ended);
        prop_assert_eq!(h.ev.iter().filter(|e| matches!(e, Ev::End(..))).count(), 1);
    }
}
