import { Effect } from "effect"
import type { ChatMessage } from "../domain/ChatMessage.ts"
import { makeBudgetGate } from "./Budget.ts"
import type { LedgerRecord, ResponseLedger } from "./ResponseLedger.ts"
import { type Completion, estimateTokens, type LlmError } from "./LlmClient.ts"
import type { RunStoreError } from "../runs/RunStoreError.ts"

/** Prices per million tokens, as the teacher and judge settings give them. */
export interface Prices {
  readonly input_per_mtok: number
  readonly output_per_mtok: number
}

export const costUsd = (prices: Prices, promptTokens: number, completionTokens: number) =>
  (promptTokens * prices.input_per_mtok + completionTokens * prices.output_per_mtok) / 1e6

/** A reply, from the ledger or freshly paid for. */
export interface PaidReply {
  readonly key: string
  readonly record: LedgerRecord
  readonly replayed: boolean
  /**
   * Makes a fresh reply durable in the ledger (a no-op for a replayed one). A reply counts only once this has run:
   * a kill before it pays for the request again, a kill after never does.
   */
  readonly durable: Effect.Effect<void, RunStoreError>
}

/** What this invocation paid, for progress lines and summaries. */
export interface PaidStats {
  requests: number
  replayed: number
  tokens: number
  costUsd: number
  /** Replies whose provider sent no usage: their tokens are local estimates. */
  estimatedUsage: number
}

export interface PaidRequests {
  /**
   * The reply to `messages` under `key`: from the ledger when it was ever answered, else sent within the budget.
   * `undefined` once the budget is spent (nothing is sent then, and every later call returns `undefined` at once).
   */
  readonly ask: (
    key: string,
    messages: ReadonlyArray<ChatMessage>,
    send: Effect.Effect<Completion, LlmError>
  ) => Effect.Effect<PaidReply | undefined, LlmError>
  readonly stats: Readonly<PaidStats>
  readonly budgetReached: () => boolean
}

/**
 * The paid-request path of the teacher and the judge: ledger → budget → send → record. Each request reserves what
 * it may cost before it is sent and settles with the real usage after, so a cap is crossed by at most the requests
 * already on the wire.
 */
export const makePaidRequests = (options: {
  readonly ledger: ResponseLedger
  readonly budget: { readonly max_tokens: number | null; readonly max_usd: number | null }
  readonly prices: Prices
  /** The reply's cap: the projection of each request's completion. */
  readonly maxTokens: number
}): Effect.Effect<PaidRequests> =>
  Effect.gen(function*() {
    const { ledger, prices } = options
    const gate = yield* makeBudgetGate({ maxTokens: options.budget.max_tokens, maxUsd: options.budget.max_usd })
    const stats: PaidStats = { requests: 0, replayed: 0, tokens: 0, costUsd: 0, estimatedUsage: 0 }
    let budgetHit = false
    const ask: PaidRequests["ask"] = (key, messages, send) =>
      Effect.gen(function*() {
        const recorded = ledger.get(key)
        if (recorded !== undefined) {
          stats.replayed++
          return { key, record: recorded, replayed: true, durable: Effect.void }
        }
        if (budgetHit) return undefined
        const promptEstimate = messages.reduce((n, m) => n + estimateTokens(m.content), 0)
        const c = yield* gate.spend(
          { tokens: promptEstimate + options.maxTokens, usd: costUsd(prices, promptEstimate, options.maxTokens) },
          Effect.suspend(() => {
            stats.requests++
            return send
          }),
          (done) => ({ tokens: done.promptTokens + done.completionTokens, usd: costUsd(prices, done.promptTokens, done.completionTokens) })
        )
        if (c === undefined) {
          budgetHit = true
          return undefined
        }
        const record: LedgerRecord = {
          key,
          content: c.content,
          finish_reason: c.finishReason,
          prompt_tokens: c.promptTokens,
          completion_tokens: c.completionTokens,
          model: c.model,
          ...(c.usageEstimated ? { usage_estimated: true } : {})
        }
        if (c.usageEstimated) stats.estimatedUsage++
        stats.tokens += c.promptTokens + c.completionTokens
        stats.costUsd += costUsd(prices, c.promptTokens, c.completionTokens)
        return { key, record, replayed: false, durable: ledger.record(record) }
      })
    return { ask, stats, budgetReached: () => budgetHit }
  })
