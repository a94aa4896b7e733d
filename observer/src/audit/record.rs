//! [`AuditRecord`] and the mapping from [`BrokerEvent`]s to records ([`from_event`]).
//!
//! One operation yields exactly one record. Where the protocol answers a request later, the
//! request is held in the [`AuditContext`] and its record is emitted when the answer arrives
//! (with the outcome and reason the answer gives), when the connection or channel ends
//! (outcome `unknown`), or by [`AuditContext::flush_pending`]. Per protocol:
//!
//! - AMQP 0-9-1: `connection.open`, `exchange.declare/delete`, `exchange.bind/unbind`,
//!   `queue.declare/delete/purge/bind/unbind`, `basic.consume` and a client's `basic.cancel`
//!   are held per connection and channel until the broker's `…-ok` (success) or a broker
//!   `channel.close`/`connection.close` with an error code on that channel (failure with the
//!   reply code and text; 403 ACCESS_REFUSED and 530 NOT_ALLOWED make the record
//!   `access.denied`). Replies come in request order per channel; a reply that skips held
//!   requests (sent with no-wait) ends those with outcome `unknown`. A broker `basic.cancel`
//!   is recorded at once. An error that ends no held request is `access.denied` for 403/530 and
//!   not recorded otherwise.
//! - MQTT: CONNACK is the login record (any refusal → `user.authentication.failure`, its code in
//!   `reason`). Each SUBSCRIBE / UNSUBSCRIBE filter is held by
//!   packet id until the SUBACK / UNSUBACK reason code for its position (≥ 0x80 is a failure,
//!   0x87 `access.denied`; MQTT 3 UNSUBACK has none: success). A PUBACK/PUBREC or a broker
//!   DISCONNECT with 0x87 is `access.denied`.
//! - NATS: SUB/UNSUB are recorded at once as success (NATS does not acknowledge them; a later
//!   permissions violation is its own `access.denied` record). JetStream
//!   `STREAM.CREATE/DELETE/PURGE` and `CONSUMER.CREATE/DELETE` requests are held until the API
//!   response on the same connection (its outcome and error), or a `-ERR 'Permissions
//!   Violation …'` naming their API subject (`access.denied`). Other `Permissions Violation` /
//!   `Authorization Violation` errors are `access.denied`; a refused login is
//!   `user.authentication.failure` (the decoder reports it as `auth`).
//! - Kafka: CreateTopics, DeleteTopics, CreatePartitions, CreateAcls, DeleteAcls,
//!   (Incremental)AlterConfigs, JoinGroup and LeaveGroup yield one record per topic / ACL /
//!   resource / group, held by correlation id until the response: error 0 → success; an error
//!   → failure with it when the request named one item, `unknown` with it when it named several
//!   (Kafka's per-item errors reach the event as the first error only). JoinGroup answered with
//!   MEMBER_ID_REQUIRED (79) is a protocol step: no record. A response with
//!   TOPIC/GROUP/CLUSTER_AUTHORIZATION_FAILED (29/30/31) that ends no held request is
//!   `access.denied`. SaslAuthenticate results are the login records.
//!
//! Records never carry credentials or bodies: fields are built from named event fields and a
//! short allow-list of attrs (stream, resource names, ACL principal/operation/permission, config
//! names); nothing else of `attrs`, no message body, no header values are read.
use std::{
    collections::{HashMap, VecDeque},
    fmt,
    net::SocketAddr,
    str::FromStr,
    sync::Mutex,
};

use serde::{Deserialize, Serialize};

use crate::{
    capture::{ConnId, Direction},
    event::{BrokerEvent, EventKind, Outcome, System},
    render::rfc3339,
};

/// Held requests at most (oldest emitted with outcome `unknown` beyond this).
pub const MAX_PENDING: usize = 4096;
/// Connections whose login user is remembered at most.
const MAX_USERS: usize = 65_536;

/// How much to record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AuditLevel {
    /// Security and administrative operations: logins, denials, connections, declares,
    /// deletes, bindings, consumers, subscriptions, ACLs, configuration.
    #[default]
    Standard,
    /// Standard plus one `message.published` record per publish (destination, size, message
    /// id; never the body).
    Full,
}

impl AuditLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditLevel::Standard => "standard",
            AuditLevel::Full => "full",
        }
    }
}

impl FromStr for AuditLevel {
    type Err = crate::audit::AuditError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "standard" => Ok(AuditLevel::Standard),
            "full" => Ok(AuditLevel::Full),
            other => Err(crate::audit::AuditError::BadLevel(other.to_owned())),
        }
    }
}

impl fmt::Display for AuditLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---------------------------------------------------------------------------------------------
// The record

