//! Tests: byte-level encoders (below), a harness that decodes every script whole, split in two at
//! every byte of every step, and (proptest) in random chunkings, and checks all agree.
use proptest::prelude::*;

use super::*;
use crate::protocol::testkit::{self, Bounded, Step, i, o, ts};
use crate::{
    capture::ConnId,
    event::{ConnRef, Destination, EventKind, Fingerprint, MessageProps, Outcome},
};

const IN: Direction = Direction::Ingress;
const OUT: Direction = Direction::Egress;

// ---------------------------------------------------------------------------------------------
// Encoders

/// Method arguments.
#[derive(Clone, Default)]
struct A(Vec<u8>);

impl A {
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
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn s(mut self, v: &str) -> Self {
        self.0.push(v.len() as u8);
        self.0.extend_from_slice(v.as_bytes());
        self
    }
    fn long(self, v: &[u8]) -> Self {
        let mut a = self.u32(v.len() as u32);
        a.0.extend_from_slice(v);
        a
    }
    fn table(self, t: T) -> Self {
        self.long(&t.0)
    }
    /// Packed bits, first one in the lowest bit.
    fn bits(self, bits: &[bool]) -> Self {
        self.u8(bits
            .iter()
            .enumerate()
            .map(|(i, &b)| u8::from(b) << i)
            .sum())
    }
}

/// A field table body (no length prefix).
#[derive(Clone, Default)]
struct T(Vec<u8>);

impl T {
    fn new() -> Self {
        Self::default()
    }
    fn raw(mut self, name: &str, tag: u8, value: &[u8]) -> Self {
        self.0.push(name.len() as u8);
        self.0.extend_from_slice(name.as_bytes());
        self.0.push(tag);
        self.0.extend_from_slice(value);
        self
    }
    fn str(self, name: &str, v: &str) -> Self {
        self.raw(name, b'S', &long(v.as_bytes()))
    }
}

fn long(v: &[u8]) -> Vec<u8> {
    let mut out = (v.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(v);
    out
}

fn frame(ty: u8, ch: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![ty];
    f.extend_from_slice(&ch.to_be_bytes());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f.push(0xCE);
    f
}

fn m(ch: u16, class: u16, id: u16, a: A) -> Vec<u8> {
    let mut p = class.to_be_bytes().to_vec();
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&a.0);
    frame(1, ch, &p)
}

/// Basic properties to encode.
#[derive(Clone, Default)]
struct P {
    content_type: Option<&'static str>,
    headers: Option<T>,
    delivery_mode: Option<u8>,
    correlation_id: Option<&'static str>,
    reply_to: Option<&'static str>,
    message_id: Option<&'static str>,
    timestamp: Option<u64>,
    app_id: Option<&'static str>,
}

fn header_payload(body_size: u64, p: &P) -> Vec<u8> {
    let mut flags = 0u16;
    let mut a = A::new();
    if let Some(v) = p.content_type {
        flags |= 1 << 15;
        a = a.s(v);
    }
    if let Some(t) = &p.headers {
        flags |= 1 << 13;
        a = a.table(t.clone());
    }
    if let Some(v) = p.delivery_mode {
        flags |= 1 << 12;
        a = a.u8(v);
    }
    if let Some(v) = p.correlation_id {
        flags |= 1 << 10;
        a = a.s(v);
    }
    if let Some(v) = p.reply_to {
        flags |= 1 << 9;
        a = a.s(v);
    }
    if let Some(v) = p.message_id {
        flags |= 1 << 7;
        a = a.s(v);
    }
    if let Some(v) = p.timestamp {
        flags |= 1 << 6;
        a = a.u64(v);
    }
    if let Some(v) = p.app_id {
        flags |= 1 << 3;
        a = a.s(v);
    }
    let head = A::new().u16(60).u16(0).u64(body_size).u16(flags);
    [head.0, a.0].concat()
}

/// Content header + body frames of at most `per_frame` bytes.
fn content(ch: u16, p: &P, body: &[u8], per_frame: usize) -> Vec<u8> {
    let mut out = frame(2, ch, &header_payload(body.len() as u64, p));
    for chunk in body.chunks(per_frame) {
        out.extend(frame(3, ch, chunk));
    }
    out
}

const HEADER: &[u8] = b"AMQP\x00\x00\x09\x01";

fn start() -> Vec<u8> {
    m(
        0,
        10,
        10,
        A::new()
            .u8(0)
            .u8(9)
            .table(T::new().str("product", "RabbitMQ"))
            .long(b"AMQPLAIN PLAIN")
            .long(b"en_US"),
    )
}
fn start_ok(mechanism: &str, response: &[u8]) -> Vec<u8> {
    m(
        0,
        10,
        11,
        A::new()
            .table(T::new().str("product", "test"))
            .s(mechanism)
            .long(response)
            .s("en_US"),
    )
}
fn start_ok_plain(user: &str, password: &str) -> Vec<u8> {
    start_ok("PLAIN", format!("\0{user}\0{password}").as_bytes())
}
fn tune(id: u16, frame_max: u32) -> Vec<u8> {
    m(0, 10, id, A::new().u16(2047).u32(frame_max).u16(60))
}
fn open(vhost: &str) -> Vec<u8> {
    m(0, 10, 40, A::new().s(vhost).s("").bits(&[false]))
}
fn close(ch: u16, code: u16, text: &str) -> Vec<u8> {
    let class = if ch == 0 { 10 } else { 20 };
    m(
        ch,
        class,
        if ch == 0 { 50 } else { 40 },
        A::new().u16(code).s(text).u16(0).u16(0),
    )
}
fn close_ok(ch: u16) -> Vec<u8> {
    if ch == 0 {
        m(0, 10, 51, A::new())
    } else {
        m(ch, 20, 41, A::new())
    }
}
fn ch_open(ch: u16) -> Vec<u8> {
    m(ch, 20, 10, A::new().s(""))
}
fn ch_open_ok(ch: u16) -> Vec<u8> {
    m(ch, 20, 11, A::new().long(b""))
}
fn publish(ch: u16, exchange: &str, rk: &str) -> Vec<u8> {
    m(
        ch,
        60,
        40,
        A::new().u16(0).s(exchange).s(rk).bits(&[false, false]),
    )
}
fn deliver(ch: u16, ctag: &str, tag: u64, redelivered: bool, exchange: &str, rk: &str) -> Vec<u8> {
    m(
        ch,
        60,
        60,
        A::new()
            .s(ctag)
            .u64(tag)
            .bits(&[redelivered])
            .s(exchange)
            .s(rk),
    )
}
fn ack(ch: u16, tag: u64, multiple: bool) -> Vec<u8> {
    m(ch, 60, 80, A::new().u64(tag).bits(&[multiple]))
}
fn nack(ch: u16, tag: u64, multiple: bool, requeue: bool) -> Vec<u8> {
    m(ch, 60, 120, A::new().u64(tag).bits(&[multiple, requeue]))
}
fn consume(ch: u16, queue: &str, tag: &str, no_wait: bool) -> Vec<u8> {
    m(
        ch,
        60,
        20,
        A::new()
            .u16(0)
            .s(queue)
            .s(tag)
            .bits(&[false, false, false, no_wait])
            .table(T::new()),
    )
}
fn consume_ok(ch: u16, tag: &str) -> Vec<u8> {
    m(ch, 60, 21, A::new().s(tag))
}
fn confirm_select(ch: u16) -> Vec<u8> {
    m(ch, 85, 10, A::new().bits(&[false]))
}

// ---------------------------------------------------------------------------------------------
// Harness

fn conn() -> ConnRef {
    ConnRef {
        id: ConnId(7),
        pid: Some(42),
        local: "127.0.0.1:5672".parse().unwrap(),
        peer: "127.0.0.1:50000".parse().unwrap(),
    }
}

impl Bounded for AmqpDecoder {
    fn assert_bounded(&self) {
        let dec = self;
        let limit = dec.session.frame_limit();
        for f in &dec.framers {
            assert!(
                f.buf.len() <= limit + 8,
                "buffered {} > limit {} + 8",
                f.buf.len(),
                limit
            );
        }
    }
}

/// Decodes `steps`, each data step cut into pieces of the lengths `cuts(step, len)` returns.
fn run_with(
    steps: &[Step],
    cuts: &mut dyn FnMut(usize, usize) -> Vec<usize>,
) -> (Vec<BrokerEvent>, DecoderStats, AmqpDecoder) {
    testkit::run_with(&conn(), AmqpDecoder::new(), steps, cuts)
}

fn run(steps: &[Step]) -> (Vec<BrokerEvent>, DecoderStats, AmqpDecoder) {
    run_with(steps, &mut |_, len| vec![len])
}

