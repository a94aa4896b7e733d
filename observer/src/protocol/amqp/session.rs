//! Connection and channel state, and the mapping from decoded frames to [`BrokerEvent`]s.
//!
//! The framer (`mod.rs`) hands over whole method and content-header payloads and streams body
//! bytes; everything protocol-aware lives here: login, vhost, negotiated frame size, channels,
//! publisher-confirm sequence numbers, consumer tags, and messages being assembled.
use std::collections::VecDeque;

use super::{
    MAX_FRAME, MAX_NEGOTIATED_FRAME, MIN_FRAME,
    wire::{self, MAX_VALUE, Reader, Undecodable, Value},
};
use crate::FastMap;
use crate::{
    capture::Direction,
    event::{BrokerEvent, Destination, EventKind, Fingerprint, MessageProps, Outcome, System},
    protocol::Ctx,
};

/// Why a frame was not turned into events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Bad {
    /// Well framed, but the class/method id is not AMQP 0-9-1: skip the frame.
    Unknown,
    /// The arguments do not decode: count it and resync.
    Undecodable,
}

impl From<Undecodable> for Bad {
    fn from(_: Undecodable) -> Self {
        Bad::Undecodable
    }
}

/// Messages being assembled per direction (channels interleave, so several at once).
const MAX_PENDING: usize = 1024;
/// Queue names and consumer tags remembered to name deliveries (across all channels).
const MAX_NAMES: usize = 4096;
/// Outstanding confirm ranges per channel (out-of-order single acks fragment them).
const MAX_RANGES: usize = 64;

type Out<'o> = &'o mut dyn FnMut(BrokerEvent);

#[derive(Debug, Default)]
pub(super) struct Session {
    conn: ConnInfo,
    channels: FastMap<u16, Channel>,
    /// Indexed by `Direction as usize`: publishes assemble on ingress, deliveries on egress.
    content: [FastMap<u16, Pending>; 2],
    /// Names held in `Channel::{consumes, gets, consumers}`, bounded by `MAX_NAMES`.
    names: usize,
    frame_limit: Option<usize>,
}

/// What the connection negotiated. Holds the user name only: the PLAIN/AMQPLAIN password and
/// secure-ok / update-secret payloads are parsed in place and never copied.
#[derive(Debug, Default)]
struct ConnInfo {
    mechanisms: Option<String>,
    user: Option<String>,
    mechanism: Option<String>,
    vhost: Option<String>,
    auth: AuthStage,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum AuthStage {
    /// No start-ok seen (not yet, or joined mid-stream): no Auth event.
    #[default]
    Unknown,
    /// start-ok seen: tune means accepted, close 403 means refused.
    Pending,
    Done,
}

#[derive(Debug, Default)]
struct Channel {
    confirm: Option<Confirms>,
    /// channel.close seen: its close-ok is Control, not a second ChannelClosed.
    closing: bool,
    /// Queues of basic.consume awaiting consume-ok (which carries the, maybe server-made, tag).
    consumes: VecDeque<String>,
    /// Queues of basic.get awaiting get-ok / get-empty.
    gets: VecDeque<String>,
    /// consumer tag → queue, to name deliveries.
    consumers: Vec<(String, String)>,
}

impl Channel {
    fn names(&self) -> usize {
        self.consumes.len() + self.gets.len() + self.consumers.len()
    }
}

/// Publisher confirms on one channel: sequence numbers count basic.publish from 1.
#[derive(Debug)]
struct Confirms {
    next: u64,
    /// False once ingress lost bytes: publishes may have been missed, numbering is unknown.
    known: bool,
    /// Published, not yet confirmed: sorted, disjoint `start..end` ranges.
    outstanding: VecDeque<(u64, u64)>,
}

impl Confirms {
    fn new() -> Self {
        Self {
            next: 1,
            known: true,
            outstanding: VecDeque::new(),
        }
    }

    fn publish(&mut self) -> u64 {
        let seq = self.next;
        self.next += 1;
        match self.outstanding.back_mut() {
            Some(last) if last.1 == seq => last.1 += 1,
            _ => {
                if self.outstanding.len() == MAX_RANGES {
                    self.outstanding.pop_front();
                }
                self.outstanding.push_back((seq, seq + 1));
            }
        }
        seq
    }

