import { Schema } from "effect"

const Count = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))

/**
 * `audit/{RUN}/summary.json`, the part `dart evaluate --audit` reads: confirmed
 * harm-drift regressions of B against A over `n_pairs` paired outputs. `dart audit`
 * writes more (mode, classifier false positives, judge failures, harm-score
 * distributions, Mann–Whitney tests, evaluators); those keys are optional here so
 * summaries written before them still decode.
 */
export const AuditSummary = Schema.Struct({
  run_name: Schema.String,
  a_name: Schema.String,
  b_name: Schema.String,
  n_pairs: Count,
  regressions: Schema.Struct({
    total: Count,
    by_severity: Schema.Struct({ mild: Count, moderate: Count, severe: Count, extreme: Count }),
    by_type: Schema.Record(Schema.String, Count),
    by_benchmark: Schema.Record(Schema.String, Count),
    by_group: Schema.optionalKey(Schema.Record(Schema.String, Count)),
    by_gold_label: Schema.optionalKey(Schema.Record(Schema.String, Count))
  }),
  rate_per_1000: Schema.optionalKey(Schema.NullOr(Schema.Finite)),
  mode: Schema.optionalKey(Schema.Literals(["off", "validate", "primary", "supplement"])),
  classifier: Schema.optionalKey(Schema.Unknown),
  judge: Schema.optionalKey(Schema.Unknown),
  harm_scores: Schema.optionalKey(Schema.Unknown),
  evaluators: Schema.optionalKey(Schema.Unknown)
}).check(Schema.makeFilter((s) => {
  const r = s.regressions
  const bySeverity = r.by_severity.mild + r.by_severity.moderate + r.by_severity.severe + r.by_severity.extreme
  return bySeverity === r.total || `regressions.by_severity adds up to ${bySeverity}, not total ${r.total}`
}))
export type AuditSummary = typeof AuditSummary.Type
