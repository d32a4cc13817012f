// Generated from the Rust shapes by `npm run typings` (src/typings.rs): do not edit.

/**
 * Where a managed server is in its lifecycle. `restarting`: an automatic restart after a crash
 * (backoff, then the new process loading), or {@link LlamaServerManager.restart}.
 */
export type ServerStatus = "stopped" | "starting" | "running" | "stopping" | "crashed" | "restarting";

/**
 * The seed's `HealthStatus`: `ok` while the server runs and answers (for llama-server, its last
 * watchdog check passed), `error` while checks fail or after a crash, `unknown` when it does not
 * run. {@link LlamaServerManager.isHealthy} and {@link DiffusionServerManager.isHealthy} ask now.
 */
export type HealthStatus = "ok" | "error" | "unknown";

/**
 * What a running server's process tree uses now.
 */
export type MemoryUsage = {
  /**
   * The tree's processes, the leader first.
   */
  pids: Array<number>
  /**
   * Resident memory of the whole tree, bytes.
   */
  rssBytes: number
  /**
   * VRAM its processes hold on NVIDIA GPUs (NVML); `null` where that cannot be told.
   */
  vramBytes: number | null
};

/**
 * llama.cpp's KV cache element types (`--cache-type-k/-v`).
 */
export type KVCacheType = "f32" | "f16" | "bf16" | "q8_0" | "q5_1" | "q5_0" | "q4_1" | "q4_0" | "iq4_nl";

/**
 * What {@link LlamaServerManager.start} runs. Unset values come from {@link SystemInfo.getOptimalConfig} for the model.
 */
export type LlamaServerConfig = {
  /**
   * An installed `llm` model ({@link ModelManager.listModels}).
   */
  modelId: string
  /**
   * A port, or `'auto'` for a free one (default 8080). A taken port is a {@link PortInUseError}.
   */
  port?: number | 'auto'
  /**
   * Address to bind (default `127.0.0.1`).
   */
  host?: string
  threads?: number
  contextSize?: number
  /**
   * Layers offloaded to the GPU (`--n-gpu-layers`).
   */
  gpuLayers?: number
  /**
   * Parallel slots (`--parallel`, default 1).
   */
  parallelRequests?: number
  flashAttention?: boolean | 'on' | 'off' | 'auto'
  /**
   * KV-cache element types (`--cache-type-k/-v`); the memory estimate uses them too.
   */
  cacheTypeK?: KVCacheType
  cacheTypeV?: KVCacheType
  /**
   * Require `Authorization: Bearer <apiKey>` on every request.
   */
  apiKey?: string
  /**
   * More llama-server arguments. The flags the library sets from this config are refused with a
   * `ValidationError`, in every spelling: `-m`/`--model`, `--host`, `--port`, `-t`/`--threads`,
   * `-c`/`--ctx-size`, `-ngl`/`--gpu-layers`/`--n-gpu-layers`, `-np`/`--parallel`,
   * `-fa`/`--flash-attn`, `-ctk`/`--cache-type-k`, `-ctv`/`--cache-type-v`, `--api-key`,
   * `--api-key-file`, `--rpc` (see `rpcWorkers`); so are other model sources (`-mu`/`--model-url`, `-hf`/`-hfr`/`--hf-repo`,
   * `-dr`/`--docker-repo`) and TLS (`--ssl-key-file`, `--ssl-cert-file`), which the gateway cannot speak.
   */
  extraArgs?: Array<string>
  /**
   * This executable instead of the managed one (see {@link BinaryManager.ensureBinary}).
   */
  binaryPath?: string
  /**
   * Milliseconds to wait for `/health` to answer 200 (default 60000).
   */
  startupTimeout?: number
  /**
   * Restart after a crash or a hang, with backoff from 500 ms doubling to 10 s (default false).
   */
  autoRestart?: boolean
  /**
   * Restart attempts after one crash (default 3).
   */
  maxRestarts?: number
  /**
   * Milliseconds between watchdog health checks; three failures in a row while the process lives count as a hang (default 5000, 0 turns it off).
   */
  healthCheckInterval?: number
  /**
   * Serve `port` through the library's gateway (default true): requests wait while the server
   * starts or restarts, `apiKey` and `allowedOrigins` are checked there, and llama-server's
   * `Access-Control-Allow-Origin: *` is not passed on. `false`: llama-server listens on `port` itself.
   */
  gateway?: boolean
  /**
   * Browser origins the gateway answers with CORS headers; any other origin gets 403 (needs the gateway).
   */
  allowedOrigins?: Array<string>
  /**
   * Requests that may wait at the gateway while the server is not running yet (default 64; beyond: 503 QUEUE_FULL).
   */
  maxQueuedRequests?: number
  /**
   * Milliseconds a request may wait at the gateway (default 300000; then 503 QUEUE_TIMEOUT).
   */
  queueTimeout?: number
  /**
   * Start even when the estimate (the same as {@link SystemInfo.canRunModel}'s, with the context,
   * GPU layers and KV-cache types it will run with) says the model does not fit in the memory
   * free now; without it such a start fails with {@link InsufficientResourcesError} before
   * anything is spawned or downloaded.
   */
  force?: boolean
  /**
   * `host:port` of rpc-servers (llama.cpp's RPC workers, see {@link RpcServerManager}) to spread
   * the model's layers over, this machine keeping a share (`--rpc`). Before the start each is asked
   * what it lends; one that does not answer is a {@link ServerError} naming it (`details.worker`):
   * `RPC_WORKER_UNREACHABLE`, or `RPC_WORKER_BUSY` when another llama-server holds it (rpc-server
   * serves one at a time), and nothing is started. Unless `gpuLayers` is given, every layer goes to
   * a device, spread over the workers by the memory each reports. The memory check (see `force`)
   * and the default context then weigh this machine's share and each worker's, as
   * {@link SystemInfo.canRunModel} with `rpcWorkers` does. A worker lost while the model runs
   * crashes llama-server at its next computation; with `autoRestart` it comes back once the worker
   * does (within `maxRestarts` attempts).
   */
  rpcWorkers?: Array<string>
};

