//! Connection state and the mapping from decoded packets to [`BrokerEvent`]s.
//!
//! The framer (`mod.rs`) hands over whole packet bodies, and for PUBLISH the variable header
//! (topic, packet id, properties) followed later by the payload's size and fingerprint.
//! Everything protocol-aware lives here: protocol version, login (user name and client id; the
//! password is skipped in place and never copied), topic aliases per direction, in-flight QoS 1/2
//! packet ids per direction, and the filters of SUBSCRIBE/UNSUBSCRIBE awaiting their acks.
//!
//! Mapping (`method` = the packet name; every event carries the client id once known):
//! - CONNECT → Control (user, protocol_version/keepalive/clean_start, 5.0 properties as attrs,
//!   user properties in `props.headers`); CONNACK → Auth (user and mechanism from CONNECT:
//!   "password", "anonymous" or the 5.0 authentication method; outcome from the code);
//! - PUBLISH → Publish (client → broker) / Deliver (broker → client), emitted when its payload
//!   ends;
//! - PUBACK, PUBCOMP → Confirm (from the broker) / Ack (from the client); a 5.0 reason ≥ 0x80 on
//!   PUBACK, PUBREC or PUBCOMP → Nack (the flow ends there); PUBREC, PUBREL → Control; each
//!   carries the topic and QoS of the PUBLISH it settles when that was seen;
//! - SUBSCRIBE / UNSUBSCRIBE → one Subscribe / Unsubscribe per filter; SUBACK / UNSUBACK →
//!   Control with every code, plus an Error per refused filter;
//! - DISCONNECT → Control (Error when the broker sends a 5.0 reason ≥ 0x80); AUTH → Control;
//! - PINGREQ / PINGRESP → counted frames, no event (they would dominate idle connections).

use super::{
    AUTH, CONNACK, CONNECT, DISCONNECT, PINGREQ, PINGRESP, PUBACK, PUBCOMP, PUBREC, PUBREL, SUBACK,
    SUBSCRIBE, UNSUBACK, UNSUBSCRIBE,
    wire::{self, Bad, MAX_HEADERS, MAX_TOPIC, MAX_TRACE, MAX_VALUE, Prop, Reader, Res},
};
use crate::FastMap;
use crate::{
    capture::Direction,
    event::{BrokerEvent, Destination, EventKind, Fingerprint, MessageProps, Outcome, System},
    protocol::Ctx,
};

/// Topic aliases remembered per direction (MQTT allows 65535).
const MAX_ALIASES: usize = 1024;
/// QoS 1/2 publishes awaiting settlement, per direction (receive maximum is at most 65535).
const MAX_INFLIGHT: usize = 4096;
/// SUBSCRIBE/UNSUBSCRIBE packets awaiting their ack, and filters kept for each.
const MAX_PENDING_SUBS: usize = 256;
const MAX_FILTERS: usize = 256;

type Out<'o> = &'o mut dyn FnMut(BrokerEvent);

/// What CONNECT said about the login. The password is never part of it.
#[derive(Debug)]
struct Login {
    user: Option<String>,
    password: bool,
    /// MQTT 5 enhanced authentication method.
    auth_method: Option<String>,
}

/// A QoS 1/2 publish awaiting PUBACK / PUBCOMP.
#[derive(Debug)]
struct InFlight {
    topic: Option<String>,
    qos: u8,
}

#[derive(Debug, Default)]
pub(super) struct Session {
    /// Protocol level: 3 (3.1), 4 (3.1.1), 5 (5.0) from CONNECT; when joined mid-stream, None
    /// until a packet only 5.0 can produce is seen (then 5), parsed as 3.1.1 meanwhile.
    version: Option<u8>,
    login: Option<Login>,
    client_id: Option<String>,
    /// Topic aliases, indexed by `Direction as usize`: each sender sets its own.
    aliases: [FastMap<u16, String>; 2],
    /// In-flight QoS 1/2 publishes by packet id, indexed by the direction the PUBLISH went.
    inflight: [FastMap<u16, InFlight>; 2],
    /// Destinations of SUBSCRIBE / UNSUBSCRIBE filters by packet id, to name SUBACK/UNSUBACK
    /// failures.
    subs: FastMap<u16, Vec<Destination>>,
    unsubs: FastMap<u16, Vec<Destination>>,
    /// Packets that decoded but could not be interpreted in full (unknown topic alias).
    pub(super) malformed: u64,
}

