import { Config, Console, Context, Effect, Layer, Option, Schema, FileSystem } from "effect"
import { describeIssue, flattenIssue, formatPath, jsonErrorLocation } from "../common/IssuePaths.ts"
import { hashJson } from "../common/Hashing.ts"
import { ExperimentConfig, type ExperimentConfigInput, defaults } from "./ExperimentConfig.ts"
import { isLegacyConfig, translateLegacyConfig, translateLegacyOverrides } from "./LegacyConfig.ts"
import { deepMerge, isPlainObject, parseOverride, setPath, } from "./Overrides.ts"

export class ConfigError extends Schema.TaggedError<ConfigError>()("ConfigError", {
  message: Schema.String
}) {}

export interface ConfigRequest {
  readonly configPath: string
  readonly overrides: ReadonlyArray<string>
  readonly expId: Option.Option<string>
}

export interface ResolvedConfig {
  readonly config: ExperimentConfig
  /** The resolved config as plain JSON: what `configs/config.json` holds. */
  readonly json: ExperimentConfigInput
  readonly hash: string
  readonly configPath: string
  /** Lines to show the user: how a config in the original's shape was translated. */
  readonly notices?: ReadonlyArray<string>
}

const decode = Schema.decodeUnknownResult(ExperimentConfig)
const encode = Schema.encodeSync(ExperimentConfig)

/**
 * Pure resolution: defaults <- file <- EXP_ID <- --override (in order) <- --exp-id.
 * Errors name the file or the override that put the bad value there.
 */
export const resolveConfig = (
  configPath: string,
  fileText: string,
  overrides: ReadonlyArray<string>,
  envExpId: string | undefined,
  flagExpId: string | undefined
): ResolvedConfig | ConfigError => {
  let fromFile: unknown
  try {
    fromFile = JSON.parse(fileText)
  } catch (e) {
    return new ConfigError({ message: `${configPath}: malformed JSON at ${jsonErrorLocation(fileText, e)}` })
  }
  if (!isPlainObject(fromFile)) {
    return new ConfigError({ message: `${configPath}: expected a JSON object at the top level` })
  }
  // The original Python code's shape is translated key by key (src/config/LegacyConfig.ts).
  const legacy = isLegacyConfig(fromFile) ? translateLegacyConfig(fromFile) : undefined
  if (legacy && legacy.refusals.length > 0) {
    return new ConfigError({ message: `${configPath}: a config in the original's shape with keys dart cannot honour:\n${legacy.refusals.map((r) => `  ${r}`).join("\n")}` })
  }
  if (legacy) fromFile = legacy.config
  const given: Array<Exclude<ReturnType<typeof parseOverride>, string>> = []
  for (const raw of overrides) {
    const o = parseOverride(raw)
    if (typeof o === "string") return new ConfigError({ message: o })
    given.push(o)
  }
  const fromOriginal = translateLegacyOverrides(given)
  if (fromOriginal.refusals.length > 0) return new ConfigError({ message: fromOriginal.refusals.join("\n") })
  const parsed = fromOriginal.overrides
  const expIdPath = ["run", "exp_id"]
  const layers: Array<{ readonly label: string; readonly path: ReadonlyArray<string>; readonly value: unknown }> = [
    ...(envExpId !== undefined && envExpId !== "" ? [{ label: "EXP_ID in the environment", path: expIdPath, value: envExpId }] : []),
    ...parsed.map((o) => ({ label: `--override ${o.raw}`, path: o.path, value: o.value })),
    ...(flagExpId !== undefined ? [{ label: `--exp-id ${flagExpId}`, path: expIdPath, value: flagExpId }] : [])
  ]
  let tree = deepMerge(defaults, fromFile)
  for (const o of layers) tree = setPath(tree, o.path, o.value)

  const result = decode(tree, { errors: "all", onExcessProperty: "error" })
  if (result._tag === "Failure") {
    const lines = flattenIssue(result.failure.issue).map((issue) => {
      const key = formatPath(issue.path)
      const source = [...layers].reverse().find((o) => key === o.path.join(".") || key.startsWith(`${o.path.join(".")}.`))
      return `  ${describeIssue(issue, tree)}  [from ${source?.label ?? configPath}]`
    })
    return new ConfigError({ message: `${configPath}: invalid config\n${lines.join("\n")}` })
  }
  const json = encode(result.success)
  const notices = [
    ...(legacy === undefined ? [] : [
      ...legacy.notices.map((n) => `${configPath}: ${n}`),
      `${configPath}: is in the original's shape; \`dart config migrate ${configPath} --out FILE\` writes it in dart's`
    ]),
    ...fromOriginal.notices
  ]
  return { config: result.success, json, hash: hashJson(json), configPath, notices }
}

export class ConfigLoader extends Context.Service<ConfigLoader, {
  load(request: ConfigRequest): Effect.Effect<ResolvedConfig, ConfigError>
}>()("dart/config/ConfigLoader") {
  static readonly layer = Layer.effect(
    ConfigLoader,
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const envExpId = yield* Config.option(Config.String("EXP_ID")).pipe(
        Effect.map(Option.getOrUndefined),
        Effect.orElseSucceed(() => undefined)
      )
      const load = Effect.fn("ConfigLoader.load")(function*(request: ConfigRequest) {
        const text = yield* fs.readFileString(request.configPath).pipe(
          Effect.mapError((e) =>
            new ConfigError({
              message: `${request.configPath}: cannot read config file (${e.reason._tag === "NotFound" ? "no such file" : e.message})`
            })
          )
        )
        const resolved = resolveConfig(request.configPath, text, request.overrides, envExpId, Option.getOrUndefined(request.expId))
        if (resolved instanceof ConfigError) return yield* resolved
        if (resolved.notices && resolved.notices.length > 0) yield* Console.error(resolved.notices.join("\n"))
        return resolved
      })
      return ConfigLoader.of({ load })
    })
  )
}