/**
 * What `llamaServer.getInfo()` shows: the server's state and the model it serves.
 */
export type ServerInfo = {
  status: ServerStatus
  health: HealthStatus
  pid: number | null
  /**
   * The public port: the gateway's (or llama-server's own with `gateway: false`).
   */
  port: number | null
  /**
   * The port llama-server itself listens on, on 127.0.0.1 behind the gateway.
   */
  backendPort: number | null
  modelId: string | null
  /**
   * ISO 8601, when it became ready.
   */
  startedAt: string | null
  /**
   * Milliseconds from spawn to the first healthy answer.
   */
  loadTimeMs: number | null
  /**
   * Why the last start failed or the server crashed.
   */
  error: string | null
  /**
   * Automatic restarts since the last start.
   */
  restarts: number
  /**
   * Crashed, with an automatic restart to follow.
   */
  restartPending: boolean
  /**
   * The rpc-servers (`host:port`) holding a share of the model; empty when it runs here alone.
   */
  rpcWorkers: Array<string>
};

/**
 * How stable-diffusion.cpp runs: `sd-cli` per image, or `sd-server` with the model kept loaded.
 */
export type DiffusionBackend = "one-shot" | "resident";

/**
 * stable-diffusion.cpp's sampling methods (`--sampling-method`).
 */
export type ImageSampler = "euler" | "euler_a" | "heun" | "dpm2" | "dpm++2s_a" | "dpm++2m" | "dpm++2mv2" | "ipndm" | "ipndm_v" | "lcm" | "ddim_trailing" | "tcd" | "res_multistep" | "res_2s" | "er_sde";

/**
 * One image request. Unknown keys are a {@link ValidationError}.
 */
