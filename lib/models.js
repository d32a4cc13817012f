'use strict'

const { EventEmitter } = require('node:events')
const native = require('./native')
const { callSync, callAsync, plain } = native
const { createDispatcher } = require('./events')
const { syncElectronUserData } = require('./config')
const { checkCallbacks } = require('./callbacks')
const { CancelledError, ValidationError } = require('./errors')

let instance = null

class ModelManager extends EventEmitter {
  #native
  /** The ids of the downloads under way. */
  #downloads = new Set()

  constructor() {
    super()
    this.#native = new native.binding.NativeModelManager(createDispatcher(this))
  }

  /** The shared instance, also exported as `modelManager`. */
  static getInstance() {
    instance ??= new ModelManager()
    return instance
  }

  async listModels(type) {
    syncElectronUserData()
    return JSON.parse(await callAsync(() => this.#native.listModels(type)))
  }

  async getModelInfo(id) {
    syncElectronUserData()
    return JSON.parse(await callAsync(() => this.#native.getModelInfo(String(id))))
  }

  async downloadModel(config) {
    syncElectronUserData()
    const {
      onProgress,
      onComponentStart,
      signal,
      downloadId = require('node:crypto').randomUUID(),
      ...rest
    } = config ?? {}
    checkCallbacks({ onProgress, signal }, '(downloaded, total, event) => {}')
    if (onComponentStart !== undefined && typeof onComponentStart !== 'function') {
      throw new ValidationError('onComponentStart must be a function', {
        suggestion: 'Pass ({ role, filename, index, total }) => {} or leave it out',
      })
    }
    if (signal?.aborted) throw new CancelledError('the download was cancelled before it started')
    const listener = (event) => {
      if (event.downloadId === downloadId) onProgress(event.downloaded, event.total ?? 0, event)
    }
    // genai-electron 0.26's callback: the model file is its `diffusion_model` (or `model`).
    const primaryRole = rest.type === 'diffusion' ? 'diffusion_model' : 'model'
    const fileStart = (event) => {
      if (event.downloadId !== downloadId) return
      onComponentStart({
        role: event.role ?? primaryRole,
        filename: event.file,
        index: event.index,
        total: event.total,
      })
    }
    const abort = () => this.cancelDownload(downloadId)
    if (onProgress) this.on('progress', listener)
    if (onComponentStart) this.on('file-start', fileStart)
    signal?.addEventListener('abort', abort, { once: true })
    this.#downloads.add(downloadId)
    try {
      return JSON.parse(await callAsync(() => this.#native.downloadModel(downloadId, plain('config', rest))))
    } finally {
      this.#downloads.delete(downloadId)
      this.off('progress', listener)
      this.off('file-start', fileStart)
      signal?.removeEventListener('abort', abort)
    }
  }

  /**
   * Reads the model's GGUF header again (from its file, its source URL, or one then the other:
   * `options.source`, default `'local-remote'`) and records it.
   */
  async updateModelMetadata(id, options = {}) {
    syncElectronUserData()
    if (options === null || typeof options !== 'object') {
      throw new ValidationError('updateModelMetadata takes an options object', {
        suggestion: "Pass { source: 'local-only' } or nothing",
      })
    }
    const { source = 'local-remote', ...rest } = options
    if (Object.keys(rest).length > 0) {
      throw new ValidationError(`options.${Object.keys(rest)[0]}: unknown field`, {
        suggestion: 'The one option is source',
      })
    }
    return JSON.parse(await callAsync(() => this.#native.updateModelMetadata(String(id), source)))
  }

  /** Registers a GGUF file or a diffusion set already on this machine (hard-linked, else copied). */
  async importModel(config) {
    syncElectronUserData()
    return JSON.parse(await callAsync(() => this.#native.importModel(plain('config', config))))
  }

  /**
   * Adopts the models of a genai-electron 0.26 data folder (default: this library's, which is
   * 0.26's in an Electron app) without a download.
   */
  async adoptModels(folder) {
    syncElectronUserData()
    if (folder !== undefined && typeof folder !== 'string') {
      throw new ValidationError(`adoptModels takes a folder path, not ${typeof folder}`, {
        suggestion: "Pass the 0.26 data folder (the one holding models/), or nothing for this library's",
      })
    }
    return callAsync(() => this.#native.adoptModels(folder ?? null))
  }

  async deleteModel(id) {
    syncElectronUserData()
    return callAsync(() => this.#native.deleteModel(String(id)))
  }

  async verifyModel(id) {
    syncElectronUserData()
    const { valid } = await callAsync(() => this.#native.verifyModel(id))
    return valid
  }

  async verifyModelFiles(id) {
    syncElectronUserData()
    return callAsync(() => this.#native.verifyModel(id))
  }

  /** Cancels the download `id`, or, without one, every download under way (as 0.26 did). */
  cancelDownload(id) {
    if (id !== undefined) return callSync(() => this.#native.cancelDownload(String(id)))
    let cancelled = false
    for (const downloadId of this.#downloads)
      cancelled = callSync(() => this.#native.cancelDownload(downloadId)) || cancelled
    return cancelled
  }

  /** A download of this manager is under way. */
  isDownloading() {
    return this.#downloads.size > 0
  }

  async getStorageUsage() {
    syncElectronUserData()
    return callAsync(() => this.#native.getStorageUsage())
  }

  async readGGUFMetadata(pathOrUrl, options) {
    return JSON.parse(await callAsync(() => this.#native.readGGUFMetadata(pathOrUrl, plain('options', options))))
  }
}

module.exports = { ModelManager }
