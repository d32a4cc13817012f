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
];

/// The JS `DiffusionServerConfig`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StartRequest {
    pub model_id: String,
    /// `'auto'` (default), `'one-shot'` or `'resident'`.
    pub backend: Option<String>,
    pub port: Option<PortRequest>,
    pub host: Option<String>,
    pub threads: Option<u32>,
    /// `sd-cli`, for the one-shot backend.
    pub binary_path: Option<PathBuf>,
    /// `sd-server`, for the resident backend.
    pub server_binary_path: Option<PathBuf>,
    #[serde(default)]
    pub extra_args: Vec<String>,
    pub api_key: Option<String>,
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    pub max_queue: Option<u32>,
    /// Milliseconds without a request before the resident `sd-server` is stopped (0: never).
    pub idle_timeout: Option<u64>,
    /// Milliseconds the resident `sd-server` may take to load the model.
    pub startup_timeout: Option<u64>,
    /// Milliseconds an image may go without output from the backend (0: never).
    pub stall_timeout: Option<u64>,
    pub max_body_bytes: Option<u32>,
    /// Start even when the model cannot fit in this machine's memory.
    #[serde(default)]
    pub force: bool,
    /// The seed's: 0 keeps everything on the CPU (see [`Placement`]).
    pub gpu_layers: Option<u32>,
    /// The seed's, in MB: what the backend may use of VRAM (see [`Placement`]).
    pub vram_budget: Option<f64>,
}

pub async fn resolve(
    req: StartRequest,
    data: &DataPaths,
    system: &SystemInfo,
    binaries: &BinaryManager,
) -> Result<DiffusionConfig, StartError<DiffusionError>> {
    let invalid = |m: String| StartError::Server(DiffusionError::Invalid(m));
    let port = PortRequest::choose(req.port.as_ref(), DEFAULT_PORT).map_err(invalid)?;
    let asked = match req.backend.as_deref() {
        None | Some("auto") => None,
        Some("one-shot") => Some(BackendKind::OneShot),
        Some("resident") => Some(BackendKind::Resident),
        Some(other) => {
            return Err(invalid(format!(
                "backend must be 'auto', 'one-shot' or 'resident', got {other:?}"
            )));
        }
    };
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

    let idle = req.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT_MS);
    let stall = req.stall_timeout.unwrap_or(DEFAULT_STALL_TIMEOUT_MS);
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
            placement: placement.args,
            extra_args: req.extra_args,
            env: placement.env,
            temp_dir: data.temp.clone(),
            startup_timeout: Duration::from_millis(
                req.startup_timeout.unwrap_or(DEFAULT_STARTUP_TIMEOUT_MS),
            ),
            idle_timeout: (idle > 0).then(|| Duration::from_millis(idle)),
        },
        api_key: req.api_key.filter(|k| !k.is_empty()),
        allowed_origins: req.allowed_origins,
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
