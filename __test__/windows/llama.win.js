'use strict'

// llamaServer as a Windows program (Windows Node under Wine, the llama-server.exe cross-built
// from the pinned sources): a real answer through the gateway, a crash and its automatic restart,
// the job object that ends the server with a killed app, deleting a model a process holds open,
// and the log file rotating while the server writes it.

const test = require('node:test')
const assert = require('node:assert/strict')
const { spawn } = require('node:child_process')
const crypto = require('node:crypto')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { backends, serveFiles, withTinyModel, nextEvent } = require('../helpers')
const { request, alive, gone } = require('./support')
const lib = require('../..')

const { paths: real } = backends()
const TINY = { modelId: 'tiny', port: 'auto', threads: 1, contextSize: 512 }

/** A port the OS says is free now. */
function freePort() {
  return new Promise((resolve) => {
    const probe = require('node:net').createServer()
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address()
      probe.close(() => resolve(port))
    })
  })
}

function chat(port, messages, max_tokens = 24) {
  return request(port, '/v1/chat/completions', {
    method: 'POST',
    body: { messages, temperature: 0, max_tokens },
  })
}

test('the real chat model answers "Paris" through the gateway; stop() leaves no llama-server.exe', async () => {
  lib.configure({ dataDir: fs.mkdtempSync(path.join(os.tmpdir(), 'genai-electron-chat-')) })
  process.env.GENAI_ELECTRON_LLAMA_SERVER = real.llamaServer
  const checksum = crypto.createHash('sha256').update(fs.readFileSync(real.chatModel)).digest('hex')
  const model = await serveFiles({ '/smollm2.gguf': real.chatModel }, (base) =>
    new lib.ModelManager().downloadModel({
      source: 'url',
      url: `${base}/smollm2.gguf`,
      name: 'smollm2',
      type: 'llm',
      checksum,
    }),
  )
  const server = new lib.LlamaServerManager()
  const info = await server.start({ modelId: model.id, port: 'auto', threads: 2, contextSize: 2048 })
  try {
    assert.notEqual(info.backendPort, info.port, 'llama-server listens behind the gateway')
    const res = await chat(info.port, [
      { role: 'system', content: 'You are a helpful assistant.' },
      { role: 'user', content: 'What is the capital of France?' },
    ])
    assert.equal(res.status, 200, res.text)
    const answer = res.json().choices[0].message.content
    console.log(`answer: ${JSON.stringify(answer)}`)
    assert.match(answer, /Paris/)
    assert.equal((await request(info.port, '/health')).status, 200)
  } finally {
    await server.stop()
  }
  assert.equal(server.getInfo().status, 'stopped')
  assert.equal(alive(info.pid), false, `llama-server ${info.pid} is gone`)
})

test('a killed llama-server.exe is restarted automatically and a chat sent meanwhile is answered', async () => {
  await withTinyModel(real)
  const server = new lib.LlamaServerManager()
  const info = await server.start({ ...TINY, autoRestart: true })
  try {
    const restarted = nextEvent(server, 'restarted', { timeout: 30_000 })
    process.kill(info.pid) // TerminateProcess: the crash of a Windows program
    const answer = await chat(info.port, [{ role: 'user', content: 'Hello' }], 4)
    assert.equal(answer.status, 200, answer.text)
    assert.equal(answer.json().usage.completion_tokens, 4)
    await restarted
    assert.notEqual(server.getInfo().pid, info.pid, 'answered by the restarted server')
    assert.equal(server.getInfo().port, info.port)
  } finally {
    await server.stop()
  }
})

test('killing the Node process outright leaves no llama-server.exe (the job object)', async () => {
  const dataDir = await withTinyModel(real)
  const script = `
    const lib = require(${JSON.stringify(path.resolve(__dirname, '../..'))})
    lib.configure({ dataDir: ${JSON.stringify(dataDir)} })
    lib.llamaServer.start(${JSON.stringify(TINY)}).then((info) => console.log('pid', info.pid))`
  const parent = spawn(process.execPath, ['-e', script], {
    env: { ...process.env, GENAI_ELECTRON_LLAMA_SERVER: real.llamaServer },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  parent.stderr.on('data', (d) => (out += d))
  const pid = await new Promise((resolve, reject) => {
    parent.stdout.on('data', (d) => {
      out += d
      const found = /pid (\d+)/.exec(out)
      if (found) resolve(Number(found[1]))
    })
    parent.on('exit', (code) => reject(new Error(`the parent exited (${code}) before starting: ${out}`)))
  })
  assert.ok(alive(pid), 'llama-server runs')
  parent.kill() // TerminateProcess on node.exe: no exit handler of ours runs
  assert.ok(await gone(pid, 2000), `llama-server ${pid} still runs 2 s after its parent was killed`)
})

test('deleting a model another program holds open is a typed error that loses nothing', async () => {
  const dataDir = await withTinyModel(real)
  const models = new lib.ModelManager()
  const tiny = await models.getModelInfo('tiny')
  // A llama-server this library did not start (another app, a leftover one): the library cannot
  // know of it, but Windows will not delete a file a process has open.
  const port = await freePort()
  const other = spawn(real.llamaServer, ['-m', tiny.path, '--port', String(port), '-t', '1', '-c', '512'], {
    stdio: 'ignore',
  })
  try {
    // Polled on purpose: this server runs without the library, and /health is its only signal
    // that the model is loaded (503 while it loads).
    const deadline = Date.now() + 30_000
    while (Date.now() < deadline && (await request(port, '/health').catch(() => ({}))).status !== 200) {
      await new Promise((r) => setTimeout(r, 100))
    }
    const error = await models.deleteModel('tiny').then(
      () => null,
      (e) => e,
    )
    assert.ok(error, 'deleteModel went through while llama-server.exe had the file open')
    assert.equal(error.code, 'MODEL_IN_USE', `${error.code}: ${error.message}`)
    assert.match(error.details.suggestion, /close/i)
    const kept = await models.getModelInfo('tiny')
    assert.equal(fs.statSync(kept.path).size, tiny.size, 'the model is whole and still listed')
  } finally {
    other.kill()
    await new Promise((resolve) => (other.exitCode === null ? other.once('exit', resolve) : resolve()))
  }
  await models.deleteModel('tiny')
  assert.deepEqual(
    (await models.listModels('llm')).map((m) => m.id),
    [],
  )
  assert.equal(fs.existsSync(path.join(dataDir, 'models', 'llm', 'tiny')), false)
})

test('the log file rotates while llama-server writes it; the server goes on', async () => {
  const dataDir = await withTinyModel(real)
  const server = new lib.LlamaServerManager()
  // Every log file opened from here rotates past 4 KiB: a start writes several times that.
  process.env.GENAI_ELECTRON_LOG_FILE_LIMIT = '4096'
  try {
    const info = await server.start(TINY)
    const answer = await chat(info.port, [{ role: 'user', content: 'Hello' }], 4)
    assert.equal(answer.status, 200, answer.text)
    const logs = path.join(dataDir, 'logs')
    const files = fs.readdirSync(logs).filter((f) => f.startsWith('llama-server.log'))
    assert.ok(files.includes('llama-server.log.1'), `rotated: ${files}`)
    assert.ok(!files.includes('llama-server.log.4'), `three archives at most: ${files}`)
    assert.ok(fs.statSync(path.join(logs, 'llama-server.log')).size < 4096 + 4096, 'the current file stays small')
    const recent = await server.getLogs(20)
    assert.ok(recent.length > 0)
  } finally {
    delete process.env.GENAI_ELECTRON_LOG_FILE_LIMIT
    await server.stop()
  }
})
