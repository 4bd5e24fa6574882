import { Console, Context, Duration, Effect, Layer, Scope } from "effect"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { fileExists } from "../runs/AtomicFile.ts"
import type { ExperimentConfig } from "../config/ExperimentConfig.ts"
import { ComputeError, localIoError } from "./ComputeError.ts"
import { classifierSpecs, trainerSpec, vllmSpec } from "./ContainerSpecs.ts"
import { getPath, imagePresent, MIN_NVIDIA_DRIVER, preflight, putDirectory, removeAll, removeOrphans, runTask, serviceStatus, startService } from "./DockerBackend.ts"
import { isTinyModelPath, TINY_MANIFEST, tinyRoot } from "../config/TinyModels.ts"

/** `tiny-gemma2/` → `--family gemma2`; `tiny/` builds the default family, with the arguments it always had. */
const tinyFamilyArgs = (root: string) => {
  const m = /^tiny-(.+)$/.exec(path.basename(root))
  return m === null ? [] : ["--family", m[1]!]
}
import { connectHost, type DockerHost, redactedEnv } from "./DockerHost.ts"
import { describeHubResult, fetchHubModels, requireFetched } from "./HubFetch.ts"
import type { CopiedFile, RunningService, ServiceSpec, ServiceStatus } from "./ServiceSpec.ts"

/**
 * What the stages ask of compute: "make sure the service is up and give me its endpoint", "put this adapter where
 * the server can load it". Docker is the one backend today; the stages only see this interface.
 */
