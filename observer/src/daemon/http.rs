//! The daemon's HTTP endpoints: a tiny HTTP/1.1 server on a thread of its own.
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /metrics` | 200, OpenMetrics text from [`HttpState::metrics`] |
//! | `GET /healthz` | 200 `ok`: the process is alive (never touches the state) |
//! | `GET /readyz` | 200 `ready`, or 503 with the reason from [`HttpState::ready`] |
//! | `GET /health` | 200, JSON from [`HttpState::health`] |
//!
//! `HEAD` works on each route (same headers, no body); another method on a route is 405, any
//! other path 404, a malformed request 400, a request head over 8 KiB 431, a client that does
//! not finish its request within 5 s 408. Every answer closes the connection
//! (`Connection: close`): one request per connection, which is all that Prometheus scrapes and
//! Kubernetes probes need.
//!
//! The server runs its own current-thread tokio runtime on its own thread, so a busy decode loop
//! never delays `/healthz`; each connection is a task, at most 64 at once (more are answered 503
//! straight away). The [`HttpState`] methods run on a small blocking pool, so a slow or locked
//! state delays only the requests that need it.
use std::{io, net::SocketAddr, sync::Arc, thread::JoinHandle, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, oneshot},
};

/// What the endpoints report; implemented by the run loop. Called from the HTTP thread's
/// blocking pool, possibly concurrently.
pub trait HttpState: Send + Sync + 'static {
    /// The `/metrics` body: OpenMetrics text (ending in `# EOF`).
    fn metrics(&self) -> String;
    /// The `/health` body: a JSON summary of the agent's health.
    fn health(&self) -> serde_json::Value;
    /// `/readyz`: `Ok` is 200 `ready`; `Err(why)` is 503 with `why` in the body.
    fn ready(&self) -> Result<(), String>;
}

/// `Content-Type` of `/metrics`.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Limits of the server; [`HttpServer::start`] uses the defaults.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Largest request head (request line and headers) accepted: 8 KiB.
    pub max_request_bytes: usize,
    /// Time a client has to send its whole request head: 5 s.
    pub read_timeout: Duration,
    /// Time a client has to take the answer: 5 s.
    pub write_timeout: Duration,
    /// Connections handled at once: 64; more are answered 503 and closed.
    pub max_connections: usize,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            max_request_bytes: 8 * 1024,
            read_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            max_connections: 64,
        }
    }
}

/// Why the HTTP server could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{}", bind_message(*addr, source))]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("cannot start the HTTP server ({what}): {source}")]
    Start {
        what: &'static str,
        source: io::Error,
    },
}

fn bind_message(addr: SocketAddr, source: &io::Error) -> String {
    let why = match source.kind() {
        io::ErrorKind::AddrInUse => {
            "the address is already in use (another brokerscope, or another program, listens there)"
                .to_string()
        }
        io::ErrorKind::AddrNotAvailable => {
            "no network interface of this host has that address".to_string()
        }
        io::ErrorKind::PermissionDenied => {
            "permission denied (ports below 1024 need CAP_NET_BIND_SERVICE)".to_string()
        }
        _ => source.to_string(),
    };
    format!(
        "cannot listen on {addr} for /metrics and health: {why}; choose another address with \
         --listen (or BROKERSCOPE_LISTEN, or `listen` in the config file)"
    )
}

/// The running server; stops (and its thread is joined) on [`shutdown`](HttpServer::shutdown)
/// or drop.
pub struct HttpServer {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Binds `listen` (before returning: a busy address is an error here) and serves on a new
    /// thread. Port 0 picks a free port; see [`local_addr`](HttpServer::local_addr).
    pub fn start(listen: SocketAddr, state: Arc<dyn HttpState>) -> Result<HttpServer, HttpError> {
        HttpServer::start_with(listen, state, HttpOptions::default())
    }

