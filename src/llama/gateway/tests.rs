//! The gateway against a backend served here (our own HTTP stack standing in for llama-server)
//! and a state the test sets: the real llama-server is in `__test__/gateway.test.js`.

use super::*;
use crate::http::access::{Access, HostCheck};
use std::time::Instant;

/// Answers every request with three SSE events, 50 ms apart, naming its method and path, and
/// says every origin may call it (as llama-server does).
async fn backend() -> (HttpServer, u16) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = http::serve(listener, |req: Request<Incoming>| async move {
        let seen = format!("{} {}", req.method(), req.uri());
        let events = futures_util::stream::iter(0..3).then(move |i| {
            let seen = seen.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                format!("data: {i} {seen}\n\n")
            }
        });
        let mut response = http::event_stream(events);
        response
            .headers_mut()
            .insert("access-control-allow-origin", HeaderValue::from_static("*"));
        response
    })
    .unwrap();
    (server, port)
}

struct Setup {
    state: watch::Sender<Snapshot>,
    traffic: Arc<Traffic>,
    port: u16,
    _servers: (HttpServer, HttpServer),
}

async fn setup(max_queued: usize, queue_timeout: Duration) -> Setup {
    let (backend, backend_port) = backend().await;
    let (state, watched) = watch::channel(Snapshot {
        status: ServerState::Starting,
        port: Some(backend_port),
        ..Snapshot::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = GatewayConfig {
        access: Access {
            hosts: HostCheck::new("127.0.0.1", &[]),
            api_key: None,
            allowed_origins: vec![],
            methods: "GET, POST",
        },
        max_queued,
        queue_timeout,
        max_body_bytes: 1024,
        task: crate::llama::tasks::TaskCheck {
            mode: crate::llama::tasks::Mode::Chat,
            reads_media: true,
        },
    };
    let traffic = Arc::new(Traffic::default());
    let gateway = serve(vec![listener], watched, traffic.clone(), config).unwrap();
    Setup {
        state,
        traffic,
        port,
        _servers: (gateway, backend),
    }
}

fn set(state: &watch::Sender<Snapshot>, status: ServerState) {
    state.send_modify(|s| s.status = status);
}

async fn json_of(answer: reqwest::Response) -> serde_json::Value {
    serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap()
}

fn post(port: u16, path: &str, body: &'static str) -> reqwest::RequestBuilder {
    http::local_client()
        .post(format!("http://127.0.0.1:{port}{path}"))
        .body(body)
}

#[tokio::test]
async fn a_request_waits_for_the_server_then_streams_through_unchanged() {
    let s = setup(4, Duration::from_secs(10)).await;
    let waiting = tokio::spawn(post(s.port, "/v1/chat/completions?x=1", "{}").send());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished(), "it waits while the server starts");
    set(&s.state, ServerState::Running);
    let answer = waiting.await.unwrap().unwrap();
    assert_eq!(answer.status(), 200);
    assert!(
        answer
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    assert_eq!(answer.headers()["content-type"], "text/event-stream");
    // Chunk by chunk: the first event arrives while the backend still writes the others (a
    // gateway that buffered would hand them over together).
    let mut stream = answer.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    let first_at = Instant::now();
    assert_eq!(first, "data: 0 POST /v1/chat/completions?x=1\n\n");
    let rest: Vec<_> = stream.map(|c| c.unwrap()).collect().await;
    assert!(
        first_at.elapsed() >= Duration::from_millis(80),
        "{:?}",
        first_at.elapsed()
    );
    assert_eq!(
        rest.concat(),
        b"data: 1 POST /v1/chat/completions?x=1\n\ndata: 2 POST /v1/chat/completions?x=1\n\n"
    );
}

#[tokio::test]
async fn the_queue_is_bounded_and_waits_end() {
    let s = setup(1, Duration::from_millis(300)).await;
    let first = tokio::spawn(post(s.port, "/a", "").send());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let queue = s.traffic.queue();
    assert_eq!(queue.length, 1);
    assert!(queue.longest_wait_ms >= 40, "{queue:?}");
    let refused = post(s.port, "/b", "").send().await.unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "5");
    let body = json_of(refused).await;
    assert_eq!(body["error"]["code"], "QUEUE_FULL");
    let timed_out = first.await.unwrap().unwrap();
    assert_eq!(timed_out.status(), 503);
    assert_eq!(
        s.traffic.queue().length,
        0,
        "a wait that ended gives its place back"
    );
    let body = json_of(timed_out).await;
    assert_eq!(body["error"]["code"], "QUEUE_TIMEOUT");
}

#[tokio::test]
async fn a_holder_bounds_the_queue_until_it_lets_go() {
    let s = setup(8, Duration::from_secs(60)).await;
    set(&s.state, ServerState::Running);
    s.traffic.hold(true);
    s.traffic.bound(QueueBounds {
        max_queued: Some(1),
        timeout: Some(Duration::from_millis(200)),
    });
    let first = tokio::spawn(post(s.port, "/a", "").send());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let refused = post(s.port, "/b", "").send().await.unwrap();
    let body = json_of(refused).await;
    assert_eq!(body["error"]["code"], "QUEUE_FULL");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("offloaded"),
        "{body}"
    );
    let timed_out = json_of(first.await.unwrap().unwrap()).await;
    assert_eq!(timed_out["error"]["code"], "QUEUE_TIMEOUT", "{timed_out}");
    // Let go: the server's own bounds again (eight places, a minute each).
    s.traffic.bound(QueueBounds::default());
    let waiting: Vec<_> = (0..3)
        .map(|_| tokio::spawn(post(s.port, "/c", "").send()))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.traffic.queue().length, 3);
    s.traffic.hold(false);
    for answer in waiting {
        assert_eq!(answer.await.unwrap().unwrap().status(), 200);
    }
}

