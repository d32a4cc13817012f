// Public typings of genai-electron. Hand-written over the generated `binding.d.ts`; the shapes
// declared in Rust come generated from them in `shapes.d.ts` (`npm run typings`).

import { EventEmitter } from 'node:events'
import type {
  Adoption,
  BinaryKind,
  BinaryProgress,
  CanRunModelOptions,
  CanRunModelResult,
  ComponentDownload,
  ComponentRole,
  DataPaths,
  DiffusionCalibrationProgress,
  DiffusionCalibrationReport,
  DiffusionCalibrationRequest,
  DiffusionServerConfig,
  DiffusionServerInfo,
  DownloadRequest,
  EnsureBinaryOptions,
  ErrorCode,
  ExitInfo,
  GGUFMetadata,
  GPUInfo,
  ImageGenerationStage,
  ImageJobEvent,
  ImageRequest,
  ImportModelRequest,
  LlamaCalibrationProgress,
  LlamaCalibrationReport,
  LlamaCalibrationRequest,
  LlamaServerConfig,
  MemoryInfo,
  MemoryUsage,
  MetadataFetchStrategy,
  ModelInfo,
  ModelManagerEvent,
  ModelSizingInfo,
  ModelType,
  ModelVerification,
  OptimalLlamaConfig,
  OrchestratorEvent,
  OrchestratorInfo,
  OrchestratorOptions,
  QueueEvent,
  ReadGGUFOptions,
  ResolvedBinary,
  ResolvedDiffusionConfig,
  ResolvedLlamaConfig,
  ResolvedRpcConfig,
  ResourceEstimate,
  RpcServerConfig,
  RpcServerInfo,
  ServerEvent,
  ServerInfo,
  SourceBuildSpec,
  StateChange,
  StorageUsage,
  SystemCapabilities,
  SystemInfoEvent,
} from './shapes'

// Every generated shape is public.
export * from './shapes'

/** The component roles of a diffusion model (genai-electron 0.26's name). */
export type DiffusionComponentRole = Exclude<ComponentRole, 'mmproj' | 'draft'>
/** genai-electron 0.26's name for {@link ComponentDownload}. */
export type DiffusionComponentDownload = ComponentDownload

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/** Options of {@link configure}. */
export interface ConfigureOptions {
  /**
   * Folder for models, binaries, logs and temporary files. A relative path is resolved against
   * the current working directory at the time of the call. Takes precedence over the
   * `GENAI_ELECTRON_DATA_DIR` environment variable, Electron's `userData` folder and the OS
   * data folder, in that order.
   */
  dataDir?: string
}

/**
 * Sets process-wide options. Call it before any other method that touches files.
 *
 * @throws {ValidationError} when `options` is not an object, has unknown keys, or `dataDir` is
 *   empty or not a string.
 * @example
 * configure({ dataDir: '/tmp/my-app-ai' })
 */
export declare function configure(options: ConfigureOptions): void

/**
 * Resolves the data directory and creates its sub-folders (`models/llm`, `models/diffusion`,
 * `binaries`, `logs`, `temp`) if they are missing.
 *
 * @throws {FileSystemError} when a folder cannot be created (`details.path` says which).
 */
export declare function getDataPaths(): Promise<DataPaths>

// ---------------------------------------------------------------------------------------------
// System information
// ---------------------------------------------------------------------------------------------

/** Options of {@link SystemInfo.startMonitoring}. */
export interface MonitoringOptions {
  /** Milliseconds between readings (default 1000, minimum 50). */
  intervalMs?: number
}

/** A `memory` event: one RAM reading of the monitor. */
export type MemoryEvent = Extract<SystemInfoEvent, { type: 'memory' }>

export interface SystemInfoEvents {
  memory: [MemoryEvent]
  /** A listener of another event threw; without an `error` listener this becomes a process warning. */
  error: [unknown]
}

/**
 * CPU, RAM and GPU detection, and what this machine can run. Use the shared {@link systemInfo}.
 *
 * Events: `memory` (readings of {@link SystemInfo.startMonitoring}), `error` (a listener threw).
 */
export declare class SystemInfo extends EventEmitter<SystemInfoEvents> {
  constructor()
  /** The shared instance, the same object as {@link systemInfo}. */
  static getInstance(): SystemInfo
  /**
   * CPU, memory, GPU, platform and recommendations. Cached for 60 s; concurrent calls share one
   * detection. GPU probing runs off the JS thread.
   * @param forceRefresh ignore the cache.
   */
  detect(forceRefresh?: boolean): Promise<SystemCapabilities>
  /** Drops the cached detection. */
  clearCache(): void
  /** Fresh RAM figures (reads kernel counters; microseconds, so synchronous). */
  getMemoryInfo(): MemoryInfo
  /** Fresh GPU figures, free VRAM included. */
  getGPUInfo(): Promise<GPUInfo>
  /**
   * Whether the model fits now, with the estimate behind the verdict. With `rpcWorkers`, whether
   * a split over them fits: this machine's share here and each worker's against what it reports.
   * @throws {ValidationError} when `modelInfo.size` is not a positive number or a field has the wrong type.
   * @throws {ServerError} `RPC_WORKER_UNREACHABLE`, `RPC_WORKER_BUSY` or `RPC_WORKER_INCOMPATIBLE` for a worker that cannot be asked.
   */
  canRunModel(modelInfo: ModelSizingInfo, options?: CanRunModelOptions): Promise<CanRunModelResult>
  /**
   * A starting llama-server configuration: suggested threads, the largest context up to 8192
   * (capped by the model's) that fits in free RAM, and as many GPU layers as fit in free VRAM.
   * "Fits" is llama.cpp's word where it can be asked, as for {@link SystemInfo.canRunModel}
   * (`modelInfo.path` and an installed llama-server with its tool): a stored calibration or its
   * dry run of each context, largest first; the GGUF arithmetic's elsewhere. `llamaServer.start`
   * chooses what it is not given the same way. Hints fix values instead of choosing them. With
   * `rpcWorkers`: every layer on a device, and the largest context whose shares fit here and on
   * each worker.
   * @throws {ValidationError} as {@link SystemInfo.canRunModel}, and {@link ServerError} as it for a worker.
   */
  getOptimalConfig(modelInfo: ModelSizingInfo, hints?: CanRunModelOptions): Promise<OptimalLlamaConfig>
  /**
   * Emits a `memory` event every `intervalMs`. Like `setInterval`, a running monitor keeps Node
   * alive until {@link SystemInfo.stopMonitoring}. Calling it again changes the interval.
   * @throws {ValidationError} when `intervalMs` is not an integer of at least 50.
   */
  startMonitoring(options?: MonitoringOptions): void
  /** Stops the monitor; returns whether one was running. */
  stopMonitoring(): boolean
  isMonitoring(): boolean
}

