import { describe, expect, it } from "@effect/vitest"
import { spawnSync } from "node:child_process"
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { PyRandom } from "../../src/datasets/PyRandom.ts"
import { dart, filesUnder } from "../support/Cli.ts"

const scratch = mkdtempSync(path.join(tmpdir(), "dart-eval-"))
const runs = path.join(scratch, "runs")
const at = ["--override", `run.runs_dir=${runs}`]
const suite = new Map<string, { id: string; benchmark: string; condition: string; scenario: string; answer: number }>()
for (const b of ["D1", "D2", "D3", "D4", "N2", "N3", "N4"]) {
  for (const l of readFileSync(`benchmark_suite/${b}.jsonl`, "utf8").trim().split("\n")) {
    const r = JSON.parse(l)
    suite.set(r.id, r)
  }
}

describe("dart evaluate, task mc: the published llama-3.1-8b generations", () => {
  const pred = path.join(scratch, "mc.jsonl")
  const rows: Array<string> = []
  for (const l of readFileSync(new URL("../fixtures/reference-llama-3.1-8b/generations.jsonl", import.meta.url), "utf8").trim().split("\n")) {
    const g = JSON.parse(l)
    const item = suite.get(g.id)
    if (item === undefined) continue // N1 items are not public, so its generations cannot be scored
    rows.push(JSON.stringify({ task: "mc", id: g.id, benchmark: g.benchmark, condition: g.condition, scenario: item.scenario, answer: item.answer, sample: g.sample, outputs: { "llama-3.1-8b": { text: g.text } } }))
  }
  writeFileSync(pred, rows.join("\n") + "\n")

  it("reproduces the paper's counts and point estimates exactly and its CIs within 0.01", () => {
    expect(dart(["init", "--exp-id", "ref", ...at]).code).toBe(0)
    const r = dart(["evaluate", "--exp-id", "ref", ...at, "--pred", pred, "--run-name", "ref", "--a-name", "llama-3.1-8b"])
    expect(r.stderr).toBe("")
    expect(r.code).toBe(0)
    const summary = JSON.parse(readFileSync(path.join(runs, "ref/evaluation/ref/summary.json"), "utf8"))
    const expected = JSON.parse(readFileSync(new URL("../fixtures/reference-llama-3.1-8b/expected.json", import.meta.url), "utf8"))
    expect(Object.keys(summary.benchmarks)).toEqual(Object.keys(expected.benchmarks))
    for (const [b, e] of Object.entries<any>(expected.benchmarks)) {
      const got = summary.benchmarks[b]["llama-3.1-8b"]
      expect({ A: got.counts.A, B: got.counts.B, C: got.counts.C, DE: got.counts.DE, F: got.counts.F }, b).toEqual(e.counts)
      expect(got.n_unparseable).toBe(e.n_unparseable)
      expect(got.n_refusal_or_empty).toBe(e.n_refusal_or_empty)
      expect(got.diffaware.estimate).toBe(e.diffaware)
      expect(got.ctxtaware.estimate).toBe(e.ctxtaware)
      expect(Math.abs(got.diffaware.ci_low - e.paper_diffaware_ci[0]), b).toBeLessThan(0.01)
      expect(Math.abs(got.diffaware.ci_high - e.paper_diffaware_ci[1]), b).toBeLessThan(0.01)
      expect(Math.abs(got.ctxtaware.ci_low - e.paper_ctxtaware_ci[0]), b).toBeLessThan(0.01)
      expect(Math.abs(got.ctxtaware.ci_high - e.paper_ctxtaware_ci[1]), b).toBeLessThan(0.01)
    }
    expect(summary.macro["llama-3.1-8b"].diffaware).toBeCloseTo(
      Object.values<any>(expected.benchmarks).reduce((a, e) => a + e.diffaware, 0) / 7, 12)
  })
})

