import { Effect, Schema, type Scope } from "effect"
import { fileExists } from "../runs/AtomicFile.ts"
import { openAppender, readRows, type TornTail } from "../runs/Jsonl.ts"
import type { RunStoreError } from "../runs/RunStoreError.ts"

/** One paid response, keyed by the hash of everything that determined it. */
export const LedgerRecord = Schema.Struct({
  key: Schema.String,
  content: Schema.String,
  finish_reason: Schema.NullOr(Schema.String),
  prompt_tokens: Schema.Number,
  completion_tokens: Schema.Number,
  model: Schema.String,
  /** The provider sent no usage: the token counts are a local estimate. */
  usage_estimated: Schema.optionalKey(Schema.Boolean)
})
export type LedgerRecord = typeof LedgerRecord.Type

export interface ResponseLedger {
  readonly get: (key: string) => LedgerRecord | undefined
  /** Durable before it returns: a response counts only once it is on disk. */
  readonly record: (r: LedgerRecord) => Effect.Effect<void, RunStoreError>
  readonly records: () => IterableIterator<LedgerRecord>
  readonly tornTail: TornTail | undefined
}

export const openLedger = (file: string): Effect.Effect<ResponseLedger, RunStoreError, Scope.Scope> =>
  Effect.gen(function*() {
    let tornTail: TornTail | undefined
    const exists = yield* fileExists(file)
    const rows = exists ? yield* readRows(file, LedgerRecord, (t) => (tornTail = t)) : []
    const byKey = new Map<string, LedgerRecord>()
    for (const r of rows) byKey.set(r.key, r)
    const out = yield* openAppender(file)
    return {
      get: (key) => byKey.get(key),
      record: (r) => out.append([r]).pipe(Effect.tap(() => Effect.sync(() => byKey.set(r.key, r)))),
      records: () => byKey.values(),
      tornTail
    }
  })
