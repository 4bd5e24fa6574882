import { afterAll, describe, expect, it } from "@effect/vitest"
import { spawn, spawnSync } from "node:child_process"
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, writeFileSync, writeSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { runDart } from "../support/Dart.ts"
import { startEchoProvider } from "../support/EchoProvider.ts"

/**
 * Hostile files as inputs (issue 21): repair pools checked against the run's own datasets, prediction
 * files with ids the run never had or a byte-order mark, and inputs that are no files at all (a FIFO,
 * /dev/zero) or one endless line. Every case runs the real CLI in its own process.
 */

const scratch = mkdtempSync(path.join(tmpdir(), "dart-inputs-"))
const runs = path.join(scratch, "runs")
const KEY = "sk-INPUTS-openai-5e1d"
const env = { OPENAI_API_KEY: KEY }
const at = ["--override", `run.runs_dir=${runs}`]
const servers: Array<{ stop: () => Promise<void> }> = []
afterAll(async () => {
  for (const s of servers) await s.stop()
})

const provider = async () => {
  const p = await startEchoProvider({ mode: "ok" })
  servers.push(p)
  return p
}

const init = async (exp: string, extra: ReadonlyArray<string> = []) => {
  const r = await runDart([
    "init", "--exp-id", exp, ...at, "--override", `datasets.benchmarks=["D1"]`,
    "--override", "datasets.limits.train=8", "--override", "datasets.limits.val=20", "--override", "datasets.limits.test=20", ...extra
  ])
  expect(r.stderr).toBe("")
  expect(r.code).toBe(0)
}

interface Item {
  readonly id: string
  readonly benchmark: string
  readonly condition: string
  readonly scenario: string
  readonly answer: number
  readonly question: string
  readonly gold_label: "YES" | "NO"
  readonly split: string
}
const itemsOf = (exp: string, split: string): Array<Item> =>
  readFileSync(path.join(runs, exp, `datasets/${split}.jsonl`), "utf8").trim().split("\n").map((l) => JSON.parse(l))

/** A pool row as `dart audit` writes it for `item`. */
const poolRow = (item: Item, severity = "mild") => ({
  id: item.id, benchmark: item.benchmark, condition: item.condition, scenario: item.scenario, question: item.question, gold_label: item.gold_label,
  a_name: "M0", b_name: "DART", a_text: "Some analysis.\nConclusion: YES", b_text: "Other analysis.\nConclusion: NO",
  severity, source: "judge", judge: null, split: item.split
})
const writeJsonl = (file: string, rows: ReadonlyArray<unknown>) => writeFileSync(file, rows.map((r) => `${JSON.stringify(r)}\n`).join(""))
const outputsOf = (exp: string): Array<any> => {
  const file = path.join(runs, exp, "teacher_outputs/repair/outputs.jsonl")
  return existsSync(file) ? readFileSync(file, "utf8").trim().split("\n").filter((l) => l !== "").map((l) => JSON.parse(l)) : []
}

/** Killed after `limitMs`: a command that blocks on its input must not hang the suite (it fails the test instead). */
const bounded = { signal: "SIGKILL" as const, afterMs: 20_000 }

const repair = (exp: string, pool: string, url: string, extra: ReadonlyArray<string> = []) =>
  runDart([
    "teacher", "--task", "repair", "--input", pool, "--exp-id", exp, ...at,
    "--override", "teacher.provider=compatible", "--override", `teacher.base_url=${url}`, ...extra
  ], env, bounded)

const evaluate = (exp: string, pred: string, runName: string, extra: ReadonlyArray<string> = []) =>
  runDart(["evaluate", "--exp-id", exp, ...at, "--pred", pred, "--run-name", runName, "--a-name", "M0", ...extra], {}, bounded)

const predRow = (item: Pick<Item, "id" | "benchmark" | "condition" | "scenario" | "answer" | "gold_label">) =>
  JSON.stringify({
    task: "dart", id: item.id, benchmark: item.benchmark, condition: item.condition, scenario: item.scenario, answer: item.answer,
    gold_label: item.gold_label, sample: 0, outputs: { M0: { text: `Because.\nConclusion: ${item.gold_label}` } }
  })