/// A PUBLISH whose variable header is decoded and whose payload is streaming.
#[derive(Debug)]
pub(super) struct Publishing {
    event: BrokerEvent,
    /// None for an oversize payload (skipped, not hashed).
    pub(super) fp: Option<Fingerprint>,
}

fn other(dir: Direction) -> Direction {
    match dir {
        Direction::Ingress => Direction::Egress,
        Direction::Egress => Direction::Ingress,
    }
}

fn s(bytes: &[u8]) -> String {
    wire::text(bytes, MAX_VALUE)
}

fn version_name(level: u8) -> String {
    match level {
        3 => "3.1".into(),
        4 => "3.1.1".into(),
        5 => "5.0".into(),
        n => n.to_string(),
    }
}

/// A topic filter: `$share/{group}/{filter}` is a shared subscription (queue = group).
fn filter_dest(raw: &[u8]) -> Destination {
    let f = wire::text(raw, MAX_TOPIC);
    if let Some(rest) = f.strip_prefix("$share/")
        && let Some((group, filter)) = rest.split_once('/')
    {
        return Destination {
            queue: Some(group.to_owned()),
            topic: Some(filter.to_owned()),
            ..Default::default()
        };
    }
    Destination {
        topic: Some(f),
        ..Default::default()
    }
}

fn join(codes: &[u8]) -> String {
    let mut out = String::with_capacity(codes.len() * 4);
    for (i, c) in codes.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&c.to_string());
    }
    out
}

/// A user property into `props` (trace context into its own fields), bounded.
fn user_property(props: &mut MessageProps, name: &[u8], value: &[u8]) {
    if name.eq_ignore_ascii_case(b"traceparent") {
        props.traceparent = Some(wire::text(value, MAX_TRACE));
    } else if name.eq_ignore_ascii_case(b"tracestate") {
        props.tracestate = Some(wire::text(value, MAX_TRACE));
    } else if props.headers.len() < MAX_HEADERS {
        props.headers.push((s(name), s(value)));
    }
}

/// Integer properties worth showing, by the attr name they get.
fn num_attr(id: u8) -> Option<&'static str> {
    Some(match id {
        wire::SESSION_EXPIRY => "session_expiry",
        wire::RECEIVE_MAXIMUM => "receive_maximum",
        wire::MAXIMUM_PACKET_SIZE => "maximum_packet_size",
        wire::TOPIC_ALIAS_MAXIMUM => "topic_alias_maximum",
        wire::MAXIMUM_QOS => "maximum_qos",
        wire::RETAIN_AVAILABLE => "retain_available",
        wire::SERVER_KEEP_ALIVE => "server_keepalive",
        _ => return None,
    })
}

impl Session {
    pub(super) fn version(&self) -> Option<u8> {
        self.version
    }

    pub(super) fn v5(&self) -> bool {
        self.version.is_some_and(|v| v >= 5)
    }

    #[cfg(test)]
    pub(super) fn inflight_len(&self) -> usize {
        self.inflight.iter().map(FastMap::len).sum()
    }

    /// A CONNECT was decoded: the broker's bytes start at a packet boundary.
    pub(super) fn connect_seen(&self) -> bool {
        self.login.is_some()
    }

    fn event(&self, ctx: &Ctx<'_>, kind: EventKind, method: &'static str) -> BrokerEvent {
        let mut e = BrokerEvent::new(ctx.ts_ns, System::Mqtt, kind, ctx.conn.clone(), ctx.dir);
        e.method = Some(method);
        e.client_id.clone_from(&self.client_id);
        e
    }

    /// A 5.0-only packet shape on a connection of unknown version: it is 5.0.
    fn infer_v5(&mut self, evidence: bool) -> bool {
        if self.version.is_none() && evidence {
            self.version = Some(5);
        }
        self.v5()
    }

