import { describe, expect, it } from "@effect/vitest"
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { SuiteFormatError } from "../../src/datasets/external/ExternalSuite.ts"
import { OPEN_ENDED_DOMAINS, parseOpenEndedQueries } from "../../src/datasets/OpenEndedQueries.ts"
import { runDart } from "../support/Dart.ts"

const FILE = "benchmark_suite/open_ended/example.jsonl"

describe("open-ended query sets", () => {
  it("the shipped example: 40 queries, 10 in each of the four domains, unique ids, notes for the judge", () => {
    const qs = parseOpenEndedQueries(readFileSync(FILE, "utf8"), FILE)
    expect(qs.length).toBe(40)
    for (const d of OPEN_ENDED_DOMAINS) expect(qs.filter((q) => q.domain === d).length, d).toBe(10)
    expect(new Set(qs.map((q) => q.id)).size).toBe(40)
    expect(qs.every((q) => (q.notes ?? "").length > 0)).toBe(true)
  })

  const bad = (text: string) => {
    try {
      parseOpenEndedQueries(text, "q.jsonl")
    } catch (e) {
      expect(e).toBeInstanceOf(SuiteFormatError)
      return (e as Error).message
    }
    throw new Error("no error")
  }
  const row = (id: string, extra: Record<string, unknown> = {}) => JSON.stringify({ id, domain: "legal", query: `query ${id}?`, ...extra })

  it("bad input names the file and the line", () => {
    expect(bad(`${row("a")}\n\n${row("b")}\n${row("a")}\n`)).toBe(`q.jsonl:4: id "a" repeats line 1; ids must be unique`)
    expect(bad(`${row("a")}\n${JSON.stringify({ id: "b", domain: "legal" })}\n`)).toMatch(/^q\.jsonl:2: .*query/)
    expect(bad(`${row("a")}\n${row("b", { query: "" })}\n`)).toMatch(/^q\.jsonl:2: .*query/)
    expect(bad(`${row("a")}\n{"id": "b",\n`)).toMatch(/^q\.jsonl:2: malformed JSON/)
    expect(bad(`${row("a", { answer: "YES" })}\n`)).toMatch(/^q\.jsonl:1: .*answer/)
    expect(bad(`${row("has space")}\n`)).toMatch(/^q\.jsonl:1: .*id/)
    expect(bad("\n\n")).toBe("q.jsonl: no queries (one JSON object per line: id, domain, query, optional notes)")
  })
})

describe("dart datasets check-queries", () => {
  it("summarises a good set, and refuses a bad one with its file and line and exit 1", async () => {
    const ok = await runDart(["datasets", "check-queries", FILE])
    expect([ok.code, ok.stdout.trim()]).toEqual([0, `${FILE}: 40 open-ended queries in 4 domain(s) (medical 10, legal 10, policy 10, educational 10); 40 with notes for the judge`])
    const dir = mkdtempSync(path.join(tmpdir(), "dart-queries-"))
    const file = path.join(dir, "q.jsonl")
    writeFileSync(file, `${JSON.stringify({ id: "a", domain: "legal", query: "Q?" })}\n${JSON.stringify({ id: "b", domain: "legal" })}\n`)
    const badRun = await runDart(["datasets", "check-queries", file])
    expect(badRun.code).toBe(1)
    expect(badRun.stderr).toMatch(new RegExp(`^dart: error: ${file.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}:2: .*query`))
  })
})

describe("dart init and the open-ended set", () => {
  it("exports the configured set (limited) to datasets/open_ended.jsonl, and refuses a bad one naming file and line, writing nothing", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "dart-init-queries-"))
    const runs = path.join(dir, "runs")
    const init = (exp: string, file: string) => runDart(["init", "--exp-id", exp, "--override", `run.runs_dir=${runs}`, "--override", 'datasets.benchmarks=["D1"]',
      "--override", `ood.open_ended.file=${JSON.stringify(file)}`, "--override", "ood.open_ended.limit=5"])
    const ok = await init("good", FILE)
    expect([ok.code, ok.stderr]).toEqual([0, ""])
    const exported = readFileSync(path.join(runs, "good/datasets/open_ended.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l))
    expect(exported).toEqual(parseOpenEndedQueries(readFileSync(FILE, "utf8"), FILE).slice(0, 5))

    const file = path.join(dir, "dupes.jsonl")
    writeFileSync(file, `${JSON.stringify({ id: "a", domain: "legal", query: "Q?" })}\n${JSON.stringify({ id: "a", domain: "medical", query: "R?" })}\n`)
    const badRun = await init("bad", file)
    expect(badRun.code).not.toBe(0)
    expect(badRun.stderr).toContain(`${file}:2: id "a" repeats line 1; ids must be unique`)
    expect(() => readFileSync(path.join(runs, "bad/datasets/test.jsonl"))).toThrow(/ENOENT/)
  })
})
