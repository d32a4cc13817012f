//! From what a caller asks (`{ modelId, port, threads, … }`) to a complete [`LlamaConfig`]:
//! the model's file from the model store, the executable from the binary manager, and unset
//! values from the machine's optimal configuration for that model.

use std::path::PathBuf;

use serde::Deserialize;

use super::{LlamaConfig, LlamaError, RecoveryPolicy};
use crate::binaries::{BinaryKind, BinaryManager, EnsureOptions};
use crate::config::DataPaths;
use crate::launch::{
    Bytes, Insufficient, PortRequest, StartError, installed_model, refuse_reserved_flags,
};
use crate::models::ModelType;
use crate::system::estimate::KvCacheType;
use crate::system::rpc_probe::{ProbeError, RpcWorkerError, check_rpc_worker};
use crate::system::{ModelSpec, RunOptions, SystemError, SystemInfo, estimate, split};

pub const DEFAULT_PORT: u16 = 8080;
const DEFAULT_STARTUP_TIMEOUT_MS: u64 = 60_000;
const DEFAULT_MAX_QUEUED_REQUESTS: u32 = 64;
const DEFAULT_QUEUE_TIMEOUT_MS: u64 = 5 * 60 * 1000;

/// llama-server's flags that the library sets (every spelling in the pinned build's
/// `common/arg.cpp`), and those that would load another model or put TLS or a second key
/// between the gateway and the server.
pub const RESERVED_FLAGS: &[&str] = &[
    "-m",
    "--model",
    "--host",
    "--port",
    "-t",
    "--threads",
    "-c",
    "--ctx-size",
    "-ngl",
    "--gpu-layers",
    "--n-gpu-layers",
    "-np",
    "--parallel",
    "-fa",
    "--flash-attn",
    "-ctk",
    "--cache-type-k",
    "-ctv",
    "--cache-type-v",
    "--api-key",
    "--api-key-file",
    "--rpc",
    "-mu",
    "--model-url",
    "-hf",
    "-hfr",
    "--hf-repo",
    "-dr",
    "--docker-repo",
    "--ssl-key-file",
    "--ssl-cert-file",
];

/// `flashAttention: true | false | 'on' | 'off' | 'auto'`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum FlashAttention {
    Bool(bool),
    Mode(String),
}

/// The JS `LlamaServerConfig`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StartRequest {
    pub model_id: String,
    pub port: Option<PortRequest>,
    pub host: Option<String>,
    pub threads: Option<u32>,
    pub context_size: Option<u32>,
    pub gpu_layers: Option<u32>,
    pub parallel_requests: Option<u32>,
    pub flash_attention: Option<FlashAttention>,
    pub cache_type_k: Option<KvCacheType>,
    pub cache_type_v: Option<KvCacheType>,
    pub api_key: Option<String>,
    #[serde(default)]
    pub extra_args: Vec<String>,
    pub binary_path: Option<PathBuf>,
    /// Milliseconds.
    pub startup_timeout: Option<u64>,
    pub auto_restart: Option<bool>,
    pub max_restarts: Option<u32>,
    /// Milliseconds between watchdog health checks (0: no watchdog).
    pub health_check_interval: Option<u64>,
    /// Serve the public port through our gateway (default true).
    pub gateway: Option<bool>,
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    pub max_queued_requests: Option<u32>,
    /// Milliseconds a request may wait at the gateway for the server.
    pub queue_timeout: Option<u64>,
    /// Start even when the estimate says the model does not fit in the memory free now.
    #[serde(default)]
    pub force: bool,
    /// `host:port` of rpc-servers to spread the model's layers over (`--rpc`).
    #[serde(default)]
    pub rpc_workers: Vec<String>,
}

/// `--n-gpu-layers` for "all of them" (llama.cpp caps it at the model's count).
const ALL_LAYERS: u32 = 999;

