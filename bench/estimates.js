'use strict'

// The ResourceOrchestrator's estimates against measured peak RSS, beside the seed's `size × 1.2`:
// the chat model (SmolLM2-135M) at contexts 2048 and 8192, with a vision projector (after a chat
// with an image) and with a draft model (`extraArgs`), and the tiny sliding-window (Gemma 3) and
// mixture-of-experts shapes at 8192 (RSS after one request), a stored
// calibration (llamaServer.calibrate()) and llama.cpp's projection (llama-fit-params) beside our
// GGUF arithmetic, and the tiny diffusion set at 64×64 and 256×256 (sd-cli's peak RSS, read with
// getrusage of a python3 parent; the resident sd-server's, its VmHWM after three images, beside a
// calibration). Printed by
// bench/gateway.js and bench/orchestrate.js.
const assert = require('node:assert/strict')
const { spawnSync } = require('node:child_process')
const os = require('node:os')
const path = require('node:path')

const MB = 1e6

function chat(port, content = 'Hello') {
  return fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ messages: [{ role: 'user', content }], max_tokens: 16 }),
  }).then((r) => r.json())
}

/** A chat's content: a question and a grey `size`-pixel PNG. */
function withImage(size) {
  const { png } = require('../__test__/helpers')
  return [
    { type: 'text', text: 'What is this?' },
    { type: 'image_url', image_url: { url: `data:image/png;base64,${png(size).toString('base64')}` } },
  ]
}

/** Peak RSS of one sd-cli run, in bytes. */
function sdCliPeak(real, size) {
  const args = [
    '--diffusion-model',
    real.diffusionModel,
    '--llm',
    real.diffusionComponents.llm,
    '--taesd',
    real.diffusionComponents.taesd,
    '-p',
    'a red cube',
    '-W',
    String(size),
    '-H',
    String(size),
    '--steps',
    '2',
    '--seed',
    '42',
    '--cfg-scale',
    '1',
    '-t',
    '1',
    '-o',
    path.join(os.tmpdir(), `genai-electron-bench-${size}.png`),
  ]
  const script =
    'import resource, subprocess, sys\nsubprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)\nprint(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)'
  // As the diffusion server runs it where no GPU is usable: the GPUs hidden (a Vulkan build would
  // load every Vulkan driver to look for one).
  const env = { ...process.env, GGML_DISABLE_VULKAN: '1', CUDA_VISIBLE_DEVICES: '' }
  const run = spawnSync('python3', ['-c', script, real.sdCli, ...args], { encoding: 'utf8', env })
  if (run.status !== 0) throw new Error(`sd-cli failed: ${run.stderr}`)
  return Number(run.stdout.trim()) * 1024
}

/** The highest resident memory `pid` has had, bytes (Linux's VmHWM). */
function highWaterMark(pid) {
  const status = require('node:fs').readFileSync(`/proc/${pid}/status`, 'utf8')
  return Number(/VmHWM:\s+(\d+) kB/.exec(status)[1]) * 1024
}

/**
 * Registers the chat model as `chat`, the shaped ones as `swa` and `moe`, and the tiny image set
 * as `tiny-image` (a configured data dir).
 */
async function registerModels(lib, real) {
  process.env.GENAI_ELECTRON_LLAMA_SERVER = real.llamaServer
  process.env.GENAI_ELECTRON_SD_CLI = real.sdCli
  process.env.GENAI_ELECTRON_SD_SERVER = real.sdServer
  const { serveFiles, downloadTinyImageSet } = require('../__test__/helpers')
  const files = { '/chat.gguf': real.chatModel, '/swa.gguf': real.shapedModels.swa, '/moe.gguf': real.shapedModels.moe }
  await serveFiles(files, async (base) => {
    for (const name of ['chat', 'swa', 'moe']) {
      await lib.modelManager.downloadModel({ source: 'url', url: `${base}/${name}.gguf`, name, type: 'llm' })
    }
  })
  await downloadTinyImageSet(lib.modelManager, real)
}

