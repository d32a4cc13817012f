'use strict'

// The web mode's bridge server: what it serves, and what it refuses (another site's page, a
// rebound host name, a body that is not JSON or too large, a path out of its folder).

const test = require('node:test')
const assert = require('node:assert/strict')
const http = require('node:http')
const path = require('node:path')
const { PANEL } = require('./helpers')

const { startWebPanel } = require(path.join(PANEL, 'dist/node/main/web.js'))

/** A raw request (fetch would not let a test set Host). */
function request(url, { method = 'GET', headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers }, (res) => {
      let text = ''
      res.on('data', (d) => (text += d))
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, text }))
    })
    req.on('error', reject)
    req.end(body)
  })
}

test('the bridge answers IPC calls as replies and refuses what a browser attack would send', async () => {
  const panel = await startWebPanel(0)
  try {
    assert.match(panel.url, /^http:\/\/127\.0\.0\.1:\d+\/$/)
    const json = { 'content-type': 'application/json' }
    const memory = await request(`${panel.url}ipc/system%3Amemory`, { method: 'POST', headers: json, body: '[]' })
    assert.equal(memory.status, 200)
    const reply = JSON.parse(memory.text)
    assert.equal(reply.ok, true)
    assert.ok(reply.value.total > 0)
    assert.equal(memory.headers['access-control-allow-origin'], undefined, 'no CORS')

    const missing = JSON.parse((await request(`${panel.url}ipc/server%3Astart`, { method: 'POST', headers: json, body: '[{"modelId":"none"}]' })).text)
    assert.equal(missing.ok, false)
    assert.equal(missing.error.code, 'MODEL_NOT_FOUND')

    const rebound = await request(`${panel.url}ipc/system%3Amemory`, { method: 'POST', headers: { ...json, host: 'attacker.example:80' }, body: '[]' })
    assert.equal(rebound.status, 403)
    // A form post from another page cannot send application/json without a CORS preflight.
    assert.equal((await request(`${panel.url}ipc/system%3Amemory`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: '[]' })).status, 415)
    assert.equal((await request(`${panel.url}ipc/system%3Amemory`, { method: 'POST', headers: json, body: '{"a":1}' })).status, 400)
    assert.equal((await request(`${panel.url}ipc/system%3Amemory`, { method: 'POST', headers: json, body: 'not json' })).status, 400)
    assert.equal((await request(`${panel.url}ipc/system%3Amemory`, { method: 'POST', headers: json, body: `["${'x'.repeat(2 << 20)}"]` })).status, 413)
    assert.equal((await request(`${panel.url}ipc/no%3Asuch`, { method: 'POST', headers: json, body: '[]' })).status, 404)
    assert.equal((await request(`${panel.url}ipc/system%3Amemory`, { method: 'PUT', headers: json, body: '[]' })).status, 405)

    const page = await request(panel.url)
    assert.equal(page.status, 200)
    assert.match(page.text, /<div id="root">/)
    for (const escape of ['%2e%2e/%2e%2e/package.json', '..%2f..%2fpackage.json', '../../package.json']) {
      const outside = await request(`${panel.url}${escape}`)
      assert.ok(outside.status === 403 || outside.status === 404, `${escape}: ${outside.status}`)
    }
    assert.equal((await request(`${panel.url}nothing.js`)).status, 404)

    const events = await new Promise((resolve, reject) => {
      http.get(`${panel.url}events`, (res) => {
        res.once('data', (chunk) => {
          resolve({ type: res.headers['content-type'], first: String(chunk) })
          res.destroy()
        })
      }).on('error', reject)
    })
    assert.deepEqual(events, { type: 'text/event-stream', first: ': connected\n\n' })
  } finally {
    await panel.close()
  }
})