    /// Removes every outstanding seq ≤ `upto`, calling `f` for each, in order.
    fn take_upto(&mut self, upto: u64, mut f: impl FnMut(u64)) {
        while let Some(front) = self.outstanding.front_mut() {
            if front.0 > upto {
                break;
            }
            let end = front.1.min(upto.saturating_add(1));
            (front.0..end).for_each(&mut f);
            if end >= front.1 {
                self.outstanding.pop_front();
            } else {
                front.0 = end;
            }
        }
    }

    fn remove(&mut self, seq: u64) {
        let Some(i) = self
            .outstanding
            .iter()
            .position(|r| r.0 <= seq && seq < r.1)
        else {
            return;
        };
        let (start, end) = self.outstanding[i];
        match (start == seq, end == seq + 1) {
            (true, true) => {
                self.outstanding.remove(i);
            }
            (true, false) => self.outstanding[i].0 = seq + 1,
            (false, true) => self.outstanding[i].1 = seq,
            (false, false) => {
                self.outstanding[i].1 = seq;
                if self.outstanding.len() < MAX_RANGES {
                    self.outstanding.insert(i + 1, (seq + 1, end));
                }
            }
        }
    }
}

/// A content-bearing method waiting for its header and body.
#[derive(Debug)]
struct Pending {
    msg: Msg,
    stage: Stage,
}

#[derive(Debug)]
enum Msg {
    Publish {
        exchange: String,
        routing_key: String,
        seq: Option<u64>,
    },
    Deliver {
        consumer_tag: String,
        tag: u64,
        redelivered: bool,
        exchange: String,
        routing_key: String,
        queue: Option<String>,
    },
    GetOk {
        tag: u64,
        redelivered: bool,
        exchange: String,
        routing_key: String,
        message_count: u32,
        queue: Option<String>,
    },
    Return {
        reply_code: u16,
        reply_text: String,
        exchange: String,
        routing_key: String,
    },
}

#[derive(Debug)]
enum Stage {
    Header,
    Body {
        size: u64,
        got: u64,
        fp: Fingerprint,
        props: MessageProps,
    },
}

fn event(ctx: &Ctx<'_>, kind: EventKind, method: &'static str, ch: u16) -> BrokerEvent {
    let mut e = BrokerEvent::new(ctx.ts_ns, System::Amqp, kind, ctx.conn.clone(), ctx.dir);
    e.method = Some(method);
    e.channel = Some(u32::from(ch));
    e
}

fn s(bytes: &[u8]) -> String {
    wire::text(bytes, MAX_VALUE)
}

/// Frame payload limit for a negotiated frame_max (0 = "no limit", capped).
fn negotiated(frame_max: u32) -> usize {
    if frame_max == 0 {
        MAX_NEGOTIATED_FRAME
    } else {
        (frame_max as usize).clamp(MIN_FRAME, MAX_NEGOTIATED_FRAME)
    }
}

pub(super) fn method_name(class: u16, id: u16) -> Option<&'static str> {
    Some(match (class, id) {
        (10, 10) => "connection.start",
        (10, 11) => "connection.start-ok",
        (10, 20) => "connection.secure",
        (10, 21) => "connection.secure-ok",
        (10, 30) => "connection.tune",
        (10, 31) => "connection.tune-ok",
        (10, 40) => "connection.open",
        (10, 41) => "connection.open-ok",
        (10, 50) => "connection.close",
        (10, 51) => "connection.close-ok",
        (10, 60) => "connection.blocked",
        (10, 61) => "connection.unblocked",
        (10, 70) => "connection.update-secret",
        (10, 71) => "connection.update-secret-ok",
        (20, 10) => "channel.open",
        (20, 11) => "channel.open-ok",
        (20, 20) => "channel.flow",
        (20, 21) => "channel.flow-ok",
        (20, 40) => "channel.close",
        (20, 41) => "channel.close-ok",
        (40, 10) => "exchange.declare",
        (40, 11) => "exchange.declare-ok",
        (40, 20) => "exchange.delete",
        (40, 21) => "exchange.delete-ok",
        (40, 30) => "exchange.bind",
        (40, 31) => "exchange.bind-ok",
        (40, 40) => "exchange.unbind",
        (40, 51) => "exchange.unbind-ok",
        (50, 10) => "queue.declare",
        (50, 11) => "queue.declare-ok",
        (50, 20) => "queue.bind",
        (50, 21) => "queue.bind-ok",
        (50, 30) => "queue.purge",
        (50, 31) => "queue.purge-ok",
        (50, 40) => "queue.delete",
        (50, 41) => "queue.delete-ok",
        (50, 50) => "queue.unbind",
        (50, 51) => "queue.unbind-ok",
        (60, 10) => "basic.qos",
        (60, 11) => "basic.qos-ok",
        (60, 20) => "basic.consume",
        (60, 21) => "basic.consume-ok",
        (60, 30) => "basic.cancel",
        (60, 31) => "basic.cancel-ok",
        (60, 40) => "basic.publish",
        (60, 50) => "basic.return",
        (60, 60) => "basic.deliver",
        (60, 70) => "basic.get",
        (60, 71) => "basic.get-ok",
        (60, 72) => "basic.get-empty",
        (60, 80) => "basic.ack",
        (60, 90) => "basic.reject",
        (60, 100) => "basic.recover-async",
        (60, 110) => "basic.recover",
        (60, 111) => "basic.recover-ok",
        (60, 120) => "basic.nack",
        (85, 10) => "confirm.select",
        (85, 11) => "confirm.select-ok",
        (90, 10) => "tx.select",
        (90, 11) => "tx.select-ok",
        (90, 20) => "tx.commit",
        (90, 21) => "tx.commit-ok",
        (90, 30) => "tx.rollback",
        (90, 31) => "tx.rollback-ok",
        _ => return None,
    })
}

