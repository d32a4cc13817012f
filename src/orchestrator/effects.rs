//! What the orchestrator does to the world and reads from it, behind one trait, so that the
//! worker's ordering can be tested against fakes with paused time. [`Servers`] is the real one:
//! the llama and diffusion servers, and what the system reports.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::usage::{self, Bottleneck, Memory, ServerUsage, Usage};
use crate::binaries::BinaryManager;
use crate::config::{DataDirSource, DataPaths, Settings};
use crate::diffusion::DiffusionServer;
use crate::diffusion::backend::DeviceUse;
use crate::diffusion::engine::{Admission, Bound, ImageOutput, JobError};
use crate::diffusion::request::{ImageRequest, ImageShape};
use crate::launch::ManagedServer;
use crate::launch::StartError;
use crate::llama::gateway::{QueueBounds, QueueInfo};
use crate::llama::resolve::{self, StartRequest};
use crate::llama::{LlamaConfig, LlamaError, LlamaServer, ServerInfo};
use crate::process::ServerState;
use crate::system::SystemInfo;
use crate::system::estimate::{EstimateSource, MemoryEstimate};

pub type ImageResult = Result<Arc<ImageOutput>, JobError>;
/// An image queued at the diffusion server: its images once made.
pub type ImageJob = std::pin::Pin<Box<dyn Future<Output = ImageResult> + Send>>;
pub type StartResult = Result<ServerInfo, StartError<LlamaError>>;

/// Memory free now, as the system reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Free {
    pub memory: Memory,
    /// A GPU the servers can use is present.
    pub gpu: bool,
    /// The driver reports free VRAM (`memory.vram` is 0 where it does not).
    pub vram_reported: bool,
}

/// An LLM start, resolved as it will run whatever is free now, and what it will need.
#[derive(Debug, Clone)]
pub struct PlannedStart {
    pub config: LlamaConfig,
    /// `None` where the model's size is not known.
    pub need: Option<(Usage, Bottleneck)>,
}

/// The worker's view of the servers. Reads are cheap and never change anything; each action
/// is one step the worker orders.
pub trait Effects: Send + Sync + 'static {
    /// RAM and VRAM free now (VRAM means asking the GPU's driver).
    fn free(&self) -> impl Future<Output = Free> + Send;
    /// RAM free now: all a wait for RAM needs to read.
    fn free_ram(&self) -> u64;
    /// How many llama servers there are; each is named by its place (0: `llamaServer`).
    fn llm_servers(&self) -> usize;
    /// A llama server's usage, task and idle time while it runs (not marked for offload);
    /// `None` otherwise.
    fn llm_usage(
        &self,
        server: usize,
        data: &DataPaths,
    ) -> impl Future<Output = Option<ServerUsage>> + Send;
    /// What an image of this shape needs; [`Usage::NONE`] while no diffusion server runs.
    fn image_usage(&self, shape: &ImageShape) -> impl Future<Output = Usage> + Send;
    /// What the resident sd-server holds, while one runs.
    fn diffusion_held(&self) -> impl Future<Output = Option<Memory>> + Send;

    /// The requests waiting at a llama server's gateway now.
    fn chat_queue(&self, server: usize) -> QueueInfo;
    /// Resolves once a request waits at the server's gateway.
    fn chat_arrived(&self, server: usize) -> impl Future<Output = ()> + Send;
    /// Resolves once no request waits there (those let through by the last reload are served).
    fn chat_drained(&self, server: usize) -> impl Future<Output = ()> + Send;

    /// A running llama server's config: what a reload brings back.
    fn llm_config(&self, server: usize) -> Option<LlamaConfig>;
    /// Holds the server's new requests, drains those in flight (at most `drain`) and stops it;
    /// false when the drain ran out of time.
    fn offload_llm(
        &self,
        server: usize,
        drain: Duration,
        bounds: QueueBounds,
    ) -> impl Future<Output = bool> + Send;
    /// Offloaded and not stopped or started by the app since.
    fn llm_offloaded(&self, server: usize) -> bool;
    /// Brings the offloaded server back as it was; its held requests are then served.
    fn reload_llm(&self, server: usize) -> impl Future<Output = Result<ServerInfo, String>> + Send;
    fn plan_llm(
        &self,
        request: &StartRequest,
        data: &DataPaths,
    ) -> impl Future<Output = Result<PlannedStart, StartError<LlamaError>>> + Send;
    fn start_llm(
        &self,
        server: usize,
        request: StartRequest,
        planned: LlamaConfig,
        data: &DataPaths,
    ) -> impl Future<Output = StartResult> + Send;

    /// Where models are recorded now (the LLM's estimate reads its record).
    fn data_paths(&self) -> DataPaths;
    /// Makes the orchestrator the gate of every image of the diffusion server.
    fn serve_images(&self, gate: Arc<dyn Admission>);
    /// Queues an image at the diffusion server, at once; it asks `gate` (this orchestrator's)
    /// in its turn. One the server refuses (not running, a bad request) resolves with that error.
    fn submit_image(&self, request: ImageRequest, id: String, gate: Arc<dyn Admission>)
    -> ImageJob;
    /// Cancels the diffusion server's job `id`, waiting or being made; false when there is none.
    fn cancel_image(&self, id: &str) -> bool;
    /// Images queued at the diffusion server that have not asked for their turn yet.
    fn images_queued(&self) -> usize;
    /// Stops the resident sd-server if no image is being made with it; true when it stopped.
    fn release_idle_diffusion(&self) -> impl Future<Output = bool> + Send;
}

