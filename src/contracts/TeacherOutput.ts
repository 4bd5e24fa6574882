import { Schema, Struct } from "effect"
import { ChatMessage } from "../domain/ChatMessage.ts"
import { Label } from "../domain/Label.ts"
import { Severity } from "../domain/Severity.ts"

/**
 * A row of `teacher_outputs/{distill,repair}/outputs.jsonl`: one finished teacher item, accepted or not, written by
 * `dart teacher` once its last round is in the response ledger. `messages` is the training conversation (the
 * student prompt and the filtered reply). Between `key` and `messages` the writer copies the item it worked on:
 * the normalized item for distill, the regression-pool row for repair (whose `severity` weights the repair
 * copies); only the fields listed here are read, the rest is provenance.
 */
export const TeacherOutput = Schema.Struct({
  /** The item id, or `id#sample` for a pool row of a sample > 0. */
  key: Schema.String,
  id: Schema.optionalKey(Schema.String),
  question: Schema.optionalKey(Schema.String),
  gold_label: Schema.optionalKey(Label),
  severity: Schema.optionalKey(Severity),
  messages: Schema.Array(ChatMessage),
  conclusion: Schema.NullOr(Label),
  accepted: Schema.Boolean,
  violations: Schema.Array(Schema.String),
  rounds: Schema.Int.check(Schema.isGreaterThanOrEqualTo(1)),
  usage: Schema.Struct({
    prompt_tokens: Schema.Int,
    completion_tokens: Schema.Int,
    /** Present when the provider sent no usage and the tokens are local estimates. */
    estimated: Schema.optionalKey(Schema.Boolean)
  }),
  cost_usd: Schema.Finite,
  provider: Schema.String,
  model: Schema.String,
  prompt_version: Schema.String,
  request_hashes: Schema.Array(Schema.String)
})
export type TeacherOutput = typeof TeacherOutput.Type

/** What resuming needs: the keys already done. */
export const TeacherOutputKey = TeacherOutput.mapFields(Struct.pick(["key"]))
export type TeacherOutputKey = typeof TeacherOutputKey.Type

/** What training needs: accepted conversations and, for repair rows, their severity. */
export const TeacherTrainingRow = TeacherOutput.mapFields(Struct.pick(["key", "accepted", "messages", "severity"]))
export type TeacherTrainingRow = typeof TeacherTrainingRow.Type
