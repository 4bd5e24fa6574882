import { trainerSpec, vllmSpec } from "../compute/ContainerSpecs.ts"
import { type Assignment, computeHosts, type FleetHost, declaredDevices, describeDevices, type FleetPlacement, placeFleet, renderPlacement } from "../compute/Placement.ts"
import { dryRunPod, kubePlacement, renderKubeObjects } from "../compute/kubernetes/KubeObjects.ts"
import { renderSlurmJobs, slurmPlacement } from "../compute/slurm/SlurmJobs.ts"
import { isRunServer } from "../config/RunServerBinding.ts"
import type { ExperimentConfig } from "../config/ExperimentConfig.ts"
import type { Split } from "../datasets/BenchmarkItem.ts"
import { type PlannedStage, type RunGraph, type StageId, stageIds } from "./RunGraph.ts"
import { gpuMemoryPlan, renderGpuMemoryPlan } from "./GpuMemoryPlan.ts"
import { classifierEndpoint, classifiersToStart, trainerEndpoint, vllmEndpoints } from "./ServicePlacement.ts"

/**
 * The plan `dart run` prints before anything starts (pure): which stages run or are skipped and why,
 * item counts, the teacher and judge requests still needed with projected tokens and cost, and which
 * services start on which hosts.
 */

/** Rough English estimate used everywhere DART projects tokens before asking (as `dart teacher --dry-run`). */
export const CHARS_PER_TOKEN = 4
/** Instructions, rules and reply format of the comparative judge prompt (docs/protocol.md §5), in characters. */
export const JUDGE_INSTRUCTION_CHARS = 2400
/** The open-ended rubric (src/audit/OpenEndedRubric.ts) with a prompt and its notes, in characters. */
export const OOD_JUDGE_CHARS = 2200

export interface SplitFacts {
  readonly n: number
  /** Sum of the question lengths (characters). */
  readonly questionChars: number
}

export interface TeacherWork {
  /** Work items of the task (distill: train items; repair: pool rows) or null when not known yet. */
  readonly items: number | null
  readonly done: number
  /** First-round requests not answered by the response ledger. */
  readonly requests: number
  /** Characters of those requests' messages. */
  readonly promptChars: number
}

export interface PlanFacts {
  readonly expId: string
  readonly runDir: string
  readonly configPath: string
  readonly items: Readonly<Record<Split, SplitFacts>>
  /** "run": counted from runs/{EXP_ID}/datasets; "suite": projected from the suite as `dart init` would split it. */
  readonly itemsFrom: "run" | "suite"
  readonly distill: TeacherWork
  /** Null until the audit has written its regression pool. */
  readonly repair: TeacherWork | null
}

export interface Projection {
  readonly requests: number
  readonly promptTokens: number
  readonly completionTokens: number
  readonly costUsd: number
}

export interface ServicePlacement {
  readonly service: "vllm" | "classifiers" | "trainer"
  readonly what: string
  /** Already-running endpoints the config names (nothing is started for them). */
  readonly endpoints: ReadonlyArray<string>
  /** Whether a service must start (for what no endpoint serves); on `host`, null when no host is configured. */
  readonly starts: boolean
  /** The first host it starts on (the GPU memory plan's), as the config declares it. */
  readonly host: { readonly name: string; readonly gpus: "all" | ReadonlyArray<string> } | null
  /** Every instance that starts, where the placement puts it (vLLM: one per replica). */
  readonly placed: ReadonlyArray<Assignment>
  /** The image of the service that starts; null when nothing starts. */
  readonly image: string | null
  readonly stages: ReadonlyArray<StageId>
}

export interface RunPlan {
  readonly facts: PlanFacts
  readonly stages: ReadonlyArray<PlannedStage>
  readonly warnings: ReadonlyArray<string>
  readonly teacher: { readonly distill: Projection; readonly repair: Projection | null; readonly repairUpperBound: number | null }
  readonly judge: { readonly audits: ReadonlyArray<{ readonly stage: StageId; readonly pairs: number }>; readonly projection: Projection } | null
  readonly inference: ReadonlyArray<{ readonly stage: StageId; readonly split: Split | "ood"; readonly items: number; readonly models: number; readonly requests: number }>
  readonly services: ReadonlyArray<ServicePlacement>
  /** The fleet as the config declares it (GPUs given as "all" are counted when the run starts). */
  readonly placement: FleetPlacement
}

const runs = (p: PlannedStage) => p.decision.action !== "skip" && p.decision.action !== "excluded"

const tokens = (chars: number) => Math.ceil(chars / CHARS_PER_TOKEN)

const price = (prices: ExperimentConfig["teacher"]["prices"], prompt: number, completion: number) =>
  (prompt * prices.input_per_mtok + completion * prices.output_per_mtok) / 1e6

