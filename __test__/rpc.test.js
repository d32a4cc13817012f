'use strict'

// A model split over machines with llama.cpp's RPC backend, on loopback: two real rpc-server
// workers and the real llama-server with the real chat model spread over them.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const net = require('node:net')
const { backends, withTinyModel, serveFiles, waitFor } = require('./helpers')
const {
  LlamaServerManager,
  ModelManager,
  ResourceOrchestrator,
  RpcServerManager,
  ServerError,
  ValidationError,
  systemInfo,
} = require('..')

const { paths: real, skip } = backends()

/** Processes of this machine whose command line runs `binary`. */
function running(binary) {
  return fs
    .readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .filter((pid) => {
      try {
        return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0] === binary
      } catch {
        return false
      }
    })
}

/** A loopback port nothing listens on. */
async function closedPort() {
  const server = net.createServer()
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address()
  await new Promise((resolve) => server.close(resolve))
  return port
}

async function withChatModel() {
  await withTinyModel(real)
  await serveFiles({ '/chat.gguf': real.chatModel }, (base) =>
    new ModelManager().downloadModel({ source: 'url', url: `${base}/chat.gguf`, name: 'chat', type: 'llm' }),
  )
}

test('an rpc-server binds loopback unless allowNetwork says otherwise', async () => {
  await assert.rejects(
    new RpcServerManager().start({ host: '0.0.0.0' }),
    (e) => e instanceof ValidationError && /allowNetwork/.test(e.message),
  )
  await assert.rejects(new RpcServerManager().start({ port: 0 }), ValidationError)
  await assert.rejects(
    new RpcServerManager().start({ memory: 1024 }),
    (e) => e instanceof ValidationError && /no such setting/.test(e.message) && /devices/.test(e.message),
  )
})

test('the chat model split over two rpc-servers answers "Paris", with its weights in the workers', {
  skip,
}, async () => {
  await withChatModel()
  const workers = [new RpcServerManager(), new RpcServerManager()]
  const llama = new LlamaServerManager()
  try {
    const infos = await Promise.all(
      workers.map((w) => w.start({ port: 'auto', threads: 1, binaryPath: real.rpcServer })),
    )
    for (const info of infos) {
      assert.equal(info.status, 'running')
      assert.match(info.endpoint, /^127\.0\.0\.1:\d+$/)
    }
    assert.ok(await workers[0].isHealthy())
    const endpoints = infos.map((i) => i.endpoint)
    // Sized before the start: each worker's share by the memory it reports, as llama.cpp splits.
    const model = await new ModelManager().getModelInfo('chat')
    const whole = await systemInfo.canRunModel(model, { contextSize: 512, gpuLayers: 0 })
    const split = await systemInfo.canRunModel(model, { contextSize: 512, rpcWorkers: endpoints })
    assert.equal(split.possible, true, split.reason)
    assert.deepEqual(
      split.workers.map((w) => [w.worker, w.layers]),
      [
        [endpoints[0], 16],
        [endpoints[1], 15],
      ],
    )
    for (const share of split.workers) {
      assert.equal(share.free, share.total, 'a CPU worker reports all its RAM as free')
      assert.ok(share.required > 30e6 && share.required < share.free, JSON.stringify(share))
    }
    // Here: the token embeddings (30 MB of the 98 MB file) and host buffers, no KV cache.
    assert.equal(split.estimate.weights, 30_081_024)
    assert.equal(split.estimate.kvCache, 0)
    assert.ok(split.estimate.weights < whole.estimate.weights / 3)
    assert.ok(split.estimate.ram < whole.estimate.ram, `${split.estimate.ram} of ${whole.estimate.ram}`)
    const optimal = await systemInfo.getOptimalConfig(model, { rpcWorkers: endpoints })
    assert.deepEqual([optimal.gpuLayers, optimal.contextSize], [31, 8192], 'every layer on a worker, the whole context')
    const started = await llama.start({
      modelId: 'chat',
      port: 'auto',
      threads: 1,
      contextSize: 512,
      rpcWorkers: endpoints,
    })
    assert.deepEqual(started.rpcWorkers, endpoints)
    // The server's log says where the layers go.
    assert.match(
      (await llama.getLogs(200)).join('\n'),
      new RegExp(`split over RPC workers: ${endpoints[0]}: 16 layers, [\\d.]+ MB; ${endpoints[1]}: 15 layers`),
    )
    assert.deepEqual(llama.getConfig().rpcWorkers, endpoints)
    const answer = await fetch(`http://127.0.0.1:${started.port}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        messages: [
          { role: 'system', content: 'You are a helpful assistant.' },
          { role: 'user', content: 'What is the capital of France?' },
        ],
        max_tokens: 24,
        temperature: 0,
      }),
    }).then((r) => r.json())
    assert.match(answer.choices[0].message.content, /Paris/)
    // The orchestrator counts only this machine's share of the split model, sized at start.
    const estimate = await new ResourceOrchestrator(undefined, llama).estimate({ width: 64, height: 64 })
    assert.equal(estimate.llm.estimated.ram, split.estimate.ram)
    assert.equal(estimate.llm.ram, Math.max(estimate.llm.estimated.ram, estimate.llm.measured.ram))
    console.log(
      `# split: this machine's share estimated ${(split.estimate.ram / 1e6).toFixed(1)} MB, measured ${(estimate.llm.measured.ram / 1e6).toFixed(1)} MB (the whole model: ${(whole.estimate.ram / 1e6).toFixed(1)} MB)`,
    )
    // rpc-server serves one client at a time: another llama-server cannot use a held worker.
    const second = new LlamaServerManager()
    const busy = await second.start({ modelId: 'chat', port: 'auto', rpcWorkers: [endpoints[1]] }).then(
      () => null,
      (e) => e,
    )
    assert.ok(busy instanceof ServerError, String(busy))
    assert.equal(busy.code, 'RPC_WORKER_BUSY')
    assert.equal(busy.details.worker, endpoints[1])
    assert.match(busy.details.suggestion, /one llama-server at a time/)
    assert.equal(second.getInfo().status, 'stopped')
    assert.equal(running(real.llamaServer).length, 1, 'only the first llama-server runs')
    // Each worker was used, and holds a share of the 90 MB of weights (an idle one holds a few MB).
    for (const [i, worker] of workers.entries()) {
      assert.match((await worker.getLogs(50)).join('\n'), /Accepted client connection/)
      const { rssBytes } = await worker.getMemoryUsage()
      assert.ok(rssBytes > 30e6, `${worker.getEndpoint()} holds ${rssBytes} bytes`)
      console.log(
        `# worker ${i}: ${split.workers[i].layers} layers, estimated ${(split.workers[i].required / 1e6).toFixed(1)} MB, measured ${(rssBytes / 1e6).toFixed(1)} MB`,
      )
    }
  } finally {
    await llama.stop()
    await Promise.all(workers.map((w) => w.stop()))
  }
  assert.deepEqual(running(real.rpcServer), [], 'no rpc-server left')
})

