//! `brokerscope run`: the daemon. Finds the brokers (or takes selectors), captures, decodes,
//! correlates, and serves `/metrics`, `/healthz`, `/readyz` and `/health` until stopped.
//!
//! Threads: this one runs capture → decode → correlate → metrics; the HTTP server has its own
//! (a busy decode loop never delays a health probe). They share [`Metrics`] (atomics) and a
//! health snapshot refreshed every second.
use std::{
    collections::{BTreeMap, HashMap},
    process::ExitCode,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use observer::{
    audit::{AuditContext, AuditLevel, AuditSink, Workload, from_event},
    k8s::{ApiClient, ApiConfig, Brokers, CacheConfig, PodCache, Refresher},
    spans::{BrokerLookup, OtlpProtocol, ResourceInfo, Sampling, SpanConfig, SpanPipeline},
};
use observer::{
    capture::{CaptureSession, StreamEvent, StreamSink, TargetSpec},
    correlate::{Correlator, CorrelatorConfig},
    daemon::{
        config::{AuditLevelName, Config, RunArgs},
        http::{HttpServer, HttpState},
        logging,
    },
    event::{BrokerEvent, EventKind, System},
    metrics::{Metrics, Recorder, labels::Labeler},
    protocol::{EventSink, infer::Inference, pipeline::DecodePipeline},
};
use serde_json::json;
use tracing::{info, warn};

use crate::Usage;

/// How often health counters, gauges and correlation TTLs are brought up to date.
const TICK: Duration = Duration::from_secs(1);
/// `/readyz` fails when the capture loop has not ticked for this long.
const STALL: Duration = Duration::from_secs(10);

/// What the HTTP thread reads.
struct Shared {
    metrics: Arc<Metrics>,
    snapshot: Mutex<serde_json::Value>,
    started: Instant,
    /// Milliseconds since `started` of the last capture-loop tick; 0 = not attached yet.
    last_tick_ms: AtomicU64,
}

impl HttpState for Shared {
    fn metrics(&self) -> String {
        self.metrics.encode()
    }

    fn health(&self) -> serde_json::Value {
        let mut v = self.snapshot.lock().expect("snapshot lock").clone();
        v["uptime_seconds"] = json!(self.started.elapsed().as_secs_f64());
        v["ready"] = json!(self.ready().is_ok());
        v
    }

    fn ready(&self) -> Result<(), String> {
        let last = self.last_tick_ms.load(Ordering::Relaxed);
        if last == 0 {
            return Err("eBPF programs not attached yet".into());
        }
        let behind = self.started.elapsed().as_millis() as u64 - last;
        if behind > STALL.as_millis() as u64 {
            return Err(format!("capture loop stalled for {behind} ms"));
        }
        Ok(())
    }
}

/// The audit trail: events → records → file or stdout.
struct Audit {
    context: AuditContext,
    level: AuditLevel,
    sink: AuditSink,
    /// Sink totals already added to the metrics.
    counted: (u64, u64),
}

/// Decoded events → correlator → metrics (and audit records).
struct Observe {
    recorder: Recorder,
    correlator: Correlator,
    audit: Option<Audit>,
    spans: Option<SpanPipeline>,
    /// Span pipeline totals already added to the metrics.
    spans_counted: (u64, u64, u64),
    events: u64,
    /// Broker pid → container and pod (shared with audit, spans and metric labels).
    brokers: Arc<Brokers>,
    /// Kubernetes cache totals already added to the metrics (hits, misses, errors, API
    /// errors, evictions).
    k8s_counted: [u64; 5],
}

impl EventSink for Observe {
    fn event(&mut self, e: &BrokerEvent) {
        self.events += 1;
        self.recorder.event(e);
        if let Some(a) = &self.audit {
            a.sink.write_all(&from_event(e, &a.context, a.level));
        }
        let mut matched = 0;
        let (recorder, spans) = (&mut self.recorder, &mut self.spans);
        let awaits = self.correlator.observe(e, &mut |o| {
            matched += 1;
            recorder.observation(&o);
            if let Some(spans) = spans.as_mut() {
                spans.observe(&o, e);
            }
        });
        if let Some(spans) = spans.as_mut() {
            spans.observe_event(e, awaits);
        }
        let settles = matches!(
            e.kind,
            EventKind::Confirm | EventKind::Ack | EventKind::Nack | EventKind::Reject
        );
        // A settlement of something we never saw still counts as one message (except Kafka
        // commits: a repeated commit settles nothing new).
        if matched == 0 && settles && !(e.system == System::Kafka && e.kind == EventKind::Ack) {
            self.recorder.unmatched_settlement(e);
        }
    }
}

/// Times the decode stage and logs target changes.
struct Timed<'a, S> {
    inner: &'a mut S,
    metrics: &'a Metrics,
    brokers: &'a Brokers,
}

