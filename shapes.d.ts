// Generated from the Rust shapes by `npm run typings` (src/typings.rs): do not edit.

/**
 * Every error code, one for each distinct failure (see {@link ERROR_CODES}): the same code
 * names the failure in a rejected promise and in our HTTP servers' error bodies.
 */
export type ErrorCode =
  | "INVALID_ARGUMENT"
  | "MODEL_EXISTS"
  | "DOWNLOAD_REJECTED"
  | "UNAUTHORIZED"
  | "ORIGIN_NOT_ALLOWED"
  | "INVALID_HOST"
  | "NOT_FOUND"
  | "METHOD_NOT_ALLOWED"
  | "BODY_TOO_LARGE"
  | "URI_TOO_LONG"
  | "HEADERS_TOO_LARGE"
  | "MODEL_NOT_FOUND"
  | "DOWNLOAD_FAILED"
  | "DOWNLOAD_HTTP_ERROR"
  | "DOWNLOAD_BAD_URL"
  | "DOWNLOAD_IN_PROGRESS"
  | "CHECKSUM_ERROR"
  | "INSUFFICIENT_RESOURCES"
  | "SERVER_ERROR"
  | "SERVER_ALREADY_RUNNING"
  | "SERVER_NOT_RUNNING"
  | "SERVER_BUSY"
  | "SERVER_START_FAILED"
  | "SERVER_EXITED"
  | "SERVER_START_TIMEOUT"
  | "BACKEND_FAILED"
  | "BACKEND_STALLED"
  | "BACKEND_UNAVAILABLE"
  | "SERVER_UNAVAILABLE"
  | "QUEUE_FULL"
  | "QUEUE_TIMEOUT"
  | "RPC_WORKER_UNREACHABLE"
  | "RPC_WORKER_BUSY"
  | "RPC_WORKER_INCOMPATIBLE"
  | "JOB_FINISHED"
  | "MODEL_IN_USE"
  | "PORT_IN_USE"
  | "BINARY_ERROR"
  | "BINARY_NOT_FOUND"
  | "BINARY_BROKEN"
  | "BINARY_NO_RELEASE"
  | "BINARY_NO_WORKING_VARIANT"
  | "SOURCE_CHECKSUM_MISMATCH"
  | "CMAKE_MISSING"
  | "VULKAN_TOOLCHAIN_MISSING"
  | "CROSS_TOOLCHAIN_MISSING"
  | "BUILD_FAILED"
  | "ARCHIVE_INVALID"
  | "FILE_SYSTEM_ERROR"
  | "MODEL_DAMAGED"
  | "CANCELLED";

/**
 * Where the data directory came from; reported so users can tell why files landed where they did.
 */
export type DataDirSource = "configure" | "env" | "electron" | "os";

/**
 * A model folder for each model type.
 */
export type ModelFolders = {
  llm: string
  diffusion: string
  lora: string
  upscaler: string
};

/**
 * The folders the library uses, all absolute, as {@link getDataPaths} reports them.
 */
export type DataPaths = {
  root: string
  /**
   * Which rule chose `root`: `configure()`, `GENAI_ELECTRON_DATA_DIR`, Electron, or the OS
   * default.
   */
  source: DataDirSource
  models: ModelFolders
  binaries: string
  logs: string
  temp: string
};

export type CPUInfo = {
  /**
   * Marketing name, e.g. `"AMD Ryzen 7 7840U"`.
   */
  model: string
  /**
   * Logical processors (the seed's `cores`); same as `logicalCores`.
   */
  cores: number
  physicalCores: number
  logicalCores: number
  /**
   * Node's naming, as `process.arch`: `x64`, `arm64`, …
   */
  architecture: string
  /**
   * SIMD features of this CPU, lower case: `avx2`, `avx512f`, `neon`, …
   */
  features: Array<string>
};

/**
 * System RAM in bytes.
 */
export type MemoryInfo = {
  total: number
  /**
   * What the OS can hand out without swapping (Linux `MemAvailable`).
   */
  available: number
  used: number
};

export type GPUVendor = "nvidia" | "amd" | "apple" | "intel" | "other";

/**
 * What a physical device is, as Vulkan says (`VkPhysicalDeviceType`).
 */
export type VulkanDeviceType = "discrete" | "integrated" | "virtual" | "cpu" | "other";

/**
 * One GPU.
 */
export type GPUDevice = {
  vendor: GPUVendor
  name: string
  /**
   * Dedicated memory in bytes, when the driver reports it (not for integrated GPUs).
   */
  vram?: number
  /**
   * Free dedicated memory in bytes, when the driver reports it.
   */
  vramAvailable?: number
  /**
   * True where the GPU shares system RAM (Apple Silicon, most Intel GPUs).
   */
  unifiedMemory: boolean
  /**
   * What Vulkan says the device is, where it was found through Vulkan.
   */
  deviceType?: VulkanDeviceType
  /**
   * Its index among Vulkan's devices: what `GGML_VK_VISIBLE_DEVICES` names.
   */
  vulkanIndex?: number
};

/**
 * What the machine's GPUs add up to, with the primary one (most memory) spelled out.
 */
export type GPUInfo = {
  available: boolean
  /**
   * Vendor of the primary GPU (the one with most memory).
   */
  vendor?: GPUVendor
  /**
   * The same as `vendor`: genai-electron 0.26's name for it.
   */
  type?: GPUVendor
  name?: string
  /**
   * Total memory of the primary GPU in bytes.
   */
  vram?: number
  /**
   * Free memory of the primary GPU in bytes.
   */
  vramAvailable?: number
  /**
   * An NVIDIA GPU with its driver is present, so CUDA builds can run.
   */
  cuda: boolean
  /**
   * A Vulkan loader and a GPU are present, so Vulkan builds can run.
   */
  vulkan: boolean
  /**
   * macOS with a GPU: Metal builds run.
   */
  metal: boolean
  /**
   * An AMD GPU and the ROCm kernel driver (`/dev/kfd`) are present.
   */
  rocm: boolean
  devices: Array<GPUDevice>
};

export type SystemRecommendations = {
  /**
   * Largest GGUF file in bytes that fits where it would run (free VRAM with a GPU, else free
   * RAM).
   */
  maxModelBytes: number
  /**
   * The same as a model size class at Q4_K_M (~4.85 bits per weight), e.g. `"7B"`.
   */
  maxModelSize: string
  recommendedQuantization: Array<string>
  /**
   * Threads for llama.cpp: physical cores less one on up to 8 cores, less two on 9–16, 85%
   * beyond (room for the app).
   */
  threads: number
  /**
   * A GPU with known memory is available for offloading layers.
   */
  gpuAcceleration: boolean
};

/**
 * What {@link SystemInfo.detect} found.
 */
export type SystemCapabilities = {
  cpu: CPUInfo
  memory: MemoryInfo
  gpu: GPUInfo
  /**
   * Node's `process.platform` naming.
   */
  platform: NodeJS.Platform
  recommendations: SystemRecommendations
  /**
   * ISO 8601 time of the detection (results are cached for 60 s).
   */
  detectedAt: string
};

/**
 * Events of the system manager.
 */
export type SystemInfoEvent = {
  "type": "memory"
} & MemoryInfo;

/**
 * The part of a model's info that sizing reads. A full `ModelInfo` from the model manager fits
 * (other keys are ignored).
 */
export type ModelSizingInfo = {
  /**
   * The installed model's id: a stored calibration of it (`llamaServer.calibrate()`) answers
   * for the configuration it measured.
   */
  id?: string
  /**
   * File size in bytes (all shards).
   */
  size: number
  ggufMetadata?: Partial<GGUFMetadata>
  /**
   * The model file. Sizing a split (`rpcWorkers`) reads its tensor index for what each layer
   * weighs; without it, or when it cannot be read, the layers are taken to weigh the same.
   */
  path?: string
  /**
   * An `llm` model's `mmproj` and `draft` files (as {@link ModelInfo.components} has them): not
   * counted in `size`'s weights, and loaded beside the model as a start loads them.
   */
  components?: Partial<Record<ComponentRole, { path: string; size: number }>>
};

/**
 * Options of {@link SystemInfo.canRunModel}; also the hints of
 * {@link SystemInfo.getOptimalConfig}. Other keys are ignored, so a whole
 * {@link LlamaServerConfig} can be passed.
 */
