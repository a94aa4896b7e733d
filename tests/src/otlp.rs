//! A real OTLP trace receiver for the end-to-end tests: what `brokerscope run` exports with span
//! export on arrives here, over either OTLP transport, and comes back flattened.
//!
//! - [`OtlpReceiver::start_http`]: HTTP/1.1 (hyper) on 127.0.0.1:0, `POST /v1/traces` with an
//!   `application/x-protobuf` ExportTraceServiceRequest body, plain or `Content-Encoding: gzip`;
//!   answered `200` with an empty ExportTraceServiceResponse. Anything else is answered with an
//!   error status (404 other paths, 405 other methods, 415 other content types, 400 bodies that
//!   do not decode) and recorded in [`OtlpReceiver::errors`].
//! - [`OtlpReceiver::start_grpc`]: a tonic server implementing
//!   `opentelemetry.proto.collector.trace.v1.TraceService/Export` on 127.0.0.1:0, accepting
//!   gzip-compressed messages.
//!
//! Each runs on its own thread with its own current-thread tokio runtime and stops (the thread
//! joined) when the receiver is dropped. The protobuf types are opentelemetry-proto 0.31's, the
//! release line of the opentelemetry-otlp exporter brokerscope uses.
use std::{
    collections::BTreeMap,
    fmt,
    io::Read,
    net::SocketAddr,
    sync::{Arc, Mutex},
    thread,
    time::Duration,
};

use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode, body::Bytes, service::service_fn};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, KeyValue, any_value},
    trace::v1::{span::SpanKind, status::StatusCode as OtlpStatusCode},
};
use prost::Message;
use tokio::sync::oneshot;

use crate::wait_until;

/// An attribute value as OTLP carries it.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    Str(String),
    Int(i64),
    Bool(bool),
    Double(f64),
    Bytes(Vec<u8>),
    Array(Vec<AttrValue>),
    Map(BTreeMap<String, AttrValue>),
    /// An AnyValue with no value set.
    Empty,
}

impl AttrValue {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Self::Int(i) => Some(*i),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Self::Bool(b) => Some(*b),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Self::Double(d) => Some(*d),
            _ => None,
        }
    }
}

impl fmt::Display for AttrValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Str(s) => write!(f, "{s:?}"),
            Self::Int(i) => write!(f, "{i}"),
            Self::Bool(b) => write!(f, "{b}"),
            Self::Double(d) => write!(f, "{d}"),
            Self::Bytes(b) => write!(f, "0x{}", hex(b)),
            Self::Array(a) => {
                write!(f, "[")?;
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{v}")?;
                }
                write!(f, "]")
            }
            Self::Map(m) => write!(f, "{m:?}"),
            Self::Empty => write!(f, "(empty)"),
        }
    }
}

impl From<&str> for AttrValue {
    fn from(s: &str) -> Self {
        Self::Str(s.to_string())
    }
}
impl From<i64> for AttrValue {
    fn from(i: i64) -> Self {
        Self::Int(i)
    }
}
impl From<bool> for AttrValue {
    fn from(b: bool) -> Self {
        Self::Bool(b)
    }
}
impl From<f64> for AttrValue {
    fn from(d: f64) -> Self {
        Self::Double(d)
    }
}

pub type Attributes = BTreeMap<String, AttrValue>;

/// A span event.
#[derive(Clone, Debug, PartialEq)]
pub struct ReceivedEvent {
    pub name: String,
    pub time_ns: u64,
    pub attributes: Attributes,
}

/// A span link.
#[derive(Clone, Debug, PartialEq)]
pub struct ReceivedLink {
    /// Lowercase hex.
    pub trace_id: String,
    /// Lowercase hex.
    pub span_id: String,
    pub trace_state: String,
    pub attributes: Attributes,
}

