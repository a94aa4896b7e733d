//! Connection state and the request/response → [`BrokerEvent`] mapping.
//!
//! The framer hands over whole messages (without the size prefix). Requests are remembered by
//! correlation id (bounded, oldest forgotten first) with what their response needs to be read
//! and named: api key and version (the response has neither), capture time, and per-API
//! context (produce record counts per partition, fetch max_wait/min_bytes, the group). The
//! topic-id → name cache is filled from Metadata and CreateTopics responses so Fetch v13+
//! (which names topics by id) can show names. SASL state keeps the mechanism and the user name
//! only: passwords are never copied out of the frame.
use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
};

use super::{
    records::{self, Summary, codec_name},
    wire::{self, Reader, Res, api_name, error_name, is_flexible, t, uuid_text},
};
use crate::FastMap;
use crate::{
    capture::{ConnId, Direction},
    event::{BrokerEvent, ConnRef, Destination, EventKind, Outcome, System},
    protocol::Ctx,
};

/// Requests awaiting a response per connection (pipelining depth is far below this).
pub(super) const MAX_PENDING: usize = 1024;
/// Topic ids remembered (per observer: the map is shared by its Kafka connections).
pub(super) const MAX_TOPIC_IDS: usize = 4096;

/// Topic id → name. Shared by every Kafka connection of one pipeline: a client learns the ids
/// from Metadata on one connection (often the bootstrap one) and fetches by id (v13+) on another.
#[derive(Clone, Debug, Default)]
pub struct TopicIds(std::sync::Arc<std::sync::Mutex<HashMap<[u8; 16], String>>>);

impl TopicIds {
    fn get(&self, id: &[u8; 16]) -> Option<String> {
        self.0.lock().ok()?.get(id).cloned()
    }

    fn insert(&self, id: [u8; 16], name: String) {
        if let Ok(mut map) = self.0.lock() {
            if map.len() >= MAX_TOPIC_IDS && !map.contains_key(&id) {
                map.clear();
            }
            map.insert(id, name);
        }
    }
}
/// Produce partitions remembered per request (for the confirms' record counts).
const MAX_PRODUCE_CTX: usize = 1024;
/// Repeated attrs (hw, leader, committed, fetch, …) kept per event.
pub(super) const MAX_LIST_ATTRS: usize = 64;

type Out<'o> = &'o mut dyn FnMut(BrokerEvent);

#[derive(Debug, Default)]
pub(super) struct Session {
    pending: Pending,
    pub(super) topic_ids: TopicIds,
    sasl: Sasl,
    /// Bytes the last request left unread (resync verification wants none).
    trailing: usize,
    /// Correlation id and client id of the last request: a client numbers its requests in
    /// order and keeps one client id per connection, which resync candidates must match.
    last_request: Option<(i32, Option<Vec<u8>>)>,
}

/// Whether `msg` (a request without its size prefix) decodes completely, in a scratch session.
pub(super) fn verify_request(msg: &[u8]) -> bool {
    let conn = ConnRef {
        id: ConnId(0),
        pid: None,
        local: SocketAddr::from(([0, 0, 0, 0], 0)),
        peer: SocketAddr::from(([0, 0, 0, 0], 0)),
    };
    let ctx = Ctx {
        conn: &conn,
        dir: Direction::Ingress,
        ts_ns: 0,
    };
    let mut scratch = Session::default();
    scratch.request(&ctx, msg, &mut |_| {}).is_ok() && scratch.trailing == 0
}

#[derive(Debug, Default)]
struct Sasl {
    mechanism: Option<String>,
    /// From the PLAIN message or the SCRAM client-first message; nothing else is kept.
    user: Option<String>,
    /// SaslAuthenticate round trips answered so far in this exchange.
    rounds: u32,
    done: bool,
}

/// What a response needs from its request.
#[derive(Debug, Default)]
enum ReqCtx {
    #[default]
    None,
    /// (topic, partition, records) per partition produced.
    Produce(Vec<(String, i32, u32)>),
    Fetch {
        max_wait: i32,
        min_bytes: i32,
        /// (topic, partition, fetch offset), at most [`MAX_FETCH_CTX`].
        offsets: Vec<(String, i32, i64)>,
    },
    Group(String),
}

/// Fetch partitions remembered per request (to trim deliveries to the fetch offset).
const MAX_FETCH_CTX: usize = 1024;

/// A Fetch response's content, from a whole message or streamed (`stream`).
#[derive(Debug, Default)]
pub(super) struct FetchResult {
    pub(super) throttle: i32,
    pub(super) error: i16,
    pub(super) parts: Vec<FetchPart>,
}

#[derive(Debug)]
pub(super) struct FetchPart {
    pub(super) topic: String,
    pub(super) partition: i32,
    pub(super) error: i16,
    pub(super) hw: i64,
    pub(super) lso: i64,
    pub(super) log_start: i64,
    pub(super) summary: Summary,
}

#[derive(Debug)]
struct Req {
    key: i16,
    version: i16,
    ts: u64,
    ctx: ReqCtx,
}

/// correlation id → request, bounded, oldest forgotten first. `order` may hold ids already
/// answered (skipped by sequence number, compacted when it doubles).
#[derive(Debug, Default)]
struct Pending {
    map: FastMap<i32, (u64, Req)>,
    order: VecDeque<(u64, i32)>,
    next: u64,
}

impl Pending {
    fn insert(&mut self, corr: i32, req: Req) {
        let seq = self.next;
        self.next += 1;
        self.order.push_back((seq, corr));
        self.map.insert(corr, (seq, req));
        while self.map.len() > MAX_PENDING {
            let Some((s, c)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&c).is_some_and(|e| e.0 == s) {
                self.map.remove(&c);
            }
        }
        if self.order.len() > 2 * MAX_PENDING {
            let map = &self.map;
            self.order
                .retain(|(s, c)| map.get(c).is_some_and(|e| e.0 == *s));
        }
    }

    fn remove(&mut self, corr: i32) -> Option<Req> {
        self.map.remove(&corr).map(|e| e.1)
    }
}

fn event(ctx: &Ctx<'_>, kind: EventKind, method: &'static str) -> BrokerEvent {
    let mut e = BrokerEvent::new(ctx.ts_ns, System::Kafka, kind, ctx.conn.clone(), ctx.dir);
    e.method = Some(method);
    e
}

fn topic_dest(topic: &str, partition: i32) -> Option<Destination> {
    Some(Destination {
        topic: Some(topic.to_owned()),
        partition: Some(partition),
        ..Default::default()
    })
}

fn group_dest(group: &str) -> Option<Destination> {
    Some(Destination {
        group: Some(group.to_owned()),
        ..Default::default()
    })
}

fn resource_dest(resource: &'static str, topic: Option<String>) -> Option<Destination> {
    Some(Destination {
        topic,
        resource: Some(resource),
        ..Default::default()
    })
}

