'use strict'

const test = require('node:test')
const assert = require('node:assert/strict')
const crypto = require('node:crypto')
const fs = require('node:fs')
const http = require('node:http')
const os = require('node:os')
const path = require('node:path')
const { spawn, spawnSync } = require('node:child_process')
const { runNode, backends, waitFor, assertLoopFree } = require('./helpers')
const { BinaryManager, LlamaServerManager, configure, ValidationError, BinaryError } = require('..')

const { paths: real, skip } = backends()

function tmp() {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'genai-electron-bin-'))
}

function sha256(file) {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex')
}

/** Serves files from a folder on 127.0.0.1; resolves with its base URL and request log. */
async function serve(dir) {
  const log = []
  const server = http.createServer((req, res) => {
    log.push(req.url)
    const file = path.join(dir, path.basename(req.url))
    if (!fs.existsSync(file)) return res.writeHead(404).end()
    res.writeHead(200, { 'content-length': fs.statSync(file).size })
    fs.createReadStream(file).pipe(res)
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  return { url: `http://127.0.0.1:${server.address().port}`, log, close: () => server.close() }
}

test('unknown kinds and malformed options are ValidationErrors', async () => {
  const manager = new BinaryManager()
  await assert.rejects(manager.ensureBinary('llama'), ValidationError)
  await assert.rejects(manager.ensureBinary('sd-cli', { variants: 'x' }), ValidationError)
  await assert.rejects(manager.buildFromSource('sd-cli', { archive: 1 }), ValidationError)
})

test('a missing explicit path is a BinaryError that says where it came from', async () => {
  configure({ dataDir: tmp() })
  await assert.rejects(new BinaryManager().ensureBinary('sd-cli', { path: '/nonexistent/sd-cli' }), (err) => {
    assert.ok(err instanceof BinaryError)
    assert.equal(err.details.origin, 'the path option')
    assert.ok(err.details.suggestion)
    return true
  })
})

test('the real executables are found through their environment variables and probed', { skip }, async () => {
  const { code, stdout, stderr } = await runNode(
    `const { binaries } = require('./')
     Promise.all(['llama-server', 'sd-cli', 'sd-server', 'rpc-server'].map((k) => binaries.ensureBinary(k)))
       .then((r) => console.log(JSON.stringify(r)))`,
    {
      env: {
        GENAI_ELECTRON_DATA_DIR: tmp(),
        GENAI_ELECTRON_LLAMA_SERVER: real.llamaServer,
        GENAI_ELECTRON_SD_CLI: real.sdCli,
        GENAI_ELECTRON_SD_SERVER: real.sdServer,
        GENAI_ELECTRON_RPC_SERVER: real.rpcServer,
      },
    },
  )
  assert.equal(code, 0, stderr)
  const [llama, cli, server, rpc] = JSON.parse(stdout)
  assert.deepEqual([llama.origin, llama.path], ['env', real.llamaServer])
  assert.match(llama.version, /version/)
  assert.equal(cli.path, real.sdCli)
  assert.equal(server.path, real.sdServer)
  assert.deepEqual([rpc.kind, rpc.path, rpc.version], ['rpc-server', real.rpcServer, 'rpc-server (llama.cpp)'])
})

test('a release archive of the real llama-server installs from a local server, once', { skip }, async (t) => {
  const dir = tmp()
  // A release-shaped archive: build/bin/llama-server, as llama.cpp publishes for Linux.
  fs.mkdirSync(path.join(dir, 'pkg', 'build', 'bin'), { recursive: true })
  fs.copyFileSync(real.llamaServer, path.join(dir, 'pkg', 'build', 'bin', 'llama-server'))
  fs.chmodSync(path.join(dir, 'pkg', 'build', 'bin', 'llama-server'), 0o755)
  const archive = path.join(dir, 'llama-test-bin-linux-x64.tar.gz')
  assert.equal(spawnSync('tar', ['-czf', archive, '-C', path.join(dir, 'pkg'), 'build']).status, 0)
  const server = await serve(dir)
  try {
    configure({ dataDir: path.join(dir, 'data') })
    const manager = new BinaryManager()
    const stages = new Set()
    manager.on('binary-progress', (e) => stages.add(e.stage))
    const options = {
      version: 'test',
      variants: [
        { type: 'cpu', url: `${server.url}/llama-test-bin-linux-x64.tar.gz`, sha256: '0'.repeat(64) },
        { type: 'cpu', url: `${server.url}/llama-test-bin-linux-x64.tar.gz`, sha256: sha256(archive) },
      ],
    }
    // Every manager is a view of one native manager: installs are serialised across them, and
    // each hears every install's progress (a server's own start included).
    const other = new BinaryManager()
    const server2 = new LlamaServerManager()
    const heard = { other: 0, server: 0 }
    other.on('binary-progress', () => heard.other++)
    server2.on('binary-progress', () => heard.server++)
    // Download, hashing and extraction of 15 MB run off the JS thread.
    const results = await assertLoopFree(
      () => Promise.all([manager.ensureBinary('llama-server', options), other.ensureBinary('llama-server', options)]),
      { t, what: 'two ensureBinary calls installing one archive' },
    )
    assert.deepEqual(results.map((r) => r.origin).sort(), ['download', 'installed'])
    const first = results.find((r) => r.origin === 'download')
    assert.equal(results[0].path, results[1].path)
    // Events reach JS one per turn of the loop: some may still be on their way.
    const heardBoth = () => heard.other > 0 && heard.server > 0
    await waitFor([other, server2], 'binary-progress', heardBoth, {
      timeout: 5000,
      what: () => `both other managers to hear the install: ${JSON.stringify(heard)}`,
    })
    assert.match(first.version, /version: /)
    assert.ok(first.path.startsWith(path.join(dir, 'data', 'binaries', 'llama', 'test')))
    assert.equal(spawnSync(first.path, ['--version']).status, 0)
    assert.deepEqual([...stages].sort(), ['download', 'extract', 'probe'])

    const second = await manager.ensureBinary('llama-server', options)
    assert.deepEqual([second.origin, second.path], ['installed', first.path])
    assert.equal(server.log.length, 2, 'the second call used no network')
  } finally {
    server.close()
  }
})

test('the real llama-server answers chat completions with the tiny model', { skip }, async () => {
  // A port the OS says is free (a random one may be taken by another test's server).
  const port = await new Promise((resolve) => {
    const probe = http.createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address()
      probe.close(() => resolve(port))
    })
  })
  const child = spawn(
    real.llamaServer,
    ['-m', real.llmModel, '--host', '127.0.0.1', '--port', String(port), '-t', '1', '-c', '512'],
    { stdio: 'ignore' },
  )
  try {
    let healthy = false
    // Polled on purpose: this llama-server runs without the library, and /health is the only
    // readiness signal it gives (it answers 503 while the model loads).
    for (let i = 0; i < 200 && !healthy; i++) {
      await new Promise((r) => setTimeout(r, 50))
      healthy = await fetch(`http://127.0.0.1:${port}/health`).then(
        (r) => r.status === 200,
        () => false,
      )
    }
    assert.ok(healthy, 'llama-server became healthy')
    const res = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ messages: [{ role: 'user', content: 'Hello' }], max_tokens: 8 }),
    })
    assert.equal(res.status, 200)
    const body = await res.json()
    assert.equal(body.object, 'chat.completion')
    assert.equal(body.usage.completion_tokens, 8)
    assert.equal(typeof body.choices[0].message.content, 'string')
  } finally {
    child.kill('SIGKILL')
  }
})

test('the real sd-cli writes a 64×64 PNG from the tiny diffusion set', { skip }, async () => {
  const out = path.join(tmp(), 'out.png')
  const { llm, taesd } = real.diffusionComponents
  const result = spawnSync(
    real.sdCli,
    [
      '--diffusion-model',
      real.diffusionModel,
      '--llm',
      llm,
      '--taesd',
      taesd,
      '-p',
      'a red cube',
      '-W',
      '64',
      '-H',
      '64',
      '--steps',
      '2',
      '--cfg-scale',
      '1',
      '--seed',
      '42',
      '-t',
      '1',
      '-o',
      out,
    ],
    { encoding: 'utf8', timeout: 120_000 },
  )
  assert.equal(result.status, 0, result.stdout + result.stderr)
  const png = fs.readFileSync(out)
  assert.equal(png.subarray(0, 8).toString('hex'), '89504e470d0a1a0a')
  assert.deepEqual([png.readUInt32BE(16), png.readUInt32BE(20)], [64, 64])
})