/**
 * The chat model's estimate for the running server's context and GPU layers, by both sources:
 * llama.cpp's projection, and the arithmetic (canRunModel cannot ask llama.cpp without the
 * file's path).
 */
async function llmEstimates(lib, model, contextSize, extraArgs) {
  const { gpuLayers } = lib.llamaServer.getConfig()
  const sized = async (info) => (await lib.systemInfo.canRunModel(info, { contextSize, gpuLayers, extraArgs })).estimate
  const projected = await sized(model)
  assert.equal(projected.source, 'projected', 'llama-fit-params is built beside llama-server')
  return { projected, arithmetic: await sized({ ...model, path: undefined }) }
}

/** Prints the table; the shared servers are stopped before and after. */
async function printEstimateTable(lib, real) {
  const { llamaServer, diffusionServer, modelManager, ResourceOrchestrator } = lib
  const imageSize = (await modelManager.getModelInfo('tiny-image')).size
  const rows = {}
  const error = (bytes, measured) => `${(((bytes - measured) / measured) * 100).toFixed(1)}%`
  // Each source beside the measurement: llama.cpp's projection (the LLM only), our arithmetic,
  // and the seed's rule.
  const row = (name, measured, { calibrated, projected, arithmetic, seed }) => {
    rows[name] = {
      'measured MB': (measured / MB).toFixed(1),
      'calibrated MB': calibrated === undefined ? '-' : (calibrated / MB).toFixed(1),
      'its error   ': calibrated === undefined ? '-' : error(calibrated, measured),
      'projected MB': projected === undefined ? '-' : (projected / MB).toFixed(1),
      'its error': projected === undefined ? '-' : error(projected, measured),
      'arithmetic MB': (arithmetic / MB).toFixed(1),
      'its error ': error(arithmetic, measured),
      'size × 1.2 MB': (seed / MB).toFixed(1),
      'its error  ': error(seed, measured),
    }
  }
  const orchestrator = new ResourceOrchestrator()
  try {
    await diffusionServer.start({ modelId: 'tiny-image', backend: 'one-shot', port: 'auto', threads: 1 })
    const projector = ['--mmproj', real.shapedModels.mmproj]
    const draft = ['--model-draft', real.shapedModels.draft, '--spec-type', 'draft-simple']
    const llms = [
      ['chat model, context 2048', 'chat', 2048],
      ['chat model, context 8192', 'chat', 8192],
      ['chat model + vision projector, 2048', 'chat', 2048, projector, withImage(64)],
      ['chat model + draft model, 2048', 'chat', 2048, draft],
      ['tiny sliding-window (Gemma 3), 8192', 'swa', 8192],
      ['tiny mixture of experts, 8192', 'moe', 8192],
    ]
    for (const [name, modelId, contextSize, extraArgs = [], content] of llms) {
      const model = await modelManager.getModelInfo(modelId)
      const info = await llamaServer.start({ modelId, port: 'auto', threads: 1, contextSize, extraArgs })
      const reply = await chat(info.port, content)
      assert.ok(reply.choices, JSON.stringify(reply))
      const { llm } = await orchestrator.estimate()
      assert.equal(llm.source, 'measured')
      const { projected, arithmetic } = await llmEstimates(lib, model, contextSize, extraArgs)
      await llamaServer.stop()
      // The same configuration calibrated: a server of its own, a short prompt, its peak RSS.
      const profile = { contextSize, parallelRequests: lib.llamaServer.getConfig().parallelRequests }
      const report = await llamaServer.calibrate({ modelId, profile, fixedConfig: { threads: 1, extraArgs } })
      assert.equal(report.status, 'complete', JSON.stringify(report.runs))
      const { gpuLayers } = lib.llamaServer.getConfig()
      const calibrated = (await lib.systemInfo.canRunModel(model, { contextSize, gpuLayers, extraArgs })).estimate
      assert.equal(calibrated.source, 'measured', 'the calibration answers for its configuration')
      row(name, llm.measured.ram, {
        calibrated: calibrated.ram,
        projected: projected.ram,
        arithmetic: arithmetic.ram,
        seed: model.size * 1.2,
      })
      await llamaServer.stop()
    }
    const oneShot = {}
    for (const size of [64, 256]) {
      oneShot[size] = (await orchestrator.estimate({ width: size, height: size })).diffusion
      assert.equal(oneShot[size].source, 'estimated')
    }
    await diffusionServer.stop()
    // One-shot images calibrated: each sd-cli's own peak, as the kernel keeps it.
    const generation = { steps: 2, cfgScale: 1, sampler: 'euler', threads: 1 }
    const squares = [64, 256].map((size) => ({ width: size, height: size }))
    const calibration = { modelId: 'tiny-image', sizes: squares, generation, seed: 42, prompt: 'a red cube' }
    await diffusionServer.calibrate({ ...calibration, backend: 'one-shot' })
    await diffusionServer.start({ modelId: 'tiny-image', backend: 'one-shot', port: 'auto', threads: 1 })
    for (const size of [64, 256]) {
      const calibrated = (await orchestrator.estimate({ width: size, height: size })).diffusion
      assert.equal(calibrated.source, 'measured')
      row(`diffusion set, ${size}×${size}`, sdCliPeak(real, size), {
        calibrated: calibrated.ram,
        arithmetic: oneShot[size].estimated.ram,
        seed: imageSize * 1.2,
      })
    }
    await diffusionServer.stop()
    // The resident sd-server: its peak RSS after three images of each size (a fresh server each;
    // it holds about 23 MB more from its second image on, then no more), beside the arithmetic
    // and a calibration of the same sizes.
    const sizes = [64, 256]
    const arithmetic = {}
    await diffusionServer.start({ modelId: 'tiny-image', backend: 'resident', port: 'auto', threads: 1 })
    for (const size of sizes) {
      arithmetic[size] = (await orchestrator.estimate({ width: size, height: size })).diffusion
      assert.equal(arithmetic[size].source, 'estimated')
    }
    const residentPeak = {}
    for (const size of sizes) {
      await diffusionServer.stop()
      await diffusionServer.start({ modelId: 'tiny-image', backend: 'resident', port: 'auto', threads: 1 })
      const { steps, cfgScale, sampler } = generation
      for (let i = 0; i < 3; i++) {
        await diffusionServer.generateImage({
          prompt: 'a red cube',
          width: size,
          height: size,
          seed: 42,
          steps,
          cfgScale,
          sampler,
        })
      }
      const [pid] = (await diffusionServer.getMemoryUsage()).pids
      residentPeak[size] = highWaterMark(pid)
    }
    await diffusionServer.stop()
    await diffusionServer.calibrate(calibration)
    await diffusionServer.start({ modelId: 'tiny-image', backend: 'resident', port: 'auto', threads: 1 })
    for (const size of sizes) {
      const calibrated = (await orchestrator.estimate({ width: size, height: size })).diffusion
      assert.equal(calibrated.source, 'measured')
      row(`diffusion set, resident, ${size}×${size}`, residentPeak[size], {
        calibrated: calibrated.ram,
        arithmetic: arithmetic[size].ram,
        seed: imageSize * 1.2,
      })
    }
  } finally {
    await Promise.all([llamaServer.stop(), diffusionServer.stop()])
  }
  console.log(`\nestimates against measured peak RSS (node ${process.version})`)
  console.table(rows)
}

