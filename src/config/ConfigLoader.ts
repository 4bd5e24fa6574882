import { Config, Console, Context, Effect, Layer, Option, Runtime, Schema, FileSystem } from "effect"
import * as path from "node:path"
import { describeIssue, flattenIssue, formatPath, jsonErrorLocation } from "../common/SchemaIssueText.ts"
import { hashJson } from "../common/Hashing.ts"
import { redact, registerSecretsFromEnv } from "../common/Redaction.ts"
import { describeChanges, diffConfigs } from "./ConfigDiff.ts"
import { ExperimentConfig, type ExperimentConfigInput, defaults } from "./ExperimentConfig.ts"
import { jsonKeyProblems } from "./JsonKeys.ts"
import { bindConfiguredRunServer } from "./RunServerBinding.ts"
import { resolveTinyModels } from "./TinyModels.ts"
import { isLegacyConfig, translateLegacyConfig, translateLegacyOverrides } from "./LegacyConfig.ts"
import { deepMerge, isPlainObject, parseOverride, setPath, showOverride } from "./Overrides.ts"

export class ConfigError extends Schema.TaggedError<ConfigError>()("ConfigError", {
  message: Schema.String,
  /** The read or parse error beneath, when there is one (shown with DART_DEBUG=1). */
  cause: Schema.optionalKey(Schema.Defect())
}) {}

/** A malformed --override is bad command-line usage: exit code 2, like any other flag error. */
export class ConfigUsageError extends Schema.TaggedError<ConfigUsageError>()("ConfigUsageError", {
  message: Schema.String
}) {
  override readonly [Runtime.errorExitCode] = 2
}

/** A later stage was given a config that differs from the run's snapshot in keys that change results. */
export class ConfigChangedError extends Schema.TaggedError<ConfigChangedError>()("ConfigChangedError", {
  message: Schema.String
}) {}

export const DEFAULT_CONFIG = "configs/exp_acl.json"
export const CONFIG_SNAPSHOT = "configs/config.json"

export interface ConfigRequest {
  /** undefined: no --config flag (the default file for `init`, the run's own snapshot for later stages). */
  readonly configPath: string | undefined
  readonly overrides: ReadonlyArray<string>
  readonly expId: Option.Option<string>
}

export interface ResolvedConfig {
  readonly config: ExperimentConfig
  /** The resolved config as plain JSON: what `configs/config.json` holds. */
  readonly json: ExperimentConfigInput
  readonly hash: string
  readonly configPath: string
  /** Lines to show the user: how a config or override in the original's shape was translated. */
  readonly notices?: ReadonlyArray<string>
}

const decode = Schema.decodeUnknownResult(ExperimentConfig)
const encode = Schema.encodeSync(ExperimentConfig)

/**
 * Keys a later stage may change against the run's snapshot: how and where work is done
 * (budgets, concurrency, endpoints, hosts, retries, timeouts, prices), never what it computes.
 * A prefix covers the keys below it.
 */
export const operationalKeys: ReadonlyArray<string> = [
  "run.runs_dir",
  ...["teacher", "judge"].flatMap((s) =>
    ["provider", "base_url", "api_key_env", "max_concurrency", "timeout_s", "max_retries", "max_reply_bytes", "max_retry_after_s", "prices", "budget"].map((k) => `${s}.${k}`)
  ),
  "inference.concurrency",
  "compute.backend",
  "compute.hosts",
  "compute.vllm.tensor_parallel_size",
  "compute.vllm.replicas",
  "compute.vllm.endpoint",
  "compute.vllm.endpoints",
  "compute.vllm.port",
  "compute.vllm.max_loras",
  "compute.vllm.gpu_memory_utilization",
  "compute.vllm.sleep_mode",
  "compute.trainer.endpoint",
  "compute.trainer.port",
  "compute.classifier_endpoint",
  "compute.hf_cache",
  "compute.slurm",
  "audit.classifiers[].endpoint",
  "audit.classifier_batch_size",
  "audit.classifier_concurrency",
  "audit.classify_max_reply_bytes",
  // Where the run is logged to, not what it computes.
  "tracking"
]

export const isOperational = (key: string) => {
  // An index in a list entry's key matches the `[]` form above.
  const k0 = key.replace(/\[\d+\]/g, "[]")
  return operationalKeys.some((k) => k0 === k || k0.startsWith(`${k}.`) || k0.startsWith(`${k}[`))
}

type Layer_ = { readonly label: string; readonly path: ReadonlyArray<string>; readonly value: unknown }

/** A config file's text as a JSON object, or why not (malformed, duplicate or reserved keys). */
const parseConfigText = (configPath: string, fileText: string): Record<string, unknown> | ConfigError => {
  const text = fileText.replace(/^\uFEFF/, "")
  let fromFile: unknown
  try {
    fromFile = JSON.parse(text)
  } catch (e) {
    return new ConfigError({ message: `${configPath}: malformed JSON at ${jsonErrorLocation(text, e)}`, cause: e })
  }
  if (!isPlainObject(fromFile)) {
    return new ConfigError({ message: `${configPath}: expected a JSON object at the top level` })
  }
  const problems = jsonKeyProblems(text)
  if (problems.length > 0) return new ConfigError({ message: `${configPath}: invalid config\n${problems.map((p) => `  ${p}`).join("\n")}` })
  return fromFile
}

