'use strict'

const { EventEmitter } = require('node:events')
const native = require('./native')
const { callAsync, plain } = native
const { createDispatcher } = require('./events')
const { syncElectronUserData } = require('./config')

let instance = null

class BinaryManager extends EventEmitter {
  #native

  constructor() {
    super()
    this.#native = new native.binding.NativeBinaryManager(createDispatcher(this))
  }

  /** The shared instance, also exported as `binaries`. */
  static getInstance() {
    instance ??= new BinaryManager()
    return instance
  }

  async ensureBinary(kind, options) {
    syncElectronUserData()
    return callAsync(() => this.#native.ensureBinary(kind, plain('options', options)))
  }

  async buildFromSource(kind, source, options) {
    syncElectronUserData()
    return callAsync(() => this.#native.buildFromSource(kind, plain('source', source), plain('options', options)))
  }
}

module.exports = { BinaryManager }
