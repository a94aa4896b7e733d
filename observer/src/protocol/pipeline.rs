//! The decode stage: a [`StreamSink`] that routes each connection's reassembled bytes to its
//! protocol's decoder and hands the resulting [`BrokerEvent`]s to an [`EventSink`].
//!
//! A new connection is held (its first bytes, bounded) until [`Inference`] names its protocol;
//! then the held bytes are replayed into the decoder in their original order. Connections of
//! unknown or not yet supported protocols are dropped from decoding at once and only counted.
use std::collections::BTreeMap;

use super::{
    Ctx, DecoderStats, EventSink, ProtocolDecoder,
    amqp::AmqpDecoder,
    infer::{Inference, SNIFF_BYTES, Verdict},
    kafka::{KafkaDecoder, TopicIds},
    mqtt::MqttDecoder,
    nats::NatsDecoder,
};
use crate::FastMap;
use crate::{
    capture::{ConnId, Connection, Direction, StreamEvent, StreamSink},
    event::{BrokerEvent, ConnRef, EventKind, System},
};

/// State decoders of one pipeline share across connections.
#[derive(Clone, Debug, Default)]
pub struct Shared {
    pub kafka_topic_ids: TopicIds,
}

/// The decoder for a protocol, if brokerscope has one.
pub fn decoder_for(system: System, shared: &Shared) -> Option<Box<dyn ProtocolDecoder>> {
    match system {
        System::Amqp => Some(Box::new(AmqpDecoder::new())),
        System::Mqtt => Some(Box::new(MqttDecoder::new())),
        System::Nats => Some(Box::new(NatsDecoder::new())),
        System::Kafka => Some(Box::new(KafkaDecoder::with_topic_ids(
            shared.kafka_topic_ids.clone(),
        ))),
    }
}

/// Decode-stage counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PipelineStats {
    pub connections_decoded: BTreeMap<System, u64>,
    /// Connections whose protocol was not recognised (not decoded).
    pub connections_unknown: u64,
    /// Recognised protocols without a decoder in this build.
    pub connections_unsupported: u64,
    /// Bytes of connections that are not decoded.
    pub bytes_ignored: u64,
    pub events: u64,
    /// Decoder counters, summed over all connections (closed and open).
    pub decoder: DecoderStats,
    /// The same, per protocol.
    pub decoder_by_system: BTreeMap<System, DecoderStats>,
}

enum Held {
    Data(Direction, u64, Vec<u8>),
    Gap(Direction, u64, u32),
}

enum Decision {
    Pending {
        held: Vec<Held>,
        ingress: Vec<u8>,
        egress: Vec<u8>,
    },
    Decoding {
        system: System,
        decoder: Box<dyn ProtocolDecoder>,
    },
    Ignored,
}

struct ConnState {
    conn: ConnRef,
    opened_ns: u64,
    mid_stream: bool,
    decision: Decision,
}

pub struct DecodePipeline<E: EventSink> {
    sink: E,
    inference: Inference,
    conns: FastMap<ConnId, ConnState>,
    stats: PipelineStats,
    shared: Shared,
}

impl<E: EventSink> DecodePipeline<E> {
    pub fn new(inference: Inference, sink: E) -> Self {
        Self {
            sink,
            inference,
            conns: FastMap::default(),
            stats: PipelineStats::default(),
            shared: Shared::default(),
        }
    }

    pub fn sink(&self) -> &E {
        &self.sink
    }

    pub fn sink_mut(&mut self) -> &mut E {
        &mut self.sink
    }

    /// Counters, including the live decoders'.
    pub fn stats(&self) -> PipelineStats {
        let mut stats = self.stats.clone();
        for state in self.conns.values() {
            if let Decision::Decoding { decoder, system } = &state.decision {
                let d = decoder.stats();
                stats.decoder.add(&d);
                stats.decoder_by_system.entry(*system).or_default().add(&d);
            }
        }
        stats
    }

    fn on_data(&mut self, conn: &Connection, dir: Direction, ts_ns: u64, bytes: &[u8]) {
        let inference = &self.inference;
        let shared = &self.shared;
        let stats = &mut self.stats;
        let sink = &mut self.sink;
        let state = conn_state(&mut self.conns, conn, ts_ns);
        let ctx = Ctx {
            conn: &state.conn,
            dir,
            ts_ns,
        };
        match &mut state.decision {
            Decision::Decoding { decoder, .. } => {
                decoder.on_data(&ctx, bytes, &mut |e| {
                    stats.events += 1;
                    sink.event(&e);
                });
                return;
            }
            Decision::Ignored => {
                stats.bytes_ignored += bytes.len() as u64;
                return;
            }
            Decision::Pending {
                ingress, egress, ..
            } => {
                let first = match dir {
                    Direction::Ingress => ingress,
                    Direction::Egress => egress,
                };
                let room = SNIFF_BYTES.saturating_sub(first.len());
                first.extend_from_slice(&bytes[..bytes.len().min(room)]);
            }
        }
        let Decision::Pending {
            held,
            ingress,
            egress,
        } = &mut state.decision
        else {
            unreachable!()
        };
        match inference.decide(state.conn.local.port(), ingress, egress, state.mid_stream) {
            Verdict::NeedMore => held.push(Held::Data(dir, ts_ns, bytes.to_vec())),
            Verdict::Unknown => {
                stats.connections_unknown += 1;
                stats.bytes_ignored += held_bytes(held) + bytes.len() as u64;
                state.decision = Decision::Ignored;
            }
            Verdict::Protocol(system) => match decoder_for(system, shared) {
                None => {
                    stats.connections_unsupported += 1;
                    stats.bytes_ignored += held_bytes(held) + bytes.len() as u64;
                    state.decision = Decision::Ignored;
                }
                Some(mut decoder) => {
                    *stats.connections_decoded.entry(system).or_default() += 1;
                    let opened = BrokerEvent::new(
                        state.opened_ns,
                        system,
                        EventKind::ConnectionOpened,
                        state.conn.clone(),
                        Direction::Ingress,
                    );
                    stats.events += 1;
                    sink.event(&opened);
                    let mut emit = |e: BrokerEvent| {
                        stats.events += 1;
                        sink.event(&e);
                    };
                    for piece in held.drain(..) {
                        match piece {
                            Held::Data(d, ts, b) => decoder.on_data(
                                &Ctx {
                                    conn: &state.conn,
                                    dir: d,
                                    ts_ns: ts,
                                },
                                &b,
                                &mut emit,
                            ),
                            Held::Gap(d, ts, len) => decoder.on_gap(
                                &Ctx {
                                    conn: &state.conn,
                                    dir: d,
                                    ts_ns: ts,
                                },
                                len,
                                &mut emit,
                            ),
                        }
                    }
                    decoder.on_data(&ctx, bytes, &mut emit);
                    state.decision = Decision::Decoding { system, decoder };
                }
            },
        }
    }