    /// A whole packet other than PUBLISH. `b0` is the fixed header's first byte.
    pub(super) fn packet(&mut self, ctx: &Ctx<'_>, b0: u8, body: &[u8], out: Out<'_>) -> Res<()> {
        let ty = b0 >> 4;
        let rem = body.len();
        match ty {
            CONNECT => self.connect(ctx, body, out),
            CONNACK => {
                let v5 = self.infer_v5(rem > 2);
                self.connack(ctx, v5, body, out)
            }
            PUBACK | PUBREC | PUBREL | PUBCOMP => {
                let v5 = self.infer_v5(rem > 2);
                self.settle(ctx, ty, v5, body, out)
            }
            SUBSCRIBE => self.subscribe(ctx, body, out),
            SUBACK => self.suback(ctx, body, out),
            UNSUBSCRIBE => self.unsubscribe(ctx, body, out),
            UNSUBACK => {
                let v5 = self.infer_v5(rem > 2);
                self.unsuback(ctx, v5, body, out)
            }
            // Keepalive traffic: counted as frames, no event (it would dominate idle links).
            PINGREQ | PINGRESP => Ok(()),
            DISCONNECT => {
                let v5 = self.infer_v5(rem > 0);
                self.disconnect(ctx, v5, body, out)
            }
            AUTH => {
                self.infer_v5(true);
                self.auth(ctx, body, out)
            }
            _ => Err(Bad),
        }
    }

    fn connect(&mut self, ctx: &Ctx<'_>, body: &[u8], out: Out<'_>) -> Res<()> {
        let mut r = Reader::new(body);
        let name = r.str()?;
        let raw_level = r.u8()?;
        // Mosquitto bridges set bit 7 of the level ("try_private").
        let level = raw_level & 0x7F;
        if !matches!((name, level), (b"MQTT", 4..) | (b"MQIsdp", 3)) {
            return Err(Bad);
        }
        let v5 = level >= 5;
        let flags = r.u8()?;
        let keepalive = r.u16()?;
        let (will, password, username) = (flags & 0x04 != 0, flags & 0x40 != 0, flags & 0x80 != 0);
        let mut e = self.event(ctx, EventKind::Control, "CONNECT");
        e.attrs.push(("protocol_version", version_name(level)));
        e.attrs.push(("keepalive", keepalive.to_string()));
        e.attrs
            .push(("clean_start", (flags & 0x02 != 0).to_string()));
        if raw_level & 0x80 != 0 {
            e.attrs.push(("bridge", "true".into()));
        }
        let mut auth_method = None;
        let mut props = MessageProps::default();
        if v5 {
            wire::for_each_property(r.properties()?, |id, p| match (id, p) {
                (wire::AUTH_METHOD, Prop::Str(m)) => auth_method = Some(s(m)),
                (wire::USER_PROPERTY, Prop::Pair(n, v)) => user_property(&mut props, n, v),
                _ => {
                    if let (Some(name), Some(v)) = (num_attr(id), p.num()) {
                        e.attrs.push((name, v.to_string()));
                    }
                }
            })?;
        }
        let client_id = s(r.str()?);
        if will {
            if v5 {
                wire::for_each_property(r.properties()?, |_, _| {})?;
            }
            let topic = r.str()?;
            r.str()?; // will payload: not kept
            e.attrs.push(("will_topic", wire::text(topic, MAX_TOPIC)));
        }
        let user = if username { Some(s(r.str()?)) } else { None };
        if password {
            r.str()?; // skipped in place, never copied
        }
        if let Some(m) = &auth_method {
            e.attrs.push(("auth_method", m.clone()));
        }
        self.version = Some(level);
        self.client_id = Some(client_id);
        e.client_id.clone_from(&self.client_id);
        e.user.clone_from(&user);
        if props != MessageProps::default() {
            e.props = Some(props);
        }
        self.login = Some(Login {
            user,
            password,
            auth_method,
        });
        out(e);
        Ok(())
    }

