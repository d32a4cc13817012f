'use strict'

/**
 * Base class of every error the library throws. `code` is stable and meant for programs;
 * `details.suggestion`, where present, is one sentence for the user.
 */
class GenaiElectronError extends Error {
  constructor(message, code = 'GENAI_ELECTRON_ERROR', details = {}) {
    super(message)
    this.name = new.target.name
    this.code = code
    this.details = details
  }
}

function defineError(name, code) {
  const cls = {
    [name]: class extends GenaiElectronError {
      constructor(message, details = {}) {
        super(message, code, details)
      }
    },
  }[name]
  cls.code = code
  return cls
}

const ModelNotFoundError = defineError('ModelNotFoundError', 'MODEL_NOT_FOUND')
const DownloadError = defineError('DownloadError', 'DOWNLOAD_FAILED')
const ChecksumError = defineError('ChecksumError', 'CHECKSUM_ERROR')
const InsufficientResourcesError = defineError('InsufficientResourcesError', 'INSUFFICIENT_RESOURCES')
const ServerError = defineError('ServerError', 'SERVER_ERROR')
const PortInUseError = defineError('PortInUseError', 'PORT_IN_USE')
const BinaryError = defineError('BinaryError', 'BINARY_ERROR')
const FileSystemError = defineError('FileSystemError', 'FILE_SYSTEM_ERROR')
const ValidationError = defineError('ValidationError', 'INVALID_ARGUMENT')

const CLASS_BY_CODE = new Map(
  [
    ModelNotFoundError,
    DownloadError,
    ChecksumError,
    InsufficientResourcesError,
    ServerError,
    PortInUseError,
    BinaryError,
    FileSystemError,
    ValidationError,
  ].map((cls) => [cls.code, cls]),
)

// The native layer rejects with `[CODE] {"message": …, "details": …}` (src/js/error.rs).
const NATIVE_ERROR = /^\[([A-Z_]+)\] (\{[\s\S]*\})$/

/** Turns an error from the native binding into the matching GenaiElectronError subclass. */
function fromNative(err) {
  const match = err instanceof Error ? NATIVE_ERROR.exec(err.message) : null
  if (!match) return err
  let payload
  try {
    payload = JSON.parse(match[2])
  } catch {
    return err
  }
  const cls = CLASS_BY_CODE.get(match[1])
  return cls
    ? new cls(payload.message, payload.details)
    : new GenaiElectronError(payload.message, match[1], payload.details)
}

module.exports = {
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
  fromNative,
}