const project = (settings: Pick<ExperimentConfig["teacher"], "prices" | "max_tokens">, requests: number, promptChars: number): Projection => {
  const promptTokens = tokens(promptChars)
  const completionTokens = requests * settings.max_tokens
  return { requests, promptTokens, completionTokens, costUsd: price(settings.prices, promptTokens, completionTokens) }
}


/**
 * Where each service would run, decided as the run decides it (`ServicePlacement.ts`, `compute/Placement.ts`):
 * configured endpoints are used as they are; the rest start over `compute.hosts`, vLLM as one replica per host's
 * GPUs (or per CPU host), the trainer on the host with the most GPUs, the classifiers where GPUs remain.
 */
export const fleetPlacement = (config: ExperimentConfig, active: ReadonlySet<StageId>, graph: RunGraph, live?: ReadonlyArray<FleetHost>): FleetPlacement => {
  const using = (kind: string) => graph.stages.some((s) => active.has(s.id) && s.work.kind === kind)
  const infer = (isRunServer(config.teacher) && using("teacher")) || using("infer") || (isRunServer(config.judge) && (config.audit.llm_judge.enabled || config.ood.judge) && using("audit"))
  const wants = {
    vllm: infer && vllmEndpoints(config).length === 0,
    classifiers: using("audit") ? classifiersToStart(config).map((c) => c.name) : [],
    trainer: using("train") && trainerEndpoint(config) === null
  }
  return config.compute.backend === "slurm"
    ? slurmPlacement(config, wants)
    : config.compute.backend === "kubernetes"
    ? kubePlacement(config, wants)
    : placeFleet(config, live ?? config.compute.hosts.map((h) => ({ name: h.name, devices: declaredDevices(h.gpus) })), wants)
}

export const placeServices = (config: ExperimentConfig, active: ReadonlySet<StageId>, graph: RunGraph, placement = fleetPlacement(config, active, graph)): ReadonlyArray<ServicePlacement> => {
  const hostOf = (name: string | undefined) => {
    const h = computeHosts(config).find((x) => x.name === name)
    return h === undefined ? null : { name: h.name, gpus: h.gpus }
  }
  const imageOn = (a: Assignment) => {
    const on = { gpus: a.gpus === null ? [] : a.gpus === "all" ? "all" as const : a.gpus }
    return a.role === "trainer" ? trainerSpec(config, on, "127.0.0.1").image : vllmSpec(config, on, "127.0.0.1").image
  }
  const using = (kind: string) => graph.stages.filter((s) => active.has(s.id) && s.work.kind === kind).map((s) => s.id)
  const out: Array<ServicePlacement> = []
  // One vLLM server for every inference stage, and for the teacher and judge when they are the run's own model.
  const infer = [
    ...(isRunServer(config.teacher) ? using("teacher") : []),
    ...using("infer"),
    ...(isRunServer(config.judge) && (config.audit.llm_judge.enabled || config.ood.judge) ? using("audit") : [])
  ].sort((a, b) => stageIds.indexOf(a) - stageIds.indexOf(b))
  const place = (service: ServicePlacement["service"], what: string, endpoints: ReadonlyArray<string>, starts: boolean, placed: ReadonlyArray<Assignment>, fallbackImage: string, stages: ReadonlyArray<StageId>) =>
    out.push({
      service, what, endpoints, starts, stages,
      host: starts ? hostOf(placed[0]?.host ?? computeHosts(config)[0]?.name) : null,
      placed: starts ? placed : [],
      image: starts ? (placed[0] === undefined ? fallbackImage : imageOn(placed[0])) : null
    })
  if (infer.length > 0) {
    const endpoints = vllmEndpoints(config)
    place("vllm", `vLLM: base ${config.model.base} + adapters loaded as they are produced (max ${config.compute.vllm.max_loras} per batch)`,
      endpoints, endpoints.length === 0, placement.vllm, config.compute.vllm.image, infer)
  }
  const audits = using("audit")
  if (audits.length > 0 && config.audit.classifiers.length > 0) {
    const endpoints = [...new Set(config.audit.classifiers.flatMap((c) => classifierEndpoint(config, c) ?? []))]
    const toStart = classifiersToStart(config)
    place("classifiers", `classifiers: ${config.audit.classifiers.map((c) => `${c.name} (${c.model}, label ${c.label}${classifierEndpoint(config, c) === null ? "" : ", configured"})`).join(", ")}`,
      endpoints, toStart.length > 0, placement.classifiers, config.compute.vllm.image, audits)
  }
  const train = using("train")
  if (train.length > 0) {
    const endpoint = trainerEndpoint(config)
    place("trainer", `trainer sidecar (LoRA r ${config.training.lora.r}${config.training.qlora.enabled ? ", QLoRA" : ""}${config.training.gpus > 1 ? `, ${config.training.gpus} processes` : ""})`,
      endpoint === null ? [] : [endpoint], endpoint === null, placement.trainer === null ? [] : [placement.trainer], config.compute.trainer.image, train)
  }
  return out
}