    fn connack(&mut self, ctx: &Ctx<'_>, v5: bool, body: &[u8], out: Out<'_>) -> Res<()> {
        let mut r = Reader::new(body);
        let ack_flags = r.u8()?;
        let code = r.u8()?;
        let mut e = self.event(ctx, EventKind::Auth, "CONNACK");
        e.attrs
            .push(("session_present", (ack_flags & 1 != 0).to_string()));
        let mut method = self.login.as_ref().and_then(|l| l.auth_method.clone());
        if v5 {
            wire::for_each_property(r.properties()?, |id, p| match (id, p) {
                (wire::ASSIGNED_CLIENT_ID, Prop::Str(id)) => self.client_id = Some(s(id)),
                (wire::AUTH_METHOD, Prop::Str(m)) => method = Some(s(m)),
                (wire::REASON_STRING, Prop::Str(t)) => e.reply_text = Some(s(t)),
                _ => {
                    if let (Some(name), Some(v)) = (num_attr(id), p.num()) {
                        e.attrs.push((name, v.to_string()));
                    }
                }
            })?;
        }
        e.client_id.clone_from(&self.client_id);
        e.reply_code = Some(u16::from(code));
        e.outcome = Some(if code == 0 {
            Outcome::Success
        } else {
            Outcome::Failure
        });
        if let Some(login) = &self.login {
            e.user.clone_from(&login.user);
            e.mechanism = Some(method.unwrap_or_else(|| {
                if login.password {
                    "password".into()
                } else {
                    "anonymous".into()
                }
            }));
        } else {
            // Joined after CONNECT: how the client logged in is unknown.
            e.mechanism = method;
        }
        out(e);
        Ok(())
    }

    /// The variable header of a PUBLISH whose payload (`size` bytes) follows.
    pub(super) fn publish_head(
        &mut self,
        ctx: &Ctx<'_>,
        b0: u8,
        head: &[u8],
        size: u64,
        oversize: bool,
    ) -> Res<Publishing> {
        let qos = (b0 >> 1) & 3;
        let mut r = Reader::new(head);
        let topic = r.str()?;
        let packet_id = if qos > 0 { Some(r.packet_id()?) } else { None };
        let kind = match ctx.dir {
            Direction::Ingress => EventKind::Publish,
            Direction::Egress => EventKind::Deliver,
        };
        let mut e = self.event(ctx, kind, "PUBLISH");
        let mut alias = None;
        if self.v5() {
            let mut props = MessageProps::default();
            let mut sub_ids = String::new();
            wire::for_each_property(r.properties()?, |id, p| match (id, p) {
                (wire::TOPIC_ALIAS, Prop::U16(a)) => alias = Some(a),
                (wire::CONTENT_TYPE, Prop::Str(v)) => props.content_type = Some(s(v)),
                (wire::CORRELATION_DATA, Prop::Bin(v)) => {
                    props.correlation_id = Some(wire::bytes_text(v, MAX_VALUE));
                }
                (wire::RESPONSE_TOPIC, Prop::Str(v)) => {
                    e.reply_to = Some(wire::text(v, MAX_TOPIC));
                }
                (wire::USER_PROPERTY, Prop::Pair(n, v)) => user_property(&mut props, n, v),
                (wire::MESSAGE_EXPIRY, Prop::U32(v)) => {
                    e.attrs.push(("message_expiry", v.to_string()));
                }
                (wire::PAYLOAD_FORMAT, Prop::Byte(v)) => {
                    let f = if v == 1 { "utf-8" } else { "bytes" };
                    e.attrs.push(("payload_format", f.into()));
                }
                (wire::SUBSCRIPTION_ID, Prop::Var(v)) => {
                    if !sub_ids.is_empty() {
                        sub_ids.push(',');
                    }
                    sub_ids.push_str(&v.to_string());
                }
                _ => {}
            })?;
            if !sub_ids.is_empty() {
                e.attrs.push(("subscription_id", sub_ids));
            }
            if let Some(a) = alias {
                e.attrs.push(("topic_alias", a.to_string()));
            }
            e.props = Some(props);
        }
        let aliases = &mut self.aliases[ctx.dir as usize];
        let topic = match alias {
            // Alias 0 is a protocol error; an alias without a topic must have been set before.
            Some(0) => None,
            Some(a) if topic.is_empty() => aliases.get(&a).cloned(),
            Some(a) => {
                let t = wire::text(topic, MAX_TOPIC);
                if aliases.len() < MAX_ALIASES || aliases.contains_key(&a) {
                    aliases.insert(a, t.clone());
                }
                Some(t)
            }
            // An empty topic without an alias is a protocol error too.
            None if topic.is_empty() => None,
            None => Some(wire::text(topic, MAX_TOPIC)),
        };
        if topic.is_none() {
            self.malformed += 1;
        }
        e.destination = topic.map(|t| Destination {
            topic: Some(t),
            ..Default::default()
        });
        e.qos = Some(qos);
        e.retain = Some(b0 & 1 != 0);
        e.dup = Some(b0 & 0x08 != 0);
        e.packet_id = packet_id.map(u32::from);
        e.body_size = Some(size);
        Ok(Publishing {
            event: e,
            fp: (!oversize).then(Fingerprint::default),
        })
    }

