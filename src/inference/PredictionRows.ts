/** PredictionRows: the contract rows of `predictions/{RUN}/outputs.jsonl`, assembled from the items and their answers. */
import type { PredictionOutput, PredictionRow } from "../contracts/PredictionRow.ts"
import type { NormalizedItem } from "../datasets/BenchmarkItem.ts"
import type { AnswerRow } from "./AnswerStore.ts"
import { cutOutput, type InferTask } from "./InferencePlan.ts"
import { type RequestGrid, rowStart } from "./RequestGrid.ts"

export interface RowsInput {
  readonly task: InferTask
  readonly policy: string
  readonly items: ReadonlyArray<NormalizedItem>
  readonly samples: number
  /** Arm names in request order; a row's `outputs` keeps this order. */
  readonly arms: ReadonlyArray<string>
  /** Whether request `i` (a RequestGrid index) has an answer. */
  readonly answered: (i: number) => boolean
  /** The answer of request `i`; called only where `answered(i)`. */
  readonly read: (i: number) => Pick<AnswerRow, "text" | "finish_reason" | "server">
}

/**
 * One row per (item, sample) whose every arm has an answer, in item then sample order; a row still missing an arm is
 * left out (a rerun asks for it), so the file only ever holds complete comparisons. Lazy, so a million rows never
 * sit in memory: the caller streams them to disk.
 */
export function* predictionRows(input: RowsInput): Generator<PredictionRow> {
  const grid: RequestGrid = { items: input.items.length, samples: input.samples, arms: input.arms.length }
  for (let it = 0; it < input.items.length; it++) {
    const item = input.items[it]!
    for (let sample = 0; sample < input.samples; sample++) {
      const start = rowStart(grid, it, sample)
      const outputs: Record<string, PredictionOutput> = {}
      let complete = true
      for (let a = 0; a < grid.arms; a++) {
        if (!input.answered(start + a)) {
          complete = false
          break
        }
        const r = input.read(start + a)
        outputs[input.arms[a]!] = { text: cutOutput(r.text), finish_reason: r.finish_reason, server: r.server }
      }
      if (!complete) continue
      yield {
        task: input.task,
        id: item.id,
        benchmark: item.benchmark,
        condition: item.condition,
        scenario: item.scenario,
        answer: item.answer,
        gold_label: item.gold_label,
        split: item.split,
        policy: input.policy,
        sample,
        outputs,
        // The audit and the report read the question from the row itself, not from the run's datasets/.
        question: item.question
      }
    }
  }
}
