'use strict'

const native = require('./native')
const { callAsync, plain } = native
const { ServerManager, NATIVE, runCalibration } = require('./server-manager')
const { syncElectronUserData } = require('./config')

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
  calibrate(config) {
    return runCalibration(this, config, '{ modelId, profile: { contextSize, parallelRequests } }')
  }
}

module.exports = { LlamaServerManager, START_WITH }
