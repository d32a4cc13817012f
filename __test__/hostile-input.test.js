'use strict'

// Hostile input through the public API: model ids that leave the models folder, records and
// GGUF headers crafted to poison or exhaust, and servers that stall, loop or never end.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const http = require('node:http')
const os = require('node:os')
const path = require('node:path')
const { spawnSync } = require('node:child_process')
const { ModelManager, configure, ModelNotFoundError, ValidationError, DownloadError } = require('..')

function tmp() {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'genai-electron-hostile-'))
}

/** A GGUF v3 file. `kvs`: [key, type, value] with type 'str' | 'u32' | 'u8[]' | 'u32[]'; `tensors`: [name, dims, ggmlType, offset]. */
function gguf({ kvs = [], tensors = [], data = 0 } = {}) {
  const parts = []
  const u32 = (v) => {
    const b = Buffer.alloc(4)
    b.writeUInt32LE(v)
    parts.push(b)
  }
  const u64 = (v) => {
    const b = Buffer.alloc(8)
    b.writeBigUInt64LE(BigInt(v))
    parts.push(b)
  }
  const str = (s) => {
    const b = Buffer.from(s)
    u64(b.length)
    parts.push(b)
  }
  parts.push(Buffer.from('GGUF'))
  u32(3)
  u64(tensors.length)
  u64(kvs.length)
  for (const [key, type, value] of kvs) {
    str(key)
    if (type === 'str') {
      u32(8)
      str(value)
    }
    if (type === 'u32') {
      u32(4)
      u32(value)
    }
    if (type === 'u8[]') {
      u32(9)
      u32(0)
      u64(value.length)
      parts.push(Buffer.from(value))
    }
    if (type === 'u32[]') {
      u32(9)
      u32(4)
      u64(value.length)
      value.forEach(u32)
    }
  }
  for (const [name, dims, kind, offset] of tensors) {
    str(name)
    u32(dims.length)
    dims.forEach(u64)
    u32(kind)
    u64(offset)
  }
  let header = Buffer.concat(parts)
  header = Buffer.concat([header, Buffer.alloc((32 - (header.length % 32)) % 32)])
  return Buffer.concat([header, Buffer.alloc(data, 7)])
}

/** A llama-shaped model with one I8 tensor of `data` bytes: complete only when all of them are there. */
function model(data = 100_000) {
  return gguf({
    kvs: [
      ['general.architecture', 'str', 'llama'],
      ['llama.block_count', 'u32', 2],
    ],
    tensors: [['t', [data], 24, 0]],
    data,
  })
}

