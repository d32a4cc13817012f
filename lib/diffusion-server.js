'use strict'

const native = require('./native')
const { callAsync, plain } = native
const { ServerManager, NATIVE, runCalibration } = require('./server-manager')
const { syncElectronUserData } = require('./config')
const { CancelledError, ValidationError } = require('./errors')
const { checkCallbacks } = require('./callbacks')

let instance = null

/** Package-private: a ResourceOrchestrator announces that it serves this server, or (`false`) no longer does. */
const SERVED_BY = Symbol('servedBy')

class DiffusionServerManager extends ServerManager {
  /** The orchestrators constructed over this server, newest last (held by the app, not here). */
  #orchestrators = []
  /** The shared instance's own orchestrator, kept alive here. */
  #defaultOrchestrator = null

  constructor() {
    super((onEvent) => new native.binding.NativeDiffusionServer(onEvent))
  }

  /**
   * The shared instance, also exported as `diffusionServer`. As in genai-electron 0.26, it comes
   * with a ResourceOrchestrator over the shared llamaServer, so that every image it makes,
   * whatever door it comes through (HTTP, `generateImage`), offloads the LLM when the two do not
   * fit; an orchestrator the app constructs over it takes over while the app holds it.
   */
  static getInstance() {
    if (!instance) {
      instance = new DiffusionServerManager()
      const { ResourceOrchestrator } = require('./orchestrator')
      instance.#defaultOrchestrator = new ResourceOrchestrator(undefined, undefined, instance)
    }
    return instance
  }

  [SERVED_BY](orchestrator, serving = true) {
    this.#orchestrators = this.#orchestrators.filter((ref) => ref.deref() && ref.deref() !== orchestrator)
    if (serving) this.#orchestrators.push(new WeakRef(orchestrator))
  }

  /**
   * The ResourceOrchestrator that decides when this server's images run: the newest one
   * constructed over it that the app still holds and has not disposed, else the shared
   * instance's own; `undefined` for an instance no orchestrator serves.
   */
  getOrchestrator() {
    for (const ref of [...this.#orchestrators].reverse()) {
      const orchestrator = ref.deref()
      if (orchestrator) return orchestrator
    }
    return this.#defaultOrchestrator ?? undefined
  }

  async start(config) {
    syncElectronUserData()
    // Like a Node HTTP server, a listening diffusion server keeps the process alive (its
    // `state` events hold and release Node).
    return callAsync(() => this[NATIVE].start(plain('config', config)))
  }

  async stop() {
    await callAsync(() => this[NATIVE].stop())
  }

  async generateImage(config) {
    return runImage(
      this,
      config,
      (request, id) => this[NATIVE].generateImage(request, id),
      (id) => this[NATIVE].cancel(id),
    )
  }

  /**
   * Makes images of each size with each placement in an sd-server of its own (or one-shot
   * sd-cli runs, with `backend: 'one-shot'`) and measures them; the report is stored beside the
   * model (see docs/API.md).
   */
  calibrate(config) {
    return runCalibration(
      this,
      config,
      '{ modelId, sizes: [{ width, height }], generation: { steps, cfgScale, sampler } }',
    )
  }

  /** The id of the job whose turn it is (`getInfo().activeGenerationId`), or `undefined`. */
  getActiveGenerationId() {
    return this.getInfo().activeGenerationId ?? undefined
  }

  /** Cancels the job `id` (an async HTTP job's id), or the image being made now. */
  cancelImageGeneration(id) {
    return this[NATIVE].cancel(id ?? null)
  }

  /**
   * Upscales `image` (a PNG, JPEG or WebP Buffer) with the installed upscaler `modelId`,
   * `repeats` times (1-4); aborting `signal` stops it. Resolves with `{ image, width, height,
   * timeTaken }`, the image a PNG Buffer.
   */
  async upscaleImage(config) {
    if (config === null || typeof config !== 'object' || Array.isArray(config)) {
      throw new ValidationError('upscaleImage needs a config object', { suggestion: 'Pass { image, modelId }' })
    }
    const { signal, ...fields } = config
    checkCallbacks({ signal }, '')
    if (signal?.aborted) throw new CancelledError('upscaling was cancelled')
    const id = `upscale_${require('node:crypto').randomUUID()}`
    const abort = () => this[NATIVE].cancelUpscale(id)
    signal?.addEventListener('abort', abort, { once: true })
    try {
      const request = withImagesEncoded(fields, ['image'])
      return await callAsync(() => this[NATIVE].upscaleImage(plain('config', request), id))
    } finally {
      signal?.removeEventListener('abort', abort)
    }
  }
}

/**
 * An image request as the public API takes it (`onProgress`, `signal`, the rest for the native
 * side): `start(request, id)` queues it, `cancel(id)` ends it; progress comes from `progressSource`,
 * the diffusion manager whose events carry the job's id. Resolves with `ImageGenerationResult`.
 */
async function runImage(progressSource, config, start, cancel) {
  if (config === null || typeof config !== 'object') {
    throw new ValidationError('generateImage needs a config object', { suggestion: 'Pass { prompt, ... }' })
  }
  const { onProgress, signal, ...fields } = config
  const request = withImagesEncoded(fields)
  checkCallbacks(config, '(currentStep, totalSteps, stage, percentage, progress) => {}')
  if (signal?.aborted) throw new CancelledError('image generation was cancelled')
  // Required here rather than with the module: loading the library does not load node:crypto.
  const id = `img_${require('node:crypto').randomUUID()}`
  const progress = (event) => {
    // genai-electron 0.26's four arguments, then the whole progress (image of the batch too).
    if (event.id === id) onProgress(event.currentStep, event.totalSteps, event.stage, event.percentage, event)
  }
  const abort = () => cancel(id)
  if (onProgress) progressSource.on('progress', progress)
  signal?.addEventListener('abort', abort, { once: true })
  try {
    plain('config', request)
    const batch = await callAsync(() => start(request, id))
    return {
      image: batch.images[0],
      images: batch.images,
      format: 'png',
      timeTaken: Math.round(batch.timeTaken),
      backendTime: Math.round(batch.backendTime),
      seed: batch.seeds[0],
      seeds: batch.seeds,
      width: batch.width,
      height: batch.height,
    }
  } finally {
    if (onProgress) progressSource.off('progress', progress)
    signal?.removeEventListener('abort', abort)
  }
}

/** The fields of an image request that carry an image. */
const IMAGE_FIELDS = ['initImage', 'mask', 'referenceImages']

/**
 * `request` with its images (a Buffer, a Uint8Array) as base64, the form the addon reads (and
 * JSON carries); a string is passed as it is (base64 or a data URL).
 */
function withImagesEncoded(request, fields = IMAGE_FIELDS) {
  const base64 = (image) =>
    image instanceof Uint8Array
      ? Buffer.from(image.buffer, image.byteOffset, image.byteLength).toString('base64')
      : image
  const encoded = { ...request }
  for (const field of fields) {
    const value = request[field]
    if (value !== undefined) encoded[field] = Array.isArray(value) ? value.map(base64) : base64(value)
  }
  return encoded
}

module.exports = { DiffusionServerManager, runImage, SERVED_BY }
