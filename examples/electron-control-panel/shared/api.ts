// The contract between the renderer and the main process: every IPC channel, every event, and
// what crosses them. The preload (Electron) and the web bridge (browser) both build `window.api`
// from it with `makeApi`, so the two ways of running the panel cannot drift apart.

import type {
  DiffusionServerConfig,
  DiffusionServerInfo,
  DownloadProgressEvent,
  ImageGenerationConfig,
  ImageGenerationProgress,
  LlamaServerConfig,
  LogEntry,
  MemoryInfo,
  MemoryUsage,
  ModelInfo,
  ModelType,
  OrchestratorPhase,
  ResolvedLlamaConfig,
  ResourceEstimate,
  ServerInfo,
  StorageUsage,
  SystemCapabilities,
  ComponentRole,
} from 'genai-electron'

/** Every channel the main process handles, by area and method. */
export const CHANNELS = {
  system: { detect: 'system:detect', memory: 'system:memory' },
  models: {
    list: 'models:list',
    download: 'models:download',
    cancelDownload: 'models:cancelDownload',
    delete: 'models:delete',
    storage: 'models:storage',
  },
  server: {
    start: 'server:start',
    stop: 'server:stop',
    status: 'server:status',
    health: 'server:health',
    logs: 'server:logs',
    clearLogs: 'server:clearLogs',
    chat: 'server:chat',
  },
  search: { start: 'search:start', stop: 'search:stop', status: 'search:status', query: 'search:query' },
  diffusion: {
    start: 'diffusion:start',
    stop: 'diffusion:stop',
    getStatus: 'diffusion:status',
    isHealthy: 'diffusion:health',
    getLogs: 'diffusion:logs',
    clearLogs: 'diffusion:clearLogs',
    generateImage: 'diffusion:generate',
    upscaleImage: 'diffusion:upscale',
    cancel: 'diffusion:cancel',
  },
  resources: {
    orchestrateGeneration: 'resources:orchestrateGeneration',
    wouldNeedOffload: 'resources:wouldNeedOffload',
    getSavedState: 'resources:getSavedState',
    clearSavedState: 'resources:clearSavedState',
    getUsage: 'resources:getUsage',
    offloadDemo: 'resources:offloadDemo',
  },
} as const

/** Every event the main process sends, with its payload. Each carries `at` (ms since the epoch). */
export interface PanelEvents {
  'server:event': { type: string; old?: string; new?: string; reason?: string; waiting?: number; waitedMs?: number; at: number }
  'diffusion:event': { type: string; old?: string; new?: string; reason?: string; status?: string; at: number }
  'diffusion:progress': ImageGenerationProgress & { at: number }
  'models:progress': DownloadProgressEvent & { at: number }
  'resources:event': { type: string; phase?: OrchestratorPhase; waiting?: number; waitedMs?: number; text?: string; at: number }
  'chat:delta': { requestId: string; delta: string; at: number }
}
export type PanelEventName = keyof PanelEvents
export const EVENT_NAMES: PanelEventName[] = ['server:event', 'diffusion:event', 'diffusion:progress', 'models:progress', 'resources:event', 'chat:delta']

/** A library error as it crosses IPC (Electron keeps only an error's message; we keep its code). */
export interface ErrorInfo {
  name: string
  code: string
  message: string
  suggestion?: string
}

/** What every handler answers: its value, or the error it threw. */
export type Reply<T = unknown> = { ok: true; value: T } | { ok: false; error: ErrorInfo }

/** The error the renderer sees: the library's code, message and suggestion. */
export class PanelError extends Error {
  code: string
  suggestion?: string
  constructor(info: ErrorInfo) {
    super(info.message)
    this.name = info.name
    this.code = info.code
    this.suggestion = info.suggestion
  }
}

export interface DownloadRequest {
  name: string
  type: ModelType
  source: 'url' | 'huggingface'
  url?: string
  repo?: string
  file?: string
  checksum?: string
  components?: { role: ComponentRole; source: 'url' | 'huggingface'; url?: string; repo?: string; file?: string }[]
  /** Chosen by the renderer so that it can cancel the download while it runs. */
  downloadId: string
}

export interface ChatRequest {
  requestId: string
  prompt: string
  maxTokens?: number
}

/** The search servers to start: an embedding server, a rerank server, or both. */
export interface SearchStartRequest {
  embeddingModelId?: string
  rerankModelId?: string
  threads?: number
  contextSize?: number
}

/** The two search servers, each its own llama-server beside the LLM's. */
export interface SearchStatus {
  embedding: ServerInfo
  rerank: ServerInfo
}

export interface SearchRequest {
  query: string
  /** One document a line; blank lines are left out. */
  documents: string[]
}

/** How each document matches the query, in the documents' order. */
export interface SearchResult {
  documents: string[]
  /** Cosine similarity of the query's embedding to each document's; null without an embedding server. */
  similarity: number[] | null
  /** Length of the embedding vectors; null without an embedding server. */
  dimensions: number | null
  /** The reranker's relevance score of each document; null without a rerank server. */
  relevance: number[] | null
  timeTaken: number
}

export interface ChatAnswer {
  text: string
  chunks: number
  firstTokenMs: number | null
  totalMs: number
}

/** An image to upscale (a data URL) with an installed upscaler. */
export interface UpscaleRequest {
  image: string
  modelId: string
}

/** An upscaled image, as a PNG data URL. */
export interface UpscaleResult {
  imageDataUrl: string
  width: number
  height: number
  timeTaken: number
}