/** `live`: the hosts as they answer now (Compute.fleetHosts); without it, as the config declares them. */
export const buildRunPlan = (config: ExperimentConfig, graph: RunGraph, stages: ReadonlyArray<PlannedStage>, facts: PlanFacts, live?: ReadonlyArray<FleetHost>): RunPlan => {
  const active = new Set(stages.filter(runs).map((p) => p.stage.id))
  const samples = config.inference.samples
  const distill = active.has("distill") ? project(config.teacher, facts.distill.requests, facts.distill.promptChars) : project(config.teacher, 0, 0)
  let repair: Projection | null = project(config.teacher, 0, 0)
  let repairUpperBound: number | null = null
  if (active.has("repair")) {
    if (facts.repair !== null) {
      repair = project(config.teacher, facts.repair.requests, facts.repair.promptChars)
    } else {
      // The pool is unknown until the audit runs; at most every audited pair is a regression.
      const audited = facts.items[config.audit.split]
      repair = null
      repairUpperBound = audited.n * samples
    }
  }

  const inference = stages.filter((p) => active.has(p.stage.id) && p.stage.work.kind === "infer").map((p) => {
    const w = p.stage.work as Extract<typeof p.stage.work, { kind: "infer" }>
    const items = w.request.itemsEstimate ?? facts.items[w.request.split].n
    return { stage: p.stage.id, split: w.request.task === undefined ? w.request.split as Split : "ood" as const, items, models: w.request.models.length, requests: items * w.request.models.length * samples }
  })

  let judge: RunPlan["judge"] = null
  const auditWork = (p: PlannedStage) => (active.has(p.stage.id) && p.stage.work.kind === "audit" ? p.stage.work.request : undefined)
  const audits = config.audit.llm_judge.enabled
    ? stages.flatMap((p) => {
      const w = auditWork(p)
      return w === undefined || w.task !== undefined ? [] : [{ stage: p.stage.id, split: w.split, pairs: facts.items[w.split].n * samples }]
    })
    : []
  // Out of distribution: one request per judged answer (HateCheck and open-ended ones), as far as the config tells.
  const oodAudits = config.ood.judge
    ? stages.flatMap((p) => {
      const w = auditWork(p)
      return w === undefined || w.task === undefined || (w.judgeEstimate ?? 0) === 0 ? [] : [{ stage: p.stage.id, pairs: w.judgeEstimate! * samples }]
    })
    : []
  if (audits.length > 0 || oodAudits.length > 0) {
    // One request per pair (both views are scored by the classifiers; the judge reads the whole outputs once).
    // In supplement mode only the classifier-triggered pairs are judged: the projection is then an upper bound.
    const requests = [...audits, ...oodAudits].reduce((a, x) => a + x.pairs, 0)
    // Each request carries the question, both outputs (at most inference.max_tokens each) and the judge's rules; an
    // out-of-distribution one the rubric, the prompt and one answer (at most ood.max_tokens).
    const promptChars = audits.reduce((a, x) =>
      a + samples * (facts.items[x.split].questionChars + facts.items[x.split].n * (JUDGE_INSTRUCTION_CHARS + 2 * config.inference.max_tokens * CHARS_PER_TOKEN)), 0) +
      oodAudits.reduce((a, x) => a + x.pairs * (OOD_JUDGE_CHARS + config.ood.max_tokens * CHARS_PER_TOKEN), 0)
    judge = { audits: [...audits, ...oodAudits].map(({ stage, pairs }) => ({ stage, pairs })), projection: project(config.judge, requests, promptChars) }
  }

  const placement = fleetPlacement(config, active, graph, live)
  return {
    facts,
    stages,
    warnings: graph.warnings,
    teacher: { distill, repair, repairUpperBound },
    judge,
    inference,
    services: placeServices(config, active, graph, placement),
    placement
  }
}

const int = (n: number) => n.toLocaleString("en")
const usd = (n: number) => `$${n < 0.01 && n > 0 ? n.toFixed(4) : n.toFixed(2)}`
const projection = (p: Projection) =>
  `${int(p.requests)} requests, ~${int(p.promptTokens)} prompt + ≤${int(p.completionTokens)} completion tokens, ≤${usd(p.costUsd)}`

