//! Connection state and the mapping from decoded ops and messages to [`BrokerEvent`]s.
//!
//! The framer (`mod.rs`) hands over parsed control lines and, for PUB/HPUB/MSG/HMSG, a
//! [`InFlight`] it fills while the payload streams past (fingerprint, decoded header block, and
//! for the few small JetStream control payloads the bytes themselves). Everything
//! protocol-aware lives here: the negotiated payload limit, login, subscriptions (sid → subject
//! pattern and queue group) and reply inboxes awaiting an answer (publishes that may get a
//! PubAck, JetStream API requests).
use std::collections::VecDeque;

use super::{
    DEFAULT_MAX_PAYLOAD, MAX_CAPTURE, MAX_HEADER_BLOCK, MAX_NEGOTIATED_PAYLOAD,
    js::{self, AckKind, AckSubject, PubAck},
    wire::{self, Headers, Json, MAX_VALUE, MsgLine, Op, OpName},
};
use crate::FastMap;
use crate::{
    capture::Direction,
    event::{BrokerEvent, Destination, EventKind, Fingerprint, Outcome, System},
    protocol::Ctx,
};

/// Subscriptions remembered per connection to name deliveries (more are not tracked).
const MAX_SUBS: usize = 4096;
/// Reply inboxes awaiting an answer; the oldest is forgotten first (unanswered requests,
/// timed-out publishes).
const MAX_WAITING: usize = 1024;

/// -ERR texts that mean the login was refused (nats-server's wording, lowercased).
const AUTH_ERRORS: [&str; 4] = [
    "authorization violation",
    "authentication timeout",
    "authentication expired",
    "authentication revoked",
];

type Out<'o> = &'o mut dyn FnMut(BrokerEvent);

#[derive(Debug)]
pub(super) struct Session {
    /// Largest payload accepted: the INFO's max_payload once seen.
    limit: usize,
    auth: Auth,
    /// sid → subscription.
    subs: FastMap<String, Sub>,
    waiting: Waiting,
}

impl Default for Session {
    fn default() -> Self {
        Self {
            limit: DEFAULT_MAX_PAYLOAD,
            auth: Auth::Unknown,
            subs: FastMap::default(),
            waiting: Waiting::default(),
        }
    }
}

/// Login progress. Holds the user name only: CONNECT's secrets are never copied.
#[derive(Debug, Default)]
enum Auth {
    /// No CONNECT seen (not yet, or joined mid-stream): no Auth event.
    #[default]
    Unknown,
    /// CONNECT seen. NATS says nothing on success (unless verbose): the first PONG, +OK or
    /// MSG means accepted, an authorization -ERR means refused.
    Pending {
        user: Option<String>,
        /// The client's `name`, carried on the Auth event like MQTT's client id.
        client_id: Option<String>,
        mechanism: &'static str,
    },
    Done,
}

#[derive(Debug)]
struct Sub {
    subject: String,
    queue: Option<String>,
    delivered: u64,
    /// UNSUB <sid> <max>: the subscription ends after `max` messages in all.
    max: Option<u64>,
}

/// What a reply inbox waits for.
#[derive(Clone, Debug)]
enum Wait {
    /// A publish with a reply subject: a JetStream PubAck, or a core reply (a Deliver).
    Publish { subject: String, fingerprint: u64 },
    /// A JetStream API request (or an ack asking for confirmation): its replies are Responses.
    /// `keep`: pull requests get many (status messages; deliveries are recognised by their
    /// `$JS.ACK` reply subject before this).
    Api {
        name: &'static str,
        subject: String,
        keep: bool,
    },
}

/// Inbox → what it waits for, bounded, oldest forgotten first. `order` may hold entries
/// already answered (skipped by their sequence number, compacted when it doubles).
#[derive(Debug, Default)]
struct Waiting {
    map: FastMap<String, (u64, Wait)>,
    order: VecDeque<(u64, String)>,
    next: u64,
}

impl Waiting {
    fn insert(&mut self, inbox: String, wait: Wait) {
        let seq = self.next;
        self.next += 1;
        self.order.push_back((seq, inbox.clone()));
        self.map.insert(inbox, (seq, wait));
        while self.map.len() > MAX_WAITING {
            let Some((s, inbox)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&inbox).is_some_and(|e| e.0 == s) {
                self.map.remove(&inbox);
            }
        }
        if self.order.len() > 2 * MAX_WAITING {
            let map = &self.map;
            self.order
                .retain(|(s, inbox)| map.get(inbox).is_some_and(|e| e.0 == *s));
        }
    }