/// One span as received, with its resource and instrumentation scope flattened in.
#[derive(Clone, Debug, PartialEq)]
pub struct ReceivedSpan {
    /// Which receiver got it.
    pub transport: Transport,
    /// The resource's attributes (`service.name`, …).
    pub resource: Attributes,
    pub scope_name: String,
    pub scope_version: String,
    pub name: String,
    /// "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER", "UNSPECIFIED" (or the number).
    pub kind: String,
    /// Lowercase hex, 32 digits.
    pub trace_id: String,
    /// Lowercase hex, 16 digits.
    pub span_id: String,
    /// Lowercase hex; empty for a root span.
    pub parent_span_id: String,
    pub trace_state: String,
    pub flags: u32,
    pub start_ns: u64,
    pub end_ns: u64,
    pub attributes: Attributes,
    /// "UNSET", "OK", "ERROR" (or the number); "UNSET" when no status was sent.
    pub status_code: String,
    pub status_message: String,
    pub events: Vec<ReceivedEvent>,
    pub links: Vec<ReceivedLink>,
    pub dropped_attributes: u32,
    pub dropped_events: u32,
    pub dropped_links: u32,
}

impl ReceivedSpan {
    pub fn attr(&self, key: &str) -> Option<&AttrValue> {
        self.attributes.get(key)
    }
    pub fn attr_str(&self, key: &str) -> Option<&str> {
        self.attr(key)?.as_str()
    }
    pub fn attr_i64(&self, key: &str) -> Option<i64> {
        self.attr(key)?.as_i64()
    }
    pub fn attr_bool(&self, key: &str) -> Option<bool> {
        self.attr(key)?.as_bool()
    }
    pub fn resource_str(&self, key: &str) -> Option<&str> {
        self.resource.get(key)?.as_str()
    }
    pub fn duration_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }
}

/// The two OTLP transports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Http,
    Grpc,
}

/// One export request that was accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestInfo {
    pub transport: Transport,
    /// HTTP `Content-Type` (gRPC: `application/grpc…`).
    pub content_type: Option<String>,
    /// HTTP `Content-Encoding`, or gRPC `grpc-encoding` (e.g. "gzip").
    pub encoding: Option<String>,
    pub user_agent: Option<String>,
    /// Size of the protobuf message after decompression.
    pub message_bytes: usize,
    pub spans: usize,
}

#[derive(Default)]
struct State {
    spans: Vec<ReceivedSpan>,
    requests: Vec<RequestInfo>,
    errors: Vec<String>,
}

type Shared = Arc<Mutex<State>>;