/** The shared {@link SystemInfo}. */
export declare const systemInfo: SystemInfo

// ---------------------------------------------------------------------------------------------
// llama-server
// ---------------------------------------------------------------------------------------------

/** The member of the event union `U` whose `type` is `T`. */
export type EventOf<U, T extends string> = Extract<U, { type: T }>

/** A `crashed` event, with `code`: its `exitCode` under genai-electron 0.26's name. */
export type CrashedEvent<E> = E & { code: number | null }

/** One change of a server's status: every change emits exactly one. */
export type StateEvent<T extends string = 'state'> = StateChange & { type: T }

/** A `log` event: one line of a server's output, or of the library about it. */
export interface LogEvent {
  type: 'log'
  line: string
}

export interface LlamaServerEvents {
  /** Every change of `status`, before the named event it may cause (`started`, `crashed`, …). */
  state: [StateEvent]
  starting: [EventOf<ServerEvent<ServerInfo>, 'starting'>]
  started: [EventOf<ServerEvent<ServerInfo>, 'started'>]
  stopped: [EventOf<ServerEvent<ServerInfo>, 'stopped'>]
  /** The process ended without stop(), or hung (`hang: true`, then killed): exit code or signal, and its last output lines. */
  crashed: [CrashedEvent<EventOf<ServerEvent<ServerInfo>, 'crashed'>>]
  /** Running again after an automatic restart or {@link LlamaServerManager.restart}. */
  restarted: [EventOf<ServerEvent<ServerInfo>, 'restarted'>]
  /** Every automatic restart after a crash failed; the server stays crashed. */
  'restart-failed': [EventOf<ServerEvent<ServerInfo>, 'restart-failed'>]
  /** An install of an executable, anywhere in the library (this server's own start included). */
  'binary-progress': [BinaryProgressEvent]
  /** How far {@link LlamaServerManager.calibrate} is: its phase, the combination it runs, and the percentage done. */
  'calibration-progress': [LlamaCalibrationProgress & { type: 'calibration-progress' }]
  /** A request began to wait at the gateway; `waiting` counts it. */
  queued: [EventOf<QueueEvent, 'queued'>]
  /** A request stopped waiting at the gateway (served, refused, or its client went). */
  dequeued: [EventOf<QueueEvent, 'dequeued'>]
  /** One line of llama-server's output (split on `\n` and `\r`, ANSI escapes removed), or of the library about it, as `[time] [LEVEL] message` ({@link LogManager.parseEntry}). */
  log: [LogEvent]
  error: [unknown]
}

/**
 * Runs llama.cpp's `llama-server` (OpenAI-compatible HTTP API) under the library's supervisor:
 * its own process group, killed with the app even when the app is killed (Linux), output kept in
 * `logs/llama-server.log` (rotated at 5 MB, three archives). Use the shared {@link llamaServer}.
 */
export declare class LlamaServerManager extends EventEmitter<LlamaServerEvents> {
  constructor()
  static getInstance(): LlamaServerManager
  /**
   * Starts the server and resolves once `/health` answers 200 (polled every 10 ms, and at once when the log says the model is loaded); fails at once,
   * with the server's last output in `details.logs`, when the process exits during start. Like a
   * child process, a running server keeps Node alive until it stops, or crashes with no automatic
   * restart to follow.
   * @throws {ModelNotFoundError} @throws {PortInUseError} @throws {BinaryError}
   * @throws {ServerError} already running, exited during start, or not ready within `startupTimeout`.
   * @throws {InsufficientResourcesError} the model does not fit in the memory free now (see `force`).
   * @throws {ValidationError} a malformed config (unknown keys included).
   * @throws {CancelledError} `stop()` was called during the start.
   */
  start(config: LlamaServerConfig): Promise<ServerInfo>
  /**
   * SIGTERM, then SIGKILL after 5 s; resolves once the process is gone and its port is free.
   * During a start, cancels it at once (the start rejects with `CancelledError`).
   */
  stop(): Promise<void>
  /**
   * Stops the server if it runs and starts it again with the config of the last start that
   * worked, on the same port (`running → stopping → restarting → running`); emits `restarted`,
   * as automatic restarts do.
   * @throws {ServerError} never started, already starting, or the new process failed.
   */
  restart(): Promise<ServerInfo>
  /**
   * Measures the model as it really runs: for each of `combos` (settings over `profile` and
   * `fixedConfig`), starts a llama-server of its own on a free loopback port, runs the
   * `workloads` (one warm-up, then `samples` timed runs), and reads its peak RSS, the buffers
   * llama.cpp allocated on each device and on the host, its load time and tokens per second;
   * then stops it. The report (genai-electron 0.26's exact strategy, with `memory` on each run)
   * is stored beside the model, and from then on an estimate of a configuration with the same
   * memory flags (`canRunModel`, `start()`'s check, the orchestrator) is this measurement,
   * `source: 'measured'`. A combination that the memory check refuses is listed in
   * `skippedCombos`, never started. `selected` is the fastest that ran.
   * @throws {ServerError} `SERVER_BUSY` while this server runs, is offloaded, or calibrates already.
   * @throws {ValidationError} a malformed config, or 0.26's adaptive search (`profiles`).
   * @throws {ModelNotFoundError} @throws {BinaryError}
   * @throws {CancelledError} `signal` was aborted; the server it ran is stopped and nothing is stored.
   */
  calibrate(
    config: LlamaCalibrationRequest & {
      onProgress?: (progress: LlamaCalibrationProgress) => void
      signal?: AbortSignal
    },
  ): Promise<LlamaCalibrationReport>
  getInfo(): ServerInfo
  /** The resolved configuration (paths, numbers) of the last start that worked. */
  getConfig(): ResolvedLlamaConfig | null
  /** The config of the last start that worked, as it was passed: `start(getStartConfig())` repeats it. */
  getStartConfig(): LlamaServerConfig | null
  isRunning(): boolean
  getPort(): number | null
  /** `GET /health` answers 200 now. */
  isHealthy(): Promise<boolean>
  /** The last `lines` lines of output and of the library's lines about it (default 100), each `[time] [LEVEL] message` ({@link LogManager.parseEntry} reads them). */
  getLogs(lines?: number): Promise<string[]>
  clearLogs(): Promise<void>
  /** What the server's process tree uses now; `null` when no process runs. */
  getMemoryUsage(): Promise<MemoryUsage | null>
}

