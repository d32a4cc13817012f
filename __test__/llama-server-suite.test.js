'use strict'

// llama.cpp's own server test suite, through the gateway: every test that passes against
// llama-server alone (with the small chat model; recorded in server-suite/expected.json) must
// pass against the same binary started by llamaServer.start, but those where the gateway differs
// on purpose (`differ`, each with its reason; see docs/MIGRATING.md).

const test = require('node:test')
const assert = require('node:assert/strict')
const { backends } = require('./helpers')
const { runSuite, expected, tally } = require('./server-suite/run')

const real = backends()

test('llama.cpp server tests that pass direct pass through the gateway', async (t) => {
  if (real.skip) return t.skip(real.skip)
  if (!real.paths.serverSuite) return t.skip('the backends give no server test suite: run `npm run backends`')
  const { passDirect, differ } = expected()
  for (const id of Object.keys(differ))
    assert.ok(passDirect.includes(id), `differ names ${id}, which does not pass direct`)
  const tests = passDirect.filter((id) => !(id in differ))
  const run = await runSuite(real.paths, { via: 'gateway', tests })
  t.diagnostic(`${tests.length} tests run: ${JSON.stringify(tally(run.outcomes))}`)
  const missed = tests
    .filter((id) => run.outcomes[id] !== 'passed')
    .map((id) => `${id}: ${run.outcomes[id] ?? 'not run'}`)
  assert.deepEqual(missed, [], `through the gateway, not as direct:\n${run.output.slice(-8000)}`)
})

test("the suite's llama-server command line becomes llamaServer.start's config", () => {
  const { configFor } = require('./server-suite/llama-server')
  const argv = ['--port', '8080', '--temp', '0.8', '--host', '127.0.0.1,::1', '--offline', '--hf-repo', 'ggml-org/x']
  argv.push('--hf-file', 'x.gguf', '--jinja', '-ctk', 'q8_0', '--ctx-size', '256', '--no-slots')
  argv.push('--cors-origins', 'localhost,http://a.test', '--api-key', 'k', '--cont-batching')
  assert.deepEqual(configFor(argv, 'chat'), {
    modelId: 'chat',
    port: 8080,
    host: '127.0.0.1,::1',
    jinja: true,
    cacheTypeK: 'q8_0',
    contextSize: 256,
    allowedOrigins: ['http://a.test'],
    apiKey: 'k',
    continuousBatching: true,
    extraArgs: ['--temp', '0.8', '--no-slots'],
  })
  assert.throws(() => configFor(['--port'], 'chat'), /--port needs a value/)
})
