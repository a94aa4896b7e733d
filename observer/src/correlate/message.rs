//! [`MessageInfo`]: what an [`Observation`](super::Observation) remembers about the event that
//! started it (the publish, or the delivery), for sinks that describe single messages (spans).
//!
//! Kept only when the correlator is built with
//! [`Correlator::keeping_message_info`](super::Correlator::keeping_message_info): it costs an
//! allocation per waiting entry, which the metrics-only path does not pay.
use crate::event::{BrokerEvent, ConnRef, Destination, EventKind, System};

/// The start event of an observation, reduced to what describes the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageInfo {
    /// Wall clock, ns since the epoch.
    pub ts_ns: u64,
    pub system: System,
    /// `publish` or `deliver`.
    pub kind: EventKind,
    pub conn: ConnRef,
    /// Protocol operation, e.g. "basic.publish", "PUBLISH", "PUB", "Produce".
    pub method: Option<&'static str>,
    pub channel: Option<u32>,
    pub destination: Option<Destination>,
    pub delivery_tag: Option<u64>,
    pub packet_id: Option<u32>,
    /// Kafka: the first offset of the records. A publish learns it from the produce response,
    /// so the publish → deliver observation's start carries it; the publish → confirm one does
    /// not (the confirm event does).
    pub offset: Option<i64>,
    pub record_count: Option<u32>,
    pub body_size: Option<u64>,
    pub fingerprint: Option<u64>,
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    /// W3C trace context found in the message's headers.
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    pub consumer_tag: Option<String>,
    pub client_id: Option<String>,
    pub qos: Option<u8>,
    pub redelivered: Option<bool>,
}

impl MessageInfo {
    pub fn of(e: &BrokerEvent) -> Self {
        let props = e.props.as_ref();
        Self {
            ts_ns: e.ts_ns,
            system: e.system,
            kind: e.kind,
            conn: e.conn.clone(),
            method: e.method,
            channel: e.channel,
            destination: e.destination.clone(),
            delivery_tag: e.delivery_tag,
            packet_id: e.packet_id,
            offset: e.offset,
            record_count: e.record_count,
            body_size: e.body_size,
            fingerprint: e.fingerprint,
            message_id: props.and_then(|p| p.message_id.clone()),
            correlation_id: props.and_then(|p| p.correlation_id.clone()),
            traceparent: props.and_then(|p| p.traceparent.clone()),
            tracestate: props.and_then(|p| p.tracestate.clone()),
            consumer_tag: e.consumer_tag.clone(),
            client_id: e.client_id.clone(),
            qos: e.qos,
            redelivered: e.redelivered,
        }
    }
}
