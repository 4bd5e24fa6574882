import { Console, Effect, Schema } from "effect"
import { looksLikeOriginalPrediction, originalPredictionDecoder } from "../compat/OriginalPredictions.ts"
import { Condition } from "../datasets/BenchmarkItem.ts"
import { decodeJsonLine, forEachLine, LineError, type TornTail } from "../runs/Jsonl.ts"
import type { RunStoreError } from "../runs/RunStoreError.ts"
import { parseConclusion } from "./ConclusionParser.ts"
import { parseMcAnswer } from "./McAnswerParser.ts"

/** A prediction row (ARCHITECTURE.md contract); extra fields are allowed and ignored. */
export const PredictionRow = Schema.Struct({
  task: Schema.Literals(["dart", "mc"]),
  id: Schema.NonEmptyString,
  benchmark: Schema.NonEmptyString,
  condition: Condition,
  scenario: Schema.String,
  answer: Schema.optionalKey(Schema.Literals([0, 1, 2])),
  gold_label: Schema.optionalKey(Schema.Literals(["YES", "NO"])),
  sample: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)),
  outputs: Schema.Record(Schema.String, Schema.Struct({ text: Schema.String }))
})
export type PredictionRow = typeof PredictionRow.Type

/** Compact per-benchmark columns: one entry per scored row (dart: every sample; mc: sample 0). */
export interface BenchmarkColumns {
  readonly name: string
  /** dart: 1 YES / 0 NO. mc: the correct option 0/1/2. */
  readonly gold: Array<number>
  /** mc only: 1 for the ≠ set, 0 for the = set. */
  readonly neq: Array<number>
  /** Per model, in model order. dart: 1/0/−1. mc: 0/1/2/−1/−2. */
  readonly preds: Array<Array<number>>
  /** Index of the row's scenario within this benchmark. */
  readonly scenario: Array<number>
  readonly scenarioIds: Map<string, number>
}

export interface CollectedPredictions {
  readonly task: "dart" | "mc"
  readonly models: ReadonlyArray<string>
  readonly benchmarks: ReadonlyArray<BenchmarkColumns>
  readonly rows: number
  /** mc rows with sample > 0: counted, not scored (the suite scores sample 0 only). */
  readonly extraSamples: number
  readonly tornTail: TornTail | undefined
}

const decodeRow = Schema.decodeUnknownResult(PredictionRow)

/** Sorts D1…D4, N1…N4 first, then any other benchmark by name. */
const benchmarkRank = (name: string) => {
  const m = /^([DN])([1-4])$/.exec(name)
  return m ? (m[1] === "D" ? 0 : 4) + Number(m[2]) : 100
}

/**
 * Streams a predictions file into columns, parsing each model's text with the task's
 * parser. Memory is a few numbers per row, so a million rows stay well under a gigabyte.
 */
export const readPredictions = Effect.fn("PredictionReader.read")(function*(
  file: string,
  models: ReadonlyArray<string>,
  options: { readonly refusals: ReadonlyArray<string> }
): Effect.fn.Return<CollectedPredictions, RunStoreError> {
  let task: "dart" | "mc" | undefined
  const byName = new Map<string, BenchmarkColumns>()
  const seen = new Set<string>()
  let rows = 0
  let extraSamples = 0
  let tornTail: TornTail | undefined

  const original = originalPredictionDecoder(file)
  yield* forEachLine(file, (text, _line) => {
    if (text.trim() === "") return
    // Rows the original Python code wrote are read through src/compat (a repeated item counts once).
    const row = looksLikeOriginalPrediction(text) ? original.decode(text) : decodeJsonLine(text, decodeRow)
    if (row === undefined) return
    task ??= row.task
    if (row.task !== task) throw new LineError(`task "${row.task}" differs from the file's first row ("${task}")`)
    const key = `${row.id}\u0000${row.sample}`
    if (seen.has(key)) throw new LineError(`duplicate prediction for ${row.id} sample ${row.sample}`)
    seen.add(key)
    rows++
    const texts = models.map((m) => {
      const out = row.outputs[m]
      if (out === undefined) throw new LineError(`no output for model "${m}" (has: ${Object.keys(row.outputs).join(", ") || "none"})`)
      return out.text
    })
    if (row.task === "mc" && row.sample !== 0) {
      extraSamples++
      return
    }
    let gold: number
    if (row.task === "dart") {
      const expected = row.condition === "neq" ? "YES" : "NO"
      if (row.gold_label !== undefined && row.gold_label !== expected) {
        throw new LineError(`gold_label ${row.gold_label} contradicts condition ${row.condition}`)
      }
      gold = expected === "YES" ? 1 : 0
    } else {
      if (row.answer === undefined) throw new LineError("mc rows need the benchmark's answer (0, 1 or 2)")
      if ((row.condition === "eq") !== (row.answer === 2)) throw new LineError(`answer ${row.answer} does not fit condition ${row.condition}`)
      gold = row.answer
    }
    let bench = byName.get(row.benchmark)
    if (bench === undefined) {
      bench = { name: row.benchmark, gold: [], neq: [], preds: models.map(() => []), scenario: [], scenarioIds: new Map() }
      byName.set(row.benchmark, bench)
    }
    // Upstream clusters by (condition, scenario): the same id under ≠ and = is two clusters.
    const scenarioKey = row.task === "mc" ? `${row.condition}\u0000${row.scenario}` : row.scenario
    let s = bench.scenarioIds.get(scenarioKey)
    if (s === undefined) {
      s = bench.scenarioIds.size
      bench.scenarioIds.set(scenarioKey, s)
    }
    bench.gold.push(gold)
    bench.neq.push(row.condition === "neq" ? 1 : 0)
    bench.scenario.push(s)
    texts.forEach((t, m) => {
      const pred = row.task === "dart"
        ? ((c) => (c === null ? -1 : c === "YES" ? 1 : 0))(parseConclusion(t))
        : parseMcAnswer(t, options.refusals)
      bench.preds[m]!.push(pred)
    })
  }, (t) => (tornTail = t))
  for (const notice of original.notices()) yield* Console.error(notice)

  return {
    task: task ?? "dart",
    models,
    benchmarks: [...byName.values()].sort((a, b) => benchmarkRank(a.name) - benchmarkRank(b.name) || (a.name < b.name ? -1 : 1)),
    rows,
    extraSamples,
    tornTail
  }
})
