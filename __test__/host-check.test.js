'use strict'

// DNS rebinding: a web page points a domain it owns at 127.0.0.1, so its requests to our ports
// are same-origin and carry no Origin; only the name in Host gives them away. Both ports we serve
// (the LLM gateway and the diffusion server) answer only the names of loopback and allowedHosts.
// Against the real llama-server, sd-cli and tiny models.

const test = require('node:test')
const assert = require('node:assert/strict')
const http = require('node:http')
const { backends, withTinyModel, downloadTinyImageSet } = require('./helpers')
const { LlamaServerManager, DiffusionServerManager, modelManager } = require('..')

const { paths: real, skip } = backends()

/** A POST with the given Host header, as a rebinding page's browser would send it. */
function post(port, path, host, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port, path, method: 'POST', headers: { host, 'content-type': 'application/json' } },
      (res) => {
        let text = ''
        res.on('data', (chunk) => {
          text += chunk
        })
        res.on('end', () => resolve({ status: res.statusCode, body: text }))
      },
    )
    req.on('error', reject)
    req.end(JSON.stringify(body))
  })
}

const CHAT = { messages: [{ role: 'user', content: 'Hello' }], max_tokens: 2 }
const IMAGE = { prompt: 'a cube', width: 64, height: 64, steps: 1, cfgScale: 1 }

async function refusesRebindingAndAnswersItsNames(port, path, body) {
  const rebound = await post(port, path, `attacker.example:${port}`, body)
  assert.equal(rebound.status, 403, rebound.body)
  assert.equal(JSON.parse(rebound.body).error.code, 'INVALID_HOST')
  for (const host of [`localhost:${port}`, `127.0.0.1:${port}`, `my-app.test:${port}`]) {
    const answer = await post(port, path, host, body)
    assert.equal(answer.status, 200, `${host}: ${answer.body}`)
  }
}

test('both ports refuse a Host that is not theirs; loopback names, allowedHosts and the openai client pass', {
  skip,
}, async () => {
  await withTinyModel(real)
  process.env.GENAI_ELECTRON_SD_CLI = real.sdCli
  await downloadTinyImageSet(modelManager, real)
  const llama = new LlamaServerManager()
  const diffusion = new DiffusionServerManager()
  try {
    const chat = await llama.start({
      modelId: 'tiny',
      port: 'auto',
      threads: 1,
      contextSize: 512,
      allowedHosts: ['my-app.test'],
    })
    await refusesRebindingAndAnswersItsNames(chat.port, '/v1/chat/completions', CHAT)
    const images = await diffusion.start({
      modelId: 'tiny-image',
      backend: 'one-shot',
      port: 'auto',
      threads: 1,
      allowedHosts: ['my-app.test'],
    })
    await refusesRebindingAndAnswersItsNames(images.port, '/v1/images/generations', IMAGE)

    const { default: OpenAI } = await import('openai')
    const client = new OpenAI({ baseURL: `http://localhost:${chat.port}/v1`, apiKey: 'unused' })
    const completion = await client.chat.completions.create({ model: 'tiny', ...CHAT })
    assert.equal(completion.usage.completion_tokens, 2)
    assert.deepEqual(llama.getConfig().allowedHosts, ['my-app.test'])
    assert.deepEqual(diffusion.getConfig().allowedHosts, ['my-app.test'])
  } finally {
    await Promise.all([llama.stop(), diffusion.stop()])
  }
})

test('allowedHosts needs the gateway', { skip }, async () => {
  await withTinyModel(real)
  const llama = new LlamaServerManager()
  await assert.rejects(
    llama.start({ modelId: 'tiny', port: 'auto', gateway: false, allowedHosts: ['my-app.test'] }),
    (err) => err.code === 'INVALID_ARGUMENT' && /allowedHosts needs the gateway/.test(err.message),
  )
})
