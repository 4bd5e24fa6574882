import { Console, Duration, Effect, Layer, Schedule, Scope, Stream } from "effect"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { fileExists } from "../runs/AtomicFile.ts"
import type { ExperimentConfig } from "../config/ExperimentConfig.ts"
import { isTinyModelPath, TINY_MANIFEST, tinyModelsCommand, tinyRoot } from "../config/TinyModels.ts"
import { Compute, type ComputeOptions, type HostProbe, type ReplicaEvent } from "./Compute.ts"
import { ComputeError, localIoError } from "./ComputeError.ts"
import { classifierSpecs, trainerSpec, vllmSpec } from "./ContainerSpecs.ts"
import { probeChatTemplate } from "./ChatTemplateProbe.ts"
import { getPath, imagePresent, MIN_NVIDIA_DRIVER, preflight, putDirectory, removeAll, removeOrphans, runTask, serviceStatus, startService } from "./DockerBackend.ts"
import { connectHost, type DockerHost, redactedEnv } from "./DockerHost.ts"
import { describeHubResult, fetchHubModels, requireFetched } from "./HubFetch.ts"
import { type FleetHost, declaredDevices, placeFleet } from "./Placement.ts"
import type { RunningService, ServiceSpec } from "./ServiceSpec.ts"

type HostConfig = ExperimentConfig["compute"]["hosts"][number]

/** GPUs from `GET /info`: CDI devices named nvidia.com/gpu=N when listed, else the nvidia runtime (count unknown), else none. */
export const gpusFromInfo = (info: { readonly Runtimes?: Record<string, unknown>; readonly DiscoveredDevices?: ReadonlyArray<{ readonly Source?: string; readonly ID?: string }> | null }): number | null => {
  const cdi = (info.DiscoveredDevices ?? []).filter((d) => /^nvidia\.com\/gpu=(\d+|GPU-)/.test(d.ID ?? ""))
  if (cdi.length > 0) return cdi.length
  return info.Runtimes !== undefined && Object.hasOwn(info.Runtimes, "nvidia") ? null : 0
}

/**
 * The Docker adapter of the compute port: every configured host is an engine (unix socket, tcp+TLS, or ssh with one
 * connection per host), connected on first use and held for the layer's lifetime. The placement (Placement.ts) puts
 * vLLM replicas on every host, the trainer on the host with the most GPUs and the classifiers where GPUs remain.
 */