interface Layers {
  readonly layers: Array<Layer_>
  readonly notices: ReadonlyArray<string>
}

/**
 * A flag's value in a `[from …]` label: as given when short. A long one (a 5 KB exp id) is not echoed: the issue
 * line before the label already shows its start; an override keeps its key, which is what names the source.
 */
const flagLabel = (value: string): string => {
  if (value.length > 80) {
    const eq = value.indexOf("=")
    return eq > 0 && eq <= 60 ? `${value.slice(0, eq + 1)}…` : `… (${value.length} characters)`
  }
  // eslint-disable-next-line no-control-regex
  return /[\u0000-\u001f\u007f]/.test(value) ? JSON.stringify(value) : value
}

const parseLayers = (overrides: ReadonlyArray<string>, envExpId: string | undefined, flagExpId: string | undefined): Layers | ConfigUsageError => {
  const given: Array<Exclude<ReturnType<typeof parseOverride>, string>> = []
  for (const raw of overrides) {
    const o = parseOverride(raw)
    if (typeof o === "string") return new ConfigUsageError({ message: o })
    given.push(o)
  }
  // Overrides with the original Python code's key names are translated by the same rules as its files.
  const fromOriginal = translateLegacyOverrides(given)
  if (fromOriginal.refusals.length > 0) return new ConfigUsageError({ message: redact(fromOriginal.refusals.join("\n")) })
  const parsed = fromOriginal.overrides
  const expIdPath = ["run", "exp_id"]
  const layers = [
    ...(envExpId !== undefined && envExpId !== "" ? [{ label: "EXP_ID in the environment", path: expIdPath, value: envExpId }] : []),
    ...parsed.map((o) => ({ label: `--override ${flagLabel(showOverride(o.raw))}`, path: o.path, value: o.value })),
    ...(flagExpId !== undefined ? [{ label: `--exp-id ${flagLabel(flagExpId)}`, path: expIdPath, value: flagExpId }] : [])
  ]
  return { layers, notices: fromOriginal.notices }
}

/** Validates the merged tree; errors name the key path and the layer (file, snapshot or flag) that put the value there. */
const decodeTree = (
  sourceLabel: string,
  configPath: string,
  base: unknown,
  layers: ReadonlyArray<Layer_>,
  notices: ReadonlyArray<string> = []
): ResolvedConfig | ConfigError => {
  let tree = deepMerge(defaults, base)
  for (const o of layers) tree = setPath(tree, o.path, o.value)
  const result = decode(tree, { errors: "all", onExcessProperty: "error" })
  if (result._tag === "Failure") {
    const lines = flattenIssue(result.failure.issue).map((issue) => {
      const key = formatPath(issue.path)
      // The last layer that set this key, a key below it (a cross-field check on a parent) or a parent of it.
      const source = [...layers].reverse().find((o) => {
        const p = o.path.join(".")
        return key === p || key.startsWith(`${p}.`) || key.startsWith(`${p}[`) || p.startsWith(`${key}.`) || key === ""
      })
      return `  ${describeIssue(issue, tree)}  [from ${source?.label ?? sourceLabel}]`
    })
    return new ConfigError({ message: redact(`${configPath}: invalid config\n${lines.join("\n")}`) })
  }
  const json = encode(result.success)
  registerSecretsFromEnv([result.success.teacher.api_key_env, result.success.judge.api_key_env])
  // `@tiny` model names become the run's folders, provider `vllm` the run's server; `json` (the snapshot) keeps the names.
  let config: ExperimentConfig
  try {
    config = bindConfiguredRunServer(resolveTinyModels(result.success), result.success.compute.vllm.endpoint)
  } catch (e) {
    return new ConfigError({ message: `${configPath}: invalid config\n  ${(e as Error).message}  [from ${sourceLabel}]`, cause: e })
  }
  return { config, json, hash: hashJson(json), configPath, notices }
}

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
): ResolvedConfig | ConfigError | ConfigUsageError => {
  const parsedFile = parseConfigText(configPath, fileText)
  if (parsedFile instanceof ConfigError) return parsedFile
  // A file in the original Python code's shape is translated key by key (src/config/LegacyConfig.ts).
  const legacy = isLegacyConfig(parsedFile) ? translateLegacyConfig(parsedFile) : undefined
  if (legacy && legacy.refusals.length > 0) {
    return new ConfigError({
      message: `${configPath}: a config in the original's shape with keys dart cannot honour:\n${legacy.refusals.map((r) => `  ${r}`).join("\n")}`
    })
  }
  const fromFile = legacy ? legacy.config : parsedFile
  const parsed = parseLayers(overrides, envExpId, flagExpId)
  if (parsed instanceof ConfigUsageError) return parsed
  const notices = [
    ...(legacy === undefined ? [] : [
      ...legacy.notices.map((n) => `${configPath}: ${n}`),
      `${configPath}: is in the original's shape; \`dart config migrate ${configPath} --out FILE\` writes it in dart's`
    ]),
    ...parsed.notices
  ]
  return decodeTree(configPath, configPath, fromFile, parsed.layers, notices)
}

