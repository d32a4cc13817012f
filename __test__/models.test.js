'use strict'

const test = require('node:test')
const assert = require('node:assert/strict')
const crypto = require('node:crypto')
const fs = require('node:fs')
const http = require('node:http')
const os = require('node:os')
const path = require('node:path')
const { spawnSync } = require('node:child_process')
const { backends, assertLoopFree } = require('./helpers')
const lib = require('..')
const {
  ModelManager,
  configure,
  ModelNotFoundError,
  ValidationError,
  ChecksumError,
  DownloadError,
  CancelledError,
  FileSystemError,
} = lib

const { paths: real, skip } = backends()

function tmp() {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'genai-electron-models-'))
}

/** `size` bytes that start as an empty GGUF v3 header (no keys, no tensors), as a model must. */
function ggufSized(size) {
  const bytes = Buffer.alloc(size)
  bytes.write('GGUF', 0)
  bytes.writeUInt32LE(3, 4)
  return bytes
}

function sha256(file) {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex')
}

/** Serves the given files (name → path) on 127.0.0.1, optionally slowly. */
async function serve(files, { slow = false } = {}) {
  let requests = 0
  const server = http.createServer((req, res) => {
    requests++
    const file = files[req.url.slice(1)]
    if (!file) return res.writeHead(404).end()
    res.writeHead(200, { 'content-length': fs.statSync(file).size })
    const stream = fs.createReadStream(file, { highWaterMark: 64 * 1024 })
    if (!slow) return stream.pipe(res)
    // Throttled on purpose, not a wait: a slow download leaves time to cancel it mid-way.
    stream.on('data', (chunk) => {
      stream.pause()
      res.write(chunk, () => setTimeout(() => stream.resume(), 20))
    })
    stream.on('end', () => res.end())
    res.on('close', () => stream.destroy())
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const base = `http://127.0.0.1:${server.address().port}`
  return { url: (name) => `${base}/${name}`, close: () => server.close(), requests: () => requests }
}

test('the tiny diffusion set downloads as one multi-component model that sd-cli runs', { skip }, async () => {
  const files = {
    'diffusion.gguf': real.diffusionModel,
    'llm.gguf': real.diffusionComponents.llm,
    'taesd.gguf': real.diffusionComponents.taesd,
  }
  const server = await serve(files)
  try {
    configure({ dataDir: tmp() })
    const manager = new ModelManager()
    const info = await manager.downloadModel({
      source: 'url',
      url: server.url('diffusion.gguf'),
      checksum: sha256(real.diffusionModel),
      name: 'Tiny Ovis Image',
      type: 'diffusion',
      components: [
        { role: 'llm', source: 'url', url: server.url('llm.gguf'), checksum: sha256(real.diffusionComponents.llm) },
        {
          role: 'taesd',
          source: 'url',
          url: server.url('taesd.gguf'),
          checksum: sha256(real.diffusionComponents.taesd),
        },
      ],
    })
    assert.equal(info.id, 'tiny-ovis-image')
    assert.deepEqual(Object.keys(info.components), ['llm', 'taesd'])
    assert.deepEqual(await manager.getModelInfo(info.id), info)
    assert.deepEqual(
      (await manager.listModels('diffusion')).map((m) => m.id),
      ['tiny-ovis-image'],
    )
    const out = path.join(tmp(), 'out.png')
    const run = spawnSync(
      real.sdCli,
      [
        '--diffusion-model',
        info.path,
        '--llm',
        info.components.llm.path,
        '--taesd',
        info.components.taesd.path,
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
    assert.equal(run.status, 0, run.stderr)
    assert.equal(fs.readFileSync(out).subarray(1, 4).toString(), 'PNG')
  } finally {
    server.close()
  }
})

test('a URL download reports progress, reads GGUF metadata and verifies', { skip }, async (t) => {
  const server = await serve({ 'tiny.gguf': real.llmModel })
  try {
    configure({ dataDir: tmp() })
    const manager = new ModelManager()
    const seen = []
    // Download, hashing and the GGUF read run off the JS thread; only progress comes to it.
    const info = await assertLoopFree(
      () =>
        manager.downloadModel({
          source: 'url',
          url: server.url('tiny.gguf'),
          name: 'Tiny Llama',
          type: 'llm',
          onProgress: (downloaded, total) => seen.push([downloaded, total]),
        }),
      { t, what: 'a URL downloadModel' },
    )
    const size = fs.statSync(real.llmModel).size
    assert.equal(info.size, size)
    assert.equal(info.checksum, sha256(real.llmModel))
    assert.deepEqual(seen.at(-1), [size, size])
    for (let i = 1; i < seen.length; i++) assert.ok(seen[i][0] >= seen[i - 1][0], 'progress never goes back')
    const meta = info.ggufMetadata
    assert.deepEqual(
      [meta.architecture, meta.block_count, meta.embedding_length, meta.context_length],
      ['llama', 2, 64, 2048],
    )
    assert.equal(await manager.verifyModel(info.id), true)
    assert.deepEqual(await manager.getStorageUsage(), {
      llm: size,
      diffusion: 0,
      lora: 0,
      upscaler: 0,
      total: size,
      models: 1,
    })
    fs.appendFileSync(info.path, 'x')
    const report = await manager.verifyModelFiles(info.id)
    assert.equal(report.valid, false)
    assert.equal(report.problems[0].expected, info.checksum)
    // A file whose size changed is not taken for the model any more.
    assert.deepEqual(await manager.listModels(), [])
    await assert.rejects(
      manager.getModelInfo(info.id),
      (err) => err instanceof FileSystemError && err.code === 'MODEL_DAMAGED' && /bytes/.test(err.message),
    )
    await manager.deleteModel(info.id)
    await assert.rejects(manager.getModelInfo(info.id), ModelNotFoundError)
    assert.deepEqual(await manager.listModels(), [])
  } finally {
    server.close()
  }
})

test('GGUF metadata matches the gguf package for llama.cpp vocab files and the tiny models', { skip }, async () => {
  // The gguf package's reading of each file (scripts/gguf_facts.py), made once by `npm run backends`.
  const reference = JSON.parse(fs.readFileSync(real.tools.ggufFacts, 'utf8'))
  const files = Object.keys(reference)
  assert.ok(files.filter((f) => /ggml-vocab-.*\.gguf$/.test(f)).length > 10, `${files.length} files`)
  for (const model of [
    real.llmModel,
    real.diffusionModel,
    real.diffusionComponents.llm,
    real.diffusionComponents.taesd,
  ])
    assert.ok(files.includes(model), `${model} is read`)
  const manager = new ModelManager()
  for (const file of files) {
    const ours = await manager.readGGUFMetadata(file)
    const theirs = reference[file]
    for (const [key, value] of Object.entries(theirs)) {
      assert.deepEqual(ours[key] ?? null, value, `${path.basename(file)}: ${key}`)
    }
  }
})

test("0.26's download options: onComponentStart, provenance, an unknown key refused; updateModelMetadata", async () => {
  const model = path.join(tmp(), 'm.gguf')
  fs.writeFileSync(model, ggufSized(4096))
  const server = await serve({ 'm.gguf': model })
  try {
    configure({ dataDir: tmp() })
    const manager = new ModelManager()
    const base = { source: 'url', url: server.url('m.gguf'), type: 'llm' }
    await assert.rejects(
      manager.downloadModel({ ...base, name: 'M', mirror: 'x' }),
      (err) => err instanceof ValidationError && /config\.mirror: unknown field/.test(err.message),
    )
    await assert.rejects(manager.downloadModel({ ...base, name: 'M', onComponentStart: 3 }), ValidationError)
    const starts = []
    const info = await manager.downloadModel({
      ...base,
      name: 'M',
      provenance: { license: 'mit' },
      onComponentStart: (info) => starts.push(info),
    })
    assert.deepEqual(starts, [{ role: 'model', filename: 'm.gguf', index: 1, total: 1 }])
    assert.deepEqual(info.provenance, { license: 'mit' })
    const updated = await manager.updateModelMetadata('m', { source: 'remote-only' })
    assert.deepEqual(updated.ggufMetadata, info.ggufMetadata)
    await assert.rejects(manager.updateModelMetadata('m', { from: 'x' }), ValidationError)
    await assert.rejects(manager.updateModelMetadata('m', { source: 'nowhere' }), ValidationError)
  } finally {
    server.close()
  }
})

test("0.26's cancelDownload() with no id cancels every download under way; isDownloading() says so", async () => {
  const big = path.join(tmp(), 'big.gguf')
  fs.writeFileSync(big, ggufSized(8 << 20))
  const server = await serve({ 'big.gguf': big }, { slow: true })
  try {
    configure({ dataDir: tmp() })
    const manager = new ModelManager()
    assert.equal(manager.isDownloading(), false)
    const download = manager.downloadModel({ source: 'url', url: server.url('big.gguf'), name: 'Big', type: 'llm' })
    await new Promise((resolve) => manager.once('progress', resolve))
    assert.equal(manager.isDownloading(), true)
    assert.equal(manager.cancelDownload(), true)
    await assert.rejects(download, CancelledError)
    assert.equal(manager.isDownloading(), false)
    assert.equal(manager.cancelDownload(), false, 'nothing left to cancel')
  } finally {
    server.close()
  }
})

test('a cancelled download leaves nothing behind', async () => {
  const big = path.join(tmp(), 'big.gguf')
  fs.writeFileSync(big, ggufSized(8 << 20))
  const server = await serve({ 'big.gguf': big }, { slow: true })
  try {
    const dataDir = tmp()
    configure({ dataDir })
    const manager = new ModelManager()
    const download = manager.downloadModel({
      source: 'url',
      url: server.url('big.gguf'),
      name: 'Big',
      type: 'llm',
      downloadId: 'dl-42',
    })
    await new Promise((resolve) => manager.once('progress', resolve))
    assert.equal(manager.cancelDownload('dl-42'), true)
    await assert.rejects(
      download,
      (err) => err instanceof CancelledError && err.code === 'CANCELLED' && /cancelled/.test(err.message),
    )
    assert.equal(fs.existsSync(path.join(dataDir, 'models', 'llm', 'big')), false)
    // The same through an AbortSignal, and a signal aborted already fetches nothing.
    const controller = new AbortController()
    const aborted = manager.downloadModel({
      source: 'url',
      url: server.url('big.gguf'),
      name: 'Big',
      type: 'llm',
      signal: controller.signal,
    })
    await new Promise((resolve) => manager.once('progress', resolve))
    controller.abort()
    await assert.rejects(aborted, CancelledError)
    assert.equal(fs.existsSync(path.join(dataDir, 'models', 'llm', 'big')), false)
    await assert.rejects(
      manager.downloadModel({
        source: 'url',
        url: server.url('big.gguf'),
        name: 'Big',
        type: 'llm',
        signal: AbortSignal.abort(),
      }),
      CancelledError,
    )
  } finally {
    server.close()
  }
})

test('onProgress and signal of the wrong type are a ValidationError before anything is fetched', async () => {
  const server = await serve({})
  try {
    configure({ dataDir: tmp() })
    const manager = new ModelManager()
    const base = { source: 'url', url: server.url('nothing.gguf'), name: 'n', type: 'llm' }
    for (const bad of [{ onProgress: 'x' }, { signal: 'x' }, { signal: {} }, { signal: null }]) {
      await assert.rejects(
        manager.downloadModel({ ...base, ...bad }),
        (err) => err instanceof ValidationError && /onProgress|signal/.test(err.message),
        JSON.stringify(bad),
      )
    }
    assert.equal(server.requests(), 0)
  } finally {
    server.close()
  }
})

test('bad downloads are typed errors and register nothing', async () => {
  const file = path.join(tmp(), 'm.gguf')
  fs.writeFileSync(file, 'not gguf')
  const good = path.join(tmp(), 'good.gguf')
  fs.writeFileSync(good, ggufSized(64))
  const server = await serve({ 'm.gguf': file, 'good.gguf': good })
  try {
    configure({ dataDir: tmp() })
    const manager = new ModelManager()
    await assert.rejects(
      manager.downloadModel({
        source: 'url',
        url: server.url('good.gguf'),
        name: 'm',
        type: 'llm',
        checksum: '0'.repeat(64),
      }),
      ChecksumError,
    )
    await assert.rejects(
      manager.downloadModel({ source: 'url', url: server.url('m.gguf'), name: 'm', type: 'llm' }),
      ValidationError,
    )
    await assert.rejects(
      manager.downloadModel({ source: 'url', url: server.url('missing.gguf'), name: 'm', type: 'llm' }),
      (err) => err instanceof DownloadError && err.details.status === 404,
    )
    await assert.rejects(manager.downloadModel({ source: 'url', name: 'm', type: 'image' }), ValidationError)
    await assert.rejects(manager.listModels('image'), ValidationError)
    assert.deepEqual(await manager.listModels(), [])
  } finally {
    server.close()
  }
})

test('several downloads run at once', async () => {
  const dir = tmp()
  const files = {}
  for (const name of ['a.gguf', 'b.gguf', 'c.gguf']) {
    files[name] = path.join(dir, name)
    const header = Buffer.alloc(32)
    header.write('GGUF', 0)
    header.writeUInt32LE(3, 4)
    fs.writeFileSync(files[name], Buffer.concat([header, crypto.randomBytes(1 << 20)]))
  }
  const server = await serve(files, { slow: true })
  try {
    configure({ dataDir: tmp() })
    const manager = new ModelManager()
    const active = new Set()
    let overlapped = false
    manager.on('progress', (e) => {
      active.add(e.downloadId)
      if (active.size > 1) overlapped = true
    })
    const infos = await Promise.all(
      Object.keys(files).map((name) =>
        manager.downloadModel({
          source: 'url',
          url: server.url(name),
          name,
          type: 'llm',
          checksum: sha256(files[name]),
          downloadId: name,
        }),
      ),
    )
    assert.ok(overlapped, 'progress of several downloads interleaved')
    assert.deepEqual(
      infos.map((i) => i.checksum),
      Object.values(files).map(sha256),
    )
    assert.equal((await manager.listModels()).length, 3)
  } finally {
    server.close()
  }
})

function mountTmpfs(dir, size) {
  if (process.platform !== 'linux') return 'tmpfs mounts are Linux-only'
  if (process.getuid?.() !== 0) return 'mounting a small tmpfs needs root'
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { encoding: 'utf8' })
  return r.status === 0 ? null : `mount failed: ${r.stderr.trim()}`
}

test('a full disk is a FileSystemError and leaves no partial model', async (t) => {
  const dataDir = tmp()
  const cannot = mountTmpfs(dataDir, '512k')
  if (cannot) return t.skip(cannot)
  const big = path.join(tmp(), 'big.gguf')
  fs.writeFileSync(big, ggufSized(2 << 20))
  const server = await serve({ 'big.gguf': big })
  try {
    configure({ dataDir })
    const manager = new ModelManager()
    await assert.rejects(
      manager.downloadModel({ source: 'url', url: server.url('big.gguf'), name: 'big', type: 'llm' }),
      (err) => {
        assert.equal(err.code, 'FILE_SYSTEM_ERROR', err.message)
        assert.match(err.details.suggestion, /disk space/)
        return true
      },
    )
    assert.equal(fs.existsSync(path.join(dataDir, 'models', 'llm', 'big')), false)
    assert.deepEqual(await manager.listModels(), [])
  } finally {
    server.close()
    // Lazily: the library keeps its log open in the data folder until it logs elsewhere.
    const unmounted = spawnSync('umount', ['--lazy', dataDir], { encoding: 'utf8' })
    assert.equal(unmounted.status, 0, unmounted.stderr)
  }
})