export type CanRunModelOptions = {
  /**
   * Context window in tokens (default: the model's, at most 4096; for hints, the largest up to
   * 8192 that fits).
   */
  contextSize?: number
  /**
   * Without `contextSize`: the smallest context to consider (default 2048).
   */
  minimumContextSize?: number
  /**
   * Without `contextSize`: the context to start from, halving while it does not fit
   * (default 8192, or the model's own if smaller).
   */
  preferredContextSize?: number
  /**
   * Without `contextSize`: the largest context to consider.
   */
  maximumContextSize?: number
  /**
   * Layers to offload to the GPU (default: as many as fit in free VRAM).
   */
  gpuLayers?: number
  cacheTypeK?: KVCacheType
  /**
   * Defaults to `cacheTypeK`.
   */
  cacheTypeV?: KVCacheType
  /**
   * Sliding-window layers keep the whole context (llama-server's `--swa-full`), as
   * {@link LlamaServerConfig.swaFull}.
   */
  swaFull?: boolean
  /**
   * Every layer's experts stay on the CPU, as {@link LlamaServerConfig.cpuMoe}: counted by
   * llama.cpp's projection (the arithmetic places experts with their layers).
   */
  cpuMoe?: boolean
  /**
   * The experts of the first `nCpuMoe` layers stay on the CPU, as
   * {@link LlamaServerConfig.nCpuMoe}: counted by llama.cpp's projection.
   */
  nCpuMoe?: number
  /**
   * Compare with total RAM instead of free RAM: "could this machine ever run it?".
   */
  checkTotalMemory?: boolean
  /**
   * `host:port` of rpc-servers the model is to be split over, as
   * {@link LlamaServerConfig.rpcWorkers}. Each is asked what memory it lends (ggml's RPC
   * protocol, a few milliseconds), the layers are placed as llama.cpp places them
   * (`gpuLayers` default: all), and the verdict weighs this machine's share against its
   * memory and each worker's share against what it reports free. A worker that does not
   * answer is a {@link ServerError}: `RPC_WORKER_UNREACHABLE`, `RPC_WORKER_BUSY` (another
   * llama-server holds it) or `RPC_WORKER_INCOMPATIBLE`.
   */
  rpcWorkers?: Array<string>
  /**
   * llama-server's own flags, as {@link LlamaServerConfig.extraArgs}: a vision projector
   * (`--mmproj`) or a draft model (`--model-draft`, `-ngld`) named there is counted beside
   * the model, where it will run.
   */
  extraArgs?: Array<string>
  /**
   * The model's `mmproj` component, as {@link LlamaServerConfig.projector}: counted with the
   * model's layers (`auto`, the default), on the CPU (`cpu`), or not at all (`off`).
   */
  projector?: ProjectorPlacement
  /**
   * The model's `draft` component, as {@link LlamaServerConfig.draft}: counted unless `false`.
   */
  draft?: boolean
};

/**
 * A split model's share on one RPC worker ({@link CanRunModelResult.workers}).
 */
export type RpcWorkerShare = {
  /**
   * `host:port`.
   */
  worker: string
  /**
   * Layers placed there (the output layer counts as one).
   */
  layers: number
  /**
   * Bytes it must hold: its layers' weights and KV cache, and a compute buffer.
   */
  required: number
  /**
   * Bytes free over its devices, as it reports them (a CPU device reports all its RAM as
   * free).
   */
  free: number
  total: number
};

/**
 * Bytes a configuration needs.
 */
export type MemoryEstimate = {
  /**
   * Bytes of RAM: what stays on the CPU, and, where any part is on a GPU, 128 MiB for the
   * GPU driver's own memory in the server's process (measured with Vulkan drivers).
   */
  ram: number
  /**
   * Bytes on the GPUs.
   */
  vram: number
  weights: number
  kvCache: number
  compute: number
  contextSize: number
  gpuLayers: number
  /**
   * Who answered: a stored calibration, llama.cpp's own dry run of the configuration, or our
   * arithmetic.
   */
  source: EstimateSource
};

/**
 * Where a {@link MemoryEstimate} comes from: `measured`, a calibration of the same configuration
 * (`llamaServer.calibrate()`, stored beside the model: peak RSS and the buffers llama.cpp
 * allocated); `projected`, llama.cpp's own dry run of the
 * configuration (`llama-fit-params`, beside llama-server: the buffers it will allocate, per
 * device and on the host); `estimated`, arithmetic from the GGUF header (the weights by layer,
 * the KV cache, and a fixed share for compute buffers), where the tool is missing or fails.
 */
export type EstimateSource = "measured" | "projected" | "estimated";

/**
 * The verdict of {@link SystemInfo.canRunModel}.
 */
export type CanRunModelResult = {
  possible: boolean
  /**
   * Why not, when `possible` is false.
   */
  reason?: string
  suggestion?: string
  /**
   * The estimate the verdict is based on; for a split model, this machine's share.
   */
  estimate: MemoryEstimate
  /**
   * With `rpcWorkers`: each worker's share, in order.
   */
  workers?: Array<RpcWorkerShare>
};

/**
 * A starting llama-server configuration: the largest context up to 8192 that fits, with as
 * many GPU layers as fit at that context.
 */
export type OptimalLlamaConfig = {
  threads: number
  contextSize: number
  gpuLayers: number
  parallelRequests: number
};

/**
 * The backend executables the library runs.
 */
export type BinaryKind = "llama-server" | "rpc-server" | "sd-cli" | "sd-server";

/**
 * An archive and its sha256.
 */
export type BinaryArchive = {
  url: string
  /**
   * sha256 of the archive, hex.
   */
  sha256: string
};

/**
 * One release archive of a backend, in the shape of genai-electron's release manifest.
 */
export type BinaryVariant = {
  /**
   * What the build needs from the machine; variants whose needs are not met are skipped.
   */
  type: 'cuda' | 'vulkan' | 'metal' | 'cpu'
  /**
   * `.zip` or `.tar.gz` URL.
   */
  url: string
  /**
   * sha256 of the archive, hex.
   */
  sha256: string
  /**
   * Runtime archives extracted next to the executable (the CUDA runtime on Windows).
   */
  dependencies?: Array<BinaryArchive>
};

/**
 * What a source build is for. One Vulkan build serves the CPU too: with no usable Vulkan
 * device (or with `gpuLayers: 0`) it runs on the CPU.
 */
export type SourceAccel = "auto" | "cpu" | "vulkan";

/**
 * A platform a source build can target from this one.
 */
export type CrossPlatform = "win32-x64";

/**
 * A pinned source archive and how to build it with CMake.
 */
export type SourceBuildSpec = {
  /**
   * Path of a `.tar.gz`/`.zip` file, or an http(s) URL.
   */
  archive: string
  /**
   * sha256 of the archive, hex; checked before anything is unpacked.
   */
  sha256: string
  /**
   * Folder of the top CMakeLists.txt inside the archive's top folder, e.g. `vendor/llama.cpp`
   * (llama-cpp-python's sdist).
   */
  subdir?: string
  /**
   * Extra CMake options after the lean defaults, e.g. `['-DGGML_CUDA=ON']`.
   */
  cmakeArgs?: Array<string>
  /**
   * Parallel compile jobs (default: all CPUs).
   */
  jobs?: number
  /**
   * What to build for (default `auto`).
   */
  accel?: SourceAccel
  /**
   * Build for another platform than this one, with its cross compiler (default: this
   * platform). `win32-x64` makes Windows executables on Linux with MinGW-w64, for the CPU. A
   * cross build's executables cannot run here: they are not probed and not installed for this
   * machine; the result's `path` is where they were built (under `workDir`).
   */
  platform?: CrossPlatform
};

/**
 * Options of {@link BinaryManager.ensureBinary}.
 */
export type EnsureBinaryOptions = {
  /**
   * Use this executable (probed; an error if missing or broken, never replaced silently).
   */
  path?: string
  /**
   * Release variants to try instead of the pinned ones (a mirror, a newer release).
   */
  variants?: Array<BinaryVariant>
  /**
   * Label of the release `variants` belong to; installs are kept per version.
   */
  version?: string
  /**
   * Build from source when no release variant works (or exists) here.
   */
  source?: SourceBuildSpec
};

/**
 * Where a resolved executable came from.
 */
export type BinaryOrigin = "path" | "env" | "installed" | "download" | "source";

/**
 * An executable ready to run, and where it came from.
 */
export type ResolvedBinary = {
  kind: BinaryKind
  /**
   * Absolute path of the executable.
   */
  path: string
  /**
   * What it runs on: `cpu`, `vulkan`, `cuda`, `metal` (a release or a source build; a Vulkan
   * build runs on the CPU where no Vulkan device is usable), or `given` for a path you
   * supplied.
   */
  variant: string
  /**
   * `path` option, environment variable, earlier install, fresh download, or source build.
   */
  origin: BinaryOrigin
  /**
   * First line of `--version`, when it was probed during this call.
   */
  version?: string
};

/**
 * What an install is doing.
 */
export type BinaryStage = "download" | "verify" | "extract" | "probe" | "build";

/**
 * Compile steps done and in all.
 */
export type BuildSteps = {
  done: number
  total: number
};

/**
 * How far an install of an executable is.
 */
export type BinaryProgress = {
  kind: BinaryKind
  stage: BinaryStage
  /**
   * The variant (`cpu`, `vulkan`, …), or `source`.
   */
  variant: string
  /**
   * URL, path or build step the stage works on.
   */
  detail: string
  /**
   * Bytes downloaded so far (download stage).
   */
  bytes: number
  /**
   * Bytes to download in all, when the server says (download stage).
   */
  total: number | null
  /**
   * Build stage, while compiling: steps done and in all, as the build tool counts them
   * (Ninja's `[12/345]`; Make's percentage as `{ done: 45, total: 100 }`).
   */
  steps: BuildSteps | null
};

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
 * One change of a server's status: every change emits exactly one.
 */
