import type { ExperimentConfig } from "../config/ExperimentConfig.ts"

/**
 * Where every service of a run goes over `compute.hosts`, decided once from what each host has (pure: the compute
 * adapter hands it the hosts' GPUs, the plan prints it, the services start from it).
 *
 * - vLLM: data-parallel replicas, one per `tensor_parallel_size` GPUs on every host that has them (a CPU-only fleet:
 *   one CPU replica per host), spread over the hosts first, capped by `compute.vllm.replicas`; each on its own port.
 * - trainer: the host with the most GPUs, `training.gpus` of them (a CPU fleet: the first host).
 * - classifiers: on a GPU no replica holds, else beside the trainer's GPUs (vLLM sleeps while they run, as on one box).
 */

type Config = ExperimentConfig

/** What a host offers: its GPU ids, "all" before they are counted, or none (a CPU host). */
export type HostDevices = ReadonlyArray<string> | "all" | null

export interface FleetHost {
  readonly name: string
  readonly devices: HostDevices
  /** Set when the host cannot be used at all (it does not answer, say): it gets nothing, with this reason. */
  readonly unusable?: string | undefined
}

export interface Assignment {
  readonly role: "vllm" | "classifier" | "trainer"
  /** The service's name, unique over the fleet (containers, jobs, log files): `vllm`, `vllm-2`, `classifier-hate`, `trainer`. */
  readonly name: string
  readonly host: string
  /** GPU ids, "all" (the host's GPUs, not yet counted), or null on CPU. */
  readonly gpus: HostDevices
  readonly port: number
}

export interface HostLine {
  readonly name: string
  readonly devices: HostDevices
  readonly runs: ReadonlyArray<string>
  /** Why the host runs nothing; null when it runs something. */
  readonly idle: string | null
}

export interface FleetPlacement {
  readonly vllm: ReadonlyArray<Assignment>
  /** In `audit.classifiers` order, for the classifiers dart starts. */
  readonly classifiers: ReadonlyArray<Assignment>
  readonly trainer: Assignment | null
  /** Replicas whose GPUs the trainer or the classifiers share (they sleep while those run; empty on CPU). */
  readonly sharing: ReadonlyArray<string>
  readonly hosts: ReadonlyArray<HostLine>
  /** Reasons the fleet cannot run what the config asks (too few GPUs for the trainer, no host at all). */
  readonly problems: ReadonlyArray<string>
}

/** A host's devices as its config declares them: `[]` is a CPU host. */
export const declaredDevices = (gpus: Config["compute"]["hosts"][number]["gpus"]): HostDevices =>
  gpus === "all" ? "all" : gpus.length === 0 ? null : gpus

export const describeDevices = (d: HostDevices): string =>
  d === null ? "CPU" : d === "all" ? "all GPUs" : `GPU ${d.join(",")}`

/** The name of the r-th replica (0-based): the first keeps the single-box name. */
export const replicaName = (r: number) => (r === 0 ? "vllm" : `vllm-${r + 1}`)

