'use strict'

const { binding, callAsync } = require('./native')
const { ServerManager, NATIVE, hold, release } = require('./server-manager')
const { syncElectronUserData } = require('./config')
const { ServerError } = require('./errors')

let instance = null

class LlamaServerManager extends ServerManager {
  #lastRequest = null

  constructor() {
    super(
      (onEvent) => new binding.NativeLlamaServer(onEvent),
      (event) => {
        // A running server keeps Node alive, and so does a pending automatic restart; a stop, a
        // crash without restarts, or restarts that all failed let it go.
        const restarting = event.type === 'crashed' && this.getConfig()?.recovery?.autoRestart
        if ((event.type === 'crashed' && !restarting) || event.type === 'stopped' || event.type === 'restart-failed') release(this)
        if (event.type === 'restarted') hold(this)
      },
    )
  }

  /** The shared instance, also exported as `llamaServer`. */
  static getInstance() {
    instance ??= new LlamaServerManager()
    return instance
  }

  async start(config) {
    syncElectronUserData()
    const info = await callAsync(() => this[NATIVE].start(config))
    this.#lastRequest = config
    hold(this)
    return info
  }

  async stop() {
    await callAsync(() => this[NATIVE].stop())
    release(this)
  }

  /** Stops and starts again with the config of the last successful start. */
  async restart() {
    if (!this.#lastRequest) {
      throw new ServerError('llama-server was never started', { suggestion: 'Call start(config) first' })
    }
    await this.stop()
    const info = await this.start(this.#lastRequest)
    this.emit('restarted', { type: 'restarted', ...info })
    return info
  }
}

module.exports = { LlamaServerManager }