/**
 * sd-cli's buffers on the Vulkan device (`-v`: "… params backend buffer size = 2.20 MB(VRAM)",
 * "… compute buffer size: 3.22 MB(VRAM)"), in bytes, for one image with the diffusion model
 * there and the text encoder and TAESD on the CPU: with those two on lavapipe the pinned sd
 * aborts now and then (see __test__/vulkan.test.js).
 */
function sdCliDeviceBuffers(real, size) {
  const args = ['--diffusion-model', real.diffusionModel, '--llm', real.diffusionComponents.llm]
  args.push('--taesd', real.diffusionComponents.taesd, '-p', 'a red cube', '-W', String(size), '-H', String(size))
  args.push('--steps', '2', '--seed', '42', '--cfg-scale', '1', '-t', '1', '-v', ...SD_ON_LAVAPIPE)
  args.push('-o', path.join(os.tmpdir(), `genai-electron-bench-vram-${size}.png`))
  const run = spawnSync(real.sdCli, args, { encoding: 'utf8', maxBuffer: 64 << 20 })
  if (run.status !== 0) throw new Error(`sd-cli failed (${run.status ?? run.signal}): ${run.stderr.slice(-2000)}`)
  let bytes = 0
  for (const m of `${run.stdout}\n${run.stderr}`.matchAll(/buffer size\s*[:=]\s*([\d.]+) MB\(VRAM\)/g)) {
    bytes += Number(m[1]) * 2 ** 20
  }
  return bytes
}

