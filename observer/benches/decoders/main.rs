//! Decoder throughput and allocations per protocol, through the daemon's decode path
//! (`DecodePipeline`: inference, then the protocol's session decoder), both directions of
//! realistic sessions (`benches/fixtures`, see `kit.rs`) cut into segments of 256 B, 1448 B
//! (one Ethernet MSS) and whole steps.
//!
//! `cargo bench -p observer --bench decoders`: criterion figures (MB/s), then a markdown table
//! (MB/s per direction, ns per frame, allocations per frame after warm-up) and the allocation
//! sources of each session; `BENCH_DEC_REPORT=FILE` also writes them to FILE.
//! `cargo bench -p observer --bench decoders -- --test` runs each benchmark once; with
//! `--profile-time SECS FILTER` (under `perf record`) only the criterion part runs.
use std::{hint::black_box, time::Duration};

use criterion::{Criterion, Throughput};

mod kit;

#[global_allocator]
static ALLOC: kit::Counting = kit::Counting;

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    // Short runs: the machine is shared; the table below is the report.
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    for f in kit::fixtures() {
        for (seg_name, seg) in kit::SEGMENTS {
            let mut r = kit::Replay::new(&f, seg);
            g.throughput(Throughput::Bytes(r.bytes));
            g.bench_function(format!("{}/{seg_name}", f.name), |b| {
                b.iter(|| {
                    r.session();
                    black_box(r.pipeline.sink().events)
                })
            });
        }
    }
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
    // `--test` (CI) and `--list` only check that the benchmarks run.
    if std::env::args().any(|a| a == "--test" || a == "--list" || a == "--profile-time") {
        return;
    }
    let fixtures = kit::fixtures();
    let mut rows = Vec::new();
    let mut sources = String::new();
    for f in &fixtures {
        for (seg_name, seg) in kit::SEGMENTS {
            let p = kit::profile(f, seg, 100);
            // About 50 MB per row (a few tenths of a second each).
            let sessions = (50_000_000 / p.bytes as usize).max(1);
            let t = kit::time(f, seg, sessions);
            if seg == usize::MAX {
                sources.push_str(&kit::alloc_sources(f.name, &p));
            }
            rows.push(kit::Row {
                fixture: f.name,
                segment: seg_name,
                p,
                t,
            });
        }
    }
    let out = format!(
        "{}\nAllocation sources (whole steps, after 100 warm-up sessions):\n\n```\n{sources}```\n",
        kit::report(&rows)
    );
    println!("{out}");
    if let Some(path) = std::env::var_os("BENCH_DEC_REPORT") {
        std::fs::write(&path, &out).expect("BENCH_DEC_REPORT: cannot write the report file");
    }
}
