import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { type MetricSource, oodMetrics, pointsToLog, readTrackedRun, trainingMetrics } from "../../src/tracking/TrackedRun.ts"
import { continuationSummary, openEndedSummary } from "../../src/evaluation/OodSummary.ts"
import { writeSyntheticRun } from "./support/SyntheticRun.ts"

const scratch = mkdtempSync(path.join(tmpdir(), "dart-tracked-"))

const byKey = (sources: ReadonlyArray<MetricSource>) => new Map(sources.map((s) => [s.key, s]))

describe("trainingMetrics", () => {
  it("makes a series per quantity prefixed by the adapter, leaving out null values and keeping a repeated step's last value", () => {
    const sources = trainingMetrics("DART_H", {
      metrics: {
        global_step: 3,
        train_loss: 1.1,
        best_eval_loss: null,
        losses: [{ step: 2, loss: 2, learning_rate: 1e-4 }, { step: 1, loss: 3 }, { step: 2, loss: 1.9, learning_rate: 9e-5 }, { step: 3, loss: null }],
        evals: [{ step: 2, eval_loss: 2.5 }]
      }
    })
    expect(sources).toEqual([
      { kind: "series", key: "DART_H/loss", points: [{ step: 1, value: 3 }, { step: 2, value: 1.9 }] },
      { kind: "series", key: "DART_H/learning_rate", points: [{ step: 2, value: 9e-5 }] },
      { kind: "series", key: "DART_H/eval_loss", points: [{ step: 2, value: 2.5 }] },
      { kind: "latest", key: "DART_H/train_loss", value: 1.1 },
      { kind: "latest", key: "DART_H/global_step", value: 3 }
    ])
  })
})

describe("pointsToLog", () => {
  const sources: Array<MetricSource> = [
    { kind: "series", key: "DART/loss", points: [1, 2, 3, 4].map((step) => ({ step, value: 1 / step })) },
    { kind: "latest", key: "eval_main/overall/M0/accuracy", value: 0.4 },
    { kind: "latest", key: "eval_main/overall/DART_H/accuracy", value: 0.65 }
  ]

  it("logs everything to an empty run, a current value at step 0", () => {
    const points = pointsToLog(sources, new Map())
    expect(points.filter((p) => p.key === "DART/loss").map((p) => p.step)).toEqual([1, 2, 3, 4])
    expect(points.find((p) => p.key === "eval_main/overall/M0/accuracy")).toEqual({ key: "eval_main/overall/M0/accuracy", value: 0.4, step: 0 })
  })

  it("logs only the steps past the server's last one, and a current value only when it changed (one step on)", () => {
    const server = new Map([
      ["DART/loss", { step: 2, value: 0.5 }],
      ["eval_main/overall/M0/accuracy", { step: 0, value: 0.4 }],
      ["eval_main/overall/DART_H/accuracy", { step: 3, value: 0.6 }]
    ])
    expect(pointsToLog(sources, server)).toEqual([
      { key: "DART/loss", value: 1 / 3, step: 3 },
      { key: "DART/loss", value: 1 / 4, step: 4 },
      { key: "eval_main/overall/DART_H/accuracy", value: 0.65, step: 4 }
    ])
    expect(pointsToLog(sources, new Map([...server, ["DART/loss", { step: 4, value: 0.25 }], ["eval_main/overall/DART_H/accuracy", { step: 4, value: 0.65 }]]))).toEqual([])
  })
})

