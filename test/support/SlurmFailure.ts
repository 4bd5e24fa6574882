import { Effect, Exit } from "effect"
import type { SlurmError } from "../../src/compute/slurm/SlurmTransport.ts"

/** The error an effect failed with (a success or a defect fails the test). */
export const failure = <A>(effect: Effect.Effect<A, SlurmError>) =>
  Effect.exit(effect).pipe(Effect.map((exit) => {
    if (Exit.isSuccess(exit)) throw new Error("expected a failure")
    const fail = exit.cause.reasons.find((r) => r._tag === "Fail")
    if (fail === undefined) throw new Error(`expected a failure, got a defect: ${String(exit.cause)}`)
    return fail.error as SlurmError
  }))

/** Everything an error shows a user or a log. */
export const shown = (e: SlurmError) => `${e.via} ${e.message} ${String(e)} ${JSON.stringify(e)}`