const SD_ON_LAVAPIPE = ['--clip-on-cpu', '--vae-on-cpu']

/**
 * The VRAM estimates against what the backends report on the Vulkan device (llama.cpp's model,
 * KV and compute buffers; sd's params and compute buffers): the chat model at contexts 2048 and
 * 8192 with every layer there, the tiny set's diffusion model at 64×64 and 256×256. Needs a Vulkan device
 * that detection and the backends use (bench/vram.js names lavapipe).
 */
async function printVramTable(lib, real) {
  const { deviceBuffers } = require('../__test__/helpers')
  const { llamaServer, diffusionServer, ResourceOrchestrator } = lib
  const model = await lib.modelManager.getModelInfo('chat')
  const rows = {}
  const mib = (bytes) => (bytes / 2 ** 20).toFixed(1)
  const error = (ours, theirs) => `${(((ours - theirs) / theirs) * 100).toFixed(1)}%`
  const orchestrator = new ResourceOrchestrator()
  try {
    for (const contextSize of [2048, 8192]) {
      // The log of the server before is kept across starts.
      llamaServer.clearLogs()
      await llamaServer.start({ modelId: 'chat', port: 'auto', threads: 1, contextSize })
      const found = deviceBuffers(await llamaServer.getLogs(2000))
      const { projected, arithmetic } = await llmEstimates(lib, model, contextSize)
      const theirs = found.model + found.kv + found.compute
      rows[`chat model, context ${contextSize}`] = {
        'device MiB': mib(theirs),
        'projected MiB': mib(projected.vram),
        'its error': error(projected.vram, theirs),
        'arithmetic MiB': mib(arithmetic.vram),
        'its error ': error(arithmetic.vram, theirs),
        'weights (theirs/ours)': `${mib(found.model)}/${mib(arithmetic.weights)}`,
        'KV (theirs/ours)': `${mib(found.kv)}/${mib(arithmetic.kvCache)}`,
        'compute (theirs/ours)': `${mib(found.compute)}/${mib(arithmetic.compute)}`,
      }
      await llamaServer.stop()
    }
    // The same placement as sd-cli's run below: the diffusion model on the device.
    const placed = { clipOnCpu: true, vaeOnCpu: true }
    await diffusionServer.start({ modelId: 'tiny-image', backend: 'one-shot', port: 'auto', threads: 1, ...placed })
    for (const size of [64, 256]) {
      const { diffusion } = await orchestrator.estimate({ width: size, height: size })
      const bytes = sdCliDeviceBuffers(real, size)
      rows[`diffusion model, ${size}×${size}`] = {
        'device MiB': mib(bytes),
        'arithmetic MiB': mib(diffusion.estimated.vram),
        'its error ': error(diffusion.estimated.vram, bytes),
      }
    }
  } finally {
    orchestrator.dispose()
    await Promise.all([llamaServer.stop(), diffusionServer.stop()])
  }
  console.log(`\nVRAM estimates against the buffers the backends report on the device`)
  console.table(rows)
}

module.exports = { registerModels, printEstimateTable, printVramTable }
