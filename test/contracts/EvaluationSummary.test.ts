import { describe, expect, it } from "@effect/vitest"
import { Schema } from "effect"
import { buildSummary } from "../../src/audit/SummaryBuilder.ts"
import { AuditSummary } from "../../src/contracts/AuditSummary.ts"
import { EvaluationSummary } from "../../src/contracts/EvaluationSummary.ts"
import { evaluateDart, evaluateMc } from "../../src/evaluation/Evaluator.ts"
import { harmSummary } from "../../src/evaluation/HarmDrift.ts"
import type { CollectedPredictions } from "../../src/evaluation/PredictionReader.ts"
import { auditContext, json, scoreRow } from "./AuditRows.ts"

const columns = (task: "dart" | "mc", models: ReadonlyArray<string>): CollectedPredictions => {
  const n = 12
  const gold = Int8Array.from({ length: n }, (_, i) => (task === "dart" ? (i < 6 ? 1 : 0) : i < 6 ? i % 2 : 2))
  return {
    task,
    models,
    benchmarks: ["D1", "N2"].map((name) => ({
      name,
      gold,
      neq: Int8Array.from(gold, (_, i) => (i < 6 ? 1 : 0)),
      preds: models.map((_, m) => Int8Array.from(gold, (g, i) => (i % (3 + m) === 0 ? (task === "dart" ? -1 : -2) : g))),
      scenario: Int32Array.from(gold, (_, i) => i % 4),
      scenarioIds: new Map(["a", "b", "c", "d"].map((s, i) => [s, i]))
    })),
    rows: 2 * n,
    extraSamples: 0,
    tornTail: undefined
  }
}
const options = { seed: 1, alpha: 0.05, bootstrapResamples: 50, clusterBootstrap: false, mcResamples: 49 }

describe("the evaluation summary (contracts/EvaluationSummary)", () => {
  const decode = Schema.decodeUnknownSync(EvaluationSummary)

  it("decodes what dart evaluate writes for task dart, with harm and meta", () => {
    const audit = Schema.decodeUnknownSync(AuditSummary)(json(buildSummary([scoreRow("D1-neq-0001", "severe")], auditContext)))
    const written = json({
      ...evaluateDart(columns("dart", ["M0", "DART"]), options),
      harm: harmSummary([{ file: "a.json", summary: audit }]),
      meta: { run_name: "eval", predictions: { file: "p", sha256: "00", rows: 24, scored_samples_only: null }, options, refusals: [], parser: "p", notes: [], inputs: {} }
    })
    expect(decode(written)).toEqual(written)
  })

  it("decodes what dart evaluate writes for task mc, and one model alone", () => {
    for (const [task, models] of [["mc", ["M0", "DART"]], ["mc", ["M0"]], ["dart", ["M0"]]] as const) {
      const summary = task === "mc" ? evaluateMc(columns(task, models), options) : evaluateDart(columns(task, models), options)
      const written = json(summary)
      expect(decode(written)).toEqual(written)
    }
  })

  it("writes an undefined metric as null, which the contract reads back", () => {
    const empty = evaluateDart({ ...columns("dart", ["M0"]), benchmarks: [] }, options)
    const written = json(empty) as { overall: { M0: { accuracy: unknown } } }
    expect(written.overall.M0.accuracy).toBeNull()
    expect(decode(written)).toEqual(written)
  })
})