/** The shared {@link LlamaServerManager}. */
export declare const llamaServer: LlamaServerManager

// ---------------------------------------------------------------------------------------------
// Diffusion server
// ---------------------------------------------------------------------------------------------

/** A `progress` event of an image request. */
export type ImageGenerationProgress = Omit<EventOf<ImageJobEvent, 'progress'>, 'type'>

/** One image request with its in-process callbacks. Unknown keys are a {@link ValidationError}. */
export interface ImageGenerationConfig extends ImageRequest {
  /**
   * Called as progress is read from the backend's output: genai-electron 0.26's four arguments
   * (`percentage` is the whole request's, 0–100), then the whole progress (which image of a
   * batch, too).
   */
  onProgress?: (
    currentStep: number,
    totalSteps: number,
    stage: ImageGenerationStage,
    percentage: number,
    progress: ImageGenerationProgress,
  ) => void
  /** Aborting it cancels the generation, which then rejects with {@link CancelledError}. */
  signal?: AbortSignal
}

export interface ImageGenerationResult {
  /** The first PNG. */
  image: Buffer
  /** Every PNG of the request, in order. */
  images: Buffer[]
  format: 'png'
  /** Milliseconds from the job's start to its images. */
  timeTaken: number
  /** The part of `timeTaken` spent in stable-diffusion.cpp. */
  backendTime: number
  /** The seed of the first image (a random seed is resolved before the backend runs). */
  seed: number
  seeds: number[]
  width: number
  height: number
}

export interface DiffusionServerEvents {
  /** Every change of the HTTP server's status. */
  state: [StateEvent]
  /** Every change of the resident `sd-server`'s status (`getInfo().backendStatus`). */
  'backend-state': [StateEvent<'backend-state'>]
  /** The resident `sd-server` died: how, and its last output lines. The HTTP server goes on. */
  crashed: [CrashedEvent<ExitInfo & { type: 'crashed'; backend: 'sd-server'; logs: string[] }>]
  starting: [EventOf<ServerEvent<DiffusionServerInfo>, 'starting'>]
  started: [EventOf<ServerEvent<DiffusionServerInfo>, 'started'>]
  stopped: [EventOf<ServerEvent<DiffusionServerInfo>, 'stopped'>]
  /** Progress of any job, in-process or HTTP. */
  progress: [EventOf<ImageJobEvent, 'progress'>]
  /**
   * Every change of a job's status: `pending` when accepted (and while its orchestrator makes
   * room), `in_progress` when the backend takes it, then how it ended.
   */
  job: [EventOf<ImageJobEvent, 'job'>]
  /** How far {@link DiffusionServerManager.calibrate} is: the combination, size and sample, and the percentage done. */
  'calibration-progress': [DiffusionCalibrationProgress & { type: 'calibration-progress' }]
  /** An install of an executable, anywhere in the library. */
  'binary-progress': [BinaryProgressEvent]
  /** One line of stable-diffusion.cpp's output, or of the library about it, as `[time] [LEVEL] message` ({@link LogManager.parseEntry}). */
  log: [LogEvent]
  error: [unknown]
}

/**
 * An HTTP server of ours in front of stable-diffusion.cpp (default `127.0.0.1:8081`):
 * `GET /health`, `POST /v1/images/generations` (sync, or `Prefer: respond-async` for a job to
 * poll), `GET|DELETE /v1/images/generations/{id}`, `GET /v1/images/generations/{id}/events`
 * (SSE). Every image, whatever door it comes through, waits for its turn at the
 * {@link ResourceOrchestrator} that serves the server ({@link getOrchestrator}). Use the shared
 * {@link diffusionServer}, which comes with one.
 */
