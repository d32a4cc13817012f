'use strict'

// fromNative is internal to the binding glue; every error class is public.
const { fromNative: _internal, ...errorClasses } = require('./lib/errors')
const { configure, getDataPaths } = require('./lib/config')
const { SystemInfo } = require('./lib/system-info')
const { BinaryManager } = require('./lib/binaries')
const { ModelManager } = require('./lib/models')
const { LlamaServerManager } = require('./lib/llama-server')
const { DiffusionServerManager } = require('./lib/diffusion-server')
const { RpcServerManager } = require('./lib/rpc-server')
const { ResourceOrchestrator } = require('./lib/orchestrator')
const { LogManager } = require('./lib/logs')

module.exports = {
  configure,
  getDataPaths,
  SystemInfo,
  get systemInfo() {
    return SystemInfo.getInstance()
  },
  LlamaServerManager,
  get llamaServer() {
    return LlamaServerManager.getInstance()
  },
  DiffusionServerManager,
  get diffusionServer() {
    return DiffusionServerManager.getInstance()
  },
  RpcServerManager,
  get rpcServer() {
    return RpcServerManager.getInstance()
  },
  ResourceOrchestrator,
  LogManager,
  ModelManager,
  get modelManager() {
    return ModelManager.getInstance()
  },
  BinaryManager,
  get binaries() {
    return BinaryManager.getInstance()
  },
  ...errorClasses,
}
