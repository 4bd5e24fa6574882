import { mkdtempSync, readdirSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"

/**
 * Vitest global set-up: one temporary root per test run, given to every worker and child process as TMPDIR and
 * removed at the end, so the suite leaves nothing in /tmp (its tiny models and run folders come to gigabytes).
 * Roots of earlier runs whose process is gone (killed before their teardown) are removed first.
 */
const PREFIX = "dart-test-"

const alive = (pid: number) => {
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM"
  }
}

export default function setup() {
  const base = tmpdir()
  for (const name of readdirSync(base)) {
    const pid = Number(new RegExp(`^${PREFIX}(\\d+)-`).exec(name)?.[1])
    if (Number.isInteger(pid) && pid !== process.pid && !alive(pid)) rmSync(path.join(base, name), { recursive: true, force: true })
  }
  const root = mkdtempSync(path.join(base, `${PREFIX}${process.pid}-`))
  process.env.TMPDIR = root
  return () => {
    rmSync(root, { recursive: true, force: true })
  }
}