export type ImageRequest = {
  /**
   * What to draw (required, not empty). At most 8 KiB on Linux, 1 KiB on Windows and 512 bytes
   * on macOS: longer text overflows the stack of stable-diffusion.cpp's prompt parser, so it is
   * refused first.
   */
  prompt: string
  /**
   * What to avoid (the same limit as `prompt`).
   */
  negativePrompt?: string
  /**
   * Pixels, a multiple of 8 from 64 to 4096 (default 512).
   */
  width?: number
  /**
   * Pixels, a multiple of 8 from 64 to 4096 (default 512).
   */
  height?: number
  /**
   * Sampling steps, 1–150 (default 20).
   */
  steps?: number
  /**
   * Guidance scale, 0–30 (default: the backend's, 7; distilled models such as FLUX want 1).
   */
  cfgScale?: number
  /**
   * 0 to 2^53-1; unset or -1 draws a random one, which the result reports.
   */
  seed?: number
  /**
   * Default: the backend's choice for the model it loaded (`euler` for DiT models such as FLUX
   * and SD3, else `euler_a`).
   */
  sampler?: ImageSampler
  /**
   * Images to make, 1–8 (default 1); their seeds count up from `seed`.
   */
  count?: number
};

/**
 * What `diffusionServer.getInfo()` shows.
 */
export type DiffusionServerInfo = {
  /**
   * The server's status: `crashed` while its resident `sd-server` is (the HTTP port still
   * answers, and the next image starts `sd-server` again, back to `running`).
   */
  status: 'stopped' | 'starting' | 'running' | 'stopping' | 'crashed'
  health: HealthStatus
  port: number | null
  host: string | null
  modelId: string | null
  backend: DiffusionBackend | null
  /**
   * The resident `sd-server`'s process id while it runs (it starts with the first image).
   */
  pid: number | null
  /**
   * The resident `sd-server`'s own status (`crashed` after it died; the next image starts it); `null` for one-shot.
   */
  backendStatus: ServerStatus | null
  /**
   * The port the resident `sd-server` listens on (127.0.0.1), while it runs.
   */
  backendPort: number | null
  /**
   * ISO 8601.
   */
  startedAt: string | null
  /**
   * An image is being made.
   */
  busy: boolean
  /**
   * Requests waiting.
   */
  queued: number
  /**
   * Why the last start failed.
   */
  error: string | null
};

/**
 * The JS `RpcServerConfig`.
 * What {@link RpcServerManager.start} runs.
 */
export type RpcServerConfig = {
  /**
   * The address to bind (default `127.0.0.1`). rpc-server has no authentication: whoever reaches
   * its port can place tensors in this machine's memory and run ggml graphs on it, so a host other
   * than loopback needs `allowNetwork: true`.
   */
  host?: string
  /**
   * Default 50052; `'auto'` for a free one.
   */
  port?: number | 'auto'
  /**
   * Threads of its CPU device (default: rpc-server's own choice).
   */
  threads?: number
  /**
   * ggml devices to lend, e.g. `['CUDA0']` (default: all of them).
   */
  devices?: Array<string>
  /**
   * Keep received tensors in a local file cache, so a client that comes back loads faster.
   */
  cache?: boolean
  /**
   * Bind a host other than loopback (see `host`).
   */
  allowNetwork?: boolean
  /**
   * This executable instead of the managed one (see {@link BinaryManager.ensureBinary} `'rpc-server'`).
   */
  binaryPath?: string
  /**
   * Milliseconds to wait for its port to accept connections (default 30000).
   */
  startupTimeout?: number
  /**
   * Not offered: rpc-server (llama.cpp) has no memory limit and lends all of each device it
   * serves. Passing it is a {@link ValidationError} that says so; choose `devices` instead.
   */
  memory?: never
};

/**
 * What `rpcServer.getInfo()` shows.
 */
export type RpcServerInfo = {
  status: ServerStatus
  pid: number | null
  host: string | null
  port: number | null
  /**
   * `host:port` while it runs: what a llama-server's `rpcWorkers` takes.
   */
  endpoint: string | null
  startedAt: string | null
  error: string | null
};

/**
 * Everything a start needs, resolved: what `getConfig()` shows.
 */
export type ResolvedRpcConfig = {
  binary: string
  host: string
  /**
   * `null`: a free port, chosen at start (once running, the one it got).
   */
  port: number | null
  threads: number | null
  devices: Array<string>
  cache: boolean
  startupTimeoutMs: number
};

/**
 * The options of a `ResourceOrchestrator` (its last constructor argument).
 */
