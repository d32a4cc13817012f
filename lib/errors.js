'use strict'

/**
 * Base class of every error the library throws. `code` is stable and meant for programs (one for each
 * distinct failure, see ERROR_CODES; each subclass's own `code` is the general one of its kind);
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

/** The subclasses by name, each with its stable code. */
const SUBCLASSES = Object.fromEntries(
  [
    ['ModelNotFoundError', 'MODEL_NOT_FOUND'],
    ['DownloadError', 'DOWNLOAD_FAILED'],
    ['ChecksumError', 'CHECKSUM_ERROR'],
    ['InsufficientResourcesError', 'INSUFFICIENT_RESOURCES'],
    ['ServerError', 'SERVER_ERROR'],
    ['PortInUseError', 'PORT_IN_USE'],
    ['BinaryError', 'BINARY_ERROR'],
    ['FileSystemError', 'FILE_SYSTEM_ERROR'],
    ['ValidationError', 'INVALID_ARGUMENT'],
    ['CancelledError', 'CANCELLED'],
  ].map(([name, code]) => [name, defineError(name, code)]),
)

/**
 * Every code the library uses, with its class and HTTP status: one table for Rust, JS and our
 * HTTP servers (a Rust test checks the native side against it).
 */
const ERROR_CODES = Object.freeze(require('./error-codes.json'))

const CLASS_BY_CODE = new Map(Object.entries(ERROR_CODES).map(([code, { class: name }]) => [code, SUBCLASSES[name]]))

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
  if (!cls) return new GenaiElectronError(payload.message, match[1], payload.details)
  const error = new cls(payload.message, payload.details)
  error.code = match[1]
  return error
}

module.exports = { GenaiElectronError, ...SUBCLASSES, ERROR_CODES, fromNative }
