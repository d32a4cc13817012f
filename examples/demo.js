'use strict'

// The main job, through the public API only: what this machine has, a real chat model answering
// (streamed as it arrives), then an image made through the ResourceOrchestrator with a memory
// budget too small for both, so the chat model is offloaded and reloaded around it, while a
// chat request sent during the image waits at the gateway and is answered after the reload.
//
// The models were provisioned by `npm run backends` (this machine may not reach a model hub), so
// they are registered here from a local HTTP server; with internet access, pass a Hugging Face
// `repo`/`file`/`revision` to downloadModel instead (see the README).
const fs = require('node:fs')
const http = require('node:http')
const path = require('node:path')
const cliProgress = require('cli-progress')
const { systemInfo, modelManager, llamaServer, diffusionServer, getDataPaths, ResourceOrchestrator } = require('..')

const GB = 1024 ** 3
const gb = (bytes) => (bytes === undefined ? '-' : `${(bytes / GB).toFixed(1)} GB`)
const mb = (bytes) => `${Math.round(bytes / 1024 ** 2)} MB`
const CHAT_SHA256 = 'b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53'
// The tiny diffusion set is generated deterministically, so its files have fixed hashes.
const IMAGE_SHA256 = {
  diffusion: '38d30ec3fe2a7d28fda2e3c1fb8fc593caf9cd4c32a6481b9bf6c2f057c448b8',
  llm: '1e8df84a2be7fcd7e844d2682932391e1b34575f2adc0cf1631f1db01913e27f',
  taesd: '9e086f638b3acab7d1605337289b95a72d3c6fa3a2e2a0a83bf6f92c51ad1711',
}

async function printSystem() {
  const caps = await systemInfo.detect()
  const paths = await getDataPaths()
  const { cpu, memory, gpu, recommendations: rec } = caps
  console.table({
    CPU: `${cpu.model} (${cpu.physicalCores} physical / ${cpu.logicalCores} logical, ${cpu.architecture})`,
    SIMD: cpu.features.join(' ') || '-',
    RAM: `${gb(memory.available)} free of ${gb(memory.total)}`,
    GPU: gpu.available ? `${gpu.name} (${gpu.vendor}), ${gb(gpu.vramAvailable)} free of ${gb(gpu.vram)}` : 'none',
    'GPU runtimes': ['cuda', 'vulkan', 'metal', 'rocm'].filter((k) => gpu[k]).join(' ') || 'none (CPU backends)',
    'Largest model': `${rec.maxModelSize} (${gb(rec.maxModelBytes)} file), ${rec.recommendedQuantization.join('/')}`,
    'Data folder': `${paths.root} (from ${paths.source})`,
  })
}

/** Serves local files at http://127.0.0.1:PORT/<name> while `use(base)` runs. */
async function serving(files, use) {
  const server = http.createServer((req, res) => {
    const file = files[req.url.slice(1)]
    if (!file) return res.writeHead(404).end()
    res.writeHead(200, { 'content-length': fs.statSync(file).size })
    fs.createReadStream(file).pipe(res)
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  try {
    return await use(`http://127.0.0.1:${server.address().port}`)
  } finally {
    server.close()
  }
}

/** The model `id` if it is registered; otherwise downloads it with `options`, a bar showing the bytes. */
async function installed(id, options) {
  try {
    return await modelManager.getModelInfo(id)
  } catch (err) {
    if (err.code !== 'MODEL_NOT_FOUND') throw err
  }
  const bar = new cliProgress.SingleBar(
    { format: `  ${options.name.padEnd(22)} [{bar}] {percentage}% | {got} of {size} MB`, hideCursor: true },
    cliProgress.Presets.shades_classic,
  )
  bar.start(1, 0, { got: 0, size: '?' })
  try {
    return await modelManager.downloadModel({
      ...options,
      onProgress: (downloaded, total) => {
        bar.setTotal(total || 1)
        bar.update(downloaded, { got: (downloaded / 1e6).toFixed(1), size: total ? (total / 1e6).toFixed(1) : '?' })
      },
    })
  } finally {
    bar.stop()
  }
}

const SYSTEM = { role: 'system', content: 'You are a helpful assistant.' }

/** One chat request to the public port, streamed; `write` gets each piece of the answer. */
async function ask(port, question, write) {
  const response = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      messages: [SYSTEM, { role: 'user', content: question }],
      temperature: 0,
      max_tokens: 64,
      stream: true,
    }),
  })
  if (!response.ok) throw new Error(`chat answered ${response.status}: ${await response.text()}`)
  const decoder = new TextDecoder()
  let pending = ''
  let answer = ''
  for await (const chunk of response.body) {
    pending += decoder.decode(chunk, { stream: true })
    const lines = pending.split('\n')
    pending = lines.pop()
    for (const line of lines) {
      if (!line.startsWith('data: ') || line === 'data: [DONE]') continue
      const piece = JSON.parse(line.slice(6)).choices[0]?.delta?.content ?? ''
      answer += piece
      write?.(piece)
    }
  }
  return answer
}