/// `event`: what happened and how it ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventInfo {
    /// `connection.created`, `queue.created`, `access.denied`, … (see the module docs).
    pub action: String,
    /// `success`, `failure` or `unknown`.
    pub outcome: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Messaging {
    /// `rabbitmq`, `mqtt`, `nats` or `kafka`.
    pub system: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executable: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    pub id: String,
    /// The container's name in the pod spec (Kubernetes API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pod {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// The workload that owns the broker's pod (Kubernetes API).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadRef {
    /// `Deployment`, `StatefulSet`, `DaemonSet`, `Job`, `ReplicaSet` or `Pod`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `client` (the peer) or `server` (the broker's side).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub ip: String,
    pub port: u16,
}

impl From<SocketAddr> for Endpoint {
    fn from(a: SocketAddr) -> Self {
        Endpoint {
            ip: a.ip().to_string(),
            port: a.port(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub name: String,
}

/// What the operation acted on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    /// `queue`, `exchange`, `topic`, `stream`, `consumer`, `group`, `subject`, `vhost`, `acl`,
    /// `broker`, …
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What contains it: the queue of an AMQP consumer, the stream of a JetStream consumer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Bindings: the source exchange (AMQP queue.bind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Bindings and publishes: the routing key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_key: Option<String>,
}

impl Resource {
    fn new(kind: &str, name: Option<String>) -> Self {
        Resource {
            kind: kind.to_owned(),
            name,
            parent: None,
            source: None,
            routing_key: None,
        }
    }
}

/// The protocol's own reason: a reply / reason / error code and its text.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// Kafka ACL records: who, what, allow or deny (numeric codes as on the wire).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acl {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern_type: Option<String>,
}

/// `config.changed`: the names of the settings (values are never recorded).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    pub names: Vec<String>,
}

/// `message.published` (level full): never the body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Body bytes (Kafka: batch bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Kafka: records in the batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
}

/// One audit record: one JSON object per line in the audit log. Absent values are omitted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// RFC 3339 UTC with nanoseconds.
    pub time: String,
    /// Host name of the observer's node.
    pub node: String,
    pub event: EventInfo,
    pub messaging: Messaging,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<Process>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<Pod>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<Endpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<Endpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<User>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vhost: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<Resource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl: Option<Acl>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Config>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
    /// The observer's connection id (`c12`), as in `brokerscope trace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// The protocol operation that caused the record (`queue.declare`, `SUBSCRIBE`,
    /// `CreateTopics`, `STREAM.CREATE`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_method: Option<String>,
}

impl AuditRecord {
    /// One JSON object, no trailing newline.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("audit records always serialize")
    }

    /// Nanoseconds since the epoch of `time`, if it parses.
    pub fn time_ns(&self) -> Option<i128> {
        crate::audit::query::parse_rfc3339(&self.time)
    }

    fn outcome(mut self, outcome: Outcome) -> Self {
        self.event.outcome = outcome.as_str().to_owned();
        self
    }
}

/// `messaging.system`: `rabbitmq` for AMQP, as the span conventions say.
pub fn messaging_system(s: System) -> &'static str {
    match s {
        System::Amqp => "rabbitmq",
        System::Mqtt => "mqtt",
        System::Nats => "nats",
        System::Kafka => "kafka",
    }
}

// ---------------------------------------------------------------------------------------------
// The context

/// Container and Kubernetes identity of a process, when the caller knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workload {
    pub container_id: Option<String>,
    pub container_name: Option<String>,
    pub pod_name: Option<String>,
    pub pod_namespace: Option<String>,
    pub pod_uid: Option<String>,
    pub workload_kind: Option<String>,
    pub workload_name: Option<String>,
}

type ExeLookup = Box<dyn Fn(u32) -> Option<String> + Send + Sync>;
type WorkloadLookup = Box<dyn Fn(u32) -> Option<Workload> + Send + Sync>;

/// What records need beyond the event: the node name, lookups pid → executable and pid →
/// container/pod, and the requests held until their answer (see the module docs). Share one
/// context per observer and feed it every event in order; it is `Send + Sync`.
pub struct AuditContext {
    node: String,
    executable: Option<ExeLookup>,
    workload: Option<WorkloadLookup>,
    state: Mutex<State>,
}

impl fmt::Debug for AuditContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditContext")
            .field("node", &self.node)
            .field("pending", &self.pending())
            .finish()
    }
}

impl AuditContext {
    /// A context for records from node `node` (the host name), with no lookups.
    pub fn new(node: impl Into<String>) -> Self {
        AuditContext {
            node: node.into(),
            executable: None,
            workload: None,
            state: Mutex::new(State::default()),
        }
    }

    /// `process.executable` from the pid (an executable path or comm).
    pub fn with_executable(
        mut self,
        lookup: impl Fn(u32) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.executable = Some(Box::new(lookup));
        self
    }