/// Kafka error codes are i16 (-1 = UNKNOWN_SERVER_ERROR, shown as 65535).
fn set_reply(e: &mut BrokerEvent, code: i16, message: Option<&[u8]>) {
    e.reply_code = Some(code as u16);
    if code != 0 {
        e.reply_text = match message {
            Some(m) if !m.is_empty() => Some(t(m)),
            _ => error_name(code).map(str::to_owned),
        };
    }
}

/// First non-zero error code seen (0 if none).
#[derive(Default)]
struct FirstError(i16);

impl FirstError {
    fn see(&mut self, code: i16) {
        if self.0 == 0 {
            self.0 = code;
        }
    }
}

/// Appends a repeated attr, at most [`MAX_LIST_ATTRS`] of one name.
fn push_list(e: &mut BrokerEvent, n: &mut usize, name: &'static str, value: String) {
    if *n < MAX_LIST_ATTRS {
        e.attrs.push((name, value));
    }
    *n += 1;
}

impl Session {
    #[cfg(test)]
    pub(super) fn pending_len(&self) -> usize {
        self.pending.map.len()
    }

    /// Whether a request candidate numbered `corr` with this client id follows the requests
    /// seen so far (within 2^20 requests of the last one).
    pub(super) fn follows(&self, corr: i32, client_id: Option<&[u8]>) -> bool {
        match &self.last_request {
            None => true,
            Some((last, id)) => {
                id.as_deref() == client_id && (1..=1 << 20).contains(&corr.wrapping_sub(*last))
            }
        }
    }

    /// Whether a response with this correlation id would be expected (resync candidates).
    pub(super) fn awaits(&self, corr: i32) -> bool {
        self.pending.map.contains_key(&corr)
    }

    fn topic_name(&self, id: &[u8; 16]) -> String {
        self.topic_ids.get(id).unwrap_or_else(|| uuid_text(id))
    }

    fn remember_topic(&mut self, id: [u8; 16], name: &[u8]) {
        if id == [0; 16] || name.is_empty() {
            return;
        }
        self.topic_ids.insert(id, t(name));
    }

    /// A topic field: a name up to `id_from`, a topic id from it on.
    pub(super) fn topic_of(&self, r: &mut Reader<'_>, version: i16, id_from: i16) -> Res<String> {
        self.topic(r, version, id_from)
    }

    fn topic(&self, r: &mut Reader<'_>, version: i16, id_from: i16) -> Res<String> {
        if version >= id_from {
            Ok(self.topic_name(&r.uuid()?))
        } else {
            Ok(t(r.string()?))
        }
    }

    // -----------------------------------------------------------------------------------------
    // Requests

    /// A whole request (without its size prefix). Emits its events; `Err` if it is malformed
    /// (the header event is still emitted when the header decoded).
    pub(super) fn request(&mut self, ctx: &Ctx<'_>, msg: &[u8], out: Out<'_>) -> Res<()> {
        let mut r = Reader::new(msg, false);
        let key = r.i16()?;
        let version = r.i16()?;
        let corr = r.i32()?;
        // Header v1/v2: the client id is a classic nullable string even in flexible versions.
        let client_id = r.nullable_string()?;
        match &mut self.last_request {
            Some((c, id)) if id.as_deref() == client_id => *c = corr,
            last => *last = Some((corr, client_id.map(<[u8]>::to_vec))),
        }
        r.flex = is_flexible(key, version);
        r.tags()?;
        let mut head = event(ctx, EventKind::Request, api_name(key));
        head.client_id = client_id.map(t);
        head.attrs.push(("api_version", version.to_string()));
        head.attrs.push(("correlation_id", corr.to_string()));
        if wire::api_info(key).is_none() {
            head.attrs.push(("api_key", key.to_string()));
        }
        let mut staged = Vec::new();
        let mut rctx = ReqCtx::None;
        let mut expects_response = true;
        let body = self.request_body(
            ctx,
            key,
            version,
            &mut r,
            &mut head,
            &mut staged,
            &mut rctx,
            &mut expects_response,
        );
        self.trailing = r.remaining();
        if expects_response {
            self.pending.insert(
                corr,
                Req {
                    key,
                    version,
                    ts: ctx.ts_ns,
                    ctx: rctx,
                },
            );
        }
        out(head);
        if body.is_ok() {
            staged.into_iter().for_each(&mut *out);
        }
        body
    }

    /// An oversize request: only its header (from the first bytes) is read.
    pub(super) fn oversize_request(
        &mut self,
        ctx: &Ctx<'_>,
        head_bytes: &[u8],
        size: usize,
        out: Out<'_>,
    ) {
        let mut r = Reader::new(head_bytes, false);
        let (Ok(key), Ok(version), Ok(corr)) = (r.i16(), r.i16(), r.i32()) else {
            return;
        };
        let mut head = event(ctx, EventKind::Request, api_name(key));
        head.client_id = r.nullable_string().ok().flatten().map(t);
        head.attrs.push(("api_version", version.to_string()));
        head.attrs.push(("correlation_id", corr.to_string()));
        head.attrs.push(("oversize", size.to_string()));
        // acks=0 produces get no response: such an entry ages out of the bounded map.
        self.pending.insert(
            corr,
            Req {
                key,
                version,
                ts: ctx.ts_ns,
                ctx: ReqCtx::None,
            },
        );
        out(head);
    }

