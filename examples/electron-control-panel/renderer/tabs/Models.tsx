import { useState } from 'react'
import type { ComponentRole, DownloadProgressEvent, ModelType } from 'genai-electron'
import { api } from '../api'
import { Card, ErrorBox, Field, ProgressBar, useAction, useEvent, usePoll } from '../components'
import { formatBytes, formatMs } from '../format'
import type { DownloadRequest } from '../../shared/api'
import type { TabProps } from '../App'

/** The extra files each type takes, and what they are for. */
const ROLES: Partial<Record<ModelType, { roles: ComponentRole[]; about: string }>> = {
  llm: { roles: ['mmproj', 'draft'], about: 'A multimodal projector (mmproj) for images in chats, or a small draft model of the same vocabulary for faster answers.' },
  diffusion: { roles: ['llm', 'clip_l', 'clip_g', 't5xxl', 'llm_vision', 'vae', 'taesd'], about: 'Text encoders, VAE or TAESD files that the diffusion model needs beside it.' },
}

type Source = { source: 'url' | 'huggingface'; url: string; repo: string; file: string }
type Component = Source & { role: ComponentRole }
type Download = { request: DownloadRequest; progress: DownloadProgressEvent | null; error?: unknown }

const emptySource: Source = { source: 'url', url: '', repo: '', file: '' }

/** The source fields the library takes: a URL, or a Hugging Face repository and file. */
const sourceFields = ({ source, url, repo, file }: Source) => (source === 'url' ? { source, url: url.trim() } : { source, repo: repo.trim(), file: file.trim() })

function SourceInputs({ value, onChange, prefix }: { value: Source; onChange: (next: Source) => void; prefix: string }) {
  return (
    <>
      <Field label="Source">
        <select value={value.source} onChange={(e) => onChange({ ...value, source: e.target.value as Source['source'] })}>
          <option value="url">URL</option>
          <option value="huggingface">Hugging Face</option>
        </select>
      </Field>
      {value.source === 'url' ? (
        <Field label="URL">
          <input data-testid={`${prefix}-url`} value={value.url} placeholder="https://…/model.gguf" onChange={(e) => onChange({ ...value, url: e.target.value })} />
        </Field>
      ) : (
        <>
          <Field label="Repository">
            <input value={value.repo} placeholder="owner/name" onChange={(e) => onChange({ ...value, repo: e.target.value })} />
          </Field>
          <Field label="File">
            <input value={value.file} placeholder="model-Q4_K_M.gguf" onChange={(e) => onChange({ ...value, file: e.target.value })} />
          </Field>
        </>
      )}
    </>
  )
}

