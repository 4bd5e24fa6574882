import { Effect, Semaphore } from "effect"

/**
 * A concurrency cap that backs off under rate limiting: after repeated 429s it halves,
 * and after a window of successes it grows by one again, never above the configured cap.
 */
export interface AdaptiveLimiter {
  readonly run: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  readonly onRateLimited: Effect.Effect<void>
  readonly onSuccess: Effect.Effect<void>
  readonly current: () => number
}

export const makeAdaptiveLimiter = (max: number, options: { readonly strikes?: number } = {}): Effect.Effect<AdaptiveLimiter> =>
  Effect.gen(function*() {
    const semaphore = yield* Semaphore.make(max)
    const strikesToShrink = options.strikes ?? 2
    let limit = max
    let strikes = 0
    let successes = 0
    const resize = (n: number) => {
      limit = n
      return Semaphore.resize(semaphore, n)
    }
    return {
      run: (effect) => Semaphore.withPermits(semaphore, 1)(effect),
      onRateLimited: Effect.suspend(() => {
        successes = 0
        if (++strikes < strikesToShrink) return Effect.void
        strikes = 0
        return resize(Math.max(1, Math.floor(limit / 2)))
      }),
      onSuccess: Effect.suspend(() => {
        strikes = 0
        if (limit >= max || ++successes < limit) return Effect.void
        successes = 0
        return resize(limit + 1)
      }),
      current: () => limit
    }
  })
