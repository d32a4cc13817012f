'use strict'

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const net = require('node:net')
const path = require('node:path')
const { spawn } = require('node:child_process')
const { backends, withTinyModel, ROOT } = require('./helpers')
const {
  LlamaServerManager,
  ModelManager,
  PortInUseError,
  ModelNotFoundError,
  ServerError,
  BinaryError,
  ValidationError,
  InsufficientResourcesError,
} = require('..')

const { paths: real, skip } = backends()

async function chat(port, body) {
  return fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ messages: [{ role: 'user', content: 'Hello' }], max_tokens: 6, ...body }),
  })
}

test('start → chat (plain and streaming) → stop, with one event per transition', { skip }, async () => {
  await withTinyModel(real)
  const server = new LlamaServerManager()
  const events = []
  for (const type of ['starting', 'started', 'stopped', 'crashed']) server.on(type, () => events.push(type))
  let logLines = 0
  server.on('log', () => logLines++)
  const info = await server.start({ modelId: 'tiny', port: 'auto', threads: 1, contextSize: 512 })
  try {
    assert.equal(info.status, 'running')
    assert.equal(server.isRunning(), true)
    assert.equal(server.getPort(), info.port)
    assert.ok(info.loadTimeMs >= 0)
    assert.equal(await server.isHealthy(), true)
    assert.deepEqual([server.getConfig().contextSize, server.getConfig().threads], [512, 1])
    // What llama-server said it runs with: the tiny model's 3 layers on the CPU, as configured.
    const { gpuLayers, parallelRequests } = server.getConfig()
    assert.deepEqual(info.runningWith, { gpuLayers, layers: 3, contextSize: 512, parallelRequests })

    const plain = await (await chat(info.port)).json()
    assert.equal(plain.usage.completion_tokens, 6)
    const stream = await chat(info.port, { stream: true })
    const text = await stream.text()
    const chunks = text.split('\n').filter((l) => l.startsWith('data: ') && !l.includes('[DONE]'))
    assert.ok(chunks.length >= 6, `${chunks.length} SSE chunks`)
    assert.match(text, /data: \[DONE\]/)

    await assert.rejects(
      server.start({ modelId: 'tiny', port: 'auto' }),
      (err) => err instanceof ServerError && err.code === 'SERVER_ALREADY_RUNNING',
    )
    assert.ok(logLines > 0)
    assert.ok((await server.getLogs(5)).length === 5)
  } finally {
    await server.stop()
  }
  assert.deepEqual(events, ['starting', 'started', 'stopped'])
  assert.equal(server.getInfo().status, 'stopped')
  assert.equal(await server.isHealthy(), false)
  // The port is free as soon as stop() resolved.
  await new Promise((resolve, reject) => {
    const probe = net
      .createServer()
      .once('error', reject)
      .listen(info.port, '127.0.0.1', () => probe.close(resolve))
  })
})

test('a config written for genai-electron 0.26 starts, each tuning key passed as its flag', { skip }, async () => {
  await withTinyModel(real)
  const server = new LlamaServerManager()
  const info = await server.start({
    modelId: 'tiny',
    port: 'auto',
    threads: 1,
    minimumContextSize: 256,
    preferredContextSize: 1024,
    maximumContextSize: 512,
    modelAlias: 'tiny-chat',
    jinja: true,
    reasoningFormat: 'none',
    batchSize: 256,
    continuousBatching: false,
    useMmap: false,
    useMlock: false,
    swaFull: true,
    cacheRam: 0,
    cpuMoe: true,
    nCpuMoe: 1,
    overrideTensors: 'token_embd=CPU',
    fit: 'off',
  })
  try {
    const argv = fs.readFileSync(`/proc/${info.pid}/cmdline`, 'utf8').split('\0').join(' ')
    for (const flags of [
      '--ctx-size 512',
      '--fit off',
      '--jinja',
      '--no-cont-batching',
      '--swa-full',
      '--cpu-moe',
      '--alias tiny-chat',
      '--reasoning-format none',
      '--batch-size 256',
      '--load-mode none',
      '--cache-ram 0',
      '--n-cpu-moe 1',
      '--override-tensor token_embd=CPU',
    ]) {
      assert.ok(argv.includes(flags), `${flags} in ${argv}`)
    }
    const config = server.getConfig()
    assert.equal(config.contextSize, 512, 'the largest context within the bounds')
    assert.equal(config.modelAlias, 'tiny-chat')
    assert.equal(config.fit, 'off')
    const models = await (await fetch(`http://127.0.0.1:${info.port}/v1/models`)).json()
    assert.equal(models.data[0].id, 'tiny-chat')
    assert.equal((await chat(info.port)).status, 200)
  } finally {
    await server.stop()
  }
  await assert.rejects(
    server.start({ modelId: 'tiny', port: 'auto', reasoningFormat: 'verbose' }),
    (err) => err instanceof ValidationError && /config\.reasoningFormat/.test(err.message),
  )
})

test('a model in use cannot be deleted', { skip }, async () => {
  await withTinyModel(real)
  const server = new LlamaServerManager()
  await server.start({ modelId: 'tiny', port: 'auto', threads: 1, contextSize: 512 })
  try {
    await assert.rejects(new ModelManager().deleteModel('tiny'), ServerError)
  } finally {
    await server.stop()
  }
  await new ModelManager().deleteModel('tiny')
})

