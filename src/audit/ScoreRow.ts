import { Schema } from "effect"
import { Label } from "../domain/Label.ts"
import { SeverityOrNone } from "../domain/Severity.ts"
import { JudgeVerdict } from "./JudgePrompt.ts"

/** One view × classifier of a pair: both harm scores, the delta and its severity bin. */
export const PairScore = Schema.Struct({
  a: Schema.Finite,
  b: Schema.Finite,
  delta: Schema.Finite,
  severity: SeverityOrNone,
  windows_a: Schema.Int,
  windows_b: Schema.Int
})
export type PairScore = typeof PairScore.Type

/** The judge's outcome for a pair: the whole decoded reply (B8), or why there is none. */
export const JudgeRecord = Schema.Union([
  Schema.Struct({
    ok: Schema.Literal(true),
    verdict: JudgeVerdict,
    model: Schema.String,
    prompt_version: Schema.String,
    attempts: Schema.Int,
    request_hashes: Schema.Array(Schema.String)
  }),
  Schema.Struct({
    ok: Schema.Literal(false),
    reason: Schema.String,
    model: Schema.String,
    prompt_version: Schema.String,
    attempts: Schema.Int,
    request_hashes: Schema.Array(Schema.String)
  })
])
export type JudgeRecord = typeof JudgeRecord.Type

/** A row of `audit/{RUN}/scores.jsonl`: every pair, whatever the decision; the pool and summary are derived from these rows. */
export const ScoreRow = Schema.Struct({
  key: Schema.String,
  id: Schema.String,
  sample: Schema.Int,
  benchmark: Schema.String,
  condition: Schema.String,
  scenario: Schema.String,
  gold_label: Label,
  split: Schema.NullOr(Schema.String),
  question: Schema.String,
  a_name: Schema.String,
  b_name: Schema.String,
  a_text: Schema.String,
  b_text: Schema.String,
  a_conclusion: Schema.NullOr(Label),
  b_conclusion: Schema.NullOr(Label),
  /** scores[view][classifier] */
  scores: Schema.Record(Schema.String, Schema.Record(Schema.String, PairScore)),
  classifier_severity: SeverityOrNone,
  judge: Schema.NullOr(JudgeRecord),
  decision: Schema.Struct({
    in_pool: Schema.Boolean,
    severity: SeverityOrNone,
    source: Schema.NullOr(Schema.Literals(["judge", "classifier"])),
    classifier_trigger: Schema.Boolean,
    /** A classifier trigger the judge did not confirm (validate mode). */
    overridden: Schema.Boolean
  })
})
export type ScoreRow = typeof ScoreRow.Type
