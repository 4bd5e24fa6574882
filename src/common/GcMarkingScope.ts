import { Effect, type Scope } from "effect"
import { setFlagsFromString } from "node:v8"
import { userGaveFlag } from "./NodeFlags.ts"

const userChose = userGaveFlag("--concurrent-marking")
let depth = 0

/**
 * For the length of a scope, V8 marks the old generation in incremental steps on the main thread
 * instead of in a concurrent marker thread. Why: a long request loop (small, flat live heap, much
 * promoted short-lived garbage) on a busy few-core box starves the concurrent marker now and then;
 * marking then ends late, the heap overshoots its limit, V8 keeps the extra pages, and peak RSS
 * crept up with the run's length (a 200,000-request `dart infer` peaked 20-25 % above a
 * 20,000-request one). Marked on the main thread the overshoot is the same every cycle, so the
 * peak is reached in the first seconds and stays. Costs about 2 % of the loop's main-thread time.
 * Scopes nest; a `--concurrent-marking` choice on the command line or in NODE_OPTIONS wins.
 */
export const mainThreadGcMarking: Effect.Effect<void, never, Scope.Scope> = userChose
  ? Effect.void
  : Effect.acquireRelease(
    Effect.sync(() => {
      if (depth++ === 0) setFlagsFromString("--no-concurrent-marking")
    }),
    () =>
      Effect.sync(() => {
        if (--depth === 0) setFlagsFromString("--concurrent-marking")
      })
  )
