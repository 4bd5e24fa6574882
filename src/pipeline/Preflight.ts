import { Effect, Option, Schema } from "effect"
import * as net from "node:net"
import { computeHosts, type FleetHost } from "../compute/Placement.ts"
import type { ExperimentConfig } from "../config/ExperimentConfig.ts"
import { apiKeyFromEnv, defaultKeyVariable } from "../config/Secrets.ts"
import type { RunPlan, ServicePlacement } from "./RunPlan.ts"
import { trainerSpec, vllmSpec } from "../compute/ContainerSpecs.ts"
import { Compute } from "../compute/Compute.ts"
import { describeHubResult, type HubModelResult } from "../compute/HubResult.ts"
import { hubModelsFor } from "../config/HubModels.ts"
import { gpuMemoryPlan } from "./GpuMemoryPlan.ts"
import { classifiersToStart } from "./ServicePlacement.ts"
import { type ChatLayoutRecord, decideLayout, describeLayout, type TemplateProbe } from "../domain/ChatLayout.ts"
import { type ChatLayoutError, probeTemplate, readChatLayout } from "./ChatLayoutRecord.ts"

/**
 * Checks before `dart run` starts anything: the API keys the providers in use need, and that hosts
 * answer, images exist and GPUs are present. The compute probes are injected (the compute layer
 * plugs its own in); the key checks read the real environment, never printing a value.
 */

export type HostConfig = ExperimentConfig["compute"]["hosts"][number]

export class ProbeFailure extends Schema.TaggedError<ProbeFailure>()("ProbeFailure", { message: Schema.String }) {}

export interface HostInfo {
  /** How the host is reached (for messages); absent = its name. */
  readonly address?: string
  /** Engine version as the host reports it. */
  readonly engine: string
  /** NVIDIA GPUs usable by services: a count, or null when the host says GPUs are available without a count. */
  readonly gpus: number | null
}

export interface ComputeProbes {
  readonly host: (host: HostConfig) => Effect.Effect<HostInfo, ProbeFailure>
  /** True when the image is on the host (a pull or build would be needed otherwise). */
  readonly image: (host: HostConfig, image: string) => Effect.Effect<boolean, ProbeFailure>
  /** An already-running service: vLLM / classifier HTTP base URL, or the trainer's host:port. */
  readonly endpoint: (service: ServicePlacement["service"], address: string) => Effect.Effect<void, ProbeFailure>
  /** Hub models: readable with the token there is (or already in the host's HF cache), with safetensors weights. */
  readonly models?: (host: HostConfig, config: ExperimentConfig, ids: ReadonlyArray<string>) => Effect.Effect<ReadonlyArray<HubModelResult>, ProbeFailure>
  /**
   * The base model's chat template rendered on DART's conversations (src/pipeline/ChatLayoutRecord.ts): the layout
   * recorded for the run when there is one, else the probe's answer.
   */
  readonly chatTemplate?: (config: ExperimentConfig, runDir: string) => Effect.Effect<ChatLayoutRecord | TemplateProbe, ProbeFailure>
  /** The hosts as they answer now (a dead one unusable, "all" GPUs counted): the plan places over these. */
  readonly fleet?: () => Effect.Effect<ReadonlyArray<FleetHost>>
}

export interface Check {
  readonly name: string
  readonly ok: boolean
  readonly detail: string
}

export interface PreflightResult {
  readonly checks: ReadonlyArray<Check>
  readonly missing: ReadonlyArray<Check>
  /** The template's answer when it was probed now (to be recorded when the run starts); undefined otherwise. */
  readonly templateProbe?: TemplateProbe
}

const keyCheck = Effect.fnUntraced(function*(role: "teacher" | "judge", settings: ExperimentConfig["teacher"] | ExperimentConfig["judge"], why: string) {
  // Null for the run's own vLLM server (provider "vllm"), which needs no key from the environment.
  const variable: string | null = settings.api_key_env ?? defaultKeyVariable(settings.provider)
  if (variable === null) {
    return { name: `${role} API key`, ok: true, detail: `none needed: the ${role} is the run's own vLLM server (${settings.model}; ${why})` } satisfies Check
  }
  const key = yield* apiKeyFromEnv(variable)
  const set = Option.isSome(key) && key.value !== undefined
  return {
    name: `${role} API key`,
    ok: set,
    detail: set
      ? `${variable} is set (${settings.provider} ${settings.model}; ${why})`
      : `${variable} is not set: the ${role} (${settings.provider} ${settings.model}) needs it for ${why}`
  } satisfies Check
})

