//! Tests: a small Kafka encoder (below), a harness that decodes every script whole, split in
//! two at every byte of every step, and (proptest) in random chunkings, and checks all agree.
use std::io::Write as _;

use proptest::prelude::*;

use super::*;
use crate::protocol::testkit::{self, Bounded, CLEAN, Step, health, i, o, total_bytes, ts};
use crate::{
    capture::{ConnId, Direction},
    event::{ConnRef, Destination, EventKind, Fingerprint, MessageProps, Outcome},
};

const IN: Direction = Direction::Ingress;
const OUT: Direction = Direction::Egress;
const CANARY: &str = "canary-Secr3t-pw";
const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const CLIENT: Option<&str> = Some("rdkafka");

// ---------------------------------------------------------------------------------------------
// Encoder

struct W {
    b: Vec<u8>,
    flex: bool,
}

impl W {
    fn new(flex: bool) -> Self {
        Self {
            b: Vec::new(),
            flex,
        }
    }
    fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.b.extend_from_slice(b);
        self
    }
    fn i8(&mut self, v: i8) -> &mut Self {
        self.raw(&v.to_be_bytes())
    }
    fn bool(&mut self, v: bool) -> &mut Self {
        self.i8(v as i8)
    }
    fn i16(&mut self, v: i16) -> &mut Self {
        self.raw(&v.to_be_bytes())
    }
    fn i32(&mut self, v: i32) -> &mut Self {
        self.raw(&v.to_be_bytes())
    }
    fn i64(&mut self, v: i64) -> &mut Self {
        self.raw(&v.to_be_bytes())
    }
    fn uv(&mut self, mut v: u32) -> &mut Self {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.b.push(b);
                return self;
            }
            self.b.push(b | 0x80);
        }
    }
    /// Zigzag varint (records).
    fn zz(&mut self, v: i64) -> &mut Self {
        let mut u = ((v << 1) ^ (v >> 63)) as u64;
        loop {
            let b = (u & 0x7f) as u8;
            u >>= 7;
            if u == 0 {
                self.b.push(b);
                return self;
            }
            self.b.push(b | 0x80);
        }
    }
    fn nstr(&mut self, s: Option<&str>) -> &mut Self {
        match (s, self.flex) {
            (None, true) => self.uv(0),
            (None, false) => self.i16(-1),
            (Some(s), true) => self.uv(s.len() as u32 + 1).raw(s.as_bytes()),
            (Some(s), false) => self.i16(s.len() as i16).raw(s.as_bytes()),
        }
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.nstr(Some(s))
    }
    fn nbytes(&mut self, b: Option<&[u8]>) -> &mut Self {
        match (b, self.flex) {
            (None, true) => self.uv(0),
            (None, false) => self.i32(-1),
            (Some(b), true) => self.uv(b.len() as u32 + 1).raw(b),
            (Some(b), false) => self.i32(b.len() as i32).raw(b),
        }
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.nbytes(Some(b))
    }
    fn arr(&mut self, n: usize) -> &mut Self {
        if self.flex {
            self.uv(n as u32 + 1)
        } else {
            self.i32(n as i32)
        }
    }
    fn tags(&mut self) -> &mut Self {
        if self.flex { self.uv(0) } else { self }
    }
}

fn sized(body: Vec<u8>) -> Vec<u8> {
    let mut v = (body.len() as i32).to_be_bytes().to_vec();
    v.extend(body);
    v
}

fn req(key: i16, v: i16, corr: i32, client: Option<&str>, body: impl FnOnce(&mut W)) -> Vec<u8> {
    let flex = wire::is_flexible(key, v);
    let mut w = W::new(false);
    w.i16(key).i16(v).i32(corr).nstr(client);
    w.flex = flex;
    w.tags();
    body(&mut w);
    sized(w.b)
}

fn resp(key: i16, v: i16, corr: i32, body: impl FnOnce(&mut W)) -> Vec<u8> {
    let flex = wire::is_flexible(key, v);
    let mut w = W::new(flex && key != wire::API_VERSIONS);
    w.i32(corr).tags();
    w.flex = flex;
    body(&mut w);
    sized(w.b)
}

struct Rec<'a> {
    value: &'a [u8],
    headers: Vec<(&'a str, &'a [u8])>,
}

fn rec(value: &[u8]) -> Rec<'_> {
    Rec {
        value,
        headers: Vec::new(),
    }
}

fn traced(value: &[u8]) -> Rec<'_> {
    Rec {
        value,
        headers: vec![
            ("traceparent", TRACEPARENT.as_bytes()),
            ("tracestate", b"congo=t61rcWkgMzE"),
            ("tenant", b"acme"),
        ],
    }
}

fn encode_records(recs: &[Rec<'_>]) -> Vec<u8> {
    let mut out = W::new(false);
    for (i, r) in recs.iter().enumerate() {
        let mut w = W::new(false);
        w.i8(0).zz(i as i64 * 3).zz(i as i64).zz(-1);
        w.zz(r.value.len() as i64).raw(r.value);
        w.zz(r.headers.len() as i64);
        for (k, v) in &r.headers {
            w.zz(k.len() as i64).raw(k.as_bytes());
            w.zz(v.len() as i64).raw(v);
        }
        out.zz(w.b.len() as i64).raw(&w.b);
    }
    out.b
}

fn compress(codec: u8, raw: &[u8]) -> Vec<u8> {
    match codec {
        0 => raw.to_vec(),
        1 => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(raw).unwrap();
            e.finish().unwrap()
        }
        // Kafka's xerial framing, two blocks.
        2 => {
            let mut w = W::new(false);
            w.raw(b"\x82SNAPPY\x00").i32(1).i32(1);
            let mid = raw.len() / 2;
            for part in [&raw[..mid], &raw[mid..]] {
                let block = snap::raw::Encoder::new().compress_vec(part).unwrap();
                w.i32(block.len() as i32).raw(&block);
            }
            w.b
        }
        // Raw snappy (no framing), as some clients send.
        5 => snap::raw::Encoder::new().compress_vec(raw).unwrap(),
        3 => {
            let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
            e.write_all(raw).unwrap();
            e.finish().unwrap()
        }
        4 => ruzstd::encoding::compress_to_vec(raw, ruzstd::encoding::CompressionLevel::Fastest),
        _ => unreachable!(),
    }
}

