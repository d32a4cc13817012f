import { useRef, useState } from 'react'
import type { ProjectorPlacement } from 'genai-electron'
import { api } from '../api'
import { Card, ErrorBox, Facts, Field, ModelSelect, LogView, StatusBadge, numberOr, useAction, useEvent, usePoll } from '../components'
import { formatMs, formatTime } from '../format'
import type { ChatAnswer } from '../../shared/api'
import type { TabProps } from '../App'
import { SearchServersCard } from './SearchServers'

export default function LlamaServerTab({ active }: TabProps) {
  const models = usePoll(() => api.models.list('llm'), 3000, active)
  const status = usePoll(() => api.server.status(), 1000, active)
  const logs = usePoll(() => api.server.logs(100), 2000, active)
  const [modelId, setModelId] = useState('')
  const [port, setPort] = useState('auto')
  const [threads, setThreads] = useState('')
  const [contextSize, setContextSize] = useState('2048')
  const [gpuLayers, setGpuLayers] = useState('')
  const [parallel, setParallel] = useState('')
  const [projector, setProjector] = useState<ProjectorPlacement>('auto')
  const [draft, setDraft] = useState(true)
  const server = useAction()

  const [prompt, setPrompt] = useState('What is the capital of France?')
  const [answer, setAnswer] = useState('')
  const [result, setResult] = useState<ChatAnswer | null>(null)
  const chatId = useRef('')
  const chat = useAction()
  useEvent('chat:delta', ({ requestId, delta }) => {
    if (requestId === chatId.current) setAnswer((text) => text + delta)
  })

  const info = status.value
  const chosen = modelId || models.value?.[0]?.id || ''
  const model = models.value?.find((m) => m.id === chosen)
  const hasProjector = Boolean(model?.components?.mmproj)
  const hasDraft = Boolean(model?.components?.draft)
  const running = info?.status === 'running'

  const start = () =>
    server.run(async () => {
      await api.server.start({
        modelId: chosen,
        port: port === 'auto' ? 'auto' : numberOr(port),
        threads: numberOr(threads),
        contextSize: numberOr(contextSize),
        gpuLayers: numberOr(gpuLayers),
        parallelRequests: numberOr(parallel),
        ...(hasProjector ? { projector } : {}),
        ...(hasDraft ? { draft } : {}),
      })
      await status.refresh()
    })
  const stop = () => server.run(async () => (await api.server.stop(), await status.refresh()))
  const send = () =>
    chat.run(async () => {
      chatId.current = crypto.randomUUID()
      setAnswer('')
      setResult(null)
      setResult(await api.server.chat({ requestId: chatId.current, prompt, maxTokens: 96 }))
    })

  return (
    <div className="tab-body grid">
      <Card title="LLM server (llama-server)" testId="llm-config">
        <div className="form-row">
          <ModelSelect models={models.value} value={chosen} onChange={setModelId} empty="no LLM downloaded" testId="llm-model" />
          <Field label="Port">
            <input value={port} onChange={(e) => setPort(e.target.value)} />
          </Field>
          <Field label="Threads">
            <input data-testid="llm-threads" value={threads} placeholder="auto" onChange={(e) => setThreads(e.target.value)} />
          </Field>
          <Field label="Context size">
            <input data-testid="llm-context" value={contextSize} onChange={(e) => setContextSize(e.target.value)} />
          </Field>
          <Field label="GPU layers">
            <input value={gpuLayers} placeholder="auto" onChange={(e) => setGpuLayers(e.target.value)} />
          </Field>
          <Field label="Parallel requests">
            <input value={parallel} placeholder="auto" onChange={(e) => setParallel(e.target.value)} />
          </Field>
          {hasProjector && (
            <Field label="Vision projector">
              <select data-testid="llm-projector" value={projector} onChange={(e) => setProjector(e.target.value as ProjectorPlacement)}>
                <option value="auto">with the model's layers</option>
                <option value="cpu">on the CPU</option>
                <option value="off">off</option>
              </select>
            </Field>
          )}
          {hasDraft && (
            <Field label="Speculative decoding">
              <label className="check">
                <input type="checkbox" data-testid="llm-draft" checked={draft} onChange={(e) => setDraft(e.target.checked)} /> with the draft model
              </label>
            </Field>
          )}
        </div>
        <div className="buttons">
          <button className="primary" data-testid="llm-start" disabled={server.busy || running || !chosen} onClick={start}>
            Start
          </button>
          <button data-testid="llm-stop" disabled={server.busy || !info || info.status === 'stopped'} onClick={stop}>
            Stop
          </button>
        </div>
        <ErrorBox error={server.error} onClose={server.clearError} />
      </Card>

      <Card title="Status" testId="llm-status-card">
        {info && (
          <Facts
            rows={[
              ['Status', <StatusBadge status={info.status} testId="llm-status" />],
              ['Health', <StatusBadge status={info.health} />],
              ['Model', info.modelId ?? '—'],
              ['Serves', info.mode ?? '—'],
              ['Port', info.port ? `127.0.0.1:${info.port}` : '—'],
              ['PID', info.pid ?? '—'],
              ['Started', info.startedAt ? formatTime(info.startedAt) : '—'],
              ['Load time', formatMs(info.loadTimeMs)],
              ['Restarts', info.restarts],
            ]}
          />
        )}
        {info?.error && <ErrorBox error={{ code: 'SERVER_ERROR', message: info.error }} />}
      </Card>

      <Card title="Test chat" testId="llm-chat">
        <div className="form-row">
          <Field label="Message">
            <input data-testid="chat-prompt" value={prompt} onChange={(e) => setPrompt(e.target.value)} onKeyDown={(e) => e.key === 'Enter' && running && send()} />
          </Field>
          <button className="primary" data-testid="chat-send" disabled={!running || chat.busy} onClick={send}>
            Send
          </button>
        </div>
        <div className="chat-answer" data-testid="chat-answer" data-done={result ? 'yes' : 'no'}>
          {answer || <span className="muted">{chat.busy ? 'waiting for the first token…' : 'The answer streams here.'}</span>}
        </div>
        {result && (
          <p className="muted" data-testid="chat-stats" data-chunks={result.chunks}>
            {result.chunks} chunks · first token after {formatMs(result.firstTokenMs)} · {formatMs(result.totalMs)} in all
          </p>
        )}
        <ErrorBox error={chat.error} onClose={chat.clearError} />
      </Card>

      <SearchServersCard models={models.value} active={active} />

      <Card title="Logs" testId="llm-logs" actions={<button onClick={() => server.run(async () => (await api.server.clearLogs(), await logs.refresh()))}>Clear</button>}>
        <LogView entries={logs.value ?? []} />
      </Card>
    </div>
  )
}