/// The real servers.
pub struct Servers {
    /// The llama servers, `llamaServer` first.
    pub llamas: Vec<Arc<LlamaServer>>,
    pub diffusion: Arc<DiffusionServer>,
    pub system: &'static SystemInfo,
    pub binaries: &'static BinaryManager,
}

impl Effects for Servers {
    async fn free(&self) -> Free {
        let gpu = self.system.gpu().await;
        Free {
            memory: Memory {
                ram: self.free_ram(),
                vram: gpu.vram_free.unwrap_or(0),
            },
            gpu: gpu.available,
            vram_reported: gpu.vram_free.is_some(),
        }
    }

    fn free_ram(&self) -> u64 {
        self.system.memory().available
    }

    fn llm_servers(&self) -> usize {
        self.llamas.len()
    }

    async fn llm_usage(&self, server: usize, data: &DataPaths) -> Option<ServerUsage> {
        let llama = &self.llamas[server];
        let info = llama.info();
        let config = llama
            .config()
            .filter(|_| info.status == ServerState::Running)?;
        let usage = usage::llm(&config, data, llama.memory().await.as_ref()).await;
        Some(ServerUsage {
            server,
            mode: info.mode.unwrap_or_default(),
            port: info.port,
            usage,
            idle_ms: llama.idle_for().as_millis() as u64,
            offload: false,
        })
    }

    async fn image_usage(&self, shape: &ImageShape) -> Usage {
        let (width, height) = (shape.width, shape.height);
        let Some(config) = self.diffusion.config() else {
            return Usage::NONE;
        };
        let model = &config.backend.model;
        // All of the model's files, and those that go to a GPU (not kept on the CPU by sd's
        // switches).
        let (mut files, mut on_device) = (0, 0);
        let parts = model.components.iter().map(|(flag, p)| (Some(*flag), p));
        for (flag, path) in std::iter::once((None, &model.primary)).chain(parts) {
            let bytes = tokio::fs::metadata(path).await.map_or(0, |m| m.len());
            files += bytes;
            if !flag.is_some_and(|flag| config.backend.keeps_on_cpu(flag)) {
                on_device += bytes;
            }
        }
        let device = self
            .system
            .gpu()
            .await
            .available
            .then_some(config.backend.device);
        let measured = self.diffusion.memory().await;
        let data = self.data_paths();
        // The LoRAs are loaded beside the diffusion model, where it runs (one that is not
        // installed counts nothing: the image will be refused).
        let lora_bytes: u64 = crate::diffusion::lora::resolve(&data, &shape.loras)
            .await
            .map_or(0, |loras| loras.iter().map(|l| l.bytes).sum());
        files += lora_bytes;
        on_device += lora_bytes;
        // A calibration of this size, placement and executable is what such an image took.
        if let Some((ram, vram)) =
            crate::diffusion::calibrate::measured(&config, &data, width, height).await
        {
            let on_gpu = device.is_some_and(|d| d != DeviceUse::None);
            let extra = lora_bytes + shape.encoding_bytes();
            let (ram, vram) = (ram + extra, if on_gpu { vram + extra } else { 0 });
            return Usage::of(Memory { ram, vram }, measured.as_ref())
                .projected_by(EstimateSource::Measured);
        }
        let model = usage::ImageModel {
            files,
            on_device,
            backend: config.backend.kind,
        };
        usage::image(model, shape, device, measured.as_ref())
    }

