import { Console, Duration, Effect, Layer, Schedule, Scope, Stream } from "effect"
import { randomBytes } from "node:crypto"
import * as fs from "node:fs"
import * as fsp from "node:fs/promises"
import * as net from "node:net"
import * as path from "node:path"
import type { ExperimentConfig } from "../../config/ExperimentConfig.ts"
import { isTinyModelPath, TINY_MANIFEST, tinyModelsCommand, tinyRoot } from "../../config/TinyModels.ts"
import type { ProbeConversation } from "../../domain/ChatLayout.ts"
import { packDirectory, unpackInto } from "../Archive.ts"
import { chatTemplateCommand, parseProbeOutput, QUIET_HF_ENV } from "../ChatTemplateProbe.ts"
import { Compute, type ComputeOptions, type ReplicaEvent } from "../Compute.ts"
import { ComputeError } from "../ComputeError.ts"
import { KEPT_OWNER, specHash, trainerSpec } from "../ContainerSpecs.ts"
import { ownerGone, ownerId, redactedEnv } from "../DockerHost.ts"
import type { Assignment } from "../Placement.ts"
import type { CopiedFile, RunningService, ServiceSpec, ServiceStatus } from "../ServiceSpec.ts"
import { type KubeClient, kubeClient, type KubeError, type KubeObject, readableOf } from "./KubeClient.ts"
import {
  ANNOTATIONS, assignmentSpec, CLUSTER, experimentSelector, kubeGpus, kubePlacement, kubeServiceSpec, LABELS, listensBeyondLoopback, NEVER_STARTS, neededAccess,
  nodePortObject, podName, podObject, secretName, secretObject, unschedulable
} from "./KubeObjects.ts"

const tail = (text: string, n = 15) => text.trimEnd().split("\n").slice(-n).join("\n")

/** A pod's state in a few words, from its status (for `dart compute status` and messages). */
const podState = (pod: KubeObject) => {
  const phase: string = pod.status?.phase ?? "Pending"
  const ready = (pod.status?.conditions ?? []).some((c: { type?: string; status?: string }) => c.type === "Ready" && c.status === "True")
  const waiting = (pod.status?.containerStatuses ?? [])[0]?.state?.waiting as { reason?: string; message?: string } | undefined
  const terminated = (pod.status?.containerStatuses ?? [])[0]?.state?.terminated as { exitCode?: number; reason?: string; message?: string } | undefined
  return { phase, ready, waiting, terminated, deleting: pod.metadata?.deletionTimestamp !== undefined, node: (pod.spec?.nodeName as string | undefined) ?? null }
}

/**
 * The Kubernetes adapter of the compute port: every service is a Pod (KubeObjects.ts), applied server-side as
 * "dart", labelled with the experiment, its role and its owner, reached through a port-forward of its own (or a
 * NodePort Service), its files copied in by exec + tar (or published once on a ReadWriteMany PVC), its secrets read
 * from a Secret by name. Pods are deleted when their scope closes; a killed controller's are swept by the next start.
 */
