import type Docker from "dockerode"
import { Duration, Effect, Redacted, Schedule, Scope } from "effect"
import * as fs from "node:fs"
import * as fsp from "node:fs/promises"
import * as path from "node:path"
import type { Readable } from "node:stream"
import { StringDecoder } from "node:string_decoder"
import * as tar from "tar-stream"
import { openNoFollow, refuseLinks } from "../runs/RunLinks.ts"
import { packDirectory, unpackInto } from "./Archive.ts"
import { ComputeError, dockerMessage, localIoError } from "./ComputeError.ts"
import { containerName, createBody, KEPT_OWNER, LABEL, specHash } from "./ContainerSpecs.ts"
import { type DockerHost, ownerGone, ownerId } from "./DockerHost.ts"
import type { CopiedFile, RunningService, ServiceSpec, ServiceStatus } from "./ServiceSpec.ts"

/** The Docker implementation of the service backend: one engine reached through a `DockerHost`. */

const attempt = <A>(host: DockerHost, what: string, f: () => Promise<A>) =>
  Effect.tryPromise({ try: f, catch: (e) => new ComputeError({ host: host.name, message: `${what}: ${dockerMessage(e)}`, cause: e }) })

export interface HostReport {
  readonly host: string
  readonly engine: string
  readonly api: string
  readonly gpuRuntime: boolean
  readonly gpuUsable: boolean | null
  /** What `nvidia-smi` saw in a throwaway GPU container; empty when no GPU was asked for or no probe image was at hand. */
  readonly gpuDevices: ReadonlyArray<GpuDevice>
  /** Free bytes where the engine keeps images and containers; null when no image was at hand to measure it with. */
  readonly freeBytes: number | null
  readonly missingImages: ReadonlyArray<string>
}

/**
 * Reachable (within 15 s), engine version, NVIDIA support when GPUs are asked for (info, then a throwaway GPU
 * container, removed whatever happens), images present (or pullable, when `pull`), and free disk where the engine
 * keeps its data (at least `minFreeBytes`, default 10 GiB: a vLLM image alone is 7 GB).
 */
export const preflight = (
  host: DockerHost,
  options: {
    readonly images: ReadonlyArray<string>
    readonly gpus: boolean
    readonly pull: boolean
    readonly probeImage?: string
    readonly minFreeBytes?: number
    /** The oldest driver the probed image runs on (the trainer's: MIN_NVIDIA_DRIVER); unset = any. */
    readonly minDriver?: number
  }
) =>
  Effect.gen(function*() {
    const version: { Version: string; ApiVersion: string } = yield* attempt(host, `engine at ${host.address.kind === "unix" ? host.address.socket : `${host.address.host}:${host.address.port}`} does not answer`, () => host.docker.version()).pipe(
      Effect.timeoutOrElse({ duration: "15 seconds", orElse: () => Effect.fail(new ComputeError({ host: host.name, message: "engine did not answer within 15 s" })) })
    )
    const info = (yield* attempt(host, "info", () => host.docker.info())) as {
      Runtimes?: Record<string, unknown>
      DiscoveredDevices?: Array<{ Source?: string }>
      DockerRootDir?: string
    }
    const gpuRuntime = Object.keys(info.Runtimes ?? {}).includes("nvidia") || (info.DiscoveredDevices ?? []).some((d) => d.Source === "cdi")
    let gpuUsable: boolean | null = null
    let gpuDevices: ReadonlyArray<GpuDevice> = []
    if (options.gpus) {
      const noRuntime = "the engine lists no NVIDIA runtime or CDI devices: install nvidia-container-toolkit (and `nvidia-ctk runtime configure`), or set gpus to [] for a CPU host"
      const probe = options.probeImage ?? options.images[0]
      // The info alone cannot tell (the toolkit's hook serves GPU requests without a registered runtime, and CDI
      // devices are listed only from API 1.50): a container that runs nvidia-smi can. Its image must be on the
      // host; a missing one is pulled later, and the start still catches GPU errors.
      if (probe !== undefined && (yield* imagePresent(host, probe))) {
        gpuDevices = yield* gpuProbe(host, probe, options.minDriver).pipe(
          Effect.mapError((e) => (gpuRuntime ? e : new ComputeError({ host: host.name, message: `${e.message}; ${noRuntime}`, cause: e })))
        )
        gpuUsable = true
      } else if (!gpuRuntime) {
        return yield* new ComputeError({ host: host.name, message: `GPUs are configured (compute.hosts[].gpus) but ${noRuntime}` })
      }
    }
    const missing: Array<string> = []
    for (const image of options.images) {
      const present = yield* imagePresent(host, image)
      if (present) continue
      if (options.pull) yield* pullImage(host, image, () => {})
      else missing.push(image)
    }
    // The engine API reports no free space, so a throwaway container reads it from the engine's data folder.
    const probe = [options.probeImage, ...options.images].find((i) => i !== undefined && !missing.includes(i))
    let freeBytes: number | null = null
    if (probe !== undefined && info.DockerRootDir !== undefined && (yield* imagePresent(host, probe))) {
      freeBytes = yield* diskProbe(host, probe, info.DockerRootDir)
      const min = options.minFreeBytes ?? 10 * 2 ** 30
      if (freeBytes < min) {
        return yield* new ComputeError({
          host: host.name,
          message: `only ${(freeBytes / 2 ** 30).toFixed(1)} GiB free in ${info.DockerRootDir} (the engine's data); at least ${(min / 2 ** 30).toFixed(1)} GiB are needed for the images and containers`
        })
      }
    }
    return { host: host.name, engine: version.Version, api: version.ApiVersion, gpuRuntime, gpuUsable, gpuDevices, freeBytes, missingImages: missing } satisfies HostReport
  })

