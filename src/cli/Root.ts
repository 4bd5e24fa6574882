import { Effect } from "effect"
import { Command, Flag } from "effect/cli"
import { ConfigLoader } from "../config/ConfigLoader.ts"

/** Flags every command shares; subcommands read them by yielding `root`. */
export const root = Command.make("dart").pipe(
  Command.withSharedFlags({
    config: Flag.String("config").pipe(
      Flag.withDescription("experiment config file"),
      Flag.withDefault("configs/exp_acl.json")
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

/** The resolved experiment config for the shared flags of this invocation. */
export const loadConfig = Effect.gen(function*() {
  const flags = yield* root
  const loader = yield* ConfigLoader
  return yield* loader.load({ configPath: flags.config, overrides: flags.override, expId: flags.expId })
})
