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
