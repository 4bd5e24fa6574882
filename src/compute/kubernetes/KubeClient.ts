import { CoreV1Api, Exec, KubeConfig, type KubernetesObject, KubernetesObjectApi, PatchStrategy, PortForward, VersionApi } from "@kubernetes/client-node"
import { Data, Effect, Schedule, type Scope } from "effect"
import * as fs from "node:fs"
import * as net from "node:net"
import { PassThrough, type Readable, Writable } from "node:stream"
import { FIELD_MANAGER } from "./KubeObjects.ts"

/**
 * The Kubernetes API as dart uses it, over the official client (@kubernetes/client-node: kubeconfig with exec and
 * OIDC credentials, the WebSocket port-forward, exec and log streams): server-side apply, list and delete by label,
 * access reviews, and each failure as one message that names the object and what the API said.
 */

export class KubeError extends Data.TaggedError("KubeError")<{ readonly message: string; readonly status?: number }> {}

export interface KubeObject extends KubernetesObject {
  readonly spec?: any
  readonly status?: any
  readonly data?: Record<string, string>
}

export interface KubeTarget {
  readonly kubeconfig: string | null
  readonly context: string | null
  readonly namespace: string | null
}

/** The API's own words from a failed call: a Status object's message, else the body, else the error. */
const apiMessage = (e: unknown): { status?: number; message: string } => {
  const err = e as { code?: number; body?: unknown; message?: string; cause?: { message?: string; code?: string } }
  let body: unknown = err.body
  if (typeof body === "string") {
    try {
      body = JSON.parse(body)
    } catch {
      // a plain-text body (a proxy's page): shown as it is, shortened
    }
  }
  const fromBody = typeof body === "object" && body !== null && "message" in body ? String((body as { message: unknown }).message) : typeof body === "string" && body.trim() !== "" ? body.trim().slice(0, 300) : undefined
  const network = err.cause?.code ?? err.cause?.message
  return { ...(err.code === undefined ? {} : { status: err.code }), message: fromBody ?? (network !== undefined ? `${err.message ?? "request failed"} (${network})` : (err.message ?? String(e))) }
}