/// The login name in a start-ok response. PLAIN is `authzid \0 authcid \0 password`; AMQPLAIN a
/// field table with LOGIN and PASSWORD. Only the name is copied out.
fn login_user(mechanism: &[u8], response: &[u8]) -> Option<String> {
    if mechanism.eq_ignore_ascii_case(b"PLAIN") {
        let mut parts = response.splitn(3, |&b| b == 0);
        let (authzid, authcid) = (parts.next()?, parts.next()?);
        parts.next()?;
        let user = if authcid.is_empty() { authzid } else { authcid };
        (!user.is_empty()).then(|| s(user))
    } else if mechanism.eq_ignore_ascii_case(b"AMQPLAIN") {
        // Clients send the table body without its length prefix; tolerate one being present.
        amqplain_login(response).or_else(|| response.get(4..).and_then(amqplain_login))
    } else {
        None
    }
}

fn amqplain_login(table: &[u8]) -> Option<String> {
    let mut login = None;
    wire::for_each_field(table, |name, value| {
        if name == b"LOGIN"
            && let Value::Str(v) | Value::Bytes(v) = value
        {
            login = Some(s(v));
        }
    })
    .ok()?;
    login
}

impl Session {
    /// Largest frame payload accepted: negotiated frame_max once tune/tune-ok was seen.
    pub(super) fn frame_limit(&self) -> usize {
        self.frame_limit.unwrap_or(MAX_FRAME)
    }

    fn dest(&self) -> Destination {
        Destination {
            vhost: self.conn.vhost.clone(),
            ..Default::default()
        }
    }

    fn chan(&mut self, ch: u16) -> &mut Channel {
        self.channels.entry(ch).or_default()
    }

    fn forget_channel(&mut self, ch: u16) {
        if let Some(c) = self.channels.remove(&ch) {
            self.names -= c.names();
        }
        for content in &mut self.content {
            content.remove(&ch);
        }
    }

    fn remember_consumer(&mut self, ch: u16, tag: String, queue: String) {
        if self.names < MAX_NAMES {
            self.names += 1;
            self.chan(ch).consumers.push((tag, queue));
        }
    }

