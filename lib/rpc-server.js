'use strict'

const native = require('./native')
const { callAsync, plain } = native
const { ServerManager, NATIVE } = require('./server-manager')
const { syncElectronUserData } = require('./config')

let instance = null

/**
 * llama.cpp's RPC worker (`rpc-server`) on this machine: it lends this machine's memory to a
 * llama-server elsewhere, started with `rpcWorkers: ['host:port']`. Each instance runs its own
 * worker process.
 */
class RpcServerManager extends ServerManager {
  constructor() {
    super((onEvent) => new native.binding.NativeRpcServer(onEvent))
  }

  /** The shared instance, also exported as `rpcServer`. */
  static getInstance() {
    instance ??= new RpcServerManager()
    return instance
  }

  async start(config = {}) {
    syncElectronUserData()
    return callAsync(() => this[NATIVE].start(plain('config', config)))
  }

  async stop() {
    await callAsync(() => this[NATIVE].stop())
  }

  /** `host:port` while it runs, as a llama-server's `rpcWorkers` names it; `null` otherwise. */
  getEndpoint() {
    return this.getInfo().endpoint ?? null
  }
}

module.exports = { RpcServerManager }
