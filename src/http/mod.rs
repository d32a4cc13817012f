//! The one HTTP stack of the ports we own (hyper, HTTP/1.1): accept loop, per-connection tasks,
//! graceful shutdown, bounded bodies, and the JSON/SSE response helpers the routes share.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use futures_util::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub mod access;
mod parse_errors;
use parse_errors::JsonParseErrors;

use crate::error::ErrorCode;

pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// A slow client gets this long to send its headers, and its body.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// In-flight requests get this long to finish once shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The client for servers on this machine (llama-server, sd-server, our own ports): never through
/// a proxy (`HTTP_PROXY` does not exempt 127.0.0.1), and quick to give up on a dead port. Callers
/// bound each request with their own timeout.
pub fn local_client() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        // reqwest wants a TLS provider even for plain HTTP; the download client installs the same.
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(2))
            .build()
            .expect("a plain HTTP client always builds")
    })
}

/// `http://host:port`, with IPv6 hosts bracketed and a wildcard bind address (`0.0.0.0`, `::`)
/// replaced by the loopback address that reaches it.
pub fn local_base(host: &str, port: u16) -> String {
    match addresses(host).next().unwrap_or(host) {
        "0.0.0.0" => format!("http://127.0.0.1:{port}"),
        "::" => format!("http://[::1]:{port}"),
        h if h.contains(':') => format!("http://[{h}]:{port}"),
        h => format!("http://{h}:{port}"),
    }
}

/// The addresses of a `host` that names several, comma-separated (`127.0.0.1,::1`), as
/// llama-server's `--host` takes them; an IPv6 address without its brackets, as sockets take it.
pub fn addresses(host: &str) -> impl Iterator<Item = &str> {
    host.split(',')
        .map(|a| a.trim().trim_start_matches('[').trim_end_matches(']'))
}

pub struct HttpServer {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl HttpServer {
    /// Stops accepting, lets requests in flight finish (bounded), closes every connection.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

/// Serves `handler` on `listener` until [`HttpServer::shutdown`].
pub fn serve<H, F>(listener: TcpListener, handler: H) -> std::io::Result<HttpServer>
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    serve_all(vec![listener], handler)
}

/// [`serve`] on several listeners at once (one port on several addresses); `addr` is the first's.
pub fn serve_all<H, F>(listeners: Vec<TcpListener>, handler: H) -> std::io::Result<HttpServer>
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let Some(first) = listeners.first() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "no address to listen on",
        ));
    };
    let addr = first.local_addr()?;
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    // The server's lines (a failed accept) go where its owner's lines go.
    let span = tracing::Span::current();
    let task = tokio::spawn(tracing::Instrument::instrument(
        async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let stream = tokio::select! {
                    _ = token.cancelled() => break,
                    accepted = accept_any(&listeners) => match accepted {
                        Ok((stream, _)) => stream,
                        Err(e) => {
                            // Out of descriptors and the like: back off instead of spinning.
                            tracing::warn!("accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let handler = handler.clone();
                let token = token.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let response = handler(req);
                        async move { Ok::<_, Infallible>(response.await) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        // As llama-server and most servers write them (`Content-Type`): clients
                        // that look headers up in a plain dictionary find them.
                        .title_case_headers(true)
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_TIMEOUT)
                        .serve_connection(TokioIo::new(JsonParseErrors::new(stream)), service);
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => return,
                        _ = token.cancelled() => conn.as_mut().graceful_shutdown(),
                    }
                    let _ = conn.await;
                });
                // Reap finished connections so the set does not grow.
                while connections.try_join_next().is_some() {}
            }
            drop(listeners);
            let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
            while let Ok(Some(_)) = tokio::time::timeout_at(deadline, connections.join_next()).await
            {
            }
            connections.abort_all();
            while connections.join_next().await.is_some() {}
        },
        span,
    ));
    Ok(HttpServer {
        addr,
        shutdown,
        task,
    })
}