/// A magic-2 record batch.
fn batch(base_offset: i64, codec: u8, producer_id: i64, recs: &[Rec<'_>]) -> Vec<u8> {
    let payload = compress(codec, &encode_records(recs));
    let mut w = W::new(false);
    w.i64(base_offset)
        .i32(49 + payload.len() as i32)
        .i32(0)
        .i8(2)
        .i32(0);
    // 5: raw snappy, still codec 2 on the wire.
    w.i16(if codec == 5 { 2 } else { i16::from(codec) });
    w.i32(recs.len() as i32 - 1)
        .i64(1_700_000_000_000)
        .i64(1_700_000_000_000);
    w.i64(producer_id).i16(0).i32(0).i32(recs.len() as i32);
    w.raw(&payload);
    w.b
}

fn payload_fp(batches: &[&[u8]]) -> u64 {
    let mut f = Fingerprint::default();
    for b in batches {
        f.update(&b[61..]);
    }
    f.finish()
}

// ---------------------------------------------------------------------------------------------
// Messages

fn api_versions_req(v: i16, corr: i32) -> Vec<u8> {
    req(wire::API_VERSIONS, v, corr, CLIENT, |w| {
        if v >= 3 {
            w.str("librdkafka").str("2.6.1").tags();
        }
    })
}

fn api_versions_resp(v: i16, corr: i32) -> Vec<u8> {
    resp(wire::API_VERSIONS, v, corr, |w| {
        w.i16(0).arr(3);
        for (k, max) in [(0, 11), (1, 17), (3, 12)] {
            w.i16(k).i16(0).i16(max).tags();
        }
        if v >= 1 {
            w.i32(0);
        }
        w.tags();
    })
}

const TOPIC_ID: [u8; 16] = [7; 16];

fn metadata_req(v: i16, corr: i32, topics: &[&str]) -> Vec<u8> {
    req(wire::METADATA, v, corr, CLIENT, |w| {
        w.arr(topics.len());
        for t in topics {
            if v >= 10 {
                w.raw(&[0; 16]);
            }
            w.str(t).tags();
        }
        if v >= 4 {
            w.bool(true);
        }
        if (8..=10).contains(&v) {
            w.bool(false);
        }
        if v >= 8 {
            w.bool(false);
        }
        w.tags();
    })
}

fn metadata_resp(v: i16, corr: i32) -> Vec<u8> {
    resp(wire::METADATA, v, corr, |w| {
        if v >= 3 {
            w.i32(0);
        }
        w.arr(1).i32(1).str("broker-1").i32(9092);
        if v >= 1 {
            w.nstr(None);
        }
        w.tags();
        if v >= 2 {
            w.nstr(Some("cluster-a"));
        }
        if v >= 1 {
            w.i32(1);
        }
        w.arr(1).i16(0).str("orders");
        if v >= 10 {
            w.raw(&TOPIC_ID);
        }
        if v >= 1 {
            w.bool(false);
        }
        w.arr(2);
        for p in 0..2 {
            w.i16(0).i32(p).i32(1);
            if v >= 7 {
                w.i32(0);
            }
            w.arr(1).i32(1).arr(1).i32(1);
            if v >= 5 {
                w.arr(0);
            }
            w.tags();
        }
        if v >= 8 {
            w.i32(0);
        }
        w.tags();
        if (8..=10).contains(&v) {
            w.i32(0);
        }
        w.tags();
    })
}

fn produce_req(
    v: i16,
    corr: i32,
    acks: i16,
    txn: Option<&str>,
    parts: &[(&str, i32, &[u8])],
) -> Vec<u8> {
    req(wire::PRODUCE, v, corr, CLIENT, |w| {
        if v >= 3 {
            w.nstr(txn);
        }
        w.i16(acks).i32(30000);
        // One topic entry per run of equal topics.
        type Group<'a> = (&'a str, Vec<(i32, &'a [u8])>);
        let mut groups: Vec<Group<'_>> = Vec::new();
        for (t, p, d) in parts {
            match groups.last_mut() {
                Some((gt, g)) if gt == t => g.push((*p, d)),
                _ => groups.push((t, vec![(*p, d)])),
            }
        }
        w.arr(groups.len());
        for (t, ps) in groups {
            if v >= 13 {
                w.raw(&TOPIC_ID);
            } else {
                w.str(t);
            }
            w.arr(ps.len());
            for (p, d) in ps {
                w.i32(p).bytes(d).tags();
            }
            w.tags();
        }
        w.tags();
    })
}

fn produce_resp(v: i16, corr: i32, parts: &[(&str, i32, i16, i64)]) -> Vec<u8> {
    resp(wire::PRODUCE, v, corr, |w| {
        w.arr(1);
        if v >= 13 {
            w.raw(&TOPIC_ID);
        } else {
            w.str(parts[0].0);
        }
        w.arr(parts.len());
        for (_, p, err, off) in parts {
            w.i32(*p).i16(*err).i64(*off);
            if v >= 2 {
                w.i64(-1);
            }
            if v >= 5 {
                w.i64(0);
            }
            if v >= 8 {
                w.arr(0).nstr(None);
            }
            w.tags();
        }
        w.tags();
        if v >= 1 {
            w.i32(0);
        }
        w.tags();
    })
}

fn fetch_req(v: i16, corr: i32, parts: &[(&str, i32, i64)]) -> Vec<u8> {
    req(wire::FETCH, v, corr, CLIENT, |w| {
        if v <= 14 {
            w.i32(-1);
        }
        w.i32(500).i32(1);
        if v >= 3 {
            w.i32(52428800);
        }
        if v >= 4 {
            w.i8(0);
        }
        if v >= 7 {
            w.i32(0).i32(-1);
        }
        w.arr(parts.len());
        for (t, p, off) in parts {
            if v >= 13 {
                w.raw(&TOPIC_ID);
            } else {
                w.str(t);
            }
            w.arr(1).i32(*p);
            if v >= 9 {
                w.i32(-1);
            }
            w.i64(*off);
            if v >= 12 {
                w.i32(-1);
            }
            if v >= 5 {
                w.i64(-1);
            }
            w.i32(1048576).tags();
            w.tags();
        }
        if v >= 7 {
            w.arr(0);
        }
        if v >= 11 {
            w.str("");
        }
        w.tags();
    })
}

fn fetch_resp(v: i16, corr: i32, parts: &[(&str, i32, i64, &[u8])]) -> Vec<u8> {
    resp(wire::FETCH, v, corr, |w| {
        if v >= 1 {
            w.i32(0);
        }
        if v >= 7 {
            w.i16(0).i32(0);
        }
        w.arr(parts.len());
        for (t, p, hw, data) in parts {
            if v >= 13 {
                w.raw(&TOPIC_ID);
            } else {
                w.str(t);
            }
            w.arr(1).i32(*p).i16(0).i64(*hw);
            if v >= 4 {
                w.i64(*hw);
            }
            if v >= 5 {
                w.i64(0);
            }
            if v >= 4 {
                w.nbytes(None); // aborted transactions: null array
            }
            if v >= 11 {
                w.i32(-1);
            }
            w.bytes(data).tags();
            w.tags();
        }
        w.tags();
    })
}

fn find_coordinator_req(v: i16, corr: i32, group: &str) -> Vec<u8> {
    req(wire::FIND_COORDINATOR, v, corr, CLIENT, |w| {
        if v <= 3 {
            w.str(group);
        }
        if v >= 1 {
            w.i8(0);
        }
        if v >= 4 {
            w.arr(1).str(group);
        }
        w.tags();
    })
}

fn find_coordinator_resp(v: i16, corr: i32, group: &str) -> Vec<u8> {
    resp(wire::FIND_COORDINATOR, v, corr, |w| {
        if v >= 1 {
            w.i32(0);
        }
        if v <= 3 {
            w.i16(0);
            if v >= 1 {
                w.nstr(None);
            }
            w.i32(1).str("broker-1").i32(9092);
        } else {
            w.arr(1)
                .str(group)
                .i32(1)
                .str("broker-1")
                .i32(9092)
                .i16(0)
                .nstr(None)
                .tags();
        }
        w.tags();
    })
}

fn join_req(v: i16, corr: i32, group: &str) -> Vec<u8> {
    req(wire::JOIN_GROUP, v, corr, CLIENT, |w| {
        w.str(group).i32(45000);
        if v >= 1 {
            w.i32(300000);
        }
        w.str("");
        if v >= 5 {
            w.nstr(None);
        }
        w.str("consumer")
            .arr(1)
            .str("range")
            .bytes(b"\0\0meta")
            .tags();
        if v >= 8 {
            w.nstr(None);
        }
        w.tags();
    })
}

fn join_resp(v: i16, corr: i32) -> Vec<u8> {
    resp(wire::JOIN_GROUP, v, corr, |w| {
        if v >= 2 {
            w.i32(0);
        }
        w.i16(0).i32(3);
        if v >= 7 {
            w.nstr(Some("consumer"));
        }
        w.str("range").str("m-1");
        if v >= 9 {
            w.bool(false);
        }
        w.str("m-1").arr(1).str("m-1");
        if v >= 5 {
            w.nstr(None);
        }
        w.bytes(b"\0\0meta").tags();
        w.tags();
    })
}

fn sync_req(v: i16, corr: i32, group: &str) -> Vec<u8> {
    req(wire::SYNC_GROUP, v, corr, CLIENT, |w| {
        w.str(group).i32(3).str("m-1");
        if v >= 3 {
            w.nstr(None);
        }
        if v >= 5 {
            w.nstr(Some("consumer")).nstr(Some("range"));
        }
        w.arr(1).str("m-1").bytes(b"\0\0assign").tags();
        w.tags();
    })
}

fn sync_resp(v: i16, corr: i32) -> Vec<u8> {
    resp(wire::SYNC_GROUP, v, corr, |w| {
        if v >= 1 {
            w.i32(0);
        }
        w.i16(0);
        if v >= 5 {
            w.nstr(Some("consumer")).nstr(Some("range"));
        }
        w.bytes(b"\0\0assign").tags();
    })
}

fn heartbeat_req(v: i16, corr: i32, group: &str) -> Vec<u8> {
    req(wire::HEARTBEAT, v, corr, CLIENT, |w| {
        w.str(group).i32(3).str("m-1");
        if v >= 3 {
            w.nstr(None);
        }
        w.tags();
    })
}

/// Heartbeat/LeaveGroup style: throttle (v1+), error.
fn error_resp(key: i16, v: i16, corr: i32, err: i16) -> Vec<u8> {
    resp(key, v, corr, |w| {
        if v >= 1 {
            w.i32(0);
        }
        w.i16(err);
        if key == wire::LEAVE_GROUP && v >= 3 {
            w.arr(1).str("m-1").nstr(None).i16(err).tags();
        }
        w.tags();
    })
}

fn leave_req(v: i16, corr: i32, group: &str) -> Vec<u8> {
    req(wire::LEAVE_GROUP, v, corr, CLIENT, |w| {
        w.str(group);
        if v <= 2 {
            w.str("m-1");
        } else {
            w.arr(1).str("m-1").nstr(None);
            if v >= 5 {
                w.nstr(Some("shutdown"));
            }
            w.tags();
        }
        w.tags();
    })
}

fn offset_fetch_req(v: i16, corr: i32, group: &str) -> Vec<u8> {
    req(wire::OFFSET_FETCH, v, corr, CLIENT, |w| {
        if v <= 7 {
            w.str(group).arr(1).str("orders").arr(1).i32(0).tags();
        } else {
            w.arr(1).str(group);
            if v >= 9 {
                w.nstr(None).i32(-1);
            }
            w.arr(1).str("orders").arr(1).i32(0).tags();
            w.tags();
        }
        if v >= 7 {
            w.bool(true);
        }
        w.tags();
    })
}

fn offset_fetch_resp(v: i16, corr: i32, group: &str) -> Vec<u8> {
    resp(wire::OFFSET_FETCH, v, corr, |w| {
        if v >= 3 {
            w.i32(0);
        }
        let part = |w: &mut W| {
            w.arr(1).str("orders").arr(1).i32(0).i64(40);
            if v >= 5 {
                w.i32(0);
            }
            w.nstr(Some("")).i16(0).tags();
            w.tags();
        };
        if v <= 7 {
            part(w);
            if v >= 2 {
                w.i16(0);
            }
        } else {
            w.arr(1).str(group);
            part(w);
            w.i16(0).tags();
        }
        w.tags();
    })
}

fn offset_commit_req(v: i16, corr: i32, group: &str, offsets: &[(i32, i64)]) -> Vec<u8> {
    req(wire::OFFSET_COMMIT, v, corr, CLIENT, |w| {
        w.str(group);
        if v >= 1 {
            w.i32(3).str("m-1");
        }
        if v >= 7 {
            w.nstr(None);
        }
        if (2..=4).contains(&v) {
            w.i64(-1);
        }
        w.arr(1).str("orders").arr(offsets.len());
        for (p, o) in offsets {
            w.i32(*p).i64(*o);
            if v >= 6 {
                w.i32(-1);
            }
            if v == 1 {
                w.i64(-1);
            }
            w.nstr(Some("")).tags();
        }
        w.tags();
        w.tags();
    })
}

fn offset_commit_resp(v: i16, corr: i32, errors: &[(i32, i16)]) -> Vec<u8> {
    resp(wire::OFFSET_COMMIT, v, corr, |w| {
        if v >= 3 {
            w.i32(0);
        }
        w.arr(1).str("orders").arr(errors.len());
        for (p, e) in errors {
            w.i32(*p).i16(*e).tags();
        }
        w.tags();
        w.tags();
    })
}

fn sasl_handshake(corr: i32, mech: &str) -> (Vec<u8>, Vec<u8>) {
    (
        req(wire::SASL_HANDSHAKE, 1, corr, CLIENT, |w| {
            w.str(mech);
        }),
        resp(wire::SASL_HANDSHAKE, 1, corr, |w| {
            w.i16(0).arr(2).str("PLAIN").str("SCRAM-SHA-256");
        }),
    )
}

fn sasl_auth_req(v: i16, corr: i32, auth: &[u8]) -> Vec<u8> {
    req(wire::SASL_AUTHENTICATE, v, corr, CLIENT, |w| {
        w.bytes(auth).tags();
    })
}

fn sasl_auth_resp(v: i16, corr: i32, err: i16, server: &[u8]) -> Vec<u8> {
    resp(wire::SASL_AUTHENTICATE, v, corr, |w| {
        w.i16(err)
            .nstr((err != 0).then_some("Authentication failed"))
            .bytes(server);
        if v >= 1 {
            w.i64(0);
        }
        w.tags();
    })
}

// ---------------------------------------------------------------------------------------------
// Harness

fn conn() -> ConnRef {
    ConnRef {
        id: ConnId(9),
        pid: Some(42),
        local: "127.0.0.1:9092".parse().unwrap(),
        peer: "127.0.0.1:50000".parse().unwrap(),
    }
}

fn ctx(conn: &ConnRef, dir: Direction, ts_ns: u64) -> Ctx<'_> {
    Ctx { conn, dir, ts_ns }
}

impl Bounded for KafkaDecoder {
    fn assert_bounded(&self) {
        let dec = self;
        for f in &dec.framers {
            assert!(
                f.buf.len() <= MAX_MESSAGE + 4 && f.buf.capacity() <= 2 * (MAX_MESSAGE + 4),
                "buf {}",
                f.buf.len()
            );
            if !matches!(f.phase, Phase::Body { .. }) {
                assert!(f.buf.len() <= HUNT_WINDOW, "head {}", f.buf.len());
            }
            if let Some(st) = &f.stream {
                assert!(st.buffered() <= stream::STRUCT_CAP + stream::BATCH_CAP);
            }
        }
        assert!(dec.session.pending_len() <= session::MAX_PENDING);
    }
}

/// Decodes `steps`, each data step cut into pieces of the lengths `cuts(step, len)` returns.
fn run_with(
    steps: &[Step],
    cuts: &mut dyn FnMut(usize, usize) -> Vec<usize>,
) -> (Vec<BrokerEvent>, DecoderStats, KafkaDecoder) {
    testkit::run_with(&conn(), KafkaDecoder::new(), steps, cuts)
}

fn run_dec(
    dec: KafkaDecoder,
    steps: &[Step],
    cuts: &mut dyn FnMut(usize, usize) -> Vec<usize>,
) -> (Vec<BrokerEvent>, DecoderStats, KafkaDecoder) {
    testkit::run_with(&conn(), dec, steps, cuts)
}

fn run(steps: &[Step]) -> (Vec<BrokerEvent>, DecoderStats, KafkaDecoder) {
    run_with(steps, &mut |_, len| vec![len])
}

/// See [`testkit::check`].
fn check(steps: &[Step]) -> (Vec<BrokerEvent>, DecoderStats) {
    testkit::check(&conn(), KafkaDecoder::new, steps)
}

/// One line per event with the fields these tests care about (exact, in order).
fn line(e: &BrokerEvent) -> String {
    let mut s = format!(
        "{} {} {}",
        if e.direction == IN { ">" } else { "<" },
        e.kind,
        e.method.unwrap_or("-")
    );
    if let Some(d) = &e.destination {
        if let Some(r) = d.resource {
            s += &format!(" res={r}");
        }
        if let Some(g) = &d.group {
            s += &format!(" group={g}");
        }
        if let Some(t) = &d.topic {
            s += &format!(" topic={t}");
        }
        if let Some(p) = d.partition {
            s += &format!("/{p}");
        }
    }
    if let Some(c) = &e.client_id {
        s += &format!(" client={c}");
    }
    if let Some(u) = &e.user {
        s += &format!(" user={u}");
    }
    if let Some(m) = &e.mechanism {
        s += &format!(" mech={m}");
    }
    if let Some(o) = e.outcome {
        s += &format!(" outcome={}", o.as_str());
    }
    if let Some(o) = e.offset {
        s += &format!(" off={o}");
    }
    if let Some(n) = e.record_count {
        s += &format!(" n={n}");
    }
    if let Some(c) = e.reply_code {
        s += &format!(" rc={c}");
    }
    if let Some(t) = &e.reply_text {
        s += &format!(" rt={t}");
    }
    if let Some(l) = e.latency_ns {
        s += &format!(" lat={l}");
    }
    if let Some(p) = &e.props
        && let Some(tp) = &p.traceparent
    {
        s += &format!(" tp={}", &tp[3..7]);
    }
    for (k, v) in &e.attrs {
        s += &format!(" {k}={v}");
    }
    s
}

fn lines(events: &[BrokerEvent]) -> Vec<String> {
    events.iter().map(line).collect()
}

fn ev(k: usize, dir: Direction, kind: EventKind, method: &'static str) -> BrokerEvent {
    let mut e = BrokerEvent::new(ts(k), System::Kafka, kind, conn(), dir);
    e.method = Some(method);
    e
}

fn attrs(list: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    list.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

// ---------------------------------------------------------------------------------------------
// Scripts

/// A librdkafka consumer+producer session at the versions librdkafka 2.x uses.
fn s_session() -> Vec<Step> {
    let b0 = batch(
        0,
        0,
        1000,
        &[traced(b"order-1"), rec(b"order-2"), rec(b"order-3")],
    );
    let b1 = batch(0, 0, 1000, &[rec(b"order-4")]);
    let stored = batch(
        40,
        0,
        1000,
        &[traced(b"order-1"), rec(b"order-2"), rec(b"order-3")],
    );
    vec![
        i(&[api_versions_req(3, 1)]),
        o(&[api_versions_resp(3, 1)]),
        i(&[metadata_req(12, 2, &["orders"])]),
        o(&[metadata_resp(12, 2)]),
        i(&[produce_req(
            9,
            3,
            -1,
            None,
            &[("orders", 0, &b0), ("orders", 1, &b1)],
        )]),
        o(&[produce_resp(
            9,
            3,
            &[("orders", 0, 0, 40), ("orders", 1, 0, 7)],
        )]),
        i(&[find_coordinator_req(2, 4, "billing")]),
        o(&[find_coordinator_resp(2, 4, "billing")]),
        i(&[join_req(5, 5, "billing")]),
        o(&[join_resp(5, 5)]),
        i(&[sync_req(3, 6, "billing")]),
        o(&[sync_resp(3, 6)]),
        i(&[offset_fetch_req(7, 7, "billing")]),
        o(&[offset_fetch_resp(7, 7, "billing")]),
        i(&[fetch_req(11, 8, &[("orders", 0, 40)])]),
        o(&[fetch_resp(11, 8, &[("orders", 0, 43, &stored)])]),
        i(&[fetch_req(11, 9, &[("orders", 0, 43)])]),
        o(&[fetch_resp(11, 9, &[("orders", 0, 43, &[])])]),
        i(&[offset_commit_req(7, 10, "billing", &[(0, 43)])]),
        o(&[offset_commit_resp(7, 10, &[(0, 0)])]),
        i(&[heartbeat_req(3, 11, "billing")]),
        o(&[error_resp(wire::HEARTBEAT, 3, 11, 0)]),
        i(&[leave_req(1, 12, "billing")]),
        o(&[error_resp(wire::LEAVE_GROUP, 1, 12, 0)]),
    ]
}

#[test]
fn realistic_session() {
    let steps = s_session();
    let (events, stats) = check(&steps);
    assert_eq!(health(&stats), CLEAN);
    assert_eq!(stats.frames, 24);
    assert_eq!(stats.bytes, total_bytes(&steps));
    let got = lines(&events);
    let want = [
        "> request ApiVersions client=rdkafka api_version=3 correlation_id=1 client_software_name=librdkafka client_software_version=2.6.1",
        "< response ApiVersions rc=0 lat=1000 api_version=3 correlation_id=1 api_keys=3",
        "> request Metadata client=rdkafka api_version=12 correlation_id=2 topic=orders",
        "< response Metadata rc=0 lat=1000 api_version=12 correlation_id=2 brokers=1 cluster_id=cluster-a controller_id=1 topics=1 leader=orders/0=1 leader=orders/1=1",
        "> request Produce client=rdkafka api_version=9 correlation_id=3 acks=-1 timeout_ms=30000",
        "> publish Produce topic=orders/0 client=rdkafka n=3 tp=0af7 acks=-1 producer_id=1000 producer_epoch=0 base_sequence=0 compression=none",
        "> publish Produce topic=orders/1 client=rdkafka n=1 acks=-1 producer_id=1000 producer_epoch=0 base_sequence=0 compression=none",
        "< response Produce rc=0 lat=1000 api_version=9 correlation_id=3",
        "< confirm Produce topic=orders/0 off=40 n=3 rc=0",
        "< confirm Produce topic=orders/1 off=7 n=1 rc=0",
        "> request FindCoordinator group=billing client=rdkafka api_version=2 correlation_id=4 key_type=0",
        "< response FindCoordinator group=billing rc=0 lat=1000 api_version=2 correlation_id=4 coordinator=1@broker-1:9092",
        "> request JoinGroup group=billing client=rdkafka api_version=5 correlation_id=5",
        "> subscribe JoinGroup group=billing client=rdkafka member_id= protocol_type=consumer protocols=range session_timeout_ms=45000",
        "< response JoinGroup group=billing rc=0 lat=1000 api_version=5 correlation_id=5 generation=3 protocol=range leader=m-1 member_id=m-1 members=1",
        "> request SyncGroup group=billing client=rdkafka api_version=3 correlation_id=6",
        "> control SyncGroup group=billing client=rdkafka generation=3 member_id=m-1 assignments=1",
        "< response SyncGroup group=billing rc=0 lat=1000 api_version=3 correlation_id=6",
        "> request OffsetFetch group=billing client=rdkafka api_version=7 correlation_id=7",
        "< response OffsetFetch group=billing rc=0 lat=1000 api_version=7 correlation_id=7 committed=orders/0=40",
        "> request Fetch client=rdkafka api_version=11 correlation_id=8 max_wait_ms=500 min_bytes=1 max_bytes=52428800 isolation_level=0 session_id=0 session_epoch=-1 fetch=orders/0@40",
        "< response Fetch n=3 rc=0 lat=1000 api_version=11 correlation_id=8 hw=orders/0=43 max_wait_ms=500 min_bytes=1 elapsed_ns=1000",
        "< deliver Fetch topic=orders/0 off=40 n=3 tp=0af7 last_offset=42 high_watermark=43 last_stable_offset=43 log_start_offset=0 compression=none",
        "> request Fetch client=rdkafka api_version=11 correlation_id=9 max_wait_ms=500 min_bytes=1 max_bytes=52428800 isolation_level=0 session_id=0 session_epoch=-1 fetch=orders/0@43",
        "< response Fetch rc=0 api_version=11 correlation_id=9 hw=orders/0=43 max_wait_ms=500 min_bytes=1 elapsed_ns=1000 long_poll=true",
        "> request OffsetCommit group=billing client=rdkafka api_version=7 correlation_id=10",
        "> ack OffsetCommit group=billing topic=orders/0 client=rdkafka off=43 generation=3 member_id=m-1",
        "< response OffsetCommit group=billing rc=0 lat=1000 api_version=7 correlation_id=10",
        "> request Heartbeat group=billing client=rdkafka api_version=3 correlation_id=11",
        "> control Heartbeat group=billing client=rdkafka generation=3 member_id=m-1",
        "< response Heartbeat group=billing rc=0 lat=1000 api_version=3 correlation_id=11",
        "> request LeaveGroup group=billing client=rdkafka api_version=1 correlation_id=12",
        "> unsubscribe LeaveGroup group=billing client=rdkafka member_id=m-1",
        "< response LeaveGroup group=billing rc=0 lat=1000 api_version=1 correlation_id=12",
    ];
    assert_eq!(got, want);

    // Two events in full.
    let b0 = batch(
        0,
        0,
        1000,
        &[traced(b"order-1"), rec(b"order-2"), rec(b"order-3")],
    );
    let mut publish = ev(4, IN, EventKind::Publish, "Produce");
    publish.destination = Some(Destination {
        topic: Some("orders".into()),
        partition: Some(0),
        ..Default::default()
    });
    publish.client_id = Some("rdkafka".into());
    publish.record_count = Some(3);
    publish.body_size = Some(b0.len() as u64);
    publish.fingerprint = Some(payload_fp(&[&b0]));
    publish.props = Some(MessageProps {
        traceparent: Some(TRACEPARENT.into()),
        tracestate: Some("congo=t61rcWkgMzE".into()),
        headers: vec![("tenant".into(), "acme".into())],
        ..Default::default()
    });
    publish.attrs = attrs(&[
        ("acks", "-1"),
        ("producer_id", "1000"),
        ("producer_epoch", "0"),
        ("base_sequence", "0"),
        ("compression", "none"),
    ]);
    assert_eq!(events[5], publish);
    let deliver = &events[22];
    assert_eq!(deliver.kind, EventKind::Deliver);
    // The broker serves the producer's batch unchanged but for its base offset.
    assert_eq!(deliver.fingerprint, publish.fingerprint);
    assert_eq!(deliver.props, publish.props);
    assert_eq!(deliver.ts_ns, ts(15));
}

/// Each API at an older version, the librdkafka one and a flexible one: no malformed, and the
/// events their kinds promise.
#[test]
fn api_versions_matrix() {
    type Pair = fn(i16, i32) -> (Vec<u8>, Vec<u8>);
    let cases: Vec<(&str, Vec<i16>, Pair)> = vec![
        ("ApiVersions", vec![0, 2, 3, 4], |v, c| {
            (api_versions_req(v, c), api_versions_resp(v, c))
        }),
        ("Metadata", vec![1, 4, 9, 12], |v, c| {
            (metadata_req(v, c, &["orders"]), metadata_resp(v, c))
        }),
        ("FindCoordinator", vec![0, 2, 3, 4], |v, c| {
            (
                find_coordinator_req(v, c, "g"),
                find_coordinator_resp(v, c, "g"),
            )
        }),
        ("JoinGroup", vec![1, 5, 6, 9], |v, c| {
            (join_req(v, c, "g"), join_resp(v, c))
        }),
        ("SyncGroup", vec![1, 3, 4, 5], |v, c| {
            (sync_req(v, c, "g"), sync_resp(v, c))
        }),
        ("Heartbeat", vec![0, 3, 4], |v, c| {
            (
                heartbeat_req(v, c, "g"),
                error_resp(wire::HEARTBEAT, v, c, 27),
            )
        }),
        ("LeaveGroup", vec![0, 1, 4, 5], |v, c| {
            (leave_req(v, c, "g"), error_resp(wire::LEAVE_GROUP, v, c, 0))
        }),
        ("OffsetFetch", vec![1, 5, 7, 8, 9], |v, c| {
            (offset_fetch_req(v, c, "g"), offset_fetch_resp(v, c, "g"))
        }),
        ("OffsetCommit", vec![2, 7, 8, 9], |v, c| {
            (
                offset_commit_req(v, c, "g", &[(0, 5)]),
                offset_commit_resp(v, c, &[(0, 0)]),
            )
        }),
        ("Fetch", vec![4, 11, 12, 13, 15], |v, c| {
            let b = batch(5, 0, -1, &[rec(b"x")]);
            (
                fetch_req(v, c, &[("orders", 0, 5)]),
                fetch_resp(v, c, &[("orders", 0, 6, &b)]),
            )
        }),
        ("Produce", vec![3, 7, 9, 10], |v, c| {
            let b = batch(0, 0, -1, &[rec(b"x")]);
            (
                produce_req(v, c, 1, None, &[("orders", 0, &b)]),
                produce_resp(v, c, &[("orders", 0, 0, 5)]),
            )
        }),
    ];
    let mut checked = 0;
    for (name, versions, pair) in cases {
        for v in versions {
            let (q, r) = pair(v, 100 + i32::from(v));
            let steps = vec![i(&[q]), o(&[r])];
            let (events, stats) = check(&steps);
            assert_eq!(health(&stats), CLEAN, "{name} v{v}: {:#?}", lines(&events));
            let normalized: Vec<String> = lines(&events)
                .iter()
                .map(|l| {
                    l.replace(
                        &format!(" api_version={v} correlation_id={}", 100 + i32::from(v)),
                        "",
                    )
                })
                .collect();
            let want = MATRIX
                .iter()
                .find(|m| m.0 == name && m.1 == v)
                .unwrap_or_else(|| panic!("{name} v{v} not in MATRIX"));
            assert_eq!(normalized, want.2, "{name} v{v}");
            checked += 1;
            let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
            assert_eq!(events[0].method, Some(name), "{name} v{v}");
            assert!(kinds.contains(&EventKind::Response), "{name} v{v}");
            let resp = events
                .iter()
                .find(|e| e.kind == EventKind::Response)
                .unwrap();
            assert!(resp.reply_code.is_some(), "{name} v{v}: {}", line(resp));
            let want = match name {
                "Produce" => Some(EventKind::Publish),
                "Fetch" => Some(EventKind::Deliver),
                "JoinGroup" => Some(EventKind::Subscribe),
                "LeaveGroup" => Some(EventKind::Unsubscribe),
                "SyncGroup" | "Heartbeat" => Some(EventKind::Control),
                "OffsetCommit" => Some(EventKind::Ack),
                _ => None,
            };
            if let Some(k) = want {
                assert!(kinds.contains(&k), "{name} v{v}: {kinds:?}");
            }
            if name == "Fetch" {
                let d = events
                    .iter()
                    .find(|e| e.kind == EventKind::Deliver)
                    .unwrap();
                let topic = if v >= 13 {
                    uuid_of()
                } else {
                    "orders".to_owned()
                };
                assert_eq!(d.destination.as_ref().unwrap().name(), Some(topic));
                assert_eq!((d.offset, d.record_count), (Some(5), Some(1)));
            }
        }
    }
    assert_eq!(checked, MATRIX.len());
}

/// (api, version) → its events, without the api_version and correlation_id attrs.
const MATRIX: &[(&str, i16, &[&str])] = &[
    (
        "ApiVersions",
        0,
        &[
            "> request ApiVersions client=rdkafka",
            "< response ApiVersions rc=0 lat=1000 api_keys=3",
        ],
    ),
    (
        "ApiVersions",
        2,
        &[
            "> request ApiVersions client=rdkafka",
            "< response ApiVersions rc=0 lat=1000 api_keys=3",
        ],
    ),
    (
        "ApiVersions",
        3,
        &[
            "> request ApiVersions client=rdkafka client_software_name=librdkafka client_software_version=2.6.1",
            "< response ApiVersions rc=0 lat=1000 api_keys=3",
        ],
    ),
    (
        "ApiVersions",
        4,
        &[
            "> request ApiVersions client=rdkafka client_software_name=librdkafka client_software_version=2.6.1",
            "< response ApiVersions rc=0 lat=1000 api_keys=3",
        ],
    ),
    (
        "Metadata",
        1,
        &[
            "> request Metadata client=rdkafka topic=orders",
            "< response Metadata rc=0 lat=1000 brokers=1 controller_id=1 topics=1 leader=orders/0=1 leader=orders/1=1",
        ],
    ),
    (
        "Metadata",
        4,
        &[
            "> request Metadata client=rdkafka topic=orders",
            "< response Metadata rc=0 lat=1000 brokers=1 cluster_id=cluster-a controller_id=1 topics=1 leader=orders/0=1 leader=orders/1=1",
        ],
    ),
    (
        "Metadata",
        9,
        &[
            "> request Metadata client=rdkafka topic=orders",
            "< response Metadata rc=0 lat=1000 brokers=1 cluster_id=cluster-a controller_id=1 topics=1 leader=orders/0=1 leader=orders/1=1",
        ],
    ),
    (
        "Metadata",
        12,
        &[
            "> request Metadata client=rdkafka topic=orders",
            "< response Metadata rc=0 lat=1000 brokers=1 cluster_id=cluster-a controller_id=1 topics=1 leader=orders/0=1 leader=orders/1=1",
        ],
    ),
    (
        "FindCoordinator",
        0,
        &[
            "> request FindCoordinator group=g client=rdkafka key_type=0",
            "< response FindCoordinator group=g rc=0 lat=1000 coordinator=1@broker-1:9092",
        ],
    ),
    (
        "FindCoordinator",
        2,
        &[
            "> request FindCoordinator group=g client=rdkafka key_type=0",
            "< response FindCoordinator group=g rc=0 lat=1000 coordinator=1@broker-1:9092",
        ],
    ),
    (
        "FindCoordinator",
        3,
        &[
            "> request FindCoordinator group=g client=rdkafka key_type=0",
            "< response FindCoordinator group=g rc=0 lat=1000 coordinator=1@broker-1:9092",
        ],
    ),
    (
        "FindCoordinator",
        4,
        &[
            "> request FindCoordinator group=g client=rdkafka key_type=0",
            "< response FindCoordinator group=g rc=0 lat=1000 coordinator=1@broker-1:9092",
        ],
    ),
    (
        "JoinGroup",
        1,
        &[
            "> request JoinGroup group=g client=rdkafka",
            "> subscribe JoinGroup group=g client=rdkafka member_id= protocol_type=consumer protocols=range session_timeout_ms=45000",
            "< response JoinGroup group=g rc=0 lat=1000 generation=3 protocol=range leader=m-1 member_id=m-1 members=1",
        ],
    ),
    (
        "JoinGroup",
        5,
        &[
            "> request JoinGroup group=g client=rdkafka",
            "> subscribe JoinGroup group=g client=rdkafka member_id= protocol_type=consumer protocols=range session_timeout_ms=45000",
            "< response JoinGroup group=g rc=0 lat=1000 generation=3 protocol=range leader=m-1 member_id=m-1 members=1",
        ],
    ),
    (
        "JoinGroup",
        6,
        &[
            "> request JoinGroup group=g client=rdkafka",
            "> subscribe JoinGroup group=g client=rdkafka member_id= protocol_type=consumer protocols=range session_timeout_ms=45000",
            "< response JoinGroup group=g rc=0 lat=1000 generation=3 protocol=range leader=m-1 member_id=m-1 members=1",
        ],
    ),
    (
        "JoinGroup",
        9,
        &[
            "> request JoinGroup group=g client=rdkafka",
            "> subscribe JoinGroup group=g client=rdkafka member_id= protocol_type=consumer protocols=range session_timeout_ms=45000",
            "< response JoinGroup group=g rc=0 lat=1000 generation=3 protocol=range leader=m-1 member_id=m-1 members=1",
        ],
    ),
    (
        "SyncGroup",
        1,
        &[
            "> request SyncGroup group=g client=rdkafka",
            "> control SyncGroup group=g client=rdkafka generation=3 member_id=m-1 assignments=1",
            "< response SyncGroup group=g rc=0 lat=1000",
        ],
    ),
    (
        "SyncGroup",
        3,
        &[
            "> request SyncGroup group=g client=rdkafka",
            "> control SyncGroup group=g client=rdkafka generation=3 member_id=m-1 assignments=1",
            "< response SyncGroup group=g rc=0 lat=1000",
        ],
    ),
    (
        "SyncGroup",
        4,
        &[
            "> request SyncGroup group=g client=rdkafka",
            "> control SyncGroup group=g client=rdkafka generation=3 member_id=m-1 assignments=1",
            "< response SyncGroup group=g rc=0 lat=1000",
        ],
    ),
    (
        "SyncGroup",
        5,
        &[
            "> request SyncGroup group=g client=rdkafka",
            "> control SyncGroup group=g client=rdkafka generation=3 member_id=m-1 assignments=1",
            "< response SyncGroup group=g rc=0 lat=1000",
        ],
    ),
    (
        "Heartbeat",
        0,
        &[
            "> request Heartbeat group=g client=rdkafka",
            "> control Heartbeat group=g client=rdkafka generation=3 member_id=m-1",
            "< response Heartbeat group=g rc=27 rt=REBALANCE_IN_PROGRESS lat=1000",
        ],
    ),
    (
        "Heartbeat",
        3,
        &[
            "> request Heartbeat group=g client=rdkafka",
            "> control Heartbeat group=g client=rdkafka generation=3 member_id=m-1",
            "< response Heartbeat group=g rc=27 rt=REBALANCE_IN_PROGRESS lat=1000",
        ],
    ),
    (
        "Heartbeat",
        4,
        &[
            "> request Heartbeat group=g client=rdkafka",
            "> control Heartbeat group=g client=rdkafka generation=3 member_id=m-1",
            "< response Heartbeat group=g rc=27 rt=REBALANCE_IN_PROGRESS lat=1000",
        ],
    ),
    (
        "LeaveGroup",
        0,
        &[
            "> request LeaveGroup group=g client=rdkafka",
            "> unsubscribe LeaveGroup group=g client=rdkafka member_id=m-1",
            "< response LeaveGroup group=g rc=0 lat=1000",
        ],
    ),
    (
        "LeaveGroup",
        1,
        &[
            "> request LeaveGroup group=g client=rdkafka",
            "> unsubscribe LeaveGroup group=g client=rdkafka member_id=m-1",
            "< response LeaveGroup group=g rc=0 lat=1000",
        ],
    ),
    (
        "LeaveGroup",
        4,
        &[
            "> request LeaveGroup group=g client=rdkafka",
            "> unsubscribe LeaveGroup group=g client=rdkafka member_id=m-1",
            "< response LeaveGroup group=g rc=0 lat=1000",
        ],
    ),
    (
        "LeaveGroup",
        5,
        &[
            "> request LeaveGroup group=g client=rdkafka",
            "> unsubscribe LeaveGroup group=g client=rdkafka member_id=m-1",
            "< response LeaveGroup group=g rc=0 lat=1000",
        ],
    ),
    (
        "OffsetFetch",
        1,
        &[
            "> request OffsetFetch group=g client=rdkafka",
            "< response OffsetFetch group=g rc=0 lat=1000 committed=orders/0=40",
        ],
    ),
    (
        "OffsetFetch",
        5,
        &[
            "> request OffsetFetch group=g client=rdkafka",
            "< response OffsetFetch group=g rc=0 lat=1000 committed=orders/0=40",
        ],
    ),
    (
        "OffsetFetch",
        7,
        &[
            "> request OffsetFetch group=g client=rdkafka",
            "< response OffsetFetch group=g rc=0 lat=1000 committed=orders/0=40",
        ],
    ),
    (
        "OffsetFetch",
        8,
        &[
            "> request OffsetFetch group=g client=rdkafka group=g",
            "< response OffsetFetch group=g rc=0 lat=1000 committed=orders/0=40",
        ],
    ),
    (
        "OffsetFetch",
        9,
        &[
            "> request OffsetFetch group=g client=rdkafka group=g",
            "< response OffsetFetch group=g rc=0 lat=1000 committed=orders/0=40",
        ],
    ),
    (
        "OffsetCommit",
        2,
        &[
            "> request OffsetCommit group=g client=rdkafka",
            "> ack OffsetCommit group=g topic=orders/0 client=rdkafka off=5 generation=3 member_id=m-1",
            "< response OffsetCommit group=g rc=0 lat=1000",
        ],
    ),
    (
        "OffsetCommit",
        7,
        &[
            "> request OffsetCommit group=g client=rdkafka",
            "> ack OffsetCommit group=g topic=orders/0 client=rdkafka off=5 generation=3 member_id=m-1",
            "< response OffsetCommit group=g rc=0 lat=1000",
        ],
    ),
    (
        "OffsetCommit",
        8,
        &[
            "> request OffsetCommit group=g client=rdkafka",
            "> ack OffsetCommit group=g topic=orders/0 client=rdkafka off=5 generation=3 member_id=m-1",
            "< response OffsetCommit group=g rc=0 lat=1000",
        ],
    ),
    (
        "OffsetCommit",
        9,
        &[
            "> request OffsetCommit group=g client=rdkafka",
            "> ack OffsetCommit group=g topic=orders/0 client=rdkafka off=5 generation=3 member_id=m-1",
            "< response OffsetCommit group=g rc=0 lat=1000",
        ],
    ),
    (
        "Fetch",
        4,
        &[
            "> request Fetch client=rdkafka max_wait_ms=500 min_bytes=1 max_bytes=52428800 isolation_level=0 fetch=orders/0@5",
            "< response Fetch n=1 rc=0 lat=1000 hw=orders/0=6 max_wait_ms=500 min_bytes=1 elapsed_ns=1000",
            "< deliver Fetch topic=orders/0 off=5 n=1 last_offset=5 high_watermark=6 last_stable_offset=6 compression=none",
        ],
    ),
    (
        "Fetch",
        11,
        &[
            "> request Fetch client=rdkafka max_wait_ms=500 min_bytes=1 max_bytes=52428800 isolation_level=0 session_id=0 session_epoch=-1 fetch=orders/0@5",
            "< response Fetch n=1 rc=0 lat=1000 hw=orders/0=6 max_wait_ms=500 min_bytes=1 elapsed_ns=1000",
            "< deliver Fetch topic=orders/0 off=5 n=1 last_offset=5 high_watermark=6 last_stable_offset=6 log_start_offset=0 compression=none",
        ],
    ),
    (
        "Fetch",
        12,
        &[
            "> request Fetch client=rdkafka max_wait_ms=500 min_bytes=1 max_bytes=52428800 isolation_level=0 session_id=0 session_epoch=-1 fetch=orders/0@5",
            "< response Fetch n=1 rc=0 lat=1000 hw=orders/0=6 max_wait_ms=500 min_bytes=1 elapsed_ns=1000",
            "< deliver Fetch topic=orders/0 off=5 n=1 last_offset=5 high_watermark=6 last_stable_offset=6 log_start_offset=0 compression=none",
        ],
    ),
    (
        "Fetch",
        13,
        &[
            "> request Fetch client=rdkafka max_wait_ms=500 min_bytes=1 max_bytes=52428800 isolation_level=0 session_id=0 session_epoch=-1 fetch=BwcHBwcHBwcHBwcHBwcHBw/0@5",
            "< response Fetch n=1 rc=0 lat=1000 hw=BwcHBwcHBwcHBwcHBwcHBw/0=6 max_wait_ms=500 min_bytes=1 elapsed_ns=1000",
            "< deliver Fetch topic=BwcHBwcHBwcHBwcHBwcHBw/0 off=5 n=1 last_offset=5 high_watermark=6 last_stable_offset=6 log_start_offset=0 compression=none",
        ],
    ),
    (
        "Fetch",
        15,
        &[
            "> request Fetch client=rdkafka max_wait_ms=500 min_bytes=1 max_bytes=52428800 isolation_level=0 session_id=0 session_epoch=-1 fetch=BwcHBwcHBwcHBwcHBwcHBw/0@5",
            "< response Fetch n=1 rc=0 lat=1000 hw=BwcHBwcHBwcHBwcHBwcHBw/0=6 max_wait_ms=500 min_bytes=1 elapsed_ns=1000",
            "< deliver Fetch topic=BwcHBwcHBwcHBwcHBwcHBw/0 off=5 n=1 last_offset=5 high_watermark=6 last_stable_offset=6 log_start_offset=0 compression=none",
        ],
    ),
    (
        "Produce",
        3,
        &[
            "> request Produce client=rdkafka acks=1 timeout_ms=30000",
            "> publish Produce topic=orders/0 client=rdkafka n=1 acks=1 producer_id=-1 compression=none",
            "< response Produce rc=0 lat=1000",
            "< confirm Produce topic=orders/0 off=5 n=1 rc=0",
        ],
    ),
    (
        "Produce",
        7,
        &[
            "> request Produce client=rdkafka acks=1 timeout_ms=30000",
            "> publish Produce topic=orders/0 client=rdkafka n=1 acks=1 producer_id=-1 compression=none",
            "< response Produce rc=0 lat=1000",
            "< confirm Produce topic=orders/0 off=5 n=1 rc=0",
        ],
    ),
    (
        "Produce",
        9,
        &[
            "> request Produce client=rdkafka acks=1 timeout_ms=30000",
            "> publish Produce topic=orders/0 client=rdkafka n=1 acks=1 producer_id=-1 compression=none",
            "< response Produce rc=0 lat=1000",
            "< confirm Produce topic=orders/0 off=5 n=1 rc=0",
        ],
    ),
    (
        "Produce",
        10,
        &[
            "> request Produce client=rdkafka acks=1 timeout_ms=30000",
            "> publish Produce topic=orders/0 client=rdkafka n=1 acks=1 producer_id=-1 compression=none",
            "< response Produce rc=0 lat=1000",
            "< confirm Produce topic=orders/0 off=5 n=1 rc=0",
        ],
    ),
];

fn uuid_of() -> String {
    wire::uuid_text(&TOPIC_ID)
}

/// Fetch v13+ names topics by id: Metadata v12 taught the decoder the name.
#[test]
fn topic_ids_resolve_through_metadata() {
    let b = batch(5, 0, -1, &[rec(b"x")]);
    let steps = vec![
        i(&[metadata_req(12, 1, &["orders"])]),
        o(&[metadata_resp(12, 1)]),
        i(&[fetch_req(13, 2, &[("orders", 0, 5)])]),
        o(&[fetch_resp(13, 2, &[("orders", 0, 6, &b)])]),
        i(&[produce_req(13, 3, -1, None, &[("orders", 0, &b)])]),
    ];
    let (events, stats) = check(&steps);
    assert_eq!(health(&stats), CLEAN);
    let names: Vec<String> = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Deliver | EventKind::Publish))
        .map(|e| e.destination.as_ref().unwrap().name().unwrap())
        .collect();
    assert_eq!(names, ["orders", "orders"]);
    assert!(
        line(&events[2]).contains("fetch=orders/0@5"),
        "{}",
        line(&events[2])
    );
}