    fn contains(&self, inbox: &str) -> bool {
        !self.map.is_empty() && self.map.contains_key(inbox)
    }

    fn get(&self, inbox: &str) -> Option<&Wait> {
        if self.map.is_empty() {
            return None;
        }
        self.map.get(inbox).map(|e| &e.1)
    }

    fn remove(&mut self, inbox: &str) -> Option<Wait> {
        self.map.remove(inbox).map(|e| e.1)
    }
}

/// A PUB/HPUB/MSG/HMSG whose payload is streaming past.
#[derive(Debug)]
pub(super) struct InFlight {
    op: OpName,
    subject: String,
    sid: Option<String>,
    reply: Option<String>,
    body_len: u64,
    /// Keep the payload bytes (≤ [`MAX_CAPTURE`]): JetStream acks, API requests, replies to
    /// inboxes we wait on. Nothing else is ever held.
    pub(super) capture: bool,
    pub(super) fp: Fingerprint,
    headers: Option<Headers>,
}

impl InFlight {
    /// The header block (the decoder keeps at most [`MAX_HEADER_BLOCK`] bytes of it).
    pub(super) fn set_headers(&mut self, block: &[u8]) {
        self.headers = Some(wire::headers(&block[..block.len().min(MAX_HEADER_BLOCK)]));
    }
}

fn event(ctx: &Ctx<'_>, kind: EventKind, method: &'static str) -> BrokerEvent {
    let mut e = BrokerEvent::new(ctx.ts_ns, System::Nats, kind, ctx.conn.clone(), ctx.dir);
    e.method = Some(method);
    e
}

fn subject(s: impl Into<String>) -> Option<Destination> {
    Some(Destination {
        subject: Some(s.into()),
        ..Default::default()
    })
}

fn offset(seq: u64) -> Option<i64> {
    i64::try_from(seq).ok()
}

/// A JetStream delivery's or ack's ids: offset = stream sequence, delivery tag = consumer
/// sequence (each delivery, redeliveries included, gets its own).
fn js_ids(e: &mut BrokerEvent, a: &AckSubject<'_>) {
    e.offset = offset(a.stream_seq);
    e.delivery_tag = Some(a.consumer_seq);
    e.attrs.push(("stream", a.stream.into()));
    e.attrs.push(("consumer", a.consumer.into()));
    e.attrs.push(("delivered", a.delivered.to_string()));
}

impl Session {
    pub(super) fn payload_limit(&self) -> usize {
        self.limit
    }

    /// A message line was parsed (its size is within the limit): set up its payload.
    pub(super) fn begin(&self, m: &MsgLine<'_>) -> InFlight {
        let subject = wire::string(m.subject);
        let body_len = m.total - m.hdr;
        let capture = body_len <= MAX_CAPTURE as u64
            && match m.op {
                OpName::Pub | OpName::Hpub => subject.starts_with("$JS."),
                _ => self.waiting.contains(&subject),
            };
        InFlight {
            op: m.op,
            subject,
            sid: m.sid.map(wire::string),
            reply: m.reply.map(wire::string),
            body_len,
            capture,
            fp: Fingerprint::default(),
            headers: None,
        }
    }