/** Release of a throwaway container (probe, task): removed with its anonymous volumes, whatever state it is in. */
const discard = (c: Docker.Container) => Effect.promise(() => c.remove({ force: true, v: true }).catch(() => undefined))

/** `df` of the engine's data folder in a throwaway container (no network, read-only mount), removed whatever happens. */
const diskProbe = (host: DockerHost, image: string, rootDir: string) =>
  Effect.acquireUseRelease(
    attempt(host, `disk probe with ${image}`, () => host.docker.createContainer({
      _query: {},
      _body: {
        Image: image, Entrypoint: ["df", "-Pk", "/engine-data"], Cmd: [], Tty: true,
        Labels: { [LABEL.managed]: "true", [LABEL.role]: "disk-probe", [LABEL.owner]: ownerId() },
        HostConfig: { NetworkMode: "none", Binds: [`${rootDir}:/engine-data:ro`] }
      }
    } as unknown as Docker.ContainerCreateOptions)),
    (c) =>
      Effect.gen(function*() {
        yield* attempt(host, "disk probe", () => c.start())
        yield* attempt(host, "disk probe", () => c.wait())
        // With a TTY the log is the plain output: a header, then "fs blocks used available …".
        const out = String(yield* attempt(host, "disk probe", () => c.logs({ stdout: true, stderr: true, follow: false }) as unknown as Promise<Buffer>))
        const available = Number(out.trim().split("\n").at(-1)?.trim().split(/\s+/)[3])
        if (!Number.isFinite(available)) return yield* new ComputeError({ host: host.name, message: `disk probe: unexpected df output ${JSON.stringify(out.slice(0, 200))}` })
        return available * 1024
      }),
    discard
  )

export interface GpuDevice {
  readonly index: number
  readonly name: string
  readonly driver: string
  /** Null where nvidia-smi says [N/A] (unified-memory systems, some vGPUs). */
  readonly memoryMiB: number | null
}

/**
 * The oldest NVIDIA driver the images run on: the trainer's torch is built for CUDA 13.2, whose runtime needs a
 * 580-series driver (older ones fail at the first CUDA call, and the trainer would have nothing but the CPU).
 */
export const MIN_NVIDIA_DRIVER = 580

const NVIDIA_SMI_QUERY = ["nvidia-smi", "--query-gpu=index,name,driver_version,memory.total", "--format=csv,noheader,nounits"]