/**
 * A later stage's config: the run's own snapshot, with --config (when given) and --override
 * allowed to change only operational keys. Anything else that differs is refused with the list.
 */
export const resolveAgainstSnapshot = (
  snapshotPath: string,
  snapshotText: string,
  fromFlags: ResolvedConfig | undefined,
  overrides: ReadonlyArray<string>,
  envExpId: string | undefined,
  flagExpId: string | undefined
): ResolvedConfig | ConfigError | ConfigUsageError | ConfigChangedError => {
  const snapshot = parseConfigText(snapshotPath, snapshotText)
  if (snapshot instanceof ConfigError) return snapshot
  let candidate: ResolvedConfig | ConfigError | ConfigUsageError
  if (fromFlags !== undefined) candidate = fromFlags
  else {
    const parsed = parseLayers(overrides, envExpId, flagExpId)
    if (parsed instanceof ConfigUsageError) return parsed
    candidate = decodeTree(snapshotPath, snapshotPath, snapshot, parsed.layers, parsed.notices)
  }
  if (!("config" in candidate)) return candidate
  const recorded = deepMerge(defaults, snapshot)
  const refused = diffConfigs(recorded, candidate.json).filter((c) => !isOperational(c.key))
  if (refused.length > 0) {
    return new ConfigChangedError({
      message: redact(
        `${fromFlags !== undefined ? fromFlags.configPath : "--override"} differs from the run's config (${snapshotPath}) in keys that change results:\n` +
          `${describeChanges(refused)}\n` +
          "Later stages use the run's own config; only operational keys (budgets, concurrency, endpoints, hosts, retries, timeouts, prices) may change. " +
          "Start a new run (dart init with another --exp-id) to change the others."
      )
    })
  }
  return candidate
}

export class ConfigLoader extends Context.Service<ConfigLoader, {
  /** `dart init` (and tools that do not belong to a run): defaults <- file <- flags. */
  load(request: ConfigRequest): Effect.Effect<ResolvedConfig, ConfigError | ConfigUsageError>
  /** Later stages: the run's snapshot, changed only in operational keys by --config / --override. */
  loadForRun(request: ConfigRequest): Effect.Effect<ResolvedConfig, ConfigError | ConfigUsageError | ConfigChangedError>
}>()("dart/config/ConfigLoader") {
  static readonly layer = Layer.effect(
    ConfigLoader,
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const envExpId = yield* Config.option(Config.String("EXP_ID")).pipe(
        Effect.map(Option.getOrUndefined),
        Effect.orElseSucceed(() => undefined)
      )
      const readConfig = (file: string) =>
        fs.readFileString(file).pipe(
          Effect.mapError((e) =>
            new ConfigError({
              message: `${file}: cannot read config file (${e.reason._tag === "NotFound" ? "no such file" : e.message})`,
              cause: e
            })
          )
        )
      const load = Effect.fn("ConfigLoader.load")(function*(request: ConfigRequest) {
        const configPath = request.configPath ?? DEFAULT_CONFIG
        const text = yield* readConfig(configPath)
        const resolved = resolveConfig(configPath, text, request.overrides, envExpId, Option.getOrUndefined(request.expId))
        if (!("config" in resolved)) return yield* resolved
        if (resolved.notices !== undefined && resolved.notices.length > 0) yield* Console.error(resolved.notices.join("\n"))
        return resolved
      })
      const loadForRun = Effect.fn("ConfigLoader.loadForRun")(function*(request: ConfigRequest) {
        // The flags (with the default file when --config is absent) say where the run is.
        const located = yield* load(request)
        const snapshotPath = path.join(located.config.run.runs_dir, located.config.run.exp_id, CONFIG_SNAPSHOT)
        // Only "not there" means no run yet; a snapshot that cannot be checked (permissions, I/O) is an error.
        const exists = yield* fs.exists(snapshotPath).pipe(
          Effect.mapError((e) => new ConfigError({ message: `${snapshotPath}: stat failed: ${e.message}`, cause: e }))
        )
        if (!exists) return located // no run yet: the stage itself says so
        const text = yield* readConfig(snapshotPath)
        const resolved = resolveAgainstSnapshot(
          snapshotPath,
          text,
          request.configPath === undefined ? undefined : located,
          request.overrides,
          envExpId,
          Option.getOrUndefined(request.expId)
        )
        return "config" in resolved ? resolved : yield* resolved
      })
      return ConfigLoader.of({ load, loadForRun })
    })
  )
}