export const placeFleet = (
  config: Config,
  hosts: ReadonlyArray<FleetHost>,
  wants: { readonly vllm: boolean; readonly classifiers: ReadonlyArray<string>; readonly trainer: boolean }
): FleetPlacement => {
  const v = config.compute.vllm
  const tp = v.tensor_parallel_size
  const problems: Array<string> = []
  const usable = hosts.filter((h) => h.unusable === undefined)
  const gpuHosts = usable.filter((h) => h.devices !== null)
  const idle = new Map<string, string>()
  for (const h of hosts) if (h.unusable !== undefined) idle.set(h.name, h.unusable)
  if (usable.length === 0 && (wants.vllm || wants.trainer || wants.classifiers.length > 0)) {
    problems.push(hosts.length === 0 ? "compute.hosts is empty: add a host, or give the services' endpoints" : "no host of compute.hosts can be used")
  }

  // Replica slots per host: groups of `tp` GPUs; "all" is one slot of all of them until the host's GPUs are counted.
  const slots = new Map<string, Array<HostDevices>>()
  for (const h of usable) {
    if (gpuHosts.length > 0 && h.devices === null) {
      idle.set(h.name, "no GPU, and the fleet's GPU hosts serve")
      continue
    }
    if (h.devices === null || h.devices === "all") {
      slots.set(h.name, [h.devices])
      continue
    }
    const groups: Array<HostDevices> = []
    for (let i = 0; i + tp <= h.devices.length; i += tp) groups.push(h.devices.slice(i, i + tp))
    if (groups.length === 0) idle.set(h.name, `${h.devices.length} GPU(s), fewer than compute.vllm.tensor_parallel_size ${tp}`)
    slots.set(h.name, groups)
  }
  // Spread first: the first replica of every host before the second of any, so a lost box costs the fewest.
  const order: Array<{ host: string; gpus: HostDevices }> = []
  for (let round = 0; ; round++) {
    let any = false
    for (const h of usable) {
      const g = slots.get(h.name)?.[round]
      if (g === undefined) continue
      any = true
      order.push({ host: h.name, gpus: g })
    }
    if (!any) break
  }
  const capped = v.replicas === null ? order : order.slice(0, v.replicas)
  for (const o of order.slice(capped.length)) if (!capped.some((c) => c.host === o.host) && !idle.has(o.host)) idle.set(o.host, `compute.vllm.replicas ${v.replicas} reached`)
  const vllm: Array<Assignment> = wants.vllm
    ? capped.map((o, r) => ({ role: "vllm", name: replicaName(r), host: o.host, gpus: o.gpus, port: v.port + r }))
    : []
  if (wants.vllm && vllm.length === 0 && usable.length > 0) problems.push(`no host can run a vLLM replica (tensor_parallel_size ${tp})`)

  // Trainer: the most GPUs (first on ties); a CPU fleet trains on its first host.
  const count = (d: HostDevices) => (d === null ? 0 : d === "all" ? Number.POSITIVE_INFINITY : d.length)
  const trainerHost = gpuHosts.length > 0 ? gpuHosts.reduce((best, h) => (count(h.devices) > count(best.devices) ? h : best)) : usable[0]
  let trainer: Assignment | null = null
  if (wants.trainer && trainerHost !== undefined) {
    const k = config.training.gpus
    const d = trainerHost.devices
    if (d !== null && d !== "all" && d.length < k) {
      problems.push(`training.gpus is ${k}, but the host with the most GPUs (${trainerHost.name}) has ${d.length}`)
    }
    trainer = { role: "trainer", name: "trainer", host: trainerHost.name, gpus: d === null || d === "all" ? d : d.slice(0, k), port: config.compute.trainer.port }
  }

  // Classifiers: a GPU left over by the replicas, else shared with the trainer's host (vLLM there sleeps meanwhile).
  const sharing = new Set<string>()
  const classifiers: Array<Assignment> = []
  if (wants.classifiers.length > 0) {
    let at: { host: string; gpus: HostDevices } | undefined
    for (const h of gpuHosts) {
      if (h.devices === "all" || h.devices === null) continue
      const held = new Set(vllm.filter((a) => a.host === h.name).flatMap((a) => (Array.isArray(a.gpus) ? a.gpus : [])))
      const free = h.devices.filter((g) => !held.has(g))
      if (free.length > 0) {
        at = { host: h.name, gpus: [free[0]!] }
        break
      }
    }
    if (at === undefined && trainerHost !== undefined) {
      at = { host: trainerHost.name, gpus: trainerHost.devices === null || trainerHost.devices === "all" ? trainerHost.devices : trainerHost.devices }
      if (at.gpus !== null) for (const a of vllm) if (a.host === at.host) sharing.add(a.name)
    }
    if (at !== undefined) {
      const base = v.port + Math.max(vllm.length, 1)
      wants.classifiers.forEach((name, i) => classifiers.push({ role: "classifier", name: `classifier-${name}`, host: at!.host, gpus: at!.gpus, port: base + i }))
    }
  }
  if (trainer !== null && trainer.gpus !== null) {
    const mine = trainer.gpus === "all" ? null : new Set(trainer.gpus)
    for (const a of vllm) {
      if (a.host !== trainer.host) continue
      if (mine === null || a.gpus === "all" || (Array.isArray(a.gpus) && a.gpus.some((g) => mine.has(g)))) sharing.add(a.name)
    }
  }

  const all = [...vllm, ...classifiers, ...(trainer === null ? [] : [trainer])]
  const lines: Array<HostLine> = hosts.map((h) => {
    const runs = all.filter((a) => a.host === h.name).map((a) => `${a.name} (${describeDevices(a.gpus)}, port ${a.port})`)
    return { name: h.name, devices: h.devices, runs, idle: runs.length > 0 ? null : (idle.get(h.name) ?? "nothing placed here") }
  })
  return { vllm, classifiers, trainer, sharing: [...sharing], hosts: lines, problems }
}

export const renderPlacement = (p: FleetPlacement): Array<string> =>
  p.hosts.map((h) => `  ${h.name} (${describeDevices(h.devices)}): ${h.idle === null ? h.runs.join(", ") : `nothing: ${h.idle}`}`)

/**
 * The hosts the plan and preflight speak of: the Docker hosts, or a Slurm or Kubernetes cluster as one (its jobs' or
 * pods' nodes are the scheduler's choice, known only once they run).
 */
export const computeHosts = (config: Config): ReadonlyArray<Config["compute"]["hosts"][number]> =>
  config.compute.backend === "slurm"
    ? [{ name: "slurm", docker: config.compute.slurm.transport === "rest" ? config.compute.slurm.rest_url : (config.compute.slurm.ssh ?? "sbatch (here)"), gpus: [] }]
    : config.compute.backend === "kubernetes"
    ? [{ name: "kubernetes", docker: `${config.compute.kubernetes.kubeconfig ?? "kubeconfig"}${config.compute.kubernetes.context === null ? "" : ` context ${config.compute.kubernetes.context}`}`, gpus: [] }]
    : config.compute.hosts

/**
 * GPUs per job or pod on a scheduler-backed cluster (Slurm, Kubernetes): `gpus_per_replica` (default
 * tensor_parallel_size), `classifier_gpus` (default 1), the trainer `training.gpus`; none on `device: "cpu"` unless asked.
 */
export const clusterGpus = (config: Config, c: { readonly device: "cuda" | "cpu"; readonly gpus_per_replica: number | null; readonly classifier_gpus: number | null }) => {
  const cuda = c.device === "cuda"
  return {
    replica: c.gpus_per_replica ?? (cuda ? config.compute.vllm.tensor_parallel_size : 0),
    classifier: c.classifier_gpus ?? (cuda ? 1 : 0),
    trainer: cuda ? config.training.gpus : 0
  }
}
