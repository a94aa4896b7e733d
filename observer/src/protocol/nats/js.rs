//! JetStream over core NATS: the shapes of its subjects and small JSON payloads.
//!
//! JetStream adds no ops; it is recognisable only by subjects (`$JS.API.…` requests,
//! `$JS.ACK.…` reply subjects of deliveries, `$JS.FC.…` flow control) and by the JSON a stream
//! answers a publish with (the PubAck). Everything here is pure parsing; `session` decides.
use super::wire::{self, Json, MAX_VALUE};
use crate::event::EventKind;

/// The delivery metadata a JetStream consumer encodes in a message's reply subject:
/// v1 `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>` (9 tokens),
/// v2 `$JS.ACK.<domain>.<account hash>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.
/// <pending>[.<random>…]` (11+ tokens; servers append a random token, 12).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct AckSubject<'a> {
    /// v2 only; "_" (no domain) is None.
    pub domain: Option<&'a str>,
    pub stream: &'a str,
    pub consumer: &'a str,
    pub delivered: u64,
    pub stream_seq: u64,
    pub consumer_seq: u64,
    pub pending: u64,
}

pub(super) fn ack_subject(subject: &str) -> Option<AckSubject<'_>> {
    let rest = subject.strip_prefix("$JS.ACK.")?;
    let mut t: [&str; 10] = [""; 10];
    let mut n = 0;
    for token in rest.split('.') {
        if n < t.len() {
            t[n] = token;
        }
        n += 1;
    }
    // Token counts include "$JS" and "ACK".
    let (domain, f) = match n + 2 {
        9 => (None, &t[..7]),
        c if c >= 11 => (Some(t[0]).filter(|d| !d.is_empty() && *d != "_"), &t[2..9]),
        _ => return None,
    };
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    if f[0].is_empty() || f[1].is_empty() {
        return None;
    }
    num(f[5])?; // timestamp: validated, not kept
    Some(AckSubject {
        domain,
        stream: f[0],
        consumer: f[1],
        delivered: num(f[2])?,
        stream_seq: num(f[3])?,
        consumer_seq: num(f[4])?,
        pending: num(f[6])?,
    })
}

/// What a PUB to a `$JS.ACK.…` subject says (nats-server matches these the same way: exact
/// +ACK/+WPI, prefixes -NAK/+NXT/+TERM, empty = ack).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AckKind<'a> {
    Ack,
    /// Redeliver; optionally after `delay` ns.
    Nak {
        delay: Option<u64>,
    },
    /// Stop redelivering; optional reason.
    Term {
        reason: &'a [u8],
    },
    /// Work in progress: reset the redelivery timer.
    Progress,
    /// Ack and pull the next message(s); `batch` if given.
    Next {
        batch: Option<u64>,
    },
    /// Anything else (too long to have been captured, or not an ack token): ignored by the
    /// server.
    Other,
}

impl AckKind<'_> {
    pub(super) fn method(&self) -> &'static str {
        match self {
            AckKind::Ack => "+ACK",
            AckKind::Nak { .. } => "-NAK",
            AckKind::Term { .. } => "+TERM",
            AckKind::Progress => "+WPI",
            AckKind::Next { .. } => "+NXT",
            AckKind::Other => "PUB",
        }
    }
}

/// `body`: the captured payload, or None when it was too long to capture.
pub(super) fn ack_kind(body: Option<&[u8]>) -> AckKind<'_> {
    let Some(b) = body else {
        return AckKind::Other;
    };
    if b.is_empty() || b == b"+ACK" || b == b"+OK" {
        AckKind::Ack
    } else if b == b"+WPI" {
        AckKind::Progress
    } else if let Some(rest) = b.strip_prefix(b"-NAK") {
        let mut delay = None;
        let _ = wire::members(wire::trim(rest), |k, v| {
            if k == b"delay" {
                delay = wire::json_u64(v);
            }
        });
        AckKind::Nak { delay }
    } else if let Some(rest) = b.strip_prefix(b"+TERM") {
        AckKind::Term {
            reason: wire::trim(rest),
        }
    } else if let Some(rest) = b.strip_prefix(b"+NXT") {
        AckKind::Next {
            batch: next_request(wire::trim(rest)).batch,
        }
    } else {
        AckKind::Other
    }
}