/** The devices in `nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader,nounits` output, or why not. */
export const parseNvidiaSmi = (out: string): ReadonlyArray<GpuDevice> | string => {
  const lines = out.split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== "")
  if (lines.length === 0) return "nvidia-smi listed no GPU"
  const devices: Array<GpuDevice> = []
  for (const line of lines) {
    const f = line.split(",").map((x) => x.trim())
    const index = Number(f[0])
    const memory = f.at(-1)!
    const memoryMiB = /^\[?N\/A\]?$/i.test(memory) ? null : Number(memory)
    if (f.length < 4 || !Number.isInteger(index) || (memoryMiB !== null && !Number.isFinite(memoryMiB)) || !/^\d+(\.\d+)*$/.test(f.at(-2)!)) {
      return `unexpected nvidia-smi output ${JSON.stringify(line.slice(0, 200))}`
    }
    devices.push({ index, name: f.slice(1, -2).join(","), driver: f.at(-2)!, memoryMiB })
  }
  return devices
}

/** Why these devices' driver cannot run the images, or undefined when it can. */
export const driverProblem = (devices: ReadonlyArray<GpuDevice>, minDriver = MIN_NVIDIA_DRIVER): string | undefined => {
  const old = devices.find((d) => Number(d.driver.split(".")[0]) < minDriver)
  return old === undefined ? undefined
    : `NVIDIA driver ${old.driver} is older than ${minDriver}, the oldest that runs the trainer image (its torch is built for CUDA 13.2): upgrade the driver on this host`
}

/**
 * `nvidia-smi` in a throwaway container with a GPU request (removed whatever happens): it shows the toolkit
 * injects the driver, and which devices and driver there are. A GPU request the engine cannot serve fails at start.
 */
const gpuProbe = (host: DockerHost, image: string, minDriver: number | undefined) =>
  Effect.acquireUseRelease(
    attempt(host, `GPU probe with ${image}`, () => host.docker.createContainer({
      _query: {},
      _body: {
        Image: image, Entrypoint: NVIDIA_SMI_QUERY, Cmd: [], Tty: true,
        // utility: the toolkit mounts nvidia-smi only for this capability.
        Env: ["NVIDIA_DRIVER_CAPABILITIES=compute,utility"],
        Labels: { [LABEL.managed]: "true", [LABEL.role]: "gpu-probe", [LABEL.owner]: ownerId() },
        HostConfig: { NetworkMode: "none", DeviceRequests: [{ Driver: "nvidia", Count: -1, Capabilities: [["gpu"]] }] }
      }
    } as unknown as Docker.ContainerCreateOptions)),
    (c) =>
      Effect.gen(function*() {
        yield* attempt(host, "a container with a GPU request cannot start (is nvidia-container-toolkit installed?)", () => c.start())
        // A wedged driver can hang nvidia-smi: the probe gives up (and the release removes the container).
        const { StatusCode } = (yield* attempt(host, "GPU probe", () => c.wait()).pipe(
          Effect.timeoutOrElse({ duration: "120 seconds", orElse: () => Effect.fail(new ComputeError({ host: host.name, message: "nvidia-smi in a GPU container did not finish within 120 s (a hung driver?)" })) })
        )) as { StatusCode: number }
        const out = String(yield* attempt(host, "GPU probe", () => c.logs({ stdout: true, stderr: true, follow: false }) as unknown as Promise<Buffer>))
        if (StatusCode !== 0) {
          return yield* new ComputeError({ host: host.name, message: `nvidia-smi in a GPU container exited ${StatusCode}: ${out.trim().slice(0, 300) || "no output"} (the NVIDIA driver or toolkit is not working)` })
        }
        const devices = parseNvidiaSmi(out)
        if (typeof devices === "string") return yield* new ComputeError({ host: host.name, message: `GPU probe: ${devices}` })
        const problem = minDriver === undefined ? undefined : driverProblem(devices, minDriver)
        if (problem !== undefined) return yield* new ComputeError({ host: host.name, message: problem })
        return devices
      }),
    discard
  )

