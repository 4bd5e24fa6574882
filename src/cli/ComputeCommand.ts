import { Console, Duration, Effect, Option } from "effect"
import { Argument, Command, Flag } from "effect/cli"
import * as path from "node:path"
import { Compute } from "../compute/Compute.ts"
import { computeLayer } from "../compute/ComputeLayer.ts"
import { describeDevices } from "../compute/Placement.ts"
import type { ExperimentConfig } from "../config/ExperimentConfig.ts"
import type { RunningService, ServiceStatus } from "../compute/ServiceSpec.ts"
import { loadRunConfig } from "./Root.ts"

const layerFor = (config: ExperimentConfig, keep: boolean, timeoutS: number | undefined) =>
  computeLayer(config, { runDir: path.join(config.run.runs_dir, config.run.exp_id), keep, ...(timeoutS === undefined ? {} : { healthTimeout: Duration.seconds(timeoutS) }) })

const describe = (s: RunningService, backend: string) =>
  `${s.spec.name} ${s.endpoint} (${backend === "slurm" ? `node ${s.host}, job ${s.id}` : backend === "kubernetes" ? `node ${s.host}, pod ${s.id}` : `host ${s.host}, container ${s.id.slice(0, 12)}`}${s.reused ? ", reused" : ""})`

const upCommand = Command.make("up", {
  service: Argument.Literals("service", ["vllm", "classifiers", "trainer"]).pipe(Argument.withDescription("which service (default vllm)"), Argument.withDefault("vllm" as const)),
  attach: Flag.Boolean("attach").pipe(Flag.withDescription("stay in the foreground and remove the containers on Ctrl-C (ssh tunnels live as long as this)"), Flag.withDefault(false)),
  timeout: Flag.Finite("timeout").pipe(Flag.withDescription("seconds to wait for healthy (default: the spec's start period + 60)"), Flag.optional)
}, (args) =>
  Effect.gen(function*() {
    const { config } = yield* loadRunConfig
    yield* Effect.scoped(Effect.gen(function*() {
      const compute = yield* Compute
      const started = args.service === "vllm" ? yield* compute.vllm() : args.service === "trainer" ? [yield* compute.trainer()] : yield* compute.classifiers()
      for (const s of started) yield* Console.log(describe(s, compute.backend))
      if (!args.attach) {
        if (config.compute.backend === "docker" && config.compute.hosts.some((h) => h.docker.startsWith("ssh://"))) {
          yield* Console.error("note: endpoints on ssh:// hosts are tunnels that close with this command; use --attach to keep them, or let the stages open their own")
        }
        return
      }
      yield* Console.log(`ready; Ctrl-C ${compute.backend === "slurm" ? "cancels the jobs" : compute.backend === "kubernetes" ? "deletes the pods" : "stops and removes the containers"}`)
      return yield* Effect.never
    }).pipe(Effect.provide(layerFor(config, !args.attach, Option.getOrUndefined(args.timeout)))))
  })).pipe(Command.withDescription("Start (or reuse) the vLLM, classifier or trainer services of the experiment (containers on compute.hosts, or Slurm jobs) and print their endpoints; they keep running until `dart compute down` unless --attach."))

const uptime = (startedAt: string) => {
  const ms = Date.now() - Date.parse(startedAt)
  return Number.isFinite(ms) && ms > 0 ? Duration.format(Duration.seconds(Math.round(ms / 1000))) : "-"
}

/** Adapters a healthy vLLM server has loaded, from /v1/models (everything but the base). */
const adaptersOf = (endpoint: string) =>
  Effect.tryPromise(() => fetch(`${endpoint}/v1/models`, { signal: AbortSignal.timeout(3000) }).then((r) => r.json() as Promise<{ data?: Array<{ id: string }> }>)).pipe(
    Effect.map((j) => (j.data ?? []).map((m) => m.id).filter((id) => id !== "base").join(",") || "none"),
    Effect.orElseSucceed(() => "?")
  )

const statusCommand = Command.make("status", {
  json: Flag.Boolean("json").pipe(Flag.withDescription("print JSON"), Flag.withDefault(false))
}, (args) =>
  Effect.gen(function*() {
    const { config } = yield* loadRunConfig
    yield* Effect.scoped(Effect.gen(function*() {
      const compute = yield* Compute
      const removed = yield* compute.removeOrphans()
      for (const r of removed) yield* Console.error(`removed ${r}: its dart process is gone`)
      const placement = yield* compute.placement()
      const rows: Array<ServiceStatus & { uptime: string; adapters: string }> = []
      for (const s of yield* compute.status()) {
        let adapters = "-"
        // Slurm's jobs run on nodes the placement cannot name: the service's name decides there.
        const port = placement.vllm.find((a) => a.name === s.name && (compute.backend !== "docker" || a.host === s.host))?.port
        if (s.role === "vllm" && s.health === "healthy" && port !== undefined) {
          adapters = yield* adaptersOf(`http://${yield* compute.reach(s.host, port)}`)
        }
        rows.push({ ...s, uptime: s.state === "running" ? uptime(s.startedAt) : "-", adapters })
      }
      const hosts = placement.hosts.map((h) => ({ name: h.name, gpus: describeDevices(h.devices), places: h.runs, idle: h.idle }))
      if (args.json) return yield* Console.log(JSON.stringify({ exp_id: config.run.exp_id, backend: compute.backend, hosts, services: rows }, null, 2))
      for (const h of hosts) {
        const mine = compute.backend !== "docker" ? rows : rows.filter((r) => r.host === h.name)
        yield* Console.log(`${h.name}${compute.backend !== "docker" ? "" : ` (${h.gpus})`}: ${mine.length} service(s) of ${config.run.exp_id}${h.idle === null ? `; places ${h.places.join(", ")}` : `; ${h.idle}`}`)
        for (const r of mine) {
          yield* Console.log(`  ${r.name}${compute.backend !== "docker" ? `\t${r.host}` : ""}\t${r.state}\t${r.health}\t${r.gpus}\tup ${r.uptime}\tadapters ${r.adapters}\t${r.id}\t${r.image}\towner ${r.owner}`)
        }
      }
    }).pipe(Effect.provide(layerFor(config, true, undefined))))
  })).pipe(Command.withDescription("Every host of compute.hosts (or the Slurm cluster) with its GPUs and what the placement puts there, then its services of the experiment: state, health, devices, uptime, loaded adapters; removes services whose dart process is gone."))

const downCommand = Command.make("down", {}, () =>
  Effect.gen(function*() {
    const { config } = yield* loadRunConfig
    yield* Effect.scoped(Effect.gen(function*() {
      const compute = yield* Compute
      const removed = yield* compute.down()
      yield* Console.log(removed.length === 0 ? `no ${config.compute.backend === "slurm" ? "jobs" : config.compute.backend === "kubernetes" ? "objects" : "containers"} of ${config.run.exp_id}` : `removed ${removed.join(", ")}`)
    }).pipe(Effect.provide(layerFor(config, true, undefined))))
  })).pipe(Command.withDescription("Stop and remove every service of the experiment on every host of compute.hosts (or cancel its Slurm jobs)."))

export const computeCommand = Command.make("compute").pipe(
  Command.withDescription("Manage the experiment's vLLM, classifier and trainer services by hand: containers on the Docker hosts of compute.hosts, or jobs on the Slurm cluster (compute.backend)."),
  Command.withSubcommands([upCommand, statusCommand, downCommand])
)