export type StateChange = {
  old: ServerStatus
  new: ServerStatus
  /**
   * Why: `start()`, `ready in 245 ms`, `llama-server stopped unexpectedly (signal 9)`, …
   */
  reason: string
  /**
   * `new` is `crashed` and an automatic restart follows (Node stays alive for it).
   */
  willRestart: boolean
};

/**
 * How a process ended.
 */
export type ExitInfo = {
  exitCode: number | null
  signal: number | null
};

/**
 * The lifecycle of a managed server, one event per transition. `I` is what a start carries:
 * the actor's [`Snapshot`], or the server's own info once its facade has added what it knows.
 */
export type ServerEvent<I> =
  | { "type": "state" } & StateChange
  | { "type": "starting" }
  | { "type": "started" } & I
  | { "type": "stopped" }
  | { "type": "crashed", logs: Array<string>, hang: boolean, exitCode: number | null, signal: number | null }
  | { "type": "restarted" } & I
  | { "type": "restart-failed", attempts: number, error: string };

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
   * VRAM its processes hold on NVIDIA GPUs (NVML); for llama-server, at least the buffers
   * llama.cpp reported on its devices as it loaded; `null` where that cannot be told.
   */
  vramBytes: number | null
};

export type KVCacheType = "f32" | "f16" | "bf16" | "q8_0" | "q5_1" | "q5_0" | "q4_1" | "q4_0" | "iq4_nl";

/**
 * How llama-server returns a model's reasoning (`--reasoning-format`).
 */
export type ReasoningFormat = "auto" | "deepseek" | "deepseek-legacy" | "none";

/**
 * llama.cpp's own fitting of unset arguments to free memory (`--fit`).
 */
export type FitMode = "on" | "off";

/**
 * What a llama-server serves: chat (`/v1/chat/completions`, `/v1/completions`), embeddings
 * (`/v1/embeddings`) or reranking (`/v1/rerank`). An embedding or rerank server answers only its
 * own routes.
 */
export type LlamaServerMode = "chat" | "embedding" | "rerank";

/**
 * How an embedding server pools a text's token vectors into one (llama-server's `--pooling`).
 */
export type Pooling = "none" | "mean" | "cls" | "last";

/**
 * Where the model's multimodal projector runs, or `off` (images and audio then refused).
 */
export type ProjectorPlacement = "auto" | "cpu" | "off";

/**
 * Speculative decoding: a small model of the same vocabulary drafts tokens, the model checks
 * them in one batch. Unset fields are llama-server's defaults.
 */
export type DraftConfig = {
  /**
   * An installed `llm` model to draft with; default: the model's own `draft` component.
   */
  modelId?: string
  /**
   * The draft's layers on the GPU (`--spec-draft-ngl`; default: all of them where the model
   * has a GPU).
   */
  gpuLayers?: number
  /**
   * Tokens drafted at most a step (`--spec-draft-n-max`, default 3).
   */
  maxTokens?: number
  /**
   * Tokens drafted at least for a draft to be checked (`--spec-draft-n-min`, default 0).
   */
  minTokens?: number
};

/**
 * The projector a start loads.
 */
export type ResolvedProjector = {
  path: string
  /**
   * On the GPU with the model's layers (`false`: kept on the CPU).
   */
  offload: boolean
};

/**
 * The draft model a start loads.
 */
export type ResolvedDraft = {
  /**
   * The model it came from: the started model's id (its `draft` component) or another's.
   */
  modelId: string
  path: string
  gpuLayers: number | null
  maxTokens: number | null
  minTokens: number | null
};

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
   * Address to bind (default `127.0.0.1`), or several, comma-separated (`127.0.0.1,::1`), as
   * llama-server's `--host` takes them: the port is served on each.
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
   * genai-electron 0.26's `modelAlias`: the model's name in `/v1/models` and in answers
   * (`--alias`). Default: the model's id (llama-server alone names it by its file's path).
   */
  modelAlias?: string
  /**
   * Jinja chat templates (`--jinja`; `false`: `--no-jinja`). Unset: llama-server's default.
   */
  jinja?: boolean
  /**
   * How a model's reasoning is returned (`--reasoning-format`).
   */
  reasoningFormat?: ReasoningFormat
  /**
   * Logical batch size (`--batch-size`).
   */
  batchSize?: number
  /**
   * `false`: `--no-cont-batching`.
   */
  continuousBatching?: boolean
  /**
   * `false`: read the model without mapping it. The pinned llama-server takes this, with
   * `useMlock`, as `--load-mode` (`none`, `mmap`, `mlock` or `mmap+mlock`).
   */
  useMmap?: boolean
  /**
   * Keep the model in RAM, never swapped (`--load-mode mlock` or `mmap+mlock`).
   */
  useMlock?: boolean
  /**
   * Full-size sliding-window-attention cache (`--swa-full`).
   */
  swaFull?: boolean
  /**
   * MiB of prompt cache kept in RAM (`--cache-ram`; -1: no limit, 0: none).
   */
  cacheRam?: number
  /**
   * Keep every mixture-of-experts weight on the CPU (`--cpu-moe`).
   */
  cpuMoe?: boolean
  /**
   * Keep the expert weights of the first N layers on the CPU (`--n-cpu-moe`).
   */
  nCpuMoe?: number
  /**
   * Where tensors go, as `<name pattern>=<buffer type>,…` (`--override-tensor`).
   */
  overrideTensors?: string
  /**
   * llama.cpp's own fitting of unset arguments to free memory (`--fit`; default `off`: the
   * library sizes the context and GPU layers itself).
   */
  fit?: FitMode
  /**
   * Without `contextSize`: the smallest context the chosen one may be (default 2048).
   */
  minimumContextSize?: number
  /**
   * Without `contextSize`: the context to start from, halving while it does not fit (default
   * 8192, or the model's own if smaller).
   */
  preferredContextSize?: number
  /**
   * Without `contextSize`: the largest context it may be.
   */
  maximumContextSize?: number
  /**
   * Require `Authorization: Bearer <apiKey>` (or `X-Api-Key`) on every request.
   */
  apiKey?: string
  /**
   * More llama-server arguments. The flags the library sets from this config are refused with a
   * `ValidationError`, in every spelling: `-m`/`--model`, `--host`, `--port`, `-t`/`--threads`,
   * `-c`/`--ctx-size`, `-ngl`/`--gpu-layers`/`--n-gpu-layers`, `-np`/`--parallel`,
   * `-fa`/`--flash-attn`, `-ctk`/`--cache-type-k`, `-ctv`/`--cache-type-v`, `--api-key`,
   * `--api-key-file`, `--rpc` (see `rpcWorkers`); so are other model sources (`-mu`/`--model-url`, `-hf`/`-hfr`/`--hf-repo`,
   * `-dr`/`--docker-repo`) and TLS (`--ssl-key-file`, `--ssl-cert-file`), which the gateway cannot speak;
   * behind the gateway, which answers CORS itself, so are llama-server's `--cors-*` flags.
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
   * Browser origins the gateway answers with CORS headers besides the pages of this machine
   * (`http://localhost:…`, `127.x.x.x`, `[::1]`); any other origin gets 403 (needs the gateway).
   */
  allowedOrigins?: Array<string>
  /**
   * Names besides loopback's (`localhost`, `127.0.0.1`, `[::1]`) by which clients may call the
   * gateway, as `Host` carries them (`my-app.test`, any port). Other names get 403
   * `INVALID_HOST`: that is what keeps a web page that points its own domain at 127.0.0.1 (DNS
   * rebinding) away from the port. A server bound to a non-loopback `host` also answers IP
   * addresses. Needs the gateway.
   */
  allowedHosts?: Array<string>
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
  /**
   * What the server serves (default `chat`): `embedding` answers `/v1/embeddings`, `rerank`
   * answers `/v1/rerank`; each on a port and gateway of its own, so an app runs one of each
   * beside its chat server (one {@link LlamaServerManager} each). A model is refused a mode
   * it cannot serve (see {@link ModelInfo.capabilities}): a reranker needs a classification
   * head; any model can embed.
   */
  mode?: LlamaServerMode
  /**
   * How an embedding server pools (`--pooling`); default: the model's own, else `mean`.
   */
  pooling?: Pooling
  /**
   * The model's `mmproj` projector (images, audio in chats): loaded by default where the model
   * has one, with its layers (`auto`); `cpu` keeps it off the GPU, `off` leaves it unloaded. The
   * memory check counts it.
   */
  projector?: ProjectorPlacement
  /**
   * Speculative decoding: on by default where the model has a `draft` component; `false` turns
   * it off; `{ modelId }` drafts with another installed model of the same vocabulary. The
   * memory check counts both models.
   */
  draft?: boolean | DraftConfig
};