    /// The PUBLISH's payload is complete: emit it, stamped with the completing packet's time.
    pub(super) fn publish_done(&mut self, ctx: &Ctx<'_>, p: Publishing, out: Out<'_>) {
        let mut e = p.event;
        e.ts_ns = ctx.ts_ns;
        e.fingerprint = p.fp.map(|fp| fp.finish());
        if let (Some(id), Some(qos @ 1..)) = (e.packet_id, e.qos) {
            let inflight = &mut self.inflight[ctx.dir as usize];
            let id = id as u16;
            if inflight.len() < MAX_INFLIGHT || inflight.contains_key(&id) {
                let topic = e.destination.as_ref().and_then(|d| d.topic.clone());
                inflight.insert(id, InFlight { topic, qos });
            }
        }
        out(e);
    }

    /// PUBACK / PUBREC / PUBREL / PUBCOMP.
    fn settle(&mut self, ctx: &Ctx<'_>, ty: u8, v5: bool, body: &[u8], out: Out<'_>) -> Res<()> {
        let mut r = Reader::new(body);
        let id = r.packet_id()?;
        let mut reason = None;
        let mut reason_text = None;
        if v5 {
            // Omitted reason code = 0 (success).
            reason = Some(if r.is_empty() { 0 } else { r.u8()? });
            if !r.is_empty() {
                wire::for_each_property(r.properties()?, |id, p| {
                    if let (wire::REASON_STRING, Prop::Str(t)) = (id, p) {
                        reason_text = Some(s(t));
                    }
                })?;
            }
        }
        let failed = reason.is_some_and(|c| c >= 0x80);
        let from_broker = ctx.dir == Direction::Egress;
        let (kind, name, settles) = match ty {
            PUBACK | PUBCOMP => {
                let name = if ty == PUBACK { "PUBACK" } else { "PUBCOMP" };
                let kind = match (failed, from_broker) {
                    (true, _) => EventKind::Nack,
                    (false, true) => EventKind::Confirm,
                    (false, false) => EventKind::Ack,
                };
                (kind, name, true)
            }
            PUBREC if failed => (EventKind::Nack, "PUBREC", true),
            PUBREC => (EventKind::Control, "PUBREC", false),
            _ => (EventKind::Control, "PUBREL", false),
        };
        // PUBREL travels the way the PUBLISH did; PUBACK/PUBREC/PUBCOMP come back against it.
        let origin = if ty == PUBREL {
            ctx.dir
        } else {
            other(ctx.dir)
        };
        let inflight = &mut self.inflight[origin as usize];
        let found = if settles {
            inflight.remove(&id)
        } else {
            inflight.get(&id).map(|f| InFlight {
                topic: f.topic.clone(),
                qos: f.qos,
            })
        };
        let mut e = self.event(ctx, kind, name);
        e.packet_id = Some(u32::from(id));
        e.reply_code = reason.map(u16::from);
        e.reply_text = reason_text;
        if let Some(f) = found {
            e.qos = Some(f.qos);
            e.destination = f.topic.map(|t| Destination {
                topic: Some(t),
                ..Default::default()
            });
        }
        out(e);
        Ok(())
    }

