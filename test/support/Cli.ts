import { spawnSync } from "node:child_process"
import { existsSync, readdirSync, statSync } from "node:fs"
import * as path from "node:path"

const repo = process.cwd()

/** Runs the real `dart` entry point as a user would, in its own process. */
export const dart = (args: ReadonlyArray<string>, env: Record<string, string> = {}) => {
  const r = spawnSync(process.execPath, [path.join(repo, "bin/dart.js"), ...args], {
    cwd: repo,
    env: { ...process.env, EXP_ID: "", ...env },
    encoding: "utf8",
    maxBuffer: 64 * 1024 * 1024
  })
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}

export const filesUnder = (dir: string): Array<string> =>
  existsSync(dir)
    ? readdirSync(dir, { recursive: true, encoding: "utf8" }).map((f) => path.join(dir, f)).filter((f) => statSync(f).isFile())
    : []