impl<S: StreamSink> StreamSink for Timed<'_, S> {
    fn event(&mut self, event: StreamEvent<'_>) {
        match &event {
            StreamEvent::TargetAdded { target } => log_target(target, self.brokers),
            StreamEvent::TargetRemoved { pid } => {
                info!(pid, "broker process gone");
                self.brokers.forget(*pid);
            }
            _ => {}
        }
        let start = Instant::now();
        self.inner.event(event);
        self.metrics
            .decode_seconds
            .inc_by(start.elapsed().as_secs_f64());
    }
}

/// The audit trail the configuration asks for, if any.
fn audit_trail(config: &Config, brokers: &Arc<Brokers>) -> anyhow::Result<Option<Audit>> {
    let a = &config.audit;
    let sink = match (&a.file, a.stdout) {
        (Some(path), _) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    anyhow::anyhow!(
                        "cannot create the audit directory {}: {e}; create it or choose another --audit-file",
                        dir.display()
                    )
                })?;
            }
            AuditSink::file(path, a.max_bytes, a.keep)?
        }
        (None, true) => AuditSink::stdout(),
        (None, false) => return Ok(None),
    };
    let proc = observer::capture::procfs::ProcFs::default();
    let brokers = brokers.clone();
    let context = AuditContext::new(host_name())
        .with_executable(move |pid| {
            std::fs::read_link(proc.root().join(pid.to_string()).join("exe"))
                .ok()
                .map(|p| p.display().to_string())
        })
        .with_workload(move |pid| {
            let b = brokers.resolve(pid)?;
            Some(Workload {
                container_id: b.container_id.clone(),
                container_name: b.container_name.clone(),
                pod_name: b.pod_name.clone(),
                pod_namespace: b.pod_namespace.clone(),
                pod_uid: b.pod_uid.clone(),
                workload_kind: b.workload_kind.clone(),
                workload_name: b.workload_name.clone(),
            })
        });
    let level = match a.level {
        AuditLevelName::Standard => AuditLevel::Standard,
        AuditLevelName::Full => AuditLevel::Full,
    };
    info!(
        sink = a.file.as_ref().map_or("stdout".into(), |p| p.display().to_string()),
        level = ?level,
        "writing audit records"
    );
    Ok(Some(Audit {
        context,
        level,
        sink,
        counted: (0, 0),
    }))
}

/// The OTLP span pipeline the configuration asks for, if any.
fn span_pipeline(config: &Config, brokers: &Arc<Brokers>) -> anyhow::Result<Option<SpanPipeline>> {
    let c = &config.spans;
    let env_endpoint = [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()));
    if !(c.enabled || c.endpoint.is_some() || env_endpoint) {
        return Ok(None);
    }
    let protocol = c
        .protocol
        .as_deref()
        .map(|p| OtlpProtocol::parse(if p == "http" { "http/protobuf" } else { p }))
        .transpose()?;
    let me = observer::capture::container::container_of(
        &observer::capture::procfs::ProcFs::default(),
        std::process::id(),
    );
    let pipeline = SpanPipeline::start(SpanConfig {
        endpoint: c.endpoint.clone(),
        protocol,
        sampling: Sampling {
            ratio: c.sample_ratio,
            keep_slower_than: c
                .keep_slower_than_ms
                .map(|ms| Duration::from_secs_f64(ms / 1e3)),
            keep_errors: c.keep_errors,
        },
        queue: c.queue,
        resource: ResourceInfo {
            service_name: (c.service_name != "brokerscope").then(|| c.service_name.clone()),
            host_name: Some(host_name()),
            container_id: me.id,
            k8s_pod_name: me.pod_name,
            k8s_namespace_name: me.pod_namespace,
            extra: Vec::new(),
        },
        brokers: Some({
            let brokers = brokers.clone();
            BrokerLookup(Arc::new(move |pid| brokers.resolve(pid)))
        }),
        ..SpanConfig::default()
    })?;
    info!(
        endpoint = c
            .endpoint
            .as_deref()
            .unwrap_or("(from OTEL_EXPORTER_OTLP_* or default)"),
        ratio = c.sample_ratio,
        "exporting spans over OTLP"
    );
    Ok(Some(pipeline))
}