/// See [`testkit::check`].
fn check(steps: &[Step]) -> (Vec<BrokerEvent>, DecoderStats) {
    testkit::check(&conn(), AmqpDecoder::new, steps)
}

fn ev(k: usize, dir: Direction, kind: EventKind, method: &'static str, ch: u32) -> BrokerEvent {
    let mut e = BrokerEvent::new(ts(k), System::Amqp, kind, conn(), dir);
    e.method = Some(method);
    e.channel = Some(ch);
    e
}

fn ctl(k: usize, dir: Direction, method: &'static str, ch: u32) -> BrokerEvent {
    ev(k, dir, EventKind::Control, method, ch)
}

fn vhost() -> Destination {
    Destination {
        vhost: Some("/".into()),
        ..Default::default()
    }
}

fn queue_dest(q: &str) -> Destination {
    Destination {
        queue: Some(q.into()),
        resource: Some("queue"),
        ..vhost()
    }
}

fn msg_dest(exchange: &str, rk: &str, queue: Option<&str>) -> Destination {
    Destination {
        exchange: Some(exchange.into()),
        routing_key: Some(rk.into()),
        queue: queue.map(Into::into),
        ..vhost()
    }
}

/// Header, start, start-ok, tune, tune-ok + open "/", open-ok: 6 steps.
fn handshake() -> Vec<Step> {
    vec![
        i(&[HEADER.to_vec()]),
        o(&[start()]),
        i(&[start_ok_plain("guest", "secretpassword")]),
        o(&[tune(30, 131072)]),
        i(&[tune(31, 131072), open("/")]),
        o(&[m(0, 10, 41, A::new().s(""))]),
    ]
}

/// The events of `handshake()`.
fn handshake_events() -> Vec<BrokerEvent> {
    vec![
        ctl(1, OUT, "connection.start", 0),
        BrokerEvent {
            user: Some("guest".into()),
            mechanism: Some("PLAIN".into()),
            ..ctl(2, IN, "connection.start-ok", 0)
        },
        BrokerEvent {
            user: Some("guest".into()),
            mechanism: Some("PLAIN".into()),
            outcome: Some(Outcome::Success),
            ..ev(3, OUT, EventKind::Auth, "connection.tune", 0)
        },
        ctl(3, OUT, "connection.tune", 0),
        ctl(4, IN, "connection.tune-ok", 0),
        BrokerEvent {
            destination: Some(vhost()),
            ..ctl(4, IN, "connection.open", 0)
        },
        ctl(5, OUT, "connection.open-ok", 0),
    ]
}

/// handshake() + channel 1 opened: 8 steps, events `handshake_events()` + 2.
fn with_channel(more: Vec<Step>) -> Vec<Step> {
    let mut s = handshake();
    s.push(i(&[ch_open(1)]));
    s.push(o(&[ch_open_ok(1)]));
    s.extend(more);
    s
}

fn channel_events() -> Vec<BrokerEvent> {
    let mut e = handshake_events();
    e.push(ctl(6, IN, "channel.open", 1));
    e.push(ev(7, OUT, EventKind::ChannelOpened, "channel.open-ok", 1));
    e
}

/// Asserts `events` = the events of `with_channel` followed by `tail`.
fn assert_tail(events: &[BrokerEvent], tail: &[BrokerEvent]) {
    let head = channel_events();
    assert_eq!(
        &events[..head.len().min(events.len())],
        &head[..],
        "handshake events"
    );
    assert_eq!(&events[head.len()..], tail);
}

// ---------------------------------------------------------------------------------------------
// Scripts (each also runs under random chunkings in `random_chunkings_agree`)

fn s_handshake() -> Vec<Step> {
    handshake()
}

fn s_amqplain() -> Vec<Step> {
    let creds = T::new()
        .str("LOGIN", "alice")
        .str("PASSWORD", "secretpassword");
    vec![
        i(&[HEADER.to_vec()]),
        o(&[start()]),
        i(&[start_ok("AMQPLAIN", &creds.0)]),
        o(&[tune(30, 0)]),
    ]
}

fn s_secure() -> Vec<Step> {
    vec![
        i(&[HEADER.to_vec()]),
        o(&[start()]),
        i(&[start_ok("EXTERNAL", b"")]),
        o(&[m(0, 10, 20, A::new().long(b"challenge"))]),
        i(&[m(0, 10, 21, A::new().long(b"secretpassword"))]),
        o(&[tune(30, 131072)]),
    ]
}

fn s_auth_failure() -> Vec<Step> {
    vec![
        i(&[HEADER.to_vec()]),
        o(&[start()]),
        i(&[start_ok_plain("guest", "secretpassword")]),
        o(&[close(0, 403, "ACCESS_REFUSED - Login was refused")]),
        i(&[close_ok(0)]),
    ]
}

fn s_connection_misc() -> Vec<Step> {
    let mut s = handshake();
    s.extend([
        o(&[m(0, 10, 60, A::new().s("low on memory"))]),
        o(&[m(0, 10, 61, A::new())]),
        i(&[m(
            0,
            10,
            70,
            A::new().long(b"secretpassword").s("token refresh"),
        )]),
        o(&[m(0, 10, 71, A::new())]),
        o(&[close(0, 320, "CONNECTION_FORCED")]),
        i(&[close_ok(0)]),
        i(&[close(0, 200, "bye")]),
    ]);
    s
}

fn s_channels() -> Vec<Step> {
    with_channel(vec![
        i(&[m(1, 20, 20, A::new().bits(&[false]))]),
        o(&[m(1, 20, 21, A::new().bits(&[false]))]),
        i(&[close(1, 200, "done")]),
        o(&[close_ok(1)]),
        i(&[ch_open(2)]),
        o(&[ch_open_ok(2)]),
        o(&[close(2, 404, "NOT_FOUND - no queue 'x'")]),
        i(&[close_ok(2)]),
        // A close-ok whose close was not seen still closes the channel once.
        o(&[close_ok(3)]),
    ])
}

fn s_exchanges() -> Vec<Step> {
    with_channel(vec![
        i(&[m(
            1,
            40,
            10,
            A::new()
                .u16(0)
                .s("logs")
                .s("topic")
                .bits(&[false, true, false, false, false])
                .table(T::new()),
        )]),
        o(&[m(1, 40, 11, A::new())]),
        i(&[m(
            1,
            40,
            30,
            A::new()
                .u16(0)
                .s("logs")
                .s("amq.topic")
                .s("app.*")
                .bits(&[false])
                .table(T::new()),
        )]),
        o(&[m(1, 40, 31, A::new())]),
        i(&[m(
            1,
            40,
            40,
            A::new()
                .u16(0)
                .s("logs")
                .s("amq.topic")
                .s("app.*")
                .bits(&[false])
                .table(T::new()),
        )]),
        o(&[m(1, 40, 51, A::new())]),
        i(&[m(
            1,
            40,
            20,
            A::new().u16(0).s("logs").bits(&[false, false]),
        )]),
        o(&[m(1, 40, 21, A::new())]),
    ])
}

fn s_queues() -> Vec<Step> {
    with_channel(vec![
        i(&[m(
            1,
            50,
            10,
            A::new()
                .u16(0)
                .s("")
                .bits(&[false, false, true, true, false])
                .table(T::new()),
        )]),
        o(&[m(1, 50, 11, A::new().s("amq.gen-abc").u32(0).u32(0))]),
        i(&[m(
            1,
            50,
            20,
            A::new()
                .u16(0)
                .s("amq.gen-abc")
                .s("logs")
                .s("app.#")
                .bits(&[false])
                .table(T::new()),
        )]),
        o(&[m(1, 50, 21, A::new())]),
        i(&[m(
            1,
            50,
            50,
            A::new()
                .u16(0)
                .s("amq.gen-abc")
                .s("logs")
                .s("app.#")
                .table(T::new()),
        )]),
        o(&[m(1, 50, 51, A::new())]),
        i(&[m(
            1,
            50,
            30,
            A::new().u16(0).s("amq.gen-abc").bits(&[false]),
        )]),
        o(&[m(1, 50, 31, A::new().u32(17))]),
        i(&[m(
            1,
            50,
            40,
            A::new()
                .u16(0)
                .s("amq.gen-abc")
                .bits(&[false, false, false]),
        )]),
        o(&[m(1, 50, 41, A::new().u32(0))]),
    ])
}

