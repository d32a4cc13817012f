'use strict'

const { EventEmitter } = require('node:events')
const { binding, callAsync } = require('./native')
const { createDispatcher } = require('./events')
const { syncElectronUserData } = require('./config')
const { ServerError } = require('./errors')

let instance = null

class LlamaServerManager extends EventEmitter {
  #native
  #keepAlive = null
  #lastRequest = null

  constructor() {
    super()
    const dispatch = createDispatcher(this)
    this.#native = new binding.NativeLlamaServer((event) => {
      // Like a child process, a running server keeps Node alive, and so does a pending automatic
      // restart; a stop, a crash without restarts, or restarts that all failed let it go.
      const restarting = event.type === 'crashed' && this.getConfig()?.recovery?.autoRestart
      if ((event.type === 'crashed' && !restarting) || event.type === 'stopped' || event.type === 'restart-failed') this.#release()
      if (event.type === 'restarted') this.#hold()
      dispatch(event)
    })
  }

  /** The shared instance, also exported as `llamaServer`. */
  static getInstance() {
    instance ??= new LlamaServerManager()
    return instance
  }

  async start(config) {
    syncElectronUserData()
    const info = await callAsync(() => this.#native.start(config))
    this.#lastRequest = config
    this.#hold()
    return info
  }

  async stop() {
    await callAsync(() => this.#native.stop())
    this.#release()
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

  getInfo() {
    return this.#native.getInfo()
  }

  getConfig() {
    return this.#native.getConfig()
  }

  isRunning() {
    return this.getInfo().status === 'running'
  }

  getPort() {
    return this.getInfo().port ?? null
  }

  async isHealthy() {
    return this.#native.isHealthy()
  }

  async getLogs(lines = 100) {
    return this.#native.getLogs(lines)
  }

  async clearLogs() {
    this.#native.clearLogs()
  }

  #hold() {
    this.#keepAlive ??= setInterval(() => {}, 2 ** 31 - 1)
  }

  #release() {
    clearInterval(this.#keepAlive)
    this.#keepAlive = null
  }
}

module.exports = { LlamaServerManager }