#[tokio::test]
async fn health_never_waits_and_a_server_that_is_not_coming_is_unavailable_at_once() {
    let s = setup(4, Duration::from_secs(10)).await;
    let health = http::local_client()
        .get(format!("http://127.0.0.1:{}/health", s.port))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 503);
    s.state.send_modify(|snapshot| {
        snapshot.status = ServerState::Crashed;
        snapshot.error = Some("it broke".into());
    });
    let began = Instant::now();
    let answer = post(s.port, "/v1/x", "").send().await.unwrap();
    assert!(began.elapsed() < Duration::from_secs(1));
    assert_eq!(answer.status(), 503);
    let body = json_of(answer).await;
    assert_eq!(body["error"]["code"], "SERVER_UNAVAILABLE");
    assert_eq!(
        body["error"]["message"],
        "llama-server is crashed: it broke"
    );
    // Crashed with a restart to follow: requests wait for it.
    s.state
        .send_modify(|snapshot| snapshot.restart_pending = true);
    let waiting = tokio::spawn(post(s.port, "/v1/x", "").send());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished());
    set(&s.state, ServerState::Running);
    assert_eq!(waiting.await.unwrap().unwrap().status(), 200);
}

#[tokio::test]
async fn bodies_are_bounded() {
    let s = setup(4, Duration::from_secs(10)).await;
    set(&s.state, ServerState::Running);
    let big: &'static str = Box::leak("x".repeat(2048).into_boxed_str());
    let answer = post(s.port, "/v1/x", big).send().await.unwrap();
    assert_eq!(answer.status(), 413);
}

#[tokio::test]
async fn a_backend_that_is_gone_is_a_bad_gateway() {
    let s = setup(4, Duration::from_secs(10)).await;
    // Running, but nothing listens where the state says.
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = unused.local_addr().unwrap().port();
    drop(unused);
    s.state.send_modify(|snapshot| {
        snapshot.status = ServerState::Running;
        snapshot.port = Some(dead);
    });
    let answer = post(s.port, "/v1/x", "").send().await.unwrap();
    assert_eq!(answer.status(), 502);
    let body = json_of(answer).await;
    assert_eq!(body["error"]["code"], "BACKEND_UNAVAILABLE");
}

#[tokio::test]
async fn a_hold_drains_the_streams_in_flight_and_makes_new_requests_wait() {
    let s = setup(4, Duration::from_secs(10)).await;
    set(&s.state, ServerState::Running);
    let streaming = post(s.port, "/stream", "").send().await.unwrap();
    let mut chunks = streaming.bytes_stream();
    assert!(chunks.next().await.is_some(), "the stream has begun");
    s.traffic.hold(true);
    let began = Instant::now();
    let drain = tokio::spawn({
        let traffic = s.traffic.clone();
        async move { traffic.drained(Duration::from_secs(5)).await }
    });
    let waiting = tokio::spawn(post(s.port, "/later", "").send());
    let rest: Vec<_> = chunks.map(|c| c.unwrap()).collect().await;
    assert_eq!(rest.len(), 2, "the stream in flight is whole");
    assert!(drain.await.unwrap(), "drained once the stream ended");
    assert!(began.elapsed() >= Duration::from_millis(80));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !waiting.is_finished(),
        "held: new requests wait though the server runs"
    );
    s.traffic.hold(false);
    assert_eq!(waiting.await.unwrap().unwrap().status(), 200);
}