    #[allow(clippy::too_many_arguments)]
    fn request_body(
        &mut self,
        ctx: &Ctx<'_>,
        key: i16,
        v: i16,
        r: &mut Reader<'_>,
        head: &mut BrokerEvent,
        staged: &mut Vec<BrokerEvent>,
        rctx: &mut ReqCtx,
        expects_response: &mut bool,
    ) -> Res<()> {
        let name = api_name(key);
        match key {
            wire::PRODUCE => {
                let txn = if v >= 3 { r.nullable_string()? } else { None };
                let acks = r.i16()?;
                let timeout = r.i32()?;
                *expects_response = acks != 0;
                head.attrs.push(("acks", acks.to_string()));
                head.attrs.push(("timeout_ms", timeout.to_string()));
                if let Some(txn) = txn {
                    head.attrs.push(("transactional_id", t(txn)));
                }
                let mut parts = Vec::new();
                for _ in 0..r.array_len()? {
                    let topic = self.topic(r, v, 13)?;
                    for _ in 0..r.array_len()? {
                        let partition = r.i32()?;
                        let data = r.nullable_bytes()?.unwrap_or_default();
                        r.tags()?;
                        let s = records::summarize(data)?;
                        let mut e = event(ctx, EventKind::Publish, name);
                        e.destination = topic_dest(&topic, partition);
                        e.client_id.clone_from(&head.client_id);
                        e.record_count = Some(s.records);
                        e.body_size = Some(data.len() as u64);
                        e.fingerprint = (s.records > 0).then_some(s.fingerprint);
                        e.props = s.props.clone();
                        e.attrs.push(("acks", acks.to_string()));
                        e.attrs.push(("producer_id", s.producer_id.to_string()));
                        if s.producer_id >= 0 {
                            e.attrs
                                .push(("producer_epoch", s.producer_epoch.to_string()));
                            e.attrs.push(("base_sequence", s.base_sequence.to_string()));
                        }
                        e.attrs
                            .push(("compression", codec_name(s.codec).to_owned()));
                        if s.batches > 1 {
                            e.attrs.push(("batches", s.batches.to_string()));
                        }
                        if let Some(txn) = txn {
                            e.attrs.push(("transactional_id", t(txn)));
                        }
                        if parts.len() < MAX_PRODUCE_CTX {
                            parts.push((topic.clone(), partition, s.records));
                        }
                        staged.push(e);
                    }
                    r.tags()?;
                }
                r.tags()?;
                *rctx = ReqCtx::Produce(parts);
            }
            wire::FETCH => {
                if v <= 14 {
                    r.i32()?; // replica id
                }
                let max_wait = r.i32()?;
                let min_bytes = r.i32()?;
                head.attrs.push(("max_wait_ms", max_wait.to_string()));
                head.attrs.push(("min_bytes", min_bytes.to_string()));
                if v >= 3 {
                    head.attrs.push(("max_bytes", r.i32()?.to_string()));
                }
                if v >= 4 {
                    head.attrs.push(("isolation_level", r.i8()?.to_string()));
                }
                if v >= 7 {
                    head.attrs.push(("session_id", r.i32()?.to_string()));
                    head.attrs.push(("session_epoch", r.i32()?.to_string()));
                }
                let mut n = 0;
                let mut offsets = Vec::new();
                for _ in 0..r.array_len()? {
                    let topic = self.topic(r, v, 13)?;
                    for _ in 0..r.array_len()? {
                        let partition = r.i32()?;
                        if v >= 9 {
                            r.i32()?; // current leader epoch
                        }
                        let offset = r.i64()?;
                        if v >= 12 {
                            r.i32()?; // last fetched epoch
                        }
                        if v >= 5 {
                            r.i64()?; // log start offset
                        }
                        r.i32()?; // partition max bytes
                        r.tags()?;
                        if offsets.len() < MAX_FETCH_CTX {
                            offsets.push((topic.clone(), partition, offset));
                        }
                        push_list(
                            head,
                            &mut n,
                            "fetch",
                            format!("{topic}/{partition}@{offset}"),
                        );
                    }
                    r.tags()?;
                }
                if v >= 7 {
                    for _ in 0..r.array_len()? {
                        self.topic(r, v, 13)?;
                        r.skip_i32s()?;
                        r.tags()?;
                    }
                }
                if v >= 11 {
                    r.string()?; // rack id
                }
                r.tags()?;
                *rctx = ReqCtx::Fetch {
                    max_wait,
                    min_bytes,
                    offsets,
                };
            }
            wire::LIST_OFFSETS => {
                r.i32()?; // replica id
                if v >= 2 {
                    head.attrs.push(("isolation_level", r.i8()?.to_string()));
                }
                let mut n = 0;
                for _ in 0..r.array_len()? {
                    let topic = t(r.string()?);
                    for _ in 0..r.array_len()? {
                        let partition = r.i32()?;
                        if v >= 4 {
                            r.i32()?;
                        }
                        let ts = r.i64()?;
                        if v == 0 {
                            r.i32()?;
                        }
                        r.tags()?;
                        push_list(head, &mut n, "list", format!("{topic}/{partition}@{ts}"));
                    }
                    r.tags()?;
                }
                if v >= 10 {
                    r.i32()?;
                }
                r.tags()?;
            }
            wire::METADATA => {
                let mut n = 0;
                // v0: an empty array means all topics; v1+: null means all.
                for _ in 0..r.array_len()? {
                    let id = if v >= 10 { Some(r.uuid()?) } else { None };
                    let topic = r.nullable_string()?;
                    r.tags()?;
                    let shown = match (topic, id) {
                        (Some(name), _) => t(name),
                        (None, Some(id)) => self.topic_name(&id),
                        (None, None) => continue,
                    };
                    push_list(head, &mut n, "topic", shown);
                }
                if v >= 4 {
                    r.bool()?;
                }
                if (8..=10).contains(&v) {
                    r.bool()?;
                }
                if v >= 8 {
                    r.bool()?;
                }
                r.tags()?;
            }
            wire::OFFSET_COMMIT => {
                let group = t(r.string()?);
                head.destination = group_dest(&group);
                let (mut generation, mut member) = (None, None);
                if v >= 1 {
                    generation = Some(r.i32()?);
                    member = Some(t(r.string()?));
                }
                if v >= 7 {
                    r.nullable_string()?;
                }
                if (2..=4).contains(&v) {
                    r.i64()?;
                }
                for _ in 0..r.array_len()? {
                    let topic = self.topic(r, v, 10)?;
                    for _ in 0..r.array_len()? {
                        let partition = r.i32()?;
                        let offset = r.i64()?;
                        if v >= 6 {
                            r.i32()?;
                        }
                        if v == 1 {
                            r.i64()?;
                        }
                        r.nullable_string()?; // metadata
                        r.tags()?;
                        let mut e = event(ctx, EventKind::Ack, name);
                        e.destination = Some(Destination {
                            topic: Some(topic.clone()),
                            partition: Some(partition),
                            group: Some(group.clone()),
                            ..Default::default()
                        });
                        e.client_id.clone_from(&head.client_id);
                        e.offset = Some(offset);
                        if let Some(g) = generation {
                            e.attrs.push(("generation", g.to_string()));
                        }
                        if let Some(m) = &member {
                            e.attrs.push(("member_id", m.clone()));
                        }
                        staged.push(e);
                    }
                    r.tags()?;
                }
                r.tags()?;
                *rctx = ReqCtx::Group(group);
            }
            wire::OFFSET_FETCH => {
                let mut first = None;
                if v <= 7 {
                    first = Some(t(r.string()?));
                    for _ in 0..r.array_len()? {
                        r.string()?;
                        r.skip_i32s()?;
                        r.tags()?;
                    }
                } else {
                    let mut n = 0;
                    for _ in 0..r.array_len()? {
                        let g = t(r.string()?);
                        if v >= 9 {
                            r.nullable_string()?;
                            r.i32()?;
                        }
                        for _ in 0..r.array_len()? {
                            self.topic(r, v, 10)?;
                            r.skip_i32s()?;
                            r.tags()?;
                        }
                        r.tags()?;
                        push_list(head, &mut n, "group", g.clone());
                        first.get_or_insert(g);
                    }
                }
                if v >= 7 {
                    r.bool()?;
                }
                r.tags()?;
                if let Some(g) = first {
                    head.destination = group_dest(&g);
                    *rctx = ReqCtx::Group(g);
                }
            }
            wire::FIND_COORDINATOR => {
                let mut key_str = None;
                if v <= 3 {
                    key_str = Some(t(r.string()?));
                }
                let key_type = if v >= 1 { r.i8()? } else { 0 };
                if v >= 4 {
                    for _ in 0..r.array_len()? {
                        let k = t(r.string()?);
                        key_str.get_or_insert(k);
                    }
                }
                r.tags()?;
                head.attrs.push(("key_type", key_type.to_string()));
                if let Some(k) = key_str {
                    if key_type == 0 {
                        head.destination = group_dest(&k);
                    } else {
                        head.attrs.push(("key", k.clone()));
                    }
                    *rctx = ReqCtx::Group(k);
                }
            }
            wire::JOIN_GROUP => {
                let group = t(r.string()?);
                let session_timeout = r.i32()?;
                if v >= 1 {
                    r.i32()?;
                }
                let member = t(r.string()?);
                if v >= 5 {
                    r.nullable_string()?;
                }
                let protocol_type = t(r.string()?);
                let mut protocols = String::new();
                for _ in 0..r.array_len()? {
                    let p = r.string()?;
                    r.bytes()?;
                    r.tags()?;
                    if protocols.len() < wire::MAX_TEXT {
                        if !protocols.is_empty() {
                            protocols.push(',');
                        }
                        protocols.push_str(&t(p));
                    }
                }
                if v >= 8 {
                    r.nullable_string()?;
                }
                r.tags()?;
                head.destination = group_dest(&group);
                let mut e = event(ctx, EventKind::Subscribe, name);
                e.destination = group_dest(&group);
                e.client_id.clone_from(&head.client_id);
                e.attrs.push(("member_id", member));
                e.attrs.push(("protocol_type", protocol_type));
                e.attrs.push(("protocols", protocols));
                e.attrs
                    .push(("session_timeout_ms", session_timeout.to_string()));
                staged.push(e);
                *rctx = ReqCtx::Group(group);
            }
            wire::SYNC_GROUP | wire::HEARTBEAT => {
                let group = t(r.string()?);
                let generation = r.i32()?;
                let member = t(r.string()?);
                if v >= 3 {
                    r.nullable_string()?;
                }
                let mut assignments = None;
                if key == wire::SYNC_GROUP {
                    if v >= 5 {
                        r.nullable_string()?;
                        r.nullable_string()?;
                    }
                    let n = r.array_len()?;
                    for _ in 0..n {
                        r.string()?;
                        r.bytes()?;
                        r.tags()?;
                    }
                    assignments = Some(n);
                }
                r.tags()?;
                head.destination = group_dest(&group);
                let mut e = event(ctx, EventKind::Control, name);
                e.destination = group_dest(&group);
                e.client_id.clone_from(&head.client_id);
                e.attrs.push(("generation", generation.to_string()));
                e.attrs.push(("member_id", member));
                if let Some(n) = assignments {
                    e.attrs.push(("assignments", n.to_string()));
                }
                staged.push(e);
                *rctx = ReqCtx::Group(group);
            }
            wire::LEAVE_GROUP => {
                let group = t(r.string()?);
                let mut members = Vec::new();
                if v <= 2 {
                    members.push(t(r.string()?));
                } else {
                    for _ in 0..r.array_len()? {
                        let m = t(r.string()?);
                        r.nullable_string()?;
                        if v >= 5 {
                            r.nullable_string()?;
                        }
                        r.tags()?;
                        if members.len() < MAX_LIST_ATTRS {
                            members.push(m);
                        }
                    }
                }
                r.tags()?;
                head.destination = group_dest(&group);
                let mut e = event(ctx, EventKind::Unsubscribe, name);
                e.destination = group_dest(&group);
                e.client_id.clone_from(&head.client_id);
                for m in members {
                    e.attrs.push(("member_id", m));
                }
                staged.push(e);
                *rctx = ReqCtx::Group(group);
            }
            wire::SASL_HANDSHAKE => {
                let m = t(r.string()?);
                head.mechanism = Some(m.clone());
                self.sasl = Sasl {
                    mechanism: Some(m),
                    ..Default::default()
                };
            }
            wire::SASL_AUTHENTICATE => {
                let auth = r.bytes()?;
                r.tags()?;
                if self.sasl.done {
                    // A re-authentication (KIP-368) starts a new exchange.
                    self.sasl.done = false;
                    self.sasl.rounds = 0;
                    self.sasl.user = None;
                }
                if self.sasl.user.is_none() {
                    self.sasl.user = sasl_user(self.sasl.mechanism.as_deref(), auth);
                }
                head.mechanism.clone_from(&self.sasl.mechanism);
                head.user.clone_from(&self.sasl.user);
            }
            wire::API_VERSIONS => {
                if v >= 3 {
                    head.attrs.push(("client_software_name", t(r.string()?)));
                    head.attrs.push(("client_software_version", t(r.string()?)));
                    r.tags()?;
                }
            }
            wire::CREATE_TOPICS => {
                for _ in 0..r.array_len()? {
                    let topic = t(r.string()?);
                    let partitions = r.i32()?;
                    let replication = r.i16()?;
                    for _ in 0..r.array_len()? {
                        r.i32()?;
                        r.skip_i32s()?;
                        r.tags()?;
                    }
                    for _ in 0..r.array_len()? {
                        r.string()?;
                        r.nullable_string()?;
                        r.tags()?;
                    }
                    r.tags()?;
                    let mut e = event(ctx, EventKind::Declare, name);
                    e.destination = resource_dest("topic", Some(topic));
                    e.client_id.clone_from(&head.client_id);
                    e.attrs.push(("partitions", partitions.to_string()));
                    e.attrs.push(("replication", replication.to_string()));
                    staged.push(e);
                }
                r.i32()?;
                if v >= 1 && r.bool()? {
                    staged
                        .iter_mut()
                        .for_each(|e| e.attrs.push(("validate_only", "true".into())));
                }
                r.tags()?;
            }
            wire::DELETE_TOPICS => {
                let mut topics = Vec::new();
                if v >= 6 {
                    for _ in 0..r.array_len()? {
                        let name = r.nullable_string()?;
                        let id = r.uuid()?;
                        r.tags()?;
                        topics.push(name.map_or_else(|| self.topic_name(&id), t));
                    }
                } else {
                    for _ in 0..r.array_len()? {
                        topics.push(t(r.string()?));
                    }
                }
                r.i32()?;
                r.tags()?;
                for topic in topics {
                    let mut e = event(ctx, EventKind::Delete, name);
                    e.destination = resource_dest("topic", Some(topic));
                    e.client_id.clone_from(&head.client_id);
                    staged.push(e);
                }
            }
            wire::CREATE_PARTITIONS => {
                for _ in 0..r.array_len()? {
                    let topic = t(r.string()?);
                    let count = r.i32()?;
                    for _ in 0..r.array_len()? {
                        r.skip_i32s()?;
                        r.tags()?;
                    }
                    r.tags()?;
                    let mut e = event(ctx, EventKind::Declare, name);
                    e.destination = resource_dest("partitions", Some(topic));
                    e.client_id.clone_from(&head.client_id);
                    e.attrs.push(("count", count.to_string()));
                    staged.push(e);
                }
                r.i32()?;
                r.bool()?;
                r.tags()?;
            }
            wire::CREATE_ACLS | wire::DELETE_ACLS => {
                let create = key == wire::CREATE_ACLS;
                for _ in 0..r.array_len()? {
                    let resource_type = r.i8()?;
                    let resource_name = r.nullable_string()?;
                    let pattern = if v >= 1 { Some(r.i8()?) } else { None };
                    let principal = r.nullable_string()?;
                    let host = r.nullable_string()?;
                    let operation = r.i8()?;
                    let permission = r.i8()?;
                    r.tags()?;
                    let kind = if create {
                        EventKind::Declare
                    } else {
                        EventKind::Delete
                    };
                    let mut e = event(ctx, kind, name);
                    e.destination = resource_dest("acl", None);
                    e.client_id.clone_from(&head.client_id);
                    e.attrs.push(("resource_type", resource_type.to_string()));
                    if let Some(n) = resource_name {
                        e.attrs.push(("resource_name", t(n)));
                    }
                    if let Some(p) = pattern {
                        e.attrs.push(("pattern_type", p.to_string()));
                    }
                    if let Some(p) = principal {
                        e.attrs.push(("principal", t(p)));
                    }
                    if let Some(h) = host {
                        e.attrs.push(("host", t(h)));
                    }
                    e.attrs.push(("operation", operation.to_string()));
                    e.attrs.push(("permission", permission.to_string()));
                    staged.push(e);
                }
                r.tags()?;
            }
            wire::ALTER_CONFIGS | wire::INCREMENTAL_ALTER_CONFIGS => {
                let incremental = key == wire::INCREMENTAL_ALTER_CONFIGS;
                for _ in 0..r.array_len()? {
                    let resource_type = r.i8()?;
                    let resource_name = t(r.string()?);
                    let mut e = event(ctx, EventKind::Control, name);
                    e.destination = resource_dest(
                        "config",
                        (resource_type == 2).then(|| resource_name.clone()),
                    );
                    e.client_id.clone_from(&head.client_id);
                    e.attrs.push(("resource_type", resource_type.to_string()));
                    e.attrs.push(("resource_name", resource_name));
                    let mut n = 0;
                    for _ in 0..r.array_len()? {
                        // Names only: values may be secrets (sasl.jaas.config, ssl passwords).
                        let config = t(r.string()?);
                        let shown = if incremental {
                            format!("{config}:{}", op_name(r.i8()?))
                        } else {
                            config
                        };
                        r.nullable_string()?;
                        r.tags()?;
                        push_list(&mut e, &mut n, "config", shown);
                    }
                    r.tags()?;
                    staged.push(e);
                }
                r.bool()?;
                r.tags()?;
            }
            // Header only: the body is not read.
            _ => {
                r.take(r.remaining())?;
            }
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Responses

    /// A whole response (without its size prefix).
    pub(super) fn response(&mut self, ctx: &Ctx<'_>, msg: &[u8], out: Out<'_>) -> Res<()> {
        let mut r = Reader::new(msg, false);
        let corr = r.i32()?;
        let Some(req) = self.pending.remove(corr) else {
            // Its request was not seen (joined mid-stream, lost, or forgotten): the body
            // cannot be read without the api key and version.
            let mut e = BrokerEvent::new(
                ctx.ts_ns,
                System::Kafka,
                EventKind::Response,
                ctx.conn.clone(),
                ctx.dir,
            );
            e.attrs.push(("correlation_id", corr.to_string()));
            out(e);
            return Ok(());
        };
        let (key, v) = (req.key, req.version);
        let elapsed = ctx.ts_ns.saturating_sub(req.ts);
        let mut head = event(ctx, EventKind::Response, api_name(key));
        head.attrs.push(("api_version", v.to_string()));
        head.attrs.push(("correlation_id", corr.to_string()));
        if key != wire::FETCH {
            head.latency_ns = Some(elapsed);
        }
        if let ReqCtx::Group(g) = &req.ctx
            && key != wire::FIND_COORDINATOR
        {
            head.destination = group_dest(g);
        }
        let mut staged = Vec::new();
        // ApiVersions responses keep header v0 (a client cannot know the broker's versions).
        let body = (|| {
            if key != wire::API_VERSIONS {
                r.flex = is_flexible(key, v);
                r.tags()?;
            }
            self.response_body(ctx, &req, elapsed, &mut r, &mut head, &mut staged)
        })();
        out(head);
        if body.is_ok() {
            staged.into_iter().for_each(&mut *out);
        }
        body
    }

    /// The Fetch version of the request `corr` answers, if it is a Fetch we wait for (its
    /// response can be streamed).
    pub(super) fn fetch_stream_version(&self, corr: i32) -> Option<i16> {
        self.pending
            .map
            .get(&corr)
            .filter(|e| e.1.key == wire::FETCH)
            .map(|e| e.1.version)
    }

    /// A streamed Fetch response, decoded: the same events as a buffered one.
    pub(super) fn finish_stream(&mut self, ctx: &Ctx<'_>, corr: i32, f: FetchResult, out: Out<'_>) {
        let Some(req) = self.pending.remove(corr) else {
            return;
        };
        let elapsed = ctx.ts_ns.saturating_sub(req.ts);
        let mut head = event(ctx, EventKind::Response, api_name(req.key));
        head.attrs.push(("api_version", req.version.to_string()));
        head.attrs.push(("correlation_id", corr.to_string()));
        let mut staged = Vec::new();
        let code = fetch_events(ctx, &req, elapsed, &mut head, &mut staged, f);
        set_reply(&mut head, code, None);
        out(head);
        staged.into_iter().for_each(&mut *out);
    }

    /// An oversize response: only the correlation id is read; its request is answered.
    pub(super) fn oversize_response(
        &mut self,
        ctx: &Ctx<'_>,
        head_bytes: &[u8],
        size: usize,
        out: Out<'_>,
    ) {
        let Ok(corr) = Reader::new(head_bytes, false).i32() else {
            return;
        };
        let mut e = BrokerEvent::new(
            ctx.ts_ns,
            System::Kafka,
            EventKind::Response,
            ctx.conn.clone(),
            ctx.dir,
        );
        if let Some(req) = self.pending.remove(corr) {
            e.method = Some(api_name(req.key));
            e.attrs.push(("api_version", req.version.to_string()));
            e.attrs.push(("correlation_id", corr.to_string()));
            let elapsed = ctx.ts_ns.saturating_sub(req.ts);
            if req.key == wire::FETCH {
                e.attrs.push(("elapsed_ns", elapsed.to_string()));
            } else {
                e.latency_ns = Some(elapsed);
            }
        } else {
            e.attrs.push(("correlation_id", corr.to_string()));
        }
        e.attrs.push(("oversize", size.to_string()));
        out(e);
    }

    fn response_body(
        &mut self,
        ctx: &Ctx<'_>,
        req: &Req,
        elapsed: u64,
        r: &mut Reader<'_>,
        head: &mut BrokerEvent,
        staged: &mut Vec<BrokerEvent>,
    ) -> Res<()> {
        let (key, v) = (req.key, req.version);
        let name = api_name(key);
        let throttle = |r: &mut Reader<'_>, head: &mut BrokerEvent| -> Res<()> {
            let ms = r.i32()?;
            if ms > 0 {
                head.attrs.push(("throttle_time_ms", ms.to_string()));
            }
            Ok(())
        };
        let mut first = FirstError::default();
        let mut first_msg: Option<&[u8]> = None;
        match key {
            wire::PRODUCE => {
                let produced = match &req.ctx {
                    ReqCtx::Produce(p) => p.as_slice(),
                    _ => &[],
                };
                for _ in 0..r.array_len()? {
                    let topic = self.topic(r, v, 13)?;
                    for _ in 0..r.array_len()? {
                        let partition = r.i32()?;
                        let error = r.i16()?;
                        let base_offset = r.i64()?;
                        let append_time = if v >= 2 { r.i64()? } else { -1 };
                        if v >= 5 {
                            r.i64()?;
                        }
                        let mut message = None;
                        if v >= 8 {
                            for _ in 0..r.array_len()? {
                                r.i32()?;
                                r.nullable_string()?;
                                r.tags()?;
                            }
                            message = r.nullable_string()?;
                        }
                        r.tags()?;
                        first.see(error);
                        let kind = if error == 0 {
                            EventKind::Confirm
                        } else {
                            EventKind::Nack
                        };
                        let mut e = event(ctx, kind, name);
                        e.destination = topic_dest(&topic, partition);
                        e.offset = (base_offset >= 0).then_some(base_offset);
                        e.record_count = produced
                            .iter()
                            .find(|(t, p, _)| *p == partition && *t == topic)
                            .map(|p| p.2);
                        set_reply(&mut e, error, message);
                        if append_time >= 0 {
                            e.attrs.push(("log_append_time", append_time.to_string()));
                        }
                        staged.push(e);
                    }
                    r.tags()?;
                }
                if v >= 1 {
                    throttle(r, head)?;
                }
            }
            wire::FETCH => {
                let mut f = FetchResult::default();
                if v >= 1 {
                    f.throttle = r.i32()?;
                }
                if v >= 7 {
                    f.error = r.i16()?;
                    r.i32()?;
                }
                for _ in 0..r.array_len()? {
                    let topic = self.topic(r, v, 13)?;
                    for _ in 0..r.array_len()? {
                        let mut p = fetch_part_head(r, v, topic.clone())?;
                        let data = r.nullable_bytes()?.unwrap_or_default();
                        r.tags()?;
                        p.summary = records::summarize(data)?;
                        f.parts.push(p);
                    }
                    r.tags()?;
                }
                first = FirstError(fetch_events(ctx, req, elapsed, head, staged, f));
            }
            wire::LIST_OFFSETS => {
                if v >= 2 {
                    throttle(r, head)?;
                }
                let mut n = 0;
                for _ in 0..r.array_len()? {
                    let topic = t(r.string()?);
                    for _ in 0..r.array_len()? {
                        let partition = r.i32()?;
                        first.see(r.i16()?);
                        let offset = if v == 0 {
                            let k = r.array_len()?;
                            let mut o = -1;
                            for i in 0..k {
                                let x = r.i64()?;
                                if i == 0 {
                                    o = x;
                                }
                            }
                            o
                        } else {
                            r.i64()?;
                            r.i64()?
                        };
                        if v >= 4 {
                            r.i32()?;
                        }
                        r.tags()?;
                        push_list(
                            head,
                            &mut n,
                            "offset",
                            format!("{topic}/{partition}={offset}"),
                        );
                    }
                    r.tags()?;
                }
            }
            wire::METADATA => {
                if v >= 3 {
                    throttle(r, head)?;
                }
                let brokers = r.array_len()?;
                for _ in 0..brokers {
                    r.i32()?;
                    r.string()?;
                    r.i32()?;
                    if v >= 1 {
                        r.nullable_string()?;
                    }
                    r.tags()?;
                }
                head.attrs.push(("brokers", brokers.to_string()));
                if v >= 2
                    && let Some(c) = r.nullable_string()?
                {
                    head.attrs.push(("cluster_id", t(c)));
                }
                if v >= 1 {
                    head.attrs.push(("controller_id", r.i32()?.to_string()));
                }
                let topics = r.array_len()?;
                head.attrs.push(("topics", topics.to_string()));
                let mut n = 0;
                for _ in 0..topics {
                    first.see(r.i16()?);
                    let name = r.nullable_string()?;
                    let id = if v >= 10 { Some(r.uuid()?) } else { None };
                    let topic = match (name, id) {
                        (Some(nm), Some(id)) => {
                            self.remember_topic(id, nm);
                            t(nm)
                        }
                        (Some(nm), None) => t(nm),
                        (None, Some(id)) => self.topic_name(&id),
                        (None, None) => String::new(),
                    };
                    if v >= 1 {
                        r.bool()?;
                    }
                    for _ in 0..r.array_len()? {
                        r.i16()?;
                        let partition = r.i32()?;
                        let leader = r.i32()?;
                        if v >= 7 {
                            r.i32()?;
                        }
                        r.skip_i32s()?;
                        r.skip_i32s()?;
                        if v >= 5 {
                            r.skip_i32s()?;
                        }
                        r.tags()?;
                        push_list(
                            head,
                            &mut n,
                            "leader",
                            format!("{topic}/{partition}={leader}"),
                        );
                    }
                    if v >= 8 {
                        r.i32()?;
                    }
                    r.tags()?;
                }
                if (8..=10).contains(&v) {
                    r.i32()?;
                }
            }
            wire::OFFSET_COMMIT => {
                if v >= 3 {
                    throttle(r, head)?;
                }
                let group = match &req.ctx {
                    ReqCtx::Group(g) => Some(g.clone()),
                    _ => None,
                };
                for _ in 0..r.array_len()? {
                    let topic = self.topic(r, v, 10)?;
                    for _ in 0..r.array_len()? {
                        let partition = r.i32()?;
                        let error = r.i16()?;
                        r.tags()?;
                        first.see(error);
                        if error != 0 {
                            let mut e = event(ctx, EventKind::Error, name);
                            e.destination = Some(Destination {
                                topic: Some(topic.clone()),
                                partition: Some(partition),
                                group: group.clone(),
                                ..Default::default()
                            });
                            set_reply(&mut e, error, None);
                            staged.push(e);
                        }
                    }
                    r.tags()?;
                }
            }
            wire::OFFSET_FETCH => {
                if v >= 3 {
                    throttle(r, head)?;
                }
                let mut n = 0;
                let groups = if v <= 7 { 1 } else { r.array_len()? };
                for _ in 0..groups {
                    if v >= 8 {
                        r.string()?;
                    }
                    for _ in 0..r.array_len()? {
                        let topic = self.topic(r, v, 10)?;
                        for _ in 0..r.array_len()? {
                            let partition = r.i32()?;
                            let offset = r.i64()?;
                            if v >= 5 {
                                r.i32()?;
                            }
                            r.nullable_string()?;
                            first.see(r.i16()?);
                            r.tags()?;
                            push_list(
                                head,
                                &mut n,
                                "committed",
                                format!("{topic}/{partition}={offset}"),
                            );
                        }
                        r.tags()?;
                    }
                    if v >= 8 {
                        first.see(r.i16()?);
                        r.tags()?;
                    }
                }
                if (2..=7).contains(&v) {
                    let top = r.i16()?;
                    if top != 0 {
                        first = FirstError(top);
                    }
                }
            }
            wire::FIND_COORDINATOR => {
                if v >= 1 {
                    throttle(r, head)?;
                }
                let coordinator = |r: &mut Reader<'_>, head: &mut BrokerEvent| -> Res<()> {
                    let node = r.i32()?;
                    let host = t(r.string()?);
                    let port = r.i32()?;
                    head.attrs
                        .push(("coordinator", format!("{node}@{host}:{port}")));
                    Ok(())
                };
                if v <= 3 {
                    first.see(r.i16()?);
                    if v >= 1 {
                        first_msg = r.nullable_string()?;
                    }
                    coordinator(r, head)?;
                } else {
                    for _ in 0..r.array_len()? {
                        r.string()?;
                        coordinator(r, head)?;
                        first.see(r.i16()?);
                        r.nullable_string()?;
                        r.tags()?;
                    }
                }
                if let ReqCtx::Group(g) = &req.ctx {
                    head.destination = group_dest(g);
                }
            }
            wire::JOIN_GROUP => {
                if v >= 2 {
                    throttle(r, head)?;
                }
                first.see(r.i16()?);
                head.attrs.push(("generation", r.i32()?.to_string()));
                if v >= 7 {
                    r.nullable_string()?;
                }
                if let Some(p) = r.nullable_string()? {
                    head.attrs.push(("protocol", t(p)));
                }
                head.attrs.push(("leader", t(r.string()?)));
                if v >= 9 {
                    r.bool()?;
                }
                head.attrs.push(("member_id", t(r.string()?)));
                let members = r.array_len()?;
                for _ in 0..members {
                    r.string()?;
                    if v >= 5 {
                        r.nullable_string()?;
                    }
                    r.bytes()?;
                    r.tags()?;
                }
                head.attrs.push(("members", members.to_string()));
            }
            wire::SYNC_GROUP | wire::HEARTBEAT | wire::LEAVE_GROUP => {
                if v >= 1 {
                    throttle(r, head)?;
                }
                first.see(r.i16()?);
                if key == wire::SYNC_GROUP {
                    if v >= 5 {
                        r.nullable_string()?;
                        r.nullable_string()?;
                    }
                    r.bytes()?;
                } else if key == wire::LEAVE_GROUP && v >= 3 {
                    for _ in 0..r.array_len()? {
                        r.string()?;
                        r.nullable_string()?;
                        first.see(r.i16()?);
                        r.tags()?;
                    }
                }
            }
            wire::SASL_HANDSHAKE => {
                first.see(r.i16()?);
                let mut list = String::new();
                for _ in 0..r.array_len()? {
                    let m = r.string()?;
                    if list.len() < wire::MAX_TEXT {
                        if !list.is_empty() {
                            list.push(',');
                        }
                        list.push_str(&t(m));
                    }
                }
                head.attrs.push(("mechanisms", list));
                head.mechanism.clone_from(&self.sasl.mechanism);
            }
            wire::SASL_AUTHENTICATE => {
                let error = r.i16()?;
                first.see(error);
                first_msg = r.nullable_string()?;
                let server = r.bytes()?;
                if v >= 1 {
                    r.i64()?;
                }
                self.sasl.rounds += 1;
                let mech = self.sasl.mechanism.as_deref().unwrap_or_default();
                // PLAIN and OAUTHBEARER take one round; SCRAM ends with the server-final
                // message ("v=…"); others (GSSAPI) are reported at their first answer.
                let complete = error != 0
                    || !mech.starts_with("SCRAM-")
                    || server.starts_with(b"v=")
                    || server.starts_with(b"e=");
                if complete && !self.sasl.done {
                    self.sasl.done = true;
                    let mut e = event(ctx, EventKind::Auth, name);
                    e.user.clone_from(&self.sasl.user);
                    e.mechanism.clone_from(&self.sasl.mechanism);
                    e.outcome = Some(if error == 0 && !server.starts_with(b"e=") {
                        Outcome::Success
                    } else {
                        Outcome::Failure
                    });
                    set_reply(&mut e, error, first_msg);
                    staged.push(e);
                }
                head.mechanism.clone_from(&self.sasl.mechanism);
                head.user.clone_from(&self.sasl.user);
            }
            wire::API_VERSIONS => {
                let error = r.i16()?;
                first.see(error);
                // An UNSUPPORTED_VERSION answer is written in v0 whatever was asked.
                let flex = v >= 3 && error != 35;
                r.flex = flex;
                let n = r.array_len()?;
                for _ in 0..n {
                    r.i16()?;
                    r.i16()?;
                    r.i16()?;
                    r.tags()?;
                }
                head.attrs.push(("api_keys", n.to_string()));
                if v >= 1 && flex {
                    throttle(r, head)?;
                }
            }
            wire::CREATE_TOPICS => {
                if v >= 2 {
                    throttle(r, head)?;
                }
                for _ in 0..r.array_len()? {
                    let topic = r.string()?;
                    if v >= 7 {
                        let id = r.uuid()?;
                        self.remember_topic(id, topic);
                    }
                    let error = r.i16()?;
                    first.see(error);
                    let msg = if v >= 1 { r.nullable_string()? } else { None };
                    if error != 0 && first_msg.is_none() {
                        first_msg = msg;
                    }
                    if v >= 5 {
                        r.i32()?;
                        r.i16()?;
                        for _ in 0..r.array_len()? {
                            r.string()?;
                            r.nullable_string()?;
                            r.bool()?;
                            r.i8()?;
                            r.bool()?;
                            r.tags()?;
                        }
                    }
                    r.tags()?;
                }
            }
            wire::DELETE_TOPICS => {
                if v >= 1 {
                    throttle(r, head)?;
                }
                for _ in 0..r.array_len()? {
                    r.nullable_string()?;
                    if v >= 6 {
                        r.uuid()?;
                    }
                    let error = r.i16()?;
                    first.see(error);
                    if v >= 5 {
                        let msg = r.nullable_string()?;
                        if error != 0 && first_msg.is_none() {
                            first_msg = msg;
                        }
                    }
                    r.tags()?;
                }
            }
            wire::CREATE_PARTITIONS
            | wire::CREATE_ACLS
            | wire::ALTER_CONFIGS
            | wire::INCREMENTAL_ALTER_CONFIGS => {
                throttle(r, head)?;
                for _ in 0..r.array_len()? {
                    if key == wire::CREATE_PARTITIONS {
                        r.string()?;
                    }
                    let error = r.i16()?;
                    first.see(error);
                    let msg = r.nullable_string()?;
                    if error != 0 && first_msg.is_none() {
                        first_msg = msg;
                    }
                    if matches!(key, wire::ALTER_CONFIGS | wire::INCREMENTAL_ALTER_CONFIGS) {
                        r.i8()?;
                        r.string()?;
                    }
                    r.tags()?;
                }
            }
            wire::DELETE_ACLS => {
                throttle(r, head)?;
                for _ in 0..r.array_len()? {
                    let error = r.i16()?;
                    first.see(error);
                    let msg = r.nullable_string()?;
                    if error != 0 && first_msg.is_none() {
                        first_msg = msg;
                    }
                    let matching = r.array_len()?;
                    for _ in 0..matching {
                        r.i16()?;
                        r.nullable_string()?;
                        r.i8()?;
                        r.string()?;
                        if v >= 1 {
                            r.i8()?;
                        }
                        r.string()?;
                        r.string()?;
                        r.i8()?;
                        r.i8()?;
                        r.tags()?;
                    }
                    head.attrs.push(("deleted", matching.to_string()));
                    r.tags()?;
                }
            }
            // Header only.
            _ => return Ok(()),
        }
        set_reply(head, first.0, first_msg);
        Ok(())
    }
}

