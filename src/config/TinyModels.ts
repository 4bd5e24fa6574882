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
export const TINY_CLASSIFIERS = ["hate", "toxicity"] as const
/** Written last by the builder: its presence means the folder is complete. */
export const TINY_MANIFEST = "tiny_models.json"

export const tinyRoot = (config: ExperimentConfig) => path.resolve(config.run.runs_dir, config.run.exp_id, "models", "tiny")

const resolveName = (root: string, key: string, name: string, kind: "base" | "classifier"): string => {
  if (name !== TINY && !name.startsWith(`${TINY}/`)) return name
  if (kind === "base") {
    if (name !== TINY) throw new Error(`${key}: "${name}": the tiny chat model is "${TINY}"`)
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
