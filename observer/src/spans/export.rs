//! [`SpanPipeline`]: synthesis on the caller's thread, OTLP export on a thread of its own.
//!
//! The decode loop calls [`SpanPipeline::observe_event`] / [`SpanPipeline::observe`]; kept
//! spans go into a bounded queue with a try-send (when it is full the span is dropped and
//! counted: the decode loop never blocks). The export thread runs its own single-threaded
//! tokio runtime, takes spans in batches (up to [`SpanConfig::max_batch`], or whatever
//! arrived within [`SpanConfig::batch_delay`]) and exports them with the OpenTelemetry SDK's
//! OTLP exporter (gRPC through tonic, or HTTP/protobuf). [`SpanPipeline::shutdown`] drains the
//! queue, exports what is left and waits for it.
//!
//! Configuration and the standard environment variables (the OTLP exporter reads them):
//!
//! - endpoint: [`SpanConfig::endpoint`] if set (for HTTP, `/v1/traces` is appended to a URL
//!   with no path, as for `OTEL_EXPORTER_OTLP_ENDPOINT`); else `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
//!   (used as is), else `OTEL_EXPORTER_OTLP_ENDPOINT` (+ `/v1/traces` for HTTP), else
//!   `http://localhost:4318/v1/traces` (HTTP) or `http://localhost:4317` (gRPC);
//! - protocol: [`SpanConfig::protocol`] if set, else `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, else
//!   `OTEL_EXPORTER_OTLP_PROTOCOL` (`grpc` | `http/protobuf`), else `http/protobuf`;
//! - headers: `OTEL_EXPORTER_OTLP_TRACES_HEADERS` / `OTEL_EXPORTER_OTLP_HEADERS`;
//! - timeout: [`SpanConfig::timeout`] if set, else `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` /
//!   `OTEL_EXPORTER_OTLP_TIMEOUT` (ms), else 10 s;
//! - resource: see [`ResourceInfo`]; `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_SERVICE_NAME` override
//!   the built-in values, explicit [`ResourceInfo`] fields override those. With
//!   [`SpanConfig::brokers`], spans of a broker in a container get a resource of their own (one
//!   per broker workload): the base resource without the observer's own container and pod,
//!   plus the broker's `container.id` and `k8s.*` attributes. Each batch is grouped by resource
//!   and exported one group at a time after `set_resource` (the OTLP exporter builds each
//!   request from the resource set last); spans of host processes keep the base resource.
use std::{
    borrow::Cow,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use opentelemetry::{
    InstrumentationScope, KeyValue,
    trace::{SpanContext, SpanId, Status, TraceFlags, TraceState},
};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::{
    Resource,
    resource::EnvResourceDetector,
    trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks},
};

use super::{
    SpanError,
    synth::{Sampling, Span, SynthStats, Synthesizer},
};
use crate::{
    correlate::{Awaits, Observation},
    event::BrokerEvent,
    k8s::BrokerMeta,
};

/// Broker pid → its container and pod (see [`crate::k8s::Brokers::resolve`]).
#[derive(Clone)]
pub struct BrokerLookup(pub Arc<dyn Fn(u32) -> Option<Arc<BrokerMeta>> + Send + Sync>);

impl std::fmt::Debug for BrokerLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BrokerLookup")
    }
}

/// OTLP transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtlpProtocol {
    Grpc,
    HttpProtobuf,
}

impl OtlpProtocol {
    /// `grpc` or `http/protobuf` (the values of `OTEL_EXPORTER_OTLP_PROTOCOL`).
    pub fn parse(s: &str) -> Result<Self, SpanError> {
        match s.trim() {
            "grpc" => Ok(Self::Grpc),
            "http/protobuf" => Ok(Self::HttpProtobuf),
            other => Err(SpanError::Config(format!(
                "unsupported OTLP protocol {other:?} (grpc | http/protobuf)"
            ))),
        }
    }

    /// From `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, then `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub fn from_env() -> Result<Option<Self>, SpanError> {
        [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ]
        .into_iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.trim().is_empty()))
        .map(|s| Self::parse(&s))
        .transpose()
    }
}

/// Resource attributes of every exported span.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResourceInfo {
    /// `service.name`: this if set, else `OTEL_SERVICE_NAME`, else `OTEL_RESOURCE_ATTRIBUTES`'
    /// `service.name`, else `brokerscope`.
    pub service_name: Option<String>,
    /// `host.name`: this if set, else the kernel's host name.
    pub host_name: Option<String>,
    /// `container.id`, `k8s.pod.name`, `k8s.namespace.name` when the caller knows them.
    pub container_id: Option<String>,
    pub k8s_pod_name: Option<String>,
    pub k8s_namespace_name: Option<String>,
    /// More attributes (they override the ones above and the environment's).
    pub extra: Vec<(String, String)>,
}

