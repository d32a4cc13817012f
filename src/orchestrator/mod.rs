//! The ResourceOrchestrator: an image while chat is loaded.
//!
//! When the LLM and the image together do not fit the budget, the LLM is offloaded (the gateway
//! holds new chat requests, those in flight finish, then llama-server stops), the image is made
//! once its memory is reported free, and the LLM is reloaded in every case, on the same port with
//! the same config; the chat requests made meanwhile are then served. One image at a time, in
//! the order asked.
//!
//! Estimates (`estimate`) count a running process by what it uses, never less than its RSS, and
//! otherwise by arithmetic: for the LLM the GGUF-based estimate behind `canRunModel` with the
//! running server's context, GPU layers and KV-cache types; for an image its model's files plus
//! a working set that grows with width × height, calibrated on the real sd-cli.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::DataPaths;
use crate::diffusion::engine::{ImageOutput, JobError};
use crate::diffusion::{DiffusionError, DiffusionServer};
use crate::error::{Coded, ErrorCode};
use crate::events::EventSink;
use crate::llama::gateway::QueueBounds;
use crate::llama::{LlamaConfig, LlamaServer, ServerInfo};
use crate::process::ServerState;
use crate::sync::lock;
use crate::system::SystemInfo;
use crate::system::estimate::{KvCache, KvCacheType, ModelSpec};

const MIB: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    #[error("{0}")]
    Invalid(String),
}

impl Coded for OrchestratorError {
    fn code(&self) -> ErrorCode {
        ErrorCode::InvalidArgument
    }

    fn suggestion(&self) -> Option<String> {
        Some("Compare with OrchestratorOptions in index.d.ts".into())
    }
}

/// The JS `OrchestratorOptions`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OptionsRequest {
    /// Bytes; JS numbers beyond 2^32 arrive as floating point.
    pub ram_budget_bytes: Option<f64>,
    pub vram_budget_bytes: Option<f64>,
    pub headroom: Option<f64>,
    /// Milliseconds.
    pub memory_release_timeout: Option<u64>,
    pub drain_timeout: Option<u64>,
    /// Milliseconds a chat request may wait while the LLM is offloaded.
    pub queue_timeout: Option<u64>,
    pub max_queued_requests: Option<u32>,
}

