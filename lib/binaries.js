'use strict'

const { EventEmitter } = require('node:events')
const { binding, callAsync } = require('./native')
const { createDispatcher } = require('./events')
const { syncElectronUserData } = require('./config')

let instance = null

class BinaryManager extends EventEmitter {
  #native

  constructor() {
    super()
    this.#native = new binding.NativeBinaryManager(createDispatcher(this))
  }

  /** The shared instance, also exported as `binaries`. */
  static getInstance() {
    instance ??= new BinaryManager()
    return instance
  }

  async ensureBinary(kind, options) {
    syncElectronUserData()
    return callAsync(() => this.#native.ensureBinary(kind, options))
  }

  async buildFromSource(kind, source, options) {
    syncElectronUserData()
    return callAsync(() => this.#native.buildFromSource(kind, source, options))
  }
}

module.exports = { BinaryManager }