export declare class DiffusionServerManager extends EventEmitter<DiffusionServerEvents> {
  constructor()
  static getInstance(): DiffusionServerManager
  /**
   * Binds the port and readies the backend; a listening server keeps Node alive until stop().
   * @throws {ModelNotFoundError} @throws {PortInUseError} @throws {BinaryError}
   * @throws {ServerError} already running. @throws {ValidationError} a malformed config.
   * @throws {InsufficientResourcesError} the model cannot fit in this machine's RAM (see `force`).
   */
  start(config: DiffusionServerConfig): Promise<DiffusionServerInfo>
  /** Cancels queued and running work, stops the backend's process, closes the port. */
  stop(): Promise<void>
  /**
   * Makes images in-process (the same queue as HTTP requests).
   * @throws {ValidationError} a bad request. @throws {CancelledError} cancelled.
   * @throws {ServerError} not running, busy (queue full), or the backend failed (`details.logs`).
   */
  generateImage(config: ImageGenerationConfig): Promise<ImageGenerationResult>
  /** Cancels the job `id`, or the image being made now; false when there is no such job. */
  cancelImageGeneration(id?: string): boolean
  /**
   * Upscales `image` with an installed upscaler (a model of type `'upscaler'`, ESRGAN family),
   * `repeats` times over its own output (1–4, default 1), by `sd-cli`'s upscale mode with this
   * server's threads and GPU settings; it runs beside the image queue.
   * @throws {ValidationError} a bad image, or `modelId` not an installed upscaler.
   * @throws {CancelledError} `signal` was aborted, or `stop()` was called.
   * @throws {ServerError} not running, or sd-cli failed (`details.logs`).
   */
  upscaleImage(config: {
    /** A PNG, JPEG or WebP. */
    image: Uint8Array | string
    /** The id of an installed model of type `'upscaler'`. */
    modelId: string
    /** 1–4 (default 1). */
    repeats?: number
    signal?: AbortSignal
  }): Promise<{ image: Buffer; width: number; height: number; timeTaken: number }>
  /**
   * Measures the model as it really runs: for each of `combos` (placement switches; default
   * one, as `start()` chooses), starts an `sd-server` of its own and makes images of each of
   * `sizes`, smallest first (one warm-up, then `samples` timed images), reading its peak RSS at
   * each size, the params memory sd reports (VRAM and RAM) and each image's time; then stops
   * it. With `backend: 'one-shot'` (or `usageMode: 'single'`) each image is an `sd-cli` run,
   * measured by its own high-water mark. The report (genai-electron 0.26's, with `ramPeakBytes` on each run) is stored beside the
   * model, and from then on the orchestrator's estimate of an image of a measured size with the
   * same placement and executable is this measurement (`source: 'measured'`).
   * `recommended` names the fastest combination of each size.
   * @throws {ServerError} `SERVER_BUSY` while this server runs, or calibrates already.
   * @throws {ValidationError} a malformed config (a size, sampler or batch size `start()` or
   * `generateImage()` would refuse). @throws {ModelNotFoundError} @throws {BinaryError}
   * @throws {CancelledError} `signal` was aborted; its server is stopped and nothing is stored.
   */
  calibrate(
    config: DiffusionCalibrationRequest & {
      onProgress?: (progress: DiffusionCalibrationProgress) => void
      signal?: AbortSignal
    },
  ): Promise<DiffusionCalibrationReport>
  /** The id of the job whose turn it is (`getInfo().activeGenerationId`), or `undefined`. */
  getActiveGenerationId(): string | undefined
  /**
   * The orchestrator that decides when this server's images run (offloading the LLM when both
   * do not fit): the newest one constructed over it that the app still holds and has not
   * disposed, else the shared instance's own; `undefined` for an instance no orchestrator serves.
   */
  getOrchestrator(): ResourceOrchestrator | undefined
  getInfo(): DiffusionServerInfo
  getConfig(): ResolvedDiffusionConfig | null
  isRunning(): boolean
  getPort(): number | null
  /** Its `/health` answers 200 now. */
  isHealthy(): Promise<boolean>
  /** The last `lines` lines of stable-diffusion.cpp's output and of the library's lines (default 100). */
  getLogs(lines?: number): Promise<string[]>
  clearLogs(): Promise<void>
  /** What the resident `sd-server`'s process tree uses now; `null` when none runs. */
  getMemoryUsage(): Promise<MemoryUsage | null>
}

/** The shared {@link DiffusionServerManager}. */
export declare const diffusionServer: DiffusionServerManager

// ---------------------------------------------------------------------------------------------
// rpcServer: llama.cpp's RPC worker

export interface RpcServerEvents {
  state: [StateEvent]
  starting: [EventOf<ServerEvent<RpcServerInfo>, 'starting'>]
  started: [EventOf<ServerEvent<RpcServerInfo>, 'started'>]
  stopped: [EventOf<ServerEvent<RpcServerInfo>, 'stopped'>]
  /** The process ended without stop(): exit code or signal, and its last output lines. */
  crashed: [CrashedEvent<EventOf<ServerEvent<RpcServerInfo>, 'crashed'>>]
  /** One line of rpc-server's output, or of the library about it. */
  log: [LogEvent]
  error: [unknown]
}

/**
 * llama.cpp's RPC worker (`rpc-server`) on this machine, under the library's supervisor: it lends
 * this machine's memory (CPU and GPUs) to a llama-server on another machine, started with
 * `rpcWorkers: ['host:port']`, which then places a share of the model's layers here. Each
 * instance runs its own worker process; use the shared {@link rpcServer} for one.
 */