    /// [`start`](HttpServer::start) with other limits.
    pub fn start_with(
        listen: SocketAddr,
        state: Arc<dyn HttpState>,
        options: HttpOptions,
    ) -> Result<HttpServer, HttpError> {
        let start = |what| move |source| HttpError::Start { what, source };
        let std_listener =
            std::net::TcpListener::bind(listen).map_err(|source| HttpError::Bind {
                addr: listen,
                source,
            })?;
        std_listener
            .set_nonblocking(true)
            .map_err(start("non-blocking listener"))?;
        let local_addr = std_listener
            .local_addr()
            .map_err(start("listener address"))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(4)
            .thread_name("brokerscope-http-state")
            .build()
            .map_err(start("tokio runtime"))?;
        let listener = {
            let _in_runtime = runtime.enter();
            TcpListener::from_std(std_listener).map_err(start("tokio listener"))?
        };
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("brokerscope-http".into())
            .spawn(move || {
                runtime.block_on(serve(listener, state, options, stopped));
                // Connection tasks are dropped; a state call still running gets a moment.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(start("thread"))?;
        tracing::info!("serving /metrics, /healthz, /readyz, /health on http://{local_addr}");
        Ok(HttpServer {
            local_addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address actually bound (the real port when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, drops open connections and joins the thread.
    pub fn shutdown(self) {
        drop(self)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the HTTP server thread panicked");
        }
    }
}

async fn serve(
    listener: TcpListener,
    state: Arc<dyn HttpState>,
    options: HttpOptions,
    mut stop: oneshot::Receiver<()>,
) {
    let options = Arc::new(options);
    let permits = Arc::new(Semaphore::new(options.max_connections));
    // Answering "busy" takes a task too; bound those as well, beyond that just close.
    let busy_permits = Arc::new(Semaphore::new(options.max_connections));
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // E.g. out of file descriptors: do not spin.
                    tracing::warn!("HTTP server: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        if let Ok(permit) = permits.clone().try_acquire_owned() {
            let (state, options) = (state.clone(), options.clone());
            tokio::spawn(async move {
                handle(stream, state, &options).await;
                drop(permit);
            });
        } else if let Ok(permit) = busy_permits.clone().try_acquire_owned() {
            tracing::debug!("HTTP server: too many connections, answering {peer} 503");
            let options = options.clone();
            tokio::spawn(async move {
                let busy = Response::text(503, "too many connections, try again\n");
                respond(stream, &busy, false, &options).await;
                drop(permit);
            });
        }
    }
}

/// Reads one request, answers it, closes.
async fn handle(mut stream: TcpStream, state: Arc<dyn HttpState>, options: &HttpOptions) {
    let head = tokio::time::timeout(
        options.read_timeout,
        read_head(&mut stream, options.max_request_bytes),
    )
    .await;
    let (response, head_only) = match head {
        Err(_) => (Response::text(408, "request timeout\n"), false),
        Ok(Err(ReadError::TooLarge)) => (
            Response::text(
                431,
                &format!(
                    "request head larger than {} bytes\n",
                    options.max_request_bytes
                ),
            ),
            false,
        ),
        Ok(Err(ReadError::Closed)) => (Response::text(400, "incomplete request\n"), false),
        Ok(Err(ReadError::Io(e))) => {
            tracing::debug!("HTTP server: reading a request: {e}");
            return;
        }
        Ok(Ok(head)) => match parse_request(&head) {
            Ok(request) => (route(&request, &state).await, request.method == "HEAD"),
            Err(why) => (Response::text(400, &format!("bad request: {why}\n")), false),
        },
    };
    respond(stream, &response, head_only, options).await;
}

enum ReadError {
    TooLarge,
    /// The client closed before ending its request head.
    Closed,
    Io(io::Error),
}

/// The request head up to its blank line (CRLF CRLF, or LF LF from hand-typed requests).
async fn read_head(stream: &mut TcpStream, max: usize) -> Result<Vec<u8>, ReadError> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream.read(&mut chunk).await.map_err(ReadError::Io)?;
        if n == 0 {
            return Err(ReadError::Closed);
        }
        let searched_from = head.len().saturating_sub(3);
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = find_head_end(&head[searched_from..]) {
            let end = searched_from + end;
            if end > max {
                return Err(ReadError::TooLarge);
            }
            head.truncate(end);
            return Ok(head);
        }
        if head.len() > max {
            return Err(ReadError::TooLarge);
        }
    }
}

/// Length of the head including its terminating blank line, if it is complete.
fn find_head_end(bytes: &[u8]) -> Option<usize> {
    (0..bytes.len()).find_map(|i| {
        if bytes[i..].starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else if bytes[i..].starts_with(b"\n\n") {
            Some(i + 2)
        } else if bytes[i..].starts_with(b"\n\r\n") {
            Some(i + 3)
        } else {
            None
        }
    })
}

struct Request<'a> {
    method: &'a str,
    path: &'a str,
}

fn parse_request(head: &[u8]) -> Result<Request<'_>, &'static str> {
    let text = std::str::from_utf8(head).map_err(|_| "not text")?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("expected `METHOD /path HTTP/1.1`");
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err("invalid method");
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err("only HTTP/1.0 and HTTP/1.1 are served");
    }
    // Origin form (`/metrics?x`), or absolute form (`http://host:9464/metrics`).
    let path = match target.strip_prefix("http://") {
        Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]),
        None if target.starts_with('/') => target,
        None => return Err("the target must be a path such as /metrics"),
    };
    let path = path.split(['?', '#']).next().unwrap_or(path);
    for line in lines.take_while(|l| !l.is_empty()) {
        match line.split_once(':') {
            Some((name, _))
                if !name.is_empty() && !name.bytes().any(|b| b.is_ascii_whitespace()) => {}
            _ => return Err("malformed header line"),
        }
    }
    Ok(Request { method, path })
}

