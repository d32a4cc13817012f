'use strict'

// Tokens a second with and without a draft model, in the same run, through the gateway:
//   plain:  the chat model alone;
//   tiny:   drafted by the tiny random draft (the chat model's vocabulary, 2 layers, 64 wide):
//           its guesses are noise, so this is what a draft that is never right costs;
//   self:   drafted by the chat model itself: every guess is right (greedy sampling), so this is
//           the most a draft can save at this size, less what drafting with a model as large
//           as the target costs.
// Each case generates TOKENS tokens, greedy (temperature 0), RUNS times, interleaved; medians of
// the generation's own tokens/s (llama-server's `timings.predicted_per_second`) and the ratios
// against plain are printed, with the draft's acceptance rate. Needs `npm run backends`.
const crypto = require('node:crypto')
const fs = require('node:fs')
const http = require('node:http')
const os = require('node:os')
const path = require('node:path')
const { backends, median } = require('./common')

const RUNS = Number(process.env.BENCH_RUNS ?? 3)
const TOKENS = Number(process.env.BENCH_TOKENS ?? 96)
const THREADS = Number(process.env.BENCH_THREADS ?? 2)
const real = backends()
const { configure, LlamaServerManager, ModelManager } = require('..')

function serve(files) {
  return new Promise((resolve) => {
    const server = http.createServer((req, res) => fs.createReadStream(files[req.url]).pipe(res))
    server.listen(0, '127.0.0.1', () => resolve(server))
  })
}

async function generate(port) {
  const response = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      messages: [{ role: 'user', content: 'Count from one to fifty in words, separated by commas.' }],
      max_tokens: TOKENS,
      temperature: 0,
    }),
  })
  const body = await response.json()
  if (response.status !== 200) throw new Error(JSON.stringify(body))
  return body.timings
}

async function main() {
  configure({ dataDir: fs.mkdtempSync(path.join(os.tmpdir(), 'genai-electron-bench-spec-')) })
  process.env.GENAI_ELECTRON_LLAMA_SERVER = real.llamaServer
  const server = await serve({ '/chat.gguf': real.chatModel, '/draft.gguf': real.shapedModels.draft })
  const base = `http://127.0.0.1:${server.address().port}`
  const manager = new ModelManager()
  const sha = crypto.createHash('sha256').update(fs.readFileSync(real.chatModel)).digest('hex')
  await manager.downloadModel({ source: 'url', url: `${base}/chat.gguf`, checksum: sha, name: 'chat', type: 'llm' })
  await manager.downloadModel({
    source: 'url',
    url: `${base}/chat.gguf`,
    name: 'chat-drafted',
    type: 'llm',
    components: [{ role: 'draft', source: 'url', url: `${base}/draft.gguf` }],
  })
  server.close()

  const common = { port: 'auto', threads: THREADS, contextSize: 1024, gpuLayers: 0 }
  const cases = {
    plain: { ...common, modelId: 'chat' },
    tiny: { ...common, modelId: 'chat-drafted', draft: { maxTokens: 4 } },
    self: { ...common, modelId: 'chat', draft: { modelId: 'chat', maxTokens: 4 } },
  }
  const speeds = Object.fromEntries(Object.keys(cases).map((name) => [name, []]))
  const accepted = Object.fromEntries(Object.keys(cases).map((name) => [name, [0, 0]]))
  const llama = new LlamaServerManager()
  for (let run = 0; run < RUNS; run++) {
    for (const [name, config] of Object.entries(cases)) {
      const { port } = await llama.start(config)
      try {
        await generate(port) // warm-up
        const timings = await generate(port)
        speeds[name].push(timings.predicted_per_second)
        accepted[name][0] += timings.draft_n_accepted ?? 0
        accepted[name][1] += timings.draft_n ?? 0
      } finally {
        await llama.stop()
      }
    }
  }
  const plain = median(speeds.plain)
  console.log(`speculative decoding, ${TOKENS} tokens greedy, ${THREADS} threads, medians of ${RUNS}:`)
  for (const name of Object.keys(cases)) {
    const [ok, drafted] = accepted[name]
    const rate = drafted > 0 ? `, ${((100 * ok) / drafted).toFixed(0)} % of ${drafted} drafted tokens accepted` : ''
    const speed = median(speeds[name])
    console.log(`  ${name.padEnd(6)} ${speed.toFixed(1)} tokens/s  ratio ${(speed / plain).toFixed(2)}${rate}`)
  }
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