fn s_control_methods() -> Vec<Step> {
    with_channel(vec![
        i(&[m(1, 60, 10, A::new().u32(0).u16(50).bits(&[false]))]),
        o(&[m(1, 60, 11, A::new())]),
        i(&[m(1, 60, 100, A::new().bits(&[true]))]),
        i(&[m(1, 60, 110, A::new().bits(&[false]))]),
        o(&[m(1, 60, 111, A::new())]),
        i(&[
            m(1, 90, 10, A::new()),
            m(1, 90, 20, A::new()),
            m(1, 90, 30, A::new()),
        ]),
        o(&[
            m(1, 90, 11, A::new()),
            m(1, 90, 21, A::new()),
            m(1, 90, 31, A::new()),
        ]),
        i(&[confirm_select(1)]),
        o(&[m(1, 85, 11, A::new())]),
        // Heartbeats: frames, no events.
        i(&[frame(8, 0, &[])]),
        o(&[frame(8, 0, &[])]),
    ])
}

fn s_consume() -> Vec<Step> {
    let body = b"hello".to_vec();
    with_channel(vec![
        i(&[consume(1, "orders", "", false)]),
        o(&[consume_ok(1, "amq.ctag-1")]),
        o(&[
            deliver(1, "amq.ctag-1", 1, false, "", "orders"),
            content(1, &P::default(), &body, 4096),
        ]),
        i(&[consume(1, "audit", "mine", true)]),
        i(&[m(1, 60, 30, A::new().s("amq.ctag-1").bits(&[false]))]),
        o(&[m(1, 60, 31, A::new().s("amq.ctag-1"))]),
        // Broker-side cancel (queue deleted): consumer cancel notification.
        o(&[m(1, 60, 30, A::new().s("mine").bits(&[true]))]),
    ])
}

fn trace_headers() -> T {
    T::new()
        .str(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .str("tracestate", "congo=t61rcWkgMzE")
        .str("tenant", "acme")
        .raw("retries", b'I', &3i32.to_be_bytes())
}

fn trace_props() -> MessageProps {
    MessageProps {
        message_id: Some("m-1".into()),
        correlation_id: Some("c-1".into()),
        content_type: Some("application/json".into()),
        delivery_mode: Some(2),
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        tracestate: Some("congo=t61rcWkgMzE".into()),
        headers: vec![
            ("tenant".into(), "acme".into()),
            ("retries".into(), "3".into()),
        ],
    }
}

fn full_p() -> P {
    P {
        content_type: Some("application/json"),
        headers: Some(trace_headers()),
        delivery_mode: Some(2),
        correlation_id: Some("c-1"),
        reply_to: Some("amq.rabbitmq.reply-to"),
        message_id: Some("m-1"),
        timestamp: Some(1_700_000_000),
        app_id: Some("billing"),
    }
}

fn body(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|k| b'a' + ((k + seed as usize) % 26) as u8)
        .collect()
}

fn s_publish() -> Vec<Step> {
    with_channel(vec![
        i(&[
            publish(1, "orders", "eu.created"),
            content(1, &full_p(), &body(1000, 0), 300),
        ]),
        // Empty body: the event comes with the content header.
        i(&[publish(1, "", "q"), content(1, &P::default(), b"", 300)]),
    ])
}

fn s_confirms() -> Vec<Step> {
    let pubs = (0..5)
        .map(|k| {
            [
                publish(1, "x", "rk"),
                content(1, &P::default(), &body(10, k), 4),
            ]
            .concat()
        })
        .collect::<Vec<_>>();
    with_channel(vec![
        i(&[confirm_select(1)]),
        o(&[m(1, 85, 11, A::new())]),
        i(&pubs),
        o(&[ack(1, 2, false)]),
        o(&[ack(1, 3, true)]),
        o(&[nack(1, 5, true, false)]),
    ])
}

fn s_client_settle() -> Vec<Step> {
    with_channel(vec![
        i(&[ack(1, 7, false)]),
        i(&[ack(1, 9, true)]),
        i(&[nack(1, 10, false, true)]),
        i(&[nack(1, 12, true, false)]),
        i(&[m(1, 60, 90, A::new().u64(13).bits(&[false]))]),
    ])
}

fn s_get() -> Vec<Step> {
    with_channel(vec![
        i(&[m(1, 60, 70, A::new().u16(0).s("orders").bits(&[false]))]),
        o(&[
            m(
                1,
                60,
                71,
                A::new().u64(1).bits(&[true]).s("").s("orders").u32(41),
            ),
            content(1, &P::default(), b"payload", 4096),
        ]),
        i(&[m(1, 60, 70, A::new().u16(0).s("empty").bits(&[true]))]),
        o(&[m(1, 60, 72, A::new().s(""))]),
    ])
}

fn s_return() -> Vec<Step> {
    with_channel(vec![
        i(&[
            m(
                1,
                60,
                40,
                A::new().u16(0).s("").s("nowhere").bits(&[true, false]),
            ),
            content(1, &P::default(), b"lost", 4096),
        ]),
        o(&[
            m(
                1,
                60,
                50,
                A::new().u16(312).s("NO_ROUTE").s("").s("nowhere"),
            ),
            content(1, &P::default(), b"lost", 4096),
        ]),
    ])
}

fn s_unknown_method() -> Vec<Step> {
    with_channel(vec![i(&[
        m(1, 60, 99, A::new().u64(1)),
        m(1, 77, 1, A::new()),
        ack(1, 1, false),
    ])])
}

fn s_session() -> Vec<Step> {
    let p = |id: &'static str| P {
        message_id: Some(id),
        delivery_mode: Some(2),
        ..P::default()
    };
    let pubs: Vec<Vec<u8>> = (0..3)
        .flat_map(|k| {
            [
                publish(1, "", "orders"),
                content(1, &p(["m1", "m2", "m3"][k]), &body(300, k as u8), 128),
            ]
        })
        .collect();
    let dlv = |tag: u64, redelivered: bool, k: usize| {
        [
            deliver(1, "amq.ctag-1", tag, redelivered, "", "orders"),
            content(1, &p(["m1", "m2", "m3"][k]), &body(300, k as u8), 128),
        ]
        .concat()
    };
    vec![
        i(&[HEADER.to_vec()]),                           // 0
        o(&[start()]),                                   // 1
        i(&[start_ok_plain("guest", "secretpassword")]), // 2
        o(&[tune(30, 131072)]),                          // 3
        i(&[tune(31, 131072), open("/")]),               // 4
        o(&[m(0, 10, 41, A::new().s(""))]),              // 5
        i(&[ch_open(1)]),                                // 6
        o(&[ch_open_ok(1)]),                             // 7
        i(&[confirm_select(1)]),                         // 8
        o(&[m(1, 85, 11, A::new())]),                    // 9
        i(&[m(
            1,
            50,
            10,
            A::new()
                .u16(0)
                .s("orders")
                .bits(&[false, true, false, false, false])
                .table(T::new()),
        )]), // 10
        o(&[m(1, 50, 11, A::new().s("orders").u32(0).u32(0))]), // 11
        i(&pubs),                                        // 12
        o(&[ack(1, 3, true)]),                           // 13
        i(&[consume(1, "orders", "", false)]),           // 14
        o(&[consume_ok(1, "amq.ctag-1")]),               // 15
        o(&[dlv(1, false, 0), dlv(2, false, 1)]),        // 16
        i(&[ack(1, 2, true)]),                           // 17
        o(&[dlv(3, false, 2)]),                          // 18
        i(&[nack(1, 3, false, true)]),                   // 19
        o(&[dlv(4, true, 2)]),                           // 20
        i(&[ack(1, 4, false)]),                          // 21
        i(&[m(1, 60, 70, A::new().u16(0).s("orders").bits(&[false]))]), // 22
        o(&[
            m(
                1,
                60,
                71,
                A::new().u64(5).bits(&[false]).s("").s("orders").u32(0),
            ),
            content(1, &p("m1"), &body(300, 0), 128),
        ]), // 23
        i(&[m(1, 60, 70, A::new().u16(0).s("orders").bits(&[false]))]), // 24
        o(&[m(1, 60, 72, A::new().s(""))]),              // 25
        i(&[
            m(
                1,
                60,
                40,
                A::new().u16(0).s("").s("nowhere").bits(&[true, false]),
            ),
            content(1, &p("m4"), b"lost", 128),
        ]), // 26
        o(&[
            m(
                1,
                60,
                50,
                A::new().u16(312).s("NO_ROUTE").s("").s("nowhere"),
            ),
            content(1, &p("m4"), b"lost", 128),
            ack(1, 4, false),
        ]), // 27
        i(&[close(0, 200, "bye")]),                      // 28
        o(&[close_ok(0)]),                               // 29
    ]
}

