import { Effect, Option } from "effect"
import { Command, Flag } from "effect/cli"
import { ConfigLoader, DEFAULT_CONFIG } from "../config/ConfigLoader.ts"

/** Flags every command shares; subcommands read them by yielding `root`. */
export const root = Command.make("dart").pipe(
  Command.withSharedFlags({
    config: Flag.String("config").pipe(
      Flag.withDescription(
        `experiment config file (dart init: default ${DEFAULT_CONFIG}; later stages: the run's own configs/config.json, ` +
          "and a given file may change only operational keys such as budgets, concurrency, endpoints, retries)"
      ),
      Flag.optional
    ),
    override: Flag.String("override").pipe(
      Flag.withDescription("set key.path=value (repeatable; the value is parsed as JSON when it parses, else taken as a string)"),
      Flag.atLeast(0)
    ),
    expId: Flag.String("exp-id").pipe(
      Flag.withDescription("experiment id (same as --override run.exp_id=ID; EXP_ID in the environment also works)"),
      Flag.optional
    ),
    // The original's commands took it to create runs/{EXP_ID}/ first; dart always does, so it changes nothing.
    materialize: Flag.Boolean("materialize").pipe(
      Flag.withDescription("accepted for the original's command lines: dart always materializes runs/{EXP_ID}/"),
      Flag.withDefault(false)
    )
  }),
  Command.withDescription(
    "DART: Distill-Audit-Repair Training. Trains and measures a difference-aware chat model, resumably, under runs/{EXP_ID}/."
  )
)

const request = Effect.gen(function*() {
  const flags = yield* root
  return { configPath: Option.getOrUndefined(flags.config), overrides: flags.override, expId: flags.expId }
})

/** The resolved experiment config for the shared flags of this invocation (dart init, dart datasets). */
export const loadConfig = Effect.gen(function*() {
  const loader = yield* ConfigLoader
  return yield* loader.load(yield* request)
})

/**
 * A later stage's config: the run's own snapshot; --config / --override may change only
 * operational keys (ConfigLoader.loadForRun). Every stage after init reads its config here.
 */
export const loadRunConfig = Effect.gen(function*() {
  const loader = yield* ConfigLoader
  return yield* loader.loadForRun(yield* request)
})
