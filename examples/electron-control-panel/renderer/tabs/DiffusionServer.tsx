import { useState } from 'react'
import type { DiffusionBackend, ImageGenerationProgress, ImageLora, ImageSampler } from 'genai-electron'
import { api } from '../api'
import { Card, ErrorBox, Facts, Field, ModelSelect, LogView, ProgressBar, StatusBadge, numberOr, useAction, useEvent, usePoll } from '../components'
import { ImagePicker, LoraPicker, MaskPainter, Thumbnails, imageSize } from './ImageInputs'
import { formatMs, formatTime } from '../format'
import type { ImageRequest, ImageResult, UpscaleResult } from '../../shared/api'
import type { TabProps } from '../App'

const SAMPLERS: ImageSampler[] = ['euler_a', 'euler', 'heun', 'dpm2', 'dpm++2s_a', 'dpm++2m', 'dpm++2mv2', 'lcm']

/** Where the model's parts run: the library's `gpuLayers`, `clipOnCpu` and `vaeOnCpu`. */
const PLACEMENTS = {
  gpu: { label: 'GPU where there is one', config: {} },
  encoders: { label: 'GPU, text encoder and VAE on the CPU', config: { clipOnCpu: true, vaeOnCpu: true } },
  cpu: { label: 'CPU only', config: { gpuLayers: 0 } },
} as const
type Placement = keyof typeof PLACEMENTS

const STAGES: Record<ImageGenerationProgress['stage'], string> = {
  loading: 'Loading the model',
  diffusion: 'Denoising',
  decoding: 'Decoding the image',
}