/// Compressed batches: headers (trace context) decoded through every codec.
#[test]
fn compressed_batches_decode_their_headers() {
    for codec in [1u8, 2, 3, 4, 5] {
        let recs = [traced(b"payload-1"), rec(b"payload-2")];
        let b = batch(0, codec, 7, &recs);
        let steps = vec![
            i(&[produce_req(9, 1, -1, None, &[("orders", 3, &b)])]),
            o(&[produce_resp(9, 1, &[("orders", 3, 0, 100)])]),
            i(&[fetch_req(12, 2, &[("orders", 3, 100)])]),
            o(&[fetch_resp(12, 2, &[("orders", 3, 102, &b)])]),
        ];
        let (events, stats) = check(&steps);
        assert_eq!(health(&stats), CLEAN, "codec {codec}");
        let publish = &events[1];
        assert_eq!(publish.kind, EventKind::Publish);
        let name = records::codec_name(codec.min(if codec == 5 { 2 } else { 4 }));
        assert!(
            line(publish).contains(&format!("compression={name}")),
            "{}",
            line(publish)
        );
        let props = publish.props.as_ref().expect("headers");
        assert_eq!(
            props.traceparent.as_deref(),
            Some(TRACEPARENT),
            "codec {codec}"
        );
        assert_eq!(
            props.headers,
            vec![("tenant".to_string(), "acme".to_string())]
        );
        assert_eq!(publish.record_count, Some(2));
        let deliver = events
            .iter()
            .find(|e| e.kind == EventKind::Deliver)
            .unwrap();
        assert_eq!(deliver.props, publish.props);
        assert_eq!(deliver.fingerprint, publish.fingerprint);
        assert_eq!(deliver.offset, Some(0));
    }
}