pub async fn resolve(
    req: StartRequest,
    data: &DataPaths,
    system: &SystemInfo,
    binaries: &BinaryManager,
) -> Result<LlamaConfig, StartError<LlamaError>> {
    let invalid = |m: String| StartError::Server(LlamaError::Invalid(m));
    let port = PortRequest::choose(req.port.as_ref(), DEFAULT_PORT).map_err(invalid)?;
    let flash_attention = match req.flash_attention {
        None => None,
        Some(FlashAttention::Bool(b)) => Some(if b { "on" } else { "off" }.to_string()),
        Some(FlashAttention::Mode(m)) if ["on", "off", "auto"].contains(&m.as_str()) => Some(m),
        Some(FlashAttention::Mode(m)) => {
            return Err(invalid(format!(
                "flashAttention must be on, off or auto, got {m:?}"
            )));
        }
    };
    refuse_reserved_flags(&req.extra_args, RESERVED_FLAGS).map_err(invalid)?;
    for worker in &req.rpc_workers {
        check_rpc_worker(worker).map_err(invalid)?;
    }

    if req.gateway == Some(false) && !req.allowed_origins.is_empty() {
        return Err(invalid(
            "allowedOrigins needs the gateway: llama-server itself answers every origin".into(),
        ));
    }
    let info = installed_model(
        data,
        &req.model_id,
        ModelType::Llm,
        "llama-server",
        LlamaError::Invalid,
    )
    .await?;
    let caps = system.detect(false).await;
    let spec: ModelSpec =
        serde_json::from_value(serde_json::to_value(&info).expect("model info serializes"))
            .map_err(|e| invalid(format!("model {:?} has unusable metadata: {e}", info.id)))?;
    let split = !req.rpc_workers.is_empty();
    let hints = RunOptions {
        context_size: req.context_size,
        gpu_layers: req.gpu_layers,
        // A smaller KV cache leaves room for more layers on the GPU.
        cache_type_k: req.cache_type_k,
        cache_type_v: req.cache_type_v,
        ..Default::default()
    };
    // Split over RPC workers, each is asked what it lends before llama-server holds it; one
    // whose protocol is unknown here leaves the split unsized (llama-server says if it cannot
    // speak to it either).
    spec.validate().map_err(invalid)?;
    let facts = if split {
        match system.split_facts(&spec, &req.rpc_workers).await {
            Ok(facts) => Some(facts),
            Err(SystemError::RpcWorker(RpcWorkerError {
                worker,
                problem: ProbeError::Protocol(why),
            })) => {
                tracing::warn!(%worker, %why, "the split cannot be sized: the worker's memory is unknown");
                None
            }
            Err(SystemError::RpcWorker(e)) => return Err(StartError::Server(e.into())),
            Err(e) => return Err(invalid(e.to_string())),
        }
    } else {
        None
    };
    let memory = system.memory();
    let threads = caps.recommendations.threads;
    let (optimal, check) = match (&facts, split) {
        (Some((model, workers)), _) => {
            let optimal =
                split::optimal_split_config(model, &hints, &memory, &caps.gpu, threads, workers);
            let settings = RunOptions {
                context_size: Some(optimal.context_size),
                gpu_layers: Some(optimal.gpu_layers),
                ..hints
            };
            let check = split::can_run_split(model, &settings, &memory, &caps.gpu, workers);
            (optimal, Some(check))
        }
        (None, true) => {
            // Unsized: every layer goes to a device unless the caller keeps some here.
            let gpu_layers = req.gpu_layers.unwrap_or(ALL_LAYERS);
            let hints = RunOptions {
                gpu_layers: Some(gpu_layers),
                ..hints
            };
            let optimal = estimate::optimal_config(&spec, &hints, &memory, &caps.gpu, threads);
            (
                estimate::OptimalConfig {
                    gpu_layers,
                    ..optimal
                },
                None,
            )
        }
        (None, false) => {
            let optimal = estimate::optimal_config(&spec, &hints, &memory, &caps.gpu, threads);
            // The settings it will run with, against the memory free now (it loads at once).
            let settings = RunOptions {
                context_size: Some(optimal.context_size),
                gpu_layers: Some(optimal.gpu_layers),
                ..hints
            };
            let check = estimate::can_run(&spec, &settings, &memory, &caps.gpu);
            (optimal, Some(check))
        }
    };
    let shares = match (&facts, &check) {
        (Some(_), Some(check)) => Some(split::Shares {
            local: optimal.estimate,
            workers: check.workers.clone(),
        }),
        _ => None,
    };
    if let Some(check) = check.filter(|c| !req.force && !c.possible) {
        let estimate = check.estimate;
        return Err(StartError::Resources(Insufficient {
            model: info.id.clone(),
            reason: check.reason.unwrap_or_default(),
            suggestion: check.suggestion.unwrap_or_default(),
            required: Bytes {
                ram: estimate.ram,
                vram: Some(estimate.vram),
            },
            available: Bytes {
                ram: memory.available,
                vram: caps.gpu.vram_free,
            },
        }));
    }

    // Last: it may download or build; a model that cannot run is refused before that.
    let opts = EnsureOptions {
        path: req.binary_path.clone(),
        ..Default::default()
    };
    let binary = binaries
        .ensure(BinaryKind::LlamaServer, &opts, data, &caps.gpu)
        .await?;

    let defaults = RecoveryPolicy::default();
    Ok(LlamaConfig {
        model_id: info.id.clone(),
        model_path: info.path.clone(),
        binary: binary.path,
        port,
        host: req.host.unwrap_or_else(|| "127.0.0.1".into()),
        threads: req.threads.unwrap_or(optimal.threads),
        context_size: optimal.context_size,
        gpu_layers: optimal.gpu_layers,
        parallel_requests: req.parallel_requests.unwrap_or(optimal.parallel_requests),
        flash_attention,
        cache_type_k: req.cache_type_k.map(|t| t.as_str().to_string()),
        cache_type_v: req.cache_type_v.map(|t| t.as_str().to_string()),
        api_key: req.api_key,
        extra_args: req.extra_args,
        startup_timeout_ms: req.startup_timeout.unwrap_or(DEFAULT_STARTUP_TIMEOUT_MS),
        log_file: Some(data.logs.join("llama-server.log")),
        recovery: RecoveryPolicy {
            auto_restart: req.auto_restart.unwrap_or(defaults.auto_restart),
            max_restarts: req.max_restarts.unwrap_or(defaults.max_restarts),
            health_check_interval_ms: req
                .health_check_interval
                .unwrap_or(defaults.health_check_interval_ms),
            hang_after_failures: defaults.hang_after_failures,
        },
        gateway: req.gateway.unwrap_or(true),
        allowed_origins: req.allowed_origins,
        max_queued_requests: req
            .max_queued_requests
            .unwrap_or(DEFAULT_MAX_QUEUED_REQUESTS),
        queue_timeout_ms: req.queue_timeout.unwrap_or(DEFAULT_QUEUE_TIMEOUT_MS),
        rpc_workers: req.rpc_workers,
        shares,
    })
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn rpc_workers_are_host_and_port() {
        for good in ["127.0.0.1:50052", "worker.local:1", "[::1]:50052"] {
            assert!(check_rpc_worker(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "host",
            "host:",
            ":50052",
            "host:0",
            "host:70000",
            "a,b:1",
            "a b:1",
        ] {
            let err = check_rpc_worker(bad).unwrap_err();
            assert!(err.contains("'host:port'"), "{bad}: {err}");
        }
        let mut config = crate::llama::tests::config("llama-server".into(), "m.gguf".into());
        config.rpc_workers = vec!["10.0.0.2:50052".into(), "10.0.0.3:50052".into()];
        let args = crate::llama::args(&config, "127.0.0.1", 8080);
        let at = args.iter().position(|a| a == "--rpc").unwrap();
        assert_eq!(args[at + 1], "10.0.0.2:50052,10.0.0.3:50052");
    }
}
