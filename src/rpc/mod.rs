//! `rpcServer`: llama.cpp's RPC worker (`rpc-server`) on this machine, for a llama-server on
//! another machine (`--rpc host:port`, see `llamaServer.start({ rpcWorkers })`) to place model
//! layers in this machine's memory.
//!
//! It runs under the supervisor's actor like the other servers. It speaks ggml's binary protocol,
//! not HTTP, so it is ready once its port accepts a connection. It has no authentication: it
//! binds 127.0.0.1 unless a host is given together with `allowNetwork: true`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::binaries::{BinaryKind, BinaryManager, EnsureOptions};
use crate::config::DataPaths;
use crate::error::{Coded, ErrorCode};
use crate::events::EventSink;
use crate::http::access::is_loopback_address;
use crate::launch::{ManagedServer, PortInUse, PortRequest, StartError, free_port};
use crate::process::actor::reachable;
use crate::process::{
    LaunchError, LaunchSpec, RecoveryPolicy, ServerActor, ServerEvent, ServerLog, ServerState,
    Snapshot, inherit_all,
};
use crate::sync::lock;
use crate::system::SystemInfo;

/// rpc-server's own default.
pub const DEFAULT_PORT: u16 = 50052;
const DEFAULT_STARTUP_TIMEOUT_MS: u64 = 30_000;
const STOP_GRACE: Duration = Duration::from_secs(3);
/// What rpc-server prints once it listens.
const READY_HINTS: &[&str] = &["Starting RPC server", "endpoint"];

#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    PortInUse(#[from] PortInUse),
    #[error(transparent)]
    Launch(#[from] LaunchError),
}

impl Coded for RpcError {
    fn code(&self) -> ErrorCode {
        match self {
            RpcError::Invalid(_) => ErrorCode::InvalidArgument,
            RpcError::PortInUse(e) => e.code(),
            RpcError::Launch(e) => e.code(),
        }
    }

    fn suggestion(&self) -> Option<String> {
        match self {
            RpcError::Invalid(_) => Some("Compare with RpcServerConfig in index.d.ts".into()),
            RpcError::PortInUse(e) => e.suggestion(),
            RpcError::Launch(e) => e.suggestion(),
        }
    }

    fn details(&self) -> Map<String, Value> {
        match self {
            RpcError::Invalid(_) => Map::new(),
            RpcError::PortInUse(e) => e.details(),
            RpcError::Launch(e) => e.details(),
        }
    }
}

/// The JS `RpcServerConfig`.
/// What {@link RpcServerManager.start} runs.
#[derive(Debug, Clone, Default, Deserialize, ts_rs::TS)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[ts(rename = "RpcServerConfig", optional_fields)]
pub struct StartRequest {
    /// The address to bind (default `127.0.0.1`). rpc-server has no authentication: whoever reaches
    /// its port can place tensors in this machine's memory and run ggml graphs on it, so a host other
    /// than loopback needs `allowNetwork: true`.
    pub host: Option<String>,
    /// Default 50052; `'auto'` for a free one.
    #[ts(optional, type = "number | 'auto'")]
    pub port: Option<PortRequest>,
    /// Threads of its CPU device (default: rpc-server's own choice).
    pub threads: Option<u32>,
    /// ggml devices to lend, e.g. `['CUDA0']` (default: all of them).
    #[serde(default)]
    #[ts(as = "Option<Vec<String>>", optional)]
    pub devices: Vec<String>,
    /// Keep received tensors in a local file cache, so a client that comes back loads faster.
    #[serde(default)]
    #[ts(as = "Option<bool>", optional)]
    pub cache: bool,
    /// Bind a host other than loopback (see `host`).
    #[serde(default)]
    #[ts(as = "Option<bool>", optional)]
    pub allow_network: bool,
    /// This executable instead of the managed one (see {@link BinaryManager.ensureBinary} `'rpc-server'`).
    pub binary_path: Option<PathBuf>,
    /// Milliseconds to wait for its port to accept connections (default 30000).
    pub startup_timeout: Option<u64>,
    /// Not offered: rpc-server (llama.cpp) has no memory limit and lends all of each device it
    /// serves. Passing it is a {@link ValidationError} that says so; choose `devices` instead.
    #[serde(default)]
    #[ts(optional, type = "never")]
    pub memory: Option<serde_json::Value>,
}

