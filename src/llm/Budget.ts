import { Deferred, Effect, Exit } from "effect"

/**
 * A spending cap that holds under concurrency: each request reserves its projected tokens and
 * cost before it is sent and settles with the real usage after. A request starts only when
 * spent + reserved + its projection fits, or when nothing else is on the wire and budget is
 * left (so a cap smaller than one request still lets one through). The cap is therefore
 * crossed by at most the requests already on the wire, and only by what they under-projected.
 * Shared by the teacher and the audit's LLM judge.
 */
export interface Cap {
  readonly maxTokens: number | null
  readonly maxUsd: number | null
}

export interface Amount {
  readonly tokens: number
  readonly usd: number
}

export interface Reservation {
  /** Replaces the projection by what the request really cost (zero when it failed unbilled). */
  readonly settle: (actual: Amount) => Effect.Effect<void>
}

export interface BudgetGate {
  /** A reservation, or `undefined` when the budget is spent. Waits while in-flight requests may free room. */
  readonly reserve: (projected: Amount) => Effect.Effect<Reservation | undefined>
  /**
   * Runs `request` under a reservation of `projected`, settled with `actual(result)` on success and
   * with nothing on failure or interruption; `undefined` (nothing sent) when the budget is spent.
   */
  readonly spend: <A, E, R>(projected: Amount, request: Effect.Effect<A, E, R>, actual: (a: A) => Amount) => Effect.Effect<A | undefined, E, R>
  readonly spent: () => Amount
  readonly exhausted: () => boolean
}

export const makeBudgetGate = (cap: Cap): Effect.Effect<BudgetGate> =>
  Effect.sync(() => {
    const spent = { tokens: 0, usd: 0 }
    const reserved = { tokens: 0, usd: 0 }
    let inFlight = 0
    let changed: Deferred.Deferred<void> | undefined
    const over = (extra: Amount) =>
      (cap.maxTokens !== null && spent.tokens + reserved.tokens + extra.tokens > cap.maxTokens) ||
      (cap.maxUsd !== null && spent.usd + reserved.usd + extra.usd > cap.maxUsd)
    const exhausted = () =>
      (cap.maxTokens !== null && spent.tokens >= cap.maxTokens) || (cap.maxUsd !== null && spent.usd >= cap.maxUsd)

    const take = (projected: Amount): Reservation => {
      inFlight++
      reserved.tokens += projected.tokens
      reserved.usd += projected.usd
      let settled = false
      return {
        settle: (actual) =>
          Effect.suspend(() => {
            if (settled) return Effect.void
            settled = true
            inFlight--
            reserved.tokens -= projected.tokens
            reserved.usd -= projected.usd
            // Spending never shrinks: a negative actual (a lying provider) would reopen a spent budget.
            spent.tokens += Math.max(0, actual.tokens)
            spent.usd += Math.max(0, actual.usd)
            const waiting = changed
            changed = undefined
            return waiting === undefined ? Effect.void : Deferred.succeed(waiting, undefined).pipe(Effect.asVoid)
          })
      }
    }

    const reserve = (projected: Amount): Effect.Effect<Reservation | undefined> =>
      Effect.suspend(() => {
        if (exhausted()) return Effect.succeed(undefined)
        if (!over(projected) || inFlight === 0) return Effect.succeed(take(projected))
        // Does not fit now, but requests on the wire may settle below their projection.
        const wait = changed ?? (changed = Deferred.makeUnsafe<void>())
        return Deferred.await(wait).pipe(Effect.andThen(reserve(projected)))
      })

    const spend = <A, E, R>(projected: Amount, request: Effect.Effect<A, E, R>, actual: (a: A) => Amount) =>
      Effect.flatMap(reserve(projected), (r) =>
        r === undefined
          ? Effect.succeed(undefined)
          : request.pipe(Effect.onExit((exit) => r.settle(Exit.isSuccess(exit) ? actual(exit.value) : { tokens: 0, usd: 0 }))))

    return { reserve, spend, spent: () => ({ ...spent }), exhausted }
  })
