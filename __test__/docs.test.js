'use strict'

const test = require('node:test')
const assert = require('node:assert/strict')
const { EventEmitter } = require('node:events')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { ROOT, runNode } = require('./helpers')
const {
  SystemInfo,
  BinaryManager,
  ModelManager,
  LlamaServerManager,
  DiffusionServerManager,
  RpcServerManager,
  ResourceOrchestrator,
} = require('..')

const API_MD = fs.readFileSync(path.join(ROOT, 'docs', 'API.md'), 'utf8')
const EXAMPLES = [...API_MD.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1])

test('docs/API.md has examples', () => {
  assert.ok(EXAMPLES.length >= 10, `${EXAMPLES.length} examples`)
})

// Each `console.log(…) // shown` line in an example shows what it prints: the comment is the
// printed line, where `…` stands for any text. The example runs with console.log tagging each
// line it prints with the example's line that printed it.
const TAG = `const __util = require('node:util'); const __log = console.log; console.log = (...args) => {
  const at = /:(\\d+):\\d+\\)?$/.exec(new Error().stack.split('\\n')[2])
  __log('@@' + (at ? Number(at[1]) - OFFSET : 0) + '@@' + __util.formatWithOptions({ breakLength: Infinity }, ...args))
}
`.replace('OFFSET', '4') // TAG's own four lines come first

/** `{ line: expected }` of an example's `console.log(…) // shown` lines. */
function shownOutputs(source) {
  const shown = new Map()
  source.split('\n').forEach((text, i) => {
    const match = /console\.log\(.*\)\)?\s*\/\/ (.+)$/.exec(text)
    if (match) shown.set(i + 1, match[1])
  })
  return shown
}

function matches(printed, shown) {
  const pattern = shown
    .split('…')
    .map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
    .join('[\\s\\S]*')
  return new RegExp(`^${pattern}$`).test(printed)
}

EXAMPLES.forEach((source, i) => {
  const title =
    source
      .split('\n')
      .find(
        (l) =>
          l.includes('systemInfo.') ||
          l.includes('binaries') ||
          l.includes('modelManager') ||
          l.includes('llamaServer') ||
          l.includes('diffusionServer') ||
          l.includes('ResourceOrchestrator') ||
          l.includes('configure') ||
          l.includes('getDataPaths') ||
          l.includes('LogManager'),
      ) ?? ''
  test(`docs/API.md example ${i + 1} runs and prints what it shows: ${title.trim().slice(0, 60)}`, async () => {
    const script = TAG + source.replaceAll("require('genai-electron')", `require(${JSON.stringify(ROOT)})`)
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'genai-electron-docs-'))
    const { code, stdout, stderr } = await runNode(script, { env: { GENAI_ELECTRON_DATA_DIR: dataDir } })
    assert.equal(code, 0, stderr)
    const printed = new Map()
    for (const [, line, text] of stdout.matchAll(/^@@(\d+)@@(.*)$/gm))
      printed.set(Number(line), [...(printed.get(Number(line)) ?? []), text])
    for (const [line, shown] of shownOutputs(source)) {
      const lines = printed.get(line) ?? []
      assert.ok(lines.length > 0, `line ${line} printed nothing; it shows: ${shown}`)
      for (const text of lines)
        assert.ok(matches(text, shown), `line ${line} printed ${JSON.stringify(text)}; it shows: ${shown}`)
    }
  })
})

test('every public manager method has a section in docs/API.md', () => {
  for (const cls of [
    SystemInfo,
    BinaryManager,
    ModelManager,
    LlamaServerManager,
    DiffusionServerManager,
    RpcServerManager,
    ResourceOrchestrator,
  ]) {
    const methods = []
    // The class's own methods and those it inherits from the library's base classes.
    for (let proto = cls.prototype; proto && proto !== EventEmitter.prototype; proto = Object.getPrototypeOf(proto)) {
      methods.push(...Object.getOwnPropertyNames(proto).filter((m) => m !== 'constructor'))
    }
    for (const method of methods) assert.match(API_MD, new RegExp(`### .*\\b${method}\\(`), method)
  }
})