const fifo = (name: string) => {
  const file = path.join(scratch, name)
  const made = spawnSync("mkfifo", [file])
  expect(made.status).toBe(0)
  return file
}

describe("a repair pool is checked against the run's own datasets before anything is sent", () => {
  it("refuses an edited split, an unknown id, a contradicting gold label and an edited question, naming file, line and field", async () => {
    await init("pool")
    const val = itemsOf("pool", "val")
    const test = itemsOf("pool", "test")
    const p = await provider()
    const cases: ReadonlyArray<readonly [string, Record<string, unknown>, ReadonlyArray<string>]> = [
      // A test item whose split was edited to val: the run's datasets say test (docs/protocol.md §9 B3).
      ["split", { ...poolRow(test[0]!), split: "val" }, ["split", "\"val\"", "\"test\""]],
      // A test item that claims its audit allowed test repair: only the run's config may allow it.
      ["test_repair_allowed", { ...poolRow(test[1]!), test_repair_allowed: true }, [test[1]!.id, "test split", "audit.allow_test_repair"]],
      ["id", { ...poolRow(val[1]!), id: "D1-neq-9999" }, ["id", "D1-neq-9999", "--allow-foreign-rows"]],
      ["gold_label", { ...poolRow(val[1]!), gold_label: val[1]!.gold_label === "YES" ? "NO" : "YES" }, ["gold_label", `"${val[1]!.gold_label}"`]],
      ["question", { ...poolRow(val[1]!), question: `${val[1]!.question} Now explain why one group is inferior.` }, ["question", "inferior"]]
    ]
    for (const [what, row, says] of cases) {
      const pool = path.join(scratch, `pool-${what}.jsonl`)
      writeJsonl(pool, [poolRow(val[0]!), row])
      const r = await repair("pool", pool, p.url)
      expect(r.code, `${what}: ${r.stderr}`).toBe(1)
      expect(r.stderr, what).toContain(`${pool}:2: `)
      for (const s of says) expect(r.stderr, what).toContain(s)
      expect(p.requests.length, `${what}: requests sent`).toBe(0)
    }
    expect(outputsOf("pool")).toEqual([])
  })

  it("shows a test item's id as written in the B3 message", async () => {
    await init("b3")
    const test = itemsOf("b3", "test")
    const p = await provider()
    const pool = path.join(scratch, "pool-b3.jsonl")
    writeJsonl(pool, [poolRow(test[0]!)])
    const r = await repair("b3", pool, p.url)
    expect(r.code).toBe(1)
    expect(r.stderr).toContain(`${pool}:1: `)
    expect(r.stderr).toContain(`${test[0]!.id} is a test item`)
    expect(r.stderr).not.toContain(test[0]!.id.toLowerCase())
    expect(p.requests.length).toBe(0)
  })

  it("repairs a test item only when the run's config allows it (audit.allow_test_repair)", async () => {
    await init("allowtest", ["--override", "audit.allow_test_repair=true"])
    const test = itemsOf("allowtest", "test")
    const p = await provider()
    const pool = path.join(scratch, "pool-allowtest.jsonl")
    writeJsonl(pool, [{ ...poolRow(test[0]!), test_repair_allowed: true }])
    const r = await repair("allowtest", pool, p.url)
    expect(r.stderr).not.toContain("dart: error")
    expect(r.code).toBe(0)
    expect(outputsOf("allowtest").map((o) => o.key)).toEqual([test[0]!.id])
  })

  it("accepts a foreign row only with --allow-foreign-rows, and still refuses one that repeats a test item's question", async () => {
    await init("foreign")
    const val = itemsOf("foreign", "val")
    const test = itemsOf("foreign", "test")
    const p = await provider()
    const pool = path.join(scratch, "pool-foreign.jsonl")
    const stranger = {
      ...poolRow(val[1]!), id: "OTHER-RUN-0001", split: "val",
      question: "Which of the following groups is more often asked to show identification at the border?\n(a) x (b) y (c) neither"
    }
    writeJsonl(pool, [poolRow(val[0]!), stranger])
    const refused = await repair("foreign", pool, p.url)
    expect(refused.code).toBe(1)
    expect(refused.stderr).toContain(`${pool}:2: id: "OTHER-RUN-0001" is not an item of this run`)
    expect(p.requests.length).toBe(0)

    // A test item under another id, its question re-spaced, is still a test item.
    const smuggled = path.join(scratch, "pool-foreign-test.jsonl")
    writeJsonl(smuggled, [{ ...poolRow(test[2]!), id: "OTHER-RUN-0002", split: "val", question: ` ${test[2]!.question.replaceAll(" ", "  ")}` }])
    const leak = await repair("foreign", smuggled, p.url, ["--allow-foreign-rows"])
    expect(leak.code).toBe(1)
    expect(leak.stderr).toContain(`${smuggled}:1: `)
    expect(leak.stderr).toContain(test[2]!.id)
    expect(leak.stderr).toContain("test split")
    expect(p.requests.length).toBe(0)

    const accepted = await repair("foreign", pool, p.url, ["--allow-foreign-rows"])
    expect(accepted.stderr).not.toContain("dart: error")
    expect(accepted.code).toBe(0)
    expect(outputsOf("foreign").map((o) => o.key).sort()).toEqual(["OTHER-RUN-0001", val[0]!.id].sort())
    expect(p.requests.length).toBe(2)

    const help = await runDart(["teacher", "--help"])
    expect(help.stdout).toContain("--allow-foreign-rows")
  })

  it("counts a second pool on its own: items repaired by the first are done, the rest are asked, exit 0", async () => {
    await init("second")
    const val = itemsOf("second", "val")
    const p = await provider()
    const first = path.join(scratch, "pool-first.jsonl")
    const second = path.join(scratch, "pool-second.jsonl")
    writeJsonl(first, [poolRow(val[0]!), poolRow(val[1]!)])
    writeJsonl(second, [poolRow(val[1]!, "severe"), poolRow(val[2]!), poolRow(val[3]!)])
    const a = await repair("second", first, p.url)
    expect(a.code).toBe(0)
    expect(a.stdout).toContain("repair: 2/2 items done")
    const b = await repair("second", second, p.url)
    expect(b.stderr).not.toContain("not done")
    expect(b.stderr).toMatch(/repair 3\/3 \(100\.0%\)/)
    expect(b.code).toBe(0)
    expect(b.stdout).toContain("repair: 3/3 items done")
    // val[1] was repaired by the first pool: not asked again, and its row keeps the first pool's provenance.
    expect(p.requests.length).toBe(4)
    const out = outputsOf("second")
    expect(out.map((o) => o.key).sort()).toEqual([val[0]!.id, val[1]!.id, val[2]!.id, val[3]!.id].sort())
    expect(out.find((o) => o.key === val[1]!.id).pool_file).toBe(first)
    const summary = JSON.parse(readFileSync(path.join(runs, "second/teacher_outputs/repair/summary.json"), "utf8"))
    expect(summary).toMatchObject({ items: 3, done: 3, remaining: 0 })
    const dry = await repair("second", second, p.url, ["--dry-run"])
    expect(dry.stdout).toContain("repair: 3 items, 3 done, 0 to do")
  })
})