/** An image as the renderer shows it: PNG data URLs instead of Buffers. */
export interface ImageResult {
  imageDataUrl: string
  imageDataUrls: string[]
  timeTaken: number
  seed: number
  seeds: number[]
  width: number
  height: number
}

export type ImageRequest = Omit<ImageGenerationConfig, 'onProgress' | 'signal'>

export interface OffloadDemoResult extends ImageResult {
  budgetBytes: number
  /** The memory the budget was set for: the one the orchestrator's estimate said decides. */
  budgetMemory: 'ram' | 'vram'

  chat: { text: string; waitedMs: number; sentDuringOffload: boolean }
}

export interface SavedStateInfo {
  /** Which llama server: 0 the LLM, 1 the embedding server, 2 the rerank server. */
  server: number
  config: LlamaServerConfig | null
  resolved: ResolvedLlamaConfig
  wasRunning: boolean
  savedAt: string
}

export interface ResourceSnapshot {
  at: number
  memory: MemoryInfo
  gpu: { available: boolean; name: string | null; vram: number | null; vramAvailable: number | null }
  llamaServer: ServerInfo
  search: SearchStatus
  diffusionServer: DiffusionServerInfo
  measured: { llama: MemoryUsage | null; diffusion: MemoryUsage | null }
  estimate: ResourceEstimate | null
  orchestrator: { phase: OrchestratorPhase; queue: { length: number; longestWaitMs: number } }
}

/** `window.api`: one method per channel, and `onEvent`, which returns its cleanup. */
export interface Api {
  system: {
    detect(forceRefresh?: boolean): Promise<SystemCapabilities>
    memory(): Promise<MemoryInfo>
  }
  models: {
    list(type?: ModelType): Promise<ModelInfo[]>
    download(request: DownloadRequest): Promise<ModelInfo>
    cancelDownload(downloadId: string): Promise<boolean>
    delete(id: string): Promise<void>
    storage(): Promise<StorageUsage>
  }
  server: {
    start(config: LlamaServerConfig): Promise<ServerInfo>
    stop(): Promise<void>
    status(): Promise<ServerInfo>
    health(): Promise<boolean>
    logs(limit?: number): Promise<LogEntry[]>
    clearLogs(): Promise<void>
    chat(request: ChatRequest): Promise<ChatAnswer>
  }
  search: {
    start(request: SearchStartRequest): Promise<SearchStatus>
    stop(): Promise<void>
    status(): Promise<SearchStatus>
    query(request: SearchRequest): Promise<SearchResult>
  }
  diffusion: {
    start(config: DiffusionServerConfig): Promise<DiffusionServerInfo>
    stop(): Promise<void>
    getStatus(): Promise<DiffusionServerInfo>
    isHealthy(): Promise<boolean>
    getLogs(limit?: number): Promise<LogEntry[]>
    clearLogs(): Promise<void>
    generateImage(config: ImageRequest): Promise<ImageResult>
    upscaleImage(request: UpscaleRequest): Promise<UpscaleResult>
    cancel(): Promise<boolean>
  }
  resources: {
    orchestrateGeneration(config: ImageRequest): Promise<ImageResult>
    wouldNeedOffload(config?: ImageRequest): Promise<boolean>
    getSavedState(): Promise<SavedStateInfo | null>
    clearSavedState(): Promise<void>
    getUsage(): Promise<ResourceSnapshot>
    offloadDemo(config: ImageRequest): Promise<OffloadDemoResult>
  }
  onEvent<E extends PanelEventName>(name: E, callback: (payload: PanelEvents[E]) => void): () => void
}

export type Invoke = (channel: string, ...args: unknown[]) => Promise<Reply>
export type Subscribe = <E extends PanelEventName>(name: E, callback: (payload: PanelEvents[E]) => void) => () => void

type RawArea<A> = { [K in keyof A]: A[K] extends (...args: infer P) => Promise<infer R> ? (...args: P) => Promise<Reply<R>> : never }

/**
 * `window.api` as the preload and the web bridge expose it: each method resolves with its
 * `Reply`, because an Error crossing Electron's contextBridge keeps only its message.
 */
export type RawApi = { [A in Exclude<keyof Api, 'onEvent'>]: RawArea<Api[A]> } & { onEvent: Subscribe }

/** Builds the raw `window.api` over a transport: Electron's ipcRenderer, or HTTP + SSE. */
export function makeRawApi(invoke: Invoke, subscribe: Subscribe): RawApi {
  const areas: Record<string, Record<string, (...args: unknown[]) => Promise<Reply>>> = {}
  for (const [area, methods] of Object.entries(CHANNELS)) {
    areas[area] = {}
    for (const [method, channel] of Object.entries(methods)) {
      areas[area][method] = (...args: unknown[]) => invoke(channel, ...args)
    }
  }
  return { ...areas, onEvent: subscribe } as unknown as RawApi
}

/** The API the renderer's code calls: values, and a `PanelError` with the library's code. */
export function unwrapApi(raw: RawApi): Api {
  const areas: Record<string, Record<string, (...args: unknown[]) => Promise<unknown>>> = {}
  for (const [area, methods] of Object.entries(CHANNELS)) {
    const rawArea = (raw as unknown as Record<string, Record<string, (...args: unknown[]) => Promise<Reply>>>)[area]
    areas[area] = {}
    for (const method of Object.keys(methods)) {
      areas[area][method] = async (...args: unknown[]) => {
        const reply = await rawArea[method](...args)
        if (!reply.ok) throw new PanelError(reply.error)
        return reply.value
      }
    }
  }
  return { ...areas, onEvent: raw.onEvent } as unknown as Api
}
