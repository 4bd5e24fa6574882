/** PredictionRows: the lines of `predictions/{RUN}/outputs.jsonl`, assembled from a task's items and their answers. */
import type { PredictionOutput } from "../contracts/PredictionRow.ts"
import type { Task } from "../tasks/Task.ts"
import type { AnswerRow } from "./AnswerStore.ts"
import { type RequestGrid, rowStart } from "./RequestGrid.ts"

export interface RowsInput<I> {
  readonly task: Task<I>
  readonly policy: string
  readonly items: ReadonlyArray<I>
  readonly samples: number
  /** Arm names in request order; a row's `outputs` keeps this order. */
  readonly arms: ReadonlyArray<string>
  /** Whether request `i` (a RequestGrid index) has an answer. */
  readonly answered: (i: number) => boolean
  /** The answer of request `i`; called only where `answered(i)`. */
  readonly read: (i: number) => Pick<AnswerRow, "text" | "finish_reason" | "server">
}

/**
 * One line per (item, sample) whose every arm has an answer, in item then sample order, as the task writes its rows; a
 * row still missing an arm is left out (a rerun asks for it), so the file only ever holds complete comparisons. Lazy,
 * so a million rows never sit in memory: the caller streams them to disk.
 */
export function* predictionRows<I>(input: RowsInput<I>): Generator<string> {
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
        outputs[input.arms[a]!] = { text: input.task.keep(r.text), finish_reason: r.finish_reason, server: r.server }
      }
      if (!complete) continue
      yield input.task.rowLine(item, { policy: input.policy, sample }, outputs)
    }
  }
}