/// A pull request (`CONSUMER.MSG.NEXT` payload or after `+NXT`): a JSON object, or a bare
/// batch size (older clients), or nothing (one message).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct NextRequest {
    pub batch: Option<u64>,
    pub expires: Option<u64>,
    pub no_wait: Option<bool>,
}

pub(super) fn next_request(body: &[u8]) -> NextRequest {
    let mut r = NextRequest::default();
    let body = wire::trim(body);
    if !body.is_empty() && body.iter().all(u8::is_ascii_digit) {
        r.batch = std::str::from_utf8(body).ok().and_then(|s| s.parse().ok());
        return r;
    }
    let _ = wire::members(body, |k, v| match (k, v) {
        (b"batch", v) => r.batch = wire::json_u64(v),
        (b"expires", v) => r.expires = wire::json_u64(v),
        (b"no_wait", Json::Bool(b)) => r.no_wait = Some(b),
        _ => {}
    });
    r
}

/// A JetStream API request subject: `$JS.API.<name>.<args>` or, with a domain,
/// `$JS.<domain>.API.<name>.<args>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ApiCall<'a> {
    /// "STREAM.CREATE", "CONSUMER.MSG.NEXT", …; "$JS.API" for names this table lacks.
    pub name: &'static str,
    /// Also reported as this kind of event on this resource ("stream"/"consumer").
    pub effect: Option<(EventKind, &'static str)>,
    pub domain: Option<&'a str>,
    pub stream: Option<&'a str>,
    pub consumer: Option<&'a str>,
    /// CONSUMER.CREATE.<stream>.<consumer>.<filter…>
    pub filter: Option<&'a str>,
}

pub(super) const API_NEXT: &str = "CONSUMER.MSG.NEXT";

/// (name, arguments: 0 none, 1 stream, 2 stream and consumer, effect).
type ApiEntry = (&'static str, u8, Option<(EventKind, &'static str)>);

const APIS: &[ApiEntry] = &[
    ("INFO", 0, None),
    ("STREAM.CREATE", 1, Some((EventKind::Declare, "stream"))),
    ("STREAM.UPDATE", 1, None),
    ("STREAM.NAMES", 0, None),
    ("STREAM.LIST", 0, None),
    ("STREAM.INFO", 1, None),
    ("STREAM.DELETE", 1, Some((EventKind::Delete, "stream"))),
    ("STREAM.PURGE", 1, Some((EventKind::Purge, "stream"))),
    ("STREAM.SNAPSHOT", 1, None),
    ("STREAM.RESTORE", 1, None),
    ("STREAM.MSG.DELETE", 1, None),
    ("STREAM.MSG.GET", 1, None),
    ("STREAM.LEADER.STEPDOWN", 1, None),
    ("STREAM.PEER.REMOVE", 1, None),
    ("DIRECT.GET", 1, None),
    ("CONSUMER.CREATE", 2, Some((EventKind::Declare, "consumer"))),
    (
        "CONSUMER.DURABLE.CREATE",
        2,
        Some((EventKind::Declare, "consumer")),
    ),
    ("CONSUMER.NAMES", 1, None),
    ("CONSUMER.LIST", 1, None),
    ("CONSUMER.INFO", 2, None),
    ("CONSUMER.DELETE", 2, Some((EventKind::Delete, "consumer"))),
    ("CONSUMER.PAUSE", 2, None),
    ("CONSUMER.UNPIN", 2, None),
    (API_NEXT, 2, None),
    ("CONSUMER.LEADER.STEPDOWN", 2, None),
    ("ACCOUNT.PURGE", 0, None),
    ("META.LEADER.STEPDOWN", 0, None),
    ("SERVER.REMOVE", 0, None),
];