    fn subscribe(&mut self, ctx: &Ctx<'_>, body: &[u8], out: Out<'_>) -> Res<()> {
        let v5 = self.v5();
        let mut r = Reader::new(body);
        let id = r.packet_id()?;
        let mut sub_id = None;
        if v5 {
            wire::for_each_property(r.properties()?, |pid, p| {
                if let (wire::SUBSCRIPTION_ID, Prop::Var(v)) = (pid, p) {
                    sub_id = Some(v);
                }
            })?;
        }
        // Check the whole list before emitting anything.
        let mut filters = Vec::new();
        while !r.is_empty() {
            let filter = r.str()?;
            let opts = r.u8()?;
            // QoS 3 is invalid; 3.x reserves the upper bits, 5.0 bits 6-7 and retain handling 3.
            if opts & 3 == 3
                || (!v5 && opts & 0xFC != 0)
                || (v5 && (opts & 0xC0 != 0 || opts & 0x30 == 0x30))
            {
                return Err(Bad);
            }
            filters.push((filter, opts));
        }
        if filters.is_empty() {
            return Err(Bad);
        }
        let mut dests = Vec::new();
        for (filter, opts) in filters {
            let d = filter_dest(filter);
            if dests.len() < MAX_FILTERS {
                dests.push(d.clone());
            }
            let mut e = self.event(ctx, EventKind::Subscribe, "SUBSCRIBE");
            e.destination = Some(d);
            e.qos = Some(opts & 3);
            e.packet_id = Some(u32::from(id));
            if v5 {
                e.attrs.push(("no_local", (opts & 0x04 != 0).to_string()));
                e.attrs
                    .push(("retain_as_published", (opts & 0x08 != 0).to_string()));
                e.attrs
                    .push(("retain_handling", ((opts >> 4) & 3).to_string()));
                if let Some(v) = sub_id {
                    e.attrs.push(("subscription_id", v.to_string()));
                }
            }
            out(e);
        }
        if self.subs.len() < MAX_PENDING_SUBS || self.subs.contains_key(&id) {
            self.subs.insert(id, dests);
        }
        Ok(())
    }

    fn unsubscribe(&mut self, ctx: &Ctx<'_>, body: &[u8], out: Out<'_>) -> Res<()> {
        let mut r = Reader::new(body);
        let id = r.packet_id()?;
        if self.v5() {
            wire::for_each_property(r.properties()?, |_, _| {})?;
        }
        let mut filters = Vec::new();
        while !r.is_empty() {
            filters.push(r.str()?);
        }
        if filters.is_empty() {
            return Err(Bad);
        }
        let mut dests = Vec::new();
        for filter in filters {
            let d = filter_dest(filter);
            if dests.len() < MAX_FILTERS {
                dests.push(d.clone());
            }
            let mut e = self.event(ctx, EventKind::Unsubscribe, "UNSUBSCRIBE");
            e.destination = Some(d);
            e.packet_id = Some(u32::from(id));
            out(e);
        }
        if self.unsubs.len() < MAX_PENDING_SUBS || self.unsubs.contains_key(&id) {
            self.unsubs.insert(id, dests);
        }
        Ok(())
    }