/// This node's name (audit `node`, span resource `host.name`).
fn host_name() -> String {
    observer::spans::export::host_name().unwrap_or_else(|| "unknown".into())
}

fn log_target(target: &observer::capture::targets::Target, brokers: &Brokers) {
    let b = brokers.resolve(target.pid);
    let b = b.as_deref();
    info!(
        pid = target.pid,
        comm = %target.comm,
        kind = target.kind.map(|k| k.as_str()).unwrap_or("selected"),
        ports = ?target.ports,
        container = b.and_then(|b| b.container_id.as_deref()).unwrap_or(""),
        pod = b.and_then(|b| b.pod_name.as_deref()).unwrap_or(""),
        namespace = b.and_then(|b| b.pod_namespace.as_deref()).unwrap_or(""),
        "watching broker process"
    );
}

/// Broker pid → container and pod: /proc, plus the Kubernetes API when it is on (its
/// refresh thread is returned so it lives as long as the daemon).
fn kubernetes(config: &Config) -> anyhow::Result<(Arc<Brokers>, Option<Refresher>)> {
    use observer::daemon::config::KubernetesMode;
    let k = &config.kubernetes;
    let proc = observer::capture::procfs::ProcFs::default();
    let Some(url) = k.api(|v| std::env::var(v).ok()) else {
        if k.enabled == KubernetesMode::On {
            return Err(Usage(
                "kubernetes.enabled = on but no API server is known: give --kube-api-url, or run in a pod (KUBERNETES_SERVICE_HOST)".into(),
            )
            .into());
        }
        return Ok((Arc::new(Brokers::new(proc, None)), None));
    };
    let client = ApiClient::new(&ApiConfig {
        url: url.clone(),
        token_file: Some(k.token_file.clone()),
        ca_file: Some(k.ca_file.clone()),
        timeout: Duration::from_secs(10),
    })
    .map_err(|e| Usage(e.to_string()))?;
    let node = k.node_name.clone().unwrap_or_else(host_name);
    info!(api = %url, node = %node, "reading broker pod metadata from the Kubernetes API");
    let refresher = PodCache::start(
        client,
        CacheConfig {
            node,
            refresh: Duration::from_secs_f64(k.refresh_seconds),
            ..CacheConfig::default()
        },
    )?;
    // Give the first pod list a moment, so the first events already carry pod labels (a
    // slow or failing API only delays the start, it never stops it).
    let deadline = Instant::now() + Duration::from_secs(3);
    while refresher.cache().generation() == 0
        && refresher
            .cache()
            .stats()
            .api_errors
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let brokers = Arc::new(Brokers::new(proc, Some(refresher.cache().clone())));
    Ok((brokers, Some(refresher)))
}

struct UserRule(observer::daemon::config::DestinationRule);