test('bad starts are typed errors and leave nothing running', { skip }, async () => {
  const dataDir = await withTinyModel(real)
  const server = new LlamaServerManager()
  await assert.rejects(server.start({ modelId: 'missing' }), ModelNotFoundError)
  await assert.rejects(server.start({ modelId: 'tiny', port: 'eighty' }), ValidationError)
  await assert.rejects(server.start({ modelId: 'tiny', prot: 1 }), ValidationError)
  for (const flag of [
    '-m',
    '--port=9',
    '-c',
    '-ngl',
    '--ctx-size',
    '-ctk',
    '--api-key-file',
    '-hf',
    '--ssl-key-file',
  ]) {
    await assert.rejects(
      server.start({ modelId: 'tiny', extraArgs: [flag, 'x'] }),
      (err) => err instanceof ValidationError && err.message.includes(flag),
      flag,
    )
  }
  await assert.rejects(server.start({ modelId: 'tiny', binaryPath: '/nonexistent/llama-server' }), BinaryError)
  // A context whose KV cache (512 bytes a token for this model) is far beyond the machine's RAM:
  // refused with the figures before anything is spawned or downloaded; force skips the check.
  await assert.rejects(server.start({ modelId: 'tiny', contextSize: 200_000_000 }), (err) => {
    assert.ok(err instanceof InsufficientResourcesError, err.message)
    assert.equal(err.code, 'INSUFFICIENT_RESOURCES')
    assert.ok(err.details.required.ram > err.details.available.ram, JSON.stringify(err.details))
    assert.match(err.details.suggestion, /force: true/)
    return true
  })
  await assert.rejects(
    server.start({ modelId: 'tiny', contextSize: 200_000_000, force: true, binaryPath: '/nonexistent/llama-server' }),
    BinaryError,
  )
  const taken = net.createServer()
  await new Promise((resolve) => taken.listen(0, '127.0.0.1', resolve))
  await assert.rejects(server.start({ modelId: 'tiny', port: taken.address().port }), PortInUseError)
  taken.close()
  // A damaged model file: llama-server exits during start; the error carries its output.
  const info = await new ModelManager().getModelInfo('tiny')
  fs.writeFileSync(info.path, Buffer.alloc(fs.statSync(info.path).size))
  await assert.rejects(server.start({ modelId: 'tiny', port: 'auto', threads: 1 }), (err) => {
    assert.ok(err instanceof ServerError, String(err))
    assert.ok(Array.isArray(err.details.logs) && err.details.logs.length > 0)
    return true
  })
  assert.equal(server.getInfo().status, 'stopped')
  assert.ok(fs.existsSync(path.join(dataDir, 'logs', 'llama-server.log')))
})

test('a killed llama-server is reported as crashed', { skip }, async () => {
  await withTinyModel(real)
  const server = new LlamaServerManager()
  const info = await server.start({ modelId: 'tiny', port: 'auto', threads: 1, contextSize: 512 })
  const crashed = new Promise((resolve) => server.once('crashed', resolve))
  process.kill(info.pid, 'SIGKILL')
  const event = await crashed
  assert.equal(event.signal, 9)
  assert.equal(server.getInfo().status, 'crashed')
  const again = await server.restart()
  assert.equal(again.status, 'running')
  await server.stop()
})

test('killing the Node parent with SIGKILL takes llama-server with it', { skip }, async () => {
  const dataDir = await withTinyModel(real)
  const script = `
    const { llamaServer, configure } = require(${JSON.stringify(ROOT)})
    configure({ dataDir: ${JSON.stringify(dataDir)} })
    llamaServer.start({ modelId: 'tiny', port: 'auto', threads: 1, contextSize: 512 }).then((i) => console.log(i.pid))`
  const parent = spawn(process.execPath, ['-e', script], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, GENAI_ELECTRON_LLAMA_SERVER: real.llamaServer },
  })
  const pid = Number(await new Promise((resolve) => parent.stdout.once('data', (d) => resolve(String(d).trim()))))
  assert.ok(pid > 0)
  assert.ok(fs.existsSync(`/proc/${pid}`))
  parent.kill('SIGKILL')
  const deadline = Date.now() + 1000
  let gone = false
  // Polled against the deadline on purpose: the parent that could have told is dead, and
  // llama-server is not our child, so no event or exit status reaches this process.
  while (!gone && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 25))
    const stat = fs.existsSync(`/proc/${pid}/stat`) ? fs.readFileSync(`/proc/${pid}/stat`, 'utf8') : ''
    gone = stat === '' || stat.split(' ')[2] === 'Z'
  }
  assert.ok(gone, `llama-server ${pid} still alive 1 s after its parent was killed`)
})

test('with autoRestart, a crash is followed by a restart on the same port', { skip }, async () => {
  await withTinyModel(real)
  const server = new LlamaServerManager()
  const info = await server.start({ modelId: 'tiny', port: 'auto', threads: 1, contextSize: 512, autoRestart: true })
  const crashed = new Promise((resolve) => server.once('crashed', resolve))
  const restarted = new Promise((resolve) => server.once('restarted', resolve))
  process.kill(info.pid, 'SIGKILL')
  assert.equal((await crashed).hang, false)
  const again = await restarted
  assert.equal(again.port, info.port)
  assert.notEqual(again.pid, info.pid)
  assert.equal(await server.isHealthy(), true)
  await server.stop()
})