/**
 * What keeps a running server alive: restarts after crashes, and the hang watchdog.
 */
export type RecoveryPolicy = {
  autoRestart: boolean
  maxRestarts: number
  /**
   * Milliseconds between watchdog health checks; 0 turns the watchdog off.
   */
  healthCheckIntervalMs: number
  /**
   * Failed health checks in a row (with the process alive) that count as a hang.
   */
  hangAfterFailures: number
};

/**
 * Everything a start needs, resolved (paths, numbers): what
 * {@link LlamaServerManager.getConfig} shows, the API key left out.
 */
export type ResolvedLlamaConfig = {
  modelId: string
  modelPath: string
  binary: string
  /**
   * `None`: a free port.
   */
  port: number | null
  host: string
  threads: number
  contextSize: number
  gpuLayers: number
  parallelRequests: number
  flashAttention: string | null
  /**
   * KV-cache element types (`f16`, `q8_0`, …).
   */
  cacheTypeK: KVCacheType | null
  cacheTypeV: KVCacheType | null
  extraArgs: Array<string>
  startupTimeoutMs: number
  logFile: string | null
  recovery: RecoveryPolicy
  /**
   * The public port is our gateway's (llama-server listens on an internal loopback port).
   */
  gateway: boolean
  /**
   * Browser origins the gateway answers (CORS); others are refused.
   */
  allowedOrigins: Array<string>
  /**
   * Names the gateway answers besides loopback's (`Host`); others are refused.
   */
  allowedHosts: Array<string>
  /**
   * Requests that may wait at the gateway while the server is not running yet.
   */
  maxQueuedRequests: number
  queueTimeoutMs: number
  /**
   * `host:port` of each rpc-server that holds a share of the model's layers.
   */
  rpcWorkers: Array<string>
  /**
   * What it serves: chat, embeddings or reranking.
   */
  mode: LlamaServerMode
  /**
   * The pooling an embedding server is given (`null`: the model's own).
   */
  pooling: Pooling | null
  /**
   * The multimodal projector it loads (the model's `mmproj`), if any.
   */
  projector: ResolvedProjector | null
  /**
   * The draft model it decodes speculatively with, if any.
   */
  draft: ResolvedDraft | null
  modelAlias: string | null
  jinja: boolean | null
  reasoningFormat: ReasoningFormat | null
  batchSize: number | null
  continuousBatching: boolean | null
  useMmap: boolean | null
  useMlock: boolean | null
  swaFull: boolean | null
  cacheRam: number | null
  cpuMoe: boolean | null
  nCpuMoe: number | null
  overrideTensors: string | null
  /**
   * `off` unless asked: the context and GPU layers come from the library's estimate, and
   * llama.cpp's dry-run allocation before the load would only cost time.
   */
  fit: FitMode
};

/**
 * What llama-server says it runs with as it loads: `load_tensors: offloaded 31/31 layers to
 * GPU`, `llama_context: n_ctx = 2048`, `load_model: initializing, n_slots = 1, …`.
 */
export type LlamaRunningWith = {
  /**
   * Layers on devices (llama.cpp's count: each block, then the output layer).
   */
  gpuLayers: number | null
  /**
   * The model's layers in that count.
   */
  layers: number | null
  contextSize: number | null
  parallelRequests: number | null
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
   * What it serves (`null` before its first start).
   */
  mode: LlamaServerMode | null
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
  /**
   * What llama-server said, as it last loaded, it runs with: the layers on devices of the
   * model's, the context and the slots (each `null` until its line is read).
   */
  runningWith: LlamaRunningWith
};

/**
 * The context and parallel slots every combination runs with.
 */
export type LlamaCalibrationProfile = {
  contextSize: number
  parallelRequests: number
};

/**
 * One combination of settings to measure.
 */
export type LlamaCalibrationCombo = {
  label?: string
  /**
   * `LlamaServerConfig` settings: `gpuLayers`, `swaFull`, `cacheTypeK`, `cacheTypeV`,
   * `flashAttention`, `cpuMoe`, `nCpuMoe`, `overrideTensors`, `threads`, `batchSize`, `cacheRam`.
   */
  overrides: Partial<Pick<LlamaServerConfig, 'gpuLayers' | 'swaFull' | 'cacheTypeK' | 'cacheTypeV' | 'flashAttention' | 'cpuMoe' | 'nCpuMoe' | 'overrideTensors' | 'threads' | 'batchSize' | 'cacheRam'>>
};

/**
 * What each combination is asked to do, timed: `cold-prefill` sends `prompt` with no cache;
 * `shared-prefix` sends `sharedPrefix` + each suffix in turn, the prefix cached after the first.
 */
export type LlamaCalibrationWorkload =
  | { "kind": "cold-prefill", id: string, prompt: string, nPredict: number, weight?: number }
  | { "kind": "shared-prefix", id: string, sharedPrefix: string, suffixes: Array<string>, nPredict: number, weight?: number };

/**
 * `llamaServer.calibrate(config)` (less `onProgress` and `signal`, which stay in JS).
 */
export type LlamaCalibrationRequest = {
  /**
   * An installed `llm` model.
   */
  modelId: string
  profile: LlamaCalibrationProfile | null
  /**
   * Each is started and measured in turn (default: one with no overrides).
   */
  combos?: Array<LlamaCalibrationCombo>
  /**
   * Settings every combination shares: the overrides' keys, `continuousBatching`, `useMmap`
   * and `useMlock`.
   */
  fixedConfig?: Partial<Pick<LlamaServerConfig, 'gpuLayers' | 'swaFull' | 'cacheTypeK' | 'cacheTypeV' | 'flashAttention' | 'cpuMoe' | 'nCpuMoe' | 'overrideTensors' | 'threads' | 'batchSize' | 'cacheRam' | 'continuousBatching' | 'useMmap' | 'useMlock' | 'extraArgs'>>
  /**
   * What each combination runs (default: a short cold prompt of 16 tokens).
   */
  workloads?: Array<LlamaCalibrationWorkload>
  /**
   * Timed runs of each workload after one warm-up (default 1, at most 20).
   */
  samples: number | null
  /**
   * Sampling seed of every request (default 42).
   */
  seed: number | null
  /**
   * Milliseconds a combination's server may take to load (default 60000).
   */
  startupTimeoutMs: number | null
  /**
   * Milliseconds one request may take (default 60000).
   */
  requestTimeoutMs: number | null
};

/**
 * Where a calibration is.
 */
export type LlamaCalibrationPhase = "preparing" | "starting" | "warmup" | "sampling" | "stopping" | "done";

/**
 * The active combination of a progress event.
 */
export type LlamaCalibrationCandidate = {
  comboIndex: number
  combo: LlamaCalibrationCombo
};

/**
 * A `calibration-progress` event, and `onProgress`'s argument.
 */
export type LlamaCalibrationProgress = {
  strategy: 'exact'
  phase: LlamaCalibrationPhase
  overallPercent: number
  elapsedMs: number
  comboCount: number
  activeCandidate: LlamaCalibrationCandidate | null
  workloadIndex: number | null
  workloadCount: number
  sampleIndex: number | null
  sampleCount: number
};

/**
 * How a combination's run ended.
 */
export type LlamaCalibrationStatus =
  | "ok"
  | "oom"
  | "startup-timeout"
  | "request-timeout"
  | "crashed"
  | "error";

/**
 * One request's timings, as llama-server reported them.
 */
export type LlamaCalibrationRequestTiming = {
  wallTimeMs: number
  promptTokens: number | null
  promptMs: number | null
  promptTokensPerSecond: number | null
  predictedTokens: number | null
  predictedMs: number | null
  predictedTokensPerSecond: number | null
  cachedTokens: number | null
};

export type LlamaCalibrationSample = {
  wallTimeMs: number
  requests: Array<LlamaCalibrationRequestTiming>
};

export type LlamaCalibrationWorkloadResult = {
  workloadId: string
  kind: LlamaCalibrationWorkload['kind']
  weight: number
  samples: Array<LlamaCalibrationSample>
  medianWallTimeMs: number | null
  error: string | null
};

/**
 * Bytes of one device's (or the host's) buffers.
 */
export type LlamaBufferBytes = {
  name: string
  modelBytes: number
  /**
   * The KV cache (and recurrent state).
   */
  contextBytes: number
  computeBytes: number
};

/**
 * What a measured combination held, and the flags it was measured with.
 */
export type LlamaCalibrationMemory = {
  /**
   * The highest resident memory of llama-server while it loaded and served the workloads.
   */
  peakRssBytes: number
  /**
   * Its buffers on the devices as llama.cpp allocated them (or what NVML saw, if more).
   */
  vramBytes: number
  /**
   * Per device (`Vulkan0`, `CUDA0`, …): the buffers llama.cpp allocated.
   */
  devices: Array<LlamaBufferBytes>
  /**
   * The buffers it allocated on the host (`CPU`, `…_Host`).
   */
  host: LlamaBufferBytes
  /**
   * llama-server's arguments that decide what it allocates (the model's path left out): an
   * estimate of a configuration with the same arguments and binary uses this measurement.
   */
  args: Array<string>
  binary: string
};

