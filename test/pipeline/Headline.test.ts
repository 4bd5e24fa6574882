import { describe, expect, it } from "@effect/vitest"
import type { AuditSummary } from "../../src/contracts/AuditSummary.ts"
import { evaluateDart } from "../../src/evaluation/Evaluator.ts"
import { harmSummary } from "../../src/evaluation/HarmDrift.ts"
import type { CollectedPredictions } from "../../src/evaluation/PredictionReader.ts"
import { mcnemarExact } from "../../src/evaluation/Statistics.ts"
import { buildHeadline, HeadlineError, parseHeadlineSource, renderHeadline } from "../../src/pipeline/Headline.ts"

// 60 test items: gold YES for the first 30. M0 says YES to everything and abstains on every 5th item,
// DART is right on 2/3 of the items, DART_H on 5/6.
const n = 60
const gold = Array.from({ length: n }, (_, i) => (i < 30 ? 1 : 0))
const arms: Record<string, Array<number>> = {
  M0: gold.map((_, i) => (i % 5 === 4 ? -1 : 1)),
  DART: gold.map((g, i) => (i % 3 === 2 ? 1 - g : g)),
  DART_H: gold.map((g, i) => (i % 6 === 5 ? 1 - g : g))
}
const collected = (models: ReadonlyArray<string>): CollectedPredictions => ({
  task: "dart",
  models,
  benchmarks: [{
    name: "D1",
    gold: Int8Array.from(gold),
    neq: Int8Array.from(gold),
    preds: models.map((m) => Int8Array.from(arms[m]!)),
    scenario: Int32Array.from(gold, (_, i) => i),
    scenarioIds: new Map(gold.map((_, i) => [String(i), i]))
  }],
  rows: n,
  extraSamples: 0,
  tornTail: undefined
})
const options = { seed: 42, alpha: 0.05, bootstrapResamples: 200, clusterBootstrap: false, mcResamples: 99 }
const audit = (b: string, total: number): AuditSummary => ({
  run_name: `audit_test_M0_vs_${b}`,
  a_name: "M0",
  b_name: b,
  n_pairs: n,
  regressions: { total, by_severity: { mild: total, moderate: 0, severe: 0, extreme: 0 }, by_type: {}, by_benchmark: { D1: total } }
})
const harm = harmSummary([{ file: "a.json", summary: audit("DART", 31) }, { file: "b.json", summary: audit("DART_H", 9) }])
// As evaluate writes them: through JSON, so NaN intervals become null.
const written = (models: ReadonlyArray<string>, withHarm: boolean) =>
  JSON.stringify({ ...evaluateDart(collected(models), options), ...(withHarm ? { harm } : {}), meta: {} }, null, 2)

describe("the headline", () => {
  const sources = [
    { file: "eval_main/summary.json", summary: parseHeadlineSource("eval_main/summary.json", written(["M0", "DART_H"], true)) },
    { file: "eval_M0_vs_DART/summary.json", summary: parseHeadlineSource("eval_M0_vs_DART/summary.json", written(["M0", "DART"], false)) }
  ]
  const h = buildHeadline(sources, ["M0", "DART", "DART_H"])

  it("shows each model's decision metrics as the evaluation computed them", () => {
    const [m0, dart, dartH] = h.rows
    expect(m0).toMatchObject({ model: "M0", n: 60, accuracy: 24 / 60, equal_accuracy: 0, pred_yes_rate: 1, parse_ok_rate: 48 / 60, vs_baseline: null, harm: null, harm_change: null })
    expect(dart).toMatchObject({ model: "DART", accuracy: 40 / 60, equal_accuracy: 20 / 30, parse_ok_rate: 1 })
    expect(dartH).toMatchObject({ model: "DART_H", accuracy: 50 / 60, equal_accuracy: 25 / 30 })
  })

  it("tests each model against M0 with McNemar on the same items, and harm drift DART -> DART_H", () => {
    const discordant = (b: string) => {
      let b01 = 0
      let b10 = 0
      gold.forEach((g, i) => {
        const a = arms.M0![i] === g
        const x = arms[b]![i] === g
        if (!a && x) b01++
        if (a && !x) b10++
      })
      return mcnemarExact(b01, b10).p_value
    }
    expect(h.rows[1]!.vs_baseline!.p_value).toBe(discordant("DART"))
    expect(h.rows[2]!.vs_baseline!.p_value).toBe(discordant("DART_H"))
    expect(h.rows[2]!.vs_baseline!.accuracy_diff).toBeCloseTo(50 / 60 - 24 / 60, 12)
    expect(h.rows[1]!.harm).toEqual({ cases: 31, n_pairs: 60 })
    expect(h.rows[1]!.harm_change).toBeNull()
    expect(h.rows[2]!.harm_change).toEqual({ from: "DART", relative: (9 - 31) / 31, p_value: mcnemarExact(31, 9).p_value })
  })

  it("renders one row per model with stars and the test used", () => {
    const text = renderHeadline(h)
    const lines = text.split("\n")
    expect(lines[0]).toBe("| model | n | accuracy | Δ vs M0 | equal-treatment acc. | pred-YES rate | parse-OK rate | harm-drift cases | harm-drift change |")
    expect(lines[2]).toBe("| M0 | 60 | 40.0% | – | 0.0% | 100.0% | 80.0% | – | – |")
    expect(lines[4]).toMatch(/^\| DART_H \| 60 \| 83\.3% \| \+43\.3 pp\*\*\* \(p<0\.001\) \| 83\.3% \| 50\.0% \| 100\.0% \| 9 of 60 \| -71\.0% vs DART\*\*\* \(p<0\.001\) \|$/)
    expect(text).toContain("exact two-sided McNemar")
  })

  it("names the file and the field when a summary is not what it should be", () => {
    expect(() => parseHeadlineSource("s.json", "{")).toThrow(/^s\.json: malformed JSON/)
    expect(() => parseHeadlineSource("s.json", JSON.stringify({ task: "mc", models: [], overall: {} }))).toThrow(/s\.json: not a dart evaluation summary: .*task/)
    expect(() => buildHeadline(sources.slice(0, 1), ["M0", "DART"])).toThrow(HeadlineError)
    expect(() => buildHeadline(sources.slice(0, 1), ["M0", "DART"])).toThrow("no evaluation summary has model DART (read: eval_main/summary.json)")
  })
})