#[tokio::test]
async fn a_host_that_is_not_loopback_is_refused_before_anything_else() {
    let s = setup(4, Duration::from_secs(10)).await;
    set(&s.state, ServerState::Running);
    // What a page that rebound its own domain to 127.0.0.1 sends: same-origin, no Origin.
    let rebound = post(s.port, "/v1/chat/completions", "{}")
        .header("host", format!("attacker.example:{}", s.port))
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 403);
    let body = json_of(rebound).await;
    assert_eq!(body["error"]["code"], "INVALID_HOST", "{body}");
    assert_eq!(s.traffic.queue().length, 0, "nothing was queued");
    for host in [
        format!("localhost:{}", s.port),
        format!("127.0.0.1:{}", s.port),
    ] {
        let answer = post(s.port, "/v1/chat/completions", "{}")
            .header("host", host.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{host}");
    }
}

fn get(port: u16, path: &str) -> reqwest::RequestBuilder {
    http::local_client().get(format!("http://127.0.0.1:{port}{path}"))
}

#[tokio::test]
async fn while_offloaded_what_describes_the_model_is_answered_from_memory_and_chats_wait() {
    let s = setup(4, Duration::from_secs(10)).await;
    set(&s.state, ServerState::Running);
    let mut seen = Vec::new();
    for path in ["/props", "/v1/models", "/health", "/v1/health"] {
        let answer = get(s.port, path).send().await.unwrap();
        assert_eq!(answer.status(), 200, "{path}");
        seen.push(answer.text().await.unwrap());
    }
    // An offload: requests are held, then the process stops.
    s.traffic.hold(true);
    set(&s.state, ServerState::Stopped);
    for (path, before) in ["/props", "/v1/models", "/health", "/v1/health"]
        .into_iter()
        .zip(&seen)
    {
        let started = Instant::now();
        let answer = get(s.port, path).send().await.unwrap();
        assert_eq!(answer.status(), 200, "{path}");
        assert_eq!(
            &answer.text().await.unwrap(),
            before,
            "{path}: the last answer"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{path} did not wait"
        );
    }
    // Never asked before the offload: it waits with the chats.
    let slots = tokio::spawn(get(s.port, "/slots").send());
    let chat = tokio::spawn(post(s.port, "/v1/chat/completions", "{}").send());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !chat.is_finished() && !slots.is_finished(),
        "they wait for the reload"
    );
    assert_eq!(s.traffic.queue().length, 2);
    s.traffic.release();
    set(&s.state, ServerState::Running);
    assert_eq!(chat.await.unwrap().unwrap().status(), 200);
    assert_eq!(slots.await.unwrap().unwrap().status(), 200);
}

#[tokio::test]
async fn a_stopped_server_that_is_not_offloaded_answers_health_as_it_is() {
    let s = setup(4, Duration::from_secs(10)).await;
    set(&s.state, ServerState::Running);
    assert_eq!(get(s.port, "/health").send().await.unwrap().status(), 200);
    set(&s.state, ServerState::Stopped);
    for path in ["/health", "/v1/health"] {
        let answer = get(s.port, path).send().await.unwrap();
        assert_eq!(answer.status(), 503, "{path}");
    }
}

#[tokio::test]
async fn a_request_let_through_before_a_hold_is_waited_for_by_the_drain_and_none_after_it() {
    let traffic = Arc::new(Traffic::default());
    // A request passes the gateway's look at the hold, and the orchestrator holds at once (it
    // sends its `offload` event first, and a chat sent then can arrive in between).
    let passed = traffic.admit().expect("not held yet");
    traffic.hold(true);
    assert!(
        !traffic.drained(Duration::from_millis(50)).await,
        "the drain waits for the request that passed"
    );
    assert!(traffic.admit().is_none(), "none passes once held");
    drop(passed);
    assert!(traffic.drained(Duration::from_millis(50)).await);
    traffic.hold(false);
    assert!(traffic.admit().is_some());
}
