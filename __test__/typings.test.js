'use strict'

// index.d.ts against what the addon really returns and emits. The binding crosses as JSON values
// (its typings name the shapes generated from Rust, which nothing checks at run time), so this
// test reads index.d.ts with the TypeScript compiler and checks real results and events, from the
// real backends, field by field: every key a value has is declared, every declared key that is
// not optional is there, and each value has its declared kind.

const test = require('node:test')
const assert = require('node:assert/strict')
const path = require('node:path')
const ts = require('typescript')
const { ROOT } = require('./helpers')
const { backends, withTinyModel, downloadTinyImageSet } = require('./helpers')
const lib = require('..')

const { paths: real, skip } = backends()

const program = ts.createProgram([path.join(ROOT, 'index.d.ts')], { strict: true, types: ['node'] })
const checker = program.getTypeChecker()
const source = program.getSourceFile(path.join(ROOT, 'index.d.ts'))

const exported = checker.getExportsOfModule(checker.getSymbolAtLocation(source))

function declared(name) {
  const symbol = exported.find((s) => s.name === name)
  assert.ok(symbol, `index.d.ts declares ${name}`)
  // The shapes generated from Rust are re-exported from shapes.d.ts.
  const target = symbol.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(symbol) : symbol
  return checker.getDeclaredTypeOfSymbol(target)
}

/** Problems of `value` against `type`, each with its path; empty when it conforms. */
function check(value, type, where) {
  if (type.flags & (ts.TypeFlags.Any | ts.TypeFlags.Unknown)) return []
  if (type.isUnion()) {
    const results = type.types.map((t) => check(value, t, where))
    return results.some((r) => r.length === 0) ? [] : results.sort((a, b) => a.length - b.length)[0]
  }
  if (value === null)
    return type.flags & ts.TypeFlags.Null ? [] : [`${where}: null where ${checker.typeToString(type)}`]
  if (value === undefined)
    return type.flags & ts.TypeFlags.Undefined ? [] : [`${where}: missing (${checker.typeToString(type)})`]
  if (type.flags & ts.TypeFlags.StringLiteral)
    return value === type.value ? [] : [`${where}: ${JSON.stringify(value)} is not '${type.value}'`]
  if (type.flags & ts.TypeFlags.NumberLiteral)
    return value === type.value ? [] : [`${where}: ${value} is not ${type.value}`]
  if (type.flags & ts.TypeFlags.BooleanLiteral)
    return typeof value === 'boolean' && String(value) === checker.typeToString(type) ? [] : [`${where}: ${value}`]
  if (type.flags & ts.TypeFlags.String)
    return typeof value === 'string' ? [] : [`${where}: ${typeof value} where string`]
  if (type.flags & ts.TypeFlags.Number)
    return typeof value === 'number' ? [] : [`${where}: ${typeof value} where number`]
  if (type.flags & ts.TypeFlags.Boolean)
    return typeof value === 'boolean' ? [] : [`${where}: ${typeof value} where boolean`]
  if (checker.isArrayType(type)) {
    if (!Array.isArray(value)) return [`${where}: not an array`]
    const [item] = checker.getTypeArguments(type)
    return value.flatMap((v, i) => check(v, item, `${where}[${i}]`))
  }
  const name = type.symbol?.name
  if (name === 'Buffer' || name === 'Date')
    return value instanceof (name === 'Buffer' ? Buffer : Date) ? [] : [`${where}: not a ${name}`]
  if (typeof value !== 'object') return [`${where}: ${typeof value} where ${checker.typeToString(type)}`]
  const problems = []
  const index = type.getStringIndexType()
  const props = new Map(checker.getPropertiesOfType(type).map((p) => [p.name, p]))
  for (const key of Object.keys(value)) {
    if (!props.has(key)) {
      if (!index) problems.push(`${where}.${key}: not declared`)
      else problems.push(...check(value[key], index, `${where}.${key}`))
    }
  }
  for (const [key, prop] of props) {
    const optional = (prop.flags & ts.SymbolFlags.Optional) !== 0
    if (!(key in value)) {
      if (!optional) problems.push(`${where}.${key}: declared, missing`)
      continue
    }
    problems.push(...check(value[key], checker.getTypeOfSymbolAtLocation(prop, source), `${where}.${key}`))
  }
  return problems
}

function conforms(value, typeName) {
  assert.deepEqual(check(value, declared(typeName), typeName), [])
}

/** Every event `emitter` emits under a name its `*Events` interface declares, with that type. */
function recordEvents(emitter, eventsName) {
  const seen = []
  for (const prop of checker.getPropertiesOfType(declared(eventsName))) {
    if (prop.name === 'error') continue
    const [payload] = checker.getTypeArguments(checker.getTypeOfSymbolAtLocation(prop, source))
    emitter.on(prop.name, (event) => seen.push({ where: `${eventsName}.${prop.name}`, event, payload }))
  }
  return seen
}

function eventsConform(seen, atLeast) {
  const names = new Set(seen.map((s) => s.where.split('.')[1]))
  for (const name of atLeast) assert.ok(names.has(name), `a ${name} event was seen`)
  for (const { where, event, payload } of seen) assert.deepEqual(check(event, payload, where), [])
}

