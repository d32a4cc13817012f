// Compiled (not run) by module.test.js with --strict: the typings must allow real usage.
import {
  BinaryError,
  type BinaryProgressEvent,
  binaries,
  CancelledError,
  type CanRunModelResult,
  configure,
  type DataPaths,
  type DiffusionServerInfo,
  type DownloadProgressEvent,
  diffusionServer,
  ERROR_CODES,
  type ErrorCode,
  GenaiElectronError,
  getDataPaths,
  type HealthStatus,
  type ImageGenerationProgress,
  type ImageGenerationResult,
  LlamaServerManager,
  type LogEntry,
  LogManager,
  llamaServer,
  type MemoryEvent,
  type MemoryUsage,
  type ModelInfo,
  ModelNotFoundError,
  modelManager,
  PortInUseError,
  type ResolvedBinary,
  type ResourceEstimate,
  ResourceOrchestrator,
  type RpcServerInfo,
  RpcServerManager,
  rpcServer,
  type SavedLLMState,
  type ServerInfo,
  type StateEvent,
  type SystemCapabilities,
  SystemInfo,
  systemInfo,
  ValidationError,
} from 'genai-electron'

async function main(): Promise<void> {
  configure({ dataDir: '/tmp/genai-electron-typed' })
  const paths: DataPaths = await getDataPaths()
  const llmDir: string = paths.models.llm

  const caps: SystemCapabilities = await systemInfo.detect()
  const vram: number | undefined = caps.gpu.vram
  const threads: number = caps.recommendations.threads
  const free: number = systemInfo.getMemoryInfo().available

  const verdict: CanRunModelResult = await systemInfo.canRunModel(
    { size: 98_362_432, ggufMetadata: { block_count: 30, attention_head_count: [9, 9] } },
    { contextSize: 2048, cacheTypeK: 'q8_0' },
  )
  if (!verdict.possible) console.log(verdict.reason, verdict.suggestion, verdict.estimate.ram)

  const config = await systemInfo.getOptimalConfig({ size: 1e9 })
  const ctx: number = config.contextSize

  const info = SystemInfo.getInstance()
  info.on('memory', (event: MemoryEvent) => console.log(event.available))
  info.startMonitoring({ intervalMs: 1000 })
  info.stopMonitoring()

  try {
    configure({ dataDir: '' })
  } catch (err) {
    if (err instanceof ValidationError) console.log(err.code, err.details.suggestion)
    else if (err instanceof GenaiElectronError) console.log(err.code)
  }
  binaries.on('binary-progress', (e: BinaryProgressEvent) =>
    console.log(e.stage, e.bytes, e.total ?? 0, e.steps?.done ?? 0),
  )
  try {
    const bin: ResolvedBinary = await binaries.ensureBinary('llama-server', {
      variants: [{ type: 'cpu', url: 'https://example.invalid/x.tar.gz', sha256: '0'.repeat(64) }],
      source: {
        archive: '/src/llama.tar.gz',
        sha256: '0'.repeat(64),
        subdir: 'vendor/llama.cpp',
        cmakeArgs: ['-DGGML_CUDA=ON'],
      },
    })
    const origin: 'path' | 'env' | 'installed' | 'download' | 'source' = bin.origin
    console.log(bin.path, origin)
  } catch (err) {
    if (err instanceof BinaryError) console.log(err.details.tried)
  }
  modelManager.on('progress', (e: DownloadProgressEvent) => console.log(e.modelId, e.percentage ?? 0, e.speed))
  const model: ModelInfo = await modelManager.downloadModel({
    source: 'huggingface',
    repo: 'owner/name',
    file: 'model-00001-of-00002.gguf',
    revision: 'main',
    name: 'Example',
    type: 'diffusion',
    components: [{ role: 'taesd', source: 'url', url: 'https://example.invalid/taesd.gguf', checksum: '0'.repeat(64) }],
    onProgress: (done: number, total: number) => console.log(done / total),
  })
  const taesd: string | undefined = model.components?.taesd?.path
  const blocks = model.ggufMetadata?.block_count
  const ok: boolean = await modelManager.verifyModel(model.id)
  try {
    await modelManager.getModelInfo('missing')
  } catch (err) {
    if (err instanceof ModelNotFoundError) console.log(err.code)
  }
  console.log(taesd, blocks, ok, (await modelManager.getStorageUsage()).total, modelManager.cancelDownload(model.id))
  llamaServer.on('crashed', (e) => console.log(e.exitCode, e.signal, e.logs.length))
  llamaServer.on('log', (e) => console.log(e.line))
  llamaServer.on('state', (e: StateEvent) => console.log(e.old, e.new, e.reason, e.willRestart))
  llamaServer.on('binary-progress', (e) => console.log(e.kind, e.stage))
  diffusionServer.on('backend-state', (e) => console.log(e.type === 'backend-state', e.new))
  diffusionServer.on('crashed', (e) => console.log(e.backend, e.signal, e.logs.length))
  try {
    const server: ServerInfo = await llamaServer.start({
      modelId: model.id,
      port: 'auto',
      flashAttention: 'auto',
      extraArgs: ['--jinja'],
      allowedOrigins: ['http://localhost:5173'],
      maxQueuedRequests: 8,
      queueTimeout: 60_000,
    })
    console.log(server.backendPort, server.restartPending, llamaServer.getConfig()?.gateway)
    console.log(server.port, server.restarts, llamaServer.getConfig()?.contextSize, await llamaServer.getLogs(10))
    const usage: MemoryUsage | null = await llamaServer.getMemoryUsage()
    const request = llamaServer.getStartConfig()
    if (request) await llamaServer.start({ ...request, port: 'auto' })
    console.log(usage?.rssBytes, usage?.vramBytes, (await llamaServer.restart()).status === 'restarting')
    await llamaServer.stop()
    // A vision model with its projector and draft; an embedding server beside it.
    const vlm: ModelInfo = await modelManager.downloadModel({
      source: 'url',
      url: 'https://example.invalid/model.gguf',
      name: 'VLM',
      type: 'llm',
      components: [
        { role: 'mmproj', source: 'url', url: 'https://example.invalid/mmproj.gguf' },
        { role: 'draft', source: 'url', url: 'https://example.invalid/draft.gguf' },
      ],
    })
    const seesImages: boolean = vlm.capabilities?.includes('vision') ?? false
    await llamaServer.start({ modelId: vlm.id, projector: seesImages ? 'cpu' : 'off', draft: { maxTokens: 8 } })
    const embedder = new LlamaServerManager()
    const embedding: ServerInfo = await embedder.start({
      modelId: vlm.id,
      mode: 'embedding',
      pooling: 'mean',
      draft: false,
    })
    console.log(embedding.mode, embedder.getConfig()?.pooling, llamaServer.getConfig()?.projector?.offload)
  } catch (err) {
    if (err instanceof PortInUseError) console.log(err.details.port)
  }
  diffusionServer.on('progress', (e) => console.log(e.id, e.stage, e.percentage))
  diffusionServer.on('job', (e) => console.log(e.id, e.status))
  const sd: DiffusionServerInfo = await diffusionServer.start({
    modelId: model.id,
    port: 'auto',
    backend: 'resident',
    idleTimeout: 60_000,
  })
  const controller = new AbortController()
  try {
    const result: ImageGenerationResult = await diffusionServer.generateImage({
      prompt: 'a lighthouse at dusk',
      width: 512,
      height: 512,
      steps: 20,
      sampler: 'euler_a',
      onProgress: (step: number, total: number, stage: string, percentage: number, p: ImageGenerationProgress) =>
        console.log(step / total, stage, percentage, p.currentImage, p.totalImages),
      signal: controller.signal,
    })
    console.log(
      result.image.length,
      result.seeds,
      sd.port,
      sd.backendStatus,
      sd.backendPort,
      diffusionServer.getConfig()?.backend,
    )
    console.log((await diffusionServer.getMemoryUsage())?.pids)
    // genai-electron 0.26's names.
    const health: 'ok' | 'loading' | 'error' | 'unknown' = await llamaServer.getHealthStatus()
    const active: string | undefined = diffusionServer.getActiveGenerationId()
    const entries = await diffusionServer.getStructuredLogs(10)
    console.log(
      health,
      active,
      entries[0]?.level,
      llamaServer.getStatus(),
      llamaServer.getPid(),
      modelManager.isDownloading(),
    )
    modelManager.cancelDownload()
    llamaServer.on('crashed', (e) => console.log(e.code, e.exitCode))
    console.log((await systemInfo.getGPUInfo()).type, diffusionServer.getOrchestrator()?.getInfo().phase)
  } catch (err) {
    if (err instanceof CancelledError) console.log(err.code)
  }
  const orchestrator = new ResourceOrchestrator(systemInfo, llamaServer, diffusionServer, modelManager, {
    ramBudgetBytes: 8e9,
    drainTimeout: 10_000,
    maxQueuedRequests: 8,
    queueTimeout: 60_000,
    policy: 'collate',
    maxChatWait: 10_000,
    reloadAfterIdle: 60_000,
  })
  orchestrator.on('reload-failed', (e) => console.log(e.error))
  orchestrator.on('diffusion-released', (e) => console.log(e.reason === 'start'))
  const worker: RpcServerInfo = await new RpcServerManager().start({
    port: 'auto',
    threads: 2,
    devices: ['CPU'],
    cache: true,
  })
  rpcServer.on('crashed', (e) => console.log(e.exitCode, e.logs))
  const split: ServerInfo = await llamaServer.start({
    modelId: 'tiny',
    rpcWorkers: [worker.endpoint ?? '127.0.0.1:50052'],
  })
  console.log(split.rpcWorkers, rpcServer.getEndpoint())
  const llm: ServerInfo = await orchestrator.startLlamaServer({ modelId: 'tiny', port: 'auto' })
  console.log(llm.port, orchestrator.getInfo().imagesWaiting, diffusionServer.getConfig()?.stallTimeout)
  await orchestrator.offloadLLM()
  await orchestrator.reloadLLM()
  const batch: ImageGenerationResult[] = await orchestrator.orchestrateBatchGeneration({ prompt: 'p', count: 2 })
  console.log(batch.length)
  orchestrator.on('phase', (e) => console.log(e.phase))
  const estimate: ResourceEstimate = await orchestrator.estimate({ width: 1024, height: 1024 })
  const saved: SavedLLMState | undefined = orchestrator.getSavedState()
  console.log(estimate.needsOffload, estimate.llm.source, saved?.savedAt.getTime(), orchestrator.getInfo().phase)
  const image = await orchestrator.orchestrateImageGeneration({ prompt: 'a boat', signal: controller.signal })
  console.log(image.seed, await orchestrator.wouldNeedOffload())
  const cancelled: boolean = diffusionServer.cancelImageGeneration()
  await diffusionServer.stop()
  console.log(llmDir, vram, threads, free, ctx, cancelled)
}

void main()

// Log lines and health, as the seed's panel reads them.
async function panel(): Promise<void> {
  const entries: (LogEntry | null)[] = (await diffusionServer.getLogs(50)).map((line) => LogManager.parseEntry(line))
  const health: HealthStatus = diffusionServer.getInfo().health
  const crashed: boolean = diffusionServer.getInfo().status === 'crashed' || llamaServer.getInfo().health === 'error'
  console.log(
    entries.filter((e) => e?.level === 'error').length,
    health,
    crashed,
    LogManager.formatEntry({ message: 'x', level: 'warn' }),
  )
}
void panel()

// Branching on the fine codes, typed.
function describe(err: unknown): string {
  if (err instanceof GenaiElectronError) {
    const code = err.code
    if (code === 'SERVER_ALREADY_RUNNING' || code === 'QUEUE_FULL')
      return `retry later (${code}, ${ERROR_CODES.QUEUE_FULL.status})`
  }
  const known: ErrorCode = 'INSUFFICIENT_RESOURCES'
  return ERROR_CODES[known].meaning
}
void describe
