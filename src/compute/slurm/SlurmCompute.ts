import { Console, Duration, Effect, Layer, Option, Schedule, Schema, Scope, Stream } from "effect"
import { createHash, randomBytes } from "node:crypto"
import * as fs from "node:fs"
import * as fsp from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import type { ExperimentConfig } from "../../config/ExperimentConfig.ts"
import { isTinyModelPath, TINY_MANIFEST, tinyModelsCommand, tinyRoot } from "../../config/TinyModels.ts"
import type { ProbeConversation } from "../../domain/ChatLayout.ts"
import { chatTemplateCommand, parseProbeOutput, QUIET_HF_ENV } from "../ChatTemplateProbe.ts"
import { Compute, type ComputeOptions, type ReplicaEvent } from "../Compute.ts"
import { ComputeError } from "../ComputeError.ts"
import { classifierSpecs, KEPT_OWNER, specHash, trainerSpec, vllmSpec } from "../ContainerSpecs.ts"
import { ownerGone, ownerId, redactedEnv } from "../DockerHost.ts"
import type { Assignment } from "../Placement.ts"
import type { CopiedFile, RunningService, ServiceSpec, ServiceStatus } from "../ServiceSpec.ts"
import { sshTunnel } from "../Ssh.ts"
import { slurmCli } from "./SlurmCli.ts"
import { slurmRest } from "./SlurmRest.ts"
import { CLUSTER, jobComment, jobGpus, jobRequest, jobScript, launchCommand, parseComment, sharedPaths, slurmPlacement, taskScript } from "./SlurmJobs.ts"
import { finished, type SlurmError, type SlurmJob, type SlurmTransport } from "./SlurmTransport.ts"

/** Pending reasons that waiting does not clear: the request itself is wrong for the cluster, or held. */
const NEVER_STARTS = new Set([
  "PartitionTimeLimit", "PartitionNodeLimit", "PartitionConfig", "InvalidQOS", "InvalidAccount", "AccountNotAllowed", "QOSMaxWallDurationPerJobLimit",
  "BadConstraints", "JobHeldAdmin", "JobHeldUser", "DependencyNeverSatisfied", "QOSMaxGRESPerJob", "QOSMinGRES", "PartitionDown"
])

const Announce = Schema.fromJsonString(Schema.Struct({ job: Schema.String, node: Schema.String, host: Schema.String, port: Schema.Number }))
const decodeAnnounce = Schema.decodeUnknownOption(Announce)

const readText = (file: string) => Effect.promise(() => fsp.readFile(file, "utf8").then((t) => t, () => ""))
const tail = (text: string, n = 15) => text.trimEnd().split("\n").slice(-n).join("\n")