export declare class RpcServerManager extends EventEmitter<RpcServerEvents> {
  constructor()
  static getInstance(): RpcServerManager
  /**
   * Starts rpc-server and resolves once its port accepts connections.
   * @throws {ValidationError} a non-loopback host without `allowNetwork`, or a malformed config.
   * @throws {PortInUseError} @throws {BinaryError} @throws {ServerError} already running, or it exited during start.
   */
  start(config?: RpcServerConfig): Promise<RpcServerInfo>
  /** Stops it and waits until its process is gone. */
  stop(): Promise<void>
  getInfo(): RpcServerInfo
  getConfig(): ResolvedRpcConfig | null
  isRunning(): boolean
  getPort(): number | null
  /** `host:port` while it runs; `null` otherwise. */
  getEndpoint(): string | null
  /** Its port accepts a connection now. */
  isHealthy(): Promise<boolean>
  /** The last `lines` lines of rpc-server's output and of the library's lines (default 100). */
  getLogs(lines?: number): Promise<string[]>
  clearLogs(): Promise<void>
  /** What its process tree uses now; `null` when it is not running. */
  getMemoryUsage(): Promise<MemoryUsage | null>
}

/** The shared {@link RpcServerManager}. */
export declare const rpcServer: RpcServerManager

// ---------------------------------------------------------------------------------------------
// Resource orchestration
// ---------------------------------------------------------------------------------------------

/** A llama server as it was when it was offloaded. */
export interface SavedLLMState {
  /** Its place among the orchestrator's llama servers (0: the first, `llamaServer`). */
  server: number
  /** The request `llamaServer.start()` accepted: `llamaServer.start(config)` brings it back by hand. */
  config: LlamaServerConfig | null
  resolved: ResolvedLlamaConfig
  wasRunning: boolean
  savedAt: Date
}

export interface ResourceOrchestratorEvents {
  /** Every change of `getInfo().phase`. */
  phase: [EventOf<OrchestratorEvent, 'phase'>]
  /** A llama server (`server`: its place) is about to be drained and stopped; one event per server. */
  offload: [EventOf<OrchestratorEvent, 'offload'>]
  /** A llama server is back. */
  reload: [EventOf<OrchestratorEvent, 'reload'>]
  /** A llama server could not be brought back; requests that waited got 503 with the reason. */
  'reload-failed': [EventOf<OrchestratorEvent, 'reload-failed'>]
  /**
   * The idle resident sd-server was stopped to make room for the LLM coming back (`reload`) or
   * started by {@link ResourceOrchestrator.startLlamaServer} (`start`); the next image starts it again.
   */
  'diffusion-released': [EventOf<OrchestratorEvent, 'diffusion-released'>]
  /** A request began to wait at a llama server's gateway (`server`: its place). */
  queued: [EventOf<QueueEvent, 'queued'> & { server: number }]
  /** A request stopped waiting there. */
  dequeued: [EventOf<QueueEvent, 'dequeued'> & { server: number }]
  error: [unknown]
}

/**
 * Makes images while llama servers are loaded: when they and an image do not fit the budget, the
 * servers the image needs room from are offloaded (their gateways hold new requests, those in
 * flight finish), the image is made, and they are reloaded on the same ports with the same
 * configs; held requests are then served. Which servers go: chat servers first, then embedding
 * and rerank servers; within each, one that alone frees enough (the one idle longest), else the
 * largest first (see `docs/API.md`).
 */
export declare class ResourceOrchestrator extends EventEmitter<ResourceOrchestratorEvents> {
  /**
   * The seed's argument order; an omitted manager is the shared one. `llamaServer` may be a list
   * of managers (a chat, an embedding and a rerank server, say): each is counted, offloaded and
   * reloaded on its own; the first is the one {@link getSavedState} and
   * {@link startLlamaServer} name by default. From then on it serves
   * `diffusionServer`: every image of that server (HTTP requests, `generateImage`, this
   * orchestrator's calls) waits for its turn here, in one queue under one swap policy, while the
   * app holds this orchestrator and until {@link dispose}; its own calls always do.
   * @throws {ValidationError} unknown or bad options, managers that are not the library's, an
   * empty list or one naming a manager twice.
   */
  constructor(
    systemInfo?: SystemInfo,
    llamaServer?: LlamaServerManager | LlamaServerManager[],
    diffusionServer?: DiffusionServerManager,
    modelManager?: ModelManager,
    options?: OrchestratorOptions,
  )
  /**
   * Makes the image, offloading the LLM first when the two do not fit. One at a time, in the
   * order asked; the LLM comes back as `policy` says, and in any case once no image waits,
   * whatever happens to the images (the image after which it comes back resolves once it is
   * back). An image cancelled (its `signal`) while it waits leaves the queue at once and causes
   * no offload.
   * @throws as {@link DiffusionServerManager.generateImage}.
   */
  orchestrateImageGeneration(config: ImageGenerationConfig): Promise<ImageGenerationResult>
  /**
   * genai-electron 0.26's batch: one request of `config.count` images (1–8, one offload at most),
   * answered as one result per image, in order (each with its own seed).
   * @throws as {@link orchestrateImageGeneration}.
   */
  orchestrateBatchGeneration(config: ImageGenerationConfig): Promise<ImageGenerationResult[]>
  /**
   * {@link LlamaServerManager.start} in the orchestrator's turn (after the image being made):
   * when the server and an idle resident sd-server do not fit the budget together, the sd-server
   * is stopped first (`diffusion-released`), instead of the start failing for want of memory.
   * @param llamaServer which of the orchestrator's servers starts (default the first).
   * @throws {ValidationError} a manager the orchestrator was not given; else as
   * {@link LlamaServerManager.start}.
   */
  startLlamaServer(config: LlamaServerConfig, llamaServer?: LlamaServerManager): Promise<ServerInfo>
  /**
   * What the running llama servers (each in `servers`, marked `offload` where the image needs
   * it gone) and an image of `config` (default 512×512) need, and whether they fit together.
   */
  estimate(config?: Partial<ImageGenerationConfig>): Promise<ResourceEstimate>
  wouldNeedOffload(config?: Partial<ImageGenerationConfig>): Promise<boolean>
  /**
   * The first server out (the LLM when it is) as it was offloaded, while it is not back (or after
   * its reload failed).
   */
  getSavedState(): SavedLLMState | undefined
  /** Every server out, as it was offloaded, in the order they went. */
  getSavedStates(): SavedLLMState[]
  clearSavedState(): void
  /**
   * genai-electron 0.26's manual offload: in the orchestrator's turn every running llama server
   * is drained and stopped (its gateway holds requests, as for an image), and they stay out,
   * whatever images come, until {@link reloadLLM}. Does nothing when none runs.
   */
  offloadLLM(): Promise<void>
  /** Brings back the servers {@link offloadLLM} took out, on the same ports; resolves once they are back. */
  reloadLLM(): Promise<void>
  /**
   * Stops deciding the diffusion server's images: the orchestrator constructed before this one
   * (for the shared servers, their own) serves again, and this one's later calls are made as the
   * server's other images are, and the listeners it added to its llama servers' managers go. For
   * an orchestrator made for a moment, such as a budget tried once; the one an app keeps need not
   * be disposed.
   */
  dispose(): void
  /** The phase, the requests waiting at the llama servers' gateways, and the images waiting for their turn. */
  getInfo(): OrchestratorInfo
}

