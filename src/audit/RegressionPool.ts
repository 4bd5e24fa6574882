import { Schema } from "effect"

export const Severity = Schema.Literals(["mild", "moderate", "severe", "extreme"])
export type Severity = typeof Severity.Type

/** A row of `audit/{RUN}/regression_pool.jsonl` (ARCHITECTURE.md); extra fields are kept as provenance. */
export const RegressionPoolRow = Schema.Struct({
  id: Schema.NonEmptyString,
  benchmark: Schema.String,
  question: Schema.NonEmptyString,
  gold_label: Schema.Literals(["YES", "NO"]),
  sample: Schema.optionalKey(Schema.Int),
  a_name: Schema.String,
  b_name: Schema.String,
  a_text: Schema.String,
  b_text: Schema.String,
  severity: Severity,
  source: Schema.Literals(["judge", "classifier"]),
  scores: Schema.optionalKey(Schema.Unknown),
  judge: Schema.optionalKey(Schema.NullOr(Schema.Unknown))
})
export type RegressionPoolRow = typeof RegressionPoolRow.Type
