//! The LLM gateway: llamaServer's public port, a reverse proxy (our one hyper stack) in front of
//! llama-server, which listens on an internal loopback port.
//!
//! Every path and method passes through, and response bodies (SSE streams included) go on chunk
//! by chunk as they come. The API key is enforced here, and only configured browser origins get
//! CORS answers: llama-server's `Access-Control-Allow-Origin: *` is not passed on. While the
//! server is starting, restarting or being restarted, requests wait in a bounded queue and are
//! served once it is running; a full queue, a wait past its timeout, or a server that stopped or
//! crashed for good is a 503 with `Retry-After` and the JSON error shape.
//!
//! While the server is offloaded, what clients ask before every chat (`/props`, the model list,
//! health) is answered from the last answers llama-server gave: a client with a short timeout
//! on those calls (genai-lite: 5 s) then sends its chat, which waits for the reload.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::HeaderValue;
use hyper::{Request, Response};
use tokio::sync::watch;

use crate::error::ErrorCode;
use crate::events::EventSink;
use crate::http::access::Access;
use crate::http::{self, Body, BodyError, HttpServer};
use crate::process::{ServerState, Snapshot};
use crate::sync::lock;

/// How long a client is told to wait before asking again.
const RETRY_AFTER_SECS: u64 = 5;
/// How long a refused connection waits for the actor to report the server gone.
const LEAVE_WAIT: Duration = Duration::from_secs(2);

pub struct GatewayConfig {
    pub access: Access,
    pub max_queued: usize,
    pub queue_timeout: Duration,
    pub max_body_bytes: usize,
    /// The routes and inputs the server's task takes.
    pub task: super::tasks::TaskCheck,
}

/// What the server's owner and the gateway share: a hold that makes requests wait even while
/// the server runs (an offload drains it, then stops it), the requests being served, and those
/// waiting, each announced as it joins and leaves the queue.
#[derive(Default)]
pub struct Traffic {
    held: watch::Sender<bool>,
    in_flight: watch::Sender<usize>,
    waiting: Mutex<BTreeMap<u64, Instant>>,
    /// How many wait, for whoever must act when a request waits (an orchestrator).
    length: watch::Sender<usize>,
    next: AtomicU64,
    events: Option<EventSink<QueueEvent>>,
    /// Set by whoever holds the traffic (the orchestrator during an offload): the queue's bounds
    /// for that time, instead of the server's own.
    bounds: Mutex<QueueBounds>,
    /// Taken to let a request through and to hold: a request is counted in flight if and only
    /// if it passed before the hold, so the drain that follows a hold waits for every one.
    admission: Mutex<()>,
    /// When the last request was let through or finished: how long the server has been idle.
    last_active: Mutex<Option<Instant>>,
}

/// Bounds of the queue that replace the gateway's configured ones while set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueBounds {
    pub max_queued: Option<usize>,
    pub timeout: Option<Duration>,
}

/// A request began or stopped waiting at a gateway.
#[derive(Debug, Clone, PartialEq, serde::Serialize, ts_rs::TS)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum QueueEvent {
    /// A request began to wait; `waiting` counts it.
    Queued { waiting: usize },
    /// A request stopped waiting (served, refused, or its client went) after `waitedMs`.
    Dequeued {
        waiting: usize,
        #[serde(rename = "waitedMs", serialize_with = "crate::clock::serialize_millis")]
        #[ts(type = "number")]
        waited: Duration,
    },
}

/// The requests waiting at a gateway now: how many, and the longest wait so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, ts_rs::TS)]
#[serde(rename_all = "camelCase")]
pub struct QueueInfo {
    pub length: usize,
    /// Milliseconds.
    pub longest_wait_ms: u64,
}

impl Traffic {
    pub fn new(events: Option<EventSink<QueueEvent>>) -> Self {
        Traffic {
            events,
            ..Traffic::default()
        }
    }

    pub fn queue(&self) -> QueueInfo {
        let waiting = lock(&self.waiting);
        QueueInfo {
            length: waiting.len(),
            longest_wait_ms: waiting
                .values()
                .next()
                .map_or(0, |since| since.elapsed().as_millis() as u64),
        }
    }

    fn emit(&self, event: QueueEvent) {
        if let Some(events) = &self.events {
            events.emit(event);
        }
    }

