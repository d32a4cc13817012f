'use strict'

// Requiring the package loads nothing more: each export is a getter that requires its module (and
// with it what that module needs: the native addon, node:crypto, …) when a program first reads it.
// A class or function then becomes a plain property; the shared instances stay getters.

/** `name` is what `load()` returns, loaded on first read. */
function lazy(name, load) {
  Object.defineProperty(module.exports, name, {
    enumerable: true,
    configurable: true,
    get() {
      const value = load()
      settle(name, value)
      return value
    },
    set(value) {
      settle(name, value)
    },
  })
}

function settle(name, value) {
  Object.defineProperty(module.exports, name, { value, writable: true, enumerable: true, configurable: true })
}

/** `name` is the shared instance of the class `load()` returns. */
function shared(name, load) {
  Object.defineProperty(module.exports, name, {
    enumerable: true,
    configurable: true,
    get: () => load().getInstance(),
  })
}

// One literal require() each, so that bundlers find every module.
lazy('configure', () => require('./lib/config').configure)
lazy('getDataPaths', () => require('./lib/config').getDataPaths)
lazy('SystemInfo', () => require('./lib/system-info').SystemInfo)
shared('systemInfo', () => require('./lib/system-info').SystemInfo)
lazy('LlamaServerManager', () => require('./lib/llama-server').LlamaServerManager)
shared('llamaServer', () => require('./lib/llama-server').LlamaServerManager)
lazy('DiffusionServerManager', () => require('./lib/diffusion-server').DiffusionServerManager)
shared('diffusionServer', () => require('./lib/diffusion-server').DiffusionServerManager)
lazy('RpcServerManager', () => require('./lib/rpc-server').RpcServerManager)
shared('rpcServer', () => require('./lib/rpc-server').RpcServerManager)
lazy('ResourceOrchestrator', () => require('./lib/orchestrator').ResourceOrchestrator)
lazy('LogManager', () => require('./lib/logs').LogManager)
lazy('ModelManager', () => require('./lib/models').ModelManager)
shared('modelManager', () => require('./lib/models').ModelManager)
lazy('BinaryManager', () => require('./lib/binaries').BinaryManager)
shared('binaries', () => require('./lib/binaries').BinaryManager)

// Every export of lib/errors.js but fromNative, which is internal to the binding glue.
const ERROR_EXPORTS = [
  'GenaiElectronError',
  'ModelNotFoundError',
  'DownloadError',
  'ChecksumError',
  'InsufficientResourcesError',
  'ServerError',
  'PortInUseError',
  'BinaryError',
  'FileSystemError',
  'ValidationError',
  'CancelledError',
  'ERROR_CODES',
]
for (const name of ERROR_EXPORTS) lazy(name, () => require('./lib/errors')[name])

// The names for Node's `import` of this file: its CommonJS export detection (cjs-module-lexer)
// reads them from this statement, which never runs, as it cannot see the getters above.
0 &&
  // biome-ignore lint/suspicious/noAssignInExpressions: only read, never run
  (module.exports = {
    configure,
    getDataPaths,
    SystemInfo,
    systemInfo,
    LlamaServerManager,
    llamaServer,
    DiffusionServerManager,
    diffusionServer,
    RpcServerManager,
    rpcServer,
    ResourceOrchestrator,
    LogManager,
    ModelManager,
    modelManager,
    BinaryManager,
    binaries,
    GenaiElectronError,
    ModelNotFoundError,
    DownloadError,
    ChecksumError,
    InsufficientResourcesError,
    ServerError,
    PortInUseError,
    BinaryError,
    FileSystemError,
    ValidationError,
    CancelledError,
    ERROR_CODES,
  })
