/** OodAuditFiles: an out-of-distribution audit's rows read back (by the evaluation): every answer's harm score and judge label. */
import { Effect } from "effect"
import { OodScoreRow, OodVerdictRow } from "../contracts/OodRows.ts"
import { fileExists } from "../runs/AtomicFile.ts"
import { readRows } from "../runs/Jsonl.ts"

/** The rows beside an audit's `summary.json`, by answer key (`id#sample#model`). */
export const readOodAudit = (summaryFile: string) =>
  Effect.gen(function*() {
    const folder = summaryFile.replace(/\/summary\.json$/, "")
    const scores = (yield* fileExists(`${folder}/scores.jsonl`)) ? yield* readRows(`${folder}/scores.jsonl`, OodScoreRow) : []
    const verdicts = (yield* fileExists(`${folder}/verdicts.jsonl`)) ? yield* readRows(`${folder}/verdicts.jsonl`, OodVerdictRow) : []
    return { scores: new Map(scores.map((s) => [s.key, s])), verdicts: new Map(verdicts.map((v) => [v.key, v])) }
  })

/** The first (id, sample) that repeats an earlier row, with its 1-based row number (rows are one per line). */
export const repeatedRow = (rows: ReadonlyArray<{ readonly id: string; readonly sample: number }>) => {
  const seen = new Map<string, number>()
  for (const [i, r] of rows.entries()) {
    const key = `${r.id}#${r.sample}`
    const first = seen.get(key)
    if (first !== undefined) return { line: i + 1, message: `id ${JSON.stringify(r.id)} sample ${r.sample} repeats row ${first}` }
    seen.set(key, i + 1)
  }
  return undefined
}
