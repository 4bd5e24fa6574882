import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { execFileSync } from "node:child_process"
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { startClassifyServer } from "../support/ClassifyServer.ts"
import { runDart } from "../support/Dart.ts"
import { startEchoProvider } from "../support/EchoProvider.ts"

/**
 * Hostile files in and around a run (issue 21): symbolic links planted under `runs/{EXP_ID}/`, special files given
 * as inputs, an exp id of kilobytes. Every case runs the real CLI in its own process.
 */

const scratch = mkdtempSync(path.join(tmpdir(), "dart-runfiles-"))
const runs = path.join(scratch, "runs")
const at = ["--override", `run.runs_dir=${runs}`]
const env = { OPENAI_API_KEY: "sk-RUNFILES-0000" }
let provider: Awaited<ReturnType<typeof startEchoProvider>>
let classify: Awaited<ReturnType<typeof startClassifyServer>>
const classifiers = () => JSON.stringify([
  { name: "toxicity", model: "tox-model", label: "toxic", max_tokens: 512, endpoint: classify.url, id2label: { 0: "non-toxic", 1: "toxic" } }
])

beforeAll(async () => {
  provider = await startEchoProvider({ mode: "ok" })
  classify = await startClassifyServer({ model: "tox-model", id2label: { 0: "non-toxic", 1: "toxic" }, harmfulIndex: 1, marker: "tox" })
})
afterAll(async () => {
  await provider.stop()
  await classify.close()
})

const init = async (exp: string) => {
  const r = await runDart(["init", "--exp-id", exp, ...at, "--override", `datasets.benchmarks=["D1"]`, "--override", "datasets.limits.train=4",
    "--override", "datasets.limits.val=4", "--override", "datasets.limits.test=4", "--override", `audit.classifiers=${classifiers()}`])
  expect(r.stderr).toBe("")
  expect(r.code).toBe(0)
  return path.join(runs, exp)
}

// A hang on today's code must fail the test, not the suite: the child is killed after this long.
const guard = { signal: "SIGKILL" as const, afterMs: 60_000 }

const teacher = (exp: string) =>
  runDart(["teacher", "--task", "distill", "--exp-id", exp, ...at, "--override", "teacher.provider=compatible", "--override", `teacher.base_url=${provider.url}`],
    env, guard)

/** A folder outside every run, with what it holds, to prove nothing there changed. */
const outsideFolder = (files: Record<string, string>) => {
  const dir = mkdtempSync(path.join(scratch, "elsewhere-"))
  for (const [name, text] of Object.entries(files)) writeFileSync(path.join(dir, name), text)
  return dir
}
const contents = (dir: string) => Object.fromEntries(readdirSync(dir).sort().map((f) => [f, readFileSync(path.join(dir, f), "utf8")]))

describe("symbolic links planted in a run are never followed", () => {
  // outputs.jsonl and responses.jsonl are read before they are appended to: an empty target is valid JSONL, so
  // before the fix the stage ran and appended its rows to it. failures.jsonl is a dangling link: the appender
  // would have created the file it names.
  for (const [name, target] of [["outputs.jsonl", "target.jsonl"], ["responses.jsonl", "target.jsonl"], ["failures.jsonl", "created.jsonl"]] as const) {
    it(`teacher refuses a link at teacher_outputs/distill/${name}, naming it; the file it points to is unchanged`, async () => {
      const exp = `link-${name.replace(".jsonl", "")}`
      const run = await init(exp)
      const outside = outsideFolder({ "target.jsonl": "", "other.txt": "precious\n" })
      const before = contents(outside)
      const link = path.join(run, "teacher_outputs/distill", name)
      symlinkSync(path.join(outside, target), link)
      const r = await teacher(exp)
      expect(r.signal).toBeNull()
      expect(r.code).toBe(1)
      expect(r.stderr).toContain(`${link} is a symbolic link (to ${path.join(outside, target)})`)
      expect(contents(outside)).toEqual(before)
    })
  }

  it("teacher refuses a link planted for the folder teacher_outputs/distill; nothing is written where it points", async () => {
    const run = await init("link-folder")
    const outside = outsideFolder({ "notes.txt": "precious\n" })
    const before = contents(outside)
    const folder = path.join(run, "teacher_outputs/distill")
    rmSync(folder, { recursive: true })
    symlinkSync(outside, folder)
    const r = await teacher("link-folder")
    expect(r.signal).toBeNull()
    expect(r.code).toBe(1)
    expect(r.stderr).toContain(`${folder} is a symbolic link (to ${outside})`)
    expect(contents(outside)).toEqual(before)
  })

  it("status --verify lists every link in the run with its target and exits 1; a clean run passes", async () => {
    const run = await init("link-status")
    const clean = await runDart(["status", "--verify", "--exp-id", "link-status", ...at])
    expect(clean.stderr).toBe("")
    expect(clean.code).toBe(0)
    // A link to an identical copy has the recorded size and sha256: only the walk can tell.
    const outside = outsideFolder({})
    const val = path.join(run, "datasets/val.jsonl")
    copyFileSync(val, path.join(outside, "val.jsonl"))
    unlinkSync(val)
    symlinkSync(path.join(outside, "val.jsonl"), val)
    mkdirSync(path.join(run, "logs/deep"), { recursive: true })
    symlinkSync("/etc/hostname", path.join(run, "logs/deep/host"))
    const r = await runDart(["status", "--verify", "--exp-id", "link-status", ...at])
    expect(r.code).toBe(1)
    const all = r.stdout + r.stderr
    expect(all).toContain(`datasets/val.jsonl -> ${path.join(outside, "val.jsonl")}`)
    expect(all).toContain("logs/deep/host -> /etc/hostname")
    expect(r.stderr).toMatch(/2 symbolic links/)
  })
})

describe("special files as inputs fail fast", () => {
  const audit = (exp: string, input: string) =>
    runDart(["audit", "--exp-id", exp, ...at, "--override", `audit.classifiers=${classifiers()}`, "--paired-input", input,
      "--a-name", "M0", "--b-name", "DART", "--run-name", "special", "--no-use-llm-judge"], {}, guard)

  it("audit --paired-input refuses a FIFO and /dev/zero within seconds, saying what they are", async () => {
    await init("special")
    const fifo = path.join(scratch, "pairs.fifo")
    execFileSync("mkfifo", [fifo])
    for (const [input, kind] of [[fifo, "FIFO"], ["/dev/zero", "character device"]] as const) {
      const r = await audit("special", input)
      expect(r.signal, input).toBeNull()
      expect(r.code, input).toBe(1)
      expect(r.stderr, input).toContain(input)
      expect(r.stderr, input).toContain(kind)
      expect(r.ms, input).toBeLessThan(20_000)
    }
  })
})

describe("an exp id of kilobytes", () => {
  it("is shown cut, not echoed whole", async () => {
    const long = `a${"b".repeat(4999)}`
    for (const args of [["--exp-id", long], ["--override", `run.exp_id="${long}"`]]) {
      const r = await runDart(["status", ...args, ...at])
      expect(r.code).not.toBe(0)
      expect(r.stderr).toContain("exp ids are 1-128 characters")
      expect(r.stderr).not.toContain("b".repeat(81))
      expect(r.stderr.length, r.stderr).toBeLessThan(300)
    }
    const fromEnv = await runDart(["init", ...at], { EXP_ID: long })
    expect(fromEnv.code).not.toBe(0)
    expect(fromEnv.stderr.length, fromEnv.stderr).toBeLessThan(300)
  })
})
