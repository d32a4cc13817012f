use super::*;
use crate::process::ServerState as State;
use crate::testing::image;
use engine::JobStatus;
use std::path::Path;
use std::time::{Duration, Instant};

use backend::ModelFiles;
use base64::Engine as _;

/// Tests with real backends run one at a time: they count this process's `sd-*` children, and
/// the machine may have two cores.
pub(crate) static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The real sd-cli, sd-server and tiny diffusion set from `npm run backends`.
pub(crate) fn real() -> Option<Value> {
    crate::testing::real_backends("stable-diffusion.cpp")
}

pub(crate) fn config(b: &Value, kind: BackendKind, temp: &Path) -> DiffusionConfig {
    let binary = match kind {
        BackendKind::OneShot => &b["sdCli"],
        BackendKind::Resident => &b["sdServer"],
    };
    DiffusionConfig {
        model_id: "tiny-diffusion-test".into(),
        host: "127.0.0.1".into(),
        port: None,
        backend: BackendConfig {
            kind,
            binary: binary.as_str().unwrap().into(),
            model: ModelFiles {
                primary: b["diffusionModel"].as_str().unwrap().into(),
                components: vec![
                    (
                        "--llm",
                        b["diffusionComponents"]["llm"].as_str().unwrap().into(),
                    ),
                    (
                        "--taesd",
                        b["diffusionComponents"]["taesd"].as_str().unwrap().into(),
                    ),
                ],
            },
            threads: 1,
            placement: vec![],
            extra_args: vec![],
            env: vec![],
            device: Default::default(),
            temp_dir: temp.to_path_buf(),
            data: crate::config::DataPaths::new(
                temp.join("data"),
                crate::config::DataDirSource::Configured,
            ),
            startup_timeout: Duration::from_secs(60),
            idle_timeout: None,
        },
        api_key: None,
        allowed_origins: vec![],
        allowed_hosts: vec![],
        max_queue: 2,
        stall_timeout: Some(Duration::from_secs(120)),
        max_body_bytes: resolve::DEFAULT_MAX_BODY_BYTES,
        log_file: None,
    }
}

type Seen = Arc<Mutex<Vec<DiffusionEvent>>>;

fn recorder() -> (DiffusionServer, Seen) {
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let server = DiffusionServer::new(Some(EventSink::new(move |e| {
        if !matches!(
            e,
            DiffusionEvent::Log(_)
                | DiffusionEvent::Server(ServerEvent::State(_))
                | DiffusionEvent::BackendState(_)
        ) {
            sink.lock().unwrap().push(e)
        }
    })));
    (server, seen)
}

fn small(steps: u32) -> Value {
    json!({ "prompt": "a red cube", "width": 64, "height": 64, "steps": steps, "cfgScale": 1, "seed": 42 })
}

fn url(server: &DiffusionServer, path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", server.info().port.unwrap())
}

async fn post(server: &DiffusionServer, body: &Value) -> (u16, Value) {
    let r = crate::download::http_client()
        .post(url(server, "/v1/images/generations"))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (
        status,
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null),
    )
}

async fn get_json(server: &DiffusionServer, path: &str) -> Value {
    let r = crate::download::http_client()
        .get(url(server, path))
        .send()
        .await
        .unwrap();
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
}

fn png_size(png: &[u8]) -> (u32, u32) {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    (
        u32::from_be_bytes(png[16..20].try_into().unwrap()),
        u32::from_be_bytes(png[20..24].try_into().unwrap()),
    )
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// Direct children of this test process whose name starts with `sd-`.
fn sd_children() -> Vec<u32> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                let (name, rest) = s.split_once(") ").unwrap_or(("", ""));
                name.contains("(sd-") && rest.split(' ').nth(1) == Some(me.as_str())
            })
        })
        .collect()
}