#[test]
fn produce_errors_nack_and_acks_zero_has_no_response() {
    let b = batch(0, 0, -1, &[rec(b"x"), rec(b"y")]);
    let steps = vec![
        i(&[produce_req(
            7,
            1,
            1,
            None,
            &[("orders", 0, &b), ("orders", 1, &b)],
        )]),
        o(&[produce_resp(
            7,
            1,
            &[("orders", 0, 6, -1), ("orders", 1, 0, 12)],
        )]),
        i(&[produce_req(7, 2, 0, None, &[("orders", 0, &b)])]),
        i(&[produce_req(3, 3, 1, Some("tx-1"), &[("orders", 0, &b)])]),
        o(&[produce_resp(3, 3, &[("orders", 0, 0, 14)])]),
    ];
    let (events, stats) = check(&steps);
    assert_eq!(health(&stats), CLEAN);
    let got = lines(&events);
    assert_eq!(
        got[3],
        "< response Produce rc=6 rt=NOT_LEADER_OR_FOLLOWER lat=1000 api_version=7 correlation_id=1"
    );
    assert_eq!(
        got[4],
        "< nack Produce topic=orders/0 n=2 rc=6 rt=NOT_LEADER_OR_FOLLOWER"
    );
    assert_eq!(got[5], "< confirm Produce topic=orders/1 off=12 n=2 rc=0");
    assert!(got[8].starts_with("> request Produce client=rdkafka api_version=3 correlation_id=3 acks=1 timeout_ms=30000 transactional_id=tx-1"));
    assert_eq!(events.len(), 12, "{got:#?}");
    assert_eq!(dec_pending(&steps), 0, "acks=0 leaves nothing waiting");
}

