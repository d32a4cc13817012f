//! From what a caller asks (`{ modelId, port, backend, … }`) to a complete
//! [`DiffusionConfig`]: the model's files from the model store, the executable from the binary
//! manager, and the backend `'auto'` picks from the memory the machine has free.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::backend::{BackendConfig, BackendKind, ModelFiles, Placement};
use super::{DEFAULT_PORT, DiffusionConfig, DiffusionError};
use crate::binaries::{BinaryKind, BinaryManager, EnsureOptions};
use crate::config::DataPaths;
use crate::launch::{
    Bytes, Insufficient, PortRequest, StartError, installed_model, refuse_reserved_flags,
};
use crate::models::{ModelInfo, ModelType};
use crate::system::SystemInfo;
use crate::system::estimate::suggested_threads;

const DEFAULT_MAX_QUEUE: usize = 2;
const DEFAULT_IDLE_TIMEOUT_MS: u64 = 5 * 60 * 1000;
const DEFAULT_STARTUP_TIMEOUT_MS: u64 = 120_000;
/// sd.cpp prints a line per sampling step; two minutes without one is a wedged backend.
const DEFAULT_STALL_TIMEOUT_MS: u64 = 120_000;
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
/// Room left beside a resident model for the app and the rest of the system.
const RESIDENT_HEADROOM: u64 = 1 << 30;

/// sd-cli's and sd-server's flags that the library sets (every spelling in the pinned build's
/// `examples/common/common.cpp` and `examples/server/runtime.cpp`): the model and its components,
/// threads, the request's fields, where the image goes, the address, and the mode.
pub const RESERVED_FLAGS: &[&str] = &[
    "-m",
    "--model",
    "--diffusion-model",
    "--clip_l",
    "--clip_g",
    "--t5xxl",
    "--llm",
    "--llm_vision",
    "--vae",
    "--taesd",
    "-t",
    "--threads",
    "-o",
    "--output",
    "-p",
    "--prompt",
    "-n",
    "--negative-prompt",
    "-W",
    "--width",
    "-H",
    "--height",
    "--steps",
    "-s",
    "--seed",
    "-b",
    "--batch-count",
    "--cfg-scale",
    "--sampling-method",
    "-l",
    "--listen-ip",
    "--listen-port",
    "-M",
    "--mode",
    "--lora-model-dir",
];

