use std::{
    io::{Read, Write},
    net::TcpStream,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use super::*;

const METRICS: &str = "# TYPE brokerscope_events counter\nbrokerscope_events_total 3\n# EOF\n";

struct Fake {
    ready: AtomicBool,
    /// Held by a test to make state calls block.
    lock: Mutex<()>,
}

impl HttpState for Fake {
    fn metrics(&self) -> String {
        let _held = self.lock.lock().unwrap();
        METRICS.to_string()
    }
    fn health(&self) -> serde_json::Value {
        let _held = self.lock.lock().unwrap();
        serde_json::json!({"status": "ok", "events_lost": 0})
    }
    fn ready(&self) -> Result<(), String> {
        if self.ready.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err("no target attached yet".into())
        }
    }
}

fn fake() -> Arc<Fake> {
    Arc::new(Fake {
        ready: AtomicBool::new(true),
        lock: Mutex::new(()),
    })
}

fn start(state: Arc<Fake>) -> HttpServer {
    HttpServer::start("127.0.0.1:0".parse().unwrap(), state).unwrap()
}

#[derive(Debug)]
struct Answer {
    status_line: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn status(&self) -> u16 {
        self.status_line.split(' ').nth(1).unwrap().parse().unwrap()
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn read_answer(stream: &mut TcpStream) -> Answer {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete answer");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap().to_string();
    let headers = lines
        .map(|l| {
            let (n, v) = l.split_once(": ").unwrap();
            (n.to_string(), v.to_string())
        })
        .collect();
    Answer {
        status_line,
        headers,
        body: body.to_string(),
    }
}

fn send(addr: SocketAddr, raw: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(raw).unwrap();
    read_answer(&mut stream)
}

fn get(addr: SocketAddr, method: &str, path: &str) -> Answer {
    send(
        addr,
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: test\r\n\r\n")
            .as_bytes(),
    )
}

#[test]
fn routes_answer_with_status_headers_and_body() {
    let server = start(fake());
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);

    let a = get(addr, "GET", "/metrics");
    assert_eq!(a.status_line, "HTTP/1.1 200 OK");
    assert_eq!(a.header("Content-Type"), Some(OPENMETRICS_CONTENT_TYPE));
    assert_eq!(
        a.header("Content-Length"),
        Some(&*METRICS.len().to_string())
    );
    assert_eq!(a.header("Connection"), Some("close"));
    assert_eq!(a.body, METRICS);

    let a = get(addr, "GET", "/healthz");
    assert_eq!(a.status_line, "HTTP/1.1 200 OK");
    assert_eq!(a.header("Content-Type"), Some("text/plain; charset=utf-8"));
    assert_eq!(a.body, "ok\n");

    let a = get(addr, "GET", "/readyz");
    assert_eq!(a.status_line, "HTTP/1.1 200 OK");
    assert_eq!(a.body, "ready\n");

    let a = get(addr, "GET", "/health");
    assert_eq!(a.status_line, "HTTP/1.1 200 OK");
    assert_eq!(a.header("Content-Type"), Some("application/json"));
    let json: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(json, serde_json::json!({"status": "ok", "events_lost": 0}));

    // Query strings and the absolute form reach the same routes.
    assert_eq!(get(addr, "GET", "/metrics?name[]=x").body, METRICS);
    assert_eq!(
        get(addr, "GET", "http://localhost:9464/healthz").body,
        "ok\n"
    );
    server.shutdown();
}

#[test]
fn head_has_the_headers_and_no_body() {
    let server = start(fake());
    for path in ROUTES {
        let full = get(server.local_addr(), "GET", path);
        let head = get(server.local_addr(), "HEAD", path);
        assert_eq!(head.status_line, full.status_line, "{path}");
        assert_eq!(head.headers, full.headers, "{path}");
        assert_eq!(head.body, "", "{path}");
        assert!(!full.body.is_empty());
    }
}

#[test]
fn not_ready_is_503_with_the_reason() {
    let state = fake();
    state.ready.store(false, Ordering::SeqCst);
    let server = start(state.clone());
    let a = get(server.local_addr(), "GET", "/readyz");
    assert_eq!(a.status_line, "HTTP/1.1 503 Service Unavailable");
    assert_eq!(a.body, "not ready: no target attached yet\n");
    state.ready.store(true, Ordering::SeqCst);
    assert_eq!(get(server.local_addr(), "GET", "/readyz").status(), 200);
}

#[test]
fn unknown_paths_404_other_methods_405() {
    let server = start(fake());
    let addr = server.local_addr();
    for path in ["/", "/metrics/", "/favicon.ico", "/HEALTHZ"] {
        let a = get(addr, "GET", path);
        assert_eq!(a.status_line, "HTTP/1.1 404 Not Found", "{path}");
        assert!(a.body.contains("/metrics /healthz /readyz /health"));
    }
    for method in ["POST", "PUT", "DELETE", "OPTIONS"] {
        let a = get(addr, method, "/metrics");
        assert_eq!(a.status_line, "HTTP/1.1 405 Method Not Allowed", "{method}");
        assert_eq!(a.header("Allow"), Some("GET, HEAD"));
    }
    // A body the server never reads does not destroy the answer.
    let mut raw = b"POST /healthz HTTP/1.1\r\nContent-Length: 100000\r\n\r\n".to_vec();
    raw.extend(std::iter::repeat_n(b'x', 100_000));
    assert_eq!(send(addr, &raw).status(), 405);
}

#[test]
fn malformed_requests_are_400() {
    let server = start(fake());
    let addr = server.local_addr();
    for raw in [
        &b"hello\r\n\r\n"[..],
        b"GET\r\n\r\n",
        b"GET /metrics\r\n\r\n",
        b"GET /metrics HTTP/2.0\r\n\r\n",
        b"GET /metrics HTTP/1.1 extra\r\n\r\n",
        b"get /metrics HTTP/1.1\r\n\r\n",
        b"GET metrics HTTP/1.1\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\n: empty name\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n",
        b"\r\n\r\n",
    ] {
        let a = send(addr, raw);
        assert_eq!(a.status_line, "HTTP/1.1 400 Bad Request", "{raw:?}");
        assert!(a.body.starts_with("bad request: "), "{}", a.body);
    }
    // A client that closes half-way is answered 400 as well (if it still listens).
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(b"GET /metr").unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_answer(&mut stream).status(), 400);
    // Hand-typed requests with bare LF line ends are fine.
    assert_eq!(send(addr, b"GET /healthz HTTP/1.0\n\n").body, "ok\n");
}

