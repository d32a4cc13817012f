'use strict'

const native = require('./native')
const { callSync, callAsync } = native
const { ValidationError } = require('./errors')

const CONFIG_KEYS = new Set(['dataDir'])

/**
 * Electron's userData folder when running in Electron's main process. Read at each use, so an
 * app that renames itself or calls `app.setPath('userData', …)` after loading us is honoured.
 */
function electronUserData() {
  if (!process.versions.electron || process.type !== 'browser') return null
  try {
    return require('electron').app.getPath('userData')
  } catch {
    return null
  }
}

function syncElectronUserData() {
  native.binding.setElectronUserData(electronUserData())
}

function configure(options) {
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw new ValidationError('configure() takes an options object', {
      suggestion: "Call configure({ dataDir: '/path/to/data' })",
    })
  }
  const unknown = Object.keys(options).filter((key) => !CONFIG_KEYS.has(key))
  if (unknown.length > 0) {
    throw new ValidationError(`Unknown configure() option(s): ${unknown.join(', ')}`, {
      suggestion: `Known options: ${[...CONFIG_KEYS].join(', ')}`,
      unknown,
    })
  }
  if (options.dataDir !== undefined) {
    if (typeof options.dataDir !== 'string') {
      throw new ValidationError('dataDir must be a string path', {
        suggestion: "Pass a folder path, e.g. configure({ dataDir: '/path/to/data' })",
      })
    }
    callSync(() => native.binding.setDataDir(options.dataDir))
  }
}

async function getDataPaths() {
  syncElectronUserData()
  return callAsync(() => native.binding.getDataPaths())
}

module.exports = { configure, getDataPaths, syncElectronUserData }
