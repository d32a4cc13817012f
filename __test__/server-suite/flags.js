'use strict'

// What both launchers of the suite's servers do alike: they swap the Hugging Face models the suite
// asks for (unreachable here) for one installed chat model.

/** Model sources: each with its value, but `--offline` alone. */
const MODEL_FLAGS = new Set([
  '-m',
  '--model',
  '-hf',
  '-hfr',
  '--hf-repo',
  '-hff',
  '--hf-file',
  '-mu',
  '--model-url',
  '-md',
  '--model-draft',
  '--mmproj-url',
])

/** How many arguments from `argv[i]` name a model source (0: none). */
function modelFlags(argv, i) {
  if (argv[i] === '--offline') return 1
  return MODEL_FLAGS.has(argv[i]) ? 2 : 0
}

/** The value after the flag at `argv[i]`. */
function takeValue(argv, i) {
  if (i + 1 >= argv.length) throw new Error(`${argv[i]} needs a value`)
  return argv[i + 1]
}

module.exports = { modelFlags, takeValue }
