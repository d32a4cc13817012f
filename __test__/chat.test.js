'use strict'

// The real chat model (SmolLM2-135M-Instruct, provisioned by `npm run backends`) through
// llamaServer: real answers, and the memory estimate against llama-server's measured RSS.
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { backends, serveFiles } = require('./helpers')
const { LlamaServerManager, ModelManager, configure, systemInfo } = require('..')

const { paths: real, skip } = backends()
const CHAT_SHA256 = 'b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53'
const QUESTION = [
  { role: 'system', content: 'You are a helpful assistant.' },
  { role: 'user', content: 'What is the capital of France?' },
]

let model
async function chatModel() {
  if (model) return model
  configure({ dataDir: fs.mkdtempSync(path.join(os.tmpdir(), 'genai-electron-chat-')) })
  process.env.GENAI_ELECTRON_LLAMA_SERVER = real.llamaServer
  model = await serveFiles({ '/SmolLM2-135M-Instruct.Q4_1.gguf': real.chatModel }, (base) =>
    new ModelManager().downloadModel({
      source: 'url',
      url: `${base}/SmolLM2-135M-Instruct.Q4_1.gguf`,
      name: 'SmolLM2 135M Instruct',
      type: 'llm',
      checksum: CHAT_SHA256,
    }),
  )
  return model
}

function chat(port, extra = {}) {
  return fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ messages: QUESTION, temperature: 0, max_tokens: 24, ...extra }),
  })
}

function rssBytes(pid) {
  const line = fs
    .readFileSync(`/proc/${pid}/status`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('VmRSS:'))
  return Number(line.split(/\s+/)[1]) * 1024
}

test('the real model answers "Paris", plainly and streamed', { skip }, async () => {
  const { id, ggufMetadata } = await chatModel()
  assert.equal(ggufMetadata.architecture, 'llama')
  const server = new LlamaServerManager()
  const { port } = await server.start({ modelId: id, port: 'auto', threads: 1, contextSize: 2048 })
  try {
    const plain = await (await chat(port)).json()
    assert.equal(plain.model, id, "answers name the model by its id, not its file's path")
    const answer = plain.choices[0].message.content
    console.log(`plain answer: ${JSON.stringify(answer)}`)
    assert.match(answer, /Paris/)

    const stream = await chat(port, { stream: true })
    let text = ''
    let chunks = 0
    for (const line of (await stream.text()).split('\n')) {
      if (!line.startsWith('data: ') || line === 'data: [DONE]') continue
      text += JSON.parse(line.slice(6)).choices[0]?.delta?.content ?? ''
      chunks++
    }
    console.log(`streamed answer (${chunks} chunks): ${JSON.stringify(text)}`)
    assert.ok(chunks > 1)
    assert.match(text, /Paris/)
  } finally {
    await server.stop()
  }
})

test("the memory estimate against llama-server's measured RSS at context 2048 and 8192", { skip }, async () => {
  const info = await chatModel()
  const server = new LlamaServerManager()
  const rows = []
  for (const contextSize of [2048, 8192]) {
    const { estimate } = await systemInfo.canRunModel(info, { contextSize, gpuLayers: 0 })
    const { port, pid } = await server.start({ modelId: info.id, port: 'auto', threads: 1, contextSize })
    try {
      await (await chat(port)).json()
      rows.push({ contextSize, estimated: estimate.ram, kvCache: estimate.kvCache, measured: rssBytes(pid) })
    } finally {
      await server.stop()
    }
  }
  const mb = (b) => `${(b / 1e6).toFixed(0)} MB`
  for (const r of rows) {
    const error = (r.estimated - r.measured) / r.measured
    console.log(
      `context ${r.contextSize}: estimated ${mb(r.estimated)} (KV cache ${mb(r.kvCache)}), measured RSS ${mb(r.measured)}, error ${(100 * error).toFixed(0)}%`,
    )
  }
  const [small, large] = rows
  const growth = { estimated: large.estimated - small.estimated, measured: large.measured - small.measured }
  console.log(`growth 2048 → 8192: estimated ${mb(growth.estimated)}, measured ${mb(growth.measured)}`)
  // What more context costs is the KV cache, which the GGUF arithmetic predicts closely.
  assert.ok(Math.abs(growth.estimated - growth.measured) / growth.measured < 0.25, JSON.stringify(growth))
  // The totals also cover weights and compute buffers: never far below what the process uses.
  for (const r of rows) assert.ok(r.estimated > 0.75 * r.measured, JSON.stringify(r))
})