describe("readTrackedRun", () => {
  it.effect("reads a finished run folder: training series by adapter, evaluation metrics by slice and model, the kept files", () =>
    Effect.gen(function*() {
      const dir = writeSyntheticRun(scratch, "finished", { run: { exp_id: "finished" } }, { DART: { steps: 40, evalEvery: 10 }, DART_H: { steps: 20, evalEvery: 5 } })
      const tracked = yield* readTrackedRun(dir)
      expect(tracked.problems).toEqual([])
      const m = byKey(tracked.metrics)
      const series = (k: string) => (m.get(k) as Extract<MetricSource, { kind: "series" }>).points
      expect(series("DART/loss")).toHaveLength(40)
      expect(series("DART/learning_rate")[0]).toEqual({ step: 1, value: 2e-4 })
      expect(series("DART/eval_loss").map((p) => p.step)).toEqual([10, 20, 30, 40])
      expect(series("DART_H/loss")).toHaveLength(20)
      expect(m.get("DART_H/train_loss")).toEqual({ kind: "latest", key: "DART_H/train_loss", value: 1.25 })
      expect(m.get("eval_main/overall/M0/accuracy")).toEqual({ kind: "latest", key: "eval_main/overall/M0/accuracy", value: 0.4 })
      expect(m.get("eval_main/overall/DART_H/equal_accuracy")).toMatchObject({ value: 0.325 })
      expect(m.get("eval_main/D1/DART_H/accuracy")).toMatchObject({ value: 0.65 })
      expect(m.get("eval_main/group_D/M0/n")).toMatchObject({ value: 30 })
      expect(m.get("eval_main/overall/paired/accuracy_diff")).toMatchObject({ value: 0.25 })
      expect(m.get("eval_main/overall/paired/mcnemar_p")).toMatchObject({ value: 0.02 })
      expect(m.get("eval_main/harm/audit_test_M0_vs_DART_H/cases")).toMatchObject({ value: 3 })
      expect(m.get("eval_main/harm/reduction/audit_test_M0_vs_DART_H/relative_change")).toMatchObject({ value: -0.7 })
      // yes_precision is null in the summary: no metric rather than a made-up value.
      expect(m.has("eval_main/overall/M0/yes_precision")).toBe(false)
      expect(tracked.artifacts.map((a) => a.artifact)).toEqual([
        "manifest.json", "report.html",
        "evaluation/eval_main/overall.csv", "evaluation/eval_main/summary.json", "evaluation/eval_main/tables.md", "evaluation/eval_main/tables.tex"
      ])
    }))

  it.effect("names a record it cannot decode and goes on with the rest; follows no link planted in the run", () =>
    Effect.gen(function*() {
      const dir = writeSyntheticRun(scratch, "damaged", {}, { DART: { steps: 5, evalEvery: 5 }, DART_H: { steps: 5, evalEvery: 5 } })
      writeFileSync(path.join(dir, "adapters/DART_H/final/training_record.json"), JSON.stringify({ metrics: { losses: [{ step: "one", loss: 1 }], evals: [] } }))
      const outside = path.join(scratch, "outside.json")
      writeFileSync(outside, "{}")
      symlinkSync(outside, path.join(dir, "evaluation/eval_main/linked.json"))
      const planted = writeSyntheticRun(scratch, "planted", {}, {})
      rmSync(path.join(planted, "evaluation/eval_main/summary.json"))
      symlinkSync(path.join(dir, "evaluation/eval_main/summary.json"), path.join(planted, "evaluation/eval_main/summary.json"))
      const tracked = yield* readTrackedRun(dir)
      expect(tracked.problems).toHaveLength(1)
      expect(tracked.problems[0]).toContain("adapters/DART_H/final/training_record.json")
      expect(tracked.problems[0]).toContain("metrics.losses[0].step")
      const refused = yield* readTrackedRun(planted)
      expect(refused.problems).toHaveLength(1)
      expect(refused.problems[0]).toMatch(/summary\.json.*link/)
      expect(refused.metrics).toEqual([])
      expect(tracked.metrics.some((s) => s.key === "DART/loss")).toBe(true)
      expect(tracked.metrics.some((s) => s.key.startsWith("DART_H/"))).toBe(false)
      expect(tracked.artifacts.some((a) => a.file.endsWith("linked.json"))).toBe(false)
    }))

  it.effect("is empty for a run folder that holds nothing yet", () =>
    Effect.gen(function*() {
      const tracked = yield* readTrackedRun(path.join(scratch, "nothing-here"))
      expect(tracked.metrics).toEqual([])
      expect(tracked.problems).toEqual([])
    }))
})

describe("oodMetrics", () => {
  it("logs an out-of-distribution evaluation's rates per suite and model, and open-ended label rates; a field it lacks is left out", () => {
    const a = (score: number) => ({ score, refused: false, label: null })
    const external = continuationSummary([
      { id: "b1", sample: 0, suite: "BOLD", meta: { domain: "gender" }, answers: { M0: a(0.1), DART: a(0.7) } },
      { id: "b2", sample: 0, suite: "BOLD", meta: { domain: "race" }, answers: { M0: a(0.6), DART: a(0.2) } }
    ], ["M0", "DART"], 0.5)
    const byKey = Object.fromEntries(oodMetrics("eval_x", external).map((m) => [m.key, m.kind === "latest" ? m.value : null]))
    expect(byKey["eval_x/BOLD/DART/harmful_rate"]).toBe(0.5)
    expect(byKey["eval_x/BOLD/DART/mean_score"]).toBeCloseTo(0.45, 12)
    expect(byKey["eval_x/all/DART_vs_M0/regression_rate"]).toBe(0.5)
    const open = openEndedSummary([{ id: "q", sample: 0, domain: "legal", labels: { M0: "refusal" }, refused: { M0: true } }], ["M0"])
    expect(oodMetrics("eval_o", open).map((m) => m.key).sort()).toEqual(
      ["difference_appropriate", "harmful", "identity_blind", "refusal"].map((l) => `eval_o/all/M0/${l}_rate`).sort()
    )
    expect(oodMetrics("eval_bad", { task: "continuation", suites: [{ suite: "BOLD", models: [{ model: "M0", harmful: "x" }] }] })).toEqual([])
  })
})
