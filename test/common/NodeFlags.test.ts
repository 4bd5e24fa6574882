import { describe, expect, it } from "@effect/vitest"
import { spawnSync } from "node:child_process"
import * as path from "node:path"

// Asked in a child process: the flags are the child's command line and NODE_OPTIONS.
const gave = (args: ReadonlyArray<string>, nodeOptions: string, flag: string) => {
  const module = path.resolve("src/common/NodeFlags.ts")
  const r = spawnSync(process.execPath, [...args, "--input-type=module", "-e", `import { userGaveFlag } from ${JSON.stringify(module)}; console.log(userGaveFlag(${JSON.stringify(flag)}))`], {
    encoding: "utf8",
    env: { ...process.env, NODE_OPTIONS: nodeOptions }
  })
  if (r.status !== 0) throw new Error(r.stderr)
  return r.stdout.trim() === "true"
}

describe("userGaveFlag", () => {
  it("sees a flag on the command line or in NODE_OPTIONS, in its --x, --x=v, --no-x and underscore forms", () => {
    expect(gave([], "", "--concurrent-marking")).toBe(false)
    expect(gave(["--no-concurrent-marking"], "", "--concurrent-marking")).toBe(true)
    expect(gave(["--concurrent_marking"], "", "--concurrent-marking")).toBe(true)
    expect(gave([], "--max-semi-space-size=4", "--max-semi-space-size")).toBe(true)
    expect(gave(["--heap-growing-percent=30"], "", "--heap-growing-percent")).toBe(true)
    expect(gave(["--heap-growing-percent=30"], "", "--heap-growing")).toBe(false)
  })
})