export const imagePresent = (host: DockerHost, image: string) =>
  Effect.tryPromise({ try: () => host.docker.getImage(image).inspect(), catch: (e) => e as { statusCode?: number } }).pipe(
    Effect.as(true),
    Effect.catch((e) => (e.statusCode === 404 ? Effect.succeed(false) : Effect.fail(new ComputeError({ host: host.name, message: `image ${image}: ${dockerMessage(e)}`, cause: e }))))
  )

/** Pull with progress. Registry errors arrive as events inside an HTTP 200 stream, so every event is checked. */
export const pullImage = (host: DockerHost, image: string, onProgress: (line: string) => void) =>
  Effect.callback<void, ComputeError>((resume) => {
    const fail = (m: string, cause?: unknown) =>
      resume(Effect.fail(new ComputeError({ host: host.name, message: `image ${image} cannot be pulled: ${m}`, ...(cause === undefined || cause === null ? {} : { cause }) })))
    host.docker.pull(image, {}, (err: unknown, stream?: NodeJS.ReadableStream) => {
      if (err || stream === undefined) return fail(dockerMessage(err), err)
      let error: string | undefined
      host.docker.modem.followProgress(stream, (e: Error | null) => {
        if (e) return fail(e.message, e)
        if (error !== undefined) return fail(error)
        resume(Effect.void)
      }, (event: { error?: string; errorDetail?: { message?: string }; status?: string; progress?: string; id?: string }) => {
        if (event.error !== undefined || event.errorDetail !== undefined) error ??= event.errorDetail?.message ?? event.error
        else if (event.status) onProgress(`${event.id ? `${event.id}: ` : ""}${event.status}${event.progress ? ` ${event.progress}` : ""}`)
      })
    })
  })

/** Build an image on the host from local files (tarred here, streamed there); the build log goes to `onLog`. */
export const buildImage = (host: DockerHost, options: { readonly context: string; readonly dockerfile: string; readonly tag: string; readonly include?: ReadonlyArray<string>; readonly buildArgs?: Record<string, string> }, onLog: (line: string) => void) =>
  Effect.gen(function*() {
    const pack = tar.pack()
    const roots = options.include ?? ["."]
    const adding = (async () => {
      const add = async (rel: string): Promise<void> => {
        const full = path.join(options.context, rel)
        const st = await fsp.lstat(full)
        if (st.isDirectory()) {
          if (path.basename(rel) === "node_modules" || path.basename(rel) === ".venv" || path.basename(rel) === "__pycache__" || path.basename(rel) === ".git") return
          for (const e of (await fsp.readdir(full)).sort()) await add(rel === "." ? e : `${rel}/${e}`)
        } else if (st.isFile()) {
          await new Promise<void>((res, rej) => pack.entry({ name: rel, size: st.size, mode: st.mode & 0o777 }, fs.readFileSync(full), (e) => (e ? rej(e) : res())))
        }
      }
      for (const r of roots) await add(r)
      pack.finalize()
    })()
    adding.catch((e) => pack.destroy(e as Error))
    const stream = yield* attempt(host, `build ${options.tag}`, () =>
      host.docker.buildImage(pack as unknown as NodeJS.ReadableStream, { t: options.tag, dockerfile: options.dockerfile, networkmode: "host", rm: true, forcerm: true, ...(options.buildArgs ? { buildargs: options.buildArgs } : {}) }))
    yield* Effect.callback<void, ComputeError>((resume) => {
      let error: string | undefined
      host.docker.modem.followProgress(stream, (e: Error | null) => {
        if (e || error !== undefined) return resume(Effect.fail(new ComputeError({ host: host.name, message: `build ${options.tag} failed: ${error ?? e?.message}`, ...(e ? { cause: e } : {}) })))
        resume(Effect.void)
      }, (event: { stream?: string; error?: string; errorDetail?: { message?: string } }) => {
        if (event.error !== undefined) error ??= event.errorDetail?.message ?? event.error
        else if (event.stream) onLog(event.stream.replace(/\n$/, ""))
      })
    })
    yield* Effect.tryPromise({ try: () => adding, catch: localIoError(host.name, options.context, "reading the build context") })
  })