/// A publish cut by a gap in its second body frame, then another publish.
fn s_gap() -> Vec<Step> {
    let a = [
        publish(1, "", "a"),
        content(1, &P::default(), &[b'x'; 300], 100),
    ]
    .concat();
    let b = [
        publish(1, "", "b"),
        content(1, &P::default(), b"second", 100),
    ]
    .concat();
    // a = method, header, body1 (108 bytes), body2, body3; cut 30 bytes into body2 for 50 bytes.
    let body2_at = a.len() - 2 * 108;
    let (cut, gap) = (body2_at + 30, 50);
    with_channel(vec![
        i(&[a[..cut].to_vec()]),
        Step::Gap(IN, gap as u32),
        i(&[a[cut + gap..].to_vec(), b]),
    ])
}

/// Joined in the middle of a delivery's body frame.
fn s_mid_stream() -> Vec<Step> {
    let first = [
        deliver(1, "ctag", 1, false, "ex", "rk"),
        content(1, &P::default(), &[b'y'; 200], 4096),
    ]
    .concat();
    let second = [
        deliver(1, "ctag", 2, false, "ex", "rk"),
        content(1, &P::default(), b"next", 4096),
    ]
    .concat();
    vec![o(&[first[first.len() - 120..].to_vec(), second])]
}

/// Broken frames in a synced stream, each followed by a good one.
fn s_broken() -> Vec<Step> {
    let mut bad_end = ack(1, 1, false);
    *bad_end.last_mut().unwrap() = 0x00;
    with_channel(vec![
        // Absurd size.
        i(&[
            vec![1, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0],
            ack(1, 2, false),
        ]),
        // Wrong frame-end octet.
        i(&[bad_end, ack(1, 3, false)]),
        // Truncated arguments (well framed): undecodable.
        i(&[m(1, 60, 80, A::new().u16(1)), ack(1, 4, false)]),
        // Unknown frame type.
        i(&[vec![9, 0, 0, 0, 0, 0, 0, 0xCE], ack(1, 5, false)]),
    ])
}

/// A frame over the negotiated limit is skipped unbuffered.
fn s_oversize() -> Vec<Step> {
    let big = m(
        1,
        60,
        40,
        A::new()
            .u16(0)
            .s("")
            .s(&"k".repeat(200))
            .long(&vec![b'z'; 140_000]),
    );
    with_channel(vec![i(&[big, ack(1, 1, false)])])
}

/// The broker answers a bad protocol header with its own and closes.
fn s_broker_header() -> Vec<Step> {
    vec![
        i(&[b"AMQP\x00\x00\x09\x02".to_vec()]),
        o(&[HEADER.to_vec()]),
        Step::End(OUT),
        Step::End(IN),
    ]
}

/// The client half-closes with a message cut off; the broker still confirms what it got.
fn s_client_fin() -> Vec<Step> {
    let pubs: Vec<Vec<u8>> = (0..2)
        .flat_map(|k| {
            [
                publish(1, "x", "rk"),
                content(1, &P::default(), &body(10, k), 4096),
            ]
        })
        .collect();
    with_channel(vec![
        i(&[confirm_select(1)]),
        i(&pubs),
        i(&[
            publish(1, "x", "rk"),
            frame(2, 1, &header_payload(10, &P::default())),
            frame(3, 1, b"12345"),
        ]),
        Step::End(IN),
        o(&[ack(1, 2, true)]),
    ])
}

