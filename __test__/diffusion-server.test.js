'use strict'

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')
const { spawn } = require('node:child_process')
const { alive, backends, downloadTinyImageSet, ROOT, assertLoopFree } = require('./helpers')
const {
  DiffusionServerManager,
  ModelManager,
  configure,
  CancelledError,
  LogManager,
  PortInUseError,
  ServerError,
  ValidationError,
} = require('..')

const { paths: real, skip } = backends()

const SMALL = { prompt: 'a red cube', width: 64, height: 64, steps: 3, cfgScale: 1 }

/** A data folder with the tiny diffusion set registered as one model, `tiny-image`, downloaded
 *  from a local HTTP server, and the real sd-cli / sd-server chosen. */
async function withTinySet() {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'genai-electron-diffusion-'))
  configure({ dataDir })
  process.env.GENAI_ELECTRON_SD_CLI = real.sdCli
  process.env.GENAI_ELECTRON_SD_SERVER = real.sdServer
  await downloadTinyImageSet(new ModelManager(), real)
  return dataDir
}

function pngSize(png) {
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])
  return [png.readUInt32BE(16), png.readUInt32BE(20)]
}

/**
 * Runs `use(backend, info)` against `server` started with the tiny set on each backend in turn,
 * its logs cleared, and stops it after, however `use` ends.
 */
async function onEachBackend(server, use) {
  for (const backend of ['one-shot', 'resident']) {
    server.clearLogs()
    const info = await server.start({ modelId: 'tiny-image', backend, port: 'auto', threads: 1 })
    try {
      await use(backend, info)
    } finally {
      await server.stop()
    }
  }
}

test('one-shot: generateImage with progress, HTTP and the openai client all get PNGs', { skip }, async (t) => {
  await withTinySet()
  const server = new DiffusionServerManager()
  const events = []
  for (const type of ['starting', 'started', 'stopped']) server.on(type, () => events.push(type))
  const info = await server.start({ modelId: 'tiny-image', backend: 'one-shot', port: 'auto', threads: 1 })
  try {
    assert.deepEqual([info.status, info.backend, info.modelId], ['running', 'one-shot', 'tiny-image'])
    assert.equal(await server.isHealthy(), true)
    assert.equal(server.getConfig().backend, 'one-shot')
    assert.equal(server.getConfig().port, info.port, "port: 'auto' resolves to the port it got")

    const steps = []
    // sd-cli runs in its own process and its output is read off the JS thread.
    const result = await assertLoopFree(
      () =>
        server.generateImage({
          ...SMALL,
          seed: 42,
          onProgress: (step, total, stage, percentage, p) => steps.push([stage, step, total, percentage, p.stage]),
        }),
      { t, what: 'a one-shot generateImage' },
    )
    assert.deepEqual(pngSize(result.image), [64, 64])
    assert.equal(result.seed, 42)
    assert.equal(result.format, 'png')
    assert.ok(result.timeTaken >= result.backendTime && result.backendTime > 0)
    assert.deepEqual(
      steps.filter(([stage]) => stage === 'diffusion').map((s) => s.slice(0, 3)),
      [
        ['diffusion', 1, 3],
        ['diffusion', 2, 3],
        ['diffusion', 3, 3],
      ],
    )
    // 0.26's arguments: the stage and the whole request's percentage, which never goes back.
    assert.ok(
      steps.every(
        ([stage, , , percentage, progressStage]) => stage === progressStage && percentage >= 0 && percentage <= 100,
      ),
      JSON.stringify(steps),
    )
    const percentages = steps.map((s) => s[3])
    assert.deepEqual(
      percentages,
      [...percentages].sort((a, b) => a - b),
    )

    const response = await fetch(`http://127.0.0.1:${info.port}/v1/images/generations`, {
      method: 'POST',
      body: JSON.stringify({ ...SMALL, seed: 42 }),
    })
    const body = await response.json()
    assert.equal(response.status, 200)
    assert.ok(Buffer.from(body.image, 'base64').equals(result.image), 'same seed, same image')

    const { default: OpenAI } = await import('openai')
    const client = new OpenAI({ baseURL: `http://127.0.0.1:${info.port}/v1`, apiKey: 'unused' })
    const openai = await client.images.generate({
      model: 'local',
      prompt: 'a cube',
      size: '64x64',
      n: 1,
      response_format: 'b64_json',
    })
    assert.deepEqual(pngSize(Buffer.from(openai.data[0].b64_json, 'base64')), [64, 64])
    const entries = (await server.getLogs(500)).map((line) => LogManager.parseEntry(line))
    assert.ok(entries.every(Boolean), 'every line has a time and a level')
    // sd-cli's own level marker became the entry's level.
    assert.ok(entries.some((e) => e.level === 'info' && /generate_image completed/.test(e.message)))
  } finally {
    await server.stop()
  }
  assert.deepEqual(events, ['starting', 'started', 'stopped'])
  assert.equal(server.isRunning(), false)
})