fn dec_pending(steps: &[Step]) -> usize {
    run(steps).2.session.pending_len()
}

#[test]
fn offset_commit_errors_are_error_events() {
    let steps = vec![
        i(&[offset_commit_req(8, 1, "billing", &[(0, 5), (1, 9)])]),
        o(&[offset_commit_resp(8, 1, &[(0, 0), (1, 25)])]),
    ];
    let (events, stats) = check(&steps);
    assert_eq!(health(&stats), CLEAN);
    let got = lines(&events);
    assert_eq!(
        got,
        [
            "> request OffsetCommit group=billing client=rdkafka api_version=8 correlation_id=1",
            "> ack OffsetCommit group=billing topic=orders/0 client=rdkafka off=5 generation=3 member_id=m-1",
            "> ack OffsetCommit group=billing topic=orders/1 client=rdkafka off=9 generation=3 member_id=m-1",
            "< response OffsetCommit group=billing rc=25 rt=UNKNOWN_MEMBER_ID lat=1000 api_version=8 correlation_id=1",
            "< error OffsetCommit group=billing topic=orders/1 rc=25 rt=UNKNOWN_MEMBER_ID",
        ]
    );
}

fn s_sasl_plain(v: i16, err: i16) -> Vec<Step> {
    let (hq, hr) = sasl_handshake(1, "PLAIN");
    let auth = format!("\0alice\0{CANARY}");
    vec![
        i(&[hq]),
        o(&[hr]),
        i(&[sasl_auth_req(v, 2, auth.as_bytes())]),
        o(&[sasl_auth_resp(v, 2, err, b"")]),
        i(&[api_versions_req(3, 3)]),
    ]
}