/** An HTTP server on 127.0.0.1 whose requests `handle` answers; closed after `use`. */
async function withServer(handle, use) {
  const sockets = new Set()
  const server = http.createServer(handle)
  server.on('connection', (s) => {
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  try {
    return await use(`http://127.0.0.1:${server.address().port}`)
  } finally {
    for (const s of sockets) s.destroy()
    server.close()
  }
}

function fresh() {
  const dataDir = tmp()
  configure({ dataDir })
  return { dataDir, manager: new ModelManager() }
}

test('model ids cannot leave the models folder, and records on disk are not trusted', async () => {
  const { dataDir, manager } = fresh()
  const planted = path.join(dataDir, 'planted')
  fs.mkdirSync(planted, { recursive: true })
  const record = (id, file) =>
    JSON.stringify({
      id,
      name: id,
      type: 'llm',
      size: 1,
      path: file,
      downloadedAt: '2026-01-01T00:00:00.000Z',
      checksum: '00',
      source: { type: 'url', url: 'http://127.0.0.1:9/m.gguf' },
    })
  fs.writeFileSync(path.join(planted, 'model.json'), record('../../planted', path.join(planted, 'm.gguf')))
  fs.writeFileSync(path.join(planted, 'keep.txt'), 'unrelated')
  const evil = path.join(dataDir, 'models', 'llm', 'evil')
  fs.mkdirSync(evil, { recursive: true })
  fs.writeFileSync(path.join(evil, 'model.json'), record('../../planted', '/etc/hostname'))

  for (const id of ['../../planted', '../planted', '/etc', '', 'Evil', 'evil/../evil']) {
    await assert.rejects(manager.getModelInfo(id), ModelNotFoundError, id)
    await assert.rejects(manager.deleteModel(id), ModelNotFoundError, id)
    await assert.rejects(manager.verifyModel(id), ModelNotFoundError, id)
  }
  assert.equal(fs.readFileSync(path.join(planted, 'keep.txt'), 'utf8'), 'unrelated')

  const damaged = []
  manager.on('damaged', (e) => damaged.push(e))
  assert.deepEqual(await manager.listModels(), [])
  assert.equal(damaged.length, 1)
  assert.equal(damaged[0].path, evil)
  assert.match(damaged[0].reason, /another id/)
  await assert.rejects(
    manager.getModelInfo('evil'),
    (err) => err.code === 'MODEL_DAMAGED' && /another id/.test(err.message),
  )
  await manager.deleteModel('evil')
  assert.equal(fs.existsSync(evil), false)
  assert.ok(fs.existsSync(path.join(planted, 'keep.txt')))
})

test('a __proto__ key in GGUF metadata is a plain key, never a prototype', async () => {
  const { manager } = fresh()
  const file = path.join(tmp(), 'proto.gguf')
  fs.writeFileSync(
    file,
    gguf({
      kvs: [
        ['general.architecture', 'str', 'llama'],
        ['__proto__', 'u32[]', [1, 2, 3]],
        ['constructor', 'str', 'x'],
      ],
    }),
  )
  for (const meta of [
    await manager.readGGUFMetadata(file),
    await manager.readGGUFMetadata(file, { fullArrays: true }),
  ]) {
    assert.equal(Object.getPrototypeOf(meta.raw), Object.prototype)
    assert.equal(Object.getPrototypeOf(meta), Object.prototype)
    assert.deepEqual(Object.getOwnPropertyDescriptor(meta.raw, '__proto__').value, [1, 2, 3])
    assert.equal(typeof meta.raw.hasOwnProperty, 'function')
    assert.equal(meta.raw.constructor, 'x')
    assert.equal({}.polluted, undefined)
  }
})

test('GGUF metadata is bounded: many kept arrays are summarised, and nothing poisons the listing', async () => {
  const { dataDir, manager } = fresh()
  const kvs = [['general.architecture', 'str', 'llama']]
  for (let i = 0; i < 1000; i++)
    kvs.push([`k${String(i).padStart(4, '0')}`, 'u8[]', new Uint8Array(1024).fill(i % 256)])
  const bomb = gguf({ kvs })
  const file = path.join(tmp(), 'bomb.gguf')
  fs.writeFileSync(file, bomb)
  const before = process.memoryUsage().rss
  const meta = await manager.readGGUFMetadata(file)
  const kept = Object.values(meta.raw).filter(Array.isArray).length
  assert.equal(kept, 64, 'arrays kept until 65,536 items in all')
  assert.deepEqual(meta.raw.k0999, { type: 'array', itemType: 'uint8', length: 1024 })
  assert.ok(process.memoryUsage().rss - before < 200 << 20, 'a 1 MB header costs no more than its budget')
  const full = await manager.readGGUFMetadata(file, { fullArrays: true })
  assert.equal(Object.values(full.raw).filter(Array.isArray).length, 1000)

  // Beyond even the budget of fullArrays: a typed error that says what to do.
  const huge = path.join(tmp(), 'huge.gguf')
  fs.writeFileSync(huge, gguf({ kvs: [['big', 'u8[]', new Uint8Array(9 << 20)]] }))
  await assert.rejects(manager.readGGUFMetadata(huge, { fullArrays: true }), (err) => {
    assert.ok(err instanceof ValidationError, err.message)
    assert.match(err.details.suggestion, /without fullArrays/)
    return true
  })
  assert.equal((await manager.readGGUFMetadata(huge)).raw.big.length, 9 << 20)

  // The same header served as a model: it registers, and listing still works for everyone.
  await withServer(
    (req, res) => res.end(req.url === '/bomb.gguf' ? bomb : model()),
    async (base) => {
      await manager.downloadModel({ source: 'url', url: `${base}/bomb.gguf`, name: 'bomb', type: 'llm' })
      await manager.downloadModel({ source: 'url', url: `${base}/good.gguf`, name: 'good', type: 'llm' })
    },
  )
  fs.mkdirSync(path.join(dataDir, 'models', 'llm', 'broken'))
  fs.writeFileSync(path.join(dataDir, 'models', 'llm', 'broken', 'model.json'), '{"id": "broken", "truncated')
  const damaged = []
  manager.on('damaged', (e) => damaged.push(e))
  assert.deepEqual(
    (await manager.listModels()).map((m) => m.id),
    ['bomb', 'good'],
  )
  assert.equal((await manager.getModelInfo('good')).id, 'good')
  assert.equal(damaged.length, 1)
  assert.match(damaged[0].path, /broken$/)
  // The library's own lines that concern no server go to its log file in the data folder.
  const libraryLog = fs.readFileSync(path.join(dataDir, 'logs', 'genai-electron.log'), 'utf8')
  assert.match(libraryLog, /\] \[WARN\] skipping model folder .*broken/)
})

test('readGGUFMetadata by URL reads only what the header needs and every read has a deadline', async () => {
  const { manager } = fresh()
  const header = model(1000).subarray(0, 256)
  let sent = 0
  const lie = 1_500_000_000
  const handle = (req, res) => {
    if (req.url === '/ignores-range') {
      res.writeHead(200, { 'content-length': lie })
      res.write(header)
      const chunk = Buffer.alloc(1 << 16)
      const pump = () => {
        while (sent < lie && res.write(chunk)) sent += chunk.length
      }
      res.on('drain', pump)
      pump()
    } else if (req.url === '/endless') {
      res.writeHead(200) // chunked, never ends
      const chunk = Buffer.alloc(1 << 16, 'z')
      const pump = () => {
        while (res.write(chunk)) {
          /* keep writing */
        }
      }
      res.on('drain', pump)
      pump()
    } else if (req.url === '/stalls') {
      res.writeHead(206, { 'content-range': 'bytes 0-1048575/2000000', 'content-length': 1 << 20 })
      res.write(header.subarray(0, 16))
    }
    // '/silent': never answered
  }
  await withServer(handle, async (base) => {
    const meta = await manager.readGGUFMetadata(`${base}/ignores-range`)
    assert.equal(meta.block_count, 2)
    // A window on purpose: a reader that kept the body flowing would let the server send more.
    await new Promise((resolve) => setTimeout(resolve, 200))
    assert.ok(sent < 64 << 20, `the server got to send ${sent} bytes`)
    await assert.rejects(manager.readGGUFMetadata(`${base}/endless`), ValidationError)
    for (const url of ['/silent', '/stalls']) {
      const started = Date.now()
      await assert.rejects(manager.readGGUFMetadata(`${base}${url}`, { timeout: 300 }), (err) => {
        assert.ok(err instanceof DownloadError, `${url}: ${err.message}`)
        assert.match(err.message, /no answer within/)
        return true
      })
      assert.ok(Date.now() - started < 5000, `${url} took ${Date.now() - started} ms`)
    }
    await assert.rejects(manager.readGGUFMetadata(`${base}/silent`, { timeout: -1 }), ValidationError)
  })
})

test('a FIFO or a folder given as a model path is refused at once', async (t) => {
  const { manager } = fresh()
  const dir = tmp()
  await assert.rejects(
    manager.readGGUFMetadata(dir),
    (err) => err instanceof ValidationError && /regular file/.test(err.message),
  )
  const fifo = path.join(dir, 'm.gguf')
  const made = spawnSync('mkfifo', [fifo])
  if (made.status !== 0) return t.skip(`mkfifo is not available: ${made.stderr}`)
  const started = Date.now()
  await assert.rejects(
    manager.readGGUFMetadata(fifo),
    (err) => err instanceof ValidationError && /regular file/.test(err.message),
  )
  assert.ok(Date.now() - started < 2000)
})

test('a stalled download gives up after stallTimeout and leaves only its resumable part', async () => {
  const { dataDir, manager } = fresh()
  const bytes = model()
  let stalls = true
  await withServer(
    (req, res) => {
      const start = Number(/bytes=(\d+)-/.exec(req.headers.range ?? '')?.[1] ?? 0)
      const headers = { 'content-length': bytes.length - start }
      if (start) headers['content-range'] = `bytes ${start}-${bytes.length - 1}/${bytes.length}`
      res.writeHead(start ? 206 : 200, headers)
      // Promises the rest, sends 1,000 bytes, and keeps the connection open.
      if (stalls) res.write(bytes.subarray(start, start + 1000))
      else res.end(bytes.subarray(start))
    },
    async (base) => {
      const started = Date.now()
      await assert.rejects(
        manager.downloadModel({ source: 'url', url: `${base}/m.gguf`, name: 'm', type: 'llm', stallTimeout: 200 }),
        (err) => {
          assert.ok(err instanceof DownloadError, err.message)
          assert.match(err.message, /no data for 0\.2 s/)
          assert.match(err.details.suggestion, /resumes/)
          return true
        },
      )
      assert.ok(Date.now() - started < 20_000, `gave up after ${Date.now() - started} ms`)
      assert.deepEqual(fs.readdirSync(path.join(dataDir, 'models', 'llm', 'm')), ['m.gguf.part'])
      stalls = false
      const info = await manager.downloadModel({
        source: 'url',
        url: `${base}/m.gguf`,
        name: 'm',
        type: 'llm',
        stallTimeout: 200,
      })
      assert.deepEqual(fs.readFileSync(info.path), bytes)
    },
  )
  await assert.rejects(
    manager.downloadModel({ source: 'url', url: 'http://127.0.0.1:9/m.gguf', name: 'z', type: 'llm', stallTimeout: 0 }),
    ValidationError,
  )
})

test('a redirect loop leaves no folder behind', async () => {
  const { dataDir, manager } = fresh()
  let requests = 0
  await withServer(
    (req, res) => {
      requests++
      res.writeHead(302, { location: req.url }).end()
    },
    async (base) => {
      await assert.rejects(
        manager.downloadModel({ source: 'url', url: `${base}/loop.gguf`, name: 'loop', type: 'llm' }),
        DownloadError,
      )
    },
  )
  assert.ok(requests > 10)
  assert.equal(fs.existsSync(path.join(dataDir, 'models', 'llm', 'loop')), false)
})

test('a GGUF cut short with no Content-Length is refused, kept as a part and resumed', async () => {
  const { dataDir, manager } = fresh()
  const bytes = model(200_000)
  const cut = Math.floor(bytes.length * 0.6)
  let cutShort = true
  await withServer(
    (req, res) => {
      const start = Number(/bytes=(\d+)-/.exec(req.headers.range ?? '')?.[1] ?? 0)
      if (cutShort) {
        // No length: the connection closing ends the body, at 60%.
        res.writeHead(200)
        res.end(bytes.subarray(0, cut))
        return
      }
      res.writeHead(206, {
        'content-length': bytes.length - start,
        'content-range': `bytes ${start}-${bytes.length - 1}/${bytes.length}`,
      })
      res.end(bytes.subarray(start))
    },
    async (base) => {
      await assert.rejects(
        manager.downloadModel({ source: 'url', url: `${base}/m.gguf`, name: 'm', type: 'llm' }),
        (err) => {
          assert.ok(err instanceof DownloadError, err.message)
          assert.match(err.message, /cut short: \d+ bytes, but its tensors need \d+/)
          return true
        },
      )
      assert.deepEqual(await manager.listModels(), [])
      assert.deepEqual(fs.readdirSync(path.join(dataDir, 'models', 'llm', 'm')), ['m.gguf.part'])
      cutShort = false
      const info = await manager.downloadModel({ source: 'url', url: `${base}/m.gguf`, name: 'm', type: 'llm' })
      assert.equal(info.size, bytes.length)
    },
  )
})

test('a download that is not GGUF stops at its first bytes', async () => {
  const { dataDir, manager } = fresh()
  let sent = 0
  const total = 1 << 30
  await withServer(
    (_req, res) => {
      res.writeHead(200, { 'content-length': total })
      const chunk = Buffer.alloc(1 << 16, '<html>')
      const pump = () => {
        while (sent < total && res.write(chunk)) sent += chunk.length
      }
      res.on('drain', pump)
      pump()
    },
    async (base) => {
      await assert.rejects(
        manager.downloadModel({ source: 'url', url: `${base}/page.gguf`, name: 'page', type: 'llm' }),
        (err) => {
          assert.ok(err instanceof ValidationError, err.message)
          assert.match(err.message, /not a GGUF file/)
          return true
        },
      )
    },
  )
  assert.ok(sent < 64 << 20, `${sent} of ${total} bytes were sent before the refusal`)
  assert.equal(fs.existsSync(path.join(dataDir, 'models', 'llm', 'page')), false)
})

test('a value that is not plain data is refused, naming where it is, before the addon sees it', async () => {
  const lib = require('..')
  const refused = async (call, where, what) => {
    await assert.rejects(call, (e) => {
      assert.ok(e instanceof ValidationError, e.stack)
      assert.equal(e.code, 'INVALID_ARGUMENT')
      assert.equal(
        e.message,
        `${where} is ${what}; only strings, numbers, booleans, arrays and plain objects are accepted there`,
      )
      assert.match(e.details.suggestion, new RegExp(`Check ${where.replace(/[[\].]/g, '\\$&')} against its type`))
      return true
    })
  }
  // A Buffer where text goes; an image's field takes one, and reads its header.
  await refused(
    () => lib.diffusionServer.generateImage({ prompt: 'a cat', negativePrompt: Buffer.from('dog') }),
    'config.negativePrompt',
    'a Buffer',
  )
  await assert.rejects(
    lib.diffusionServer.generateImage({ prompt: 'a cat', initImage: Buffer.from('png') }),
    (e) => e instanceof ValidationError && e.message === 'initImage is not a PNG, JPEG or WebP image',
  )
  await refused(
    () => lib.diffusionServer.start({ modelId: 'm', extra: new Uint8Array(2) }),
    'config.extra',
    'a Uint8Array',
  )
  await refused(() => lib.llamaServer.start({ modelId: 'm', extraArgs: ['-t', 2n] }), 'config.extraArgs[1]', 'a BigInt')
  await refused(
    () => lib.systemInfo.canRunModel({ size: 1, ggufMetadata: new Map() }),
    'modelInfo.ggufMetadata',
    'a Map',
  )
  const cycle = { modelId: 'm' }
  cycle.again = { cycle }
  await refused(() => lib.rpcServer.start(cycle), 'config.again.cycle', 'a circular reference')
  assert.throws(
    () => new lib.ResourceOrchestrator(undefined, undefined, undefined, undefined, { policy: () => 'fifo' }),
    (e) => e instanceof ValidationError && e.message.startsWith('options.policy is a function'),
  )
  // What the addon turns down itself names the field too.
  await assert.rejects(
    lib.llamaServer.start({ modelId: 'm', contextSize: 'big' }),
    (e) => e instanceof ValidationError && e.message.startsWith('config.contextSize: invalid type: string "big"'),
  )
  await assert.rejects(
    lib.llamaServer.start({ modelId: 'm', initImage: 'x' }),
    (e) => e instanceof ValidationError && /initImage/.test(e.message),
  )
})