impl ResourceInfo {
    /// The SDK resource: built-in values, then the environment's, then explicit ones.
    pub fn resource(&self) -> Resource {
        let mut builtin = vec![KeyValue::new("service.name", "brokerscope")];
        if let Some(h) = self.host_name.clone().or_else(host_name) {
            builtin.push(KeyValue::new("host.name", h));
        }
        let mut b = Resource::builder_empty()
            .with_attributes(builtin)
            .with_detector(Box::new(EnvResourceDetector::new()));
        if let Ok(name) = std::env::var("OTEL_SERVICE_NAME")
            && !name.is_empty()
        {
            b = b.with_service_name(name);
        }
        let mut explicit = Vec::new();
        let mut add = |k: &'static str, v: &Option<String>| {
            if let Some(v) = v {
                explicit.push(KeyValue::new(k, v.clone()));
            }
        };
        add("service.name", &self.service_name);
        add("container.id", &self.container_id);
        add("k8s.pod.name", &self.k8s_pod_name);
        add("k8s.namespace.name", &self.k8s_namespace_name);
        explicit.extend(
            self.extra
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        );
        b.with_attributes(explicit).build()
    }
}

/// The kernel's host name (span resource `host.name`, audit `node`).
pub fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or
    // truncates, and we stop at the first NUL.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let s = String::from_utf8_lossy(&buf[..end]).into_owned();
    (!s.is_empty()).then_some(s)
}

/// Everything [`SpanPipeline::start`] needs.
#[derive(Clone, Debug)]
pub struct SpanConfig {
    /// OTLP endpoint (see the module docs for the environment fallbacks).
    pub endpoint: Option<String>,
    /// `None`: from the environment, else HTTP/protobuf.
    pub protocol: Option<OtlpProtocol>,
    /// Export timeout; `None`: from the environment, else 10 s.
    pub timeout: Option<Duration>,
    pub sampling: Sampling,
    /// Spans waiting for export at most; more are dropped and counted.
    pub queue: usize,
    /// Spans per export request at most.
    pub max_batch: usize,
    /// How long a span waits for its batch to fill.
    pub batch_delay: Duration,
    pub resource: ResourceInfo,
    /// Per-broker resources (see the module docs); `None`: every span gets `resource`.
    pub brokers: Option<BrokerLookup>,
}

impl Default for SpanConfig {
    fn default() -> Self {
        Self {
            endpoint: None,
            protocol: None,
            timeout: None,
            sampling: Sampling::default(),
            queue: 8192,
            max_batch: 512,
            batch_delay: Duration::from_secs(1),
            resource: ResourceInfo::default(),
            brokers: None,
        }
    }
}

/// Counters the caller exposes as metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpanStats {
    pub synth: SynthStats,
    /// Spans dropped because the export queue was full.
    pub dropped: u64,
    /// Spans the exporter delivered.
    pub exported: u64,
    /// Export requests that failed (their spans are lost).
    pub export_errors: u64,
    /// Spans in failed export requests.
    pub export_failed_spans: u64,
}

#[derive(Debug, Default)]
struct Counters {
    dropped: AtomicU64,
    exported: AtomicU64,
    export_errors: AtomicU64,
    export_failed_spans: AtomicU64,
}

/// Synthesis plus export; see the module docs.
pub struct SpanPipeline {
    synth: Synthesizer,
    tx: Option<SyncSender<Span>>,
    counters: Arc<Counters>,
    thread: Option<JoinHandle<()>>,
}

