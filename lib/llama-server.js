'use strict'

const { binding, callAsync } = require('./native')
const { ServerManager, NATIVE } = require('./server-manager')
const { syncElectronUserData } = require('./config')

let instance = null

class LlamaServerManager extends ServerManager {
  constructor() {
    super((onEvent) => new binding.NativeLlamaServer(onEvent))
  }

  /** The shared instance, also exported as `llamaServer`. */
  static getInstance() {
    instance ??= new LlamaServerManager()
    return instance
  }

  async start(config) {
    syncElectronUserData()
    return callAsync(() => this[NATIVE].start(config))
  }

  async stop() {
    await callAsync(() => this[NATIVE].stop())
  }

  /** Stops and starts again with the config of the last start that worked, on the same port. */
  async restart() {
    return callAsync(() => this[NATIVE].restart())
  }
}

module.exports = { LlamaServerManager }
