// The main process's IPC handlers: every channel of shared/api.ts, calling genai-electron through
// its public entry point. The same function serves Electron's ipcMain and the web mode's fake one.

import { randomUUID } from 'node:crypto'
import type * as Genai from 'genai-electron'
import type {
  ChatAnswer,
  ChatRequest,
  DownloadRequest,
  ErrorInfo,
  ImageRequest,
  ImageResult,
  OffloadDemoResult,
  PanelEventName,
  PanelEvents,
  Reply,
  ResourceSnapshot,
  SavedStateInfo,
  SearchRequest,
  SearchResult,
  SearchStartRequest,
  SearchStatus,
  UpscaleRequest,
} from '../shared/api'

type Lib = typeof Genai

/** What Electron's ipcMain offers that the handlers use. */
export interface IpcMainLike {
  handle(channel: string, listener: (event: unknown, ...args: any[]) => unknown): void
  removeHandler?(channel: string): void
}

export type Emit = <E extends PanelEventName>(name: E, payload: PanelEvents[E]) => void

export interface Handlers {
  /** Stops both servers and detaches from the library's events (before the app quits). */
  dispose(): Promise<void>
}

/** Turns anything thrown into what the renderer shows: code, message and suggestion. */
export function describeError(error: unknown): ErrorInfo {
  if (error instanceof Error) {
    const { code, details } = error as Error & { code?: unknown; details?: { suggestion?: unknown } }
    const suggestion = typeof details?.suggestion === 'string' ? details.suggestion : undefined
    return { name: error.name, code: typeof code === 'string' ? code : 'UNEXPECTED', message: error.message, ...(suggestion ? { suggestion } : {}) }
  }
  return { name: 'Error', code: 'UNEXPECTED', message: String(error) }
}

const pngDataUrl = (image: Buffer) => `data:image/png;base64,${image.toString('base64')}`

function imageResult(result: Genai.ImageGenerationResult): ImageResult {
  return {
    imageDataUrl: pngDataUrl(result.image),
    imageDataUrls: result.images.map(pngDataUrl),
    timeTaken: result.timeTaken,
    seed: result.seed,
    seeds: result.seeds,
    width: result.width,
    height: result.height,
  }
}

