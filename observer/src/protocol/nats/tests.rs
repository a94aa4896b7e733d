//! Tests: byte-literal encoders (below), a harness that decodes every script whole, split in
//! two at every byte of every step, and (proptest) in random chunkings, and checks all agree.
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

// ---------------------------------------------------------------------------------------------
// Encoders

/// A control line with its CRLF.
fn l(s: &str) -> Vec<u8> {
    format!("{s}\r\n").into_bytes()
}

fn with_payload(line: String, payload: &[u8]) -> Vec<u8> {
    let mut v = line.into_bytes();
    v.extend_from_slice(b"\r\n");
    v.extend_from_slice(payload);
    v.extend_from_slice(b"\r\n");
    v
}

fn reply_arg(reply: Option<&str>) -> String {
    reply.map(|r| format!(" {r}")).unwrap_or_default()
}

fn pub_(subject: &str, reply: Option<&str>, payload: &[u8]) -> Vec<u8> {
    let line = format!("PUB {subject}{} {}", reply_arg(reply), payload.len());
    with_payload(line, payload)
}

fn hpub(subject: &str, reply: Option<&str>, hdr: &[u8], payload: &[u8]) -> Vec<u8> {
    let total = hdr.len() + payload.len();
    let line = format!("HPUB {subject}{} {} {total}", reply_arg(reply), hdr.len());
    with_payload(line, &[hdr, payload].concat())
}

fn msg(subject: &str, sid: &str, reply: Option<&str>, payload: &[u8]) -> Vec<u8> {
    let line = format!("MSG {subject} {sid}{} {}", reply_arg(reply), payload.len());
    with_payload(line, payload)
}

fn hmsg(subject: &str, sid: &str, reply: Option<&str>, hdr: &[u8], payload: &[u8]) -> Vec<u8> {
    let total = hdr.len() + payload.len();
    let line = format!(
        "HMSG {subject} {sid}{} {} {total}",
        reply_arg(reply),
        hdr.len()
    );
    with_payload(line, &[hdr, payload].concat())
}

/// A `NATS/1.0` header block; `status` e.g. " 503" or "" for none.
fn hdrs(status: &str, pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut s = format!("NATS/1.0{status}\r\n");
    for (k, v) in pairs {
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    s.push_str("\r\n");
    s.into_bytes()
}

const INFO: &str = r#"INFO {"server_id":"NCXYZ","server_name":"nats-1","version":"2.10.22","proto":1,"go":"go1.22.8","host":"0.0.0.0","port":4222,"headers":true,"max_payload":1048576,"jetstream":true,"client_id":5,"client_ip":"127.0.0.1","nonce":"abc","connect_urls":["10.0.0.1:4222",{"nested":[1,"]"]}]}"#;

fn info() -> Vec<u8> {
    l(INFO)
}

fn connect_alice() -> Vec<u8> {
    l(&format!(
        r#"CONNECT {{"verbose":false,"pedantic":false,"user":"alice","pass":"{CANARY}","tls_required":false,"name":"orders-svc","lang":"go","version":"1.37.0","protocol":1,"echo":true,"headers":true,"no_responders":true}}"#
    ))
}

const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

fn trace_hdrs() -> Vec<u8> {
    hdrs(
        "",
        &[
            ("traceparent", TRACEPARENT),
            ("tracestate", "congo=t61rcWkgMzE"),
            ("Nats-Msg-Id", "m-2"),
            ("X-Tenant", "acme"),
        ],
    )
}

fn trace_props() -> MessageProps {
    MessageProps {
        message_id: Some("m-2".into()),
        traceparent: Some(TRACEPARENT.into()),
        tracestate: Some("congo=t61rcWkgMzE".into()),
        headers: vec![("X-Tenant".into(), "acme".into())],
        ..Default::default()
    }
}

/// v2 ack subject of the realistic session's pull consumer.
fn ack2(delivered: u64, sseq: u64, cseq: u64, pending: u64) -> String {
    format!(
        "$JS.ACK.hub.ACCHASH.ORDERS.billing.{delivered}.{sseq}.{cseq}.17000000000000000{cseq:02}.{pending}.r{cseq}"
    )
}

/// v1 ack subject.
fn ack1(delivered: u64, sseq: u64, cseq: u64, pending: u64) -> String {
    format!("$JS.ACK.ORDERS.push.{delivered}.{sseq}.{cseq}.1700000000000000000.{pending}")
}

// ---------------------------------------------------------------------------------------------
// Harness

fn conn() -> ConnRef {
    ConnRef {
        id: ConnId(9),
        pid: Some(42),
        local: "127.0.0.1:4222".parse().unwrap(),
        peer: "127.0.0.1:50000".parse().unwrap(),
    }
}

fn ctx(conn: &ConnRef, dir: Direction, ts_ns: u64) -> Ctx<'_> {
    Ctx { conn, dir, ts_ns }
}

/// Decodes `steps`, each data step cut into pieces of the lengths `cuts(step, len)` returns.
fn run_with(
    steps: &[Step],
    cuts: &mut dyn FnMut(usize, usize) -> Vec<usize>,
) -> (Vec<BrokerEvent>, DecoderStats, NatsDecoder) {
    testkit::run_with(&conn(), NatsDecoder::new(), steps, cuts)
}

impl Bounded for NatsDecoder {
    fn assert_bounded(&self) {
        let dec = self;
        for f in &dec.framers {
            assert!(f.line.len() <= MAX_JSON_LINE + 1, "line {}", f.line.len());
            assert!(f.hdr.len() <= MAX_HEADER_BLOCK, "hdr {}", f.hdr.len());
            assert!(f.body.len() <= MAX_CAPTURE, "body {}", f.body.len());
        }
    }
}

fn run(steps: &[Step]) -> (Vec<BrokerEvent>, DecoderStats, NatsDecoder) {
    run_with(steps, &mut |_, len| vec![len])
}

/// See [`testkit::check`].
fn check(steps: &[Step]) -> (Vec<BrokerEvent>, DecoderStats) {
    testkit::check(&conn(), NatsDecoder::new, steps)
}

fn ev(k: usize, dir: Direction, kind: EventKind, method: &'static str) -> BrokerEvent {
    let mut e = BrokerEvent::new(ts(k), System::Nats, kind, conn(), dir);
    e.method = Some(method);
    e
}

fn subj(s: &str) -> Option<Destination> {
    Some(Destination {
        subject: Some(s.into()),
        ..Default::default()
    })
}

fn subj_q(s: &str, q: &str) -> Option<Destination> {
    Some(Destination {
        subject: Some(s.into()),
        queue: Some(q.into()),
        ..Default::default()
    })
}

fn resource(name: &str, r: &'static str) -> Option<Destination> {
    Some(Destination {
        subject: Some(name.into()),
        resource: Some(r),
        ..Default::default()
    })
}

