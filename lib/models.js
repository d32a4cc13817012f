'use strict'

const { EventEmitter } = require('node:events')
const native = require('./native')
const { callSync, callAsync, plain } = native
const { createDispatcher } = require('./events')
const { syncElectronUserData } = require('./config')
const { checkCallbacks } = require('./callbacks')
const { CancelledError } = require('./errors')

let instance = null

class ModelManager extends EventEmitter {
  #native

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
    const { onProgress, signal, downloadId = require('node:crypto').randomUUID(), ...rest } = config ?? {}
    checkCallbacks({ onProgress, signal }, '(downloaded, total, event) => {}')
    if (signal?.aborted) throw new CancelledError('the download was cancelled before it started')
    const listener = (event) => {
      if (event.downloadId === downloadId) onProgress(event.downloaded, event.total ?? 0, event)
    }
    const abort = () => this.cancelDownload(downloadId)
    if (onProgress) this.on('progress', listener)
    signal?.addEventListener('abort', abort, { once: true })
    try {
      return JSON.parse(await callAsync(() => this.#native.downloadModel(downloadId, plain('config', rest))))
    } finally {
      this.off('progress', listener)
      signal?.removeEventListener('abort', abort)
    }
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

  cancelDownload(id) {
    return callSync(() => this.#native.cancelDownload(String(id)))
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