/** Stages that send the base model (or its adapters) a conversation, or train on one. */
const baseModelStages = (config: ExperimentConfig) =>
  new Set([
    "train_dart", "infer_audit", "train_dart_h", "infer_test",
    ...(config.teacher.provider === "vllm" ? ["distill", "repair"] : []),
    ...(config.judge.provider === "vllm" ? ["audit", "audit_test_dart", "audit_test_dart_h"] : [])
  ])

/** The chat layout check: decided (or recorded) before any teacher request, so a template that cannot render stops here. */
const chatTemplateCheck = Effect.fnUntraced(function*(config: ExperimentConfig, runDir: string, probes: ComputeProbes) {
  if (probes.chatTemplate === undefined) return { check: undefined, probe: undefined }
  const answer = yield* probes.chatTemplate(config, runDir).pipe(Effect.result)
  if (answer._tag === "Failure") {
    return { check: { name: "chat template", ok: false, detail: `${config.model.base}: ${answer.failure.message}` } satisfies Check, probe: undefined }
  }
  const recorded = "base" in answer.success
  const decided = recorded ? answer.success as ChatLayoutRecord : decideLayout(config.model.base, config.model.system_role, answer.success as TemplateProbe)
  if ("error" in decided) return { check: { name: "chat template", ok: false, detail: `${config.model.base}: ${decided.error}` } satisfies Check, probe: undefined }
  return {
    check: { name: "chat template", ok: true, detail: `${describeLayout(decided)}${recorded ? " (recorded for this run)" : ""}` } satisfies Check,
    probe: recorded ? undefined : answer.success as TemplateProbe
  }
})

/** One host's checks: it answers, its images are there, its hub models are readable, its GPUs are present. */
const hostChecks = (config: ExperimentConfig, entry: { host: HostConfig; images: Set<string>; gpu: boolean; models: Set<string> }, probes: ComputeProbes) =>
  Effect.gen(function*() {
    const { host, images, gpu, models } = entry
    const checks: Array<Check> = []
    const info = yield* probes.host(host).pipe(Effect.result)
    if (info._tag === "Failure") {
      checks.push({ name: `host ${host.name}`, ok: false, detail: `does not answer (${info.failure.message})` })
      for (const image of images) checks.push({ name: image.startsWith("environment ") ? image : `image ${image}`, ok: false, detail: `not checked: host ${host.name} does not answer` })
      if (gpu) checks.push({ name: `GPUs on ${host.name}`, ok: false, detail: `not checked: host ${host.name} does not answer` })
      return checks
    }
    checks.push({ name: `host ${host.name}`, ok: true, detail: `${info.success.address ?? host.name} answers (${info.success.engine})` })
    for (const image of images) {
      const present = yield* probes.image(host, image).pipe(Effect.result)
      if (image.startsWith("environment ")) {
        checks.push(present._tag === "Failure" ? { name: image, ok: false, detail: present.failure.message } : { name: image, ok: present.success, detail: present.success ? "present" : "missing" })
        continue
      }
      checks.push(
        present._tag === "Failure"
          ? { name: `image ${image}`, ok: false, detail: `on ${host.name}: ${present.failure.message}` }
          : present.success
          ? { name: `image ${image}`, ok: true, detail: `present on ${host.name}` }
          : { name: `image ${image}`, ok: false, detail: `not on ${host.name}: build or pull it first (dart compute up builds the project's images)` }
      )
    }
    if (models.size > 0 && probes.models !== undefined) {
      // The fetch task runs in the trainer image: without it nothing on this host can say.
      const fetcher = trainerSpec(config, host, "127.0.0.1").image
      const present = yield* probes.image(host, fetcher).pipe(Effect.orElseSucceed(() => false))
      const results = present ? yield* probes.models(host, config, [...models]).pipe(Effect.result) : undefined
      for (const id of models) {
        const r = results?._tag === "Success" ? results.success.find((x) => x.repo === id) : undefined
        checks.push(
          results === undefined
            // As without dart: the service downloads its model itself (a serving-only host without the trainer image).
            ? { name: `model ${id}`, ok: true, detail: `not checked: ${fetcher} (dart's hub fetch) is not on ${host.name}, so the service there fetches it itself` }
            : results._tag === "Failure"
            ? { name: `model ${id}`, ok: false, detail: `on ${host.name}: ${results.failure.message}` }
            : r === undefined
            ? { name: `model ${id}`, ok: false, detail: `on ${host.name}: the check said nothing about it` }
            : { name: `model ${id}`, ok: r.ok, detail: r.ok ? `${describeHubResult(r)} (from ${host.name})` : `on ${host.name}: ${describeHubResult(r)}` }
        )
      }
    }
    if (gpu) {
      const wanted = host.gpus === "all" ? 1 : host.gpus.length
      const have = info.success.gpus
      const ok = have === null || have >= wanted
      checks.push({
        name: `GPUs on ${host.name}`,
        ok,
        detail: ok
          ? `${have === null ? "NVIDIA runtime present" : `${have} GPU(s)`} (wanted ${host.gpus === "all" ? "all" : host.gpus.join(",")})`
          : `${have} NVIDIA GPU(s) usable on ${host.name}, wanted ${host.gpus === "all" ? "at least 1 (gpus: all)" : host.gpus.join(",")}; ` +
            `use a GPU host, or set that host's gpus to [] with the CPU images (configs/smoke.json)`
      })
    }
      return checks
  })

