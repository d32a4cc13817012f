import { useEffect, useRef, useState } from 'react'
import type { ImageLora, ModelInfo } from 'genai-electron'
import { Field } from '../components'

/** A picked file as a data URL, which the library takes as an image as it is. */
function readDataUrl(file: File): Promise<string> {
  return new Promise((resolve, reject) => {
    const reader = new FileReader()
    reader.onload = () => resolve(String(reader.result))
    reader.onerror = () => reject(reader.error)
    reader.readAsDataURL(file)
  })
}

/** An image's natural size. */
export function imageSize(url: string): Promise<{ width: number; height: number }> {
  return new Promise((resolve, reject) => {
    const image = new Image()
    image.onload = () => resolve({ width: image.naturalWidth, height: image.naturalHeight })
    image.onerror = () => reject(new Error('the file is not an image this browser can show'))
    image.src = url
  })
}

const ACCEPT = 'image/png,image/jpeg,image/webp'

/** A file input for PNG, JPEG or WebP images, read as data URLs. */
export function ImagePicker({ label, multiple, onPick, testId }: { label: string; multiple?: boolean; onPick: (urls: string[]) => void; testId: string }) {
  return (
    <label className="picker">
      <span>{label}</span>
      <input
        type="file"
        accept={ACCEPT}
        multiple={multiple}
        data-testid={testId}
        onChange={async (e) => {
          const files = [...(e.target.files ?? [])]
          e.target.value = ''
          if (files.length) onPick(await Promise.all(files.map(readDataUrl)))
        }}
      />
    </label>
  )
}

/**
 * The init image with a brush over it: what is painted is redrawn (the mask's white), the rest
 * kept. The mask is a black-and-white PNG of the image's own size, as the library takes it;
 * `null` while nothing is painted.
 */
export function MaskPainter({ image, size, onMask }: { image: string; size: { width: number; height: number }; onMask: (mask: string | null) => void }) {
  const overlay = useRef<HTMLCanvasElement>(null)
  const mask = useRef<HTMLCanvasElement | null>(null)
  const painting = useRef(false)
  const [brush, setBrush] = useState(Math.max(4, Math.round(size.width / 12)))
  const [painted, setPainted] = useState(false)

  const clear = () => {
    const m = document.createElement('canvas')
    m.width = size.width
    m.height = size.height
    const context = m.getContext('2d')
    if (context) {
      context.fillStyle = 'black'
      context.fillRect(0, 0, m.width, m.height)
    }
    mask.current = m
    overlay.current?.getContext('2d')?.clearRect(0, 0, size.width, size.height)
    setPainted(false)
    onMask(null)
  }
  // A new image starts with nothing masked.
  useEffect(clear, [image, size.width, size.height])

  const paint = (e: React.PointerEvent<HTMLCanvasElement>) => {
    const canvas = overlay.current
    if (!painting.current || !canvas || !mask.current) return
    const box = canvas.getBoundingClientRect()
    const x = ((e.clientX - box.left) / box.width) * size.width
    const y = ((e.clientY - box.top) / box.height) * size.height
    for (const [target, color] of [
      [mask.current, 'white'],
      [canvas, 'rgba(239, 68, 68, 0.55)'],
    ] as const) {
      const context = target.getContext('2d')
      if (!context) continue
      context.fillStyle = color
      context.beginPath()
      context.arc(x, y, brush / 2, 0, Math.PI * 2)
      context.fill()
    }
    setPainted(true)
  }
  const finish = () => {
    if (!painting.current) return
    painting.current = false
    if (mask.current) onMask(mask.current.toDataURL('image/png'))
  }
  // Small images are shown larger, to be painted on; large ones fit the card.
  const shown = Math.max(192, Math.min(256, size.width))

  return (
    <div className="mask-painter">
      <div className="mask-stack" style={{ width: shown, height: (shown * size.height) / size.width }}>
        <img src={image} alt="the init image" />
        <canvas
          ref={overlay}
          width={size.width}
          height={size.height}
          data-testid="mask-canvas"
          onPointerDown={(e) => {
            painting.current = true
            e.currentTarget.setPointerCapture(e.pointerId)
            paint(e)
          }}
          onPointerMove={paint}
          onPointerUp={finish}
          onPointerLeave={finish}
        />
      </div>
      <div className="mask-tools">
        <Field label={`Brush ${brush} px`}>
          <input type="range" min={2} max={Math.max(8, Math.round(size.width / 3))} value={brush} onChange={(e) => setBrush(Number(e.target.value))} />
        </Field>
        <button data-testid="mask-clear" disabled={!painted} onClick={clear}>
          Clear mask
        </button>
        <p className="muted">{painted ? 'The red part is redrawn, the rest kept (inpainting).' : 'Paint over what to redraw; unpainted, the whole image is redrawn by strength.'}</p>
      </div>
    </div>
  )
}

/** Thumbnails of the reference images, each with a button that takes it out. */
export function Thumbnails({ images, onRemove }: { images: string[]; onRemove: (index: number) => void }) {
  return (
    <div className="thumbnails" data-testid="reference-images">
      {images.map((url, index) => (
        <figure key={url.slice(-64) + index}>
          <img src={url} alt={`reference ${index + 1}`} />
          <button className="link" onClick={() => onRemove(index)} aria-label={`remove reference ${index + 1}`}>
            remove
          </button>
        </figure>
      ))}
    </div>
  )
}

/** Each installed LoRA with a switch and a weight; `chosen` is what the request's `loras` gets. */
export function LoraPicker({ loras, chosen, onChange }: { loras: ModelInfo[] | null; chosen: ImageLora[]; onChange: (chosen: ImageLora[]) => void }) {
  if (!loras?.length) return <p className="muted">No LoRA installed: download one in the Models tab (type LoRA).</p>
  const weightOf = (id: string) => chosen.find((l) => l.modelId === id)?.weight
  const toggle = (id: string, on: boolean) => onChange(on ? [...chosen, { modelId: id, weight: 1 }] : chosen.filter((l) => l.modelId !== id))
  const reweigh = (id: string, weight: number) => onChange(chosen.map((l) => (l.modelId === id ? { ...l, weight } : l)))
  return (
    <div className="loras" data-testid="lora-picker">
      {loras.map((lora) => {
        const weight = weightOf(lora.id)
        return (
          <div className="lora" key={lora.id}>
            <label className="check">
              <input type="checkbox" data-testid={`lora-${lora.id}`} checked={weight !== undefined} onChange={(e) => toggle(lora.id, e.target.checked)} /> {lora.name}
            </label>
            <input
              type="range"
              min={-2}
              max={2}
              step={0.05}
              disabled={weight === undefined}
              value={weight ?? 1}
              aria-label={`${lora.name} weight`}
              data-testid={`lora-${lora.id}-weight`}
              onChange={(e) => reweigh(lora.id, Number(e.target.value))}
            />
            <span className="lora-weight">{(weight ?? 1).toFixed(2)}</span>
          </div>
        )
      })}
    </div>
  )
}