pub(super) fn api(subject: &str) -> Option<ApiCall<'_>> {
    let rest = subject.strip_prefix("$JS.")?;
    let (domain, rest) = match rest.strip_prefix("API.") {
        Some(r) => (None, r),
        None => {
            let (domain, r) = rest.split_once('.')?;
            (Some(domain), r.strip_prefix("API.")?)
        }
    };
    let mut call = ApiCall {
        name: "$JS.API",
        effect: None,
        domain,
        stream: None,
        consumer: None,
        filter: None,
    };
    let Some(&(name, nargs, effect)) = APIS.iter().find(|(name, _, _)| {
        rest.strip_prefix(name)
            .is_some_and(|r| r.is_empty() || r.starts_with('.'))
    }) else {
        return Some(call);
    };
    call.name = name;
    call.effect = effect;
    let args = rest[name.len()..].trim_start_matches('.');
    let mut tokens = args.splitn(3, '.').filter(|t| !t.is_empty());
    if nargs >= 1 {
        call.stream = tokens.next();
    }
    if nargs >= 2 {
        call.consumer = tokens.next();
        call.filter = tokens.next();
    }
    Some(call)
}

/// What a stream answered a publish with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum PubAck {
    Stored {
        stream: String,
        seq: u64,
        domain: Option<String>,
        duplicate: bool,
    },
    Failed(ApiError),
}

/// `{"error":{"code":…,"err_code":…,"description":…}}` of a PubAck or an API response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct ApiError {
    pub code: Option<u16>,
    pub err_code: Option<u64>,
    pub description: Option<String>,
}

fn api_error(obj: &[u8]) -> ApiError {
    let mut e = ApiError::default();
    let _ = wire::members(obj, |k, v| match k {
        b"code" => e.code = wire::json_u64(v).and_then(|c| u16::try_from(c).ok()),
        b"err_code" => e.err_code = wire::json_u64(v),
        b"description" => e.description = Some(wire::render(v, MAX_VALUE)),
        _ => {}
    });
    e
}

/// A PubAck, if `body` is one: `{"stream":…,"seq":…}` (maybe "domain", "duplicate"), or an
/// object with an "error".
pub(super) fn pub_ack(body: &[u8]) -> Option<PubAck> {
    let (mut stream, mut seq, mut domain, mut duplicate, mut error) =
        (None, None, None, false, None);
    wire::members(body, |k, v| match (k, v) {
        (b"stream", Json::Str(s)) => stream = Some(wire::unescape(s, MAX_VALUE)),
        (b"seq", v) => seq = wire::json_u64(v),
        (b"domain", Json::Str(s)) => domain = Some(wire::unescape(s, MAX_VALUE)),
        (b"duplicate", Json::Bool(b)) => duplicate = b,
        (b"error", Json::Obj(o)) => error = Some(api_error(o)),
        _ => {}
    })
    .ok()?;
    match (error, stream, seq) {
        (Some(e), _, _) => Some(PubAck::Failed(e)),
        (None, Some(stream), Some(seq)) => Some(PubAck::Stored {
            stream,
            seq,
            domain,
            duplicate,
        }),
        _ => None,
    }
}

/// An API response: Some(None) = a JSON object without "error", Some(Some(e)) = an error,
/// None = not JSON.
pub(super) fn response_error(body: &[u8]) -> Option<Option<ApiError>> {
    let mut error = None;
    wire::members(body, |k, v| {
        if let (b"error", Json::Obj(o)) = (k, v) {
            error = Some(api_error(o));
        }
    })
    .ok()?;
    Some(error)
}

/// Fields of a CONSUMER.CREATE request body worth reporting: the consumer's name (when the
/// subject does not carry it) and filter.
pub(super) fn consumer_config(body: &[u8]) -> (Option<String>, Option<String>) {
    let (mut name, mut filter) = (None, None);
    let _ = wire::members(body, |k, v| {
        if let (b"config", Json::Obj(cfg)) = (k, v) {
            let _ = wire::members(cfg, |k, v| match (k, v) {
                (b"durable_name" | b"name", Json::Str(s)) if name.is_none() => {
                    name = Some(wire::unescape(s, MAX_VALUE))
                }
                (b"filter_subject", Json::Str(s)) => filter = Some(wire::unescape(s, MAX_VALUE)),
                _ => {}
            });
        }
    });
    (name, filter)
}

/// The "subjects" of a STREAM.CREATE request body, as written (JSON array, cut).
pub(super) fn stream_subjects(body: &[u8]) -> Option<String> {
    let mut subjects = None;
    let _ = wire::members(body, |k, v| {
        if let (b"subjects", Json::Arr(a)) = (k, v) {
            subjects = Some(wire::text(a, MAX_VALUE));
        }
    });
    subjects
}
