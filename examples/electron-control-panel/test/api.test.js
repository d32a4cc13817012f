'use strict'

// shared/api.ts: the raw API both transports expose, and the unwrapped one the renderer calls,
// where a failed reply becomes a PanelError that keeps the library's code and suggestion.

const test = require('node:test')
const assert = require('node:assert/strict')
const path = require('node:path')
const { PANEL } = require('./helpers')

const { CHANNELS, EVENT_NAMES, PanelError, makeRawApi, unwrapApi } = require(path.join(PANEL, 'dist/node/shared/api.js'))

test('the raw API sends each method to its channel and answers the reply as it came', async () => {
  const sent = []
  const raw = makeRawApi(async (channel, ...args) => (sent.push([channel, ...args]), { ok: true, value: 1 }), () => () => {})
  assert.deepEqual(await raw.diffusion.generateImage({ prompt: 'x' }), { ok: true, value: 1 })
  assert.deepEqual(sent, [['diffusion:generate', { prompt: 'x' }]])
  assert.deepEqual(Object.keys(raw).sort(), [...Object.keys(CHANNELS), 'onEvent'].sort())
})

test('the unwrapped API resolves values and throws PanelError with the code and suggestion', async () => {
  const replies = {
    'models:list': { ok: true, value: [{ id: 'a' }] },
    'server:start': { ok: false, error: { name: 'ModelNotFoundError', code: 'MODEL_NOT_FOUND', message: 'no model x', suggestion: 'Download it first' } },
  }
  const off = () => {}
  const api = unwrapApi(makeRawApi(async (channel) => replies[channel], () => off))
  assert.deepEqual(await api.models.list(), [{ id: 'a' }])
  const error = await api.server.start({ modelId: 'x' }).catch((e) => e)
  assert.ok(error instanceof PanelError)
  assert.deepEqual({ name: error.name, code: error.code, message: error.message, suggestion: error.suggestion }, replies['server:start'].error)
  assert.equal(api.onEvent('chat:delta', () => {}), off)
})

test('every event name is distinct and namespaced by area', () => {
  assert.equal(new Set(EVENT_NAMES).size, EVENT_NAMES.length)
  for (const name of EVENT_NAMES) assert.match(name, /^(server|diffusion|models|resources|chat):[a-z]+$/)
})
