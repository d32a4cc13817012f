//! From what a caller asks (`{ modelId, port, threads, … }`) to a complete [`LlamaConfig`]:
//! the model's file from the model store, the executable from the binary manager, and unset
//! values from the machine's optimal configuration for that model.

use std::path::PathBuf;

use serde::Deserialize;

use super::tasks;
use super::tuning::{FitMode, ReasoningFormat, Tuning};
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

/// llama-server's CORS flags: behind the gateway, which answers CORS itself, they would do
/// nothing (with `gateway: false` llama-server applies them).
const CORS_FLAGS: &[&str] = &[
    "--cors-origins",
    "--cors-methods",
    "--cors-headers",
    "--cors-credentials",
    "--no-cors-credentials",
];
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

/// What {@link LlamaServerManager.start} runs. Unset values come from {@link SystemInfo.getOptimalConfig} for the model.
#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[ts(rename = "LlamaServerConfig", optional_fields)]
pub struct StartRequest {
    /// An installed `llm` model ({@link ModelManager.listModels}).
    pub model_id: String,
    /// A port, or `'auto'` for a free one (default 8080). A taken port is a {@link PortInUseError}.
    #[ts(optional, type = "number | 'auto'")]
    pub port: Option<PortRequest>,
    /// Address to bind (default `127.0.0.1`), or several, comma-separated (`127.0.0.1,::1`), as
    /// llama-server's `--host` takes them: the port is served on each.
    pub host: Option<String>,
    pub threads: Option<u32>,
    pub context_size: Option<u32>,
    /// Layers offloaded to the GPU (`--n-gpu-layers`).
    pub gpu_layers: Option<u32>,
    /// Parallel slots (`--parallel`, default 1).
    pub parallel_requests: Option<u32>,
    #[ts(optional, type = "boolean | 'on' | 'off' | 'auto'")]
    pub flash_attention: Option<FlashAttention>,
    /// KV-cache element types (`--cache-type-k/-v`); the memory estimate uses them too.
    pub cache_type_k: Option<KvCacheType>,
    pub cache_type_v: Option<KvCacheType>,
    /// genai-electron 0.26's `modelAlias`: the model's name in `/v1/models` and in answers
    /// (`--alias`). Default: the model's id (llama-server alone names it by its file's path).
    pub model_alias: Option<String>,
    /// Jinja chat templates (`--jinja`; `false`: `--no-jinja`). Unset: llama-server's default.
    pub jinja: Option<bool>,
    /// How a model's reasoning is returned (`--reasoning-format`).
    pub reasoning_format: Option<ReasoningFormat>,
    /// Logical batch size (`--batch-size`).
    pub batch_size: Option<u32>,
    /// `false`: `--no-cont-batching`.
    pub continuous_batching: Option<bool>,
    /// `false`: read the model without mapping it. The pinned llama-server takes this, with
    /// `useMlock`, as `--load-mode` (`none`, `mmap`, `mlock` or `mmap+mlock`).
    pub use_mmap: Option<bool>,
    /// Keep the model in RAM, never swapped (`--load-mode mlock` or `mmap+mlock`).
    pub use_mlock: Option<bool>,
    /// Full-size sliding-window-attention cache (`--swa-full`).
    pub swa_full: Option<bool>,
    /// MiB of prompt cache kept in RAM (`--cache-ram`; -1: no limit, 0: none).
    pub cache_ram: Option<i64>,
    /// Keep every mixture-of-experts weight on the CPU (`--cpu-moe`).
    pub cpu_moe: Option<bool>,
    /// Keep the expert weights of the first N layers on the CPU (`--n-cpu-moe`).
    pub n_cpu_moe: Option<u32>,
    /// Where tensors go, as `<name pattern>=<buffer type>,…` (`--override-tensor`).
    pub override_tensors: Option<String>,
    /// llama.cpp's own fitting of unset arguments to free memory (`--fit`; default `off`: the
    /// library sizes the context and GPU layers itself).
    pub fit: Option<FitMode>,
    /// Without `contextSize`: the smallest context the chosen one may be (default 2048).
    pub minimum_context_size: Option<u32>,
    /// Without `contextSize`: the context to start from, halving while it does not fit (default
    /// 8192, or the model's own if smaller).
    pub preferred_context_size: Option<u32>,
    /// Without `contextSize`: the largest context it may be.
    pub maximum_context_size: Option<u32>,
    /// Require `Authorization: Bearer <apiKey>` (or `X-Api-Key`) on every request.
    pub api_key: Option<String>,
    /// More llama-server arguments. The flags the library sets from this config are refused with a
    /// `ValidationError`, in every spelling: `-m`/`--model`, `--host`, `--port`, `-t`/`--threads`,
    /// `-c`/`--ctx-size`, `-ngl`/`--gpu-layers`/`--n-gpu-layers`, `-np`/`--parallel`,
    /// `-fa`/`--flash-attn`, `-ctk`/`--cache-type-k`, `-ctv`/`--cache-type-v`, `--api-key`,
    /// `--api-key-file`, `--rpc` (see `rpcWorkers`); so are other model sources (`-mu`/`--model-url`, `-hf`/`-hfr`/`--hf-repo`,
    /// `-dr`/`--docker-repo`) and TLS (`--ssl-key-file`, `--ssl-cert-file`), which the gateway cannot speak;
    /// behind the gateway, which answers CORS itself, so are llama-server's `--cors-*` flags.
    #[serde(default)]
    #[ts(as = "Option<Vec<String>>", optional)]
    pub extra_args: Vec<String>,
    /// This executable instead of the managed one (see {@link BinaryManager.ensureBinary}).
    pub binary_path: Option<PathBuf>,
    /// Milliseconds to wait for `/health` to answer 200 (default 60000).
    pub startup_timeout: Option<u64>,
    /// Restart after a crash or a hang, with backoff from 500 ms doubling to 10 s (default false).
    pub auto_restart: Option<bool>,
    /// Restart attempts after one crash (default 3).
    pub max_restarts: Option<u32>,
    /// Milliseconds between watchdog health checks; three failures in a row while the process lives count as a hang (default 5000, 0 turns it off).
    pub health_check_interval: Option<u64>,
    /// Serve `port` through the library's gateway (default true): requests wait while the server
    /// starts or restarts, `apiKey` and `allowedOrigins` are checked there, and llama-server's
    /// `Access-Control-Allow-Origin: *` is not passed on. `false`: llama-server listens on `port` itself.
    pub gateway: Option<bool>,
    /// Browser origins the gateway answers with CORS headers besides the pages of this machine
    /// (`http://localhost:…`, `127.x.x.x`, `[::1]`); any other origin gets 403 (needs the gateway).
    #[serde(default)]
    #[ts(as = "Option<Vec<String>>", optional)]
    pub allowed_origins: Vec<String>,
    /// Names besides loopback's (`localhost`, `127.0.0.1`, `[::1]`) by which clients may call the
    /// gateway, as `Host` carries them (`my-app.test`, any port). Other names get 403
    /// `INVALID_HOST`: that is what keeps a web page that points its own domain at 127.0.0.1 (DNS
    /// rebinding) away from the port. A server bound to a non-loopback `host` also answers IP
    /// addresses. Needs the gateway.
    #[serde(default)]
    #[ts(as = "Option<Vec<String>>", optional)]
    pub allowed_hosts: Vec<String>,
    /// Requests that may wait at the gateway while the server is not running yet (default 64; beyond: 503 QUEUE_FULL).
    pub max_queued_requests: Option<u32>,
    /// Milliseconds a request may wait at the gateway (default 300000; then 503 QUEUE_TIMEOUT).
    pub queue_timeout: Option<u64>,
    /// Start even when the estimate (the same as {@link SystemInfo.canRunModel}'s, with the context,
    /// GPU layers and KV-cache types it will run with) says the model does not fit in the memory
    /// free now; without it such a start fails with {@link InsufficientResourcesError} before
    /// anything is spawned or downloaded.
    #[serde(default)]
    #[ts(as = "Option<bool>", optional)]
    pub force: bool,
    /// `host:port` of rpc-servers (llama.cpp's RPC workers, see {@link RpcServerManager}) to spread
    /// the model's layers over, this machine keeping a share (`--rpc`). Before the start each is asked
    /// what it lends; one that does not answer is a {@link ServerError} naming it (`details.worker`):
    /// `RPC_WORKER_UNREACHABLE`, or `RPC_WORKER_BUSY` when another llama-server holds it (rpc-server
    /// serves one at a time), and nothing is started. Unless `gpuLayers` is given, every layer goes to
    /// a device, spread over the workers by the memory each reports. The memory check (see `force`)
    /// and the default context then weigh this machine's share and each worker's, as
    /// {@link SystemInfo.canRunModel} with `rpcWorkers` does. A worker lost while the model runs
    /// crashes llama-server at its next computation; with `autoRestart` it comes back once the worker
    /// does (within `maxRestarts` attempts).
    #[serde(default)]
    #[ts(as = "Option<Vec<String>>", optional)]
    pub rpc_workers: Vec<String>,
    /// What the server serves (default `chat`): `embedding` answers `/v1/embeddings`, `rerank`
    /// answers `/v1/rerank`; each on a port and gateway of its own, so an app runs one of each
    /// beside its chat server (one {@link LlamaServerManager} each). A model is refused a mode
    /// it cannot serve (see {@link ModelInfo.capabilities}): a reranker needs a classification
    /// head; any model can embed.
    pub mode: Option<tasks::Mode>,
    /// How an embedding server pools (`--pooling`); default: the model's own, else `mean`.
    pub pooling: Option<tasks::Pooling>,
    /// The model's `mmproj` projector (images, audio in chats): loaded by default where the model
    /// has one, with its layers (`auto`); `cpu` keeps it off the GPU, `off` leaves it unloaded. The
    /// memory check counts it.
    pub projector: Option<tasks::ProjectorRequest>,
    /// Speculative decoding: on by default where the model has a `draft` component; `false` turns
    /// it off; `{ modelId }` drafts with another installed model of the same vocabulary. The
    /// memory check counts both models.
    #[ts(optional, type = "boolean | DraftConfig")]
    pub draft: Option<tasks::DraftRequest>,
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