/** Seeded synthetic outputs: B (the adapter) is better than A, with abstentions on both sides. */
const dartPredictions = (file: string) => {
  const rng = new PyRandom(7)
  const items = [...suite.values()].filter((_, i) => i % 5 === 0)
  const say = (gold: string, skill: number, abstain: number) => {
    const u = rng.random()
    if (u < abstain) return "I cannot determine this.\n**Conclusion:** unclear"
    const label = rng.random() < skill ? gold : gold === "YES" ? "NO" : "YES"
    return `The groups are compared on the facts given. Context matters here.\nConclusion: ${label}`
  }
  const rows = items.map((it) => {
    const gold = it.condition === "neq" ? "YES" : "NO"
    return JSON.stringify({ task: "dart", id: it.id, benchmark: it.benchmark, condition: it.condition, scenario: it.scenario, answer: it.answer, gold_label: gold, sample: 0,
      outputs: { M0: { text: say(gold, gold === "YES" ? 0.85 : 0.15, 0.25) }, DART_H: { text: say(gold, 0.72, 0.03) } } })
  })
  writeFileSync(file, rows.join("\n") + "\n")
  return items.length
}

const audit = (file: string, run: string, b: string, total: number, split: [number, number, number, number]) =>
  writeFileSync(file, JSON.stringify({ run_name: run, a_name: "M0", b_name: b, n_pairs: 1400,
    regressions: { total, by_severity: { mild: split[0], moderate: split[1], severe: split[2], extreme: split[3] },
      by_type: { harmful_reasoning: total - 1, normalizes_bias: 1 }, by_benchmark: { D1: total } } }))

const vectors = JSON.parse(readFileSync("test/vectors/eval_vectors.json", "utf8"))
/** Benchmarks, then the D/N groups, then overall, as the tables list them, each with its reference vector. */
const slices = (s: any): Array<[string, any, any]> => [
  ...Object.keys(s.benchmarks).map((b): [string, any, any] => [b, s.benchmarks[b], vectors.benchmarks[b]]),
  ...["D", "N"].map((g): [string, any, any] => [`${g} (all)`, s.groups[g], vectors.groups[g]]),
  ["Overall", s.overall, vectors.overall]
]

