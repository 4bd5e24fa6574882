import { describe, expect, it } from "@effect/vitest"
import { mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { dart, filesUnder } from "../support/Cli.ts"

const readJsonl = (file: string) => readFileSync(file, "utf8").trim().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>)

describe("dart init", () => {
  const runs = mkdtempSync(path.join(tmpdir(), "dart-runs-"))
  const at = ["--override", `run.runs_dir=${runs}`]

  it("exports all 14,000 items split by scenario with counts per benchmark, condition and split", () => {
    const r = dart(["init", "--exp-id", "demo", ...at])
    expect(r.stderr).toBe("")
    expect(r.code).toBe(0)
    expect(r.stdout).toContain("14000 items")
    const dir = path.join(runs, "demo")
    for (const sub of ["configs", "datasets", "teacher_outputs/distill", "teacher_outputs/repair", "adapters", "predictions", "audit", "evaluation", "logs"]) {
      expect(statSync(path.join(dir, sub)).isDirectory()).toBe(true)
    }
    const items = ["train", "val", "test"].flatMap((s) => readJsonl(path.join(dir, `datasets/${s}.jsonl`)))
    expect(items).toHaveLength(14_000)
    for (const item of items) expect(item.gold_label).toBe(item.condition === "neq" ? "YES" : "NO")
    const home = new Map<string, unknown>()
    for (const item of items) {
      const key = `${item.benchmark}/${item.scenario}`
      expect(home.get(key) ?? item.split).toBe(item.split)
      home.set(key, item.split)
    }
    const manifest = JSON.parse(readFileSync(path.join(dir, "datasets/manifest.json"), "utf8"))
    expect(manifest.strategy).toBe("scenario")
    expect(manifest.benchmarks).toEqual(["D1", "D2", "D3", "D4", "N2", "N3", "N4"])
    expect(manifest.counts.D1.neq).toEqual({ train: 800, val: 100, test: 100 })
    for (const [b, byCondition] of Object.entries(manifest.counts as Record<string, Record<string, Record<string, number>>>)) {
      for (const [c, n] of Object.entries(byCondition)) {
        expect(n.train! + n.val! + n.test!, `${b} ${c}`).toBe(1000)
        const counted = items.filter((i) => i.benchmark === b && i.condition === c)
        for (const s of ["train", "val", "test"]) expect(counted.filter((i) => i.split === s).length).toBe(n[s])
      }
    }
    const runManifest = JSON.parse(readFileSync(path.join(dir, "manifest.json"), "utf8"))
    expect(runManifest).toMatchObject({ exp_id: "demo", tool_version: "0.1.0", node_version: process.version })
    expect(runManifest.stages.init.status).toBe("done")
    expect(runManifest.stages.init.outputs.map((o: { path: string }) => o.path)).toContain("datasets/test.jsonl")
  })

  it("changes nothing when re-run with the same config and refuses a different one", () => {
    const dir = path.join(runs, "demo")
    const before = filesUnder(dir).map((f) => [f, readFileSync(f, "utf8"), statSync(f).mtimeMs])
    const again = dart(["init", "--exp-id", "demo", ...at])
    expect(again.code).toBe(0)
    expect(again.stdout).toContain("up to date")
    expect(filesUnder(dir).map((f) => [f, readFileSync(f, "utf8"), statSync(f).mtimeMs])).toEqual(before)

    const changed = dart(["init", "--exp-id", "demo", ...at, "--override", "training.epochs=5", "--override", "datasets.split.seed=7"])
    expect(changed.code).toBe(1)
    expect(changed.stderr).toContain("already exists")
    expect(changed.stderr).toContain("training.epochs: 3 (recorded) -> 5 (now)")
    expect(changed.stderr).toContain("datasets.split.seed: 42 (recorded) -> 7 (now)")
    expect(filesUnder(dir).map((f) => [f, readFileSync(f, "utf8"), statSync(f).mtimeMs])).toEqual(before)
  })

  it("reproduces the original item-level split with the upstream strategy", () => {
    const r = dart(["init", "--exp-id", "up", ...at, "--override", "datasets.split.strategy=upstream"])
    expect(r.code).toBe(0)
    const vector = JSON.parse(readFileSync("test/vectors/upstream_split.json", "utf8"))
    for (const s of ["train", "val", "test"]) {
      expect(readJsonl(path.join(runs, "up", `datasets/${s}.jsonl`)).map((i) => i.id)).toEqual(vector[s])
    }
  })

  it("keeps secrets from the environment out of every file it writes", () => {
    const markers = { DEEPSEEK_API_KEY: "sk-MARKER-deepseek-0001", OPENAI_API_KEY: "sk-MARKER-openai-0002", HF_TOKEN: "hf_MARKER_0003" }
    const r = dart(["init", "--exp-id", "secrets", ...at], markers)
    expect(r.code).toBe(0)
    const files = filesUnder(path.join(runs, "secrets"))
    expect(files.length).toBeGreaterThan(4)
    for (const f of files) {
      const text = readFileSync(f, "utf8")
      for (const m of Object.values(markers)) expect(text.includes(m), f).toBe(false)
    }
    for (const m of Object.values(markers)) expect(r.stdout + r.stderr).not.toContain(m)
  })

  it("shows the stage ledger with dart status", () => {
    const r = dart(["status", "--exp-id", "demo", ...at])
    expect(r.code).toBe(0)
    expect(r.stdout).toMatch(/init\s+done\s+1/)
    const missing = dart(["status", "--exp-id", "nope", ...at])
    expect(missing.code).toBe(1)
    expect(missing.stderr).toContain(`no run "nope"`)
  })
})