test('an unreachable worker is RPC_WORKER_UNREACHABLE naming it, and nothing is started', { skip }, async () => {
  await withChatModel()
  const worker = new RpcServerManager()
  const llama = new LlamaServerManager()
  try {
    const up = await worker.start({ port: 'auto', threads: 1, binaryPath: real.rpcServer })
    const down = `127.0.0.1:${await closedPort()}`
    const error = await llama.start({ modelId: 'chat', port: 'auto', rpcWorkers: [up.endpoint, down] }).then(
      () => null,
      (e) => e,
    )
    assert.ok(error instanceof ServerError, String(error))
    assert.equal(error.code, 'RPC_WORKER_UNREACHABLE')
    assert.equal(error.details.worker, down)
    assert.match(error.message, new RegExp(down))
    assert.equal(llama.getInfo().status, 'stopped')
    assert.deepEqual(running(real.llamaServer), [], 'no llama-server started')
    await assert.rejects(
      llama.start({ modelId: 'chat', rpcWorkers: ['no-port'] }),
      (e) => e instanceof ValidationError && /host:port/.test(e.message),
    )
    // Sizing a split asks the same of each worker.
    const model = await new ModelManager().getModelInfo('chat')
    await assert.rejects(
      systemInfo.canRunModel(model, { rpcWorkers: [up.endpoint, down] }),
      (e) => e instanceof ServerError && e.code === 'RPC_WORKER_UNREACHABLE' && e.details.worker === down,
    )
    await assert.rejects(
      systemInfo.getOptimalConfig(model, { rpcWorkers: ['no-port'] }),
      (e) => e instanceof ValidationError && /host:port/.test(e.message),
    )
  } finally {
    await llama.stop()
    await worker.stop()
  }
  assert.deepEqual(running(real.rpcServer), [])
})

test('a worker that dies while the model runs crashes llama-server; with autoRestart it is back once the worker is', {
  skip,
}, async () => {
  await withChatModel()
  const workers = [new RpcServerManager(), new RpcServerManager()]
  const llama = new LlamaServerManager()
  try {
    const endpoints = (
      await Promise.all(workers.map((w) => w.start({ port: 'auto', threads: 1, binaryPath: real.rpcServer })))
    ).map((i) => i.endpoint)
    const { port } = await llama.start({
      modelId: 'chat',
      port: 'auto',
      threads: 1,
      contextSize: 512,
      rpcWorkers: endpoints,
      autoRestart: true,
      maxRestarts: 5,
    })
    const chat = () =>
      fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ messages: [{ role: 'user', content: 'Hi' }], max_tokens: 4 }),
      })
    assert.equal((await chat()).status, 200)
    const crashed = new Promise((resolve) => llama.once('crashed', resolve))
    const restarted = new Promise((resolve) => llama.once('restarted', resolve))
    const lost = workers[0].getPort()
    // The library names the worker that was lost, in a line of the server's log (a 'log' event).
    const named = new RegExp(`RPC worker 127\\.0\\.0\\.1:${lost} does not answer`)
    const namedLine = waitFor(llama, 'log', (e) => named.test(e?.line), {
      what: `the log to name the lost worker ${lost}`,
    })
    namedLine.catch(() => {}) // awaited below, after the crash
    await workers[0].stop()
    // The next computation needs the lost worker's layers: llama.cpp aborts.
    const during = chat().catch(() => null)
    const crash = await crashed
    assert.match(crash.logs.join('\n'), /Remote RPC server crashed/, crash.logs.slice(-5).join('\n'))
    await namedLine
    assert.match((await llama.getLogs(50)).join('\n'), named)
    // The worker comes back on its port; a restart (backoff 0.5 s, then 1, 2, 4 s) finds it.
    await workers[0].start({ port: lost, threads: 1, binaryPath: real.rpcServer })
    await restarted
    assert.equal(llama.getInfo().status, 'running')
    assert.equal(llama.getInfo().port, port)
    await during
    assert.equal((await chat()).status, 200)
  } finally {
    await llama.stop()
    await Promise.all(workers.map((w) => w.stop()))
  }
})