impl SpanPipeline {
    /// Builds the exporter (on the export thread) and starts that thread.
    pub fn start(config: SpanConfig) -> Result<Self, SpanError> {
        let protocol = match config.protocol {
            Some(p) => p,
            None => OtlpProtocol::from_env()?.unwrap_or(OtlpProtocol::HttpProtobuf),
        };
        let (tx, rx) = mpsc::sync_channel(config.queue.max(1));
        let counters = Arc::new(Counters::default());
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let thread_counters = counters.clone();
        let resource = config.resource.resource();
        let mut export = ExportLoop {
            base_info: config.resource.clone(),
            base: resource.clone(),
            brokers: config.brokers.clone(),
            resources: std::collections::HashMap::new(),
            max_batch: config.max_batch.max(1),
            batch_delay: config.batch_delay,
            counters: thread_counters,
            scope: InstrumentationScope::builder("brokerscope")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        };
        let endpoint = config.endpoint.clone();
        let timeout = config.timeout;
        let thread = std::thread::Builder::new()
            .name("brokerscope-spans".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready_tx.send(Err(SpanError::Runtime(e)));
                        return;
                    }
                };
                // tonic's channel needs the runtime while it is built.
                let built = {
                    let _guard = runtime.enter();
                    build_exporter(protocol, endpoint.as_deref(), timeout)
                };
                let mut exporter = match built {
                    Ok(x) => x,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                exporter.set_resource(&resource);
                let _ = ready_tx.send(Ok(()));
                export.run(&runtime, &mut exporter, rx);
                let _ = exporter.shutdown();
            })
            .map_err(SpanError::Thread)?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(SpanError::Config(
                    "the export thread died while starting".into(),
                ));
            }
        }
        Ok(Self {
            synth: Synthesizer::new(config.sampling),
            tx: Some(tx),
            counters,
            thread: Some(thread),
        })
    }

    /// Feeds one event, with what the correlator's `observe` returned for it.
    pub fn observe_event(&mut self, e: &BrokerEvent, awaits: Awaits) {
        let (tx, counters) = (&self.tx, &self.counters);
        self.synth
            .event(e, awaits, &mut |s| enqueue(tx.as_ref(), counters, s));
    }

    /// Feeds one observation and the event that completed it.
    pub fn observe(&mut self, o: &Observation, end: &BrokerEvent) {
        let (tx, counters) = (&self.tx, &self.counters);
        self.synth
            .observation(o, end, &mut |s| enqueue(tx.as_ref(), counters, s));
    }

    pub fn stats(&self) -> SpanStats {
        let c = &self.counters;
        SpanStats {
            synth: self.synth.stats().clone(),
            dropped: c.dropped.load(Ordering::Relaxed),
            exported: c.exported.load(Ordering::Relaxed),
            export_errors: c.export_errors.load(Ordering::Relaxed),
            export_failed_spans: c.export_failed_spans.load(Ordering::Relaxed),
        }
    }

    /// Exports what is queued, stops the export thread and returns the final counters.
    pub fn shutdown(mut self) -> SpanStats {
        self.stop();
        self.stats()
    }

    fn stop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for SpanPipeline {
    fn drop(&mut self) {
        self.stop();
    }
}

fn enqueue(tx: Option<&SyncSender<Span>>, counters: &Counters, span: Span) {
    let Some(tx) = tx else { return };
    match tx.try_send(span) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn build_exporter(
    protocol: OtlpProtocol,
    endpoint: Option<&str>,
    timeout: Option<Duration>,
) -> Result<opentelemetry_otlp::SpanExporter, SpanError> {
    let built = match protocol {
        OtlpProtocol::Grpc => {
            let mut b = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_protocol(Protocol::Grpc);
            if let Some(e) = endpoint {
                b = b.with_endpoint(e);
            }
            if let Some(t) = timeout {
                b = b.with_timeout(t);
            }
            b.build()
        }
        OtlpProtocol::HttpProtobuf => {
            let mut b = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary);
            if let Some(e) = endpoint {
                b = b.with_endpoint(http_traces_url(e));
            }
            if let Some(t) = timeout {
                b = b.with_timeout(t);
            }
            b.build()
        }
    };
    built.map_err(|e| SpanError::Exporter(e.to_string()))
}

/// A base URL gets the traces path, as `OTEL_EXPORTER_OTLP_ENDPOINT` does.
fn http_traces_url(endpoint: &str) -> String {
    let after_scheme = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest);
    match after_scheme.find('/') {
        Some(i) if after_scheme[i..] != *"/" => endpoint.to_owned(),
        _ => format!("{}/v1/traces", endpoint.trim_end_matches('/')),
    }
}

struct ExportLoop {
    base_info: ResourceInfo,
    base: Resource,
    brokers: Option<BrokerLookup>,
    /// Resources by [`BrokerMeta::id`], built once.
    resources: std::collections::HashMap<u64, Resource>,
    max_batch: usize,
    batch_delay: Duration,
    counters: Arc<Counters>,
    scope: InstrumentationScope,
}