describe("bad input", () => {
  const scratch = mkdtempSync(path.join(tmpdir(), "dart-bad-"))
  const runs = path.join(scratch, "runs")
  const write = (name: string, text: string) => {
    const file = path.join(scratch, name)
    writeFileSync(file, text)
    return file
  }
  const expectRejected = (args: ReadonlyArray<string>, message: string | RegExp) => {
    const r = dart([...args, "--override", `run.runs_dir=${runs}`])
    expect(r.code).not.toBe(0)
    expect(r.stderr).toMatch(message)
    expect(filesUnder(runs)).toEqual([])
  }

  it("unknown key", () => {
    const cfg = write("unknown.json", `{"training": {"epocs": 3}}`)
    expectRejected(["init", "--config", cfg], new RegExp(`${cfg}: invalid config\\n  training.epocs: unknown key \\(did you mean "epochs"\\?\\)`))
  })

  it("wrong type", () => {
    const cfg = write("type.json", `{"training": {"learning_rate": "fast"}}`)
    expectRejected(["init", "--config", cfg], `training.learning_rate: expected number, got "fast"`)
  })

  it("malformed JSON config", () => {
    const cfg = write("malformed.json", `{"training": {"epochs": 3,}}`)
    expectRejected(["init", "--config", cfg], new RegExp(`${cfg}: malformed JSON at line 1, column 27`))
  })

  it("malformed override", () => {
    expectRejected(["init", "--override", "training.epochs"], `malformed --override "training.epochs": expected key.path=value`)
    expectRejected(["init", "--override", "training.epochs=[1"], /training.epochs: expected number, got "\[1"/)
  })

  it("malformed JSONL row", () => {
    const rows = readFileSync("benchmark_suite/D1.jsonl", "utf8").split("\n")
    rows[41] = rows[41]!.replace(`"answer": 0`, `"answer": "zero"`).replace(`"answer": 1`, `"answer": "zero"`)
    writeFileSync(path.join(scratch, "D1.jsonl"), rows.join("\n"))
    expectRejected(["init", "--override", `datasets.suite_dir=${scratch}`], new RegExp(`${scratch}/D1.jsonl:42: answer: expected 0 \\| 1 \\| 2, got "zero"`))
  })

  it("unknown benchmark name", () => {
    expectRejected(["init", "--override", `datasets.benchmarks=["D1","X9"]`], /datasets.benchmarks\[1\]: expected "D1" \| "D2"/)
    expectRejected(["datasets", "import", "X9_1k.pkl"], /unknown benchmark "X9"/)
  })

  it("a configured benchmark without its file", () => {
    expectRejected(["init", "--override", `datasets.benchmarks=["N1"]`], /benchmark N1 is configured but .*N1.jsonl does not exist \(N1 is not redistributed/)
  })

  it("unknown flag and command exit non-zero", () => {
    expect(dart(["init", "--bogus"]).code).toBe(2)
    expect(dart(["frobnicate"]).code).toBe(2)
  })
})

describe("dart datasets import", () => {
  it("writes the suite file from an upstream pickle, and a later init picks it up", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "dart-import-"))
    const suite = path.join(dir, "suite")
    const r = dart(["datasets", "import", path.join(import.meta.dirname, "../fixtures/upstream/D1_1k.pkl"), "--override", `datasets.suite_dir=${suite}`])
    expect(r.stderr).toBe("")
    expect(r.code).toBe(0)
    expect(readFileSync(path.join(suite, "D1.jsonl"), "utf8")).toBe(readFileSync("benchmark_suite/D1.jsonl", "utf8"))
    const same = dart(["datasets", "import", path.join(import.meta.dirname, "../fixtures/upstream/D1_1k.pkl"), "--override", `datasets.suite_dir=${suite}`])
    expect(same.stdout).toContain("already holds these 2000 rows")
    const init = dart(["init", "--exp-id", "imported", "--override", `datasets.suite_dir=${suite}`, "--override", `run.runs_dir=${dir}/runs`])
    expect(init.code).toBe(0)
    expect(init.stdout).toContain("2000 items")
  })

  it("every command has --help", () => {
    // Every command the help lists, and every subcommand those list, answers --help with its own usage.
    const subcommands = (stdout: string) =>
      stdout.includes("SUBCOMMANDS") ? [...stdout.slice(stdout.indexOf("SUBCOMMANDS")).matchAll(/^ {2}(\w[\w-]*) /gm)].map((m) => m[1]!) : []
    const top = dart(["--help"])
    expect(top.code).toBe(0)
    const commands = subcommands(top.stdout)
    for (const name of ["init", "teacher", "train", "evaluate", "status", "datasets"]) expect(commands).toContain(name)
    const queue = commands.map((c) => [c])
    const seen: Array<string> = []
    while (queue.length > 0) {
      const args = queue.shift()!
      const r = dart([...args, "--help"])
      expect(r.code, args.join(" ")).toBe(0)
      expect(r.stdout, args.join(" ")).toContain(`USAGE\n  dart ${args.join(" ")} `)
      seen.push(args.join(" "))
      for (const sub of subcommands(r.stdout)) queue.push([...args, sub])
    }
    expect(seen).toContain("datasets import")
  })
})
