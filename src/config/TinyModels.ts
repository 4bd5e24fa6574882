import * as path from "node:path"
import type { ExperimentConfig } from "./ExperimentConfig.ts"

/**
 * `model.base: "@tiny"` and `audit.classifiers[].model: "@tiny/hate"` / `"@tiny/toxicity"` name seeded random models
 * that dart builds itself (containers/trainer's `dart_trainer.tiny_model`, no download) under
 * `runs/{EXP_ID}/models/tiny/` the first time a container needs them: the smoke profile's models. The config keeps
 * the symbolic names (so the run's snapshot does not depend on where the runs folder lives); the loaded config
 * carries the absolute folders, which containers mount read-only.
 */
export const TINY = "@tiny"
/**
 * `@tiny:FAMILY`: the same tiny model with a chat family's real template and special tokens
 * (containers/trainer/dart_trainer/templates/): how the tests and a curious user try the families dart supports.
 * `@tiny` is `llama3`.
 */
export const TINY_FAMILIES = ["llama3", "gemma2", "gemma3", "mistral", "qwen2.5", "phi3"] as const
export type TinyFamily = typeof TINY_FAMILIES[number]
export const TINY_CLASSIFIERS = ["hate", "toxicity"] as const
/** Written last by the builder: its presence means the folder is complete. */
export const TINY_MANIFEST = "tiny_models.json"

/** The family of a `@tiny` base name; undefined for anything else. */
export const tinyFamily = (base: string): TinyFamily | undefined => {
  if (base === TINY) return "llama3"
  if (!base.startsWith(`${TINY}:`)) return undefined
  const f = base.slice(TINY.length + 1)
  return (TINY_FAMILIES as ReadonlyArray<string>).includes(f) ? f as TinyFamily : undefined
}

/**
 * Each family builds into its own folder (`tiny` for llama3, as before), so switching `model.base` never mixes two
 * builds. Works on the config as written (`@tiny:gemma2`) and as resolved (its folder).
 */
export const tinyRoot = (config: ExperimentConfig) => {
  const models = path.resolve(config.run.runs_dir, config.run.exp_id, "models")
  const family = tinyFamily(config.model.base)
  if (family !== undefined) return path.join(models, family === "llama3" ? "tiny" : `tiny-${family}`)
  const dir = path.dirname(config.model.base)
  return path.dirname(dir) === models && /^tiny(-[a-z0-9.]+)?$/.test(path.basename(dir)) ? dir : path.join(models, "tiny")
}

const resolveName = (root: string, key: string, name: string, kind: "base" | "classifier"): string => {
  if (name !== TINY && !name.startsWith(`${TINY}/`) && !name.startsWith(`${TINY}:`)) return name
  if (kind === "base") {
    if (tinyFamily(name) === undefined) {
      throw new Error(`${key}: "${name}": the tiny chat models are "${TINY}" and ${TINY_FAMILIES.map((f) => `"${TINY}:${f}"`).join(", ")}`)
    }
    return path.join(root, "base")
  }
  const which = name.slice(TINY.length + 1)
  if (!(TINY_CLASSIFIERS as ReadonlyArray<string>).includes(which)) {
    throw new Error(`${key}: "${name}": tiny classifiers are ${TINY_CLASSIFIERS.map((c) => `"${TINY}/${c}"`).join(", ")}`)
  }
  return path.join(root, "classifiers", which)
}

/** The config with every `@tiny` name replaced by its folder; throws an Error naming the key for an unknown one. */
export const resolveTinyModels = (config: ExperimentConfig): ExperimentConfig => {
  const root = tinyRoot(config)
  const base = resolveName(root, "model.base", config.model.base, "base")
  const classifiers = config.audit.classifiers.map((c, i) => ({ ...c, model: resolveName(root, `audit.classifiers[${i}].model`, c.model, "classifier") }))
  if (base === config.model.base && classifiers.every((c, i) => c.model === config.audit.classifiers[i]!.model)) return config
  return { ...config, model: { ...config.model, base }, audit: { ...config.audit, classifiers } }
}

/** Whether a folder a container mounts is one of the run's tiny models (then it is built before the container starts). */
export const isTinyModelPath = (config: ExperimentConfig, folder: string) => folder.startsWith(tinyRoot(config) + path.sep)

/**
 * The command that builds the run's tiny models into `root` (the trainer image's `dart_trainer.tiny_model`, seeded):
 * `tiny-gemma2/` → `--family gemma2`; `tiny/` builds the default family, with the arguments it always had.
 */
export const tinyModelsCommand = (config: ExperimentConfig, root: string, suite: string): Array<string> => {
  const m = /^tiny-(.+)$/.exec(path.basename(root))
  return ["python3", "-m", "dart_trainer.tiny_model", "--out", root, "--suite", suite, "--seed", String(config.run.seed), ...(m === null ? [] : ["--family", m[1]!])]
}