    /// A control line without payload. Err: it does not decode (nothing was emitted).
    pub(super) fn control(&mut self, ctx: &Ctx<'_>, op: Op<'_>, out: Out<'_>) -> Result<(), ()> {
        match op {
            Op::Info(json) => self.info(ctx, json, out)?,
            Op::Connect(json) => self.connect(ctx, json, out)?,
            Op::Sub {
                subject: s,
                queue,
                sid,
            } => {
                let (s, queue, sid) = (wire::string(s), queue.map(wire::string), wire::string(sid));
                if self.subs.len() < MAX_SUBS || self.subs.contains_key(&sid) {
                    self.subs.insert(
                        sid.clone(),
                        Sub {
                            subject: s.clone(),
                            queue: queue.clone(),
                            delivered: 0,
                            max: None,
                        },
                    );
                }
                let mut e = event(ctx, EventKind::Subscribe, "SUB");
                e.destination = Some(Destination {
                    subject: Some(s),
                    queue,
                    ..Default::default()
                });
                e.consumer_tag = Some(sid);
                out(e);
            }
            Op::Unsub { sid, max } => {
                let sid = wire::string(sid);
                let mut e = event(ctx, EventKind::Unsubscribe, "UNSUB");
                if let Some(sub) = self.subs.get_mut(&sid) {
                    e.destination = Some(Destination {
                        subject: Some(sub.subject.clone()),
                        queue: sub.queue.clone(),
                        ..Default::default()
                    });
                    match max {
                        // Auto-unsubscribe after `max` messages in all.
                        Some(max) if max > sub.delivered => sub.max = Some(max),
                        _ => {
                            self.subs.remove(&sid);
                        }
                    }
                }
                if let Some(max) = max {
                    e.attrs.push(("max", max.to_string()));
                }
                e.consumer_tag = Some(sid);
                out(e);
            }
            Op::Ping => {}
            Op::Pong | Op::Ok => {
                if ctx.dir == Direction::Egress {
                    let name = if matches!(op, Op::Pong) {
                        "PONG"
                    } else {
                        "+OK"
                    };
                    self.auth_accepted(ctx, name, out);
                }
            }
            Op::Err(raw) => {
                let inner = raw
                    .strip_prefix(b"'")
                    .and_then(|r| r.strip_suffix(b"'"))
                    .unwrap_or(raw);
                let text = wire::text(inner, MAX_VALUE);
                let lower = text.to_ascii_lowercase();
                let refused = AUTH_ERRORS.iter().any(|a| lower.contains(a));
                match std::mem::take(&mut self.auth) {
                    Auth::Pending {
                        user,
                        client_id,
                        mechanism,
                    } if refused => {
                        let mut e = event(ctx, EventKind::Auth, "-ERR");
                        e.user = user;
                        e.client_id = client_id;
                        e.mechanism = Some(mechanism.into());
                        e.outcome = Some(Outcome::Failure);
                        e.reply_text = Some(text);
                        self.auth = Auth::Done;
                        out(e);
                    }
                    auth => {
                        self.auth = auth;
                        let mut e = event(ctx, EventKind::Error, "-ERR");
                        e.reply_text = Some(text);
                        out(e);
                    }
                }
            }
            // Messages go through begin/finish; the framer never hands one over here.
            Op::Msg(_) => return Err(()),
        }
        Ok(())
    }

    fn auth_accepted(&mut self, ctx: &Ctx<'_>, method: &'static str, out: Out<'_>) {
        if !matches!(self.auth, Auth::Pending { .. }) {
            return;
        }
        if let Auth::Pending {
            user,
            client_id,
            mechanism,
        } = std::mem::replace(&mut self.auth, Auth::Done)
        {
            let mut e = event(ctx, EventKind::Auth, method);
            e.user = user;
            e.client_id = client_id;
            e.mechanism = Some(mechanism.into());
            e.outcome = Some(Outcome::Success);
            out(e);
        }
    }