/// Everything a start needs, resolved: what `getConfig()` shows.
#[derive(Debug, Clone, Serialize, ts_rs::TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename = "ResolvedRpcConfig")]
pub struct RpcConfig {
    pub binary: PathBuf,
    pub host: String,
    /// `null`: a free port, chosen at start (once running, the one it got).
    pub port: Option<u16>,
    pub threads: Option<u32>,
    pub devices: Vec<String>,
    pub cache: bool,
    pub startup_timeout_ms: u64,
}

pub async fn resolve(
    req: StartRequest,
    data: &DataPaths,
    system: &SystemInfo,
    binaries: &BinaryManager,
) -> Result<RpcConfig, StartError<RpcError>> {
    let invalid = |m: String| StartError::Server(RpcError::Invalid(m));
    if req.memory.is_some() {
        return Err(invalid(
            "memory cannot be limited: rpc-server (llama.cpp) has no such setting and lends all \
             of each device it serves. Choose the devices it lends (devices), or keep layers on \
             the model's machine (gpuLayers there)"
                .into(),
        ));
    }
    let host = req.host.unwrap_or_else(|| "127.0.0.1".into());
    if !is_loopback_address(&host) && !req.allow_network {
        return Err(invalid(format!(
            "host {host:?} would let any machine that reaches it run code in this one's memory \
             (rpc-server has no authentication): pass allowNetwork: true to bind it anyway"
        )));
    }
    let port = PortRequest::choose(req.port.as_ref(), DEFAULT_PORT).map_err(invalid)?;
    if req.threads == Some(0) {
        return Err(invalid("threads must be 1 or more".into()));
    }
    let caps = system.detect(false).await;
    let opts = EnsureOptions {
        path: req.binary_path,
        ..Default::default()
    };
    let binary = binaries
        .ensure(BinaryKind::RpcServer, &opts, data, &caps.gpu)
        .await?;
    Ok(RpcConfig {
        binary: binary.path,
        host,
        port,
        threads: req.threads,
        devices: req.devices,
        cache: req.cache,
        startup_timeout_ms: req.startup_timeout.unwrap_or(DEFAULT_STARTUP_TIMEOUT_MS),
    })
}

/// rpc-server's argument vector.
pub fn args(config: &RpcConfig, port: u16) -> Vec<String> {
    let mut args = vec![
        "--host".to_string(),
        config.host.clone(),
        "--port".into(),
        port.to_string(),
    ];
    if let Some(threads) = config.threads {
        args.extend(["--threads".into(), threads.to_string()]);
    }
    if !config.devices.is_empty() {
        args.extend(["--device".into(), config.devices.join(",")]);
    }
    if config.cache {
        args.push("--cache".into());
    }
    args
}

/// What `rpcServer.getInfo()` shows.
#[derive(Debug, Clone, Serialize, ts_rs::TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename = "RpcServerInfo")]
pub struct RpcInfo {
    pub status: ServerState,
    pub pid: Option<u32>,
    pub host: Option<String>,
    pub port: Option<u16>,
    /// `host:port` while it runs: what a llama-server's `rpcWorkers` takes.
    pub endpoint: Option<String>,
    pub started_at: Option<String>,
    pub error: Option<String>,
}

impl RpcInfo {
    fn of(s: Snapshot, config: Option<&RpcConfig>) -> Self {
        let host = config.map(|c| c.host.clone());
        let endpoint = match (&host, s.port, s.status) {
            (Some(host), Some(port), ServerState::Running) => Some(endpoint(host, port)),
            _ => None,
        };
        RpcInfo {
            status: s.status,
            pid: s.pid,
            host,
            port: s.port,
            endpoint,
            started_at: s.started_at,
            error: s.error,
        }
    }
}

#[derive(Debug, Clone)]
pub enum RpcEvent {
    /// The lifecycle, as for every managed server, with the worker's info on a start.
    Server(ServerEvent<RpcInfo>),
    Log(String),
}

pub struct RpcServer {
    actor: ServerActor,
    config: Arc<Mutex<Option<RpcConfig>>>,
}

impl RpcServer {
    pub fn new(events: Option<EventSink<RpcEvent>>) -> Self {
        let config: Arc<Mutex<Option<RpcConfig>>> = Arc::default();
        let log = ServerLog::new(
            events
                .clone()
                .map(|events| EventSink::new(move |line| events.emit(RpcEvent::Log(line)))),
        );
        let lifecycle = events.map(|events| {
            let config = config.clone();
            EventSink::new(move |event: ServerEvent<Snapshot>| {
                let info = |s| RpcInfo::of(s, lock(&config).as_ref());
                events.emit(RpcEvent::Server(event.map(info)))
            })
        });
        RpcServer {
            actor: ServerActor::new("rpc-server", log, lifecycle),
            config,
        }
    }

