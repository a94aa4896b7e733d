//! Audit records: who did what to which broker resource, one JSON object per line.
//!
//! What lives where:
//! - `record`: [`AuditRecord`] (the JSON shape), [`AuditContext`] (node name, pid →
//!   executable / container / pod lookups, requests held until their answer), [`AuditLevel`]
//!   and [`from_event`], the mapping from [`BrokerEvent`](crate::event::BrokerEvent)s — its
//!   module docs give the request/reply rule per protocol;
//! - `sink`: [`AuditSink`], writing records to stdout or to a file with size rotation
//!   (`path`, `path.1` … `path.N`), mode 0600, buffered and flushed at least every second;
//! - `query`: reading the files back (rotated ones first, oldest first), [`Filter`]s by
//!   action glob, user, outcome, system and time range, and export as JSON or CSV.
//!
//! Record shape (absent values omitted):
//! `{"time", "node", "event": {"action", "outcome"}, "messaging": {"system"}, "process":
//! {"pid", "executable"}, "container": {"id", "name"}, "pod": {"name", "namespace", "uid"},
//! "workload": {"kind", "name"}, "client": {"ip",
//! "port"}, "server": {"ip", "port"}, "user": {"name"}, "vhost", "resource": {"type", "name",
//! "parent", "source", "routing_key"}, "reason": {"code", "text"}, "acl": {…}, "config":
//! {"names"}, "message": {"id", "size", "count"}, "connection", "protocol_method"}`.
//! `container`, `pod` and `workload` describe the broker process (not the client): the
//! container id from its cgroup, pod name/namespace/UID from /proc, and, with the Kubernetes
//! API on (`crate::k8s`), the container name, the API's pod fields and the owning workload
//! (`Deployment`, `StatefulSet`, `DaemonSet`, `Job`, `ReplicaSet` or `Pod`).
//! `time` is RFC 3339 UTC with nanoseconds; `messaging.system` is `rabbitmq`, `mqtt`, `nats`
//! or `kafka`; `event.outcome` is `success`, `failure` or `unknown`.
//!
//! Actions (RabbitMQ's event names where they exist):
//! `connection.created`, `connection.closed`, `user.authentication.success`,
//! `user.authentication.failure`, `access.denied`, `vhost.opened`, `queue.created`,
//! `queue.deleted`, `queue.purged`, `exchange.created`, `exchange.deleted`, `topic.created`,
//! `topic.deleted`, `partitions.created`, `stream.created`, `stream.deleted`, `stream.purged`,
//! `binding.created`, `binding.deleted`, `consumer.created`, `consumer.deleted`,
//! `subscription.created`, `subscription.deleted`, `acl.created`, `acl.deleted`,
//! `config.changed`, and with [`AuditLevel::Full`] `message.published`.
//!
//! Guarantee: no credential and no message body is ever written. Events carry none (decoders
//! drop passwords, tokens, SASL payloads and keep bodies only as a fingerprint); this module
//! reads named event fields and a fixed allow-list of attrs only — never attrs such as
//! password, token, secret or sasl, never header values, never config values (Kafka
//! AlterConfigs: names only).
pub mod query;
pub mod record;
pub mod sink;

use std::path::PathBuf;

pub use query::{ExportFormat, Filter, ReadStats};
pub use record::{AuditContext, AuditLevel, AuditRecord, Workload, WorkloadRef, from_event};
pub use sink::AuditSink;

/// Default audit log of `brokerscope run` and `brokerscope audit`.
pub const DEFAULT_AUDIT_FILE: &str = "/var/log/brokerscope/audit.jsonl";

/// What went wrong writing or reading audit records. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("unknown audit level {0:?}: use standard or full")]
    BadLevel(String),
    #[error(
        "cannot open audit file {path}: {source}; check that the directory exists and that \
         brokerscope may write there (or choose another file)"
    )]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot rotate audit file {path}: {source}; check the directory's permissions")]
    Rotate {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write audit records: {0}")]
    Write(std::io::Error),
    #[error("cannot read audit file {path}: {source}; check the path (--file) and permissions")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no audit file at {0}: give the audit log with --file")]
    NoFile(PathBuf),
    #[error(
        "bad time {0:?}: give an RFC 3339 time (2026-05-01T12:00:00Z) or a duration ago \
         (30s, 15m, 2h, 7d)"
    )]
    BadTime(String),
    #[error("unknown export format {0:?}: use json or csv")]
    BadFormat(String),
    #[error("unknown outcome {0:?}: use success, failure or unknown")]
    BadOutcome(String),
    #[error("unknown system {0:?}: use rabbitmq (or amqp), mqtt, nats or kafka")]
    BadSystem(String),
    #[error("audit rotation needs max_bytes > 0 (got 0): give a size limit such as 104857600")]
    BadMaxBytes,
}

impl AuditError {
    /// True when the input (command line, file name) was wrong rather than the system.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            AuditError::BadLevel(_)
                | AuditError::BadTime(_)
                | AuditError::BadFormat(_)
                | AuditError::BadOutcome(_)
                | AuditError::BadSystem(_)
                | AuditError::NoFile(_)
                | AuditError::BadMaxBytes
        )
    }
}

#[cfg(test)]
mod tests;