    fn consumer_queue(&self, ch: u16, tag: &str) -> Option<String> {
        let c = self.channels.get(&ch)?;
        c.consumers
            .iter()
            .find(|(t, _)| t == tag)
            .map(|(_, q)| q.clone())
    }

    fn forget_consumer(&mut self, ch: u16, tag: &str) {
        if let Some(c) = self.channels.get_mut(&ch)
            && let Some(i) = c.consumers.iter().position(|(t, _)| t == tag)
        {
            c.consumers.swap_remove(i);
            self.names -= 1;
        }
    }

    fn push_name(&mut self, ch: u16, get: bool, queue: String) {
        if self.names < MAX_NAMES {
            self.names += 1;
            let c = self.chan(ch);
            if get {
                c.gets.push_back(queue)
            } else {
                c.consumes.push_back(queue)
            }
        }
    }

    fn pop_name(&mut self, ch: u16, get: bool) -> Option<String> {
        let c = self.channels.get_mut(&ch)?;
        let q = if get {
            c.gets.pop_front()
        } else {
            c.consumes.pop_front()
        }?;
        self.names -= 1;
        Some(q)
    }

    /// The direction lost bytes (gap, or a resync after malformed bytes): partial messages are
    /// dropped, reply pairing (consume/consume-ok, get/get-ok) restarts, and after ingress loss
    /// the confirm numbering is unknown (publishes may have been missed).
    pub(super) fn lost_sync(&mut self, dir: Direction) {
        self.content[dir as usize].clear();
        for c in self.channels.values_mut() {
            self.names -= c.consumes.len() + c.gets.len();
            c.consumes.clear();
            c.gets.clear();
            if dir == Direction::Ingress
                && let Some(cf) = &mut c.confirm
            {
                cf.known = false;
                cf.outstanding.clear();
            }
        }
    }

    /// Drops every message being assembled in `dir` (the direction ended).
    pub(super) fn drop_all_content(&mut self, dir: Direction) {
        self.content[dir as usize].clear();
    }

    /// Drops the message being assembled on `ch` (its body frame was skipped as oversize).
    pub(super) fn drop_content(&mut self, dir: Direction, ch: u16) {
        self.content[dir as usize].remove(&ch);
    }

    fn start_content(&mut self, dir: Direction, ch: u16, msg: Msg) {
        let content = &mut self.content[dir as usize];
        if content.len() < MAX_PENDING || content.contains_key(&ch) {
            content.insert(
                ch,
                Pending {
                    msg,
                    stage: Stage::Header,
                },
            );
        }
    }

