'use strict'

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { runNode } = require('./helpers')

const LAYOUT = ['models/llm', 'models/diffusion', 'binaries', 'logs', 'temp']

function tmp() {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'genai-electron-test-'))
}

async function pathsIn(source, env = {}) {
  const { code, stdout, stderr } = await runNode(
    `const g = require('./'); (async () => { ${source}; console.log(JSON.stringify(await g.getDataPaths())) })()
       .catch(e => { console.log(JSON.stringify({ error: { name: e.name, code: e.code, details: e.details } })) })`,
    { env: { GENAI_ELECTRON_DATA_DIR: '', HOME: env.HOME ?? process.env.HOME, ...env } },
  )
  assert.equal(code, 0, stderr)
  return JSON.parse(stdout.trim().split('\n').pop())
}

test('configure({ dataDir }) wins and the layout is created on first use', async () => {
  const dir = path.join(tmp(), 'data')
  const other = tmp()
  const paths = await pathsIn(`g.configure({ dataDir: ${JSON.stringify(dir)} })`, { GENAI_ELECTRON_DATA_DIR: other })
  assert.equal(paths.root, dir)
  assert.equal(paths.source, 'configure')
  assert.equal(paths.models.llm, path.join(dir, 'models', 'llm'))
  for (const rel of LAYOUT) assert.ok(fs.statSync(path.join(dir, rel)).isDirectory(), rel)
})

test('GENAI_ELECTRON_DATA_DIR comes next', async () => {
  const dir = tmp()
  const paths = await pathsIn('', { GENAI_ELECTRON_DATA_DIR: dir })
  assert.deepEqual([paths.root, paths.source], [dir, 'env'])
})

test('the OS data folder is the default', { skip: process.platform !== 'linux' && 'checks the XDG path' }, async () => {
  const home = tmp()
  const paths = await pathsIn('', { HOME: home, XDG_DATA_HOME: '' })
  assert.deepEqual([paths.root, paths.source], [path.join(home, '.local/share/genai-electron'), 'os'])
  for (const rel of LAYOUT) assert.ok(fs.existsSync(path.join(paths.root, rel)), rel)
})

test('a relative dataDir is taken from the working directory', async () => {
  const paths = await pathsIn(`process.chdir(${JSON.stringify(tmp())}); g.configure({ dataDir: 'rel' })`)
  assert.ok(path.isAbsolute(paths.root))
  assert.equal(path.basename(paths.root), 'rel')
})

test('a file where the data folder should be is a FileSystemError', async () => {
  const file = path.join(tmp(), 'taken')
  fs.writeFileSync(file, 'x')
  const { error } = await pathsIn(`g.configure({ dataDir: ${JSON.stringify(file)} })`)
  assert.equal(error.name, 'FileSystemError')
  assert.equal(error.code, 'FILE_SYSTEM_ERROR')
  assert.ok(error.details.path.startsWith(file))
  assert.ok(error.details.suggestion)
})

test('configure() validates its options', () => {
  const { configure, ValidationError } = require('..')
  for (const bad of [null, 'dir', [], { dataDir: '' }, { dataDir: 3 }, { dataDirr: '/x' }]) {
    assert.throws(
      () => configure(bad),
      (err) => {
        assert.ok(err instanceof ValidationError, String(err))
        assert.ok(err.details.suggestion)
        return true
      },
    )
  }
})