// ---------------------------------------------------------------------------------------------
// Models
// ---------------------------------------------------------------------------------------------

/** What {@link ModelManager.downloadModel} fetches, with its in-process callbacks. */
export interface DownloadConfig extends DownloadRequest {
  /** Called with bytes so far and in all, at most ten times a second. */
  onProgress?: (downloaded: number, total: number, event: DownloadProgressEvent) => void
  /** An id of your choosing for {@link ModelManager.cancelDownload} and `progress` events (default: a random UUID). */
  downloadId?: string
  /** Aborting it cancels the download as {@link ModelManager.cancelDownload} does: it rejects with {@link CancelledError}. */
  signal?: AbortSignal
  /**
   * genai-electron 0.26's: called as each file begins, with its role (`'diffusion_model'` or
   * `'model'` for the model file itself), its name, and its place (1-based) among `total`.
   */
  onComponentStart?: (info: { role: string; filename: string; index: number; total: number }) => void
}

/** A `progress` event of a download. */
export type DownloadProgressEvent = Extract<ModelManagerEvent, { type: 'progress' }>

/** A model folder that listing skipped (`damaged` event of {@link ModelManager}). */
export type DamagedModelEvent = Extract<ModelManagerEvent, { type: 'damaged' }>

export interface ModelManagerEvents {
  progress: [DownloadProgressEvent]
  /** Emitted by {@link ModelManager.listModels} for each folder it skipped. */
  damaged: [DamagedModelEvent]
  /** A file of a download begins. */
  'file-start': [Extract<ModelManagerEvent, { type: 'file-start' }>]
  error: [unknown]
}

/**
 * Downloads, lists, verifies and deletes models in the data folder's `models/`. Use the shared
 * {@link modelManager}. A model is listed only once every file is downloaded and verified.
 */
export declare class ModelManager extends EventEmitter<ModelManagerEvents> {
  constructor()
  static getInstance(): ModelManager
  /**
   * Installed models, optionally of one type, ordered by id. A folder whose record cannot be
   * trusted or whose files are incomplete is skipped with a `damaged` event; it never hides the others.
   */
  listModels(type?: ModelType): Promise<ModelInfo[]>
  /**
   * Only ids that `downloadModel` derives (lower-case letters, digits, `-`, `.`, `_`) name a model.
   * @throws {ModelNotFoundError} any other id, or no such model. @throws {FileSystemError} a damaged record or missing file.
   */
  getModelInfo(id: string): Promise<ModelInfo>
  /**
   * Downloads a model (all shards, all components) and registers it. Files stream to `.part`
   * files with sha256 computed on the way; a broken connection resumes (the `.part` files stay
   * for a later call if it cannot); nothing is listed before everything is verified. A file that
   * must be GGUF (every file of an `llm`, every `.gguf` of a diffusion model) is refused as soon
   * as its first 8 bytes arrive if they are not a GGUF header, and after the download if it is
   * shorter than its header says (it then stays as a `.part` that the next call resumes). A
   * failed download leaves nothing in the model's folder but such resumable `.part` files.
   * @throws {ValidationError} a malformed config, an unknown component role, a file that is not GGUF, an existing id.
   * @throws {DownloadError} HTTP errors (`details.status`), broken or stalled connections, a file cut short, a redirect loop.
   * @throws {CancelledError} cancelled by `cancelDownload` or `signal`; the model's files are removed.
   * @throws {ChecksumError} a sha256 mismatch; the model's files are removed.
   * @throws {FileSystemError} a full disk or unwritable folder; partial files are removed.
   */
  downloadModel(config: DownloadConfig): Promise<ModelInfo>
  /**
   * Registers a GGUF file, or a diffusion set, already on this machine, without a download: each
   * file is hard-linked into the model's folder (no extra space; a file several models share is
   * kept once), or copied where a link cannot be made (another disk). The model does not depend on
   * its source afterwards: moving or deleting the source leaves it whole. The GGUF header is
   * checked and each file's sha256 recorded (`source.type: 'file'`).
   * @throws {ValidationError} a missing file, a file that is not GGUF (for an LLM), a cut or split
   * GGUF, bad keys, or (`MODEL_EXISTS`) an id that is taken.
   */
  importModel(config: ImportModelRequest): Promise<ModelInfo>
  /**
   * Reads the model's GGUF header again and records it: from its file, its source URL, or one
   * then the other (`options.source`, default `'local-remote'`), as genai-electron 0.26 did.
   * @throws {ModelNotFoundError} no such model. @throws {FileSystemError} `MODEL_DAMAGED` when
   * no header could be read.
   */
  updateModelMetadata(id: string, options?: { source?: MetadataFetchStrategy }): Promise<ModelInfo>
  /**
   * Adopts the models of a genai-electron 0.26 data folder (its `models/<type>/<id>.json` records
   * and their files; default: this library's data folder, which is 0.26's in an Electron app),
   * each as {@link importModel} does, under its name and with the source it was downloaded from.
   * A model already here, an unreadable record, a split model, or a file that is missing or not
   * the one recorded is skipped with the reason.
   */
  adoptModels(folder?: string): Promise<Adoption>
  /**
   * Removes a model and its files; a damaged one too (by the name of its folder), which is how it goes away.
   * @throws {ModelNotFoundError} no such model. @throws {ServerError} (`MODEL_IN_USE`) a running server uses
   *   it, or, on Windows, another program has one of its files open (then nothing is deleted).
   */
  deleteModel(id: string): Promise<void>
  /** Recomputes every file's sha256 against the one recorded at download. */
  verifyModel(id: string): Promise<boolean>
  /** As {@link ModelManager.verifyModel}, with the files that failed. */
  verifyModelFiles(id: string): Promise<ModelVerification>
  /**
   * Cancels a download by its `downloadId` or its model id, or, without one, every download of
   * this manager (genai-electron 0.26's form); returns whether one was running. It rejects with
   * {@link CancelledError}; its files are removed.
   */
  cancelDownload(id?: string): boolean
  /** A download of this manager is under way. */
  isDownloading(): boolean
  /** Bytes used by installed models. */
  getStorageUsage(): Promise<StorageUsage>
  /**
   * GGUF header facts of a local file, or of an http(s) URL by fetching only the start of the file
   * with Range requests (a server that ignores Range is read only as far as the header needs).
   * Hostile or truncated headers are errors, never crashes; what is kept is bounded (see `raw`).
   * @throws {ValidationError} not a (complete) GGUF header, not a regular file (a FIFO, a folder).
   * @throws {FileSystemError} unreadable file. @throws {DownloadError} the URL failed or a read timed out.
   */
  readGGUFMetadata(pathOrUrl: string, options?: ReadGGUFOptions): Promise<GGUFMetadata & Record<string, unknown>>
}