    /// A complete method frame's payload.
    pub(super) fn method(
        &mut self,
        ctx: &Ctx<'_>,
        ch: u16,
        payload: &[u8],
        out: Out<'_>,
    ) -> Result<(), Bad> {
        let mut r = Reader::new(payload);
        let class = r.u16()?;
        let id = r.u16()?;
        let name = method_name(class, id).ok_or(Bad::Unknown)?;
        let dir = ctx.dir;
        let from_broker = dir == Direction::Egress;
        // A method ends whatever content was being assembled on its channel and direction.
        self.content[dir as usize].remove(&ch);
        let mut e = event(ctx, EventKind::Control, name, ch);
        match (class, id) {
            (10, 10) => {
                r.u8()?; // version-major
                r.u8()?; // version-minor
                r.table()?; // server-properties
                self.conn.mechanisms = Some(s(r.longstr()?));
            }
            (10, 11) => {
                r.table()?; // client-properties
                let mechanism = r.shortstr()?;
                let user = login_user(mechanism, r.longstr()?);
                let mechanism = s(mechanism);
                self.conn.user.clone_from(&user);
                self.conn.mechanism = Some(mechanism.clone());
                self.conn.auth = AuthStage::Pending;
                e.user = user;
                e.mechanism = Some(mechanism);
            }
            (10, 20) | (10, 21) => {
                r.longstr()?; // challenge / response: never kept
            }
            (10, 30) | (10, 31) => {
                r.u16()?; // channel-max
                self.frame_limit = Some(negotiated(r.u32()?));
                r.u16()?; // heartbeat
                if id == 30 && from_broker && self.conn.auth == AuthStage::Pending {
                    // The broker tunes only after accepting the login.
                    self.conn.auth = AuthStage::Done;
                    let mut a = event(ctx, EventKind::Auth, name, ch);
                    a.user.clone_from(&self.conn.user);
                    a.mechanism.clone_from(&self.conn.mechanism);
                    a.outcome = Some(Outcome::Success);
                    out(a);
                }
            }
            (10, 40) => {
                self.conn.vhost = Some(s(r.shortstr()?));
                e.destination = Some(self.dest());
            }
            (10, 50) | (20, 40) => {
                let code = r.u16()?;
                e.reply_code = Some(code);
                e.reply_text = Some(s(r.shortstr()?));
                if class == 10 {
                    if from_broker && self.conn.auth == AuthStage::Pending && code == 403 {
                        self.conn.auth = AuthStage::Done;
                        e.kind = EventKind::Auth;
                        e.outcome = Some(Outcome::Failure);
                        e.user.clone_from(&self.conn.user);
                        e.mechanism.clone_from(&self.conn.mechanism);
                    } else if from_broker && code >= 300 {
                        e.kind = EventKind::Error;
                    }
                } else {
                    self.chan(ch).closing = true;
                    if from_broker && code >= 300 {
                        let mut err = e.clone();
                        err.kind = EventKind::Error;
                        out(err);
                    }
                    e.kind = EventKind::ChannelClosed;
                }
            }
            (10, 60) => {
                e.reply_text = Some(s(r.shortstr()?)); // reason
            }
            (10, 70) => {
                r.longstr()?; // new-secret: never kept
            }
            (20, 10) => {
                // A (re)opened channel starts from scratch.
                self.forget_channel(ch);
            }
            (20, 11) if from_broker => e.kind = EventKind::ChannelOpened,
            (20, 41) => {
                let counted = self.channels.get(&ch).is_some_and(|c| c.closing);
                if !counted {
                    e.kind = EventKind::ChannelClosed;
                }
                self.forget_channel(ch);
            }
            (40, 10) | (40, 20) => {
                r.u16()?; // ticket
                e.kind = if id == 10 {
                    EventKind::Declare
                } else {
                    EventKind::Delete
                };
                e.destination = Some(Destination {
                    exchange: Some(s(r.shortstr()?)),
                    resource: Some("exchange"),
                    ..self.dest()
                });
            }
            (40, 30) | (40, 40) => {
                r.u16()?; // ticket
                let destination = s(r.shortstr()?);
                r.shortstr()?; // source
                e.kind = if id == 30 {
                    EventKind::Bind
                } else {
                    EventKind::Unbind
                };
                e.destination = Some(Destination {
                    exchange: Some(destination),
                    routing_key: Some(s(r.shortstr()?)),
                    resource: Some("exchange"),
                    ..self.dest()
                });
            }
            (50, 10) | (50, 30) | (50, 40) => {
                r.u16()?; // ticket
                e.kind = match id {
                    10 => EventKind::Declare,
                    30 => EventKind::Purge,
                    _ => EventKind::Delete,
                };
                e.destination = Some(Destination {
                    queue: Some(s(r.shortstr()?)),
                    resource: Some("queue"),
                    ..self.dest()
                });
            }
            (50, 11) => {
                e.destination = Some(Destination {
                    queue: Some(s(r.shortstr()?)),
                    resource: Some("queue"),
                    ..self.dest()
                });
                e.message_count = Some(r.u32()?);
                e.consumer_count = Some(r.u32()?);
            }
            (50, 20) | (50, 50) => {
                r.u16()?; // ticket
                let queue = s(r.shortstr()?);
                let exchange = s(r.shortstr()?);
                e.kind = if id == 20 {
                    EventKind::Bind
                } else {
                    EventKind::Unbind
                };
                e.destination = Some(Destination {
                    queue: Some(queue),
                    exchange: Some(exchange),
                    routing_key: Some(s(r.shortstr()?)),
                    resource: Some("queue"),
                    ..self.dest()
                });
            }
            (50, 31) | (50, 41) => e.message_count = Some(r.u32()?),
            (60, 20) => {
                r.u16()?; // ticket
                let queue = s(r.shortstr()?);
                let tag = s(r.shortstr()?);
                let bits = r.u8()?;
                let no_wait = bits & 0b1000 != 0;
                if bits & 0b10 != 0 {
                    // Deliveries to this consumer need no ack (correlation must not wait).
                    e.attrs.push(("no_ack", "true".into()));
                }
                if no_wait {
                    // No consume-ok follows: the client's tag is final.
                    self.remember_consumer(ch, tag.clone(), queue.clone());
                } else {
                    self.push_name(ch, false, queue.clone());
                }
                e.kind = EventKind::Subscribe;
                e.consumer_tag = Some(tag);
                e.destination = Some(Destination {
                    queue: Some(queue),
                    ..self.dest()
                });
            }
            (60, 21) => {
                let tag = s(r.shortstr()?);
                if let Some(queue) = self.pop_name(ch, false) {
                    self.remember_consumer(ch, tag.clone(), queue.clone());
                    e.destination = Some(Destination {
                        queue: Some(queue),
                        ..self.dest()
                    });
                }
                e.consumer_tag = Some(tag);
            }
            (60, 30) => {
                let tag = s(r.shortstr()?);
                let no_wait = r.u8().unwrap_or(0) & 1 != 0;
                if let Some(queue) = self.consumer_queue(ch, &tag) {
                    e.destination = Some(Destination {
                        queue: Some(queue),
                        ..self.dest()
                    });
                }
                if from_broker || no_wait {
                    self.forget_consumer(ch, &tag);
                }
                e.kind = EventKind::Unsubscribe;
                e.consumer_tag = Some(tag);
            }
            (60, 31) => {
                let tag = s(r.shortstr()?);
                self.forget_consumer(ch, &tag);
                e.consumer_tag = Some(tag);
            }
            (60, 40) => {
                r.u16()?; // ticket
                let exchange = s(r.shortstr()?);
                let routing_key = s(r.shortstr()?);
                // The broker numbers publishes as their methods arrive.
                let seq = self
                    .channels
                    .get_mut(&ch)
                    .and_then(|c| c.confirm.as_mut())
                    .filter(|c| c.known)
                    .map(Confirms::publish);
                self.start_content(
                    dir,
                    ch,
                    Msg::Publish {
                        exchange,
                        routing_key,
                        seq,
                    },
                );
                return Ok(());
            }
            (60, 50) => {
                let reply_code = r.u16()?;
                let reply_text = s(r.shortstr()?);
                let exchange = s(r.shortstr()?);
                let routing_key = s(r.shortstr()?);
                self.start_content(
                    dir,
                    ch,
                    Msg::Return {
                        reply_code,
                        reply_text,
                        exchange,
                        routing_key,
                    },
                );
                return Ok(());
            }
            (60, 60) => {
                let consumer_tag = s(r.shortstr()?);
                let tag = r.u64()?;
                let redelivered = r.u8()? & 1 != 0;
                let exchange = s(r.shortstr()?);
                let routing_key = s(r.shortstr()?);
                let queue = self.consumer_queue(ch, &consumer_tag);
                self.start_content(
                    dir,
                    ch,
                    Msg::Deliver {
                        consumer_tag,
                        tag,
                        redelivered,
                        exchange,
                        routing_key,
                        queue,
                    },
                );
                return Ok(());
            }
            (60, 70) => {
                r.u16()?; // ticket
                let queue = s(r.shortstr()?);
                self.push_name(ch, true, queue.clone());
                e.destination = Some(Destination {
                    queue: Some(queue),
                    ..self.dest()
                });
            }
            (60, 71) => {
                let tag = r.u64()?;
                let redelivered = r.u8()? & 1 != 0;
                let exchange = s(r.shortstr()?);
                let routing_key = s(r.shortstr()?);
                let message_count = r.u32()?;
                let queue = self.pop_name(ch, true);
                self.start_content(
                    dir,
                    ch,
                    Msg::GetOk {
                        tag,
                        redelivered,
                        exchange,
                        routing_key,
                        message_count,
                        queue,
                    },
                );
                return Ok(());
            }
            (60, 72) => {
                if let Some(queue) = self.pop_name(ch, true) {
                    e.destination = Some(Destination {
                        queue: Some(queue),
                        ..self.dest()
                    });
                }
            }
            (60, 80) | (60, 120) => {
                let tag = r.u64()?;
                let bits = r.u8()?;
                let multiple = bits & 1 != 0;
                let kind = if id == 80 {
                    EventKind::Ack
                } else {
                    EventKind::Nack
                };
                if from_broker {
                    let kind = if id == 80 {
                        EventKind::Confirm
                    } else {
                        EventKind::Nack
                    };
                    self.confirms(ctx, ch, kind, name, tag, multiple, out);
                    return Ok(());
                }
                e.kind = kind;
                e.delivery_tag = Some(tag);
                e.multiple = Some(multiple);
                if id == 120 {
                    e.requeue = Some(bits & 2 != 0);
                }
            }
            (60, 90) => {
                e.kind = EventKind::Reject;
                e.delivery_tag = Some(r.u64()?);
                e.requeue = Some(r.u8()? & 1 != 0);
            }
            (60, 100) | (60, 110) => e.requeue = Some(r.u8()? & 1 != 0),
            (85, 10) => {
                // Confirm mode from the select on: the next publish is 1 (a repeated select
                // keeps counting).
                self.chan(ch).confirm.get_or_insert_with(Confirms::new);
            }
            // The rest carry nothing we report beyond the method itself.
            _ => {}
        }
        out(e);
        Ok(())
    }

