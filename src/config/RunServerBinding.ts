import type { ExperimentConfig } from "./ExperimentConfig.ts"

/** Teacher or judge settings: where their requests go. */
interface LlmEndpoint {
  readonly provider: string
  readonly base_url: string | null
}

/** Provider `vllm`: the teacher or judge is the run's own vLLM server. */
export const isRunServer = (settings: { readonly provider: string }) => settings.provider === "vllm"

/**
 * Provider `vllm` means "the run's own vLLM server": a teacher or judge with that provider and no `base_url` talks to
 * `{endpoint}/v1`, the endpoint being `compute.vllm.endpoint` or the server `dart run` starts. Others are unchanged.
 */
export const bindRunServer = <S extends LlmEndpoint>(settings: S, endpoint: string): S =>
  isRunServer(settings) && settings.base_url === null ? { ...settings, base_url: `${endpoint.replace(/\/+$/, "")}/v1` } : settings

/** The config with its teacher and judge bound to a configured `compute.vllm.endpoint` (at load time). */
export const bindConfiguredRunServer = (config: ExperimentConfig, endpoint: string | null): ExperimentConfig => {
  if (endpoint === null) return config
  const teacher = bindRunServer(config.teacher, endpoint)
  const judge = bindRunServer(config.judge, endpoint)
  return teacher === config.teacher && judge === config.judge ? config : { ...config, teacher, judge }
}