export const dockerCompute = (config: ExperimentConfig, options: ComputeOptions) =>
  Layer.effect(Compute, Effect.gen(function*() {
    const scope = yield* Effect.scope
    const c = config.compute
    const expId = config.run.exp_id
    const hfToken = redactedEnv("HF_TOKEN")
    const configs = new Map(c.hosts.map((h) => [h.name, h]))
    const connections = new Map<string, Effect.Effect<DockerHost, ComputeError>>()
    for (const h of c.hosts) connections.set(h.name, yield* Effect.cached(connectHost(h).pipe(Scope.provide(scope))))
    const host = (name: string) => {
      const conn = connections.get(name)
      return conn === undefined ? Effect.fail(new ComputeError({ host: name, message: `no host named ${name} in compute.hosts` })) : conn
    }
    const hostConfig = (name: string): HostConfig => configs.get(name)!
    /** The first host that answers (tasks such as the tiny models and the chat-template probe run there). */
    const first = () =>
      c.hosts.length === 0
        ? Effect.fail(new ComputeError({ host: "-", message: "compute.hosts is empty: add a Docker host, or give the services' endpoints" }))
        : Effect.map(fleetHosts, (hosts) => (hosts.find((h) => h.unusable === undefined) ?? hosts[0]!).name)

    /** The engine answers within 15 s; version and what it says about GPUs. */
    const probeHost = (name: string): Effect.Effect<HostProbe, ComputeError> =>
      Effect.gen(function*() {
        const h = yield* host(name)
        const at = hostConfig(name).docker
        const timeout = () => new ComputeError({ host: name, message: `${at}: the engine did not answer within 15 s` })
        const version = yield* Effect.tryPromise({ try: () => h.docker.version(), catch: (e) => new ComputeError({ host: name, message: `${at}: ${(e as Error).message}`, cause: e }) }).pipe(
          Effect.timeoutOrElse({ duration: "15 seconds", orElse: () => Effect.fail(timeout()) })
        )
        const info = yield* Effect.tryPromise({ try: () => h.docker.info() as Promise<Parameters<typeof gpusFromInfo>[0]>, catch: (e) => new ComputeError({ host: name, message: `info: ${(e as Error).message}`, cause: e }) }).pipe(
          Effect.timeoutOrElse({ duration: "15 seconds", orElse: () => Effect.fail(timeout()) })
        )
        return { address: hostConfig(name).docker, engine: `Docker ${version.Version}`, gpus: gpusFromInfo(info) }
      })

    // Placement, once: every host probed in parallel; "all" GPUs counted with nvidia-smi in a throwaway container.
    const fleetHosts = yield* Effect.cached(Effect.gen(function*() {
      const hosts = yield* Effect.forEach(c.hosts, (hc): Effect.Effect<FleetHost> =>
        Effect.gen(function*() {
          const declared = declaredDevices(hc.gpus)
          const probed = yield* Effect.result(probeHost(hc.name))
          if (probed._tag === "Failure") return { name: hc.name, devices: declared, unusable: `does not answer (${probed.failure.message})` }
          if (declared !== "all") return { name: hc.name, devices: declared }
          const h = yield* Effect.orDie(host(hc.name))
          const report = yield* Effect.result(preflight(h, { images: [], gpus: true, pull: false, probeImage: vllmSpec(config, hc, h.listenHost).image }))
          if (report._tag === "Failure") return { name: hc.name, devices: declared, unusable: report.failure.message }
          const ids = report.success.gpuDevices.map((g) => String(g.index))
          return { name: hc.name, devices: ids.length > 0 ? ids : "all" }
        }), { concurrency: "unbounded" })
      return hosts
    }))
    const everything = { vllm: true, classifiers: config.audit.classifiers.map((x) => x.name), trainer: true }
    const placement = Effect.map(fleetHosts, (hosts) => placeFleet(config, hosts, everything))

    // Per host and image: the engine answers, and NVIDIA works there when the service asks for GPUs.
    const checked = new Set<string>()
    const preflightOnce = (h: DockerHost, spec: ServiceSpec) =>
      checked.has(`${h.name}\u0000${spec.image}`) ? Effect.void : preflight(h, { images: [], gpus: spec.gpus !== null, pull: false, probeImage: spec.image, ...(spec.role === "trainer" ? { minDriver: MIN_NVIDIA_DRIVER } : {}) }).pipe(
        Effect.tap((report) => {
          checked.add(`${h.name}\u0000${spec.image}`)
          const gpus = report.gpuDevices
          return gpus.length === 0 ? Effect.void : Console.error(
            `${h.name}: ${gpus.length} GPU${gpus.length === 1 ? "" : "s"}, NVIDIA driver ${gpus[0]!.driver}: ` +
              gpus.map((g) => `${g.index} ${g.name}${g.memoryMiB === null ? "" : ` ${(g.memoryMiB / 1024).toFixed(0)} GiB`}`).join(", ")
          )
        })
      )
    // The run's tiny models: local folders, built once with the trainer image on the first host (the smoke profile's box).
    const tiny = yield* Effect.cached(Effect.flatMap(Effect.flatMap(first(), host), (h) => buildTinyModels(h, config)))
    const needsTiny = (spec: ServiceSpec) => spec.binds.some((b) => isTinyModelPath(config, b.source))
    // Hub models: fetched into each host's HF cache once per layer, before the first service there that reads them.
    const fetched = new Set<string>()
    const ensureHubModels = (h: DockerHost, spec: ServiceSpec) =>
      Effect.gen(function*() {
        const ids = spec.hubModels.filter((id) => !fetched.has(`${h.name}\u0000${id}`))
        if (ids.length === 0) return spec
        const print = (line: string) => process.stderr.write(`${line}\n`)
        const fetcher = trainerSpec(config, hostConfig(h.name), h.listenHost).image
        if (!(yield* imagePresent(h, fetcher))) {
          // A host that only serves, without dart's trainer image: the service fetches its model itself, as it would
          // without dart (no token check before, no progress here).
          print(`compute: ${fetcher} is not on ${h.name}: ${spec.name} fetches ${ids.join(", ")} itself`)
          const { HF_HUB_OFFLINE: _offline, ...env } = spec.env
          return { ...spec, env }
        }
        const results = yield* fetchHubModels(h, hostConfig(h.name), config, ids, "download", { print })
        yield* requireFetched(h.name, results)
        for (const r of results) {
          fetched.add(`${h.name}\u0000${r.repo}`)
          print(`compute: ${describeHubResult(r)} on ${h.name}`)
        }
        return spec
      })
    const start = (h: DockerHost, spec: ServiceSpec) =>
      preflightOnce(h, spec).pipe(
        Effect.andThen(needsTiny(spec) ? tiny : Effect.void),
        Effect.andThen(ensureHubModels(h, spec)),
        Effect.flatMap((spec) => startService(h, spec, {
          expId, logsDir: path.join(options.runDir, "logs"), keep: options.keep ?? false, pull: options.pull ?? true,
          healthTimeout: options.healthTimeout ?? Duration.seconds(spec.health.startPeriodS + 60)
        }))
      )
    /** The placement of everything, failing only on the problems of what this call starts (a trainer too big for the fleet is no concern of vLLM's). */
    const placed = (role: "vllm" | "classifier" | "trainer") =>
      Effect.flatMap(fleetHosts, (hosts) => {
        const mine = placeFleet(config, hosts, { vllm: role === "vllm", classifiers: role === "classifier" ? everything.classifiers : [], trainer: role === "trainer" })
        return mine.problems.length > 0 ? Effect.fail(new ComputeError({ host: "-", message: mine.problems.join("; ") })) : Effect.succeed(placeFleet(config, hosts, everything))
      })

    /** Over every host at once; hosts that do not answer are named on stderr and skipped. */
    const everyHost = <A>(what: string, f: (h: DockerHost) => Effect.Effect<ReadonlyArray<A>, ComputeError>, strict: boolean) =>
      Effect.forEach(c.hosts, (hc) => Effect.result(Effect.flatMap(host(hc.name), f)), { concurrency: "unbounded" }).pipe(
        Effect.flatMap((results) => {
          const failed = results.flatMap((r) => (r._tag === "Failure" ? [r.failure] : []))
          const ok = results.flatMap((r) => (r._tag === "Success" ? r.success : []))
          if (failed.length === 0) return Effect.succeed(ok)
          if (strict) return Effect.fail(new ComputeError({ host: failed.map((f) => f.host).join(","), message: `${what}: ${failed.map((f) => `${f.host}: ${f.message}`).join("; ")}` }))
          return Console.error(`warning: ${what} skipped ${failed.map((f) => `${f.host} (${f.message})`).join(", ")}`).pipe(Effect.as(ok))
        })
      )

    return Compute.of({
      backend: "docker",
      hostNames: c.hosts.map((h) => h.name),
      placement: () => placement,
      fleetHosts: () => fleetHosts,
      vllm: () =>
        Effect.flatMap(placed("vllm"), (p) =>
          Effect.forEach(p.vllm, (a) =>
            Effect.flatMap(host(a.host), (h) => start(h, vllmSpec(config, hostConfig(a.host), h.listenHost, hfToken, { name: a.name, port: a.port, gpus: a.gpus }))), { concurrency: "unbounded" })),
      classifiers: (names) =>
        Effect.flatMap(placed("classifier"), (p) =>
          Effect.forEach(p.classifiers.filter((a) => names === undefined || names.includes(a.name.replace(/^classifier-/, ""))), (a) =>
            Effect.flatMap(host(a.host), (h) => {
              const specs = classifierSpecs(config, hostConfig(a.host), h.listenHost, hfToken, { gpus: a.gpus, firstPort: p.classifiers[0]!.port })
              return start(h, specs.find((s) => s.name === a.name)!)
            }))),
      trainer: () =>
        Effect.flatMap(placed("trainer"), (p) =>
          p.trainer === null
            ? Effect.fail(new ComputeError({ host: "-", message: "no host for the trainer" }))
            : Effect.flatMap(host(p.trainer.host), (h) => start(h, trainerSpec(config, hostConfig(p.trainer!.host), h.listenHost, hfToken, { gpus: p.trainer!.gpus })))),
      putAdapter: (s, localDir, name) => Effect.flatMap(host(s.host), (h) => putDirectory(h, s.id, localDir, path.posix.join(s.spec.filesDir, name))),
      getPath: (s, remotePath, localDir) => Effect.flatMap(host(s.host), (h) => getPath(h, s.id, remotePath, localDir)),
      replicaEvents: (services) => replicaEvents(host, services),
      reach: (name, port) => Effect.flatMap(host(name), (h) => h.reach(port)).pipe(Effect.map((r) => `${r.host.includes(":") ? `[${r.host}]` : r.host}:${r.port}`)),
      probeHost,
      imagePresent: (name, image) => Effect.flatMap(host(name), (h) => imagePresent(h, image)),
      checkHubModels: (name, ids) =>
        Effect.gen(function*() {
          const h = yield* host(name)
          // The fetch task runs in the trainer image: without it nothing on this host can say.
          if (!(yield* imagePresent(h, trainerSpec(config, hostConfig(name), h.listenHost).image))) return null
          return yield* fetchHubModels(h, hostConfig(name), config, ids, "check")
        }),
      probeChatTemplate: (conversations) =>
        Effect.gen(function*() {
          const name = yield* first()
          const h = yield* host(name)
          if (isTinyModelPath(config, config.model.base)) yield* tiny
          return yield* probeChatTemplate(h, hostConfig(name), config, conversations)
        }),
      status: () => everyHost("status", (h) => serviceStatus(h, expId), false),
      down: () => everyHost("down", (h) => removeAll(h, expId), true),
      removeOrphans: () => everyHost("looking for a killed run's containers", (h) => removeOrphans(h, expId), false)
    })
  }))

