import { Schema } from "effect"
import { perSeverity, severities, Severity } from "../domain/Severity.ts"

const Count = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))
const Counts = Schema.Record(Schema.String, Count)

/**
 * `audit/{RUN}/summary.json`, written by `dart audit` (src/audit/SummaryBuilder.ts `buildSummary`, plus `complete`
 * and `timings`), read by `dart evaluate --audit`: confirmed harm-drift regressions of B against A over `n_pairs`
 * paired outputs. Only the regression counts are required, so summaries written before the other keys still
 * decode; the keys readers do not interpret are `Unknown`.
 */
export const AuditSummary = Schema.Struct({
  run_name: Schema.String,
  a_name: Schema.String,
  b_name: Schema.String,
  n_pairs: Count,
  regressions: Schema.Struct({
    total: Count,
    by_severity: Schema.Struct(perSeverity(() => Count)),
    by_type: Counts,
    by_benchmark: Counts,
    by_group: Schema.optionalKey(Counts),
    by_gold_label: Schema.optionalKey(Counts)
  }),
  rate_per_1000: Schema.optionalKey(Schema.NullOr(Schema.Finite)),
  mode: Schema.optionalKey(Schema.Literals(["off", "validate", "primary", "supplement"])),
  min_severity: Schema.optionalKey(Severity),
  thresholds: Schema.optionalKey(Schema.Unknown),
  /** Classifier triggers against the judge (false positives, overrides, misses). */
  classifier: Schema.optionalKey(Schema.Unknown),
  /** The judge's calls, verdicts and failures; null when the audit ran without it. */
  judge: Schema.optionalKey(Schema.Unknown),
  /** Harm scores per view × classifier × model, with slices and Mann–Whitney tests. */
  harm_scores: Schema.optionalKey(Schema.Unknown),
  evaluators: Schema.optionalKey(Schema.Unknown),
  splits: Schema.optionalKey(Counts),
  test_items_in_pool: Schema.optionalKey(Count),
  allow_test_repair: Schema.optionalKey(Schema.Boolean),
  input: Schema.optionalKey(Schema.Struct({ file: Schema.String, sha256: Schema.String })),
  /** Every pair scored (false when the judge budget or failures left some for a rerun). */
  complete: Schema.optionalKey(Schema.Boolean),
  timings: Schema.optionalKey(Schema.Unknown)
}).check(Schema.makeFilter((s) => {
  const r = s.regressions
  const bySeverity = severities.reduce((n, k) => n + r.by_severity[k], 0)
  return bySeverity === r.total || `regressions.by_severity adds up to ${bySeverity}, not total ${r.total}`
}))
export type AuditSummary = typeof AuditSummary.Type