test("the seed's gpuLayers and vramBudget reach the real backend as its own switches", { skip }, async () => {
  await withTinySet()
  // A budget far below the model (10.6 MB): every switch, and the real sd-cli still makes the image.
  const oneShot = new DiffusionServerManager()
  await oneShot.start({ modelId: 'tiny-image', backend: 'one-shot', port: 'auto', threads: 1, vramBudget: 1 })
  try {
    assert.deepEqual(oneShot.getConfig().placement, [
      '--max-vram',
      '0.001',
      '--offload-to-cpu',
      '--clip-on-cpu',
      '--vae-on-cpu',
    ])
    assert.deepEqual(pngSize((await oneShot.generateImage({ ...SMALL, seed: 1 })).image), [64, 64])
  } finally {
    await oneShot.stop()
  }
  // CPU only: the resident sd-server runs with the GPUs hidden from it.
  const resident = new DiffusionServerManager()
  await resident.start({ modelId: 'tiny-image', backend: 'resident', port: 'auto', threads: 1, gpuLayers: 0 })
  try {
    await resident.generateImage({ ...SMALL, seed: 2 })
    const environ = fs.readFileSync(`/proc/${resident.getInfo().pid}/environ`, 'utf8').split('\0')
    assert.ok(environ.includes('GGML_DISABLE_VULKAN=1') && environ.includes('CUDA_VISIBLE_DEVICES='), environ.join(' '))
    assert.deepEqual(resident.getConfig().placement, [])
  } finally {
    await resident.stop()
  }
  await assert.rejects(resident.start({ modelId: 'tiny-image', gpuLayers: 0, vramBudget: 512 }), ValidationError)
  await assert.rejects(resident.start({ modelId: 'tiny-image', vramBudget: -1 }), ValidationError)
})

test("genai-electron 0.26's diffusion keys start the real backend with their switches", { skip }, async () => {
  await withTinySet()
  const server = new DiffusionServerManager()
  await server.start({
    modelId: 'tiny-image',
    port: 'auto',
    threads: 1,
    usageMode: 'burst',
    idleTimeoutMs: 60000,
    jobActivityTimeoutMs: 30000,
    clipOnCpu: true,
    vaeOnCpu: true,
    offloadToCpu: false,
    diffusionFlashAttention: true,
  })
  try {
    const config = server.getConfig()
    assert.equal(config.backend, 'resident')
    assert.deepEqual([config.idleTimeout, config.stallTimeout], [60000, 30000])
    assert.deepEqual(config.placement, ['--clip-on-cpu', '--vae-on-cpu', '--diffusion-fa'])
    assert.deepEqual(pngSize((await server.generateImage({ ...SMALL, seed: 3 })).image), [64, 64])
    const argv = fs.readFileSync(`/proc/${server.getInfo().pid}/cmdline`, 'utf8').split('\0')
    for (const flag of config.placement) assert.ok(argv.includes(flag), `${flag} in ${argv.join(' ')}`)
  } finally {
    await server.stop()
  }
  await assert.rejects(
    server.start({ modelId: 'tiny-image', batchSize: 2 }),
    (err) => err instanceof ValidationError && /count on each image request/.test(err.message),
  )
})