/// What {@link DiffusionServerManager.start} runs. Unknown keys are a {@link ValidationError}.
#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[ts(rename = "DiffusionServerConfig", optional_fields)]
pub struct StartRequest {
    /// An installed `diffusion` model; its components (`llm`, `vae`, `taesd`, …) are passed as
    /// their flags.
    pub model_id: String,
    /// `'auto'` (default): resident when free RAM holds twice the model plus 1 GiB, else
    /// one-shot.
    #[ts(optional, type = "DiffusionBackend | 'auto'")]
    pub backend: Option<String>,
    /// A port, or `'auto'` for a free one (default 8081).
    #[ts(optional, type = "number | 'auto'")]
    pub port: Option<PortRequest>,
    /// Address to bind (default `127.0.0.1`).
    pub host: Option<String>,
    /// CPU threads (default: as {@link SystemRecommendations.threads}: physical cores less one
    /// on up to 8 cores, less two on 9–16, 85% beyond).
    pub threads: Option<u32>,
    /// An `sd-cli` to use instead of the managed one (one-shot).
    pub binary_path: Option<PathBuf>,
    /// An `sd-server` to use instead of the managed one (resident).
    pub server_binary_path: Option<PathBuf>,
    /// More stable-diffusion.cpp arguments, e.g. `['--vae-on-cpu']`. The flags the library sets
    /// are refused with a `ValidationError`, in every spelling: the model and its components
    /// (`-m`/`--model`, `--diffusion-model`, `--clip_l`, `--clip_g`, `--t5xxl`, `--llm`,
    /// `--llm_vision`, `--vae`, `--taesd`), `-t`/`--threads`, the request's fields
    /// (`-p`/`--prompt`, `-n`/`--negative-prompt`, `-W`/`--width`, `-H`/`--height`, `--steps`,
    /// `-s`/`--seed`, `-b`/`--batch-count`, `--cfg-scale`, `--sampling-method`),
    /// `-o`/`--output`, `-l`/`--listen-ip`, `--listen-port` and `-M`/`--mode`.
    #[serde(default)]
    #[ts(as = "Option<Vec<String>>")]
    pub extra_args: Vec<String>,
    /// Require `Authorization: Bearer <apiKey>` (or `X-Api-Key`) on every route but `/health`.
    pub api_key: Option<String>,
    /// Browser origins allowed to call the server (CORS) besides the pages of this machine
    /// (`http://localhost:…`, `127.x.x.x`, `[::1]`); requests from other origins get 403.
    #[serde(default)]
    #[ts(as = "Option<Vec<String>>")]
    pub allowed_origins: Vec<String>,
    /// Names besides loopback's (`localhost`, `127.0.0.1`, `[::1]`) by which clients may call the
    /// server, as `Host` carries them (`my-app.test`, any port). Other names get 403
    /// `INVALID_HOST`: that is what keeps a web page that points its own domain at 127.0.0.1 (DNS
    /// rebinding) away from the port. A server bound to a non-loopback `host` also answers IP
    /// addresses.
    #[serde(default)]
    #[ts(as = "Option<Vec<String>>")]
    pub allowed_hosts: Vec<String>,
    /// Requests that may wait while one runs (1–64, default 2); beyond that, busy (HTTP 409).
    pub max_queue: Option<u32>,
    /// Resident: milliseconds without a request before `sd-server` is stopped to free its memory
    /// (default 300000, 0: never).
    pub idle_timeout: Option<u64>,
    /// Resident: milliseconds `sd-server` may take to load the model (default 120000).
    pub startup_timeout: Option<u64>,
    /// Milliseconds an image may go without a line of output from stable-diffusion.cpp (loading,
    /// a sampling step, decoding) before it fails with `BACKEND_STALLED` and the backend's
    /// process is stopped (default 120000, 0: never). Raise it for very large images on a slow
    /// CPU, where one sampling step can take minutes.
    pub stall_timeout: Option<u64>,
    /// Largest request body, bytes (default 1 MiB; larger is HTTP 413).
    pub max_body_bytes: Option<u32>,
    /// Start even when the model's files and a 512×512 image do not fit in this machine's whole
    /// RAM (checked against the total, not what is free: the ResourceOrchestrator frees memory
    /// for images); without it such a start fails with {@link InsufficientResourcesError}.
    #[serde(default)]
    #[ts(as = "Option<bool>")]
    pub force: bool,
    /// The seed's GPU layers. stable-diffusion.cpp has no layer count: `0` keeps everything on
    /// the CPU (the GPUs are hidden from the backend: `CUDA_VISIBLE_DEVICES`,
    /// `HIP_VISIBLE_DEVICES` empty, `GGML_DISABLE_VULKAN=1`; a Metal build on macOS cannot be
    /// kept off the GPU and is refused: pass a CPU build's path); any other number leaves the
    /// GPU in use.
    pub gpu_layers: Option<u32>,
    /// The seed's VRAM budget, in MB: `--max-vram` caps the compute graph (run in segments that
    /// fit); when the model and a 512×512 image exceed it, `--offload-to-cpu` keeps the weights
    /// in RAM until needed; when the diffusion model alone does, `--clip-on-cpu` and
    /// `--vae-on-cpu` move the text encoders and the VAE to the CPU. `getConfig().placement`
    /// shows the flags chosen.
    pub vram_budget: Option<f64>,
    /// genai-electron 0.26's name for the backend: `burst` keeps `sd-server` loaded between
    /// images (`backend: 'resident'`), `single` loads the model for each one
    /// (`backend: 'one-shot'`), `auto` chooses as `backend: 'auto'` does.
    #[ts(optional, type = "'burst' | 'single' | 'auto'")]
    pub usage_mode: Option<String>,
    /// genai-electron 0.26's name for `idleTimeout`.
    pub idle_timeout_ms: Option<u64>,
    /// genai-electron 0.26's name for `stallTimeout`.
    pub job_activity_timeout_ms: Option<u64>,
    /// Run the text encoders on the CPU (`--clip-on-cpu`); `false` keeps them off it even when
    /// `vramBudget` would move them.
    pub clip_on_cpu: Option<bool>,
    /// Run the VAE on the CPU (`--vae-on-cpu`); `false` as for `clipOnCpu`.
    pub vae_on_cpu: Option<bool>,
    /// Keep the weights in RAM until they are needed (`--offload-to-cpu`); `false` as for
    /// `clipOnCpu`.
    pub offload_to_cpu: Option<bool>,
    /// Flash attention in the diffusion model (`--diffusion-fa`).
    pub diffusion_flash_attention: Option<bool>,
    /// genai-electron 0.26's images per sd-server request. Refused here: set `count` on each
    /// image request instead.
    #[ts(optional, type = "never")]
    pub batch_size: Option<u32>,
}