fn steps_seen(seen: &Seen) -> Vec<u32> {
    seen.lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            DiffusionEvent::Engine(EngineEvent::Progress { progress, .. })
                if progress.stage == progress::Stage::Diffusion =>
            {
                Some(progress.current_step)
            }
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_makes_a_png_over_http_with_progress_and_leaves_nothing() {
    let Some(b) = real() else { return };
    let _serial = SERIAL.lock().await;
    let temp = tempfile::tempdir().unwrap();
    let (server, seen) = recorder();
    server
        .start(config(&b, BackendKind::OneShot, temp.path()))
        .await
        .unwrap();
    assert_eq!(server.info().status, State::Running);

    let (status, body) = post(&server, &small(3)).await;
    assert_eq!(status, 200, "{body}");
    let png = base64::engine::general_purpose::STANDARD
        .decode(body["image"].as_str().unwrap())
        .unwrap();
    assert_eq!(png_size(&png), (64, 64));
    assert_eq!(body["seed"], 42);
    assert_eq!(body["format"], "png");
    assert_eq!(body["data"][0]["b64_json"], body["image"]);
    assert!(body["created"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(steps_seen(&seen), vec![1, 2, 3]);
    // A synchronous answer names its job, which stays pollable (genai-lite polls it).
    assert_eq!(body["status"], "complete");
    assert!(body["createdAt"].as_u64().unwrap() > 1_700_000_000_000);
    let polled = get_json(
        &server,
        &format!("/v1/images/generations/{}", body["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(polled["status"], "complete", "{polled}");
    assert_eq!(polled["result"]["images"][0]["image"], body["image"]);
    assert_eq!(polled["result"]["images"][0]["seed"], 42);
    assert_eq!(polled["progress"]["percentage"], 100.0);
    assert!(
        !server.logs(200).is_empty(),
        "sd-cli output is kept for getLogs"
    );

    // The same seed gives the same image; two images count up from it.
    let again = server.generate(image(&json!({ "prompt": "a red cube", "width": 64, "height": 64, "steps": 3, "cfgScale": 1, "seed": 42, "count": 2 })), Some("mine".into())).await.unwrap();
    assert_eq!(again.images[0], png);
    assert_eq!(again.seeds, vec![42, 43]);
    assert_ne!(again.images[1], png);

    assert_eq!(
        std::fs::read_dir(temp.path()).unwrap().count(),
        0,
        "temp files removed"
    );
    server.stop().await;
    assert!(sd_children().is_empty());
    let kinds: Vec<_> = seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            DiffusionEvent::Server(ServerEvent::Starting) => Some("starting"),
            DiffusionEvent::Server(ServerEvent::Started(_)) => Some("started"),
            DiffusionEvent::Server(ServerEvent::Stopped) => Some("stopped"),
            DiffusionEvent::Engine(EngineEvent::Job { status, .. }) => Some(status.as_str()),
            _ => None,
        })
        .collect();
    // Each job announces every change of its status.
    assert_eq!(
        kinds,
        [
            "starting",
            "started",
            "pending",
            "in_progress",
            "complete",
            "pending",
            "in_progress",
            "complete",
            "stopped"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resident_serves_async_jobs_with_events_and_stops_its_process() {
    let Some(b) = real() else { return };
    let _serial = SERIAL.lock().await;
    let temp = tempfile::tempdir().unwrap();
    let (server, seen) = recorder();
    server
        .start(config(&b, BackendKind::Resident, temp.path()))
        .await
        .unwrap();

    let (status, accepted) = post(&server, &json!({ "prompt": "a cube", "width": 64, "height": 64, "steps": 3, "cfgScale": 1, "async": true })).await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["id"].as_str().unwrap().to_string();
    let events = crate::download::http_client()
        .get(url(&server, &format!("/v1/images/generations/{id}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    let text = String::from_utf8(events.bytes().await.unwrap().to_vec()).unwrap();
    assert!(text.starts_with("event: status\n"), "{text}");
    assert!(text.contains("event: complete\n"), "{text}");
    let steps: Vec<u64> = text
        .split("\n\n")
        .filter(|e| e.starts_with("event: progress") && e.contains("\"stage\":\"diffusion\""))
        .map(|e| {
            serde_json::from_str::<Value>(e.split_once("data: ").unwrap().1).unwrap()["currentStep"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(
        !steps.is_empty() && steps.windows(2).all(|w| w[1] > w[0]),
        "{steps:?}"
    );

    let job = get_json(&server, &format!("/v1/images/generations/{id}")).await;
    assert_eq!(job["status"], "complete");
    let seed = job["result"]["images"][0]["seed"].as_i64().unwrap();
    assert!(seed >= 0, "a random seed is resolved and reported: {job}");

    // The model stays loaded: a second image comes from the same process.
    let pid = server.info().pid.expect("sd-server runs");
    let second = server.generate(image(&small(2)), None).await.unwrap();
    assert_eq!(png_size(&second.images[0]), (64, 64));
    assert_eq!(server.info().pid, Some(pid));
    assert!(steps_seen(&seen).len() >= 5);

    server.stop().await;
    assert!(!alive(pid), "sd-server is gone once stop() resolves");
    assert!(server.info().pid.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_the_work_quickly_for_both_backends() {
    let Some(b) = real() else { return };
    let _serial = SERIAL.lock().await;
    for kind in [BackendKind::OneShot, BackendKind::Resident] {
        let temp = tempfile::tempdir().unwrap();
        let (server, seen) = recorder();
        server.start(config(&b, kind, temp.path())).await.unwrap();
        let server = Arc::new(server);
        let long =
            json!({ "prompt": "x", "width": 256, "height": 256, "steps": 150, "cfgScale": 1 });
        let running = tokio::spawn({
            let server = server.clone();
            async move { server.generate(image(&long), Some("long".into())).await }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        while steps_seen(&seen).is_empty() {
            assert!(Instant::now() < deadline, "{kind:?}: no sampling step seen");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let pid = server.info().pid;
        let asked = Instant::now();
        assert!(server.cancel(Some("long")));
        let err = running.await.unwrap().unwrap_err();
        let took = asked.elapsed();
        eprintln!("{kind:?}: cancelled in {} ms", took.as_millis());
        assert_eq!(err.code(), ErrorCode::Cancelled);
        assert!(took < Duration::from_millis(1500), "{kind:?} took {took:?}");
        assert!(sd_children().is_empty(), "{kind:?}: the process is gone");
        if let Some(pid) = pid {
            assert!(!alive(pid));
        }
        // The server goes on: the next image works (resident starts sd-server again).
        let next = server.generate(image(&small(2)), None).await.unwrap();
        assert_eq!(next.images.len(), 1);
        server.stop().await;
        assert_eq!(std::fs::read_dir(temp.path()).unwrap().count(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_busy_and_stop_cancels_everything() {
    let Some(b) = real() else { return };
    let _serial = SERIAL.lock().await;
    let temp = tempfile::tempdir().unwrap();
    let (server, seen) = recorder();
    let mut c = config(&b, BackendKind::OneShot, temp.path());
    c.max_queue = 1;
    server.start(c).await.unwrap();
    let long = json!({ "prompt": "x", "width": 256, "height": 256, "steps": 150, "cfgScale": 1, "async": true });
    let (s1, first) = post(&server, &long).await;
    let (s2, second) = post(&server, &long).await;
    assert_eq!((s1, s2), (202, 202));
    while !server.info().busy {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (s3, busy) = post(&server, &long).await;
    assert_eq!(s3, 409, "{busy}");
    assert_eq!(busy["error"]["code"], "SERVER_BUSY");
    assert!(busy["error"]["message"].as_str().unwrap().contains("busy"));
    assert_eq!(server.info().queued, 1);

    // DELETE of the queued job cancels it at once.
    let client = crate::download::http_client();
    let second_id = second["id"].as_str().unwrap();
    let deleted = client
        .delete(url(&server, &format!("/v1/images/generations/{second_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 200);
    let deleted: Value = serde_json::from_slice(&deleted.bytes().await.unwrap()).unwrap();
    assert_eq!(
        deleted["status"], "cancelled",
        "answered once it has stopped"
    );
    let gone: Value = serde_json::from_slice(
        &client
            .get(url(&server, &format!("/v1/images/generations/{second_id}")))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(gone["status"], "cancelled");
    // The cancelled job gave its place back at once.
    let (s4, fourth) = post(&server, &long).await;
    assert_eq!(s4, 202, "{fourth}");
    let again = client
        .delete(url(&server, &format!("/v1/images/generations/{second_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 409);

    while steps_seen(&seen).is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let port = server.info().port.unwrap();
    server.stop().await;
    assert!(sd_children().is_empty());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port closed"
    );
    let first_id = first["id"].as_str().unwrap();
    let cancelled = seen.lock().unwrap().iter().any(
        |e| matches!(e, DiffusionEvent::Engine(EngineEvent::Job { id, status: JobStatus::Cancelled }) if id == first_id),
    );
    assert!(cancelled, "the running job was cancelled by stop()");
    assert!(
        matches!(server.generate(image(&small(2)), None).await, Err(e) if e.message.contains("not running"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_model_fails_the_job_with_the_backend_log() {
    let Some(b) = real() else { return };
    let _serial = SERIAL.lock().await;
    let temp = tempfile::tempdir().unwrap();
    let bad = temp.path().join("bad.gguf");
    std::fs::write(&bad, b"GGUF but not really").unwrap();
    for kind in [BackendKind::OneShot, BackendKind::Resident] {
        let server = DiffusionServer::new(None);
        let mut c = config(&b, kind, &temp.path().join("t"));
        c.backend.model.primary = bad.clone();
        server.start(c).await.unwrap();
        let (status, body) = post(&server, &small(2)).await;
        assert_eq!(status, 500, "{kind:?}: {body}");
        assert_eq!(body["error"]["code"], "BACKEND_ERROR");
        let err = server.generate(image(&small(2)), None).await.unwrap_err();
        assert!(
            !err.details["logs"].as_array().unwrap().is_empty(),
            "{kind:?}"
        );
        server.stop().await;
        assert!(sd_children().is_empty());
    }
}

/// A one-shot backend of `script` (run with sh), for what the real one cannot be made to do.
pub(crate) fn fake_backend(dir: &Path, script: &str) -> DiffusionConfig {
    use std::os::unix::fs::PermissionsExt;
    let binary = dir.join("sd-fake");
    std::fs::write(&binary, format!("#!/bin/sh\n{script}\n")).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    let b = json!({
        "sdCli": binary,
        "diffusionModel": dir.join("model.gguf"),
        "diffusionComponents": { "llm": dir.join("llm.gguf"), "taesd": dir.join("taesd.gguf") },
    });
    config(&b, BackendKind::OneShot, &dir.join("temp"))
}

/// Output is the watchdog's heartbeat: a backend that goes quiet is stopped and the image fails
/// with its own code; one that keeps printing is left alone however long it takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_stops_printing_is_stopped_as_stalled() {
    let _serial = SERIAL.lock().await;
    let temp = tempfile::tempdir().unwrap();
    let step = "echo '  |==>       | 1/20 - 1.00s/it'";
    let mut quiet = fake_backend(temp.path(), &format!("{step}\nsleep 600"));
    quiet.stall_timeout = Some(Duration::from_millis(400));
    let (server, seen) = recorder();
    server.start(quiet).await.unwrap();
    let began = Instant::now();
    let err = server.generate(image(&small(20)), None).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::BackendStalled, "{err}");
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(err.details["stallTimeoutMs"], 400);
    assert!(err.suggestion.unwrap().contains("stallTimeout"));
    assert_eq!(
        steps_seen(&seen),
        [1],
        "the step before the stall was reported"
    );
    assert!(sd_children().is_empty(), "the stalled process is gone");
    server.stop().await;

    // Eight lines 0.1 s apart, then a failure: 0.8 s in all, never 0.4 s without output.
    let mut talkative = fake_backend(
        temp.path(),
        &format!("for i in 1 2 3 4 5 6 7 8; do {step}; sleep 0.1; done\nexit 1"),
    );
    talkative.stall_timeout = Some(Duration::from_millis(400));
    server.start(talkative).await.unwrap();
    let err = server.generate(image(&small(20)), None).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::BackendFailed, "{err}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_refusals_are_typed() {
    let Some(b) = real() else { return };
    let _serial = SERIAL.lock().await;
    let temp = tempfile::tempdir().unwrap();
    let server = DiffusionServer::new(None);
    let mut c = config(&b, BackendKind::OneShot, temp.path());
    c.api_key = Some("secret".into());
    c.allowed_origins = vec!["app://panel".into()];
    c.max_body_bytes = 4096;
    server.start(c).await.unwrap();
    let client = crate::download::http_client();
    let gen_url = url(&server, "/v1/images/generations");
    let send = |r: reqwest::RequestBuilder| async move {
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null);
        (status, headers, body)
    };
    let authed = |r: reqwest::RequestBuilder| r.header("authorization", "Bearer secret");

    let (s, _, health) = send(client.get(url(&server, "/health"))).await;
    assert_eq!(
        (s, health["status"].as_str()),
        (200, Some("ok")),
        "health needs no key"
    );
    let (s, h, body) = send(client.post(&gen_url).body(small(2).to_string())).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (401, Some("UNAUTHORIZED"))
    );
    assert_eq!(h["www-authenticate"], "Bearer");
    let (s, _, _) = send(
        client
            .post(&gen_url)
            .header("authorization", "Bearer wrong")
            .body("{}"),
    )
    .await;
    assert_eq!(s, 401);

    for (body, needle) in [
        ("not json", "not JSON"),
        ("{}", "prompt is required"),
        (r#"{"prompt":""}"#, "must not be empty"),
        (r#"{"prompt":"p","width":65}"#, "multiple of 8"),
        (r#"{"prompt":"p","steps":1000}"#, "steps"),
        (
            r#"{"prompt":"p","cfgScale":"high"}"#,
            "cfgScale must be a number",
        ),
        (r#"{"prompt":"p","sampler":"nope"}"#, "unknown sampler"),
    ] {
        let (s, _, b) = send(authed(client.post(&gen_url).body(body))).await;
        assert_eq!(s, 400, "{body}");
        assert_eq!(b["error"]["code"], "INVALID_REQUEST");
        assert!(
            b["error"]["message"].as_str().unwrap().contains(needle),
            "{body}: {b}"
        );
    }
    let big = json!({ "prompt": "p".repeat(5000) }).to_string();
    let (s, _, b) = send(authed(client.post(&gen_url).body(big))).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (413, Some("BODY_TOO_LARGE"))
    );
    let (s, _, b) = send(authed(client.get(url(&server, "/nope")))).await;
    assert_eq!((s, b["error"]["code"].as_str()), (404, Some("NOT_FOUND")));
    let (s, _, b) = send(authed(
        client.get(url(&server, "/v1/images/generations/unknown")),
    ))
    .await;
    assert_eq!((s, b["error"]["code"].as_str()), (404, Some("NOT_FOUND")));
    let (s, h, b) = send(authed(client.get(&gen_url))).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (405, Some("METHOD_NOT_ALLOWED"))
    );
    assert_eq!(h["allow"], "POST");

    let (s, _, b) = send(
        client
            .get(url(&server, "/health"))
            .header("origin", "https://evil.example"),
    )
    .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (403, Some("INVALID_ORIGIN"))
    );
    let (s, h, _) = send(
        client
            .get(url(&server, "/health"))
            .header("origin", "app://panel"),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(h["access-control-allow-origin"], "app://panel");
    let (s, h, _) = send(
        client
            .request(reqwest::Method::OPTIONS, &gen_url)
            .header("origin", "app://panel"),
    )
    .await;
    assert_eq!(s, 200);
    assert!(
        h["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("Authorization")
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_malformed_bodies_get_only_4xx() {
    let Some(b) = real() else { return };
    let _serial = SERIAL.lock().await;
    let temp = tempfile::tempdir().unwrap();
    let server = DiffusionServer::new(None);
    server
        .start(config(&b, BackendKind::OneShot, temp.path()))
        .await
        .unwrap();
    let client = crate::download::http_client();
    let gen_url = url(&server, "/v1/images/generations");
    let mut rng = fastrand::Rng::with_seed(7);
    let cases = 3000;
    for i in 0..cases {
        let body = malformed(&mut rng);
        let r = client
            .post(&gen_url)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        assert!(
            (400..500).contains(&status),
            "case {i}: {status} for {body:?}"
        );
        let answer: Value =
            serde_json::from_slice(&r.bytes().await.unwrap()).expect("a JSON error body");
        assert!(answer["error"]["message"].is_string() && answer["error"]["code"].is_string());
    }
    assert!(server.is_healthy().await);
    assert!(sd_children().is_empty(), "no backend ran");
    server.stop().await;
}

/// A body that is never a valid request: random bytes, broken JSON, or a JSON object with at
/// least one wrong field among valid ones.
fn malformed(rng: &mut fastrand::Rng) -> String {
    let valid: [(&str, Value); 6] = [
        ("width", json!(64)),
        ("height", json!(64)),
        ("steps", json!(2)),
        ("cfgScale", json!(1.5)),
        ("seed", json!(3)),
        ("sampler", json!("euler")),
    ];
    let wrong: [(&str, Value); 16] = [
        ("prompt", json!(null)),
        ("prompt", json!("")),
        ("prompt", json!(["a"])),
        ("width", json!(63)),
        ("width", json!(-64)),
        ("height", json!("64")),
        ("height", json!(1e12)),
        ("steps", json!(0)),
        ("steps", json!(2.5)),
        ("cfgScale", json!(true)),
        ("seed", json!(-7)),
        ("sampler", json!("warp")),
        ("count", json!(100)),
        ("size", json!("64by64")),
        ("async", json!(1)),
        ("\u{0}", json!({})),
    ];
    match rng.u8(0..10) {
        0 => (0..rng.usize(0..64))
            .map(|_| rng.char('\u{0}'..'\u{7f}'))
            .collect(),
        1 => {
            let s = small(2).to_string();
            s[..rng.usize(0..s.len())].to_string()
        }
        2 => json!([rng.u32(..), "x"]).to_string(),
        _ => {
            let mut obj = serde_json::Map::new();
            obj.insert("prompt".into(), json!("a cube"));
            for (k, v) in &valid {
                if rng.bool() {
                    obj.insert((*k).into(), v.clone());
                }
            }
            let (k, v) = &wrong[rng.usize(..wrong.len())];
            obj.insert((*k).into(), v.clone());
            Value::Object(obj).to_string()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_resident_server_is_stopped_and_started_again_on_demand() {
    let Some(b) = real() else { return };
    let _serial = SERIAL.lock().await;
    let temp = tempfile::tempdir().unwrap();
    let server = DiffusionServer::new(None);
    let mut c = config(&b, BackendKind::Resident, temp.path());
    c.backend.idle_timeout = Some(Duration::from_millis(300));
    server.start(c).await.unwrap();
    server.generate(image(&small(2)), None).await.unwrap();
    let pid = server.info().pid.expect("sd-server runs after an image");
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.info().pid.is_some() {
        assert!(
            Instant::now() < deadline,
            "sd-server still running after its idle timeout"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!alive(pid), "its memory is given back");
    server.generate(image(&small(2)), None).await.unwrap();
    assert!(server.info().pid.is_some_and(|p| p != pid));
    server.stop().await;
}

#[tokio::test]
async fn a_killed_resident_server_is_reported_crashed_and_the_next_image_starts_it_again() {
    let Some(b) = real() else { return };
    let _serial = SERIAL.lock().await;
    let temp = tempfile::tempdir().unwrap();
    let seen: Seen = Arc::default();
    let server = DiffusionServer::new(Some(EventSink::new({
        let seen = seen.clone();
        move |e| {
            if !matches!(e, DiffusionEvent::Log(_)) {
                seen.lock().unwrap().push(e)
            }
        }
    })));
    server
        .start(config(&b, BackendKind::Resident, temp.path()))
        .await
        .unwrap();
    server.generate(image(&small(2)), None).await.unwrap();
    let info = server.info();
    let pid = info.pid.expect("sd-server runs after an image");
    assert_eq!(info.backend_status, Some(State::Running));
    assert!(info.backend_port.is_some());
    let memory = server.memory().await.unwrap();
    assert_eq!(memory.pids[0], pid);
    assert!(memory.rss_bytes > 1 << 20, "{memory:?}");

    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(5);
    let (exit, tail) = loop {
        let crashed = seen.lock().unwrap().iter().find_map(|e| match e {
            DiffusionEvent::Crashed { exit, tail } => Some((exit.clone(), tail.clone())),
            _ => None,
        });
        if let Some(crashed) = crashed {
            break crashed;
        }
        assert!(Instant::now() < deadline, "no crashed event");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(exit.signal, Some(libc::SIGKILL));
    assert!(!tail.is_empty(), "the crash carries sd-server's last lines");
    let info = server.info();
    assert_eq!(
        (info.status, info.health),
        (State::Crashed, HealthStatus::Error),
        "crashed while its sd-server is; the HTTP server goes on"
    );
    assert!(server.is_healthy().await);
    assert_eq!(info.backend_status, Some(State::Crashed));
    assert!(info.pid.is_none());

    server.generate(image(&small(2)), None).await.unwrap();
    let info = server.info();
    assert_eq!(info.backend_status, Some(State::Running));
    assert_eq!(
        (info.status, info.health),
        (State::Running, HealthStatus::Ok)
    );
    assert!(info.pid.is_some_and(|p| p != pid));
    server.stop().await;
    let backend = crate::testing::transitions(&seen, |e| match e {
        DiffusionEvent::BackendState(t) => Some(t),
        _ => None,
    });
    use State::*;
    assert_eq!(
        backend,
        [
            (Stopped, Starting),
            (Starting, Running),
            (Running, Crashed),
            (Crashed, Starting),
            (Starting, Running),
            (Running, Stopping),
            (Stopping, Stopped)
        ]
    );
    let own = crate::testing::transitions(&seen, |e| match e {
        DiffusionEvent::Server(ServerEvent::State(t)) => Some(t),
        _ => None,
    });
    assert_eq!(
        own,
        [
            (Stopped, Starting),
            (Starting, Running),
            (Running, Crashed),
            (Crashed, Running),
            (Running, Stopping),
            (Stopping, Stopped)
        ]
    );
    let logs = server.logs(2000).join("\n");
    assert!(
        logs.contains("] [WARN] sd-server stopped unexpectedly (signal 9)"),
        "{logs}"
    );
    assert!(
        logs.contains("] [INFO] starting the diffusion server"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_or_stop_while_sd_server_loads_leaves_no_process() {
    let Some(b) = real() else { return };
    let _serial = SERIAL.lock().await;
    let temp = tempfile::tempdir().unwrap();
    for stop_instead in [false, true] {
        let server = Arc::new(DiffusionServer::new(None));
        server
            .start(config(&b, BackendKind::Resident, temp.path()))
            .await
            .unwrap();
        let generating = tokio::spawn({
            let server = server.clone();
            async move {
                server
                    .generate(image(&small(2)), Some("early".into()))
                    .await
            }
        });
        // sd-server takes about a second to load the tiny model: act while it loads.
        while server.info().pid.is_none() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if stop_instead {
            server.stop().await;
        } else {
            assert!(server.cancel(Some("early")));
        }
        let err = generating.await.unwrap().unwrap_err();
        assert_eq!(err.code(), ErrorCode::Cancelled);
        let deadline = Instant::now() + Duration::from_secs(2);
        while !sd_children().is_empty() {
            assert!(
                Instant::now() < deadline,
                "sd-server outlived a cancelled load (stop: {stop_instead})"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        server.stop().await;
    }
}

#[tokio::test]
async fn request_folders_left_by_a_crash_are_swept_at_start() {
    let temp = tempfile::tempdir().unwrap();
    let (old, recent, other) = (
        temp.path().join("diffusion-old"),
        temp.path().join("diffusion-recent"),
        temp.path().join("keep-me"),
    );
    for dir in [&old, &recent, &other] {
        std::fs::create_dir_all(dir).unwrap();
    }
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
    for dir in [&old, &other] {
        std::fs::File::open(dir)
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
    }
    backend::sweep_stale_temp(temp.path()).await;
    assert!(!old.exists());
    assert!(recent.exists() && other.exists());
}

mod resolving {
    use super::*;
    use crate::binaries::BinaryManager;
    use crate::config::{DataDirSource, DataPaths};
    use crate::launch::StartError;
    use crate::models::{ModelInfo, ModelSource, ModelType, StoredFile, store};
    use crate::system::SystemInfo;
    use resolve::{StartRequest, fits_resident};
    use std::os::unix::fs::PermissionsExt;

    fn source() -> ModelSource {
        ModelSource {
            kind: "url".into(),
            url: "http://x/m.gguf".into(),
            repo: None,
            file: None,
            revision: None,
        }
    }

    /// A data folder with a diffusion model `d` (with an `llm` component), an llm model `l`,
    /// and an executable that answers `--version`.
    async fn setup() -> (tempfile::TempDir, DataPaths, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let data = DataPaths::new(tmp.path().join("data"), DataDirSource::Configured);
        data.ensure().await.unwrap();
        for (id, model_type) in [("d", ModelType::Diffusion), ("l", ModelType::Llm)] {
            let dir = store::model_dir(&data, model_type, id);
            std::fs::create_dir_all(&dir).unwrap();
            let (file, encoder) = (dir.join("m.gguf"), dir.join("llm.gguf"));
            std::fs::write(&file, vec![0u8; 1000]).unwrap();
            std::fs::write(&encoder, vec![0u8; 500]).unwrap();
            let mut components = std::collections::BTreeMap::new();
            if model_type == ModelType::Diffusion {
                let stored = StoredFile {
                    path: encoder,
                    size: 500,
                    checksum: "0".repeat(64),
                    source: source(),
                    provenance: None,
                };
                components.insert("llm".to_string(), stored);
            }
            let size = if components.is_empty() { 1000 } else { 1500 };
            let info = ModelInfo {
                id: id.into(),
                name: id.into(),
                model_type,
                size,
                path: file,
                downloaded_at: crate::clock::iso_now(),
                source: source(),
                checksum: "0".repeat(64),
                gguf_metadata: None,
                components,
                shards: vec![],
                provenance: None,
                capabilities: Vec::new(),
            };
            store::write(&data, &info).await.unwrap();
        }
        let binary = tmp.path().join("sd-fake");
        std::fs::write(
            &binary,
            "#!/bin/sh\necho 'stable-diffusion.cpp version fake'\n",
        )
        .unwrap();
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
        (tmp, data, binary)
    }

    fn request(extra: Value, binary: &Path) -> StartRequest {
        let mut v = json!({ "modelId": "d", "binaryPath": binary, "serverBinaryPath": binary });
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(v).unwrap()
    }

    async fn resolve(
        req: StartRequest,
        data: &DataPaths,
    ) -> Result<DiffusionConfig, StartError<DiffusionError>> {
        resolve::resolve(
            req,
            data,
            &SystemInfo::new(vec![]),
            &BinaryManager::new(None),
        )
        .await
    }

    #[tokio::test]
    async fn a_request_becomes_a_complete_config() {
        let (_tmp, data, binary) = setup().await;
        let c = resolve(
            request(json!({ "backend": "one-shot", "port": "auto", "threads": 3, "apiKey": "k", "allowedOrigins": ["app://x"], "maxQueue": 4, "idleTimeout": 0, "extraArgs": ["--vae-on-cpu"] }), &binary),
            &data,
        )
        .await
        .unwrap();
        assert_eq!(
            (c.port, c.backend.kind, c.backend.threads, c.max_queue),
            (None, BackendKind::OneShot, 3, 4)
        );
        assert_eq!(c.backend.idle_timeout, None);
        assert_eq!(
            c.backend.model.components,
            vec![("--llm", data.models_diffusion.join("d").join("llm.gguf"))]
        );
        assert_eq!(c.backend.temp_dir, data.temp);
        assert_eq!(c.backend.binary, binary);
        let shown = serde_json::to_value(&c).unwrap();
        assert_eq!(shown["apiKey"], true, "the key itself is never shown");
        assert_eq!(shown["backend"], "one-shot");

        let defaults = resolve(request(json!({}), &binary), &data).await.unwrap();
        assert_eq!(defaults.port, Some(DEFAULT_PORT));
        assert_eq!(defaults.host, "127.0.0.1");
        assert_eq!(
            defaults.backend.idle_timeout,
            Some(Duration::from_secs(300))
        );
        assert_eq!(defaults.max_body_bytes, resolve::DEFAULT_MAX_BODY_BYTES);
        // A 1.5 kB model fits any machine that runs these tests: 'auto' keeps it resident.
        assert_eq!(defaults.backend.kind, BackendKind::Resident);
    }

    #[tokio::test]
    async fn a_config_written_for_genai_electron_0_26_resolves_to_the_same_settings() {
        let (_tmp, data, binary) = setup().await;
        let c = resolve(
            request(
                json!({ "usageMode": "single", "idleTimeoutMs": 1000, "jobActivityTimeoutMs": 2000,
                        "clipOnCpu": true, "vaeOnCpu": true, "offloadToCpu": false,
                        "diffusionFlashAttention": true, "vramBudget": 1 }),
                &binary,
            ),
            &data,
        )
        .await
        .unwrap();
        assert_eq!(c.backend.kind, BackendKind::OneShot);
        assert_eq!(c.backend.idle_timeout, Some(Duration::from_secs(1)));
        assert_eq!(c.stall_timeout, Some(Duration::from_secs(2)));
        // vramBudget's placement, with the explicit choices: --offload-to-cpu taken away.
        assert_eq!(
            c.backend.placement,
            [
                "--max-vram",
                "0.001",
                "--clip-on-cpu",
                "--vae-on-cpu",
                "--diffusion-fa"
            ]
        );
        let burst = resolve(request(json!({ "usageMode": "burst" }), &binary), &data)
            .await
            .unwrap();
        assert_eq!(burst.backend.kind, BackendKind::Resident);
        for (extra, needle) in [
            (
                json!({ "usageMode": "single", "backend": "resident" }),
                "name the same setting",
            ),
            (
                json!({ "idleTimeout": 1, "idleTimeoutMs": 2 }),
                "name the same setting",
            ),
            (json!({ "usageMode": "often" }), "usageMode must be"),
            (json!({ "batchSize": 2 }), "set count on each image request"),
        ] {
            let err = resolve(request(extra.clone(), &binary), &data)
                .await
                .unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidArgument, "{extra}");
            assert!(err.to_string().contains(needle), "{extra}: {err}");
        }
    }

    #[tokio::test]
    async fn bad_requests_are_typed() {
        let (_tmp, data, binary) = setup().await;
        for (extra, needle) in [
            (json!({ "port": 0 }), "1-65535"),
            (json!({ "port": "any" }), "'auto'"),
            (json!({ "backend": "gpu" }), "backend must be"),
            (json!({ "extraArgs": ["-o", "x.png"] }), "must not set -o"),
            (json!({ "maxQueue": 0 }), "maxQueue"),
            (json!({ "modelId": "l" }), "needs a diffusion model"),
        ] {
            let err = resolve(request(extra.clone(), &binary), &data)
                .await
                .unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidArgument, "{extra}");
            assert!(err.to_string().contains(needle), "{extra}: {err}");
        }
        let missing = resolve(request(json!({ "modelId": "nope" }), &binary), &data)
            .await
            .unwrap_err();
        assert_eq!(missing.code(), ErrorCode::ModelNotFound);
        let no_binary = resolve(
            request(
                json!({ "binaryPath": "/no/sd-cli", "backend": "one-shot" }),
                &binary,
            ),
            &data,
        )
        .await
        .unwrap_err();
        assert_eq!(no_binary.code(), ErrorCode::BinaryNotFound);
        assert!(
            serde_json::from_value::<StartRequest>(json!({ "modelId": "d", "prot": 1 })).is_err()
        );
    }

    #[test]
    fn resident_needs_twice_the_model_and_a_gigabyte() {
        let info = ModelInfo {
            id: "x".into(),
            name: "x".into(),
            model_type: ModelType::Diffusion,
            size: 2 << 30,
            path: "/x".into(),
            downloaded_at: String::new(),
            source: source(),
            checksum: String::new(),
            gguf_metadata: None,
            components: Default::default(),
            shards: vec![],
            provenance: None,
            capabilities: Vec::new(),
        };
        assert!(fits_resident(&info, 5 << 30));
        assert!(!fits_resident(&info, (5 << 30) - 1));
    }
}

#[test]
fn the_working_set_grows_with_the_pixels_as_measured() {
    // Peak RSS of sd-cli (a Vulkan build, the GPUs hidden) on the tiny set, less its 10.6 MB of
    // files (see DIFFUSION_BASE).
    for (side, measured) in [
        (64, 138_900_000 - 10_600_000),
        (256, 263_600_000 - 10_600_000),
    ] {
        let estimated = working_set(side, side);
        assert!(estimated >= measured, "{side}: {estimated} < {measured}");
        assert!(
            estimated < measured + measured / 10,
            "{side}: {estimated} ≫ {measured}"
        );
    }
    // A resident sd-server's peak from its second image on (Vulkan build, GPUs hidden), less
    // the files: 152.6 MiB at 64×64, 272.8 MiB at 256×256.
    for (side, measured_mib) in [(64, 152.6), (256, 272.8)] {
        let measured = (measured_mib * 1048576.0) as u64 - 10_600_000;
        let estimated = working_set_of(BackendKind::Resident, side, side);
        assert!(estimated >= measured, "{side}: {estimated} < {measured}");
        assert!(
            estimated < measured + measured / 10,
            "{side}: {estimated} ≫ {measured}"
        );
    }
}

#[test]
fn a_model_that_cannot_fit_the_machine_is_refused_with_the_figures() {
    use crate::error::Coded;
    const GB: u64 = 1_000_000_000;
    assert!(resolve::fits_machine("m", 6 * GB, 16 * GB).is_ok());
    let err = resolve::fits_machine("big", 24 * GB, 16 * GB).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InsufficientResources);
    assert!(err.to_string().contains("24.6 GB"), "{err}");
    assert!(err.suggestion().unwrap().contains("force: true"));
    let details = err.details();
    assert_eq!(details["available"]["ram"], 16 * GB);
    assert!(details["required"]["ram"].as_u64().unwrap() > 24 * GB);
}

#[test]
fn gpu_layers_and_vram_budget_map_to_the_backends_own_switches() {
    use backend::Placement;
    const MB: u64 = 1 << 20;
    let flags = |p: Placement| p.args;
    // Nothing asked: the backend decides.
    assert_eq!(
        Placement::of(None, None, 10 * MB, 2 * MB).unwrap(),
        Placement::default()
    );
    assert_eq!(
        Placement::of(Some(33), None, 10 * MB, 2 * MB).unwrap(),
        Placement::default()
    );
    // What an image takes of a GPU follows sd's switches, given by the placement or by hand.
    let mut backend = config(
        &serde_json::json!({ "sdCli": "sd-cli", "diffusionModel": "d.gguf",
            "diffusionComponents": { "llm": "llm.gguf", "taesd": "taesd.gguf" } }),
        BackendKind::OneShot,
        std::path::Path::new("/tmp"),
    )
    .backend;
    assert!(!backend.keeps_on_cpu("--llm") && !backend.keeps_on_cpu("--taesd"));
    backend.placement = vec!["--clip-on-cpu".into()];
    backend.extra_args = vec!["--vae-on-cpu".into()];
    for flag in ["--llm", "--t5xxl", "--clip_l", "--taesd", "--vae"] {
        assert!(backend.keeps_on_cpu(flag), "{flag}");
    }
    assert_eq!(
        Placement::default().device,
        backend::DeviceUse::Whole,
        "what an image takes of a GPU, unbudgeted"
    );
    // A roomy budget only caps the graph.
    let roomy = Placement::of(None, Some(4096.0), 10 * MB, 2 * MB).unwrap();
    assert_eq!(roomy.device, backend::DeviceUse::Capped(4096 * MB));
    assert_eq!(flags(roomy), ["--max-vram", "4.000"]);
    // The model and an image do not fit: the weights stay in RAM until needed.
    assert_eq!(
        flags(Placement::of(None, Some(2048.0), 2000 * MB, 1500 * MB).unwrap()),
        ["--max-vram", "2.000", "--offload-to-cpu"]
    );
    // Not even the diffusion model fits: the encoders and the VAE go to the CPU too.
    assert_eq!(
        flags(Placement::of(None, Some(1024.0), 6000 * MB, 4000 * MB).unwrap()),
        [
            "--max-vram",
            "1.000",
            "--offload-to-cpu",
            "--clip-on-cpu",
            "--vae-on-cpu"
        ]
    );
    for bad in [0.0, -5.0, f64::NAN] {
        assert!(Placement::of(None, Some(bad), MB, MB).is_err(), "{bad}");
    }
    assert!(Placement::of(Some(0), Some(1024.0), MB, MB).is_err());
    #[cfg(not(target_os = "macos"))]
    {
        let cpu = Placement::of(Some(0), None, MB, MB).unwrap();
        assert!(cpu.args.is_empty());
        assert_eq!(cpu.device, backend::DeviceUse::None);
        // No GPU detected: the same, whatever was asked, and nothing twice.
        assert_eq!(Placement::default().without_gpu(), cpu);
        assert_eq!(cpu.clone().without_gpu(), cpu);
        let budgeted = Placement::of(None, Some(1024.0), MB, MB)
            .unwrap()
            .without_gpu();
        assert_eq!(
            (budgeted.env, budgeted.device),
            (cpu.env.clone(), backend::DeviceUse::None)
        );
        assert!(
            cpu.env
                .contains(&("CUDA_VISIBLE_DEVICES".into(), "".into()))
        );
        assert!(
            cpu.env
                .contains(&("GGML_DISABLE_VULKAN".into(), "1".into()))
        );
    }
}

/// A PNG header of `width` × `height` (all [`backend::check_png`] reads).
fn png_header(width: u32, height: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    png.extend(width.to_be_bytes());
    png.extend(height.to_be_bytes());
    png
}

#[test]
fn an_image_rounded_up_to_what_the_model_takes_is_taken() {
    use backend::check_png;
    let asked = image(&serde_json::json!({ "prompt": "p", "width": 520, "height": 64 }));
    assert!(check_png(&png_header(520, 64), &asked).is_ok());
    // SD 1.x and SDXL take multiples of 64: sd makes 576 wide.
    assert!(check_png(&png_header(576, 64), &asked).is_ok());
    let small = check_png(&png_header(512, 64), &asked).unwrap_err();
    assert!(
        small.contains("made a 512x64 image, 520x64 was asked"),
        "{small}"
    );
    assert!(check_png(&png_header(584, 64), &asked).is_err());
    assert!(
        check_png(b"GIF89a", &asked)
            .unwrap_err()
            .contains("not a PNG")
    );
    // With a hires fix, the size asked is the second pass's.
    let hires = image(
        &serde_json::json!({ "prompt": "p", "width": 64, "height": 64, "hires": { "scale": 2 } }),
    );
    assert!(check_png(&png_header(128, 128), &hires).is_ok());
    assert!(check_png(&png_header(64, 64), &hires).is_err());
}