    fn info(&mut self, ctx: &Ctx<'_>, json: &[u8], out: Out<'_>) -> Result<(), ()> {
        const KEYS: [&str; 9] = [
            "server_id",
            "server_name",
            "version",
            "proto",
            "max_payload",
            "headers",
            "jetstream",
            "auth_required",
            "tls_required",
        ];
        let mut vals: [Option<Json<'_>>; 9] = [None; 9];
        wire::members(json, |k, v| {
            if let Some(i) = KEYS.iter().position(|key| key.as_bytes() == k) {
                vals[i] = Some(v);
            }
        })
        .map_err(|_| ())?;
        if let Some(max) = vals[4].and_then(wire::json_u64).filter(|&n| n > 0) {
            self.limit = max.min(MAX_NEGOTIATED_PAYLOAD as u64) as usize;
        }
        let mut e = event(ctx, EventKind::Control, "INFO");
        e.attrs = KEYS
            .iter()
            .zip(vals)
            .filter_map(|(k, v)| Some((*k, wire::render(v?, MAX_VALUE))))
            .collect();
        out(e);
        Ok(())
    }

    /// CONNECT: keeps the user, client name and options; notes which credentials were given
    /// without copying any.
    fn connect(&mut self, ctx: &Ctx<'_>, json: &[u8], out: Out<'_>) -> Result<(), ()> {
        const KEYS: [&str; 10] = [
            "user",
            "name",
            "lang",
            "version",
            "protocol",
            "verbose",
            "pedantic",
            "headers",
            "echo",
            "no_responders",
        ];
        let mut vals: [Option<Json<'_>>; 10] = [None; 10];
        let (mut pass, mut token, mut jwt, mut nkey) = (false, false, false, false);
        wire::members(json, |k, v| match k {
            b"pass" => pass = true,
            b"auth_token" => token = true,
            b"jwt" => jwt = true,
            b"nkey" => nkey = true,
            b"sig" => {}
            _ => {
                if let Some(i) = KEYS.iter().position(|key| key.as_bytes() == k) {
                    vals[i] = Some(v);
                }
            }
        })
        .map_err(|_| ())?;
        let name = |v: Option<Json<'_>>| match v {
            Some(Json::Str(s)) if !s.is_empty() => Some(wire::unescape(s, MAX_VALUE)),
            _ => None,
        };
        let user = name(vals[0]);
        let mechanism = if jwt {
            "jwt"
        } else if nkey {
            "nkey"
        } else if token {
            "token"
        } else if pass || vals[0].is_some() {
            "user_password"
        } else {
            "none"
        };
        let mut e = event(ctx, EventKind::Control, "CONNECT");
        e.user = user.clone();
        e.client_id = name(vals[1]);
        e.mechanism = Some(mechanism.into());
        e.attrs = KEYS[2..]
            .iter()
            .zip(&vals[2..])
            .filter_map(|(k, v)| Some((*k, wire::render((*v)?, MAX_VALUE))))
            .collect();
        self.auth = Auth::Pending {
            user,
            client_id: e.client_id.clone(),
            mechanism,
        };
        out(e);
        Ok(())
    }

    /// A message's payload and trailing CRLF are through: its events.
    pub(super) fn finish(&mut self, ctx: &Ctx<'_>, m: InFlight, captured: &[u8], out: Out<'_>) {
        match m.op {
            OpName::Pub | OpName::Hpub => self.client_message(ctx, m, captured, out),
            _ => self.server_message(ctx, m, captured, out),
        }
    }

    fn client_message(&mut self, ctx: &Ctx<'_>, m: InFlight, captured: &[u8], out: Out<'_>) {
        let body = m.capture.then_some(captured);
        let method = m.op.as_str();
        if let Some(a) = js::ack_subject(&m.subject) {
            let kind = js::ack_kind(body);
            let ack = |k: EventKind, method: &'static str| {
                let mut e = event(ctx, k, method);
                js_ids(&mut e, &a);
                if let Some(d) = a.domain {
                    e.attrs.push(("domain", d.into()));
                }
                e
            };
            match kind {
                AckKind::Ack => out(ack(EventKind::Ack, kind.method())),
                AckKind::Nak { delay } => {
                    let mut e = ack(EventKind::Nack, kind.method());
                    e.requeue = Some(true);
                    if let Some(d) = delay {
                        e.attrs.push(("delay", d.to_string()));
                    }
                    out(e);
                }
                AckKind::Term { reason } => {
                    let mut e = ack(EventKind::Reject, kind.method());
                    e.requeue = Some(false);
                    e.reply_text = (!reason.is_empty()).then(|| wire::text(reason, MAX_VALUE));
                    out(e);
                }
                AckKind::Progress => out(ack(EventKind::Control, kind.method())),
                AckKind::Next { batch } => {
                    out(ack(EventKind::Ack, kind.method()));
                    let mut e = ack(EventKind::Control, kind.method());
                    e.attrs.push(("pull", "next".into()));
                    if let Some(b) = batch {
                        e.attrs.push(("batch", b.to_string()));
                    }
                    out(e);
                }
                AckKind::Other => {
                    let mut e = ack(EventKind::Control, method);
                    e.body_size = Some(m.body_len);
                    out(e);
                }
            }
            if let Some(reply) = m.reply {
                // An ack that asks to be confirmed (AckSync / double ack).
                let wait = Wait::Api {
                    name: kind.method(),
                    subject: m.subject.clone(),
                    keep: false,
                };
                self.waiting.insert(reply, wait);
            }
            return;
        }
        if m.subject.starts_with("$JS.FC.") {
            // Answer to a push consumer's flow-control request: not a message.
            let mut e = event(ctx, EventKind::Control, method);
            e.destination = subject(m.subject);
            out(e);
            return;
        }
        if let Some(api) = js::api(&m.subject) {
            self.api_request(ctx, &m, &api, body, out);
            if let Some(reply) = m.reply.clone() {
                let wait = Wait::Api {
                    name: api.name,
                    subject: m.subject.clone(),
                    keep: api.name == js::API_NEXT,
                };
                self.waiting.insert(reply, wait);
            }
            return;
        }
        let fingerprint = m.fp.finish();
        let mut e = event(ctx, EventKind::Publish, method);
        e.body_size = Some(m.body_len);
        e.fingerprint = Some(fingerprint);
        e.props = m.headers.map(|h| h.props);
        e.reply_to = m.reply.clone();
        if let Some(reply) = m.reply {
            let wait = Wait::Publish {
                subject: m.subject.clone(),
                fingerprint,
            };
            self.waiting.insert(reply, wait);
        }
        e.destination = subject(m.subject);
        out(e);
    }

