import { describe, expect, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { predictionFromOriginal } from "../../src/compat/OriginalPredictions.ts"
import { PredictionRow, predictionRowLine } from "../../src/contracts/PredictionRow.ts"
import { readPredictions } from "../../src/evaluation/PredictionReader.ts"

const decode = Schema.decodeUnknownSync(PredictionRow)

const outputs = {
  M0: { text: "The groups differ.\nConclusion: YES", finish_reason: "stop", server: "http://127.0.0.1:8000" },
  DART: { text: "Treat them alike.\nConclusion: NO", finish_reason: null, server: "http://127.0.0.1:8001" }
}
const item = { task: "dart", id: "D1-neq-0007", benchmark: "D1", condition: "neq", scenario: "s7", answer: 0, gold_label: "YES", split: "val", policy: "off" } as const

describe("a prediction row (contracts/PredictionRow)", () => {
  it("is written as dart infer wrote it before, with the question appended last", () => {
    // The line dart infer built by hand before the contract had a writer.
    const before = `${JSON.stringify({ ...item, sample: 2, outputs })}\n`
    expect(predictionRowLine({ ...item, sample: 2, outputs })).toBe(before)
    const now = predictionRowLine({ ...item, sample: 2, outputs, question: "Which group is larger?" })
    expect(now.startsWith(before.slice(0, -2))).toBe(true)
    expect(now).toBe(`${before.slice(0, -2)},"question":"Which group is larger?"}\n`)
  })

  it("puts the keys in the contract's order whatever order they were built in", () => {
    const shuffled = { outputs: { M0: { server: "s", text: "t", finish_reason: "stop" } }, question: "q", sample: 0, ...item }
    const line = predictionRowLine(shuffled)
    expect(Object.keys(JSON.parse(line))).toEqual(["task", "id", "benchmark", "condition", "scenario", "answer", "gold_label", "split", "policy", "sample", "outputs", "question"])
    expect(Object.keys(JSON.parse(line).outputs.M0)).toEqual(["text", "finish_reason", "server"])
  })

  it("decodes what the writer wrote, unchanged", () => {
    const row = { ...item, sample: 0, outputs, question: "Q?" }
    expect(decode(JSON.parse(predictionRowLine(row)))).toEqual(row)
  })

  it("keeps only what the architecture requires, so rows of older writers and of the original still decode", () => {
    const minimal = { task: "dart", id: "D1-eq-0001", benchmark: "D1", condition: "eq", scenario: "", sample: 0, outputs: { A: { text: "x" } } }
    expect(decode({ ...minimal, extra: true })).toEqual(minimal)
    const original = predictionFromOriginal({ sample_id: "D1-neq-0001", gold_label: "YES", meta: { benchmark_id: "D1", condition: "diff", scenario_id: "s1" }, model_id: "M0", raw_text: "Conclusion: YES" })
    expect(decode(JSON.parse(predictionRowLine(original)))).toEqual(original)
    expect(() => decode({ ...minimal, sample: -1 })).toThrow()
    expect(() => decode({ ...minimal, gold_label: "MAYBE" })).toThrow()
  })

  it.effect("is what dart evaluate reads", () =>
    Effect.gen(function*() {
      const dir = mkdtempSync(path.join(tmpdir(), "dart-prediction-row-"))
      try {
        const file = path.join(dir, "outputs.jsonl")
        writeFileSync(file, [0, 1].map((sample) => predictionRowLine({ ...item, sample, outputs, question: "Q?" })).join(""))
        const read = yield* readPredictions(file, ["M0", "DART"], { refusals: [] })
        expect(read.rows).toBe(2)
        expect([...read.benchmarks[0]!.gold]).toEqual([1, 1])
        expect(read.benchmarks[0]!.preds.map((p) => [...p])).toEqual([[1, 1], [0, 0]])
      } finally {
        rmSync(dir, { recursive: true, force: true })
      }
    }))
})