test('resident: the model stays loaded, an AbortSignal cancels, stop ends sd-server', { skip }, async () => {
  const dataDir = await withTinySet()
  const server = new DiffusionServerManager()
  const info = await server.start({ modelId: 'tiny-image', backend: 'resident', port: 'auto', threads: 1 })
  let pid
  try {
    assert.equal(info.backend, 'resident')
    const first = await server.generateImage({ ...SMALL, count: 2 })
    assert.equal(first.images.length, 2)
    assert.deepEqual(first.seeds, [first.seed, first.seed + 1])
    pid = server.getInfo().pid
    assert.ok(alive(pid))

    const controller = new AbortController()
    const long = server.generateImage({
      ...SMALL,
      width: 256,
      height: 256,
      steps: 150,
      signal: controller.signal,
      onProgress: () => controller.abort(),
    })
    await assert.rejects(long, CancelledError)
    assert.equal(alive(pid), false, 'sd-server cannot cancel a running job: it was stopped')
    const after = await server.generateImage(SMALL)
    assert.deepEqual(pngSize(after.image), [64, 64])
    pid = server.getInfo().pid
  } finally {
    await server.stop()
  }
  assert.equal(alive(pid), false)
  assert.deepEqual(fs.readdirSync(path.join(dataDir, 'temp')), [])
})

test("image-to-image, inpainting and reference images: initImage, strength, mask and referenceImages reach sd-cli and sd-server, from JS, HTTP and the openai client's images.edit(); bad ones are typed errors", {
  skip,
}, async () => {
  const dataDir = await withTinySet()
  const { png, pngScanlines } = require('./helpers')
  const init = png(64, [200, 30, 30])
  const [keepAll, redrawAll] = [png(64, [0]), png(64, [255])]
  const server = new DiffusionServerManager()
  await onEachBackend(server, async (backend, info) => {
    // Unsized, the image asked is the init image's size.
    const { prompt, steps, cfgScale } = SMALL
    const made = await server.generateImage({ prompt, steps, cfgScale, seed: 7, initImage: init, strength: 0.5 })
    assert.deepEqual(pngSize(made.image), [64, 64])
    const logs = await server.getLogs(400)
    assert.ok(
      logs.some((l) => l.includes('IMG2IMG')),
      `${backend}: sd ran image-to-image (its own log says so)`,
    )
    // Inpainting: under a black mask every pixel is kept, so the seed changes nothing; under a
    // white one everything is redrawn from the seed's noise.
    const masked = async (mask, seed) =>
      pngScanlines((await server.generateImage({ prompt, steps: 2, cfgScale, seed, initImage: init, mask })).image)
    assert.deepEqual(await masked(keepAll, 1), await masked(keepAll, 2), `${backend}: a black mask keeps the image`)
    assert.notDeepEqual(await masked(redrawAll, 1), await masked(redrawAll, 2), `${backend}: a white mask redraws it`)
    // Reference images, of any size: sd encodes them and the model sees them (it says EDIT mode).
    const reference = png(48, [10, 200, 10])
    const referenced = async (referenceImages) =>
      pngScanlines((await server.generateImage({ ...SMALL, seed: 5, referenceImages })).image)
    server.clearLogs()
    const withReference = await referenced([reference, new Uint8Array(png(64))])
    assert.ok(
      (await server.getLogs(400)).some((l) => l.includes('EDIT mode')),
      `${backend}: sd took the references`,
    )
    assert.notDeepEqual(withReference, await referenced(undefined), `${backend}: the references change the image`)
    // A cancel mid-way, with every kind of input image on its way to the backend.
    const controller = new AbortController()
    const cancelled = server.generateImage({
      prompt,
      steps: 150,
      cfgScale,
      initImage: init,
      mask: redrawAll,
      referenceImages: [reference],
      signal: controller.signal,
      onProgress: (step) => step > 0 && controller.abort(),
    })
    await assert.rejects(cancelled, CancelledError)
    // The same request as JSON over HTTP, the image as a data URL; text-to-image differs.
    const body = { prompt, steps, cfgScale, seed: 7, strength: 0.5 }
    const post = (extra) =>
      fetch(`http://127.0.0.1:${info.port}/v1/images/generations`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ ...body, ...extra }),
      })
    const viaHttp = await post({ initImage: `data:image/png;base64,${init.toString('base64')}` })
    assert.equal(viaHttp.status, 200)
    const [{ b64_json }] = (await viaHttp.json()).data
    assert.deepEqual(pngSize(Buffer.from(b64_json, 'base64')), [64, 64])
    const refused = await post({ initImage: Buffer.from('GIF89a').toString('base64') })
    assert.equal(refused.status, 400)
    assert.match((await refused.json()).error.message, /initImage is not a PNG, JPEG or WebP image/)
    // The openai client's images.edit(): a multipart form with the image as a file.
    const { default: OpenAI, toFile } = await import('openai')
    const client = new OpenAI({ baseURL: `http://127.0.0.1:${info.port}/v1`, apiKey: 'unused' })
    const edited = await client.images.edit({
      model: 'local',
      image: await toFile(init, 'day.png', { type: 'image/png' }),
      prompt: 'the same at night',
      n: 1,
      response_format: 'b64_json',
    })
    assert.deepEqual(pngSize(Buffer.from(edited.data[0].b64_json, 'base64')), [64, 64])
    // OpenAI's mask: transparent is edited, opaque kept (an opaque black mask keeps it all).
    const editMasked = async (mask, seed) => {
      const { data } = await client.images.edit({
        image: await toFile(init, 'day.png', { type: 'image/png' }),
        mask: await toFile(mask, 'mask.png', { type: 'image/png' }),
        prompt: 'a moon',
        response_format: 'b64_json',
        seed,
        steps: 2,
        cfgScale,
      })
      return pngScanlines(Buffer.from(data[0].b64_json, 'base64'))
    }
    // Several images are references (as OpenAI's newer models take them).
    const references = await client.images.edit({
      image: [
        await toFile(init, 'a.png', { type: 'image/png' }),
        await toFile(png(48), 'b.png', { type: 'image/png' }),
      ],
      prompt: 'the two together',
      size: '64x64',
      response_format: 'b64_json',
      steps: 2,
      cfgScale,
    })
    assert.deepEqual(pngSize(Buffer.from(references.data[0].b64_json, 'base64')), [64, 64])
    const [opaque, transparent] = [png(64, [0, 0, 0, 255]), png(64, [0, 0, 0, 0])]
    assert.deepEqual(await editMasked(opaque, 1), await editMasked(opaque, 2), `${backend}: opaque is kept`)
    assert.notDeepEqual(
      await editMasked(transparent, 1),
      await editMasked(transparent, 2),
      `${backend}: transparent is edited`,
    )
    for (const [bad, pattern] of [
      [{ initImage: init, width: 128, height: 128 }, /initImage is 64x64, the image asked is 128x128/],
      [{ strength: 0.5 }, /strength needs initImage/],
      [{ initImage: new Uint8Array([1, 2, 3]) }, /initImage is not a PNG, JPEG or WebP image/],
      [{ mask: keepAll }, /mask needs initImage/],
      [{ initImage: init, mask: png(128, [0]) }, /mask is 128x128, initImage is 64x64/],
      [{ referenceImages: [init, Buffer.from('GIF89a')] }, /referenceImages\[1\] is not a PNG, JPEG or WebP image/],
    ]) {
      await assert.rejects(
        server.generateImage({ prompt, steps, ...bad }),
        (err) => err instanceof ValidationError && pattern.test(err.message),
      )
    }
  })
  assert.deepEqual(fs.readdirSync(path.join(dataDir, 'temp')), [], 'the init images are gone with their requests')
})

