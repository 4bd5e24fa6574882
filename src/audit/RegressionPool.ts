import { Console, Effect, Schema } from "effect"
import { looksLikeOriginalPoolRow, originalPoolDecoder } from "../compat/OriginalPool.ts"
import { RegressionPoolRow } from "../contracts/RegressionPoolRow.ts"
import { NormalizedItemSchema, type Split, splits } from "../datasets/BenchmarkItem.ts"
import type { Label } from "../domain/Label.ts"
import { decodeJsonLine, forEachLine, readRows } from "../runs/Jsonl.ts"
import type { RunStoreError } from "../runs/RunStoreError.ts"
import { showName } from "../runs/SafePath.ts"

const decodeRow = Schema.decodeUnknownResult(RegressionPoolRow)

/** A decoded pool row and the line of the pool file it came from (for messages). */
export interface PoolEntry {
  readonly line: number
  readonly row: RegressionPoolRow
  /** Written by the original's audit (read through src/compat): its ids are the original's, never a dart run's. */
  readonly original: boolean
}

/**
 * Reads a regression pool (`dart teacher --task repair --input`): dart's rows through the contract, rows the
 * original's audit wrote through src/compat (each row by its own shape), saying on stderr what was translated
 * and warning when the original's pool holds test items.
 */
export const readPoolEntries = (file: string): Effect.Effect<Array<PoolEntry>, RunStoreError> =>
  Effect.gen(function*() {
    const entries: Array<PoolEntry> = []
    const original = originalPoolDecoder(file)
    yield* forEachLine(file, (text, line) => {
      if (text.trim() === "") return
      const fromOriginal = looksLikeOriginalPoolRow(text)
      entries.push({ line, row: fromOriginal ? original.decode(text) : decodeJsonLine(text, decodeRow), original: fromOriginal })
    })
    for (const notice of original.notices()) yield* Console.error(notice)
    return entries
  })

/** The rows of a regression pool, as `readPoolEntries` reads them. */
export const readPoolRows = (file: string): Effect.Effect<Array<RegressionPoolRow>, RunStoreError> =>
  Effect.map(readPoolEntries(file), (entries) => entries.map((e) => e.row))

/** What the run's own `datasets/` say about an item: the authority a pool row is checked against. */
export interface RunItem {
  readonly id: string
  readonly benchmark: string
  readonly question: string
  readonly gold_label: Label
  readonly split: Split
}

/** The run's items by id, from `datasets/{train,val,test}.jsonl` (`file` maps a split to its path). */
export const readRunItems = (file: (split: Split) => string): Effect.Effect<Map<string, RunItem>, RunStoreError> =>
  Effect.gen(function*() {
    const items = new Map<string, RunItem>()
    for (const split of splits) {
      for (const r of yield* readRows(file(split), NormalizedItemSchema)) {
        items.set(r.id, { id: r.id, benchmark: r.benchmark, question: r.question, gold_label: r.gold_label, split: r.split })
      }
    }
    return items
  })

export interface PoolCheckOptions {
  /** The run's `audit.allow_test_repair`: the only thing that lets a test item be repaired (docs/protocol.md §9 B3). */
  readonly allowTestRepair: boolean
  /** Rows whose id is not an item of this run (a pool made on another run) are repaired as written. */
  readonly allowForeignRows: boolean
}

/** A pool row that disagrees with the run's datasets, or may not be repaired. */
export class PoolRowError extends Schema.TaggedError<PoolRowError>()("PoolRowError", { message: Schema.String }) {}

/** Both values where they first differ, each cut to a window around that point. */
const showBoth = (pool: string, run: string): string => {
  let i = 0
  while (i < pool.length && i < run.length && pool[i] === run[i]) i++
  const from = Math.max(0, i - 20)
  const cut = (s: string) => `${from > 0 ? "…" : ""}${showName(s.slice(from, from + 70))}${s.length > from + 70 ? "…" : ""}`
  return `${cut(pool)} in the pool, ${cut(run)} in the run`
}

/** A question as compared across ids: case and spacing edits do not make a test item's question another one. */
const questionKey = (question: string) => question.toLowerCase().replace(/\s+/g, " ").trim()

