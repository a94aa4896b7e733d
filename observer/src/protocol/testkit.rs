//! Test harness shared by the decoders' unit tests: scripted steps (data, gap, end per
//! direction), decoding them whole or cut into pieces, and the invariant every decoder keeps —
//! the same events and counters however its input is split.
use super::{Ctx, DecoderStats, ProtocolDecoder};
use crate::{
    capture::Direction,
    event::{BrokerEvent, ConnRef},
};

/// One scripted input.
#[derive(Clone, Debug)]
pub enum Step {
    Data(Direction, Vec<u8>),
    Gap(Direction, u32),
    End(Direction),
}

/// Client → broker bytes.
pub fn i(parts: &[Vec<u8>]) -> Step {
    Step::Data(Direction::Ingress, parts.concat())
}

/// Broker → client bytes.
pub fn o(parts: &[Vec<u8>]) -> Step {
    Step::Data(Direction::Egress, parts.concat())
}

/// Payload bytes in a script.
pub fn total_bytes(steps: &[Step]) -> u64 {
    steps
        .iter()
        .map(|s| if let Step::Data(_, b) = s { b.len() } else { 0 })
        .sum::<usize>() as u64
}

/// A decoder's health counters at a glance: (malformed, resyncs, skipped_bytes, oversize,
/// buffered_bytes).
pub fn health(s: &DecoderStats) -> (u64, u64, u64, u64, usize) {
    (
        s.malformed,
        s.resyncs,
        s.skipped_bytes,
        s.oversize,
        s.buffered_bytes,
    )
}

/// [`health`] of a decoder that saw nothing wrong and holds nothing.
pub const CLEAN: (u64, u64, u64, u64, usize) = (0, 0, 0, 0, 0);

/// Cuts for [`run_with`] that chunk every data step by cycling through `sizes` (proptests
/// draw the sizes; the cycle continues across steps).
pub fn cycling_cuts(sizes: &[usize]) -> impl FnMut(usize, usize) -> Vec<usize> + '_ {
    let mut next = 0usize;
    move |_, len| {
        let mut cuts = Vec::new();
        let mut total = 0;
        while total < len {
            let n = sizes[next % sizes.len()];
            next += 1;
            cuts.push(n);
            total += n;
        }
        cuts
    }
}

/// Capture time of step `k`.
pub fn ts(k: usize) -> u64 {
    1_000 * (k as u64 + 1)
}

/// A decoder that can say whether it holds more than its memory bound.
pub trait Bounded {
    fn assert_bounded(&self);
}

/// Decodes `steps` with `dec`, each data step cut into pieces of the lengths `cuts(step, len)`
/// returns (the rest in one piece), checking the memory bound after every piece.
pub fn run_with<D: ProtocolDecoder + Bounded>(
    conn: &ConnRef,
    mut dec: D,
    steps: &[Step],
    cuts: &mut dyn FnMut(usize, usize) -> Vec<usize>,
) -> (Vec<BrokerEvent>, DecoderStats, D) {
    let mut events = Vec::new();
    for (k, step) in steps.iter().enumerate() {
        let mut push = |e: BrokerEvent| events.push(e);
        let ctx = |dir| Ctx {
            conn,
            dir,
            ts_ns: ts(k),
        };
        match step {
            Step::Data(dir, bytes) => {
                let mut at = 0;
                for n in cuts(k, bytes.len()) {
                    let n = n.min(bytes.len() - at);
                    dec.on_data(&ctx(*dir), &bytes[at..at + n], &mut push);
                    at += n;
                    dec.assert_bounded();
                }
                if at < bytes.len() {
                    dec.on_data(&ctx(*dir), &bytes[at..], &mut push);
                    dec.assert_bounded();
                }
            }
            Step::Gap(dir, len) => dec.on_gap(&ctx(*dir), *len, &mut push),
            Step::End(dir) => dec.on_end(&ctx(*dir), &mut push),
        }
    }
    let stats = dec.stats();
    (events, stats, dec)
}