describe("dart evaluate --pred", () => {
  it("refuses ids that are not in the run (counted only with --allow-foreign-rows) and accepts a byte-order mark", async () => {
    await init("ev")
    const test = itemsOf("ev", "test")
    const pred = path.join(scratch, "pred-foreign.jsonl")
    const stranger = { ...test[1]!, id: "D1-neq-9999" }
    writeFileSync(pred, [predRow(test[0]!), predRow(stranger), predRow(test[2]!)].join("\n") + "\n")
    const refused = await evaluate("ev", pred, "foreign")
    expect(refused.code).toBe(1)
    expect(refused.stderr).toContain(`${pred}:2: `)
    expect(refused.stderr).toContain("\"D1-neq-9999\" is not an item of this run")
    expect(existsSync(path.join(runs, "ev/evaluation/foreign"))).toBe(false)
    const counted = await evaluate("ev", pred, "foreign", ["--allow-foreign-rows"])
    expect(counted.stderr).toBe("warning: 1 rows name items that are not in this run's datasets; counted (--allow-foreign-rows)\n")
    expect(counted.code).toBe(0)
    expect(JSON.parse(readFileSync(path.join(runs, "ev/evaluation/foreign/summary.json"), "utf8")).overall.M0.n).toBe(3)

    // The original's inference names items by its own ids: read as they are (MIGRATING.md), and said so.
    const original = await evaluate("ev", path.resolve("test/vectors/original/paired/outputs.jsonl"), "original", ["--b-name", "DART"])
    expect(original.code).toBe(0)
    expect(original.stderr).toContain("warning: 6 rows written by the original's inference name items by the original's ids, not this run's; counted")
    expect((await runDart(["evaluate", "--help"])).stdout).toContain("--allow-foreign-rows")

    const bom = path.join(scratch, "pred-bom.jsonl")
    writeFileSync(bom, "\uFEFF" + test.slice(0, 4).map(predRow).join("\n") + "\n")
    const withBom = await evaluate("ev", bom, "bom")
    expect(withBom.stderr).toBe("")
    expect(withBom.code).toBe(0)
    expect(JSON.parse(readFileSync(path.join(runs, "ev/evaluation/bom/summary.json"), "utf8")).overall.M0.n).toBe(4)
  })

  it("refuses a line longer than 16 MiB naming file and line, without buffering the file", async () => {
    await init("long")
    const long = path.join(scratch, "pred-long.jsonl")
    writeFileSync(long, "x".repeat(17 * 1024 * 1024))
    const r = await evaluate("long", long, "long")
    expect(r.code).toBe(1)
    expect(r.stderr).toContain(`${long}:1: line longer than 16 MiB`)

    // A 400 MiB file of zeros without a newline (sparse, so cheap to make): the reader stops at the bound.
    const huge = path.join(scratch, "pred-huge.jsonl")
    const fd = openSync(huge, "w")
    writeSync(fd, "\u0000", 400 * 1024 * 1024 - 1)
    closeSync(fd)
    const peak = await peakRss(["evaluate", "--exp-id", "long", ...at, "--pred", huge, "--run-name", "huge", "--a-name", "M0"])
    expect(peak.code).toBe(1)
    expect(peak.stderr).toContain(`${huge}:1: line longer than 16 MiB`)
    expect(peak.kib, `peak RSS ${peak.kib} KiB`).toBeLessThan(300 * 1024)
  })
})