/**
 * One combination, started and measured.
 */
export type LlamaCalibrationRun = {
  combo: LlamaCalibrationCombo
  /**
   * The profile, the fixed settings and the combination's, and the GPU layers it ran with.
   */
  resolvedConfig: Partial<LlamaServerConfig>
  status: LlamaCalibrationStatus
  loadTimeMs: number | null
  /**
   * `/props`: the context and slots llama-server runs with.
   */
  effectiveContextSize: number | null
  effectiveParallelRequests: number | null
  workloadResults: Array<LlamaCalibrationWorkloadResult>
  /**
   * The workloads' median wall times, weighted and summed: lower is faster.
   */
  scoreMs: number | null
  /**
   * What it held; `null` where it did not load.
   */
  memory: LlamaCalibrationMemory | null
  error: string | null
  /**
   * llama-server's last lines, where the run failed.
   */
  stderrTail: string | null
};

/**
 * A combination not started: its configuration was refused before (the memory check).
 */
export type LlamaCalibrationSkippedCombo = {
  combo: LlamaCalibrationCombo
  reason: string
};

/**
 * The fastest combination that ran, and how to start it.
 */
export type LlamaCalibrationRecommendation = {
  combo: LlamaCalibrationCombo
  /**
   * Settings for `llamaServer.start()`, with the model's id.
   */
  startConfig: LlamaServerConfig
  scoreMs: number
};

export type LlamaCalibrationReportStatus = "complete" | "no-viable-candidate";

export type LlamaCalibrationModelIdentity = {
  id: string
  name: string
  size: number
};

/**
 * What `calibrate()` resolves with, as stored beside the model.
 */
export type LlamaCalibrationReport = {
  resultKind: 'report'
  strategy: 'exact'
  status: LlamaCalibrationReportStatus
  /**
   * ISO 8601.
   */
  createdAt: string
  model: LlamaCalibrationModelIdentity
  profile: LlamaCalibrationProfile
  fixedConfig: Partial<Pick<LlamaServerConfig, 'gpuLayers' | 'swaFull' | 'cacheTypeK' | 'cacheTypeV' | 'flashAttention' | 'cpuMoe' | 'nCpuMoe' | 'overrideTensors' | 'threads' | 'batchSize' | 'cacheRam' | 'continuousBatching' | 'useMmap' | 'useMlock' | 'extraArgs'>>
  combos: Array<LlamaCalibrationCombo>
  runs: Array<LlamaCalibrationRun>
  skippedCombos: Array<LlamaCalibrationSkippedCombo>
  selected: LlamaCalibrationRecommendation | null
  confidence: 'single-launch-measurement'
  warnings: Array<string>
};

/**
 * How stable-diffusion.cpp runs: `sd-cli` per image, or `sd-server` with the model kept loaded.
 */
export type DiffusionBackend = "one-shot" | "resident";

/**
 * What {@link DiffusionServerManager.start} runs. Unknown keys are a {@link ValidationError}.
 */
export type DiffusionServerConfig = {
  /**
   * An installed `diffusion` model; its components (`llm`, `vae`, `taesd`, …) are passed as
   * their flags.
   */
  modelId: string
  /**
   * `'auto'` (default): resident when free RAM holds twice the model plus 1 GiB, else
   * one-shot.
   */
  backend?: DiffusionBackend | 'auto'
  /**
   * A port, or `'auto'` for a free one (default 8081).
   */
  port?: number | 'auto'
  /**
   * Address to bind (default `127.0.0.1`).
   */
  host?: string
  /**
   * CPU threads (default: as {@link SystemRecommendations.threads}: physical cores less one
   * on up to 8 cores, less two on 9–16, 85% beyond).
   */
  threads?: number
  /**
   * An `sd-cli` to use instead of the managed one (one-shot).
   */
  binaryPath?: string
  /**
   * An `sd-server` to use instead of the managed one (resident).
   */
  serverBinaryPath?: string
  /**
   * More stable-diffusion.cpp arguments, e.g. `['--vae-on-cpu']`. The flags the library sets
   * are refused with a `ValidationError`, in every spelling: the model and its components
   * (`-m`/`--model`, `--diffusion-model`, `--clip_l`, `--clip_g`, `--t5xxl`, `--llm`,
   * `--llm_vision`, `--vae`, `--taesd`), `-t`/`--threads`, the request's fields
   * (`-p`/`--prompt`, `-n`/`--negative-prompt`, `-W`/`--width`, `-H`/`--height`, `--steps`,
   * `-s`/`--seed`, `-b`/`--batch-count`, `--cfg-scale`, `--sampling-method`),
   * `-o`/`--output`, `-l`/`--listen-ip`, `--listen-port` and `-M`/`--mode`.
   */
  extraArgs?: Array<string>
  /**
   * Require `Authorization: Bearer <apiKey>` (or `X-Api-Key`) on every route but `/health`.
   */
  apiKey?: string
  /**
   * Browser origins allowed to call the server (CORS) besides the pages of this machine
   * (`http://localhost:…`, `127.x.x.x`, `[::1]`); requests from other origins get 403.
   */
  allowedOrigins?: Array<string>
  /**
   * Names besides loopback's (`localhost`, `127.0.0.1`, `[::1]`) by which clients may call the
   * server, as `Host` carries them (`my-app.test`, any port). Other names get 403
   * `INVALID_HOST`: that is what keeps a web page that points its own domain at 127.0.0.1 (DNS
   * rebinding) away from the port. A server bound to a non-loopback `host` also answers IP
   * addresses.
   */
  allowedHosts?: Array<string>
  /**
   * Requests that may wait while one runs (1–64, default 2); beyond that, busy (HTTP 409).
   */
  maxQueue?: number
  /**
   * Resident: milliseconds without a request before `sd-server` is stopped to free its memory
   * (default 300000, 0: never).
   */
  idleTimeout?: number
  /**
   * Resident: milliseconds `sd-server` may take to load the model (default 120000).
   */
  startupTimeout?: number
  /**
   * Milliseconds an image may go without a line of output from stable-diffusion.cpp (loading,
   * a sampling step, decoding) before it fails with `BACKEND_STALLED` and the backend's
   * process is stopped (default 120000, 0: never). Raise it for very large images on a slow
   * CPU, where one sampling step can take minutes.
   */
  stallTimeout?: number
  /**
   * Largest request body, bytes (default 1 MiB; larger is HTTP 413).
   */
  maxBodyBytes?: number
  /**
   * Start even when the model's files and a 512×512 image do not fit in this machine's whole
   * RAM (checked against the total, not what is free: the ResourceOrchestrator frees memory
   * for images); without it such a start fails with {@link InsufficientResourcesError}.
   */
  force?: boolean
  /**
   * The seed's GPU layers. stable-diffusion.cpp has no layer count: `0` keeps everything on
   * the CPU (the GPUs are hidden from the backend: `CUDA_VISIBLE_DEVICES`,
   * `HIP_VISIBLE_DEVICES` empty, `GGML_DISABLE_VULKAN=1`; a Metal build on macOS cannot be
   * kept off the GPU and is refused: pass a CPU build's path); any other number leaves the
   * GPU in use.
   */
  gpuLayers?: number
  /**
   * The seed's VRAM budget, in MB: `--max-vram` caps the compute graph (run in segments that
   * fit); when the model and a 512×512 image exceed it, `--offload-to-cpu` keeps the weights
   * in RAM until needed; when the diffusion model alone does, `--clip-on-cpu` and
   * `--vae-on-cpu` move the text encoders and the VAE to the CPU. `getConfig().placement`
   * shows the flags chosen.
   */
  vramBudget?: number
  /**
   * genai-electron 0.26's name for the backend: `burst` keeps `sd-server` loaded between
   * images (`backend: 'resident'`), `single` loads the model for each one
   * (`backend: 'one-shot'`), `auto` chooses as `backend: 'auto'` does.
   */
  usageMode?: 'burst' | 'single' | 'auto'
  /**
   * genai-electron 0.26's name for `idleTimeout`.
   */
  idleTimeoutMs?: number
  /**
   * genai-electron 0.26's name for `stallTimeout`.
   */
  jobActivityTimeoutMs?: number
  /**
   * Run the text encoders on the CPU (`--clip-on-cpu`); `false` keeps them off it even when
   * `vramBudget` would move them.
   */
  clipOnCpu?: boolean
  /**
   * Run the VAE on the CPU (`--vae-on-cpu`); `false` as for `clipOnCpu`.
   */
  vaeOnCpu?: boolean
  /**
   * Keep the weights in RAM until they are needed (`--offload-to-cpu`); `false` as for
   * `clipOnCpu`.
   */
  offloadToCpu?: boolean
  /**
   * Flash attention in the diffusion model (`--diffusion-fa`).
   */
  diffusionFlashAttention?: boolean
  /**
   * genai-electron 0.26's images per sd-server request. Refused here: set `count` on each
   * image request instead.
   */
  batchSize?: never
};

