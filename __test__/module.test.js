'use strict'

const test = require('node:test')
const assert = require('node:assert/strict')
const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { ROOT, runNode } = require('./helpers')

test('CommonJS require exposes the API', () => {
  const lib = require('..')
  for (const name of [
    'configure',
    'getDataPaths',
    'SystemInfo',
    'systemInfo',
    'GenaiElectronError',
    'ValidationError',
    'DiffusionServerManager',
    'diffusionServer',
    'RpcServerManager',
    'rpcServer',
    'CancelledError',
  ]) {
    assert.ok(lib[name], name)
  }
})

test('ESM import exposes the same objects', async () => {
  const { code, stdout, stderr } = await runNode(
    `import('genai-electron').then(m => {
       const cjs = require('genai-electron')
       console.log(m.systemInfo === cjs.systemInfo, m.ValidationError === cjs.ValidationError, typeof m.default.configure)
     })`,
    { env: { NODE_PATH: path.dirname(ROOT) } },
  )
  assert.equal(code, 0, stderr)
  assert.equal(stdout.trim(), 'true true function')
})

// Run from stdin: `node -e` loads node:crypto itself, which would hide that we load it.
function runStdin(source) {
  const result = spawnSync(process.execPath, ['-'], { cwd: ROOT, input: source, encoding: 'utf8' })
  assert.equal(result.status, 0, result.stderr)
  return JSON.parse(result.stdout)
}

test('require() loads nothing more until an export is read, and then only what that export needs', () => {
  const steps = runStdin(`
    const path = require('node:path')
    let builtins = new Set(process.moduleLoadList)
    const loaded = () => {
      const now = { builtins: process.moduleLoadList.filter((m) => !builtins.has(m) && m.startsWith('NativeModule ')) }
      now.files = Object.keys(require.cache).map((f) => path.relative(process.cwd(), f)).sort()
      builtins = new Set(process.moduleLoadList)
      return now
    }
    const lib = require('./')
    const steps = { require: loaded() }
    Object.keys(lib)
    void lib.LogManager
    steps.LogManager = loaded()
    let caught
    try {
      lib.configure(null)
    } catch (err) {
      caught = err
    }
    steps.configure = loaded()
    steps.caught = [caught instanceof lib.ValidationError, caught instanceof lib.GenaiElectronError]
    void lib.systemInfo
    steps.systemInfo = loaded()
    console.log(JSON.stringify(steps))
  `)
  assert.deepEqual(steps.require, { builtins: [], files: ['index.js'] })
  assert.deepEqual(steps.LogManager, { builtins: [], files: ['index.js', 'lib/logs.js'] })
  // A configure() that fails its checks has nothing to ask the addon.
  assert.deepEqual(steps.configure, {
    builtins: [],
    files: ['index.js', 'lib/config.js', 'lib/error-codes.json', 'lib/errors.js', 'lib/logs.js', 'lib/native.js'],
  })
  // Its error, thrown before the package's ValidationError was read, is still that class.
  assert.deepEqual(steps.caught, [true, true])
  // The shared instance needs the addon: what the checks above would have seen loaded.
  assert.ok(steps.systemInfo.files.includes('binding.js'), steps.systemInfo.files.join())
  assert.ok(
    steps.systemInfo.files.some((f) => f.endsWith('.node')),
    steps.systemInfo.files.join(),
  )
})

test("the exports, their kinds, and what Node's import of index.js detects", async () => {
  const lib = require('..')
  const { fromNative: _internal, ...errors } = require('../lib/errors')
  const names = [
    'configure',
    'getDataPaths',
    'SystemInfo',
    'systemInfo',
    'LlamaServerManager',
    'llamaServer',
    'DiffusionServerManager',
    'diffusionServer',
    'RpcServerManager',
    'rpcServer',
    'ResourceOrchestrator',
    'LogManager',
    'ModelManager',
    'modelManager',
    'BinaryManager',
    'binaries',
    ...Object.keys(errors),
  ]
  assert.deepEqual(Object.keys(lib), names)
  for (const [name, value] of Object.entries(errors)) assert.equal(lib[name], value, name)
  // A class or function, once read, is a plain property; a shared instance stays a getter.
  const shared = ['systemInfo', 'llamaServer', 'diffusionServer', 'rpcServer', 'modelManager', 'binaries']
  for (const name of names) {
    assert.ok(lib[name], name)
    const { get, enumerable } = Object.getOwnPropertyDescriptor(lib, name)
    assert.equal(typeof get, shared.includes(name) ? 'function' : 'undefined', name)
    assert.equal(enumerable, true, name)
  }
  assert.equal(lib.llamaServer, lib.LlamaServerManager.getInstance())
  const { code, stdout, stderr } = await runNode(
    `import(${JSON.stringify(path.join(ROOT, 'index.js'))}).then((m) => console.log(JSON.stringify(Object.keys(m))))`,
  )
  assert.equal(code, 0, stderr)
  assert.deepEqual(JSON.parse(stdout), ['default', ...names].sort())
})

test('ESM named imports are the CommonJS exports', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'genai-electron-esm-'))
  try {
    // Installed as a dependency would be (NODE_PATH does not reach import).
    fs.mkdirSync(path.join(dir, 'node_modules'))
    fs.symlinkSync(ROOT, path.join(dir, 'node_modules', 'genai-electron'), 'junction')
    const file = path.join(dir, 'main.mjs')
    fs.writeFileSync(
      file,
      `
      import { createRequire } from 'node:module'
      import { llamaServer, LlamaServerManager, ValidationError, configure, ERROR_CODES } from 'genai-electron'
      import lib from 'genai-electron'
      const cjs = createRequire(import.meta.url)('genai-electron')
      let caught
      try { configure(null) } catch (err) { caught = err }
      console.log(JSON.stringify([
        llamaServer === cjs.llamaServer, llamaServer instanceof LlamaServerManager, lib === cjs,
        ValidationError === cjs.ValidationError, caught instanceof ValidationError, caught instanceof cjs.ValidationError,
        ERROR_CODES === cjs.ERROR_CODES,
      ]))
    `,
    )
    const result = spawnSync(process.execPath, [file], { cwd: dir, encoding: 'utf8' })
    assert.equal(result.status, 0, result.stderr)
    assert.deepEqual(JSON.parse(result.stdout), [true, true, true, true, true, true, true])
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

test('the typed usage example compiles with tsc --strict', () => {
  const tsc = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc')
  const result = spawnSync(process.execPath, [tsc, '-p', path.join(__dirname, 'tsconfig.json')], {
    cwd: ROOT,
    encoding: 'utf8',
  })
  assert.equal(result.status, 0, result.stdout + result.stderr)
})

// `napi prepublish -t npm` (prepublishOnly) adds these packages as optionalDependencies when
// publishing; listing unpublished packages here would break `npm ci`.
test('every platform package matches a napi target', () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'))
  const dirs = fs.readdirSync(path.join(ROOT, 'npm'))
  assert.equal(dirs.length, pkg.napi.targets.length)
  for (const dir of dirs) {
    const sub = JSON.parse(fs.readFileSync(path.join(ROOT, 'npm', dir, 'package.json'), 'utf8'))
    assert.equal(sub.name, `${pkg.name}-${dir}`)
    assert.equal(sub.version, pkg.version)
    assert.equal(sub.main, `${pkg.napi.binaryName}.${dir}.node`)
  }
})