    fn on_gap(&mut self, conn: &Connection, dir: Direction, ts_ns: u64, len: u32) {
        let stats = &mut self.stats;
        let sink = &mut self.sink;
        let state = self.conns.get_mut(&conn.id);
        let Some(state) = state else { return };
        match &mut state.decision {
            Decision::Decoding { decoder, .. } => {
                let ctx = Ctx {
                    conn: &state.conn,
                    dir,
                    ts_ns,
                };
                decoder.on_gap(&ctx, len, &mut |e| {
                    stats.events += 1;
                    sink.event(&e);
                });
            }
            Decision::Pending { held, .. } => {
                // The handshake may be what was lost: decide like a mid-stream join.
                state.mid_stream = true;
                held.push(Held::Gap(dir, ts_ns, len));
            }
            Decision::Ignored => {}
        }
    }

    fn on_end(&mut self, conn: &Connection, dir: Direction, ts_ns: u64) {
        let stats = &mut self.stats;
        let sink = &mut self.sink;
        if let Some(state) = self.conns.get_mut(&conn.id)
            && let Decision::Decoding { decoder, .. } = &mut state.decision
        {
            let ctx = Ctx {
                conn: &state.conn,
                dir,
                ts_ns,
            };
            decoder.on_end(&ctx, &mut |e| {
                stats.events += 1;
                sink.event(&e);
            });
        }
    }

    fn on_closed(&mut self, conn: &Connection, ts_ns: u64) {
        let Some(state) = self.conns.remove(&conn.id) else {
            return;
        };
        match state.decision {
            Decision::Decoding { system, decoder } => {
                // Its buffers go with it: only the totals stay.
                let totals = DecoderStats {
                    buffered_bytes: 0,
                    ..decoder.stats()
                };
                self.stats.decoder.add(&totals);
                self.stats
                    .decoder_by_system
                    .entry(system)
                    .or_default()
                    .add(&totals);
                let closed = BrokerEvent::new(
                    ts_ns,
                    system,
                    EventKind::ConnectionClosed,
                    state.conn,
                    Direction::Ingress,
                );
                self.stats.events += 1;
                self.sink.event(&closed);
            }
            Decision::Pending { held, .. } => {
                if !held.is_empty() {
                    self.stats.connections_unknown += 1;
                    self.stats.bytes_ignored += held_bytes(&held);
                }
            }
            Decision::Ignored => {}
        }
    }
}

impl<E: EventSink> StreamSink for DecodePipeline<E> {
    fn event(&mut self, event: StreamEvent<'_>) {
        match event {
            StreamEvent::Opened { conn, ts_ns } => {
                conn_state(&mut self.conns, conn, ts_ns);
            }
            StreamEvent::Data {
                conn,
                dir,
                ts_ns,
                bytes,
                ..
            } => self.on_data(conn, dir, ts_ns, bytes),
            StreamEvent::Gap {
                conn,
                dir,
                ts_ns,
                len,
                ..
            } => self.on_gap(conn, dir, ts_ns, len),
            StreamEvent::End {
                conn, dir, ts_ns, ..
            } => self.on_end(conn, dir, ts_ns),
            StreamEvent::Closed { conn, ts_ns } => self.on_closed(conn, ts_ns),
            StreamEvent::TargetAdded { .. } | StreamEvent::TargetRemoved { .. } => {}
        }
    }
}

fn conn_state<'a>(
    conns: &'a mut FastMap<ConnId, ConnState>,
    conn: &Connection,
    ts_ns: u64,
) -> &'a mut ConnState {
    let state = conns.entry(conn.id).or_insert_with(|| ConnState {
        conn: conn_ref(conn),
        opened_ns: conn.opened_ns.unwrap_or(ts_ns),
        mid_stream: conn.preexisting,
        decision: Decision::Pending {
            held: Vec::new(),
            ingress: Vec::new(),
            egress: Vec::new(),
        },
    });
    // The owner may be found after the connection opened.
    if state.conn.pid != conn.pid {
        state.conn.pid = conn.pid;
    }
    state
}

fn held_bytes(held: &[Held]) -> u64 {
    held.iter()
        .map(|h| {
            if let Held::Data(_, _, b) = h {
                b.len() as u64
            } else {
                0
            }
        })
        .sum()
}

fn conn_ref(conn: &Connection) -> ConnRef {
    ConnRef {
        id: conn.id,
        pid: conn.pid,
        local: conn.local,
        peer: conn.peer,
    }
}