test('LoRAs: downloaded as lora models (GGUF or safetensors, checked), applied by sd-cli and sd-server as sd reports, and a LoRA that is not installed is a typed error', {
  skip,
}, async () => {
  const dataDir = await withTinySet()
  const { serveFiles, pngScanlines, png } = require('./helpers')
  const models = new ModelManager()
  const fake = path.join(dataDir, 'fake')
  fs.writeFileSync(fake, 'GGUF\x03\0\0\0 not a LoRA at all')
  // A well-formed LoRA for a block the tiny model does not have (made for another model).
  const foreign = path.join(dataDir, 'foreign.safetensors')
  const header = JSON.stringify({
    'diffusion_model.no_such_block.lora_down.weight': { dtype: 'F32', shape: [4, 8], data_offsets: [0, 128] },
    'diffusion_model.no_such_block.lora_up.weight': { dtype: 'F32', shape: [8, 4], data_offsets: [128, 256] },
  })
  const length = Buffer.alloc(8)
  length.writeBigUInt64LE(BigInt(header.length))
  fs.writeFileSync(foreign, Buffer.concat([length, Buffer.from(header), Buffer.alloc(256)]))
  const files = {
    '/foreign.safetensors': foreign,
    '/ink.gguf': real.diffusionLoras.gguf,
    '/film.safetensors': real.diffusionLoras.safetensors,
    '/fake.safetensors': fake,
    '/style.pt': fake,
  }
  await serveFiles(files, async (base) => {
    const lora = (file, name) => models.downloadModel({ source: 'url', url: `${base}/${file}`, name, type: 'lora' })
    const ink = await lora('ink.gguf', 'ink')
    assert.equal(ink.type, 'lora')
    assert.ok(ink.ggufMetadata, 'a GGUF LoRA is read as GGUF')
    assert.equal((await lora('film.safetensors', 'film')).type, 'lora')
    await lora('foreign.safetensors', 'foreign')
    await assert.rejects(
      lora('fake.safetensors', 'fake'),
      (err) => err instanceof ValidationError && /does not start with a safetensors header/.test(err.message),
    )
    await assert.rejects(
      lora('style.pt', 'style'),
      (err) => err instanceof ValidationError && /a LoRA is a \.safetensors or \.gguf file/.test(err.message),
    )
  })
  assert.deepEqual((await models.listModels('lora')).map((m) => m.id).sort(), ['film', 'foreign', 'ink'])
  const kept = fs.readdirSync(path.join(dataDir, 'models', 'lora')).sort()
  assert.deepEqual(kept, ['film', 'foreign', 'ink'], 'nothing kept of the refused')
  assert.ok((await models.getStorageUsage()).lora > 0)

  const server = new DiffusionServerManager()
  await onEachBackend(server, async (backend, info) => {
    const made = async (extra) => pngScanlines((await server.generateImage({ ...SMALL, seed: 3, ...extra })).image)
    const plain = await made({})
    for (const modelId of ['ink', 'film']) {
      server.clearLogs()
      const styled = await made({ loras: [{ modelId, weight: 0.8 }] })
      const applied = (await server.getLogs(400)).find((l) => l.includes('LoRA tensors have been applied'))
      assert.match(
        applied ?? '',
        new RegExp(`\\(24 / 24\\) LoRA tensors have been applied, lora_file_path = .*${modelId}/`),
        `${backend}: sd applied ${modelId}`,
      )
      assert.notDeepEqual(styled, plain, `${backend}: ${modelId} changes the image`)
    }
    assert.deepEqual(await made({}), plain, `${backend}: the next image without a LoRA is as before`)
    if (backend === 'one-shot') {
      // The orchestrator's estimate counts the LoRA's file with the model's.
      const { ResourceOrchestrator } = require('..')
      const orchestrator = new ResourceOrchestrator(undefined, undefined, server)
      const bare = await orchestrator.estimate({ width: 64, height: 64 })
      const styled = await orchestrator.estimate({ width: 64, height: 64, loras: [{ modelId: 'ink' }] })
      const { size } = await models.getModelInfo('ink')
      assert.equal(styled.diffusion.ram - bare.diffusion.ram, size)
      // An init image and a reference image are encoded by the VAE: each counts.
      const edit = await orchestrator.estimate({
        width: 64,
        height: 64,
        initImage: png(64),
        referenceImages: [png(32)],
      })
      assert.equal(edit.diffusion.ram - bare.diffusion.ram, 2 * 12e6)
      orchestrator.dispose()
    }
    const viaHttp = await fetch(`http://127.0.0.1:${info.port}/v1/images/generations`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ ...SMALL, seed: 3, loras: [{ modelId: 'nope' }] }),
    })
    assert.equal(viaHttp.status, 400)
    assert.match((await viaHttp.json()).error.message, /loras\[0\]\.modelId "nope" is not installed/)
    for (const [loras, pattern] of [
      [[{ modelId: 'nope' }], /loras\[0\]\.modelId "nope" is not installed/],
      [
        [{ modelId: 'ink' }, { modelId: 'tiny-image' }],
        /loras\[1\]\.modelId "tiny-image" is a diffusion model, not a LoRA/,
      ],
      [[{ modelId: 'ink', weight: 20 }], /loras\[0\]\.weight must be between -10 and 10/],
      [
        [{ modelId: 'foreign' }],
        /the loaded model cannot use LoRA "foreign": stable-diffusion.cpp matched none of its tensors/,
      ],
    ]) {
      await assert.rejects(
        server.generateImage({ ...SMALL, loras }),
        (err) => err instanceof ValidationError && pattern.test(err.message),
      )
    }
    await assert.rejects(server.generateImage({ ...SMALL, prompt: 'a cat <lora:ink:1>' }), /name LoRAs in loras/)
  })
  assert.deepEqual(fs.readdirSync(path.join(dataDir, 'temp')), [])
})