    if req.gateway != Some(false)
        && let Some(flag) = req.extra_args.iter().find(|a| {
            let flag = a.split_once('=').map_or(a.as_str(), |(flag, _)| flag);
            CORS_FLAGS.contains(&flag)
        })
    {
        return Err(invalid(format!(
            "extraArgs must not set {flag}: the gateway answers CORS for llama-server (origins of \
             this machine by default); list other origins in allowedOrigins"
        )));
    }
    if req.gateway == Some(false) && !req.allowed_origins.is_empty() {
        return Err(invalid(
            "allowedOrigins needs the gateway: llama-server itself answers every origin".into(),
        ));
    }
    if req.gateway == Some(false) && !req.allowed_hosts.is_empty() {
        return Err(invalid(
            "allowedHosts needs the gateway: llama-server itself answers every Host".into(),
        ));
    }
    if let Some(host) = &req.host
        && crate::http::addresses(host).any(str::is_empty)
    {
        return Err(invalid(format!(
            "host '{host}' names an empty address: give one address, or several separated by commas"
        )));
    }
    let info = installed_model(
        data,
        &req.model_id,
        ModelType::Llm,
        "llama-server",
        LlamaError::Invalid,
    )
    .await?;
    let mode = req.mode.unwrap_or_default();
    let pooling = tasks::pooling(&info, mode, req.pooling).map_err(invalid)?;
    let projector = tasks::projector(&info, mode, req.projector).map_err(invalid)?;
    let draft_model = match &req.draft {
        Some(tasks::DraftRequest::With(tasks::DraftOptions {
            model_id: Some(id), ..
        })) => {
            Some(installed_model(data, id, ModelType::Llm, "a draft", LlamaError::Invalid).await?)
        }
        _ => None,
    };
    let draft =
        tasks::draft(&info, mode, req.draft.as_ref(), draft_model.as_ref()).map_err(invalid)?;
    let caps = system.detect(false).await;
    let spec = ModelSpec::of(&info).map_err(invalid)?;
    let split = !req.rpc_workers.is_empty();
    let hints = RunOptions {
        context_size: req.context_size,
        minimum_context_size: req.minimum_context_size,
        preferred_context_size: req.preferred_context_size,
        maximum_context_size: req.maximum_context_size,
        gpu_layers: req.gpu_layers,
        // A smaller KV cache leaves room for more layers on the GPU.
        cache_type_k: req.cache_type_k,
        cache_type_v: req.cache_type_v,
        swa_full: req.swa_full,
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
                ..hints.clone()
            };
            let check = split::can_run_split(model, &settings, &memory, &caps.gpu, workers);
            (optimal, Some(check))
        }
        (None, true) => {
            // Unsized: every layer goes to a device unless the caller keeps some here.
            let gpu_layers = req.gpu_layers.unwrap_or(ALL_LAYERS);
            let hints = RunOptions {
                gpu_layers: Some(gpu_layers),
                ..hints.clone()
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
                ..hints.clone()
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
    let refuse = |check: estimate::CanRun| {
        let estimate = check.estimate;
        StartError::Resources(Insufficient {
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
        })
    };
    let opts = EnsureOptions {
        path: req.binary_path.clone(),
        ..Default::default()
    };
    // The arithmetic's verdict stands where llama.cpp cannot be asked without a download or a
    // build: a model that cannot run is refused before that.
    let arithmetic_refuses = check.as_ref().is_some_and(|c| !req.force && !c.possible);
    let hopeless = check
        .as_ref()
        .is_some_and(|c| super::sizing::beyond_machine(&c.estimate, &memory, &caps.gpu));
    if arithmetic_refuses
        && (hopeless
            || binaries
                .locate(BinaryKind::LlamaServer, &opts, data)
                .await
                .is_none())
    {
        return Err(refuse(check.expect("refused by the arithmetic")));
    }
    let binary = binaries
        .ensure(BinaryKind::LlamaServer, &opts, data, &caps.gpu)
        .await?;

    let defaults = RecoveryPolicy::default();
    let force = req.force;
    let mut config = LlamaConfig {
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
        cache_type_k: req.cache_type_k,
        cache_type_v: req.cache_type_v,
        api_key: req.api_key,
        extra_args: req.extra_args,
        startup_timeout_ms: req.startup_timeout.unwrap_or(DEFAULT_STARTUP_TIMEOUT_MS),
        log_file: Some(data.logs.join(mode.log_file_name())),
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
        allowed_hosts: req.allowed_hosts,
        max_queued_requests: req
            .max_queued_requests
            .unwrap_or(DEFAULT_MAX_QUEUED_REQUESTS),
        queue_timeout_ms: req.queue_timeout.unwrap_or(DEFAULT_QUEUE_TIMEOUT_MS),
        rpc_workers: req.rpc_workers,
        shares,
        tuning: Tuning {
            model_alias: req.model_alias,
            jinja: req.jinja,
            reasoning_format: req.reasoning_format,
            batch_size: req.batch_size,
            continuous_batching: req.continuous_batching,
            use_mmap: req.use_mmap,
            use_mlock: req.use_mlock,
            swa_full: req.swa_full,
            cache_ram: req.cache_ram,
            cpu_moe: req.cpu_moe,
            n_cpu_moe: req.n_cpu_moe,
            override_tensors: req.override_tensors,
            fit: req.fit.unwrap_or(FitMode::Off),
        },
        mode,
        pooling,
        projector,
        draft,
    };
    // The context and GPU layers the app left unset are chosen as getOptimalConfig chooses
    // them: by llama.cpp's own figures where it can be asked.
    if !split && (req.context_size.is_none() || req.gpu_layers.is_none()) {
        let chosen = super::sizing::first_fitting(&config, &spec, &hints, data, &memory, &caps.gpu);
        if let Some((chosen, _)) = chosen.await {
            (config.context_size, config.gpu_layers) = (chosen.context_size, chosen.gpu_layers);
        }
    }
    if force {
        return Ok(config);
    }
    // A calibration of this configuration decides, else llama.cpp's own dry run where it can be
    // asked; the arithmetic where neither can.
    let unbounded = RunOptions::default();
    let cache = super::kv_cache_of(&config);
    let compute = estimate::estimate(&spec, config.context_size, config.gpu_layers, cache).compute;
    let sized =
        super::sizing::by_llama_cpp(&config, Some(compute), data, &unbounded, &memory, &caps.gpu)
            .await;
    match (sized, check) {
        (Some(check), _) if !check.possible => Err(refuse(check)),
        (None, Some(check)) => {
            let check =
                super::sizing::with_extras(check, &config, &unbounded, &memory, &caps.gpu).await;
            if check.possible {
                Ok(config)
            } else {
                Err(refuse(check))
            }
        }
        _ => Ok(config),
    }
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