/**
 * The resolved configuration of the running server (the API key only as present or not).
 */
export type ResolvedDiffusionConfig = {
  modelId: string
  host: string
  /**
   * The port it listens on (`port: 'auto'` resolved).
   */
  port: number | null
  backend: DiffusionBackend
  binary: string
  threads: number
  /**
   * The flags `vramBudget` chose (`--max-vram`, `--offload-to-cpu`, `--clip-on-cpu`,
   * `--vae-on-cpu`).
   */
  placement: Array<string>
  extraArgs: Array<string>
  /**
   * Milliseconds; `null`: never stopped for idleness.
   */
  idleTimeout: number | null
  startupTimeout: number
  /**
   * Milliseconds; `null`: no stall watchdog.
   */
  stallTimeout: number | null
  allowedOrigins: Array<string>
  allowedHosts: Array<string>
  apiKey: boolean
  maxQueue: number
  maxBodyBytes: number
};

/**
 * Where a generation is: loading the model, sampling (one step per iteration), decoding latents.
 */
export type ImageGenerationStage = "loading" | "diffusion" | "decoding";

/**
 * How far an image request is.
 */
export type ImageProgress = {
  stage: ImageGenerationStage
  currentStep: number
  totalSteps: number
  /**
   * Which image of the request (1-based) is being made.
   */
  currentImage: number
  /**
   * The images the request makes (`count`).
   */
  totalImages: number
  /**
   * The whole request, 0–100: loading counts 10%, each image's sampling and decoding the rest.
   */
  percentage: number
};

/**
 * Where a job is: `pending` when accepted (waiting for its turn, and for memory when the
 * orchestrator must make room), `in_progress` when the backend takes it, then how it ended.
 * genai-electron 0.26's words, which its clients (genai-lite) poll for.
 */
export type JobStatus = "pending" | "in_progress" | "complete" | "error" | "cancelled";

/**
 * What the image jobs report.
 */
export type ImageJobEvent =
  | { "type": "progress", id: string, stage: ImageGenerationStage, currentStep: number, totalSteps: number, currentImage: number, totalImages: number, percentage: number }
  | { "type": "job", id: string, status: JobStatus };

/**
 * stable-diffusion.cpp's sampling methods (`--sampling-method`).
 */
export type ImageSampler =
  | "euler"
  | "euler_a"
  | "heun"
  | "dpm2"
  | "dpm++2s_a"
  | "dpm++2m"
  | "dpm++2mv2"
  | "ipndm"
  | "ipndm_v"
  | "lcm"
  | "ddim_trailing"
  | "tcd"
  | "res_multistep"
  | "res_2s"
  | "er_sde";

/**
 * A LoRA an image applies: an installed `lora` model and how strongly.
 */
export type ImageLora = {
  /**
   * The id of an installed model of type `lora`.
   */
  modelId: string
  /**
   * How strongly it applies, -10 to 10 (default 1; 0 leaves it out, below 0 pushes away from it).
   */
  weight?: number
};

/**
 * A hires fix: the image is drawn at its size, enlarged, and drawn again over it at the larger
 * size, which keeps a model's composition at sizes beyond those it was trained for.
 */
export type ImageHires = {
  /**
   * The final image's width (a multiple of 8, 64–4096), with `height`; unset, the image's
   * size times `scale`.
   */
  width?: number
  /**
   * The final image's height, with `width`.
   */
  height?: number
  /**
   * How much larger the final image is, over 1 and at most 4 (default 2), when `width` and
   * `height` are unset; the result is rounded to a multiple of 8.
   */
  scale?: number
  /**
   * Steps of the second pass, 1–150 (default: the first pass's, scaled by the strength).
   */
  steps?: number
  /**
   * How much of the enlarged image the second pass redraws, 0–1 (default 0.7).
   */
  denoisingStrength?: number
  /**
   * How the image is enlarged (default `Latent`).
   */
  upscaler?: 'Latent' | 'Latent (nearest)' | 'Latent (nearest-exact)' | 'Latent (antialiased)' | 'Latent (bicubic)' | 'Latent (bicubic antialiased)' | 'Lanczos' | 'Nearest'
};

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
  /**
   * An image to start from (image-to-image): PNG, JPEG or WebP, as a Buffer or Uint8Array in
   * JS, base64 or a `data:` URL in JSON, of the size asked (unset `width`/`height` take its
   * size).
   */
  initImage?: Uint8Array | string
  /**
   * With `initImage`: how much of it is redrawn, 0–1 (default: the backend's, 0.75).
   */
  strength?: number
  /**
   * With `initImage` (inpainting): which part of it is redrawn, an image of the same size
   * read as grey levels: white is redrawn, black kept as it is (PNG, JPEG or WebP, sent as
   * `initImage` is).
   */
  mask?: Uint8Array | string
  /**
   * Images the model is shown beside the prompt (edit models: FLUX.1 Kontext, FLUX.2,
   * Qwen-Image-Edit), at most 8, each PNG, JPEG or WebP of any size (the backend scales it to
   * about the image's area), sent as `initImage` is.
   */
  referenceImages?: Array<Uint8Array | string>
  /**
   * A second, larger pass (hires fix); the image made has its size.
   */
  hires?: ImageHires
  /**
   * LoRAs to apply, in order, at most 16, each an installed `lora` model (default none).
   * `<lora:…>` tags in the prompt are refused: name them here.
   */
  loras?: Array<ImageLora>
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
   * The id of the job whose turn it is (being made, or waiting for its orchestrator to make
   * room); `getActiveGenerationId()`.
   */
  activeGenerationId: string | null
  /**
   * Requests waiting.
   */
  queued: number
  /**
   * Why the last start failed.
   */
  error: string | null
};

export type CalibrationSize = {
  width: number
  height: number
};

/**
 * How each image is made.
 */
export type DiffusionCalibrationGeneration = {
  steps: number
  cfgScale: number
  sampler: ImageSampler
  threads?: number
  /**
   * Images a request (1; 0.26's sd-server batch, refused above 1 as by `start()`).
   */
  batchSize?: number
};

/**
 * Where the model's parts run, as `diffusionServer.start()` takes the switches.
 */
export type DiffusionOffloadCombo = {
  label?: string
  clipOnCpu?: boolean
  vaeOnCpu?: boolean
  offloadToCpu?: boolean
  diffusionFlashAttention?: boolean
};

/**
 * `diffusionServer.calibrate(config)` (less `onProgress` and `signal`, which stay in JS).
 */
export type DiffusionCalibrationRequest = {
  /**
   * An installed `diffusion` model.
   */
  modelId: string
  /**
   * Each combination makes images of each size.
   */
  sizes: Array<CalibrationSize>
  generation: DiffusionCalibrationGeneration
  /**
   * genai-electron 0.26's backend choice, as `start()` takes it: `single` measures one-shot
   * images (`sd-cli`), `burst` and `auto` the resident `sd-server`.
   */
  usageMode?: 'burst' | 'single' | 'auto'
  /**
   * The backend to measure (default: `resident`, or `one-shot` with `usageMode: 'single'`):
   * a one-shot image's estimate is then its `sd-cli`'s measured peak.
   */
  backend?: DiffusionBackend
  /**
   * Placements to measure (default: one, as `start()` would choose).
   */
  combos?: Array<DiffusionOffloadCombo>
  /**
   * Timed images of each size after one warm-up (default 1, at most 10).
   */
  samples: number | null
  /**
   * The seed of every image (default 42).
   */
  seed: number | null
  prompt: string | null
};

/**
 * Where a calibration is.
 */
export type DiffusionCalibrationPhase = "preparing" | "warmup" | "sampling" | "done";

/**
 * A `calibration-progress` event, and `onProgress`'s argument.
 */
export type DiffusionCalibrationProgress = {
  phase: DiffusionCalibrationPhase
  comboIndex: number
  comboCount: number
  combo?: DiffusionOffloadCombo
  sizeIndex: number
  sizeCount: number
  size?: CalibrationSize
  /**
   * The sample under way (1-based; absent at the warm-up).
   */
  sample?: number
  sampleCount: number
  overallPercent: number
};

/**
 * The switches a combination ran with, as resolved.
 */
export type DiffusionCalibrationPlacement = {
  clipOnCpu: boolean
  vaeOnCpu: boolean
  offloadToCpu: boolean
  diffusionFlashAttention: boolean
};

export type DiffusionCalibrationStatus = "ok" | "oom" | "error";

/**
 * One size made with one combination.
 */