    async fn diffusion_held(&self) -> Option<Memory> {
        self.diffusion.memory().await.as_ref().map(Memory::held_by)
    }

    fn chat_queue(&self, server: usize) -> QueueInfo {
        self.llamas[server].queue()
    }

    async fn chat_arrived(&self, server: usize) {
        let mut length = self.llamas[server].queue_length();
        let _ = length.wait_for(|n| *n > 0).await;
    }

    async fn chat_drained(&self, server: usize) {
        let mut length = self.llamas[server].queue_length();
        let _ = length.wait_for(|n| *n == 0).await;
    }

    fn llm_config(&self, server: usize) -> Option<LlamaConfig> {
        self.llamas[server].config()
    }

    async fn offload_llm(&self, server: usize, drain: Duration, bounds: QueueBounds) -> bool {
        self.llamas[server].offload(drain, bounds).await
    }

    fn llm_offloaded(&self, server: usize) -> bool {
        self.llamas[server].is_offloaded()
    }

    async fn reload_llm(&self, server: usize) -> Result<ServerInfo, String> {
        let reloaded = self.llamas[server].reload().await;
        reloaded.map_err(|e| e.to_string())
    }

    async fn plan_llm(
        &self,
        request: &StartRequest,
        data: &DataPaths,
    ) -> Result<PlannedStart, StartError<LlamaError>> {
        // What it will run with, whatever is free now: its estimate says what must yield.
        let planned = StartRequest {
            force: true,
            ..request.clone()
        };
        let config = resolve::resolve(planned, data, self.system, self.binaries).await?;
        let need = match usage::llm_estimate(&config, data).await {
            Some(MemoryEstimate {
                ram, vram, source, ..
            }) => {
                let gpu = self.system.gpu().await.available && vram > 0;
                let bottleneck = if gpu {
                    Bottleneck::Vram
                } else {
                    Bottleneck::Ram
                };
                let usage = Usage::of(Memory { ram, vram }, None).projected_by(source);
                Some((usage, bottleneck))
            }
            None => None,
        };
        Ok(PlannedStart { config, need })
    }

    async fn start_llm(
        &self,
        server: usize,
        request: StartRequest,
        planned: LlamaConfig,
        data: &DataPaths,
    ) -> StartResult {
        // Unforced, the start is checked again against what is free now that room was made.
        let config = if request.force {
            planned
        } else {
            resolve::resolve(request, data, self.system, self.binaries).await?
        };
        let started = self.llamas[server].start(config).await;
        started.map_err(StartError::Server)
    }

    fn data_paths(&self) -> DataPaths {
        // Only an OS without a user data folder, and no folder configured, has none; the LLM is
        // then sized by what its process holds.
        Settings::global()
            .data_paths()
            .unwrap_or_else(|_| DataPaths::new(std::env::temp_dir(), DataDirSource::Configured))
    }

    fn serve_images(&self, gate: Arc<dyn Admission>) {
        self.diffusion.serve_by(gate);
    }

    fn submit_image(
        &self,
        request: ImageRequest,
        id: String,
        gate: Arc<dyn Admission>,
    ) -> ImageJob {
        match self
            .diffusion
            .submit(request, Some(id), Bound::Unbounded, Some(gate))
        {
            Ok(job) => Box::pin(job.outcome()),
            Err(err) => {
                let err = JobError::from(err);
                Box::pin(async move { Err(err) })
            }
        }
    }

    fn cancel_image(&self, id: &str) -> bool {
        self.diffusion.cancel(Some(id))
    }

    fn images_queued(&self) -> usize {
        self.diffusion.queued()
    }

    async fn release_idle_diffusion(&self) -> bool {
        self.diffusion.release_idle_backend().await
    }
}