    /// `container.id`/`.name`, `pod.name`/`.namespace`/`.uid`, `workload.kind`/`.name` from
    /// the pid.
    pub fn with_workload(
        mut self,
        lookup: impl Fn(u32) -> Option<Workload> + Send + Sync + 'static,
    ) -> Self {
        self.workload = Some(Box::new(lookup));
        self
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Requests held for their answer.
    pub fn pending(&self) -> usize {
        self.lock().held.len()
    }

    /// Emits, with outcome `unknown`, every held request that started before `before_ns` (all
    /// of them with `u64::MAX`, e.g. at shutdown).
    pub fn flush_pending(&self, before_ns: u64) -> Vec<AuditRecord> {
        let mut st = self.lock();
        let (old, keep): (VecDeque<Held>, VecDeque<Held>) =
            st.held.drain(..).partition(|h| h.ts_ns < before_ns);
        st.held = keep;
        old.into_iter()
            .map(|h| h.record.outcome(Outcome::Unknown))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves consistent data: keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The record skeleton of `e` with `action`, outcome success.
    fn base(&self, st: &State, e: &BrokerEvent, action: &str) -> AuditRecord {
        let pid = e.conn.pid;
        let executable = pid.and_then(|p| self.executable.as_ref().and_then(|f| f(p)));
        let workload = pid
            .and_then(|p| self.workload.as_ref().and_then(|f| f(p)))
            .unwrap_or_default();
        let user = e
            .user
            .clone()
            .or_else(|| st.users.get(&e.conn.id).cloned())
            .filter(|u| !u.is_empty());
        let pod = (workload.pod_name.is_some()
            || workload.pod_namespace.is_some()
            || workload.pod_uid.is_some())
        .then_some(Pod {
            name: workload.pod_name,
            namespace: workload.pod_namespace,
            uid: workload.pod_uid,
        });
        let owner = (workload.workload_kind.is_some() || workload.workload_name.is_some())
            .then_some(WorkloadRef {
                kind: workload.workload_kind,
                name: workload.workload_name,
            });
        let container_name = workload.container_name;
        AuditRecord {
            time: rfc3339(e.ts_ns),
            node: self.node.clone(),
            event: EventInfo {
                action: action.to_owned(),
                outcome: Outcome::Success.as_str().to_owned(),
            },
            messaging: Messaging {
                system: messaging_system(e.system).to_owned(),
            },
            process: (pid.is_some() || executable.is_some()).then_some(Process { pid, executable }),
            container: workload.container_id.map(|id| Container {
                id,
                name: container_name,
            }),
            pod,
            workload: owner,
            client: Some(e.conn.peer.into()),
            server: Some(e.conn.local.into()),
            user: user.map(|name| User { name }),
            vhost: e.destination.as_ref().and_then(|d| d.vhost.clone()),
            resource: None,
            reason: None,
            acl: None,
            config: None,
            message: None,
            connection: Some(e.conn.id.to_string()),
            protocol_method: e.method.map(str::to_owned),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Held requests

#[derive(Clone, Debug, PartialEq, Eq)]
enum Key {
    /// AMQP: answered by `reply` on this channel.
    Amqp { channel: u32, reply: String },
    /// MQTT: one filter of a SUBSCRIBE / UNSUBSCRIBE.
    Mqtt { packet_id: u32, unsub: bool },
    /// NATS JetStream API call: answered by a response with this method whose subject names
    /// this stream (and consumer).
    Nats {
        api: &'static str,
        stream: Option<String>,
        consumer: Option<String>,
    },
    /// Kafka: answered by the response with this correlation id.
    Kafka { corr: i32, api: &'static str },
}

#[derive(Debug)]
struct Held {
    conn: ConnId,
    key: Key,
    ts_ns: u64,
    record: AuditRecord,
}

#[derive(Debug, Default)]
struct State {
    held: VecDeque<Held>,
    /// Login user per connection (records of later operations carry it).
    users: HashMap<ConnId, String>,
    /// Kafka: correlation id of the connection's latest request (its staged events follow it).
    kafka_corr: HashMap<ConnId, i32>,
}

impl State {
    fn hold(
        &mut self,
        conn: ConnId,
        key: Key,
        ts_ns: u64,
        record: AuditRecord,
    ) -> Vec<AuditRecord> {
        let mut out = Vec::new();
        while self.held.len() >= MAX_PENDING {
            if let Some(h) = self.held.pop_front() {
                out.push(h.record.outcome(Outcome::Unknown));
            }
        }
        self.held.push_back(Held {
            conn,
            key,
            ts_ns,
            record,
        });
        out
    }

    fn take_where(&mut self, mut f: impl FnMut(&Held) -> bool) -> Vec<Held> {
        self.extract(|_, h| f(h))
    }

    /// Removes and returns, in order, the held requests `f(index, held)` selects (indices as
    /// before the removal).
    fn extract(&mut self, mut f: impl FnMut(usize, &Held) -> bool) -> Vec<Held> {
        if self.held.is_empty() {
            return Vec::new();
        }
        let mut taken = Vec::new();
        let mut keep = VecDeque::with_capacity(self.held.len());
        for (i, h) in self.held.drain(..).enumerate() {
            if f(i, &h) {
                taken.push(h);
            } else {
                keep.push_back(h);
            }
        }
        self.held = keep;
        taken
    }

    fn position(&self, f: impl FnMut(&Held) -> bool) -> Option<usize> {
        self.held.iter().position(f)
    }

    fn remember_user(&mut self, conn: ConnId, user: &Option<String>) {
        if let Some(u) = user.as_ref().filter(|u| !u.is_empty())
            && (self.users.len() < MAX_USERS || self.users.contains_key(&conn))
        {
            self.users.insert(conn, u.clone());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The mapping

fn reason(code: Option<i32>, text: Option<&String>) -> Option<Reason> {
    (code.is_some() || text.is_some()).then(|| Reason {
        code,
        text: text.cloned(),
    })
}

fn event_reason(e: &BrokerEvent) -> Option<Reason> {
    let code = e.reply_code.map(|c| match e.system {
        // Kafka error codes are i16 (-1 arrives as 65535).
        System::Kafka => i32::from(c as i16),
        _ => i32::from(c),
    });
    reason(code, e.reply_text.as_ref())
}

fn attr<'e>(e: &'e BrokerEvent, name: &str) -> Option<&'e str> {
    e.attrs
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.as_str())
}

/// Makes `rec` a denial of what it was about to record.
fn deny(mut rec: AuditRecord, why: Option<Reason>) -> AuditRecord {
    rec.event.action = "access.denied".into();
    rec.event.outcome = Outcome::Failure.as_str().into();
    rec.reason = why;
    rec
}

fn fail(mut rec: AuditRecord, why: Option<Reason>, outcome: Outcome) -> AuditRecord {
    rec.event.outcome = outcome.as_str().into();
    rec.reason = why;
    rec
}

fn amqp_denied(code: Option<u16>) -> bool {
    matches!(code, Some(403 | 530))
}

fn mqtt_denied(code: Option<u16>) -> bool {
    matches!(code, Some(0x05 | 0x87))
}

fn kafka_denied(code: Option<u16>) -> bool {
    matches!(code.map(|c| c as i16), Some(29..=31))
}

fn nats_denied(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    t.contains("permissions violation") || t.contains("authorization violation")
}

/// The subject a NATS violation names: the text between the last pair of double quotes.
fn quoted(text: &str) -> Option<String> {
    let end = text.rfind('"')?;
    let start = text[..end].rfind('"')?;
    Some(text[start + 1..end].to_owned()).filter(|s| !s.is_empty())
}

/// The arguments after `API.<api>.` in a JetStream API subject.
fn api_args<'s>(subject: &'s str, api: &str) -> Option<Vec<&'s str>> {
    let at = subject.find(".API.")?;
    let rest = subject[at + 5..].strip_prefix(api)?;
    match rest.strip_prefix('.') {
        Some(args) => Some(args.split('.').collect()),
        None if rest.is_empty() => Some(Vec::new()),
        None => None,
    }
}

fn nats_matches(key: &Key, api_name: &str, subject: &str) -> bool {
    let Key::Nats {
        api,
        stream,
        consumer,
    } = key
    else {
        return false;
    };
    if *api != api_name {
        return false;
    }
    let Some(args) = api_args(subject, api) else {
        return false;
    };
    let stream_ok = match (stream, args.first()) {
        (Some(s), Some(a)) => s == a,
        (None, _) => true,
        (Some(_), None) => false,
    };
    // The consumer name may be in the request body rather than the subject.
    let consumer_ok = match (consumer, args.get(1)) {
        (Some(c), Some(a)) => c == a,
        _ => true,
    };
    stream_ok && consumer_ok
}

fn amqp_action(kind: EventKind, resource: Option<&str>) -> Option<&'static str> {
    Some(match (kind, resource?) {
        (EventKind::Declare, "queue") => "queue.created",
        (EventKind::Delete, "queue") => "queue.deleted",
        (EventKind::Purge, "queue") => "queue.purged",
        (EventKind::Declare, "exchange") => "exchange.created",
        (EventKind::Delete, "exchange") => "exchange.deleted",
        (EventKind::Bind, _) => "binding.created",
        (EventKind::Unbind, _) => "binding.deleted",
        _ => return None,
    })
}

/// The records `e` yields (usually none or one). Feed every event of every connection, in
/// order, through one `ctx`: requests whose answer comes later are held there and emitted
/// with the event that answers them (see the module docs for the rule per protocol).
pub fn from_event(e: &BrokerEvent, ctx: &AuditContext, level: AuditLevel) -> Vec<AuditRecord> {
    let mut st = ctx.lock();
    let st = &mut *st;
    let mut out = Vec::new();
    match e.kind {
        EventKind::ConnectionOpened => out.push(ctx.base(st, e, "connection.created")),
        EventKind::ConnectionClosed => {
            let conn = e.conn.id;
            out.extend(
                st.take_where(|h| h.conn == conn)
                    .into_iter()
                    .map(|h| h.record.outcome(Outcome::Unknown)),
            );
            out.push(ctx.base(st, e, "connection.closed"));
            st.users.remove(&conn);
            st.kafka_corr.remove(&conn);
        }
        EventKind::Auth => {
            st.remember_user(e.conn.id, &e.user);
            let failed = e.outcome == Some(Outcome::Failure);
            // A refused login is an authentication failure whatever its code: brokers answer
            // a wrong password with "not authorized" (Mosquitto: CONNACK 5 / 0x87) as often as
            // with "bad user name or password"; the code stays in `reason`.
            let action = if failed {
                "user.authentication.failure"
            } else {
                "user.authentication.success"
            };
            let mut r = ctx.base(st, e, action);
            if let Some(o) = e.outcome {
                r = r.outcome(o);
            }
            if failed || e.reply_code.is_some_and(|c| c != 0) {
                r.reason = event_reason(e);
            }
            out.push(r);
        }
        _ => match e.system {
            System::Amqp => amqp(e, ctx, st, &mut out),
            System::Mqtt => mqtt(e, ctx, st, &mut out),
            System::Nats => nats(e, ctx, st, &mut out),
            System::Kafka => kafka(e, ctx, st, &mut out),
        },
    }
    if level == AuditLevel::Full
        && e.kind == EventKind::Publish
        && e.direction == Direction::Ingress
    {
        out.push(published(e, ctx, st));
    }
    out
}

fn published(e: &BrokerEvent, ctx: &AuditContext, st: &State) -> AuditRecord {
    let mut r = ctx.base(st, e, "message.published");
    if let Some(d) = &e.destination {
        r.resource = match e.system {
            System::Amqp => Some(Resource {
                routing_key: d.routing_key.clone(),
                ..Resource::new(
                    "exchange",
                    d.exchange.as_ref().map(|x| {
                        if x.is_empty() {
                            "amq.default".to_owned()
                        } else {
                            x.clone()
                        }
                    }),
                )
            }),
            System::Mqtt | System::Kafka => Some(Resource::new("topic", d.topic.clone())),
            System::Nats => Some(Resource::new("subject", d.subject.clone())),
        };
    }
    r.message = Some(Message {
        id: e.props.as_ref().and_then(|p| p.message_id.clone()),
        size: e.body_size,
        count: e.record_count,
    });
    r
}

fn amqp(e: &BrokerEvent, ctx: &AuditContext, st: &mut State, out: &mut Vec<AuditRecord>) {
    let conn = e.conn.id;
    let channel = e.channel.unwrap_or(0);
    let method = e.method.unwrap_or_default();
    let from_client = e.direction == Direction::Ingress;
    let dest = e.destination.as_ref();
    match e.kind {
        EventKind::Declare
        | EventKind::Delete
        | EventKind::Purge
        | EventKind::Bind
        | EventKind::Unbind
            if from_client =>
        {
            let Some(d) = dest else { return };
            let Some(action) = amqp_action(e.kind, d.resource) else {
                return;
            };
            let mut r = ctx.base(st, e, action);
            r.resource = Some(match (e.kind, d.resource) {
                (EventKind::Bind | EventKind::Unbind, Some("queue")) => Resource {
                    source: d.exchange.clone(),
                    routing_key: d.routing_key.clone(),
                    ..Resource::new("queue", d.queue.clone())
                },
                (EventKind::Bind | EventKind::Unbind, _) => Resource {
                    routing_key: d.routing_key.clone(),
                    ..Resource::new("exchange", d.exchange.clone())
                },
                (_, Some("queue")) => Resource::new("queue", d.queue.clone()),
                _ => Resource::new("exchange", d.exchange.clone()),
            });
            let key = Key::Amqp {
                channel,
                reply: format!("{method}-ok"),
            };
            out.extend(st.hold(conn, key, e.ts_ns, r));
        }
        EventKind::Subscribe if from_client => {
            let mut r = ctx.base(st, e, "consumer.created");
            r.resource = Some(Resource {
                parent: dest.and_then(|d| d.queue.clone()),
                ..Resource::new("consumer", e.consumer_tag.clone().filter(|t| !t.is_empty()))
            });
            let key = Key::Amqp {
                channel,
                reply: "basic.consume-ok".into(),
            };
            out.extend(st.hold(conn, key, e.ts_ns, r));
        }
        EventKind::Unsubscribe => {
            let mut r = ctx.base(st, e, "consumer.deleted");
            r.resource = Some(Resource {
                parent: dest.and_then(|d| d.queue.clone()),
                ..Resource::new("consumer", e.consumer_tag.clone())
            });
            if from_client {
                let key = Key::Amqp {
                    channel,
                    reply: "basic.cancel-ok".into(),
                };
                out.extend(st.hold(conn, key, e.ts_ns, r));
            } else {
                // The broker cancelled the consumer (its queue went away): nothing answers.
                out.push(r);
            }
        }
        EventKind::Control if from_client && method == "connection.open" => {
            let mut r = ctx.base(st, e, "vhost.opened");
            r.resource = Some(Resource::new("vhost", r.vhost.clone()));
            let key = Key::Amqp {
                channel,
                reply: "connection.open-ok".into(),
            };
            out.extend(st.hold(conn, key, e.ts_ns, r));
        }
        EventKind::Control if !from_client && method.ends_with("-ok") => {
            let same = |h: &Held| {
                h.conn == conn && matches!(&h.key, Key::Amqp { channel: c, .. } if *c == channel)
            };
            let Some(at) = st.position(|h| {
                same(h) && matches!(&h.key, Key::Amqp { reply, .. } if reply == method)
            }) else {
                return;
            };
            let mut taken = st.extract(|i, h| i <= at && same(h));
            let Some(answered) = taken.pop() else { return };
            // Requests on this channel before the answered one were sent with no-wait.
            out.extend(
                taken
                    .into_iter()
                    .map(|h| h.record.outcome(Outcome::Unknown)),
            );
            let mut r = answered.record;
            if method == "basic.consume-ok"
                && let Some(res) = r.resource.as_mut()
            {
                res.name = e.consumer_tag.clone().or(res.name.take());
            }
            out.push(r);
        }
        EventKind::Error if !from_client => {
            let why = event_reason(e);
            let held = st
                .position(|h| {
                    h.conn == conn
                        && matches!(&h.key, Key::Amqp { channel: c, .. } if *c == channel)
                })
                .and_then(|i| st.held.remove(i));
            match held {
                Some(h) if amqp_denied(e.reply_code) => out.push(deny(h.record, why)),
                Some(h) => out.push(fail(h.record, why, Outcome::Failure)),
                None if amqp_denied(e.reply_code) => {
                    let mut r = ctx.base(st, e, "access.denied").outcome(Outcome::Failure);
                    r.reason = why;
                    out.push(r);
                }
                None => {}
            }
        }
        EventKind::ChannelClosed => {
            out.extend(
                st.take_where(|h| {
                    h.conn == conn
                        && matches!(&h.key, Key::Amqp { channel: c, .. } if *c == channel)
                })
                .into_iter()
                .map(|h| h.record.outcome(Outcome::Unknown)),
            );
        }
        _ => {}
    }
}

fn mqtt(e: &BrokerEvent, ctx: &AuditContext, st: &mut State, out: &mut Vec<AuditRecord>) {
    let conn = e.conn.id;
    let from_client = e.direction == Direction::Ingress;
    let method = e.method.unwrap_or_default();
    let filter = |e: &BrokerEvent| {
        e.destination.as_ref().map(|d| Resource {
            parent: d.queue.clone(), // $share group
            ..Resource::new("topic", d.topic.clone())
        })
    };
    match e.kind {
        EventKind::Subscribe | EventKind::Unsubscribe if from_client => {
            let unsub = e.kind == EventKind::Unsubscribe;
            let action = if unsub {
                "subscription.deleted"
            } else {
                "subscription.created"
            };
            let mut r = ctx.base(st, e, action);
            r.resource = filter(e);
            match e.packet_id {
                Some(packet_id) => {
                    out.extend(st.hold(conn, Key::Mqtt { packet_id, unsub }, e.ts_ns, r));
                }
                None => out.push(r.outcome(Outcome::Unknown)),
            }
        }
        EventKind::Control if !from_client && matches!(method, "SUBACK" | "UNSUBACK") => {
            let unsub = method == "UNSUBACK";
            let Some(packet_id) = e.packet_id else { return };
            let codes: Vec<u16> = attr(e, if unsub { "reasons" } else { "granted" })
                .map(|s| s.split(',').filter_map(|c| c.parse().ok()).collect())
                .unwrap_or_default();
            let key = Key::Mqtt { packet_id, unsub };
            // Successes now; refused filters stay held for the Error events that follow.
            let mut n = 0;
            let granted = st.extract(|_, h| {
                if h.conn != conn || h.key != key {
                    return false;
                }
                let code = codes.get(n).copied();
                n += 1;
                code.is_none_or(|c| c < 0x80)
            });
            out.extend(granted.into_iter().map(|h| h.record));
        }
        EventKind::Error if !from_client && matches!(method, "SUBACK" | "UNSUBACK") => {
            let unsub = method == "UNSUBACK";
            let why = event_reason(e);
            let held = e.packet_id.and_then(|packet_id| {
                let key = Key::Mqtt { packet_id, unsub };
                st.position(|h| h.conn == conn && h.key == key)
                    .and_then(|i| st.held.remove(i))
            });
            let rec = match held {
                Some(h) => h.record,
                None => {
                    let action = if unsub {
                        "subscription.deleted"
                    } else {
                        "subscription.created"
                    };
                    let mut r = ctx.base(st, e, action);
                    r.resource = filter(e);
                    r
                }
            };
            out.push(if mqtt_denied(e.reply_code) {
                deny(rec, why)
            } else {
                fail(rec, why, Outcome::Failure)
            });
        }
        EventKind::Error | EventKind::Nack if !from_client && mqtt_denied(e.reply_code) => {
            let mut r = ctx.base(st, e, "access.denied").outcome(Outcome::Failure);
            r.resource = e
                .destination
                .as_ref()
                .and_then(|d| d.topic.clone())
                .map(|t| Resource::new("topic", Some(t)));
            r.reason = event_reason(e);
            out.push(r);
        }
        _ => {}
    }
}

fn nats(e: &BrokerEvent, ctx: &AuditContext, st: &mut State, out: &mut Vec<AuditRecord>) {
    let conn = e.conn.id;
    let from_client = e.direction == Direction::Ingress;
    let method = e.method.unwrap_or_default();
    let dest = e.destination.as_ref();
    match e.kind {
        EventKind::Subscribe | EventKind::Unsubscribe if from_client => {
            let action = if e.kind == EventKind::Subscribe {
                "subscription.created"
            } else {
                "subscription.deleted"
            };
            let mut r = ctx.base(st, e, action);
            r.resource = Some(Resource::new(
                "subject",
                dest.and_then(|d| d.subject.clone()),
            ));
            out.push(r);
        }
        EventKind::Declare | EventKind::Delete | EventKind::Purge if from_client => {
            let Some(d) = dest else { return };
            let stream_attr = attr(e, "stream").map(str::to_owned);
            let (action, resource, stream, consumer) = match (e.kind, d.resource) {
                (EventKind::Declare, Some("stream")) => (
                    "stream.created",
                    Resource::new("stream", d.subject.clone()),
                    d.subject.clone(),
                    None,
                ),
                (EventKind::Delete, Some("stream")) => (
                    "stream.deleted",
                    Resource::new("stream", d.subject.clone()),
                    d.subject.clone(),
                    None,
                ),
                (EventKind::Purge, Some("stream")) => (
                    "stream.purged",
                    Resource::new("stream", d.subject.clone()),
                    d.subject.clone(),
                    None,
                ),
                (EventKind::Declare | EventKind::Delete, Some("consumer")) => (
                    if e.kind == EventKind::Declare {
                        "consumer.created"
                    } else {
                        "consumer.deleted"
                    },
                    Resource {
                        parent: stream_attr.clone(),
                        ..Resource::new("consumer", d.subject.clone())
                    },
                    stream_attr,
                    d.subject.clone(),
                ),
                _ => return,
            };
            let Some(api) = e.method else { return };
            let mut r = ctx.base(st, e, action);
            r.resource = Some(resource);
            let key = Key::Nats {
                api,
                stream,
                consumer,
            };
            out.extend(st.hold(conn, key, e.ts_ns, r));
        }
        EventKind::Response if !from_client => {
            let Some(subject) = dest.and_then(|d| d.subject.as_deref()) else {
                return;
            };
            let Some(h) = st
                .position(|h| h.conn == conn && nats_matches(&h.key, method, subject))
                .and_then(|i| st.held.remove(i))
            else {
                return;
            };
            out.push(match e.outcome {
                Some(Outcome::Success) => h.record,
                Some(Outcome::Failure) => fail(h.record, event_reason(e), Outcome::Failure),
                _ => fail(h.record, event_reason(e), Outcome::Unknown),
            });
        }
        EventKind::Error if !from_client => {
            let Some(text) = e.reply_text.as_deref().filter(|t| nats_denied(t)) else {
                return;
            };
            let why = reason(None, e.reply_text.as_ref());
            let subject = quoted(text);
            let held = subject.as_deref().and_then(|s| {
                st.position(|h| {
                    h.conn == conn
                        && matches!(&h.key, Key::Nats { api, .. } if nats_matches(&h.key, api, s))
                })
                .and_then(|i| st.held.remove(i))
            });
            out.push(match held {
                Some(h) => deny(h.record, why),
                None => {
                    let mut r = ctx.base(st, e, "access.denied");
                    r.resource = subject.map(|s| Resource::new("subject", Some(s)));
                    deny(r, why)
                }
            });
        }
        _ => {}
    }
}

fn kafka(e: &BrokerEvent, ctx: &AuditContext, st: &mut State, out: &mut Vec<AuditRecord>) {
    let conn = e.conn.id;
    let from_client = e.direction == Direction::Ingress;
    let api = e.method.unwrap_or_default();
    let dest = e.destination.as_ref();
    let corr = || attr(e, "correlation_id").and_then(|c| c.parse::<i32>().ok());
    match e.kind {
        EventKind::Request if from_client => {
            if let Some(c) = corr() {
                st.kafka_corr.insert(conn, c);
            }
        }
        EventKind::Declare
        | EventKind::Delete
        | EventKind::Subscribe
        | EventKind::Unsubscribe
        | EventKind::Control
            if from_client =>
        {
            let resource = dest.and_then(|d| d.resource);
            let topic = dest.and_then(|d| d.topic.clone());
            let group = dest.and_then(|d| d.group.clone());
            let mut r;
            match (e.kind, resource) {
                (EventKind::Declare, Some("topic")) => {
                    r = ctx.base(st, e, "topic.created");
                    r.resource = Some(Resource::new("topic", topic));
                }
                (EventKind::Delete, Some("topic")) => {
                    r = ctx.base(st, e, "topic.deleted");
                    r.resource = Some(Resource::new("topic", topic));
                }
                (EventKind::Declare, Some("partitions")) => {
                    r = ctx.base(st, e, "partitions.created");
                    r.resource = Some(Resource::new("topic", topic));
                }
                (EventKind::Declare | EventKind::Delete, Some("acl")) => {
                    let action = if e.kind == EventKind::Declare {
                        "acl.created"
                    } else {
                        "acl.deleted"
                    };
                    r = ctx.base(st, e, action);
                    r.resource = Some(Resource::new(
                        &format!(
                            "acl:{}",
                            kafka_resource_type(attr(e, "resource_type").unwrap_or_default())
                        ),
                        attr(e, "resource_name").map(str::to_owned),
                    ));
                    let a = |n| attr(e, n).map(str::to_owned);
                    r.acl = Some(Acl {
                        principal: a("principal"),
                        host: a("host"),
                        operation: a("operation"),
                        permission: a("permission"),
                        pattern_type: a("pattern_type"),
                    });
                }
                (EventKind::Control, Some("config")) => {
                    r = ctx.base(st, e, "config.changed");
                    r.resource = Some(Resource::new(
                        kafka_resource_type(attr(e, "resource_type").unwrap_or_default()),
                        attr(e, "resource_name").map(str::to_owned),
                    ));
                    r.config = Some(Config {
                        names: e
                            .attrs
                            .iter()
                            .filter(|(n, _)| *n == "config")
                            // Incremental: "name:op"; never a value.
                            .map(|(_, v)| v.split(':').next().unwrap_or_default().to_owned())
                            .collect(),
                    });
                }
                (EventKind::Subscribe | EventKind::Unsubscribe, _) if group.is_some() => {
                    let action = if e.kind == EventKind::Subscribe {
                        "consumer.created"
                    } else {
                        "consumer.deleted"
                    };
                    r = ctx.base(st, e, action);
                    r.resource = Some(Resource::new("group", group));
                }
                _ => return,
            }
            let Some(corr) = st.kafka_corr.get(&conn).copied() else {
                out.push(r.outcome(Outcome::Unknown));
                return;
            };
            let key = Key::Kafka {
                corr,
                api: e.method.unwrap_or_default(),
            };
            out.extend(st.hold(conn, key, e.ts_ns, r));
        }
        EventKind::Response if !from_client => {
            let code = e.reply_code.map(|c| c as i16).unwrap_or(0);
            let held = match corr() {
                Some(corr) => st.take_where(|h| {
                    h.conn == conn && matches!(h.key, Key::Kafka { corr: c, .. } if c == corr)
                }),
                None => Vec::new(),
            };
            if held.is_empty() {
                if kafka_denied(e.reply_code) {
                    let mut r = ctx.base(st, e, "access.denied");
                    r.resource = dest.and_then(|d| {
                        d.group
                            .clone()
                            .map(|g| Resource::new("group", Some(g)))
                            .or_else(|| d.topic.clone().map(|t| Resource::new("topic", Some(t))))
                    });
                    out.push(deny(r, event_reason(e)));
                }
                return;
            }
            if code == 79 && api == "JoinGroup" {
                return; // MEMBER_ID_REQUIRED: the client joins again with its new id.
            }
            let several = held.len() > 1;
            for h in held {
                out.push(match code {
                    0 => h.record,
                    _ if several => fail(h.record, event_reason(e), Outcome::Unknown),
                    _ if kafka_denied(e.reply_code) => deny(h.record, event_reason(e)),
                    _ => fail(h.record, event_reason(e), Outcome::Failure),
                });
            }
        }
        _ => {}
    }
}

/// Kafka's ResourceType codes as names.
fn kafka_resource_type(code: &str) -> &'static str {
    match code {
        "2" => "topic",
        "3" => "group",
        "4" => "broker",
        "5" => "transactional_id",
        "6" => "delegation_token",
        "7" => "user",
        "8" => "broker_logger",
        "1" => "any",
        _ => "unknown",
    }
}