impl observer::metrics::labels::Rule for UserRule {
    fn apply(&self, name: &str) -> Option<String> {
        self.0.apply(name)
    }
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args).map_err(|e| Usage(e.to_string()))?;
    if args.print_config {
        print!("{}", config.to_toml());
        return Ok(ExitCode::SUCCESS);
    }
    logging::init(config.log.format, &config.log.level).map_err(|e| Usage(e.to_string()))?;
    let spec = TargetSpec {
        pids: config.targets.pids.clone(),
        names: config.targets.processes.clone(),
        ports: config.targets.ports.clone(),
        discover: config.targets.discover,
    };
    if spec.is_empty() {
        return Err(Usage(
            "nothing to watch: auto-discovery is off and no --pid, --process or --port was given"
                .into(),
        )
        .into());
    }
    let forced: HashMap<u16, System> = config
        .protocols
        .iter()
        .map(|(port, name)| {
            System::parse(name).map(|s| (*port, s)).ok_or_else(|| {
                Usage(format!(
                    "protocol {name:?} for port {port}: use amqp, mqtt, nats or kafka"
                ))
            })
        })
        .collect::<Result<_, _>>()?;

    let metrics = Arc::new(Metrics::new());
    metrics.init_known_series();
    let shared = Arc::new(Shared {
        metrics: metrics.clone(),
        snapshot: Mutex::new(json!({"status": "starting", "version": env!("CARGO_PKG_VERSION")})),
        started: Instant::now(),
        last_tick_ms: AtomicU64::new(0),
    });
    let server = HttpServer::start(config.listen, shared.clone())?;

    let session_config = observer::capture::session::SessionConfig {
        kernel: observer::capture::KernelConfig {
            ring_bytes: config.capture.ring_size,
            capture_cap: config.capture.capture_cap,
            track_outgoing: config.capture.outgoing,
            ring_wake_bytes: None,
        },
        cgroup_root: config.capture.cgroup_root.clone(),
        ..Default::default()
    };
    let mut session = CaptureSession::start(spec, session_config)?;
    if session.targets().next().is_none() {
        info!("no broker process found yet; waiting for one to start");
    }
    let (brokers, _refresher) = kubernetes(&config)?;
    for target in session.targets() {
        log_target(target, &brokers);
    }
    let labeler = Labeler::new(
        config.metrics.max_destinations,
        config
            .metrics
            .destination_rules
            .iter()
            .cloned()
            .map(|r| {
                Box::new(UserRule(r)) as Box<dyn observer::metrics::labels::Rule + Send + Sync>
            })
            .collect(),
    );
    let audit = audit_trail(&config, &brokers)?;
    let spans = span_pipeline(&config, &brokers)?;
    let mut recorder = Recorder::new(metrics.clone(), labeler);
    if config.kubernetes.metric_labels {
        recorder = recorder.with_broker_labels(brokers.clone());
    }
    let observe = Observe {
        recorder,
        correlator: Correlator::new(CorrelatorConfig {
            max_pending: config.correlation.pending_max,
            ttl_ns: (config.correlation.pending_ttl_seconds * 1e9) as u64,
        })
        // Spans need the start event of each observation; metrics alone do not.
        .keeping_message_info(spans.is_some()),
        audit,
        spans,
        spans_counted: (0, 0, 0),
        events: 0,
        brokers: brokers.clone(),
        k8s_counted: [0; 5],
    };
    let mut pipeline = DecodePipeline::new(Inference::new(forced), observe);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let deadline = config
        .duration_seconds
        .map(|s| Instant::now() + Duration::from_secs_f64(s));
    let result = runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut stopped = false;
        while !stopped {
            let tick = async {
                let mut wait = TICK;
                if let Some(d) = deadline {
                    wait = wait.min(d.saturating_duration_since(Instant::now()));
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => false,
                    _ = tokio::signal::ctrl_c() => true,
                    _ = term.recv() => true,
                }
            };
            let mut stop_now = false;
            let stop = async {
                stop_now = tick.await;
            };
            let mut timed = Timed {
                inner: &mut pipeline,
                metrics: &metrics,
                brokers: &brokers,
            };
            session.run(&mut timed, stop).await?;
            stopped = stop_now || deadline.is_some_and(|d| Instant::now() >= d);
            update(&session, &mut pipeline, &shared);
        }
        anyhow::Ok(())
    });
    info!("stopping: reading what the kernel still holds");
    let mut timed = Timed {
        inner: &mut pipeline,
        metrics: &metrics,
        brokers: &brokers,
    };
    let _ = session.catch_up(&mut timed, Duration::from_millis(500));
    session.close_all(&mut timed);
    update(&session, &mut pipeline, &shared);
    if let Some(spans) = pipeline.sink_mut().spans.take() {
        let s = spans.shutdown();
        info!(
            exported = s.exported,
            dropped = s.dropped,
            export_errors = s.export_errors,
            "span export finished"
        );
    }
    if let Some(a) = &pipeline.sink().audit {
        // Requests still waiting for an answer are recorded with outcome unknown.
        a.sink.write_all(&a.context.flush_pending(u64::MAX));
        if let Err(e) = a.sink.flush() {
            warn!(error = %e, "flushing the audit trail");
        }
    }
    server.shutdown();
    result?;
    Ok(ExitCode::SUCCESS)
}

