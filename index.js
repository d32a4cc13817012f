'use strict'

const errors = require('./lib/errors')
const { configure, getDataPaths } = require('./lib/config')
const { SystemInfo } = require('./lib/system-info')
const { BinaryManager } = require('./lib/binaries')

module.exports = {
  configure,
  getDataPaths,
  SystemInfo,
  get systemInfo() {
    return SystemInfo.getInstance()
  },
  BinaryManager,
  get binaries() {
    return BinaryManager.getInstance()
  },
  GenaiElectronError: errors.GenaiElectronError,
  ModelNotFoundError: errors.ModelNotFoundError,
  DownloadError: errors.DownloadError,
  ChecksumError: errors.ChecksumError,
  InsufficientResourcesError: errors.InsufficientResourcesError,
  ServerError: errors.ServerError,
  PortInUseError: errors.PortInUseError,
  BinaryError: errors.BinaryError,
  FileSystemError: errors.FileSystemError,
  ValidationError: errors.ValidationError,
}