/**
 * The engines' view of the replicas every 5 s: a container that stopped, or a host that no longer answers, is lost;
 * one that started again is restarted; one healthy again after that is ready. Each change is told once.
 */
const replicaEvents = (host: (name: string) => Effect.Effect<DockerHost, ComputeError>, services: ReadonlyArray<RunningService>): Stream.Stream<ReplicaEvent> => {
  const last = new Map<string, { kind: ReplicaEvent["kind"]; startedAt: string }>()
  const look = Effect.forEach(services, (s) =>
    Effect.gen(function*() {
      const h = yield* host(s.host)
      const i = yield* Effect.tryPromise({ try: () => h.docker.getContainer(s.id).inspect(), catch: (e) => new ComputeError({ host: s.host, message: (e as Error).message }) }).pipe(
        Effect.timeoutOrElse({ duration: "10 seconds", orElse: () => Effect.fail(new ComputeError({ host: s.host, message: "the engine did not answer within 10 s" })) })
      )
      const before = last.get(s.spec.name)
      const startedAt = i.State.StartedAt
      const kind: ReplicaEvent["kind"] = !i.State.Running ? "lost" : before !== undefined && before.startedAt !== startedAt ? "restarted" : i.State.Health?.Status === "healthy" ? "ready" : (before?.kind ?? "ready")
      return { s, kind, startedAt, detail: i.State.Running ? `container ${i.State.Status}` : `container ${i.State.Status} (exit ${i.State.ExitCode})` }
    }).pipe(
      Effect.catch((e) => Effect.succeed({ s, kind: "lost" as const, startedAt: last.get(s.spec.name)?.startedAt ?? "", detail: e.message }))
    ), { concurrency: "unbounded" }).pipe(
    Effect.map((seen) =>
      seen.flatMap(({ s, kind, startedAt, detail }) => {
        const before = last.get(s.spec.name)
        last.set(s.spec.name, { kind, startedAt })
        if (before === undefined ? kind === "ready" : before.kind === kind && before.startedAt === startedAt) return []
        return [{ kind, service: s.spec.name, host: s.host, endpoint: s.endpoint, detail } satisfies ReplicaEvent]
      })
    )
  )
  return Stream.fromEffectSchedule(look, Schedule.spaced("5 seconds")).pipe(Stream.flattenIterable)
}

