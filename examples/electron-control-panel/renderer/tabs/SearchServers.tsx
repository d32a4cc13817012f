import { useState } from 'react'
import type { ModelInfo, ServerInfo } from 'genai-electron'
import { api } from '../api'
import { Card, ErrorBox, Field, StatusBadge, useAction, usePoll } from '../components'
import { formatMs } from '../format'
import type { SearchResult } from '../../shared/api'

/** The models a kind of search server can run, by what their GGUF says they can do. */
const CAN = {
  // A chat model embeds by the mean of its tokens.
  embedding: (m: ModelInfo) => Boolean(m.capabilities?.some((c) => c === 'embedding' || c === 'chat')),
  rerank: (m: ModelInfo) => Boolean(m.capabilities?.includes('rerank')),
}

/** An embedding server and a rerank server beside the LLM, and a search through both. */
export function SearchServersCard({ models, active }: { models: ModelInfo[] | null; active: boolean }) {
  const status = usePoll(() => api.search.status(), 1000, active)
  const [embeddingModel, setEmbeddingModel] = useState<string | null>(null)
  const [rerankModel, setRerankModel] = useState<string | null>(null)
  const [query, setQuery] = useState('the capital of France')
  const [documents, setDocuments] = useState('Paris is the capital of France.\nA cube has six faces.\nBread is baked in an oven.')
  const [result, setResult] = useState<SearchResult | null>(null)
  const servers = useAction()
  const searching = useAction()

  const embedders = models?.filter(CAN.embedding) ?? []
  const rerankers = models?.filter(CAN.rerank) ?? []
  // Until one is chosen, a model made for the task (else the first that can), or none.
  const embeddingChoice = embeddingModel ?? (embedders.find((m) => m.capabilities?.includes('embedding')) ?? embedders[0])?.id ?? ''
  const rerankChoice = rerankModel ?? rerankers[0]?.id ?? ''
  const info = status.value
  const running = (server?: ServerInfo) => server?.status === 'running'
  const anyRunning = running(info?.embedding) || running(info?.rerank)

  const start = () =>
    servers.run(async () => {
      await api.search.start({ embeddingModelId: embeddingChoice || undefined, rerankModelId: rerankChoice || undefined, contextSize: 512, threads: 1 })
      await status.refresh()
    })
  const stop = () => servers.run(async () => (await api.search.stop(), await status.refresh()))
  const search = () =>
    searching.run(async () => {
      setResult(null)
      setResult(await api.search.query({ query, documents: documents.split('\n') }))
    })

  return (
    <Card title="Search servers (embeddings and reranking)" testId="search-servers">
      <p className="muted">Each runs in a llama-server of its own, on its own port, beside the LLM. The orchestrator weighs all three: an image offloads the LLM first, and these only when it must.</p>
      <div className="form-row">
        <ModelChoice label="Embedding model" models={embedders} value={embeddingChoice} onChange={setEmbeddingModel} testId="search-embedding-model" />
        <ModelChoice label="Reranker" models={rerankers} value={rerankChoice} onChange={setRerankModel} testId="search-rerank-model" />
      </div>
      <div className="buttons">
        <button className="primary" data-testid="search-start" disabled={servers.busy || anyRunning || (!embeddingChoice && !rerankChoice)} onClick={start}>
          Start
        </button>
        <button data-testid="search-stop" disabled={servers.busy || !anyRunning} onClick={stop}>
          Stop
        </button>
        {info && (
          <span className="muted">
            embedding <StatusBadge status={info.embedding.status} testId="search-embedding-status" />
            {info.embedding.port ? ` :${info.embedding.port}` : ''} · rerank <StatusBadge status={info.rerank.status} testId="search-rerank-status" />
            {info.rerank.port ? ` :${info.rerank.port}` : ''}
          </span>
        )}
      </div>
      <ErrorBox error={servers.error} onClose={servers.clearError} />
      <div className="form-row">
        <Field label="Query" wide>
          <input data-testid="search-query" value={query} onChange={(e) => setQuery(e.target.value)} />
        </Field>
        <Field label="Documents, one a line" wide>
          <textarea data-testid="search-documents" rows={3} value={documents} onChange={(e) => setDocuments(e.target.value)} />
        </Field>
        <button className="primary" data-testid="search-run" disabled={!anyRunning || searching.busy} onClick={search}>
          Search
        </button>
      </div>
      <ErrorBox error={searching.error} onClose={searching.clearError} />
      {result && <SearchTable result={result} />}
    </Card>
  )
}

/** One of `models`, or none. */
function ModelChoice({ label, models, value, onChange, testId }: { label: string; models: ModelInfo[]; value: string; onChange: (id: string) => void; testId: string }) {
  return (
    <Field label={label} wide>
      <select data-testid={testId} value={value} onChange={(e) => onChange(e.target.value)}>
        <option value="">none</option>
        {models.map((m) => (
          <option key={m.id} value={m.id}>
            {m.name}
          </option>
        ))}
      </select>
    </Field>
  )
}

function SearchTable({ result }: { result: SearchResult }) {
  const score = (value: number | undefined) => (value === undefined ? '—' : value.toFixed(3))
  return (
    <>
      <table data-testid="search-results">
        <thead>
          <tr>
            <th>Document</th>
            <th>Similarity (embeddings)</th>
            <th>Relevance (reranker)</th>
          </tr>
        </thead>
        <tbody>
          {result.documents.map((document, i) => (
            <tr key={i} data-testid="search-row">
              <td>{document}</td>
              <td>{score(result.similarity?.[i])}</td>
              <td>{score(result.relevance?.[i])}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <p className="muted" data-testid="search-stats">
        {result.dimensions ? `${result.dimensions}-dimension embeddings · ` : ''}
        {formatMs(result.timeTaken)} in all
      </p>
    </>
  )
}