export type OrchestratorOptions = {
  /**
   * Bytes the two servers together may use in RAM (default: what is free plus what they hold).
   */
  ramBudgetBytes?: number
  /**
   * The same for VRAM.
   */
  vramBudgetBytes?: number
  /**
   * Bytes kept free beside the two (default 512 MiB).
   */
  headroom?: number
  /**
   * Milliseconds to wait for an offloaded LLM's memory to be reported free (default 10000).
   */
  memoryReleaseTimeout?: number
  /**
   * Milliseconds the chat requests in flight get to finish before an offload stops the LLM (default 30000).
   */
  drainTimeout?: number
  /**
   * Milliseconds a chat request may wait while the LLM is offloaded before a 503 `QUEUE_TIMEOUT`;
   * default: the llamaServer's own `queueTimeout` (300000).
   */
  queueTimeout?: number
  /**
   * Chat requests that may wait at the LLM's gateway while it is offloaded (0: refuse them at
   * once with 503 `QUEUE_FULL`); default: the llamaServer's own `maxQueuedRequests`.
   */
  maxQueuedRequests?: number
  /**
   * What happens to images queued behind an offload. `'collate'` (default): they run back to
   * back while the LLM is out, and it returns once none waits (or a chat request has waited
   * `maxChatWait`), so a burst costs one offload and one reload. `'fifo'`: the LLM returns after
   * every image, and the next image offloads it again.
   */
  policy?: 'collate' | 'fifo'
  /**
   * Milliseconds a chat request waits for queued images before the LLM comes back between them
   * (default 30000): chat waits at most this plus the image being made and the reload.
   */
  maxChatWait?: number
  /**
   * Milliseconds: when set, the LLM stays offloaded after the images (its memory free for the
   * next one) until a chat request comes to its gateway or the orchestrator has been idle this
   * long, then it is reloaded (a warm start). Unset (default): it is reloaded as soon as no
   * image waits.
   */
  reloadAfterIdle?: number
};

/**
 * What the orchestrator is doing. `offloaded`: the LLM stays out between images of a burst, or
 * (with `reloadAfterIdle`) until a chat or the idle time.
 */
export type OrchestratorPhase = "idle" | "draining" | "offloading" | "generating" | "offloaded" | "reloading";

/**
 * The requests waiting at a gateway now: how many, and the longest wait so far.
 */
export type QueueInfo = {
  length: number
  /**
   * Milliseconds.
   */
  longestWaitMs: number
};

/**
 * What `getInfo()` shows.
 */
export type OrchestratorInfo = {
  phase: OrchestratorPhase
  /**
   * The chat requests waiting at the LLM's gateway.
   */
  queue: QueueInfo
  /**
   * The images waiting for their turn (not the one being made).
   */
  imagesWaiting: number
};

/**
 * Bytes of RAM and of VRAM.
 */
export type ResourceBytes = {
  ram: number
  vram: number
};

/**
 * Where a {@link ResourceUsage} comes from: `measured`, a running process (never counted as
 * less than what it uses); `estimated`, by arithmetic; `none`, nothing runs and nothing is asked.
 */
export type UsageSource = "measured" | "estimated" | "none";

/**
 * What one side uses or will use, in bytes.
 */
export type ResourceUsage = {
  /**
   * What counts: the larger of `estimated` and `measured`.
   */
  ram: number
  vram: number
  source: UsageSource
  /**
   * By arithmetic (GGUF for the LLM; files and working set for an image).
   */
  estimated: ResourceBytes
  /**
   * What the running process tree uses now; `null` when none runs.
   */
  measured: ResourceBytes | null
};

/**
 * What runs out first: VRAM when either side uses the GPU, else RAM.
 */
export type Bottleneck = "ram" | "vram";

/**
 * What the LLM and an image need, what is free, and whether the LLM must make room.
 */
export type ResourceEstimate = {
  llm: ResourceUsage
  diffusion: ResourceUsage
  /**
   * Free now, as the system reports it.
   */
  available: ResourceBytes
  /**
   * What the two servers together may use: the budget, or what is free plus what they hold.
   */
  budget: ResourceBytes
  bottleneck: Bottleneck
  /**
   * The LLM runs, and the two plus the headroom exceed the budget.
   */
  needsOffload: boolean
};