/** Files of a folder (or one file) with sha256s, paths relative to it. */
const listFiles = async (root: string): Promise<Array<CopiedFile>> => {
  const out: Array<CopiedFile> = []
  const walk = async (dir: string, rel: string): Promise<void> => {
    for (const e of (await fsp.readdir(dir, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
      const r = rel === "" ? e.name : `${rel}/${e.name}`
      if (e.isDirectory()) await walk(path.join(dir, e.name), r)
      else if (e.isFile()) {
        const data = await fsp.readFile(path.join(dir, e.name))
        out.push({ path: r, size: data.length, sha256: createHash("sha256").update(data).digest("hex") })
      }
    }
  }
  await walk(root, "")
  return out
}

/** Copy `from` (folder: its contents; file: itself) into `to`, replaced whole: written beside it and renamed. */
const copyWhole = async (from: string, to: string, mode?: number): Promise<Array<CopiedFile>> => {
  await fsp.mkdir(path.dirname(to), { recursive: true })
  const tmp = await fsp.mkdtemp(path.join(path.dirname(to), `.${path.basename(to)}.tmp-`))
  try {
    const st = await fsp.stat(from)
    if (st.isDirectory()) await fsp.cp(from, tmp, { recursive: true })
    else await fsp.copyFile(from, path.join(tmp, path.basename(from)))
    if (mode !== undefined) await fsp.chmod(tmp, mode)
    const files = await listFiles(tmp)
    await fsp.rm(to, { recursive: true, force: true })
    await fsp.rename(tmp, to)
    return files
  } catch (e) {
    await fsp.rm(tmp, { recursive: true, force: true })
    throw e
  }
}

/**
 * The Slurm adapter of the compute port: every service is a batch job (SlurmJobs.ts) submitted over slurmrestd or
 * the command line (SlurmRest.ts, SlurmCli.ts). A job announces its endpoint on the shared folder once it answers;
 * adapters and the trainer's files travel through that folder; every job carries the experiment, its role and its
 * owner in its comment, so `down`, `status` and the next run's orphan sweep find it.
 */
export const slurmCompute = (config: ExperimentConfig, options: ComputeOptions) =>
  Layer.effect(Compute, Effect.gen(function*() {
    const scope = yield* Effect.scope
    const s = config.compute.slurm
    const expId = config.run.exp_id
    const hfToken = redactedEnv("HF_TOKEN")
    // A service listening beyond loopback is open to everyone on the cluster's network: vLLM's API (LoRA loading
    // included) then asks for a key. The user's VLLM_API_KEY, else one made for this process; dart's clients read
    // VLLM_API_KEY, so it is set here for them (never printed or written).
    const loopback = ["127.0.0.1", "::1", "localhost"].includes(s.listen_host)
    if (!loopback && redactedEnv("VLLM_API_KEY") === undefined) process.env.VLLM_API_KEY = randomBytes(24).toString("base64url")
    const vllmKey = loopback ? undefined : redactedEnv("VLLM_API_KEY")
    const fail = (message: string) => new ComputeError({ host: CLUSTER, message })
    const fromSlurm = (e: SlurmError) => new ComputeError({ host: CLUSTER, message: `${e.via}: ${e.message}`, ...(e.cause === undefined ? {} : { cause: e.cause }) })

    const open: Effect.Effect<SlurmTransport, ComputeError, Scope.Scope> = s.transport === "cli"
      ? slurmCli({ ssh: s.ssh, identityFile: s.identity_file }).pipe(Effect.mapError(fromSlurm))
      : Effect.gen(function*() {
        const token = redactedEnv("SLURM_JWT")
        if (token === undefined) return yield* fail(`SLURM_JWT is not set: slurmrestd at ${s.rest_url} needs a token (scontrol token username=${s.user ?? os.userInfo().username})`)
        return yield* slurmRest({ url: s.rest_url, user: s.user ?? process.env.USER ?? os.userInfo().username, token, apiVersion: s.api_version }).pipe(Effect.mapError(fromSlurm))
      })
    const transport = yield* Effect.cached(open.pipe(Scope.provide(scope)))
    const t = <A>(f: (t: SlurmTransport) => Effect.Effect<A, SlurmError>) => Effect.flatMap(transport, (tr) => f(tr).pipe(Effect.mapError(fromSlurm)))

    const shared = s.shared_dir === null ? Effect.fail(fail("compute.slurm.shared_dir is not set: the controller and every node need one folder at the same path")) : Effect.succeed(s.shared_dir)
    const paths = Effect.map(shared, (d) => sharedPaths(d, expId))
    /**
     * Folders on the shared folder, made here. Run as root (a test cluster whose jobs run as another user), they take
     * the shared folder's owner, so the jobs can write into them.
     */
    const mkdirs = (...dirs: ReadonlyArray<string>) =>
      Effect.tryPromise({
        try: async () => {
          const owner = await fsp.stat(s.shared_dir!)
          for (const d of dirs) {
            await fsp.mkdir(d, { recursive: true })
            if (process.getuid?.() === 0 && owner.uid !== 0) {
              for (let p = d; p.startsWith(s.shared_dir!) && p !== s.shared_dir; p = path.dirname(p)) await fsp.chown(p, owner.uid, owner.gid)
            }
          }
        },
        catch: (e) => fail(`the shared folder ${s.shared_dir}: ${(e as Error).message}`)
      })

    /**
     * The cluster's queue, read at most every 2 s however many services wait on it (22.05's squeue --json lists every
     * user's jobs), with a short retry: one slow answer of a busy slurmctld is not a failed stage.
     */
    let queue: { at: number; jobs: Effect.Effect<ReadonlyArray<SlurmJob>, ComputeError> } | undefined
    const readQueue = t((tr) => tr.jobs()).pipe(Effect.retry({ times: 3, schedule: Schedule.spaced("2 seconds") }))
    const jobs = Effect.suspend(() => {
      if (queue === undefined || Date.now() - queue.at > 2000) queue = { at: Date.now(), jobs: Effect.runSync(Effect.cached(readQueue)) }
      return queue.jobs
    })
    /** The experiment's jobs that are still there, with their parsed comments: this user's only (another's same exp id is not ours). */
    const ourJobs = Effect.flatMap(transport, (tr) => Effect.map(jobs, (all) => all.flatMap((j) => {
      const c = parseComment(j.comment)
      // COMPLETING: already on its way out (cancelled a moment ago, say), nothing to cancel or reuse.
      return c !== null && c.expId === expId && !finished(j.state) && j.state !== "COMPLETING" && (j.user === "" || j.user === tr.user) ? [{ job: j, c }] : []
    })))
    /** Cancels each job, every one tried: the services cancelled, and the failures named at the end. */
    const cancelAll = (list: ReadonlyArray<{ job: SlurmJob; c: { service: string } }>) =>
      Effect.forEach(list, ({ job, c }) => Effect.result(Effect.as(cancel(job.id), `${c.service} (job ${job.id})`))).pipe(
        Effect.flatMap((results) => {
          const failed = results.flatMap((r) => (r._tag === "Failure" ? [r.failure.message] : []))
          const done = results.flatMap((r) => (r._tag === "Success" ? [r.success] : []))
          return failed.length === 0 ? Effect.succeed(done) : Effect.fail(fail(`cancelled ${done.length}, could not cancel ${failed.length}: ${failed.join("; ")}`))
        })
      )
    const cancel = (id: string) => t((tr) => tr.cancel(id)).pipe(Effect.tap(() => Effect.sync(() => (queue = undefined))))
    /** A job cancelled as its scope closes: a failure is said (the job would run on), never raised over the scope's own end. */
    const cancelAtEnd = (id: string, what: string) =>
      cancel(id).pipe(
        Effect.timeoutOrElse({ duration: "30 seconds", orElse: () => Effect.fail(fail("no answer within 30 s")) }),
        Effect.catch((e) => Console.error(`warning: could not cancel ${what} (Slurm job ${id}): ${e.message}; \`dart compute down\` cancels it`))
      )
    /** Submits; the next look at the queue is a fresh one (a snapshot from before would not show the job). */
    let submitted = false
    const submit = (request: Parameters<SlurmTransport["submit"]>[0]) =>
      Effect.sync(() => (submitted = true)).pipe(Effect.andThen(t((tr) => tr.submit(request))), Effect.tap(() => Effect.sync(() => (queue = undefined))))
    // Last, when the command ends: a job of this process that no scope cancelled (a submission whose answer was lost,
    // a timeout while slurmctld had accepted it) is cancelled too. Kept jobs (`dart compute up`) carry another owner.
    yield* Effect.addFinalizer(() =>
      !submitted ? Effect.void : Effect.flatMap(ourJobs, (jobs) => cancelAll(jobs.filter(({ c }) => c.owner === ownerId()))).pipe(Effect.timeout("30 seconds"), Effect.ignore))
    /** A job just submitted may not be listed for a moment (slurmctld answers from its last state): not "gone" yet. */
    const GRACE_MS = 15_000

    /** Specs as jobs run them: files on the shared folder, the trainer's data there, the HF cache a folder. */
    const hfHome = (p: ReturnType<typeof sharedPaths>) => (config.compute.hf_cache.startsWith("/") ? config.compute.hf_cache : path.join(p.root, "..", "hf-cache"))
    const adapt = (spec: ServiceSpec, p: ReturnType<typeof sharedPaths>): ServiceSpec => {
      const hf = hfHome(p)
      // Hub ids are read through the HF cache; a job fetches what is missing itself (no per-node fetch task here).
      const { HF_HUB_OFFLINE: _offline, ...env } = spec.env
      // No job shares another's GPUs: nothing sleeps, so no sleep mode and none of the dev-mode endpoints it needs.
      const { VLLM_SERVER_DEV_MODE: _dev, ...kept } = spec.hubModels.length > 0 ? env : spec.env
      const base = {
        ...spec,
        cmd: spec.cmd.filter((a) => a !== "--enable-sleep-mode"),
        env: { ...kept, HF_HOME: hf },
        secretEnv: { ...spec.secretEnv, ...(spec.role === "vllm" && vllmKey !== undefined ? { VLLM_API_KEY: vllmKey } : {}) },
        // The HF cache is a folder the containers of pyxis and apptainer must see too.
        binds: [...spec.binds, { source: hf, target: hf, readOnly: false }],
        volumes: [],
        hubModels: []
      }
      if (spec.role === "trainer") {
        const source = s.launcher === "venv" ? s.venv.trainer_source : null
        return { ...base, env: { ...base.env, ...(source === null ? {} : { PYTHONPATH: source }) }, cmd: spec.cmd.map((a, i) => (spec.cmd[i - 1] === "--data-dir" ? p.trainerData : a)), filesDir: p.trainerData }
      }
      return { ...base, filesDir: p.files(spec.name) }
    }
    const venvFor = (spec: ServiceSpec) => (s.launcher !== "venv" ? null : spec.role === "trainer" ? s.venv.trainer : s.venv.vllm)

    /** Copies the job's log into runs/{EXP_ID}/logs/slurm-{service}.log as it grows, for the scope. */
    const follow = (from: string, to: string) =>
      Effect.gen(function*() {
        yield* Effect.promise(() => fsp.mkdir(path.dirname(to), { recursive: true }))
        let offset = 0
        const copy = Effect.promise(async () => {
          const fh = await fsp.open(from, "r").catch(() => undefined)
          if (fh === undefined) return
          try {
            const { size } = await fh.stat()
            if (size <= offset) return
            const buf = Buffer.alloc(size - offset)
            await fh.read(buf, 0, buf.length, offset)
            offset = size
            await fsp.appendFile(to, buf)
          } finally {
            await fh.close()
          }
        })
        yield* Effect.forkIn(Effect.repeat(copy, Schedule.spaced("1 second")), yield* Effect.scope)
        yield* Effect.addFinalizer(() => copy)
      })

    const reachAt = (host: string, port: number) =>
      s.reach === "ssh"
        ? Effect.gen(function*() {
          const tr = yield* transport
          const conn = (tr as SlurmTransport & { readonly ssh?: import("ssh2").Client }).ssh
          if (conn === undefined) return yield* fail("compute.slurm.reach is ssh, but the transport has no SSH connection (set transport cli with compute.slurm.ssh)")
          const r = yield* sshTunnel(CLUSTER, conn, port, () => {}, host)
          return `${r.host}:${r.port}`
        })
        : Effect.succeed(`${host.includes(":") ? `[${host}]` : host}:${port}`)

    const healthTimeout = (spec: ServiceSpec) => Duration.fromInputUnsafe(options.healthTimeout ?? Duration.seconds(spec.health.startPeriodS + 60))

    /** Submit (or reuse) the job of one placed service and wait until it announces its endpoint. */
    const start = (a: Assignment, built: ServiceSpec, gpus: number): Effect.Effect<RunningService, ComputeError, Scope.Scope> =>
      Effect.gen(function*() {
        const p = yield* paths
        const spec = adapt(built, p)
        yield* mkdirs(p.logs, p.endpoints, spec.filesDir, hfHome(p))
        const hash = specHash(spec)
        const announce = path.join(p.endpoints, `${spec.name}.json`)
        const readAnnounce = Effect.map(readText(announce), (t) => Option.getOrUndefined(decodeAnnounce(t.trim())))
        const localLog = path.join(options.runDir, "logs", `${CLUSTER}-${spec.name}.log`)
        const endpointOf = (host: string) => Effect.map(reachAt(host, spec.port), (at) => (spec.protocol === "http" ? `http://${at}` : at))
        const addressOf = (node: string, host: string) => (s.listen_host === "0.0.0.0" || s.listen_host === "::" ? t((tr) => tr.nodeAddress(node)) : Effect.succeed(host))

        for (const { job, c } of (yield* ourJobs).filter((x) => x.c.service === spec.name)) {
          const at = yield* readAnnounce
          if (c.spec === hash && job.state === "RUNNING" && at !== undefined && at.job === job.id && (c.owner === KEPT_OWNER || !ownerGone(c.owner))) {
            return { spec, host: at.node, id: job.id, endpoint: yield* endpointOf(yield* addressOf(at.node, at.host)), reused: true }
          }
          yield* cancel(job.id).pipe(Effect.ignore)
        }
        yield* Effect.promise(() => fsp.rm(announce, { force: true }))
        const owner = options.keep ? KEPT_OWNER : ownerId()
        const script = jobScript(spec, s, { shared: p.root, announce, venv: venvFor(spec), expId })
        // Slurm expands %-patterns in the path: a literal % in the folder stays one.
        const logPattern = path.join(p.logs.replace(/%/g, "%%"), `${spec.name.replace(/%/g, "%%")}-%j.log`)
        const id = yield* Effect.acquireRelease(
          submit(jobRequest(config, spec, gpus, { shared: p.root, logFile: logPattern, script, comment: jobComment({ expId, role: spec.role, service: spec.name, spec: hash, owner }) })),
          (id, exit) => (options.keep && exit._tag === "Success" ? Effect.void : cancelAtEnd(id, spec.name))
        )
        const jobLog = path.join(p.logs, `${spec.name}-${id}.log`)
        yield* follow(jobLog, localLog)
        process.stderr.write(`compute: ${spec.name} submitted as Slurm job ${id} (${gpus === 0 ? "no GPU" : `${gpus} GPU${gpus === 1 ? "" : "s"}`}${a.gpus === null ? ", on CPU" : ""})\n`)
        const t0 = Date.now()
        let runningSince: number | null = null
        const limit = healthTimeout(spec)
        const failWith = (message: string) => Effect.flatMap(readText(jobLog), (text) => Effect.fail(fail(`${spec.name} (job ${id}): ${message}${text.trim() === "" ? "" : `; last log lines (${jobLog}):\n${tail(text)}`}`)))
        while (true) {
          const job = (yield* jobs).find((j) => j.id === id)
          if (job === undefined && Date.now() - t0 < GRACE_MS) {
            yield* Effect.sleep("1 second")
            continue
          }
          if (job === undefined || finished(job.state)) {
            return yield* failWith(job === undefined ? "the job is gone from the queue before it answered" : `the job ended ${job.state}${job.reason === null ? "" : ` (${job.reason})`} before it answered`)
          }
          if (job.state === "PENDING") {
            if (job.reason !== null && NEVER_STARTS.has(job.reason)) {
              yield* cancel(id).pipe(Effect.ignore)
              return yield* fail(`${spec.name} (job ${id}) cannot start: Slurm says ${job.reason} (check compute.slurm partition, account, qos, time_limit_minutes and the GPUs asked)`)
            }
            if (Date.now() - t0 > s.start_timeout_s * 1000) {
              yield* cancel(id).pipe(Effect.ignore)
              return yield* fail(`${spec.name} (job ${id}) still pending after ${s.start_timeout_s} s (compute.slurm.start_timeout_s): Slurm says ${job.reason ?? "no reason"}`)
            }
          } else {
            runningSince ??= Date.now()
            const at = yield* readAnnounce
            if (at !== undefined && at.job === id) {
              process.stderr.write(`compute: ${spec.name} answers on ${at.node} (job ${id}, ${((Date.now() - t0) / 1000).toFixed(0)} s)\n`)
              return { spec, host: at.node, id, endpoint: yield* endpointOf(yield* addressOf(at.node, at.host)), reused: false }
            }
            if (Date.now() - runningSince > Duration.toMillis(limit)) return yield* failWith(`did not answer within ${Duration.format(limit)} of starting`)
          }
          yield* Effect.sleep("1 second")
        }
      })

    /** A one-shot job (tiny models, the chat-template probe): its output and exit code. */
    const runTask = (what: string, argv: ReadonlyArray<string>, env: Readonly<Record<string, string>>, binds: ReadonlyArray<string>) =>
      Effect.scoped(Effect.gen(function*() {
        const p = yield* paths
        yield* mkdirs(p.logs, hfHome(p))
        const venv = s.launcher === "venv" ? s.venv.trainer : null
        if (s.launcher === "venv" && venv === null) return yield* fail(`compute.slurm.venv.trainer is not set: ${what} runs in dart's trainer environment`)
        const source = s.launcher === "venv" ? s.venv.trainer_source : null
        // In the trainer's image under pyxis or apptainer (dart_trainer lives there), with the folders it reads.
        const spec = {
          ...trainerSpec(config, { gpus: [] }, "127.0.0.1"), name: what, cmd: [...argv], secretEnv: hfToken === undefined ? {} : { HF_TOKEN: hfToken },
          binds: [...binds, hfHome(p)].map((b) => ({ source: b, target: b, readOnly: false }))
        }
        const command = s.launcher === "venv" ? argv : launchCommand(spec, s, p.root)
        const script = taskScript(command, { ...env, HF_HOME: hfHome(p), ...(source === null ? {} : { PYTHONPATH: source }) }, venv, expId, what)
        const logFile = path.join(p.logs.replace(/%/g, "%%"), `${what}-%j.log`)
        const request = jobRequest(config, spec, 0, { shared: p.root, logFile, script, comment: jobComment({ expId, role: "task", service: what, spec: "-", owner: ownerId() }) })
        const id = yield* Effect.acquireRelease(submit(request), (id) => cancelAtEnd(id, what))
        const log = path.join(p.logs, `${what}-${id}.log`)
        const t0 = Date.now()
        while (true) {
          const job = (yield* jobs).find((j) => j.id === id)
          const text = yield* readText(log)
          const code = /dart: exit (\d+)\s*$/.exec(text)
          if (code !== null) return { out: text, exitCode: Number(code[1]) }
          if (job === undefined && Date.now() - t0 < GRACE_MS) {
            yield* Effect.sleep("1 second")
            continue
          }
          if (job === undefined || finished(job.state)) {
            // The log may land a moment after the job leaves the queue (a shared folder's attribute cache).
            yield* Effect.sleep("2 seconds")
            const again = yield* readText(log)
            const c2 = /dart: exit (\d+)\s*$/.exec(again)
            if (c2 !== null) return { out: again, exitCode: Number(c2[1]) }
            return yield* fail(`${what} (job ${id}) ended ${job?.state ?? "(gone from the queue)"}${job?.reason ? ` (${job.reason})` : ""}: ${tail(again, 6)}`)
          }
          if (job.state === "PENDING" && Date.now() - t0 > s.start_timeout_s * 1000) return yield* fail(`${what} (job ${id}) still pending after ${s.start_timeout_s} s: Slurm says ${job.reason ?? "no reason"}`)
          yield* Effect.sleep("1 second")
        }
      }))

    const tiny = yield* Effect.cached(Effect.gen(function*() {
      const root = tinyRoot(config)
      if (fs.existsSync(path.join(root, TINY_MANIFEST))) return
      yield* Effect.promise(() => fsp.mkdir(root, { recursive: true }))
      process.stderr.write(`compute: building the tiny models into ${root} as a Slurm job\n`)
      const suite = path.resolve(config.datasets.suite_dir)
      const r = yield* runTask("tiny-models", tinyModelsCommand(config, root, suite), { HF_HUB_OFFLINE: "1" }, [root, suite])
      if (r.exitCode !== 0) return yield* fail(`building the tiny models failed (exit ${r.exitCode}): ${tail(r.out, 8)}`)
    }))
    const needsTiny = (spec: ServiceSpec) => spec.binds.some((b) => isTinyModelPath(config, b.source)) || isTinyModelPath(config, config.model.base)

    const everything = { vllm: true, classifiers: config.audit.classifiers.map((x) => x.name), trainer: true }
    const placement = Effect.succeed(slurmPlacement(config, everything))
    /** The placement, failing on the problems of what this call starts only (a trainer environment is no concern of vLLM's). */
    const placedFor = (role: "vllm" | "classifier" | "trainer") => {
      const p = slurmPlacement(config, { vllm: role === "vllm", classifiers: role === "classifier" ? everything.classifiers : [], trainer: role === "trainer" })
      return p.problems.length > 0 ? Effect.fail(fail(p.problems.join("; "))) : Effect.succeed(slurmPlacement(config, everything))
    }
    const g = jobGpus(config)
    const listen = s.listen_host
    const startPlaced = (a: Assignment, spec: ServiceSpec, gpus: number) => (needsTiny(spec) ? tiny : Effect.void).pipe(Effect.andThen(start(a, spec, gpus)))

    const statusRows = Effect.flatMap(ourJobs, (jobs) =>
      Effect.forEach(jobs, ({ job, c }) =>
        Effect.map(Effect.flatMap(paths, (p) => readText(path.join(p.endpoints, `${c.service}.json`))), (text): ServiceStatus => {
          const at = Option.getOrUndefined(decodeAnnounce(text.trim()))
          return {
            host: job.nodes || "(pending)", name: c.service, role: c.role, id: job.id, image: `slurm ${s.launcher}`, state: job.state.toLowerCase(),
            health: at !== undefined && at.job === job.id ? "healthy" : job.state === "PENDING" ? (job.reason ?? "pending") : "starting",
            gpus: "-", owner: c.owner, startedAt: ""
          }
        })))

    return Compute.of({
      backend: "slurm",
      hostNames: [CLUSTER],
      placement: () => placement,
      // Slurm picks the nodes: the cluster is one host to the plan.
      fleetHosts: () => Effect.succeed([{ name: CLUSTER, devices: null }]),
      vllm: () =>
        Effect.flatMap(placedFor("vllm"), (p) =>
          Effect.forEach(p.vllm, (a) => startPlaced(a, vllmSpec(config, { gpus: a.gpus === null ? [] : a.gpus === "all" ? "all" : a.gpus }, listen, hfToken, { name: a.name, port: a.port, gpus: a.gpus }), g.replica), { concurrency: "unbounded" })),
      classifiers: (names) =>
        Effect.flatMap(placedFor("classifier"), (p) =>
          Effect.forEach(p.classifiers.filter((a) => names === undefined || names.includes(a.name.replace(/^classifier-/, ""))), (a) => {
            const specs = classifierSpecs(config, { gpus: a.gpus === null ? [] : "all" }, listen, hfToken, { gpus: a.gpus, firstPort: p.classifiers[0]!.port })
            return startPlaced(a, specs.find((x) => x.name === a.name)!, g.classifier)
          }, { concurrency: "unbounded" })),
      trainer: () =>
        Effect.flatMap(placedFor("trainer"), (p) =>
          p.trainer === null ? Effect.fail(fail("no trainer in the placement")) : startPlaced(p.trainer, trainerSpec(config, { gpus: [] }, listen, hfToken, { gpus: p.trainer.gpus }), g.trainer)),
      putAdapter: (svc, localDir, name) =>
        Effect.gen(function*() {
          const target = path.join(svc.spec.filesDir, name)
          yield* mkdirs(svc.spec.filesDir)
          // Readable by the job's user whoever that is (a test cluster's jobs run as another user than the controller).
          const files = yield* Effect.tryPromise({ try: () => copyWhole(localDir, target, 0o755), catch: (e) => fail(`put ${localDir} into ${target}: ${(e as Error).message}`) })
          return { path: target, files }
        }),
      getPath: (_svc, remotePath, localDir) =>
        Effect.tryPromise({ try: () => copyWhole(remotePath, localDir), catch: (e) => fail(`get ${remotePath} into ${localDir}: ${(e as Error).message}`) }),
      replicaEvents: (services) => replicaEvents(jobs, services),
      reach: (host, port) => reachAt(host, port),
      probeHost: () => t((tr) => tr.version()).pipe(Effect.flatMap((v) => Effect.map(transport, (tr) => ({ address: tr.via, engine: `Slurm ${v.slurm} (${v.api})`, gpus: null })))),
      // The venv launcher's environments ("environment PATH", as the preflight asks): seen from here, on the shared folder.
      // An image of pyxis or apptainer is pulled on the node: nothing here can tell.
      imagePresent: (_host, image) =>
        Effect.gen(function*() {
          if (!image.startsWith("environment ")) return true
          const venv = image.slice("environment ".length)
          const ok = yield* Effect.promise(() => fsp.access(path.join(venv, "bin", "python3")).then(() => true, () => false))
          if (!ok) return yield* fail(`${venv}/bin/python3 does not exist (launcher venv: the environment must be on the shared folder, at the same path on every node)`)
          return true
        }),
      checkHubModels: () => Effect.succeed(null),
      probeChatTemplate: (conversations: ReadonlyArray<ProbeConversation>) =>
        Effect.gen(function*() {
          if (isTinyModelPath(config, config.model.base)) yield* tiny
          const model = config.model.base
          const r = yield* runTask("chat-template", chatTemplateCommand(model, conversations), { ...QUIET_HF_ENV, ...(model.startsWith("/") ? { HF_HUB_OFFLINE: "1" } : {}) }, model.startsWith("/") ? [model] : [])
          const probe = parseProbeOutput(r.out)
          if (probe === undefined) return yield* fail(`the chat-template probe said nothing readable (exit ${r.exitCode}): ${tail(r.out, 4).split("\n").join(" | ")}`)
          return probe
        }),
      status: () => statusRows,
      down: () => Effect.flatMap(ourJobs, cancelAll),
      removeOrphans: () => Effect.flatMap(ourJobs, (jobs) => cancelAll(jobs.filter(({ c }) => c.owner !== KEPT_OWNER && ownerGone(c.owner))))
    })
  }))

/** Every 5 s: a replica's job that left the queue or ended (cancelled, time limit, preempted, node failure) is lost. */
const replicaEvents = (jobs: Effect.Effect<ReadonlyArray<SlurmJob>, ComputeError>, services: ReadonlyArray<RunningService>): Stream.Stream<ReplicaEvent> => {
  const told = new Set<string>()
  const look = Effect.map(Effect.result(jobs), (r) => {
    if (r._tag === "Failure") return []
    const out: Array<ReplicaEvent> = []
    for (const s of services) {
      const j = r.success.find((x) => x.id === s.id)
      // Anything but running is lost to the dispatcher: ended, gone, suspended, or back in the queue after a requeue.
      if (told.has(s.id) || (j !== undefined && j.state === "RUNNING")) continue
      told.add(s.id)
      out.push({ kind: "lost", service: s.spec.name, host: s.host, endpoint: s.endpoint, detail: j === undefined ? `job ${s.id} left the queue` : `job ${s.id} ${j.state}${j.reason === null ? "" : ` (${j.reason})`}` })
    }
    return out
  })
  return Stream.fromEffectSchedule(look, Schedule.spaced("5 seconds")).pipe(Stream.flattenIterable)
}