interface ContainerSummary {
  readonly Id: string
  readonly Names: ReadonlyArray<string>
  readonly Image: string
  readonly State: string
  readonly Status: string
  readonly Labels: Readonly<Record<string, string>>
}

/** Every DART container of an experiment (or of all experiments) on the host. */
export const listServices = (host: DockerHost, expId?: string) =>
  attempt(host, "list containers", () =>
    host.docker.listContainers({ all: true, filters: { label: [`${LABEL.managed}=true`, ...(expId === undefined ? [] : [`${LABEL.exp}=${expId}`])] } })
  ).pipe(Effect.map((l) => l as unknown as ReadonlyArray<ContainerSummary>))

const removeContainer = (host: DockerHost, id: string) =>
  Effect.tryPromise({ try: () => host.docker.getContainer(id).remove({ force: true, v: true }), catch: (e) => e as { statusCode?: number } }).pipe(
    // Already gone (another process cleaned up): that is what we wanted.
    Effect.catch((e) => (e.statusCode === 404 || e.statusCode === 409 ? Effect.void : Effect.fail(new ComputeError({ host: host.name, message: `remove ${id.slice(0, 12)}: ${dockerMessage(e)}`, cause: e }))))
  )

/** Stop (SIGTERM, then SIGKILL after `graceS`) and remove; the anonymous volumes go with it. */
export const stopService = (host: DockerHost, id: string, graceS = 10) =>
  Effect.tryPromise({ try: () => host.docker.getContainer(id).stop({ t: graceS }), catch: (e) => e }).pipe(
    Effect.ignore,
    Effect.andThen(removeContainer(host, id))
  )

const PROBE_ROLES: ReadonlySet<string> = new Set(["disk-probe", "gpu-probe"])

/**
 * Containers whose owning process (on this machine) is gone, so a SIGKILLed run left them: those of
 * `expId`, and preflight probes of any experiment (they carry none, and a kill during preflight leaves one).
 */
