//! What the machine has (CPU, RAM, GPU) and what it can run.

pub mod cpu;
pub mod estimate;
pub mod gpu;
pub mod memory;
pub mod rpc_probe;
pub mod split;
pub mod vulkan;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde_json::{Map, Value, json};
use ts_rs::TS;

use crate::error::{Coded, ErrorCode};
use crate::events::EventSink;
use crate::sync::lock;
pub use cpu::CpuInfo;
pub use estimate::{CanRun, ModelSpec, OptimalConfig, Recommendations, RunOptions};
pub use gpu::{GpuInfo, GpuProbe};
pub use memory::MemoryInfo;

use rpc_probe::{DeviceMemory, RpcWorkerError};

/// How long `detect()` answers from its cache. GPU probing costs milliseconds (NVML, sysfs);
/// callers that need fresh memory figures use `memory()`.
pub const DETECT_TTL: Duration = Duration::from_secs(60);
pub const MIN_MONITOR_INTERVAL: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    #[error("invalid model info: {0}")]
    InvalidModel(String),
    #[error("{0}")]
    InvalidOption(String),
    #[error("monitoring interval must be at least {min} ms, got {got} ms")]
    IntervalTooShort { got: u64, min: u64 },
    /// A split model's share cannot be sized without what each worker lends.
    #[error(transparent)]
    RpcWorker(#[from] RpcWorkerError),
}

impl Coded for SystemError {
    fn code(&self) -> ErrorCode {
        match self {
            SystemError::RpcWorker(e) => e.code(),
            _ => ErrorCode::InvalidArgument,
        }
    }

    fn suggestion(&self) -> Option<String> {
        Some(match self {
            SystemError::RpcWorker(e) => return e.suggestion(),
            SystemError::InvalidModel(_) => {
                "Pass a ModelInfo from modelManager, or at least { size: <bytes> }".into()
            }
            SystemError::InvalidOption(_) => {
                "Compare the options with CanRunModelOptions in index.d.ts".into()
            }
            SystemError::IntervalTooShort { min, .. } => format!("Use intervalMs >= {min}"),
        })
    }

    fn details(&self) -> Map<String, Value> {
        match self {
            SystemError::IntervalTooShort { got, min } => {
                json!({ "intervalMs": got, "minimumMs": min })
                    .as_object()
                    .cloned()
                    .unwrap_or_default()
            }
            SystemError::InvalidModel(_) | SystemError::InvalidOption(_) => Map::new(),
            SystemError::RpcWorker(e) => e.details(),
        }
    }
}

/// How long a worker may take to answer each question about its memory.
const RPC_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// What {@link SystemInfo.detect} found.
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct SystemCapabilities {
    pub cpu: CpuInfo,
    pub memory: MemoryInfo,
    pub gpu: GpuInfo,
    /// Node's `process.platform` naming.
    #[ts(type = "NodeJS.Platform")]
    pub platform: &'static str,
    pub recommendations: Recommendations,
    /// ISO 8601 time of the detection (results are cached for 60 s).
    #[serde(serialize_with = "crate::clock::serialize_rfc3339")]
    #[ts(type = "string")]
    pub detected_at: SystemTime,
}

/// Events of the system manager.
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
#[serde(tag = "type", rename_all = "lowercase")]
#[ts(rename = "SystemInfoEvent")]
pub enum SystemEvent {
    /// A memory reading taken by the monitor.
    Memory(MemoryInfo),
}

pub fn node_platform() -> &'static str {
    match std::env::consts::OS {
        "macos" => "darwin",
        "windows" => "win32",
        other => other,
    }
}