test("hires fix: a second, larger pass on sd-cli and sd-server, its size the result's, its progress never going back", {
  skip,
}, async () => {
  const dataDir = await withTinySet()
  const server = new DiffusionServerManager()
  await onEachBackend(server, async (backend, info) => {
    const percents = []
    const made = await server.generateImage({
      ...SMALL,
      count: 2,
      hires: { scale: 1.5, steps: 2 },
      onProgress: (_step, _total, _stage, percentage) => percents.push(percentage),
    })
    assert.deepEqual([made.width, made.height], [96, 96])
    for (const image of made.images) assert.deepEqual(pngSize(image), [96, 96])
    const logs = await server.getLogs(400)
    assert.ok(
      logs.some((l) => l.includes('hires Latent upscale 8x8 -> 12x12')),
      `${backend}: sd ran the second pass`,
    )
    assert.ok(
      percents.length > 4 && percents.every((p, i) => i === 0 || p >= percents[i - 1]),
      `${backend}: ${percents}`,
    )
    // Over HTTP, with a target size and an upscaler in pixel space.
    const response = await fetch(`http://127.0.0.1:${info.port}/v1/images/generations`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        ...SMALL,
        hires: { width: 128, height: 64, upscaler: 'Lanczos', denoisingStrength: 0.5 },
      }),
    })
    assert.equal(response.status, 200)
    const { data } = await response.json()
    assert.deepEqual(pngSize(Buffer.from(data[0].b64_json, 'base64')), [128, 64])
    assert.ok((await server.getLogs(400)).some((l) => l.includes('hires Lanczos image upscale 64x64 -> 128x64')))
    await assert.rejects(
      server.generateImage({ ...SMALL, hires: { scale: 1, steps: 2 } }),
      (err) => err instanceof ValidationError && /hires.scale must be over 1/.test(err.message),
    )
  })
  assert.deepEqual(fs.readdirSync(path.join(dataDir, 'temp')), [])
})

