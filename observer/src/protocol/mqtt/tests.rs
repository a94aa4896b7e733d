//! Tests: byte-level encoders (below, checked against byte literals), a harness that decodes
//! every script whole, split in two at every byte of every step, and (proptest) in random
//! chunkings, and checks all agree.
use proptest::prelude::*;

use super::*;
use crate::protocol::testkit::{self, Bounded, Step, i, o, ts};
use crate::{
    capture::ConnId,
    event::{ConnRef, Destination, EventKind, Fingerprint, MessageProps, Outcome},
};

const IN: Direction = Direction::Ingress;
const OUT: Direction = Direction::Egress;
const CANARY: &str = "canary-Secr3t-pw";

// ---------------------------------------------------------------------------------------------
// Encoders

fn vbi(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            return out;
        }
    }
}

/// Fixed header + body.
fn pkt(b0: u8, body: &[u8]) -> Vec<u8> {
    [vec![b0], vbi(body.len()), body.to_vec()].concat()
}

/// Packet body builder.
#[derive(Clone, Default)]
struct B(Vec<u8>);

impl B {
    fn new() -> Self {
        Self::default()
    }
    fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn bin(mut self, v: &[u8]) -> Self {
        self = self.u16(v.len() as u16);
        self.0.extend_from_slice(v);
        self
    }
    fn s(self, v: &str) -> Self {
        self.bin(v.as_bytes())
    }
    fn raw(mut self, v: &[u8]) -> Self {
        self.0.extend_from_slice(v);
        self
    }
    fn props(mut self, p: &Pr) -> Self {
        self.0.extend(vbi(p.0.len()));
        self.0.extend_from_slice(&p.0);
        self
    }
}

/// MQTT 5 properties builder.
#[derive(Clone, Default)]
struct Pr(Vec<u8>);