export function registerHandlers(ipcMain: IpcMainLike, emit: Emit, lib: Lib = require('genai-electron')): Handlers {
  const { systemInfo, modelManager, llamaServer, diffusionServer, ResourceOrchestrator, LogManager } = lib
  const detach = forwardEvents(lib, emit)
  const channels: string[] = []

  /** Registers `fn` on `channel`, answering a Reply so the error's code survives IPC. */
  function handle(channel: string, fn: (...args: any[]) => unknown) {
    channels.push(channel)
    ipcMain.handle(channel, async (_event, ...args): Promise<Reply> => {
      try {
        return { ok: true, value: (await fn(...args)) ?? null }
      } catch (error) {
        return { ok: false, error: describeError(error) }
      }
    })
  }

  const parseLogs = (lines: string[]): Genai.LogEntry[] =>
    lines.map((line) => LogManager.parseEntry(line) ?? { timestamp: new Date().toISOString(), level: 'info', message: line })

  // System
  handle('system:detect', (forceRefresh?: boolean) => systemInfo.detect(Boolean(forceRefresh)))
  handle('system:memory', () => systemInfo.getMemoryInfo())

  // Models: progress reaches the renderer through the modelManager's `progress` events.
  handle('models:list', (type?: Genai.ModelType) => modelManager.listModels(type))
  handle('models:download', (request: DownloadRequest) => modelManager.downloadModel(request))
  handle('models:cancelDownload', (downloadId: string) => modelManager.cancelDownload(downloadId))
  handle('models:delete', (id: string) => modelManager.deleteModel(id))
  handle('models:storage', () => modelManager.getStorageUsage())

  // LLM server
  handle('server:start', (config: Genai.LlamaServerConfig) => llamaServer.start(config))
  handle('server:stop', () => llamaServer.stop())
  handle('server:status', () => llamaServer.getInfo())
  handle('server:health', () => llamaServer.isHealthy())
  handle('server:logs', async (limit?: number) => parseLogs(await llamaServer.getLogs(limit)))
  handle('server:clearLogs', () => llamaServer.clearLogs())
  handle('server:chat', (request: ChatRequest) => streamChat(llamaServer, request, emit))

  // Search servers: an embedding and a rerank server beside the LLM, each a manager of its own on
  // its own port. The panel's orchestrators weigh all three and offload only what an image needs.
  const search = { embedding: new lib.LlamaServerManager(), rerank: new lib.LlamaServerManager() }
  const llamas = [llamaServer, search.embedding, search.rerank]
  const searchStatus = (): SearchStatus => ({ embedding: search.embedding.getInfo(), rerank: search.rerank.getInfo() })
  handle('search:start', async (request: SearchStartRequest) => {
    const common = { port: 'auto' as const, threads: request.threads, contextSize: request.contextSize }
    const starts: [Genai.LlamaServerManager, Genai.LlamaServerConfig][] = []
    if (request.embeddingModelId) starts.push([search.embedding, { ...common, modelId: request.embeddingModelId, mode: 'embedding' }])
    if (request.rerankModelId) starts.push([search.rerank, { ...common, modelId: request.rerankModelId, mode: 'rerank' }])
    if (starts.length === 0) {
      throw new lib.ValidationError('Choose an embedding model, a reranker, or both', { suggestion: 'Pick a model in either list, then start' })
    }
    const outcomes = await Promise.allSettled(starts.map(([manager, config]) => manager.start(config)))
    const failed = outcomes.find((outcome) => outcome.status === 'rejected')
    if (failed) {
      // Both or neither: the one that started is stopped again.
      await Promise.allSettled(starts.map(([manager], i) => outcomes[i].status === 'fulfilled' && manager.stop()))
      throw failed.reason
    }
    return searchStatus()
  })
  handle('search:stop', async () => {
    await Promise.all([search.embedding.stop(), search.rerank.stop()])
  })
  handle('search:status', searchStatus)
  handle('search:query', (request: SearchRequest) => searchWith(search, request, lib))

  // Diffusion server. Cancel stops every image the panel has under way (the Diffusion tab's, the
  // orchestrated ones and the offload demo's).
  const generations = new Set<AbortController>()
  const upscales = new Set<AbortController>()
  async function generate(run: (signal: AbortSignal) => Promise<Genai.ImageGenerationResult>): Promise<ImageResult> {
    const controller = new AbortController()
    generations.add(controller)
    try {
      return imageResult(await run(controller.signal))
    } finally {
      generations.delete(controller)
    }
  }
  handle('diffusion:start', (config: Genai.DiffusionServerConfig) => diffusionServer.start(config))
  handle('diffusion:stop', () => diffusionServer.stop())
  handle('diffusion:status', () => diffusionServer.getInfo())
  handle('diffusion:health', () => diffusionServer.isHealthy())
  handle('diffusion:logs', async (limit?: number) => parseLogs(await diffusionServer.getLogs(limit)))
  handle('diffusion:clearLogs', () => diffusionServer.clearLogs())
  handle('diffusion:generate', (config: ImageRequest) => generate((signal) => diffusionServer.generateImage({ ...config, signal })))
  handle('diffusion:upscale', async (request: UpscaleRequest) => {
    const controller = new AbortController()
    upscales.add(controller)
    try {
      const { image, width, height, timeTaken } = await diffusionServer.upscaleImage({ ...request, signal: controller.signal })
      return { imageDataUrl: pngDataUrl(image), width, height, timeTaken }
    } finally {
      upscales.delete(controller)
    }
  })
  handle('diffusion:cancel', () => {
    for (const controller of upscales) controller.abort()
    for (const controller of generations) controller.abort()
    return generations.size + upscales.size > 0
  })

  // Resources. The seed's orchestrator (the library's defaults), and for each offload demo one with
  // a budget set just below what the LLM and the image need together, disposed after it: the
  // seed's orchestrator decides the panel's other images again.
  let orchestrator: Genai.ResourceOrchestrator | null = null
  let lastUsed: Genai.ResourceOrchestrator | null = null
  const detachOrchestrators: (() => void)[] = []
  function makeOrchestrator(options?: Genai.OrchestratorOptions) {
    const made = new ResourceOrchestrator(systemInfo, llamas, diffusionServer, modelManager, options)
    // Held chat requests are the LLM server's own `queued`/`dequeued` events, forwarded once.
    detachOrchestrators.push(forward(made, ORCHESTRATOR_EVENTS, 'resources:event', emit))
    return made
  }
  const getOrchestrator = () => (orchestrator ??= makeOrchestrator())

  handle('resources:orchestrateGeneration', (config: ImageRequest) => {
    lastUsed = getOrchestrator()
    return generate((signal) => getOrchestrator().orchestrateImageGeneration({ ...config, signal }))
  })
  handle('resources:wouldNeedOffload', (config?: ImageRequest) => getOrchestrator().wouldNeedOffload(config))
  handle('resources:getSavedState', (): SavedStateInfo | null => {
    const state = (lastUsed ?? getOrchestrator()).getSavedState()
    return state ? { ...state, savedAt: state.savedAt.toISOString() } : null
  })
  handle('resources:clearSavedState', () => (lastUsed ?? getOrchestrator()).clearSavedState())
  handle('resources:getUsage', async (): Promise<ResourceSnapshot> => {
    const [gpu, llama, diffusion, estimate] = await Promise.all([
      systemInfo.getGPUInfo(),
      llamaServer.getMemoryUsage(),
      diffusionServer.getMemoryUsage(),
      // Nothing to weigh without a diffusion model.
      diffusionServer.getInfo().modelId ? getOrchestrator().estimate() : null,
    ])
    return {
      at: Date.now(),
      memory: systemInfo.getMemoryInfo(),
      gpu: { available: gpu.available, name: gpu.name ?? null, vram: gpu.vram ?? null, vramAvailable: gpu.vramAvailable ?? null },
      llamaServer: llamaServer.getInfo(),
      search: searchStatus(),
      diffusionServer: diffusionServer.getInfo(),
      measured: { llama, diffusion },
      estimate,
      orchestrator: (lastUsed ?? getOrchestrator()).getInfo(),
    }
  })
  handle('resources:offloadDemo', async (config: ImageRequest): Promise<OffloadDemoResult> => {
    if (!llamaServer.isRunning() || !diffusionServer.getInfo().modelId) {
      throw new lib.ServerError('The offload demo needs both servers', {
        suggestion: 'Start the LLM server and the diffusion server first, then press the button again',
      })
    }
    const estimate = await getOrchestrator().estimate(config)
    // Room for everything but half of the LLM or of the image, whichever is smaller, in the memory
    // that decides (VRAM where the servers use a GPU): the orchestrator must offload the LLM (the
    // chat server goes first; the search servers stay) to make the image.
    const side = estimate.bottleneck
    const chat = estimate.servers.find((s) => s.server === 0)?.usage[side] ?? 0
    const [all, image] = [estimate.llm[side], estimate.diffusion[side]]
    const budgetMiB = Math.ceil((all + image - Math.min(chat, image) / 2) / 2 ** 20)
    const demo = new ResourceOrchestrator(systemInfo, llamas, diffusionServer, modelManager, {
      [side === 'vram' ? 'vramBudgetBytes' : 'ramBudgetBytes']: budgetMiB * 2 ** 20,
      headroom: 0,
    })
    const stopForwarding = forward(demo, ORCHESTRATOR_EVENTS, 'resources:event', emit)
    lastUsed = demo
    // A chat request sent while the LLM is away: the gateway holds it and answers after the reload.
    const sent: { chat?: Promise<{ text: string; waitedMs: number }> } = {}
    const sendChat = () => {
      const sentAt = Date.now()
      const chat = streamChat(llamaServer, { requestId: `offload-demo-${randomUUID()}`, prompt: 'Say hello.', maxTokens: 12 }, emit).then((answer) => {
        const waitedMs = Date.now() - sentAt
        emit('resources:event', { type: 'chat-answered', waitedMs, text: answer.text, at: Date.now() })
        return { text: answer.text, waitedMs }
      })
      // Awaited below; a rejection before then must not count as unhandled.
      chat.catch(() => {})
      sent.chat = chat
    }
    // 'offload' comes before the drain, while the LLM still answers; 'offloading' once it is out.
    const sendWhenOut = ({ phase }: { phase: string }) => {
      if (phase === 'offloading' && !sent.chat) sendChat()
    }
    demo.on('phase', sendWhenOut)
    try {
      const image = await generate((signal) => demo.orchestrateImageGeneration({ ...config, signal }))
      if (!sent.chat) throw new lib.ServerError('The orchestrator made the image without offloading the LLM', {
        suggestion: 'The budget was not tight enough; report this with the estimate shown in the Resources tab',
      })
      return { ...image, budgetBytes: budgetMiB * 2 ** 20, budgetMemory: side, chat: { ...(await sent.chat), sentDuringOffload: true } }
    } finally {
      demo.off('phase', sendWhenOut)
      demo.dispose()
      stopForwarding()
    }
  })

  return {
    async dispose() {
      for (const controller of generations) controller.abort()
      for (const channel of channels) ipcMain.removeHandler?.(channel)
      detach()
      for (const off of detachOrchestrators) off()
      await Promise.allSettled([...llamas.map((llama) => llama.stop()), diffusionServer.stop()])
    },
  }
}