    /// The number of requests waiting, from now on.
    pub fn length(&self) -> watch::Receiver<usize> {
        self.length.subscribe()
    }

    pub fn is_held(&self) -> bool {
        *self.held.borrow()
    }

    pub fn hold(&self, held: bool) {
        let _admission = lock(&self.admission);
        self.held.send_replace(held);
    }

    /// Lets a request through to the server, counted until its answer is sent, unless the
    /// traffic is held.
    fn admit(self: &Arc<Self>) -> Option<Serving> {
        let _admission = lock(&self.admission);
        if *self.held.borrow() {
            return None;
        }
        self.in_flight.send_modify(|n| *n += 1);
        self.touch();
        Some(Serving(self.clone()))
    }

    /// Counts as activity now (a request, or the server's start).
    pub fn touch(&self) {
        *lock(&self.last_active) = Some(Instant::now());
    }

    /// How long no request has been served (zero while one is), since the last activity.
    pub fn idle_for(&self) -> Duration {
        if *self.in_flight.borrow() > 0 {
            return Duration::ZERO;
        }
        lock(&self.last_active).map_or(Duration::ZERO, |at| at.elapsed())
    }

    /// Bounds the queue by `bounds` (where set) until they are set again.
    pub fn bound(&self, bounds: QueueBounds) {
        *lock(&self.bounds) = bounds;
    }

    /// Lets go: no hold, and the server's own bounds again.
    pub fn release(&self) {
        self.hold(false);
        self.bound(QueueBounds::default());
    }

    fn bounds(&self, config: &GatewayConfig) -> (usize, Duration) {
        let bounds = *lock(&self.bounds);
        (
            bounds.max_queued.unwrap_or(config.max_queued),
            bounds.timeout.unwrap_or(config.queue_timeout),
        )
    }

    /// Resolves once no request is being served, or after `limit`; true when drained.
    pub async fn drained(&self, limit: Duration) -> bool {
        let mut in_flight = self.in_flight.subscribe();
        matches!(
            tokio::time::timeout(limit, in_flight.wait_for(|n| *n == 0)).await,
            Ok(Ok(_))
        )
    }
}

/// A request being served, counted until its answer is sent or dropped.
struct Serving(Arc<Traffic>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.in_flight.send_modify(|n| *n -= 1);
        self.0.touch();
    }
}

struct Shared {
    config: GatewayConfig,
    /// The actor's state: whether llama-server runs, and on which internal port.
    backend: watch::Receiver<Snapshot>,
    traffic: Arc<Traffic>,
    /// The last successful answer to each of [`REMEMBERED`], for the time it is offloaded.
    remembered: Mutex<HashMap<&'static str, Remembered>>,
}

/// What clients ask before every request, describing the model rather than using it: answered
/// from memory while the server is offloaded.
const REMEMBERED: [&str; 5] = ["/health", "/v1/health", "/props", "/models", "/v1/models"];

/// Health answers never wait: they say how things are now.
const HEALTH: [&str; 2] = ["/health", "/v1/health"];

/// One answer llama-server gave (status 200), kept whole.
#[derive(Clone)]
struct Remembered {
    headers: hyper::HeaderMap,
    body: bytes::Bytes,
}

impl Remembered {
    fn response(&self) -> Response<Body> {
        let mut response = Response::new(BodyExt::boxed_unsync(http_body_util::Full::new(
            self.body.clone(),
        )));
        *response.headers_mut() = self.headers.clone();
        response
    }
}

/// Serves the gateway on `listeners` (one port, on each address) until its [`HttpServer`] is
/// shut down.
pub fn serve(
    listeners: Vec<tokio::net::TcpListener>,
    backend: watch::Receiver<Snapshot>,
    traffic: Arc<Traffic>,
    config: GatewayConfig,
) -> std::io::Result<HttpServer> {
    let shared = Arc::new(Shared {
        config,
        backend,
        traffic,
        remembered: Mutex::default(),
    });
    http::serve_all(listeners, move |req| {
        let shared = shared.clone();
        async move {
            // What llama-server leaves open, so do we.
            let open = |path: &str| HEALTH.contains(&path);
            let access = &shared.config.access;
            access.serve(req, open, |req| shared.forward(req)).await
        }
    })
}

/// One place in the queue, given back however the wait ends (a client that hangs up included:
/// hyper drops its request's future).
struct Place<'a> {
    traffic: &'a Traffic,
    id: u64,
}

