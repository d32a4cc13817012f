'use strict'

// The library as a Windows program (Windows Node under Wine: scripts/test-windows.sh): what it
// detects, where it keeps its data, a download checked by sha256 and its deletion, and which
// release archive of a backend it picks and probes.

const test = require('node:test')
const assert = require('node:assert/strict')
const crypto = require('node:crypto')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const zlib = require('node:zlib')
const { backends, serveFiles } = require('../helpers')
const lib = require('../..')

const { paths: real } = backends()
const sha256 = (file) => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex')

test('systemInfo.detect() answers for Windows: the platform, the CPU and the RAM', async () => {
  const info = await lib.systemInfo.detect()
  assert.equal(info.platform, 'win32')
  assert.equal(info.cpu.logicalCores, os.cpus().length)
  assert.ok(info.memory.total > 0 && info.memory.available <= info.memory.total, JSON.stringify(info.memory))
})

test('the data folder is %APPDATA%\\genai-electron; a download is checked by sha256 and deleted whole', async () => {
  const paths = await lib.getDataPaths()
  assert.equal(paths.source, 'os')
  assert.equal(paths.root, path.join(process.env.APPDATA, 'genai-electron'))
  assert.equal(paths.models.llm, path.join(paths.root, 'models', 'llm'))
  assert.ok(fs.statSync(paths.models.llm).isDirectory())
  const models = new lib.ModelManager()
  await serveFiles({ '/tiny.gguf': real.llmModel }, async (base) => {
    const wrong = { source: 'url', url: `${base}/tiny.gguf`, name: 'tiny', type: 'llm', checksum: '0'.repeat(64) }
    await assert.rejects(models.downloadModel(wrong), (e) => e.code === 'CHECKSUM_ERROR')
    assert.deepEqual(await models.listModels('llm'), [], 'a refused download registers nothing')
    const info = await models.downloadModel({ ...wrong, checksum: sha256(real.llmModel) })
    assert.ok(info.path.startsWith(`${paths.models.llm}\\`), info.path)
    assert.equal(fs.statSync(info.path).size, fs.statSync(real.llmModel).size)
  })
  const [listed] = await models.listModels('llm')
  await models.deleteModel(listed.id)
  assert.deepEqual(await models.listModels('llm'), [])
  assert.equal(fs.existsSync(path.dirname(listed.path)), false, 'no file of it is left')
})

/** A .zip of `files` (`{ name: path }`), stored (no compression), as Windows releases ship. */
function zip(files) {
  const locals = []
  const centrals = []
  let offset = 0
  for (const [name, file] of Object.entries(files)) {
    const data = fs.readFileSync(file)
    const crc = zlib.crc32(data)
    const local = Buffer.alloc(30)
    local.writeUInt32LE(0x04034b50, 0)
    local.writeUInt16LE(20, 4)
    local.writeUInt32LE(crc, 14)
    local.writeUInt32LE(data.length, 18)
    local.writeUInt32LE(data.length, 22)
    local.writeUInt16LE(name.length, 26)
    const central = Buffer.alloc(46)
    central.writeUInt32LE(0x02014b50, 0)
    central.writeUInt16LE(20, 4)
    central.writeUInt16LE(20, 6)
    central.writeUInt32LE(crc, 16)
    central.writeUInt32LE(data.length, 20)
    central.writeUInt32LE(data.length, 24)
    central.writeUInt16LE(name.length, 28)
    central.writeUInt32LE(offset, 42)
    locals.push(local, Buffer.from(name), data)
    centrals.push(central, Buffer.from(name))
    offset += 30 + name.length + data.length
  }
  const directory = Buffer.concat(centrals)
  const end = Buffer.alloc(22)
  end.writeUInt32LE(0x06054b50, 0)
  end.writeUInt16LE(centrals.length / 2, 8)
  end.writeUInt16LE(centrals.length / 2, 10)
  end.writeUInt32LE(directory.length, 12)
  end.writeUInt32LE(offset, 16)
  return Buffer.concat([...locals, directory, end])
}

test('ensureBinary on Windows: a CUDA archive is skipped without NVIDIA, a bad one refused, the CPU .zip probed; each built .exe probed', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'genai-electron-binaries-'))
  const archive = path.join(dir, 'llama-bin-win-cpu-x64.zip')
  fs.writeFileSync(archive, zip({ 'llama-server.exe': real.llamaServer }))
  lib.configure({ dataDir: path.join(dir, 'data') })
  try {
    const manager = new lib.BinaryManager()
    const stages = []
    manager.on('binary-progress', (e) => stages.push(`${e.variant}:${e.stage}`))
    const resolved = await serveFiles({ '/cpu.zip': archive, '/cuda.zip': archive }, (base) =>
      manager.ensureBinary('llama-server', {
        version: 'windows-test',
        variants: [
          { type: 'cuda', url: `${base}/cuda.zip`, sha256: sha256(archive) },
          { type: 'cpu', url: `${base}/cpu.zip`, sha256: '0'.repeat(64) },
          { type: 'cpu', url: `${base}/cpu.zip`, sha256: sha256(archive) },
        ],
      }),
    )
    assert.deepEqual([resolved.variant, resolved.origin], ['cpu', 'download'])
    assert.ok(resolved.path.endsWith('\\llama-server.exe'), resolved.path)
    assert.match(resolved.version, /version/, 'probed: it ran under Windows')
    assert.ok(!stages.includes('cuda:download'), `the CUDA archive was not fetched: ${stages}`)

    for (const [kind, exe] of [
      ['sd-cli', real.sdCli],
      ['sd-server', real.sdServer],
      ['rpc-server', real.rpcServer],
    ]) {
      const given = await manager.ensureBinary(kind, { path: exe })
      assert.deepEqual([given.origin, given.variant], ['path', 'given'], kind)
    }
    const broken = path.join(dir, 'sd-cli.exe')
    fs.writeFileSync(broken, 'not a program')
    await assert.rejects(manager.ensureBinary('sd-cli', { path: broken }), (e) => e.code === 'BINARY_BROKEN')
  } finally {
    fs.rmSync(archive)
  }
})