fn attrs(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

fn info_event(k: usize) -> BrokerEvent {
    BrokerEvent {
        attrs: attrs(&[
            ("server_id", "NCXYZ"),
            ("server_name", "nats-1"),
            ("version", "2.10.22"),
            ("proto", "1"),
            ("max_payload", "1048576"),
            ("headers", "true"),
            ("jetstream", "true"),
        ]),
        ..ev(k, OUT, EventKind::Control, "INFO")
    }
}

fn connect_alice_event(k: usize) -> BrokerEvent {
    BrokerEvent {
        user: Some("alice".into()),
        client_id: Some("orders-svc".into()),
        mechanism: Some("user_password".into()),
        attrs: attrs(&[
            ("lang", "go"),
            ("version", "1.37.0"),
            ("protocol", "1"),
            ("verbose", "false"),
            ("pedantic", "false"),
            ("headers", "true"),
            ("echo", "true"),
            ("no_responders", "true"),
        ]),
        ..ev(k, IN, EventKind::Control, "CONNECT")
    }
}

fn auth(k: usize, method: &'static str, user: Option<&str>, mech: &str, ok: bool) -> BrokerEvent {
    BrokerEvent {
        user: user.map(String::from),
        mechanism: Some(mech.into()),
        outcome: Some(if ok {
            Outcome::Success
        } else {
            Outcome::Failure
        }),
        ..ev(k, OUT, EventKind::Auth, method)
    }
}

/// A plain Publish.
fn publish(
    k: usize,
    method: &'static str,
    s: &str,
    reply: Option<&str>,
    body: &[u8],
) -> BrokerEvent {
    BrokerEvent {
        destination: subj(s),
        reply_to: reply.map(String::from),
        body_size: Some(body.len() as u64),
        fingerprint: Some(Fingerprint::of(body)),
        ..ev(k, IN, EventKind::Publish, method)
    }
}

/// A plain Deliver (`sub`: the subscription pattern).
fn deliver(
    k: usize,
    method: &'static str,
    s: &str,
    sid: &str,
    reply: Option<&str>,
    body: &[u8],
    sub: Option<&str>,
) -> BrokerEvent {
    BrokerEvent {
        destination: subj(s),
        consumer_tag: Some(sid.into()),
        reply_to: reply.map(String::from),
        body_size: Some(body.len() as u64),
        fingerprint: Some(Fingerprint::of(body)),
        attrs: sub
            .map(|p| vec![("subscription", p.to_string())])
            .unwrap_or_default(),
        ..ev(k, OUT, EventKind::Deliver, method)
    }
}

// ---------------------------------------------------------------------------------------------
// Scripts (each also runs under random chunkings in `random_chunkings_agree`)

fn s_handshake() -> Vec<Step> {
    vec![
        o(&[info()]),
        i(&[connect_alice(), l("PING")]),
        o(&[l("PONG")]),
        i(&[l("PING")]),
        o(&[l("PONG")]),
    ]
}

fn s_token() -> Vec<Step> {
    vec![
        o(&[l(
            r#"INFO {"server_id":"S2","version":"2.10.0","auth_required":true,"max_payload":65536}"#,
        )]),
        i(&[
            l(&format!(
                r#"CONNECT {{"auth_token":"{CANARY}","verbose":true,"name":"tok\"en\u00e9"}}"#
            )),
            l("PING"),
        ]),
        o(&[l("+OK"), l("PONG")]),
    ]
}

fn s_jwt() -> Vec<Step> {
    vec![
        i(&[
            l(&format!(
                r#"CONNECT {{"jwt":"eyJ0eXAiOiJKV1QifQ.{CANARY}","sig":"{CANARY}","lang":"rust"}}"#
            )),
            l("SUB a 1"),
        ]),
        o(&[msg("a", "1", None, b"x")]),
    ]
}

fn s_nkey_and_none() -> Vec<Step> {
    vec![
        i(&[l(&format!(r#"CONNECT {{"nkey":"UABC","sig":"{CANARY}"}}"#))]),
        o(&[l("PONG")]),
    ]
}

fn s_auth_failure() -> Vec<Step> {
    vec![
        o(&[info()]),
        i(&[
            l(&format!(r#"CONNECT {{"user":"bob","pass":"{CANARY}"}}"#)),
            l("PING"),
        ]),
        o(&[l("-ERR 'Authorization Violation'")]),
        // Not pending any more: an error.
        o(&[l("-ERR 'Authentication Timeout'")]),
    ]
}

fn s_errors() -> Vec<Step> {
    vec![
        i(&[l(r#"CONNECT {"user":"carol"}"#)]),
        o(&[l("-ERR 'Unknown Protocol Operation'")]),
        o(&[l("PONG")]),
        o(&[l("-ERR 'Slow Consumer'"), l("-ERR")]),
    ]
}

fn s_subs() -> Vec<Step> {
    vec![
        i(&[l("SUB foo.* 1"), l("SUB bar q1 2"), l("UNSUB 2 2")]),
        o(&[
            msg("foo.x", "1", None, b"a"),
            msg("bar", "2", Some("_INBOX.z"), b"b"),
            msg("bar", "2", None, b""),
            // sid 2 reached its max: no longer named.
            msg("bar", "2", None, b"c"),
            msg("other", "77", None, b"d"),
        ]),
        i(&[l("UNSUB 1"), l("UNSUB 99")]),
    ]
}

fn s_publish() -> Vec<Step> {
    vec![
        i(&[
            pub_("orders.new", None, b"hello"),
            pub_("empty", None, b""),
            hpub("orders.new", Some("_INBOX.h"), &trace_hdrs(), b"{\"id\":2}"),
            hpub("only.hdrs", None, &hdrs("", &[("A", "1"), ("A", "2")]), b""),
        ]),
        o(&[hmsg("orders.new", "5", None, &trace_hdrs(), b"{\"id\":2}")]),
    ]
}

fn s_request_reply() -> Vec<Step> {
    vec![
        i(&[
            l("SUB _INBOX.r7.* 2"),
            pub_("svc.echo", Some("_INBOX.r7.1"), b"ping"),
        ]),
        o(&[msg("_INBOX.r7.1", "2", None, b"pong")]),
    ]
}

fn s_pubacks() -> Vec<Step> {
    vec![
        i(&[pub_("orders.a", Some("_INBOX.pa.1"), b"{}")]),
        o(&[msg(
            "_INBOX.pa.1",
            "9",
            None,
            br#"{"stream":"ORDERS","domain":"hub","seq":42,"duplicate":true}"#,
        )]),
        i(&[pub_("orders.b", Some("_INBOX.pa.2"), b"x")]),
        o(&[msg(
            "_INBOX.pa.2",
            "9",
            None,
            br#"{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"},"stream":"ORDERS"}"#,
        )]),
        i(&[pub_("svc.q", Some("_INBOX.pa.3"), b"q")]),
        o(&[
            // A core reply: delivered. The inbox is answered; a PubAck-looking message after
            // it is just a message.
            msg("_INBOX.pa.3", "9", None, b"hello"),
            msg("_INBOX.pa.3", "9", None, br#"{"stream":"X","seq":1}"#),
        ]),
        i(&[pub_("orders.c", Some("_INBOX.pa.4"), b"c")]),
        o(&[hmsg("_INBOX.pa.4", "9", None, &hdrs(" 503", &[]), b"")]),
    ]
}

fn s_js_acks() -> Vec<Step> {
    let a = ack1(1, 10, 20, 5);
    vec![
        i(&[l("SUB deliver.push 9")]),
        o(&[msg("deliver.push", "9", Some(&a), b"abc")]),
        i(&[
            pub_(&a, None, br#"-NAK {"delay":5000000000}"#),
            pub_(&a, None, b"+TERM poison message"),
            pub_(&a, None, br#"+NXT {"batch":3}"#),
            pub_(&a, None, b"+WPI"),
            pub_(&a, Some("_INBOX.as.1"), b"+ACK"),
        ]),
        o(&[msg("_INBOX.as.1", "9", None, b"")]),
        i(&[
            pub_(&a, None, b"hello"),
            // Not an ack subject: a publish.
            pub_("$JS.ACK.bad.subject", None, b"+ACK"),
        ]),
    ]
}

fn s_js_api() -> Vec<Step> {
    let fc = "$JS.FC.ORDERS.push.xyz";
    vec![
        i(&[pub_("$JS.API.STREAM.DELETE.OLD", Some("_INBOX.j.1"), b"")]),
        o(&[msg(
            "_INBOX.j.1",
            "9",
            None,
            br#"{"type":"io.nats.jetstream.api.v1.stream_delete_response","success":true}"#,
        )]),
        i(&[pub_("$JS.API.STREAM.PURGE.ORDERS", Some("_INBOX.j.2"), b"")]),
        o(&[msg(
            "_INBOX.j.2",
            "9",
            None,
            br#"{"type":"io.nats.jetstream.api.v1.stream_purge_response","error":{"code":404,"err_code":10059,"description":"stream not found"}}"#,
        )]),
        i(&[
            pub_(
                "$JS.API.CONSUMER.CREATE.ORDERS",
                Some("_INBOX.j.3"),
                br#"{"stream_name":"ORDERS","config":{"name":"eph1","filter_subject":"orders.new"}}"#,
            ),
            pub_("$JS.API.CONSUMER.DELETE.ORDERS.eph1", None, b""),
            pub_("$JS.hub.API.STREAM.INFO.ORDERS", Some("_INBOX.j.5"), b""),
        ]),
        o(&[hmsg("_INBOX.j.5", "9", None, &hdrs(" 503", &[]), b"")]),
        i(&[pub_(
            "$JS.API.CONSUMER.MSG.NEXT.ORDERS.pull",
            Some("_INBOX.j.6"),
            br#"{"batch":2,"no_wait":true}"#,
        )]),
        o(&[
            hmsg("_INBOX.j.6", "9", None, &hdrs(" 404 No Messages", &[]), b""),
            hmsg("_INBOX.j.6", "9", None, &hdrs(" 408 Request Timeout", &[]), b""),
        ]),
        i(&[pub_("$JS.API.SOMETHING.NEW", Some("_INBOX.j.7"), b"")]),
        o(&[
            hmsg(
                "deliver.push",
                "9",
                Some(fc),
                &hdrs(" 100 FlowControl Request", &[]),
                b"",
            ),
            hmsg("deliver.push", "9", None, &hdrs(" 100 Idle Heartbeat", &[]), b""),
        ]),
        i(&[pub_(fc, None, b"")]),
    ]
}

fn s_lowercase_and_bare_lf() -> Vec<Step> {
    vec![
        i(&[b"sub low 1\npub low 2\nhi\n".to_vec(), b"Ping\r\n".to_vec()]),
        o(&[b"msg low 1 2\nhi\r\npong\n".to_vec()]),
    ]
}

/// The realistic session of the brief (22 steps after INFO/CONNECT).
fn s_session() -> Vec<Step> {
    let b = |n: u32| format!("{{\"order\":{n}}}").into_bytes();
    vec![
        /* 0 */ o(&[info()]),
        /* 1 */ i(&[connect_alice(), l("PING")]),
        /* 2 */ o(&[l("PONG")]),
        /* 3 */ i(&[l("SUB orders.* workers 1"), pub_("orders.new", None, b"hello")]),
        /* 4 */ o(&[msg("orders.new", "1", None, b"hello")]),
        /* 5 */ i(&[hpub("orders.new", None, &trace_hdrs(), &b(2))]),
        /* 6 */ o(&[hmsg("orders.new", "1", None, &trace_hdrs(), &b(2))]),
        /* 7 */
        i(&[
            l("SUB _INBOX.r7.* 2"),
            pub_("svc.echo", Some("_INBOX.r7.1"), b"ping"),
        ]),
        /* 8 */ o(&[msg("_INBOX.r7.1", "2", None, b"pong")]),
        /* 9 */
        i(&[pub_(
            "$JS.API.STREAM.CREATE.ORDERS",
            Some("_INBOX.r7.2"),
            br#"{"name":"ORDERS","subjects":["orders.*"],"retention":"limits","storage":"file","num_replicas":1}"#,
        )]),
        /* 10 */
        o(&[msg(
            "_INBOX.r7.2",
            "2",
            None,
            br#"{"type":"io.nats.jetstream.api.v1.stream_create_response","config":{"name":"ORDERS","subjects":["orders.*"]},"created":"2024-01-01T00:00:00Z","state":{"messages":0}}"#,
        )]),
        /* 11 */ i(&[pub_("orders.paid", Some("_INBOX.r7.3"), &b(7))]),
        /* 12 */ o(&[msg("_INBOX.r7.3", "2", None, br#"{"stream":"ORDERS","seq":1}"#)]),
        /* 13 */
        i(&[pub_(
            "$JS.API.CONSUMER.DURABLE.CREATE.ORDERS.billing",
            Some("_INBOX.r7.4"),
            br#"{"stream_name":"ORDERS","config":{"durable_name":"billing","ack_policy":"explicit","filter_subject":"orders.paid"}}"#,
        )]),
        /* 14 */
        o(&[msg(
            "_INBOX.r7.4",
            "2",
            None,
            br#"{"type":"io.nats.jetstream.api.v1.consumer_create_response","stream_name":"ORDERS","name":"billing","config":{"durable_name":"billing"}}"#,
        )]),
        /* 15 */
        i(&[
            l("SUB _INBOX.p9.* 3"),
            pub_(
                "$JS.API.CONSUMER.MSG.NEXT.ORDERS.billing",
                Some("_INBOX.p9.1"),
                br#"{"batch":5,"expires":30000000000}"#,
            ),
        ]),
        /* 16 */
        o(&[
            msg("_INBOX.p9.1", "3", Some(&ack2(1, 1, 1, 4)), &b(7)),
            msg("_INBOX.p9.1", "3", Some(&ack2(1, 2, 2, 3)), &b(8)),
        ]),
        /* 17 */ i(&[pub_(&ack2(1, 1, 1, 4), None, b"+ACK"), pub_(&ack2(1, 2, 2, 3), None, b"")]),
        /* 18 */ o(&[msg("_INBOX.p9.1", "3", Some(&ack2(1, 3, 3, 2)), &b(9))]),
        /* 19 */ i(&[pub_(&ack2(1, 3, 3, 2), None, b"-NAK")]),
        /* 20 */ o(&[msg("_INBOX.p9.1", "3", Some(&ack2(2, 3, 4, 2)), &b(9))]),
        /* 21 */ i(&[pub_(&ack2(2, 3, 4, 2), None, b"+ACK")]),
        /* 22 */
        o(&[
            msg("_INBOX.p9.1", "3", Some(&ack2(1, 4, 5, 1)), &b(10)),
            msg("_INBOX.p9.1", "3", Some(&ack2(1, 5, 6, 0)), &b(11)),
        ]),
        /* 23 */ i(&[pub_(&ack2(1, 4, 5, 1), None, b"+TERM"), pub_(&ack2(1, 5, 6, 0), None, b"+WPI")]),
        /* 24 */ o(&[hmsg("_INBOX.p9.1", "3", None, &hdrs(" 408 Request Timeout", &[]), b"")]),
        /* 25 */ i(&[l("UNSUB 3"), l("UNSUB 1")]),
    ]
}

/// A gap inside a payload; what follows has a "\r\nMSG " that does not parse and a MSG line
/// whose payload is not followed by CRLF, before the real next frame.
fn s_gap() -> Vec<Step> {
    vec![
        o(&[info()]),
        o(&[b"MSG a 1 10\r\n01234".to_vec()]),
        Step::Gap(OUT, 20),
        o(&[
            b"tail\r\nMSG x\r\nMSG fake 1 3\r\nabcXY\r\n".to_vec(),
            l("PING"),
            msg("b", "1", None, b"ok"),
        ]),
        // Ingress: a gap mid-line, then a partial line that is dropped by the next gap.
        i(&[b"PUB c 3\r\nab".to_vec()]),
        Step::Gap(IN, 7),
        i(&[b"9\r\nPUB d".to_vec()]),
        Step::Gap(IN, 3),
        i(&[b"x\r\n".to_vec(), pub_("e", None, b"E")]),
    ]
}

fn s_mid_stream() -> Vec<Step> {
    vec![
        o(&[b"lo world\r\n".to_vec(), msg("a", "1", None, b"hi")]),
        // Ingress joins at a line boundary: no resync.
        i(&[pub_("p", None, b"P")]),
    ]
}

fn s_malformed() -> Vec<Step> {
    vec![
        i(&[l("CONNECT {}")]),
        i(&[l("FOO bar")]),
        i(&[l("PING"), l("PUB x y")]),
        i(&[
            l("PING"),
            b"PUB x 3\r\nabcXY\r\n".to_vec(),
            pub_("ok", None, b"ok"),
        ]),
        // MSG is not a client op.
        i(&[l("MSG a 1 1"), l("PING")]),
        // Absurd byte counts: lost sync, not oversize.
        i(&[
            l("PUB big 99999999999"),
            l("PING"),
            l("PUB big 1234567890123"),
        ]),
        i(&[l("PING"), l("SUB onlysubject"), l("PING"), l("UNSUB 1 x")]),
        i(&[l("PING"), l("CONNECT {\"user\":")]),
        i(&[
            l("PING"),
            format!("PUB {} 1\r\n", "s".repeat(5000)).into_bytes(),
            l("PING"),
            pub_("after", None, b"!"),
        ]),
        o(&[
            l("INFO {}"),
            l("+OK extra"),
            l("PONG"),
            l("HMSG a 1 5 3"),
            l("PONG"),
        ]),
    ]
}

fn s_oversize() -> Vec<Step> {
    let mut big = b"PUB big 2000\r\n".to_vec();
    big.extend(std::iter::repeat_n(b'z', 2000));
    big.extend_from_slice(b"\r\n");
    vec![
        o(&[l(r#"INFO {"max_payload":1024}"#)]),
        // In sync (a first line over the limit would be taken for a mid-stream join).
        i(&[l("CONNECT {}")]),
        i(&[big, pub_("after", None, b"x")]),
    ]
}

fn s_end() -> Vec<Step> {
    vec![
        i(&[b"CONNECT {\"user\":\"x\",\"pass\":\"".to_vec()]),
        Step::End(IN),
        o(&[b"MSG a 1 5\r\nab".to_vec()]),
        Step::End(OUT),
    ]
}

fn scripts() -> Vec<(&'static str, Vec<Step>)> {
    vec![
        ("handshake", s_handshake()),
        ("token", s_token()),
        ("jwt", s_jwt()),
        ("nkey", s_nkey_and_none()),
        ("auth_failure", s_auth_failure()),
        ("errors", s_errors()),
        ("subs", s_subs()),
        ("publish", s_publish()),
        ("request_reply", s_request_reply()),
        ("pubacks", s_pubacks()),
        ("js_acks", s_js_acks()),
        ("js_api", s_js_api()),
        ("lowercase", s_lowercase_and_bare_lf()),
        ("session", s_session()),
        ("gap", s_gap()),
        ("mid_stream", s_mid_stream()),
        ("malformed", s_malformed()),
        ("oversize", s_oversize()),
        ("end", s_end()),
    ]
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn looks_like_nats_handshakes() {
    assert_eq!(looks_like_nats(b"", b"INFO {\"server_id\""), Some(true));
    assert_eq!(looks_like_nats(b"CONNECT {\"verbose\"", b""), Some(true));
    assert_eq!(looks_like_nats(b"", b"INF"), None);
    assert_eq!(looks_like_nats(b"CONN", b""), None);
    assert_eq!(looks_like_nats(b"", b""), None);
    assert_eq!(looks_like_nats(b"", b"HTTP/1.1 200"), None);
    assert_eq!(looks_like_nats(b"GET /", b"HTTP/1.1 200"), Some(false));
    assert_eq!(looks_like_nats(b"GET /", b""), Some(false));
}

#[test]
fn handshake_user_password_then_pong_is_auth_success() {
    let steps = s_handshake();
    let (events, stats) = check(&steps);
    assert_eq!(
        events,
        vec![
            info_event(0),
            connect_alice_event(1),
            BrokerEvent {
                client_id: Some("orders-svc".into()),
                ..auth(2, "PONG", Some("alice"), "user_password", true)
            },
        ]
    );
    assert_eq!(health(&stats), CLEAN);
    assert_eq!(stats.frames, 6);
    assert_eq!(stats.bytes, total_bytes(&steps));
}

#[test]
fn token_login_with_verbose_ok() {
    let (events, stats) = check(&s_token());
    assert_eq!(
        events,
        vec![
            BrokerEvent {
                attrs: attrs(&[
                    ("server_id", "S2"),
                    ("version", "2.10.0"),
                    ("max_payload", "65536"),
                    ("auth_required", "true"),
                ]),
                ..ev(0, OUT, EventKind::Control, "INFO")
            },
            BrokerEvent {
                client_id: Some("tok\"en\u{e9}".into()),
                mechanism: Some("token".into()),
                attrs: attrs(&[("verbose", "true")]),
                ..ev(1, IN, EventKind::Control, "CONNECT")
            },
            BrokerEvent {
                client_id: Some("tok\"ené".into()),
                ..auth(2, "+OK", None, "token", true)
            },
        ]
    );
    assert_eq!(health(&stats), CLEAN);
    assert_eq!(stats.frames, 5);
    let (_, _, dec) = run(&s_token());
    assert_eq!(dec.session.payload_limit(), 65536);
    assert!(!format!("{events:?}{dec:?}").contains(CANARY));
}

#[test]
fn jwt_login_is_accepted_by_the_first_msg() {
    let (events, stats) = check(&s_jwt());
    assert_eq!(
        events,
        vec![
            BrokerEvent {
                mechanism: Some("jwt".into()),
                attrs: attrs(&[("lang", "rust")]),
                ..ev(0, IN, EventKind::Control, "CONNECT")
            },
            BrokerEvent {
                destination: subj("a"),
                consumer_tag: Some("1".into()),
                ..ev(0, IN, EventKind::Subscribe, "SUB")
            },
            auth(1, "MSG", None, "jwt", true),
            deliver(1, "MSG", "a", "1", None, b"x", Some("a")),
        ]
    );
    assert_eq!(health(&stats), CLEAN);
    assert!(!format!("{events:?}").contains(CANARY));
}

#[test]
fn nkey_and_no_credentials() {
    let (events, _) = check(&s_nkey_and_none());
    assert_eq!(
        events,
        vec![
            BrokerEvent {
                mechanism: Some("nkey".into()),
                ..ev(0, IN, EventKind::Control, "CONNECT")
            },
            auth(1, "PONG", None, "nkey", true),
        ]
    );
    let (events, _) = check(&[i(&[l("CONNECT {}")]), o(&[l("PONG")])]);
    assert_eq!(events[1], auth(1, "PONG", None, "none", true));
}

#[test]
fn authorization_violation_is_auth_failure() {
    let (events, stats) = check(&s_auth_failure());
    assert_eq!(
        events,
        vec![
            info_event(0),
            BrokerEvent {
                user: Some("bob".into()),
                mechanism: Some("user_password".into()),
                ..ev(1, IN, EventKind::Control, "CONNECT")
            },
            BrokerEvent {
                reply_text: Some("Authorization Violation".into()),
                ..auth(2, "-ERR", Some("bob"), "user_password", false)
            },
            BrokerEvent {
                reply_text: Some("Authentication Timeout".into()),
                ..ev(3, OUT, EventKind::Error, "-ERR")
            },
        ]
    );
    assert_eq!(health(&stats), CLEAN);
    assert!(!format!("{events:?}").contains(CANARY));
}

#[test]
fn other_errors_are_errors_and_keep_auth_pending() {
    let (events, stats) = check(&s_errors());
    let err = |k, t: &str| BrokerEvent {
        reply_text: Some(t.into()),
        ..ev(k, OUT, EventKind::Error, "-ERR")
    };
    assert_eq!(
        events,
        vec![
            BrokerEvent {
                user: Some("carol".into()),
                mechanism: Some("user_password".into()),
                ..ev(0, IN, EventKind::Control, "CONNECT")
            },
            err(1, "Unknown Protocol Operation"),
            auth(2, "PONG", Some("carol"), "user_password", true),
            err(3, "Slow Consumer"),
            err(3, ""),
        ]
    );
    assert_eq!(health(&stats), CLEAN);
}

#[test]
fn subscriptions_name_deliveries_and_honour_unsub_max() {
    let (events, stats) = check(&s_subs());
    let sub = |sid: &str, d| BrokerEvent {
        destination: d,
        consumer_tag: Some(sid.into()),
        ..ev(0, IN, EventKind::Subscribe, "SUB")
    };
    let in_q = |mut e: BrokerEvent| {
        e.destination = subj_q("bar", "q1");
        e
    };
    assert_eq!(
        events,
        vec![
            sub("1", subj("foo.*")),
            sub("2", subj_q("bar", "q1")),
            BrokerEvent {
                destination: subj_q("bar", "q1"),
                consumer_tag: Some("2".into()),
                attrs: attrs(&[("max", "2")]),
                ..ev(0, IN, EventKind::Unsubscribe, "UNSUB")
            },
            deliver(1, "MSG", "foo.x", "1", None, b"a", Some("foo.*")),
            in_q(deliver(
                1,
                "MSG",
                "bar",
                "2",
                Some("_INBOX.z"),
                b"b",
                Some("bar")
            )),
            in_q(deliver(1, "MSG", "bar", "2", None, b"", Some("bar"))),
            deliver(1, "MSG", "bar", "2", None, b"c", None),
            deliver(1, "MSG", "other", "77", None, b"d", None),
            BrokerEvent {
                destination: subj("foo.*"),
                consumer_tag: Some("1".into()),
                ..ev(2, IN, EventKind::Unsubscribe, "UNSUB")
            },
            BrokerEvent {
                consumer_tag: Some("99".into()),
                ..ev(2, IN, EventKind::Unsubscribe, "UNSUB")
            },
        ]
    );
    assert_eq!(health(&stats), CLEAN);
    assert_eq!(stats.frames, 10);
}

#[test]
fn publishes_with_and_without_headers() {
    let (events, stats) = check(&s_publish());
    let body = b"{\"id\":2}";
    assert_eq!(
        events,
        vec![
            publish(0, "PUB", "orders.new", None, b"hello"),
            publish(0, "PUB", "empty", None, b""),
            BrokerEvent {
                props: Some(trace_props()),
                ..publish(0, "HPUB", "orders.new", Some("_INBOX.h"), body)
            },
            BrokerEvent {
                props: Some(MessageProps {
                    headers: vec![("A".into(), "1".into()), ("A".into(), "2".into())],
                    ..Default::default()
                }),
                ..publish(0, "HPUB", "only.hdrs", None, b"")
            },
            BrokerEvent {
                props: Some(trace_props()),
                ..deliver(1, "HMSG", "orders.new", "5", None, body, None)
            },
        ]
    );
    assert_eq!(health(&stats), CLEAN);
}

#[test]
fn core_request_reply_stays_publish_and_deliver() {
    let (events, _) = check(&s_request_reply());
    assert_eq!(
        events[1..],
        [
            publish(0, "PUB", "svc.echo", Some("_INBOX.r7.1"), b"ping"),
            deliver(
                1,
                "MSG",
                "_INBOX.r7.1",
                "2",
                None,
                b"pong",
                Some("_INBOX.r7.*")
            ),
        ]
    );
}

#[test]
fn pub_acks_confirm_or_nack_the_publish() {
    let (events, stats) = check(&s_pubacks());
    let fp = |b: &[u8]| Some(Fingerprint::of(b));
    assert_eq!(
        events,
        vec![
            publish(0, "PUB", "orders.a", Some("_INBOX.pa.1"), b"{}"),
            BrokerEvent {
                destination: subj("orders.a"),
                offset: Some(42),
                fingerprint: fp(b"{}"),
                attrs: attrs(&[
                    ("stream", "ORDERS"),
                    ("domain", "hub"),
                    ("duplicate", "true")
                ]),
                ..ev(1, OUT, EventKind::Confirm, "MSG")
            },
            publish(2, "PUB", "orders.b", Some("_INBOX.pa.2"), b"x"),
            BrokerEvent {
                destination: subj("orders.b"),
                fingerprint: fp(b"x"),
                reply_code: Some(503),
                reply_text: Some("maximum messages exceeded".into()),
                attrs: attrs(&[("err_code", "10077")]),
                ..ev(3, OUT, EventKind::Nack, "MSG")
            },
            publish(4, "PUB", "svc.q", Some("_INBOX.pa.3"), b"q"),
            deliver(5, "MSG", "_INBOX.pa.3", "9", None, b"hello", None),
            deliver(
                5,
                "MSG",
                "_INBOX.pa.3",
                "9",
                None,
                br#"{"stream":"X","seq":1}"#,
                None
            ),
            publish(6, "PUB", "orders.c", Some("_INBOX.pa.4"), b"c"),
            BrokerEvent {
                reply_code: Some(503),
                props: Some(MessageProps::default()),
                ..deliver(7, "HMSG", "_INBOX.pa.4", "9", None, b"", None)
            },
        ]
    );
    assert_eq!(health(&stats), CLEAN);
}

#[test]
fn jetstream_deliveries_and_acks_v1() {
    let (events, stats) = check(&s_js_acks());
    let a = ack1(1, 10, 20, 5);
    let ids = |mut e: BrokerEvent| {
        e.offset = Some(10);
        e.delivery_tag = Some(20);
        let mut at = attrs(&[
            ("stream", "ORDERS"),
            ("consumer", "push"),
            ("delivered", "1"),
        ]);
        at.append(&mut e.attrs);
        e.attrs = at;
        e
    };
    assert_eq!(
        events,
        vec![
            BrokerEvent {
                destination: subj("deliver.push"),
                consumer_tag: Some("9".into()),
                ..ev(0, IN, EventKind::Subscribe, "SUB")
            },
            BrokerEvent {
                offset: Some(10),
                delivery_tag: Some(20),
                redelivered: Some(false),
                attrs: attrs(&[
                    ("subscription", "deliver.push"),
                    ("stream", "ORDERS"),
                    ("consumer", "push"),
                    ("delivered", "1"),
                    ("stream_seq", "10"),
                    ("consumer_seq", "20"),
                    ("pending", "5"),
                ]),
                ..deliver(1, "MSG", "deliver.push", "9", Some(&a), b"abc", None)
            },
            ids(BrokerEvent {
                requeue: Some(true),
                attrs: attrs(&[("delay", "5000000000")]),
                ..ev(2, IN, EventKind::Nack, "-NAK")
            }),
            ids(BrokerEvent {
                requeue: Some(false),
                reply_text: Some("poison message".into()),
                ..ev(2, IN, EventKind::Reject, "+TERM")
            }),
            ids(ev(2, IN, EventKind::Ack, "+NXT")),
            ids(BrokerEvent {
                attrs: attrs(&[("pull", "next"), ("batch", "3")]),
                ..ev(2, IN, EventKind::Control, "+NXT")
            }),
            ids(ev(2, IN, EventKind::Control, "+WPI")),
            ids(ev(2, IN, EventKind::Ack, "+ACK")),
            BrokerEvent {
                destination: subj(&a),
                body_size: Some(0),
                fingerprint: Some(Fingerprint::of(b"")),
                ..ev(3, OUT, EventKind::Response, "+ACK")
            },
            ids(BrokerEvent {
                body_size: Some(5),
                ..ev(4, IN, EventKind::Control, "PUB")
            }),
            publish(4, "PUB", "$JS.ACK.bad.subject", None, b"+ACK"),
        ]
    );
    assert_eq!(health(&stats), CLEAN);
}

#[test]
fn jetstream_api_requests_responses_and_flow_control() {
    let (events, stats) = check(&s_js_api());
    let req = |k, name, s: &str, reply: Option<&str>, body: &[u8], at: &[(&'static str, &str)]| {
        BrokerEvent {
            destination: subj(s),
            reply_to: reply.map(String::from),
            body_size: Some(body.len() as u64),
            fingerprint: Some(Fingerprint::of(body)),
            attrs: attrs(at),
            ..ev(k, IN, EventKind::Request, name)
        }
    };
    let resp = |k, name, s: &str, body: &[u8]| BrokerEvent {
        destination: subj(s),
        body_size: Some(body.len() as u64),
        fingerprint: Some(Fingerprint::of(body)),
        ..ev(k, OUT, EventKind::Response, name)
    };
    let Step::Data(_, r1) = &s_js_api()[1] else {
        unreachable!()
    };
    let Step::Data(_, r2) = &s_js_api()[3] else {
        unreachable!()
    };
    let body_of = |m: &[u8]| {
        let start = m.iter().position(|&b| b == b'\n').unwrap() + 1;
        m[start..m.len() - 2].to_vec()
    };
    let create =
        br#"{"stream_name":"ORDERS","config":{"name":"eph1","filter_subject":"orders.new"}}"#;
    let next = br#"{"batch":2,"no_wait":true}"#;
    let fc = "$JS.FC.ORDERS.push.xyz";
    assert_eq!(
        events,
        vec![
            req(
                0,
                "STREAM.DELETE",
                "$JS.API.STREAM.DELETE.OLD",
                Some("_INBOX.j.1"),
                b"",
                &[("stream", "OLD")]
            ),
            BrokerEvent {
                destination: resource("OLD", "stream"),
                ..ev(0, IN, EventKind::Delete, "STREAM.DELETE")
            },
            BrokerEvent {
                outcome: Some(Outcome::Success),
                ..resp(
                    1,
                    "STREAM.DELETE",
                    "$JS.API.STREAM.DELETE.OLD",
                    &body_of(r1)
                )
            },
            req(
                2,
                "STREAM.PURGE",
                "$JS.API.STREAM.PURGE.ORDERS",
                Some("_INBOX.j.2"),
                b"",
                &[("stream", "ORDERS")]
            ),
            BrokerEvent {
                destination: resource("ORDERS", "stream"),
                ..ev(2, IN, EventKind::Purge, "STREAM.PURGE")
            },
            BrokerEvent {
                outcome: Some(Outcome::Failure),
                reply_code: Some(404),
                reply_text: Some("stream not found".into()),
                attrs: attrs(&[("err_code", "10059")]),
                ..resp(
                    3,
                    "STREAM.PURGE",
                    "$JS.API.STREAM.PURGE.ORDERS",
                    &body_of(r2)
                )
            },
            req(
                4,
                "CONSUMER.CREATE",
                "$JS.API.CONSUMER.CREATE.ORDERS",
                Some("_INBOX.j.3"),
                create,
                &[
                    ("stream", "ORDERS"),
                    ("consumer", "eph1"),
                    ("filter", "orders.new")
                ]
            ),
            BrokerEvent {
                destination: resource("eph1", "consumer"),
                attrs: attrs(&[("stream", "ORDERS")]),
                ..ev(4, IN, EventKind::Declare, "CONSUMER.CREATE")
            },
            req(
                4,
                "CONSUMER.DELETE",
                "$JS.API.CONSUMER.DELETE.ORDERS.eph1",
                None,
                b"",
                &[("stream", "ORDERS"), ("consumer", "eph1")]
            ),
            BrokerEvent {
                destination: resource("eph1", "consumer"),
                attrs: attrs(&[("stream", "ORDERS")]),
                ..ev(4, IN, EventKind::Delete, "CONSUMER.DELETE")
            },
            req(
                4,
                "STREAM.INFO",
                "$JS.hub.API.STREAM.INFO.ORDERS",
                Some("_INBOX.j.5"),
                b"",
                &[("stream", "ORDERS"), ("domain", "hub")]
            ),
            BrokerEvent {
                outcome: Some(Outcome::Failure),
                reply_code: Some(503),
                ..resp(5, "STREAM.INFO", "$JS.hub.API.STREAM.INFO.ORDERS", b"")
            },
            req(
                6,
                "CONSUMER.MSG.NEXT",
                "$JS.API.CONSUMER.MSG.NEXT.ORDERS.pull",
                Some("_INBOX.j.6"),
                next,
                &[
                    ("stream", "ORDERS"),
                    ("consumer", "pull"),
                    ("batch", "2"),
                    ("no_wait", "true")
                ]
            ),
            BrokerEvent {
                reply_code: Some(404),
                reply_text: Some("No Messages".into()),
                ..resp(
                    7,
                    "CONSUMER.MSG.NEXT",
                    "$JS.API.CONSUMER.MSG.NEXT.ORDERS.pull",
                    b""
                )
            },
            BrokerEvent {
                reply_code: Some(408),
                reply_text: Some("Request Timeout".into()),
                ..resp(
                    7,
                    "CONSUMER.MSG.NEXT",
                    "$JS.API.CONSUMER.MSG.NEXT.ORDERS.pull",
                    b""
                )
            },
            req(
                8,
                "$JS.API",
                "$JS.API.SOMETHING.NEW",
                Some("_INBOX.j.7"),
                b"",
                &[]
            ),
            BrokerEvent {
                destination: subj("deliver.push"),
                consumer_tag: Some("9".into()),
                reply_to: Some(fc.into()),
                reply_code: Some(100),
                reply_text: Some("FlowControl Request".into()),
                ..ev(9, OUT, EventKind::Control, "HMSG")
            },
            BrokerEvent {
                destination: subj("deliver.push"),
                consumer_tag: Some("9".into()),
                reply_code: Some(100),
                reply_text: Some("Idle Heartbeat".into()),
                ..ev(9, OUT, EventKind::Control, "HMSG")
            },
            BrokerEvent {
                destination: subj(fc),
                ..ev(10, IN, EventKind::Control, "PUB")
            },
        ]
    );
    assert_eq!(health(&stats), CLEAN);
}

#[test]
fn ops_are_case_insensitive_and_bare_lf_is_accepted() {
    let (events, stats) = check(&s_lowercase_and_bare_lf());
    assert_eq!(
        events,
        vec![
            BrokerEvent {
                destination: subj("low"),
                consumer_tag: Some("1".into()),
                ..ev(0, IN, EventKind::Subscribe, "SUB")
            },
            publish(0, "PUB", "low", None, b"hi"),
            deliver(1, "MSG", "low", "1", None, b"hi", Some("low")),
        ]
    );
    assert_eq!(health(&stats), CLEAN);
    assert_eq!(stats.frames, 5);
}

#[test]
fn realistic_session() {
    let steps = s_session();
    let (events, stats) = check(&steps);
    let b = |n: u32| format!("{{\"order\":{n}}}").into_bytes();
    let body_at = |k: usize| {
        let Step::Data(_, m) = &steps[k] else {
            unreachable!()
        };
        let start = m.iter().position(|&b| b == b'\n').unwrap() + 1;
        m[start..m.len() - 2].to_vec()
    };
    let req = |k, name, s: &str, reply: &str, at: &[(&'static str, &str)]| {
        let body = body_at(k);
        BrokerEvent {
            destination: subj(s),
            reply_to: Some(reply.into()),
            body_size: Some(body.len() as u64),
            fingerprint: Some(Fingerprint::of(&body)),
            attrs: attrs(at),
            ..ev(k, IN, EventKind::Request, name)
        }
    };
    let resp = |k, name, s: &str| {
        let body = body_at(k);
        BrokerEvent {
            destination: subj(s),
            body_size: Some(body.len() as u64),
            fingerprint: Some(Fingerprint::of(&body)),
            outcome: Some(Outcome::Success),
            ..ev(k, OUT, EventKind::Response, name)
        }
    };
    let js_deliver = |k, delivered: u64, sseq: u64, cseq: u64, pending: u64, order: u32| {
        let a = ack2(delivered, sseq, cseq, pending);
        BrokerEvent {
            offset: Some(sseq as i64),
            delivery_tag: Some(cseq),
            redelivered: Some(delivered > 1),
            attrs: attrs(&[
                ("subscription", "_INBOX.p9.*"),
                ("stream", "ORDERS"),
                ("consumer", "billing"),
                ("delivered", &delivered.to_string()),
                ("stream_seq", &sseq.to_string()),
                ("consumer_seq", &cseq.to_string()),
                ("pending", &pending.to_string()),
                ("domain", "hub"),
            ]),
            ..deliver(k, "MSG", "_INBOX.p9.1", "3", Some(&a), &b(order), None)
        }
    };
    let js_ack = |k, kind, method, delivered: u64, sseq: u64, cseq: u64| BrokerEvent {
        offset: Some(sseq as i64),
        delivery_tag: Some(cseq),
        attrs: attrs(&[
            ("stream", "ORDERS"),
            ("consumer", "billing"),
            ("delivered", &delivered.to_string()),
            ("domain", "hub"),
        ]),
        ..ev(k, IN, kind, method)
    };
    let queue = |mut e: BrokerEvent| {
        e.destination = subj_q("orders.new", "workers");
        e
    };
    let want = vec![
        info_event(0),
        connect_alice_event(1),
        BrokerEvent {
            client_id: Some("orders-svc".into()),
            ..auth(2, "PONG", Some("alice"), "user_password", true)
        },
        BrokerEvent {
            destination: subj_q("orders.*", "workers"),
            consumer_tag: Some("1".into()),
            ..ev(3, IN, EventKind::Subscribe, "SUB")
        },
        publish(3, "PUB", "orders.new", None, b"hello"),
        queue(deliver(
            4,
            "MSG",
            "orders.new",
            "1",
            None,
            b"hello",
            Some("orders.*"),
        )),
        BrokerEvent {
            props: Some(trace_props()),
            ..publish(5, "HPUB", "orders.new", None, &b(2))
        },
        queue(BrokerEvent {
            props: Some(trace_props()),
            ..deliver(6, "HMSG", "orders.new", "1", None, &b(2), Some("orders.*"))
        }),
        BrokerEvent {
            destination: subj("_INBOX.r7.*"),
            consumer_tag: Some("2".into()),
            ..ev(7, IN, EventKind::Subscribe, "SUB")
        },
        publish(7, "PUB", "svc.echo", Some("_INBOX.r7.1"), b"ping"),
        deliver(
            8,
            "MSG",
            "_INBOX.r7.1",
            "2",
            None,
            b"pong",
            Some("_INBOX.r7.*"),
        ),
        req(
            9,
            "STREAM.CREATE",
            "$JS.API.STREAM.CREATE.ORDERS",
            "_INBOX.r7.2",
            &[("stream", "ORDERS"), ("subjects", r#"["orders.*"]"#)],
        ),
        BrokerEvent {
            destination: resource("ORDERS", "stream"),
            ..ev(9, IN, EventKind::Declare, "STREAM.CREATE")
        },
        resp(10, "STREAM.CREATE", "$JS.API.STREAM.CREATE.ORDERS"),
        publish(11, "PUB", "orders.paid", Some("_INBOX.r7.3"), &b(7)),
        BrokerEvent {
            destination: subj("orders.paid"),
            offset: Some(1),
            fingerprint: Some(Fingerprint::of(&b(7))),
            attrs: attrs(&[("stream", "ORDERS")]),
            ..ev(12, OUT, EventKind::Confirm, "MSG")
        },
        req(
            13,
            "CONSUMER.DURABLE.CREATE",
            "$JS.API.CONSUMER.DURABLE.CREATE.ORDERS.billing",
            "_INBOX.r7.4",
            &[
                ("stream", "ORDERS"),
                ("consumer", "billing"),
                ("filter", "orders.paid"),
            ],
        ),
        BrokerEvent {
            destination: resource("billing", "consumer"),
            attrs: attrs(&[("stream", "ORDERS")]),
            ..ev(13, IN, EventKind::Declare, "CONSUMER.DURABLE.CREATE")
        },
        resp(
            14,
            "CONSUMER.DURABLE.CREATE",
            "$JS.API.CONSUMER.DURABLE.CREATE.ORDERS.billing",
        ),
        BrokerEvent {
            destination: subj("_INBOX.p9.*"),
            consumer_tag: Some("3".into()),
            ..ev(15, IN, EventKind::Subscribe, "SUB")
        },
        {
            let mut e = req(
                15,
                "CONSUMER.MSG.NEXT",
                "$JS.API.CONSUMER.MSG.NEXT.ORDERS.billing",
                "_INBOX.p9.1",
                &[
                    ("stream", "ORDERS"),
                    ("consumer", "billing"),
                    ("batch", "5"),
                    ("expires", "30000000000"),
                ],
            );
            let body = br#"{"batch":5,"expires":30000000000}"#;
            e.body_size = Some(body.len() as u64);
            e.fingerprint = Some(Fingerprint::of(body));
            e
        },
        js_deliver(16, 1, 1, 1, 4, 7),
        js_deliver(16, 1, 2, 2, 3, 8),
        js_ack(17, EventKind::Ack, "+ACK", 1, 1, 1),
        js_ack(17, EventKind::Ack, "+ACK", 1, 2, 2),
        js_deliver(18, 1, 3, 3, 2, 9),
        BrokerEvent {
            requeue: Some(true),
            ..js_ack(19, EventKind::Nack, "-NAK", 1, 3, 3)
        },
        js_deliver(20, 2, 3, 4, 2, 9),
        js_ack(21, EventKind::Ack, "+ACK", 2, 3, 4),
        js_deliver(22, 1, 4, 5, 1, 10),
        js_deliver(22, 1, 5, 6, 0, 11),
        BrokerEvent {
            requeue: Some(false),
            ..js_ack(23, EventKind::Reject, "+TERM", 1, 4, 5)
        },
        js_ack(23, EventKind::Control, "+WPI", 1, 5, 6),
        BrokerEvent {
            destination: subj("$JS.API.CONSUMER.MSG.NEXT.ORDERS.billing"),
            body_size: Some(0),
            fingerprint: Some(Fingerprint::of(b"")),
            reply_code: Some(408),
            reply_text: Some("Request Timeout".into()),
            ..ev(24, OUT, EventKind::Response, "CONSUMER.MSG.NEXT")
        },
        BrokerEvent {
            destination: subj("_INBOX.p9.*"),
            consumer_tag: Some("3".into()),
            ..ev(25, IN, EventKind::Unsubscribe, "UNSUB")
        },
        BrokerEvent {
            destination: subj_q("orders.*", "workers"),
            consumer_tag: Some("1".into()),
            ..ev(25, IN, EventKind::Unsubscribe, "UNSUB")
        },
    ];
    for (k, (got, want)) in events.iter().zip(&want).enumerate() {
        assert_eq!(got, want, "event {k}");
    }
    assert_eq!(events.len(), want.len());
    assert_eq!(health(&stats), CLEAN);
    assert_eq!(stats.bytes, total_bytes(&steps));

    // The password never leaves the wire bytes: not in events, not in the decoder (also while
    // the CONNECT line is half buffered).
    let (_, _, dec) = run(&steps);
    assert!(!format!("{events:?}").contains(CANARY));
    assert!(!format!("{dec:?}").contains(CANARY));
    let connect = connect_alice();
    let (_, _, mut half) = run(&steps[..1]);
    let conn = conn();
    half.on_data(
        &ctx(&conn, IN, 0),
        &connect[..connect.len() - 3],
        &mut |_| {},
    );
    assert_eq!(half.stats().buffered_bytes, connect.len() - 3);
    assert!(!format!("{half:?}").contains(CANARY));
    half.on_data(
        &ctx(&conn, IN, 0),
        &connect[connect.len() - 3..],
        &mut |_| {},
    );
    assert_eq!(half.stats().buffered_bytes, 0);
    assert!(!format!("{half:?}").contains(CANARY));
}

#[test]
fn gap_inside_a_payload_resyncs_at_a_line_that_parses() {
    let steps = s_gap();
    let (events, stats) = check(&steps);
    assert_eq!(
        events,
        vec![
            info_event(0),
            deliver(3, "MSG", "b", "1", None, b"ok", None),
            publish(8, "PUB", "e", None, b"E"),
        ]
    );
    // Egress: "tail\r\n" 6, "MSG x\r\n" 7, the fake MSG line and payload 14 + 3, "XY\r\n" 4.
    // Ingress: "9\r\n" 3 after the first gap, "x\r\n" 3 after the second.
    assert_eq!(health(&stats), (0, 3, 6 + 7 + 17 + 4 + 3 + 3, 0, 0));
}

#[test]
fn mid_stream_join_skips_to_the_first_frame() {
    let (events, stats) = check(&s_mid_stream());
    assert_eq!(
        events,
        vec![
            deliver(0, "MSG", "a", "1", None, b"hi", None),
            publish(1, "PUB", "p", None, b"P"),
        ]
    );
    assert_eq!(health(&stats), (0, 1, 10, 0, 0));
}

#[test]
fn malformed_lines_are_counted_and_resynced() {
    let steps = s_malformed();
    let (events, stats) = check(&steps);
    assert_eq!(
        events,
        vec![
            BrokerEvent {
                mechanism: Some("none".into()),
                ..ev(0, IN, EventKind::Control, "CONNECT")
            },
            publish(3, "PUB", "ok", None, b"ok"),
            publish(8, "PUB", "after", None, b"!"),
            ev(9, OUT, EventKind::Control, "INFO"),
            auth(9, "PONG", None, "none", true),
        ]
    );
    // FOO; "PUB x y"; the payload not followed by CRLF; MSG from a client; two absurd byte
    // counts; SUB with one argument; UNSUB with a bad max; JSON cut short; the 5000-byte
    // subject (also oversize); "+OK extra"; HMSG with header bytes > total.
    assert_eq!(stats.malformed, 12);
    assert_eq!(stats.resyncs, 12);
    assert_eq!(stats.oversize, 1);
    assert_eq!(stats.buffered_bytes, 0);
    let bad_lines = [
        "FOO bar",
        "PUB x y",
        "MSG a 1 1",
        "PUB big 99999999999",
        "PUB big 1234567890123",
    ];
    let more = [
        "SUB onlysubject",
        "UNSUB 1 x",
        "CONNECT {\"user\":",
        "+OK extra",
        "HMSG a 1 5 3",
    ];
    let skipped: usize = bad_lines
        .iter()
        .chain(&more)
        .map(|s| s.len() + 2)
        .sum::<usize>()
        + "XY\r\n".len()
        + format!("PUB {} 1\r\n", "s".repeat(5000)).len();
    assert_eq!(stats.skipped_bytes, skipped as u64);
}

#[test]
fn oversize_payloads_are_skipped_unbuffered() {
    let (events, stats) = check(&s_oversize());
    assert_eq!(
        events,
        vec![
            BrokerEvent {
                attrs: attrs(&[("max_payload", "1024")]),
                ..ev(0, OUT, EventKind::Control, "INFO")
            },
            BrokerEvent {
                mechanism: Some("none".into()),
                ..ev(1, IN, EventKind::Control, "CONNECT")
            },
            publish(2, "PUB", "after", None, b"x"),
        ]
    );
    assert_eq!(health(&stats), (0, 0, 0, 1, 0));
}

#[test]
fn end_drops_partial_state() {
    let (events, stats) = check(&s_end());
    assert!(events.is_empty());
    assert_eq!(health(&stats), CLEAN);
    assert_eq!(stats.frames, 0);
}

#[test]
fn info_max_payload_is_capped() {
    let (_, _, dec) = run(&[o(&[l(r#"INFO {"max_payload":9999999999}"#)])]);
    assert_eq!(dec.session.payload_limit(), MAX_NEGOTIATED_PAYLOAD);
    let (_, _, dec) = run(&[o(&[l(r#"INFO {"max_payload":-1}"#)])]);
    assert_eq!(dec.session.payload_limit(), DEFAULT_MAX_PAYLOAD);
}

#[test]
fn hundred_kilobyte_control_lines_are_counted_and_never_buffered() {
    let conn = conn();
    for (dir, op) in [
        (IN, "PUB "),
        (IN, "CONNECT {"),
        (OUT, "INFO {"),
        (OUT, "MSG "),
        (IN, ""),
    ] {
        let mut line = op.as_bytes().to_vec();
        line.extend(std::iter::repeat_n(b'a', 100_000));
        line.extend_from_slice(b"\r\n");
        for chunk in [1usize, 7, 4096, 65_536, line.len()] {
            let mut dec = NatsDecoder::new();
            let mut events = 0;
            // In sync first, so the long line is malformed rather than a mid-stream join.
            let sync = if dir == IN { l("PING") } else { l("PONG") };
            dec.on_data(&ctx(&conn, dir, 1), &sync, &mut |_| events += 1);
            for part in line.chunks(chunk) {
                dec.on_data(&ctx(&conn, dir, 1), part, &mut |_| events += 1);
                dec.assert_bounded();
                assert!(dec.stats().buffered_bytes <= MAX_JSON_LINE + 1);
            }
            let s = dec.stats();
            assert_eq!((s.malformed, s.resyncs), (1, 1), "{op:?} {chunk}");
            assert_eq!(s.oversize, u64::from(!op.is_empty()), "{op:?} {chunk}");
            assert_eq!(s.skipped_bytes, line.len() as u64);
            assert_eq!(s.buffered_bytes, 0);
            // Back in sync at the next line.
            dec.on_data(&ctx(&conn, dir, 1), &sync, &mut |_| events += 1);
            assert_eq!(dec.stats().frames, 2);
            assert_eq!(events, 0);
        }
    }
}

#[test]
fn header_blocks_are_bounded() {
    let many: Vec<(String, String)> = (0..100)
        .map(|n| (format!("K{n}"), "v".repeat(400)))
        .collect();
    let pairs: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let block = hdrs("", &pairs);
    assert!(block.len() > MAX_HEADER_BLOCK);
    let steps = vec![i(&[hpub("s", None, &block, b"body")])];
    let (events, stats, _) = run(&steps);
    let chunked = run_with(&steps, &mut |_, len| vec![1000; len / 1000 + 1]);
    assert_eq!(chunked.0, events);
    let props = events[0].props.as_ref().unwrap();
    assert_eq!(props.headers.len(), wire::MAX_HEADERS);
    assert!(
        props
            .headers
            .iter()
            .all(|(_, v)| v.len() == wire::MAX_VALUE)
    );
    assert_eq!(events[0].body_size, Some(4));
    assert_eq!(events[0].fingerprint, Some(Fingerprint::of(b"body")));
    assert_eq!(health(&stats), CLEAN);
}

#[test]
fn wire_parsing_edges() {
    use wire::{Bad, Op, parse};
    assert!(matches!(parse(IN, b"PUB a 0"), Ok(Op::Msg(_))));
    assert!(
        matches!(parse(IN, b"PUB a\t_R  12 "), Ok(Op::Msg(m)) if m.reply == Some(&b"_R"[..]) && m.total == 12)
    );
    assert_eq!(parse(IN, b"PUB a -1").unwrap_err(), Bad::Invalid);
    assert_eq!(parse(IN, b"PUB a b c 1").unwrap_err(), Bad::Invalid);
    assert_eq!(parse(IN, b"PUB a\x01 1").unwrap_err(), Bad::Invalid);
    assert_eq!(parse(IN, b"HPUB a 5 4").unwrap_err(), Bad::Invalid);
    assert_eq!(parse(OUT, b"PUB a 1").unwrap_err(), Bad::Unknown);
    assert_eq!(parse(IN, b"INFO {}").unwrap_err(), Bad::Unknown);
    assert_eq!(parse(IN, b"CONNECT").unwrap_err(), Bad::Invalid);
    assert_eq!(parse(IN, b"PINGX").unwrap_err(), Bad::Unknown);
    assert_eq!(parse(IN, b"PING x").unwrap_err(), Bad::Invalid);
    assert!(matches!(
        parse(IN, b"unsub 5 10"),
        Ok(Op::Unsub { max: Some(10), .. })
    ));
    assert!(matches!(parse(OUT, b"-ERR"), Ok(Op::Err(b""))));
    let long = [b"SUB ".as_slice(), &[b'x'; MAX_CONTROL_LINE]].concat();
    assert_eq!(parse(IN, &long).unwrap_err(), Bad::Oversize);
    // JSON scanner: nested values are skipped, strings unescaped, junk refused.
    let mut seen = Vec::new();
    wire::members(
        br#" { "a" : [1, {"b": "}"}], "c": "x\"\u00e9\ud83d\ude00", "d": -1.5e3 } "#,
        |k, v| seen.push((wire::text(k, 9), wire::render(v, 64))),
    )
    .unwrap();
    assert_eq!(
        seen,
        [
            ("a".into(), r#"[1, {"b": "}"}]"#.into()),
            ("c".into(), "x\"\u{e9}\u{1f600}".into()),
            ("d".into(), "-1.5e3".into()),
        ]
    );
    for bad in [
        &b"{"[..],
        b"{\"a\"}",
        b"{\"a\":}",
        b"{\"a\":1,}",
        b"{} x",
        b"[]",
        b"{\"a\":tru}",
    ] {
        assert!(
            wire::members(bad, |_, _| {}).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    assert_eq!(wire::unescape(br"\u00e9\u00e9\u00e9", 3), "\u{e9}");
    assert_eq!(wire::text("héllo".as_bytes(), 2), "h");
}

#[test]
fn jetstream_subject_shapes() {
    let v1 = js::ack_subject("$JS.ACK.S.C.2.10.20.1700.5").unwrap();
    assert_eq!(
        (v1.domain, v1.stream, v1.consumer, v1.delivered),
        (None, "S", "C", 2)
    );
    assert_eq!((v1.stream_seq, v1.consumer_seq, v1.pending), (10, 20, 5));
    let v2 = js::ack_subject("$JS.ACK._.HASH.S.C.1.11.21.1700.0.rnd").unwrap();
    assert_eq!((v2.domain, v2.stream, v2.stream_seq), (None, "S", 11));
    let v2 = js::ack_subject("$JS.ACK.dom.HASH.S.C.1.11.21.1700.0").unwrap();
    assert_eq!(v2.domain, Some("dom"));
    for bad in [
        "$JS.ACK.S.C.2.10.20.1700",
        "$JS.ACK.S.C.x.10.20.1700.5",
        "$JS.ACK.d.h.S.C.1.2.3.4",
        "$JS.ACK..C.2.10.20.1700.5",
        "JS.ACK.S.C.2.10.20.1700.5",
    ] {
        assert_eq!(js::ack_subject(bad), None, "{bad}");
    }
    let api = js::api("$JS.API.CONSUMER.CREATE.S.C.orders.>").unwrap();
    assert_eq!(
        (api.name, api.stream, api.consumer, api.filter),
        ("CONSUMER.CREATE", Some("S"), Some("C"), Some("orders.>"))
    );
    assert_eq!(js::api("$JS.API.INFO").unwrap().name, "INFO");
    assert_eq!(js::api("$JS.API.STREAM.CREATED.X").unwrap().name, "$JS.API");
    assert_eq!(js::api("$JS.EVENT.ADVISORY.X"), None);
    assert_eq!(js::api("orders.new"), None);
    assert_eq!(js::pub_ack(br#"{"stream":"S"}"#), None);
    assert_eq!(js::pub_ack(b"+ACK"), None);
    assert_eq!(js::next_request(b" 7 ").batch, Some(7));
    assert_eq!(
        js::ack_kind(Some(&b"-NAK"[..])),
        js::AckKind::Nak { delay: None }
    );
    assert_eq!(js::ack_kind(Some(&b"+OK"[..])), js::AckKind::Ack);
    assert_eq!(js::ack_kind(None), js::AckKind::Other);
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
    // Raw bytes, and garbage made of protocol-looking fragments.
    let raw = rng.bytes(1 << 20);
    let words: [&[u8]; 12] = [
        b"PUB ",
        b"MSG ",
        b"HPUB ",
        b"HMSG ",
        b"INFO {",
        b"CONNECT {",
        b"\r\n",
        b"\n",
        b" 1",
        b" 99999",
        b"$JS.ACK.a.b.1.2.3.4.5",
        b"NATS/1.0\r\n",
    ];
    let mut textish = Vec::new();
    while textish.len() < 1 << 20 {
        textish.extend_from_slice(words[(rng.next() % 12) as usize]);
        let n = (rng.next() % 8) as usize;
        textish.extend(rng.bytes(n));
    }
    let conn = conn();
    for garbage in [&raw, &textish] {
        for synced in [false, true] {
            let mut dec = NatsDecoder::new();
            let mut fed = 0;
            for dir in [IN, OUT] {
                let c = ctx(&conn, dir, 1);
                if synced {
                    let head = if dir == IN { l("PING") } else { l("PONG") };
                    dec.on_data(&c, &head, &mut |_| {});
                    fed += head.len();
                }
                let mut at = 0;
                while at < garbage.len() {
                    let n = (rng.next() % 70_000) as usize + 1;
                    let end = (at + n).min(garbage.len());
                    dec.on_data(&c, &garbage[at..end], &mut |_| {});
                    dec.assert_bounded();
                    at = end;
                }
            }
            let s = dec.stats();
            assert_eq!(s.bytes, (2 * garbage.len() + fed) as u64);
            if synced {
                assert!(s.malformed >= 2, "{s:?}");
            }
            assert!(s.resyncs >= 1 && s.skipped_bytes > 0, "{s:?}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Every script decodes to the same events and counters however its bytes are chunked.
    #[test]
    fn random_chunkings_agree(which in 0usize..19, sizes in prop::collection::vec(1usize..300, 1..64)) {
        let all = scripts();
        prop_assert_eq!(all.len(), 19);
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
        let mut dec = NatsDecoder::new();
        if prefix {
            dec.on_data(&ctx(&conn, OUT, 0), INFO.as_bytes(), &mut |_| {});
        }
        for (egress, bytes) in &chunks {
            let c = ctx(&conn, Direction::from_egress(*egress), 0);
            dec.on_data(&c, bytes, &mut |_| {});
            dec.assert_bounded();
        }
    }

    /// Protocol-shaped junk (ops, numbers, CRLFs, JSON pieces) in random order and chunks.
    #[test]
    fn protocol_shaped_junk_is_harmless(
        parts in prop::collection::vec(0usize..16, 0..200),
        cuts in prop::collection::vec(1usize..64, 1..16),
        egress in any::<bool>(),
    ) {
        let words: [&[u8]; 16] = [
            b"PUB ", b"HPUB ", b"MSG ", b"HMSG ", b"SUB ", b"UNSUB ", b"INFO ", b"CONNECT ",
            b"{\"a\":1}", b"x.y", b" 3", b" 2 5", b"\r\n", b"\n", b"NATS/1.0 503\r\n", b"+ACK",
        ];
        let bytes: Vec<u8> = parts.iter().flat_map(|&p| words[p].iter().copied()).collect();
        let dir = Direction::from_egress(egress);
        let steps = vec![Step::Data(dir, bytes)];
        let (events, stats, _) = run(&steps);
        let mut next = 0usize;
        let (e2, s2, _) = run_with(&steps, &mut |_, len| {
            let mut out = Vec::new();
            let mut total = 0;
            while total < len {
                let n = cuts[next % cuts.len()];
                next += 1;
                out.push(n);
                total += n;
            }
            out
        });
        prop_assert_eq!(e2, events);
        prop_assert_eq!(s2, stats);
    }
}

/// Throughput on the realistic session, repeated to ~100 MB:
/// `cargo test --release -p observer --lib protocol::nats::tests::throughput -- --ignored --nocapture`
#[test]
#[ignore]
fn throughput() {
    testkit::throughput("nats", &conn(), NatsDecoder::new, &s_session());
}

/// The realistic session is the decoder benchmark's input (benches/decoders).
#[test]
fn bench_fixture_is_current() {
    testkit::fixture("nats", &s_session());
}