pub struct SystemInfo {
    probes: Vec<Arc<dyn GpuProbe>>,
    cache: tokio::sync::Mutex<Option<(Instant, Arc<SystemCapabilities>)>>,
    monitor: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl SystemInfo {
    pub fn new(probes: Vec<Arc<dyn GpuProbe>>) -> Self {
        SystemInfo {
            probes,
            cache: tokio::sync::Mutex::new(None),
            monitor: Mutex::new(None),
        }
    }

    pub fn with_default_probes() -> Self {
        Self::new(gpu::default_probes())
    }

    /// Everything at once, from a cache younger than [`DETECT_TTL`] unless `force`. Concurrent
    /// callers share one detection.
    pub async fn detect(&self, force: bool) -> Arc<SystemCapabilities> {
        let mut cache = self.cache.lock().await;
        if let Some((at, caps)) = cache.as_ref()
            && !force
            && at.elapsed() < DETECT_TTL
        {
            return caps.clone();
        }
        let probes = self.probes.clone();
        let caps = Arc::new(run_blocking(move || detect_now(&probes)).await);
        *cache = Some((Instant::now(), caps.clone()));
        caps
    }

    pub fn clear_cache(&self) {
        if let Ok(mut cache) = self.cache.try_lock() {
            *cache = None;
        } else {
            // A detection is running; it will store a fresh result anyway.
        }
    }

    /// Fresh RAM figures. Reads kernel counters only (microseconds), so it is synchronous.
    pub fn memory(&self) -> MemoryInfo {
        memory::detect_memory()
    }

    /// Fresh GPU figures (free VRAM changes as other programs run).
    pub async fn gpu(&self) -> GpuInfo {
        let probes = self.probes.clone();
        run_blocking(move || detect_gpu(&probes)).await
    }

    pub async fn can_run_model(
        &self,
        model: &ModelSpec,
        opts: &RunOptions,
    ) -> Result<CanRun, SystemError> {
        model.validate().map_err(SystemError::InvalidModel)?;
        let caps = self.detect(false).await;
        if opts.rpc_workers.is_empty() {
            return Ok(estimate::can_run(model, opts, &self.memory(), &caps.gpu));
        }
        let (model, workers) = self.split_facts(model, &opts.rpc_workers).await?;
        Ok(split::can_run_split(
            &model,
            opts,
            &self.memory(),
            &caps.gpu,
            &workers,
        ))
    }

    /// What sizing a split needs: the model with what each layer weighs (from its file's tensor
    /// index, when `path` can be read) and what each worker lends, asked in turn (each answers
    /// one client at a time).
    pub async fn split_facts(
        &self,
        model: &ModelSpec,
        workers: &[String],
    ) -> Result<(ModelSpec, Vec<(String, Vec<DeviceMemory>)>), SystemError> {
        for worker in workers {
            rpc_probe::check_rpc_worker(worker).map_err(SystemError::InvalidOption)?;
        }
        let mut lent = Vec::with_capacity(workers.len());
        for worker in workers {
            let devices = rpc_probe::device_memory(worker, RPC_PROBE_TIMEOUT)
                .await
                .map_err(|problem| RpcWorkerError {
                    worker: worker.clone(),
                    problem,
                })?;
            lent.push((worker.clone(), devices));
        }
        let mut model = model.clone();
        if let Some(path) = &model.path {
            let header = crate::models::gguf::read_file(path, Default::default()).await;
            model.layer_bytes = header.ok().map(|h| h.layers);
        }
        Ok((model, lent))
    }

    pub async fn optimal_config(
        &self,
        model: &ModelSpec,
        hints: &RunOptions,
    ) -> Result<OptimalConfig, SystemError> {
        model.validate().map_err(SystemError::InvalidModel)?;
        let caps = self.detect(false).await;
        let threads = caps.recommendations.threads;
        if !hints.rpc_workers.is_empty() {
            let (model, workers) = self.split_facts(model, &hints.rpc_workers).await?;
            return Ok(split::optimal_split_config(
                &model,
                hints,
                &self.memory(),
                &caps.gpu,
                threads,
                &workers,
            ));
        }
        Ok(estimate::optimal_config(
            model,
            hints,
            &self.memory(),
            &caps.gpu,
            threads,
        ))
    }

    /// Emits a [`SystemEvent::Memory`] reading every `interval` until [`Self::stop_monitoring`].
    /// Starting again replaces the running monitor.
    pub fn start_monitoring(
        &self,
        interval: Duration,
        sink: EventSink<SystemEvent>,
    ) -> Result<(), SystemError> {
        if interval < MIN_MONITOR_INTERVAL {
            return Err(SystemError::IntervalTooShort {
                got: interval.as_millis() as u64,
                min: MIN_MONITOR_INTERVAL.as_millis() as u64,
            });
        }
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let reading = run_blocking(memory::detect_memory).await;
                sink.emit(SystemEvent::Memory(reading));
            }
        });
        if let Some(previous) = self.lock_monitor().replace(task) {
            previous.abort();
        }
        Ok(())
    }

    /// Returns whether a monitor was running.
    pub fn stop_monitoring(&self) -> bool {
        self.lock_monitor()
            .take()
            .map(|task| task.abort())
            .is_some()
    }

    pub fn is_monitoring(&self) -> bool {
        self.lock_monitor()
            .as_ref()
            .is_some_and(|t| !t.is_finished())
    }

    fn lock_monitor(&self) -> std::sync::MutexGuard<'_, Option<tokio::task::JoinHandle<()>>> {
        lock(&self.monitor)
    }
}