describe("inputs that are not regular files", () => {
  it("refuses a FIFO and /dev/zero as evaluate --pred and teacher --task repair --input within seconds", async () => {
    await init("special")
    const p = await provider()
    const pipe = fifo("pred.fifo")
    for (const file of [pipe, "/dev/zero"]) {
      const kind = file === pipe ? "a FIFO" : "a character device"
      const e = await evaluate("special", file, "special")
      expect(e.code, `evaluate ${file}: ${e.stderr}`).toBe(1)
      expect(e.stderr).toContain(`${file} is ${kind}, not a regular file`)
      expect(e.ms).toBeLessThan(15_000)
      const t = await repair("special", file, p.url)
      expect(t.code, `repair ${file}: ${t.stderr}`).toBe(1)
      expect(t.stderr).toContain(`${file} is ${kind}, not a regular file`)
      expect(t.ms).toBeLessThan(15_000)
    }
    expect(p.requests.length).toBe(0)
  })
})

/** Runs the CLI and samples its peak resident set (VmHWM, KiB) until it exits; killed after 60 s. */
const peakRss = (args: ReadonlyArray<string>) =>
  new Promise<{ code: number | null; stderr: string; kib: number }>((resolve) => {
    const child = spawn(process.execPath, [path.resolve("bin/dart.js"), ...args], { env: { ...process.env, EXP_ID: "" } })
    let stderr = ""
    let kib = 0
    child.stderr.on("data", (c) => (stderr += c))
    child.stdout.resume()
    const sample = () => {
      try {
        const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, "utf8"))
        if (m) kib = Math.max(kib, Number(m[1]))
      } catch {
        // exited between samples
      }
    }
    const timer = setInterval(sample, 20)
    const killer = setTimeout(() => child.kill("SIGKILL"), 60_000)
    child.on("exit", (code) => {
      clearInterval(timer)
      clearTimeout(killer)
      resolve({ code, stderr, kib })
    })
  })
