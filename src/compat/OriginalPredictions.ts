import { Schema } from "effect"
import type { PredictionRow } from "../contracts/PredictionRow.ts"
import { decodeJsonLine, LineError } from "../runs/Jsonl.ts"

/**
 * Prediction rows written by the original Python code (`model/inference.py`): one row per
 * (sample_id, policy_id), single-model (`model_id`, `raw_text`) or paired (`paired.A` / `paired.B`).
 * Only what the evaluator needs is read; the original's parsed fields are ignored, because dart
 * parses `raw_text` itself.
 */

const Side = Schema.Struct({
  model_id: Schema.optionalKey(Schema.NullOr(Schema.String)),
  raw_text: Schema.NullOr(Schema.String)
})

/** `meta` as the original's `datasets.normalize_primary_samples` writes it (external suites differ). */
const Meta = Schema.Struct({
  benchmark_id: Schema.optionalKey(Schema.NullOr(Schema.String)),
  condition: Schema.optionalKey(Schema.NullOr(Schema.String)),
  scenario_id: Schema.optionalKey(Schema.NullOr(Schema.String)),
  answer: Schema.optionalKey(Schema.Unknown)
})

export const OriginalPredictionRow = Schema.Struct({
  sample_id: Schema.NonEmptyString,
  source: Schema.optionalKey(Schema.NullOr(Schema.String)),
  gold_label: Schema.optionalKey(Schema.NullOr(Schema.String)),
  meta: Schema.optionalKey(Schema.NullOr(Meta)),
  policy_id: Schema.optionalKey(Schema.NullOr(Schema.String)),
  paired: Schema.optionalKey(Schema.Struct({ A: Side, B: Side })),
  model_id: Schema.optionalKey(Schema.NullOr(Schema.String)),
  raw_text: Schema.optionalKey(Schema.NullOr(Schema.String))
})
export type OriginalPredictionRow = typeof OriginalPredictionRow.Type

const decodeOriginal = Schema.decodeUnknownResult(OriginalPredictionRow)

/**
 * A cheap test on the raw line, so dart's own rows (a million in the bench) are parsed once: every
 * row of ours has a `"task"` key, the original's never do (a quote inside a string is escaped).
 */
export const looksLikeOriginalPrediction = (line: string): boolean => line.includes("\"sample_id\"") && !line.includes("\"task\"")

const conditionOf = (row: OriginalPredictionRow): "neq" | "eq" => {
  const c = row.meta?.condition
  if (c === "diff" || c === "neq") return "neq"
  if (c === "equal" || c === "eq") return "eq"
  if (row.gold_label === "YES") return "neq"
  if (row.gold_label === "NO") return "eq"
  throw new LineError(
    `${row.sample_id} has no gold label and no condition (a row of an external suite such as BOLD?): dart evaluate scores labelled DiffAware rows only`
  )
}

/** The original's row in dart's prediction contract (`task: dart`, sample 0). */
export const predictionFromOriginal = (row: OriginalPredictionRow): PredictionRow => {
  const benchmark = row.meta?.benchmark_id ?? row.source
  if (benchmark == null || benchmark === "") throw new LineError(`${row.sample_id} names no benchmark (meta.benchmark_id or source)`)
  let outputs: Record<string, { text: string }>
  if (row.paired !== undefined) {
    const a = row.paired.A.model_id ?? "A"
    const b = row.paired.B.model_id ?? "B"
    if (a === b) throw new LineError(`${row.sample_id}: paired.A and paired.B are both model "${a}"`)
    outputs = { [a]: { text: row.paired.A.raw_text ?? "" }, [b]: { text: row.paired.B.raw_text ?? "" } }
  } else if (row.raw_text !== undefined) {
    outputs = { [row.model_id ?? "model"]: { text: row.raw_text ?? "" } }
  } else {
    throw new LineError(`${row.sample_id}: neither paired outputs nor raw_text`)
  }
  const answer = row.meta?.answer
  const gold = row.gold_label === "YES" || row.gold_label === "NO" ? row.gold_label : undefined
  return {
    task: "dart",
    id: row.sample_id,
    benchmark,
    condition: conditionOf(row),
    scenario: row.meta?.scenario_id ?? "",
    ...(answer === 0 || answer === 1 || answer === 2 ? { answer } : {}),
    ...(gold === undefined ? {} : { gold_label: gold }),
    sample: 0,
    outputs
  }
}

export interface OriginalPredictionDecoder {
  /** The row in dart's contract, or undefined for a repeat of an item already read (the first counts). */
  readonly decode: (line: string) => PredictionRow | undefined
  /** What the user should know about the original's rows in this file, once it has been read. */
  readonly notices: () => ReadonlyArray<string>
}

/** Reads the original's rows of one file; one policy per file, the first row of an item counts. */
export const originalPredictionDecoder = (file: string): OriginalPredictionDecoder => {
  let policy: string | null | undefined
  let rows = 0
  let repeats = 0
  const seen = new Set<string>()
  return {
    decode: (line) => {
      const row = decodeJsonLine(line, decodeOriginal)
      const p = row.policy_id ?? null
      if (rows === 0 && repeats === 0) policy = p
      else if (p !== policy) {
        throw new LineError(
          `policy "${p}" after "${policy}": the original's --policy both wrote two conditions into one file; ` +
            `dart evaluates one condition per run, so split the file by policy_id first`
        )
      }
      // The original's resume keyed its checkpoint differently from its rows, so a rerun
      // appended items again (bug B7); the first row is what the run first reported.
      if (seen.has(row.sample_id)) {
        repeats++
        return undefined
      }
      seen.add(row.sample_id)
      rows++
      return predictionFromOriginal(row)
    },
    notices: () =>
      rows === 0 && repeats === 0 ? [] : [
        `${file}: ${rows} rows written by the original's inference (model/inference.py${policy ? `, ${policy}` : ""}); dart parses their raw_text itself`,
        ...(repeats === 0 ? [] : [
          `${file}: ${repeats} repeated rows skipped: the original's resume appended items again (bug B7); the first row of each item counts`
        ])
      ]
  }
}
