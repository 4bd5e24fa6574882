import { Schema } from "effect"
import { OpenEndedLabel } from "../domain/OpenEndedLabel.ts"

/** One model's answer (as in PredictionRow.ts; contracts import nothing but src/domain). */
const PredictionOutput = Schema.Struct({
  text: Schema.String,
  finish_reason: Schema.optionalKey(Schema.NullOr(Schema.String)),
  server: Schema.optionalKey(Schema.String)
})
const Sample = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))
const SliceValue = Schema.Union([Schema.String, Schema.Finite, Schema.Boolean, Schema.Null])

/**
 * A row of `predictions/{RUN}/outputs.jsonl` of task `continuation`: one external-suite prompt × sample, every model's
 * answer under `outputs`. Keys in this order: task, id, suite, kind, prompt, meta, policy, sample, outputs.
 */
export const ContinuationRow = Schema.Struct({
  task: Schema.Literal("continuation"),
  id: Schema.NonEmptyString,
  suite: Schema.NonEmptyString,
  /** The original's task_type: continuation, or dialogue_safety (HateCheck). */
  kind: Schema.String,
  prompt: Schema.String,
  meta: Schema.Record(Schema.String, SliceValue),
  policy: Schema.String,
  sample: Sample,
  outputs: Schema.Record(Schema.String, PredictionOutput)
})
export type ContinuationRow = typeof ContinuationRow.Type

/** A row of task `open_ended`: one query × sample. Keys: task, id, domain, query, notes (when the set has them), policy, sample, outputs. */
export const OpenEndedRow = Schema.Struct({
  task: Schema.Literal("open_ended"),
  id: Schema.NonEmptyString,
  domain: Schema.NonEmptyString,
  query: Schema.NonEmptyString,
  notes: Schema.optionalKey(Schema.String),
  policy: Schema.String,
  sample: Sample,
  outputs: Schema.Record(Schema.String, PredictionOutput)
})
export type OpenEndedRow = typeof OpenEndedRow.Type

/** `audit/{RUN}/scores.jsonl` of an out-of-distribution audit: one model's answer scored by every classifier on both views. */
export const OodScoreRow = Schema.Struct({
  key: Schema.String,
  id: Schema.String,
  sample: Sample,
  model: Schema.String,
  /** classifier → view → score. */
  scores: Schema.Record(Schema.String, Schema.Record(Schema.String, Schema.Finite)),
  /** The highest of them: the answer's harm score. */
  score: Schema.Finite
})
export type OodScoreRow = typeof OodScoreRow.Type

/** `audit/{RUN}/verdicts.jsonl`: the judge's label of one answer (rubric dart-open-ended-v1); label null = the judge failed. */
export const OodVerdictRow = Schema.Struct({
  key: Schema.String,
  id: Schema.String,
  sample: Sample,
  model: Schema.String,
  label: Schema.NullOr(OpenEndedLabel),
  reason: Schema.String,
  attempts: Schema.Int
})
export type OodVerdictRow = typeof OodVerdictRow.Type

/** `audit/{RUN}/summary.json` of an out-of-distribution audit. */
export const OodAuditSummary = Schema.Struct({
  kind: Schema.Literal("ood"),
  task: Schema.Literals(["continuation", "open_ended"]),
  run_name: Schema.String,
  input: Schema.Struct({ file: Schema.String, sha256: Schema.String, rows: Schema.Int }),
  models: Schema.Array(Schema.String),
  classifiers: Schema.Array(Schema.String),
  views: Schema.Array(Schema.String),
  judge: Schema.NullOr(Schema.Struct({ model: Schema.String, rubric: Schema.String })),
  answers: Schema.Int,
  scored: Schema.Int,
  judged: Schema.Int,
  judge_failed: Schema.Int
})
export type OodAuditSummary = typeof OodAuditSummary.Type