/// The next connection on any of `listeners` (each `accept` is cancel-safe: the others lose
/// nothing).
async fn accept_any(
    listeners: &[TcpListener],
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    let accepts = listeners.iter().map(|listener| Box::pin(listener.accept()));
    futures_util::future::select_all(accepts).await.0
}

#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    TooLarge,
    Unreadable,
}

/// The whole body, refused beyond `limit` bytes (before reading when Content-Length says so).
pub async fn read_body(req: Request<Incoming>, limit: usize) -> Result<Bytes, BodyError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let body = Limited::new(req.into_body(), limit);
    match tokio::time::timeout(BODY_TIMEOUT, body.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(BodyError::TooLarge)
        }
        _ => Err(BodyError::Unreadable),
    }
}

pub fn json(status: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())).boxed_unsync());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The error shape of every port we serve, OpenAI's and llama-server's:
/// `{"error": {"message", "code", "type"}}`, with the status the shared table gives the code.
pub fn error(code: ErrorCode, message: &str) -> Response<Body> {
    error_with(code, message, None)
}

/// [`error`], with what the user can do about it.
pub fn error_with(code: ErrorCode, message: &str, suggestion: Option<&str>) -> Response<Body> {
    let status = StatusCode::from_u16(code.http_status()).expect("the table's statuses are valid");
    json(
        status,
        &serde_json::json!({ "error": error_object(code, message, suggestion) }),
    )
}

/// What `"error"` holds: `code` in our HTTP vocabulary, `reason` the library's own code where
/// that differs (`BACKEND_STALLED` under `BACKEND_ERROR`), `type` OpenAI's class of the status.
pub fn error_object(code: ErrorCode, message: &str, suggestion: Option<&str>) -> Value {
    let mut error = serde_json::json!({
        "message": message,
        "code": code.http_code(),
        "type": error_type(code.http_status()),
    });
    if code.http_code() != code.as_str() {
        error["reason"] = code.as_str().into();
    }
    if let Some(suggestion) = suggestion {
        error["suggestion"] = suggestion.into();
    }
    error
}

/// The `type` llama-server and OpenAI give an error of this status.
fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        501 => "not_supported_error",
        503 => "unavailable_error",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    }
}

pub fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::new()).boxed_unsync());
    *response.status_mut() = status;
    response
}

/// A `text/event-stream` response whose events come from `events` (each already formatted).
pub fn event_stream(events: impl Stream<Item = String> + Send + 'static) -> Response<Body> {
    let frames = events.map(|event| Ok::<_, Infallible>(Frame::data(Bytes::from(event))));
    let mut response = Response::new(BodyExt::boxed_unsync(StreamBody::new(frames)));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert("cache-control", HeaderValue::from_static("no-cache"));
    response
}

