'use strict'

const native = require('./native')
const { callAsync, plain } = native
const { ServerManager, NATIVE } = require('./server-manager')
const { syncElectronUserData } = require('./config')
const { CancelledError, ValidationError } = require('./errors')
const { checkCallbacks } = require('./callbacks')

/** Package-private: a start made by another part of the library (the ResourceOrchestrator). */
const START_WITH = Symbol('startWith')

let instance = null

class LlamaServerManager extends ServerManager {
  #startConfig = null

  constructor() {
    super((onEvent) => new native.binding.NativeLlamaServer(onEvent))
  }

  /** The shared instance, also exported as `llamaServer`. */
  static getInstance() {
    instance ??= new LlamaServerManager()
    return instance
  }

  async start(config) {
    return this[START_WITH](config, (request) => this[NATIVE].start(request))
  }

  /** Starts through `start(request)`, and remembers `config` as the start that worked. */
  async [START_WITH](config, start) {
    syncElectronUserData()
    const info = await callAsync(() => start(plain('config', config)))
    // Cloned before the caller can change it: the request as it was accepted.
    this.#startConfig = structuredClone(config)
    return info
  }

  /** The config of the last start that worked, as it was passed (`start(getStartConfig())` repeats it). */
  getStartConfig() {
    return this.#startConfig === null ? null : structuredClone(this.#startConfig)
  }

  async stop() {
    await callAsync(() => this[NATIVE].stop())
  }

  /** Stops and starts again with the config of the last start that worked, on the same port. */
  async restart() {
    return callAsync(() => this[NATIVE].restart())
  }

  /**
   * Runs the model in a llama-server of its own for each combination, measures it, and stores
   * the report beside the model. `onProgress` gets each `calibration-progress` event; aborting
   * `signal` stops the server it runs and rejects with CancelledError.
   */
  async calibrate(config) {
    if (config === null || typeof config !== 'object') {
      throw new ValidationError('calibrate needs a config object', {
        suggestion: 'Pass { modelId, profile: { contextSize, parallelRequests } }',
      })
    }
    const { onProgress, signal, ...request } = config
    checkCallbacks(config, '(progress) => {}')
    if (signal?.aborted) throw new CancelledError('the calibration was cancelled')
    syncElectronUserData()
    const progress = (event) => {
      const { type: _type, ...rest } = event
      onProgress(rest)
    }
    let settled = false
    // Until the native side has begun, there is nothing to cancel yet: asked again shortly.
    const abort = () => {
      if (!settled && !this[NATIVE].cancelCalibration()) setTimeout(abort, 20)
    }
    if (onProgress) this.on('calibration-progress', progress)
    signal?.addEventListener('abort', abort, { once: true })
    try {
      return await callAsync(() => this[NATIVE].calibrate(plain('config', request)))
    } finally {
      settled = true
      if (onProgress) this.off('calibration-progress', progress)
      signal?.removeEventListener('abort', abort)
    }
  }
}

module.exports = { LlamaServerManager, START_WITH }
