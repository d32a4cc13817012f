'use strict'

/**
 * The one callback a manager hands to its native half. Native code calls it for every event;
 * it re-emits on the EventEmitter. A listener that throws must not take the process down (a
 * throw inside a native callback would become an uncaught exception), so failures go to the
 * manager's 'error' listeners, or become a process warning when there are none.
 */
function createDispatcher(emitter) {
  return (event) => {
    try {
      emitter.emit(event.type, event)
    } catch (err) {
      queueMicrotask(() => reportListenerError(emitter, event.type, err))
    }
  }
}

function reportListenerError(emitter, type, err) {
  if (type !== 'error' && emitter.listenerCount('error') > 0) {
    try {
      emitter.emit('error', err)
      return
    } catch (inner) {
      err = inner
    }
  }
  process.emitWarning(`A '${type}' listener threw: ${err?.stack || err}`, {
    code: 'GENAI_ELECTRON_LISTENER_ERROR',
  })
}

module.exports = { createDispatcher }
