use super::*;
use crate::process::ServerState as State;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::time::Instant;

/// The real llama-server and tiny model from `npm run backends`, when `npm test` provides them.
pub(crate) fn real() -> Option<(PathBuf, PathBuf)> {
    let json = crate::testing::real_backends("llama-server")?;
    Some((
        json["llamaServer"].as_str()?.into(),
        json["llmModel"].as_str()?.into(),
    ))
}

pub(crate) fn config(binary: PathBuf, model: PathBuf) -> LlamaConfig {
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
        cache_type_k: None,
        cache_type_v: None,
        api_key: None,
        extra_args: vec![],
        startup_timeout_ms: 30_000,
        log_file: None,
        recovery: RecoveryPolicy::default(),
        gateway: false,
        allowed_origins: vec![],
        allowed_hosts: vec![],
        tuning: Default::default(),
        max_queued_requests: 64,
        queue_timeout_ms: 300_000,
        rpc_workers: vec![],
        shares: None,
        mode: Default::default(),
        pooling: None,
        projector: None,
        draft: None,
    }
}

fn recorder() -> (LlamaServer, Arc<Mutex<Vec<LlamaEvent>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let server = LlamaServer::new(Some(EventSink::new(move |e| {
        if !matches!(
            e,
            LlamaEvent::Log(_) | LlamaEvent::Server(ServerEvent::State(_))
        ) {
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
    c.cache_type_k = Some(KvCacheType::Q8_0);
    c.extra_args = vec!["--jinja".into()];
    let a = args(&c, "127.0.0.1", 8080);
    assert_eq!(&a[..2], ["--model", "/m/a b.gguf"]);
    for pair in [
        ["--port", "8080"],
        ["--ctx-size", "512"],
        ["--flash-attn", "on"],
        ["--api-key", "k"],
        // The library sets what llama.cpp's fitting would: it is off.
        ["--fit", "off"],
        // The buffer lines getMemoryUsage() reads.
        ["--log-verbosity", "4"],
    ] {
        assert!(a.windows(2).any(|w| w == pair), "{pair:?} in {a:?}");
    }
    assert_eq!(a.last().unwrap(), "--jinja");
    // No GPU layer: no device at all (llama.cpp would put its compute buffer on one), and no
    // Vulkan driver loaded to look for one.
    let vulkan_off = ("GGML_DISABLE_VULKAN".to_string(), "1".to_string());
    c.gpu_layers = 0;
    assert!(
        args(&c, "127.0.0.1", 8080)
            .windows(2)
            .any(|w| w == ["--device", "none"])
    );
    assert!(child_env(&c, 8080).contains(&vulkan_off));
    c.gpu_layers = 10;
    assert!(!args(&c, "127.0.0.1", 8080).contains(&"--device".to_string()));
    assert!(!child_env(&c, 8080).contains(&vulkan_off));
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
    assert!(
        matches!(
            err,
            LlamaError::Launch(LaunchError::ExitedDuringStart { .. })
        ),
        "{err}"
    );
    assert!(
        err.details()["logs"]
            .to_string()
            .contains("failed to load model")
    );
    assert_eq!(server.info().status, State::Stopped);
    assert_eq!(
        *events.lock().unwrap(),
        vec![
            LlamaEvent::Server(ServerEvent::Starting),
            LlamaEvent::Server(ServerEvent::Stopped)
        ]
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
    assert!(
        matches!(err, LlamaError::Launch(LaunchError::Timeout { .. })),
        "{err}"
    );
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
        Err(LlamaError::Launch(LaunchError::AlreadyRunning {
            state: State::Running,
            ..
        }))
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
        matches!(events.lock().unwrap().last(), Some(LlamaEvent::Server(ServerEvent::Crashed { exit, .. })) if exit.signal == Some(libc::SIGKILL))
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
            LlamaEvent::Server(ServerEvent::Starting) => "starting",
            LlamaEvent::Server(ServerEvent::Started(_)) => "started",
            LlamaEvent::Server(ServerEvent::Stopped) => "stopped",
            LlamaEvent::Server(ServerEvent::Crashed { .. }) => "crashed",
            LlamaEvent::Server(ServerEvent::Restarted(_)) => "restarted",
            LlamaEvent::Server(ServerEvent::RestartFailed { .. }) => "restart-failed",
            LlamaEvent::Log(_)
            | LlamaEvent::Server(ServerEvent::State(_))
            | LlamaEvent::Queue(_)
            | LlamaEvent::Calibration(_) => "log",
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

#[test]
fn restarts_back_off_exponentially_with_a_cap() {
    let delays: Vec<u64> = (0..8)
        .map(|n| restart_backoff(n).as_millis() as u64)
        .collect();
    assert_eq!(
        delays,
        [500, 1000, 2000, 4000, 8000, 10_000, 10_000, 10_000]
    );
}

async fn wait_for(server: &LlamaServer, state: State, within: Duration) {
    let deadline = Instant::now() + within;
    while server.info().status != state && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.info().status, state);
}

/// A server whose events are all kept, transitions included.
fn full_recorder() -> (LlamaServer, Arc<Mutex<Vec<LlamaEvent>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let server = LlamaServer::new(Some(EventSink::new(move |e| {
        if !matches!(e, LlamaEvent::Log(_)) {
            sink.lock().unwrap().push(e)
        }
    })));
    (server, seen)
}

fn transitions(seen: &Arc<Mutex<Vec<LlamaEvent>>>) -> Vec<(State, State)> {
    crate::testing::transitions(seen, |e| match e {
        LlamaEvent::Server(ServerEvent::State(t)) => Some(t),
        _ => None,
    })
}

#[tokio::test]
async fn a_crash_is_followed_by_an_automatic_restart_with_every_transition_announced_once() {
    let Some((binary, model)) = real() else {
        return;
    };
    let (server, events) = full_recorder();
    let mut c = config(binary, model);
    c.recovery.auto_restart = true;
    let first = server.start(c).await.unwrap();
    unsafe { libc::kill(first.pid.unwrap() as i32, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !events
        .lock()
        .unwrap()
        .iter()
        .any(|e| matches!(e, LlamaEvent::Server(ServerEvent::Restarted(_))))
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let info = server.info();
    assert_eq!(info.status, State::Running);
    assert_ne!(info.pid, first.pid);
    assert_eq!(info.port, first.port, "the restarted server keeps its port");
    assert_eq!(info.restarts, 1);
    assert!(server.is_healthy().await);
    server.stop().await;
    assert_eq!(transitions(&events), crate::testing::CRASH_RESTART_STOP);
    let logs = server.logs(2000).join("\n");
    for line in [
        "] [INFO] starting llama-server on port",
        "] [WARN] llama-server stopped unexpectedly (signal 9)",
        "] [INFO] restarting llama-server in 500 ms (attempt 1 of 3)",
        "] [INFO] stopping llama-server (stop())",
    ] {
        assert!(logs.contains(line), "{line:?} not in the logs");
    }
}

#[tokio::test]
async fn restart_keeps_the_port_and_announces_restarted() {
    let Some((binary, model)) = real() else {
        return;
    };
    let (server, events) = full_recorder();
    let first = server.start(config(binary, model)).await.unwrap();
    let memory = server.memory().await.unwrap();
    assert_eq!(memory.pids, [first.pid.unwrap()]);
    assert!(memory.rss_bytes > 1 << 20, "{memory:?}");
    let again = server.restart().await.unwrap();
    assert_eq!(again.port, first.port);
    assert_ne!(again.pid, first.pid);
    assert_eq!(again.model_id.as_deref(), Some("tiny"));
    assert!(server.is_healthy().await);
    server.stop().await;
    assert!(server.memory().await.is_none());
    assert!(events.lock().unwrap().iter().any(
        |e| matches!(e, LlamaEvent::Server(ServerEvent::Restarted(info)) if info.pid == again.pid)
    ));
}

#[tokio::test]
async fn a_start_on_the_same_port_during_a_stop_waits_for_it() {
    let Some((binary, model)) = real() else {
        return;
    };
    let server = LlamaServer::new(None);
    let mut c = config(binary, model);
    c.port = Some(
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port(),
    );
    let first = server.start(c.clone()).await.unwrap();
    let (stopped, again) = tokio::join!(server.stop(), async {
        while server.info().status != State::Stopping {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        server.start(c).await
    });
    assert!(stopped.is_some());
    let again = again.unwrap();
    assert_eq!(again.port, first.port);
    assert_ne!(again.pid, first.pid);
    server.stop().await;
}

#[tokio::test]
async fn stop_during_a_start_cancels_it_within_a_second() {
    let tmp = tempfile::tempdir().unwrap();
    // Never answers /health: a load that would take until the startup timeout.
    let binary = fake(tmp.path(), "echo loading; exec sleep 60");
    let server = Arc::new(LlamaServer::new(None));
    let starting = tokio::spawn({
        let server = server.clone();
        async move { server.start(config(binary, "/m.gguf".into())).await }
    });
    wait_for(&server, State::Starting, Duration::from_secs(5)).await;
    let pid = loop {
        if let Some(pid) = server.info().pid {
            break pid;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let began = Instant::now();
    server.stop().await;
    assert!(began.elapsed() < Duration::from_secs(1));
    let err = starting.await.unwrap().unwrap_err();
    assert_eq!(err.code(), ErrorCode::Cancelled, "{err}");
    assert_eq!(server.info().status, State::Stopped);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.split_whitespace().nth(2) == Some("Z"),
        "{stat}"
    );
}

#[tokio::test]
async fn restarts_that_keep_failing_end_in_restart_failed() {
    let Some((binary, model)) = real() else {
        return;
    };
    // A copy of the model that is damaged after the start: every restart then fails for real.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("model.gguf");
    std::fs::copy(&model, &copy).unwrap();
    let (server, events) = recorder();
    let mut c = config(binary, copy.clone());
    c.recovery.auto_restart = true;
    c.recovery.max_restarts = 2;
    let first = server.start(c).await.unwrap();
    std::fs::write(&copy, b"not a model any more").unwrap();
    unsafe { libc::kill(first.pid.unwrap() as i32, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(15);
    let failed = loop {
        let found = events.lock().unwrap().iter().find_map(|e| match e {
            LlamaEvent::Server(ServerEvent::RestartFailed { attempts, error }) => {
                Some((*attempts, error.clone()))
            }
            _ => None,
        });
        if let Some(found) = found {
            break found;
        }
        assert!(Instant::now() < deadline, "no restart-failed event");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(failed.0, 2);
    assert!(failed.1.contains("exited during start"), "{}", failed.1);
    assert_eq!(server.info().status, State::Crashed);
    assert!(
        !events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, LlamaEvent::Server(ServerEvent::Restarted(_))))
    );
    assert!(server.stop().await.is_some());
    assert_eq!(server.info().status, State::Stopped);
}

#[tokio::test]
async fn the_watchdog_kills_a_hung_server_and_restarts_it() {
    let Some((binary, model)) = real() else {
        return;
    };
    let (server, events) = recorder();
    let mut c = config(binary, model);
    c.recovery = RecoveryPolicy {
        auto_restart: true,
        max_restarts: 2,
        health_check_interval_ms: 150,
        hang_after_failures: 3,
    };
    let first = server.start(c).await.unwrap();
    let pid = first.pid.unwrap() as i32;
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    // Crashed, then at once Restarting (the backoff).
    wait_for(&server, State::Restarting, Duration::from_secs(5)).await;
    assert!(events.lock().unwrap().iter().any(|e| matches!(
        e,
        LlamaEvent::Server(ServerEvent::Crashed { hang: true, .. })
    )));
    wait_for(&server, State::Running, Duration::from_secs(10)).await;
    assert_ne!(server.info().pid, first.pid);
    assert!(server.is_healthy().await);
    // The stopped process was killed, not left behind.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.split_whitespace().nth(2) == Some("Z"),
        "{stat}"
    );
    server.stop().await;
}

mod resolving {
    use super::*;
    use crate::binaries::BinaryManager;
    use crate::config::{DataDirSource, DataPaths};
    use crate::launch::StartError;
    use crate::llama::resolve::{StartRequest, resolve};
    use crate::models::{ModelInfo, ModelSource, ModelType, store};
    use crate::system::SystemInfo;

    async fn setup(model_type: ModelType) -> (tempfile::TempDir, DataPaths, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let data = DataPaths::new(tmp.path().join("data"), DataDirSource::Configured);
        data.ensure().await.unwrap();
        let dir = store::model_dir(&data, model_type, "m");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("m.gguf");
        std::fs::write(&file, vec![0u8; 1000]).unwrap();
        let info = ModelInfo {
            id: "m".into(),
            name: "m".into(),
            model_type,
            size: 1000,
            path: file,
            downloaded_at: crate::clock::iso_now(),
            source: ModelSource {
                kind: "url".into(),
                url: "http://x/m.gguf".into(),
                repo: None,
                file: None,
                revision: None,
            },
            checksum: "0".repeat(64),
            gguf_metadata: Some(
                json!({ "block_count": 2, "context_length": 2048, "embedding_length": 64, "attention_head_count": 4 }),
            ),
            components: Default::default(),
            shards: vec![],
            provenance: None,
            capabilities: Vec::new(),
        };
        store::write(&data, &info).await.unwrap();
        let binary = fake(tmp.path(), "echo 'version: fake'");
        (tmp, data, binary)
    }

    fn request(extra: Value, binary: &std::path::Path) -> StartRequest {
        let mut v = json!({ "modelId": "m", "binaryPath": binary });
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(v).unwrap()
    }

    /// One NVIDIA GPU with `free` bytes of VRAM free.
    struct FakeGpu(u64);

    impl crate::system::gpu::GpuProbe for FakeGpu {
        fn devices(&self) -> Vec<crate::system::gpu::GpuDevice> {
            vec![crate::system::gpu::GpuDevice {
                vendor: crate::system::gpu::GpuVendor::Nvidia,
                name: "Fake GPU".into(),
                vram_total: Some(8 << 30),
                vram_free: Some(self.0),
                unified_memory: false,
                device_type: None,
                vulkan_index: None,
                uuid: None,
            }]
        }
    }

    #[tokio::test]
    async fn the_kv_cache_types_reach_the_gpu_layer_estimate() {
        let (_tmp, data, binary) = setup(ModelType::Llm).await;
        // After the 512 MiB reserve: 64 MiB of compute buffers, the weights, and the KV cache
        // (2 layers x 128 elements x 2048 tokens): f16 fits one layer's share, q4_0 both, and
        // with them the output layer (llama.cpp's count: 3).
        let system = SystemInfo::new(vec![Arc::new(FakeGpu((512 << 20) + 67_700_000))]);
        let layers = |extra: serde_json::Value| {
            let (data, binary, system) = (&data, &binary, &system);
            async move {
                resolve(
                    request(extra, binary),
                    data,
                    system,
                    &BinaryManager::new(None),
                )
                .await
                .unwrap()
                .gpu_layers
            }
        };
        assert_eq!(layers(json!({})).await, 1);
        assert_eq!(layers(json!({ "cacheTypeK": "q4_0" })).await, 3);
    }

    #[tokio::test]
    async fn unset_values_come_from_the_machine_and_the_model() {
        let (_tmp, data, binary) = setup(ModelType::Llm).await;
        let system = SystemInfo::new(vec![]);
        let c = resolve(request(json!({ "port": "auto", "flashAttention": true, "cacheTypeK": "q8_0", "autoRestart": true }), &binary), &data, &system, &BinaryManager::new(None))
            .await
            .unwrap();
        assert_eq!(c.port, None);
        assert_eq!(c.binary, binary);
        assert_eq!(c.context_size, 2048, "the model's own context, which fits");
        assert_eq!(c.gpu_layers, 0);
        assert_eq!(
            c.threads,
            system.detect(false).await.recommendations.threads
        );
        assert_eq!(c.flash_attention.as_deref(), Some("on"));
        assert_eq!(c.cache_type_k, Some(KvCacheType::Q8_0));
        assert!(c.recovery.auto_restart);
        assert_eq!(c.log_file, Some(data.logs.join("llama-server.log")));
        let fixed = resolve(
            request(json!({ "threads": 3, "contextSize": 1024 }), &binary),
            &data,
            &system,
            &BinaryManager::new(None),
        )
        .await
        .unwrap();
        assert_eq!(
            (fixed.port, fixed.threads, fixed.context_size),
            (Some(resolve::DEFAULT_PORT), 3, 1024)
        );
    }

    #[tokio::test]
    async fn a_split_is_sized_from_what_each_worker_lends() {
        let (_tmp, data, binary) = setup(ModelType::Llm).await;
        let system = SystemInfo::new(vec![]);
        let binaries = BinaryManager::new(None);
        let start = |workers: Vec<String>, force: bool| {
            let (data, binary, system, binaries) = (&data, &binary, &system, &binaries);
            async move {
                let extra = json!({ "rpcWorkers": workers, "force": force });
                resolve(request(extra, binary), data, system, binaries).await
            }
        };
        let roomy = crate::testing::fake_rpc_worker(7, vec![(1 << 30, 1 << 30)]).await;
        let also = crate::testing::fake_rpc_worker(7, vec![(1 << 30, 2 << 30)]).await;
        let config = start(vec![roomy.clone(), also.clone()], false)
            .await
            .unwrap();
        assert_eq!(
            config.gpu_layers, 3,
            "every layer goes to a device: 2 blocks and the output"
        );
        assert_eq!(config.context_size, 2048);
        let shares = config.shares.expect("sized");
        assert_eq!(
            (shares.local.kv_cache, shares.local.vram),
            (0, 0),
            "the KV cache is with the layers"
        );
        let layers: Vec<u32> = shares.workers.iter().map(|w| w.layers).collect();
        assert_eq!(layers, [2, 1], "by free memory, equal here");
        assert!(
            shares
                .to_string()
                .starts_with(&format!("{roomy}: 2 layers, ")),
            "{shares}"
        );
        assert_eq!(config.rpc_workers, [roomy.clone(), also]);

        // A worker with 1 KiB free cannot hold the layers: refused, naming it, unless forced.
        let small = crate::testing::fake_rpc_worker(7, vec![(1024, 1024)]).await;
        let refused = start(vec![small.clone()], false).await.unwrap_err();
        assert_eq!(refused.code(), ErrorCode::InsufficientResources);
        assert!(refused.to_string().contains(&small), "{refused}");
        assert!(start(vec![small], true).await.unwrap().shares.is_some());

        // Held by another client: busy. Another protocol: unsized, and the start goes on.
        let held = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let held_at = held.local_addr().unwrap().to_string();
        let busy = start(vec![roomy.clone(), held_at.clone()], false)
            .await
            .unwrap_err();
        assert_eq!(busy.code(), ErrorCode::RpcWorkerBusy);
        assert_eq!(busy.details()["worker"], json!(held_at));
        let newer = crate::testing::fake_rpc_worker(8, vec![(1 << 30, 1 << 30)]).await;
        let unknown = start(vec![newer], false).await.unwrap();
        assert_eq!((unknown.shares, unknown.gpu_layers), (None, 999));
    }

    #[tokio::test]
    async fn llama_cpps_projection_decides_a_start_where_its_tool_is_beside_the_server() {
        let (tmp, data, binary) = setup(ModelType::Llm).await;
        // The dry run projects 1 TiB for a context of 1024 tokens, 3 MiB for any other.
        let tool = tmp.path().join("llama-fit-params");
        std::fs::write(
            &tool,
            "#!/bin/sh\ncase \"$*\" in *'--ctx-size 1024 '*) echo 'Host 1048575 0 0';; \
             *) echo 'Host 1 0 1';; esac\n",
        )
        .unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        let system = SystemInfo::new(vec![]);
        let binaries = BinaryManager::new(None);
        let start = |extra: Value| {
            let (data, binary, system, binaries) = (&data, &binary, &system, &binaries);
            async move { resolve(request(extra, binary), data, system, binaries).await }
        };
        let refused = start(json!({ "contextSize": 1024 })).await.unwrap_err();
        assert_eq!(refused.code(), ErrorCode::InsufficientResources);
        assert!(
            refused
                .to_string()
                .contains("llama.cpp projects host 1048576 MiB (model 1048576 + context 0"),
            "{refused}"
        );
        assert_eq!(
            refused.details()["required"]["ram"],
            json!((1u64 << 40) + crate::system::estimate::SERVER_BASE_RAM),
            "{:?}",
            refused.details()
        );
        assert!(
            start(json!({ "contextSize": 1024, "force": true }))
                .await
                .is_ok()
        );
        // A context whose KV cache (512 bytes a token) the arithmetic puts beyond the free RAM,
        // but within twice the machine's: the projection, which has it fit, decides.
        let memory = crate::system::memory::detect_memory();
        let beyond_free = ((memory.available + memory.total) / 2 / 512) as u32;
        let started = start(json!({ "contextSize": beyond_free })).await.unwrap();
        assert_eq!(started.context_size, beyond_free);
        // Past twice the whole machine, the arithmetic refuses it without asking.
        let hopeless = start(json!({ "contextSize": u32::MAX / 2 }))
            .await
            .unwrap_err();
        assert_eq!(hopeless.code(), ErrorCode::InsufficientResources);
        assert!(!hopeless.to_string().contains("projects"), "{hopeless}");
        // Without the tool, the arithmetic refuses the first too.
        std::fs::remove_file(&tool).unwrap();
        let refused = start(json!({ "contextSize": beyond_free }))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), ErrorCode::InsufficientResources);
        assert!(!refused.to_string().contains("projects"), "{refused}");
    }

    #[tokio::test]
    async fn a_stored_calibration_sizes_its_configuration_and_no_other() {
        use crate::llama::calibrate;
        use crate::system::estimate::EstimateSource;
        let (_tmp, data, binary) = setup(ModelType::Llm).await;
        let (system, binaries) = (SystemInfo::new(vec![]), BinaryManager::new(None));
        let resolved = |extra: Value| {
            let (data, binary, system, binaries) = (&data, &binary, &system, &binaries);
            async move { resolve(request(extra, binary), data, system, binaries).await }
        };
        let config = resolved(json!({ "contextSize": 1024, "threads": 1 }))
            .await
            .unwrap();
        assert!(calibrate::measured(&config, &data).await.is_none());
        // A calibration that measured 1 TiB at this configuration, stored beside the model.
        let memory = json!({
            "peakRssBytes": 1u64 << 40, "vramBytes": 0, "devices": [],
            "host": { "name": "host", "modelBytes": 7, "contextBytes": 5, "computeBytes": 3 },
            "args": calibrate::memory_key(&config), "binary": config.binary,
        });
        let stored = json!({ "reports": [
            { "runs": [{ "status": "crashed", "memory": null }, { "status": "ok", "memory": memory }] },
        ] });
        let (dir, _) = store::find(&data, "m").await.unwrap();
        std::fs::write(dir.join(calibrate::REPORTS_FILE), stored.to_string()).unwrap();
        let measured = calibrate::measured(&config, &data).await.unwrap();
        assert_eq!(measured.source, EstimateSource::Measured);
        assert_eq!(
            (measured.ram, measured.weights, measured.kv_cache),
            (1 << 40, 7, 5)
        );
        // Other threads allocate the same: it answers; another context or executable does not.
        let threads = LlamaConfig {
            threads: 4,
            ..config.clone()
        };
        assert!(calibrate::measured(&threads, &data).await.is_some());
        let context = LlamaConfig {
            context_size: 2048,
            ..config.clone()
        };
        assert!(calibrate::measured(&context, &data).await.is_none());
        let other_binary = LlamaConfig {
            binary: "/elsewhere/llama-server".into(),
            ..config.clone()
        };
        assert!(calibrate::measured(&other_binary, &data).await.is_none());
        // The start's check is the measurement's.
        let refused = resolved(json!({ "contextSize": 1024 })).await.unwrap_err();
        assert_eq!(refused.code(), ErrorCode::InsufficientResources);
        assert!(
            refused
                .to_string()
                .contains("calibrate() measured it at 1048576 MiB"),
            "{refused}"
        );
        assert!(resolved(json!({ "contextSize": 2048 })).await.is_ok());
    }

    #[tokio::test]
    async fn can_run_model_asks_the_tool_beside_an_installed_llama_server() {
        use crate::system::estimate::EstimateSource;
        use crate::system::{ModelSpec, RunOptions};
        let (tmp, data, binary) = setup(ModelType::Llm).await;
        let (system, binaries) = (SystemInfo::new(vec![]), BinaryManager::new(None));
        let spec = ModelSpec::of(&store::read(&data, "m").await.unwrap()).unwrap();
        let opts = RunOptions {
            context_size: Some(1024),
            ..Default::default()
        };
        let ask = |spec: ModelSpec| {
            let (system, binaries, data, opts) = (&system, &binaries, &data, &opts);
            async move {
                super::super::sizing::can_run_model(system, binaries, data, &spec, opts)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(
            ask(spec.clone()).await.estimate.source,
            EstimateSource::Estimated,
            "no llama-server installed"
        );
        let version = crate::binaries::manifest::pinned_version(crate::binaries::Backend::Llama);
        let root = data.binaries.join("llama").join(version);
        std::fs::create_dir_all(&root).unwrap();
        let record = json!({ "variant": "cpu", "executables": { "llama-server": binary } });
        std::fs::write(root.join("installed.json"), record.to_string()).unwrap();
        let tool = tmp.path().join("llama-fit-params");
        std::fs::write(&tool, "#!/bin/sh\necho 'Host 2 1 1'\n").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        let projected = ask(spec.clone()).await;
        assert!(projected.possible);
        let e = projected.estimate;
        assert_eq!(e.source, EstimateSource::Projected);
        // The host's buffers and llama-server's own memory.
        let base = crate::system::estimate::SERVER_BASE_RAM;
        assert_eq!((e.ram, e.vram, e.kv_cache), ((7 << 20) + base, 0, 2 << 20));
        assert_eq!((e.context_size, e.gpu_layers), (1024, 0));
        // A projection that does not fit: the reason names llama.cpp's figures.
        std::fs::write(&tool, "#!/bin/sh\necho 'Host 1048575 0 0'\n").unwrap();
        let refused = ask(spec.clone()).await;
        assert!(!refused.possible);
        let reason = refused.reason.unwrap_or_default();
        assert!(
            reason.starts_with("llama.cpp projects host 1048576 MiB"),
            "{reason}"
        );
        let without_path = ModelSpec { path: None, ..spec };
        assert_eq!(
            ask(without_path).await.estimate.source,
            EstimateSource::Estimated
        );
    }

    #[tokio::test]
    async fn bad_requests_are_typed() {
        let (_tmp, data, binary) = setup(ModelType::Diffusion).await;
        let system = SystemInfo::new(vec![]);
        let binaries = BinaryManager::new(None);
        for (extra, code) in [
            (json!({}), ErrorCode::InvalidArgument),
            (json!({ "port": 0 }), ErrorCode::InvalidArgument),
            (json!({ "port": "eighty" }), ErrorCode::InvalidArgument),
            (
                json!({ "flashAttention": "maybe" }),
                ErrorCode::InvalidArgument,
            ),
            (
                json!({ "extraArgs": ["--port", "1"] }),
                ErrorCode::InvalidArgument,
            ),
            (json!({ "modelId": "other" }), ErrorCode::ModelNotFound),
        ] {
            let err: StartError<LlamaError> =
                resolve(request(extra.clone(), &binary), &data, &system, &binaries)
                    .await
                    .unwrap_err();
            assert_eq!(err.code(), code, "{extra}: {err}");
            assert!(err.suggestion().is_some());
        }
        let missing = resolve(
            request(json!({}), std::path::Path::new("/nonexistent/llama-server")),
            &data,
            &system,
            &binaries,
        )
        .await;
        // The diffusion model is refused before the binary is looked at.
        assert_eq!(missing.unwrap_err().code(), ErrorCode::InvalidArgument);
        assert!(
            serde_json::from_value::<StartRequest>(json!({ "modelId": "m", "prot": 1 })).is_err(),
            "unknown keys are refused"
        );
    }
}