/// A Fetch response partition's fields before its records.
pub(super) fn fetch_part_head(r: &mut Reader<'_>, v: i16, topic: String) -> Res<FetchPart> {
    let partition = r.i32()?;
    let error = r.i16()?;
    let hw = r.i64()?;
    let lso = if v >= 4 { r.i64()? } else { -1 };
    let log_start = if v >= 5 { r.i64()? } else { -1 };
    if v >= 4 {
        for _ in 0..r.array_len()? {
            r.i64()?;
            r.i64()?;
            r.tags()?;
        }
    }
    if v >= 11 {
        r.i32()?; // preferred read replica
    }
    Ok(FetchPart {
        topic,
        partition,
        error,
        hw,
        lso,
        log_start,
        summary: Summary::default(),
    })
}

/// Fills a Fetch Response event and stages its deliveries; returns the reply code (top-level
/// error, else the first partition error).
fn fetch_events(
    ctx: &Ctx<'_>,
    req: &Req,
    elapsed: u64,
    head: &mut BrokerEvent,
    staged: &mut Vec<BrokerEvent>,
    f: FetchResult,
) -> i16 {
    let mut first = FirstError(f.error);
    if f.throttle > 0 {
        head.attrs
            .push(("throttle_time_ms", f.throttle.to_string()));
    }
    let (max_wait, min_bytes, offsets) = match &req.ctx {
        ReqCtx::Fetch {
            max_wait,
            min_bytes,
            offsets,
        } => (Some(*max_wait), Some(*min_bytes), offsets.as_slice()),
        _ => (None, None, &[][..]),
    };
    let mut total_records = 0u64;
    let mut n = 0;
    for p in f.parts {
        first.see(p.error);
        push_list(
            head,
            &mut n,
            "hw",
            format!("{}/{}={}", p.topic, p.partition, p.hw),
        );
        total_records += u64::from(p.summary.records);
        let fetch_offset = offsets
            .iter()
            .find(|(t, q, _)| *q == p.partition && *t == p.topic)
            .map(|o| o.2);
        if let Some(e) = deliver(ctx, &p, fetch_offset) {
            staged.push(e);
        }
    }
    if let (Some(max_wait), Some(min_bytes)) = (max_wait, min_bytes) {
        head.attrs.push(("max_wait_ms", max_wait.to_string()));
        head.attrs.push(("min_bytes", min_bytes.to_string()));
    }
    head.attrs.push(("elapsed_ns", elapsed.to_string()));
    if total_records == 0 {
        // The broker held the request up to max_wait_ms for data: not latency.
        head.attrs.push(("long_poll", "true".into()));
    } else {
        head.latency_ns = Some(elapsed);
        head.record_count = u32::try_from(total_records).ok();
    }
    first.0
}