fn scripts() -> Vec<(&'static str, Vec<Step>)> {
    vec![
        ("handshake", s_handshake()),
        ("amqplain", s_amqplain()),
        ("secure", s_secure()),
        ("auth_failure", s_auth_failure()),
        ("connection_misc", s_connection_misc()),
        ("channels", s_channels()),
        ("exchanges", s_exchanges()),
        ("queues", s_queues()),
        ("control_methods", s_control_methods()),
        ("consume", s_consume()),
        ("publish", s_publish()),
        ("confirms", s_confirms()),
        ("client_settle", s_client_settle()),
        ("get", s_get()),
        ("return", s_return()),
        ("unknown_method", s_unknown_method()),
        ("session", s_session()),
        ("gap", s_gap()),
        ("mid_stream", s_mid_stream()),
        ("broken", s_broken()),
        ("oversize", s_oversize()),
        ("broker_header", s_broker_header()),
        ("client_fin", s_client_fin()),
    ]
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn looks_like_amqp_headers() {
    assert_eq!(looks_like_amqp(b""), None);
    assert_eq!(looks_like_amqp(b"AM"), None);
    assert_eq!(looks_like_amqp(b"AMQP\0\0\x09"), None);
    assert_eq!(looks_like_amqp(b"AMQP\0\0\x09\x01"), Some(true));
    assert_eq!(looks_like_amqp(b"AMQP\0\0\x09\x01\x01\x00"), Some(true));
    assert_eq!(looks_like_amqp(b"AMQP\x01\x01\x00\x09"), Some(true));
    assert_eq!(looks_like_amqp(b"AMQP\x01\x01\x09\x01"), Some(true));
    assert_eq!(looks_like_amqp(b"AMQP\x00\x01\x00\x00"), Some(false)); // AMQP 1.0
    assert_eq!(looks_like_amqp(b"GET / HTTP/1.1"), Some(false));
    assert_eq!(looks_like_amqp(b"\x10\x0c"), Some(false));
}

#[test]
fn handshake_plain_login() {
    let (events, stats) = check(&s_handshake());
    assert_eq!(events, handshake_events());
    assert_eq!(stats.frames, 6);
    assert_eq!(
        (
            stats.malformed,
            stats.resyncs,
            stats.skipped_bytes,
            stats.buffered_bytes
        ),
        (0, 0, 0, 0)
    );
    let (_, _, dec) = run(&s_handshake());
    assert_eq!(dec.session.frame_limit(), 131072);
}

#[test]
fn amqplain_login_keeps_only_the_user() {
    let (events, _) = check(&s_amqplain());
    let user = Some("alice".to_string());
    let mech = Some("AMQPLAIN".to_string());
    assert_eq!(
        events,
        vec![
            ctl(1, OUT, "connection.start", 0),
            BrokerEvent {
                user: user.clone(),
                mechanism: mech.clone(),
                ..ctl(2, IN, "connection.start-ok", 0)
            },
            BrokerEvent {
                user,
                mechanism: mech,
                outcome: Some(Outcome::Success),
                ..ev(3, OUT, EventKind::Auth, "connection.tune", 0)
            },
            ctl(3, OUT, "connection.tune", 0),
        ]
    );
    let (_, _, dec) = run(&s_amqplain());
    assert!(!format!("{events:?}{dec:?}").contains("secretpassword"));
    // frame_max 0 = unlimited: capped.
    assert_eq!(dec.session.frame_limit(), MAX_NEGOTIATED_FRAME);
}

#[test]
fn secure_round_then_tune_is_auth_success() {
    let (events, _) = check(&s_secure());
    let mech = Some("EXTERNAL".to_string());
    assert_eq!(
        events,
        vec![
            ctl(1, OUT, "connection.start", 0),
            BrokerEvent {
                mechanism: mech.clone(),
                ..ctl(2, IN, "connection.start-ok", 0)
            },
            ctl(3, OUT, "connection.secure", 0),
            ctl(4, IN, "connection.secure-ok", 0),
            BrokerEvent {
                mechanism: mech,
                outcome: Some(Outcome::Success),
                ..ev(5, OUT, EventKind::Auth, "connection.tune", 0)
            },
            ctl(5, OUT, "connection.tune", 0),
        ]
    );
    let (_, _, dec) = run(&s_secure());
    assert!(!format!("{events:?}{dec:?}").contains("secretpassword"));
}

#[test]
fn refused_login_is_auth_failure() {
    let (events, _) = check(&s_auth_failure());
    assert_eq!(
        events,
        vec![
            ctl(1, OUT, "connection.start", 0),
            BrokerEvent {
                user: Some("guest".into()),
                mechanism: Some("PLAIN".into()),
                ..ctl(2, IN, "connection.start-ok", 0)
            },
            BrokerEvent {
                user: Some("guest".into()),
                mechanism: Some("PLAIN".into()),
                outcome: Some(Outcome::Failure),
                reply_code: Some(403),
                reply_text: Some("ACCESS_REFUSED - Login was refused".into()),
                ..ev(3, OUT, EventKind::Auth, "connection.close", 0)
            },
            ctl(4, IN, "connection.close-ok", 0),
        ]
    );
}

#[test]
fn connection_blocked_update_secret_and_close() {
    let (events, _) = check(&s_connection_misc());
    let mut want = handshake_events();
    want.extend([
        BrokerEvent {
            reply_text: Some("low on memory".into()),
            ..ctl(6, OUT, "connection.blocked", 0)
        },
        ctl(7, OUT, "connection.unblocked", 0),
        ctl(8, IN, "connection.update-secret", 0),
        ctl(9, OUT, "connection.update-secret-ok", 0),
        BrokerEvent {
            reply_code: Some(320),
            reply_text: Some("CONNECTION_FORCED".into()),
            ..ev(10, OUT, EventKind::Error, "connection.close", 0)
        },
        ctl(11, IN, "connection.close-ok", 0),
        BrokerEvent {
            reply_code: Some(200),
            reply_text: Some("bye".into()),
            ..ctl(12, IN, "connection.close", 0)
        },
    ]);
    assert_eq!(events, want);
    let (_, _, dec) = run(&s_connection_misc());
    assert!(!format!("{events:?}{dec:?}").contains("secretpassword"));
}

#[test]
fn channel_lifecycle() {
    let (events, _) = check(&s_channels());
    let closed = |k, dir, ch, code, text: &str| BrokerEvent {
        reply_code: Some(code),
        reply_text: Some(text.into()),
        ..ev(k, dir, EventKind::ChannelClosed, "channel.close", ch)
    };
    assert_tail(
        &events,
        &[
            ctl(8, IN, "channel.flow", 1),
            ctl(9, OUT, "channel.flow-ok", 1),
            closed(10, IN, 1, 200, "done"),
            ctl(11, OUT, "channel.close-ok", 1),
            ctl(12, IN, "channel.open", 2),
            ev(13, OUT, EventKind::ChannelOpened, "channel.open-ok", 2),
            BrokerEvent {
                reply_code: Some(404),
                reply_text: Some("NOT_FOUND - no queue 'x'".into()),
                ..ev(14, OUT, EventKind::Error, "channel.close", 2)
            },
            closed(14, OUT, 2, 404, "NOT_FOUND - no queue 'x'"),
            ctl(15, IN, "channel.close-ok", 2),
            ev(16, OUT, EventKind::ChannelClosed, "channel.close-ok", 3),
        ],
    );
}

#[test]
fn exchange_methods() {
    let (events, _) = check(&s_exchanges());
    let x = |rk: Option<&str>| Destination {
        exchange: Some("logs".into()),
        routing_key: rk.map(Into::into),
        resource: Some("exchange"),
        ..vhost()
    };
    assert_tail(
        &events,
        &[
            BrokerEvent {
                destination: Some(x(None)),
                ..ev(8, IN, EventKind::Declare, "exchange.declare", 1)
            },
            ctl(9, OUT, "exchange.declare-ok", 1),
            BrokerEvent {
                destination: Some(x(Some("app.*"))),
                ..ev(10, IN, EventKind::Bind, "exchange.bind", 1)
            },
            ctl(11, OUT, "exchange.bind-ok", 1),
            BrokerEvent {
                destination: Some(x(Some("app.*"))),
                ..ev(12, IN, EventKind::Unbind, "exchange.unbind", 1)
            },
            ctl(13, OUT, "exchange.unbind-ok", 1),
            BrokerEvent {
                destination: Some(x(None)),
                ..ev(14, IN, EventKind::Delete, "exchange.delete", 1)
            },
            ctl(15, OUT, "exchange.delete-ok", 1),
        ],
    );
}

#[test]
fn queue_methods() {
    let (events, _) = check(&s_queues());
    let q = "amq.gen-abc";
    let bound = Destination {
        exchange: Some("logs".into()),
        routing_key: Some("app.#".into()),
        ..queue_dest(q)
    };
    assert_tail(
        &events,
        &[
            BrokerEvent {
                destination: Some(queue_dest("")),
                ..ev(8, IN, EventKind::Declare, "queue.declare", 1)
            },
            BrokerEvent {
                destination: Some(queue_dest(q)),
                message_count: Some(0),
                consumer_count: Some(0),
                ..ctl(9, OUT, "queue.declare-ok", 1)
            },
            BrokerEvent {
                destination: Some(bound.clone()),
                ..ev(10, IN, EventKind::Bind, "queue.bind", 1)
            },
            ctl(11, OUT, "queue.bind-ok", 1),
            BrokerEvent {
                destination: Some(bound),
                ..ev(12, IN, EventKind::Unbind, "queue.unbind", 1)
            },
            ctl(13, OUT, "queue.unbind-ok", 1),
            BrokerEvent {
                destination: Some(queue_dest(q)),
                ..ev(14, IN, EventKind::Purge, "queue.purge", 1)
            },
            BrokerEvent {
                message_count: Some(17),
                ..ctl(15, OUT, "queue.purge-ok", 1)
            },
            BrokerEvent {
                destination: Some(queue_dest(q)),
                ..ev(16, IN, EventKind::Delete, "queue.delete", 1)
            },
            BrokerEvent {
                message_count: Some(0),
                ..ctl(17, OUT, "queue.delete-ok", 1)
            },
        ],
    );
}

#[test]
fn qos_recover_tx_confirm_select_heartbeat_are_control() {
    let (events, stats) = check(&s_control_methods());
    assert_tail(
        &events,
        &[
            ctl(8, IN, "basic.qos", 1),
            ctl(9, OUT, "basic.qos-ok", 1),
            BrokerEvent {
                requeue: Some(true),
                ..ctl(10, IN, "basic.recover-async", 1)
            },
            BrokerEvent {
                requeue: Some(false),
                ..ctl(11, IN, "basic.recover", 1)
            },
            ctl(12, OUT, "basic.recover-ok", 1),
            ctl(13, IN, "tx.select", 1),
            ctl(13, IN, "tx.commit", 1),
            ctl(13, IN, "tx.rollback", 1),
            ctl(14, OUT, "tx.select-ok", 1),
            ctl(14, OUT, "tx.commit-ok", 1),
            ctl(14, OUT, "tx.rollback-ok", 1),
            ctl(15, IN, "confirm.select", 1),
            ctl(16, OUT, "confirm.select-ok", 1),
        ],
    );
    // 6 handshake + 2 channel + 13 methods above + 2 heartbeats.
    assert_eq!(stats.frames, 6 + 2 + 13 + 2);
    assert_eq!(stats.malformed, 0);
}

#[test]
fn consume_deliver_cancel() {
    let (events, _) = check(&s_consume());
    let with_tag = |e: BrokerEvent, tag: &str, queue: Option<&str>| BrokerEvent {
        consumer_tag: Some(tag.into()),
        destination: queue.map(|q| Destination {
            queue: Some(q.into()),
            ..vhost()
        }),
        ..e
    };
    assert_tail(
        &events,
        &[
            with_tag(
                ev(8, IN, EventKind::Subscribe, "basic.consume", 1),
                "",
                Some("orders"),
            ),
            with_tag(
                ctl(9, OUT, "basic.consume-ok", 1),
                "amq.ctag-1",
                Some("orders"),
            ),
            BrokerEvent {
                consumer_tag: Some("amq.ctag-1".into()),
                delivery_tag: Some(1),
                redelivered: Some(false),
                destination: Some(msg_dest("", "orders", Some("orders"))),
                body_size: Some(5),
                fingerprint: Some(Fingerprint::of(b"hello")),
                props: Some(MessageProps::default()),
                ..ev(10, OUT, EventKind::Deliver, "basic.deliver", 1)
            },
            with_tag(
                ev(11, IN, EventKind::Subscribe, "basic.consume", 1),
                "mine",
                Some("audit"),
            ),
            with_tag(
                ev(12, IN, EventKind::Unsubscribe, "basic.cancel", 1),
                "amq.ctag-1",
                Some("orders"),
            ),
            with_tag(ctl(13, OUT, "basic.cancel-ok", 1), "amq.ctag-1", None),
            with_tag(
                ev(14, OUT, EventKind::Unsubscribe, "basic.cancel", 1),
                "mine",
                Some("audit"),
            ),
        ],
    );
}

#[test]
fn publish_with_properties_and_multi_frame_body() {
    let (events, stats) = check(&s_publish());
    let b = body(1000, 0);
    assert_tail(
        &events,
        &[
            BrokerEvent {
                destination: Some(msg_dest("orders", "eu.created", None)),
                body_size: Some(1000),
                fingerprint: Some(Fingerprint::of(&b)),
                props: Some(trace_props()),
                ..ev(8, IN, EventKind::Publish, "basic.publish", 1)
            },
            BrokerEvent {
                destination: Some(msg_dest("", "q", None)),
                body_size: Some(0),
                fingerprint: Some(Fingerprint::of(b"")),
                props: Some(MessageProps::default()),
                ..ev(9, IN, EventKind::Publish, "basic.publish", 1)
            },
        ],
    );
    // method + header + 4 body frames, method + header.
    assert_eq!(stats.frames, 8 + 6 + 2);
    assert_eq!(stats.buffered_bytes, 0);
}

#[test]
fn publisher_confirms_expand_multiple() {
    let (events, _) = check(&s_confirms());
    let publish = |k: u8| BrokerEvent {
        destination: Some(msg_dest("x", "rk", None)),
        body_size: Some(10),
        fingerprint: Some(Fingerprint::of(&body(10, k))),
        props: Some(MessageProps::default()),
        publish_seq: Some(u64::from(k) + 1),
        ..ev(10, IN, EventKind::Publish, "basic.publish", 1)
    };
    let settle = |k, kind, method, seq, multiple| BrokerEvent {
        delivery_tag: Some(seq),
        publish_seq: Some(seq),
        multiple: Some(multiple),
        ..ev(k, OUT, kind, method, 1)
    };
    let mut want = vec![
        ctl(8, IN, "confirm.select", 1),
        ctl(9, OUT, "confirm.select-ok", 1),
    ];
    want.extend((0..5).map(publish));
    want.extend([
        settle(11, EventKind::Confirm, "basic.ack", 2, false),
        // ack 3 multiple: 1 and 3 are outstanding (2 was confirmed alone).
        settle(12, EventKind::Confirm, "basic.ack", 1, true),
        settle(12, EventKind::Confirm, "basic.ack", 3, true),
        settle(13, EventKind::Nack, "basic.nack", 4, true),
        settle(13, EventKind::Nack, "basic.nack", 5, true),
    ]);
    assert_tail(&events, &want);
}

#[test]
fn broker_ack_without_confirm_select_seen_is_reported_as_is() {
    let (events, _) = check(&[o(&[ack(1, 9, true)])]);
    assert_eq!(
        events,
        vec![BrokerEvent {
            delivery_tag: Some(9),
            publish_seq: Some(9),
            multiple: Some(true),
            ..ev(0, OUT, EventKind::Confirm, "basic.ack", 1)
        }]
    );
}

#[test]
fn client_ack_nack_reject_are_not_expanded() {
    let (events, _) = check(&s_client_settle());
    let e = |k, kind, method, tag, multiple: Option<bool>, requeue: Option<bool>| BrokerEvent {
        delivery_tag: Some(tag),
        multiple,
        requeue,
        ..ev(k, IN, kind, method, 1)
    };
    assert_tail(
        &events,
        &[
            e(8, EventKind::Ack, "basic.ack", 7, Some(false), None),
            e(9, EventKind::Ack, "basic.ack", 9, Some(true), None),
            e(
                10,
                EventKind::Nack,
                "basic.nack",
                10,
                Some(false),
                Some(true),
            ),
            e(
                11,
                EventKind::Nack,
                "basic.nack",
                12,
                Some(true),
                Some(false),
            ),
            e(12, EventKind::Reject, "basic.reject", 13, None, Some(false)),
        ],
    );
}

#[test]
fn get_ok_and_get_empty() {
    let (events, _) = check(&s_get());
    let q = |name: &str| {
        Some(Destination {
            queue: Some(name.into()),
            ..vhost()
        })
    };
    assert_tail(
        &events,
        &[
            BrokerEvent {
                destination: q("orders"),
                ..ctl(8, IN, "basic.get", 1)
            },
            BrokerEvent {
                delivery_tag: Some(1),
                redelivered: Some(true),
                message_count: Some(41),
                destination: Some(msg_dest("", "orders", Some("orders"))),
                body_size: Some(7),
                fingerprint: Some(Fingerprint::of(b"payload")),
                props: Some(MessageProps::default()),
                ..ev(9, OUT, EventKind::Deliver, "basic.get-ok", 1)
            },
            BrokerEvent {
                destination: q("empty"),
                ..ctl(10, IN, "basic.get", 1)
            },
            BrokerEvent {
                destination: q("empty"),
                ..ctl(11, OUT, "basic.get-empty", 1)
            },
        ],
    );
}

#[test]
fn basic_return() {
    let (events, _) = check(&s_return());
    let common = |e: BrokerEvent| BrokerEvent {
        destination: Some(msg_dest("", "nowhere", None)),
        body_size: Some(4),
        fingerprint: Some(Fingerprint::of(b"lost")),
        props: Some(MessageProps::default()),
        ..e
    };
    assert_tail(
        &events,
        &[
            common(ev(8, IN, EventKind::Publish, "basic.publish", 1)),
            common(BrokerEvent {
                reply_code: Some(312),
                reply_text: Some("NO_ROUTE".into()),
                ..ev(9, OUT, EventKind::Return, "basic.return", 1)
            }),
        ],
    );
}

#[test]
fn unknown_methods_are_skipped_without_resync() {
    let (events, stats) = check(&s_unknown_method());
    assert_tail(
        &events,
        &[BrokerEvent {
            delivery_tag: Some(1),
            multiple: Some(false),
            ..ev(8, IN, EventKind::Ack, "basic.ack", 1)
        }],
    );
    assert_eq!(
        (stats.malformed, stats.resyncs, stats.skipped_bytes),
        (2, 0, 0)
    );
}

#[test]
fn realistic_session() {
    let steps = s_session();
    let (events, stats) = check(&steps);
    let props = |id: &str| {
        Some(MessageProps {
            message_id: Some(id.into()),
            delivery_mode: Some(2),
            ..Default::default()
        })
    };
    let publish = |k: u8| BrokerEvent {
        destination: Some(msg_dest("", "orders", None)),
        body_size: Some(300),
        fingerprint: Some(Fingerprint::of(&body(300, k))),
        props: props(["m1", "m2", "m3"][k as usize]),
        publish_seq: Some(u64::from(k) + 1),
        ..ev(12, IN, EventKind::Publish, "basic.publish", 1)
    };
    let confirm = |k, seq, multiple| BrokerEvent {
        delivery_tag: Some(seq),
        publish_seq: Some(seq),
        multiple: Some(multiple),
        ..ev(k, OUT, EventKind::Confirm, "basic.ack", 1)
    };
    let deliver = |k, tag, redelivered, m: u8| BrokerEvent {
        consumer_tag: Some("amq.ctag-1".into()),
        delivery_tag: Some(tag),
        redelivered: Some(redelivered),
        destination: Some(msg_dest("", "orders", Some("orders"))),
        body_size: Some(300),
        fingerprint: Some(Fingerprint::of(&body(300, m))),
        props: props(["m1", "m2", "m3"][m as usize]),
        ..ev(k, OUT, EventKind::Deliver, "basic.deliver", 1)
    };
    let orders = || {
        Some(Destination {
            queue: Some("orders".into()),
            ..vhost()
        })
    };
    let lost = |e: BrokerEvent| BrokerEvent {
        destination: Some(msg_dest("", "nowhere", None)),
        body_size: Some(4),
        fingerprint: Some(Fingerprint::of(b"lost")),
        props: props("m4"),
        ..e
    };
    let mut want = handshake_events();
    want.extend([
        ctl(6, IN, "channel.open", 1),
        ev(7, OUT, EventKind::ChannelOpened, "channel.open-ok", 1),
        ctl(8, IN, "confirm.select", 1),
        ctl(9, OUT, "confirm.select-ok", 1),
        BrokerEvent {
            destination: Some(queue_dest("orders")),
            ..ev(10, IN, EventKind::Declare, "queue.declare", 1)
        },
        BrokerEvent {
            destination: Some(queue_dest("orders")),
            message_count: Some(0),
            consumer_count: Some(0),
            ..ctl(11, OUT, "queue.declare-ok", 1)
        },
        publish(0),
        publish(1),
        publish(2),
        confirm(13, 1, true),
        confirm(13, 2, true),
        confirm(13, 3, true),
        BrokerEvent {
            consumer_tag: Some(String::new()),
            destination: orders(),
            ..ev(14, IN, EventKind::Subscribe, "basic.consume", 1)
        },
        BrokerEvent {
            consumer_tag: Some("amq.ctag-1".into()),
            destination: orders(),
            ..ctl(15, OUT, "basic.consume-ok", 1)
        },
        deliver(16, 1, false, 0),
        deliver(16, 2, false, 1),
        BrokerEvent {
            delivery_tag: Some(2),
            multiple: Some(true),
            ..ev(17, IN, EventKind::Ack, "basic.ack", 1)
        },
        deliver(18, 3, false, 2),
        BrokerEvent {
            delivery_tag: Some(3),
            multiple: Some(false),
            requeue: Some(true),
            ..ev(19, IN, EventKind::Nack, "basic.nack", 1)
        },
        deliver(20, 4, true, 2),
        BrokerEvent {
            delivery_tag: Some(4),
            multiple: Some(false),
            ..ev(21, IN, EventKind::Ack, "basic.ack", 1)
        },
        BrokerEvent {
            destination: orders(),
            ..ctl(22, IN, "basic.get", 1)
        },
        BrokerEvent {
            delivery_tag: Some(5),
            redelivered: Some(false),
            message_count: Some(0),
            destination: Some(msg_dest("", "orders", Some("orders"))),
            body_size: Some(300),
            fingerprint: Some(Fingerprint::of(&body(300, 0))),
            props: props("m1"),
            ..ev(23, OUT, EventKind::Deliver, "basic.get-ok", 1)
        },
        BrokerEvent {
            destination: orders(),
            ..ctl(24, IN, "basic.get", 1)
        },
        BrokerEvent {
            destination: orders(),
            ..ctl(25, OUT, "basic.get-empty", 1)
        },
        lost(BrokerEvent {
            publish_seq: Some(4),
            ..ev(26, IN, EventKind::Publish, "basic.publish", 1)
        }),
        lost(BrokerEvent {
            reply_code: Some(312),
            reply_text: Some("NO_ROUTE".into()),
            ..ev(27, OUT, EventKind::Return, "basic.return", 1)
        }),
        confirm(27, 4, false),
        BrokerEvent {
            reply_code: Some(200),
            reply_text: Some("bye".into()),
            ..ctl(28, IN, "connection.close", 0)
        },
        ctl(29, OUT, "connection.close-ok", 0),
    ]);
    assert_eq!(events, want);
    assert_eq!(
        (
            stats.malformed,
            stats.resyncs,
            stats.skipped_bytes,
            stats.oversize,
            stats.buffered_bytes
        ),
        (0, 0, 0, 0, 0)
    );
    let total: usize = steps
        .iter()
        .map(|s| if let Step::Data(_, b) = s { b.len() } else { 0 })
        .sum();
    assert_eq!(stats.bytes, total as u64);

    // The password never leaves the wire bytes: not in events, not in the decoder (also while
    // the start-ok frame is half buffered).
    let (_, _, dec) = run(&steps);
    assert!(!format!("{events:?}").contains("secretpassword"));
    assert!(!format!("{dec:?}").contains("secretpassword"));
    let Step::Data(_, start_ok) = &steps[2] else {
        unreachable!()
    };
    let (_, _, mut half) = run(&steps[..2]);
    let conn = conn();
    half.on_data(
        &Ctx {
            conn: &conn,
            dir: IN,
            ts_ns: 0,
        },
        &start_ok[..start_ok.len() - 3],
        &mut |_| {},
    );
    assert_eq!(half.stats().buffered_bytes, start_ok.len() - 3);
    assert!(!format!("{half:?}").contains("secretpassword"));
}

#[test]
fn gap_mid_body_drops_that_message_and_resyncs() {
    let (events, stats) = check(&s_gap());
    assert_tail(
        &events,
        &[BrokerEvent {
            destination: Some(msg_dest("", "b", None)),
            body_size: Some(6),
            fingerprint: Some(Fingerprint::of(b"second")),
            props: Some(MessageProps::default()),
            ..ev(10, IN, EventKind::Publish, "basic.publish", 1)
        }],
    );
    assert_eq!(stats.resyncs, 1);
    // Body frame 2 (108 bytes) was cut 30 bytes in, for 50 bytes: its last 28 bytes were
    // skipped; frame 3 was proven and decoded as an orphan body.
    assert_eq!(stats.skipped_bytes, 28);
    assert_eq!(stats.malformed, 0);
}

#[test]
fn mid_stream_join_finds_the_next_frame() {
    let (events, stats) = check(&s_mid_stream());
    assert_eq!(
        events,
        vec![BrokerEvent {
            consumer_tag: Some("ctag".into()),
            delivery_tag: Some(2),
            redelivered: Some(false),
            destination: Some(Destination {
                exchange: Some("ex".into()),
                routing_key: Some("rk".into()),
                ..Default::default()
            }),
            body_size: Some(4),
            fingerprint: Some(Fingerprint::of(b"next")),
            props: Some(MessageProps::default()),
            ..ev(0, OUT, EventKind::Deliver, "basic.deliver", 1)
        }]
    );
    // 120 bytes back from the end of `first` = 119 of its body payload + end octet.
    assert_eq!(
        (stats.resyncs, stats.skipped_bytes, stats.malformed),
        (1, 120, 0)
    );
}

#[test]
fn joining_at_a_frame_boundary_costs_no_resync() {
    let (events, stats) = check(&[o(&[start(), tune(30, 131072)])]);
    assert_eq!(
        events,
        vec![
            ctl(0, OUT, "connection.start", 0),
            ctl(0, OUT, "connection.tune", 0)
        ]
    );
    assert_eq!((stats.resyncs, stats.skipped_bytes), (0, 0));
}

#[test]
fn broken_frames_are_counted_and_resynced() {
    let (events, stats) = check(&s_broken());
    let a = |k, tag| BrokerEvent {
        delivery_tag: Some(tag),
        multiple: Some(false),
        ..ev(k, IN, EventKind::Ack, "basic.ack", 1)
    };
    assert_tail(&events, &[a(8, 2), a(9, 3), a(10, 4), a(11, 5)]);
    assert_eq!(stats.malformed, 4);
    assert_eq!(stats.resyncs, 4);
    assert_eq!(stats.oversize, 0);
}

#[test]
fn oversize_frames_are_skipped_unbuffered() {
    let (events, stats) = check(&s_oversize());
    assert_tail(
        &events,
        &[BrokerEvent {
            delivery_tag: Some(1),
            multiple: Some(false),
            ..ev(8, IN, EventKind::Ack, "basic.ack", 1)
        }],
    );
    assert_eq!((stats.oversize, stats.malformed, stats.resyncs), (1, 0, 0));
    // Fed in small pieces, nothing of the big frame is ever buffered beyond its 7-byte header.
    let (_, _, dec) = run_with(&s_oversize(), &mut |k, len| {
        if k == 8 {
            vec![1000; len / 1000 + 1]
        } else {
            vec![len]
        }
    });
    assert_eq!(dec.stats().buffered_bytes, 0);
}

#[test]
fn broker_protocol_header_is_consumed() {
    let (events, stats) = check(&s_broker_header());
    assert!(events.is_empty());
    assert_eq!(
        (
            stats.frames,
            stats.malformed,
            stats.resyncs,
            stats.buffered_bytes
        ),
        (0, 0, 0, 0)
    );
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
        let mut dec = AmqpDecoder::new();
        let mut events = 0usize;
        let mut out = |_: BrokerEvent| events += 1;
        let mut fed = 0;
        for dir in [IN, OUT] {
            let ctx = Ctx {
                conn: &conn,
                dir,
                ts_ns: 1,
            };
            if synced {
                let head = if dir == IN {
                    [HEADER.to_vec(), ch_open(1)].concat()
                } else {
                    ch_open_ok(1)
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
        }
        let s = dec.stats();
        assert_eq!(s.bytes, (2 * garbage.len() + fed) as u64);
        if synced {
            assert!(s.malformed + s.oversize >= 2, "{s:?}");
        }
        assert!(s.resyncs >= 1 && s.skipped_bytes > 0, "{s:?}");
    }
}

#[test]
fn truncated_and_absurd_frames() {
    let conn = conn();
    let ctx = Ctx {
        conn: &conn,
        dir: IN,
        ts_ns: 1,
    };
    let mut dec = AmqpDecoder::new();
    let mut events = Vec::new();
    dec.on_data(&ctx, HEADER, &mut |e| events.push(e));
    // Absurd size: lost sync, nothing buffered.
    dec.on_data(&ctx, &[1, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF], &mut |e| {
        events.push(e)
    });
    assert_eq!(dec.stats().malformed, 1);
    assert!(dec.stats().buffered_bytes <= 6);
    // Truncated frames: each waits (bounded), never emits.
    let f = ack(1, 1, false);
    for cut in 1..f.len() {
        let mut d = AmqpDecoder::new();
        d.on_data(&ctx, &[HEADER, &f[..cut]].concat(), &mut |e| events.push(e));
        assert_eq!(d.stats().buffered_bytes, cut);
        d.on_end(&ctx, &mut |e| events.push(e));
        assert_eq!(d.stats().buffered_bytes, 0);
    }
    // A resync waiting on a candidate claiming the largest allowed size holds ≤ limit + 8.
    let mut d = AmqpDecoder::new();
    d.on_data(&ctx, &[0xAA], &mut |e| events.push(e));
    let claim = [3, 0, 1, 0, 0x10, 0, 0]; // body frame, size = 1 MiB = MAX_FRAME
    d.on_data(&ctx, &claim, &mut |e| events.push(e));
    for _ in 0..40 {
        d.on_data(&ctx, &[b'z'; 65536], &mut |e| events.push(e));
        d.assert_bounded();
    }
    assert!(d.stats().skipped_bytes >= 1 << 20);
    assert!(events.is_empty());
}

#[test]
fn frame_limit_follows_tune() {
    let mut steps = handshake();
    // frame_max 4096 (the minimum): a 5000-byte method frame is oversize.
    steps[3] = o(&[tune(30, 4096)]);
    steps[4] = i(&[tune(31, 4096), open("/")]);
    steps.push(i(&[
        m(0, 10, 60, A::new().long(&[b'q'; 5000])),
        ack(1, 1, false),
    ]));
    let (events, stats) = check(&steps);
    assert_eq!(stats.oversize, 1);
    assert_eq!(events.last().map(|e| e.kind), Some(EventKind::Ack));
}

#[test]
fn client_fin_drops_the_cut_message_but_keeps_confirm_numbering() {
    let (events, stats) = check(&s_client_fin());
    let publish = |k: u8| BrokerEvent {
        destination: Some(msg_dest("x", "rk", None)),
        body_size: Some(10),
        fingerprint: Some(Fingerprint::of(&body(10, k))),
        props: Some(MessageProps::default()),
        publish_seq: Some(u64::from(k) + 1),
        ..ev(9, IN, EventKind::Publish, "basic.publish", 1)
    };
    let confirm = |seq| BrokerEvent {
        delivery_tag: Some(seq),
        publish_seq: Some(seq),
        multiple: Some(true),
        ..ev(12, OUT, EventKind::Confirm, "basic.ack", 1)
    };
    assert_tail(
        &events,
        &[
            ctl(8, IN, "confirm.select", 1),
            publish(0),
            publish(1),
            confirm(1),
            confirm(2),
        ],
    );
    assert_eq!((stats.resyncs, stats.buffered_bytes), (0, 0));
}

#[test]
fn on_end_and_gap_drop_partial_state() {
    let (events, stats) = check(&with_channel(vec![
        i(&[
            publish(1, "", "q"),
            frame(2, 1, &header_payload(10, &P::default())),
            frame(3, 1, b"12345"),
        ]),
        Step::Gap(IN, 100),
        Step::End(IN),
    ]));
    assert_eq!(events.len(), channel_events().len());
    assert_eq!(stats.buffered_bytes, 0);
    assert_eq!(stats.resyncs, 1);
}

#[test]
fn field_values_render() {
    use super::wire::{Reader, read_value, render};
    let value = |tag: u8, bytes: &[u8]| {
        let v = [&[tag], bytes].concat();
        render(read_value(&mut Reader::new(&v)).unwrap(), 256)
    };
    assert_eq!(value(b't', &[1]), "true");
    assert_eq!(value(b'b', &[0xFF]), "-1");
    assert_eq!(value(b'B', &[0xFF]), "255");
    assert_eq!(value(b's', &(-2i16).to_be_bytes()), "-2");
    assert_eq!(value(b'U', &(-3i16).to_be_bytes()), "-3");
    assert_eq!(value(b'u', &65535u16.to_be_bytes()), "65535");
    assert_eq!(value(b'I', &(-4i32).to_be_bytes()), "-4");
    assert_eq!(value(b'i', &u32::MAX.to_be_bytes()), "4294967295");
    assert_eq!(value(b'L', &(-5i64).to_be_bytes()), "-5");
    assert_eq!(value(b'l', &6i64.to_be_bytes()), "6");
    assert_eq!(value(b'f', &1.5f32.to_be_bytes()), "1.5");
    assert_eq!(value(b'd', &(-0.25f64).to_be_bytes()), "-0.25");
    assert_eq!(value(b'D', &[2, 0, 0, 0x30, 0x39]), "123.45");
    assert_eq!(value(b'D', &[3, 0, 0, 0, 5]), "0.005");
    assert_eq!(value(b'S', &long("héllo".as_bytes())), "héllo");
    assert_eq!(value(b'T', &1_700_000_000u64.to_be_bytes()), "1700000000");
    assert_eq!(value(b'V', &[]), "null");
    assert_eq!(value(b'x', &long(b"abc")), "abc");
    assert_eq!(value(b'x', &long(&[0xFF, 0x00])), "0xff00");
    let array = [
        vec![b'I'],
        1i32.to_be_bytes().to_vec(),
        vec![b'S'],
        long(b"two"),
    ]
    .concat();
    assert_eq!(value(b'A', &long(&array)), "[1, two]");
    let x_death = T::new()
        .raw("count", b'l', &1i64.to_be_bytes())
        .str("reason", "rejected")
        .raw("keys", b'A', &long(&[&[b'S'][..], &long(b"q")].concat()));
    assert_eq!(
        value(b'F', &long(&x_death.0)),
        "{count: 1, reason: rejected, keys: [q]}"
    );
    // Long values are cut at 256 bytes, on a character boundary.
    assert_eq!(value(b'S', &long(&[b'a'; 1000])).len(), 256);
    let cut = value(b'S', &long("é".repeat(200).as_bytes()));
    assert_eq!(cut.len(), 256);
    assert!(cut.chars().all(|c| c == 'é'));
    // Deep nesting renders without recursion blow-up.
    let mut nested = T::new().str("k", "v").0;
    for _ in 0..10_000 {
        nested = T::new().raw("n", b'F', &long(&nested)).0;
    }
    let deep = value(b'F', &long(&nested));
    assert!(deep.contains("{…}") && deep.len() <= 256);
    // Unknown type tags do not decode.
    assert!(read_value(&mut Reader::new(b"Z")).is_err());
}

#[test]
fn headers_are_bounded() {
    let mut t = T::new();
    for k in 0..40 {
        t = t.str(&format!("h{k}"), &"v".repeat(300));
    }
    t = t.str("traceparent", "00-abc-def-01");
    let steps = with_channel(vec![i(&[
        publish(1, "", "q"),
        content(
            1,
            &P {
                headers: Some(t),
                ..P::default()
            },
            b"x",
            4096,
        ),
    ])]);
    let (events, _, _) = run(&steps);
    let props = events.last().unwrap().props.clone().unwrap();
    assert_eq!(props.headers.len(), 32);
    assert!(props.headers.iter().all(|(_, v)| v.len() == 256));
    assert_eq!(props.traceparent.as_deref(), Some("00-abc-def-01"));
}

#[test]
fn undecodable_content_header_is_malformed() {
    // Header frame claiming class 61: counted, resynced, the next publish decodes.
    let bad = frame(2, 1, &[A::new().u16(61).u16(0).u64(1).u16(0).0].concat());
    let good = [publish(1, "", "ok"), content(1, &P::default(), b"1", 4096)].concat();
    let (events, stats) = check(&with_channel(vec![i(&[
        publish(1, "", "bad"),
        bad,
        frame(3, 1, b"1"),
        good,
    ])]));
    assert_eq!(
        events
            .last()
            .and_then(|e| e.destination.as_ref())
            .and_then(|d| d.routing_key.as_deref()),
        Some("ok")
    );
    assert_eq!(events.len(), channel_events().len() + 1);
    assert_eq!((stats.malformed, stats.resyncs), (1, 1));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Every script decodes to the same events and counters however its bytes are chunked.
    #[test]
    fn random_chunkings_agree(which in 0usize..23, sizes in prop::collection::vec(1usize..300, 1..64)) {
        let all = scripts();
        prop_assert_eq!(all.len(), 23);
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
        let mut dec = AmqpDecoder::new();
        if prefix {
            dec.on_data(&Ctx { conn: &conn, dir: IN, ts_ns: 0 }, HEADER, &mut |_| {});
        }
        for (egress, bytes) in &chunks {
            let ctx = Ctx { conn: &conn, dir: Direction::from_egress(*egress), ts_ns: 0 };
            dec.on_data(&ctx, bytes, &mut |_| {});
            dec.assert_bounded();
        }
    }
}

/// Throughput on the realistic session, repeated to ~100 MB:
/// `cargo test --release -p observer --lib protocol::amqp::tests::throughput -- --ignored --nocapture`
#[test]
#[ignore]
fn throughput() {
    testkit::throughput("amqp", &conn(), AmqpDecoder::new, &s_session());
}

/// The realistic session is the decoder benchmark's input (benches/decoders).
#[test]
fn bench_fixture_is_current() {
    testkit::fixture("amqp", &s_session());
}
