import { describe, expect, it } from "@effect/vitest"
import { ASLEEP_FRACTION, gpuMemoryPlan, TRAINER_MIN_FRACTION } from "../../src/pipeline/GpuMemoryPlan.ts"
import { buildRunGraph, planGraph } from "../../src/pipeline/RunGraph.ts"
import { buildRunPlan, type PlanFacts, renderRunPlan } from "../../src/pipeline/RunPlan.ts"
import type { ExperimentConfig } from "../../src/config/ExperimentConfig.ts"
import { configFor } from "../support/RunConfig.ts"

const facts: PlanFacts = {
  expId: "exp_acl",
  runDir: "/runs/exp_acl",
  configPath: "configs/exp_acl.json",
  items: { train: { n: 100, questionChars: 20_000 }, val: { n: 10, questionChars: 2_000 }, test: { n: 20, questionChars: 4_000 } },
  itemsFrom: "suite",
  distill: { items: 100, done: 0, requests: 100, promptChars: 48_002 },
  repair: null
}

const planFor = (config: ExperimentConfig) => {
  const graph = buildRunGraph(config)
  return buildRunPlan(config, graph, planGraph(graph, {}), facts)
}

const withChanges = (base: ExperimentConfig, change: (c: ExperimentConfig) => ExperimentConfig) => change(base)

describe("the GPU memory plan", () => {
  const config = configFor("configs/exp_acl.json")

  it("the paper's setup fits: vLLM asleep while the trainer and the audit's classifiers use the device", () => {
    const plan = gpuMemoryPlan(config, planFor(config))!
    expect(plan.host).toBe(config.compute.hosts[0]!.name)
    expect(plan.phases.map((p) => [p.phase, p.fits])).toEqual([["inference", true], ["training", true], ["audit", true]])
    expect(plan.phases[1]!.total).toBe(ASLEEP_FRACTION + TRAINER_MIN_FRACTION)
    expect(plan.phases[2]!.total).toBeCloseTo(ASLEEP_FRACTION + 0.1 * config.audit.classifiers.length)
    // --dry-run shows it.
    const text = renderRunPlan(planFor(config), config)
    expect(text).toContain(`GPU memory on ${plan.host}`)
    expect(text).toMatch(/audit +vllm \(asleep\) 0\.05 \+ classifier toxicity 0\.1 \+ classifier hate 0\.1 = 0\.25/)
  })

  it("refuses the run's own vLLM as judge at 0.9 beside two classifiers, saying what to set", () => {
    const judged = withChanges(config, (c) => ({ ...c, judge: { ...c.judge, provider: "vllm" as const } }))
    const audit = gpuMemoryPlan(judged, planFor(judged))!.phases.find((p) => p.phase === "audit")!
    expect(audit.fits).toBe(false)
    expect(audit.total).toBeCloseTo(1.1)
    expect(audit.advice).toContain("compute.vllm.gpu_memory_utilization to 0.78 or less")
    const lowered = withChanges(judged, (c) => ({ ...c, compute: { ...c.compute, vllm: { ...c.compute.vllm, gpu_memory_utilization: 0.7 } } }))
    expect(gpuMemoryPlan(lowered, planFor(lowered))!.phases.every((p) => p.fits)).toBe(true)
  })

  it("warns (a small model may fit) of training beside an awake vLLM when sleep mode is off", () => {
    const awake = withChanges(config, (c) => ({ ...c, compute: { ...c.compute, vllm: { ...c.compute.vllm, sleep_mode: false } } }))
    const training = gpuMemoryPlan(awake, planFor(awake))!.phases.find((p) => p.phase === "training")!
    expect(training).toMatchObject({ fits: false, onMiss: "warn" })
    expect(training.advice).toContain("compute.vllm.sleep_mode true")
    expect(renderRunPlan(planFor(awake), awake)).toContain("MAY NOT FIT")
  })

  it("keeps a margin for the CUDA contexts of servers side by side: an awake judge at 0.9 beside one classifier does not fit", () => {
    const one = withChanges(config, (c) => ({
      ...c,
      judge: { ...c.judge, provider: "vllm" as const },
      audit: { ...c.audit, classifiers: c.audit.classifiers.slice(0, 1) }
    }))
    const audit = gpuMemoryPlan(one, planFor(one))!.phases.find((p) => p.phase === "audit")!
    expect(audit).toMatchObject({ total: 1, fits: false, onMiss: "refuse" })
  })

  it("has nothing to plan on a CPU host or when every service is an endpoint", () => {
    const cpu = withChanges(config, (c) => ({ ...c, compute: { ...c.compute, hosts: c.compute.hosts.map((h) => ({ ...h, gpus: [] })) } }))
    expect(gpuMemoryPlan(cpu, planFor(cpu))).toBeNull()
  })
})