    /// Broker basic.ack / basic.nack: publisher confirms. A `multiple` one becomes one event per
    /// outstanding sequence number it covers, so each publish can be matched by `publish_seq`.
    #[allow(clippy::too_many_arguments)]
    fn confirms(
        &mut self,
        ctx: &Ctx<'_>,
        ch: u16,
        kind: EventKind,
        name: &'static str,
        tag: u64,
        multiple: bool,
        out: Out<'_>,
    ) {
        let one = |seq: u64, multiple: bool| {
            let mut e = event(ctx, kind, name, ch);
            e.delivery_tag = Some(seq);
            e.publish_seq = Some(seq);
            e.multiple = Some(multiple);
            e
        };
        let tracked = self
            .channels
            .get_mut(&ch)
            .and_then(|c| c.confirm.as_mut())
            .filter(|c| c.known);
        match tracked {
            Some(cf) if multiple => {
                let mut covered = 0usize;
                // Tag 0 with multiple covers everything outstanding.
                let upto = if tag == 0 { u64::MAX } else { tag };
                cf.take_upto(upto, |seq| {
                    covered += 1;
                    out(one(seq, true));
                });
                if covered == 0 {
                    out(one(tag, true));
                }
            }
            Some(cf) => {
                cf.remove(tag);
                out(one(tag, false));
            }
            // Joined mid-stream or numbering lost: report the ack as it is.
            None => out(one(tag, multiple)),
        }
    }