#[test]
fn sasl_plain_keeps_the_user_never_the_password() {
    for (v, err) in [(0, 0), (1, 0), (2, 0), (1, 58)] {
        let steps = s_sasl_plain(v, err);
        let (events, stats, dec) = run(&steps);
        check(&steps);
        assert_eq!(health(&stats), CLEAN);
        let auth = events.iter().find(|e| e.kind == EventKind::Auth).unwrap();
        assert_eq!(auth.user.as_deref(), Some("alice"));
        assert_eq!(auth.mechanism.as_deref(), Some("PLAIN"));
        let outcome = if err == 0 {
            Outcome::Success
        } else {
            Outcome::Failure
        };
        assert_eq!(auth.outcome, Some(outcome));
        assert_eq!(auth.reply_code, Some(err as u16));
        let all = format!("{events:?} {dec:?}");
        assert!(!all.contains(CANARY), "password leaked");
        assert!(!all.contains("Secr3t"), "password leaked");
    }
    // Split mid-password: the partial frame is buffered; the decoder's Debug shows no bytes.
    let steps = s_sasl_plain(1, 0);
    let Step::Data(_, bytes) = &steps[2] else {
        unreachable!()
    };
    let conn = conn();
    let mut dec = KafkaDecoder::new();
    for s in &steps[..2] {
        let Step::Data(d, b) = s else { unreachable!() };
        dec.on_data(&ctx(&conn, *d, 0), b, &mut |_| {});
    }
    dec.on_data(&ctx(&conn, IN, 0), &bytes[..bytes.len() - 3], &mut |_| {});
    assert!(!format!("{dec:?}").contains("Secr3t"));
}

