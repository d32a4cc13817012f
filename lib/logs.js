'use strict'

const LEVELS = ['debug', 'info', 'warn', 'error']
// `[2026-12-02T13:00:00.123Z] [INFO] message`; genai-electron 0.26 pads the level (`[INFO ]`).
const ENTRY = /^\[([^\]]+)\] \[(\w+)\s*\] ?([\s\S]*)$/

/**
 * The format of every line `getLogs()` returns and every `log` event carries: the library's own
 * lines and the backends' output alike, as genai-electron's `LogManager` writes them.
 */
class LogManager {
  /** `{ timestamp, level, message }` of one log line, or `null` for a line in another format. */
  static parseEntry(line) {
    if (typeof line !== 'string') return null
    const match = ENTRY.exec(line.trim())
    if (!match) return null
    const level = match[2].toLowerCase()
    if (!LEVELS.includes(level)) return null
    return { timestamp: match[1], level, message: match[3] }
  }

  /** The line `parseEntry` reads back (the timestamp defaults to now). */
  static formatEntry({ timestamp = new Date().toISOString(), level = 'info', message }) {
    return `[${timestamp}] [${String(level).toUpperCase()}] ${message}`
  }
}

module.exports = { LogManager }