    /// A complete content-header frame's payload.
    pub(super) fn content_header(
        &mut self,
        ctx: &Ctx<'_>,
        ch: u16,
        payload: &[u8],
        out: Out<'_>,
    ) -> Result<(), Bad> {
        let content = &mut self.content[ctx.dir as usize];
        // No method before it: orphaned by a resync (or a broken peer). Nothing to report.
        let Some(p) = content.get_mut(&ch) else {
            return Ok(());
        };
        if !matches!(p.stage, Stage::Header) {
            content.remove(&ch);
            return Ok(());
        }
        let h = match wire::content_header(payload) {
            Ok(h) => h,
            Err(e) => {
                content.remove(&ch);
                return Err(e.into());
            }
        };
        if h.body_size == 0 {
            if let Some(p) = content.remove(&ch) {
                out(finish(
                    ctx,
                    ch,
                    p.msg,
                    0,
                    Fingerprint::default(),
                    h.props,
                    self.conn.vhost.clone(),
                ));
            }
        } else {
            p.stage = Stage::Body {
                size: h.body_size,
                got: 0,
                fp: Fingerprint::default(),
                props: h.props,
            };
        }
        Ok(())
    }

    /// A body frame of `size` bytes begins on `ch`. Ok(true): stream its bytes here; Ok(false):
    /// nobody waits for it (orphan); Err: it overflows the declared body size (message dropped).
    pub(super) fn body_start(&mut self, dir: Direction, ch: u16, size: u32) -> Result<bool, ()> {
        let content = &mut self.content[dir as usize];
        match content.get(&ch) {
            None => Ok(false),
            Some(Pending {
                stage: Stage::Body {
                    size: total, got, ..
                },
                ..
            }) if got + u64::from(size) <= *total => Ok(true),
            Some(_) => {
                content.remove(&ch);
                Err(())
            }
        }
    }

