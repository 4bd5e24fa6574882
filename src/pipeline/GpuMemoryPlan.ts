import type { ExperimentConfig } from "../config/ExperimentConfig.ts"
import { CLASSIFIER_GPU_FRACTION } from "../compute/ContainerSpecs.ts"
import { isRunServer } from "../config/RunServerBinding.ts"

/** The part of the run plan's service placements the memory plan reads (RunPlan.ts renders this plan). */
export interface PlacedServices {
  readonly services: ReadonlyArray<{
    readonly service: string
    readonly starts: boolean
    readonly host: { readonly name: string; readonly gpus: "all" | ReadonlyArray<string> } | null
  }>
}

/**
 * How the GPU of a host is shared over the run (pure). vLLM refuses to start when the free memory is below its
 * `gpu_memory_utilization` share of the device, and a PyTorch trainer beside an awake vLLM runs out of memory, so
 * the phases are checked before anything starts: inference (vLLM awake), training (vLLM asleep, the trainer takes
 * the rest) and each audit (the classifiers, scoped to the stage, beside vLLM — awake only when it is the judge).
 */

/** What a sleeping vLLM keeps on the device (CUDA context, allocator pools): level-1 sleep frees weights and KV cache. */
export const ASLEEP_FRACTION = 0.05
/** The least share of the device a LoRA trainer is left with: below it, an 8B model's activations do not fit. */
export const TRAINER_MIN_FRACTION = 0.25

export interface GpuPhase {
  readonly phase: string
  /** Service and its share of the device, in this phase. */
  readonly residents: ReadonlyArray<{ readonly service: string; readonly fraction: number }>
  readonly total: number
  readonly fits: boolean
  /**
   * "refuse": vLLM itself would refuse to start (its start-up check of free memory); "warn": it depends on the model
   * (a trainer beside an awake vLLM may fit a small model), so it is said, not refused.
   */
  readonly onMiss: "refuse" | "warn"
  /** What to change when it does not fit. */
  readonly advice: string
}

export interface GpuMemoryPlan {
  readonly host: string
  readonly phases: ReadonlyArray<GpuPhase>
}

const round = (x: number) => Math.round(x * 1000) / 1000

/** Room left for the CUDA contexts of the processes beside each other: a share asked for beside another is not all free. */
export const SHARED_MARGIN = 0.02

const phaseOf = (phase: string, residents: GpuPhase["residents"], onMiss: GpuPhase["onMiss"], advice: string): GpuPhase => {
  const total = round(residents.reduce((n, r) => n + r.fraction, 0))
  const limit = residents.length > 1 ? 1 - SHARED_MARGIN : 1
  return { phase, residents, total, fits: total <= limit + 1e-9, onMiss, advice }
}

/**
 * The plan for the GPU host the run starts its services on, or null when nothing that starts there uses a GPU
 * (a CPU host, every service given as an endpoint).
 */
export const gpuMemoryPlan = (config: ExperimentConfig, plan: PlacedServices): GpuMemoryPlan | null => {
  const onGpu = plan.services.filter((s) => s.starts && s.host !== null && (s.host.gpus === "all" || s.host.gpus.length > 0))
  if (onGpu.length === 0) return null
  const v = config.compute.vllm
  const has = (service: string) => onGpu.some((s) => s.service === service)
  const vllm = has("vllm")
  const classifiers = has("classifiers") ? config.audit.classifiers.filter((c) => c.endpoint === undefined && config.compute.classifier_endpoint === null) : []
  const phases: Array<GpuPhase> = []
  if (vllm) {
    phases.push(phaseOf("inference", [{ service: "vllm (awake)", fraction: v.gpu_memory_utilization }], "refuse",
      "compute.vllm.gpu_memory_utilization must be at most 1"))
  }
  if (has("trainer")) {
    // vLLM, once started, stays for the run: asleep while the trainer works, or awake when it cannot sleep.
    const beside = !vllm ? [] : [{ service: v.sleep_mode ? "vllm (asleep)" : "vllm (awake: sleep_mode off)", fraction: v.sleep_mode ? ASLEEP_FRACTION : v.gpu_memory_utilization }]
    phases.push(phaseOf("training", [...beside, { service: "trainer (at least)", fraction: TRAINER_MIN_FRACTION }], "warn",
      v.sleep_mode
        ? "lower compute.vllm.gpu_memory_utilization"
        : "set compute.vllm.sleep_mode true (vLLM sleeps while the trainer works), or give the trainer another host or an endpoint"))
  }
  if (classifiers.length > 0) {
    const judgeAwake = vllm && (config.audit.llm_judge.enabled || (config.ood.enabled && config.ood.judge)) && isRunServer(config.judge)
    const beside = !vllm ? [] : [{
      service: judgeAwake ? "vllm (awake: it is the judge)" : v.sleep_mode ? "vllm (asleep)" : "vllm (awake: sleep_mode off)",
      fraction: judgeAwake || !v.sleep_mode ? v.gpu_memory_utilization : ASLEEP_FRACTION
    }]
    const need = round(1 - classifiers.length * CLASSIFIER_GPU_FRACTION - SHARED_MARGIN)
    phases.push(phaseOf("audit", [...beside, ...classifiers.map((c) => ({ service: `classifier ${c.name}`, fraction: CLASSIFIER_GPU_FRACTION }))], "refuse",
      judgeAwake
        ? `the judge is the run's own vLLM, so it stays awake beside ${classifiers.length} classifier(s) at ${CLASSIFIER_GPU_FRACTION} each: ` +
          `set compute.vllm.gpu_memory_utilization to ${need} or less, or use an API judge`
        : `set compute.vllm.sleep_mode true, or compute.vllm.gpu_memory_utilization to ${need} or less, or serve the classifiers elsewhere (audit.classifiers[].endpoint)`))
  }
  return { host: onGpu[0]!.host!.name, phases }
}

export const renderGpuMemoryPlan = (p: GpuMemoryPlan): Array<string> => [
  `GPU memory on ${p.host} (shares of each device; vLLM refuses to start above what is free):`,
  ...p.phases.map((ph) =>
    `  ${ph.phase.padEnd(10)}${ph.residents.map((r) => `${r.service} ${r.fraction}`).join(" + ")} = ${ph.total}` +
      (ph.fits ? "" : ph.onMiss === "refuse" ? `  DOES NOT FIT: ${ph.advice}` : `  MAY NOT FIT (a small model may): ${ph.advice}`)
  )
]