/**
 * Embeds the query and the documents at the embedding server and ranks the documents at the
 * rerank server, each through its port (its gateway), whichever runs.
 */
async function searchWith(search: Record<'embedding' | 'rerank', Genai.LlamaServerManager>, request: SearchRequest, lib: Lib): Promise<SearchResult> {
  const documents = request.documents.map((d) => d.trim()).filter(Boolean)
  if (!request.query.trim() || documents.length === 0) {
    throw new lib.ValidationError('A search needs a query and at least one document', { suggestion: 'Type a query and one document a line' })
  }
  const [embeddingPort, rerankPort] = [search.embedding.getPort(), search.rerank.getPort()]
  if (!embeddingPort && !rerankPort) {
    throw panelError('No search server is running', 'SERVER_NOT_RUNNING', 'Start the embedding server, the rerank server, or both')
  }
  const started = Date.now()
  const [embedded, ranked] = await Promise.all([
    embeddingPort ? postJson<{ data: { index: number; embedding: number[] }[] }>(embeddingPort, '/v1/embeddings', { input: [request.query, ...documents] }) : null,
    rerankPort ? postJson<{ results: { index: number; relevance_score: number }[] }>(rerankPort, '/v1/rerank', { query: request.query, documents }) : null,
  ])
  const vectors = embedded?.data.sort((a, b) => a.index - b.index).map((d) => d.embedding)
  const relevance = ranked ? documents.map((_, i) => ranked.results.find((r) => r.index === i)?.relevance_score ?? Number.NaN) : null
  return {
    documents,
    similarity: vectors ? vectors.slice(1).map((v) => cosine(vectors[0], v)) : null,
    dimensions: vectors ? vectors[0].length : null,
    relevance,
    timeTaken: Date.now() - started,
  }
}

