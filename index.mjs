import lib from './index.js'

export const {
  configure,
  getDataPaths,
  SystemInfo,
  BinaryManager,
  ModelManager,
  LlamaServerManager,
  DiffusionServerManager,
  RpcServerManager,
  ResourceOrchestrator,
  LogManager,
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
} = lib
export const systemInfo = lib.systemInfo
export const binaries = lib.binaries
export const modelManager = lib.modelManager
export const llamaServer = lib.llamaServer
export const diffusionServer = lib.diffusionServer
export const rpcServer = lib.rpcServer
export default lib
