//! Export against in-process OTLP receivers on 127.0.0.1:0: HTTP/protobuf (a minimal HTTP/1.1
//! server decoding with opentelemetry-proto's prost types) and gRPC (a tonic TraceService).
use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value::Value as AnyValue,
    trace::v1::Span as ProtoSpan,
};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

type Received = Arc<Mutex<Vec<ExportTraceServiceRequest>>>;

/// Serves OTLP/HTTP on a thread of its own; each response waits `delay`.
fn http_receiver(delay: Duration) -> (SocketAddr, Received) {
    let got: Received = Arc::default();
    let (tx, rx) = std::sync::mpsc::channel();
    let store = got.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            loop {
                let (sock, _) = listener.accept().await.unwrap();
                let store = store.clone();
                tokio::spawn(async move { serve_http(sock, store, delay).await });
            }
        });
    });
    (rx.recv().unwrap(), got)
}

async fn serve_http(mut sock: tokio::net::TcpStream, store: Received, delay: Duration) {
    let mut buf = Vec::new();
    loop {
        // Headers.
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
        assert!(head.starts_with("post /v1/traces "), "{head}");
        assert!(
            head.contains("content-type: application/x-protobuf"),
            "{head}"
        );
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().unwrap())
            .expect("content-length");
        while buf.len() < end + len {
            let mut chunk = [0u8; 4096];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buf.drain(..end + len).skip(end).collect();
        store
            .lock()
            .unwrap()
            .push(ExportTraceServiceRequest::decode(body.as_slice()).unwrap());
        tokio::time::sleep(delay).await;
        let resp = ExportTraceServiceResponse::default().encode_to_vec();
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\n\r\n",
            resp.len()
        );
        if sock.write_all(head.as_bytes()).await.is_err() || sock.write_all(&resp).await.is_err() {
            return;
        }
    }
}

struct Collector(Received);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn grpc_receiver() -> (SocketAddr, Received) {
    let got: Received = Arc::default();
    let (tx, rx) = std::sync::mpsc::channel();
    let store = got.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(Collector(store)))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await
                .unwrap();
        });
    });
    (rx.recv().unwrap(), got)
}