/// Brings health counters, gauges and the /health snapshot up to date; expires correlations.
fn update(session: &CaptureSession, pipeline: &mut DecodePipeline<Observe>, shared: &Shared) {
    let kernel = match session.kernel_counters() {
        Ok(k) => Some(k),
        Err(e) => {
            warn!(error = %e, "reading kernel counters");
            None
        }
    };
    let stats = pipeline.stats();
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let observe = pipeline.sink_mut();
    observe.correlator.expire(now_ns);
    if let Some(spans) = &observe.spans {
        let s = spans.stats();
        let m = &shared.metrics;
        let (exported, dropped, errors) = observe.spans_counted;
        m.spans_exported.inc_by(s.exported - exported);
        m.spans_dropped.inc_by(s.dropped - dropped);
        m.span_export_errors.inc_by(s.export_errors - errors);
        observe.spans_counted = (s.exported, s.dropped, s.export_errors);
    }
    if let Some(cache) = observe.brokers.cache() {
        use std::sync::atomic::Ordering::Relaxed;
        let s = cache.stats();
        let now = [
            s.hits.load(Relaxed),
            s.misses.load(Relaxed),
            s.errors.load(Relaxed),
            s.api_errors.load(Relaxed),
            s.evictions.load(Relaxed),
        ];
        let before = observe.k8s_counted;
        let m = &shared.metrics;
        for (i, result) in ["hit", "miss", "error"].into_iter().enumerate() {
            m.kubernetes_lookups
                .get_or_create(&vec![("result", result.to_owned())])
                .inc_by(now[i] - before[i]);
        }
        m.kubernetes_api_errors.inc_by(now[3] - before[3]);
        m.kubernetes_evictions.inc_by(now[4] - before[4]);
        observe.k8s_counted = now;
    }
    if let Some(a) = &mut observe.audit {
        let (records, errors) = (a.sink.records(), a.sink.errors());
        let m = &shared.metrics;
        m.audit_records.inc_by(records - a.counted.0);
        m.audit_errors.inc_by(errors - a.counted.1);
        a.counted = (records, errors);
    }
    let targets: Vec<_> = session.targets().collect();
    observe.recorder.health(
        kernel.as_ref(),
        session.stats(),
        &stats,
        &observe.correlator,
        targets.len(),
    );
    let corr = observe.correlator.stats();
    let loss: BTreeMap<&str, u64> = kernel
        .iter()
        .flat_map(|k| k.iter())
        .filter(|(c, _)| {
            use observer_common::Counter as C;
            matches!(
                c,
                C::ChunksLost | C::BytesLost | C::BytesTruncated | C::ControlLost | C::CopyFailures
            )
        })
        .map(|(c, v)| (c.name(), v))
        .collect();
    let s = session.stats();
    let snapshot = json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "targets": targets.iter().map(|t| json!({
            "pid": t.pid,
            "comm": t.comm,
            "kind": t.kind.map(|k| k.as_str()),
            "ports": t.ports,
        })).collect::<Vec<_>>(),
        "connections": {
            "open": session.open_connections(),
            "decoded": stats.connections_decoded.iter().map(|(s, n)| (s.as_str(), *n)).collect::<BTreeMap<_, _>>(),
            "unknown": stats.connections_unknown,
            "unsupported": stats.connections_unsupported,
        },
        "loss": {
            "kernel": loss,
            "gap_bytes_lost": s.gap_bytes_lost,
            "gap_bytes_truncated": s.gap_bytes_truncated,
            "gap_bytes_unknown": s.gap_bytes_unknown,
        },
        "decoder": {
            "events": observe.events,
            "frames": stats.decoder.frames,
            "malformed": stats.decoder.malformed,
            "resyncs": stats.decoder.resyncs,
            "oversize": stats.decoder.oversize,
        },
        "correlation": {
            "evicted": observer::correlate::Relation::ALL.iter().map(|r| (r.as_str(), corr.evicted(*r))).collect::<BTreeMap<_, _>>(),
            "unmatched": observer::correlate::Relation::ALL.iter().map(|r| (r.as_str(), corr.unmatched(*r))).collect::<BTreeMap<_, _>>(),
        },
    });
    *shared.snapshot.lock().expect("snapshot lock") = snapshot;
    shared.last_tick_ms.store(
        (shared.started.elapsed().as_millis() as u64).max(1),
        Ordering::Relaxed,
    );
}
