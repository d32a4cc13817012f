'use strict'

const test = require('node:test')
const assert = require('node:assert/strict')
const { EventEmitter } = require('node:events')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { ROOT, runNode } = require('./helpers')
const { SystemInfo, BinaryManager, ModelManager, LlamaServerManager, DiffusionServerManager, ResourceOrchestrator } = require('..')

const API_MD = fs.readFileSync(path.join(ROOT, 'docs', 'API.md'), 'utf8')
const EXAMPLES = [...API_MD.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1])

test('docs/API.md has examples', () => {
  assert.ok(EXAMPLES.length >= 10, `${EXAMPLES.length} examples`)
})

EXAMPLES.forEach((source, i) => {
  const title = source.split('\n').find((l) => l.includes('systemInfo.') || l.includes('binaries') || l.includes('modelManager') || l.includes('llamaServer') || l.includes('diffusionServer') || l.includes('ResourceOrchestrator') || l.includes('configure') || l.includes('getDataPaths')) ?? ''
  test(`docs/API.md example ${i + 1} runs: ${title.trim().slice(0, 60)}`, async () => {
    const script = source.replaceAll("require('genai-electron')", `require(${JSON.stringify(ROOT)})`)
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'genai-electron-docs-'))
    const { code, stderr } = await runNode(script, { env: { GENAI_ELECTRON_DATA_DIR: dataDir } })
    assert.equal(code, 0, stderr)
  })
})

test('every public manager method has a section in docs/API.md', () => {
  for (const cls of [SystemInfo, BinaryManager, ModelManager, LlamaServerManager, DiffusionServerManager, ResourceOrchestrator]) {
    const methods = []
    // The class's own methods and those it inherits from the library's base classes.
    for (let proto = cls.prototype; proto && proto !== EventEmitter.prototype; proto = Object.getPrototypeOf(proto)) {
      methods.push(...Object.getOwnPropertyNames(proto).filter((m) => m !== 'constructor'))
    }
    for (const method of methods) assert.match(API_MD, new RegExp(`### .*\\b${method}\\(`), method)
  }
})