/// A running receiver; stopped on drop.
pub struct OtlpReceiver {
    pub transport: Transport,
    pub addr: SocketAddr,
    state: Shared,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl OtlpReceiver {
    /// An OTLP/HTTP (protobuf) receiver on 127.0.0.1, a free port.
    pub fn start_http() -> Self {
        Self::start(Transport::Http)
    }

    /// An OTLP/gRPC receiver on 127.0.0.1, a free port.
    pub fn start_grpc() -> Self {
        Self::start(Transport::Grpc)
    }

    fn start(transport: Transport) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Shared::default();
        let (stop_tx, stop_rx) = oneshot::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let st = state.clone();
        let thread = thread::Builder::new()
            .name(format!("otlp-{transport:?}-{}", addr.port()))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    let _ = ready_tx.send(());
                    match transport {
                        Transport::Http => serve_http(listener, st, stop_rx).await,
                        Transport::Grpc => serve_grpc(listener, st, stop_rx).await,
                    }
                });
            })
            .expect("spawn receiver thread");
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("OTLP receiver thread did not start");
        Self {
            transport,
            addr,
            state,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// What to give OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:PORT` (the HTTP exporter
    /// appends `/v1/traces` itself).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The full URL of the traces signal (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT for HTTP).
    pub fn traces_endpoint(&self) -> String {
        match self.transport {
            Transport::Http => format!("http://{}/v1/traces", self.addr),
            Transport::Grpc => self.endpoint(),
        }
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.state.lock().unwrap().spans.clone()
    }

    /// Export requests accepted so far.
    pub fn requests(&self) -> usize {
        self.state.lock().unwrap().requests.len()
    }

    /// Details of every accepted export request.
    pub fn request_log(&self) -> Vec<RequestInfo> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Requests refused (wrong path, method, content type, undecodable body): a well-behaved
    /// exporter causes none.
    pub fn errors(&self) -> Vec<String> {
        self.state.lock().unwrap().errors.clone()
    }

    /// Polls until `pred` holds for the spans received so far, or `timeout` passes; returns the
    /// spans either way (check `pred` again, or use [`OtlpReceiver::expect_spans`]).
    pub fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        wait_until(timeout, || pred(&self.state.lock().unwrap().spans));
        self.spans()
    }

    /// Like [`OtlpReceiver::wait_for`], panicking with what did arrive when `pred` never holds.
    pub fn expect_spans(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let spans = self.wait_for(timeout, &pred);
        if !pred(&spans) {
            let names: Vec<_> = spans.iter().map(|s| (&s.name, &s.kind)).collect();
            panic!(
                "OTLP {:?} receiver at {}: {what} not seen within {timeout:?}; {} requests, \
                 {} spans {names:?}, errors {:?}",
                self.transport,
                self.addr,
                self.requests(),
                spans.len(),
                self.errors()
            );
        }
        spans
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Lowercase hex of `b`.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn any_value(v: Option<&AnyValue>) -> AttrValue {
    use any_value::Value;
    match v.and_then(|v| v.value.as_ref()) {
        None => AttrValue::Empty,
        Some(Value::StringValue(s)) => AttrValue::Str(s.clone()),
        Some(Value::BoolValue(b)) => AttrValue::Bool(*b),
        Some(Value::IntValue(i)) => AttrValue::Int(*i),
        Some(Value::DoubleValue(d)) => AttrValue::Double(*d),
        Some(Value::BytesValue(b)) => AttrValue::Bytes(b.clone()),
        Some(Value::ArrayValue(a)) => {
            AttrValue::Array(a.values.iter().map(|v| any_value(Some(v))).collect())
        }
        Some(Value::KvlistValue(kv)) => AttrValue::Map(attributes(&kv.values)),
    }
}

fn attributes(kvs: &[KeyValue]) -> Attributes {
    kvs.iter()
        .map(|kv| (kv.key.clone(), any_value(kv.value.as_ref())))
        .collect()
}

/// Flattens a request into spans (resource and scope copied onto each).
pub fn flatten(req: &ExportTraceServiceRequest, transport: Transport) -> Vec<ReceivedSpan> {
    let mut out = Vec::new();
    for rs in &req.resource_spans {
        let resource = rs
            .resource
            .as_ref()
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        for ss in &rs.scope_spans {
            let (scope_name, scope_version) = ss
                .scope
                .as_ref()
                .map(|s| (s.name.clone(), s.version.clone()))
                .unwrap_or_default();
            for s in &ss.spans {
                let kind = match SpanKind::try_from(s.kind) {
                    Ok(k) => k.as_str_name().trim_start_matches("SPAN_KIND_").to_string(),
                    Err(_) => s.kind.to_string(),
                };
                let (status_code, status_message) = match &s.status {
                    Some(st) => (
                        match OtlpStatusCode::try_from(st.code) {
                            Ok(c) => c
                                .as_str_name()
                                .trim_start_matches("STATUS_CODE_")
                                .to_string(),
                            Err(_) => st.code.to_string(),
                        },
                        st.message.clone(),
                    ),
                    None => ("UNSET".to_string(), String::new()),
                };
                out.push(ReceivedSpan {
                    transport,
                    resource: resource.clone(),
                    scope_name: scope_name.clone(),
                    scope_version: scope_version.clone(),
                    name: s.name.clone(),
                    kind,
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: hex(&s.parent_span_id),
                    trace_state: s.trace_state.clone(),
                    flags: s.flags,
                    start_ns: s.start_time_unix_nano,
                    end_ns: s.end_time_unix_nano,
                    attributes: attributes(&s.attributes),
                    status_code,
                    status_message,
                    events: s
                        .events
                        .iter()
                        .map(|e| ReceivedEvent {
                            name: e.name.clone(),
                            time_ns: e.time_unix_nano,
                            attributes: attributes(&e.attributes),
                        })
                        .collect(),
                    links: s
                        .links
                        .iter()
                        .map(|l| ReceivedLink {
                            trace_id: hex(&l.trace_id),
                            span_id: hex(&l.span_id),
                            trace_state: l.trace_state.clone(),
                            attributes: attributes(&l.attributes),
                        })
                        .collect(),
                    dropped_attributes: s.dropped_attributes_count,
                    dropped_events: s.dropped_events_count,
                    dropped_links: s.dropped_links_count,
                });
            }
        }
    }
    out
}

fn record(state: &Shared, req: &ExportTraceServiceRequest, mut info: RequestInfo) {
    let spans = flatten(req, info.transport);
    info.spans = spans.len();
    let mut s = state.lock().unwrap();
    s.spans.extend(spans);
    s.requests.push(info);
}

fn error(state: &Shared, why: String) {
    state.lock().unwrap().errors.push(why);
}

// ---- HTTP ----

async fn serve_http(
    listener: tokio::net::TcpListener,
    state: Shared,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    error(&state, format!("accept: {e}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        // Connection tasks are dropped with the runtime when the receiver stops.
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(handle_http(&state, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

fn header(req: &Request<hyper::body::Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

async fn handle_http(state: &Shared, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let what = format!("{} {}", req.method(), req.uri());
    let refuse = |status: StatusCode, why: String| {
        error(state, format!("{what}: {why}"));
        reply(status, "text/plain", why.into_bytes())
    };
    if req.uri().path() != "/v1/traces" {
        return refuse(StatusCode::NOT_FOUND, "only /v1/traces is served".into());
    }
    if req.method() != hyper::Method::POST {
        return refuse(StatusCode::METHOD_NOT_ALLOWED, "POST only".into());
    }
    let content_type = header(&req, "content-type");
    let media = content_type
        .as_deref()
        .and_then(|c| c.split(';').next())
        .map(|c| c.trim().to_ascii_lowercase());
    if media.as_deref() != Some("application/x-protobuf") {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("content-type {content_type:?}: only application/x-protobuf"),
        );
    }
    let encoding = header(&req, "content-encoding");
    let user_agent = header(&req, "user-agent");
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("reading body: {e}")),
    };
    let message = match encoding.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("identity") => body.to_vec(),
        Some("gzip") => {
            let mut out = Vec::new();
            if let Err(e) = flate2::read::MultiGzDecoder::new(&body[..]).read_to_end(&mut out) {
                return refuse(StatusCode::BAD_REQUEST, format!("gunzip: {e}"));
            }
            out
        }
        Some(other) => {
            return refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("content-encoding {other:?}: only gzip"),
            );
        }
    };
    let request = match ExportTraceServiceRequest::decode(&message[..]) {
        Ok(r) => r,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("protobuf: {e}")),
    };
    record(
        state,
        &request,
        RequestInfo {
            transport: Transport::Http,
            content_type,
            encoding,
            user_agent,
            message_bytes: message.len(),
            spans: 0,
        },
    );
    reply(
        StatusCode::OK,
        "application/x-protobuf",
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

// ---- gRPC ----

struct GrpcService(Shared);

#[tonic::async_trait]
impl TraceService for GrpcService {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let meta = |k: &str| {
            request
                .metadata()
                .get(k)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let info = RequestInfo {
            transport: Transport::Grpc,
            content_type: meta("content-type"),
            encoding: meta("grpc-encoding"),
            user_agent: meta("user-agent"),
            message_bytes: request.get_ref().encoded_len(),
            spans: 0,
        };
        record(&self.0, request.get_ref(), info);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn serve_grpc(listener: tokio::net::TcpListener, state: Shared, stop: oneshot::Receiver<()>) {
    use tonic::codec::CompressionEncoding;
    let service = TraceServiceServer::new(GrpcService(state.clone()))
        .accept_compressed(CompressionEncoding::Gzip);
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    // Not a graceful shutdown: stopping must not wait for an exporter's idle connection. The
    // connection tasks go with the runtime.
    tokio::select! {
        _ = stop => {}
        result = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming) => {
            if let Err(e) = result {
                error(&state, format!("gRPC server: {e}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::Write,
        net::TcpStream,
        time::{Duration, SystemTime},
    };

    use opentelemetry::{
        Context, InstrumentationScope, KeyValue,
        trace::{
            Link, Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags,
            TraceId, TraceState, Tracer as _, TracerProvider as _,
        },
    };
    use opentelemetry_otlp::{
        Compression, Protocol, SpanExporter, WithExportConfig, WithHttpConfig, WithTonicConfig,
    };
    use opentelemetry_proto::tonic::{
        common::v1::{AnyValue, InstrumentationScope as ProtoScope, KeyValue as ProtoKv},
        resource::v1::Resource as ProtoResource,
        trace::v1::{ResourceSpans, ScopeSpans, Span as ProtoSpan},
    };
    use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};

    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const PARENT: &str = "00f067aa0ba902b7";
    const LINKED_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
    const LINKED_SPAN: &str = "b7ad6b7169203331";
    const T0: u64 = 1_700_000_000_123_456_789;

    fn at(ns: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_nanos(ns)
    }

    /// Two spans through the real SDK and exporter: a PRODUCER child of a remote parent with
    /// every attribute type, an event, a link and an error status; a CONSUMER root.
    fn emit(exporter: SpanExporter) {
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter)
            .with_resource(
                Resource::builder_empty()
                    .with_service_name("brokerscope-test")
                    .with_attribute(KeyValue::new("host.name", "otlp-test"))
                    .build(),
            )
            .build();
        let tracer = provider.tracer_with_scope(
            InstrumentationScope::builder("brokerscope")
                .with_version("0.1.0")
                .build(),
        );
        let parent = SpanContext::new(
            TraceId::from_hex(TRACE).unwrap(),
            SpanId::from_hex(PARENT).unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let linked = SpanContext::new(
            TraceId::from_hex(LINKED_TRACE).unwrap(),
            SpanId::from_hex(LINKED_SPAN).unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let cx = Context::new().with_remote_span_context(parent);
        let mut span = tracer
            .span_builder("send bs.orders")
            .with_kind(SpanKind::Producer)
            .with_start_time(at(T0))
            .with_attributes(vec![
                KeyValue::new("messaging.system", "rabbitmq"),
                KeyValue::new("messaging.message.body.size", 42i64),
                KeyValue::new("brokerscope.confirmed", true),
                KeyValue::new("brokerscope.ratio", 0.5),
            ])
            .with_links(vec![Link::new(
                linked,
                vec![KeyValue::new("link.kind", "deliver")],
                0,
            )])
            .start_with_context(&tracer, &cx);
        span.add_event_with_timestamp(
            "basic.ack",
            at(T0 + 1_000),
            vec![KeyValue::new("messaging.rabbitmq.delivery_tag", 7i64)],
        );
        span.set_status(Status::error("nacked"));
        span.end_with_timestamp(at(T0 + 5_000));

        let mut root = tracer
            .span_builder("process bs.orders")
            .with_kind(SpanKind::Consumer)
            .with_start_time(at(T0 + 10_000))
            .start(&tracer);
        root.end_with_timestamp(at(T0 + 20_000));
        provider.shutdown().expect("provider shutdown");
    }

    fn check(rx: &OtlpReceiver, transport: Transport) {
        let spans = rx.expect_spans(Duration::from_secs(10), "both spans", |s| s.len() >= 2);
        assert_eq!(spans.len(), 2, "{spans:#?}");
        assert!(rx.errors().is_empty(), "{:?}", rx.errors());
        assert!(rx.requests() >= 1);
        assert!(rx.request_log().iter().all(|r| r.transport == transport));

        let send = spans.iter().find(|s| s.name == "send bs.orders").unwrap();
        assert_eq!(send.transport, transport);
        assert_eq!(send.kind, "PRODUCER");
        assert_eq!(send.resource_str("service.name"), Some("brokerscope-test"));
        assert_eq!(send.resource_str("host.name"), Some("otlp-test"));
        assert_eq!(send.scope_name, "brokerscope");
        assert_eq!(send.scope_version, "0.1.0");
        assert_eq!(send.trace_id, TRACE);
        assert_eq!(send.parent_span_id, PARENT);
        assert_eq!(send.span_id.len(), 16);
        assert_ne!(send.span_id, "0000000000000000");
        assert_eq!((send.start_ns, send.end_ns), (T0, T0 + 5_000));
        assert_eq!(send.duration_ns(), 5_000);
        assert_eq!(send.attr_str("messaging.system"), Some("rabbitmq"));
        assert_eq!(send.attr_i64("messaging.message.body.size"), Some(42));
        assert_eq!(send.attr_bool("brokerscope.confirmed"), Some(true));
        assert_eq!(
            send.attr("brokerscope.ratio"),
            Some(&AttrValue::Double(0.5))
        );
        assert_eq!(send.attributes.len(), 4, "{:?}", send.attributes);
        assert_eq!(send.status_code, "ERROR");
        assert_eq!(send.status_message, "nacked");
        assert_eq!(
            send.events,
            vec![ReceivedEvent {
                name: "basic.ack".into(),
                time_ns: T0 + 1_000,
                attributes: [("messaging.rabbitmq.delivery_tag".to_string(), 7i64.into())].into(),
            }]
        );
        assert_eq!(
            send.links,
            vec![ReceivedLink {
                trace_id: LINKED_TRACE.into(),
                span_id: LINKED_SPAN.into(),
                trace_state: String::new(),
                attributes: [("link.kind".to_string(), "deliver".into())].into(),
            }]
        );

        let process = spans
            .iter()
            .find(|s| s.name == "process bs.orders")
            .unwrap();
        assert_eq!(process.kind, "CONSUMER");
        assert_eq!(process.parent_span_id, "", "a root span");
        assert_eq!(process.trace_id.len(), 32);
        assert_ne!(process.trace_id, TRACE);
        assert_eq!(process.status_code, "UNSET");
        assert!(process.events.is_empty() && process.links.is_empty());
        assert_eq!(process.duration_ns(), 10_000);
    }

    #[test]
    fn http_receiver_gets_spans_from_the_real_exporter() {
        for gzip in [false, true] {
            let rx = OtlpReceiver::start_http();
            let mut builder = SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(rx.traces_endpoint())
                .with_timeout(Duration::from_secs(5));
            if gzip {
                builder = builder.with_compression(Compression::Gzip);
            }
            emit(builder.build().expect("HTTP exporter"));
            check(&rx, Transport::Http);
            let log = rx.request_log();
            assert!(log.iter().all(|r| {
                r.content_type.as_deref() == Some("application/x-protobuf")
                    && r.encoding.as_deref() == gzip.then_some("gzip")
            }));
        }
    }

    #[test]
    fn grpc_receiver_gets_spans_from_the_real_exporter() {
        // tonic needs a runtime; the SDK's simple processor blocks on the export from this
        // thread while the runtime's workers drive the connection.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        for gzip in [false, true] {
            let rx = OtlpReceiver::start_grpc();
            let mut builder = SpanExporter::builder()
                .with_tonic()
                .with_endpoint(rx.endpoint())
                .with_timeout(Duration::from_secs(5));
            if gzip {
                builder = builder.with_compression(Compression::Gzip);
            }
            emit(builder.build().expect("gRPC exporter"));
            check(&rx, Transport::Grpc);
            let log = rx.request_log();
            assert!(log.iter().all(|r| {
                r.content_type
                    .as_deref()
                    .is_some_and(|c| c.starts_with("application/grpc"))
                    && r.encoding.as_deref() == gzip.then_some("gzip")
            }));
        }
    }

    /// A request built by hand, one span with a string and an int attribute.
    fn hand_made() -> ExportTraceServiceRequest {
        let kv = |k: &str, v: any_value::Value| ProtoKv {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
        };
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(ProtoResource {
                    attributes: vec![kv(
                        "service.name",
                        any_value::Value::StringValue("by-hand".into()),
                    )],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(ProtoScope {
                        name: "hand".into(),
                        ..Default::default()
                    }),
                    spans: vec![ProtoSpan {
                        trace_id: vec![0xAB; 16],
                        span_id: vec![0x0C; 8],
                        name: "deliver q".into(),
                        kind: opentelemetry_proto::tonic::trace::v1::span::SpanKind::Consumer
                            as i32,
                        start_time_unix_nano: 1,
                        end_time_unix_nano: 2,
                        attributes: vec![
                            kv("a", any_value::Value::StringValue("x".into())),
                            kv("n", any_value::Value::IntValue(-3)),
                        ],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    /// POSTs `body` with `headers`; returns (status, response body).
    fn post(
        rx: &OtlpReceiver,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, Vec<u8>) {
        let mut s = TcpStream::connect(rx.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            rx.addr,
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let status = std::str::from_utf8(&out[9..12]).unwrap().parse().unwrap();
        (status, out[split + 4..].to_vec())
    }

    #[test]
    fn http_receiver_by_hand_gzip_and_refusals() {
        let rx = OtlpReceiver::start_http();
        let proto = [("Content-Type", "application/x-protobuf")];
        let body = hand_made().encode_to_vec();
        let (status, reply) = post(&rx, "/v1/traces", &proto, &body);
        assert_eq!(status, 200);
        assert_eq!(
            ExportTraceServiceResponse::decode(&reply[..]).unwrap(),
            ExportTraceServiceResponse::default()
        );

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&body).unwrap();
        let gzipped = gz.finish().unwrap();
        let headers = [proto[0], ("Content-Encoding", "gzip")];
        assert_eq!(post(&rx, "/v1/traces", &headers, &gzipped).0, 200);

        let spans = rx.spans();
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0], spans[1]);
        let s = &spans[0];
        assert_eq!(s.resource_str("service.name"), Some("by-hand"));
        assert_eq!(
            (s.scope_name.as_str(), s.scope_version.as_str()),
            ("hand", "")
        );
        assert_eq!(s.kind, "CONSUMER");
        assert_eq!(s.trace_id, "ab".repeat(16));
        assert_eq!(s.span_id, "0c".repeat(8));
        assert_eq!(s.parent_span_id, "");
        assert_eq!(s.attr_str("a"), Some("x"));
        assert_eq!(s.attr_i64("n"), Some(-3));
        assert_eq!(s.status_code, "UNSET");
        assert_eq!(rx.requests(), 2);
        assert_eq!(rx.request_log()[1].encoding.as_deref(), Some("gzip"));
        assert!(rx.errors().is_empty());

        // Refusals are answered and recorded, never counted as requests.
        assert_eq!(post(&rx, "/v1/metrics", &proto, &body).0, 404);
        let json = [("Content-Type", "application/json")];
        assert_eq!(post(&rx, "/v1/traces", &json, b"{}").0, 415);
        assert_eq!(post(&rx, "/v1/traces", &proto, b"\xff\xff\xff").0, 400);
        assert_eq!(post(&rx, "/v1/traces", &headers, &body).0, 400, "not gzip");
        assert_eq!(rx.requests(), 2);
        assert_eq!(rx.errors().len(), 4, "{:?}", rx.errors());
    }

    #[test]
    fn grpc_receiver_by_hand_with_the_tonic_client() {
        use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
        let rx = OtlpReceiver::start_grpc();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let reply = runtime.block_on(async {
            let mut client = TraceServiceClient::connect(rx.endpoint()).await.unwrap();
            client.export(hand_made()).await.unwrap().into_inner()
        });
        assert_eq!(reply, ExportTraceServiceResponse::default());
        let spans = rx.wait_for(Duration::from_secs(5), |s| !s.is_empty());
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].name, "deliver q");
        assert_eq!(spans[0].kind, "CONSUMER");
        assert_eq!(spans[0].transport, Transport::Grpc);
        assert_eq!(rx.requests(), 1);
    }

    #[test]
    fn stops_on_drop() {
        for rx in [OtlpReceiver::start_http(), OtlpReceiver::start_grpc()] {
            let addr = rx.addr;
            assert!(TcpStream::connect(addr).is_ok());
            drop(rx);
            assert!(TcpStream::connect(addr).is_err(), "{addr} still listening");
        }
    }
}