struct Response {
    status: u16,
    content_type: &'static str,
    extra_headers: &'static str,
    body: String,
}

impl Response {
    fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            extra_headers: "",
            body: body.to_string(),
        }
    }
}

const ROUTES: [&str; 4] = ["/metrics", "/healthz", "/readyz", "/health"];

async fn route(request: &Request<'_>, state: &Arc<dyn HttpState>) -> Response {
    if !ROUTES.contains(&request.path) {
        return Response::text(
            404,
            "not found; endpoints: /metrics /healthz /readyz /health\n",
        );
    }
    if request.method != "GET" && request.method != "HEAD" {
        return Response {
            extra_headers: "Allow: GET, HEAD\r\n",
            ..Response::text(405, "method not allowed; use GET or HEAD\n")
        };
    }
    let state = state.clone();
    let answer = match request.path {
        "/healthz" => return Response::text(200, "ok\n"),
        "/metrics" => {
            tokio::task::spawn_blocking(move || Response {
                content_type: OPENMETRICS_CONTENT_TYPE,
                ..Response::text(200, &state.metrics())
            })
            .await
        }
        "/readyz" => {
            tokio::task::spawn_blocking(move || match state.ready() {
                Ok(()) => Response::text(200, "ready\n"),
                Err(why) => Response::text(503, &format!("not ready: {why}\n")),
            })
            .await
        }
        _ => {
            tokio::task::spawn_blocking(move || {
                let mut body = state.health().to_string();
                body.push('\n');
                Response {
                    status: 200,
                    content_type: "application/json",
                    extra_headers: "",
                    body,
                }
            })
            .await
        }
    };
    answer.unwrap_or_else(|e| {
        tracing::error!("HTTP server: answering {} failed: {e}", request.path);
        Response::text(500, "internal error\n")
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// Writes the answer, then closes gracefully: shut down our side, and drain what the client
/// still sends for a moment, so unread request bytes do not turn the close into a reset that
/// would destroy the answer before the client reads it.
async fn respond(
    mut stream: TcpStream,
    response: &Response,
    head_only: bool,
    options: &HttpOptions,
) {
    let mut bytes = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n{}\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len(),
        response.extra_headers,
    )
    .into_bytes();
    if !head_only {
        bytes.extend_from_slice(response.body.as_bytes());
    }
    let written = tokio::time::timeout(options.write_timeout, async {
        stream.write_all(&bytes).await?;
        stream.shutdown().await
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let mut sink = [0u8; 4096];
        let mut drained = 0usize;
        while drained < 256 * 1024 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests;