export const kubeClient = (target: KubeTarget) =>
  Effect.gen(function*() {
    const kc = new KubeConfig()
    const where = target.kubeconfig ?? process.env.KUBECONFIG ?? "~/.kube/config (or the in-cluster service account)"
    yield* Effect.try({
      try: () => {
        if (target.kubeconfig !== null) {
          if (!fs.existsSync(target.kubeconfig)) throw new Error("the file does not exist")
          kc.loadFromFile(target.kubeconfig)
        } else kc.loadFromDefault()
        if (target.context !== null) {
          const names = kc.getContexts().map((c) => c.name)
          if (!names.includes(target.context)) throw new Error(`no context "${target.context}" (it has ${names.join(", ") || "none"})`)
          kc.setCurrentContext(target.context)
        }
        if (kc.getCurrentCluster() === null) throw new Error("no cluster in the current context")
      },
      catch: (e) => new KubeError({ message: `kubeconfig ${where}: ${(e as Error).message}` })
    })
    const cluster = kc.getCurrentCluster()!
    const namespace = target.namespace ?? kc.getContextObject(kc.getCurrentContext())?.namespace ?? "default"
    const objects = KubernetesObjectApi.makeApiClient(kc)
    const core = kc.makeApiClient(CoreV1Api)
    const what = (o: { kind?: string; metadata?: { name?: string } }) => `${o.kind ?? "object"} ${namespace}/${o.metadata?.name ?? "?"}`
    // One request: 30 s at most (an API server that accepts and never answers is not waited on forever); the API's
    // message kept short (a 422 can carry pages of Go structs).
    const call = <A>(label: string, f: () => Promise<A>) =>
      Effect.tryPromise({
        try: f,
        catch: (e) => {
          const m = apiMessage(e)
          const text = m.message.length > 600 ? `${m.message.slice(0, 600)}…` : m.message
          return new KubeError({ message: `${label}: ${m.status === undefined ? "" : `HTTP ${m.status}: `}${text}`, ...(m.status === undefined ? {} : { status: m.status }) })
        }
      }).pipe(Effect.timeoutOrElse({ duration: "30 seconds", orElse: () => Effect.fail(new KubeError({ message: `${label}: no answer from ${cluster.server} within 30 s`, status: 408 })) }))
    // A busy API server's 429/5xx or a dropped connection is retried a few times; a refusal (4xx) is not.
    const retrying = <A>(e: Effect.Effect<A, KubeError>) =>
      e.pipe(Effect.retry({ while: (err) => err.status === undefined || err.status === 429 || err.status >= 500, schedule: Schedule.exponential("300 millis"), times: 3 }))

    const withNs = <T extends KubernetesObject>(o: T): T => ({ ...o, metadata: { ...o.metadata, namespace: o.metadata?.namespace ?? namespace } })

    return {
      server: cluster.server,
      namespace,
      context: kc.getCurrentContext(),
      /** The server's version (/version needs no permission beyond being authenticated). */
      version: retrying(call(`GET ${cluster.server}/version`, () => kc.makeApiClient(VersionApi).getCode())).pipe(Effect.map((v) => v.gitVersion)),
      /** Server-side apply as dart's field manager (forced: dart owns what it applies). */
      apply: <T extends KubernetesObject>(o: T) =>
        retrying(call(`apply ${what(o)}`, () => objects.patch(withNs(o), undefined, undefined, FIELD_MANAGER, true, PatchStrategy.ServerSideApply))),
      /** The same request as a server-side dry run: what the API would accept, nothing stored. */
      applyDryRun: <T extends KubernetesObject>(o: T) =>
        call(`apply (dry run) ${what(o)}`, () => objects.patch(withNs(o), undefined, "All", FIELD_MANAGER, true, PatchStrategy.ServerSideApply)),
      create: <T extends KubernetesObject>(o: T) => call(`create ${what(o)}`, () => objects.create(o.metadata?.namespace === undefined && o.kind !== "SelfSubjectAccessReview" ? withNs(o) : o)),
      read: (apiVersion: string, kind: string, name: string) =>
        retrying(call(`get ${kind} ${namespace}/${name}`, () => objects.read<KubeObject>({ apiVersion, kind, metadata: { name, namespace } }))).pipe(
          Effect.map((o): KubeObject | null => o),
          Effect.catchIf((e) => e.status === 404, () => Effect.succeed(null))
        ),
      list: (apiVersion: string, kind: string, labelSelector?: string, clusterWide = false) =>
        retrying(call(`list ${kind}${clusterWide ? "" : ` in ${namespace}`}${labelSelector === undefined ? "" : ` (${labelSelector})`}`, () =>
          objects.list<KubeObject>(apiVersion, kind, clusterWide ? undefined : namespace, undefined, undefined, undefined, undefined, labelSelector))).pipe(Effect.map((l) => l.items)),
      /** Deletes; an object already gone is not an error. */
      remove: (apiVersion: string, kind: string, name: string, gracePeriodSeconds = 0) =>
        retrying(call(`delete ${kind} ${namespace}/${name}`, () => objects.delete({ apiVersion, kind, metadata: { name, namespace } }, undefined, undefined, gracePeriodSeconds, undefined, "Background"))).pipe(
          Effect.asVoid,
          Effect.catchIf((e) => e.status === 404, () => Effect.void)
        ),
      /** May the credentials do this? (SelfSubjectAccessReview) */
      allowed: (a: { verb: string; resource: string; subresource?: string; group?: string }) =>
        call(`access review ${a.verb} ${a.resource}${a.subresource === undefined ? "" : `/${a.subresource}`}`, () =>
          objects.create<KubeObject>({
            apiVersion: "authorization.k8s.io/v1", kind: "SelfSubjectAccessReview",
            spec: { resourceAttributes: { namespace, verb: a.verb, resource: a.resource, group: a.group ?? "", ...(a.subresource === undefined ? {} : { subresource: a.subresource }) } }
          } as KubeObject)).pipe(Effect.map((r) => ({ allowed: r.status?.allowed === true, reason: (r.status?.reason as string | undefined) ?? "" }))),
      /** The container's log, whole (a finished task's output); "" when the node cannot serve it. */
      logText: (pod: string) =>
        call(`log of pod ${namespace}/${pod}`, () => core.readNamespacedPodLog({ name: pod, namespace, container: "main" })).pipe(
          Effect.map((t) => (typeof t === "string" ? t : "")),
          Effect.timeout("30 seconds"),
          Effect.catch(() => Effect.succeed(""))
        ),
      /**
       * Appends the container's log to `to` as it grows, for the caller's scope: read every 2 s with timestamps, each
       * line once (a streamed follow cannot be ended cleanly by this client). A log the node cannot serve is left.
       */
      followLog: (pod: string, to: fs.WriteStream) =>
        Effect.gen(function*() {
          let last = ""
          let atLast = 0
          let since: number | null = null
          const poll = Effect.promise(async () => {
            const asked = Date.now()
            const text = await core.readNamespacedPodLog({ name: pod, namespace, container: "main", timestamps: true, ...(since === null ? {} : { sinceSeconds: Math.ceil((asked - since) / 1000) + 5 }) }).then((t) => (typeof t === "string" ? t : null), () => null)
            if (text === null) return
            since = asked
            let skip = atLast
            for (const line of text.split("\n")) {
              const m = /^(\S+) (.*)$/.exec(line)
              if (m === null) continue
              const [, ts, rest] = m as unknown as [string, string, string]
              if (ts < last) continue
              if (ts === last && skip > 0) {
                skip--
                continue
              }
              if (ts === last) atLast++
              else (last = ts), (atLast = 1)
              to.write(`${rest}\n`)
            }
          })
          yield* Effect.forkScoped(Effect.repeat(poll, Schedule.spaced("2 seconds")))
          yield* Effect.addFinalizer(() => poll)
        }),
      /**
       * A local port forwarding to `port` of the pod for the caller's scope: every connection is its own stream over
       * the API's portforward subresource (one pod, never a Service's pick of one).
       */
      portForward: (pod: string, port: number): Effect.Effect<number, KubeError, Scope.Scope> =>
        Effect.acquireRelease(
          Effect.callback<{ server: net.Server; streams: Set<{ terminate: () => void }> }, KubeError>((resume) => {
            const pf = new PortForward(kc, true)
            // A refused forward (RBAC without `get` on pods/portforward, a node that cannot reach the pod) is said
            // once; the caller sees the connection close and goes on waiting or fails with its own message.
            let told = false
            // Every stream still open when the forward is released is ended then: an open WebSocket to the API
            // server keeps the process alive after the run.
            const streams = new Set<{ terminate: () => void }>()
            const server = net.createServer((socket) => {
              socket.on("error", () => socket.destroy())
              // The far side's refusal (nothing listens on the port) comes on the error stream: the connection ends.
              // (Its first frame, the port number, comes through empty.)
              const refused = new Writable({ write: (c: Buffer, _e, cb) => (c.length > 0 && socket.destroy(), cb()) })
              pf.portForward(namespace, pod, [port], socket, refused, socket).then(
                (ws) => {
                  const w = typeof ws === "function" ? ws() : ws
                  // The far side gone (the stream closed by the API server or the node, the pod deleted): so is the
                  // connection, or a kept-alive HTTP connection would send its next request into nothing.
                  if (w === null) return socket.destroy()
                  // The caller may have given up on the connection (a health probe's timeout) before the stream
                  // opened: its "close" has passed, so the stream ends now.
                  if (socket.destroyed) return w.terminate()
                  streams.add(w)
                  socket.on("close", () => w.close())
                  w.on("close", () => (streams.delete(w), socket.destroy()))
                  w.on("error", () => socket.destroy())
                },
                (e) => {
                  if (!told) (told = true), process.stderr.write(`warning: port-forward to pod ${namespace}/${pod}:${port}: ${apiMessage(e).message}\n`)
                  socket.destroy()
                }
              )
            })
            server.on("error", (e) => resume(Effect.fail(new KubeError({ message: `port-forward to ${namespace}/${pod}:${port}: ${e.message}` }))))
            server.listen(0, "127.0.0.1", () => resume(Effect.succeed({ server, streams })))
          }),
          ({ server, streams }) => Effect.sync(() => (server.close(), streams.forEach((w) => w.terminate())))
        ).pipe(Effect.map(({ server }) => (server.address() as net.AddressInfo).port)),
      /**
       * Runs `command` in the pod's container with `input` on its stdin; its stdout, stderr and exit code. The API's
       * exec status is the truth: a non-zero code comes as a Failure status with an ExitCode cause.
       */
      exec: (pod: string, command: ReadonlyArray<string>, input?: Readable) =>
        Effect.tryPromise({
          try: () =>
            new Promise<{ code: number; stdout: Buffer; stderr: string }>((resolve, reject) => {
              const out: Array<Buffer> = []
              let err = ""
              const stdout = new Writable({ write: (c, _e, cb) => (out.push(Buffer.from(c)), cb()) })
              const stderr = new Writable({ write: (c, _e, cb) => ((err += c.toString()), cb()) })
              let done = false
              new Exec(kc).exec(namespace, pod, "main", [...command], stdout, stderr, input ?? null, false, (status) => {
                done = true
                const cause = (status.details?.causes ?? []).find((c) => c.reason === "ExitCode")?.message
                // A kubelet says ExitCode; some (kwok's) only "exit status N" in the message.
                const code = cause ?? /exit status (\d+)/.exec(status.message ?? "")?.[1]
                resolve({ code: status.status === "Success" ? 0 : Number(code ?? 1), stdout: Buffer.concat(out), stderr: err || (status.status === "Success" ? "" : (status.message ?? "")) })
              }).then(
                // A stream that ends without the API's status did not say how the command ended: not a success.
                (ws) => ws.on("close", () => setTimeout(() => (done ? undefined : reject(new Error(`the exec stream closed without an exit status${err === "" ? "" : `: ${err.trim().slice(-300)}`}`))), 200)),
                reject
              )
            }),
          catch: (e) => new KubeError({ message: `exec in pod ${namespace}/${pod}: ${apiMessage(e).message}` })
        }).pipe(Effect.timeoutOrElse({ duration: "15 minutes", orElse: () => Effect.fail(new KubeError({ message: `exec in pod ${namespace}/${pod}: no end within 15 minutes` })) }))
    }
  })

export type KubeClient = Effect.Success<ReturnType<typeof kubeClient>>

/** A readable of `data` (a tar stream for exec's stdin). */
export const readableOf = (data: Buffer): Readable => {
  const p = new PassThrough()
  p.end(data)
  return p
}
