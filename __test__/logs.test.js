'use strict'

// LogManager.parseEntry, the seed panel's parser of log lines; the lines of the real servers are
// checked in lifecycle.test.js and diffusion-server.test.js.

const test = require('node:test')
const assert = require('node:assert/strict')
const { LogManager } = require('..')

test("parseEntry reads our lines and genai-electron 0.26's padded ones, and nothing else", () => {
  assert.deepEqual(LogManager.parseEntry('[2026-12-02T13:00:00.123Z] [WARN] restart 2 failed port=8080'), {
    timestamp: '2026-12-02T13:00:00.123Z',
    level: 'warn',
    message: 'restart 2 failed port=8080',
  })
  assert.deepEqual(LogManager.parseEntry('[2025-01-01T00:00:00.000Z] [INFO ] Server started'), {
    timestamp: '2025-01-01T00:00:00.000Z',
    level: 'info',
    message: 'Server started',
  })
  for (const line of ['plain backend output', '[2026] [TRACE] too fine', '', undefined, 42]) {
    assert.equal(LogManager.parseEntry(line), null, String(line))
  }
})

test('formatEntry writes what parseEntry reads', () => {
  const entry = { timestamp: '2026-12-02T13:00:00.000Z', level: 'error', message: 'sd-server stopped [signal 9]' }
  assert.deepEqual(LogManager.parseEntry(LogManager.formatEntry(entry)), entry)
  assert.equal(LogManager.parseEntry(LogManager.formatEntry({ message: 'now' })).level, 'info')
})
