import { Console, Effect, Schema } from "effect"
import { looksLikeOriginalPoolRow, originalPoolDecoder } from "../compat/OriginalPool.ts"
import { RegressionPoolRow } from "../contracts/RegressionPoolRow.ts"
import { decodeJsonLine, forEachLine } from "../runs/Jsonl.ts"
import type { RunStoreError } from "../runs/RunStoreError.ts"

const decodeRow = Schema.decodeUnknownResult(RegressionPoolRow)

/**
 * Reads a regression pool (`dart teacher --task repair --input`): dart's rows through the contract, rows the
 * original's audit wrote through src/compat (each row by its own shape), saying on stderr what was translated
 * and warning when the original's pool holds test items.
 */
export const readPoolRows = (file: string): Effect.Effect<Array<RegressionPoolRow>, RunStoreError> =>
  Effect.gen(function*() {
    const rows: Array<RegressionPoolRow> = []
    const original = originalPoolDecoder(file)
    yield* forEachLine(file, (text) => {
      if (text.trim() === "") return
      rows.push(looksLikeOriginalPoolRow(text) ? original.decode(text) : decodeJsonLine(text, decodeRow))
    })
    for (const notice of original.notices()) yield* Console.error(notice)
    return rows
  })