export class Compute extends Context.Service<Compute, {
  /** The vLLM server (spec from config) up and healthy for the caller's scope; `endpoint` is its base URL. */
  vllm(): Effect.Effect<RunningService, ComputeError, Scope.Scope>
  /** One `/classify` server per named `audit.classifiers` entry (all when none are named), in config order. */
  classifiers(names?: ReadonlyArray<string>): Effect.Effect<ReadonlyArray<RunningService>, ComputeError, Scope.Scope>
  /** The trainer sidecar; `endpoint` is host:port for gRPC. */
  trainer(): Effect.Effect<RunningService, ComputeError, Scope.Scope>
  /** Copy a local adapter folder into the service as `{filesDir}/{name}`; returns that path inside the service. */
  putAdapter(service: RunningService, localDir: string, name: string): Effect.Effect<{ readonly path: string; readonly files: ReadonlyArray<CopiedFile> }, ComputeError>
  /** Copy a file or folder out of the service into `localDir` (replaced whole). */
  getPath(service: RunningService, remotePath: string, localDir: string): Effect.Effect<ReadonlyArray<CopiedFile>, ComputeError>
  status(): Effect.Effect<ReadonlyArray<ServiceStatus>, ComputeError>
  /** Stop and remove every container of the experiment, kept ones included. */
  down(): Effect.Effect<ReadonlyArray<string>, ComputeError>
  /** Remove the experiment's containers whose owning process is gone. */
  removeOrphans(): Effect.Effect<ReadonlyArray<string>, ComputeError>
  readonly hosts: ReadonlyArray<DockerHost>
}>()("dart/compute/Compute") {
  /**
   * Connects every configured host for the layer's lifetime (one SSH connection per ssh:// host). Services go to
   * the first host; `keep` leaves started containers running after the scope (for `dart compute up`).
   */
  static readonly layer = (config: ExperimentConfig, options: { readonly runDir: string; readonly keep?: boolean; readonly healthTimeout?: Duration.Input; readonly pull?: boolean }) =>
    Layer.effect(Compute, Effect.gen(function*() {
      const c = config.compute
      if (c.hosts.length === 0) return yield* new ComputeError({ host: "-", message: "compute.hosts is empty: add a Docker host, or give the services' endpoints" })
      const hosts = yield* Effect.forEach(c.hosts, (h) => connectHost(h))
      const host = hosts[0]!
      const hostConfig = c.hosts[0]!
      const expId = config.run.exp_id
      // Preflight once per host and layer: reachable, engine version, and NVIDIA support with a probe container
      // when the host is configured with GPUs, before anything is created there.
      const checked = new Set<string>()
      const preflightOnce = (spec: ServiceSpec) =>
        checked.has(spec.image) ? Effect.void : preflight(host, { images: [], gpus: spec.gpus !== null, pull: false, probeImage: spec.image, ...(spec.role === "trainer" ? { minDriver: MIN_NVIDIA_DRIVER } : {}) }).pipe(
          Effect.tap((report) => {
            checked.add(spec.image)
            const gpus = report.gpuDevices
            return gpus.length === 0 ? Effect.void : Console.error(
              `${host.name}: ${gpus.length} GPU${gpus.length === 1 ? "" : "s"}, NVIDIA driver ${gpus[0]!.driver}: ` +
                gpus.map((g) => `${g.index} ${g.name}${g.memoryMiB === null ? "" : ` ${(g.memoryMiB / 1024).toFixed(0)} GiB`}`).join(", ")
            )
          })
        )
      const tiny = yield* Effect.cached(buildTinyModels(host, config))
      const needsTiny = (spec: ServiceSpec) => spec.binds.some((b) => isTinyModelPath(config, b.source))
      // Hub models: fetched into the host's HF cache once per layer, before the first service that reads them.
      const fetched = new Set<string>()
      const ensureHubModels = (spec: ServiceSpec) =>
        Effect.gen(function*() {
          const ids = spec.hubModels.filter((id) => !fetched.has(id))
          if (ids.length === 0) return spec
          const print = (line: string) => process.stderr.write(`${line}\n`)
          const fetcher = trainerSpec(config, hostConfig, host.listenHost).image
          if (!(yield* imagePresent(host, fetcher))) {
            // A host that only serves, without dart's trainer image: the service fetches its model itself, as it would
            // without dart (no token check before, no progress here).
            print(`compute: ${fetcher} is not on ${host.name}: ${spec.name} fetches ${ids.join(", ")} itself`)
            const { HF_HUB_OFFLINE: _offline, ...env } = spec.env
            return { ...spec, env }
          }
          const results = yield* fetchHubModels(host, hostConfig, config, ids, "download", { print })
          yield* requireFetched(host.name, results)
          for (const r of results) {
            fetched.add(r.repo)
            print(`compute: ${describeHubResult(r)} on ${host.name}`)
          }
          return spec
        })
      const start = (spec: ServiceSpec) => preflightOnce(spec).pipe(Effect.andThen(needsTiny(spec) ? tiny : Effect.void), Effect.andThen(ensureHubModels(spec)), Effect.flatMap((spec) => startService(host, spec, {
        expId, logsDir: path.join(options.runDir, "logs"), keep: options.keep ?? false, pull: options.pull ?? true,
        healthTimeout: options.healthTimeout ?? Duration.seconds(spec.health.startPeriodS + 60)
      })))
      const hfToken = redactedEnv("HF_TOKEN")
      const byHost = (s: RunningService) => hosts.find((h) => h.name === s.host) ?? host
      return Compute.of({
        hosts,
        vllm: () => start(vllmSpec(config, hostConfig, host.listenHost, hfToken)),
        classifiers: (names) =>
          Effect.forEach(
            classifierSpecs(config, hostConfig, host.listenHost, hfToken).filter((_, i) => names === undefined || names.includes(config.audit.classifiers[i]!.name)),
            start
          ),
        trainer: () => start(trainerSpec(config, hostConfig, host.listenHost, hfToken)),
        putAdapter: (s, localDir, name) => putDirectory(byHost(s), s.id, localDir, path.posix.join(s.spec.filesDir, name)),
        getPath: (s, remotePath, localDir) => getPath(byHost(s), s.id, remotePath, localDir),
        status: () => Effect.forEach(hosts, (h) => serviceStatus(h, expId)).pipe(Effect.map((l) => l.flat())),
        down: () => Effect.forEach(hosts, (h) => removeAll(h, expId)).pipe(Effect.map((l) => l.flat())),
        removeOrphans: () => Effect.forEach(hosts, (h) => removeOrphans(h, expId)).pipe(Effect.map((l) => l.flat()))
      })
    }))
}

/**
 * The run's `@tiny` models (config/TinyModels.ts), built once by the trainer image's `dart_trainer.tiny_model` in a
 * throwaway container without network: seeded, so a rebuild gives the same files. The builder writes its manifest
 * last, so a folder without one (a killed build) is built again. Local folders: the smoke profile runs on one host.
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
    const image = trainerSpec(config, config.compute.hosts[0]!, host.listenHost).image
    process.stderr.write(`compute: building the tiny models into ${root} with ${image}\n`)
    const t0 = Date.now()
    yield* runTask(host, config.run.exp_id, "tiny-models", {
      image,
      cmd: ["python3", "-m", "dart_trainer.tiny_model", "--out", root, "--suite", suite, "--seed", String(config.run.seed), ...tinyFamilyArgs(root)],
      binds: [{ source: root, target: root, readOnly: false }, { source: suite, target: suite, readOnly: true }],
      // Files owned by the caller; HOME for the libraries' caches, which a uid without a passwd entry lacks.
      env: { HOME: "/tmp", HF_HOME: "/tmp/hf", HF_HUB_OFFLINE: "1" },
      user: typeof process.getuid === "function" ? `${process.getuid()}:${process.getgid!()}` : undefined
    })
    process.stderr.write(`compute: tiny models built in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`)
  })
