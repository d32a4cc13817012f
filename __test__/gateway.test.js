'use strict'

// The LLM gateway on llamaServer's public port: requests wait while the server (re)starts, the
// queue is bounded, the API key and browser origins are checked there, and llama-server's own
// "every origin" CORS answer is not passed on. Against the real llama-server and tiny model.

const test = require('node:test')
const assert = require('node:assert/strict')
const { backends, withTinyModel, waitFor, nextEvent } = require('./helpers')
const { LlamaServerManager } = require('..')

const { paths: real, skip } = backends()

const BASE = { modelId: 'tiny', port: 'auto', threads: 1, contextSize: 512 }

function chat(port, headers = {}, signal = undefined) {
  return fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
    method: 'POST',
    signal,
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ messages: [{ role: 'user', content: 'Hello' }], max_tokens: 4 }),
  })
}

test('a chat request sent right after a crash waits for the automatic restart and succeeds', { skip }, async () => {
  await withTinyModel(real)
  const server = new LlamaServerManager()
  const info = await server.start({ ...BASE, autoRestart: true })
  try {
    assert.notEqual(info.backendPort, info.port, 'llama-server listens behind the gateway')
    process.kill(info.pid, 'SIGKILL')
    const answer = await chat(info.port)
    assert.equal(answer.status, 200, await answer.clone().text())
    assert.equal((await answer.json()).usage.completion_tokens, 4)
    assert.notEqual(server.getInfo().pid, info.pid, 'answered by the restarted server')
    assert.equal(server.getInfo().port, info.port)
  } finally {
    await server.stop()
  }
})

test('the queue is bounded; /health never waits; a server that crashed for good answers 503 with the reason', {
  skip,
}, async () => {
  await withTinyModel(real)
  const server = new LlamaServerManager()
  const info = await server.start({ ...BASE, autoRestart: true, maxQueuedRequests: 1 })
  try {
    process.kill(info.pid, 'SIGKILL')
    await new Promise((resolve) => server.once('crashed', resolve))
    assert.ok(['crashed', 'restarting'].includes(server.getInfo().status))
    const health = await fetch(`http://127.0.0.1:${info.port}/health`)
    assert.equal(health.status, 503)
    const [first, second] = await Promise.all([chat(info.port), chat(info.port)])
    const statuses = [first.status, second.status].sort()
    assert.deepEqual(statuses, [200, 503])
    const refused = first.status === 503 ? first : second
    assert.equal(refused.headers.get('retry-after'), '5')
    assert.equal((await refused.json()).error.code, 'QUEUE_FULL')
  } finally {
    await server.stop()
  }

  const plain = await server.start(BASE)
  process.kill(plain.pid, 'SIGKILL')
  await new Promise((resolve) => server.once('crashed', resolve))
  const answer = await chat(plain.port)
  assert.equal(answer.status, 503)
  const body = await answer.json()
  assert.equal(body.error.code, 'SERVER_UNAVAILABLE')
  assert.equal(body.error.type, 'unavailable_error', 'the type OpenAI clients read')
  assert.match(body.error.message, /crashed: llama-server stopped unexpectedly \(signal 9\)/)
  await server.stop()
})

test('the gateway checks the API key (Bearer or X-Api-Key) and answers configured origins and those of this machine', {
  skip,
}, async () => {
  await withTinyModel(real)
  const server = new LlamaServerManager()
  const info = await server.start({ ...BASE, apiKey: 'k3y', allowedOrigins: ['http://app.local'] })
  try {
    assert.equal((await chat(info.port)).status, 401)
    assert.equal((await fetch(`http://127.0.0.1:${info.port}/health`)).status, 200, '/health needs no key')
    assert.equal((await fetch(`http://127.0.0.1:${info.port}/v1/health`)).status, 200, 'nor does /v1/health')
    assert.equal((await fetch(`http://127.0.0.1:${info.port}/props`)).status, 401, 'but /props does')
    const allowed = await chat(info.port, { authorization: 'Bearer k3y', origin: 'http://app.local' })
    assert.equal(allowed.status, 200)
    assert.equal(allowed.headers.get('access-control-allow-origin'), 'http://app.local')
    const other = await chat(info.port, { authorization: 'Bearer k3y', origin: 'http://evil.example' })
    assert.equal(other.status, 403)
    // As llama-server: Anthropic's header carries the key too; a dev server on this machine is
    // answered by default (with credentials), never with '*'.
    const anthropic = await chat(info.port, { 'x-api-key': 'k3y', origin: 'http://localhost:5173' })
    assert.equal(anthropic.status, 200)
    assert.equal(anthropic.headers.get('access-control-allow-origin'), 'http://localhost:5173')
    assert.equal(anthropic.headers.get('access-control-allow-credentials'), 'true')
    assert.equal((await chat(info.port, { 'x-api-key': 'wrong' })).status, 401)
    const preflight = await fetch(`http://127.0.0.1:${info.port}/v1/chat/completions`, {
      method: 'OPTIONS',
      headers: { origin: 'http://127.0.0.1:3000', 'access-control-request-headers': 'x-api-key, content-type' },
    })
    assert.equal(preflight.status, 200)
    assert.equal(preflight.headers.get('access-control-allow-headers'), 'x-api-key, content-type')
    // A preflight of another origin: as llama-server with --cors-origins, no CORS answer, so the
    // browser sends nothing.
    const refused = await fetch(`http://127.0.0.1:${info.port}/v1/chat/completions`, {
      method: 'OPTIONS',
      headers: { origin: 'http://evil.example', 'access-control-request-method': 'POST' },
    })
    assert.equal(refused.status, 200)
    assert.equal(refused.headers.get('access-control-allow-origin'), null)
    // Without an Origin, nothing about CORS: llama-server's "*" is not passed on.
    const direct = await chat(info.port, { authorization: 'Bearer k3y' })
    assert.equal(direct.status, 200)
    assert.equal(direct.headers.get('access-control-allow-origin'), null)
  } finally {
    await server.stop()
  }
})

