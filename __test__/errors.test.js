'use strict'

const test = require('node:test')
const assert = require('node:assert/strict')
const lib = require('..')
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
