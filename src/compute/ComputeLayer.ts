import type { Layer } from "effect"
import type { ExperimentConfig } from "../config/ExperimentConfig.ts"
import type { Compute, ComputeOptions } from "./Compute.ts"
import { dockerCompute } from "./DockerCompute.ts"
import { kubeCompute } from "./kubernetes/KubeCompute.ts"
import { slurmCompute } from "./slurm/SlurmCompute.ts"

/**
 * The compute port's adapter for `compute.backend`, built once per command (hosts are connected on first use, so a
 * command that only talks to configured endpoints connects nothing). The commands provide it; stages only see `Compute`.
 */
export const computeLayer = (config: ExperimentConfig, options: ComputeOptions): Layer.Layer<Compute> => {
  switch (config.compute.backend) {
    case "docker":
      return dockerCompute(config, options)
    case "slurm":
      return slurmCompute(config, options)
    case "kubernetes":
      return kubeCompute(config, options)
  }
}