    fn api_request(
        &mut self,
        ctx: &Ctx<'_>,
        m: &InFlight,
        api: &js::ApiCall<'_>,
        body: Option<&[u8]>,
        out: Out<'_>,
    ) {
        let mut e = event(ctx, EventKind::Request, api.name);
        e.destination = subject(m.subject.as_str());
        e.reply_to = m.reply.clone();
        e.body_size = Some(m.body_len);
        e.fingerprint = Some(m.fp.finish());
        let mut consumer = api.consumer.map(String::from);
        let mut filter = api.filter.map(String::from);
        let mut extra = Vec::new();
        if let Some(body) = body {
            match api.name {
                js::API_NEXT => {
                    let r = js::next_request(body);
                    extra.extend(r.batch.map(|b| ("batch", b.to_string())));
                    extra.extend(r.expires.map(|x| ("expires", x.to_string())));
                    extra.extend(r.no_wait.map(|x| ("no_wait", x.to_string())));
                }
                "STREAM.CREATE" | "STREAM.UPDATE" => {
                    extra.extend(js::stream_subjects(body).map(|s| ("subjects", s)));
                }
                "CONSUMER.CREATE" | "CONSUMER.DURABLE.CREATE" => {
                    let (name, f) = js::consumer_config(body);
                    consumer = consumer.or(name);
                    filter = filter.or(f);
                }
                _ => {}
            }
        }
        let mut ids = Vec::new();
        ids.extend(api.stream.map(|s| ("stream", s.to_string())));
        ids.extend(consumer.clone().map(|c| ("consumer", c)));
        ids.extend(filter.map(|f| ("filter", f)));
        ids.extend(api.domain.map(|d| ("domain", d.to_string())));
        e.attrs = ids.iter().cloned().chain(extra).collect();
        out(e);
        if let Some((kind, resource)) = api.effect {
            let mut d = event(ctx, kind, api.name);
            let name = match resource {
                "stream" => api.stream.map(String::from),
                _ => {
                    d.attrs
                        .extend(api.stream.map(|s| ("stream", s.to_string())));
                    consumer
                }
            };
            d.destination = Some(Destination {
                subject: name,
                resource: Some(resource),
                ..Default::default()
            });
            d.attrs
                .extend(api.domain.map(|x| ("domain", x.to_string())));
            out(d);
        }
    }

