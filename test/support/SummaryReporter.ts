import type { Reporter, TestModule } from "vitest/node"

/** A fast-suite file slower than this belongs in the slow suite (see vitest.config.ts). */
const FAST_FILE_LIMIT_MS = 20_000

/**
 * Ends the run with the plain `N passed, N failed` line CI tooling reads. Before it, a note names the files of the
 * fast suite that took over 20 s (a hint, not a failure: a busy machine slows every file).
 */
export default class SummaryReporter implements Reporter {
  onTestRunEnd(testModules: ReadonlyArray<TestModule>) {
    let passed = 0
    let failed = 0
    let skipped = 0
    const long: Array<string> = []
    for (const m of testModules) {
      for (const t of m.children.allTests()) {
        const state = t.result().state
        if (state === "passed") passed++
        else if (state === "failed") failed++
        else skipped++
      }
      if (m.state() === "failed" && [...m.children.allTests()].length === 0) failed++
      const d = m.diagnostic()
      const ms = d.collectDuration + d.duration
      if (m.project.name === "fast" && ms > FAST_FILE_LIMIT_MS) long.push(`${m.relativeModuleId} (${Math.round(ms / 1000)} s)`)
    }
    if (long.length > 0) {
      process.stdout.write(
        `\nfast-suite files over ${FAST_FILE_LIMIT_MS / 1000} s: ${long.join(", ")}. One that is that slow on a quiet machine ` +
          `belongs in the slow suite: rename it *.slow.test.ts (or list it in vitest.config.ts).\n`
      )
    }
    process.stdout.write(`\n${passed} passed, ${failed} failed${skipped > 0 ? `, ${skipped} skipped` : ""}\n`)
  }
}