/**
 * The run's `@tiny` models (config/TinyModels.ts), built once by the trainer image's `dart_trainer.tiny_model` in a
 * throwaway container without network: seeded, so a rebuild gives the same files. The builder writes its manifest
 * last, so a folder without one (a killed build) is built again. Local folders: the smoke profile runs on one machine.
 */
export const buildTinyModels = (host: DockerHost, config: ExperimentConfig) =>
  Effect.gen(function*() {
    const root = tinyRoot(config)
    const done = yield* fileExists(path.join(root, TINY_MANIFEST)).pipe(
      Effect.mapError((e) => new ComputeError({ host: host.name, message: e.message, cause: e }))
    )
    if (done) return
    const suite = path.resolve(config.datasets.suite_dir)
    yield* Effect.tryPromise({ try: () => fs.mkdir(root, { recursive: true }), catch: localIoError(host.name, root, "mkdir") })
    const image = trainerSpec(config, config.compute.hosts.find((h) => h.name === host.name) ?? { gpus: [] }, host.listenHost).image
    process.stderr.write(`compute: building the tiny models into ${root} with ${image}\n`)
    const t0 = Date.now()
    yield* runTask(host, config.run.exp_id, "tiny-models", {
      image,
      cmd: tinyModelsCommand(config, root, suite),
      binds: [{ source: root, target: root, readOnly: false }, { source: suite, target: suite, readOnly: true }],
      // Files owned by the caller; HOME for the libraries' caches, which a uid without a passwd entry lacks.
      env: { HOME: "/tmp", HF_HOME: "/tmp/hf", HF_HUB_OFFLINE: "1" },
      user: typeof process.getuid === "function" ? `${process.getuid()}:${process.getgid!()}` : undefined
    })
    process.stderr.write(`compute: tiny models built in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`)
  })
