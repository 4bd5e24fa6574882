/** RequestGrid: the request index of every (item, sample, arm) cell of a run, and which cells still need asking. */
import type { AnswerRow } from "./AnswerStore.ts"

/**
 * A run's requests as one flat array: request index = ((item × samples) + sample) × arms + arm, so the arms of one
 * (item, sample) row sit side by side and an item's rows follow each other. Per-request state (answered, which
 * server answered) is then a typed array of `size(grid)` entries, a few bytes per request however long the run.
 */
export interface RequestGrid {
  readonly items: number
  readonly samples: number
  readonly arms: number
}

export interface Cell {
  readonly item: number
  readonly sample: number
  readonly arm: number
}

export const size = (grid: RequestGrid): number => grid.items * grid.samples * grid.arms

/** The index of the row's first arm; its arms follow at +1, +2, … */
export const rowStart = (grid: RequestGrid, item: number, sample: number): number => (item * grid.samples + sample) * grid.arms

export const requestIndex = (grid: RequestGrid, cell: Cell): number => rowStart(grid, cell.item, cell.sample) + cell.arm

export const cellOf = (grid: RequestGrid, index: number): Cell => {
  const arm = index % grid.arms
  const row = (index - arm) / grid.arms
  return { item: Math.floor(row / grid.samples), sample: row % grid.samples, arm }
}

/**
 * Maps an answer row to its request index, or −1 when it belongs to no request of this run (an item or arm no longer
 * selected, another policy, a sample beyond `samples`): such rows stay in answers.jsonl and are ignored.
 */
export const answerIndexer = (plan: {
  readonly itemIds: ReadonlyArray<string>
  readonly armNames: ReadonlyArray<string>
  readonly policy: string
  readonly samples: number
}): (row: Pick<AnswerRow, "id" | "model" | "policy" | "sample">) => number => {
  const grid: RequestGrid = { items: plan.itemIds.length, samples: plan.samples, arms: plan.armNames.length }
  const itemIndex = new Map(plan.itemIds.map((id, i) => [id, i]))
  const armIndex = new Map(plan.armNames.map((name, i) => [name, i]))
  return (row) => {
    const item = itemIndex.get(row.id)
    const arm = armIndex.get(row.model)
    if (item === undefined || arm === undefined || row.policy !== plan.policy || row.sample < 0 || row.sample >= plan.samples) return -1
    return requestIndex(grid, { item, sample: row.sample, arm })
  }
}

/** 1 where a request has an answer (`offset` ≥ 0, as `AnswerIndex.offset` records it), else 0. */
export const answeredMask = (offset: ArrayLike<number>): Uint8Array => {
  const done = new Uint8Array(offset.length)
  for (let i = 0; i < offset.length; i++) done[i] = offset[i]! >= 0 ? 1 : 0
  return done
}

/**
 * Which of this run's servers (index into `servers`) gave each answer, −1 for none. An earlier answer counts as one
 * of this run's servers only when it came from the same URL; `recorded` indexes into `recordedServers`.
 */
export const answeredByServer = (
  done: Uint8Array,
  recorded: ArrayLike<number>,
  recordedServers: ReadonlyArray<string>,
  servers: ReadonlyArray<string>
): Int16Array => {
  const by = new Int16Array(done.length).fill(-1)
  for (let i = 0; i < done.length; i++) {
    if (done[i]) by[i] = servers.indexOf(recordedServers[recorded[i]!]!)
  }
  return by
}

/** Whether any arm of the (item, sample) row lacks an answer. */
export const rowMissing = (grid: RequestGrid, done: Uint8Array, item: number, sample: number): boolean => {
  const start = rowStart(grid, item, sample)
  for (let k = start; k < start + grid.arms; k++) if (!done[k]) return true
  return false
}

/** The items with at least one request unanswered, in order: the work a run still has. */
export const itemsMissing = (grid: RequestGrid, done: Uint8Array): Array<number> => {
  const missing: Array<number> = []
  const perItem = grid.samples * grid.arms
  for (let item = 0; item < grid.items; item++) {
    for (let k = item * perItem; k < (item + 1) * perItem; k++) {
      if (!done[k]) {
        missing.push(item)
        break
      }
    }
  }
  return missing
}

/**
 * The arms `server` must ask for one (item, sample) row: none when the row is complete, else every arm it did not
 * answer itself. All arms of a row come from one server, so the models a row compares answered under the same
 * serving: answers another server gave for an incomplete row are asked again.
 */
export const armsToAsk = (grid: RequestGrid, done: Uint8Array, answeredBy: Int16Array, server: number, item: number, sample: number): Array<number> => {
  if (!rowMissing(grid, done, item, sample)) return []
  const start = rowStart(grid, item, sample)
  const arms: Array<number> = []
  for (let arm = 0; arm < grid.arms; arm++) {
    if (!(done[start + arm] && answeredBy[start + arm] === server)) arms.push(arm)
  }
  return arms
}

/** How many (item, sample) rows have an answer for every arm. */
export const completeRows = (grid: RequestGrid, done: Uint8Array): number => {
  let complete = 0
  for (let item = 0; item < grid.items; item++) {
    for (let sample = 0; sample < grid.samples; sample++) if (!rowMissing(grid, done, item, sample)) complete++
  }
  return complete
}
