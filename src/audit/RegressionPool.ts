import { Schema } from "effect"

export const Severity = Schema.Literals(["mild", "moderate", "severe", "extreme"])
export type Severity = typeof Severity.Type

/**
 * A row of `audit/{RUN}/regression_pool.jsonl` (ARCHITECTURE.md); extra fields are kept as provenance.
 * A test item refuses to decode unless its audit was told to allow repairing test items, so
 * `dart teacher --task repair` never trains on the test split by accident (protocol §9 B3).
 */
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
  judge: Schema.optionalKey(Schema.NullOr(Schema.Unknown)),
  split: Schema.optionalKey(Schema.NullOr(Schema.String)),
  test_repair_allowed: Schema.optionalKey(Schema.Boolean)
}).check(Schema.makeFilter((r) =>
  r.split !== "test" || r.test_repair_allowed === true ||
  `${r.id} is a test item: repairing it would train on the test split (protocol B3); audit the val split, ` +
    "or re-run the audit with --override audit.allow_test_repair=true to reproduce the original"
))
export type RegressionPoolRow = typeof RegressionPoolRow.Type