/// Decodes whole, then with every data step split in two at every byte: same events, same
/// counters. Returns the events and counters.
pub fn check<D: ProtocolDecoder + Bounded>(
    conn: &ConnRef,
    make: impl Fn() -> D,
    steps: &[Step],
) -> (Vec<BrokerEvent>, DecoderStats) {
    let (events, stats, _) = run_with(conn, make(), steps, &mut |_, len| vec![len]);
    for (k, step) in steps.iter().enumerate() {
        let Step::Data(_, bytes) = step else { continue };
        for cut in 1..bytes.len() {
            let (e2, s2, _) = run_with(conn, make(), steps, &mut |j, len| {
                if j == k {
                    vec![cut, len - cut]
                } else {
                    vec![len]
                }
            });
            assert_eq!(e2, events, "step {k} split at {cut}");
            assert_eq!(s2, stats, "step {k} split at {cut}");
        }
    }
    (events, stats)
}

/// Decodes `steps`' data with a fresh decoder per session, repeated to about 100 MB, and prints
/// MB/s and events/s (the `#[ignore]`d `throughput` tests; run them with `--release`).
pub fn throughput<D: ProtocolDecoder>(
    label: &str,
    conn: &ConnRef,
    make: impl Fn() -> D,
    steps: &[Step],
) {
    let per: usize = steps
        .iter()
        .map(|s| if let Step::Data(_, b) = s { b.len() } else { 0 })
        .sum();
    let reps = 100_000_000 / per.max(1) + 1;
    let mut events = 0usize;
    let t0 = std::time::Instant::now();
    for _ in 0..reps {
        let mut dec = make();
        for step in steps {
            if let Step::Data(dir, bytes) = step {
                let ctx = Ctx {
                    conn,
                    dir: *dir,
                    ts_ns: 0,
                };
                dec.on_data(&ctx, bytes, &mut |e| {
                    events += 1;
                    std::hint::black_box(e);
                });
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let mb = (per * reps) as f64 / 1e6;
    println!(
        "{label}: {mb:.0} MB in {secs:.3}s: {:.0} MB/s, {:.2} M events/s ({per} B/session)",
        mb / secs,
        events as f64 / secs / 1e6
    );
}

/// Encodes a script as a decoder-benchmark fixture (`observer/benches/fixtures/NAME.bin`, read
/// by `benches/decoders`): a magic line, then per step a kind byte (0 data, 1 gap, 2 end), a
/// direction byte (0 ingress, 1 egress) and a little-endian u32 (data length or gap length),
/// followed by the data.
pub fn fixture_bytes(steps: &[Step]) -> Vec<u8> {
    let mut out = b"brokerscope-fixture 1\n".to_vec();
    let dir_byte = |d: &Direction| match d {
        Direction::Ingress => 0u8,
        Direction::Egress => 1u8,
    };
    for step in steps {
        match step {
            Step::Data(d, b) => {
                out.extend([0, dir_byte(d)]);
                out.extend((b.len() as u32).to_le_bytes());
                out.extend_from_slice(b);
            }
            Step::Gap(d, len) => {
                out.extend([1, dir_byte(d)]);
                out.extend(len.to_le_bytes());
            }
            Step::End(d) => {
                out.extend([2, dir_byte(d)]);
                out.extend(0u32.to_le_bytes());
            }
        }
    }
    out
}

/// Checks that the committed benchmark fixture `NAME.bin` is what the test encoders build from
/// `steps` (the benchmarks then measure the scripts the tests verify). With
/// `BROKERSCOPE_WRITE_FIXTURES=1` it (re)writes the file instead:
/// `BROKERSCOPE_WRITE_FIXTURES=1 cargo test -p observer --lib bench_fixture`.
pub fn fixture(name: &str, steps: &[Step]) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("benches/fixtures")
        .join(format!("{name}.bin"));
    let want = fixture_bytes(steps);
    if std::env::var_os("BROKERSCOPE_WRITE_FIXTURES").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &want).unwrap();
        return;
    }
    let have = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; write it with BROKERSCOPE_WRITE_FIXTURES=1 cargo test -p observer --lib bench_fixture",
            path.display()
        )
    });
    assert!(
        have == want,
        "{} is stale (the {name} session script changed); rewrite it with \
         BROKERSCOPE_WRITE_FIXTURES=1 cargo test -p observer --lib bench_fixture",
        path.display()
    );
}
