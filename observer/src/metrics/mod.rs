//! Prometheus metrics (OpenMetrics text) from events, correlations and agent health.
//!
//! - this file: [`Metrics`] (the registry and every family; shared with the HTTP thread) and
//!   [`Recorder`] (the decode thread's side: labels, per-connection gauges, Kafka lag, and the
//!   deltas of health counters that are read as totals);
//! - `labels`: destination templating and the cardinality cap.
//!
//! Names: prefix `brokerscope_`, base units (seconds, bytes), counters end in `_total`.
//! Labels: `system` everywhere it applies; `destination` (templated, capped) on message
//! families; `vhost` only for AMQP; `consumer_group` and `partition` only on Kafka lag. With
//! [`Recorder::with_broker_labels`] (`--k8s-metric-labels`), the per-broker families (messages,
//! bytes, latencies, Kafka request durations, connections, channels, consumers, subscriptions,
//! in-flight, auth, protocol errors, queue gauges, Kafka lag) also carry `namespace`, `pod` and
//! `workload` of the broker's pod (absent for brokers outside pods); without it the Recorder
//! never looks a broker up.
pub mod labels;

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

use crate::{
    FastMap, FastState,
    capture::{ConnId, KernelCounters, session::SessionStats},
    correlate::{Observation, Relation, lag::LagTracker},
    event::{BrokerEvent, Destination, EventKind, Outcome, System},
    k8s::{BrokerMeta, Brokers},
    protocol::{DecoderStats, pipeline::PipelineStats},
};
use labels::Labeler;

