'use strict'

const test = require('node:test')
const assert = require('node:assert/strict')
const lib = require('..')
const fs = require('node:fs')
const path = require('node:path')
const { fromNative } = require('../lib/errors')

const CLASSES = {
  ModelNotFoundError: 'MODEL_NOT_FOUND',
  DownloadError: 'DOWNLOAD_FAILED',
  ChecksumError: 'CHECKSUM_ERROR',
  InsufficientResourcesError: 'INSUFFICIENT_RESOURCES',
  ServerError: 'SERVER_ERROR',
  PortInUseError: 'PORT_IN_USE',
  BinaryError: 'BINARY_ERROR',
  FileSystemError: 'FILE_SYSTEM_ERROR',
  ValidationError: 'INVALID_ARGUMENT',
  CancelledError: 'CANCELLED',
}

test('every error class has its code and is a GenaiElectronError', () => {
  for (const [name, code] of Object.entries(CLASSES)) {
    const err = new lib[name]('msg', { suggestion: 'do this' })
    assert.ok(err instanceof lib[name])
    assert.ok(err instanceof lib.GenaiElectronError)
    assert.ok(err instanceof Error)
    assert.equal(err.name, name)
    assert.equal(err.code, code)
    assert.equal(err.details.suggestion, 'do this')
  }
  const base = new lib.GenaiElectronError('m', 'CUSTOM')
  assert.deepEqual([base.code, base.details], ['CUSTOM', {}])
})

test('native errors are rethrown as the class of their code', () => {
  for (const [name, code] of Object.entries(CLASSES)) {
    const payload = JSON.stringify({ message: 'it failed', details: { suggestion: 's', port: 1 } })
    const err = fromNative(new Error(`[${code}] ${payload}`))
    assert.ok(err instanceof lib[name], name)
    assert.equal(err.message, 'it failed')
    assert.deepEqual(err.details, { suggestion: 's', port: 1 })
  }
  const unknown = fromNative(new Error('[NEW_CODE] {"message":"m","details":{}}'))
  assert.ok(unknown instanceof lib.GenaiElectronError)
  assert.equal(unknown.code, 'NEW_CODE')
  const plain = new Error('not ours')
  assert.equal(fromNative(plain), plain)
  const broken = new Error('[CODE] {not json}')
  assert.equal(fromNative(broken), broken)
})

test('the native prefix format is what the binding really produces', async () => {
  await assert.rejects(lib.systemInfo.canRunModel({ size: 0 }), (err) => {
    assert.equal(err.constructor, lib.ValidationError)
    assert.doesNotMatch(err.message, /^\[/)
    return true
  })
})

// One table of codes (lib/error-codes.json) for Rust (checked by a cargo test), JS, HTTP and
// the docs: every code has its class, the typings and the docs list each one.
test('every code of the shared table is rethrown as its class, with its own code', () => {
  const codes = Object.keys(lib.ERROR_CODES)
  assert.ok(codes.length > Object.keys(CLASSES).length)
  for (const [code, { class: name, status }] of Object.entries(lib.ERROR_CODES)) {
    assert.ok(lib[name]?.prototype instanceof lib.GenaiElectronError, `${code}: ${name}`)
    assert.ok(status >= 400 && status <= 599, `${code}: ${status}`)
    const err = fromNative(new Error(`[${code}] ${JSON.stringify({ message: 'm', details: {} })}`))
    assert.ok(err instanceof lib[name], code)
    assert.equal(err.code, code)
  }
  // Each class's general code is in the table, under that class.
  for (const [name, code] of Object.entries(CLASSES)) assert.equal(lib.ERROR_CODES[code].class, name)
})

test('the typings and docs/API.md list exactly the codes of the table', () => {
  const root = path.join(__dirname, '..')
  const dts = fs.readFileSync(path.join(root, 'shapes.d.ts'), 'utf8')
  const union = /export type ErrorCode =([^;]*);/.exec(dts)[1]
  assert.deepEqual(
    [...union.matchAll(/"([A-Z_]+)"/g)].map((m) => m[1]),
    Object.keys(lib.ERROR_CODES),
  )
  const docs = fs.readFileSync(path.join(root, 'docs', 'API.md'), 'utf8')
  const rows = [...docs.matchAll(/^\| `([A-Z_]+)` \| `(\w+)` \| (\d+) \| `([A-Z_]+)` \| .+ \|$/gm)].map((m) => [
    m[1],
    m[2],
    Number(m[3]),
    m[4],
  ])
  assert.deepEqual(
    rows,
    Object.entries(lib.ERROR_CODES).map(([code, v]) => [code, v.class, v.status, v.http ?? code]),
  )
})

test('real failures carry their own codes', async () => {
  const { LlamaServerManager } = lib
  await assert.rejects(
    new LlamaServerManager().restart(),
    (err) => err instanceof lib.ServerError && err.code === 'SERVER_NOT_RUNNING',
  )
  await assert.rejects(
    new lib.DiffusionServerManager().generateImage({ prompt: 'x' }),
    (err) => err instanceof lib.ServerError && err.code === 'SERVER_NOT_RUNNING',
  )
})