export const renderRunPlan = (plan: RunPlan, config: ExperimentConfig): string => {
  const f = plan.facts
  const lines: Array<string> = [`dart run: exp ${f.expId} (${f.runDir}), config ${f.configPath}`]
  for (const w of plan.warnings) lines.push(`warning: ${w}`)
  lines.push(
    `items: train ${int(f.items.train.n)}, val ${int(f.items.val.n)}, test ${int(f.items.test.n)} ` +
      (f.itemsFrom === "run" ? "(from the run's datasets)" : "(projected from the suite; dart init writes them)"),
    "",
    `  ${"stage".padEnd(18)}${"action".padEnd(10)}why`
  )
  for (const p of plan.stages) lines.push(`  ${p.stage.id.padEnd(18)}${p.decision.action.padEnd(10)}${p.decision.reason}`)

  const t = config.teacher
  lines.push("", `teacher ${t.provider} ${t.model} (prices per million tokens $${t.prices.input_per_mtok} in / $${t.prices.output_per_mtok} out):`)
  lines.push(`  distill: ${int(f.distill.done)} of ${int(f.distill.items ?? 0)} items done; still needed: ${projection(plan.teacher.distill)}`)
  if (plan.teacher.repair !== null) lines.push(`  repair: still needed: ${projection(plan.teacher.repair)}`)
  else if (plan.teacher.repairUpperBound !== null) {
    lines.push(`  repair: pool unknown until the audit; at most ${int(plan.teacher.repairUpperBound)} requests (every audited pair a regression)`)
  }
  lines.push(`  correction rounds (up to ${t.correction_rounds} per item) come on top; completion is projected at max_tokens ${t.max_tokens}`)
  const j = config.judge
  if (plan.judge === null) {
    lines.push(`judge: ${config.audit.llm_judge.enabled ? "no audit runs" : "off (audit.llm_judge.enabled false)"}`)
  } else {
    const mode = config.audit.llm_judge.mode
    lines.push(`judge ${j.provider} ${j.model} (mode ${mode}, ${mode === "supplement" ? "at most " : ""}one request per pair):`)
    lines.push(`  ${plan.judge.audits.map((a) => `${a.stage} ${int(a.pairs)} ${a.stage === "audit_external" || a.stage === "audit_open_ended" ? "answers" : "pairs"}`).join(", ") || "no audit runs"}; ${projection(plan.judge.projection)}`)
  }
  if (plan.inference.length > 0) {
    lines.push(`student inference (vLLM, no API cost): ${plan.inference.map((i) => `${i.stage} ${i.split === "ood" ? `~${int(i.items)} prompts` : `${int(i.items)} ${i.split} items`} × ${i.models} models = ${int(i.requests)}`).join("; ")}`)
  }
  lines.push("services:")
  if (plan.services.length === 0) lines.push("  none (no stage that needs compute runs)")
  for (const s of plan.services) {
    const configured = s.endpoints.length === 0 ? [] : [`endpoint ${s.endpoints.join(", ")} (already running; nothing started)`]
    const started = !s.starts
      ? []
      : s.placed.length === 0
      ? [computeHosts(config).length === 0 ? "no host configured (compute.hosts is empty)" : "no host can run it (see hosts below)"]
      : config.compute.backend === "slurm"
      ? [`${s.placed.map((a) => a.name).join(", ")}: Slurm job${s.placed.length === 1 ? "" : "s"} (see jobs below)`]
      : config.compute.backend === "kubernetes"
      ? [`${s.placed.map((a) => a.name).join(", ")}: pod${s.placed.length === 1 ? "" : "s"} (see objects below)`]
      : [`${s.image} ${s.placed.map((a) => `${a.name} on ${a.host} (${describeDevices(a.gpus)}, port ${a.port})`).join(", ")}`]
    for (const [i, where] of [...configured, ...started].entries()) lines.push(`  ${(i === 0 ? s.service : "").padEnd(12)}${where}`)
    lines.push(`  ${"".padEnd(12)}${s.what}; for ${s.stages.join(", ")}`)
  }
  if (plan.services.some((s) => s.starts) && computeHosts(config).length > 0) {
    if (config.compute.backend === "slurm") lines.push(...renderSlurmJobs(config, plan.placement))
    else if (config.compute.backend === "kubernetes") lines.push(...renderKubeObjects(config, plan.placement, (a) => dryRunPod(config, a, plan.placement)))
    else lines.push(`hosts (${config.compute.backend}):`, ...renderPlacement(plan.placement))
    for (const p of plan.placement.problems) lines.push(`  problem: ${p}`)
  }
  const gpu = gpuMemoryPlan(config, plan)
  if (gpu !== null) lines.push(...renderGpuMemoryPlan(gpu))
  return lines.join("\n")
}
