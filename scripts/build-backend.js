'use strict'

// Builds one backend from a pinned source archive through the library's own source-build path
// (binaries.buildFromSource), printing progress to stderr (a progress bar of the compile steps
// on a terminal, a line a stage otherwise) and the executables as JSON to stdout.
// usage: node scripts/build-backend.js [--platform=win32-x64] KIND ARCHIVE SHA256 SUBDIR WORK_DIR [CMAKE_ARG...]
// (--platform: a cross build for that platform, see SourceBuildSpec.platform)
const cliProgress = require('cli-progress')
const { binaries, configure } = require('..')

async function main() {
  const args = process.argv.slice(2)
  const platform = args[0]?.startsWith('--platform=') ? args.shift().slice('--platform='.length) : undefined
  const [kind, archive, sha256, subdir, workDir, ...cmakeArgs] = args
  // The install record goes to a data folder beside the build, not the user's.
  configure({ dataDir: `${workDir}/data` })
  const bar = process.stderr.isTTY
    ? new cliProgress.SingleBar(
        {
          format: `   ${kind} compile [{bar}] {value}/{total} steps | {duration_formatted}`,
          stream: process.stderr,
          hideCursor: true,
        },
        cliProgress.Presets.shades_classic,
      )
    : null
  let last = ''
  binaries.on('binary-progress', (e) => {
    if (e.steps && bar) {
      if (!bar.isActive) bar.start(e.steps.total, 0)
      bar.setTotal(e.steps.total)
      bar.update(e.steps.done)
      return
    }
    // The compile is over once another stage speaks: the bar shows it whole, on its own line.
    if (bar?.isActive) {
      bar.update(bar.getTotal())
      bar.stop()
    }
    const line = e.detail ? `${e.stage}: ${e.detail}` : e.stage
    if (line !== last) console.error(`   ${kind} ${line}`)
    last = line
  })
  try {
    const spec = { archive, sha256, subdir, cmakeArgs, platform }
    const built = await binaries.buildFromSource(kind, spec, { workDir })
    console.log(JSON.stringify(built))
  } finally {
    bar?.stop()
  }
}

main().catch((err) => {
  console.error(err.message, err.details ?? '')
  process.exit(1)
})