impl Drop for SystemInfo {
    fn drop(&mut self) {
        self.stop_monitoring();
    }
}

fn detect_gpu(probes: &[Arc<dyn GpuProbe>]) -> GpuInfo {
    let devices = probes.iter().flat_map(|p| p.devices()).collect();
    gpu::summarize(gpu::one_per_gpu(devices), gpu::RuntimeHints::detect())
}

fn detect_now(probes: &[Arc<dyn GpuProbe>]) -> SystemCapabilities {
    let cpu = cpu::detect_cpu();
    let memory = memory::detect_memory();
    let gpu = detect_gpu(probes);
    let recommendations = estimate::recommend(&memory, &gpu, cpu.physical_cores);
    SystemCapabilities {
        cpu,
        memory,
        gpu,
        platform: node_platform(),
        recommendations,
        detected_at: SystemTime::now(),
    }
}

/// Runs sysfs/NVML/procfs reads off the async workers. A panic in a probe is a bug; we surface
/// it rather than hiding it behind a default.
async fn run_blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => value,
        Err(err) => std::panic::resume_unwind(err.into_panic()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::gpu::{GpuDevice, GpuVendor};
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct CountingProbe(Arc<AtomicUsize>);

    impl GpuProbe for CountingProbe {
        fn devices(&self) -> Vec<GpuDevice> {
            self.0.fetch_add(1, Ordering::SeqCst);
            vec![GpuDevice {
                vendor: GpuVendor::Nvidia,
                name: "Fake GPU".into(),
                vram_total: Some(8 << 30),
                vram_free: Some(6 << 30),
                unified_memory: false,
                device_type: None,
                vulkan_index: None,
                uuid: None,
            }]
        }
    }

    fn counted() -> (SystemInfo, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        (
            SystemInfo::new(vec![Arc::new(CountingProbe(calls.clone()))]),
            calls,
        )
    }

    #[tokio::test]
    async fn detect_is_cached_until_forced_or_cleared() {
        let (info, calls) = counted();
        let first = info.detect(false).await;
        let second = info.detect(false).await;
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        info.detect(true).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        info.clear_cache();
        info.detect(false).await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(first.gpu.name.as_deref(), Some("Fake GPU"));
        assert_eq!(first.platform, node_platform());
        assert!(first.recommendations.gpu_acceleration);
    }

    #[tokio::test]
    async fn concurrent_detects_share_one_probe() {
        let (info, calls) = counted();
        let info = Arc::new(info);
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                tokio::spawn({
                    let info = info.clone();
                    async move { info.detect(false).await }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn invalid_models_are_typed_errors() {
        let (info, _) = counted();
        let bad = ModelSpec {
            size: 0.0,
            gguf_metadata: None,
            ..Default::default()
        };
        let err = info
            .can_run_model(&bad, &RunOptions::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
        assert!(err.suggestion().is_some());
        assert!(
            info.optimal_config(&bad, &RunOptions::default())
                .await
                .is_err()
        );
        let ok = ModelSpec {
            size: 1e8,
            gguf_metadata: None,
            ..Default::default()
        };
        assert!(
            info.can_run_model(&ok, &RunOptions::default())
                .await
                .unwrap()
                .possible
        );
    }

    #[tokio::test]
    async fn a_split_is_sized_by_asking_each_worker() {
        let (info, _) = counted();
        let model: ModelSpec = serde_json::from_value(json!({
            "size": 1e9,
            "ggufMetadata": { "block_count": 8, "context_length": 4096 },
            "path": "/nonexistent/model.gguf"
        }))
        .unwrap();
        let one = crate::testing::fake_rpc_worker(7, vec![(8 << 30, 8 << 30)]).await;
        let two =
            crate::testing::fake_rpc_worker(7, vec![(2 << 30, 4 << 30), (6 << 30, 8 << 30)]).await;
        let opts = RunOptions {
            rpc_workers: vec![one.clone(), two.clone()],
            ..Default::default()
        };
        // An unreadable file: layers weigh the same.
        let verdict = info.can_run_model(&model, &opts).await.unwrap();
        assert!(verdict.possible, "{verdict:?}");
        let layers: Vec<u32> = verdict.workers.iter().map(|w| w.layers).collect();
        // 8, 2 + 6 and this GPU's 6 GiB free: 4, 1 + 2 and 2 of the 9 layers (the output last).
        assert_eq!(layers, [4, 3]);
        assert_eq!(verdict.estimate.gpu_layers, 2);
        assert!(verdict.estimate.vram > 0);
        assert_eq!(
            (verdict.workers[1].free, verdict.workers[1].total),
            (8 << 30, 12 << 30)
        );
        assert_eq!(
            verdict.estimate.weights,
            1_000_000_000 / 8,
            "no token embeddings known"
        );
        let config = info.optimal_config(&model, &opts).await.unwrap();
        assert_eq!((config.gpu_layers, config.context_size), (9, 4096));

        let bad = RunOptions {
            rpc_workers: vec!["no-port".into()],
            ..Default::default()
        };
        let err = info.can_run_model(&model, &bad).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
        assert!(err.suggestion().unwrap().contains("CanRunModelOptions"));
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gone = closed.local_addr().unwrap().to_string();
        drop(closed);
        let unreachable = RunOptions {
            rpc_workers: vec![one, gone.clone()],
            ..Default::default()
        };
        let err = info.optimal_config(&model, &unreachable).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::RpcWorkerUnreachable);
        assert_eq!(err.details()["worker"], json!(gone));
        assert!(err.to_string().contains(&gone));
        assert!(err.suggestion().unwrap().contains("rpcServer.start"));
        for problem in [
            rpc_probe::ProbeError::Busy(Duration::ZERO),
            rpc_probe::ProbeError::Protocol("v8".into()),
        ] {
            let err = SystemError::from(RpcWorkerError {
                worker: "w:1".into(),
                problem,
            });
            assert_ne!(err.code(), ErrorCode::InvalidArgument);
            assert!(err.suggestion().is_some());
        }
    }

    #[tokio::test]
    async fn monitor_emits_readings_until_stopped() {
        let (info, _) = counted();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let sink: EventSink<SystemEvent> = EventSink::new(move |e| {
            let _ = tx.send(e);
        });
        let err = info
            .start_monitoring(Duration::from_millis(1), sink.clone())
            .unwrap_err();
        assert_eq!(err.details()["minimumMs"], 50);
        info.start_monitoring(Duration::from_millis(50), sink)
            .unwrap();
        assert!(info.is_monitoring());
        for _ in 0..2 {
            let SystemEvent::Memory(m) = rx.recv().await.unwrap();
            assert!(m.total > 0 && m.available <= m.total);
        }
        assert!(info.stop_monitoring());
        assert!(!info.stop_monitoring());
        tokio::time::sleep(Duration::from_millis(20)).await;
        while rx.try_recv().is_ok() {}
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(rx.try_recv().is_err(), "no readings after stop");
    }
}