const inTestSplit = "in the run's test split (datasets/test.jsonl): repairing it would train on items the final evaluation scores " +
  "(docs/protocol.md §9 B3), and audit.allow_test_repair is false in this run's config"

/**
 * Why `row` may not be repaired in this run, or undefined. A row of the run's item must say what the run's
 * `datasets/` say (split, benchmark, gold label, question): an edited split must not pass a test item as val, an
 * edited label or question must not reach the teacher. A foreign row (its id unknown) needs `allowForeignRows`, and
 * is still refused when its question is one of the run's test items under another id.
 */
export const poolRowProblem = (
  { original, row }: PoolEntry,
  items: ReadonlyMap<string, RunItem>,
  /** The run's items by `questionKey`, for foreign rows. */
  byQuestion: ReadonlyMap<string, ReadonlyArray<RunItem>>,
  options: PoolCheckOptions
): string | undefined => {
  const item = items.get(row.id)
  if (item === undefined) {
    if (!options.allowForeignRows) {
      return `id: ${showName(row.id)} is not an item of this run (datasets/{train,val,test}.jsonl); ` +
        (original
          ? "the original's audit names items by its own ids: pass --allow-foreign-rows to repair the rows of its pool"
          : "pass --allow-foreign-rows to repair the rows of a pool made on another run")
    }
    const same = byQuestion.get(questionKey(row.question)) ?? []
    const test = same.find((s) => s.split === "test")
    if (test !== undefined && !options.allowTestRepair) return `question: ${showName(row.id)} has the question of ${test.id}, which is ${inTestSplit}`
    if (same.length > 0 && !same.some((s) => s.gold_label === row.gold_label)) {
      return `gold_label: ${showName(row.gold_label)} in the pool, ${showName(same[0]!.gold_label)} in the run for the same question (${same[0]!.id})`
    }
    if (row.split === "test" && !options.allowTestRepair) {
      return `split: ${showName(row.id)} says it is a test item; audit.allow_test_repair is false in this run's config (docs/protocol.md §9 B3)`
    }
    return undefined
  }
  // A split the row does not state is taken from the run; one it states must agree.
  if (row.split != null && row.split !== item.split) return `split: ${showBoth(row.split, item.split)} (datasets/${item.split}.jsonl, item ${item.id})`
  if (item.split === "test" && !options.allowTestRepair) return `split: ${item.id} is ${inTestSplit}`
  if (row.benchmark !== item.benchmark) return `benchmark: ${showBoth(row.benchmark, item.benchmark)} (item ${item.id})`
  if (row.gold_label !== item.gold_label) return `gold_label: ${showBoth(row.gold_label, item.gold_label)} (item ${item.id})`
  if (row.question !== item.question) return `question: ${showBoth(row.question, item.question)} (item ${item.id})`
  return undefined
}

/** Refuses the pool when any row may not be repaired, naming file, line and field of the first few. */
export const checkPoolEntries = (
  file: string,
  entries: ReadonlyArray<PoolEntry>,
  items: ReadonlyMap<string, RunItem>,
  options: PoolCheckOptions
): Effect.Effect<void, PoolRowError> =>
  Effect.suspend(() => {
    const byQuestion = new Map<string, Array<RunItem>>()
    if (options.allowForeignRows) {
      for (const item of items.values()) {
        const key = questionKey(item.question)
        const list = byQuestion.get(key)
        if (list === undefined) byQuestion.set(key, [item])
        else list.push(item)
      }
    }
    const problems: Array<string> = []
    for (const entry of entries) {
      const problem = poolRowProblem(entry, items, byQuestion, options)
      if (problem !== undefined) problems.push(`${file}:${entry.line}: ${problem}`)
    }
    if (problems.length === 0) return Effect.void
    const more = problems.length > 5 ? `\n(and ${problems.length - 5} more)` : ""
    return Effect.fail(
      new PoolRowError({
        message: `${problems.length} pool row(s) disagree with this run's datasets or may not be repaired; nothing was sent:\n` +
          `${problems.slice(0, 5).join("\n")}${more}`
      })
    )
  })
