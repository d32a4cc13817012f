import { useState } from 'react'
import { mode } from './api'
import SystemInfoTab from './tabs/SystemInfo'
import ModelsTab from './tabs/Models'
import LlamaServerTab from './tabs/LlamaServer'
import DiffusionServerTab from './tabs/DiffusionServer'
import ResourcesTab from './tabs/Resources'

const TABS = [
  { id: 'system', label: 'System Info', Component: SystemInfoTab },
  { id: 'models', label: 'Models', Component: ModelsTab },
  { id: 'llm', label: 'LLM Server', Component: LlamaServerTab },
  { id: 'diffusion', label: 'Diffusion Server', Component: DiffusionServerTab },
  { id: 'resources', label: 'Resources', Component: ResourcesTab },
] as const

export type TabProps = { active: boolean }

export default function App() {
  const [current, setCurrent] = useState<string>('system')
  return (
    <div className="app">
      <header className="topbar">
        <h1>genai-electron control panel</h1>
        <nav className="tabs" role="tablist">
          {TABS.map((tab) => (
            <button
              key={tab.id}
              role="tab"
              aria-selected={current === tab.id}
              className={current === tab.id ? 'tab active' : 'tab'}
              data-testid={`tab-${tab.id}`}
              onClick={() => setCurrent(tab.id)}
            >
              {tab.label}
            </button>
          ))}
        </nav>
        <span className="mode" title="How this window reaches the library">
          {mode === 'electron' ? 'Electron' : 'web mode'}
        </span>
      </header>
      {/* Every tab stays mounted, so forms, logs and the timeline survive a switch. */}
      {TABS.map(({ id, Component }) => (
        <main key={id} className="tab-panel" hidden={current !== id} data-testid={`panel-${id}`}>
          <Component active={current === id} />
        </main>
      ))}
    </div>
  )
}