export type CalibrationRun = {
  size: CalibrationSize
  combo: DiffusionOffloadCombo
  resolved?: DiffusionCalibrationPlacement
  status: DiffusionCalibrationStatus
  /**
   * The median of the samples, milliseconds from the request to the image.
   */
  timeTakenMs?: number
  /**
   * `loadMs`: the warm-up's time beyond the median (the model's load, at the first size).
   */
  stageMs?: { loadMs?: number }
  /**
   * VRAM sd reported for the model's params, or NVML's figure for its process if more.
   */
  vramPeakBytes?: number
  /**
   * The highest resident memory of `sd-server` by the end of this size.
   */
  ramPeakBytes?: number
  /**
   * The params memory sd reported in RAM.
   */
  paramsRamBytes?: number
  samplesMs?: Array<number>
  error?: string
  /**
   * What an estimate matches: the backend executable and the placement switches.
   */
  binary?: string
};

/**
 * A combination not started: the start's own check refused it.
 */
export type DiffusionCalibrationSkippedCombo = {
  combo: DiffusionOffloadCombo
  reason: string
};

export type DiffusionCalibrationMachine = {
  gpuType?: string
  gpuName?: string
  vramBytes?: number
  vramAvailableBytes?: number
};

/**
 * What `calibrate()` resolves with, as stored beside the model.
 */
