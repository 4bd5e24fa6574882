import { Schema } from "effect"
import { RegressionPoolRow } from "../contracts/RegressionPoolRow.ts"
import { Label } from "../domain/Label.ts"
import { Severity } from "../domain/Severity.ts"
import { decodeJsonLine, LineError } from "../runs/Jsonl.ts"

/**
 * Regression-pool rows written by the original Python code (`model/audit.py`, `run_audit`): the
 * scored record of a kept pair (`sample_id`, `prompt`, `gold_label`, `meta`, `paired.A/B`,
 * `regression.{view}.{metric}`) plus `severity_bin`, `regression_source`, `llm_reason`, `llm_categories`.
 */

const Side = Schema.Struct({
  model_id: Schema.optionalKey(Schema.NullOr(Schema.String)),
  raw_text: Schema.NullOr(Schema.String)
})

const Regression = Schema.Struct({
  a_score: Schema.NullOr(Schema.Finite),
  b_score: Schema.NullOr(Schema.Finite),
  delta: Schema.NullOr(Schema.Finite)
})

export const OriginalPoolRow = Schema.Struct({
  sample_id: Schema.NonEmptyString,
  source: Schema.optionalKey(Schema.NullOr(Schema.String)),
  split: Schema.optionalKey(Schema.NullOr(Schema.String)),
  prompt: Schema.NonEmptyString,
  gold_label: Label,
  meta: Schema.optionalKey(Schema.NullOr(Schema.Struct({ benchmark_id: Schema.optionalKey(Schema.NullOr(Schema.String)) }))),
  paired: Schema.Struct({ A: Side, B: Side }),
  regression: Schema.optionalKey(Schema.NullOr(Schema.Record(Schema.String, Schema.Record(Schema.String, Regression)))),
  severity_bin: Severity,
  regression_source: Schema.Literals(["llm_judge", "both_agree", "classifier"]),
  llm_reason: Schema.optionalKey(Schema.NullOr(Schema.String)),
  llm_categories: Schema.optionalKey(Schema.NullOr(Schema.Array(Schema.String)))
})
export type OriginalPoolRow = typeof OriginalPoolRow.Type

const decodeOriginal = Schema.decodeUnknownResult(OriginalPoolRow)

/** dart's pool rows have `"a_text"`; the original's never do (a quote inside a string is escaped). */
export const looksLikeOriginalPoolRow = (line: string): boolean => line.includes("\"sample_id\"") && !line.includes("\"a_text\"")

/** The original's pool row in dart's contract. Classifier scores keep their view × classifier layout. */
export const poolRowFromOriginal = (row: OriginalPoolRow): RegressionPoolRow => {
  const scores: Record<string, Record<string, { a: number | null; b: number | null; delta: number | null }>> = {}
  for (const [view, metrics] of Object.entries(row.regression ?? {})) {
    for (const [metric, r] of Object.entries(metrics)) {
      if (metric === "llm_judge") continue // the judge's verdict goes to `judge`; its score here was a placeholder
      ;(scores[view] ??= {})[metric] = { a: r.a_score, b: r.b_score, delta: r.delta }
    }
  }
  const byJudge = row.regression_source !== "classifier"
  return {
    id: row.sample_id,
    benchmark: row.meta?.benchmark_id ?? row.source ?? "",
    question: row.prompt,
    gold_label: row.gold_label,
    a_name: row.paired.A.model_id ?? "A",
    b_name: row.paired.B.model_id ?? "B",
    a_text: row.paired.A.raw_text ?? "",
    b_text: row.paired.B.raw_text ?? "",
    severity: row.severity_bin,
    source: byJudge ? "judge" : "classifier",
    scores,
    judge: byJudge
      ? {
        is_regression: true,
        severity: row.severity_bin,
        reason: row.llm_reason ?? null,
        regression_type: row.llm_categories?.[0] ?? null,
        // The original's judge reply had no correctness fields, and its cache kept no model name.
        a_correct: null,
        b_correct: null,
        model: null
      }
      : null
  }
}

export interface OriginalPoolDecoder {
  /** The original's row of this line in dart's contract. */
  readonly decode: (line: string) => RegressionPoolRow
  /** What the user should know about the original's rows in this file, once it has been read. */
  readonly notices: () => ReadonlyArray<string>
}

/** Reads the original's pool rows of one file, counting the test-split items among them. */
export const originalPoolDecoder = (file: string): OriginalPoolDecoder => {
  let rows = 0
  let test = 0
  return {
    decode: (line) => {
      const row = decodeJsonLine(line, decodeOriginal)
      if (row.meta?.benchmark_id == null && row.source == null) throw new LineError(`${row.sample_id} names no benchmark (meta.benchmark_id or source)`)
      rows++
      if (row.split === "test") test++
      return poolRowFromOriginal(row)
    },
    notices: () => [
      ...(rows === 0 ? [] : [`${file}: ${rows} rows written by the original's audit (model/audit.py), read as dart's pool rows`]),
      ...(test === 0 ? [] : [
        `${file}: warning: ${test} of these rows are test-split items (the original audited the test split, bug B3): ` +
        `repairing them trains on items the final evaluation scores`
      ])
    ]
  }
}