    /// Starts rpc-server and resolves once its port accepts connections.
    pub async fn start(&self, config: RpcConfig) -> Result<RpcInfo, RpcError> {
        self.actor.stop_done().await;
        let port = free_port(&config.host, config.port)?;
        let spec = LaunchSpec {
            program: config.binary.clone(),
            args: args(&config, port),
            env: vec![],
            unset: inherit_all,
            port,
            health_url: format!("tcp://{}", endpoint(&config.host, port)),
            ready_hints: READY_HINTS,
            on_line: None,
            startup_timeout: Duration::from_millis(config.startup_timeout_ms),
            stop_grace: STOP_GRACE,
            recovery: RecoveryPolicy::NONE,
        };
        let previous = lock(&self.config).replace(RpcConfig {
            port: Some(port),
            ..config
        });
        match self.actor.start(spec).await {
            Ok(_) => Ok(self.info()),
            Err(err) => {
                *lock(&self.config) = previous;
                Err(err.into())
            }
        }
    }

    /// Stops the worker and waits until its process is gone. Idempotent.
    pub async fn stop(&self) {
        self.actor.stop().await;
    }
}

impl ManagedServer for RpcServer {
    type Info = RpcInfo;
    type Config = RpcConfig;

    fn info(&self) -> RpcInfo {
        RpcInfo::of(self.actor.snapshot(), lock(&self.config).as_ref())
    }

    crate::launch::actor_server_parts!();

    /// Running and accepting connections now.
    async fn is_healthy(&self) -> bool {
        let info = self.info();
        match (info.status, info.host, info.port) {
            (ServerState::Running, Some(host), Some(port)) => {
                reachable(&endpoint(&host, port), Duration::from_secs(2)).await
            }
            _ => false,
        }
    }

    async fn shut_down(&self) {
        self.stop().await;
    }
}