test('upscaling: an installed ESRGAN upscaler enlarges an image by sd-cli beside either backend; bad input and a cancel are typed', {
  skip,
}, async () => {
  const dataDir = await withTinySet()
  const { serveFiles, png } = require('./helpers')
  const models = new ModelManager()
  await serveFiles({ '/x2.gguf': real.upscaler, '/x2.pth': real.upscaler }, async (base) => {
    const upscaler = await models.downloadModel({ source: 'url', url: `${base}/x2.gguf`, name: 'x2', type: 'upscaler' })
    assert.equal(upscaler.type, 'upscaler')
    await assert.rejects(
      models.downloadModel({ source: 'url', url: `${base}/x2.pth`, name: 'pickled', type: 'upscaler' }),
      (err) => err instanceof ValidationError && /an upscaler is a \.safetensors or \.gguf file/.test(err.message),
    )
  })
  const server = new DiffusionServerManager()
  await assert.rejects(server.upscaleImage({ image: png(64), modelId: 'x2' }), ServerError)
  await onEachBackend(server, async (backend, info) => {
    const once = await server.upscaleImage({ image: png(64, [200, 30, 30]), modelId: 'x2' })
    assert.deepEqual([once.width, once.height, ...pngSize(once.image)], [128, 128, 128, 128])
    assert.ok(once.timeTaken > 0)
    assert.ok(
      (await server.getLogs(200)).some((l) => l.includes('esrgan model loaded with scale=2')),
      backend,
    )
    const twice = await server.upscaleImage({ image: png(48).toString('base64'), modelId: 'x2', repeats: 2 })
    assert.deepEqual(pngSize(twice.image), [192, 192])
    const upscale = (body) =>
      fetch(`http://127.0.0.1:${info.port}/v1/images/upscales`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      })
    const viaHttp = await upscale({ image: `data:image/png;base64,${png(32).toString('base64')}`, modelId: 'x2' })
    assert.equal(viaHttp.status, 200)
    const answer = await viaHttp.json()
    assert.deepEqual(
      [answer.width, answer.height, ...pngSize(Buffer.from(answer.data[0].b64_json, 'base64'))],
      [64, 64, 64, 64],
    )
    const refused = await upscale({ image: png(32).toString('base64'), modelId: 'nope' })
    assert.equal(refused.status, 400)
    assert.match((await refused.json()).error.message, /modelId "nope" is not installed/)
    for (const [config, pattern] of [
      [{ image: png(64), modelId: 'nope' }, /modelId "nope" is not installed/],
      [{ image: png(64), modelId: 'tiny-image' }, /modelId "tiny-image" is a diffusion model, not an upscaler/],
      [{ image: Buffer.from('GIF89a'), modelId: 'x2' }, /image is not a PNG, JPEG or WebP image/],
      [{ image: png(64), modelId: 'x2', repeats: 5 }, /repeats must be a whole number from 1 to 4/],
      [{ modelId: 'x2' }, /image is required/],
      [{ image: png(64), modelId: 'x2', scale: 4 }, /unknown field "scale"/],
    ]) {
      await assert.rejects(
        server.upscaleImage(config),
        (err) => err instanceof ValidationError && pattern.test(err.message),
      )
    }
    // A cancel stops sd-cli: four passes over a large image take long enough to be stopped.
    const controller = new AbortController()
    const long = server.upscaleImage({ image: png(256), modelId: 'x2', repeats: 4, signal: controller.signal })
    setTimeout(() => controller.abort(), 300)
    await assert.rejects(long, CancelledError)
  })
  assert.deepEqual(fs.readdirSync(path.join(dataDir, 'temp')), [])
})