describe("dart evaluate, task dart: M0 vs DART_H", () => {
  const pred = path.join(scratch, "dart.jsonl")
  const n = dartPredictions(pred)
  const auditA = path.join(scratch, "audit_dart.json")
  const auditB = path.join(scratch, "audit_dart_h.json")
  audit(auditA, "audit_M0_vs_DART", "DART", 73, [30, 25, 15, 3])
  audit(auditB, "audit_M0_vs_DART_H", "DART_H", 20, [12, 6, 2, 0])
  const args = ["evaluate", "--exp-id", "cmp", ...at, "--pred", pred, "--run-name", "eval_main", "--a-name", "M0", "--b-name", "DART_H", "--audit", auditA, "--audit", auditB]
  const out = path.join(runs, "cmp/evaluation/eval_main")

  it("writes summary.json in the documented shape with paired tests and harm-drift change", () => {
    expect(dart(["init", "--exp-id", "cmp", ...at]).code).toBe(0)
    const r = dart(args)
    expect(r.stderr).toBe("")
    expect(r.code).toBe(0)
    const s = JSON.parse(readFileSync(path.join(out, "summary.json"), "utf8"))
    expect(s.task).toBe("dart")
    expect(s.models).toEqual(["M0", "DART_H"])
    expect(Object.keys(s.benchmarks)).toEqual(["D1", "D2", "D3", "D4", "N2", "N3", "N4"])
    expect(Object.keys(s.groups)).toEqual(["D", "N"])
    const d1 = s.benchmarks.D1
    for (const key of ["n", "accuracy", "accuracy_on_parsed", "equal_accuracy", "difference_accuracy", "yes_precision", "pred_yes_rate", "parse_ok_rate", "macro_f1", "balanced_accuracy"]) {
      expect(typeof d1.M0[key], key).toBe("number")
    }
    expect(Object.keys(d1.M0.counts)).toEqual(["tp", "tn", "fp", "fn", "abstain"])
    expect(Object.keys(d1.paired)).toEqual(["accuracy_diff", "mcnemar", "p_holm"])
    expect(Object.keys(d1.paired.mcnemar)).toEqual(["b01", "b10", "p_value", "p_mid"])
    expect(s.overall.M0.n).toBe(n)
    // Check the overall numbers against a direct count over the file.
    let correctA = 0, correctB = 0, b01 = 0, b10 = 0
    for (const line of readFileSync(pred, "utf8").trim().split("\n")) {
      const row = JSON.parse(line)
      const a = row.outputs.M0.text.endsWith(`Conclusion: ${row.gold_label}`)
      const b = row.outputs.DART_H.text.endsWith(`Conclusion: ${row.gold_label}`)
      correctA += a ? 1 : 0
      correctB += b ? 1 : 0
      if (!a && b) b01++
      if (a && !b) b10++
    }
    expect(s.overall.M0.accuracy).toBe(correctA / n)
    expect(s.overall.DART_H.accuracy).toBe(correctB / n)
    expect(s.overall.paired.mcnemar.b01).toBe(b01)
    expect(s.overall.paired.mcnemar.b10).toBe(b10)
    expect(s.overall.paired.accuracy_diff.estimate).toBeCloseTo((correctB - correctA) / n, 12)
    // Paired tests and bootstrap CIs against independent values (numpy, scipy, statsmodels: test/vectors/make_eval_vectors.py).
    for (const [name, blk, v] of slices(s)) {
      expect([blk.M0.n, blk.M0.accuracy, blk.DART_H.accuracy], name).toEqual([v.n, v.accuracy_a, v.accuracy_b])
      expect([blk.paired.mcnemar.b01, blk.paired.mcnemar.b10], name).toEqual([v.b01, v.b10])
      expect(Math.abs(blk.paired.mcnemar.p_value - v.p_value), name).toBeLessThanOrEqual(1e-12 * v.p_value + 1e-300)
      expect(blk.paired.accuracy_diff.estimate, name).toBeCloseTo(v.accuracy_diff, 12)
      // DART's 2,000-resample CI ends may differ from the 1,000,000-resample reference by Monte Carlo error only
      // (its stream is seeded, so this holds or fails for good, never by chance).
      expect(Math.abs(blk.paired.accuracy_diff.ci_low - v.ci_low), `${name} ci_low`).toBeLessThanOrEqual(3 * v.ci_low_sd_2000)
      expect(Math.abs(blk.paired.accuracy_diff.ci_high - v.ci_high), `${name} ci_high`).toBeLessThanOrEqual(3 * v.ci_high_sd_2000)
    }
    // p_holm is Holm's step-down over the seven benchmarks' own p-values, and equals statsmodels' value.
    const names = Object.keys(s.benchmarks)
    const raw = names.map((b) => s.benchmarks[b].paired.mcnemar.p_value as number)
    const order = raw.map((_, i) => i).sort((i, j) => raw[i]! - raw[j]!)
    const expectedHolm = new Array<number>(raw.length)
    let running = 0
    order.forEach((i, rank) => {
      running = Math.max(running, Math.min(1, (raw.length - rank) * raw[i]!))
      expectedHolm[i] = running
    })
    names.forEach((b, i) => {
      const got = s.benchmarks[b].paired.p_holm
      expect(Math.abs(got - expectedHolm[i]!), b).toBeLessThanOrEqual(1e-12 * expectedHolm[i]!)
      expect(Math.abs(got - vectors.benchmarks[b].p_holm), b).toBeLessThanOrEqual(1e-9 * vectors.benchmarks[b].p_holm)
    })
    expect(s.harm.audits.map((a: any) => a.cases)).toEqual([73, 20])
    expect(s.harm.reductions[0].relative_change).toBeCloseTo(-0.726, 3)
    expect(s.harm.audits[0].rate_per_1000).toBeCloseTo(52.142857, 5)
  })

  it("writes tables in Markdown, LaTeX (booktabs, stars) and CSV whose cells are summary.json's numbers", () => {
    const s = JSON.parse(readFileSync(path.join(out, "summary.json"), "utf8"))
    const md = readFileSync(path.join(out, "tables.md"), "utf8")
    expect(md).toContain("| Overall |")
    // CSV at full precision: every cell is the summary's value, exactly.
    const rows = readFileSync(path.join(out, "decision.csv"), "utf8").trim().split("\n").map((l) => l.split(","))
    const cells = (blk: any) => [blk.M0.n, blk.M0.accuracy, blk.DART_H.accuracy, blk.paired.accuracy_diff.estimate, blk.paired.accuracy_diff.ci_low,
      blk.paired.accuracy_diff.ci_high, blk.paired.p_holm ?? blk.paired.mcnemar.p_value, blk.M0.equal_accuracy, blk.DART_H.equal_accuracy,
      blk.M0.difference_accuracy, blk.DART_H.difference_accuracy, blk.M0.parse_ok_rate, blk.DART_H.parse_ok_rate, blk.M0.macro_f1, blk.DART_H.macro_f1]
    const blocks = slices(s)
    expect(rows.slice(1).map((r) => r[0])).toEqual(blocks.map(([name]) => name))
    for (const [i, [name, blk]] of blocks.entries()) expect(rows[i + 1]!.slice(1).map(Number), name).toEqual(cells(blk))
    // Markdown: the same numbers as percentages to one decimal.
    for (const [name, blk] of blocks) {
      const row = md.split("\n").find((l) => l.startsWith(`| ${name} |`))!.split("|").slice(2, -1).map((c) => c.trim())
      expect(Number(row[0]), name).toBe(blk.M0.n)
      for (const [k, v] of [[1, blk.M0.accuracy], [2, blk.DART_H.accuracy], [6, blk.M0.equal_accuracy], [7, blk.DART_H.equal_accuracy]] as const) {
        expect(Math.abs(Number(row[k]) - 100 * v), `${name} column ${k}`).toBeLessThanOrEqual(0.05 + 1e-9)
      }
      expect(row[4]).toBe(`[${(100 * blk.paired.accuracy_diff.ci_low).toFixed(1)}, ${(100 * blk.paired.accuracy_diff.ci_high).toFixed(1)}]`)
    }
    const tex = readFileSync(path.join(out, "tables.tex"), "utf8")
    expect(tex).toContain("\\toprule")
    expect(tex).toContain("\\bottomrule")
    expect(tex).toMatch(/\$\^\{\*+\}\$/)
    const csv = readFileSync(path.join(out, "decision.csv"), "utf8").trim().split("\n")
    expect(csv[0]).toContain("ΔAcc CI low,ΔAcc CI high")
    expect(csv).toHaveLength(1 + 7 + 2 + 1)
    expect(readFileSync(path.join(out, "harm_drift.csv"), "utf8")).toContain("-0.726027397260274")
  })

  it("gives byte-identical outputs for the same inputs and seed", () => {
    const before = filesUnder(out).map((f) => [f, readFileSync(f, "utf8")])
    const other = path.join(scratch, "runs2")
    expect(dart(["init", "--exp-id", "cmp", "--override", `run.runs_dir=${other}`]).code).toBe(0)
    expect(dart(args.map((a) => (a === `run.runs_dir=${runs}` ? `run.runs_dir=${other}` : a))).code).toBe(0)
    const after = filesUnder(path.join(other, "cmp/evaluation/eval_main")).map((f) => [f.replace(other, runs), readFileSync(f, "utf8")])
    expect(after).toEqual(before)
    expect(dart(args).stdout).toContain("up to date")
  })

  it("renders an offline report in headless Chromium", () => {
    const html = readFileSync(path.join(out, "report.html"), "utf8")
    expect(html).not.toMatch(/\b(src|href)\s*=|@import|url\(|<script/i)
    const dom = spawnSync("chromium", [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--no-first-run", `--user-data-dir=${path.join(scratch, "chromium")}`, "--dump-dom", `file://${path.join(out, "report.html")}`
    ], { encoding: "utf8", timeout: 60_000 })
    expect(dom.error).toBeUndefined()
    expect(dom.stdout).toContain("DART evaluation: eval_main")
    // Accuracy and equal-treatment charts: 8 groups × 2 models each; harm chart: 4 severities × 2 audits.
    expect((dom.stdout.match(/<rect class="bar"/g) ?? []).length).toBe(2 * 16 + 8)
    expect((dom.stdout.match(/class="whisker"/g) ?? []).length).toBe(2 * 16)
  })

  it("rejects bad prediction rows with file:line", () => {
    const bad = path.join(scratch, "bad.jsonl")
    const lines = readFileSync(pred, "utf8").trim().split("\n")
    writeFileSync(bad, [lines[0], lines[1]!.replace(`"DART_H"`, `"DART"`), lines[2]].join("\n") + "\n")
    const r = dart(["evaluate", "--exp-id", "cmp", ...at, "--pred", bad, "--run-name", "bad", "--a-name", "M0", "--b-name", "DART_H"])
    expect(r.code).toBe(1)
    expect(r.stderr).toContain(`${bad}:2: no output for model "DART_H" (has: M0, DART)`)
    writeFileSync(bad, [lines[0], lines[0]].join("\n") + "\n")
    expect(dart(["evaluate", "--exp-id", "cmp", ...at, "--pred", bad, "--run-name", "bad", "--a-name", "M0"]).stderr).toContain(`${bad}:2: duplicate prediction`)
    expect(filesUnder(path.join(runs, "cmp/evaluation/bad"))).toEqual([])
  })
})