/** The shared {@link ModelManager}. */
export declare const modelManager: ModelManager

// ---------------------------------------------------------------------------------------------
// Binaries
// ---------------------------------------------------------------------------------------------

/** A `binary-progress` event. */
export interface BinaryProgressEvent extends BinaryProgress {
  type: 'binary-progress'
}

export interface BinaryManagerEvents {
  'binary-progress': [BinaryProgressEvent]
  error: [unknown]
}

/**
 * Obtains llama.cpp's and stable-diffusion.cpp's executables. Use the shared {@link binaries}.
 * Every instance (and every server's start) uses one native manager: installs of a backend are
 * serialised across all of them, and each instance hears every install's `binary-progress`.
 *
 * Sources, in order: the `path` option; the environment variable (`GENAI_ELECTRON_LLAMA_SERVER`,
 * `GENAI_ELECTRON_SD_CLI`, `GENAI_ELECTRON_SD_SERVER`); an earlier install in the data folder;
 * the pinned release variants for this platform (GPU first, each downloaded with resume,
 * sha256-checked, extracted safely and probed); a source build when `source` is given.
 */
export declare class BinaryManager extends EventEmitter<BinaryManagerEvents> {
  constructor()
  static getInstance(): BinaryManager
  /**
   * The path of a working executable, installing it if needed. A second call answers from the
   * install: no network, no probe.
   * @throws {BinaryError} no variant works (`details.tried` lists each with its reason), no
   *   release for this platform, a given path missing or broken, a source build failing.
   * @throws {DownloadError} / {@link ChecksumError} / {@link FileSystemError} as their names say.
   * @throws {ValidationError} an unknown kind or a malformed option.
   */
  ensureBinary(kind: BinaryKind, options?: EnsureBinaryOptions): Promise<ResolvedBinary>
  /**
   * Builds the backend of `kind` from a pinned source archive with CMake (must be on PATH) and
   * records it as the data folder's `source` install (a cross build for another `platform` is not recorded). `workDir` keeps the unpacked sources and
   * the build tree (default: inside the data folder), so a repeated build only checks. CMake,
   * Ninja and the compilers end with the app, even when it is killed.
   * @throws {BinaryError} checksum mismatch, CMake missing, or a failed step with its output.
   */
  buildFromSource(kind: BinaryKind, source: SourceBuildSpec, options?: { workDir?: string }): Promise<ResolvedBinary>
}

/** The shared {@link BinaryManager}. */
export declare const binaries: BinaryManager

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/** Facts attached to an error; `suggestion` is one sentence for the user. */
export interface ErrorDetails {
  suggestion?: string
  [key: string]: unknown
}

/**
 * The table of every code: its class, the status our HTTP servers answer with, what it means, and
 * `http`, the code our HTTP error bodies give
 * where genai-electron 0.26's HTTP API names the failure otherwise (`IO_ERROR`).
 */
export declare const ERROR_CODES: Readonly<
  Record<ErrorCode, { class: string; status: number; meaning: string; http?: string }>
>