test('bad requests and bad configs are typed errors', { skip }, async () => {
  await withTinySet()
  const server = new DiffusionServerManager()
  await assert.rejects(server.generateImage(SMALL), ServerError)
  await assert.rejects(server.start({ modelId: 'tiny-image', backend: 'sometimes' }), ValidationError)
  await assert.rejects(server.start({ modelId: 'tiny-image', prot: 1 }), ValidationError)
  // Every flag the library sets itself, in every spelling; flags it leaves alone pass.
  for (const flag of [
    '--output',
    '-p',
    '--prompt',
    '-n',
    '--negative-prompt',
    '--llm=other.gguf',
    '--taesd',
    '-W',
    '--cfg-scale',
    '-M',
  ]) {
    await assert.rejects(
      server.start({ modelId: 'tiny-image', extraArgs: [flag, 'x'] }),
      (err) => err instanceof ValidationError && err.message.includes(flag),
      flag,
    )
  }
  const taken = net.createServer()
  await new Promise((resolve) => taken.listen(0, '127.0.0.1', resolve))
  await assert.rejects(server.start({ modelId: 'tiny-image', port: taken.address().port }), PortInUseError)
  taken.close()
  assert.equal(server.getInfo().status, 'stopped')

  await server.start({ modelId: 'tiny-image', backend: 'one-shot', port: 'auto' })
  try {
    await assert.rejects(
      server.start({ modelId: 'tiny-image' }),
      (err) => err instanceof ServerError && err.code === 'SERVER_ALREADY_RUNNING',
    )
    await assert.rejects(server.generateImage({ prompt: '' }), ValidationError)
    await assert.rejects(server.generateImage({ ...SMALL, width: 70 }), /multiple of 8/)
    await assert.rejects(server.generateImage({ ...SMALL, onProgress: 3 }), ValidationError)
    await assert.rejects(server.generateImage({ ...SMALL, signal: 'stop' }), ValidationError)
    await assert.rejects(server.generateImage({ ...SMALL, signal: {} }), ValidationError)
    const controller = new AbortController()
    controller.abort()
    await assert.rejects(server.generateImage({ ...SMALL, signal: controller.signal }), CancelledError)
    // Aborted right after the call: the job is queued before generateImage returns, so it is found.
    const late = new AbortController()
    const pending = server.generateImage({ ...SMALL, signal: late.signal })
    late.abort()
    await assert.rejects(pending, CancelledError)
    assert.equal(server.cancelImageGeneration('no-such-job'), false)
  } finally {
    await server.stop()
  }
})