/// A Deliver for a partition that returned records. The broker returns whole batches, so
/// the first may start before the fetch offset: those records are not handed to the consumer
/// (it drops them), and are left out when the batch's offsets are contiguous.
fn deliver(ctx: &Ctx<'_>, p: &FetchPart, fetch_offset: Option<i64>) -> Option<BrokerEvent> {
    let s = &p.summary;
    let mut first = s.first_offset?;
    let mut count = s.records;
    if let (Some(fo), Some((base, last_delta, n))) = (fetch_offset, s.first_batch)
        && fo > first
        && i64::from(n) == i64::from(last_delta) + 1
        && fo <= base + i64::from(last_delta)
    {
        count -= u32::try_from(fo - first).ok()?;
        first = fo;
    }
    let mut e = event(ctx, EventKind::Deliver, "Fetch");
    e.destination = topic_dest(&p.topic, p.partition);
    e.offset = Some(first);
    e.record_count = Some(count);
    e.body_size = Some(s.bytes);
    e.fingerprint = Some(s.fingerprint);
    e.props = s.props.clone();
    if let Some(last) = s.last_offset {
        e.attrs.push(("last_offset", last.to_string()));
    }
    e.attrs.push(("high_watermark", p.hw.to_string()));
    if p.lso >= 0 {
        e.attrs.push(("last_stable_offset", p.lso.to_string()));
    }
    if p.log_start >= 0 {
        e.attrs.push(("log_start_offset", p.log_start.to_string()));
    }
    e.attrs
        .push(("compression", codec_name(s.codec).to_owned()));
    if s.batches > 1 {
        e.attrs.push(("batches", s.batches.to_string()));
    }
    if let Some((base, _, _)) = s.first_batch
        && base != first
    {
        e.attrs.push(("batch_offset", base.to_string()));
    }
    Some(e)
}

