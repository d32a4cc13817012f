'use strict'

const { EventEmitter } = require('node:events')
const native = require('./native')
const { callSync, callAsync, plain } = native
const { createDispatcher } = require('./events')
const { ValidationError } = require('./errors')

const DEFAULT_MONITOR_INTERVAL_MS = 1000

let instance = null

class SystemInfo extends EventEmitter {
  #native
  #keepAlive = null

  constructor() {
    super()
    this.#native = new native.binding.NativeSystemInfo(createDispatcher(this))
  }

  /** The shared instance, also exported as `systemInfo`. */
  static getInstance() {
    instance ??= new SystemInfo()
    return instance
  }

  async detect(forceRefresh = false) {
    return callAsync(() => this.#native.detect(forceRefresh))
  }

  clearCache() {
    this.#native.clearCache()
  }

  getMemoryInfo() {
    return this.#native.getMemoryInfo()
  }

  async getGPUInfo() {
    return callAsync(() => this.#native.getGPUInfo())
  }

  async canRunModel(modelInfo, options) {
    return callAsync(() => this.#native.canRunModel(plain('modelInfo', modelInfo), plain('options', options)))
  }

  async getOptimalConfig(modelInfo, hints) {
    return callAsync(() => this.#native.getOptimalConfig(plain('modelInfo', modelInfo), plain('hints', hints)))
  }

  startMonitoring(options = {}) {
    const intervalMs = options.intervalMs ?? DEFAULT_MONITOR_INTERVAL_MS
    if (!Number.isInteger(intervalMs) || intervalMs <= 0 || intervalMs > 2 ** 31 - 1) {
      throw new ValidationError(`intervalMs must be a positive integer, got ${intervalMs}`, {
        suggestion: 'Pass { intervalMs: 1000 } for one reading a second',
      })
    }
    callSync(() => this.#native.startMonitoring(intervalMs))
    // Like setInterval, a running monitor keeps Node alive until stopMonitoring().
    this.#keepAlive ??= setInterval(() => {}, 2 ** 31 - 1)
  }

  stopMonitoring() {
    clearInterval(this.#keepAlive)
    this.#keepAlive = null
    return this.#native.stopMonitoring()
  }

  isMonitoring() {
    return this.#keepAlive !== null
  }
}

module.exports = { SystemInfo }
