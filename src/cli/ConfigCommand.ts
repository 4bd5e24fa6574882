import { Console, Effect, Option } from "effect"
import { Argument, Command, Flag } from "effect/cli"
import * as fs from "node:fs/promises"
import { ConfigError, resolveConfig } from "../config/ConfigLoader.ts"
import { isLegacyConfig, translateLegacyConfig } from "../config/LegacyConfig.ts"
import { readTextIfExists, writeFileAtomic } from "../runs/AtomicFile.ts"

const migrateCommand = Command.make("migrate", {
  file: Argument.String("file").pipe(Argument.withDescription("a config in the original Python code's shape (e.g. its configs/exp_acl.json)")),
  out: Flag.String("out").pipe(Flag.withDescription("write the translated config here (default: print it)"), Flag.optional),
  force: Flag.Boolean("force").pipe(Flag.withDescription("replace an existing --out file with different content"), Flag.withDefault(false))
}, (args) =>
  Effect.gen(function*() {
    const text = yield* Effect.tryPromise({
      try: () => fs.readFile(args.file, "utf8"),
      catch: (e) => new ConfigError({ message: `${args.file}: cannot read config file (${(e as Error).message})`, cause: e })
    })
    // Validates the whole file exactly as every command would read it (refusals included).
    const resolved = resolveConfig(args.file, text, [], undefined, undefined)
    if (resolved instanceof ConfigError) return yield* resolved
    const json: unknown = JSON.parse(text)
    if (!isLegacyConfig(json)) return yield* Console.error(`${args.file} is already in dart's shape; nothing to translate`)
    const { config, notices } = translateLegacyConfig(json as Record<string, unknown>)
    const out = `${JSON.stringify(config, null, 2)}\n`
    yield* Console.error(notices.map((n) => `${args.file}: ${n}`).join("\n"))
    if (Option.isNone(args.out)) return yield* Console.log(out.trimEnd())
    const target = args.out.value
    const previous = yield* readTextIfExists(target)
    if (previous === out) return yield* Console.error(`${target} already holds this translation`)
    if (previous !== undefined && !args.force) {
      return yield* new ConfigError({ message: `${target} exists with different content; pass --force to replace it` })
    }
    yield* writeFileAtomic(target, out)
    yield* Console.error(`wrote ${target}: ${notices.length} keys of ${args.file} in dart's shape`)
  })).pipe(
    Command.withDescription(
      "Translate a config written for the original Python code (GitHub zihanliang/DART) into dart's shape, key by key, " +
        "with one line per key; keys dart cannot honour are refused with what they meant there. Every command also reads such a file directly."
    ),
    Command.withExamples([{ command: "dart config migrate configs/exp_acl.json --out configs/exp_acl.dart.json", description: "the original README's config" }])
  )

export const configCommand = Command.make("config").pipe(
  Command.withDescription("Experiment config tools."),
  Command.withSubcommands([migrateCommand])
)
