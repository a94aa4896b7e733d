//! Smoke test of the decoder benchmark (`benches/decoders`): its code paths run once on every
//! fixture and segment size, and what they measure is complete and consistent.
#[path = "../benches/decoders/kit.rs"]
mod kit;

use observer::event::EventKind;

#[global_allocator]
static ALLOC: kit::Counting = kit::Counting;

#[test]
fn every_fixture_decodes_cleanly_however_it_is_cut() {
    let fixtures = kit::fixtures();
    assert_eq!(fixtures.len(), 5);
    for f in &fixtures {
        let whole = kit::profile(f, usize::MAX, 2);
        assert_eq!(
            whole.problems, 0,
            "{}: the decoder found malformed or lost data",
            f.name
        );
        assert_eq!(
            whole.connections_decoded, 3,
            "{}: inferred as {:?}",
            f.name, f.system
        );
        assert!(
            whole.frames_by_dir[0] > 0 && whole.frames_by_dir[1] > 0,
            "{}",
            f.name
        );
        assert_eq!(
            whole.frames,
            whole.frames_by_dir[0] + whole.frames_by_dir[1]
        );
        assert_eq!(whole.bytes, whole.bytes_by_dir[0] + whole.bytes_by_dir[1]);
        let kinds: Vec<EventKind> = whole.steps.iter().flat_map(|s| s.kinds.clone()).collect();
        // The pipeline reports the open when the protocol is known (in the first data step).
        for k in [EventKind::ConnectionOpened, EventKind::Publish] {
            assert!(
                kinds.contains(&k),
                "{}: no {k:?} event in {kinds:?}",
                f.name
            );
        }
        assert!(
            kinds.contains(&EventKind::Deliver) || kinds.contains(&EventKind::Confirm),
            "{}: neither deliveries nor confirms in {kinds:?}",
            f.name
        );
        // Every event but the close (at no step) is attributed to a step.
        assert_eq!(
            whole.events,
            kinds.len() as u64 + 1,
            "{}: events outside steps",
            f.name
        );
        for (seg_name, seg) in kit::SEGMENTS {
            let p = kit::profile(f, seg, 1);
            assert_eq!(p.problems, 0, "{} cut at {seg_name}", f.name);
            assert_eq!(
                (p.frames_by_dir, p.events, p.bytes),
                (whole.frames_by_dir, whole.events, whole.bytes),
                "{} cut at {seg_name}: not the same frames and events as whole",
                f.name
            );
            let t = kit::time(f, seg, 1);
            assert_eq!(t.sessions, 1);
            let row = kit::report(&[kit::Row {
                fixture: f.name,
                segment: seg_name,
                p,
                t,
            }]);
            assert_eq!(row.lines().count(), 3, "{row}");
            assert!(
                row.contains(&format!("| {} | {seg_name} |", f.name)),
                "{row}"
            );
        }
        let sources = kit::alloc_sources(f.name, &whole);
        assert!(sources.starts_with(&format!("{}: {} allocations", f.name, whole.allocs)));
    }
}

#[test]
fn bad_fixtures_are_refused_with_a_reason() {
    let e = kit::parse("x", b"not a fixture").unwrap_err();
    assert!(e.contains("bad magic"), "{e}");
    let mut b = b"brokerscope-fixture 1\n".to_vec();
    b.extend([0, 0, 10, 0, 0, 0, 1, 2]);
    let e = kit::parse("x", &b).unwrap_err();
    assert!(e.contains("truncated data step"), "{e}");
    let mut b = b"brokerscope-fixture 1\n".to_vec();
    b.extend([0, 7, 0, 0, 0, 0]);
    assert!(kit::parse("x", &b).unwrap_err().contains("bad direction"));
}