type L = Vec<(&'static str, String)>;
type Counters = Family<L, Counter>;
type Gauges = Family<L, Gauge>;
type Histograms = Family<L, Histogram, fn() -> Histogram>;

/// Latency buckets (seconds): 50 µs to 10 s, denser where brokers usually answer (sub-ms).
pub const LATENCY_BUCKETS: [f64; 30] = [
    0.00005, 0.000075, 0.0001, 0.00015, 0.0002, 0.0003, 0.0004, 0.0005, 0.00075, 0.001, 0.0015,
    0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5,
    2.5, 5.0, 7.5, 10.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The label name of a destination: the topic or subject, an AMQP queue when the event names
/// one (deliveries, declares), otherwise exchange/routing key.
pub fn destination_name(d: &Destination) -> Option<String> {
    match named_field(d) {
        Some(name) => Some(name.to_owned()),
        None => d.name(),
    }
}

/// [`destination_name`] without allocating: a field as is, or the name written into `scratch`
/// (reused by the caller; the per-event label cache looks up with it).
pub fn destination_display<'a>(d: &'a Destination, scratch: &'a mut String) -> Option<&'a str> {
    if let Some(name) = named_field(d) {
        return Some(name);
    }
    scratch.clear();
    d.write_name(scratch).then_some(scratch.as_str())
}

/// The topic, subject or queue, whichever the destination has first.
fn named_field(d: &Destination) -> Option<&str> {
    d.topic
        .as_deref()
        .or(d.subject.as_deref())
        .or(d.queue.as_deref())
}

/// Every family. Cheap to share: the HTTP thread encodes while the decode thread updates.
pub struct Metrics {
    registry: Registry,
    pub published: Counters,
    pub delivered: Counters,
    pub confirmed: Counters,
    pub publish_failed: Counters,
    pub acked: Counters,
    pub nacked: Counters,
    pub rejected: Counters,
    pub redelivered: Counters,
    pub returned: Counters,
    pub published_bytes: Counters,
    pub delivered_bytes: Counters,
    pub publish_confirm: Histograms,
    pub publish_deliver: Histograms,
    pub deliver_settle: Histograms,
    pub kafka_request: Histograms,
    pub connections_active: Gauges,
    pub connections_opened: Counters,
    pub connections_closed: Counters,
    pub channels_active: Gauges,
    pub consumers_active: Gauges,
    pub subscriptions_active: Gauges,
    pub in_flight: Gauges,
    pub auth: Counters,
    pub auth_failures: Counters,
    pub protocol_errors: Counters,
    pub kafka_lag: Gauges,
    pub queue_messages: Gauges,
    pub queue_consumers: Gauges,
    pub events: Counters,
    // Agent health.
    pub kernel: Counters,
    pub gap_bytes: Counters,
    pub parse_errors: Counters,
    pub resyncs: Counters,
    pub oversize: Counters,
    pub skipped_bytes: Counters,
    pub connections_undecoded: Counters,
    pub correlations_evicted: Counters,
    pub correlations_unmatched: Counters,
    pub correlations_pending: Gauges,
    pub decode_seconds: Counter<f64, AtomicU64>,
    pub destinations: Gauge,
    pub destinations_overflow: Counter,
    pub targets: Gauge,
    pub build_info: Gauges,
    pub audit_records: Counter,
    pub audit_errors: Counter,
    pub spans_exported: Counter,
    pub spans_dropped: Counter,
    pub span_export_errors: Counter,
    pub kubernetes_lookups: Counters,
    pub kubernetes_api_errors: Counter,
    pub kubernetes_evictions: Counter,
    pub scrapes: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("brokerscope");
        fn c(r: &mut Registry, name: &str, help: &str) -> Counters {
            let f = Counters::default();
            r.register(name, help, f.clone());
            f
        }
        fn b(r: &mut Registry, name: &str, help: &str) -> Counters {
            let f = Counters::default();
            r.register_with_unit(name, help, Unit::Bytes, f.clone());
            f
        }
        fn g(r: &mut Registry, name: &str, help: &str) -> Gauges {
            let f = Gauges::default();
            r.register(name, help, f.clone());
            f
        }
        fn plain(r: &mut Registry, name: &str, help: &str) -> Counter {
            let f = Counter::default();
            r.register(name, help, f.clone());
            f
        }
        fn h(r: &mut Registry, name: &str, help: &str) -> Histograms {
            let f = Histograms::new_with_constructor(latency_histogram as fn() -> Histogram);
            r.register_with_unit(name, help, Unit::Seconds, f.clone());
            f
        }
        let m = Self {
            published: c(
                &mut r,
                "messages_published",
                "Messages published by clients to the broker (Kafka: records)",
            ),
            delivered: c(
                &mut r,
                "messages_delivered",
                "Messages the broker delivered to consumers (Kafka: fetched records)",
            ),
            confirmed: c(
                &mut r,
                "messages_confirmed",
                "Publishes the broker confirmed (publisher confirms, PUBACK/PUBCOMP, PubAck, produce response)",
            ),
            publish_failed: c(
                &mut r,
                "messages_publish_failed",
                "Publishes the broker refused (basic.nack, MQTT failure reason codes, failed PubAck, produce errors)",
            ),
            acked: c(
                &mut r,
                "messages_acked",
                "Deliveries consumers acknowledged (Kafka: records covered by an offset commit)",
            ),
            nacked: c(
                &mut r,
                "messages_nacked",
                "Deliveries consumers negatively acknowledged",
            ),
            rejected: c(
                &mut r,
                "messages_rejected",
                "Deliveries consumers rejected (AMQP basic.reject, JetStream +TERM)",
            ),
            redelivered: c(
                &mut r,
                "messages_redelivered",
                "Deliveries flagged as redeliveries",
            ),
            returned: c(
                &mut r,
                "messages_returned",
                "Unroutable messages the broker returned to their publisher (AMQP basic.return)",
            ),
            published_bytes: b(&mut r, "published", "Message body bytes published"),
            delivered_bytes: b(&mut r, "delivered", "Message body bytes delivered"),
            publish_confirm: h(
                &mut r,
                "publish_confirm_latency",
                "Publish to broker confirmation",
            ),
            publish_deliver: h(
                &mut r,
                "publish_deliver_latency",
                "Publish to delivery to a consumer: time the message spent in the broker (one observation per delivery)",
            ),
            deliver_settle: h(
                &mut r,
                "deliver_settle_latency",
                "Delivery to the consumer's ack/nack/reject: consumer processing time",
            ),
            kafka_request: h(
                &mut r,
                "kafka_request_duration",
                "Kafka request to response, per API (fetch long-poll waits excluded)",
            ),
            connections_active: g(&mut r, "connections_active", "Client connections open now"),
            connections_opened: c(&mut r, "connections_opened", "Client connections opened"),
            connections_closed: c(&mut r, "connections_closed", "Client connections closed"),
            channels_active: g(&mut r, "channels_active", "AMQP channels open now"),
            consumers_active: g(
                &mut r,
                "consumers_active",
                "Consumers active now (AMQP basic.consume; Kafka group members)",
            ),
            subscriptions_active: g(
                &mut r,
                "subscriptions_active",
                "Subscriptions active now (MQTT topic filters, NATS subscriptions)",
            ),
            in_flight: g(
                &mut r,
                "messages_in_flight",
                "Messages delivered and not yet settled by the consumer",
            ),
            auth: c(&mut r, "auth", "Authentication attempts by outcome"),
            auth_failures: c(&mut r, "auth_failures", "Failed authentications"),
            protocol_errors: c(
                &mut r,
                "protocol_errors",
                "Protocol error replies by code (AMQP reply codes, MQTT reason codes, NATS -ERR, Kafka error codes)",
            ),
            kafka_lag: g(
                &mut r,
                "kafka_consumer_lag",
                "Kafka consumer lag from the wire: newest high watermark minus the group's committed offset",
            ),
            queue_messages: g(
                &mut r,
                "queue_messages",
                "Queue depth where the wire reveals it (AMQP declare-ok, get-ok)",
            ),
            queue_consumers: g(
                &mut r,
                "queue_consumers",
                "Consumers of a queue where the wire reveals it (AMQP declare-ok)",
            ),
            events: c(&mut r, "events", "Decoded events by kind"),
            kernel: c(
                &mut r,
                "kernel_events",
                "Kernel capture counters by name (chunks_lost, bytes_lost, bytes_truncated, ...)",
            ),
            gap_bytes: c(
                &mut r,
                "stream_gap_bytes",
                "Stream bytes never seen, by reason (lost: ring full; truncated: over the capture cap; unknown)",
            ),
            parse_errors: c(
                &mut r,
                "parse_errors",
                "Malformed frames, counted and skipped",
            ),
            resyncs: c(
                &mut r,
                "resyncs",
                "Times a decoder lost and regained frame sync",
            ),
            oversize: c(
                &mut r,
                "oversize_frames",
                "Frames over the size limit, skipped",
            ),
            skipped_bytes: c(
                &mut r,
                "skipped_bytes",
                "Bytes passed over while resynchronising",
            ),
            connections_undecoded: c(
                &mut r,
                "connections_undecoded",
                "Connections not decoded, by reason (unknown protocol, unsupported)",
            ),
            correlations_evicted: c(
                &mut r,
                "correlations_evicted",
                "Waiting publishes/deliveries dropped (cap or TTL) before they matched",
            ),
            correlations_unmatched: c(
                &mut r,
                "correlations_unmatched",
                "Confirms, deliveries or settlements that found nothing to match",
            ),
            correlations_pending: g(
                &mut r,
                "correlations_pending",
                "Entries waiting for their match",
            ),
            decode_seconds: {
                let f = Counter::<f64, AtomicU64>::default();
                r.register_with_unit(
                    "decode",
                    "Time spent decoding and correlating",
                    Unit::Seconds,
                    f.clone(),
                );
                f
            },
            destinations: {
                let f = Gauge::default();
                r.register(
                    "destinations",
                    "Distinct destination label values in use (the cap is --max-destinations)",
                    f.clone(),
                );
                f
            },
            destinations_overflow: {
                let f = Counter::default();
                r.register(
                    "destinations_overflow",
                    "Destination names sent to the __overflow__ series because the cap was reached",
                    f.clone(),
                );
                f
            },
            targets: {
                let f = Gauge::default();
                r.register("targets", "Broker processes observed now", f.clone());
                f
            },
            build_info: g(&mut r, "build_info", "Build information (always 1)"),
            audit_records: plain(&mut r, "audit_records", "Audit records written"),
            audit_errors: plain(
                &mut r,
                "audit_write_errors",
                "Audit records or flushes that failed to write",
            ),
            spans_exported: plain(
                &mut r,
                "spans_exported",
                "Spans accepted by the OTLP receiver",
            ),
            spans_dropped: plain(
                &mut r,
                "spans_dropped",
                "Spans dropped because the export queue was full",
            ),
            span_export_errors: plain(
                &mut r,
                "span_export_errors",
                "OTLP export requests that failed",
            ),
            kubernetes_lookups: c(
                &mut r,
                "kubernetes_lookups",
                "Broker pod lookups in the Kubernetes metadata cache by result (hit, miss, error: the API has not answered)",
            ),
            kubernetes_api_errors: plain(
                &mut r,
                "kubernetes_api_errors",
                "Kubernetes API requests that failed (each kind of error is logged once)",
            ),
            kubernetes_evictions: plain(
                &mut r,
                "kubernetes_cache_evictions",
                "Containers left out of the Kubernetes metadata cache because of its cap",
            ),
            scrapes: AtomicU64::new(0),
            registry: r,
        };
        m.build_info
            .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_owned())])
            .set(1);
        m
    }

    /// Creates every agent-health series whose label values are known in advance, at zero, so
    /// dashboards and alerts over them have a series (and a rate of 0) from the first scrape
    /// instead of "no data" until the first loss, parse error or eviction. `brokerscope run`
    /// calls it once at start.
    pub fn init_known_series(&self) {
        for c in observer_common::Counter::ALL {
            self.kernel
                .get_or_create(&vec![("counter", c.name().to_owned())])
                .inc_by(0);
        }
        for reason in ["lost", "truncated", "unknown"] {
            self.gap_bytes
                .get_or_create(&vec![("reason", reason.to_owned())])
                .inc_by(0);
        }
        for reason in ["unknown", "unsupported"] {
            self.connections_undecoded
                .get_or_create(&vec![("reason", reason.to_owned())])
                .inc_by(0);
        }
        for s in System::ALL {
            let l = sys(s);
            self.parse_errors.get_or_create(&l).inc_by(0);
            self.resyncs.get_or_create(&l).inc_by(0);
            self.oversize.get_or_create(&l).inc_by(0);
            self.skipped_bytes.get_or_create(&l).inc_by(0);
            self.in_flight.get_or_create(&l).set(0);
        }
        for r in Relation::ALL {
            let l = vec![("relation", r.as_str().to_owned())];
            self.correlations_evicted.get_or_create(&l).inc_by(0);
            self.correlations_unmatched.get_or_create(&l).inc_by(0);
            self.correlations_pending.get_or_create(&l).set(0);
        }
    }

    /// The OpenMetrics text of every family.
    pub fn encode(&self) -> String {
        self.scrapes.fetch_add(1, Ordering::Relaxed);
        let mut out = String::with_capacity(64 << 10);
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

fn sys(s: System) -> L {
    vec![("system", s.as_str().to_owned())]
}

/// Appends the broker's `namespace`, `pod`, `workload` labels (only those known).
fn push_broker(l: &mut L, broker: Option<&BrokerMeta>) {
    if let Some(b) = broker {
        l.extend(b.metric_labels().map(|(k, v)| (k, labels::clean(v))));
    }
}

/// Per-connection state behind the active gauges, so a closed connection takes its channels,
/// consumers and subscriptions with it.
#[derive(Default)]
struct ConnGauges {
    system: Option<System>,
    /// The broker's labels when the connection was first seen, so its gauges go up and down
    /// in the same series.
    broker: Option<Arc<BrokerMeta>>,
    channels: u64,
    consumers: HashMap<u32, u64>,
    subscriptions: u64,
    kafka_member: bool,
}

/// The message counters of one destination, resolved once (label building and family
/// lookups cost more than the decoding of a small message).
#[derive(Clone)]
struct DestCounters {
    published: Counter,
    published_bytes: Counter,
    delivered: Counter,
    delivered_bytes: Counter,
}

/// Where one kind of observation goes, resolved once.
#[derive(Clone)]
struct ObsHandles {
    relation: Relation,
    broker: u64,
    settlement: Option<crate::correlate::Settlement>,
    labels: crate::correlate::Labels,
    counter: Option<Counter>,
    histogram: Histogram,
}

/// Most destinations whose counters are cached per system; the cache restarts when full (the
/// labeler keeps handing out the same label values).
const DEST_CACHE: usize = 4096;

/// Index of a (system, kind) pair in `Recorder::event_counters`.
fn event_slot(system: System, kind: EventKind) -> usize {
    system as usize * EventKind::ALL.len() + kind as usize
}

/// The decode thread's side of the metrics.
pub struct Recorder {
    pub metrics: std::sync::Arc<Metrics>,
    labeler: Labeler,
    /// `brokerscope_events_total` handles, indexed by [`event_slot`] (an array lookup per
    /// event rather than a hash lookup).
    event_counters: Vec<Option<Counter>>,
    /// Observation handles by a hash of their labels (checked on use).
    obs_cache: FastMap<u64, ObsHandles>,
    /// Hashes observation labels for `obs_cache`; seeded per process.
    obs_hasher: FastState,
    /// By system and broker ([`BrokerMeta::id`], 0 without broker labels).
    /// By system and broker ([`BrokerMeta::id`], 0 without broker labels), then destination
    /// (AMQP: vhost, NUL, name).
    dest_cache: FastMap<(System, u64), FastMap<String, DestCounters>>,
    /// Reused for AMQP's destination cache key.
    key_buf: String,
    /// `Some` with broker labels on.
    brokers: Option<Arc<Brokers>>,
    /// In-flight series set last time, so those of gone brokers go back to 0.
    in_flight_series: Vec<L>,
    conns: FastMap<ConnId, ConnGauges>,
    lag: LagTracker,
    last_kernel: [u64; observer_common::Counter::COUNT as usize],
    last_session: SessionStats,
    last_decoders: HashMap<System, DecoderStats>,
    last_pipeline: PipelineStats,
    last_correlator: crate::correlate::CorrelatorStats,
    last_overflow: u64,
}

impl Recorder {
    pub fn new(metrics: std::sync::Arc<Metrics>, labeler: Labeler) -> Self {
        Self {
            metrics,
            labeler,
            event_counters: vec![None; System::ALL.len() * EventKind::ALL.len()],
            obs_cache: FastMap::default(),
            obs_hasher: FastState::default(),
            dest_cache: FastMap::default(),
            key_buf: String::new(),
            brokers: None,
            in_flight_series: Vec::new(),
            conns: FastMap::default(),
            lag: LagTracker::default(),
            last_kernel: [0; observer_common::Counter::COUNT as usize],
            last_session: SessionStats::default(),
            last_decoders: HashMap::new(),
            last_pipeline: PipelineStats::default(),
            last_correlator: Default::default(),
            last_overflow: 0,
        }
    }

    /// Adds `namespace`, `pod`, `workload` labels of the broker (pid) to the per-broker
    /// families.
    pub fn with_broker_labels(mut self, brokers: Arc<Brokers>) -> Self {
        self.brokers = Some(brokers);
        self
    }

    /// The broker's identity, when broker labels are on and it runs in a container.
    fn broker(&self, pid: Option<u32>) -> Option<Arc<BrokerMeta>> {
        self.brokers.as_ref()?.resolve(pid?)
    }

    /// Labels for a message family: system, destination, vhost for AMQP, and the broker's.
    fn dest_labels(
        &mut self,
        system: System,
        dest: Option<&str>,
        vhost: Option<&str>,
        broker: Option<&BrokerMeta>,
    ) -> L {
        let mut l = sys(system);
        l.push(("destination", self.labeler.label(dest.unwrap_or(""))));
        if system == System::Amqp {
            l.push(("vhost", labels::clean(vhost.unwrap_or(""))));
        }
        push_broker(&mut l, broker);
        l
    }

    fn event_labels(&mut self, e: &BrokerEvent) -> L {
        let d = e.destination.as_ref();
        let name = d.and_then(destination_name);
        let vhost = d.and_then(|d| d.vhost.clone());
        let broker = self.broker(e.conn.pid);
        self.dest_labels(
            e.system,
            name.as_deref(),
            vhost.as_deref(),
            broker.as_deref(),
        )
    }

    /// `system` plus the broker's labels.
    fn sys_labels(&self, system: System, pid: Option<u32>) -> L {
        let mut l = sys(system);
        push_broker(&mut l, self.broker(pid).as_deref());
        l
    }

    /// The message counters of an event's destination, from the cache when possible (looked
    /// up without allocating: AMQP's key is built in a reused buffer).
    fn dest_counters(&mut self, e: &BrokerEvent) -> DestCounters {
        let d = e.destination.as_ref();
        let mut amqp_key = std::mem::take(&mut self.key_buf);
        amqp_key.clear();
        let key: &str = match d {
            None => "",
            Some(d) if e.system == System::Amqp => {
                // The fields the labels are made of, as they are (the display name of an
                // exchange publish would be formatted); '-' marks an absent field, so absent
                // and empty differ (the default exchange is the empty name).
                let fields = [
                    &d.vhost,
                    &d.exchange,
                    &d.routing_key,
                    &d.queue,
                    &d.topic,
                    &d.subject,
                ];
                for field in fields {
                    match field {
                        Some(v) => {
                            amqp_key.push('+');
                            amqp_key.push_str(v);
                        }
                        None => amqp_key.push('-'),
                    }
                    amqp_key.push('\u{0}');
                }
                &amqp_key
            }
            Some(d) => named_field(d).unwrap_or(""),
        };
        let broker = match &self.brokers {
            None => 0,
            Some(_) => self.broker(e.conn.pid).map_or(0, |b| b.id),
        };
        let cached = self
            .dest_cache
            .get(&(e.system, broker))
            .and_then(|m| m.get(key))
            .cloned();
        let c = match cached {
            Some(c) => c,
            None => {
                let key = key.to_owned();
                let l = self.event_labels(e);
                let m = &self.metrics;
                let c = DestCounters {
                    published: m.published.get_or_create(&l).clone(),
                    published_bytes: m.published_bytes.get_or_create(&l).clone(),
                    delivered: m.delivered.get_or_create(&l).clone(),
                    delivered_bytes: m.delivered_bytes.get_or_create(&l).clone(),
                };
                if self.dest_cache.len() >= DEST_CACHE {
                    self.dest_cache.clear();
                }
                let cache = self.dest_cache.entry((e.system, broker)).or_default();
                if cache.len() >= DEST_CACHE {
                    cache.clear();
                }
                cache.insert(key, c.clone());
                c
            }
        };
        self.key_buf = amqp_key;
        c
    }

    /// Counts one event.
    pub fn event(&mut self, e: &BrokerEvent) {
        let m = self.metrics.clone();
        let messages = u64::from(e.record_count.unwrap_or(1));
        self.event_counters[event_slot(e.system, e.kind)]
            .get_or_insert_with(|| {
                m.events
                    .get_or_create(&vec![
                        ("system", e.system.as_str().to_owned()),
                        ("kind", e.kind.as_str().to_owned()),
                    ])
                    .clone()
            })
            .inc();
        let conn = self.conns.entry(e.conn.id).or_default();
        if conn.system.is_none() {
            conn.system = Some(e.system);
            if let Some(b) = &self.brokers {
                conn.broker = e.conn.pid.and_then(|p| b.resolve(p));
            }
        }
        // The connection's series: system, plus the broker's labels from its first event
        // (built only by the branches that need it: most events are messages).
        let conn_broker = conn.broker.clone();
        let conn_sys = |s: System| {
            let mut l = sys(s);
            push_broker(&mut l, conn_broker.as_deref());
            l
        };
        match e.kind {
            EventKind::ConnectionOpened => {
                m.connections_opened
                    .get_or_create(&conn_sys(e.system))
                    .inc();
                m.connections_active
                    .get_or_create(&conn_sys(e.system))
                    .inc();
            }
            EventKind::ConnectionClosed => {
                m.connections_closed
                    .get_or_create(&conn_sys(e.system))
                    .inc();
                m.connections_active
                    .get_or_create(&conn_sys(e.system))
                    .dec();
                if let Some(c) = self.conns.remove(&e.conn.id) {
                    let s = conn_sys(e.system);
                    m.channels_active
                        .get_or_create(&s)
                        .dec_by(c.channels as i64);
                    let consumers = c.consumers.values().sum::<u64>() + u64::from(c.kafka_member);
                    m.consumers_active
                        .get_or_create(&s)
                        .dec_by(consumers as i64);
                    m.subscriptions_active
                        .get_or_create(&s)
                        .dec_by(c.subscriptions as i64);
                }
            }
            EventKind::ChannelOpened => {
                conn.channels += 1;
                m.channels_active.get_or_create(&conn_sys(e.system)).inc();
            }
            EventKind::ChannelClosed => {
                if conn.channels > 0 {
                    conn.channels -= 1;
                    m.channels_active.get_or_create(&conn_sys(e.system)).dec();
                }
                let gone = conn.consumers.remove(&e.channel.unwrap_or(0)).unwrap_or(0);
                m.consumers_active
                    .get_or_create(&conn_sys(e.system))
                    .dec_by(gone as i64);
            }
            EventKind::Subscribe | EventKind::Unsubscribe => {
                let up = e.kind == EventKind::Subscribe;
                let s = conn_sys(e.system);
                match e.system {
                    System::Amqp => {
                        let n = conn.consumers.entry(e.channel.unwrap_or(0)).or_default();
                        if up {
                            *n += 1;
                            m.consumers_active.get_or_create(&s).inc();
                        } else if *n > 0 {
                            *n -= 1;
                            m.consumers_active.get_or_create(&s).dec();
                        }
                    }
                    System::Kafka => {
                        if up != conn.kafka_member {
                            conn.kafka_member = up;
                            m.consumers_active
                                .get_or_create(&s)
                                .inc_by(if up { 1 } else { -1 });
                        }
                    }
                    System::Mqtt | System::Nats => {
                        if up {
                            conn.subscriptions += 1;
                            m.subscriptions_active.get_or_create(&s).inc();
                        } else if conn.subscriptions > 0 {
                            conn.subscriptions -= 1;
                            m.subscriptions_active.get_or_create(&s).dec();
                        }
                    }
                }
            }
            EventKind::Publish => {
                let c = self.dest_counters(e);
                c.published.inc_by(messages);
                c.published_bytes.inc_by(e.body_size.unwrap_or(0));
            }
            EventKind::Deliver => {
                let c = self.dest_counters(e);
                c.delivered.inc_by(messages);
                c.delivered_bytes.inc_by(e.body_size.unwrap_or(0));
                if e.redelivered == Some(true) || e.dup == Some(true) {
                    let l = self.event_labels(e);
                    m.redelivered.get_or_create(&l).inc_by(messages);
                }
                if let (Some(count), Some(d)) = (e.message_count, &e.destination)
                    && d.queue.is_some()
                {
                    let l = self.event_labels(e);
                    m.queue_messages.get_or_create(&l).set(i64::from(count));
                }
            }
            EventKind::Return => {
                let l = self.event_labels(e);
                m.returned.get_or_create(&l).inc();
            }
            // The AMQP decoder reports queue.declare-ok (which carries the depth and consumer
            // count) as a control event answering the declare.
            EventKind::Declare | EventKind::Control
                if e.kind == EventKind::Declare || e.method == Some("queue.declare-ok") =>
            {
                if let Some(count) = e.message_count {
                    let l = self.event_labels(e);
                    m.queue_messages.get_or_create(&l).set(i64::from(count));
                    if let Some(c) = e.consumer_count {
                        m.queue_consumers.get_or_create(&l).set(i64::from(c));
                    }
                }
            }
            EventKind::Auth => {
                let outcome = e.outcome.unwrap_or(Outcome::Unknown);
                let mut l = conn_sys(e.system);
                l.push(("outcome", outcome.as_str().to_owned()));
                m.auth.get_or_create(&l).inc();
                if outcome == Outcome::Failure {
                    m.auth_failures.get_or_create(&conn_sys(e.system)).inc();
                }
            }
            EventKind::Error => self.protocol_error(e),
            EventKind::Response => {
                if let Some(ns) = e.latency_ns
                    && e.system == System::Kafka
                {
                    let api = labels::clean(e.method.unwrap_or("unknown"));
                    let mut l = vec![("api", api)];
                    push_broker(&mut l, self.broker(e.conn.pid).as_deref());
                    m.kafka_request.get_or_create(&l).observe(ns as f64 / 1e9);
                }
                if e.system == System::Kafka && e.reply_code.is_some_and(|c| c != 0) {
                    self.protocol_error(e);
                }
            }
            _ => {}
        }
        // Kafka lag moves with fetch responses (high watermarks) and commits.
        if e.system == System::Kafka {
            self.lag.observe(e);
            let touched = e.kind == EventKind::Ack
                || e.attrs
                    .iter()
                    .any(|(k, _)| *k == "hw" || *k == "high_watermark");
            if touched {
                // Lag is the cluster's, reported under the broker that showed it.
                let broker = self.broker(e.conn.pid);
                for l in self.lag.lag() {
                    let mut labels = vec![
                        ("consumer_group", labels::clean(&l.group)),
                        ("destination", self.labeler.label(&l.topic)),
                        ("partition", l.partition.to_string()),
                    ];
                    push_broker(&mut labels, broker.as_deref());
                    m.kafka_lag.get_or_create(&labels).set(l.lag);
                }
            }
        }
    }

    fn protocol_error(&mut self, e: &BrokerEvent) {
        let mut l = self.sys_labels(e.system, e.conn.pid);
        l.push((
            "code",
            e.reply_code
                .map_or_else(|| "unknown".to_owned(), |c| c.to_string()),
        ));
        self.metrics.protocol_errors.get_or_create(&l).inc();
    }

    /// Records one correlation result.
    pub fn observation(&mut self, o: &Observation) {
        use std::hash::BuildHasher;
        let l = &o.labels;
        // Without broker labels the pid plays no part (one series per destination).
        let broker = match &self.brokers {
            None => None,
            Some(_) => self.broker(l.pid),
        };
        let broker_id = broker.as_ref().map_or(0, |b| b.id);
        let hash = self.obs_hasher.hash_one((
            o.relation,
            o.settlement,
            l.system,
            l.destination.as_deref(),
            l.vhost.as_deref(),
            broker_id,
        ));
        let cached = self.obs_cache.get(&hash).filter(|c| {
            c.relation == o.relation
                && c.settlement == o.settlement
                && c.broker == broker_id
                && c.labels.system == l.system
                && c.labels.destination == l.destination
                && c.labels.vhost == l.vhost
        });
        let handles = match cached {
            Some(c) => c.clone(),
            None => {
                let c = self.observation_handles(o, broker.as_deref());
                if self.obs_cache.len() >= DEST_CACHE {
                    self.obs_cache.clear();
                }
                self.obs_cache.insert(hash, c.clone());
                c
            }
        };
        if let Some(counter) = &handles.counter {
            counter.inc_by(o.count);
        }
        let seconds = o.latency_ns as f64 / 1e9;
        for _ in 0..o.count.min(100_000) {
            handles.histogram.observe(seconds);
        }
    }

    /// The counter and histogram an observation goes to (the slow path: labels and lookups).
    fn observation_handles(&mut self, o: &Observation, broker: Option<&BrokerMeta>) -> ObsHandles {
        let m = self.metrics.clone();
        let mut l = self.dest_labels(
            o.labels.system,
            o.labels.destination.as_deref(),
            o.labels.vhost.as_deref(),
            broker,
        );
        let (counter, family) = match o.relation {
            Relation::PublishConfirm => {
                let counter = match o.settlement {
                    Some(crate::correlate::Settlement::Ack) => &m.confirmed,
                    _ => &m.publish_failed,
                };
                (Some(counter.get_or_create(&l).clone()), &m.publish_confirm)
            }
            Relation::PublishDeliver => (None, &m.publish_deliver),
            Relation::DeliverSettle => {
                let s = o.settlement.unwrap_or(crate::correlate::Settlement::Ack);
                let counter = match s {
                    crate::correlate::Settlement::Ack => &m.acked,
                    crate::correlate::Settlement::Nack => &m.nacked,
                    crate::correlate::Settlement::Reject => &m.rejected,
                }
                .get_or_create(&l)
                .clone();
                l.push(("outcome", s.as_str().to_owned()));
                (Some(counter), &m.deliver_settle)
            }
        };
        ObsHandles {
            relation: o.relation,
            broker: broker.map_or(0, |b| b.id),
            settlement: o.settlement,
            labels: o.labels.clone(),
            counter,
            histogram: family.get_or_create(&l).clone(),
        }
    }

    /// A confirm, ack, nack or reject that matched nothing still counts as one message.
    pub fn unmatched_settlement(&mut self, e: &BrokerEvent) {
        let l = self.event_labels(e);
        let m = &self.metrics;
        match e.kind {
            EventKind::Confirm => m.confirmed.get_or_create(&l).inc(),
            EventKind::Nack if e.direction == crate::capture::Direction::Egress => {
                m.publish_failed.get_or_create(&l).inc()
            }
            EventKind::Ack => m.acked.get_or_create(&l).inc(),
            EventKind::Nack => m.nacked.get_or_create(&l).inc(),
            EventKind::Reject => m.rejected.get_or_create(&l).inc(),
            _ => 0,
        };
    }

    /// Health counters that are read as running totals: only the increase is added.
    pub fn health(
        &mut self,
        kernel: Option<&KernelCounters>,
        session: &SessionStats,
        pipeline: &PipelineStats,
        correlator: &crate::correlate::Correlator,
        targets: usize,
    ) {
        let m = self.metrics.clone();
        if let Some(k) = kernel {
            for (c, v) in k.iter() {
                let last = &mut self.last_kernel[c as usize];
                m.kernel
                    .get_or_create(&vec![("counter", c.name().to_owned())])
                    .inc_by(v.saturating_sub(*last));
                *last = v;
            }
        }
        let s = session;
        let prev = &self.last_session;
        for (reason, now, before) in [
            ("lost", s.gap_bytes_lost, prev.gap_bytes_lost),
            ("truncated", s.gap_bytes_truncated, prev.gap_bytes_truncated),
            ("unknown", s.gap_bytes_unknown, prev.gap_bytes_unknown),
        ] {
            m.gap_bytes
                .get_or_create(&vec![("reason", reason.to_owned())])
                .inc_by(now.saturating_sub(before));
        }
        self.last_session = s.clone();
        for (system, d) in &pipeline.decoder_by_system {
            let before = self.last_decoders.remove(system).unwrap_or_default();
            let l = sys(*system);
            m.parse_errors
                .get_or_create(&l)
                .inc_by(d.malformed.saturating_sub(before.malformed));
            m.resyncs
                .get_or_create(&l)
                .inc_by(d.resyncs.saturating_sub(before.resyncs));
            m.oversize
                .get_or_create(&l)
                .inc_by(d.oversize.saturating_sub(before.oversize));
            m.skipped_bytes
                .get_or_create(&l)
                .inc_by(d.skipped_bytes.saturating_sub(before.skipped_bytes));
            self.last_decoders.insert(*system, *d);
        }
        let p = &self.last_pipeline;
        for (reason, now, before) in [
            (
                "unknown",
                pipeline.connections_unknown,
                p.connections_unknown,
            ),
            (
                "unsupported",
                pipeline.connections_unsupported,
                p.connections_unsupported,
            ),
        ] {
            m.connections_undecoded
                .get_or_create(&vec![("reason", reason.to_owned())])
                .inc_by(now.saturating_sub(before));
        }
        self.last_pipeline = pipeline.clone();
        let cs = correlator.stats();
        for r in Relation::ALL {
            let l = vec![("relation", r.as_str().to_owned())];
            m.correlations_evicted.get_or_create(&l).inc_by(
                cs.evicted(r)
                    .saturating_sub(self.last_correlator.evicted(r)),
            );
            m.correlations_unmatched.get_or_create(&l).inc_by(
                cs.unmatched(r)
                    .saturating_sub(self.last_correlator.unmatched(r)),
            );
            m.correlations_pending
                .get_or_create(&l)
                .set(correlator.pending(r) as i64);
        }
        self.last_correlator = cs.clone();
        if self.brokers.is_some() {
            // One series per system and broker pod; series of gone brokers go back to 0.
            let mut now: HashMap<L, u64> = System::ALL.iter().map(|&s| (sys(s), 0)).collect();
            for ((s, pid), n) in correlator.in_flight_by_broker() {
                *now.entry(self.sys_labels(s, pid)).or_default() += n;
            }
            for l in std::mem::take(&mut self.in_flight_series) {
                now.entry(l).or_default();
            }
            for (l, n) in &now {
                m.in_flight.get_or_create(l).set(*n as i64);
            }
            self.in_flight_series = now
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .map(|(l, _)| l)
                .collect();
        } else {
            let in_flight = correlator.in_flight();
            for s in System::ALL {
                m.in_flight
                    .get_or_create(&sys(s))
                    .set(in_flight.get(&s).copied().unwrap_or(0) as i64);
            }
        }
        m.destinations.set(self.labeler.distinct() as i64);
        m.destinations_overflow
            .inc_by(self.labeler.overflowed - self.last_overflow);
        self.last_overflow = self.labeler.overflowed;
        m.targets.set(targets as i64);
    }

    /// Adds decode time.
    pub fn decode_time(&self, seconds: f64) {
        self.metrics.decode_seconds.inc_by(seconds);
    }
}

#[cfg(test)]
mod tests;