function cosine(a: number[], b: number[]): number {
  let [dot, aa, bb] = [0, 0, 0]
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i]
    aa += a[i] * a[i]
    bb += b[i] * b[i]
  }
  return dot / Math.sqrt(aa * bb || 1)
}

/** POSTs JSON to one of our ports; an error answer becomes an error with its code. */
async function postJson<T>(port: number, route: string, body: unknown): Promise<T> {
  const response = await fetch(`http://127.0.0.1:${port}${route}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  })
  if (!response.ok) throw await answerError(response, route, "See the server's logs")
  return (await response.json()) as T
}

/** What an orchestrator says, shown as `resources:event`. */
const ORCHESTRATOR_EVENTS = ['phase', 'offload', 'reload', 'reload-failed', 'diffusion-released']

/** Forwards an emitter's events of `types` as one panel event, stamped; returns the cleanup. */
function forward<E extends PanelEventName>(
  source: { on(type: string, fn: (event: any) => void): unknown; off(type: string, fn: (event: any) => void): unknown },
  types: string[],
  name: E,
  emit: Emit,
  pick: (event: any) => PanelEvents[E] = (event) => ({ ...event, at: Date.now() }),
): () => void {
  const listener = (event: any) => emit(name, pick(event))
  for (const type of types) source.on(type, listener)
  return () => {
    for (const type of types) source.off(type, listener)
  }
}

/** The library's events the panel shows, forwarded as the panel's events. */
function forwardEvents(lib: Lib, emit: Emit): () => void {
  // ServerInfo payloads (`started`, `restarted`) are left out: the tabs poll the status anyway.
  const summary = (event: any) => ({ type: event.type, old: event.old, new: event.new, reason: event.reason, waiting: event.waiting, waitedMs: event.waitedMs, at: Date.now() })
  const offs = [
    forward(lib.llamaServer, ['state', 'crashed', 'queued', 'dequeued'], 'server:event', emit, summary),
    forward(lib.diffusionServer, ['state', 'crashed', 'job'], 'diffusion:event', emit, (event) => ({ ...summary(event), status: event.status })),
    forward(lib.diffusionServer, ['progress'], 'diffusion:progress', emit),
    forward(lib.modelManager, ['progress'], 'models:progress', emit),
  ]
  return () => offs.forEach((off) => off())
}

/**
 * Sends one chat message through the LLM's port (its gateway, which holds requests while the
 * orchestrator has the LLM offloaded) and streams the answer as `chat:delta` events.
 */
async function streamChat(llamaServer: Genai.LlamaServerManager, request: ChatRequest, emit: Emit): Promise<ChatAnswer> {
  const port = llamaServer.getPort()
  if (!port) {
    throw panelError('The LLM server is not running', 'SERVER_NOT_RUNNING', 'Start the LLM server first')
  }
  const started = Date.now()
  const response = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ messages: [{ role: 'user', content: request.prompt }], max_tokens: request.maxTokens ?? 64, stream: true }),
  })
  if (!response.ok || !response.body) {
    throw await answerError(response, 'chat', "See the LLM server's logs")
  }
  let text = ''
  let chunks = 0
  let firstTokenMs: number | null = null
  let pending = ''
  const decoder = new TextDecoder()
  for await (const bytes of response.body) {
    pending += decoder.decode(bytes, { stream: true })
    const lines = pending.split('\n')
    pending = lines.pop() ?? ''
    for (const line of lines) {
      if (!line.startsWith('data: ') || line === 'data: [DONE]') continue
      const delta: string | undefined = JSON.parse(line.slice(6)).choices?.[0]?.delta?.content
      if (!delta) continue
      firstTokenMs ??= Date.now() - started
      text += delta
      chunks += 1
      emit('chat:delta', { requestId: request.requestId, delta, at: Date.now() })
    }
  }
  return { text, chunks, firstTokenMs, totalMs: Date.now() - started }
}

/** An error as the library's cross IPC: its code, and a suggestion for the user. */
function panelError(message: string, code: string, suggestion: string): Error {
  return Object.assign(new Error(message), { code, details: { suggestion } })
}

/**
 * The error of a failed answer from one of our ports: our gateway and llama-server both answer
 * `{ error: { message, code, type } }`.
 */
async function answerError(response: Response, what: string, suggestion: string): Promise<Error> {
  const body = (await response.json().catch(() => ({}))) as { error?: { message?: string; code?: string | number } }
  const code = typeof body.error?.code === 'string' ? body.error.code : `HTTP_${response.status}`
  return panelError(body.error?.message ?? `${what} failed with HTTP ${response.status}`, code, suggestion)
}