export default function DiffusionServerTab({ active }: TabProps) {
  const models = usePoll(() => api.models.list('diffusion'), 3000, active)
  const loraModels = usePoll(() => api.models.list('lora'), 3000, active)
  const upscalers = usePoll(() => api.models.list('upscaler'), 3000, active)
  const status = usePoll(() => api.diffusion.getStatus(), 1000, active)
  const logs = usePoll(() => api.diffusion.getLogs(100), 2000, active)
  const [modelId, setModelId] = useState('')
  const [backend, setBackend] = useState<DiffusionBackend | 'auto'>('auto')
  const [threads, setThreads] = useState('')
  const [placement, setPlacement] = useState<Placement>('gpu')
  const server = useAction()

  const [form, setForm] = useState({ prompt: 'a lighthouse on a cliff at sunset', negativePrompt: '', width: '512', height: '512', steps: '20', cfgScale: '', seed: '', count: '1', sampler: '' })
  const [orchestrated, setOrchestrated] = useState(false)
  // Image-to-image: the picture started from (a data URL), its size, what of it is redrawn.
  const [init, setInit] = useState<{ url: string; width: number; height: number } | null>(null)
  const [mask, setMask] = useState<string | null>(null)
  const [strength, setStrength] = useState('0.75')
  const [references, setReferences] = useState<string[]>([])
  const [loras, setLoras] = useState<ImageLora[]>([])
  const [upscaled, setUpscaled] = useState<UpscaleResult | null>(null)
  const [progress, setProgress] = useState<ImageGenerationProgress | null>(null)
  const [result, setResult] = useState<ImageResult | null>(null)
  const generation = useAction()
  const upscaler = upscalers.value?.[0]
  const upscale = (image: string) =>
    generation.run(async () => {
      setUpscaled(null)
      if (upscaler) setUpscaled(await api.diffusion.upscaleImage({ image, modelId: upscaler.id }))
    })
  const startFrom = (url: string) => generation.run(async () => setInit({ url, ...(await imageSize(url)) }))
  useEvent('diffusion:progress', (event) => setProgress(event))

  const info = status.value
  const chosen = modelId || models.value?.[0]?.id || ''
  const set = (key: keyof typeof form) => (e: { target: { value: string } }) => setForm({ ...form, [key]: e.target.value })

  const start = () =>
    server.run(async () => (await api.diffusion.start({ modelId: chosen, backend, port: 'auto', threads: numberOr(threads), ...PLACEMENTS[placement].config }), await status.refresh()))
  const stop = () => server.run(async () => (await api.diffusion.stop(), await status.refresh()))
  const generate = () =>
    generation.run(async () => {
      setProgress(null)
      setResult(null)
      const config: ImageRequest = {
        prompt: form.prompt,
        ...(form.negativePrompt ? { negativePrompt: form.negativePrompt } : {}),
        // Started from an image, the image made has its size.
        ...(init ? { initImage: init.url, strength: numberOr(strength), ...(mask ? { mask } : {}) } : { width: numberOr(form.width), height: numberOr(form.height) }),
        ...(references.length ? { referenceImages: references } : {}),
        ...(loras.length ? { loras } : {}),
        steps: numberOr(form.steps),
        cfgScale: numberOr(form.cfgScale),
        seed: numberOr(form.seed),
        count: numberOr(form.count),
        ...(form.sampler ? { sampler: form.sampler as ImageSampler } : {}),
      }
      setResult(orchestrated ? await api.resources.orchestrateGeneration(config) : await api.diffusion.generateImage(config))
    })

  const percent = progress ? progress.percentage : null
  return (
    <div className="tab-body grid">
      <Card title="Diffusion server (stable-diffusion.cpp)" testId="diffusion-config">
        <div className="form-row">
          <ModelSelect models={models.value} value={chosen} onChange={setModelId} empty="no diffusion model downloaded" testId="diffusion-model" />
          <Field label="Backend">
            <select data-testid="diffusion-backend" value={backend} onChange={(e) => setBackend(e.target.value as DiffusionBackend | 'auto')}>
              <option value="auto">auto</option>
              <option value="one-shot">one-shot</option>
              <option value="resident">resident</option>
            </select>
          </Field>
          <Field label="Threads">
            <input data-testid="diffusion-threads" value={threads} placeholder="auto" onChange={(e) => setThreads(e.target.value)} />
          </Field>
          <Field label="Runs on">
            <select data-testid="diffusion-placement" value={placement} onChange={(e) => setPlacement(e.target.value as Placement)}>
              {Object.entries(PLACEMENTS).map(([value, { label }]) => (
                <option key={value} value={value}>
                  {label}
                </option>
              ))}
            </select>
          </Field>
        </div>
        <p className="muted">One-shot runs sd-cli for each image and holds no memory between images; resident keeps sd-server and its model loaded. Auto picks for this machine.</p>
        <div className="buttons">
          <button className="primary" data-testid="diffusion-start" disabled={server.busy || info?.status === 'running' || !chosen} onClick={start}>
            Start
          </button>
          <button data-testid="diffusion-stop" disabled={server.busy || !info || info.status === 'stopped'} onClick={stop}>
            Stop
          </button>
        </div>
        <ErrorBox error={server.error} onClose={server.clearError} />
        {info && (
          <Facts
            rows={[
              ['Status', <StatusBadge status={info.status} testId="diffusion-status" />],
              ['Health', <StatusBadge status={info.health} />],
              ['Backend', info.backend ?? '—'],
              ['Port', info.port ? `127.0.0.1:${info.port}` : '—'],
              ['Busy', info.busy ? `yes (${info.queued} queued)` : 'no'],
              ['Started', info.startedAt ? formatTime(info.startedAt) : '—'],
            ]}
          />
        )}
        {info?.error && <ErrorBox error={{ code: 'SERVER_ERROR', message: info.error }} />}
      </Card>

      <Card title="Generate an image" testId="diffusion-generate">
        <Field label="Prompt">
          <textarea data-testid="image-prompt" rows={2} value={form.prompt} onChange={set('prompt')} />
        </Field>
        <Field label="Negative prompt">
          <input value={form.negativePrompt} onChange={set('negativePrompt')} />
        </Field>
        <div className="form-row">
          <Field label="Width">
            <input data-testid="image-width" value={init ? String(init.width) : form.width} disabled={!!init} onChange={set('width')} />
          </Field>
          <Field label="Height">
            <input data-testid="image-height" value={init ? String(init.height) : form.height} disabled={!!init} onChange={set('height')} />
          </Field>
          <Field label="Steps">
            <input data-testid="image-steps" value={form.steps} onChange={set('steps')} />
          </Field>
          <Field label="CFG scale">
            <input data-testid="image-cfg" value={form.cfgScale} placeholder="model's default" onChange={set('cfgScale')} />
          </Field>
        </div>
        <div className="form-row">
          <Field label="Sampler">
            <select value={form.sampler} onChange={set('sampler')}>
              <option value="">model's default</option>
              {SAMPLERS.map((sampler) => (
                <option key={sampler}>{sampler}</option>
              ))}
            </select>
          </Field>
          <Field label="Seed">
            <input data-testid="image-seed" value={form.seed} placeholder="random" onChange={set('seed')} />
          </Field>
          <Field label="Images">
            <input data-testid="image-count" value={form.count} onChange={set('count')} />
          </Field>
        </div>
        <h3>Start from an image</h3>
        {!init && <ImagePicker label="An image to redraw (PNG, JPEG or WebP), or Edit under an image made below" onPick={([url]) => startFrom(url)} testId="init-image-input" />}
        {init && (
          <div data-testid="init-image">
            <MaskPainter image={init.url} size={init} onMask={setMask} />
            <div className="form-row">
              <Field label="Strength (0 keeps it, 1 ignores it)">
                <input data-testid="image-strength" value={strength} onChange={(e) => setStrength(e.target.value)} />
              </Field>
              <button data-testid="init-image-remove" onClick={() => setInit(null)}>
                Start from noise again
              </button>
            </div>
          </div>
        )}
        <h3>Reference images</h3>
        <p className="muted">Shown to the model beside the prompt: edit models (FLUX.1 Kontext, FLUX.2, Qwen-Image-Edit) compose from them.</p>
        <ImagePicker label="Add references" multiple onPick={(urls) => setReferences([...references, ...urls].slice(0, 8))} testId="reference-input" />
        <Thumbnails images={references} onRemove={(index) => setReferences(references.filter((_, i) => i !== index))} />
        <h3>LoRAs</h3>
        <LoraPicker loras={loraModels.value} chosen={loras} onChange={setLoras} />
        <label className="check">
          <input type="checkbox" checked={orchestrated} onChange={(e) => setOrchestrated(e.target.checked)} /> call the
          orchestrator directly (every image waits for its turn there anyway, and the LLM is offloaded when both do not fit)
        </label>
        <div className="buttons">
          <button className="primary" data-testid="image-generate" disabled={generation.busy || info?.status !== 'running'} onClick={generate}>
            Generate
          </button>
          <button data-testid="image-cancel" disabled={!generation.busy} onClick={() => void api.diffusion.cancel()}>
            Cancel
          </button>
        </div>
        {generation.busy && (
          <div className="generation-progress" data-testid="image-progress" data-stage={progress?.stage ?? ''} data-step={progress?.currentStep ?? 0} data-total={progress?.totalSteps ?? 0}>
            <div className="muted">
              {progress
                ? `${STAGES[progress.stage]}${progress.stage === 'diffusion' ? ` · step ${progress.currentStep} of ${progress.totalSteps}` : ''}${progress.totalImages > 1 ? ` · image ${progress.currentImage} of ${progress.totalImages}` : ''}`
                : 'Waiting for the backend…'}
            </div>
            <ProgressBar value={percent} label={percent == null ? undefined : `${Math.round(percent)}%`} />
          </div>
        )}
        <ErrorBox error={generation.error} onClose={generation.clearError} />
      </Card>

      <Card title="Images" testId="diffusion-images">
        {!result && <p className="muted">Generated images appear here.</p>}
        {result && (
          <>
            <div className="images">
              {result.imageDataUrls.map((url, index) => (
                <figure key={index}>
                  <img src={url} alt={`${form.prompt} (seed ${result.seeds[index]})`} data-testid="generated-image" width={Math.min(result.width, 384)} />
                  <figcaption>
                    seed {result.seeds[index]} ·{' '}
                    <button className="link" data-testid="image-edit" onClick={() => startFrom(url)}>
                      Edit
                    </button>
                    {upscaler && (
                      <>
                        {' · '}
                        <button className="link" data-testid="image-upscale" disabled={generation.busy} onClick={() => upscale(url)} title={`with ${upscaler.name}`}>
                          Upscale
                        </button>
                      </>
                    )}
                  </figcaption>
                </figure>
              ))}
            </div>
            <p className="muted">
              {result.width}×{result.height} · {formatMs(result.timeTaken)}
            </p>
          </>
        )}
        {upscaled && (
          <figure className="upscaled" data-testid="upscaled">
            <img src={upscaled.imageDataUrl} alt="the upscaled image" data-testid="upscaled-image" width={Math.min(upscaled.width, 384)} />
            <figcaption>
              upscaled with {upscaler?.name ?? 'the upscaler'}: {upscaled.width}×{upscaled.height} · {formatMs(upscaled.timeTaken)}
            </figcaption>
          </figure>
        )}
      </Card>

      <Card title="Logs" testId="diffusion-logs" actions={<button onClick={() => server.run(async () => (await api.diffusion.clearLogs(), await logs.refresh()))}>Clear</button>}>
        <LogView entries={logs.value ?? []} />
      </Card>
    </div>
  )
}