/// One setting given under two names (ours and genai-electron 0.26's): they must agree.
fn either<T: PartialEq + std::fmt::Debug>(
    ours: Option<T>,
    theirs: Option<T>,
    names: (&str, &str),
) -> Result<Option<T>, String> {
    match (ours, theirs) {
        (Some(a), Some(b)) if a != b => Err(format!(
            "{} ({a:?}) and {} ({b:?}) name the same setting: give one",
            names.0, names.1
        )),
        (a, b) => Ok(a.or(b)),
    }
}

/// `vramBudget`'s placement flags with the explicit choices applied: `true` adds a flag, `false`
/// takes it away.
fn with_explicit_flags(mut args: Vec<String>, req: &StartRequest) -> Vec<String> {
    let choices = [
        ("--clip-on-cpu", req.clip_on_cpu),
        ("--vae-on-cpu", req.vae_on_cpu),
        ("--offload-to-cpu", req.offload_to_cpu),
        ("--diffusion-fa", req.diffusion_flash_attention),
    ];
    for (flag, choice) in choices {
        match choice {
            Some(true) if !args.iter().any(|a| a == flag) => args.push(flag.into()),
            Some(false) => args.retain(|a| a != flag),
            _ => {}
        }
    }
    args
}

pub async fn resolve(
    req: StartRequest,
    data: &DataPaths,
    system: &SystemInfo,
    binaries: &BinaryManager,
) -> Result<DiffusionConfig, StartError<DiffusionError>> {
    let invalid = |m: String| StartError::Server(DiffusionError::Invalid(m));
    let port = PortRequest::choose(req.port.as_ref(), DEFAULT_PORT).map_err(invalid)?;
    if req.batch_size.is_some() {
        return Err(invalid(
            "batchSize (genai-electron 0.26's images per request) is not a server setting here: set count on each image request".into(),
        ));
    }
    let usage_mode = match req.usage_mode.as_deref() {
        None => None,
        Some("burst") => Some("resident"),
        Some("single") => Some("one-shot"),
        Some("auto") => Some("auto"),
        Some(other) => {
            return Err(invalid(format!(
                "usageMode must be 'burst', 'single' or 'auto', got {other:?}"
            )));
        }
    };
    let backend =
        either(req.backend.as_deref(), usage_mode, ("backend", "usageMode")).map_err(invalid)?;
    let asked = match backend {
        None | Some("auto") => None,
        Some("one-shot") => Some(BackendKind::OneShot),
        Some("resident") => Some(BackendKind::Resident),
        Some(other) => {
            return Err(invalid(format!(
                "backend must be 'auto', 'one-shot' or 'resident', got {other:?}"
            )));
        }
    };
    let idle_timeout = either(
        req.idle_timeout,
        req.idle_timeout_ms,
        ("idleTimeout", "idleTimeoutMs"),
    )
    .map_err(invalid)?;
    let stall_timeout = either(
        req.stall_timeout,
        req.job_activity_timeout_ms,
        ("stallTimeout", "jobActivityTimeoutMs"),
    )
    .map_err(invalid)?;
    refuse_reserved_flags(&req.extra_args, RESERVED_FLAGS).map_err(invalid)?;
    if req.max_queue == Some(0) || req.max_queue.is_some_and(|q| q > 64) {
        return Err(invalid("maxQueue must be 1-64".into()));
    }

    let info = installed_model(
        data,
        &req.model_id,
        ModelType::Diffusion,
        "the diffusion server",
        DiffusionError::Invalid,
    )
    .await?;
    if !req.force {
        fits_machine(&info.id, info.size, system.memory().total)?;
    }
    // The diffusion model alone: the primary file, as recorded at download.
    let primary = info.files().first().map_or(info.size, |file| file.1);
    let placement =
        Placement::of(req.gpu_layers, req.vram_budget, info.size, primary).map_err(invalid)?;
    let caps = system.detect(false).await;
    let placement = if caps.gpu.available {
        placement
    } else {
        placement.without_gpu()
    };
    let kind = match asked {
        Some(kind) => kind,
        None if fits_resident(&info, system.memory().available) => BackendKind::Resident,
        None => BackendKind::OneShot,
    };
    let (binary_kind, path) = match kind {
        BackendKind::OneShot => (BinaryKind::SdCli, req.binary_path.clone()),
        BackendKind::Resident => (BinaryKind::SdServer, req.server_binary_path.clone()),
    };
    let opts = EnsureOptions {
        path,
        ..Default::default()
    };
    let binary = binaries.ensure(binary_kind, &opts, data, &caps.gpu).await?;

    let placement_args = with_explicit_flags(placement.args, &req);
    let idle = idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT_MS);
    let stall = stall_timeout.unwrap_or(DEFAULT_STALL_TIMEOUT_MS);
    Ok(DiffusionConfig {
        model_id: info.id.clone(),
        host: req.host.unwrap_or_else(|| "127.0.0.1".into()),
        port,
        backend: BackendConfig {
            kind,
            binary: binary.path,
            model: ModelFiles::from_info(&info),
            threads: req
                .threads
                .unwrap_or_else(|| suggested_threads(caps.cpu.physical_cores)),
            placement: placement_args,
            extra_args: req.extra_args,
            env: placement.env,
            device: placement.device,
            temp_dir: data.temp.clone(),
            data: data.clone(),
            startup_timeout: Duration::from_millis(
                req.startup_timeout.unwrap_or(DEFAULT_STARTUP_TIMEOUT_MS),
            ),
            idle_timeout: (idle > 0).then(|| Duration::from_millis(idle)),
        },
        api_key: req.api_key.filter(|k| !k.is_empty()),
        allowed_origins: req.allowed_origins,
        allowed_hosts: req.allowed_hosts,
        max_queue: req.max_queue.unwrap_or(DEFAULT_MAX_QUEUE as u32) as usize,
        stall_timeout: (stall > 0).then(|| Duration::from_millis(stall)),
        max_body_bytes: req
            .max_body_bytes
            .map_or(DEFAULT_MAX_BODY_BYTES, |b| b as usize),
        log_file: Some(data.logs.join("diffusion-server.log")),
    })
}

/// A model is loaded for each image (or kept, resident), with a working set beside it: one
/// whose files and a 512×512 image do not fit in this machine's whole RAM never runs. Checked
/// against the total, not what is free now: the ResourceOrchestrator frees memory for images.
pub fn fits_machine(model: &str, size: u64, total: u64) -> Result<(), Insufficient> {
    let need = size.saturating_add(super::working_set(512, 512));
    if need <= total {
        return Ok(());
    }
    let gb = |b: u64| format!("{:.1} GB", b as f64 / 1e9);
    Err(Insufficient {
        model: model.to_string(),
        reason: format!(
            "its files and a 512×512 image need {}, and this machine has {} of RAM in all",
            gb(need),
            gb(total)
        ),
        suggestion: "Choose a smaller or more quantized model".into(),
        required: Bytes {
            ram: need,
            vram: None,
        },
        available: Bytes {
            ram: total,
            vram: None,
        },
    })
}

/// Keeping a model loaded is worth it when its weights (about twice the files, with compute
/// buffers) leave a gigabyte free.
pub fn fits_resident(info: &ModelInfo, available: u64) -> bool {
    info.size
        .saturating_mul(2)
        .saturating_add(RESIDENT_HEADROOM)
        <= available
}