impl Pr {
    fn new() -> Self {
        Self::default()
    }
    fn byte(mut self, id: u8, v: u8) -> Self {
        self.0.extend([id, v]);
        self
    }
    fn u16(mut self, id: u8, v: u16) -> Self {
        self.0.push(id);
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u32(mut self, id: u8, v: u32) -> Self {
        self.0.push(id);
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn var(mut self, id: u8, v: usize) -> Self {
        self.0.push(id);
        self.0.extend(vbi(v));
        self
    }
    fn bin(mut self, id: u8, v: &[u8]) -> Self {
        self.0.push(id);
        self.0.extend_from_slice(&(v.len() as u16).to_be_bytes());
        self.0.extend_from_slice(v);
        self
    }
    fn s(self, id: u8, v: &str) -> Self {
        self.bin(id, v.as_bytes())
    }
    fn user(self, name: &str, value: &str) -> Self {
        let mut p = self;
        p.0.push(0x26);
        p.bin_raw(name).bin_raw(value)
    }
    fn bin_raw(mut self, v: &str) -> Self {
        self.0.extend_from_slice(&(v.len() as u16).to_be_bytes());
        self.0.extend_from_slice(v.as_bytes());
        self
    }
}

#[derive(Clone)]
struct Connect {
    level: u8,
    client_id: &'static str,
    user: Option<&'static str>,
    password: Option<&'static str>,
    keepalive: u16,
    clean: bool,
    will: Option<(&'static str, &'static [u8])>,
    props: Pr,
}

impl Connect {
    fn new(level: u8, client_id: &'static str) -> Self {
        Self {
            level,
            client_id,
            user: None,
            password: None,
            keepalive: 60,
            clean: true,
            will: None,
            props: Pr::new(),
        }
    }
    fn login(mut self, user: &'static str, password: &'static str) -> Self {
        self.user = Some(user);
        self.password = Some(password);
        self
    }
    fn encode(&self) -> Vec<u8> {
        let v5 = self.level == 5;
        let name = if self.level == 3 { "MQIsdp" } else { "MQTT" };
        let flags = u8::from(self.clean) << 1
            | u8::from(self.will.is_some()) << 2
            | u8::from(self.password.is_some()) << 6
            | u8::from(self.user.is_some()) << 7;
        let mut b = B::new()
            .s(name)
            .u8(self.level)
            .u8(flags)
            .u16(self.keepalive);
        if v5 {
            b = b.props(&self.props);
        }
        b = b.s(self.client_id);
        if let Some((topic, payload)) = self.will {
            if v5 {
                b = b.props(&Pr::new().u32(0x18, 5));
            }
            b = b.s(topic).bin(payload);
        }
        if let Some(u) = self.user {
            b = b.s(u);
        }
        if let Some(p) = self.password {
            b = b.s(p);
        }
        pkt(0x10, &b.0)
    }
}

fn connack(v5: Option<Pr>, session_present: bool, code: u8) -> Vec<u8> {
    let mut b = B::new().u8(u8::from(session_present)).u8(code);
    if let Some(p) = v5 {
        b = b.props(&p);
    }
    pkt(0x20, &b.0)
}

/// PUBLISH: `qos`, `retain`, `dup`; `id` for QoS > 0; `props` for 5.0.
struct Pub {
    qos: u8,
    retain: bool,
    dup: bool,
    topic: &'static str,
    id: u16,
    props: Option<Pr>,
}

fn publish(p: Pub, payload: &[u8]) -> Vec<u8> {
    let b0 = 0x30 | u8::from(p.dup) << 3 | p.qos << 1 | u8::from(p.retain);
    let mut b = B::new().s(p.topic);
    if p.qos > 0 {
        b = b.u16(p.id);
    }
    if let Some(props) = &p.props {
        b = b.props(props);
    }
    pkt(b0, &b.raw(payload).0)
}

/// 3.1.1 PUBLISH.
fn pub3(qos: u8, topic: &'static str, id: u16, payload: &[u8]) -> Vec<u8> {
    publish(
        Pub {
            qos,
            retain: false,
            dup: false,
            topic,
            id,
            props: None,
        },
        payload,
    )
}

/// 5.0 PUBLISH.
fn pub5(qos: u8, topic: &'static str, id: u16, props: Pr, payload: &[u8]) -> Vec<u8> {
    publish(
        Pub {
            qos,
            retain: false,
            dup: false,
            topic,
            id,
            props: Some(props),
        },
        payload,
    )
}

/// PUBACK (4) / PUBREC (5) / PUBREL (6) / PUBCOMP (7); `v5`: reason code and properties.
fn ack(ty: u8, id: u16, v5: Option<(u8, Option<Pr>)>) -> Vec<u8> {
    let b0 = ty << 4 | if ty == PUBREL { 2 } else { 0 };
    let mut b = B::new().u16(id);
    if let Some((reason, props)) = v5 {
        b = b.u8(reason);
        if let Some(p) = props {
            b = b.props(&p);
        }
    }
    pkt(b0, &b.0)
}

fn subscribe(v5: Option<Pr>, id: u16, filters: &[(&str, u8)]) -> Vec<u8> {
    let mut b = B::new().u16(id);
    if let Some(p) = v5 {
        b = b.props(&p);
    }
    for (f, opts) in filters {
        b = b.s(f).u8(*opts);
    }
    pkt(0x82, &b.0)
}

fn suback(v5: Option<Pr>, id: u16, codes: &[u8]) -> Vec<u8> {
    let mut b = B::new().u16(id);
    if let Some(p) = v5 {
        b = b.props(&p);
    }
    pkt(0x90, &b.raw(codes).0)
}

fn unsubscribe(v5: bool, id: u16, filters: &[&str]) -> Vec<u8> {
    let mut b = B::new().u16(id);
    if v5 {
        b = b.props(&Pr::new());
    }
    for f in filters {
        b = b.s(f);
    }
    pkt(0xA2, &b.0)
}

fn unsuback(v5: Option<&[u8]>, id: u16) -> Vec<u8> {
    let mut b = B::new().u16(id);
    if let Some(codes) = v5 {
        b = b.props(&Pr::new()).raw(codes);
    }
    pkt(0xB0, &b.0)
}

fn pingreq() -> Vec<u8> {
    vec![0xC0, 0]
}
fn pingresp() -> Vec<u8> {
    vec![0xD0, 0]
}

fn disconnect(v5: Option<(u8, Pr)>) -> Vec<u8> {
    match v5 {
        None => vec![0xE0, 0],
        Some((reason, p)) => pkt(0xE0, &B::new().u8(reason).props(&p).0),
    }
}

fn auth(reason: u8, p: Pr) -> Vec<u8> {
    pkt(0xF0, &B::new().u8(reason).props(&p).0)
}

fn body(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Harness

fn conn() -> ConnRef {
    ConnRef {
        id: ConnId(9),
        pid: Some(77),
        local: "127.0.0.1:1883".parse().unwrap(),
        peer: "127.0.0.1:50000".parse().unwrap(),
    }
}

/// Decodes `steps`, each data step cut into pieces of the lengths `cuts(step, len)` returns.
fn run_with(
    steps: &[Step],
    cuts: &mut dyn FnMut(usize, usize) -> Vec<usize>,
) -> (Vec<BrokerEvent>, DecoderStats, MqttDecoder) {
    testkit::run_with(&conn(), MqttDecoder::new(), steps, cuts)
}

impl Bounded for MqttDecoder {
    fn assert_bounded(&self) {
        let dec = self;
        for f in &dec.framers {
            assert!(
                f.buf.len() <= WINDOW + DRAIN,
                "buffered {} > {WINDOW} + {DRAIN}",
                f.buf.len()
            );
        }
    }
}

fn run(steps: &[Step]) -> (Vec<BrokerEvent>, DecoderStats, MqttDecoder) {
    run_with(steps, &mut |_, len| vec![len])
}

/// See [`testkit::check`].
fn check(steps: &[Step]) -> (Vec<BrokerEvent>, DecoderStats) {
    testkit::check(&conn(), MqttDecoder::new, steps)
}

fn ev(k: usize, dir: Direction, kind: EventKind, method: &'static str) -> BrokerEvent {
    let mut e = BrokerEvent::new(ts(k), System::Mqtt, kind, conn(), dir);
    e.method = Some(method);
    e
}

/// An event on a connection whose client id is `client_id`.
fn evc(k: usize, dir: Direction, kind: EventKind, method: &'static str, cid: &str) -> BrokerEvent {
    BrokerEvent {
        client_id: Some(cid.into()),
        ..ev(k, dir, kind, method)
    }
}

fn topic(t: &str) -> Option<Destination> {
    Some(Destination {
        topic: Some(t.into()),
        ..Default::default()
    })
}

fn attrs(a: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    a.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

fn no_canary(events: &[BrokerEvent], dec: &MqttDecoder) {
    assert!(!format!("{events:?}").contains(CANARY));
    assert!(!format!("{dec:?}").contains(CANARY));
}

// ---------------------------------------------------------------------------------------------
// Byte literals (each also checked against the encoders, so the scripts below are right too)

/// 3.1.1 CONNECT: clean session, user + password, keepalive 60, client id "sensor-1".
const CONNECT_311: &[u8] = b"\x10\x2d\x00\x04MQTT\x04\xc2\x00\x3c\x00\x08sensor-1\
\x00\x05alice\x00\x10canary-Secr3t-pw";
/// 3.1 CONNECT: "MQIsdp" level 3, no login, keepalive 30, not clean, will "lwt" = "bye".
const CONNECT_31: &[u8] =
    b"\x10\x1b\x00\x06MQIsdp\x03\x04\x00\x1e\x00\x03old\x00\x03lwt\x00\x03bye";
/// 5.0 CONNECT: properties session expiry 3600, receive maximum 20, topic alias maximum 10,
/// user property region=eu; user + password.
const CONNECT_5: &[u8] = b"\x10\x46\x00\x04MQTT\x05\xc2\x00\x3c\x18\x11\x00\x00\x0e\x10\
\x21\x00\x14\x22\x00\x0a\x26\x00\x06region\x00\x02eu\x00\x08sensor-5\x00\x05alice\
\x00\x10canary-Secr3t-pw";

fn connect_311() -> Vec<u8> {
    Connect::new(4, "sensor-1").login("alice", CANARY).encode()
}
fn connect_31() -> Vec<u8> {
    Connect {
        keepalive: 30,
        clean: false,
        will: Some(("lwt", b"bye")),
        ..Connect::new(3, "old")
    }
    .encode()
}
fn connect_5() -> Vec<u8> {
    Connect {
        props: Pr::new()
            .u32(0x11, 3600)
            .u16(0x21, 20)
            .u16(0x22, 10)
            .user("region", "eu"),
        ..Connect::new(5, "sensor-5").login("alice", CANARY)
    }
    .encode()
}

#[test]
fn encoders_match_byte_literals() {
    assert_eq!(connect_311(), CONNECT_311);
    assert_eq!(connect_31(), CONNECT_31);
    assert_eq!(connect_5(), CONNECT_5);
    assert_eq!(connack(None, false, 0), b"\x20\x02\x00\x00");
    assert_eq!(pub3(1, "a/b", 7, b"hi"), b"\x32\x09\x00\x03a/b\x00\x07hi");
    assert_eq!(ack(PUBREL, 7, None), b"\x62\x02\x00\x07");
    assert_eq!(
        subscribe(None, 1, &[("a/#", 1)]),
        b"\x82\x08\x00\x01\x00\x03a/#\x01"
    );
    assert_eq!(suback(None, 1, &[1, 0x80]), b"\x90\x04\x00\x01\x01\x80");
    assert_eq!(
        pub5(0, "", 0, Pr::new().u16(0x23, 3), b"x"),
        b"\x30\x07\x00\x00\x03\x23\x00\x03x"
    );
    // 5.0 packets of every other type.
    assert_eq!(
        pub5(1, "t", 3, Pr::new().u16(0x23, 1).user("k", "v"), b"x"),
        b"\x32\x11\x00\x01t\x00\x03\x0a\x23\x00\x01\x26\x00\x01k\x00\x01vx"
    );
    assert_eq!(
        ack(PUBACK, 2, Some((0x87, Some(Pr::new().s(0x1F, "no"))))),
        b"\x40\x09\x00\x02\x87\x05\x1f\x00\x02no"
    );
    assert_eq!(ack(PUBREC, 3, Some((0x97, None))), b"\x50\x03\x00\x03\x97");
    assert_eq!(
        subscribe(Some(Pr::new().var(0x0B, 7)), 11, &[("a/#", 0x2d)]),
        b"\x82\x0b\x00\x0b\x02\x0b\x07\x00\x03a/#\x2d"
    );
    assert_eq!(
        suback(Some(Pr::new()), 11, &[1, 0x87]),
        b"\x90\x05\x00\x0b\x00\x01\x87"
    );
    assert_eq!(
        unsubscribe(true, 12, &["a/#"]),
        b"\xa2\x08\x00\x0c\x00\x00\x03a/#"
    );
    assert_eq!(
        unsuback(Some(&[0, 0x11]), 12),
        b"\xb0\x05\x00\x0c\x00\x00\x11"
    );
    assert_eq!(disconnect(Some((0x8E, Pr::new()))), b"\xe0\x02\x8e\x00");
    assert_eq!(
        auth(0x18, Pr::new().s(0x15, "X")),
        b"\xf0\x06\x18\x04\x15\x00\x01X"
    );
    assert_eq!(pingreq(), b"\xc0\x00");
    assert_eq!(pingresp(), b"\xd0\x00");
}

// ---------------------------------------------------------------------------------------------
// Scripts

fn s_connect_311() -> Vec<Step> {
    vec![
        Step::Data(IN, CONNECT_311.to_vec()),
        Step::Data(OUT, b"\x20\x02\x00\x00".to_vec()),
    ]
}

fn s_connect_31() -> Vec<Step> {
    vec![
        Step::Data(IN, CONNECT_31.to_vec()),
        // 3.1 CONNACK: reserved byte, return code 0.
        Step::Data(OUT, b"\x20\x02\x00\x00".to_vec()),
    ]
}

fn s_connect_5() -> Vec<Step> {
    vec![
        Step::Data(IN, CONNECT_5.to_vec()),
        // CONNACK: session present, success; topic alias maximum 10, assigned client id "srv-1",
        // receive maximum 100.
        Step::Data(
            OUT,
            b"\x20\x11\x01\x00\x0e\x22\x00\x0a\x12\x00\x05srv-1\x21\x00\x64".to_vec(),
        ),
    ]
}

fn s_refused_311() -> Vec<Step> {
    vec![
        Step::Data(IN, CONNECT_311.to_vec()),
        // Return code 5: not authorized.
        Step::Data(OUT, b"\x20\x02\x00\x05".to_vec()),
    ]
}

fn s_refused_5() -> Vec<Step> {
    vec![
        Step::Data(IN, CONNECT_5.to_vec()),
        // Reason 0x86 bad user name or password, reason string "denied".
        Step::Data(OUT, b"\x20\x0c\x00\x86\x09\x1f\x00\x06denied".to_vec()),
    ]
}

fn s_anonymous() -> Vec<Step> {
    vec![
        i(&[Connect::new(4, "anon").encode()]),
        o(&[connack(None, false, 0)]),
    ]
}

/// 3.1.1 publishes in both directions with QoS 0/1/2 and their acks, as byte literals.
fn s_publish_311() -> Vec<Step> {
    let mut steps = vec![
        i(&[Connect::new(4, "c").encode()]),
        o(&[connack(None, false, 0)]),
    ];
    steps.extend([
        // 2: QoS 0 "t/0" "zero", then QoS 1 id 1 "t/1" "one".
        Step::Data(
            IN,
            b"\x30\x09\x00\x03t/0zero\x32\x0a\x00\x03t/1\x00\x01one".to_vec(),
        ),
        // 3: PUBACK 1.
        Step::Data(OUT, b"\x40\x02\x00\x01".to_vec()),
        // 4: QoS 2 id 2, retained, "t/2" "two".
        Step::Data(IN, b"\x35\x0a\x00\x03t/2\x00\x02two".to_vec()),
        // 5: PUBREC 2; 6: PUBREL 2; 7: PUBCOMP 2.
        Step::Data(OUT, b"\x50\x02\x00\x02".to_vec()),
        Step::Data(IN, b"\x62\x02\x00\x02".to_vec()),
        Step::Data(OUT, b"\x70\x02\x00\x02".to_vec()),
        // 8: broker delivers QoS 1 id 9 (dup) "t/1" "one"; 9: client PUBACK 9.
        Step::Data(OUT, b"\x3a\x0a\x00\x03t/1\x00\x09one".to_vec()),
        Step::Data(IN, b"\x40\x02\x00\x09".to_vec()),
        // 10: broker delivers QoS 2 id 10; 11: PUBREC; 12: PUBREL; 13: PUBCOMP.
        Step::Data(OUT, b"\x34\x0a\x00\x03t/2\x00\x0atwo".to_vec()),
        Step::Data(IN, b"\x50\x02\x00\x0a".to_vec()),
        Step::Data(OUT, b"\x62\x02\x00\x0a".to_vec()),
        Step::Data(IN, b"\x70\x02\x00\x0a".to_vec()),
        // 14: an empty retained QoS 0 publish (clears the retained message).
        Step::Data(IN, b"\x31\x05\x00\x03t/2".to_vec()),
    ]);
    steps
}

/// 5.0 publishes: properties, topic aliases per direction, failure reason codes.
fn s_publish_5() -> Vec<Step> {
    let mut steps = vec![
        i(&[Connect::new(5, "c5").encode()]),
        o(&[connack(Some(Pr::new()), false, 0)]),
    ];
    steps.extend([
        // 2: QoS 1 id 1 "t/a", alias 1, content type, correlation data (binary), response
        // topic, message expiry, payload format utf-8, user properties.
        i(&[pub5(
            1,
            "t/a",
            1,
            Pr::new()
                .u16(0x23, 1)
                .s(0x03, "application/json")
                .bin(0x09, &[0xDE, 0xAD, 0xBE, 0xEF])
                .s(0x08, "reply/here")
                .u32(0x02, 30)
                .byte(0x01, 1)
                .user(
                    "traceparent",
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                )
                .user("tracestate", "k=v")
                .user("app", "demo"),
            b"{\"n\":1}",
        )]),
        // 3: PUBACK 1, reason omitted (= success).
        o(&[ack(PUBACK, 1, None)]),
        // 4: QoS 0 using alias 1 (empty topic), text correlation data.
        i(&[pub5(
            0,
            "",
            0,
            Pr::new().u16(0x23, 1).bin(0x09, b"req-7"),
            b"again",
        )]),
        // 5: the broker's own alias 1 is another topic (aliases are per direction).
        o(&[pub5(
            0,
            "b/x",
            0,
            Pr::new().u16(0x23, 1).var(0x0B, 4),
            b"d1",
        )]),
        o(&[pub5(0, "", 0, Pr::new().u16(0x23, 1), b"d2")]),
        // 7: unknown alias 2: counted, emitted without a topic.
        i(&[pub5(0, "", 0, Pr::new().u16(0x23, 2), b"lost")]),
        // 8: QoS 1 id 2 refused by the broker: PUBACK 0x87 not authorized, with a reason
        // string.
        i(&[pub5(1, "secret/x", 2, Pr::new(), b"no")]),
        o(&[ack(
            PUBACK,
            2,
            Some((0x87, Some(Pr::new().s(0x1F, "acl denied")))),
        )]),
        // 10: QoS 2 id 3 refused at PUBREC 0x97 quota exceeded (the flow ends there).
        i(&[pub5(2, "q/x", 3, Pr::new(), b"q")]),
        o(&[ack(PUBREC, 3, Some((0x97, None)))]),
        // 12: QoS 2 id 4 accepted: PUBREC 0x00 (no properties), PUBREL, PUBCOMP.
        i(&[pub5(2, "q/y", 4, Pr::new(), b"q2")]),
        o(&[ack(PUBREC, 4, Some((0, None)))]),
        i(&[ack(PUBREL, 4, None)]),
        o(&[ack(PUBCOMP, 4, Some((0, Some(Pr::new()))))]),
        // 16: 0x10 "no matching subscribers" is a success code.
        i(&[pub5(1, "nobody", 5, Pr::new(), b"x")]),
        o(&[ack(PUBACK, 5, Some((0x10, None)))]),
    ]);
    steps
}

fn s_subscribe_311() -> Vec<Step> {
    vec![
        i(&[Connect::new(4, "c").encode()]),
        o(&[connack(None, false, 0)]),
        // 2: SUBSCRIBE id 3: "a/+" QoS 1, "$share/g1/jobs/#" QoS 2, "forbidden/#" QoS 0.
        Step::Data(
            IN,
            b"\x82\x29\x00\x03\x00\x03a/+\x01\x00\x10$share/g1/jobs/#\x02\x00\x0bforbidden/#\x00"
                .to_vec(),
        ),
        // 3: SUBACK: 1, 2, 0x80 failure.
        Step::Data(OUT, b"\x90\x05\x00\x03\x01\x02\x80".to_vec()),
        // 4: UNSUBSCRIBE id 4 "a/+"; 5: UNSUBACK 4.
        Step::Data(IN, b"\xa2\x07\x00\x04\x00\x03a/+".to_vec()),
        Step::Data(OUT, b"\xb0\x02\x00\x04".to_vec()),
    ]
}

fn s_subscribe_5() -> Vec<Step> {
    vec![
        i(&[Connect::new(5, "c5").encode()]),
        o(&[connack(Some(Pr::new()), false, 0)]),
        // 2: subscription id 7; "a/#" QoS 1 no-local + retain-as-published, retain handling
        // 2; "$share/grp/b" QoS 0; "admin/#" QoS 2.
        i(&[subscribe(
            Some(Pr::new().var(0x0B, 7)),
            11,
            &[("a/#", 0b0010_1101), ("$share/grp/b", 0), ("admin/#", 2)],
        )]),
        // 3: SUBACK granted 1, 0, 0x87 not authorized.
        o(&[suback(Some(Pr::new()), 11, &[1, 0, 0x87])]),
        // 4: UNSUBSCRIBE "a/#", "zzz"; 5: UNSUBACK 0x00, 0x11 (no subscription existed).
        i(&[unsubscribe(true, 12, &["a/#", "zzz"])]),
        o(&[unsuback(Some(&[0x00, 0x11]), 12)]),
        // 6: UNSUBSCRIBE "admin/#" refused 0x87.
        i(&[unsubscribe(true, 13, &["admin/#"])]),
        o(&[unsuback(Some(&[0x87]), 13)]),
    ]
}

fn s_ping_disconnect_311() -> Vec<Step> {
    vec![
        i(&[Connect::new(4, "c").encode()]),
        o(&[connack(None, false, 0)]),
        Step::Data(IN, b"\xc0\x00".to_vec()),
        Step::Data(OUT, b"\xd0\x00".to_vec()),
        Step::Data(IN, b"\xe0\x00".to_vec()),
        Step::End(IN),
        Step::End(OUT),
    ]
}

fn s_disconnect_5() -> Vec<Step> {
    vec![
        i(&[Connect::new(5, "c5").encode()]),
        o(&[connack(Some(Pr::new()), false, 0)]),
        // 2: client DISCONNECT 0x04 (with will), session expiry 0.
        i(&[disconnect(Some((0x04, Pr::new().u32(0x11, 0))))]),
        // 3: server DISCONNECT 0x8E session taken over, reason string.
        o(&[disconnect(Some((0x8E, Pr::new().s(0x1F, "taken over"))))]),
        // 4: a bare DISCONNECT (reason omitted = 0).
        Step::Data(IN, b"\xe0\x00".to_vec()),
    ]
}

/// 5.0 enhanced authentication: CONNECT with a method, AUTH continue round, CONNACK.
fn s_enhanced_auth() -> Vec<Step> {
    let connect = Connect {
        props: Pr::new()
            .s(0x15, "SCRAM-SHA-1")
            .bin(0x16, b"client-first-canary-Secr3t-pw"),
        ..Connect::new(5, "scram")
    };
    vec![
        i(&[connect.encode()]),
        o(&[auth(
            0x18,
            Pr::new().s(0x15, "SCRAM-SHA-1").bin(0x16, b"server-first"),
        )]),
        i(&[auth(
            0x18,
            Pr::new()
                .s(0x15, "SCRAM-SHA-1")
                .bin(0x16, CANARY.as_bytes()),
        )]),
        o(&[connack(
            Some(Pr::new().s(0x15, "SCRAM-SHA-1").bin(0x16, b"server-final")),
            false,
            0,
        )]),
    ]
}

fn session_311_publishes() -> Vec<Step> {
    vec![
        // 4: QoS 0 and QoS 1 in one segment.
        i(&[
            pub3(0, "a/b", 0, &body(20, 0)),
            pub3(1, "c/1", 2, &body(30, 1)),
        ]),
        o(&[ack(PUBACK, 2, None)]),            // 5
        i(&[pub3(2, "d/x", 3, &body(40, 2))]), // 6
        o(&[ack(PUBREC, 3, None)]),            // 7
        i(&[ack(PUBREL, 3, None)]),            // 8
        o(&[ack(PUBCOMP, 3, None)]),           // 9
        // 10: the broker delivers all three (QoS 0 and 1 in one segment).
        o(&[
            pub3(0, "a/b", 0, &body(20, 0)),
            pub3(1, "c/1", 1, &body(30, 1)),
        ]),
        i(&[ack(PUBACK, 1, None)]),            // 11
        o(&[pub3(2, "d/x", 2, &body(40, 2))]), // 12
        i(&[ack(PUBREC, 2, None)]),            // 13
        o(&[ack(PUBREL, 2, None)]),            // 14
        i(&[ack(PUBCOMP, 2, None)]),           // 15
    ]
}

/// A realistic 3.1.1 session.
fn s_session_311() -> Vec<Step> {
    let mut steps = vec![
        i(&[connect_311()]),                                             // 0
        o(&[connack(None, false, 0)]),                                   // 1
        i(&[subscribe(None, 1, &[("a/b", 0), ("c/+", 1), ("d/#", 2)])]), // 2
        o(&[suback(None, 1, &[0, 1, 2])]),                               // 3
    ];
    steps.extend(session_311_publishes());
    steps.extend([
        // 16: retained QoS 1.
        i(&[publish(
            Pub {
                qos: 1,
                retain: true,
                dup: false,
                topic: "status/sensor-1",
                id: 4,
                props: None,
            },
            b"online",
        )]),
        o(&[ack(PUBACK, 4, None)]),            // 17
        i(&[unsubscribe(false, 5, &["c/+"])]), // 18
        o(&[unsuback(None, 5)]),               // 19
        i(&[pingreq()]),                       // 20
        o(&[pingresp()]),                      // 21
        i(&[disconnect(None)]),                // 22
        Step::End(IN),                         // 23
        Step::End(OUT),                        // 24
    ]);
    steps
}

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// A realistic 5.0 session.
fn s_session_5() -> Vec<Step> {
    let tp = || Pr::new().user("traceparent", TRACEPARENT);
    vec![
        i(&[connect_5()]), // 0
        o(&[connack(
            Some(Pr::new().u16(0x22, 10).u16(0x21, 100)),
            false,
            0,
        )]), // 1
        i(&[subscribe(
            Some(Pr::new()),
            1,
            &[("a/b", 0), ("c/+", 1 | 0x04), ("d/#", 2)],
        )]), // 2
        o(&[suback(Some(Pr::new()), 1, &[0, 1, 2])]), // 3
        // 4: QoS 0 setting alias 1 = "a/b", with traceparent; then reusing it.
        i(&[
            pub5(0, "a/b", 0, tp().u16(0x23, 1), &body(20, 0)),
            pub5(0, "", 0, Pr::new().u16(0x23, 1), &body(21, 0)),
        ]),
        // 5: QoS 1 with traceparent; PUBACK (reason omitted).
        i(&[pub5(1, "c/1", 2, tp(), &body(30, 1))]),
        o(&[ack(PUBACK, 2, None)]), // 6
        // 7: QoS 2; PUBREC, PUBREL, PUBCOMP with explicit success codes.
        i(&[pub5(2, "d/x", 3, tp(), &body(40, 2))]),
        o(&[ack(PUBREC, 3, Some((0, None)))]),  // 8
        i(&[ack(PUBREL, 3, Some((0, None)))]),  // 9
        o(&[ack(PUBCOMP, 3, Some((0, None)))]), // 10
        // 11: deliveries with the broker's alias 1 = "c/1".
        o(&[
            pub5(0, "a/b", 0, tp(), &body(20, 0)),
            pub5(1, "c/1", 1, tp().u16(0x23, 1), &body(30, 1)),
        ]),
        i(&[ack(PUBACK, 1, None)]),                            // 12
        o(&[pub5(2, "", 2, tp().u16(0x23, 1), &body(40, 2))]), // 13
        i(&[ack(PUBREC, 2, None)]),                            // 14
        o(&[ack(PUBREL, 2, None)]),                            // 15
        i(&[ack(PUBCOMP, 2, None)]),                           // 16
        // 17: retained QoS 1.
        i(&[publish(
            Pub {
                qos: 1,
                retain: true,
                dup: false,
                topic: "status/sensor-5",
                id: 4,
                props: Some(Pr::new()),
            },
            b"online",
        )]),
        o(&[ack(PUBACK, 4, None)]),             // 18
        i(&[unsubscribe(true, 5, &["c/+"])]),   // 19
        o(&[unsuback(Some(&[0]), 5)]),          // 20
        i(&[pingreq()]),                        // 21
        o(&[pingresp()]),                       // 22
        i(&[disconnect(Some((0, Pr::new())))]), // 23
        Step::End(IN),                          // 24
        Step::End(OUT),                         // 25
    ]
}

/// A PUBLISH cut by a gap in its payload, then more packets.
fn s_gap() -> Vec<Step> {
    let a = pub3(1, "big/a", 1, &[b'x'; 300]);
    let (cut, gap) = (100, 50);
    vec![
        i(&[Connect::new(4, "g").encode()]),
        o(&[connack(None, false, 0)]),
        i(&[a[..cut].to_vec()]),
        Step::Gap(IN, gap as u32),
        i(&[
            a[cut + gap..].to_vec(),
            pub3(1, "after/1", 2, b"first"),
            pub3(0, "after/2", 0, b"second"),
            pingreq(),
        ]),
        o(&[ack(PUBACK, 2, None)]),
    ]
}

/// Between two gaps, a lone PUBLISH: nothing follows it to prove it, the second gap does.
fn s_gap_flush() -> Vec<Step> {
    vec![
        i(&[Connect::new(4, "f").encode()]),
        Step::Gap(IN, 10),
        // 2: the tail of a lost packet, then a whole PUBLISH ending where the gap starts.
        i(&[b"zzzz".to_vec(), pub3(1, "lone", 1, b"L")]),
        Step::Gap(IN, 10),
        // 4: a PUBLISH (proven by the header after it), then a packet cut by the end.
        i(&[pub3(0, "next", 0, b"N"), vec![0x30, 0x7F, 0x00]]),
        Step::End(IN),
    ]
}

/// Joined in the middle of a delivery's payload (no CONNECT seen).
fn s_mid_stream() -> Vec<Step> {
    let first = pub3(0, "x/y", 0, &[b'0'; 200]);
    vec![
        o(&[
            first[first.len() - 120..].to_vec(),
            pub3(1, "x/y", 5, b"next"),
            pub3(0, "x/z", 0, b"last"),
        ]),
        // The client's only packet: proven by the end of its direction.
        i(&[ack(PUBACK, 5, None)]),
        Step::End(IN),
        Step::End(OUT),
    ]
}

/// Joined mid-stream; 5.0 shapes reveal the version.
fn s_mid_stream_v5() -> Vec<Step> {
    vec![
        i(&[pub5(1, "m/5", 8, Pr::new(), b"p"), pingreq()]),
        o(&[ack(PUBACK, 8, Some((0x10, None))), pingresp()]),
        i(&[pub5(1, "m/6", 9, Pr::new().s(0x03, "text/plain"), b"q")]),
        o(&[ack(PUBACK, 9, None)]),
        Step::End(IN),
        Step::End(OUT),
    ]
}

/// Broken packets in a synced 3.1.1 stream, each followed by a good one.
fn s_broken() -> Vec<Step> {
    vec![
        i(&[Connect::new(4, "b").encode()]),
        o(&[connack(None, false, 0)]),
        // 2: 5-byte remaining length.
        i(&[
            vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F],
            pub3(0, "ok/1", 0, b"1"),
            pingreq(),
        ]),
        // 3: reserved type 0 and a PUBREL with wrong flags.
        i(&[
            vec![0x00, 0x00, 0x60, 0x02, 0x00, 0x01],
            pub3(0, "ok/2", 0, b"2"),
            pingreq(),
        ]),
        // 4: SUBSCRIBE requesting QoS 3 (well framed, undecodable).
        i(&[
            subscribe(None, 1, &[("bad", 3)]),
            pub3(0, "ok/3", 0, b"3"),
            pingreq(),
        ]),
        // 5: PUBLISH whose topic length runs past the packet.
        i(&[
            vec![0x30, 0x04, 0x00, 0x09, b'a', b'b'],
            pub3(0, "ok/4", 0, b"4"),
            pingreq(),
        ]),
        // 6: a PUBACK from the client with 3.1.1's wrong length.
        i(&[
            vec![0x40, 0x03, 0x00, 0x01, 0x00],
            pub3(0, "ok/5", 0, b"5"),
            pingreq(),
        ]),
        // 7: a CONNACK sent by the client (wrong direction).
        i(&[
            vec![0x20, 0x02, 0x00, 0x00],
            pub3(0, "ok/6", 0, b"6"),
            pingreq(),
        ]),
    ]
}

/// Packets over MAX_PACKET: a PUBLISH (event without fingerprint) and a SUBSCRIBE (skipped).
fn s_oversize() -> Vec<Step> {
    let big_payload = vec![b'z'; MAX_PACKET + 100];
    let filters: Vec<(String, u8)> = (0..100_000).map(|k| (format!("f/{k:05}/#"), 1)).collect();
    let filters: Vec<(&str, u8)> = filters.iter().map(|(f, q)| (f.as_str(), *q)).collect();
    vec![
        i(&[Connect::new(4, "o").encode()]),
        o(&[connack(None, false, 0)]),
        i(&[
            pub3(1, "big/one", 1, &big_payload),
            subscribe(None, 2, &filters),
            pub3(0, "small", 0, b"s"),
        ]),
        o(&[ack(PUBACK, 1, None)]),
    ]
}

fn scripts() -> Vec<(&'static str, Vec<Step>)> {
    vec![
        ("connect_311", s_connect_311()),
        ("connect_31", s_connect_31()),
        ("connect_5", s_connect_5()),
        ("refused_311", s_refused_311()),
        ("refused_5", s_refused_5()),
        ("anonymous", s_anonymous()),
        ("publish_311", s_publish_311()),
        ("publish_5", s_publish_5()),
        ("subscribe_311", s_subscribe_311()),
        ("subscribe_5", s_subscribe_5()),
        ("ping_disconnect_311", s_ping_disconnect_311()),
        ("disconnect_5", s_disconnect_5()),
        ("enhanced_auth", s_enhanced_auth()),
        ("session_311", s_session_311()),
        ("session_5", s_session_5()),
        ("gap", s_gap()),
        ("gap_flush", s_gap_flush()),
        ("mid_stream", s_mid_stream()),
        ("mid_stream_v5", s_mid_stream_v5()),
        ("broken", s_broken()),
    ]
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn looks_like_mqtt_connects() {
    assert_eq!(looks_like_mqtt(b""), None);
    assert_eq!(looks_like_mqtt(b"\x10"), None);
    assert_eq!(looks_like_mqtt(b"\x10\x80"), None);
    assert_eq!(looks_like_mqtt(b"\x10\x33\x00\x04MQ"), None);
    assert_eq!(looks_like_mqtt(CONNECT_311), Some(true));
    assert_eq!(looks_like_mqtt(&CONNECT_311[..8]), Some(true));
    assert_eq!(looks_like_mqtt(CONNECT_31), Some(true));
    assert_eq!(looks_like_mqtt(&CONNECT_31[..9]), None);
    assert_eq!(looks_like_mqtt(CONNECT_5), Some(true));
    // Long remaining lengths (2..4 bytes).
    assert_eq!(looks_like_mqtt(b"\x10\xff\xff\x7f\x00\x04MQTT"), Some(true));
    // A 5-byte length, another packet type, another protocol name.
    assert_eq!(looks_like_mqtt(b"\x10\xff\xff\xff\xff\x01"), Some(false));
    assert_eq!(looks_like_mqtt(b"\x30\x05\x00\x04MQTT"), Some(false));
    assert_eq!(looks_like_mqtt(b"\x10\x0c\x00\x04AMQP"), Some(false));
    assert_eq!(looks_like_mqtt(b"AMQP\x00\x00\x09\x01"), Some(false));
}

fn connect_311_event(k: usize) -> BrokerEvent {
    BrokerEvent {
        user: Some("alice".into()),
        attrs: attrs(&[
            ("protocol_version", "3.1.1"),
            ("keepalive", "60"),
            ("clean_start", "true"),
        ]),
        ..evc(k, IN, EventKind::Control, "CONNECT", "sensor-1")
    }
}

#[test]
fn connect_and_connack_311() {
    let (events, stats) = check(&s_connect_311());
    assert_eq!(
        events,
        vec![
            connect_311_event(0),
            BrokerEvent {
                user: Some("alice".into()),
                mechanism: Some("password".into()),
                outcome: Some(Outcome::Success),
                reply_code: Some(0),
                attrs: attrs(&[("session_present", "false")]),
                ..evc(1, OUT, EventKind::Auth, "CONNACK", "sensor-1")
            },
        ]
    );
    assert_eq!(
        stats,
        DecoderStats {
            frames: 2,
            bytes: (CONNECT_311.len() + 4) as u64,
            ..Default::default()
        }
    );
    let (_, _, dec) = run(&s_connect_311());
    no_canary(&events, &dec);
    assert_eq!(dec.session.version(), Some(4));
}

#[test]
fn connect_31_with_will_and_no_login() {
    let (events, _) = check(&s_connect_31());
    assert_eq!(
        events,
        vec![
            BrokerEvent {
                attrs: attrs(&[
                    ("protocol_version", "3.1"),
                    ("keepalive", "30"),
                    ("clean_start", "false"),
                    ("will_topic", "lwt"),
                ]),
                ..evc(0, IN, EventKind::Control, "CONNECT", "old")
            },
            BrokerEvent {
                mechanism: Some("anonymous".into()),
                outcome: Some(Outcome::Success),
                reply_code: Some(0),
                attrs: attrs(&[("session_present", "false")]),
                ..evc(1, OUT, EventKind::Auth, "CONNACK", "old")
            },
        ]
    );
}

#[test]
fn connect_and_connack_5_with_properties() {
    let (events, stats) = check(&s_connect_5());
    assert_eq!(
        events,
        vec![
            BrokerEvent {
                user: Some("alice".into()),
                attrs: attrs(&[
                    ("protocol_version", "5.0"),
                    ("keepalive", "60"),
                    ("clean_start", "true"),
                    ("session_expiry", "3600"),
                    ("receive_maximum", "20"),
                    ("topic_alias_maximum", "10"),
                ]),
                props: Some(MessageProps {
                    headers: vec![("region".into(), "eu".into())],
                    ..Default::default()
                }),
                ..evc(0, IN, EventKind::Control, "CONNECT", "sensor-5")
            },
            // The broker assigned a client id: it names the connection from here on.
            BrokerEvent {
                user: Some("alice".into()),
                mechanism: Some("password".into()),
                outcome: Some(Outcome::Success),
                reply_code: Some(0),
                attrs: attrs(&[
                    ("session_present", "true"),
                    ("topic_alias_maximum", "10"),
                    ("receive_maximum", "100"),
                ]),
                ..evc(1, OUT, EventKind::Auth, "CONNACK", "srv-1")
            },
        ]
    );
    assert_eq!((stats.frames, stats.malformed), (2, 0));
    let (_, _, dec) = run(&s_connect_5());
    no_canary(&events, &dec);
}

#[test]
fn refused_logins_are_auth_failures() {
    let (events, _) = check(&s_refused_311());
    assert_eq!(
        events[1],
        BrokerEvent {
            user: Some("alice".into()),
            mechanism: Some("password".into()),
            outcome: Some(Outcome::Failure),
            reply_code: Some(5),
            attrs: attrs(&[("session_present", "false")]),
            ..evc(1, OUT, EventKind::Auth, "CONNACK", "sensor-1")
        }
    );
    let (events, _) = check(&s_refused_5());
    assert_eq!(
        events[1],
        BrokerEvent {
            user: Some("alice".into()),
            mechanism: Some("password".into()),
            outcome: Some(Outcome::Failure),
            reply_code: Some(0x86),
            reply_text: Some("denied".into()),
            attrs: attrs(&[("session_present", "false")]),
            ..evc(1, OUT, EventKind::Auth, "CONNACK", "sensor-5")
        }
    );
    // 3.1.1 code 4: bad user name or password.
    let mut steps = s_refused_311();
    steps[1] = Step::Data(OUT, b"\x20\x02\x00\x04".to_vec());
    let (events, _) = check(&steps);
    assert_eq!(
        (events[1].outcome, events[1].reply_code),
        (Some(Outcome::Failure), Some(4))
    );
    let (_, _, dec) = run(&steps);
    no_canary(&events, &dec);
}

#[test]
fn anonymous_login() {
    let (events, _) = check(&s_anonymous());
    assert_eq!(
        events[1],
        BrokerEvent {
            mechanism: Some("anonymous".into()),
            outcome: Some(Outcome::Success),
            reply_code: Some(0),
            attrs: attrs(&[("session_present", "false")]),
            ..evc(1, OUT, EventKind::Auth, "CONNACK", "anon")
        }
    );
    assert_eq!(events[0].user, None);
}

#[test]
fn enhanced_auth_keeps_the_method_not_the_data() {
    let (events, stats) = check(&s_enhanced_auth());
    let scram = Some("SCRAM-SHA-1".to_string());
    let auth_ev = |k, dir| BrokerEvent {
        mechanism: scram.clone(),
        reply_code: Some(0x18),
        ..evc(k, dir, EventKind::Control, "AUTH", "scram")
    };
    assert_eq!(
        events,
        vec![
            BrokerEvent {
                attrs: attrs(&[
                    ("protocol_version", "5.0"),
                    ("keepalive", "60"),
                    ("clean_start", "true"),
                    ("auth_method", "SCRAM-SHA-1"),
                ]),
                ..evc(0, IN, EventKind::Control, "CONNECT", "scram")
            },
            auth_ev(1, OUT),
            auth_ev(2, IN),
            BrokerEvent {
                mechanism: scram.clone(),
                outcome: Some(Outcome::Success),
                reply_code: Some(0),
                attrs: attrs(&[("session_present", "false")]),
                ..evc(3, OUT, EventKind::Auth, "CONNACK", "scram")
            },
        ]
    );
    assert_eq!(stats.frames, 4);
    let (_, _, dec) = run(&s_enhanced_auth());
    no_canary(&events, &dec);
}

/// A Publish/Deliver event.
#[allow(clippy::too_many_arguments)]
fn pub_ev(
    k: usize,
    dir: Direction,
    cid: &str,
    t: Option<&str>,
    qos: u8,
    id: Option<u32>,
    retain: bool,
    dup: bool,
    payload: &[u8],
) -> BrokerEvent {
    let kind = if dir == IN {
        EventKind::Publish
    } else {
        EventKind::Deliver
    };
    BrokerEvent {
        destination: t.and_then(topic),
        qos: Some(qos),
        retain: Some(retain),
        dup: Some(dup),
        packet_id: id,
        body_size: Some(payload.len() as u64),
        fingerprint: Some(Fingerprint::of(payload)),
        ..evc(k, dir, kind, "PUBLISH", cid)
    }
}

/// A PUBACK/PUBREC/PUBREL/PUBCOMP event settling `t` at `qos`.
#[allow(clippy::too_many_arguments)]
fn settle_ev(
    k: usize,
    dir: Direction,
    cid: &str,
    kind: EventKind,
    method: &'static str,
    id: u32,
    t: Option<&str>,
    qos: Option<u8>,
    reply_code: Option<u16>,
) -> BrokerEvent {
    BrokerEvent {
        packet_id: Some(id),
        destination: t.and_then(topic),
        qos,
        reply_code,
        ..evc(k, dir, kind, method, cid)
    }
}

#[test]
fn publish_flows_311() {
    let (events, stats) = check(&s_publish_311());
    let p = |k, dir, t, qos, id, retain, dup, payload: &[u8]| {
        pub_ev(k, dir, "c", Some(t), qos, id, retain, dup, payload)
    };
    let s = |k, dir, kind, method, id, t, qos| {
        settle_ev(k, dir, "c", kind, method, id, Some(t), Some(qos), None)
    };
    use EventKind::{Ack, Confirm, Control};
    assert_eq!(
        events[2..],
        [
            p(2, IN, "t/0", 0, None, false, false, b"zero"),
            p(2, IN, "t/1", 1, Some(1), false, false, b"one"),
            s(3, OUT, Confirm, "PUBACK", 1, "t/1", 1),
            p(4, IN, "t/2", 2, Some(2), true, false, b"two"),
            s(5, OUT, Control, "PUBREC", 2, "t/2", 2),
            s(6, IN, Control, "PUBREL", 2, "t/2", 2),
            s(7, OUT, Confirm, "PUBCOMP", 2, "t/2", 2),
            p(8, OUT, "t/1", 1, Some(9), false, true, b"one"),
            s(9, IN, Ack, "PUBACK", 9, "t/1", 1),
            p(10, OUT, "t/2", 2, Some(10), false, false, b"two"),
            s(11, IN, Control, "PUBREC", 10, "t/2", 2),
            s(12, OUT, Control, "PUBREL", 10, "t/2", 2),
            s(13, IN, Ack, "PUBCOMP", 10, "t/2", 2),
            p(14, IN, "t/2", 0, None, true, false, b""),
        ]
    );
    assert_eq!((stats.frames, stats.malformed, stats.resyncs), (16, 0, 0));
    // Settled flows are forgotten.
    let (_, _, dec) = run(&s_publish_311());
    assert_eq!(dec.session.inflight_len(), 0);
}

#[test]
fn publish_5_properties_aliases_and_reason_codes() {
    let (events, stats) = check(&s_publish_5());
    use EventKind::{Confirm, Control, Nack};
    let props5 = |headers: &[(&str, &str)]| MessageProps {
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    };
    let p = |k, dir, t, qos, id, payload: &[u8]| BrokerEvent {
        props: Some(MessageProps::default()),
        ..pub_ev(k, dir, "c5", t, qos, id, false, false, payload)
    };
    let s = |k, dir, kind, method, id, t, qos, code| {
        settle_ev(
            k,
            dir,
            "c5",
            kind,
            method,
            id,
            Some(t),
            Some(qos),
            Some(code),
        )
    };
    assert_eq!(
        events[2..],
        [
            BrokerEvent {
                props: Some(MessageProps {
                    content_type: Some("application/json".into()),
                    correlation_id: Some("0xdeadbeef".into()),
                    traceparent: Some(
                        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()
                    ),
                    tracestate: Some("k=v".into()),
                    ..props5(&[("app", "demo")])
                }),
                reply_to: Some("reply/here".into()),
                attrs: attrs(&[
                    ("message_expiry", "30"),
                    ("payload_format", "utf-8"),
                    ("topic_alias", "1"),
                ]),
                ..p(2, IN, Some("t/a"), 1, Some(1), b"{\"n\":1}")
            },
            s(3, OUT, Confirm, "PUBACK", 1, "t/a", 1, 0),
            BrokerEvent {
                props: Some(MessageProps {
                    correlation_id: Some("req-7".into()),
                    ..Default::default()
                }),
                attrs: attrs(&[("topic_alias", "1")]),
                ..p(4, IN, Some("t/a"), 0, None, b"again")
            },
            BrokerEvent {
                attrs: attrs(&[("subscription_id", "4"), ("topic_alias", "1")]),
                ..p(5, OUT, Some("b/x"), 0, None, b"d1")
            },
            BrokerEvent {
                attrs: attrs(&[("topic_alias", "1")]),
                ..p(6, OUT, Some("b/x"), 0, None, b"d2")
            },
            BrokerEvent {
                attrs: attrs(&[("topic_alias", "2")]),
                ..p(7, IN, None, 0, None, b"lost")
            },
            p(8, IN, Some("secret/x"), 1, Some(2), b"no"),
            BrokerEvent {
                reply_text: Some("acl denied".into()),
                ..s(9, OUT, Nack, "PUBACK", 2, "secret/x", 1, 0x87)
            },
            p(10, IN, Some("q/x"), 2, Some(3), b"q"),
            s(11, OUT, Nack, "PUBREC", 3, "q/x", 2, 0x97),
            p(12, IN, Some("q/y"), 2, Some(4), b"q2"),
            s(13, OUT, Control, "PUBREC", 4, "q/y", 2, 0),
            s(14, IN, Control, "PUBREL", 4, "q/y", 2, 0),
            s(15, OUT, Confirm, "PUBCOMP", 4, "q/y", 2, 0),
            p(16, IN, Some("nobody"), 1, Some(5), b"x"),
            s(17, OUT, Confirm, "PUBACK", 5, "nobody", 1, 0x10),
        ]
    );
    // The unknown alias is the one malformed packet; framing never lost sync.
    assert_eq!((stats.malformed, stats.resyncs, stats.frames), (1, 0, 18));
}

#[test]
fn subscribe_suback_unsubscribe_311() {
    let (events, stats) = check(&s_subscribe_311());
    let sub = |t: &str, queue: Option<&str>, qos| BrokerEvent {
        destination: Some(Destination {
            topic: Some(t.into()),
            queue: queue.map(Into::into),
            ..Default::default()
        }),
        qos: Some(qos),
        packet_id: Some(3),
        ..evc(2, IN, EventKind::Subscribe, "SUBSCRIBE", "c")
    };
    assert_eq!(
        events[2..],
        [
            sub("a/+", None, 1),
            sub("jobs/#", Some("g1"), 2),
            sub("forbidden/#", None, 0),
            BrokerEvent {
                packet_id: Some(3),
                attrs: attrs(&[("granted", "1,2,128")]),
                ..evc(3, OUT, EventKind::Control, "SUBACK", "c")
            },
            BrokerEvent {
                packet_id: Some(3),
                reply_code: Some(0x80),
                destination: topic("forbidden/#"),
                ..evc(3, OUT, EventKind::Error, "SUBACK", "c")
            },
            BrokerEvent {
                packet_id: Some(4),
                destination: topic("a/+"),
                ..evc(4, IN, EventKind::Unsubscribe, "UNSUBSCRIBE", "c")
            },
            BrokerEvent {
                packet_id: Some(4),
                ..evc(5, OUT, EventKind::Control, "UNSUBACK", "c")
            },
        ]
    );
    assert_eq!((stats.frames, stats.malformed), (6, 0));
}

#[test]
fn subscribe_options_and_failures_5() {
    let (events, _) = check(&s_subscribe_5());
    let sub = |d: Destination, qos, opts: [&str; 3]| BrokerEvent {
        destination: Some(d),
        qos: Some(qos),
        packet_id: Some(11),
        attrs: attrs(&[
            ("no_local", opts[0]),
            ("retain_as_published", opts[1]),
            ("retain_handling", opts[2]),
            ("subscription_id", "7"),
        ]),
        ..evc(2, IN, EventKind::Subscribe, "SUBSCRIBE", "c5")
    };
    let t = |t: &str| topic(t).unwrap();
    let shared = Destination {
        queue: Some("grp".into()),
        topic: Some("b".into()),
        ..Default::default()
    };
    let unsub = |k, id, f: &str| BrokerEvent {
        packet_id: Some(id),
        destination: topic(f),
        ..evc(k, IN, EventKind::Unsubscribe, "UNSUBSCRIBE", "c5")
    };
    assert_eq!(
        events[2..],
        [
            sub(t("a/#"), 1, ["true", "true", "2"]),
            sub(shared, 0, ["false", "false", "0"]),
            sub(t("admin/#"), 2, ["false", "false", "0"]),
            BrokerEvent {
                packet_id: Some(11),
                attrs: attrs(&[("granted", "1,0,135")]),
                ..evc(3, OUT, EventKind::Control, "SUBACK", "c5")
            },
            BrokerEvent {
                packet_id: Some(11),
                reply_code: Some(0x87),
                destination: topic("admin/#"),
                ..evc(3, OUT, EventKind::Error, "SUBACK", "c5")
            },
            unsub(4, 12, "a/#"),
            unsub(4, 12, "zzz"),
            BrokerEvent {
                packet_id: Some(12),
                attrs: attrs(&[("reasons", "0,17")]),
                ..evc(5, OUT, EventKind::Control, "UNSUBACK", "c5")
            },
            unsub(6, 13, "admin/#"),
            BrokerEvent {
                packet_id: Some(13),
                attrs: attrs(&[("reasons", "135")]),
                ..evc(7, OUT, EventKind::Control, "UNSUBACK", "c5")
            },
            BrokerEvent {
                packet_id: Some(13),
                reply_code: Some(0x87),
                destination: topic("admin/#"),
                ..evc(7, OUT, EventKind::Error, "UNSUBACK", "c5")
            },
        ]
    );
}

#[test]
fn ping_is_counted_without_events_and_disconnect_311() {
    let (events, stats) = check(&s_ping_disconnect_311());
    assert_eq!(
        events[2..],
        [evc(4, IN, EventKind::Control, "DISCONNECT", "c")]
    );
    assert_eq!(
        stats,
        DecoderStats {
            frames: 5,
            bytes: (Connect::new(4, "c").encode().len() + 4 + 6) as u64,
            ..Default::default()
        }
    );
}

#[test]
fn disconnect_reasons_5() {
    let (events, _) = check(&s_disconnect_5());
    assert_eq!(
        events[2..],
        [
            BrokerEvent {
                reply_code: Some(4),
                attrs: attrs(&[("session_expiry", "0")]),
                ..evc(2, IN, EventKind::Control, "DISCONNECT", "c5")
            },
            BrokerEvent {
                reply_code: Some(0x8E),
                reply_text: Some("taken over".into()),
                ..evc(3, OUT, EventKind::Error, "DISCONNECT", "c5")
            },
            BrokerEvent {
                reply_code: Some(0),
                ..evc(4, IN, EventKind::Control, "DISCONNECT", "c5")
            },
        ]
    );
}

#[test]
fn realistic_session_311() {
    let steps = s_session_311();
    let (events, stats) = check(&steps);
    let cid = "sensor-1";
    let sub = |t, qos| BrokerEvent {
        destination: topic(t),
        qos: Some(qos),
        packet_id: Some(1),
        ..evc(2, IN, EventKind::Subscribe, "SUBSCRIBE", cid)
    };
    let p = |k, dir, t, qos, id, n, seed| {
        pub_ev(k, dir, cid, Some(t), qos, id, false, false, &body(n, seed))
    };
    let s = |k, dir, kind, method, id, t, qos| {
        settle_ev(k, dir, cid, kind, method, id, Some(t), Some(qos), None)
    };
    use EventKind::{Ack, Confirm, Control};
    let want = vec![
        connect_311_event(0),
        BrokerEvent {
            user: Some("alice".into()),
            mechanism: Some("password".into()),
            outcome: Some(Outcome::Success),
            reply_code: Some(0),
            attrs: attrs(&[("session_present", "false")]),
            ..evc(1, OUT, EventKind::Auth, "CONNACK", cid)
        },
        sub("a/b", 0),
        sub("c/+", 1),
        sub("d/#", 2),
        BrokerEvent {
            packet_id: Some(1),
            attrs: attrs(&[("granted", "0,1,2")]),
            ..evc(3, OUT, Control, "SUBACK", cid)
        },
        p(4, IN, "a/b", 0, None, 20, 0),
        p(4, IN, "c/1", 1, Some(2), 30, 1),
        s(5, OUT, Confirm, "PUBACK", 2, "c/1", 1),
        p(6, IN, "d/x", 2, Some(3), 40, 2),
        s(7, OUT, Control, "PUBREC", 3, "d/x", 2),
        s(8, IN, Control, "PUBREL", 3, "d/x", 2),
        s(9, OUT, Confirm, "PUBCOMP", 3, "d/x", 2),
        p(10, OUT, "a/b", 0, None, 20, 0),
        p(10, OUT, "c/1", 1, Some(1), 30, 1),
        s(11, IN, Ack, "PUBACK", 1, "c/1", 1),
        p(12, OUT, "d/x", 2, Some(2), 40, 2),
        s(13, IN, Control, "PUBREC", 2, "d/x", 2),
        s(14, OUT, Control, "PUBREL", 2, "d/x", 2),
        s(15, IN, Ack, "PUBCOMP", 2, "d/x", 2),
        pub_ev(
            16,
            IN,
            cid,
            Some("status/sensor-1"),
            1,
            Some(4),
            true,
            false,
            b"online",
        ),
        s(17, OUT, Confirm, "PUBACK", 4, "status/sensor-1", 1),
        BrokerEvent {
            packet_id: Some(5),
            destination: topic("c/+"),
            ..evc(18, IN, EventKind::Unsubscribe, "UNSUBSCRIBE", cid)
        },
        BrokerEvent {
            packet_id: Some(5),
            ..evc(19, OUT, Control, "UNSUBACK", cid)
        },
        evc(22, IN, Control, "DISCONNECT", cid),
    ];
    assert_eq!(events, want);
    let bytes: usize = steps
        .iter()
        .map(|s| if let Step::Data(_, b) = s { b.len() } else { 0 })
        .sum();
    assert_eq!(
        stats,
        DecoderStats {
            frames: 25,
            bytes: bytes as u64,
            ..Default::default()
        }
    );
    let (_, _, dec) = run(&steps);
    no_canary(&events, &dec);
}

#[test]
fn realistic_session_5() {
    let steps = s_session_5();
    let (events, stats) = check(&steps);
    let cid = "sensor-5";
    let traced = || {
        Some(MessageProps {
            traceparent: Some(TRACEPARENT.into()),
            ..Default::default()
        })
    };
    let sub = |t, qos, no_local| BrokerEvent {
        destination: topic(t),
        qos: Some(qos),
        packet_id: Some(1),
        attrs: attrs(&[
            ("no_local", no_local),
            ("retain_as_published", "false"),
            ("retain_handling", "0"),
        ]),
        ..evc(2, IN, EventKind::Subscribe, "SUBSCRIBE", cid)
    };
    let p = |k, dir, t, qos, id, n, seed| BrokerEvent {
        props: traced(),
        ..pub_ev(k, dir, cid, Some(t), qos, id, false, false, &body(n, seed))
    };
    let aliased = |e: BrokerEvent| BrokerEvent {
        attrs: attrs(&[("topic_alias", "1")]),
        ..e
    };
    let s = |k, dir, kind, method, id, t, qos| {
        settle_ev(k, dir, cid, kind, method, id, Some(t), Some(qos), Some(0))
    };
    use EventKind::{Ack, Confirm, Control};
    let want = vec![
        BrokerEvent {
            user: Some("alice".into()),
            attrs: attrs(&[
                ("protocol_version", "5.0"),
                ("keepalive", "60"),
                ("clean_start", "true"),
                ("session_expiry", "3600"),
                ("receive_maximum", "20"),
                ("topic_alias_maximum", "10"),
            ]),
            props: Some(MessageProps {
                headers: vec![("region".into(), "eu".into())],
                ..Default::default()
            }),
            ..evc(0, IN, Control, "CONNECT", cid)
        },
        BrokerEvent {
            user: Some("alice".into()),
            mechanism: Some("password".into()),
            outcome: Some(Outcome::Success),
            reply_code: Some(0),
            attrs: attrs(&[
                ("session_present", "false"),
                ("topic_alias_maximum", "10"),
                ("receive_maximum", "100"),
            ]),
            ..evc(1, OUT, EventKind::Auth, "CONNACK", cid)
        },
        sub("a/b", 0, "false"),
        sub("c/+", 1, "true"),
        sub("d/#", 2, "false"),
        BrokerEvent {
            packet_id: Some(1),
            attrs: attrs(&[("granted", "0,1,2")]),
            ..evc(3, OUT, Control, "SUBACK", cid)
        },
        aliased(p(4, IN, "a/b", 0, None, 20, 0)),
        BrokerEvent {
            props: Some(MessageProps::default()),
            ..aliased(p(4, IN, "a/b", 0, None, 21, 0))
        },
        p(5, IN, "c/1", 1, Some(2), 30, 1),
        s(6, OUT, Confirm, "PUBACK", 2, "c/1", 1),
        p(7, IN, "d/x", 2, Some(3), 40, 2),
        s(8, OUT, Control, "PUBREC", 3, "d/x", 2),
        s(9, IN, Control, "PUBREL", 3, "d/x", 2),
        s(10, OUT, Confirm, "PUBCOMP", 3, "d/x", 2),
        p(11, OUT, "a/b", 0, None, 20, 0),
        aliased(p(11, OUT, "c/1", 1, Some(1), 30, 1)),
        s(12, IN, Ack, "PUBACK", 1, "c/1", 1),
        aliased(p(13, OUT, "c/1", 2, Some(2), 40, 2)),
        s(14, IN, Control, "PUBREC", 2, "c/1", 2),
        s(15, OUT, Control, "PUBREL", 2, "c/1", 2),
        s(16, IN, Ack, "PUBCOMP", 2, "c/1", 2),
        BrokerEvent {
            props: Some(MessageProps::default()),
            ..pub_ev(
                17,
                IN,
                cid,
                Some("status/sensor-5"),
                1,
                Some(4),
                true,
                false,
                b"online",
            )
        },
        s(18, OUT, Confirm, "PUBACK", 4, "status/sensor-5", 1),
        BrokerEvent {
            packet_id: Some(5),
            destination: topic("c/+"),
            ..evc(19, IN, EventKind::Unsubscribe, "UNSUBSCRIBE", cid)
        },
        BrokerEvent {
            packet_id: Some(5),
            attrs: attrs(&[("reasons", "0")]),
            ..evc(20, OUT, Control, "UNSUBACK", cid)
        },
        BrokerEvent {
            reply_code: Some(0),
            ..evc(23, IN, Control, "DISCONNECT", cid)
        },
    ];
    assert_eq!(events, want);
    assert_eq!(
        (
            stats.frames,
            stats.malformed,
            stats.resyncs,
            stats.buffered_bytes
        ),
        (26, 0, 0, 0)
    );
    let (_, _, dec) = run(&steps);
    no_canary(&events, &dec);
}

#[test]
fn gap_mid_publish_resyncs_and_decodes_what_follows() {
    let (events, stats) = check(&s_gap());
    assert_eq!(
        events[2..],
        [
            pub_ev(
                4,
                IN,
                "g",
                Some("after/1"),
                1,
                Some(2),
                false,
                false,
                b"first"
            ),
            pub_ev(
                4,
                IN,
                "g",
                Some("after/2"),
                0,
                None,
                false,
                false,
                b"second"
            ),
            settle_ev(
                5,
                OUT,
                "g",
                EventKind::Confirm,
                "PUBACK",
                2,
                Some("after/1"),
                Some(1),
                None
            ),
        ]
    );
    let a_len = pub3(1, "big/a", 1, &[b'x'; 300]).len();
    assert_eq!(stats.resyncs, 1);
    assert_eq!(stats.skipped_bytes, (a_len - 150) as u64);
    assert_eq!((stats.malformed, stats.buffered_bytes), (0, 0));
}

#[test]
fn the_end_of_the_known_stream_proves_the_last_packet() {
    let (events, stats) = check(&s_gap_flush());
    assert_eq!(
        events[1..],
        [
            // Decoded when the second gap ends the bytes it ends at; the next one when the end
            // of the stream shows the packet after it starts plausibly, cut short.
            pub_ev(3, IN, "f", Some("lone"), 1, Some(1), false, false, b"L"),
            pub_ev(5, IN, "f", Some("next"), 0, None, false, false, b"N"),
        ]
    );
    // "zzzz" is skipped; the partial packet at the end is dropped (not a resync).
    assert_eq!(
        (
            stats.resyncs,
            stats.skipped_bytes,
            stats.malformed,
            stats.buffered_bytes
        ),
        (2, 4, 0, 0)
    );
}

#[test]
fn mid_stream_join_finds_the_next_packet() {
    let (events, stats) = check(&s_mid_stream());
    assert_eq!(
        events,
        [
            pub_ev(0, OUT, "", Some("x/y"), 1, Some(5), false, false, b"next"),
            pub_ev(0, OUT, "", Some("x/z"), 0, None, false, false, b"last"),
            settle_ev(
                2,
                IN,
                "",
                EventKind::Ack,
                "PUBACK",
                5,
                Some("x/y"),
                Some(1),
                None
            ),
        ]
        .map(|e| BrokerEvent {
            client_id: None,
            ..e
        })
    );
    assert_eq!(
        (stats.resyncs, stats.skipped_bytes, stats.malformed),
        (1, 120, 0)
    );
}

#[test]
fn mid_stream_join_learns_5_0_from_packet_shapes() {
    let (events, stats) = check(&s_mid_stream_v5());
    let none = |e: BrokerEvent| BrokerEvent {
        client_id: None,
        ..e
    };
    // The first PUBLISH is parsed as 3.1.1 (its property length byte reads as payload) until
    // the 5.0 PUBACK (reason code, remaining length 3) reveals the version.
    assert_eq!(
        events,
        [
            none(pub_ev(
                0,
                IN,
                "",
                Some("m/5"),
                1,
                Some(8),
                false,
                false,
                b"\0p"
            )),
            none(settle_ev(
                1,
                OUT,
                "",
                EventKind::Confirm,
                "PUBACK",
                8,
                Some("m/5"),
                Some(1),
                Some(0x10)
            )),
            none(BrokerEvent {
                props: Some(MessageProps {
                    content_type: Some("text/plain".into()),
                    ..Default::default()
                }),
                ..pub_ev(2, IN, "", Some("m/6"), 1, Some(9), false, false, b"q")
            }),
            none(settle_ev(
                3,
                OUT,
                "",
                EventKind::Confirm,
                "PUBACK",
                9,
                Some("m/6"),
                Some(1),
                Some(0)
            )),
        ]
    );
    assert_eq!(
        (
            stats.resyncs,
            stats.skipped_bytes,
            stats.malformed,
            stats.frames
        ),
        (0, 0, 0, 6)
    );
}

#[test]
fn broken_packets_are_counted_and_resynced() {
    let (events, stats) = check(&s_broken());
    let topics: Vec<_> = events[2..]
        .iter()
        .map(|e| {
            e.destination
                .as_ref()
                .and_then(|d| d.topic.clone())
                .unwrap()
        })
        .collect();
    assert_eq!(topics, ["ok/1", "ok/2", "ok/3", "ok/4", "ok/5", "ok/6"]);
    assert_eq!((stats.malformed, stats.resyncs), (6, 6));
}

#[test]
fn oversize_packets_are_skipped_unbuffered() {
    let steps = s_oversize();
    // Too big for the every-byte split: one whole run and a few chunkings.
    let (events, stats, _) = run(&steps);
    for chunk in [1000, 4096, 65536, 300_001] {
        let (e2, s2, _) = run_with(&steps, &mut |_, len| vec![chunk; len.div_ceil(chunk)]);
        assert_eq!((&e2, &s2), (&events, &stats), "chunk {chunk}");
    }
    assert_eq!(
        events[2..],
        [
            BrokerEvent {
                fingerprint: None,
                body_size: Some((MAX_PACKET + 100) as u64),
                ..pub_ev(2, IN, "o", Some("big/one"), 1, Some(1), false, false, b"")
            },
            pub_ev(2, IN, "o", Some("small"), 0, None, false, false, b"s"),
            settle_ev(
                3,
                OUT,
                "o",
                EventKind::Confirm,
                "PUBACK",
                1,
                Some("big/one"),
                Some(1),
                None
            ),
        ]
    );
    assert_eq!(
        (stats.oversize, stats.frames, stats.malformed, stats.resyncs),
        (2, 4, 0, 0)
    );
}

#[test]
fn oversize_publish_with_oversize_header_is_skipped_without_event() {
    // 5.0 PUBLISH whose properties alone exceed MAX_PACKET.
    let mut props = Pr::new();
    while props.0.len() <= MAX_PACKET {
        props = props.user("k", &"v".repeat(60_000));
    }
    let steps = vec![
        i(&[Connect::new(5, "h").encode()]),
        o(&[connack(Some(Pr::new()), false, 0)]),
        i(&[
            pub5(0, "huge", 0, props, b"p"),
            pub5(0, "next", 0, Pr::new(), b"n"),
        ]),
    ];
    let (events, stats, dec) = run(&steps);
    for chunk in [777, 65536] {
        let (e2, s2, _) = run_with(&steps, &mut |_, len| vec![chunk; len.div_ceil(chunk)]);
        assert_eq!((&e2, &s2), (&events, &stats), "chunk {chunk}");
    }
    assert_eq!(events.len(), 3);
    assert_eq!(
        events[2].destination.as_ref().unwrap().topic.as_deref(),
        Some("next")
    );
    assert_eq!((stats.oversize, stats.malformed), (1, 0));
    dec.assert_bounded();
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn random_garbage_never_panics_and_stays_bounded() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let garbage = rng.bytes(1 << 20);
    let conn = conn();
    // Fresh decoder (joined mid-stream), and a synced one that then sees garbage.
    for synced in [false, true] {
        let mut dec = MqttDecoder::new();
        let mut out = |_: BrokerEvent| {};
        let mut fed = 0;
        for dir in [IN, OUT] {
            let ctx = Ctx {
                conn: &conn,
                dir,
                ts_ns: 1,
            };
            if synced {
                let head = if dir == IN {
                    Connect::new(4, "g").encode()
                } else {
                    connack(None, false, 0)
                };
                dec.on_data(&ctx, &head, &mut out);
                fed += head.len();
            }
            let mut at = 0;
            while at < garbage.len() {
                let n = (rng.next() % 70_000) as usize + 1;
                let end = (at + n).min(garbage.len());
                dec.on_data(&ctx, &garbage[at..end], &mut out);
                dec.assert_bounded();
                at = end;
            }
            dec.on_end(&ctx, &mut out);
        }
        let s = dec.stats();
        assert_eq!(s.bytes, (2 * garbage.len() + fed) as u64);
        if synced {
            assert!(s.malformed >= 2, "{s:?}");
        }
        assert!(s.resyncs >= 1 && s.skipped_bytes > 0, "{s:?}");
        assert_eq!(s.buffered_bytes, 0);
    }
}

#[test]
fn gap_into_a_binary_payload_does_not_swallow_what_follows() {
    // A gap into a large binary payload: the resync scans 4 MB of random bytes (some of which
    // look like packets) in segment-sized pieces, then finds the real packets.
    let mut rng = Rng(0x5EED);
    let tail = [
        pub3(1, "after/1", 1, b"first"),
        pub3(0, "after/2", 0, b"second"),
        pingreq(),
    ]
    .concat();
    let conn = conn();
    let ctx = Ctx {
        conn: &conn,
        dir: IN,
        ts_ns: 1,
    };
    let mut dec = MqttDecoder::new();
    let mut events = Vec::new();
    dec.on_data(&ctx, &Connect::new(4, "bin").encode(), &mut |e| {
        events.push(e)
    });
    dec.on_gap(&ctx, 1000, &mut |e| events.push(e));
    for _ in 0..4 {
        for chunk in rng.bytes(1 << 20).chunks(1460) {
            dec.on_data(&ctx, chunk, &mut |e| events.push(e));
            dec.assert_bounded();
        }
    }
    dec.on_data(&ctx, &tail, &mut |e| events.push(e));
    let topics: Vec<_> = events
        .iter()
        .filter_map(|e| e.destination.as_ref()?.topic.clone())
        .collect();
    assert!(
        topics.ends_with(&["after/1".into(), "after/2".into()]),
        "{topics:?}"
    );
    let s = dec.stats();
    assert_eq!(s.oversize, 0, "{s:?}");
    assert!(s.skipped_bytes > 4_000_000, "{s:?}");
}

#[test]
fn absurd_lengths_and_truncated_packets() {
    let conn = conn();
    let ctx = Ctx {
        conn: &conn,
        dir: IN,
        ts_ns: 1,
    };
    let connect = Connect::new(4, "t").encode();
    let mut events = Vec::new();
    // 5-byte remaining length: malformed at once, nothing waits for it.
    let mut dec = MqttDecoder::new();
    dec.on_data(&ctx, &connect, &mut |e| events.push(e));
    dec.on_data(&ctx, &[0x30, 0x80, 0x80, 0x80, 0x80], &mut |e| {
        events.push(e)
    });
    assert_eq!(dec.stats().malformed, 1);
    assert!(dec.stats().buffered_bytes <= 4);
    // The largest length MQTT can express, on a PINGREQ (must be 0): malformed.
    let mut dec = MqttDecoder::new();
    dec.on_data(&ctx, &connect, &mut |e| events.push(e));
    dec.on_data(&ctx, &[0xC0, 0xFF, 0xFF, 0xFF, 0x7F], &mut |e| {
        events.push(e)
    });
    assert_eq!(dec.stats().malformed, 1);
    // A PUBLISH claiming 256 MB: oversize, streamed past without buffering.
    let mut dec = MqttDecoder::new();
    dec.on_data(&ctx, &connect, &mut |e| events.push(e));
    dec.on_data(
        &ctx,
        &[0x30, 0xFF, 0xFF, 0xFF, 0x7F, 0, 1, b't'],
        &mut |e| events.push(e),
    );
    for _ in 0..64 {
        dec.on_data(&ctx, &[b'z'; 65536], &mut |e| events.push(e));
        assert_eq!(dec.stats().buffered_bytes, 0);
    }
    assert_eq!((dec.stats().oversize, dec.stats().malformed), (1, 0));
    // Truncated packets: each waits (bounded), never emits; the end frees them.
    let p = pub3(1, "a/b", 1, b"payload");
    let sub = subscribe(None, 1, &[("x", 0)]);
    for pkt in [&p, &sub] {
        for cut in 1..pkt.len() {
            let mut d = MqttDecoder::new();
            d.on_data(&ctx, &[&connect[..], &pkt[..cut]].concat(), &mut |e| {
                events.push(e)
            });
            assert!(d.stats().buffered_bytes <= cut);
            d.on_end(&ctx, &mut |e| events.push(e));
            assert_eq!(d.stats().buffered_bytes, 0);
        }
    }
    assert_eq!(
        events
            .iter()
            .filter(|e| e.method != Some("CONNECT"))
            .count(),
        0
    );
    // A resync waiting on a candidate claiming the largest decodable size holds ≤ WINDOW.
    let mut d = MqttDecoder::new();
    d.on_data(&ctx, &[0xAA], &mut |e| events.push(e));
    let claim = [&[0x30][..], &vbi(MAX_PACKET - 4), &[0, 1, b'a']].concat();
    d.on_data(&ctx, &claim, &mut |e| events.push(e));
    for _ in 0..40 {
        d.on_data(&ctx, &[b'z'; 65536], &mut |e| events.push(e));
        d.assert_bounded();
    }
    assert!(d.stats().skipped_bytes >= 1 << 20);
}

#[test]
fn password_is_never_kept_even_when_split_or_resynced() {
    // Whole, split at every byte, and replayed from a resync window: the canary appears
    // nowhere.
    let steps = s_session_311();
    for cut in 1..CONNECT_311.len() {
        let (events, _, dec) = run_with(&steps, &mut |k, len| {
            if k == 0 {
                vec![cut, len - cut]
            } else {
                vec![len]
            }
        });
        no_canary(&events, &dec);
    }
    let (events, _, dec) = run(&[
        Step::Data(IN, [b"\x99".to_vec(), connect_311(), pingreq()].concat()),
        Step::End(IN),
    ]);
    assert_eq!(events.len(), 1);
    no_canary(&events, &dec);
}

#[test]
fn on_end_and_gap_drop_partial_state() {
    let p = pub3(0, "t", 0, &[1; 100]);
    let (events, stats) = check(&[
        i(&[Connect::new(4, "e").encode()]),
        i(&[p[..50].to_vec()]),
        Step::Gap(IN, 100),
        Step::End(IN),
    ]);
    assert_eq!(events.len(), 1);
    assert_eq!((stats.buffered_bytes, stats.resyncs), (0, 1));
}

#[test]
fn text_rendering_is_bounded() {
    assert_eq!(wire::text("héllo".as_bytes(), 256), "héllo");
    assert_eq!(wire::text(&[b'a'; 1000], 256).len(), 256);
    let cut = wire::text("é".repeat(200).as_bytes(), 255);
    assert_eq!(cut.len(), 254);
    assert_eq!(wire::bytes_text(&[0xFF, 0x00], 256), "0xff00");
    assert_eq!(wire::bytes_text(b"abc", 256), "abc");
    assert_eq!(wire::bytes_text(&[0xFF; 300], 256).len(), 256);
    // Many user properties: bounded.
    let mut props = Pr::new();
    for k in 0..40 {
        props = props.user(&format!("h{k}"), &"v".repeat(300));
    }
    let steps = vec![
        i(&[Connect::new(5, "b").encode()]),
        i(&[pub5(
            0,
            "t",
            0,
            props.user("TraceParent", "00-x-y-01"),
            b"x",
        )]),
    ];
    let (events, _, _) = run(&steps);
    let props = events[1].props.clone().unwrap();
    assert_eq!(props.headers.len(), 32);
    assert!(props.headers.iter().all(|(_, v)| v.len() == 256));
    assert_eq!(props.traceparent.as_deref(), Some("00-x-y-01"));
}

#[test]
fn varint_limits() {
    use wire::{Var, varint};
    assert_eq!(varint(&[0]), Var::Ok { value: 0, len: 1 });
    assert_eq!(varint(&[0x7F]), Var::Ok { value: 127, len: 1 });
    assert_eq!(varint(&[0x80, 0x01]), Var::Ok { value: 128, len: 2 });
    assert_eq!(
        varint(&[0xFF, 0xFF, 0xFF, 0x7F]),
        Var::Ok {
            value: 268_435_455,
            len: 4
        }
    );
    assert_eq!(varint(&[0xFF, 0xFF, 0xFF]), Var::Need);
    assert_eq!(varint(&[0xFF, 0xFF, 0xFF, 0xFF, 0x01]), Var::Bad);
    for n in [
        0,
        127,
        128,
        16_383,
        16_384,
        2_097_151,
        2_097_152,
        268_435_455,
    ] {
        assert_eq!(
            varint(&vbi(n)),
            Var::Ok {
                value: n as u32,
                len: vbi(n).len()
            }
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Every script decodes to the same events and counters however its bytes are chunked.
    #[test]
    fn random_chunkings_agree(which in 0usize..20, sizes in prop::collection::vec(1usize..64, 1..64)) {
        let all = scripts();
        prop_assert_eq!(all.len(), 20);
        let (name, steps) = &all[which];
        let (events, stats, _) = run(steps);
        let (e2, s2, _) = run_with(steps, &mut testkit::cycling_cuts(&sizes));
        prop_assert_eq!(e2, events, "script {}", name);
        prop_assert_eq!(s2, stats, "script {}", name);
    }

    /// A gap at a random place in a realistic session: however the bytes are chunked, the same
    /// events and counters, and the packets after the damaged one still decode.
    #[test]
    fn random_gaps_agree(
        v5 in any::<bool>(),
        at in any::<prop::sample::Index>(),
        cut in any::<prop::sample::Index>(),
        len in 1usize..40,
        sizes in prop::collection::vec(1usize..64, 1..16),
    ) {
        let mut steps = if v5 { s_session_5() } else { s_session_311() };
        let data: Vec<usize> = steps
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s, Step::Data(..)))
            .map(|(k, _)| k)
            .collect();
        let k = data[at.index(data.len())];
        // The DISCONNECT step is the last data step.
        let disconnect = *data.last().unwrap();
        let Step::Data(dir, bytes) = steps[k].clone() else { unreachable!() };
        let a = cut.index(bytes.len());
        let b = (a + len).min(bytes.len());
        steps.splice(
            k..=k,
            [
                Step::Data(dir, bytes[..a].to_vec()),
                Step::Gap(dir, (b - a) as u32),
                Step::Data(dir, bytes[b..].to_vec()),
            ],
        );
        let (events, stats, _) = run(&steps);
        let (e2, s2, _) = run_with(&steps, &mut testkit::cycling_cuts(&sizes));
        prop_assert_eq!(&e2, &events);
        prop_assert_eq!(s2, stats);
        prop_assert!(stats.resyncs >= 1);
        // The DISCONNECT at the end is always seen (unless the gap is in it).
        if k != disconnect {
            prop_assert!(events.iter().any(|e| e.method == Some("DISCONNECT")), "{:?}", events);
        }
    }

    /// Arbitrary bytes, in arbitrary chunks, on both directions: no panic, bounded buffers.
    #[test]
    fn arbitrary_bytes_are_harmless(
        chunks in prop::collection::vec((any::<bool>(), prop::collection::vec(any::<u8>(), 0..512)), 0..32),
        prefix in any::<bool>(),
        gap in any::<bool>(),
    ) {
        let conn = conn();
        let mut dec = MqttDecoder::new();
        if prefix {
            dec.on_data(&Ctx { conn: &conn, dir: IN, ts_ns: 0 }, &connect_5(), &mut |_| {});
        }
        for (egress, bytes) in &chunks {
            let ctx = Ctx { conn: &conn, dir: Direction::from_egress(*egress), ts_ns: 0 };
            dec.on_data(&ctx, bytes, &mut |_| {});
            dec.assert_bounded();
            if gap && bytes.len() % 7 == 0 {
                dec.on_gap(&ctx, 10, &mut |_| {});
            }
        }
        for dir in [IN, OUT] {
            dec.on_end(&Ctx { conn: &conn, dir, ts_ns: 0 }, &mut |_| {});
        }
        prop_assert_eq!(dec.stats().buffered_bytes, 0);
    }

    /// A gap, then garbage, then valid packets: the packets after the garbage still decode
    /// (the end of the stream settles candidates the garbage left undecided).
    #[test]
    fn garbage_after_a_gap_then_valid_packets_recover(junk in prop::collection::vec(any::<u8>(), 0..200)) {
        let pair = [pub3(1, "after/x", 7, b"payload"), pingreq()].concat();
        let tail = [pair.repeat(3), pub3(0, "after/y", 0, b"p2"), pingreq()].concat();
        let steps = vec![
            i(&[Connect::new(4, "j").encode()]),
            Step::Gap(IN, 1),
            i(&[junk, tail]),
            Step::End(IN),
        ];
        let (events, _, _) = run(&steps);
        prop_assert!(
            events.iter().any(|e| e.destination.as_ref().and_then(|d| d.topic.as_deref()) == Some("after/y")),
            "{:?}", events
        );
    }
}

/// Throughput on the realistic 5.0 session, repeated to ~100 MB:
/// `cargo test --release -p observer --lib protocol::mqtt::tests::throughput -- --ignored --nocapture`
#[test]
#[ignore]
fn throughput() {
    testkit::throughput("mqtt 3.1.1", &conn(), MqttDecoder::new, &s_session_311());
    testkit::throughput("mqtt 5.0", &conn(), MqttDecoder::new, &s_session_5());
}

/// The realistic sessions are the decoder benchmark's input (benches/decoders).
#[test]
fn bench_fixture_is_current() {
    testkit::fixture("mqtt311", &s_session_311());
    testkit::fixture("mqtt5", &s_session_5());
}