/// One Server-Sent Event.
pub fn sse_event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    async fn raw(addr: SocketAddr, request: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn one_server_answers_on_each_address_with_title_case_names() {
        let first = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = first.local_addr().unwrap().port();
        let second = TcpListener::bind(("127.0.0.2", port)).await.unwrap();
        let server = serve_all(vec![first, second], |_req: Request<Incoming>| async move {
            json(StatusCode::OK, &json!({ "ok": true }))
        })
        .unwrap();
        assert_eq!(server.addr.port(), port);
        for ip in ["127.0.0.1", "127.0.0.2"] {
            let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
            let answer = raw(
                addr,
                "GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            )
            .await;
            assert!(answer.starts_with("HTTP/1.1 200"), "{ip}: {answer}");
            assert!(
                answer.contains("\r\nContent-Type: application/json"),
                "{answer}"
            );
        }
        server.shutdown().await;
        assert_eq!(
            addresses(" 127.0.0.1, ::1").collect::<Vec<_>>(),
            ["127.0.0.1", "::1"]
        );
        assert_eq!(
            addresses("[::1],127.0.0.1").collect::<Vec<_>>(),
            ["::1", "127.0.0.1"]
        );
        assert_eq!(local_base("::1,127.0.0.1", 80), "http://[::1]:80");
        assert_eq!(local_base("[::]", 80), "http://[::1]:80");
        let none = serve_all(Vec::new(), |_req: Request<Incoming>| async move {
            json(StatusCode::OK, &json!({}))
        });
        assert!(none.is_err());
    }

    #[tokio::test]
    async fn requests_hyper_cannot_parse_get_json_errors() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = serve(listener, |_req: Request<Incoming>| async move {
            json(StatusCode::OK, &json!({ "ok": true }))
        })
        .unwrap();
        let long_path = format!("GET /{} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(100_000));
        let flood = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            (0..200)
                .map(|i| format!("x-h{i}: v\r\n"))
                .collect::<String>()
        );
        for (request, status, code) in [
            ("GARBAGE\r\n\r\n", "400", "INVALID_REQUEST"),
            (
                "GET / HTTP/1.1\r\ncontent-length: -5\r\n\r\n",
                "400",
                "INVALID_REQUEST",
            ),
            (
                "POST / HTTP/1.1\r\ncontent-length: 99999999999999999999999\r\n\r\n",
                "400",
                "INVALID_REQUEST",
            ),
            ("GET / HTTP/9.9\r\n\r\n", "400", "INVALID_REQUEST"),
            (long_path.as_str(), "414", "URI_TOO_LONG"),
            (flood.as_str(), "431", "HEADERS_TOO_LARGE"),
        ] {
            let answer = raw(server.addr, request).await;
            let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
            assert!(
                head.starts_with(&format!("HTTP/1.1 {status}")),
                "{request:.40}: {answer}"
            );
            assert!(head.contains("content-type: application/json"), "{answer}");
            let body: Value =
                serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"));
            assert_eq!(body["error"]["code"], code, "{answer}");
            assert_eq!(body["error"]["type"], "invalid_request_error", "{answer}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty())
            );
        }
        let ok = raw(
            server.addr,
            "GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert!(ok.ends_with("{\"ok\":true}"), "{ok}");
        server.shutdown().await;
    }

    #[tokio::test]
    async fn bodies_are_bounded_and_shutdown_closes_the_port() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = serve(listener, |req: Request<Incoming>| async move {
            match read_body(req, 8).await {
                Ok(body) => json(StatusCode::OK, &json!({ "len": body.len() })),
                Err(BodyError::TooLarge) => error(ErrorCode::BodyTooLarge, "big"),
                Err(BodyError::Unreadable) => error(ErrorCode::InvalidArgument, "bad"),
            }
        })
        .unwrap();
        let addr = server.addr;
        let ok = raw(
            addr,
            "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\nconnection: close\r\n\r\nabc",
        )
        .await;
        assert!(
            ok.starts_with("HTTP/1.1 200") && ok.contains("{\"len\":3}"),
            "{ok}"
        );
        let declared = raw(
            addr,
            "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 9\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert!(declared.starts_with("HTTP/1.1 413"), "{declared}");
        let chunked = raw(
            addr,
            "POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nabcde\r\n5\r\nfghij\r\n0\r\n\r\n",
        )
        .await;
        assert!(chunked.starts_with("HTTP/1.1 413"), "{chunked}");
        server.shutdown().await;
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    #[test]
    fn local_addresses_become_urls() {
        assert_eq!(local_base("127.0.0.1", 8), "http://127.0.0.1:8");
        assert_eq!(local_base("0.0.0.0", 8), "http://127.0.0.1:8");
        assert_eq!(local_base("::", 8), "http://[::1]:8");
        assert_eq!(local_base("::1", 8), "http://[::1]:8");
        assert_eq!(local_base("localhost", 8), "http://localhost:8");
    }

    #[test]
    fn sse_events_are_framed() {
        assert_eq!(
            sse_event("progress", &json!({"a": 1})),
            "event: progress\ndata: {\"a\":1}\n\n"
        );
    }
}