fn op_name(op: i8) -> &'static str {
    match op {
        0 => "set",
        1 => "delete",
        2 => "append",
        3 => "subtract",
        _ => "unknown",
    }
}

/// The user name in a client's first SASL message; never the password.
fn sasl_user(mechanism: Option<&str>, auth: &[u8]) -> Option<String> {
    match mechanism? {
        // authzid NUL authcid NUL passwd
        "PLAIN" => {
            let mut parts = auth.splitn(3, |&b| b == 0);
            let authzid = parts.next()?;
            let authcid = parts.next()?;
            parts.next()?;
            let user = if authcid.is_empty() { authzid } else { authcid };
            (!user.is_empty()).then(|| t(user))
        }
        // gs2-header "n,," then "n=user,r=nonce" ("=2C" / "=3D" escape ',' and '=').
        m if m.starts_with("SCRAM-") => {
            let mut fields = auth.split(|&b| b == b',').skip(2);
            let user = fields.find_map(|f| f.strip_prefix(b"n="))?;
            let user = t(user).replace("=2C", ",").replace("=3D", "=");
            Some(user)
        }
        _ => None,
    }
}

#[cfg(test)]
pub(super) fn test_sasl_user(mechanism: Option<&str>, auth: &[u8]) -> Option<String> {
    sasl_user(mechanism, auth)
}
