import { Schema } from "effect"
import { Condition } from "../domain/Condition.ts"
import { Label } from "../domain/Label.ts"

/** One model's answer in a prediction row. `dart infer` also records why generation stopped and which server answered. */
export const PredictionOutput = Schema.Struct({
  text: Schema.String,
  finish_reason: Schema.optionalKey(Schema.NullOr(Schema.String)),
  server: Schema.optionalKey(Schema.String)
})
export type PredictionOutput = typeof PredictionOutput.Type

/**
 * A row of `predictions/{RUN}/outputs.jsonl` (docs/architecture.md): one item × sample, every model's answer under
 * `outputs`. Written by `dart infer` (through {@link predictionRowLine}), read by `dart evaluate` and `dart audit`;
 * rows of the original's inference are translated into this shape by src/compat. Extra fields are allowed and ignored.
 *
 * Keys are written in this order: task, id, benchmark, condition, scenario, answer, gold_label, split, policy,
 * sample, outputs (each {text, finish_reason, server}), question. `question` came last, so a row written before
 * it is a prefix of the same row written now (up to the closing brace); readers that find no `question` look
 * the item up in the run's datasets/.
 */
export const PredictionRow = Schema.Struct({
  task: Schema.Literals(["dart", "mc"]),
  id: Schema.NonEmptyString,
  benchmark: Schema.NonEmptyString,
  condition: Condition,
  scenario: Schema.String,
  answer: Schema.optionalKey(Schema.Literals([0, 1, 2])),
  gold_label: Schema.optionalKey(Label),
  split: Schema.optionalKey(Schema.String),
  policy: Schema.optionalKey(Schema.String),
  sample: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)),
  outputs: Schema.Record(Schema.String, PredictionOutput),
  question: Schema.optionalKey(Schema.String)
})
export type PredictionRow = typeof PredictionRow.Type

/** The row's JSONL line: keys in the contract's order (whatever order the caller built them in), then a newline. */
export const predictionRowLine = (row: PredictionRow): string => {
  // JSON.stringify leaves out the keys whose value is undefined: the optional fields a row does not have.
  const outputs: Record<string, { text: string; finish_reason: string | null | undefined; server: string | undefined }> = {}
  for (const [model, o] of Object.entries(row.outputs)) outputs[model] = { text: o.text, finish_reason: o.finish_reason, server: o.server }
  return `${
    JSON.stringify({
      task: row.task,
      id: row.id,
      benchmark: row.benchmark,
      condition: row.condition,
      scenario: row.scenario,
      answer: row.answer,
      gold_label: row.gold_label,
      split: row.split,
      policy: row.policy,
      sample: row.sample,
      outputs,
      question: row.question
    })
  }\n`
}