    pub(super) fn body_bytes(&mut self, dir: Direction, ch: u16, bytes: &[u8]) {
        if let Some(Pending {
            stage: Stage::Body { got, fp, .. },
            ..
        }) = self.content[dir as usize].get_mut(&ch)
        {
            fp.update(bytes);
            *got += bytes.len() as u64;
        }
    }

    /// A body frame's end octet checked out: the message is complete once all bytes are in.
    pub(super) fn body_end(&mut self, ctx: &Ctx<'_>, ch: u16, out: Out<'_>) {
        let content = &mut self.content[ctx.dir as usize];
        let done = matches!(content.get(&ch), Some(Pending { stage: Stage::Body { size, got, .. }, .. }) if got == size);
        if done
            && let Some(Pending {
                msg,
                stage: Stage::Body {
                    size, fp, props, ..
                },
            }) = content.remove(&ch)
        {
            out(finish(
                ctx,
                ch,
                msg,
                size,
                fp,
                props,
                self.conn.vhost.clone(),
            ));
        }
    }
}

/// The one event of a completed message.
fn finish(
    ctx: &Ctx<'_>,
    ch: u16,
    msg: Msg,
    size: u64,
    fp: Fingerprint,
    props: MessageProps,
    vhost: Option<String>,
) -> BrokerEvent {
    let (kind, name) = match msg {
        Msg::Publish { .. } => (EventKind::Publish, "basic.publish"),
        Msg::Deliver { .. } => (EventKind::Deliver, "basic.deliver"),
        Msg::GetOk { .. } => (EventKind::Deliver, "basic.get-ok"),
        Msg::Return { .. } => (EventKind::Return, "basic.return"),
    };
    let mut e = event(ctx, kind, name, ch);
    e.body_size = Some(size);
    e.fingerprint = Some(fp.finish());
    e.props = Some(props);
    let dest = |exchange, routing_key, queue| Destination {
        exchange: Some(exchange),
        routing_key: Some(routing_key),
        queue,
        vhost,
        ..Default::default()
    };
    let d = match msg {
        Msg::Publish {
            exchange,
            routing_key,
            seq,
        } => {
            e.publish_seq = seq;
            dest(exchange, routing_key, None)
        }
        Msg::Deliver {
            consumer_tag,
            tag,
            redelivered,
            exchange,
            routing_key,
            queue,
        } => {
            e.consumer_tag = Some(consumer_tag);
            e.delivery_tag = Some(tag);
            e.redelivered = Some(redelivered);
            dest(exchange, routing_key, queue)
        }
        Msg::GetOk {
            tag,
            redelivered,
            exchange,
            routing_key,
            message_count,
            queue,
        } => {
            e.delivery_tag = Some(tag);
            e.redelivered = Some(redelivered);
            e.message_count = Some(message_count);
            dest(exchange, routing_key, queue)
        }
        Msg::Return {
            reply_code,
            reply_text,
            exchange,
            routing_key,
        } => {
            e.reply_code = Some(reply_code);
            e.reply_text = Some(reply_text);
            dest(exchange, routing_key, None)
        }
    };
    e.destination = Some(d);
    e
}