    /// SUBACK / UNSUBACK: one Control with every code, then an Error per refused filter (named
    /// by the SUBSCRIBE / UNSUBSCRIBE with the same packet id, when seen).
    fn sub_result(
        &mut self,
        ctx: &Ctx<'_>,
        unsub: bool,
        id: u16,
        codes: &[u8],
        reason_text: Option<String>,
        out: Out<'_>,
    ) {
        let (name, attr, pending) = if unsub {
            ("UNSUBACK", "reasons", self.unsubs.remove(&id))
        } else {
            ("SUBACK", "granted", self.subs.remove(&id))
        };
        let mut e = self.event(ctx, EventKind::Control, name);
        e.packet_id = Some(u32::from(id));
        e.reply_text = reason_text;
        let err = e.clone();
        if !codes.is_empty() {
            e.attrs.push((attr, join(codes)));
        }
        out(e);
        for (i, &code) in codes.iter().enumerate() {
            if code >= 0x80 {
                let mut x = err.clone();
                x.kind = EventKind::Error;
                x.reply_code = Some(u16::from(code));
                x.destination = pending.as_ref().and_then(|p| p.get(i).cloned());
                out(x);
            }
        }
    }

    fn suback(&mut self, ctx: &Ctx<'_>, body: &[u8], out: Out<'_>) -> Res<()> {
        let mut r = Reader::new(body);
        let id = r.packet_id()?;
        let reason_text = self.ack_properties(&mut r)?;
        let codes = r.rest();
        if codes.is_empty() {
            return Err(Bad);
        }
        self.sub_result(ctx, false, id, codes, reason_text, out);
        Ok(())
    }

    fn unsuback(&mut self, ctx: &Ctx<'_>, v5: bool, body: &[u8], out: Out<'_>) -> Res<()> {
        let mut r = Reader::new(body);
        let id = r.packet_id()?;
        // 3.x UNSUBACK is the packet id alone; 5.0 adds properties and a reason code per filter.
        let (reason_text, codes) = if v5 {
            (self.ack_properties(&mut r)?, r.rest())
        } else {
            (None, &[][..])
        };
        self.sub_result(ctx, true, id, codes, reason_text, out);
        Ok(())
    }

    /// 5.0 properties of SUBACK/UNSUBACK: the reason string only.
    fn ack_properties(&self, r: &mut Reader<'_>) -> Res<Option<String>> {
        let mut text = None;
        if self.v5() {
            wire::for_each_property(r.properties()?, |id, p| {
                if let (wire::REASON_STRING, Prop::Str(t)) = (id, p) {
                    text = Some(s(t));
                }
            })?;
        }
        Ok(text)
    }

    fn disconnect(&mut self, ctx: &Ctx<'_>, v5: bool, body: &[u8], out: Out<'_>) -> Res<()> {
        let mut e = self.event(ctx, EventKind::Control, "DISCONNECT");
        if v5 {
            let mut r = Reader::new(body);
            let reason = if r.is_empty() { 0 } else { r.u8()? };
            if !r.is_empty() {
                wire::for_each_property(r.properties()?, |id, p| match (id, p) {
                    (wire::REASON_STRING, Prop::Str(t)) => e.reply_text = Some(s(t)),
                    (wire::SERVER_REFERENCE, Prop::Str(t)) => {
                        e.attrs.push(("server_reference", s(t)));
                    }
                    (wire::SESSION_EXPIRY, Prop::U32(v)) => {
                        e.attrs.push(("session_expiry", v.to_string()));
                    }
                    _ => {}
                })?;
            }
            e.reply_code = Some(u16::from(reason));
            if ctx.dir == Direction::Egress && reason >= 0x80 {
                // The broker dropped the client for a reason (not authorized, quota, …).
                e.kind = EventKind::Error;
            }
        }
        out(e);
        Ok(())
    }

    fn auth(&mut self, ctx: &Ctx<'_>, body: &[u8], out: Out<'_>) -> Res<()> {
        let mut r = Reader::new(body);
        let mut e = self.event(ctx, EventKind::Control, "AUTH");
        let reason = if r.is_empty() { 0 } else { r.u8()? };
        if !r.is_empty() {
            // Authentication data (0x16) is walked over, never kept.
            wire::for_each_property(r.properties()?, |id, p| match (id, p) {
                (wire::AUTH_METHOD, Prop::Str(m)) => e.mechanism = Some(s(m)),
                (wire::REASON_STRING, Prop::Str(t)) => e.reply_text = Some(s(t)),
                _ => {}
            })?;
        }
        e.reply_code = Some(u16::from(reason));
        out(e);
        Ok(())
    }
}
