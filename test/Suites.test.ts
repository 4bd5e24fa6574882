import { describe, expect, it } from "vitest"
import { execFileSync } from "node:child_process"
import { existsSync, lstatSync, readdirSync, readFileSync } from "node:fs"
import * as path from "node:path"
import { slowLoopbackTests, slowTests } from "../vitest.config.ts"

/**
 * Every test is run by exactly one suite: `npm test` (fast) or `npm run test:slow`, and CI runs both. The vitest
 * projects are asked which files they run (`vitest list`), so what is checked is what runs; the trainer's pytest
 * is split between `test:trainer` (all but the `--ignore`d files and `--deselect`ed tests) and `test:trainer:slow`
 * (exactly those, named).
 */

const root = path.resolve(import.meta.dirname, "..")
const skippedDirs = new Set(["node_modules", ".git", ".venv", "__pycache__", ".pytest_cache", "runs", "scratch"])

/** Tracked files plus new ones git does not ignore; a copy without `.git` is walked instead. */
const repoFiles = (): Array<string> => {
  try {
    const out = execFileSync("git", ["ls-files", "-z", "--cached", "--others", "--exclude-standard"], {
      cwd: root,
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"],
      maxBuffer: 64 * 1024 * 1024
    })
    return out.split("\0").filter((f) => f !== "" && existsSync(path.join(root, f)) && lstatSync(path.join(root, f)).isFile())
  } catch {
    const walk = (rel: string): Array<string> =>
      readdirSync(path.join(root, rel), { withFileTypes: true }).flatMap((e) => {
        const child = rel === "" ? e.name : `${rel}/${e.name}`
        if (e.isDirectory()) return skippedDirs.has(e.name) ? [] : walk(child)
        return e.isFile() ? [child] : []
      })
    return walk("")
  }
}

// What vitest would take for a test file by its own default pattern, wherever it lies.
const vitestFile = /\.(test|spec)\.[cm]?[jt]sx?$/
const pytestFile = /^containers\/[^/]+\/tests\/(test_[^/]*|[^/]*_test)\.py$/

const listed = (): Array<{ file: string; projectName: string }> => {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("VITEST") && k !== "NODE_OPTIONS" && k !== "TEST"))
  const out = execFileSync(process.execPath, [path.join(root, "node_modules/vitest/vitest.mjs"), "list", "--filesOnly", "--json"], {
    cwd: root,
    env,
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
    maxBuffer: 16 * 1024 * 1024
  })
  return (JSON.parse(out) as Array<{ file: string; projectName: string }>).map((e) => ({
    file: path.relative(root, e.file).split(path.sep).join("/"),
    projectName: e.projectName
  }))
}

const scripts = (JSON.parse(readFileSync(path.join(root, "package.json"), "utf8")) as { scripts: Record<string, string> }).scripts

describe("the fast and the slow suite", () => {
  it("together run every test file, each in exactly one of them", () => {
    const files = repoFiles().filter((f) => vitestFile.test(f))
    expect(files.length).toBeGreaterThan(0)
    const runs = listed()
    const suitesOf = (file: string) => runs.filter((r) => r.file === file).map((r) => r.projectName).sort()
    expect(files.map((f) => ({ file: f, suites: suitesOf(f) })).filter((f) => f.suites.length !== 1)).toEqual([])
    // The slow suite is two projects run side by side (scripts/test-slow.ts): "slow" and "slow-loopback".
    expect(new Set(runs.map((r) => r.projectName))).toEqual(new Set(["fast", "slow", "slow-loopback"]))
  }, 60_000)

  it("lists as slow only files that exist (a renamed file must be renamed in vitest.config.ts too)", () => {
    const named = [...slowTests, ...slowLoopbackTests].filter((p) => !/[*?{[]/.test(p))
    expect(named.filter((f) => !existsSync(path.join(root, f)))).toEqual([])
  })

  it("split the trainer's pytest the same way: all but the --ignore'd files and --deselect'ed tests, and exactly those", () => {
    const dir = "containers/trainer"
    const left = [...scripts["test:trainer"]!.matchAll(/--(?:ignore|deselect)[= ](\S+)/g)].map((m) => m[1]!).sort()
    const named = [...scripts["test:trainer:slow"]!.matchAll(/(?<=\s)(tests\/\S+\.py(?:::\S+)?)/g)].map((m) => m[1]!).sort()
    expect(named).toEqual(left)
    expect(named.filter((id) => !existsSync(path.join(root, dir, id.split("::")[0]!)))).toEqual([])
    // No other folder holds trainer-style tests that neither command runs.
    expect(repoFiles().filter((f) => pytestFile.test(f) && !f.startsWith(`${dir}/`))).toEqual([])
  })

  it("are what npm test, npm run test:slow and npm run test:all run", () => {
    expect(scripts["test"]).toMatch(/vitest run --project fast\b/)
    expect(scripts["test"]).toMatch(/npm run test:trainer$/)
    expect(scripts["test:slow"]).toBe("node scripts/test-slow.ts")
    // Both vitest projects at once, and the trainer's slow pytest (package.json's own script) after the loopback one.
    const runner = readFileSync(path.join(root, "scripts/test-slow.ts"), "utf8")
    expect(runner).toContain(`run("slow", true),\n  run("slow-loopback", false).then(async (l) => {`)
    expect(runner).toContain(`withTrainer ? await npmScript("test:trainer")`)
    expect(runner).toContain(`await npmScript("test:trainer:slow")`)
    // test:all is npm test then npm run test:slow, with the trainer's quick pytest moved beside the slow vitest project.
    expect(scripts["test:all"]).toBe(`${scripts["test"]!.replace(" && npm run test:trainer", "")} && node scripts/test-slow.ts --with-trainer`)
  })
})