/// A byte count from JS: a whole number from 0 (or from 1 with `positive`).
fn bytes(name: &str, value: Option<f64>, positive: bool) -> Result<Option<u64>, OrchestratorError> {
    match value {
        None => Ok(None),
        Some(v) if v.is_finite() && v.fract() == 0.0 && v >= f64::from(u8::from(positive)) => {
            Ok(Some(v as u64))
        }
        Some(v) => Err(OrchestratorError::Invalid(format!(
            "{name} must be a whole number of bytes{}, got {v}",
            if positive {
                " above 0 (leave it unset for what the machine has)"
            } else {
                ""
            }
        ))),
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    /// What the two servers together may use; `None`: what the machine has.
    pub ram_budget: Option<u64>,
    pub vram_budget: Option<u64>,
    /// Kept free beside the two.
    pub headroom: u64,
    pub memory_release_timeout: Duration,
    pub drain_timeout: Duration,
    /// The gateway's queue while the LLM is offloaded; unset parts are the server's own.
    pub queue: QueueBounds,
}

impl Options {
    pub fn resolve(req: OptionsRequest) -> Result<Options, OrchestratorError> {
        Ok(Options {
            ram_budget: bytes("ramBudgetBytes", req.ram_budget_bytes, true)?,
            vram_budget: bytes("vramBudgetBytes", req.vram_budget_bytes, true)?,
            headroom: bytes("headroom", req.headroom, false)?.unwrap_or(512 * MIB),
            memory_release_timeout: Duration::from_millis(
                req.memory_release_timeout.unwrap_or(10_000),
            ),
            drain_timeout: Duration::from_millis(req.drain_timeout.unwrap_or(30_000)),
            queue: QueueBounds {
                max_queued: req.max_queued_requests.map(|n| n as usize),
                timeout: req.queue_timeout.map(Duration::from_millis),
            },
        })
    }

    /// Whether the two fit: on the GPU when either uses it (VRAM is then what runs out first),
    /// else in RAM, with the headroom kept free; only a running LLM is offloaded.
    fn weigh(
        &self,
        llm: Usage,
        diffusion: Usage,
        available: Memory,
        gpu: bool,
        llm_running: bool,
    ) -> Estimate {
        // What the running servers hold is theirs to use again.
        let held = |what: fn(&Usage) -> u64| {
            [&llm, &diffusion]
                .into_iter()
                .filter(|u| u.source == Source::Measured)
                .map(what)
                .sum::<u64>()
        };
        let budget = Memory {
            ram: self.ram_budget.unwrap_or(available.ram + held(|u| u.ram)),
            vram: self
                .vram_budget
                .unwrap_or(available.vram + held(|u| u.vram)),
        };
        let bottleneck = if gpu && (llm.vram > 0 || diffusion.vram > 0) {
            Bottleneck::Vram
        } else {
            Bottleneck::Ram
        };
        let (need, room) = match bottleneck {
            Bottleneck::Ram => (llm.ram + diffusion.ram, budget.ram),
            Bottleneck::Vram => (llm.vram + diffusion.vram, budget.vram),
        };
        Estimate {
            llm,
            diffusion,
            available,
            budget,
            bottleneck,
            needs_offload: llm_running && need + self.headroom > room,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The process runs: what it uses (never less than its RSS).
    Measured,
    Estimated,
    /// Nothing runs and nothing is asked.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// What counts: the larger of the two below.
    pub ram: u64,
    pub vram: u64,
    pub source: Source,
    /// By arithmetic.
    pub estimated: Memory,
    /// What the running process tree uses now.
    pub measured: Option<Memory>,
}

impl Usage {
    const NONE: Usage = Usage {
        ram: 0,
        vram: 0,
        source: Source::None,
        estimated: Memory { ram: 0, vram: 0 },
        measured: None,
    };

    fn of(estimated: Memory, measured: Option<&crate::process::memory::TreeMemory>) -> Usage {
        let measured = measured.map(|m| Memory {
            ram: m.rss_bytes,
            vram: m.vram_bytes.unwrap_or(0),
        });
        Usage {
            ram: estimated.ram.max(measured.map_or(0, |m| m.ram)),
            vram: estimated.vram.max(measured.map_or(0, |m| m.vram)),
            source: if measured.is_some() {
                Source::Measured
            } else {
                Source::Estimated
            },
            estimated,
            measured,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Memory {
    pub ram: u64,
    pub vram: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Bottleneck {
    Ram,
    Vram,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Estimate {
    pub llm: Usage,
    pub diffusion: Usage,
    /// Free now, as the system reports it.
    pub available: Memory,
    /// What the two servers together may use: the budget, or what is free plus what they hold.
    pub budget: Memory,
    pub bottleneck: Bottleneck,
    pub needs_offload: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Idle,
    Draining,
    Offloading,
    Generating,
    Reloading,
}

/// The LLM as it was when it was offloaded.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SavedState {
    pub resolved: LlamaConfig,
    pub was_running: bool,
    /// Milliseconds since the Unix epoch.
    pub saved_at: u64,
}

#[derive(Debug, Clone)]
pub enum OrchestratorEvent {
    Phase(Phase),
    Offload(Box<SavedState>),
    Reload(ServerInfo),
    ReloadFailed(String),
}

pub struct Orchestrator {
    llama: Arc<LlamaServer>,
    diffusion: Arc<DiffusionServer>,
    system: &'static SystemInfo,
    options: Options,
    events: Option<EventSink<OrchestratorEvent>>,
    saved: Mutex<Option<SavedState>>,
    phase: Mutex<Phase>,
    /// One image at a time, in order.
    turn: tokio::sync::Mutex<()>,
    /// Images cancelled before their job was queued (during an offload).
    cancelled: Mutex<HashSet<String>>,
}

impl Orchestrator {
    pub fn new(
        llama: Arc<LlamaServer>,
        diffusion: Arc<DiffusionServer>,
        system: &'static SystemInfo,
        options: Options,
        events: Option<EventSink<OrchestratorEvent>>,
    ) -> Self {
        Orchestrator {
            llama,
            diffusion,
            system,
            options,
            events,
            saved: Mutex::new(None),
            phase: Mutex::new(Phase::Idle),
            turn: tokio::sync::Mutex::new(()),
            cancelled: Mutex::default(),
        }
    }

    pub fn phase(&self) -> Phase {
        *lock(&self.phase)
    }

    /// The chat requests waiting at the LLM's gateway now.
    pub fn queue(&self) -> crate::llama::gateway::QueueInfo {
        self.llama.queue()
    }

    pub fn saved_state(&self) -> Option<SavedState> {
        lock(&self.saved).clone()
    }

    pub fn clear_saved_state(&self) {
        *lock(&self.saved) = None;
    }

    /// What the LLM and an image of `request` (`{ width, height, count }`) need, and whether
    /// they fit together.
    pub async fn estimate(&self, request: &Value, data: &DataPaths) -> Estimate {
        let llm = self.llm_usage(data).await;
        let diffusion = self.diffusion_usage(request).await;
        let free = self.system.memory().available;
        let gpu = self.system.gpu().await;
        let available = Memory {
            ram: free,
            vram: gpu.vram_free.unwrap_or(0),
        };
        let llm_running = self.llama.info().status == ServerState::Running;
        self.options
            .weigh(llm, diffusion, available, gpu.available, llm_running)
    }

    async fn llm_usage(&self, data: &DataPaths) -> Usage {
        let (ServerState::Running, Some(config)) = (self.llama.info().status, self.llama.config())
        else {
            return Usage::NONE;
        };
        let (ram, vram) = llm_estimate(&config, data).await.unwrap_or((0, 0));
        Usage::of(Memory { ram, vram }, self.llama.memory().await.as_ref())
    }

    async fn diffusion_usage(&self, request: &Value) -> Usage {
        let Some(config) = self.diffusion.config() else {
            return Usage::NONE;
        };
        // The size as a request would have it (an estimate needs no prompt).
        let mut sized = request.clone();
        if let Some(fields) = sized.as_object_mut() {
            fields.entry("prompt").or_insert_with(|| json!("size only"));
        }
        let (width, height) = crate::diffusion::request::parse(&sized, false)
            .map(|r| (r.width, r.height))
            .unwrap_or((512, 512));
        let mut files = 0;
        let model = &config.backend.model;
        for path in std::iter::once(&model.primary).chain(model.components.iter().map(|(_, p)| p)) {
            files += tokio::fs::metadata(path).await.map_or(0, |m| m.len());
        }
        let estimated = Memory {
            ram: files + crate::diffusion::working_set(width, height),
            vram: 0,
        };
        Usage::of(estimated, self.diffusion.memory().await.as_ref())
    }

    /// Makes the image, offloading the LLM first when the two do not fit; the LLM is reloaded
    /// whatever happens to the image.
    pub async fn generate(
        &self,
        request: &Value,
        id: String,
        data: &DataPaths,
    ) -> Result<Arc<ImageOutput>, JobError> {
        let _turn = self.turn.lock().await;
        let estimate = self.estimate(request, data).await;
        if !estimate.needs_offload {
            let image = self.image(request, id).await;
            self.set_phase(Phase::Idle);
            return image;
        }
        let saved = SavedState {
            resolved: self.llama.config().expect("a running server has a config"),
            was_running: true,
            saved_at: unix_millis(),
        };
        *lock(&self.saved) = Some(saved.clone());
        self.set_phase(Phase::Draining);
        self.emit(OrchestratorEvent::Offload(Box::new(saved)));
        let drained = self
            .llama
            .offload(self.options.drain_timeout, self.options.queue)
            .await;
        if !drained {
            tracing::warn!("offload: requests still in flight after the drain timeout were cut");
        }
        self.set_phase(Phase::Offloading);
        self.wait_for_memory(estimate.diffusion.ram).await;
        let image = self.image(request, id).await;
        self.set_phase(Phase::Reloading);
        self.make_room_for_the_llm(&estimate).await;
        match self.llama.reload().await {
            Ok(info) => {
                *lock(&self.saved) = None;
                self.emit(OrchestratorEvent::Reload(info));
            }
            Err(err) => self.emit(OrchestratorEvent::ReloadFailed(err.to_string())),
        }
        self.set_phase(Phase::Idle);
        image
    }

    async fn image(&self, request: &Value, id: String) -> Result<Arc<ImageOutput>, JobError> {
        self.set_phase(Phase::Generating);
        if lock(&self.cancelled).remove(&id) {
            Err(DiffusionError::Cancelled.into())
        } else {
            match self.diffusion.submit(request, Some(id)) {
                Ok(job) => job.outcome().await,
                Err(err) => Err(err.into()),
            }
        }
    }

    /// Cancels an image that waits for its turn or for an offload; its job, once queued, is
    /// the diffusion server's to cancel.
    pub fn cancel(&self, id: &str) -> bool {
        let queued = self.diffusion.cancel(Some(id));
        if !queued {
            lock(&self.cancelled).insert(id.to_string());
        }
        true
    }

    /// A resident sd-server keeps its model loaded after the image: when it and the LLM do not
    /// fit together, it yields (if idle; the next image starts it again).
    async fn make_room_for_the_llm(&self, estimate: &Estimate) {
        let Some(resident) = self.diffusion.memory().await else {
            return;
        };
        let (need, room) = match estimate.bottleneck {
            Bottleneck::Ram => (estimate.llm.ram + resident.rss_bytes, estimate.budget.ram),
            Bottleneck::Vram => (
                estimate.llm.vram + resident.vram_bytes.unwrap_or(0),
                estimate.budget.vram,
            ),
        };
        if need + self.options.headroom > room && self.diffusion.release_idle_backend().await {
            tracing::info!("stopped the idle resident sd-server to make room for the LLM");
            self.wait_for_memory(estimate.llm.ram).await;
        }
    }

    /// Memory is not free the moment a process exits: wait (bounded) until `needed` is.
    async fn wait_for_memory(&self, needed: u64) {
        let deadline = Instant::now() + self.options.memory_release_timeout;
        while self.system.memory().available < needed + self.options.headroom
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn set_phase(&self, phase: Phase) {
        let changed = {
            let mut current = lock(&self.phase);
            std::mem::replace(&mut *current, phase) != phase
        };
        if changed {
            self.emit(OrchestratorEvent::Phase(phase));
        }
    }

    fn emit(&self, event: OrchestratorEvent) {
        if let Some(events) = &self.events {
            events.emit(event);
        }
    }
}

/// `(ram, vram)` of the running LLM by the GGUF arithmetic behind `canRunModel`.
async fn llm_estimate(config: &LlamaConfig, data: &DataPaths) -> Option<(u64, u64)> {
    let info = crate::models::store::read(data, &config.model_id)
        .await
        .ok()?;
    let spec: ModelSpec = serde_json::from_value(serde_json::to_value(&info).ok()?).ok()?;
    let kind = |t: &Option<String>| -> Option<KvCacheType> {
        serde_json::from_value(json!(t.as_deref()?)).ok()
    };
    let k = kind(&config.cache_type_k).unwrap_or_default();
    let cache = KvCache {
        k,
        v: kind(&config.cache_type_v).unwrap_or(k),
    };
    let e = crate::system::estimate::estimate(&spec, config.context_size, config.gpu_layers, cache);
    Some((e.ram, e.vram))
}

fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real llama-server (behind its gateway) and sd-cli, with the tiny models.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_image_that_does_not_fit_offloads_and_reloads_the_llm_and_a_chat_waits_for_it() {
        let (Some((binary, model)), Some(b)) =
            (crate::llama::tests::real(), crate::diffusion::tests::real())
        else {
            return;
        };
        let _serial = crate::diffusion::tests::SERIAL.lock().await;
        let tmp = tempfile::tempdir().unwrap();
        let data = DataPaths::new(tmp.path().into(), crate::config::DataDirSource::Configured);
        let events: Arc<Mutex<Vec<String>>> = Arc::default();
        let llama = Arc::new(LlamaServer::new(None));
        let diffusion = Arc::new(DiffusionServer::new(None));
        let mut llm = crate::llama::tests::config(binary, model);
        llm.gateway = true;
        let first = llama.start(llm).await.unwrap();
        let kind = crate::diffusion::backend::BackendKind::OneShot;
        diffusion
            .start(crate::diffusion::tests::config(&b, kind, tmp.path()))
            .await
            .unwrap();
        let system: &'static SystemInfo = Box::leak(Box::new(SystemInfo::new(vec![])));
        let sink = events.clone();
        let orchestrator = Orchestrator::new(
            llama.clone(),
            diffusion.clone(),
            system,
            Options::resolve(OptionsRequest {
                ram_budget_bytes: Some(1e6),
                headroom: Some(0.0),
                ..Default::default()
            })
            .unwrap(),
            Some(EventSink::new(move |e: OrchestratorEvent| {
                lock(&sink).push(match e {
                    OrchestratorEvent::Phase(p) => format!("{p:?}"),
                    OrchestratorEvent::Offload(_) => "offload".into(),
                    OrchestratorEvent::Reload(_) => "reload".into(),
                    OrchestratorEvent::ReloadFailed(e) => format!("reload-failed {e}"),
                })
            })),
        );
        let request =
            json!({ "prompt": "a red cube", "width": 64, "height": 64, "steps": 2, "cfgScale": 1 });
        let estimate = orchestrator.estimate(&request, &data).await;
        assert!(estimate.needs_offload, "{estimate:?}");
        assert_eq!(estimate.llm.source, Source::Measured);
        assert_eq!(estimate.diffusion.source, Source::Estimated);
        assert_eq!(estimate.bottleneck, Bottleneck::Ram);

        let port = first.port.unwrap();
        let chat = async {
            // Sent once the LLM is held: it waits for the reload.
            while orchestrator.phase() == Phase::Idle {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            crate::http::local_client()
                .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
                .body(r#"{"messages":[{"role":"user","content":"Hi"}],"max_tokens":2}"#)
                .send()
                .await
                .unwrap()
                .status()
        };
        let (image, status) = tokio::join!(
            orchestrator.generate(&request, "img_orchestrated".into(), &data),
            chat
        );
        assert_eq!(image.unwrap().width, 64);
        assert_eq!(status, 200);
        let after = llama.info();
        assert_eq!(
            (after.status, after.port),
            (ServerState::Running, Some(port))
        );
        assert_ne!(after.pid, first.pid);
        assert!(orchestrator.saved_state().is_none());
        assert_eq!(
            *lock(&events),
            [
                "Draining",
                "offload",
                "Offloading",
                "Generating",
                "Reloading",
                "reload",
                "Idle"
            ]
        );
        // A cancel that comes before the image's job is queued still counts.
        assert!(orchestrator.cancel("img_early"));
        let cancelled = orchestrator
            .generate(&request, "img_early".into(), &data)
            .await
            .unwrap_err();
        assert!(cancelled.cancelled);
        assert_eq!(llama.info().status, ServerState::Running);
        llama.stop().await;
        diffusion.stop().await;
    }

    fn usage(ram: u64, vram: u64, source: Source) -> Usage {
        let memory = Memory { ram, vram };
        Usage {
            ram,
            vram,
            source,
            estimated: memory,
            measured: (source == Source::Measured).then_some(memory),
        }
    }

    #[test]
    fn the_gpu_decides_when_the_servers_use_it_and_ram_otherwise() {
        const GB: u64 = 1 << 30;
        let options = Options::resolve(OptionsRequest {
            headroom: Some(0.0),
            ..Default::default()
        })
        .unwrap();
        // 6 GB of VRAM free beside an LLM that holds 5 GB of it: an image needing 4 GB does not
        // fit (11 GB of VRAM in all), though RAM has plenty.
        let free = Memory {
            ram: 64 * GB,
            vram: 6 * GB,
        };
        let llm = usage(GB, 5 * GB, Source::Measured);
        let image = usage(GB, 4 * GB, Source::Estimated);
        let e = options.weigh(llm, image, free, true, true);
        assert_eq!(e.bottleneck, Bottleneck::Vram);
        assert_eq!(
            e.budget.vram,
            11 * GB,
            "what is free plus what the LLM holds"
        );
        assert!(!e.needs_offload, "5 + 4 of 11 GB fits");
        let big = usage(GB, 7 * GB, Source::Estimated);
        assert!(options.weigh(llm, big, free, true, true).needs_offload);
        // The same figures without a usable GPU: both run on the CPU, RAM decides.
        let e = options.weigh(llm, big, free, false, true);
        assert_eq!(e.bottleneck, Bottleneck::Ram);
        assert!(!e.needs_offload);
        // Nothing on the GPU: RAM decides even where a GPU is present.
        let cpu = |ram| usage(ram, 0, Source::Measured);
        let e = options.weigh(cpu(40 * GB), cpu(30 * GB), free, true, true);
        assert_eq!(e.bottleneck, Bottleneck::Ram);
        assert_eq!(e.budget.ram, 134 * GB);
        assert!(!e.needs_offload);
        // A VRAM budget caps what the machine has, and the headroom counts.
        let capped = Options::resolve(OptionsRequest {
            vram_budget_bytes: Some((10 * GB) as f64),
            headroom: Some((2 * GB) as f64),
            ..Default::default()
        })
        .unwrap();
        let e = capped.weigh(llm, image, free, true, true);
        assert_eq!(e.budget.vram, 10 * GB);
        assert!(e.needs_offload, "5 + 4 and 2 of headroom > 10");
        // An LLM that does not run is never offloaded.
        assert!(!capped.weigh(llm, big, free, true, false).needs_offload);
    }

    #[test]
    fn options_are_whole_byte_counts() {
        let bad = |req: OptionsRequest| Options::resolve(req).unwrap_err().code();
        assert_eq!(
            bad(OptionsRequest {
                ram_budget_bytes: Some(0.0),
                ..Default::default()
            }),
            ErrorCode::InvalidArgument
        );
        assert_eq!(
            bad(OptionsRequest {
                headroom: Some(1.5),
                ..Default::default()
            }),
            ErrorCode::InvalidArgument
        );
        let big = Options::resolve(OptionsRequest {
            ram_budget_bytes: Some(2f64.powi(50)),
            headroom: Some(0.0),
            ..Default::default()
        })
        .unwrap();
        assert_eq!((big.ram_budget, big.headroom), (Some(1 << 50), 0));
        let defaults = Options::resolve(OptionsRequest::default()).unwrap();
        assert_eq!(defaults.headroom, 512 * MIB);
        assert_eq!(defaults.drain_timeout, Duration::from_secs(30));
    }
}
