import { Clock, Console, Effect, Schedule } from "effect"

/** Counts for a progress line: done/total, rate, ETA, and tokens/cost where money is spent. */
export interface ProgressState {
  done: number
  total: number
  failed: number
  tokens: number
  costUsd: number
}

export const formatDuration = (s: number) =>
  !Number.isFinite(s) ? "?" : s < 90 ? `${Math.round(s)}s` : s < 5400 ? `${Math.round(s / 60)}m` : `${(s / 3600).toFixed(1)}h`

/**
 * The line for `p` after `elapsedS` seconds of this invocation. `doneAtStart` items were already
 * done before it (resumed work): they count in done/total but not in the rate or the ETA.
 */
export const progressLine = (label: string, p: ProgressState, elapsedS: number, extra = "", doneAtStart = 0): string => {
  const rate = elapsedS > 0 ? (p.done - doneAtStart) / elapsedS : 0
  const pct = p.total === 0 ? 100 : (100 * p.done) / p.total
  const eta = rate > 0 ? (p.total - p.done) / rate : Number.POSITIVE_INFINITY
  return `${label} ${p.done}/${p.total} (${pct.toFixed(1)}%) ${rate.toFixed(1)}/s ETA ${formatDuration(eta)}` +
    ` | ${p.tokens.toLocaleString("en")} tokens $${p.costUsd.toFixed(4)}${p.failed > 0 ? ` | ${p.failed} failed` : ""}${extra}`
}

/**
 * Prints a progress line for the mutable `state` to stderr every `everyMs` until the surrounding
 * scope closes; every stage uses it. The line is rebuilt from `state` at each tick, and the rate
 * counts only the items done since this call. Returns the builder for a final line.
 */
export const reportProgress = (
  label: string,
  state: ProgressState,
  extra: () => string,
  everyMs: number,
  print: (line: string) => Effect.Effect<void> = Console.error
) =>
  Effect.gen(function*() {
    const started = yield* Clock.currentTimeMillis
    const doneAtStart = state.done
    const line = Effect.map(Clock.currentTimeMillis, (now) => progressLine(label, state, (now - started) / 1000, extra(), doneAtStart))
    yield* Effect.forkScoped(
      Effect.flatMap(line, print).pipe(
        Effect.repeat(Schedule.spaced(everyMs)),
        Effect.delay(everyMs)
      )
    )
    return line
  })