export const kubeCompute = (config: ExperimentConfig, options: ComputeOptions) =>
  Layer.effect(Compute, Effect.gen(function*() {
    const scope = yield* Effect.scope
    const k = config.compute.kubernetes
    const expId = config.run.exp_id
    const hfToken = redactedEnv("HF_TOKEN")
    // Pods listen on the pod network, open to every pod of the cluster: vLLM's API (LoRA loading included) asks for a key.
    const loopback = !listensBeyondLoopback(config)
    const generatedKey = !loopback && redactedEnv("VLLM_API_KEY") === undefined
    if (generatedKey) process.env.VLLM_API_KEY = randomBytes(24).toString("base64url")
    const vllmKey = loopback ? undefined : redactedEnv("VLLM_API_KEY")
    const fail = (message: string) => new ComputeError({ host: CLUSTER, message })
    const fromKube = (e: KubeError) => fail(e.message)

    const client = yield* Effect.cached(kubeClient(k).pipe(Effect.mapError(fromKube)))
    const api = <A>(f: (c: KubeClient) => Effect.Effect<A, KubeError>) => Effect.flatMap(client, (c) => f(c).pipe(Effect.mapError(fromKube)))
    const apiScoped = <A>(f: (c: KubeClient) => Effect.Effect<A, KubeError, Scope.Scope>) => Effect.flatMap(client, (c) => f(c).pipe(Effect.mapError(fromKube)))

    const pods = (selector = experimentSelector(expId)) => api((c) => c.list("v1", "Pod", selector))
    const removePod = (name: string) => api((c) => c.remove("v1", "Pod", name))
    /** Deletes a pod and waits until the API no longer has it (a new pod of the same name would be refused meanwhile). */
    const removeAndWait = (name: string) =>
      removePod(name).pipe(
        Effect.andThen(api((c) => c.read("v1", "Pod", name)).pipe(Effect.repeat({ until: (p) => p === null, schedule: Schedule.spaced("500 millis"), times: 120 }))),
        Effect.asVoid
      )
    const deleteAtEnd = (name: string, what: string) =>
      removePod(name).pipe(
        Effect.timeoutOrElse({ duration: "30 seconds", orElse: () => Effect.fail(fail("no answer within 30 s")) }),
        Effect.catch((e) => Console.error(`warning: could not delete ${what} (pod ${name}): ${e.message}; \`dart compute down\` deletes it`))
      )

    /** The Secret of this environment's secrets, applied once; deleted with the rest (a Secret of the user's is only read). */
    const secretValues = (): Record<string, string> => {
      const out: Record<string, string> = {}
      if (process.env.HF_TOKEN) out.HF_TOKEN = process.env.HF_TOKEN
      if (vllmKey !== undefined && process.env.VLLM_API_KEY) out.VLLM_API_KEY = process.env.VLLM_API_KEY
      return out
    }
    const secret = yield* Effect.cached(
      k.secret !== null
        ? api((c) => c.read("v1", "Secret", k.secret!)).pipe(Effect.flatMap((s) => {
          if (s === null) return Effect.fail(fail(`compute.kubernetes.secret: Secret ${k.secret} does not exist in the namespace`))
          // The servers ask for the key in the user's Secret: dart's clients send that one (unless VLLM_API_KEY is set here).
          if (generatedKey && s.data?.VLLM_API_KEY !== undefined) process.env.VLLM_API_KEY = Buffer.from(s.data.VLLM_API_KEY, "base64").toString()
          return Effect.succeed(k.secret!)
        }))
        : Effect.suspend(() => {
          const values = secretValues()
          if (Object.keys(values).length === 0) return Effect.succeed(null)
          return Effect.acquireRelease(
            // This process's: kept pods read it once, at their start; a later command sweeps it with the orphans.
            api((c) => c.apply(secretObject(config, values, ownerId()))).pipe(Effect.as(secretName(config))),
            (_s, exit) => (options.keep && exit._tag === "Success" ? Effect.void : api((c) => c.remove("v1", "Secret", secretName(config))).pipe(Effect.ignore))
          ).pipe(Scope.provide(scope))
        })
    )

    const filesRoot = k.storage.files_dir
    const adapt = (spec: ServiceSpec) => kubeServiceSpec(config, spec, vllmKey)
    const podFor = (spec: ServiceSpec, gpus: number, sec: string | null, owner: string, task = false) =>
      podObject(config, spec, { expId, owner, hash: specHash(spec), gpus, secret: sec, filesRoot, pvc: k.storage.pvc, task })

    /** A local address reaching the pod's port: its own port-forward, or the NodePort Service's port on the node. */
    const reachPod = (pod: string, spec: ServiceSpec, node: string | null): Effect.Effect<string, ComputeError, Scope.Scope> =>
      k.reach === "port-forward"
        ? apiScoped((c) => c.portForward(pod, spec.port)).pipe(Effect.map((p) => `127.0.0.1:${p}`))
        : Effect.gen(function*() {
          const name = podName(expId, spec.name)
          const svc = yield* Effect.acquireRelease(
            api((c) => c.apply(nodePortObject(config, spec, { expId, owner: options.keep ? KEPT_OWNER : ownerId() }))),
            (_s, exit) => (options.keep && exit._tag === "Success" ? Effect.void : api((c) => c.remove("v1", "Service", name)).pipe(Effect.ignore))
          )
          const nodePort = (svc as KubeObject).spec?.ports?.[0]?.nodePort as number | undefined
          if (nodePort === undefined) return yield* fail(`Service ${podName(expId, spec.name)} has no nodePort`)
          let address = k.node_address
          if (address === null && node !== null) {
            const n = yield* api((c) => c.read("v1", "Node", node))
            address = (n?.status?.addresses ?? []).find((a: { type?: string }) => a.type === "InternalIP")?.address ?? null
          }
          if (address === null) return yield* fail(`no address for node ${node ?? "?"} (set compute.kubernetes.node_address)`)
          return `${address.includes(":") ? `[${address}]` : address}:${nodePort}`
        })

    /** The service answers through the reach: /health for HTTP, a TCP connection for gRPC. */
    const answers = (spec: ServiceSpec, at: string) =>
      spec.protocol === "http"
        ? Effect.promise(() => fetch(`http://${at}/health`, { signal: AbortSignal.timeout(5000) }).then((r) => r.ok, () => false))
        : Effect.callback<boolean>((resume) => {
          const m = /^(.*):(\d+)$/.exec(at)!
          const s = net.connect({ host: m[1]!.replace(/^\[|\]$/g, ""), port: Number(m[2]) })
          // Through a port-forward the local side always accepts: only the server's own bytes say it is there. An
          // HTTP/2 client preface with an empty SETTINGS frame; a gRPC server answers with its SETTINGS.
          s.on("connect", () => s.write(Buffer.concat([Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])])))
          s.setTimeout(3000, () => (s.destroy(), resume(Effect.succeed(false))))
          s.on("error", () => resume(Effect.succeed(false)))
          s.on("close", () => resume(Effect.succeed(false)))
          s.on("data", () => (resume(Effect.succeed(true)), s.destroy()))
          return Effect.sync(() => s.destroy())
        })

    const logFile = (service: string) => path.join(options.runDir, "logs", `${CLUSTER}-${service}.log`)
    const followLog = (pod: string, service: string) =>
      Effect.gen(function*() {
        yield* Effect.promise(() => fsp.mkdir(path.join(options.runDir, "logs"), { recursive: true }))
        const out = yield* Effect.acquireRelease(Effect.sync(() => fs.createWriteStream(logFile(service), { flags: "a" })), (s) => Effect.sync(() => s.end()))
        yield* apiScoped((c) => c.followLog(pod, out))
      })

    const healthTimeout = (spec: ServiceSpec) => Duration.fromInputUnsafe(options.healthTimeout ?? Duration.seconds(spec.health.startPeriodS + 60))
    let applied = false

    /** Apply (or reuse) one service's pod, wait until the scheduler placed it, it is ready and it answers through its reach. */
    const start = (built: ServiceSpec, gpus: number): Effect.Effect<RunningService, ComputeError, Scope.Scope> =>
      Effect.gen(function*() {
        const spec = adapt(built)
        const name = podName(expId, spec.name)
        const hash = specHash(spec)
        const endpointOf = (at: string) => (spec.protocol === "http" ? `http://${at}` : at)
        const existing = yield* api((c) => c.read("v1", "Pod", name))
        if (existing !== null) {
          const st = podState(existing)
          const owner = existing.metadata?.annotations?.[ANNOTATIONS.owner] ?? ""
          // A server that asks for a key is reused only when it asks for this process's (its Secret's matches).
          const sameKey = vllmKey === undefined || spec.role !== "vllm" || (yield* api((c) => c.read("v1", "Secret", k.secret ?? secretName(config))).pipe(
            // No Secret left (swept with its command): a key of the user's own is trusted to be the one it was made with.
            Effect.map((s) => (s?.data?.VLLM_API_KEY === undefined ? !generatedKey : Buffer.from(s.data.VLLM_API_KEY, "base64").toString() === process.env.VLLM_API_KEY)),
            Effect.orElseSucceed(() => false)
          ))
          if (sameKey && existing.metadata?.annotations?.[ANNOTATIONS.spec] === hash && st.phase === "Running" && st.ready && !st.deleting && (owner === KEPT_OWNER || !ownerGone(owner))) {
            const at = yield* reachPod(name, spec, st.node)
            if (yield* answers(spec, at)) return { spec, host: st.node ?? CLUSTER, id: name, endpoint: endpointOf(at), reused: true }
          }
          yield* removeAndWait(name)
        }
        const sec = Object.keys(spec.secretEnv).length > 0 ? yield* secret : null
        if (Object.keys(spec.secretEnv).length > 0 && sec === null) return yield* fail(`${spec.name} needs ${Object.keys(spec.secretEnv).join(", ")} but none is set in this environment`)
        const owner = options.keep ? KEPT_OWNER : ownerId()
        yield* Effect.acquireRelease(
          Effect.sync(() => (applied = true)).pipe(Effect.andThen(api((c) => c.apply(podFor(spec, gpus, sec, owner))))),
          (_p, exit) => (options.keep && exit._tag === "Success" ? Effect.void : deleteAtEnd(name, spec.name))
        )
        process.stderr.write(`compute: ${spec.name} applied as pod ${name} (${gpus === 0 ? "no GPU" : `${gpus} ${k.gpu_resource}`})\n`)
        const t0 = Date.now()
        let told = ""
        let readySince: number | null = null
        let runningSince: number | null = null
        let following = false
        let at: string | null = null
        const limit = healthTimeout(spec)
        const failWith = (message: string) =>
          Effect.flatMap(api((c) => c.logText(name)), (text) => Effect.fail(fail(`${spec.name} (pod ${name}): ${message}${text.trim() === "" ? "" : `; last log lines:\n${tail(text)}`}`)))
        while (true) {
          const pod = yield* api((c) => c.read("v1", "Pod", name))
          if (pod === null) return yield* fail(`${spec.name} (pod ${name}) was deleted before it answered`)
          const st = podState(pod)
          if (st.phase === "Failed" || st.phase === "Succeeded" || st.terminated !== undefined) {
            return yield* failWith(`the pod ended (${st.phase}${st.terminated === undefined ? "" : `, exit ${st.terminated.exitCode ?? "?"}${st.terminated.reason === undefined ? "" : ` ${st.terminated.reason}`}`}) before it answered`)
          }
          if (st.waiting?.reason !== undefined && NEVER_STARTS.has(st.waiting.reason)) {
            return yield* fail(`${spec.name} (pod ${name}) cannot start: ${st.waiting.reason}${st.waiting.message === undefined ? "" : `: ${st.waiting.message}`}`)
          }
          const why = unschedulable(pod)
          if (st.phase === "Pending" && why !== null && why !== told) {
            told = why
            process.stderr.write(`compute: ${spec.name} waits to be scheduled: ${why}\n`)
          }
          if (st.phase === "Pending" && Date.now() - t0 > k.start_timeout_s * 1000) {
            return yield* fail(`${spec.name} (pod ${name}) still pending after ${k.start_timeout_s} s (compute.kubernetes.start_timeout_s)${why === null ? (st.waiting?.reason === undefined ? "" : `: ${st.waiting.reason}`) : `: the scheduler says ${why}`}`)
          }
          if (st.phase === "Running") {
            if (!following) {
              following = true
              yield* followLog(name, spec.name)
            }
            if (st.ready) {
              readySince ??= Date.now()
              at ??= yield* reachPod(name, spec, st.node)
              if (yield* answers(spec, at)) {
                process.stderr.write(`compute: ${spec.name} answers on node ${st.node ?? "?"} (pod ${name}, ${((Date.now() - t0) / 1000).toFixed(0)} s)\n`)
                return { spec, host: st.node ?? CLUSTER, id: name, endpoint: endpointOf(at), reused: false }
              }
            }
            runningSince ??= Date.now()
            if (Date.now() - (readySince ?? runningSince) > Duration.toMillis(limit)) {
              return yield* failWith(readySince === null ? `not ready within ${Duration.format(limit)} of running` : `ready but not answering through ${k.reach} within ${Duration.format(limit)}`)
            }
          }
          yield* Effect.sleep("1 second")
        }
      })

    /** A one-shot pod (tiny models, the chat-template probe): its log and exit code. */
    const runTask = (what: string, argv: ReadonlyArray<string>, env: Readonly<Record<string, string>>, binds: ReadonlyArray<string>) =>
      Effect.scoped(Effect.gen(function*() {
        const base = trainerSpec(config, { gpus: [] }, "127.0.0.1")
        const spec: ServiceSpec = {
          ...base, name: what, cmd: [...argv], env: { ...base.env, ...env }, volumes: [], hubModels: [],
          secretEnv: hfToken === undefined ? {} : { HF_TOKEN: hfToken },
          binds: binds.map((b) => ({ source: b, target: b, readOnly: false }))
        }
        const sec = hfToken === undefined ? null : yield* secret
        const name = podName(expId, what)
        yield* removeAndWait(name)
        yield* Effect.acquireRelease(
          Effect.sync(() => (applied = true)).pipe(Effect.andThen(api((c) => c.apply(podFor(spec, 0, sec, ownerId(), true))))),
          () => deleteAtEnd(name, what)
        )
        const t0 = Date.now()
        while (true) {
          const pod = yield* api((c) => c.read("v1", "Pod", name))
          if (pod === null) return yield* fail(`${what} (pod ${name}) was deleted before it ended`)
          const st = podState(pod)
          if (st.phase === "Succeeded" || st.phase === "Failed") {
            const out = yield* api((c) => c.logText(name))
            return { out, exitCode: st.terminated?.exitCode ?? (st.phase === "Succeeded" ? 0 : 1) }
          }
          if (st.waiting?.reason !== undefined && NEVER_STARTS.has(st.waiting.reason)) return yield* fail(`${what} (pod ${name}) cannot start: ${st.waiting.reason}${st.waiting.message === undefined ? "" : `: ${st.waiting.message}`}`)
          if (Date.now() - t0 > k.start_timeout_s * 1000) {
            const why = unschedulable(pod)
            return yield* fail(`${what} (pod ${name}) did not end within ${k.start_timeout_s} s${why === null ? "" : `: the scheduler says ${why}`}`)
          }
          yield* Effect.sleep("1 second")
        }
      }))

    const tiny = yield* Effect.cached(Effect.gen(function*() {
      const root = tinyRoot(config)
      if (fs.existsSync(path.join(root, TINY_MANIFEST))) return
      yield* Effect.promise(() => fsp.mkdir(root, { recursive: true }))
      process.stderr.write(`compute: building the tiny models into ${root} as a pod\n`)
      const suite = path.resolve(config.datasets.suite_dir)
      const r = yield* runTask("tiny-models", tinyModelsCommand(config, root, suite), { HF_HUB_OFFLINE: "1" }, [root, suite])
      if (r.exitCode !== 0) return yield* fail(`building the tiny models failed (exit ${r.exitCode}): ${tail(r.out, 8)}`)
    }))
    const needsTiny = (spec: ServiceSpec) => spec.binds.some((b) => isTinyModelPath(config, b.source)) || isTinyModelPath(config, config.model.base)

    // Last, when the command ends: a pod of this process that no scope deleted (an apply whose answer was lost) goes too.
    yield* Effect.addFinalizer(() =>
      !applied ? Effect.void : Effect.flatMap(pods(), (list) => Effect.forEach(list.filter((p) => p.metadata?.annotations?.[ANNOTATIONS.owner] === ownerId()), (p) => removePod(p.metadata!.name!).pipe(Effect.ignore))).pipe(Effect.timeout("30 seconds"), Effect.ignore))

    const everything = { vllm: true, classifiers: config.audit.classifiers.map((x) => x.name), trainer: true }
    const placedFor = (role: "vllm" | "classifier" | "trainer") => {
      const p = kubePlacement(config, { vllm: role === "vllm", classifiers: role === "classifier" ? everything.classifiers : [], trainer: role === "trainer" })
      return p.problems.length > 0 ? Effect.fail(fail(p.problems.join("; "))) : Effect.succeed(kubePlacement(config, everything))
    }
    const g = kubeGpus(config)
    const startPlaced = (spec: ServiceSpec, gpus: number) => (needsTiny(spec) ? tiny : Effect.void).pipe(Effect.andThen(start(spec, gpus)))

    /** Deletes every object of the experiment the filter keeps: pods, then Services and dart's Secret. */
    const removeAll = (keep: (o: KubeObject) => boolean) =>
      Effect.gen(function*() {
        const removed: Array<string> = []
        const failed: Array<string> = []
        for (const [apiVersion, kind] of [["v1", "Pod"], ["v1", "Service"], ["v1", "Secret"]] as const) {
          // Kinds the user may not list (Services without node-port, Secrets with a Secret of their own) hold none of dart's.
          const all = yield* Effect.flatMap(client, (c) => c.list(apiVersion, kind, experimentSelector(expId)).pipe(
            Effect.catchIf((e) => e.status === 403 && kind !== "Pod", () => Effect.succeed([] as ReadonlyArray<KubeObject>)),
            Effect.mapError(fromKube)
          ))
          const list = all.filter(keep)
          for (const o of list) {
            const r = yield* Effect.result(api((c) => c.remove(apiVersion, kind, o.metadata!.name!)))
            if (r._tag === "Success") removed.push(`${kind === "Pod" ? (o.metadata?.labels?.[LABELS.service] ?? o.metadata!.name!) : `${kind} ${o.metadata!.name!}`} (${kind === "Pod" ? `pod ${o.metadata!.name!}` : "deleted"})`)
            else failed.push(r.failure.message)
          }
        }
        if (failed.length > 0) return yield* fail(`deleted ${removed.length}, could not delete ${failed.length}: ${failed.join("; ")}`)
        return removed
      })

    const statusRows = Effect.map(pods(), (list) =>
      list.filter((p) => p.metadata?.labels?.[LABELS.role] !== "task").map((p): ServiceStatus => {
        const st = podState(p)
        return {
          host: st.node ?? "(pending)", name: p.metadata?.labels?.[LABELS.service] ?? p.metadata!.name!, role: p.metadata?.labels?.[LABELS.role] ?? "?", id: p.metadata!.name!,
          image: p.spec?.containers?.[0]?.image ?? "?", state: st.deleting ? "deleting" : st.phase.toLowerCase(),
          health: st.ready ? "healthy" : st.phase === "Pending" ? (unschedulable(p) ?? st.waiting?.reason ?? "pending") : (st.waiting?.reason ?? "starting"),
          gpus: String(p.spec?.containers?.[0]?.resources?.limits?.[k.gpu_resource] ?? "-"), owner: p.metadata?.annotations?.[ANNOTATIONS.owner] ?? "?",
          startedAt: p.status?.startTime ?? ""
        }
      }))

    /** Schedulable nodes' GPUs (the GPU resource's allocatable), those the pods' selector and tolerations allow. */
    const capacity = Effect.flatMap(client, (c) => c.list("v1", "Node", undefined, true).pipe(Effect.map((x): ReadonlyArray<KubeObject> | null => x), Effect.catchIf((e) => e.status === 403, () => Effect.succeed(null)), Effect.mapError(fromKube))).pipe(Effect.map((nodes) => {
      // Nodes may not be readable to a namespaced user: then the GPUs are not counted.
      if (nodes === null) return null
      let gpus = 0
      let most = 0
      let count = 0
      for (const n of nodes) {
        if (n.spec?.unschedulable === true) continue
        if (Object.entries(k.node_selector).some(([key, v]) => n.metadata?.labels?.[key] !== v)) continue
        const taints: Array<{ key?: string; value?: string; effect?: string }> = n.spec?.taints ?? []
        const tolerated = (t: { key?: string; value?: string; effect?: string }) =>
          t.effect === "PreferNoSchedule" || k.tolerations.some((x) => (x.key === undefined || x.key === t.key) && (x.operator === "Exists" || x.value === t.value) && (x.effect === undefined || x.effect === t.effect))
        if (!taints.every(tolerated)) continue
        const has = Number(n.status?.allocatable?.[k.gpu_resource] ?? 0)
        gpus += has
        most = Math.max(most, has)
        count++
      }
      return { gpus, most, nodes: count }
    }))

    return Compute.of({
      backend: "kubernetes",
      hostNames: [CLUSTER],
      placement: () => Effect.succeed(kubePlacement(config, everything)),
      fleetHosts: () => Effect.succeed([{ name: CLUSTER, devices: null }]),
      vllm: () => Effect.flatMap(placedFor("vllm"), (p) => Effect.forEach(p.vllm, (a) => startPlaced(assignmentSpec(config, a, hfToken), g.replica), { concurrency: "unbounded" })),
      classifiers: (names) =>
        Effect.flatMap(placedFor("classifier"), (p) =>
          Effect.forEach(
            p.classifiers.filter((a) => names === undefined || names.includes(a.name.replace(/^classifier-/, ""))),
            (a: Assignment) => startPlaced(assignmentSpec(config, a, hfToken, p.classifiers[0]!.port), g.classifier),
            { concurrency: "unbounded" }
          )),
      trainer: () =>
        Effect.flatMap(placedFor("trainer"), (p) => p.trainer === null ? Effect.fail(fail("no trainer in the placement")) : startPlaced(assignmentSpec(config, p.trainer, hfToken), g.trainer)),
      putAdapter: (svc, localDir, name) =>
        Effect.gen(function*() {
          const target = path.posix.join(svc.spec.filesDir, name)
          // Unpacked beside the target under a name of its own, then renamed: two puts at once (replicas on one
          // PVC) never mix their files, and the names are content-addressed, so a target already there is the same.
          const tmp = `${target}.dart-tmp-${randomBytes(6).toString("hex")}`
          const packed = yield* Effect.tryPromise({ try: async () => {
            // Entries under the temporary folder's own name only: no parent folder of the target is in the archive (as
            // root, tar would reset a parent's mode and owner, /tmp's included).
            const p = await packDirectory(localDir, path.posix.basename(tmp))
            const chunks: Array<Buffer> = []
            for await (const c of p.stream) chunks.push(Buffer.from(c as Buffer))
            return { data: Buffer.concat(chunks), files: await p.files }
          }, catch: (e) => fail(`pack ${localDir}: ${(e as Error).message}`) })
          const sums = (out: string) => new Map(out.split("\n").flatMap((l) => { const m = /^([0-9a-f]{64})\s+\.\/(.+)$/.exec(l.trim()); return m === null ? [] : [[m[2]!, m[1]!] as const] }))
          const intact = (out: string) => { const m = sums(out); return m.size === packed.files.length && packed.files.every((f) => m.get(f.path) === f.sha256) }
          // Only the archive's own files are summed: another replica's put of the same adapter on a shared volume may
          // have a temporary folder inside the target for a moment (see below), and it is not ours to read.
          const listed = packed.files.map((f) => `./${f.path}`)
          // On a PVC the adapter may be there already (another replica published it): checked, not sent again.
          if (k.storage.pvc !== null) {
            const there = yield* api((c) => c.exec(svc.id, ["sh", "-c", 'cd "$1" 2>/dev/null && shift && sha256sum -- "$@" 2>/dev/null || true', "sh", target, ...listed]))
            if (intact(there.stdout.toString())) return { path: target, files: packed.files }
          }
          // Exactly the archive's bytes are read (head -c): the end of stdin is not passed on by every kubelet (kwok's).
          const script = [
            'set -e; t="$1"; tmp="$3"; rm -rf "$tmp"; mkdir -p "$(dirname "$t")"; head -c "$2" | tar -x -f - -C "$(dirname "$t")"',
            // Two puts may both find no target: the second `mv` then moves its folder into the first's target, and
            // removes it again here.
            'if [ ! -e "$t" ]; then mv "$tmp" "$t" 2>/dev/null || true; fi',
            'rm -rf "$tmp" "$t/$(basename "$tmp")"',
            'cd "$t"; shift 3; sha256sum -- "$@"'
          ].join("; ")
          const r = yield* api((c) => c.exec(svc.id, ["sh", "-c", script, "sh", target, String(packed.data.length), tmp, ...listed], readableOf(packed.data)))
          if (r.code !== 0) return yield* fail(`copy ${localDir} into ${svc.spec.name} (pod ${svc.id}) at ${target}: exit ${r.code}: ${tail(r.stderr, 4)}`)
          if (!intact(r.stdout.toString())) return yield* fail(`copy ${localDir} into ${svc.spec.name} (pod ${svc.id}) at ${target}: the files there differ from what was sent`)
          return { path: target, files: packed.files }
        }),
      getPath: (svc, remotePath, localDir) =>
        Effect.gen(function*() {
          const r = yield* api((c) => c.exec(svc.id, ["sh", "-c", 'cd "$(dirname "$1")" && tar -c -f - "$(basename "$1")"', "sh", remotePath]))
          if (r.code !== 0) return yield* fail(`copy ${remotePath} out of ${svc.spec.name} (pod ${svc.id}): exit ${r.code}: ${tail(r.stderr, 4)}`)
          return yield* Effect.tryPromise({ try: (): Promise<ReadonlyArray<CopiedFile>> => unpackInto(readableOf(r.stdout), localDir), catch: (e) => fail(`unpack ${remotePath} into ${localDir}: ${(e as Error).message}`) })
        }),
      replicaEvents: (services) => replicaEvents(pods(), services),
      reach: (host, port) =>
        Effect.gen(function*() {
          const pod = (yield* pods()).find((p) => p.spec?.nodeName === host && p.spec?.containers?.[0]?.ports?.[0]?.containerPort === port)
          if (pod === undefined) return yield* fail(`no pod of ${expId} listens on port ${port} on node ${host}`)
          return yield* reachPod(pod.metadata!.name!, { port, protocol: "http" } as ServiceSpec, host)
        }),
      probeHost: () =>
        Effect.gen(function*() {
          const c = yield* client
          const version = yield* api((x) => x.version)
          const refused: Array<string> = []
          for (const a of neededAccess(config)) {
            const r = yield* api((x) => x.allowed(a))
            if (!r.allowed) refused.push(`${a.verb} ${a.resource}${a.subresource === undefined ? "" : `/${a.subresource}`}`)
          }
          if (refused.length > 0) return yield* fail(`${c.server} (context ${c.context}): not allowed in namespace ${c.namespace}: ${refused.join(", ")} (ask for a Role with these verbs; docs/kubernetes.md lists them)`)
          if (k.storage.pvc !== null) {
            const pvc = yield* api((x) => x.read("v1", "PersistentVolumeClaim", k.storage.pvc!))
            if (pvc === null) return yield* fail(`compute.kubernetes.storage.pvc: PersistentVolumeClaim ${k.storage.pvc} does not exist in namespace ${c.namespace}`)
            if (!(pvc.spec?.accessModes ?? []).includes("ReadWriteMany")) return yield* fail(`PersistentVolumeClaim ${k.storage.pvc} is not ReadWriteMany (${(pvc.spec?.accessModes ?? []).join(", ")}): every replica mounts it`)
          }
          const cap = yield* capacity
          // A pod asking for more GPUs than any node the pods may use has would wait forever: said now.
          const largest = Math.max(g.replica, config.audit.classifiers.length === 0 ? 0 : g.classifier, g.trainer)
          if (cap !== null && cap.most < largest) {
            return yield* fail(`no schedulable node the pods may use has ${largest} ${k.gpu_resource} (the most on one node: ${cap.most}; ${cap.gpus} on ${cap.nodes} node(s)): lower compute.kubernetes.gpus_per_replica or training.gpus, or check node_selector and tolerations`)
          }
          const engine = `Kubernetes ${version}${cap === null ? "" : `, ${cap.gpus} ${k.gpu_resource} on ${cap.nodes} schedulable node(s)`}`
          return { address: `${c.server} (context ${c.context}, namespace ${c.namespace})`, engine, gpus: cap?.gpus ?? null }
        }),
      // The kubelet pulls images; nothing here can tell before a pod asks.
      imagePresent: () => Effect.succeed(true),
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
      down: () => removeAll(() => true),
      removeOrphans: () =>
        removeAll((o) => {
          const owner = o.metadata?.annotations?.[ANNOTATIONS.owner] ?? KEPT_OWNER
          return owner !== KEPT_OWNER && ownerGone(owner)
        })
    })
  }))

/** Every 5 s: a replica's pod that is gone, deleted, or no longer running is lost. */
const replicaEvents = (list: Effect.Effect<ReadonlyArray<KubeObject>, ComputeError>, services: ReadonlyArray<RunningService>): Stream.Stream<ReplicaEvent> => {
  const told = new Set<string>()
  const look = Effect.map(Effect.result(list), (r) => {
    if (r._tag === "Failure") return []
    const out: Array<ReplicaEvent> = []
    for (const s of services) {
      const p = r.success.find((x) => x.metadata?.name === s.id)
      const st = p === undefined ? undefined : podState(p)
      if (told.has(s.id) || (st !== undefined && st.phase === "Running" && !st.deleting)) continue
      told.add(s.id)
      out.push({ kind: "lost", service: s.spec.name, host: s.host, endpoint: s.endpoint, detail: st === undefined ? `pod ${s.id} is gone` : `pod ${s.id} ${st.deleting ? "is being deleted" : st.phase}` })
    }
    return out
  })
  return Stream.fromEffectSchedule(look, Schedule.spaced("5 seconds")).pipe(Stream.flattenIterable)
}
