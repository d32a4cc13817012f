'use strict'

// diffusionServer and the orchestrator as a Windows program (Windows Node under Wine, sd-cli.exe
// and sd-server.exe cross-built from the pinned sources): an image from each backend, and an
// orchestrated image that offloads the LLM and brings it back with a held chat answered.

const test = require('node:test')
const assert = require('node:assert/strict')
const { backends, startTinyServers } = require('../helpers')
const { request, alive } = require('./support')
const lib = require('../..')

const { paths: real } = backends()
const IMAGE = { prompt: 'a red cube', width: 64, height: 64, steps: 2, cfgScale: 1, seed: 7 }
const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])

function assertPng(result) {
  assert.equal(result.width, 64)
  assert.equal(result.height, 64)
  assert.deepEqual(result.image.subarray(0, 8), PNG_SIGNATURE)
}

test('sd-cli.exe (one-shot) and sd-server.exe (resident) each make an image; stop() leaves neither', async () => {
  const { llama, diffusion, stop } = await startTinyServers(real)
  try {
    assertPng(await diffusion.generateImage(IMAGE))
    await diffusion.stop()
    const { port } = await diffusion.start({ modelId: 'tiny-image', backend: 'resident', port: 'auto', threads: 1 })
    assertPng(await diffusion.generateImage(IMAGE))
    const pid = diffusion.getInfo().pid
    assert.ok(alive(pid), 'sd-server.exe runs')
    const res = await request(port, '/v1/images/generations', {
      method: 'POST',
      body: { ...IMAGE, response_format: 'b64_json' },
    })
    assert.equal(res.status, 200, res.text)
    assert.deepEqual(Buffer.from(res.json().data[0].b64_json, 'base64').subarray(0, 8), PNG_SIGNATURE)
    await diffusion.stop()
    assert.equal(alive(pid), false, 'sd-server.exe is gone')
    assert.equal(llama.getInfo().status, 'running')
  } finally {
    await stop()
  }
})

test('an orchestrated image offloads llama-server.exe, makes the image, reloads it; a held chat is answered', async () => {
  const { llama, diffusion, info, stop } = await startTinyServers(real)
  try {
    const orchestrator = new lib.ResourceOrchestrator(undefined, llama, diffusion, undefined, {
      ramBudgetBytes: 1 << 20,
      headroom: 0,
    })
    const phases = []
    orchestrator.on('phase', (e) => phases.push(e.phase))
    let held
    orchestrator.once('offload', () => {
      held = request(info.port, '/v1/chat/completions', {
        method: 'POST',
        body: { messages: [{ role: 'user', content: 'Hello' }], max_tokens: 4 },
      })
    })
    assertPng(await orchestrator.orchestrateImageGeneration(IMAGE))
    assert.ok(held, 'the LLM was offloaded')
    const answer = await held
    assert.equal(answer.status, 200, answer.text)
    assert.equal(answer.json().usage.completion_tokens, 4)
    const after = llama.getInfo()
    assert.equal(after.status, 'running')
    assert.equal(after.port, info.port)
    assert.notEqual(after.pid, info.pid, 'reloaded')
    assert.equal(alive(info.pid), false, 'the offloaded llama-server.exe is gone')
    assert.deepEqual(phases, ['draining', 'offloading', 'generating', 'reloading', 'idle'])
    orchestrator.dispose()
  } finally {
    await stop()
  }
})
