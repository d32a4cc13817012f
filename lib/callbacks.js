'use strict'

const { ValidationError } = require('./errors')

/**
 * Checks the `onProgress` and `signal` of a long operation's options: the same mistakes are the
 * same `ValidationError` everywhere. `usage` shows the callback's shape in the suggestion.
 */
function checkCallbacks({ onProgress, signal }, usage) {
  if (onProgress !== undefined && typeof onProgress !== 'function') {
    throw new ValidationError(`onProgress must be a function, not ${describe(onProgress)}`, {
      suggestion: `Pass ${usage}`,
    })
  }
  // Duck-typed: an AbortSignal of another realm (an Electron preload, a vm context) is as good.
  if (signal !== undefined && (typeof signal?.aborted !== 'boolean' || typeof signal.addEventListener !== 'function')) {
    throw new ValidationError(`signal must be an AbortSignal, not ${describe(signal)}`, {
      suggestion: 'Pass the signal of an AbortController (new AbortController().signal)',
    })
  }
}

function describe(value) {
  return value === null ? 'null' : typeof value === 'object' ? 'an object' : `a ${typeof value}`
}

module.exports = { checkCallbacks }