    fn server_message(&mut self, ctx: &Ctx<'_>, m: InFlight, captured: &[u8], out: Out<'_>) {
        let method = m.op.as_str();
        self.auth_accepted(ctx, method, out);
        let sub = m.sid.as_deref().and_then(|sid| {
            let s = self.subs.get_mut(sid)?;
            s.delivered += 1;
            let found = (s.subject.clone(), s.queue.clone());
            if s.max.is_some_and(|max| s.delivered >= max) {
                self.subs.remove(sid);
            }
            Some(found)
        });
        let body = m.capture.then_some(captured);
        let status = m.headers.as_ref().and_then(|h| h.status.clone());

        // A JetStream delivery: its reply subject is the ack subject.
        if let Some(a) = m.reply.as_deref().and_then(js::ack_subject) {
            let mut e = deliver(ctx, &m, sub, status);
            js_ids(&mut e, &a);
            e.attrs.push(("stream_seq", a.stream_seq.to_string()));
            e.attrs.push(("consumer_seq", a.consumer_seq.to_string()));
            e.attrs.push(("pending", a.pending.to_string()));
            if let Some(d) = a.domain {
                e.attrs.push(("domain", d.into()));
            }
            e.redelivered = Some(a.delivered > 1);
            out(e);
            return;
        }
        // Idle heartbeat / flow-control request of a push consumer: not a message.
        if let Some((100, text)) = &status {
            let mut e = event(ctx, EventKind::Control, method);
            e.destination = subject(m.subject.as_str());
            e.consumer_tag = m.sid.clone();
            e.reply_to = m.reply.clone();
            e.reply_code = Some(100);
            e.reply_text = (!text.is_empty()).then(|| text.clone());
            out(e);
            return;
        }
        // A pull request's inbox stays registered for its later replies; others are answered.
        let wait = match self.waiting.get(&m.subject) {
            Some(Wait::Api { keep: true, .. }) => self.waiting.get(&m.subject).cloned(),
            Some(_) => self.waiting.remove(&m.subject),
            None => None,
        };
        match wait {
            Some(Wait::Publish {
                subject: published,
                fingerprint,
            }) => {
                // Only a PubAck is a confirm; any other answer is a core reply, delivered.
                if let Some(ack) = body.and_then(js::pub_ack) {
                    let mut e = match ack {
                        PubAck::Stored {
                            stream,
                            seq,
                            domain,
                            duplicate,
                        } => {
                            let mut e = event(ctx, EventKind::Confirm, method);
                            e.offset = offset(seq);
                            e.attrs.push(("stream", stream));
                            e.attrs.extend(domain.map(|d| ("domain", d)));
                            if duplicate {
                                e.attrs.push(("duplicate", "true".into()));
                            }
                            e
                        }
                        PubAck::Failed(err) => {
                            let mut e = event(ctx, EventKind::Nack, method);
                            e.reply_code = err.code;
                            e.reply_text = err.description;
                            e.attrs
                                .extend(err.err_code.map(|c| ("err_code", c.to_string())));
                            e
                        }
                    };
                    e.destination = subject(published);
                    e.fingerprint = Some(fingerprint);
                    out(e);
                    return;
                }
            }
            Some(Wait::Api {
                name, subject: s, ..
            }) => {
                let mut e = event(ctx, EventKind::Response, name);
                e.destination = subject(s);
                e.body_size = Some(m.body_len);
                e.fingerprint = Some(m.fp.finish());
                match (status, body.and_then(js::response_error)) {
                    (Some((code, text)), _) => {
                        e.reply_code = Some(code);
                        e.reply_text = (!text.is_empty()).then_some(text);
                        if code == 503 {
                            e.outcome = Some(Outcome::Failure);
                        }
                    }
                    (None, Some(Some(err))) => {
                        e.reply_code = err.code;
                        e.reply_text = err.description;
                        e.attrs
                            .extend(err.err_code.map(|c| ("err_code", c.to_string())));
                        e.outcome = Some(Outcome::Failure);
                    }
                    (None, Some(None)) => e.outcome = Some(Outcome::Success),
                    (None, None) => {}
                }
                out(e);
                return;
            }
            None => {}
        }
        out(deliver(ctx, &m, sub, status));
    }
}

/// The Deliver event of a MSG/HMSG (`sub`: its subscription's subject pattern and queue group).
fn deliver(
    ctx: &Ctx<'_>,
    m: &InFlight,
    sub: Option<(String, Option<String>)>,
    status: Option<(u16, String)>,
) -> BrokerEvent {
    let mut e = event(ctx, EventKind::Deliver, m.op.as_str());
    let (pattern, queue) = match sub {
        Some((p, q)) => (Some(p), q),
        None => (None, None),
    };
    e.destination = Some(Destination {
        subject: Some(m.subject.clone()),
        queue,
        ..Default::default()
    });
    e.consumer_tag = m.sid.clone();
    e.reply_to = m.reply.clone();
    e.body_size = Some(m.body_len);
    e.fingerprint = Some(m.fp.finish());
    e.props = m.headers.as_ref().map(|h| h.props.clone());
    if let Some((code, text)) = status {
        e.reply_code = Some(code);
        e.reply_text = (!text.is_empty()).then_some(text);
    }
    e.attrs.extend(pattern.map(|p| ("subscription", p)));
    e
}
