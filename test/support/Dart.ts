import { spawn } from "node:child_process"
import * as path from "node:path"

const repo = process.cwd()

export interface DartRun {
  readonly code: number | null
  readonly signal: string | null
  readonly stdout: string
  readonly stderr: string
  readonly ms: number
}

/**
 * Runs the real `dart` entry point in its own process without blocking this one, so loopback
 * servers in the test process keep answering. `signal` is sent once `when` says so (or after
 * `afterMs`).
 */
export const runDart = (
  args: ReadonlyArray<string>,
  env: Record<string, string> = {},
  options: { readonly signal?: NodeJS.Signals; readonly afterMs?: number; readonly when?: () => boolean } = {}
) =>
  new Promise<DartRun>((resolve) => {
    const started = Date.now()
    const child = spawn(process.execPath, [path.join(repo, "bin/dart.js"), ...args], {
      cwd: repo,
      env: { ...process.env, EXP_ID: "", DEEPSEEK_API_KEY: "", OPENAI_API_KEY: "", HF_TOKEN: "", ...env }
    })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (c) => (stdout += c))
    child.stderr.on("data", (c) => (stderr += c))
    let timer: NodeJS.Timeout | undefined
    if (options.signal !== undefined) {
      const t0 = Date.now()
      timer = setInterval(() => {
        if ((options.when?.() ?? true) && Date.now() - t0 >= (options.afterMs ?? 0)) {
          child.kill(options.signal)
          clearInterval(timer)
        }
      }, 20)
    }
    child.on("exit", (code, signal) => {
      clearInterval(timer)
      resolve({ code, signal, stdout, stderr, ms: Date.now() - started })
    })
  })
