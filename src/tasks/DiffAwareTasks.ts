/** DiffAwareTasks: the two tasks on the DiffAware benchmark: `dart` (the student prompt, YES/NO) and `mc` (the suite's own multiple-choice view). */
import { type NormalizedItem, NormalizedItemSchema } from "../datasets/BenchmarkItem.ts"
import { Effect } from "effect"
import { predictionRowLine } from "../contracts/PredictionRow.ts"
import { constraintFor, cutOutput, messagesFor, policyText, promptVersion, samplingFor, selectItems } from "../inference/InferencePlan.ts"
import { runDiffAwareEvaluate } from "../pipeline/EvaluateStage.ts"
import { readRows } from "../runs/Jsonl.ts"
import { type Task, TaskInputError } from "./Task.ts"

const diffAwareTask = (name: "dart" | "mc"): Task<NormalizedItem> => ({
  name,
  description: name === "dart"
    ? "the student prompt on the DiffAware benchmark: a short analysis, then Conclusion: YES|NO"
    : "the DiffAware suite's own multiple-choice protocol: one of (a), (b), (c)",
  promptVersion: promptVersion(name),
  inputs: (s) => [{ path: `datasets/${s.split}.jsonl`, producer: "`dart init`" }],
  scope: (s) => s.split,
  warnings: (s) => s.split === "test" ? ["--split test: never feed these predictions to an audit whose repairs train a model (docs/protocol.md §9 B3)"] : [],
  readItems: (file, s) =>
    readRows(file(`datasets/${s.split}.jsonl`), NormalizedItemSchema).pipe(
      Effect.flatMap((rows) => {
        const items = selectItems(rows, s)
        return Array.isArray(items) ? Effect.succeed(items) : Effect.fail(new TaskInputError(items.error))
      })
    ),
  id: (item) => item.id,
  text: (item) => item.question,
  defaultPolicy: (config) => (name === "mc" ? "sys0" : config.inference.policy),
  systemText: (policy, policies) => policyText(name, policy, policies),
  messages: (item, system) => messagesFor(name, item, system),
  sampling: (inference) => {
    const { seed: _seed, ...rest } = samplingFor(name, inference)
    return rest
  },
  constraint: constraintFor(name),
  keep: cutOutput,
  rowLine: (item, at, outputs) =>
    predictionRowLine({
      task: name,
      id: item.id,
      benchmark: item.benchmark,
      condition: item.condition,
      scenario: item.scenario,
      answer: item.answer,
      gold_label: item.gold_label,
      split: item.split,
      policy: at.policy,
      sample: at.sample,
      outputs,
      // The audit and the report read the question from the row itself, not from the run's datasets/.
      question: item.question
    }),
  evaluate: runDiffAwareEvaluate
})

export const dartTask = diffAwareTask("dart")
export const mcTask = diffAwareTask("mc")