test('killing the Node parent with SIGKILL takes sd-server with it', { skip }, async () => {
  const dataDir = await withTinySet()
  const script = `
    const { diffusionServer, configure } = require(${JSON.stringify(ROOT)})
    configure({ dataDir: ${JSON.stringify(dataDir)} })
    diffusionServer.start({ modelId: 'tiny-image', backend: 'resident', port: 'auto', threads: 1 })
      .then(() => diffusionServer.generateImage(${JSON.stringify(SMALL)}))
      .then(() => console.log(diffusionServer.getInfo().pid))`
  const env = { ...process.env, GENAI_ELECTRON_SD_SERVER: real.sdServer }
  const parent = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'], env })
  const pid = Number(await new Promise((resolve) => parent.stdout.once('data', (d) => resolve(String(d).trim()))))
  assert.ok(pid > 0 && alive(pid))
  parent.kill('SIGKILL')
  const deadline = Date.now() + 1000
  // Polled against the deadline on purpose: the parent that could have told is dead, and
  // sd-server is not our child, so no event or exit status reaches this process.
  while (alive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25))
  assert.equal(alive(pid), false, `sd-server ${pid} still alive 1 s after its parent was killed`)
})

test('a prompt past the parser limit is a 400 before any backend runs; one at the limit draws', { skip }, async () => {
  await withTinySet()
  const server = new DiffusionServerManager()
  const { port } = await server.start({ modelId: 'tiny-image', backend: 'resident', port: 'auto', threads: 1 })
  const limit = { linux: 8192, win32: 1024 }[process.platform] ?? 512
  const text = (n) => 'a red cube on a wooden table '.repeat(2000).slice(0, n)
  const post = (body) =>
    fetch(`http://127.0.0.1:${port}/v1/images/generations`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    })
  try {
    // 26,160 bytes crashed the backend with signal 11 before the limit existed.
    for (const body of [
      { prompt: text(26_160) },
      { prompt: text(limit + 1) },
      { prompt: 'p', negativePrompt: text(limit + 1) },
    ]) {
      const res = await post({ ...body, width: 64, height: 64, steps: 1, cfgScale: 1 })
      assert.equal(res.status, 400)
      const error = await res.json()
      assert.equal(error.error.code, 'INVALID_REQUEST')
      assert.equal(error.error.reason, 'INVALID_ARGUMENT', "the library's own code")
      assert.match(error.error.message, new RegExp(`at most ${limit} are allowed`))
    }
    await assert.rejects(server.generateImage({ ...SMALL, prompt: text(limit + 1) }), ValidationError)
    assert.equal(server.getInfo().pid, null, 'sd-server was never started')
    const res = await post({ prompt: text(limit), width: 64, height: 64, steps: 1, cfgScale: 1, seed: 1 })
    assert.equal(res.status, 200, await res.clone().text())
    assert.deepEqual(pngSize(Buffer.from((await res.json()).image, 'base64')), [64, 64])
  } finally {
    await server.stop()
  }
})

test('requests the HTTP parser refuses still get JSON errors', { skip }, async () => {
  await withTinySet()
  const server = new DiffusionServerManager()
  const { port } = await server.start({ modelId: 'tiny-image', backend: 'one-shot', port: 'auto' })
  const raw = (request) =>
    new Promise((resolve, reject) => {
      const socket = net.connect(port, '127.0.0.1', () => socket.end(request))
      let answer = ''
      socket.on('data', (d) => (answer += d))
      socket.on('end', () => resolve(answer))
      socket.on('error', reject)
    })
  try {
    for (const [request, status, code] of [
      ['NONSENSE\r\n\r\n', 400, 'INVALID_REQUEST'],
      ['POST /v1/images/generations HTTP/1.1\r\ncontent-length: -1\r\n\r\n', 400, 'INVALID_REQUEST'],
      [`GET /${'a'.repeat(100_000)} HTTP/1.1\r\n\r\n`, 414, 'URI_TOO_LONG'],
      [`GET /health HTTP/1.1\r\n${'x-flood: 1\r\n'.repeat(200)}\r\n`, 431, 'HEADERS_TOO_LARGE'],
    ]) {
      const answer = await raw(request)
      const [head, body] = answer.split('\r\n\r\n')
      assert.match(head, new RegExp(`^HTTP/1.1 ${status} `), answer)
      assert.match(head, /content-type: application\/json/)
      assert.equal(JSON.parse(body).error.code, code)
    }
    assert.equal(await server.isHealthy(), true)
  } finally {
    await server.stop()
  }
})