impl<'a> Place<'a> {
    /// Takes a place; `None` when `max` already wait.
    fn take(traffic: &'a Traffic, max: usize) -> Option<Place<'a>> {
        let waiting = {
            let mut waiting = lock(&traffic.waiting);
            if waiting.len() >= max {
                return None;
            }
            let id = traffic.next.fetch_add(1, Ordering::Relaxed);
            waiting.insert(id, Instant::now());
            traffic.length.send_replace(waiting.len());
            (id, waiting.len())
        };
        traffic.emit(QueueEvent::Queued { waiting: waiting.1 });
        Some(Place {
            traffic,
            id: waiting.0,
        })
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        let (since, waiting) = {
            let mut waiting = lock(&self.traffic.waiting);
            let since = waiting.remove(&self.id);
            self.traffic.length.send_replace(waiting.len());
            (since, waiting.len())
        };
        let waited = since.map_or(Duration::ZERO, |t| t.elapsed());
        self.traffic.emit(QueueEvent::Dequeued { waiting, waited });
    }
}

/// The server will be running soon (or is held): a request may wait for it.
fn coming(s: &Snapshot, held: bool) -> bool {
    if held {
        return true;
    }
    match s.status {
        ServerState::Starting | ServerState::Restarting | ServerState::Stopping => true,
        ServerState::Crashed => s.restart_pending,
        ServerState::Running | ServerState::Stopped => false,
    }
}

impl Shared {
    async fn forward(&self, req: Request<Incoming>) -> Response<Body> {
        let (method, uri, headers) = (
            req.method().clone(),
            req.uri().clone(),
            req.headers().clone(),
        );
        // Read first: the request is whole before it takes a place in the queue.
        let body = match http::read_body(req, self.config.max_body_bytes).await {
            Ok(body) => body,
            Err(BodyError::TooLarge) => {
                return http::error(
                    ErrorCode::BodyTooLarge,
                    &format!(
                        "request bodies are limited to {} bytes",
                        self.config.max_body_bytes
                    ),
                );
            }
            Err(BodyError::Unreadable) => {
                return http::error(
                    ErrorCode::InvalidArgument,
                    "the request body could not be read",
                );
            }
        };
        if method == hyper::Method::POST
            && let Some(why) = self.config.task.refusal(uri.path(), &body)
        {
            return http::error(ErrorCode::InvalidArgument, &why);
        }
        let remembered = REMEMBERED
            .into_iter()
            .find(|p| method == hyper::Method::GET && *p == uri.path());
        if let Some(answer) = remembered.and_then(|p| self.offloaded_answer(p)) {
            return answer;
        }
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let mut retried = false;
        let (answer, serving) = loop {
            let health = HEALTH.contains(&uri.path());
            let (port, pid, serving) = match self.running(health).await {
                Ok(running) => running,
                Err(response) => return response,
            };
            let mut request = http::local_client()
                .request(method.clone(), format!("http://127.0.0.1:{port}{path}"));
            for (name, value) in headers.iter().filter(|(name, _)| passes(name.as_str())) {
                request = request.header(name, value);
            }
            match request.body(body.clone()).send().await {
                Ok(answer) => break (answer, serving),
                // The server died a moment ago and the actor has not said so yet: once it has,
                // the request waits for the restart like any other.
                Err(e) if e.is_connect() && !retried && self.leaves(pid).await => retried = true,
                Err(e) => {
                    return http::error(
                        ErrorCode::BackendUnavailable,
                        &format!("llama-server did not answer: {e}"),
                    );
                }
            }
        };
        let status = answer.status();
        let answer_headers: hyper::HeaderMap = answer
            .headers()
            .iter()
            .filter(|(name, _)| passes(name.as_str()))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        if let (Some(key), hyper::StatusCode::OK) = (remembered, status) {
            let Ok(body) = answer.bytes().await else {
                return http::error(
                    ErrorCode::BackendUnavailable,
                    "llama-server's answer broke off",
                );
            };
            let kept = Remembered {
                headers: answer_headers,
                body,
            };
            lock(&self.remembered).insert(key, kept.clone());
            drop(serving);
            return kept.response();
        }
        // A backend that dies mid-stream ends the body where it stopped.
        // Served until the last chunk is sent (or the client goes): an offload waits for that.
        let frames = answer
            .bytes_stream()
            .take_while(|chunk| std::future::ready(chunk.is_ok()))
            .filter_map(|chunk| std::future::ready(chunk.ok()))
            .map(move |chunk| {
                let _serving = &serving;
                Ok::<_, std::convert::Infallible>(Frame::data(chunk))
            });
        let mut response = Response::new(BodyExt::boxed_unsync(StreamBody::new(frames)));
        *response.status_mut() = status;
        *response.headers_mut() = answer_headers;
        response
    }

