import type { ExperimentConfig } from "./ExperimentConfig.ts"

/** Provider `vllm`: the teacher or judge is the run's own vLLM server. */
export const isRunServer = (settings: { readonly provider: string }) => settings.provider === "vllm"

/**
 * Provider `vllm` means "the run's own vLLM server": a teacher or judge with that provider and no `base_url` talks to
 * `{endpoint}/v1`, the endpoint being `compute.vllm.endpoint` or the server `dart run` starts. Others are unchanged.
 */
export const bindRunServer = (config: ExperimentConfig, endpoint: string | null): ExperimentConfig => {
  if (endpoint === null) return config
  const url = `${endpoint.replace(/\/+$/, "")}/v1`
  const bind = <S extends { readonly provider: string; readonly base_url: string | null }>(s: S): S =>
    isRunServer(s) && s.base_url === null ? { ...s, base_url: url } : s
  const teacher = bind(config.teacher)
  const judge = bind(config.judge)
  return teacher === config.teacher && judge === config.judge ? config : { ...config, teacher, judge }
}