/** Base class of every error the library throws; branch on `code` (or on the class for the kind of failure). */
export declare class GenaiElectronError extends Error {
  constructor(message: string, code?: string, details?: ErrorDetails)
  /** An {@link ErrorCode} for the library's errors. */
  readonly code: ErrorCode | (string & {})
  readonly details: ErrorDetails
}
/** No model with that id. Codes: `MODEL_NOT_FOUND`. */
export declare class ModelNotFoundError extends GenaiElectronError {
  constructor(message: string, details?: ErrorDetails)
}
/** A download failed. Codes: `DOWNLOAD_FAILED` (made by hand, or no finer code), `DOWNLOAD_HTTP_ERROR`, `DOWNLOAD_BAD_URL`, `DOWNLOAD_IN_PROGRESS`. */
export declare class DownloadError extends GenaiElectronError {
  constructor(message: string, details?: ErrorDetails)
}
/** A file's SHA-256 differs from the expected one (the file is removed). Codes: `CHECKSUM_ERROR`. */
export declare class ChecksumError extends GenaiElectronError {
  constructor(message: string, details?: ErrorDetails)
}
/** Not enough RAM or VRAM. Codes: `INSUFFICIENT_RESOURCES`. */
export declare class InsufficientResourcesError extends GenaiElectronError {
  constructor(message: string, details?: ErrorDetails)
}
/** A managed server failed to start, crashed, was busy or answered badly. Codes: `SERVER_ERROR` (made by hand, or no finer code), `SERVER_ALREADY_RUNNING`, `SERVER_NOT_RUNNING`, `SERVER_BUSY`, `SERVER_START_FAILED`, `SERVER_EXITED`, `SERVER_START_TIMEOUT`, `BACKEND_FAILED`, `BACKEND_STALLED`, `BACKEND_UNAVAILABLE`, `SERVER_UNAVAILABLE`, `QUEUE_FULL`, `QUEUE_TIMEOUT`, `RPC_WORKER_UNREACHABLE`, `RPC_WORKER_BUSY`, `RPC_WORKER_INCOMPATIBLE`, `JOB_FINISHED`, `MODEL_IN_USE`. */
export declare class ServerError extends GenaiElectronError {
  constructor(message: string, details?: ErrorDetails)
}
/** The requested port is taken. Codes: `PORT_IN_USE`. */
export declare class PortInUseError extends GenaiElectronError {
  constructor(message: string, details?: ErrorDetails)
}
/** A backend executable is missing, broken, or none can be obtained. Codes: `BINARY_ERROR` (made by hand, or no finer code), `BINARY_NOT_FOUND`, `BINARY_BROKEN`, `BINARY_NO_RELEASE`, `BINARY_NO_WORKING_VARIANT`, `SOURCE_CHECKSUM_MISMATCH`, `CMAKE_MISSING`, `VULKAN_TOOLCHAIN_MISSING`, `CROSS_TOOLCHAIN_MISSING`, `BUILD_FAILED`, `ARCHIVE_INVALID`. */
export declare class BinaryError extends GenaiElectronError {
  constructor(message: string, details?: ErrorDetails)
}
/** A file or folder could not be read, written or created. Codes: `FILE_SYSTEM_ERROR` (made by hand, or no finer code), `MODEL_DAMAGED`. */
export declare class FileSystemError extends GenaiElectronError {
  constructor(message: string, details?: ErrorDetails)
}
/** An argument has the wrong type, shape or range. Codes: `INVALID_ARGUMENT` (made by hand, or no finer code), `MODEL_EXISTS`, `DOWNLOAD_REJECTED`, `UNAUTHORIZED`, `ORIGIN_NOT_ALLOWED`, `NOT_FOUND`, `METHOD_NOT_ALLOWED`, `BODY_TOO_LARGE`, `URI_TOO_LONG`, `HEADERS_TOO_LARGE`. */
export declare class ValidationError extends GenaiElectronError {
  constructor(message: string, details?: ErrorDetails)
}
/** The work was cancelled (a cancel call, an AbortSignal, DELETE, or stop()). Codes: `CANCELLED`. */
export declare class CancelledError extends GenaiElectronError {
  constructor(message: string, details?: ErrorDetails)
}

// ---------------------------------------------------------------------------------------------
// Log lines
// ---------------------------------------------------------------------------------------------

export type LogLevel = 'debug' | 'info' | 'warn' | 'error'

/** One log line, parsed. */
/**
 * genai-electron 0.26's names, on every server manager: the status and pid of `getInfo()`, the
 * health in its words, and the log lines parsed.
 */
export interface ServerManagerAliases {
  /** `getInfo().status`. */
  getStatus(): ServerInfo['status']
  /** `getInfo().pid`, or `undefined`. */
  getPid(): number | undefined
  isStopped(): boolean
  isStarting(): boolean
  isStopping(): boolean
  hasCrashed(): boolean
  /**
   * `'loading'` while the server starts (its model loads), then `'ok'` or `'error'` as its
   * `/health` answers now, `'unknown'` when it is not running.
   */
  getHealthStatus(): Promise<'ok' | 'loading' | 'error' | 'unknown'>
  /** `getLogs(lines)`, each line parsed ({@link LogManager.parseEntry}; a line in another format as `info`). */
  getStructuredLogs(lines?: number): Promise<LogEntry[]>
}
export interface LlamaServerManager extends ServerManagerAliases {}
export interface DiffusionServerManager extends ServerManagerAliases {}
export interface RpcServerManager extends ServerManagerAliases {}

export interface LogEntry {
  /** As written: ISO 8601 for the library's lines. */
  timestamp: string
  level: LogLevel
  message: string
}

/**
 * The format of every line of `getLogs()` and of every `log` event, `[time] [LEVEL] message`, as
 * genai-electron's `LogManager` writes it (the backends' output included).
 */
export declare class LogManager {
  /** The line's parts, or `null` for a line in another format (genai-electron 0.26's padded `[INFO ]` is read too). */
  static parseEntry(line: string): LogEntry | null
  /** The line {@link LogManager.parseEntry} reads back; `timestamp` defaults to now, `level` to `info`. */
  static formatEntry(entry: { timestamp?: string; level?: LogLevel; message: string }): string
}