export const runPreflight = Effect.fn("Preflight.run")(function*(config: ExperimentConfig, plan: RunPlan, probes: ComputeProbes) {
  const checks: Array<Check> = []
  const active = new Set(plan.stages.filter((p) => p.decision.action !== "skip" && p.decision.action !== "excluded").map((p) => p.stage.id))
  const teacherStages = (["distill", "repair"] as const).filter((s) => active.has(s))
  if (teacherStages.length > 0) checks.push(yield* keyCheck("teacher", config.teacher, teacherStages.join(" and ")))
  const judgeStages = plan.judge?.audits.map((a) => a.stage) ?? []
  if (judgeStages.length > 0) checks.push(yield* keyCheck("judge", config.judge, judgeStages.join(", ")))

  // One probe per host, whatever number of services it carries.
  const hosts = new Map<string, { host: HostConfig; images: Set<string>; gpu: boolean; models: Set<string> }>()
  for (const s of plan.services) {
    for (const endpoint of s.endpoints) {
      const r = yield* probes.endpoint(s.service, endpoint).pipe(Effect.result)
      checks.push({ name: `${s.service} endpoint`, ok: r._tag === "Success", detail: r._tag === "Success" ? `${endpoint} answers` : r.failure.message })
    }
    if (!s.starts) continue
    if (s.placed.length === 0) {
      checks.push({ name: `${s.service} host`, ok: false, detail: computeHosts(config).length === 0 ? `no host to start ${s.service} on: compute.hosts is empty and no endpoint is set` : `no host of compute.hosts can run ${s.service}: ${plan.placement.problems.join("; ") || "see the hosts above"}` })
      continue
    }
    for (const a of s.placed) {
      const h = computeHosts(config).find((x) => x.name === a.host)!
      const entry = hosts.get(h.name) ?? { host: h, images: new Set<string>(), gpu: false, models: new Set<string>() }
      const on = { gpus: a.gpus === null ? [] : a.gpus === "all" ? "all" as const : a.gpus }
      // A Slurm or Kubernetes cluster: its nodes pull images or run environments and fetch hub models themselves.
      const slurm = config.compute.backend !== "docker"
      const image = a.role === "trainer" ? trainerSpec(config, on, "127.0.0.1").image : vllmSpec(config, on, "127.0.0.1").image
      // A Slurm cluster's venv launcher runs Python environments, not images; its jobs fetch hub models themselves and
      // get their GPUs from Slurm (no engine to ask).
      const venv = config.compute.backend === "slurm" && config.compute.slurm.launcher === "venv" ? (a.role === "trainer" ? config.compute.slurm.venv.trainer : config.compute.slurm.venv.vllm) : null
      if (!slurm) entry.images.add(image)
      else if (venv !== null) entry.images.add(`environment ${venv}`)
      const models = slurm ? [] : s.service === "classifiers"
        ? classifiersToStart(config).filter((c) => a.name === `classifier-${c.name}`).flatMap((c) => hubModelsFor(config, "classifier", c.name))
        : hubModelsFor(config, s.service)
      for (const m of models) entry.models.add(m)
      entry.gpu ||= !slurm && a.gpus !== null
      hosts.set(h.name, entry)
    }
  }
  for (const p of plan.placement.problems) checks.push({ name: "placement", ok: false, detail: p })
  // Every host at once: a fleet's slow or dead box costs its own timeout, not the sum of them.
  const perHost = yield* Effect.forEach([...hosts.values()], (entry) => hostChecks(config, entry, probes), { concurrency: "unbounded" })
  checks.push(...perHost.flat())
  let templateProbe: TemplateProbe | undefined
  // Probed unless the host or its images are missing (the probe runs there); a missing key does not stop it.
  const touchesBase = baseModelStages(config)
  if ([...active].some((id) => touchesBase.has(id)) && !checks.some((c) => !c.ok && /^(host|image) /.test(c.name))) {
    const { check, probe } = yield* chatTemplateCheck(config, plan.facts.runDir, probes)
    if (check !== undefined) checks.push(check)
    templateProbe = probe
  }
  const gpuPlan = gpuMemoryPlan(config, plan)
  for (const ph of gpuPlan?.phases ?? []) {
    if (!ph.fits && ph.onMiss === "refuse") checks.push({ name: `GPU memory (${ph.phase})`, ok: false, detail: `on ${gpuPlan!.host}: ${ph.total} of the device is asked for: ${ph.advice}` })
  }
  return { checks, missing: checks.filter((c) => !c.ok), ...(templateProbe === undefined ? {} : { templateProbe }) } satisfies PreflightResult
})