    /// The last answer to `path`, while the server is offloaded (held and not running).
    fn offloaded_answer(&self, path: &str) -> Option<Response<Body>> {
        let running = self.backend.borrow().status == ServerState::Running;
        if !self.traffic.is_held() || running {
            return None;
        }
        lock(&self.remembered).get(path).map(Remembered::response)
    }

    /// Whether the process `pid` is reported gone within a moment.
    async fn leaves(&self, pid: Option<u32>) -> bool {
        let mut backend = self.backend.clone();
        let gone = backend.wait_for(|s| s.status != ServerState::Running || s.pid != pid);
        matches!(tokio::time::timeout(LEAVE_WAIT, gone).await, Ok(Ok(_)))
    }

    /// The internal port and pid once llama-server runs, and the request's count in flight:
    /// at once, or after a wait in the queue. `/health` never waits: it tells how things are now.
    async fn running(&self, health: bool) -> Result<(u16, Option<u32>, Serving), Response<Body>> {
        let mut backend = self.backend.clone();
        let mut held = self.traffic.held.subscribe();
        let now = backend.borrow_and_update().clone();
        let mut now_held = *held.borrow_and_update();
        if let (ServerState::Running, Some(port), false) = (now.status, now.port, now_held) {
            match self.traffic.admit() {
                Some(serving) => return Ok((port, now.pid, serving)),
                // Held since the look above: wait like the requests after the hold.
                None => now_held = true,
            }
        }
        if health || !coming(&now, now_held) {
            return Err(unavailable(&now));
        }
        let (max_queued, queue_timeout) = self.traffic.bounds(&self.config);
        let Some(_place) = Place::take(&self.traffic, max_queued) else {
            return Err(retry_later(
                ErrorCode::QueueFull,
                &format!(
                    "llama-server is {} and {max_queued} requests are already waiting for it",
                    if now_held {
                        "offloaded".into()
                    } else {
                        now.status.to_string()
                    }
                ),
            ));
        };
        let settled = async {
            loop {
                let state = backend.borrow_and_update().clone();
                if !coming(&state, *held.borrow_and_update()) {
                    if state.status != ServerState::Running {
                        return (state, None);
                    }
                    match self.traffic.admit() {
                        Some(serving) => return (state, Some(serving)),
                        // Held again meanwhile: the look above sees it.
                        None => continue,
                    }
                }
                tokio::select! {
                    changed = backend.changed() => if changed.is_err() { return (Snapshot::default(), None) },
                    _ = held.changed() => {}
                }
            }
        };
        let (after, admitted) = match tokio::time::timeout(queue_timeout, settled).await {
            Ok(settled) => settled,
            Err(_) => {
                return Err(retry_later(
                    ErrorCode::QueueTimeout,
                    &format!(
                        "llama-server was not running within {} ms",
                        queue_timeout.as_millis()
                    ),
                ));
            }
        };
        match (after, admitted) {
            (
                Snapshot {
                    port: Some(port),
                    pid,
                    ..
                },
                Some(serving),
            ) => Ok((port, pid, serving)),
            (after, _) => Err(unavailable(&after)),
        }
    }
}

fn unavailable(s: &Snapshot) -> Response<Body> {
    let why = s
        .error
        .as_deref()
        .map(|e| format!(": {e}"))
        .unwrap_or_default();
    retry_later(
        ErrorCode::ServerUnavailable,
        &format!("llama-server is {}{why}", s.status),
    )
}

/// A 503 (every code it is given has that status) that says when to ask again.
fn retry_later(code: ErrorCode, message: &str) -> Response<Body> {
    let mut response = http::error(code, message);
    response
        .headers_mut()
        .insert("retry-after", HeaderValue::from(RETRY_AFTER_SECS));
    response
}

/// Hop-by-hop headers stay on their hop; `host` and the body's length are set anew.
fn passes(name: &str) -> bool {
    !matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

#[cfg(test)]
mod tests;
