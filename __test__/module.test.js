'use strict'

const test = require('node:test')
const assert = require('node:assert/strict')
const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')
const { ROOT, runNode } = require('./helpers')

test('CommonJS require exposes the API', () => {
  const lib = require('..')
  for (const name of ['configure', 'getDataPaths', 'SystemInfo', 'systemInfo', 'GenaiElectronError', 'ValidationError', 'DiffusionServerManager', 'diffusionServer', 'RpcServerManager', 'rpcServer', 'CancelledError']) {
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

test('the typed usage example compiles with tsc --strict', () => {
  const tsc = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc')
  const result = spawnSync(process.execPath, [tsc, '-p', path.join(__dirname, 'tsconfig.json')], { cwd: ROOT, encoding: 'utf8' })
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
