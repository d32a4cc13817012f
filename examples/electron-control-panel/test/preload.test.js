'use strict'

// The bundled preload (dist/preload/preload.js), loaded with a fake 'electron' module: it must
// expose every channel as window.api.<area>.<method> over ipcRenderer.invoke, and onEvent must
// return its cleanup.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const vm = require('node:vm')
const { PANEL } = require('./helpers')

function loadPreload() {
  const exposed = {}
  const calls = []
  const listeners = new Map()
  const electron = {
    contextBridge: { exposeInMainWorld: (key, value) => (exposed[key] = value) },
    ipcRenderer: {
      invoke: async (channel, ...args) => (calls.push([channel, ...args]), { ok: true, value: channel }),
      on: (name, fn) => listeners.set(name, [...(listeners.get(name) ?? []), fn]),
      removeListener: (name, fn) => listeners.set(name, (listeners.get(name) ?? []).filter((f) => f !== fn)),
    },
  }
  // A sandboxed preload may require 'electron' and nothing else.
  const sandboxRequire = (id) => {
    if (id !== 'electron') throw new Error(`the preload requires ${id}`)
    return electron
  }
  const source = fs.readFileSync(path.join(PANEL, 'dist/preload/preload.js'), 'utf8')
  const module = { exports: {} }
  vm.runInNewContext(`(function (require, module, exports) {${source}\n})`, {})(sandboxRequire, module, module.exports)
  return { exposed, calls, listeners }
}

test('the preload exposes every channel over ipcRenderer, requiring only electron', async () => {
  const { CHANNELS } = require(path.join(PANEL, 'dist/node/shared/api.js'))
  const { exposed, calls } = loadPreload()
  const api = exposed.api
  for (const [area, methods] of Object.entries(CHANNELS)) {
    for (const [method, channel] of Object.entries(methods)) {
      assert.deepEqual(await api[area][method]('a', 2), { ok: true, value: channel })
      assert.deepEqual(calls.at(-1), [channel, 'a', 2])
    }
  }
})

test('onEvent passes the payload without the IPC event and returns its cleanup', () => {
  const { exposed, listeners } = loadPreload()
  const seen = []
  const off = exposed.api.onEvent('chat:delta', (payload) => seen.push(payload))
  for (const fn of listeners.get('chat:delta')) fn({ sender: 'ipc event' }, { delta: 'hi' })
  assert.deepEqual(seen, [{ delta: 'hi' }])
  off()
  assert.equal(listeners.get('chat:delta').length, 0)
})