fn config(endpoint: String, protocol: OtlpProtocol) -> SpanConfig {
    SpanConfig {
        endpoint: Some(endpoint),
        protocol: Some(protocol),
        timeout: Some(Duration::from_secs(5)),
        batch_delay: Duration::from_millis(50),
        resource: ResourceInfo {
            service_name: Some("brokerscope-test".into()),
            host_name: Some("node-1".into()),
            k8s_pod_name: Some("rabbit-0".into()),
            k8s_namespace_name: Some("mq".into()),
            container_id: Some("abc123".into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// publish+confirm, deliver, nack: three spans.
fn feed(p: &mut SpanPipeline) {
    let mut c = crate::correlate::Correlator::new(Default::default()).keeping_message_info(true);
    for e in [
        amqp_publish(1, 0, Some(1), 77),
        {
            let mut e = ev(1, 3, System::Amqp, EventKind::Confirm, OUT);
            e.channel = Some(1);
            e.delivery_tag = Some(1);
            e
        },
        amqp_deliver(2, 5, 9, 77),
        amqp_settle(2, 20, EventKind::Nack, 9),
    ] {
        let awaits = c.observe(&e, &mut |o| p.observe(&o, &e));
        p.observe_event(&e, awaits);
    }
}

fn spans(got: &Received) -> Vec<(ProtoSpan, Vec<(String, String)>)> {
    let reqs = got.lock().unwrap();
    let mut out = Vec::new();
    for r in reqs.iter() {
        for rs in &r.resource_spans {
            let res: Vec<(String, String)> = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .map(|kv| {
                    (
                        kv.key.clone(),
                        text(kv.value.as_ref().and_then(|v| v.value.as_ref())),
                    )
                })
                .collect();
            for ss in &rs.scope_spans {
                assert_eq!(ss.scope.as_ref().unwrap().name, "brokerscope");
                out.extend(ss.spans.iter().map(|s| (s.clone(), res.clone())));
            }
        }
    }
    out
}

fn text(v: Option<&AnyValue>) -> String {
    match v {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        other => format!("{other:?}"),
    }
}

fn attr(s: &ProtoSpan, k: &str) -> Option<String> {
    s.attributes
        .iter()
        .find(|kv| kv.key == k)
        .map(|kv| text(kv.value.as_ref().and_then(|v| v.value.as_ref())))
}

fn check(got: &Received) {
    let spans = spans(got);
    let names: Vec<&str> = spans.iter().map(|(s, _)| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["send amq.default", "deliver orders", "process orders"]
    );
    let (send, res) = &spans[0];
    let (process, _) = &spans[2];
    for (k, v) in [
        ("service.name", "brokerscope-test"),
        ("host.name", "node-1"),
        ("k8s.pod.name", "rabbit-0"),
        ("k8s.namespace.name", "mq"),
        ("container.id", "abc123"),
    ] {
        assert!(res.contains(&(k.into(), v.into())), "{k} in {res:?}");
    }
    assert_eq!(send.kind, 4, "PRODUCER");
    assert_eq!(process.kind, 5, "CONSUMER");
    assert_eq!(spans[1].0.kind, 1, "INTERNAL");
    assert_eq!(attr(send, "messaging.system").as_deref(), Some("rabbitmq"));
    assert_eq!(
        attr(send, "messaging.operation.name").as_deref(),
        Some("basic.publish")
    );
    assert_eq!(
        attr(process, "messaging.rabbitmq.message.delivery_tag").as_deref(),
        Some("9")
    );
    assert_eq!(attr(process, "error.type").as_deref(), Some("nack"));
    assert_eq!(process.status.as_ref().unwrap().code, 2, "ERROR");
    assert_eq!(process.trace_id, send.trace_id);
    assert_eq!(process.parent_span_id, send.span_id);
    assert_eq!(
        send.end_time_unix_nano - send.start_time_unix_nano,
        3_000_000
    );
}

#[test]
fn exports_over_http_protobuf() {
    let (addr, got) = http_receiver(Duration::ZERO);
    let mut p =
        SpanPipeline::start(config(format!("http://{addr}"), OtlpProtocol::HttpProtobuf)).unwrap();
    feed(&mut p);
    let stats = p.shutdown();
    assert_eq!(
        (stats.exported, stats.dropped, stats.export_errors),
        (3, 0, 0)
    );
    assert_eq!(stats.synth.spans, 3);
    check(&got);
}

#[test]
fn exports_over_grpc() {
    let (addr, got) = grpc_receiver();
    let mut p = SpanPipeline::start(config(format!("http://{addr}"), OtlpProtocol::Grpc)).unwrap();
    feed(&mut p);
    let stats = p.shutdown();
    assert_eq!(
        (stats.exported, stats.dropped, stats.export_errors),
        (3, 0, 0)
    );
    check(&got);
}

#[test]
fn a_full_queue_drops_and_counts() {
    // The receiver answers slowly: the export thread holds one batch of one span while the
    // queue (one span) fills; the rest are dropped, and nothing blocks.
    let (addr, got) = http_receiver(Duration::from_millis(500));
    let mut cfg = config(format!("http://{addr}"), OtlpProtocol::HttpProtobuf);
    cfg.queue = 1;
    cfg.max_batch = 1;
    cfg.batch_delay = Duration::ZERO;
    let mut p = SpanPipeline::start(cfg).unwrap();
    let started = std::time::Instant::now();
    for fp in 0..50 {
        let e = amqp_publish(1, fp, None, fp);
        p.observe_event(&e, Default::default());
        if fp == 0 {
            // Let the export thread take the first span.
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "never blocks"
    );
    let stats = p.shutdown();
    assert_eq!(stats.synth.spans, 50);
    assert_eq!(stats.dropped + stats.exported, 50);
    assert!(stats.dropped >= 45, "{stats:?}");
    assert_eq!(spans(&got).len() as u64, stats.exported);
}