#[test]
fn sasl_scram_user_and_final_round() {
    let (hq, mut hr) = sasl_handshake(1, "SCRAM-SHA-256");
    hr = {
        let _ = hr;
        resp(wire::SASL_HANDSHAKE, 1, 1, |w| {
            w.i16(0).arr(1).str("SCRAM-SHA-256");
        })
    };
    let steps = vec![
        i(&[hq]),
        o(&[hr]),
        i(&[sasl_auth_req(
            1,
            2,
            b"n,,n=bob=2Cx,r=fyko+d2lbbFgONRv9qkxdawL",
        )]),
        o(&[sasl_auth_resp(
            1,
            2,
            0,
            b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
        )]),
        i(&[sasl_auth_req(
            1,
            3,
            format!("c=biws,r=fyko,p={CANARY}").as_bytes(),
        )]),
        o(&[sasl_auth_resp(1, 3, 0, b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=")]),
    ];
    let (events, stats) = check(&steps);
    assert_eq!(health(&stats), CLEAN);
    let auths: Vec<_> = events
        .iter()
        .filter(|e| e.kind == EventKind::Auth)
        .collect();
    assert_eq!(auths.len(), 1);
    assert_eq!(auths[0].user.as_deref(), Some("bob,x"));
    assert_eq!(auths[0].outcome, Some(Outcome::Success));
    assert_eq!(auths[0].ts_ns, ts(5));
    assert!(!format!("{events:?}").contains(CANARY));
    assert_eq!(
        session::test_sasl_user(Some("PLAIN"), b"admin\0\0pw").as_deref(),
        Some("admin")
    );
    assert_eq!(session::test_sasl_user(Some("PLAIN"), b"nopassword"), None);
}

#[test]
fn admin_apis() {
    let create = req(wire::CREATE_TOPICS, 5, 1, CLIENT, |w| {
        w.arr(1)
            .str("payments")
            .i32(6)
            .i16(3)
            .arr(0)
            .arr(1)
            .str("retention.ms")
            .nstr(Some("1000"))
            .tags()
            .tags();
        w.i32(30000).bool(false).tags();
    });
    let create_r = resp(wire::CREATE_TOPICS, 5, 1, |w| {
        w.i32(0)
            .arr(1)
            .str("payments")
            .i16(36)
            .nstr(Some("Topic 'payments' already exists."));
        w.i32(-1).i16(-1).nbytes(None).tags().tags();
    });
    let delete = req(wire::DELETE_TOPICS, 6, 2, CLIENT, |w| {
        w.arr(2)
            .nstr(Some("old"))
            .raw(&[0; 16])
            .tags()
            .nstr(None)
            .raw(&TOPIC_ID)
            .tags();
        w.i32(30000).tags();
    });
    let delete_r = resp(wire::DELETE_TOPICS, 6, 2, |w| {
        w.i32(0)
            .arr(1)
            .nstr(Some("old"))
            .raw(&[0; 16])
            .i16(0)
            .nstr(None)
            .tags()
            .tags();
    });
    let parts = req(wire::CREATE_PARTITIONS, 1, 3, CLIENT, |w| {
        w.arr(1)
            .str("payments")
            .i32(12)
            .nbytes(None)
            .i32(30000)
            .bool(false);
    });
    let parts_r = resp(wire::CREATE_PARTITIONS, 1, 3, |w| {
        w.i32(0).arr(1).str("payments").i16(0).nstr(None);
    });
    let acl = req(wire::CREATE_ACLS, 2, 4, CLIENT, |w| {
        w.arr(1)
            .i8(2)
            .str("payments")
            .i8(3)
            .str("User:alice")
            .str("*")
            .i8(3)
            .i8(3)
            .tags()
            .tags();
    });
    let acl_r = resp(wire::CREATE_ACLS, 2, 4, |w| {
        w.i32(0).arr(1).i16(0).nstr(None).tags().tags();
    });
    let del_acl = req(wire::DELETE_ACLS, 1, 5, CLIENT, |w| {
        w.arr(1)
            .i8(2)
            .nstr(Some("payments"))
            .i8(3)
            .nstr(Some("User:alice"))
            .nstr(None)
            .i8(3)
            .i8(3);
    });
    let del_acl_r = resp(wire::DELETE_ACLS, 1, 5, |w| {
        w.i32(0)
            .arr(1)
            .i16(0)
            .nstr(None)
            .arr(1)
            .i16(0)
            .nstr(None)
            .i8(2)
            .str("payments")
            .i8(3);
        w.str("User:alice").str("*").i8(3).i8(3);
    });
    let alter = req(wire::INCREMENTAL_ALTER_CONFIGS, 1, 6, CLIENT, |w| {
        w.arr(1)
            .i8(2)
            .str("payments")
            .arr(1)
            .str("sasl.jaas.config")
            .i8(0)
            .nstr(Some(CANARY))
            .tags()
            .tags();
        w.bool(false).tags();
    });
    let alter_r = resp(wire::INCREMENTAL_ALTER_CONFIGS, 1, 6, |w| {
        w.i32(0)
            .arr(1)
            .i16(0)
            .nstr(None)
            .i8(2)
            .str("payments")
            .tags()
            .tags();
    });
    let old_alter = req(wire::ALTER_CONFIGS, 0, 7, CLIENT, |w| {
        w.arr(1)
            .i8(4)
            .str("1")
            .arr(1)
            .str("log.retention.ms")
            .nstr(Some("1"))
            .bool(false);
    });
    let steps = vec![
        i(&[create]),
        o(&[create_r]),
        i(&[delete]),
        o(&[delete_r]),
        i(&[parts]),
        o(&[parts_r]),
        i(&[acl]),
        o(&[acl_r]),
        i(&[del_acl]),
        o(&[del_acl_r]),
        i(&[alter]),
        o(&[alter_r]),
        i(&[old_alter]),
    ];
    let (events, stats) = check(&steps);
    assert_eq!(health(&stats), CLEAN);
    let got = lines(&events);
    let id = uuid_of();
    let want = [
        "> request CreateTopics client=rdkafka api_version=5 correlation_id=1".to_string(),
        "> declare CreateTopics res=topic topic=payments client=rdkafka partitions=6 replication=3".into(),
        "< response CreateTopics rc=36 rt=Topic 'payments' already exists. lat=1000 api_version=5 correlation_id=1".into(),
        "> request DeleteTopics client=rdkafka api_version=6 correlation_id=2".into(),
        "> delete DeleteTopics res=topic topic=old client=rdkafka".into(),
        format!("> delete DeleteTopics res=topic topic={id} client=rdkafka"),
        "< response DeleteTopics rc=0 lat=1000 api_version=6 correlation_id=2".into(),
        "> request CreatePartitions client=rdkafka api_version=1 correlation_id=3".into(),
        "> declare CreatePartitions res=partitions topic=payments client=rdkafka count=12".into(),
        "< response CreatePartitions rc=0 lat=1000 api_version=1 correlation_id=3".into(),
        "> request CreateAcls client=rdkafka api_version=2 correlation_id=4".into(),
        "> declare CreateAcls res=acl client=rdkafka resource_type=2 resource_name=payments pattern_type=3 principal=User:alice host=* operation=3 permission=3".into(),
        "< response CreateAcls rc=0 lat=1000 api_version=2 correlation_id=4".into(),
        "> request DeleteAcls client=rdkafka api_version=1 correlation_id=5".into(),
        "> delete DeleteAcls res=acl client=rdkafka resource_type=2 resource_name=payments pattern_type=3 principal=User:alice operation=3 permission=3".into(),
        "< response DeleteAcls rc=0 lat=1000 api_version=1 correlation_id=5 deleted=1".into(),
        "> request IncrementalAlterConfigs client=rdkafka api_version=1 correlation_id=6".into(),
        "> control IncrementalAlterConfigs res=config topic=payments client=rdkafka resource_type=2 resource_name=payments config=sasl.jaas.config:set".into(),
        "< response IncrementalAlterConfigs rc=0 lat=1000 api_version=1 correlation_id=6".into(),
        "> request AlterConfigs client=rdkafka api_version=0 correlation_id=7".into(),
        "> control AlterConfigs res=config client=rdkafka resource_type=4 resource_name=1 config=log.retention.ms".into(),
    ];
    assert_eq!(got, want);
    assert!(
        !format!("{events:?}").contains(CANARY),
        "config values are never kept"
    );
}

#[test]
fn list_offsets_and_unknown_apis_are_header_only() {
    let lo = req(wire::LIST_OFFSETS, 7, 1, CLIENT, |w| {
        w.i32(-1)
            .i8(0)
            .arr(1)
            .str("orders")
            .arr(1)
            .i32(0)
            .i32(-1)
            .i64(-1)
            .tags()
            .tags()
            .tags();
    });
    let lo_r = resp(wire::LIST_OFFSETS, 7, 1, |w| {
        w.i32(0)
            .arr(1)
            .str("orders")
            .arr(1)
            .i32(0)
            .i16(0)
            .i64(-1)
            .i64(43)
            .i32(0)
            .tags()
            .tags()
            .tags();
    });
    let init = req(22, 4, 2, CLIENT, |w| {
        w.nstr(None).i32(60000).i64(-1).i16(-1).tags();
    });
    let init_r = resp(22, 4, 2, |w| {
        w.i32(0).i16(0).i64(1000).i16(0).tags();
    });
    let steps = vec![i(&[lo]), o(&[lo_r]), i(&[init]), o(&[init_r])];
    let (events, stats) = check(&steps);
    assert_eq!(health(&stats), CLEAN);
    assert_eq!(
        lines(&events),
        [
            "> request ListOffsets client=rdkafka api_version=7 correlation_id=1 isolation_level=0 list=orders/0@-1",
            "< response ListOffsets rc=0 lat=1000 api_version=7 correlation_id=1 offset=orders/0=43",
            "> request InitProducerId client=rdkafka api_version=4 correlation_id=2",
            "< response InitProducerId lat=1000 api_version=4 correlation_id=2",
        ]
    );
}

#[test]
fn pipelined_requests_match_by_correlation_id() {
    let steps = vec![
        i(&[
            heartbeat_req(4, 1, "g"),
            heartbeat_req(4, 2, "h"),
            api_versions_req(3, 3),
        ]),
        o(&[
            api_versions_resp(3, 3),
            error_resp(wire::HEARTBEAT, 4, 2, 27),
            error_resp(wire::HEARTBEAT, 4, 1, 0),
        ]),
    ];
    let (events, stats) = check(&steps);
    assert_eq!(health(&stats), CLEAN);
    let got = lines(&events);
    assert_eq!(
        got[5],
        "< response ApiVersions rc=0 lat=1000 api_version=3 correlation_id=3 api_keys=3"
    );
    assert_eq!(
        got[6],
        "< response Heartbeat group=h rc=27 rt=REBALANCE_IN_PROGRESS lat=1000 api_version=4 correlation_id=2"
    );
    assert_eq!(
        got[7],
        "< response Heartbeat group=g rc=0 lat=1000 api_version=4 correlation_id=1"
    );
}

// ---------------------------------------------------------------------------------------------
// Framing: malformed, gaps, mid-stream joins, oversize

#[test]
fn malformed_body_is_skipped_by_its_size() {
    // A Produce whose records claim more bytes than there are, between two good requests.
    let mut bad = req(wire::PRODUCE, 7, 2, CLIENT, |w| {
        w.nstr(None)
            .i16(1)
            .i32(1)
            .arr(1)
            .str("orders")
            .arr(1)
            .i32(0)
            .i32(1000);
    });
    bad.extend_from_slice(&[0; 8]);
    let len = (bad.len() - 4) as i32;
    bad[..4].copy_from_slice(&len.to_be_bytes());
    let steps = vec![i(&[
        heartbeat_req(4, 1, "g"),
        bad,
        heartbeat_req(4, 3, "g"),
    ])];
    let (events, stats) = check(&steps);
    assert_eq!(health(&stats), (1, 0, 0, 0, 0));
    assert_eq!(stats.frames, 3);
    let got = lines(&events);
    assert_eq!(got.len(), 5, "{got:#?}");
    assert!(got[2].starts_with("> request Produce"));
    assert!(got[3].starts_with("> request Heartbeat"));
}

#[test]
fn gap_then_resync_on_a_plausible_header() {
    let b = batch(0, 0, -1, &[rec(b"x")]);
    let p = produce_req(9, 2, 1, None, &[("orders", 0, &b)]);
    let steps = vec![
        i(&[heartbeat_req(4, 1, "g")]),
        Step::Gap(IN, 100),
        // The tail of a lost request, then whole ones.
        i(&[
            p[p.len() - 20..].to_vec(),
            heartbeat_req(4, 3, "g"),
            p.clone(),
        ]),
        o(&[error_resp(wire::HEARTBEAT, 4, 1, 0)]),
        Step::Gap(OUT, 10),
        o(&[vec![1, 2, 3], error_resp(wire::HEARTBEAT, 4, 3, 0)]),
    ];
    let (events, stats) = check(&steps);
    assert_eq!(stats.malformed, 0);
    assert_eq!(stats.resyncs, 2);
    assert_eq!(stats.skipped_bytes, 23);
    let got = lines(&events);
    assert!(
        got[2].starts_with(
            "> request Heartbeat group=g client=rdkafka api_version=4 correlation_id=3"
        ),
        "{got:#?}"
    );
    assert!(got[4].starts_with("> request Produce"), "{got:#?}");
    assert!(
        got.last()
            .unwrap()
            .starts_with("< response Heartbeat group=g rc=0"),
        "{got:#?}"
    );
}

#[test]
fn joined_mid_stream_counts_one_resync() {
    let h = heartbeat_req(4, 7, "g");
    let steps = vec![
        i(&[h[5..].to_vec(), h.clone()]),
        // A response to a request never seen, while hunting: skipped.
        o(&[
            error_resp(wire::HEARTBEAT, 4, 99, 0),
            error_resp(wire::HEARTBEAT, 4, 7, 0),
        ]),
    ];
    let (events, stats) = check(&steps);
    assert_eq!(health(&stats), (0, 2, (h.len() - 5 + 16) as u64, 0, 0));
    assert_eq!(lines(&events).len(), 3, "{:#?}", lines(&events));
}

#[test]
fn absurd_sizes_and_garbage_are_counted_and_bounded() {
    let mut junk = vec![0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0];
    junk.extend_from_slice(&[0xAB; 300]);
    let steps = vec![
        i(&[heartbeat_req(4, 1, "g"), junk, heartbeat_req(4, 2, "g")]),
        o(&[vec![0xff; 50]]),
    ];
    let (events, stats) = check(&steps);
    assert_eq!(stats.malformed, 1);
    assert_eq!(stats.resyncs, 2);
    // The last 3 egress bytes cannot be judged without a 4th: held.
    assert_eq!(stats.skipped_bytes, 308 + 47);
    assert_eq!(stats.buffered_bytes, 3);
    assert_eq!(
        events
            .iter()
            .filter(|e| e.kind == EventKind::Request)
            .count(),
        2
    );
}

#[test]
fn oversize_messages_are_skipped_after_their_header() {
    let big = vec![0u8; MAX_MESSAGE + 100];
    let b = {
        let mut w = W::new(false);
        w.i64(0)
            .i32(49 + big.len() as i32)
            .i32(0)
            .i8(2)
            .i32(0)
            .i16(0)
            .i32(0);
        w.i64(0).i64(0).i64(-1).i16(-1).i32(-1).i32(1).raw(&big);
        w.b
    };
    let q = produce_req(9, 1, 1, None, &[("orders", 0, &b)]);
    let join = resp(wire::JOIN_GROUP, 5, 3, |w| {
        w.i32(0)
            .i16(0)
            .i32(1)
            .str("range")
            .str("m-1")
            .str("m-1")
            .arr(1)
            .str("m-1")
            .nstr(None);
        w.bytes(&big);
    });
    let r = fetch_resp(11, 2, &[("orders", 0, 1, &b)]);
    let steps = vec![
        i(&[
            q,
            fetch_req(11, 2, &[("orders", 0, 0)]),
            join_req(5, 3, "g"),
        ]),
        o(&[r, error_resp(wire::HEARTBEAT, 4, 1, 0), join]),
    ];
    // Chunked like a socket would deliver it.
    let (events, stats, dec) = run_with(&steps, &mut |_, len| vec![65536; len / 65536 + 1]);
    dec.assert_bounded();
    // The produce request and the JoinGroup response are skipped; the fetch streams.
    assert_eq!(health(&stats), (0, 0, 0, 2, 0));
    let got = lines(&events);
    assert!(
        got[0].starts_with(
            "> request Produce client=rdkafka api_version=9 correlation_id=1 oversize="
        ),
        "{got:#?}"
    );
    assert_eq!(
        got[4],
        "< response Fetch n=1 rc=0 lat=1000 api_version=11 correlation_id=2 hw=orders/0=1 max_wait_ms=500 min_bytes=1 elapsed_ns=1000"
    );
    assert!(
        got[5].starts_with("< deliver Fetch topic=orders/0 off=0 n=1"),
        "{got:#?}"
    );
    assert!(got[6].starts_with("< response Produce rc=0"), "{got:#?}");
    assert!(
        got[7]
            .starts_with("< response JoinGroup lat=1000 api_version=5 correlation_id=3 oversize="),
        "{got:#?}"
    );
}

#[test]
fn a_one_mib_fetch_is_decoded_whole() {
    let value = vec![b'v'; 1 << 20];
    let b = batch(10, 0, -1, &[traced(&value)]);
    let steps = vec![
        i(&[fetch_req(11, 1, &[("orders", 0, 10)])]),
        o(&[fetch_resp(11, 1, &[("orders", 0, 11, &b)])]),
    ];
    let (events, stats, _) = run_with(&steps, &mut |_, len| vec![1460; len / 1460 + 1]);
    assert_eq!(health(&stats), CLEAN);
    let d = events
        .iter()
        .find(|e| e.kind == EventKind::Deliver)
        .unwrap();
    assert_eq!((d.offset, d.record_count), (Some(10), Some(1)));
    assert_eq!(
        d.props.as_ref().unwrap().traceparent.as_deref(),
        Some(TRACEPARENT)
    );
}

#[test]
fn fetch_with_a_partial_trailing_batch() {
    let b1 = batch(10, 0, -1, &[rec(b"a"), rec(b"b")]);
    let b2 = batch(12, 0, -1, &[rec(b"c")]);
    let data = [b1.clone(), b2[..b2.len() - 5].to_vec()].concat();
    let steps = vec![
        i(&[fetch_req(11, 1, &[("orders", 0, 10)])]),
        o(&[fetch_resp(11, 1, &[("orders", 0, 13, &data)])]),
    ];
    let (events, stats) = check(&steps);
    assert_eq!(health(&stats), CLEAN);
    assert_eq!(
        line(&events[2]),
        "< deliver Fetch topic=orders/0 off=10 n=2 last_offset=11 high_watermark=13 last_stable_offset=13 log_start_offset=0 compression=none"
    );
}

#[test]
fn looks_like_kafka_decides_on_the_header() {
    let h = heartbeat_req(4, 1, "g");
    assert_eq!(looks_like_kafka(&h), Some(true));
    assert_eq!(looks_like_kafka(&h[..2]), None);
    assert_eq!(looks_like_kafka(&h[..15]), None);
    assert_eq!(looks_like_kafka(b"GET / HTTP/1.1\r\n"), Some(false));
    assert_eq!(looks_like_kafka(b"AMQP\0\0\x09\x01"), Some(false));
    assert_eq!(looks_like_kafka(&req(18, 3, 1, None, |_| {})), Some(true));
    assert_eq!(
        looks_like_kafka(b"\0\0\0\x20\0\x12\0\x03\0\0\0\x01\0\x07rdkafka"),
        Some(true)
    );
    assert_eq!(
        looks_like_kafka(b"\0\0\0\x20\0\x12\0\x03\0\0\0\x01\0\x07rd\x01afka"),
        Some(false)
    );
    assert_eq!(
        looks_like_kafka(b"\0\0\0\x20\x01\x12\0\x03\0\0\0\x01\0\x07rdkafka"),
        Some(false)
    );
}

/// Fetch responses and their deliveries (what streaming must reproduce).
fn fetch_lines(events: &[BrokerEvent]) -> Vec<BrokerEvent> {
    events
        .iter()
        .filter(|e| e.method == Some("Fetch") && e.direction == OUT)
        .cloned()
        .collect()
}

/// Scripts whose Fetch responses stream when the response limit is tiny.
fn fetch_scripts() -> Vec<Vec<Step>> {
    let b1 = batch(10, 0, -1, &[traced(b"a"), rec(b"b")]);
    let b2 = batch(12, 1, -1, &[rec(b"c")]);
    let b3 = batch(40, 4, -1, &[traced(b"z")]);
    let cut = [b1.clone(), b2[..b2.len() - 5].to_vec()].concat();
    let two = [b1.clone(), b2.clone()].concat();
    let mut out = vec![s_session()];
    for v in [4, 11, 12, 16] {
        // (v13+ names topics by id: shown as ids here, the Metadata that would name them is
        // over the tiny response limits of the test.)
        out.push(vec![
            i(&[fetch_req(v, 2, &[("orders", 0, 11), ("other", 3, 40)])]),
            o(&[fetch_resp(
                v,
                2,
                &[("orders", 0, 13, &two), ("other", 3, 41, &b3)],
            )]),
            i(&[fetch_req(v, 3, &[("orders", 0, 10)])]),
            o(&[fetch_resp(v, 3, &[("orders", 0, 13, &cut)])]),
            i(&[fetch_req(v, 4, &[("orders", 0, 13)])]),
            o(&[fetch_resp(v, 4, &[("orders", 0, 13, &[])])]),
        ]);
    }
    out
}

#[test]
fn streamed_fetch_responses_match_buffered_ones() {
    for (k, steps) in fetch_scripts().iter().enumerate() {
        let (whole, _, _) = run(steps);
        let want = fetch_lines(&whole);
        assert!(
            want.iter().any(|e| e.kind == EventKind::Deliver),
            "script {k}"
        );
        for limit in [4, 16, 100, 300] {
            let (events, stats, _) = run_dec(
                KafkaDecoder::with_response_limit(limit),
                steps,
                &mut |_, len| vec![len],
            );
            assert_eq!(fetch_lines(&events), want, "script {k} limit {limit}");
            assert_eq!(stats.malformed, 0);
            for cut in [1, 7, 64] {
                let (e2, s2, _) = run_dec(
                    KafkaDecoder::with_response_limit(limit),
                    steps,
                    &mut |_, len| vec![cut; len / cut + 1],
                );
                assert_eq!(e2, events, "script {k} limit {limit} cut {cut}");
                assert_eq!(s2, stats, "script {k} limit {limit} cut {cut}");
            }
        }
    }
}

#[test]
fn fetch_deliveries_start_at_the_fetch_offset() {
    let b = batch(10, 0, -1, &[rec(b"a"), rec(b"b"), rec(b"c"), rec(b"d")]);
    let steps = vec![
        i(&[fetch_req(11, 1, &[("orders", 0, 12)])]),
        o(&[fetch_resp(11, 1, &[("orders", 0, 14, &b)])]),
    ];
    let (events, stats) = check(&steps);
    assert_eq!(health(&stats), CLEAN);
    assert_eq!(
        line(&events[2]),
        "< deliver Fetch topic=orders/0 off=12 n=2 last_offset=13 high_watermark=14 last_stable_offset=14 log_start_offset=0 compression=none batch_offset=10"
    );
}

/// A 25 MiB fetch (over MAX_MESSAGE) streams: every partition's deliveries as if buffered,
/// one batch bigger than BATCH_CAP included, and nothing is held beyond the bounds.
#[test]
fn a_big_fetch_streams_through() {
    let value = vec![b'v'; 1 << 20];
    let huge = vec![b'h'; 3 << 20];
    let mut p0 = Vec::new();
    for k in 0..16 {
        p0.extend(batch(k, 0, -1, &[traced(&value)]));
    }
    p0.extend(batch(16, 0, -1, &[rec(&huge)]));
    let mut p1 = Vec::new();
    for k in 0..8 {
        p1.extend(batch(100 + k, 3, -1, &[rec(&value)]));
    }
    let r = fetch_resp(12, 1, &[("orders", 0, 17, &p0), ("orders", 1, 108, &p1)]);
    assert!(r.len() > MAX_MESSAGE);
    let steps = vec![
        i(&[fetch_req(12, 1, &[("orders", 0, 0), ("orders", 1, 100)])]),
        o(&[r, error_resp(wire::HEARTBEAT, 4, 7, 0)]),
    ];
    let (streamed, stats, dec) = run_with(&steps, &mut |_, len| vec![65536; len / 65536 + 1]);
    dec.assert_bounded();
    assert_eq!(health(&stats), CLEAN);
    let (buffered, _, _) = run_dec(
        KafkaDecoder::with_response_limit(64 << 20),
        &steps,
        &mut |_, len| vec![len],
    );
    assert_eq!(fetch_lines(&streamed), fetch_lines(&buffered));
    let got: Vec<String> = fetch_lines(&streamed).iter().map(line).collect();
    assert_eq!(
        got[1],
        "< deliver Fetch topic=orders/0 off=0 n=17 tp=0af7 last_offset=16 high_watermark=17 last_stable_offset=17 log_start_offset=0 compression=none batches=17"
    );
    assert_eq!(
        got[2],
        "< deliver Fetch topic=orders/1 off=100 n=8 last_offset=107 high_watermark=108 last_stable_offset=108 log_start_offset=0 compression=lz4 batches=8"
    );
}

// ---------------------------------------------------------------------------------------------
// Properties

fn scripts() -> Vec<(&'static str, Vec<Step>)> {
    let b = |codec| batch(3, codec, 9, &[traced(b"v1"), rec(b"v2")]);
    let compressed: Vec<Step> = (1..=4)
        .flat_map(|c| {
            let b = b(c);
            vec![
                i(&[produce_req(9, i32::from(c), -1, None, &[("t", 0, &b)])]),
                o(&[produce_resp(9, i32::from(c), &[("t", 0, 0, 3)])]),
            ]
        })
        .collect();
    vec![
        ("session", s_session()),
        ("sasl", s_sasl_plain(1, 0)),
        ("compressed", compressed),
        (
            "gap",
            vec![
                i(&[heartbeat_req(4, 1, "g")]),
                Step::Gap(IN, 5),
                i(&[vec![9; 7], heartbeat_req(4, 2, "g")]),
                o(&[error_resp(wire::HEARTBEAT, 4, 2, 0)]),
                Step::End(IN),
            ],
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Every script decodes to the same events and counters however its bytes are chunked.
    #[test]
    fn random_chunkings_agree(which in 0usize..4, sizes in prop::collection::vec(1usize..300, 1..64)) {
        let all = scripts();
        let (name, steps) = &all[which];
        let (events, stats, _) = run(steps);
        let (e2, s2, _) = run_with(steps, &mut testkit::cycling_cuts(&sizes));
        prop_assert_eq!(e2, events, "script {}", name);
        prop_assert_eq!(s2, stats, "script {}", name);
    }

    /// Arbitrary bytes, in arbitrary chunks, on both directions: no panic, bounded buffers.
    #[test]
    fn arbitrary_bytes_are_harmless(
        chunks in prop::collection::vec((any::<bool>(), prop::collection::vec(any::<u8>(), 0..512)), 0..32),
        prefix in any::<bool>(),
    ) {
        let conn = conn();
        let mut dec = KafkaDecoder::new();
        if prefix {
            dec.on_data(&ctx(&conn, IN, 0), &heartbeat_req(4, 1, "g"), &mut |_| {});
        }
        for (egress, bytes) in &chunks {
            let c = ctx(&conn, Direction::from_egress(*egress), 0);
            dec.on_data(&c, bytes, &mut |_| {});
            dec.assert_bounded();
        }
    }

    /// Valid messages with random bytes flipped: no panic, same result however chunked.
    #[test]
    fn corrupted_messages_are_harmless(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in 1usize..200,
    ) {
        let mut steps = s_session();
        for (k, (idx, byte)) in flips.iter().enumerate() {
            let n = steps.len();
            if let Step::Data(_, b) = &mut steps[(k * 7) % n] {
                let at = idx.index(b.len());
                b[at] = *byte;
            }
        }
        let (events, stats, _) = run(&steps);
        let (e2, s2, _) = run_with(&steps, &mut |_, len| vec![cut; len / cut + 1]);
        prop_assert_eq!(e2, events);
        prop_assert_eq!(s2, stats);
    }
}

/// Throughput on the realistic session, repeated to ~100 MB:
/// `cargo test --release -p observer --lib protocol::kafka::tests::throughput -- --ignored --nocapture`
#[test]
#[ignore]
fn throughput() {
    testkit::throughput("kafka", &conn(), KafkaDecoder::new, &s_session());
}

/// Throughput on bulk fetches (1 MiB responses of 16 KiB batches, buffered and streamed):
/// `cargo test --release -p observer --lib protocol::kafka::tests::throughput_fetch -- --ignored --nocapture`
#[test]
#[ignore]
fn throughput_fetch() {
    let value = vec![b'v'; 16 << 10];
    let mut data = Vec::new();
    for k in 0..64 {
        data.extend(batch(k, 0, -1, &[traced(&value)]));
    }
    let steps = vec![
        i(&[fetch_req(11, 1, &[("orders", 0, 0)])]),
        o(&[fetch_resp(11, 1, &[("orders", 0, 64, &data)])]),
    ];
    let per = total_bytes(&steps) as usize;
    let reps = 1_000_000_000 / per + 1;
    let conn = conn();
    for limit in [MAX_MESSAGE, 4096] {
        let t0 = std::time::Instant::now();
        let mut events = 0usize;
        for _ in 0..reps {
            let mut dec = KafkaDecoder::with_response_limit(limit);
            for step in &steps {
                if let Step::Data(dir, bytes) = step {
                    for chunk in bytes.chunks(65536) {
                        dec.on_data(&ctx(&conn, *dir, 0), chunk, &mut |e| {
                            events += 1;
                            std::hint::black_box(e);
                        });
                    }
                }
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        let mb = (per * reps) as f64 / 1e6;
        println!(
            "limit {limit}: {mb:.0} MB in {secs:.3}s: {:.0} MB/s ({events} events)",
            mb / secs
        );
    }
}

/// The realistic session is the decoder benchmark's input (benches/decoders).
#[test]
fn bench_fixture_is_current() {
    testkit::fixture("kafka", &s_session());
}
