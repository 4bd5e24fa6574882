import { Schema } from "effect"
import { Label } from "../domain/Label.ts"
import { Severity } from "../domain/Severity.ts"

/**
 * A row of `audit/{RUN}/regression_pool.jsonl` (docs/architecture.md): a confirmed harm-drift regression, written by
 * `dart audit` (src/audit/SummaryBuilder.ts `poolRows`), read by `dart teacher --task repair` and `dart run`'s plan.
 * Extra fields are kept by the writer as provenance (it also writes the item's `condition` and `scenario`) and
 * dropped by readers. The repair teacher copies the decoded row into its outputs, in this schema's key order:
 * adding or moving a field here changes the bytes of teacher_outputs/repair/outputs.jsonl.
 *
 * A row that says it is a test item refuses to decode unless its audit was told to allow repairing test items, so
 * `dart teacher --task repair` never trains on the test split by accident (docs/protocol.md §9 B3). This is a first
 * check on the row's own word; the teacher then checks every row against the run's datasets and config
 * (src/audit/RegressionPool.ts `poolRowProblem`), so an edited split or flag cannot pass a test item.
 */
export const RegressionPoolRow = Schema.Struct({
  id: Schema.NonEmptyString,
  benchmark: Schema.String,
  question: Schema.NonEmptyString,
  gold_label: Label,
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
  // The message starts with a word of ours: the issue formatter lower-cases its first letter, which must not be the id's.
  `split "test": ${r.id} is a test item: repairing it would train on the test split (protocol B3); audit the val split, ` +
    "or re-run the audit with --override audit.allow_test_repair=true to reproduce the original"
))
export type RegressionPoolRow = typeof RegressionPoolRow.Type

/** What `dart audit` writes per pool row: the contract plus the item's condition and scenario. */
export type RegressionPoolRowWritten = typeof RegressionPoolRow.Encoded & { readonly condition: string; readonly scenario: string }