#[test]
fn oversized_request_is_431() {
    let server = start(fake());
    let mut raw = b"GET /metrics HTTP/1.1\r\n".to_vec();
    for i in 0..200 {
        raw.extend(format!("X-Filler-{i}: {}\r\n", "y".repeat(40)).as_bytes());
    }
    raw.extend(b"\r\n");
    assert!(raw.len() > 8 * 1024);
    let a = send(server.local_addr(), &raw);
    assert_eq!(
        a.status_line,
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    // Without an end at all.
    let a = send(server.local_addr(), &vec![b'a'; 20_000]);
    assert_eq!(a.status(), 431);
    // Just under the limit is fine.
    let mut raw = b"GET /healthz HTTP/1.1\r\nX: ".to_vec();
    raw.resize(8 * 1024 - 4, b'z');
    raw.extend(b"\r\n\r\n");
    assert_eq!(send(server.local_addr(), &raw).status(), 200);
}

#[test]
fn silent_client_gets_408() {
    let options = HttpOptions {
        read_timeout: Duration::from_millis(100),
        ..HttpOptions::default()
    };
    let server = HttpServer::start_with("127.0.0.1:0".parse().unwrap(), fake(), options).unwrap();
    let mut stream = TcpStream::connect(server.local_addr()).unwrap();
    stream.write_all(b"GET /healthz HT").unwrap();
    let a = read_answer(&mut stream);
    assert_eq!(a.status_line, "HTTP/1.1 408 Request Timeout");
}

#[test]
fn slow_client_does_not_block_others() {
    let server = start(fake());
    let addr = server.local_addr();
    // A client that has sent half its request and waits.
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // Others are answered meanwhile: if connections were handled one after the other these
    // would wait for the slow one's 5 s timeout, and the slow one would then get 408, not 200.
    for _ in 0..3 {
        assert_eq!(get(addr, "GET", "/healthz").body, "ok\n");
        assert_eq!(get(addr, "GET", "/metrics").body, METRICS);
    }
    slow.write_all(b"\r\n").unwrap();
    let a = read_answer(&mut slow);
    assert_eq!(a.status(), 200);
    assert_eq!(a.body, METRICS);
}

#[test]
fn blocked_state_does_not_delay_healthz() {
    let state = fake();
    let server = start(state.clone());
    let addr = server.local_addr();
    let held = state.lock.lock().unwrap();
    // /metrics now waits on the state's lock; /healthz must not.
    let waiting = std::thread::spawn(move || get(addr, "GET", "/metrics"));
    for _ in 0..3 {
        assert_eq!(get(addr, "GET", "/healthz").body, "ok\n");
        assert_eq!(get(addr, "GET", "/readyz").body, "ready\n");
    }
    assert!(!waiting.is_finished());
    drop(held);
    assert_eq!(waiting.join().unwrap().body, METRICS);
}

#[test]
fn connections_over_the_cap_get_503() {
    let options = HttpOptions {
        max_connections: 1,
        ..HttpOptions::default()
    };
    let server = HttpServer::start_with("127.0.0.1:0".parse().unwrap(), fake(), options).unwrap();
    let addr = server.local_addr();
    let mut first = TcpStream::connect(addr).unwrap();
    first.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
    let mut second = TcpStream::connect(addr).unwrap();
    let a = read_answer(&mut second);
    assert_eq!(a.status_line, "HTTP/1.1 503 Service Unavailable");
    assert_eq!(a.body, "too many connections, try again\n");
    first.write_all(b"\r\n").unwrap();
    assert_eq!(read_answer(&mut first).status(), 200);
    // The permit comes back once the server has seen the client close (asynchronously: poll).
    drop((first, second));
    let back = (0..500).any(|_| {
        let mut stream = TcpStream::connect(addr).unwrap();
        let mut answer = Vec::new();
        let ok = stream.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").is_ok()
            && stream.read_to_end(&mut answer).is_ok()
            && answer.starts_with(b"HTTP/1.1 200 OK\r\n");
        if !ok {
            std::thread::sleep(Duration::from_millis(10));
        }
        ok
    });
    assert!(back, "the connection permit was never released");
}

struct Panics;

impl HttpState for Panics {
    fn metrics(&self) -> String {
        panic!("test: metrics panicked")
    }
    fn health(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    fn ready(&self) -> Result<(), String> {
        Ok(())
    }
}

#[test]
fn a_panicking_state_is_500_and_the_server_lives_on() {
    let server = HttpServer::start("127.0.0.1:0".parse().unwrap(), Arc::new(Panics)).unwrap();
    let a = get(server.local_addr(), "GET", "/metrics");
    assert_eq!(a.status_line, "HTTP/1.1 500 Internal Server Error");
    assert_eq!(get(server.local_addr(), "GET", "/healthz").status(), 200);
    assert_eq!(get(server.local_addr(), "GET", "/health").body, "null\n");
}

#[test]
fn address_in_use_names_the_address_and_the_flag() {
    let server = start(fake());
    let addr = server.local_addr();
    let err = HttpServer::start(addr, fake()).err().unwrap();
    assert!(matches!(err, HttpError::Bind { .. }));
    assert_eq!(
        err.to_string(),
        format!(
            "cannot listen on {addr} for /metrics and health: the address is already in use \
             (another brokerscope, or another program, listens there); choose another address \
             with --listen (or BROKERSCOPE_LISTEN, or `listen` in the config file)"
        )
    );
}

#[test]
fn shutdown_and_drop_stop_the_server() {
    let server = start(fake());
    let addr = server.local_addr();
    // A connection still open does not hold shutdown up.
    let mut open = TcpStream::connect(addr).unwrap();
    open.write_all(b"GET /he").unwrap();
    assert_eq!(get(addr, "GET", "/healthz").status(), 200);
    server.shutdown();
    assert!(
        TcpStream::connect(addr).is_err(),
        "nothing listens any more"
    );
    let mut rest = Vec::new();
    open.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = open.read_to_end(&mut rest);
    assert!(rest.is_empty(), "closed without an answer");

    let server = start(fake());
    let addr = server.local_addr();
    drop(server);
    assert!(TcpStream::connect(addr).is_err());
    // The address is free again.
    let again = HttpServer::start(addr, fake()).unwrap();
    assert_eq!(get(again.local_addr(), "GET", "/healthz").status(), 200);
}
