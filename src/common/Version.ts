import { execFileSync } from "node:child_process"
import pkg from "../../package.json" with { type: "json" }

export const toolVersion: string = pkg.version

/** The commit of the working tree DART runs from, when it is a git checkout. */
export const gitCommit = (): string | null => {
  try {
    return execFileSync("git", ["rev-parse", "HEAD"], { cwd: import.meta.dirname, stdio: ["ignore", "pipe", "ignore"] })
      .toString().trim() || null
  } catch {
    return null
  }
}
