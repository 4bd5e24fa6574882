import type { ExperimentConfig } from "./ExperimentConfig.ts"

/**
 * A Hugging Face hub id (`org/name` or a bare legacy `name`), as opposed to a folder on the box (absolute path) or
 * one of the run's `@tiny` models. Hub models are fetched into each host's HF cache before a service needs them.
 */
export const isHubModelId = (model: string): boolean =>
  /^[A-Za-z0-9][A-Za-z0-9_.-]*(\/[A-Za-z0-9][A-Za-z0-9_.-]*)?$/.test(model) && !model.includes("..") && !model.endsWith(".")

/** The hub ids a service role reads from the HF cache. */
export const hubModelsFor = (config: ExperimentConfig, role: "vllm" | "trainer" | "classifier", classifier?: string): Array<string> => {
  if (role === "classifier") {
    return config.audit.classifiers.filter((c) => classifier === undefined || c.name === classifier).map((c) => c.model).filter(isHubModelId)
  }
  return isHubModelId(config.model.base) ? [config.model.base] : []
}