async function chat(model, timings) {
  const question = 'What is the capital of France?'
  const began = performance.now()
  const { port } = await llamaServer.start({ modelId: model.id, port: 'auto', contextSize: 2048 })
  timings['chat model ready'] = performance.now() - began
  console.log(`\nllama-server ready on port ${port} (${model.name}).\n> ${question}`)
  const asked = performance.now()
  await ask(port, question, (piece) => process.stdout.write(piece))
  timings['streamed answer'] = performance.now() - asked
  process.stdout.write('\n')
  return port
}

async function image(model, port, timings) {
  const info = await diffusionServer.start({ modelId: model.id, port: 'auto', backend: 'one-shot' })
  const request = { prompt: 'a red cube on a wooden table', width: 128, height: 128, steps: 4, cfgScale: 1 }
  // A budget that holds either model but not both: the orchestrator must offload the chat model.
  const needs = await new ResourceOrchestrator().estimate(request)
  const budget = Math.max(needs.llm.ram, needs.diffusion.ram) + 64 * 1024 ** 2
  const orchestrator = new ResourceOrchestrator(undefined, undefined, undefined, undefined, {
    ramBudgetBytes: budget,
    headroom: 0,
  })
  console.log(
    `\ndiffusion server on port ${info.port}. Chat model ${mb(needs.llm.ram)} (${needs.llm.source}) + image ${mb(needs.diffusion.ram)} (${needs.diffusion.source}) > budget ${mb(budget)}: the chat model makes room.`,
  )
  let held = null
  orchestrator.on('phase', ({ phase }) => bar.update({ phase }))
  orchestrator.on('offload', () => {
    // Sent while the chat model is away: it waits at the gateway and is answered after the reload.
    const sent = performance.now()
    held = ask(port, 'What is the capital of France?').then((answer) => ({ answer, ms: performance.now() - sent }))
  })
  const bar = new cliProgress.SingleBar(
    { format: '  image  [{bar}] {value}/{total} steps | {phase}', hideCursor: true, clearOnComplete: false },
    cliProgress.Presets.shades_classic,
  )
  bar.start(request.steps, 0, { phase: 'queued' })
  const began = performance.now()
  try {
    const result = await orchestrator.orchestrateImageGeneration({
      ...request,
      onProgress: (step, _total, p) => p.stage === 'diffusion' && bar.update(step, { phase: 'generating' }),
    })
    bar.update(request.steps, { phase: 'chat model back' })
    bar.stop()
    timings['offload → image → reload'] = performance.now() - began
    const file = path.join((await getDataPaths()).root, 'demo-image.png')
    fs.writeFileSync(file, result.image)
    console.log(`  ${result.width}×${result.height} PNG, seed ${result.seed}: ${file}`)
    console.log('  (the tiny test model has random weights, so the image is noise; see the README for a real one)')
    if (held) {
      const { answer, ms } = await held
      timings['chat request held during the image'] = ms
      console.log(
        `  chat request sent during the image, answered after the reload on port ${llamaServer.getPort()}: ${answer.trim()}`,
      )
    }
  } finally {
    bar.stop()
    await diffusionServer.stop()
  }
}

async function main() {
  await printSystem()
  const real = JSON.parse(fs.readFileSync(process.env.GENAI_ELECTRON_DEMO_BACKENDS, 'utf8'))
  process.env.GENAI_ELECTRON_LLAMA_SERVER ??= real.llamaServer
  process.env.GENAI_ELECTRON_SD_CLI ??= real.sdCli
  process.env.GENAI_ELECTRON_SD_SERVER ??= real.sdServer
  const files = {
    'SmolLM2-135M-Instruct.Q4_1.gguf': real.chatModel,
    'diffusion.gguf': real.diffusionModel,
    'llm.gguf': real.diffusionComponents.llm,
    'taesd.gguf': real.diffusionComponents.taesd,
  }
  const [chatModel, imageModel] = await serving(files, async (base) => [
    await installed('smollm2-135m-instruct', {
      source: 'url',
      url: `${base}/SmolLM2-135M-Instruct.Q4_1.gguf`,
      name: 'SmolLM2 135M Instruct',
      type: 'llm',
      checksum: CHAT_SHA256,
    }),
    await installed('tiny-image-test', {
      source: 'url',
      url: `${base}/diffusion.gguf`,
      name: 'tiny image test',
      type: 'diffusion',
      checksum: IMAGE_SHA256.diffusion,
      components: [
        { role: 'llm', source: 'url', url: `${base}/llm.gguf`, checksum: IMAGE_SHA256.llm },
        { role: 'taesd', source: 'url', url: `${base}/taesd.gguf`, checksum: IMAGE_SHA256.taesd },
      ],
    }),
  ])
  const timings = {}
  try {
    const port = await chat(chatModel, timings)
    await image(imageModel, port, timings)
  } finally {
    await llamaServer.stop()
  }
  console.log('\ntimings')
  console.table(Object.fromEntries(Object.entries(timings).map(([step, ms]) => [step, { ms: Math.round(ms) }])))
  console.log('everything stopped.')
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