impl ExportLoop {
    fn run(
        &mut self,
        runtime: &tokio::runtime::Runtime,
        exporter: &mut opentelemetry_otlp::SpanExporter,
        rx: Receiver<Span>,
    ) {
        let mut batch = Vec::with_capacity(self.max_batch);
        let mut open = true;
        while open {
            // Wait for a first span, then fill the batch until it is full or the delay passes.
            match rx.recv() {
                Ok(s) => batch.push(self.span_data(s)),
                Err(_) => break,
            }
            let deadline = Instant::now() + self.batch_delay;
            while batch.len() < self.max_batch {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(s) => batch.push(self.span_data(s)),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            self.export(runtime, exporter, &mut batch);
        }
        // Shutdown: whatever is still queued (the senders are gone, so this ends).
        for s in rx.try_iter() {
            batch.push(self.span_data(s));
            if batch.len() >= self.max_batch {
                self.export(runtime, exporter, &mut batch);
            }
        }
        self.export(runtime, exporter, &mut batch);
    }

    fn export(
        &mut self,
        runtime: &tokio::runtime::Runtime,
        exporter: &mut opentelemetry_otlp::SpanExporter,
        batch: &mut Vec<SpanData>,
    ) {
        if batch.is_empty() {
            return;
        }
        let spans = std::mem::replace(batch, Vec::with_capacity(self.max_batch));
        let Some(brokers) = self.brokers.clone() else {
            return self.send(runtime, exporter, spans);
        };
        // Group by broker identity (0: no container → the base resource), first-seen order.
        let mut groups: Vec<(Option<Arc<BrokerMeta>>, Vec<SpanData>)> = Vec::new();
        for span in spans {
            let meta = span
                .attributes
                .iter()
                .find(|kv| kv.key.as_str() == "process.pid")
                .and_then(|kv| match kv.value {
                    opentelemetry::Value::I64(pid) => u32::try_from(pid).ok(),
                    _ => None,
                })
                .and_then(|pid| (brokers.0)(pid));
            let id = meta.as_ref().map_or(0, |m| m.id);
            match groups
                .iter_mut()
                .find(|(m, _)| m.as_ref().map_or(0, |m| m.id) == id)
            {
                Some((_, g)) => g.push(span),
                None => groups.push((meta, vec![span])),
            }
        }
        for (meta, spans) in groups {
            let resource = match &meta {
                None => self.base.clone(),
                Some(m) => self.broker_resource(m),
            };
            exporter.set_resource(&resource);
            self.send(runtime, exporter, spans);
        }
        exporter.set_resource(&self.base);
    }

    /// The base resource with the broker's container and pod instead of the observer's.
    fn broker_resource(&mut self, m: &BrokerMeta) -> Resource {
        if self.resources.len() >= 1024 {
            self.resources.clear();
        }
        self.resources
            .entry(m.id)
            .or_insert_with(|| {
                let mut info = ResourceInfo {
                    container_id: None,
                    k8s_pod_name: None,
                    k8s_namespace_name: None,
                    ..self.base_info.clone()
                };
                info.extra.splice(0..0, m.resource_attributes());
                info.resource()
            })
            .clone()
    }

    fn send(
        &self,
        runtime: &tokio::runtime::Runtime,
        exporter: &opentelemetry_otlp::SpanExporter,
        spans: Vec<SpanData>,
    ) {
        let n = spans.len() as u64;
        match runtime.block_on(exporter.export(spans)) {
            Ok(()) => {
                self.counters.exported.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::debug!(error = %e, spans = n, "span export failed");
                self.counters.export_errors.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .export_failed_spans
                    .fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    fn span_data(&self, s: Span) -> SpanData {
        let time = |ns: u64| SystemTime::UNIX_EPOCH + Duration::from_nanos(ns);
        let trace_state = s
            .trace_state
            .as_deref()
            .and_then(|t| t.parse::<TraceState>().ok())
            .unwrap_or_default();
        SpanData {
            span_context: SpanContext::new(
                s.trace_id,
                s.span_id,
                TraceFlags::SAMPLED,
                false,
                trace_state,
            ),
            parent_span_id: s.parent_span_id.unwrap_or(SpanId::INVALID),
            parent_span_is_remote: s.parent_is_remote,
            span_kind: s.kind,
            name: Cow::Owned(s.name),
            start_time: time(s.start_ns),
            end_time: time(s.end_ns),
            attributes: s.attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: match s.error {
                Some(e) => Status::error(e),
                None => Status::Unset,
            },
            instrumentation_scope: self.scope.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_endpoints_get_the_traces_path_only_when_they_have_none() {
        assert_eq!(
            http_traces_url("http://127.0.0.1:4318"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            http_traces_url("http://127.0.0.1:4318/"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            http_traces_url("http://collector/custom/path"),
            "http://collector/custom/path"
        );
    }

    #[test]
    fn protocols_parse() {
        assert_eq!(OtlpProtocol::parse("grpc").unwrap(), OtlpProtocol::Grpc);
        assert_eq!(
            OtlpProtocol::parse("http/protobuf").unwrap(),
            OtlpProtocol::HttpProtobuf
        );
        assert!(OtlpProtocol::parse("http/json").is_err());
    }
}