export default function ModelsTab({ active }: TabProps) {
  const [type, setType] = useState<ModelType>('llm')
  const [name, setName] = useState('')
  const [checksum, setChecksum] = useState('')
  const [main, setMain] = useState<Source>(emptySource)
  const [components, setComponents] = useState<Component[]>([])
  const [downloads, setDownloads] = useState<Record<string, Download>>({})
  const models = usePoll(() => api.models.list(), 3000, active)
  const storage = usePoll(() => api.models.storage(), 3000, active)
  const action = useAction()
  const roles = ROLES[type]
  const chooseType = (next: ModelType) => {
    setType(next)
    // A component of one type is no role of another's.
    setComponents([])
  }

  useEvent('models:progress', (progress) => {
    setDownloads((all) => (all[progress.downloadId] ? { ...all, [progress.downloadId]: { ...all[progress.downloadId], progress } } : all))
  })

  async function download() {
    const request: DownloadRequest = {
      name: name.trim(),
      type,
      ...sourceFields(main),
      ...(checksum.trim() ? { checksum: checksum.trim() } : {}),
      ...(ROLES[type] && components.length ? { components: components.map((c) => ({ role: c.role, ...sourceFields(c) })) } : {}),
      downloadId: crypto.randomUUID(),
    }
    setDownloads((all) => ({ ...all, [request.downloadId]: { request, progress: null } }))
    try {
      await api.models.download(request)
      setDownloads(({ [request.downloadId]: _done, ...rest }) => rest)
      await Promise.all([models.refresh(), storage.refresh()])
    } catch (error) {
      setDownloads((all) => ({ ...all, [request.downloadId]: { ...all[request.downloadId], error } }))
    }
  }

  const dismiss = (id: string) => setDownloads(({ [id]: _gone, ...rest }) => rest)

  return (
    <div className="tab-body grid">
      <Card title="Download a model" testId="download-form">
        <div className="form-row">
          <Field label="Type">
            <select data-testid="download-type" value={type} onChange={(e) => chooseType(e.target.value as ModelType)}>
              <option value="llm">LLM (chat)</option>
              <option value="diffusion">Diffusion (images)</option>
              <option value="lora">LoRA (for diffusion models)</option>
              <option value="upscaler">Upscaler (ESRGAN)</option>
            </select>
          </Field>
          <Field label="Name">
            <input data-testid="download-name" value={name} placeholder="My model" onChange={(e) => setName(e.target.value)} />
          </Field>
        </div>
        <div className="form-row">
          <SourceInputs value={main} onChange={setMain} prefix="download" />
        </div>
        <div className="form-row">
          <Field label="Checksum (optional)">
            <input value={checksum} placeholder="sha256:…" onChange={(e) => setChecksum(e.target.value)} />
          </Field>
        </div>
        {roles && (
          <div className="components">
            <h3>Components</h3>
            <p className="muted">{roles.about}</p>
            {components.map((component, index) => (
              <div className="form-row" key={index}>
                <Field label="Role">
                  <select
                    data-testid={`component-role-${index}`}
                    value={component.role}
                    onChange={(e) => setComponents(components.map((c, i) => (i === index ? { ...c, role: e.target.value as ComponentRole } : c)))}
                  >
                    {roles.roles.map((role) => (
                      <option key={role}>{role}</option>
                    ))}
                  </select>
                </Field>
                <SourceInputs value={component} prefix={`component-${index}`} onChange={(next) => setComponents(components.map((c, i) => (i === index ? { ...next, role: c.role } : c)))} />
                <button className="link" onClick={() => setComponents(components.filter((_, i) => i !== index))}>
                  remove
                </button>
              </div>
            ))}
            <button data-testid="add-component" onClick={() => setComponents([...components, { ...emptySource, role: roles.roles[0] }])}>
              Add component
            </button>
          </div>
        )}
        <div className="buttons">
          <button className="primary" data-testid="download-start" onClick={download}>
            Download
          </button>
        </div>
      </Card>

      <Card title="Downloads" testId="downloads">
        {Object.keys(downloads).length === 0 && <p className="muted">No download running.</p>}
        {Object.entries(downloads).map(([id, { request, progress, error }]) => (
          <div className="download" key={id} data-testid="download-row">
            <div className="download-title">
              <strong>{request.name || '(no name)'}</strong>
              <span className="muted">{error ? 'failed' : progress?.file ?? 'starting…'}</span>
            </div>
            {error ? (
              <ErrorBox error={error} onClose={() => dismiss(id)} />
            ) : (
              <>
                <ProgressBar
                  testId="download-progress"
                  value={progress?.percentage ?? null}
                  label={progress ? `${formatBytes(progress.downloaded)} of ${formatBytes(progress.total)} · ${formatBytes(progress.speed)}/s · ${formatMs(progress.estimatedTimeRemaining)} left` : 'connecting…'}
                />
                <button onClick={() => action.run(() => api.models.cancelDownload(id))}>Cancel</button>
              </>
            )}
          </div>
        ))}
      </Card>

      <Card title="Installed models" testId="models-list" actions={storage.value && <span className="muted" data-testid="storage">{formatBytes(storage.value.total)} on disk ({formatBytes(storage.value.llm)} LLM, {formatBytes(storage.value.diffusion)} diffusion)</span>}>
        <ErrorBox error={action.error ?? models.error} onClose={action.clearError} />
        {models.value?.length === 0 && <p className="muted">No models yet: download one above.</p>}
        {models.value && models.value.length > 0 && (
          <table>
            <thead>
              <tr>
                <th>Name</th>
                <th>Type</th>
                <th>Size</th>
                <th>Details</th>
                <th />
              </tr>
            </thead>
            <tbody>
              {models.value.map((model) => (
                <tr key={model.id} data-testid={`model-${model.id}`}>
                  <td>
                    <strong>{model.name}</strong>
                    <div className="muted">{model.id}</div>
                  </td>
                  <td>{model.type}</td>
                  <td>{formatBytes(model.size)}</td>
                  <td className="muted">
                    {model.ggufMetadata?.architecture && <div>{model.ggufMetadata.architecture}</div>}
                    {model.components && <div>components: {Object.keys(model.components).join(', ')}</div>}
                    {model.capabilities && <div data-testid={`capabilities-${model.id}`}>can: {model.capabilities.join(', ')}</div>}
                  </td>
                  <td>
                    <button className="danger" data-testid={`delete-${model.id}`} onClick={() => action.run(async () => { await api.models.delete(model.id); await models.refresh(); await storage.refresh() })}>
                      Delete
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </Card>
    </div>
  )
}
