use super::*;
use std::os::unix::fs::PermissionsExt;

/// The real llama-server and tiny model from `npm run backends`, when `npm test` provides them.
fn real() -> Option<(PathBuf, PathBuf)> {
    let Some(file) = std::env::var_os("GENAI_ELECTRON_TEST_BACKENDS") else {
        // `npm test` sets both; there the real-binary tests cannot skip.
        assert!(
            std::env::var_os("GENAI_ELECTRON_REQUIRE_CMAKE").is_none(),
            "GENAI_ELECTRON_TEST_BACKENDS is not set"
        );
        eprintln!("SKIPPED: real llama-server not provided (run npm test)");
        return None;
    };
    let json: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    Some((
        json["llamaServer"].as_str()?.into(),
        json["llmModel"].as_str()?.into(),
    ))
}

fn config(binary: PathBuf, model: PathBuf) -> LlamaConfig {
    LlamaConfig {
        model_id: "tiny".into(),
        model_path: model,
        binary,
        port: None,
        host: "127.0.0.1".into(),
        threads: 1,
        context_size: 512,
        gpu_layers: 0,
        parallel_requests: 1,
        flash_attention: None,
        api_key: None,
        extra_args: vec![],
        startup_timeout_ms: 30_000,
        log_file: None,
    }
}

fn recorder() -> (LlamaServer, Arc<Mutex<Vec<LlamaEvent>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let server = LlamaServer::new(Some(EventSink::new(move |e| {
        if !matches!(e, LlamaEvent::Log(_)) {
            sink.lock().unwrap().push(e)
        }
    })));
    (server, seen)
}

fn fake(dir: &std::path::Path, body: &str) -> PathBuf {
    let path = dir.join("llama-server");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn the_argument_vector_carries_every_setting() {
    let mut c = config("/bin/llama-server".into(), "/m/a b.gguf".into());
    c.flash_attention = Some("on".into());
    c.api_key = Some("k".into());
    c.extra_args = vec!["--jinja".into()];
    let a = args(&c, 8080);
    assert_eq!(&a[..2], ["--model", "/m/a b.gguf"]);
    for pair in [
        ["--port", "8080"],
        ["--ctx-size", "512"],
        ["--flash-attn", "on"],
        ["--api-key", "k"],
    ] {
        assert!(a.windows(2).any(|w| w == pair), "{pair:?} in {a:?}");
    }
    assert_eq!(a.last().unwrap(), "--jinja");
}

#[tokio::test]
async fn an_exit_during_start_fails_fast_with_the_output() {
    let tmp = tempfile::tempdir().unwrap();
    let binary = fake(tmp.path(), "echo 'error: failed to load model' >&2; exit 1");
    let (server, events) = recorder();
    let started = Instant::now();
    let err = server
        .start(config(binary, "/nope.gguf".into()))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(matches!(err, LlamaError::ExitedDuringStart { .. }), "{err}");
    assert!(
        err.details()["logs"]
            .to_string()
            .contains("failed to load model")
    );
    assert_eq!(server.info().status, State::Stopped);
    assert_eq!(
        *events.lock().unwrap(),
        vec![LlamaEvent::Starting, LlamaEvent::Stopped]
    );
}

#[tokio::test]
async fn a_taken_port_is_port_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut c = config("/bin/true".into(), "/m.gguf".into());
    c.port = Some(taken.local_addr().unwrap().port());
    let err = LlamaServer::new(None).start(c).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::PortInUse);
}

#[tokio::test]
async fn a_start_that_never_gets_healthy_times_out_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let binary = fake(tmp.path(), "echo loading; sleep 30");
    let mut c = config(binary, "/m.gguf".into());
    c.startup_timeout_ms = 300;
    let server = LlamaServer::new(None);
    let err = server.start(c).await.unwrap_err();
    assert!(matches!(err, LlamaError::Timeout { .. }), "{err}");
    assert_eq!(server.info().status, State::Stopped);
}

#[tokio::test]
async fn the_real_server_starts_answers_crashes_and_stops() {
    let Some((binary, model)) = real() else {
        return;
    };
    let (server, events) = recorder();
    let info = server
        .start(config(binary.clone(), model.clone()))
        .await
        .unwrap();
    assert_eq!(info.status, State::Running);
    let port = info.port.unwrap();
    assert!(server.is_healthy().await);
    assert!(matches!(
        server.start(config(binary.clone(), model.clone())).await,
        Err(LlamaError::AlreadyRunning("running"))
    ));
    assert!(
        server.logs(100).iter().any(|l| l.contains("llama")),
        "{:?}",
        server.logs(5)
    );

    // A crash: the watcher reports it once.
    let pid = info.pid.unwrap();
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    for _ in 0..100 {
        if server.info().status == State::Crashed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.info().status, State::Crashed);
    assert!(
        matches!(events.lock().unwrap().last(), Some(LlamaEvent::Crashed { exit, .. }) if exit.signal == Some(libc::SIGKILL))
    );

    // It starts again, and stop frees the port before returning.
    let info = server.start(config(binary, model)).await.unwrap();
    server.stop().await.unwrap();
    assert_eq!(server.info().status, State::Stopped);
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", info.port.unwrap())).is_ok(),
        "port free after stop"
    );
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
    assert!(server.stop().await.is_none(), "stop is idempotent");
    let kinds: Vec<&str> = events
        .lock()
        .unwrap()
        .iter()
        .map(|e| match e {
            LlamaEvent::Starting => "starting",
            LlamaEvent::Started(_) => "started",
            LlamaEvent::Stopped => "stopped",
            LlamaEvent::Crashed { .. } => "crashed",
            LlamaEvent::Log(_) => "log",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "starting", "started", "crashed", "starting", "started", "stopped"
        ]
    );
    let _ = port;
}