export const renderPreflight = (result: PreflightResult): string => {
  if (result.checks.length === 0) return "checks: nothing to check (no stage that needs keys or compute runs)"
  const lines = ["checks:"]
  for (const c of result.checks) lines.push(`  ${c.ok ? "ok     " : "MISSING"}  ${c.name}: ${c.detail}`)
  return lines.join("\n")
}

// ---------------------------------------------------------------------------------------------
// The probes through the command's compute port (hosts, images, hub models, the chat template), and plain HTTP / TCP
// for endpoints the config names.

export const computeProbes = (compute: Compute["Service"], timeoutMs = 3000): ComputeProbes => ({
  fleet: () => compute.fleetHosts(),
  chatTemplate: (config, runDir) =>
    readChatLayout(config, runDir).pipe(
      Effect.flatMap((recorded): Effect.Effect<ChatLayoutRecord | TemplateProbe, ChatLayoutError> => recorded !== undefined ? Effect.succeed(recorded) : probeTemplate(config)),
      Effect.provideService(Compute, compute),
      Effect.mapError((e: ChatLayoutError) => new ProbeFailure({ message: e.message }))
    ),
  // A throwaway task asks the hub (the token stays out of logs and URLs); minutes at most.
  models: (host, _config, ids) =>
    compute.checkHubModels(host.name, ids).pipe(
      Effect.mapError((e) => new ProbeFailure({ message: e.message })),
      Effect.flatMap((r) => r === null ? Effect.fail(new ProbeFailure({ message: `${host.name} has no way to ask the hub (dart's trainer image is not there)` })) : Effect.succeed(r))
    ),
  host: (host) =>
    compute.probeHost(host.name).pipe(
      Effect.map((p) => ({ address: p.address, engine: p.engine, gpus: p.gpus })),
      Effect.mapError((e) => new ProbeFailure({ message: e.message }))
    ),
  image: (host, image) => compute.imagePresent(host.name, image).pipe(Effect.mapError((e) => new ProbeFailure({ message: e.message }))),
  endpoint: (service, address) =>
    service === "trainer"
      ? Effect.callback<void, ProbeFailure>((resume) => {
        const at = /^(.*):(\d+)$/.exec(address)
        if (at === null) return resume(Effect.fail(new ProbeFailure({ message: `${address}: expected host:port` })))
        const socket = net.connect({ host: at[1]!.replace(/^\[|\]$/g, ""), port: Number(at[2]) })
        socket.setTimeout(timeoutMs, () => socket.destroy(new Error(`no answer within ${timeoutMs} ms`)))
        socket.on("connect", () => {
          socket.destroy()
          resume(Effect.void)
        })
        socket.on("error", (e) => resume(Effect.fail(new ProbeFailure({ message: `trainer ${address}: ${e.message}` }))))
        return Effect.sync(() => socket.destroy())
      })
      : Effect.tryPromise({
        // /health is unauthenticated on vLLM (docs/serving.md §1.3), so no key is needed to probe it.
        try: (signal) => fetch(`${address.replace(/\/+$/, "").replace(/\/v1$/, "")}/health`, { signal: AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]) }),
        catch: (e) => new ProbeFailure({ message: `${service} ${address}: ${e instanceof Error ? (e.cause instanceof Error ? e.cause.message : e.message) : String(e)}` })
      }).pipe(Effect.flatMap((r) => r.ok ? Effect.void : Effect.fail(new ProbeFailure({ message: `${service} ${address}/health answered HTTP ${r.status}` }))))
})
