// Small pieces every tab uses: cards, status badges, progress bars, error boxes, log views, and
// the hooks that poll, listen and run actions.

import { useCallback, useEffect, useRef, useState, type ReactNode } from 'react'
import { api } from './api'
import type { PanelEventName, PanelEvents } from '../shared/api'
import type { LogEntry, ModelInfo } from 'genai-electron'
import { formatTime } from './format'

export function Card({ title, children, actions, testId }: { title: string; children: ReactNode; actions?: ReactNode; testId?: string }) {
  return (
    <section className="card" data-testid={testId}>
      <header className="card-header">
        <h2>{title}</h2>
        {actions && <div className="card-actions">{actions}</div>}
      </header>
      {children}
    </section>
  )
}

export function Field({ label, children, wide }: { label: string; children: ReactNode; wide?: boolean }) {
  return (
    <label className={wide ? 'field wide' : 'field'}>
      <span>{label}</span>
      {children}
    </label>
  )
}

export function Facts({ rows }: { rows: [string, ReactNode][] }) {
  return (
    <dl className="facts">
      {rows.map(([name, value]) => (
        <div key={name}>
          <dt>{name}</dt>
          <dd>{value}</dd>
        </div>
      ))}
    </dl>
  )
}

/** The installed models of one type to choose from; `value` is the chosen id. */
export function ModelSelect({ models, value, onChange, empty, testId }: { models: ModelInfo[] | null; value: string; onChange: (id: string) => void; empty: string; testId: string }) {
  return (
    <Field label="Model" wide>
      <select data-testid={testId} value={value} onChange={(e) => onChange(e.target.value)}>
        {models?.length === 0 && <option value="">{empty}</option>}
        {models?.map((model) => (
          <option key={model.id} value={model.id}>
            {model.name}
          </option>
        ))}
      </select>
    </Field>
  )
}

const STATUS_TONE: Record<string, string> = {
  running: 'good',
  ok: 'good',
  starting: 'busy',
  stopping: 'busy',
  restarting: 'busy',
  crashed: 'bad',
  error: 'bad',
}

export function StatusBadge({ status, testId }: { status: string; testId?: string }) {
  return (
    <span className={`badge ${STATUS_TONE[status] ?? 'idle'}`} data-testid={testId}>
      {status}
    </span>
  )
}

export function ProgressBar({ value, label, testId }: { value: number | null; label?: string; testId?: string }) {
  const percent = value == null ? null : Math.max(0, Math.min(100, value))
  return (
    <div className="progress" data-testid={testId} data-percent={percent ?? ''} role="progressbar" aria-valuenow={percent ?? undefined}>
      <div className={`progress-fill ${percent == null ? 'indeterminate' : ''}`} style={{ width: `${percent ?? 100}%` }} />
      {label && <span className="progress-label">{label}</span>}
    </div>
  )
}

/** A library error: its code, message and suggestion, as the library gave them. */
export function ErrorBox({ error, onClose }: { error: unknown; onClose?: () => void }) {
  if (!error) return null
  const { code, message, suggestion } = error as { code?: string; message?: string; suggestion?: string }
  return (
    <div className="error" role="alert" data-testid="error">
      <div>
        <strong className="error-code">{code ?? 'ERROR'}</strong> {message ?? String(error)}
      </div>
      {suggestion && <div className="error-suggestion">{suggestion}</div>}
      {onClose && (
        <button className="link" onClick={onClose}>
          dismiss
        </button>
      )}
    </div>
  )
}

export function LogView({ entries, testId }: { entries: LogEntry[]; testId?: string }) {
  // Follows the newest line by scrolling the box itself, never the page.
  const box = useRef<HTMLDivElement>(null)
  useEffect(() => {
    if (box.current) box.current.scrollTop = box.current.scrollHeight
  }, [entries])
  return (
    <div className="logs" data-testid={testId} ref={box}>
      {entries.length === 0 && <div className="muted">No log lines yet.</div>}
      {entries.map((entry, index) => (
        <div key={index} className={`log log-${entry.level}`}>
          <span className="log-time">{formatTime(entry.timestamp)}</span>
          <span className="log-level">{entry.level}</span>
          <span className="log-message">{entry.message}</span>
        </div>
      ))}
    </div>
  )
}

/** Runs `fn` now and every `ms` while `active`; returns the latest value and error. */
export function usePoll<T>(fn: () => Promise<T>, ms: number, active = true, deps: unknown[] = []) {
  const [value, setValue] = useState<T | null>(null)
  const [error, setError] = useState<unknown>(null)
  const refresh = useCallback(async () => {
    try {
      setValue(await fn())
      setError(null)
    } catch (caught) {
      setError(caught)
    }
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, deps)
  useEffect(() => {
    if (!active) return
    void refresh()
    const timer = setInterval(refresh, ms)
    return () => clearInterval(timer)
  }, [active, ms, refresh])
  return { value, error, refresh }
}

/** Calls `callback` for each `name` event from the main process while mounted. */
export function useEvent<E extends PanelEventName>(name: E, callback: (payload: PanelEvents[E]) => void) {
  const latest = useRef(callback)
  latest.current = callback
  useEffect(() => api.onEvent(name, (payload) => latest.current(payload)), [name])
}

/** `run(fn)` with a busy flag and the error it threw, kept until the next run or dismissal. */
export function useAction() {
  const [busy, setBusy] = useState(false)
  const [error, setError] = useState<unknown>(null)
  const run = useCallback(async <T,>(fn: () => Promise<T>): Promise<T | undefined> => {
    setBusy(true)
    setError(null)
    try {
      return await fn()
    } catch (caught) {
      setError(caught)
      return undefined
    } finally {
      setBusy(false)
    }
  }, [])
  return { run, busy, error, clearError: () => setError(null) }
}

export function numberOr(text: string, fallback?: number): number | undefined {
  const value = Number(text)
  return text.trim() === '' || !Number.isFinite(value) ? fallback : value
}
