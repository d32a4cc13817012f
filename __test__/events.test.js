'use strict'

const test = require('node:test')
const assert = require('node:assert/strict')
const { once } = require('node:events')
const { SystemInfo, ValidationError } = require('..')
const { runNode } = require('./helpers')

test('startMonitoring emits memory events until stopped', async () => {
  const info = new SystemInfo()
  info.startMonitoring({ intervalMs: 50 })
  assert.equal(info.isMonitoring(), true)
  const [first] = await once(info, 'memory')
  const [second] = await once(info, 'memory')
  assert.equal(first.type, 'memory')
  assert.ok(first.total > 0 && first.available <= first.total)
  assert.equal(second.used, second.total - second.available)
  assert.equal(info.stopMonitoring(), true)
  assert.equal(info.isMonitoring(), false)
  let late = 0
  info.on('memory', () => late++)
  // A window on purpose: nothing must arrive in four intervals' time.
  await new Promise((r) => setTimeout(r, 200))
  assert.equal(late, 0, 'no events after stopMonitoring()')
})

test('bad intervals are rejected', () => {
  const info = new SystemInfo()
  assert.throws(
    () => info.startMonitoring({ intervalMs: 10 }),
    (err) => {
      assert.ok(err instanceof ValidationError)
      assert.equal(err.details.minimumMs, 50)
      return true
    },
  )
  assert.throws(() => info.startMonitoring({ intervalMs: 1.5 }), ValidationError)
  assert.throws(() => info.startMonitoring({ intervalMs: -1 }), ValidationError)
  assert.equal(info.isMonitoring(), false)
})

test('a throwing listener does not crash the process; it becomes a warning', async () => {
  const { code, stderr, stdout } = await runNode(`
    const { systemInfo } = require('./')
    let calls = 0
    // Counted first (the throwing listener stops the rest): stops after the third event.
    systemInfo.on('memory', () => {
      if (++calls === 3) setImmediate(() => { systemInfo.stopMonitoring(); console.log('alive after', calls) })
    })
    systemInfo.on('memory', () => { throw new Error('listener boom') })
    systemInfo.startMonitoring({ intervalMs: 50 })
  `)
  assert.equal(code, 0, stderr)
  assert.match(stdout, /alive after [2-9]/)
  assert.match(stderr, /GENAI_ELECTRON_LISTENER_ERROR/)
  assert.match(stderr, /listener boom/)
})

test('a throwing listener is reported to error listeners when there are some', async () => {
  const info = new SystemInfo()
  info.on('memory', () => {
    throw new Error('boom')
  })
  info.startMonitoring({ intervalMs: 50 })
  const [err] = await once(info, 'error')
  info.stopMonitoring()
  assert.equal(err.message, 'boom')
})

test('a process with managers but nothing to do exits on its own', async () => {
  const { code, signal } = await runNode(
    `
    const { systemInfo } = require('./')
    systemInfo.detect().then(() => console.log('done'))
  `,
    { timeoutMs: 10_000 },
  )
  assert.equal(signal, null)
  assert.equal(code, 0)
})
