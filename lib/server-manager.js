'use strict'

const { EventEmitter } = require('node:events')
const { createDispatcher } = require('./events')
const { LogManager } = require('./logs')
const native = require('./native')
const { CancelledError, ValidationError } = require('./errors')
const { checkCallbacks } = require('./callbacks')
const { syncElectronUserData } = require('./config')

/**
 * What the server managers share: the native half, the status getters, logs, memory, and
 * keeping Node alive while a server runs (like a child process or a listening socket would).
 */
// Internal to the library: symbol keys keep them off the managers' public surface.
const NATIVE = Symbol('native')
const KEEP_ALIVE = Symbol('keepAlive')
const RELEASE_PENDING = Symbol('releasePending')

class ServerManager extends EventEmitter {
  /** `createNative(onEvent)` builds the native half. */
  constructor(createNative) {
    super()
    const dispatch = createDispatcher(this)
    this[NATIVE] = createNative((event) => {
      // genai-electron 0.26 named a crashed process's exit code `code`.
      if (event.type === 'crashed') event.code = event.exitCode ?? null
      dispatch(event)
      keepAlive(this, event)
    })
  }

  /** `getInfo().status` (genai-electron 0.26's name). */
  getStatus() {
    return this.getInfo().status
  }

  /** `getInfo().pid`, or `undefined` (genai-electron 0.26's name). */
  getPid() {
    return this.getInfo().pid ?? undefined
  }

  isStopped() {
    return this.getStatus() === 'stopped'
  }

  isStarting() {
    return this.getStatus() === 'starting'
  }

  isStopping() {
    return this.getStatus() === 'stopping'
  }

  hasCrashed() {
    return this.getStatus() === 'crashed'
  }

  /**
   * genai-electron 0.26's health words: `'loading'` while the server starts (its model loads),
   * then `'ok'` or `'error'` as its `/health` answers now, `'unknown'` when it is not running.
   */
  async getHealthStatus() {
    switch (this.getStatus()) {
      case 'starting':
        return 'loading'
      case 'running':
      case 'crashed':
        return (await this.isHealthy()) ? 'ok' : 'error'
      default:
        return 'unknown'
    }
  }

  getInfo() {
    return this[NATIVE].getInfo()
  }

  getConfig() {
    return this[NATIVE].getConfig()
  }

  isRunning() {
    return this.getInfo().status === 'running'
  }

  getPort() {
    return this.getInfo().port ?? null
  }

  async isHealthy() {
    return this[NATIVE].isHealthy()
  }

  async getLogs(lines = 100) {
    return this[NATIVE].getLogs(lines)
  }

  async clearLogs() {
    this[NATIVE].clearLogs()
  }

  /** `getLogs(lines)`, each line parsed into `{ timestamp, level, message }` ({@link LogManager.parseEntry}). */
  async getStructuredLogs(lines = 100) {
    const logs = await this.getLogs(lines)
    return logs.map(
      (line) => LogManager.parseEntry(line) ?? { timestamp: new Date().toISOString(), level: 'info', message: line },
    )
  }

  /** What the server's process tree uses now, or `null` when no process runs. */
  async getMemoryUsage() {
    return this[NATIVE].getMemoryUsage()
  }
}

/**
 * The keep-alive follows the state: everything but `stopped` holds Node, and so does `crashed`
 * with an automatic restart to follow. The native side announces every transition in order.
 * Letting go waits for the named event that follows such a transition (`stopped`, `crashed`,
 * `restart-failed`): native events reach JS one per turn of the event loop, so a loop with
 * nothing left to hold would end before that event reached its listeners.
 */
const FINAL_EVENTS = new Set(['stopped', 'crashed', 'restart-failed'])

function keepAlive(manager, event) {
  if (event.type === 'state') {
    const holds = event.new !== 'stopped' && (event.new !== 'crashed' || event.willRestart)
    manager[RELEASE_PENDING] = !holds
    if (holds) manager[KEEP_ALIVE] ??= setInterval(() => {}, 2 ** 31 - 1)
  } else if (manager[RELEASE_PENDING] && FINAL_EVENTS.has(event.type)) {
    manager[RELEASE_PENDING] = false
    clearInterval(manager[KEEP_ALIVE])
    manager[KEEP_ALIVE] = null
  }
}

/**
 * `calibrate(config)` of a server manager: `onProgress` gets each `calibration-progress` event
 * (less its `type`); aborting `signal` cancels the native calibration, which stops the server it
 * runs and rejects with CancelledError.
 */
async function runCalibration(manager, config, example) {
  if (config === null || typeof config !== 'object') {
    throw new ValidationError('calibrate needs a config object', { suggestion: `Pass ${example}` })
  }
  const { onProgress, signal, ...request } = config
  checkCallbacks(config, '(progress) => {}')
  if (signal?.aborted) throw new CancelledError('the calibration was cancelled')
  syncElectronUserData()
  const progress = ({ type: _type, ...rest }) => onProgress(rest)
  let settled = false
  // Until the native side has begun there is nothing to cancel yet: it is asked again shortly.
  const abort = () => {
    if (!settled && !manager[NATIVE].cancelCalibration()) setTimeout(abort, 20)
  }
  if (onProgress) manager.on('calibration-progress', progress)
  signal?.addEventListener('abort', abort, { once: true })
  try {
    return await native.callAsync(() => manager[NATIVE].calibrate(native.plain('config', request)))
  } finally {
    settled = true
    if (onProgress) manager.off('calibration-progress', progress)
    signal?.removeEventListener('abort', abort)
  }
}

module.exports = { ServerManager, NATIVE, runCalibration }
