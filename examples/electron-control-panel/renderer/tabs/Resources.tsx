import { useEffect, useState } from 'react'
import { CartesianGrid, Legend, Line, LineChart, ReferenceLine, ResponsiveContainer, Tooltip, XAxis, YAxis } from 'recharts'
import { api } from '../api'
import { Card, ErrorBox, Facts, Field, ProgressBar, StatusBadge, numberOr, useAction, useEvent, usePoll } from '../components'
import { formatBytes, formatMs, formatTime } from '../format'
import type { OffloadDemoResult, ResourceSnapshot, SavedStateInfo } from '../../shared/api'
import type { TabProps } from '../App'

/** How often the timeline samples, and how much of it is kept. */
const SAMPLE_MS = 1000
const KEEP_SAMPLES = 300

type Sample = { at: number; system: number; llm: number | null; diffusion: number | null }
type Marker = { at: number; type: 'offload' | 'reload' | 'reload-failed' }
type LogLine = { at: number; source: string; text: string }

const MB = 1e6
const MARKER_COLORS: Record<Marker['type'], string> = { offload: '#d97706', reload: '#059669', 'reload-failed': '#dc2626' }

/** The llama servers by their place in the orchestrator's list (as the main process makes it). */
const LLAMA_SERVERS = ['LLM', 'embedding server', 'rerank server']

function describe(event: { type: string; server?: number; old?: string; new?: string; phase?: string; waiting?: number; waitedMs?: number; status?: string; reason?: string; text?: string }): string {
  const server = LLAMA_SERVERS[event.server ?? 0]
  switch (event.type) {
    case 'state':
      return `${event.old} → ${event.new}${event.reason ? `: ${event.reason}` : ''}`
    case 'phase':
      return `phase: ${event.phase}`
    case 'offload':
      return `${server} offloaded to make room for the image`
    case 'reload':
      return `${server} reloaded on the same port`
    case 'diffusion-released':
      return `idle sd-server stopped to make room for the LLM (${event.reason === 'start' ? 'its start' : 'its reload'})`
    case 'queued':
      return `request held at the ${server} (${event.waiting} waiting)`
    case 'dequeued':
      return `held request released at the ${server} after ${formatMs(event.waitedMs)}`
    case 'chat-answered':
      return `held chat answered after ${formatMs(event.waitedMs)}: "${event.text?.trim().slice(0, 60)}"`
    case 'job':
      return `image job ${event.status}`
    default:
      return event.type
  }
}

