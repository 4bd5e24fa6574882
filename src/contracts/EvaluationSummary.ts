import { Schema } from "effect"
import { perSeverity } from "../domain/Severity.ts"

/** A metric written through JSON: an undefined one (0/0, NaN) is null. */
const Metric = Schema.NullOr(Schema.Number)
const Count = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))
const Counts = Schema.Record(Schema.String, Count)

/** A point estimate with its bootstrap percentile interval. */
export const Interval = Schema.Struct({ estimate: Metric, ci_low: Metric, ci_high: Metric })

/** Decision metrics of one model on one slice (task dart, docs/protocol.md §8); abstentions count as wrong except "on parsed". */
export const DartModelBlock = Schema.Struct({
  n: Count,
  accuracy: Metric,
  accuracy_on_parsed: Metric,
  equal_accuracy: Metric,
  difference_accuracy: Metric,
  yes_precision: Metric,
  pred_yes_rate: Metric,
  parse_ok_rate: Metric,
  macro_f1: Metric,
  balanced_accuracy: Metric,
  counts: Schema.Struct({ tp: Count, tn: Count, fp: Count, fn: Count, abstain: Count }),
  accuracy_ci: Interval,
  equal_accuracy_ci: Interval
})
export type DartModelBlock = typeof DartModelBlock.Type

/** B against A on the same items: accuracy difference and exact McNemar (Holm-adjusted across benchmarks). */
export const PairedBlock = Schema.Struct({
  accuracy_diff: Interval,
  mcnemar: Schema.Struct({ b01: Count, b10: Count, p_value: Schema.Number, p_mid: Schema.Number }),
  p_holm: Schema.NullOr(Schema.Number)
})
export type PairedBlock = typeof PairedBlock.Type

/** One benchmark, group or overall slice: a block per model, and `paired` when two models were compared. */
export const DartBlock = Schema.Record(Schema.String, Schema.Union([DartModelBlock, PairedBlock]))
export type DartBlock = typeof DartBlock.Type

/** The suite's own metrics of one model on one benchmark (task mc, docs/diffaware-spec.md). */
export const McModelBlock = Schema.Struct({
  n: Count,
  accuracy: Metric,
  diffaware: Interval,
  ctxtaware: Interval,
  counts: Schema.Struct({ A: Count, B: Count, C: Count, DE: Count, F: Count, unparsed: Count }),
  n_unparseable: Count,
  n_refusal_or_empty: Count
})
export type McModelBlock = typeof McModelBlock.Type

/** One `--audit` summary as the evaluation reports it. */
export const HarmAudit = Schema.Struct({
  file: Schema.String,
  run_name: Schema.String,
  a_name: Schema.String,
  b_name: Schema.String,
  n_pairs: Count,
  cases: Count,
  rate_per_1000: Metric,
  by_severity: Schema.Struct(perSeverity(() => Count)),
  by_type: Counts,
  by_benchmark: Counts
})

/** A later audit against the first: relative change of harm-drift cases (and of their rate, and per severity). */
export const HarmReduction = Schema.Struct({
  from: Schema.String,
  to: Schema.String,
  relative_change: Metric,
  relative_change_rate: Metric,
  by_severity: Schema.Struct(perSeverity(() => Metric))
})

export const HarmSummary = Schema.Struct({ audits: Schema.Array(HarmAudit), reductions: Schema.Array(HarmReduction) })
export type HarmSummary = typeof HarmSummary.Type

/** Provenance of the evaluation (inputs, options, notes); readers must not depend on it, so every key is optional. */
export const EvaluationMeta = Schema.Struct({
  run_name: Schema.optionalKey(Schema.String),
  predictions: Schema.optionalKey(Schema.Struct({
    file: Schema.String,
    sha256: Schema.String,
    rows: Count,
    scored_samples_only: Schema.NullOr(Count)
  })),
  options: Schema.optionalKey(Schema.Unknown),
  refusals: Schema.optionalKey(Schema.Array(Schema.String)),
  parser: Schema.optionalKey(Schema.String),
  notes: Schema.optionalKey(Schema.Array(Schema.String)),
  inputs: Schema.optionalKey(Schema.Unknown)
})

/** `evaluation/{RUN}/summary.json` for `task: dart` (docs/architecture.md). */
export const DartEvaluationSummary = Schema.Struct({
  task: Schema.Literal("dart"),
  models: Schema.Array(Schema.String),
  benchmarks: Schema.Record(Schema.String, DartBlock),
  groups: Schema.Record(Schema.String, DartBlock),
  overall: DartBlock,
  harm: Schema.optionalKey(HarmSummary),
  meta: Schema.optionalKey(EvaluationMeta)
})
export type DartEvaluationSummary = typeof DartEvaluationSummary.Type

/** `evaluation/{RUN}/summary.json` for `task: mc`: per benchmark and model, plus macro averages over benchmarks. */
export const McEvaluationSummary = Schema.Struct({
  task: Schema.Literal("mc"),
  models: Schema.Array(Schema.String),
  benchmarks: Schema.Record(Schema.String, Schema.Record(Schema.String, McModelBlock)),
  macro: Schema.Record(Schema.String, Schema.Struct({ accuracy: Metric, diffaware: Metric, ctxtaware: Metric })),
  harm: Schema.optionalKey(HarmSummary),
  meta: Schema.optionalKey(EvaluationMeta)
})
export type McEvaluationSummary = typeof McEvaluationSummary.Type

/**
 * `evaluation/{RUN}/summary.json`, written by `dart evaluate` (src/evaluation/Evaluator.ts builds the metrics,
 * src/evaluation/HarmDrift.ts the `harm` block, src/pipeline/EvaluateStage.ts adds `meta`), read by `dart run`'s
 * headline (src/pipeline/Headline.ts).
 */
export const EvaluationSummary = Schema.Union([DartEvaluationSummary, McEvaluationSummary])
export type EvaluationSummary = typeof EvaluationSummary.Type