export type DiffusionCalibrationReport = {
  machine: DiffusionCalibrationMachine
  modelId: string
  steps: number
  cfgScale: number
  sampler: ImageSampler
  samples: number
  usageMode: 'burst' | 'single' | 'auto'
  /**
   * ISO 8601.
   */
  createdAt: string
  runs: Array<CalibrationRun>
  /**
   * The fastest combination at each size that ran, by `"<width>x<height>"`.
   */
  recommended: Record<string, DiffusionOffloadCombo>
  skippedCombos: Array<DiffusionCalibrationSkippedCombo>
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
export type OrchestratorPhase =
  | "idle"
  | "draining"
  | "offloading"
  | "generating"
  | "offloaded"
  | "reloading";

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
 * A request began or stopped waiting at a gateway.
 */
export type QueueEvent =
  | { "type": "queued", waiting: number }
  | { "type": "dequeued", waiting: number, waitedMs: number };

/**
 * What `getInfo()` shows.
 */
export type OrchestratorInfo = {
  phase: OrchestratorPhase
  /**
   * The requests waiting at the llama servers' gateways (all of them together).
   */
  queue: QueueInfo
  /**
   * The images waiting for their turn (not the one being made).
   */
  imagesWaiting: number
};

/**
 * A llama server as it was when it was offloaded.
 */
export type SavedState = {
  /**
   * Its place among the orchestrator's llama servers (0: `llamaServer`).
   */
  server: number
  resolved: ResolvedLlamaConfig
  wasRunning: boolean
  /**
   * Milliseconds since the Unix epoch.
   */
  savedAt: number
};

/**
 * Why the diffusion side gave its memory back.
 */
export type YieldReason = "reload" | "start";

/**
 * What the orchestrator reports, one event per step.
 */
export type OrchestratorEvent =
  | { "type": "phase", phase: OrchestratorPhase }
  | { "type": "offload" } & SavedState
  | { "type": "reload", server: number, status: ServerStatus, health: HealthStatus, pid: number | null, port: number | null, backendPort: number | null, modelId: string | null, mode: LlamaServerMode | null, startedAt: string | null, loadTimeMs: number | null, error: string | null, restarts: number, restartPending: boolean, rpcWorkers: Array<string>, runningWith: LlamaRunningWith }
  | { "type": "reload-failed", server: number, error: string }
  | { "type": "diffusion-released", reason: YieldReason };

/**
 * Bytes of RAM and of VRAM.
 */
export type ResourceBytes = {
  ram: number
  vram: number
};

/**
 * Where a {@link ResourceUsage} comes from: `measured`, a running process, or before it runs a
 * calibration of its configuration (a running process is never counted as
 * less than what it uses); `projected`, llama.cpp's own dry run of the LLM's configuration
 * (`llama-fit-params`); `estimated`, by arithmetic; `none`, nothing runs and nothing is asked.
 */
export type UsageSource = "measured" | "projected" | "estimated" | "none";

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
   * Before it runs: llama.cpp's projection for the LLM where its tool answers, else
   * arithmetic (GGUF for the LLM; files and working set for an image).
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
 * One running llama server as the orchestrator weighs it.
 */
export type ServerUsage = {
  /**
   * Its place among the orchestrator's llama servers (0: `llamaServer`, the first given).
   */
  server: number
  mode: LlamaServerMode
  /**
   * Its public port.
   */
  port: number | null
  usage: ResourceUsage
  /**
   * Milliseconds since its gateway last served a request (or since it started).
   */
  idleMs: number
  /**
   * The image needs it offloaded (chosen by the policy in `docs/API.md`).
   */
  offload: boolean
};

/**
 * What the running llama servers and an image need, what is free, and which servers must make
 * room.
 */
export type ResourceEstimate = {
  /**
   * The running llama servers together.
   */
  llm: ResourceUsage
  /**
   * Each running llama server, and whether this image needs it offloaded.
   */
  servers: Array<ServerUsage>
  diffusion: ResourceUsage
  /**
   * Free now, as the system reports it.
   */
  available: ResourceBytes
  /**
   * What the servers together may use: the budget, or what is free plus what they hold.
   */
  budget: ResourceBytes
  bottleneck: Bottleneck
  /**
   * A llama server runs, and they and the image plus the headroom exceed the budget: the
   * servers marked `offload` go.
   */
  needsOffload: boolean
};

export type ModelType = "llm" | "diffusion" | "lora" | "upscaler";

/**
 * Roles of a model's extra files: a diffusion model's (each passed to its stable-diffusion.cpp
 * flag), and an `llm` model's multimodal projector and draft model (llama-server's).
 */
export type ComponentRole =
  | "clip_l"
  | "clip_g"
  | "t5xxl"
  | "llm"
  | "llm_vision"
  | "vae"
  | "taesd"
  | "mmproj"
  | "draft";

/**
 * A task an `llm` model serves, as llama-server runs it.
 */
export type ModelCapability = "chat" | "vision" | "audio" | "embedding" | "rerank";

/**
 * Where a file comes from: a plain URL, or a file of a Hugging Face repository.
 */
export type FileSourceConfig = {
  source: 'url' | 'huggingface'
  /**
   * With `source: 'url'`: an http(s) URL.
   */
  url?: string
  /**
   * With `source: 'huggingface'`: `owner/name`.
   */
  repo?: string
  /**
   * With `source: 'huggingface'`: the path of the file in the repository.
   */
  file?: string
  /**
   * With `source: 'huggingface'`: branch, tag or commit (default `main`); resolved to a
   * commit, which is recorded.
   */
  revision?: string
  /**
   * Expected SHA-256: 64 hex digits in either case, optionally prefixed `sha256:`. The
   * download fails, and nothing is kept, when it differs; a malformed one is a
   * `ValidationError` before any byte is fetched.
   */
  checksum?: string
};

/**
 * One extra file of a model: a diffusion model's text encoder, VAE, …, or an `llm` model's
 * `mmproj` projector or `draft` model.
 */
export type ComponentDownload = {
  role: ComponentRole
  /**
   * Its license facts, recorded with it.
   */
  provenance?: ArtifactProvenance
  source: 'url' | 'huggingface'
  /**
   * With `source: 'url'`: an http(s) URL.
   */
  url?: string
  /**
   * With `source: 'huggingface'`: `owner/name`.
   */
  repo?: string
  /**
   * With `source: 'huggingface'`: the path of the file in the repository.
   */
  file?: string
  /**
   * With `source: 'huggingface'`: branch, tag or commit (default `main`); resolved to a
   * commit, which is recorded.
   */
  revision?: string
  /**
   * Expected SHA-256: 64 hex digits in either case, optionally prefixed `sha256:`. The
   * download fails, and nothing is kept, when it differs; a malformed one is a
   * `ValidationError` before any byte is fetched.
   */
  checksum?: string
};

/**
 * What {@link ModelManager.downloadModel} fetches. A name ending in `-00001-of-0000N.gguf`
 * brings all N shards.
 */
export type DownloadRequest = {
  /**
   * Display name; the model's id is derived from it (lower case, filesystem-safe).
   */
  name: string
  type: ModelType
  /**
   * Extra files: a diffusion model's (the top-level source is the diffusion model itself), or an
   * `llm` model's `mmproj` (a multimodal projector made for it) and `draft` (a small model of
   * the same vocabulary, for speculative decoding). Each is checked as the model is: its
   * `checksum`, its GGUF header, and its place (a projector's architecture is `clip`; a
   * draft's vocabulary is the model's); one that fails registers nothing.
   */
  components?: Array<ComponentDownload>
  /**
   * Milliseconds without a byte before the connection is given up and resumed (default
   * 30000). After three resumptions (250 ms, 500 ms, 1 s apart) the download fails with a
   * {@link DownloadError} and its `.part` stays, so calling `downloadModel` again resumes it.
   */
  stallTimeout?: number
  /**
   * The model file's license facts, recorded with the model.
   */
  provenance?: ArtifactProvenance
  /**
   * The file names of a split model's shards, in order, where the first's name does not
   * say them (`-00001-of-0000N.gguf` does); they lie beside it (same folder of the URL or repo).
   */
  shardFiles?: Array<string>
  /**
   * genai-electron 0.26's folder shared by the files of several models. Accepted, and not
   * needed: each model keeps its files in its own folder, and a file already installed from
   * the same URL is hard-linked instead of fetched again, so a shared file is kept once.
   */
  modelDirectory?: string
  source: 'url' | 'huggingface'
  /**
   * With `source: 'url'`: an http(s) URL.
   */
  url?: string
  /**
   * With `source: 'huggingface'`: `owner/name`.
   */
  repo?: string
  /**
   * With `source: 'huggingface'`: the path of the file in the repository.
   */
  file?: string
  /**
   * With `source: 'huggingface'`: branch, tag or commit (default `main`); resolved to a
   * commit, which is recorded.
   */
  revision?: string
  /**
   * Expected SHA-256: 64 hex digits in either case, optionally prefixed `sha256:`. The
   * download fails, and nothing is kept, when it differs; a malformed one is a
   * `ValidationError` before any byte is fetched.
   */
  checksum?: string
};

/**
 * What {@link ModelManager.importModel} registers.
 */
export type ImportModelRequest = {
  /**
   * The model file (a diffusion set's diffusion model): a GGUF file for an LLM.
   */
  path: string
  type: ModelType
  /**
   * Display name; the model's id is derived from it, as for a download.
   */
  name: string
  /**
   * The model's other files, by role: a diffusion set's, or an `llm` model's `mmproj` and
   * `draft`.
   */
  components?: Partial<Record<ComponentRole, string>>
};

/**
 * Where `updateModelMetadata` reads a model's GGUF header (genai-electron 0.26's strategies):
 * its file, its source URL, or one then the other (default `local-remote`).
 */
export type MetadataFetchStrategy = "local-only" | "remote-only" | "local-remote" | "remote-local";

/**
 * A file's license facts, as genai-electron 0.26 records them.
 */
export type ArtifactProvenance = {
  license: string
  licenseUrl?: string
  /**
   * When the license was last checked (ISO 8601).
   */
  lastCheckedOn?: string
  note?: string
};

/**
 * A file of a download begins.
 */
export type FileStart = {
  downloadId: string
  modelId: string
  /**
   * A diffusion model's component role; `null` for the model file (or a shard of it).
   */
  role: string | null
  file: string
  /**
   * 1-based, of `total` files.
   */
  index: number
  total: number
};

/**
 * What {@link ModelManager.adoptModels} did with each model of the folder.
 */
export type Adoption = {
  adopted: Array<ModelInfo>
  skipped: Array<SkippedModel>
};

/**
 * A model of the folder that was not adopted, and why.
 */
export type SkippedModel = {
  /**
   * Its record (`models/<type>/<id>.json`).
   */
  path: string
  reason: string
};

/**
 * Options of {@link ModelManager.readGGUFMetadata}.
 */
export type ReadGGUFOptions = {
  /**
   * Keep arrays of any length (a tokenizer's tokens) instead of summarising long ones; up to
   * 2 Mi items and 64 MiB of strings.
   */
  fullArrays?: boolean
  /**
   * URL only: milliseconds any one network read may wait (default 30000); the whole read
   * gets ten times that.
   */
  timeout?: number
};

/**
 * The facts of a GGUF header that sizing and display need, keys as in GGUF
 * (`llama.block_count` → `block_count`), plus every key in `raw`. A fact the header lacks is
 * left out, not `null`.
 */
export type GGUFMetadata = {
  version: number
  tensor_count: number
  kv_count: number
  architecture?: string
  general_name?: string
  file_type?: number
  block_count?: number
  context_length?: number
  embedding_length?: number
  feed_forward_length?: number
  /**
   * One count, or one a layer.
   */
  attention_head_count?: number | number[]
  attention_head_count_kv?: number | number[]
  attention_key_length?: number
  attention_value_length?: number
  /**
   * Tokens a sliding-window attention layer attends to.
   */
  attention_sliding_window?: number
  /**
   * Which layers attend to a sliding window: a period (every n-th layer attends to all), or
   * one flag a layer (true: sliding). Without it, the architecture's own period.
   */
  attention_sliding_window_pattern?: number | boolean[]
  expert_count?: number
  expert_used_count?: number
  /**
   * Each expert's feed-forward width, where it differs from `feed_forward_length`.
   */
  expert_feed_forward_length?: number
  rope_dimension_count?: number
  vocab_size?: number
  /**
   * Bytes from the start of tensor data to the end of the file (when the file size is known).
   */
  tensor_data_size?: number
  /**
   * Offset of the tensor data from the start of the file.
   */
  tensor_data_offset: number
  /**
   * The smallest file that holds every tensor the header lists: data offset plus the end of
   * the last tensor (a lower bound when a tensor has a type this reader does not know).
   */
  required_file_size: number
  /**
   * Every key of the header. Arrays of up to 1,024 items are kept while 65,536 items in all
   * last, strings while 4 MiB in all last; beyond that a value is summarised as
   * `{ type: 'array', itemType, length }` or `{ type: 'string', length }`. Keys are plain own
   * properties (a key named `__proto__` cannot change the object).
   */
  raw: Record<string, unknown>
};

/**
 * Where a file came from: enough to fetch the same bytes again.
 */
export type ModelSource = {
  /**
   * `file`: imported from this machine (`importModel`), the url a `file://` one.
   */
  type: 'url' | 'huggingface' | 'file'
  /**
   * The exact URL the bytes came from (for Hugging Face, pinned to the commit).
   */
  url: string
  repo?: string
  file?: string
  /**
   * The commit the revision resolved to.
   */
  revision?: string
};

/**
 * One file of a model: a shard of a split GGUF, or a component of a diffusion model.
 */
export type StoredFile = {
  path: string
  size: number
  /**
   * sha256, hex, computed while downloading.
   */
  checksum: string
  source: ModelSource
  provenance?: ArtifactProvenance
};

/**
 * An installed model, as genai-electron's API shapes it (camelCase, `ggufMetadata`'s keys
 * snake_case as in GGUF).
 */
export type ModelInfo = {
  id: string
  name: string
  type: ModelType
  /**
   * Bytes of all the model's files.
   */
  size: number
  /**
   * The primary file: the model, its first shard, or the diffusion model.
   */
  path: string
  /**
   * ISO 8601.
   */
  downloadedAt: string
  source: ModelSource
  /**
   * sha256 of the primary file, hex.
   */
  checksum: string
  /**
   * The GGUF header's facts (for GGUF files).
   */
  ggufMetadata?: GGUFMetadata
  /**
   * The extra files by role: a diffusion model's, or an `llm` model's `mmproj` and `draft`.
   */
  components?: Partial<Record<ComponentRole, StoredFile>>
  /**
   * Every shard of a split GGUF, in order, the first being `path`.
   */
  shards?: Array<StoredFile>
  /**
   * The model file's license facts, as the download gave them.
   */
  provenance?: ArtifactProvenance
  /**
   * What an `llm` model can be asked to do, from its GGUF headers (see
   * {@link ModelCapability}); empty for other types.
   */
  capabilities?: Array<ModelCapability>
};

/**
 * How far a download is.
 */
export type DownloadProgress = {
  downloadId: string
  modelId: string
  /**
   * The file being fetched.
   */
  file: string
  /**
   * Bytes of all the model's files so far.
   */
  downloaded: number
  /**
   * Bytes in all, as far as known (the current file and those before it).
   */
  total: number | null
  percentage: number | null
  /**
   * Bytes per second since the download started.
   */
  speed: number
  /**
   * Seconds left at the current speed, when the total is known.
   */
  estimatedTimeRemaining: number | null
};

/**
 * A model folder that listing skipped.
 */
export type DamagedModel = {
  /**
   * The folder; its name is the id to give {@link ModelManager.deleteModel} to remove it.
   */
  path: string
  /**
   * Why: an unreadable record, one that names another id or type, a file outside the
   * folder, a missing or resized file.
   */
  reason: string
};

/**
 * What a model manager reports while it works.
 */
export type ModelManagerEvent =
  | { "type": "progress" } & DownloadProgress
  | { "type": "file-start" } & FileStart
  | { "type": "damaged" } & DamagedModel;

/**
 * A file that failed verification: its sha256 differs, or it cannot be read.
 */
export type FileProblem = {
  path: string
  /**
   * The sha256 recorded at download.
   */
  expected?: string
  /**
   * The sha256 it has now.
   */
  actual?: string
  /**
   * Why it could not be read.
   */
  error?: string
};

/**
 * What {@link ModelManager.verifyModel} found.
 */
export type ModelVerification = {
  valid: boolean
  /**
   * Files that are missing or whose sha256 differs.
   */
  problems: Array<FileProblem>
};

/**
 * Bytes the installed models take, by type.
 */
export type StorageUsage = {
  llm: number
  diffusion: number
  lora: number
  upscaler: number
  total: number
  /**
   * Number of installed models.
   */
  models: number
};