test('a host of several addresses serves the port on each, with header names as llama-server writes them', {
  skip,
}, async () => {
  await withTinyModel(real)
  const { ValidationError } = require('..')
  const server = new LlamaServerManager()
  await assert.rejects(
    server.start({ ...BASE, host: '127.0.0.1,' }),
    (err) => err instanceof ValidationError && /empty address/.test(err.message),
  )
  const info = await server.start({ ...BASE, host: '127.0.0.1,::1' })
  try {
    for (const address of ['127.0.0.1', '[::1]']) {
      const health = await fetch(`http://${address}:${info.port}/health`)
      assert.equal(health.status, 200, address)
    }
    // Node's fetch lower-cases names: read the raw head.
    const head = await new Promise((resolve, reject) => {
      const socket = require('node:net').connect(info.port, '127.0.0.1', () =>
        socket.write('GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n'),
      )
      let raw = ''
      socket.on('data', (chunk) => {
        raw += chunk
      })
      socket.on('end', () => resolve(raw))
      socket.on('error', reject)
    })
    assert.match(head, /\r\nContent-Type: application\/json/)
  } finally {
    await server.stop()
  }
})

test('gateway: false serves llama-server on the public port itself', { skip }, async () => {
  await withTinyModel(real)
  const server = new LlamaServerManager()
  const info = await server.start({ ...BASE, gateway: false })
  try {
    assert.equal(info.backendPort, info.port)
    assert.equal((await chat(info.port)).status, 200)
    await assert.rejects(
      server.stop().then(() => server.start({ ...BASE, gateway: false, allowedOrigins: ['http://a'] })),
      /allowedOrigins needs the gateway/,
    )
  } finally {
    await server.stop()
  }
})

test('a waiting client that hangs up leaves the queue; a stop answers the ones still waiting', { skip }, async () => {
  const dataDir = await withTinyModel(real)
  // A llama-server that passes its probe and then never gets ready: requests keep waiting.
  const fake = require('node:path').join(dataDir, 'llama-server')
  require('node:fs').writeFileSync(
    fake,
    '#!/bin/sh\n[ "$1" = --version ] && { echo "version: 1 (fake)"; exit 0; }\nexec sleep 60\n',
    { mode: 0o755 },
  )
  const server = new LlamaServerManager()
  const starting = server.start({ ...BASE, binaryPath: fake, maxQueuedRequests: 1 }).catch((err) => err)
  await waitFor(server, ['state', 'starting'], () => server.getInfo().status === 'starting' && server.getPort(), {
    timeout: 10_000,
    what: () => `the fake to be starting with a port: ${JSON.stringify(server.getInfo())}`,
  })
  const port = server.getPort()
  const leaving = new AbortController()
  const queued = nextEvent(server, 'queued', { timeout: 10_000 })
  const first = chat(port, {}, leaving.signal).catch((err) => err)
  assert.equal((await queued).waiting, 1, 'the first request waits')
  const dequeued = nextEvent(server, 'dequeued', { timeout: 10_000 })
  leaving.abort()
  assert.equal((await first).name, 'AbortError')
  assert.equal((await dequeued).waiting, 0, 'the client that hung up left the queue')
  // Its place is free again: this one waits instead of being refused.
  const queuedAgain = nextEvent(server, 'queued', { timeout: 10_000 })
  const second = chat(port)
  assert.equal((await queuedAgain).waiting, 1, 'the second request waits')
  await server.stop()
  const answer = await second
  assert.equal(answer.status, 503)
  assert.equal((await answer.json()).error.code, 'SERVER_UNAVAILABLE')
  assert.equal((await starting).code, 'CANCELLED')
})

test('the environment cannot move llama-server off what the library set; its CORS flags are refused behind the gateway', {
  skip,
}, async () => {
  await withTinyModel(real)
  const { ValidationError } = require('..')
  const server = new LlamaServerManager()
  await assert.rejects(
    server.start({ ...BASE, extraArgs: ['--cors-origins', 'http://a.test'] }),
    (err) => err instanceof ValidationError && /allowedOrigins/.test(err.message),
  )
  // Google Cloud's port moved llama-server onto the gateway's own port; a key in the
  // environment would lock the gateway out. AIP_MODE itself passes: Vertex AI's route works.
  const saved = { ...process.env }
  Object.assign(process.env, { AIP_MODE: 'PREDICTION', AIP_HTTP_PORT: '1', LLAMA_ARG_PORT: '1', LLAMA_API_KEY: 'x' })
  try {
    const info = await server.start(BASE)
    assert.equal((await chat(info.port)).status, 200)
    const instance = { '@requestFormat': 'chatCompletions', max_tokens: 4, messages: [{ role: 'user', content: 'Hi' }] }
    const predicted = await fetch(`http://127.0.0.1:${info.port}/predict`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ instances: [instance] }),
    })
    assert.equal(predicted.status, 200)
    assert.equal((await predicted.json()).predictions.length, 1)
  } finally {
    for (const name of ['AIP_MODE', 'AIP_HTTP_PORT', 'LLAMA_ARG_PORT', 'LLAMA_API_KEY']) {
      if (saved[name] === undefined) delete process.env[name]
      else process.env[name] = saved[name]
    }
    await server.stop()
  }
})
