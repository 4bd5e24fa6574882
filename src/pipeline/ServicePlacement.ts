import type { ExperimentConfig } from "../config/ExperimentConfig.ts"
import type { ClassifierSpec } from "../serving/ClassifierClient.ts"

/**
 * Which services the config already names as running endpoints and which dart must start. The run, its plan and its
 * preflight all decide "configured or started" here, so the plan never announces a service that does not start.
 */

/** The vLLM servers the config names (`compute.vllm.endpoint` and `endpoints`), without repeats; empty = start one. */
export const vllmEndpoints = (config: ExperimentConfig): ReadonlyArray<string> => {
  const v = config.compute.vllm
  return [...new Set([...(v.endpoint === null ? [] : [v.endpoint]), ...v.endpoints])]
}

export type ClassifierConfig = ExperimentConfig["audit"]["classifiers"][number]

/** A classifier's own endpoint, else the shared `compute.classifier_endpoint`; null = dart must start a server for it. */
export const classifierEndpoint = (config: ExperimentConfig, c: ClassifierConfig): string | null =>
  c.endpoint ?? config.compute.classifier_endpoint ?? null

/** The audit classifiers that no configured endpoint serves, in config order. */
export const classifiersToStart = (config: ExperimentConfig): ReadonlyArray<ClassifierConfig> =>
  config.audit.classifiers.filter((c) => classifierEndpoint(config, c) === null)

/** A classifier as the audit talks to it, at the endpoint that serves it. */
export const classifierSpec = (c: ClassifierConfig, endpoint: string): ClassifierSpec => ({
  name: c.name,
  model: c.model,
  label: c.label,
  max_tokens: c.max_tokens,
  endpoint,
  activation: c.activation ?? "softmax",
  id2label: c.id2label
})

/** The trainer sidecar's configured `host:port`; null = start one. */
export const trainerEndpoint = (config: ExperimentConfig): string | null => config.compute.trainer.endpoint