export const removeOrphans = (host: DockerHost, expId: string) =>
  Effect.gen(function*() {
    const all = yield* listServices(host)
    const orphans = all.filter((c) =>
      (c.Labels[LABEL.exp] === expId || PROBE_ROLES.has(c.Labels[LABEL.role] ?? "")) &&
      c.Labels[LABEL.owner] !== KEPT_OWNER && ownerGone(c.Labels[LABEL.owner] ?? "")
    )
    yield* Effect.forEach(orphans, (c) => removeContainer(host, c.Id), { concurrency: 4 })
    return orphans.map((c) => c.Names[0]?.replace(/^\//, "") ?? c.Id)
  })

export const removeAll = (host: DockerHost, expId: string) =>
  Effect.gen(function*() {
    const all = yield* listServices(host, expId)
    yield* Effect.forEach(all, (c) => stopService(host, c.Id, 10), { concurrency: 4 })
    return all.map((c) => c.Names[0]?.replace(/^\//, "") ?? c.Id)
  })

export const serviceStatus = (host: DockerHost, expId?: string) =>
  Effect.gen(function*() {
    const all = yield* listServices(host, expId)
    return yield* Effect.forEach(all, (c) =>
      attempt(host, "inspect", () => host.docker.getContainer(c.Id).inspect()).pipe(Effect.map((i): ServiceStatus => ({
        host: host.name,
        name: c.Labels[LABEL.service] ?? "",
        role: c.Labels[LABEL.role] ?? "",
        id: c.Id.slice(0, 12),
        image: c.Image,
        state: i.State.Status,
        health: i.State.Health?.Status ?? "none",
        gpus: (i.HostConfig.DeviceRequests ?? []).length > 0 ? "gpu" : "cpu",
        owner: c.Labels[LABEL.owner] ?? "",
        startedAt: i.State.StartedAt
      }))))
  })

/** Streams the container's stdout+stderr (demultiplexed, timestamped) into `file` for the scope. */
const streamLogs = (host: DockerHost, container: Docker.Container, file: string) =>
  Effect.acquireRelease(
    Effect.gen(function*() {
      const handle = yield* Effect.tryPromise({
        // logs/ is inside the run: never appended to through a link planted there.
        try: () => fsp.mkdir(path.dirname(file), { recursive: true }).then(() => refuseLinks(file, { includeFile: true }))
          .then(() => openNoFollow(file, fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT, 0o644)),
        catch: localIoError(host.name, file, "opening the service log")
      })
      const out = handle.createWriteStream()
      // The log is a convenience: a write error (a full disk) must not crash the process.
      out.on("error", () => {})
      const stream = (yield* attempt(host, "logs", () => container.logs({ follow: true, stdout: true, stderr: true, timestamps: true }))) as unknown as Readable
      host.docker.modem.demuxStream(stream, out, out)
      stream.on("error", () => {})
      return { stream, out }
    }),
    ({ stream, out }) => Effect.callback<void>((resume) => {
      // Let the last lines arrive before closing the file.
      setTimeout(() => {
        stream.destroy()
        out.end(() => resume(Effect.void))
      }, 200)
    })
  )

const tailLogs = (file: string) =>
  Effect.promise(() => fsp.readFile(file, "utf8").then((t) => t.trimEnd().split("\n").slice(-15).join("\n"), () => ""))

/** Poll the health check until healthy; an exit or an unhealthy verdict ends the wait with the log's tail. */
const waitHealthy = (host: DockerHost, container: Docker.Container, spec: ServiceSpec, logFile: string, timeout: Duration.Duration) =>
  Effect.gen(function*() {
    const check = Effect.gen(function*() {
      const i = yield* attempt(host, "inspect", () => container.inspect())
      if (i.State.Status === "exited" || i.State.Status === "dead") {
        return yield* Effect.fail({ fatal: true as const, message: `${spec.name} exited with code ${i.State.ExitCode} before it was healthy` })
      }
      const health = i.State.Health?.Status
      if (health === "healthy") return
      if (health === "unhealthy") return yield* Effect.fail({ fatal: true as const, message: `${spec.name} is unhealthy: ${i.State.Health?.Log?.at(-1)?.Output?.trim() ?? ""}` })
      return yield* Effect.fail({ fatal: false as const, message: `${spec.name} is ${health ?? i.State.Status}` })
    })
    yield* check.pipe(
      Effect.retry({ schedule: Schedule.spaced("500 millis"), while: (e) => !(e instanceof ComputeError) && !e.fatal }),
      Effect.timeoutOrElse({ duration: timeout, orElse: () => Effect.fail({ fatal: true as const, message: `${spec.name} did not become healthy within ${Duration.format(timeout)}` }) }),
      Effect.catch((e) => e instanceof ComputeError ? Effect.fail(e) : tailLogs(logFile).pipe(
        Effect.flatMap((tail) => Effect.fail(new ComputeError({ host: host.name, message: `${e.message}${tail ? `; last log lines (${logFile}):\n${tail}` : ""}` })))
      ))
    )
  })

export interface StartOptions {
  readonly expId: string
  /** Folder for `{service}.log` (runs/{EXP_ID}/logs). */
  readonly logsDir: string
  /** Keep running when the scope closes (`dart compute up`); otherwise stop and remove it then. */
  readonly keep: boolean
  readonly healthTimeout: Duration.Input
  readonly pull: boolean
}

/**
 * Ensure the service runs on the host, healthy, for the scope: reuse a healthy container with the same spec hash,
 * otherwise replace it. A container this call created is stopped and removed when the scope closes (normal exit,
 * failure or Ctrl-C) unless `keep`; a reused one is left to whoever started it.
 */
export const startService = (host: DockerHost, spec: ServiceSpec, options: StartOptions): Effect.Effect<RunningService, ComputeError, Scope.Scope> =>
  Effect.gen(function*() {
    yield* removeOrphans(host, options.expId)
    const hash = specHash(spec)
    const logFile = path.join(options.logsDir, `${host.name}-${spec.name}.log`)
    const existing = (yield* listServices(host, options.expId)).filter((c) => c.Labels[LABEL.service] === spec.name)
    for (const c of existing) {
      if (c.Labels[LABEL.spec] === hash && c.State === "running") {
        const i = yield* attempt(host, "inspect", () => host.docker.getContainer(c.Id).inspect())
        if (i.State.Health?.Status === "healthy") {
          const reach = yield* host.reach(spec.port)
          return { spec, host: host.name, id: c.Id, endpoint: endpointOf(spec, reach), reused: true }
        }
      }
      yield* stopService(host, c.Id, 10)
    }
    if (!(yield* imagePresent(host, spec.image))) {
      if (!options.pull) return yield* new ComputeError({ host: host.name, message: `image ${spec.image} is not on the host (build it there, or pull it)` })
      let last = 0
      yield* pullImage(host, spec.image, (line) => {
        // Progress for a multi-GB image, at most a line a second.
        if (Date.now() - last > 1000) {
          last = Date.now()
          process.stderr.write(`pull ${spec.image} on ${host.name}: ${line}\n`)
        }
      })
    }
    const labels = {
      [LABEL.managed]: "true", [LABEL.exp]: options.expId, [LABEL.role]: spec.role, [LABEL.service]: spec.name,
      [LABEL.spec]: hash, [LABEL.owner]: options.keep ? KEPT_OWNER : ownerId()
    }
    // `_query` / `_body`: the modem would otherwise also put the whole body (secrets included) into the URL.
    const container = yield* Effect.acquireRelease(
      attempt(host, `create ${spec.name}`, () => host.docker.createContainer({ _query: { name: containerName(options.expId, spec) }, _body: createBody(spec, labels) } as unknown as Docker.ContainerCreateOptions)),
      // A host that died meanwhile (engine gone, SSH cut) must not hold the scope open: its leftovers are swept by the
      // next command that reaches it (removeOrphans).
      (c, exit) => (options.keep && exit._tag === "Success" ? Effect.void : stopService(host, c.id, 10).pipe(Effect.timeout("60 seconds"), Effect.ignore))
    )
    yield* attempt(host, `start ${spec.name}`, () => container.start())
    yield* streamLogs(host, container, logFile)
    yield* waitHealthy(host, container, spec, logFile, Duration.fromInputUnsafe(options.healthTimeout))
    const reach = yield* host.reach(spec.port)
    return { spec, host: host.name, id: container.id, endpoint: endpointOf(spec, reach), reused: false }
  })

const endpointOf = (spec: ServiceSpec, reach: { host: string; port: number }) => {
  const h = reach.host.includes(":") ? `[${reach.host}]` : reach.host
  return spec.protocol === "http" ? `http://${h}:${reach.port}` : `${h}:${reach.port}`
}

/** Put a local folder at `target` (absolute) inside the service's container; parents are created by the archive. */
export const putDirectory = (host: DockerHost, containerId: string, localDir: string, target: string) =>
  Effect.gen(function*() {
    const { stream, files } = yield* Effect.tryPromise({ try: () => packDirectory(localDir, target), catch: localIoError(host.name, localDir, "reading the folder") })
    yield* attempt(host, `put ${localDir} into ${target}`, () => host.docker.getContainer(containerId).putArchive(stream as unknown as NodeJS.ReadableStream, { path: "/" }))
    return { path: target, files: yield* Effect.tryPromise({ try: () => files, catch: localIoError(host.name, localDir, "reading the folder") }) }
  })

/** Copy `remotePath` (file or folder) out of the container into `localDir`, all or nothing, with sha256s. */
export const getPath = (host: DockerHost, containerId: string, remotePath: string, localDir: string) =>
  Effect.gen(function*() {
    const stream = (yield* attempt(host, `get ${remotePath}`, () => host.docker.getContainer(containerId).getArchive({ path: remotePath }))) as unknown as Readable
    return yield* Effect.tryPromise({ try: () => unpackInto(stream, localDir), catch: (e) => new ComputeError({ host: host.name, message: `get ${remotePath} into ${localDir}: ${(e as Error).message}`, cause: e }) })
  })

export type { CopiedFile }

export interface TaskSpec {
  readonly image: string
  readonly cmd: ReadonlyArray<string>
  readonly binds: ServiceSpec["binds"]
  readonly volumes?: ServiceSpec["volumes"]
  readonly env: Readonly<Record<string, string>>
  /** Only in the create body (like a service's), never in labels, logs or errors. */
  readonly secretEnv?: ServiceSpec["secretEnv"]
  /** "uid:gid" so files written into binds belong to the caller, not root. */
  readonly user: string | undefined
  /** "none" (default) or "host": a task that downloads (the hub fetch) needs the host's network. */
  readonly network?: "none" | "host"
  /** Called with each complete output line while the task runs (progress); the whole output is returned at the end too. */
  readonly onLine?: (line: string) => void
}

/**
 * A one-shot container (labelled with the experiment and this process as owner, so a killed run's leftover is an
 * orphan like any other), without network unless asked: runs to its end, removed whatever happens (interrupted
 * too); fails with its output's tail when it exits non-zero, unless `allowExit` holds that code.
 */
export const runTask = (host: DockerHost, expId: string, name: string, task: TaskSpec, allowExit: ReadonlyArray<number> = []) =>
  Effect.acquireUseRelease(
    attempt(host, `create ${name}`, () => host.docker.createContainer({
      _query: {},
      _body: {
        Image: task.image, Cmd: [...task.cmd], Tty: true, ...(task.user === undefined ? {} : { User: task.user }),
        Env: [
          ...Object.entries(task.env).map(([k, v]) => `${k}=${v}`),
          ...Object.entries(task.secretEnv ?? {}).map(([k, v]) => `${k}=${Redacted.value(v)}`)
        ],
        Labels: { [LABEL.managed]: "true", [LABEL.exp]: expId, [LABEL.role]: "task", [LABEL.service]: name, [LABEL.owner]: ownerId() },
        HostConfig: {
          NetworkMode: task.network ?? "none",
          Binds: [
            ...task.binds.map((b) => `${b.source}:${b.target}${b.readOnly ? ":ro" : ""}`),
            ...(task.volumes ?? []).map((v) => `${v.name}:${v.target}`)
          ]
        }
      }
    } as unknown as Docker.ContainerCreateOptions)),
    (c) =>
      Effect.gen(function*() {
        let attached: { text: string; ended: Promise<void>; stream: Readable } | undefined
        if (task.onLine !== undefined) {
          // Attach before start, so no early line is missed; with a TTY the stream is the plain output.
          const stream = (yield* attempt(host, `attach ${name}`, () => c.attach({ stream: true, stdout: true, stderr: true }))) as unknown as Readable
          const seen = { text: "", stream, ended: new Promise<void>((resolve) => stream.once("end", resolve).once("close", resolve).once("error", () => resolve())) }
          attached = seen
          // A character split across chunks is decoded whole.
          const decoder = new StringDecoder("utf8")
          let rest = ""
          stream.on("data", (chunk: Buffer) => {
            const text = decoder.write(chunk)
            seen.text += text
            const parts = (rest + text).split(/\r?\n/)
            rest = parts.pop()!
            for (const line of parts) task.onLine!(line)
          })
        }
        yield* attempt(host, `start ${name}`, () => c.start())
        const exit = (yield* attempt(host, name, () => c.wait())) as { StatusCode: number }
        const out = attached !== undefined
          ? yield* Effect.promise(async () => {
            // The stream ends with the container; a stuck one is given up after 5 s (the text so far is kept).
            let timer: NodeJS.Timeout | undefined
            await Promise.race([attached.ended, new Promise<void>((r) => (timer = setTimeout(r, 5000)))])
            clearTimeout(timer)
            attached.stream.destroy()
            return attached.text
          })
          : String(yield* attempt(host, `${name} logs`, () => c.logs({ stdout: true, stderr: true, follow: false }) as unknown as Promise<Buffer>))
        if (exit.StatusCode !== 0 && !allowExit.includes(exit.StatusCode)) {
          return yield* new ComputeError({ host: host.name, message: `${name} exited with ${exit.StatusCode}: ${out.trim().split("\n").slice(-8).join("\n")}` })
        }
        return { out, exitCode: exit.StatusCode }
      }),
    discard
  )
