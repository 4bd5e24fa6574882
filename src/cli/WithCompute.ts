import { Effect } from "effect"
import * as path from "node:path"
import type { Compute, ComputeOptions } from "../compute/Compute.ts"
import { computeLayer } from "../compute/ComputeLayer.ts"
import type { ExperimentConfig } from "../config/ExperimentConfig.ts"

/**
 * Runs a command's work with the compute port of its config, built once for the whole command (hosts connected on
 * first use, every connection closed when the command ends).
 */
export const withCompute = <A, E, R>(config: ExperimentConfig, effect: Effect.Effect<A, E, R>, options: Omit<ComputeOptions, "runDir"> = {}) =>
  Effect.provide(effect, computeLayer(config, { runDir: path.join(config.run.runs_dir, config.run.exp_id), ...options })) as Effect.Effect<A, E, Exclude<R, Compute>>