/// `host:port`, with an IPv6 host in brackets.
fn endpoint(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::rpc_probe as probe;

    fn config() -> RpcConfig {
        RpcConfig {
            binary: "rpc-server".into(),
            host: "127.0.0.1".into(),
            port: None,
            threads: Some(2),
            devices: vec!["CPU".into()],
            cache: true,
            startup_timeout_ms: 1000,
        }
    }

    /// The real rpc-server from `npm run backends`, one thread, every device.
    fn real_config(real: &Value) -> RpcConfig {
        RpcConfig {
            binary: real["rpcServer"].as_str().unwrap().into(),
            threads: Some(1),
            devices: vec![],
            cache: false,
            ..config()
        }
    }

    #[test]
    fn the_argument_vector_carries_every_setting() {
        assert_eq!(
            args(&config(), 50123),
            [
                "--host",
                "127.0.0.1",
                "--port",
                "50123",
                "--threads",
                "2",
                "--device",
                "CPU",
                "--cache"
            ]
        );
    }

    #[tokio::test]
    async fn a_network_host_needs_allow_network_and_a_bad_port_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let data = DataPaths::new(tmp.path().into(), crate::config::DataDirSource::Configured);
        let system = SystemInfo::new(vec![]);
        let binaries = BinaryManager::new(None);
        let refused = |req: StartRequest| {
            let (data, system, binaries) = (&data, &system, &binaries);
            async move {
                match resolve(req, data, system, binaries).await {
                    Err(StartError::Server(RpcError::Invalid(m))) => m,
                    other => panic!("{other:?}"),
                }
            }
        };
        let open = refused(StartRequest {
            host: Some("0.0.0.0".into()),
            ..Default::default()
        })
        .await;
        assert!(open.contains("allowNetwork"), "{open}");
        let zero = refused(StartRequest {
            port: Some(PortRequest::Fixed(0)),
            ..Default::default()
        })
        .await;
        assert!(zero.contains("port"), "{zero}");
        let memory = refused(StartRequest {
            memory: Some(1024.into()),
            ..Default::default()
        })
        .await;
        assert!(memory.contains("no such setting"), "{memory}");
        // Allowed, it goes on to find the executable (a missing path is the binaries' error).
        let allowed = resolve(
            StartRequest {
                host: Some("0.0.0.0".into()),
                allow_network: true,
                binary_path: Some(tmp.path().join("missing")),
                ..Default::default()
            },
            &data,
            &system,
            &binaries,
        )
        .await
        .unwrap_err();
        assert_eq!(allowed.code(), ErrorCode::BinaryNotFound);
    }

    /// The real rpc-server from `npm run backends`: started on a free port, ready once it
    /// accepts connections, with events and logs, and gone after stop.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_real_worker_starts_accepts_connections_and_stops() {
        let Some(real) = crate::testing::real_backends("rpc-server") else {
            return;
        };
        let events: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = events.clone();
        let server = RpcServer::new(Some(EventSink::new(move |e: RpcEvent| {
            let name = match e {
                RpcEvent::Server(ServerEvent::Started(info)) => {
                    format!("started {}", info.endpoint.unwrap())
                }
                RpcEvent::Server(ServerEvent::Stopped) => "stopped".into(),
                RpcEvent::Server(ServerEvent::State(t)) => format!("{:?}", t.new),
                _ => return,
            };
            lock(&sink).push(name);
        })));
        let info = server.start(real_config(&real)).await.unwrap();
        let endpoint = info.endpoint.clone().unwrap();
        assert_eq!(info.status, ServerState::Running);
        assert_eq!(server.config().unwrap().port, info.port);
        assert!(server.is_healthy().await);
        assert!(server.memory().await.unwrap().rss_bytes > 0);
        // A second start while it runs is refused, and changes nothing.
        let again = server.start(server.config().unwrap()).await.unwrap_err();
        assert!(
            matches!(again, RpcError::Launch(_) | RpcError::PortInUse(_)),
            "{again}"
        );
        assert_eq!(server.info().endpoint.as_deref(), Some(endpoint.as_str()));
        assert!(
            server
                .logs(50)
                .iter()
                .any(|l| l.contains("Starting RPC server")),
            "{:?}",
            server.logs(50)
        );
        server.clear_logs();
        assert!(server.logs(50).is_empty());
        server.stop().await;
        assert_eq!(server.info().status, ServerState::Stopped);
        assert!(!server.is_healthy().await);
        assert!(!reachable(&endpoint, Duration::from_millis(500)).await);
        let seen = lock(&events).clone();
        assert!(seen.contains(&format!("started {endpoint}")), "{seen:?}");
        assert_eq!(seen.last().map(String::as_str), Some("stopped"), "{seen:?}");
    }

    /// The real rpc-server answers the memory questions as llama-server's fit step reads them;
    /// held by another client it is busy, and the probe's reset leaves it serving.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_real_worker_reports_its_memory_and_a_held_one_is_busy() {
        let Some(real) = crate::testing::real_backends("rpc-server") else {
            return;
        };
        let server = RpcServer::new(None);
        let endpoint = server
            .start(real_config(&real))
            .await
            .unwrap()
            .endpoint
            .unwrap();
        let step = Duration::from_secs(3);
        let devices = probe::device_memory(&endpoint, step).await.unwrap();
        // One CPU device, which reports all of this machine's RAM, free as total.
        let ram = crate::system::memory::detect_memory().total;
        assert_eq!(devices.len(), 1, "{devices:?}");
        assert_eq!(devices[0].free, devices[0].total);
        assert!(
            devices[0].total.abs_diff(ram) < ram / 50,
            "{devices:?} vs {ram}"
        );

        // A client that holds it (as a running llama-server does).
        let holder = tokio::net::TcpStream::connect(&endpoint).await.unwrap();
        let mut holder = holder;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut hello = vec![14u8];
        hello.extend(24u64.to_le_bytes());
        hello.extend([0u8; 24]);
        holder.write_all(&hello).await.unwrap();
        let mut answer = [0u8; 8 + 28];
        holder.read_exact(&mut answer).await.unwrap();
        let wait = Duration::from_millis(400);
        // Two: rpc-server listens with a backlog of 1, which Linux rounds up to two queued
        // connections; a third would not be accepted at all.
        for _ in 0..2 {
            assert_eq!(
                probe::device_memory(&endpoint, wait).await,
                Err(probe::ProbeError::Busy(wait))
            );
        }
        drop(holder);
        // The busy probes' queued connections end unanswered; the worker lives and answers.
        assert_eq!(
            probe::device_memory(&endpoint, step).await.unwrap(),
            devices
        );
        assert_eq!(server.info().status, ServerState::Running);
        server.stop().await;
    }

    #[test]
    fn only_loopback_binds_without_allow_network() {
        assert!(
            is_loopback_address("127.0.0.1")
                && is_loopback_address("::1")
                && is_loopback_address("localhost")
        );
        assert!(!is_loopback_address("0.0.0.0") && !is_loopback_address("192.168.1.2"));
        assert_eq!(endpoint("::1", 5), "[::1]:5");
    }
}