test("the binding's typings compile against the generated shapes", () => {
  const binding = ts.createProgram([path.join(ROOT, 'binding.d.ts')], { strict: true, types: ['node'] })
  const problems = ts.getPreEmitDiagnostics(binding).map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'))
  assert.deepEqual(problems, [])
  const text = require('node:fs').readFileSync(path.join(ROOT, 'binding.d.ts'), 'utf8')
  assert.match(text, /start\(config: Shapes\.LlamaServerConfig\): Promise<Shapes\.ServerInfo>/)
})

test('the checker itself finds drift', () => {
  assert.deepEqual(
    check({ total: 1, available: 1, used: 1, extra: 2 }, declared('MemoryInfo'), 'MemoryInfo').filter((p) =>
      p.includes('extra'),
    ),
    ['MemoryInfo.extra: not declared'],
  )
  assert.ok(check({ status: 'nope' }, declared('ServerInfo'), 'ServerInfo').length > 0)
})

test('what the addon returns is what index.d.ts declares', { skip }, async () => {
  await withTinyModel(real)
  process.env.GENAI_ELECTRON_SD_CLI = real.sdCli
  const {
    systemInfo,
    modelManager,
    LlamaServerManager,
    DiffusionServerManager,
    RpcServerManager,
    ResourceOrchestrator,
  } = lib
  conforms(await systemInfo.detect(), 'SystemCapabilities')
  conforms(systemInfo.getMemoryInfo(), 'MemoryInfo')
  conforms(await modelManager.getModelInfo('tiny'), 'ModelInfo')
  conforms(await modelManager.getStorageUsage(), 'StorageUsage')
  const image = await downloadTinyImageSet(modelManager, real)
  conforms(image, 'ModelInfo')
  const llama = new LlamaServerManager()
  const diffusion = new DiffusionServerManager()
  const llamaEvents = recordEvents(llama, 'LlamaServerEvents')
  const diffusionEvents = recordEvents(diffusion, 'DiffusionServerEvents')
  conforms(llama.getInfo(), 'ServerInfo')
  conforms(diffusion.getInfo(), 'DiffusionServerInfo')
  const calibration = {
    modelId: 'tiny',
    profile: { contextSize: 512, parallelRequests: 1 },
    fixedConfig: { threads: 1 },
  }
  // A failing combination too: its run has the error's fields.
  calibration.combos = [{ overrides: {} }, { label: 'q8_0', overrides: { cacheTypeK: 'q8_0' } }]
  conforms(await llama.calibrate(calibration), 'LlamaCalibrationReport')
  process.env.GENAI_ELECTRON_SD_SERVER = real.sdServer
  const sizes = [{ width: 64, height: 64 }]
  const generation = { steps: 1, cfgScale: 1, sampler: 'euler', threads: 1 }
  conforms(await diffusion.calibrate({ modelId: 'tiny-image', sizes, generation }), 'DiffusionCalibrationReport')
  conforms(await llama.start({ modelId: 'tiny', port: 'auto', threads: 1, contextSize: 512 }), 'ServerInfo')
  try {
    conforms(llama.getConfig(), 'ResolvedLlamaConfig')
    conforms(llama.getStartConfig(), 'LlamaServerConfig')
    conforms(await llama.getMemoryUsage(), 'MemoryUsage')
    conforms(
      await diffusion.start({ modelId: 'tiny-image', backend: 'one-shot', port: 'auto', threads: 1 }),
      'DiffusionServerInfo',
    )
    conforms(diffusion.getConfig(), 'ResolvedDiffusionConfig')
    conforms(
      await diffusion.generateImage({ prompt: 'a cube', width: 64, height: 64, steps: 1, cfgScale: 1 }),
      'ImageGenerationResult',
    )
    const orchestrator = new ResourceOrchestrator(undefined, llama, diffusion, undefined, {
      ramBudgetBytes: 1 << 20,
      headroom: 0,
    })
    const orchestratorEvents = recordEvents(orchestrator, 'ResourceOrchestratorEvents')
    conforms(await orchestrator.estimate({ width: 64, height: 64 }), 'ResourceEstimate')
    conforms(orchestrator.getInfo(), 'OrchestratorInfo')
    orchestrator.once('offload', () => conforms(orchestrator.getSavedState(), 'SavedLLMState'))
    await orchestrator.orchestrateImageGeneration({ prompt: 'a cube', width: 64, height: 64, steps: 1, cfgScale: 1 })
    eventsConform(orchestratorEvents, ['phase', 'offload', 'reload'])
    const rpc = new RpcServerManager()
    const rpcEvents = recordEvents(rpc, 'RpcServerEvents')
    conforms(rpc.getInfo(), 'RpcServerInfo')
    conforms(await rpc.start({ port: 'auto', threads: 1, binaryPath: real.rpcServer }), 'RpcServerInfo')
    conforms(rpc.getConfig(), 'ResolvedRpcConfig')
    await rpc.stop()
    eventsConform(rpcEvents, ['state', 'starting', 'started', 'stopped', 'log'])
  } finally {
    await Promise.all([llama.stop(), diffusion.stop()])
  }
  eventsConform(llamaEvents, ['calibration-progress', 'state', 'starting', 'started', 'stopped', 'log'])
  eventsConform(diffusionEvents, ['calibration-progress', 'state', 'started', 'progress', 'job', 'stopped'])
})