export default function ResourcesTab({ active }: TabProps) {
  const [samples, setSamples] = useState<Sample[]>([])
  const [markers, setMarkers] = useState<Marker[]>([])
  const [log, setLog] = useState<LogLine[]>([])
  // The timeline keeps sampling while another tab is shown.
  const usage = usePoll(() => api.resources.getUsage(), SAMPLE_MS, true)
  const saved = usePoll(() => api.resources.getSavedState(), 1000, active)
  const snapshot: ResourceSnapshot | null = usage.value

  useEffect(() => {
    if (!snapshot) return
    const sample = {
      at: snapshot.at,
      system: snapshot.memory.used / MB,
      llm: snapshot.measured.llama ? snapshot.measured.llama.rssBytes / MB : null,
      diffusion: snapshot.measured.diffusion ? snapshot.measured.diffusion.rssBytes / MB : null,
    }
    setSamples((all) => [...all.slice(-(KEEP_SAMPLES - 1)), sample])
  }, [snapshot])

  const note = (source: string) => (event: Parameters<typeof describe>[0] & { at: number }) => {
    if (event.type === 'phase' && event.phase === 'idle') return
    setLog((all) => [{ at: event.at, source, text: describe(event) }, ...all].slice(0, 200))
    if (event.type === 'offload' || event.type === 'reload' || event.type === 'reload-failed') {
      setMarkers((all) => [...all, { at: event.at, type: event.type as Marker['type'] }])
    }
  }
  useEvent('resources:event', note('orchestrator'))
  useEvent('server:event', note('llm'))
  useEvent('diffusion:event', note('diffusion'))

  const [demoConfig, setDemoConfig] = useState({ prompt: 'a red cube on a table', width: '512', height: '512', steps: '8' })
  const [demo, setDemo] = useState<OffloadDemoResult | null>(null)
  const demoAction = useAction()
  const stateAction = useAction()
  const runDemo = () =>
    demoAction.run(async () => {
      setDemo(null)
      setDemo(
        await api.resources.offloadDemo({
          prompt: demoConfig.prompt,
          width: numberOr(demoConfig.width),
          height: numberOr(demoConfig.height),
          steps: numberOr(demoConfig.steps),
        }),
      )
    })

  const memory = snapshot?.memory
  const estimate = snapshot?.estimate
  const gpu = Boolean(snapshot?.gpu.available)
  const first = samples[0]?.at
  const shown = markers.filter((marker) => first != null && marker.at >= first)
  return (
    <div className="tab-body grid">
      <Card title="Memory" testId="resources-memory">
        <ErrorBox error={usage.error} />
        {memory && (
          <>
            <div className="bar-title">RAM</div>
            <ProgressBar testId="ram-bar" value={(memory.used / memory.total) * 100} label={`${formatBytes(memory.used)} used of ${formatBytes(memory.total)} · ${formatBytes(memory.available)} available`} />
            <div className="bar-title">VRAM</div>
            {gpu && snapshot?.gpu.vram ? (
              <ProgressBar
                value={((snapshot.gpu.vram - (snapshot.gpu.vramAvailable ?? snapshot.gpu.vram)) / snapshot.gpu.vram) * 100}
                label={`${formatBytes(snapshot.gpu.vram - (snapshot.gpu.vramAvailable ?? 0))} used of ${formatBytes(snapshot.gpu.vram)} (${snapshot.gpu.name})`}
              />
            ) : (
              <p className="muted">No GPU: both servers use system RAM.</p>
            )}
          </>
        )}
        {snapshot && (
          <table data-testid="resources-servers">
            <thead>
              <tr>
                <th>Server</th>
                <th>Status</th>
                <th>Estimated RAM</th>
                {gpu && <th>Estimated VRAM</th>}
                <th>Measured RSS</th>
                <th>For an image</th>
              </tr>
            </thead>
            <tbody>
              {llamaRows(snapshot).map(({ name, status, weighed, testId }) => (
                <tr key={name} data-testid={testId}>
                  <td>{name}</td>
                  <td>
                    <StatusBadge status={status} />
                  </td>
                  <td>{formatBytes(weighed?.usage.estimated.ram)}</td>
                  {gpu && <td data-testid={testId === 'server-llm' ? 'llm-vram' : undefined}>{formatBytes(weighed?.usage.estimated.vram)}</td>}
                  <td>{formatBytes(weighed?.usage.measured?.ram)}</td>
                  <td data-testid={`${testId}-fate`}>{weighed ? (weighed.offload ? 'offloaded' : 'stays') : '—'}</td>
                </tr>
              ))}
              <tr>
                <td>Diffusion</td>
                <td>
                  <StatusBadge status={snapshot.diffusionServer.status} />
                </td>
                <td>{formatBytes(estimate?.diffusion.estimated.ram)}</td>
                {gpu && <td>{formatBytes(estimate?.diffusion.estimated.vram)}</td>}
                <td>{formatBytes(snapshot.measured.diffusion?.rssBytes)}</td>
                <td />
              </tr>
            </tbody>
          </table>
        )}
        {estimate && (
          <p className="muted">
            Budget {formatBytes(estimate.budget.ram)} RAM{gpu ? `, ${formatBytes(estimate.budget.vram)} VRAM` : ''}; an image {estimate.needsOffload ? 'would offload the servers marked so' : 'fits beside the llama servers'} ({estimate.bottleneck.toUpperCase()} decides).
          </p>
        )}
      </Card>

      <Card title="Timeline" testId="resources-timeline">
        <div className="chart">
          <ResponsiveContainer width="100%" height={260}>
            <LineChart data={samples} margin={{ top: 16, right: 24, bottom: 0, left: 8 }}>
              <CartesianGrid strokeDasharray="3 3" stroke="#e5e7eb" />
              <XAxis dataKey="at" type="number" domain={['dataMin', 'dataMax']} scale="time" tickFormatter={formatTime} />
              <YAxis unit=" MB" width={80} />
              <Tooltip labelFormatter={(at) => formatTime(Number(at))} formatter={(value) => `${Number(value).toFixed(1)} MB`} />
              <Legend />
              <Line type="monotone" dataKey="system" name="system RAM used" stroke="#6366f1" dot={false} isAnimationActive={false} />
              <Line type="stepAfter" dataKey="llm" name="LLM (RSS)" stroke="#0ea5e9" dot={false} isAnimationActive={false} connectNulls={false} />
              <Line type="stepAfter" dataKey="diffusion" name="diffusion (RSS)" stroke="#ec4899" dot={false} isAnimationActive={false} connectNulls={false} />
              {shown.map((marker) => (
                <ReferenceLine key={`${marker.type}-${marker.at}`} x={marker.at} stroke={MARKER_COLORS[marker.type]} strokeDasharray="4 2" label={{ value: marker.type, position: 'top', fill: MARKER_COLORS[marker.type], fontSize: 12 }} className={`marker-${marker.type}`} />
              ))}
            </LineChart>
          </ResponsiveContainer>
        </div>
      </Card>

      <Card title="Orchestrator" testId="resources-orchestrator">
        {snapshot && (
          <Facts
            rows={[
              ['Phase', <StatusBadge status={snapshot.orchestrator.phase} testId="orchestrator-phase" />],
              ['Requests held', <span data-testid="queue-length">{snapshot.orchestrator.queue.length}</span>],
              ['Longest wait', formatMs(snapshot.orchestrator.queue.longestWaitMs)],
            ]}
          />
        )}
        <h3>Saved state</h3>
        <SavedState state={saved.value} />
        {saved.value && (
          <button onClick={() => stateAction.run(async () => (await api.resources.clearSavedState(), await saved.refresh()))}>Clear saved state</button>
        )}
        <ErrorBox error={stateAction.error} onClose={stateAction.clearError} />
      </Card>

      <Card title="Automatic offload demo" testId="offload-demo">
        <p>
          Makes an image under a memory budget too small for it beside the running llama servers: the orchestrator offloads the LLM (search servers stay, as the LLM alone makes room), makes the
          image and reloads it. A chat message sent meanwhile is held at the LLM's port and answered after the reload.
        </p>
        <div className="form-row">
          <Field label="Prompt">
            <input value={demoConfig.prompt} onChange={(e) => setDemoConfig({ ...demoConfig, prompt: e.target.value })} />
          </Field>
          <Field label="Width">
            <input data-testid="demo-width" value={demoConfig.width} onChange={(e) => setDemoConfig({ ...demoConfig, width: e.target.value })} />
          </Field>
          <Field label="Height">
            <input data-testid="demo-height" value={demoConfig.height} onChange={(e) => setDemoConfig({ ...demoConfig, height: e.target.value })} />
          </Field>
          <Field label="Steps">
            <input data-testid="demo-steps" value={demoConfig.steps} onChange={(e) => setDemoConfig({ ...demoConfig, steps: e.target.value })} />
          </Field>
        </div>
        <div className="buttons">
          <button className="primary" data-testid="offload-demo-run" disabled={demoAction.busy} onClick={runDemo}>
            {demoAction.busy ? 'Running…' : 'Generate with a budget that forces an offload'}
          </button>
        </div>
        <ErrorBox error={demoAction.error} onClose={demoAction.clearError} />
        {demo && (
          <div className="demo-result" data-testid="offload-demo-result">
            <img src={demo.imageDataUrl} alt="the demo's image" width={Math.min(demo.width, 192)} />
            <Facts
              rows={[
                ['Budget', <span data-testid="offload-demo-budget">{`${formatBytes(demo.budgetBytes)} of ${demo.budgetMemory.toUpperCase()}`}</span>],
                ['Image', `${demo.width}×${demo.height} in ${formatMs(demo.timeTaken)}`],
                ['Held chat answered after', formatMs(demo.chat.waitedMs)],
                ['Its answer', <span data-testid="offload-demo-chat">{demo.chat.text.trim() || '(empty)'}</span>],
              ]}
            />
          </div>
        )}
      </Card>

      <Card title="Event log" testId="event-log">
        {log.length === 0 && <p className="muted">Server and orchestrator events appear here.</p>}
        <div className="events">
          {log.map((line, index) => (
            <div key={index} className="event" data-testid="event-line">
              <span className="log-time">{formatTime(line.at)}</span>
              <span className={`event-source source-${line.source}`}>{line.source}</span>
              <span>{line.text}</span>
            </div>
          ))}
        </div>
      </Card>
    </div>
  )
}

/** The LLM always, and a search server while it runs, each as the orchestrator weighs it. */
function llamaRows(snapshot: ResourceSnapshot) {
  const weighed = (server: number) => snapshot.estimate?.servers.find((s) => s.server === server)
  const rows = [{ name: 'LLM', status: snapshot.llamaServer.status, weighed: weighed(0), testId: 'server-llm' }]
  const search = [snapshot.search.embedding, snapshot.search.rerank]
  search.forEach((info, i) => {
    if (info.status !== 'stopped') rows.push({ name: `${LLAMA_SERVERS[i + 1]} (${info.modelId})`, status: info.status, weighed: weighed(i + 1), testId: `server-${i + 1}` })
  })
  return rows
}

function SavedState({ state }: { state: SavedStateInfo | null }) {
  if (!state) return <p className="muted" data-testid="saved-state">None: no server is offloaded.</p>
  return (
    <Facts
      rows={[
        ['Server', LLAMA_SERVERS[state.server]],
        ['Model', state.resolved.modelId],
        ['Port', state.resolved.port ?? '—'],
        ['Context', state.resolved.contextSize],
        ['Was running', state.wasRunning ? 'yes' : 'no'],
        ['Saved at', formatTime(state.savedAt)],
      ]}
    />
  )
}
