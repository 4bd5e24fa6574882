import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Schema, type Scope, Stream } from "effect"
import * as fs from "node:fs"
import * as http from "node:http"
import * as os from "node:os"
import * as path from "node:path"
import { Compute } from "../../src/compute/Compute.ts"
import { ownerGone } from "../../src/compute/DockerHost.ts"
import { kubeCompute } from "../../src/compute/kubernetes/KubeCompute.ts"
import { ANNOTATIONS, experimentSelector, LABELS, podName } from "../../src/compute/kubernetes/KubeObjects.ts"
import { defaults, ExperimentConfig } from "../../src/config/ExperimentConfig.ts"
import { dartAsync } from "../support/AdapterFixture.ts"
import { uniqueExp } from "../support/DockerEngine.ts"
import { freePortRun } from "../support/FreePort.ts"
import { applyObject, deleteKwokStandIns, ensureKube, haveKubeCluster, type KubeCluster, kwokStandIns, listObjects, NAMESPACE } from "../support/KubeCluster.ts"

// The Kubernetes adapter against a real control plane (scripts/setup-kubernetes.sh): kube-apiserver, scheduler and
// controller-manager v1.35 with two kwok nodes of two fake GPUs each. kwok pods run no containers: the tests point
// the pods' ports at local stand-in servers (kwok's ClusterPortForward, reached through the API's real portforward
// subresource), their exec at this machine (ClusterExec) and their log at a local file (ClusterLogs). What is tested is
// the API side for real: objects, labels, GPU requests, scheduling, Secrets, RBAC, cleanup.

const SECRET = `hf_kube_${Math.random().toString(36).slice(2)}`
let cluster: KubeCluster
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), "dart-kube-life-"))
const servers: Array<http.Server> = []
const standIns: Array<string> = []

beforeAll(async () => {
  if (!haveKubeCluster()) return
  cluster = ensureKube()
  // Pods of a test run that was killed (its process gone) would hold the fake GPUs.
  for (const p of await listObjects(cluster.api, "Pod", `${LABELS.managedBy}=dart`)) {
    const owner = p.metadata?.annotations?.[ANNOTATIONS.owner] ?? ""
    if (owner !== "kept" && ownerGone(owner)) await cluster.api.delete({ apiVersion: "v1", kind: "Pod", metadata: { name: p.metadata!.name!, namespace: NAMESPACE } }, undefined, undefined, 0)
  }
  for (let i = 0; i < 40 && (await listObjects(cluster.api, "Pod", `${LABELS.managedBy}=dart`)).some((p) => ownerGone(p.metadata?.annotations?.[ANNOTATIONS.owner] ?? "")); i++) await new Promise((r) => setTimeout(r, 500))
}, 600_000)
afterAll(async () => {
  for (const s of servers) s.close()
  if (cluster !== undefined) for (const n of standIns) await deleteKwokStandIns(cluster.api, n)
  fs.rmSync(scratch, { recursive: true, force: true })
})

/** Stand-ins for vLLM's server on `ports` (127.0.0.1): /health answers 200 and says which port. */
const standInServers = async (ports: ReadonlyArray<number>) => {
  for (const p of ports) {
    const s = http.createServer((q, r) => r.end(q.url === "/health" ? `ok ${p}` : "?"))
    servers.push(s)
    await new Promise<void>((resolve) => s.listen(p, "127.0.0.1", resolve))
  }
}

const makeConfig = (expId: string, port: number, kube: Record<string, unknown> = {}, vllm: Record<string, unknown> = {}) =>
  Schema.decodeUnknownSync(ExperimentConfig)({
    ...defaults,
    run: { ...defaults.run, exp_id: expId, runs_dir: path.join(scratch, "runs") },
    model: { ...defaults.model, base: "Qwen/Qwen2.5-0.5B-Instruct" },
    compute: {
      ...defaults.compute, backend: "kubernetes",
      vllm: { ...defaults.compute.vllm, replicas: 2, port, ...vllm },
      kubernetes: {
        ...defaults.compute.kubernetes, kubeconfig: cluster.admin, namespace: NAMESPACE, device: "cpu", gpus_per_replica: 1, start_timeout_s: 30,
        tolerations: [{ key: "kwok.x-k8s.io/node", operator: "Exists", effect: "NoSchedule" }], storage: { pvc: null, files_dir: path.join(scratch, "files", expId) }, ...kube
      }
    }
  })

const withCompute = <A, E>(config: ExperimentConfig, f: (c: Compute["Service"]) => Effect.Effect<A, E, Scope.Scope>) => {
  const saved = process.env.HF_TOKEN
  process.env.HF_TOKEN = SECRET
  return Effect.runPromiseExit(Effect.scoped(Effect.gen(function*() { return yield* f(yield* Compute) })).pipe(Effect.provide(kubeCompute(config, { runDir: path.join(scratch, "runs", config.run.exp_id), healthTimeout: "20 seconds" })))).finally(() => {
    if (saved === undefined) delete process.env.HF_TOKEN
    else process.env.HF_TOKEN = saved
  })
}

const objectsOf = async (expId: string) => [
  ...(await listObjects(cluster.api, "Pod", experimentSelector(expId))).filter((p) => p.metadata?.deletionTimestamp === undefined),
  ...await listObjects(cluster.api, "Secret", experimentSelector(expId)),
  ...await listObjects(cluster.api, "Service", experimentSelector(expId))
]
const waitGone = async (expId: string) => {
  for (let i = 0; i < 40 && (await objectsOf(expId)).length > 0; i++) await new Promise((r) => setTimeout(r, 500))
  return (await objectsOf(expId)).map((o) => `${o.kind} ${o.metadata?.name}`)
}
const cause = (exit: Exit.Exit<unknown, unknown>) => (Exit.isFailure(exit) ? String(exit.cause) : "")

describe.skipIf(!haveKubeCluster())("Kubernetes adapter against a real control plane", () => {
  it("four replicas, one GPU each over two nodes; labels; the Secret only by name; port-forward per pod; exec copies an adapter; logs followed; a deleted pod is lost; nothing left", async () => {
    const expId = uniqueExp("kube")
    const port = await freePortRun(4)
    const ports = [port, port + 1, port + 2, port + 3]
    await standInServers(ports)
    const names = ["vllm", "vllm-2", "vllm-3", "vllm-4"].map((s) => podName(expId, s))
    const logsFile = path.join(scratch, `${expId}.log`)
    // kwok serves a log file in the CRI format, as a kubelet keeps them.
    fs.writeFileSync(logsFile, `${new Date().toISOString()} stdout F INFO stand-in log line\n`)
    standIns.push(expId)
    for (const o of kwokStandIns(expId, names, { ports, execDir: scratch, logsFile })) await applyObject(cluster.api, o)
    const config = makeConfig(expId, port, {}, { replicas: 4 })
    const adapter = path.join(scratch, "adapter")
    fs.mkdirSync(path.join(adapter, "sub"), { recursive: true })
    fs.writeFileSync(path.join(adapter, "adapter_config.json"), '{"r": 8}')
    fs.writeFileSync(path.join(adapter, "sub", "weights.bin"), Buffer.alloc(300_000, 7))

    const exit = await withCompute(config, (compute) =>
      Effect.gen(function*() {
        expect(compute.backend).toBe("kubernetes")
        const probe = yield* compute.probeHost("kubernetes")
        expect(probe).toMatchObject({ engine: "Kubernetes v1.35.4, 4 nvidia.com/gpu on 2 schedulable node(s)", gpus: 4 })
        const replicas = yield* compute.vllm()
        expect(replicas.map((r) => r.spec.name)).toEqual(["vllm", "vllm-2", "vllm-3", "vllm-4"])
        // Each endpoint is a local port-forward to its own pod: the stand-in behind it says which port answered.
        for (const [i, r] of replicas.entries()) {
          expect(r.endpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/)
          expect(r.endpoint).not.toBe(`http://127.0.0.1:${ports[i]}`)
          expect(yield* Effect.promise(() => fetch(`${r.endpoint}/health`).then((x) => x.text()))).toBe(`ok ${ports[i]}`)
        }
        const pods = yield* Effect.promise(() => listObjects(cluster.api, "Pod", experimentSelector(expId)))
        expect(pods).toHaveLength(4)
        // One GPU each, two per node: the scheduler spread them over both fake nodes.
        expect(pods.map((p) => p.spec.containers[0].resources.limits["nvidia.com/gpu"])).toEqual(["1", "1", "1", "1"])
        const perNode = new Map<string, number>()
        for (const p of pods) perNode.set(p.spec.nodeName, (perNode.get(p.spec.nodeName) ?? 0) + 1)
        expect([...perNode.entries()].sort()).toEqual([["kwok-gpu-0", 2], ["kwok-gpu-1", 2]])
        for (const p of pods) {
          expect(p.metadata?.labels).toMatchObject({ [LABELS.managedBy]: "dart", [LABELS.exp]: expId, [LABELS.role]: "vllm" })
          expect(p.metadata?.annotations?.[ANNOTATIONS.owner]).toBe(`${os.hostname()}:${process.pid}`)
          expect(p.metadata?.managedFields?.some((m) => m.manager === "dart" && m.operation === "Apply")).toBe(true)
          expect(JSON.stringify(p)).not.toContain(SECRET)
          expect(p.spec.containers[0].env.find((e: { name: string }) => e.name === "HF_TOKEN")).toEqual({ name: "HF_TOKEN", valueFrom: { secretKeyRef: { name: `dart-${expId}-secrets`, key: "HF_TOKEN" } } })
        }
        const secrets = yield* Effect.promise(() => listObjects(cluster.api, "Secret", experimentSelector(expId)))
        expect(secrets.map((s) => Buffer.from(s.data!.HF_TOKEN!, "base64").toString())).toEqual([SECRET])

        // An adapter copied by exec + tar (kwok runs the exec here), checked file by file on the far side.
        const put = yield* compute.putAdapter(replicas[0]!, adapter, "DART-abc")
        expect(put.path).toBe(path.join(config.compute.kubernetes.storage.files_dir, "DART-abc"))
        expect(put.files.map((f) => f.path).sort()).toEqual(["adapter_config.json", "sub/weights.bin"])
        expect(fs.readFileSync(path.join(put.path, "sub", "weights.bin")).equals(Buffer.alloc(300_000, 7))).toBe(true)
        const back = yield* compute.getPath(replicas[0]!, put.path, path.join(scratch, "back"))
        expect(back.map((f) => f.sha256).sort()).toEqual(put.files.map((f) => f.sha256).sort())

        const status = yield* compute.status()
        expect(status.map((s) => [s.name, s.health, s.gpus]).sort()).toEqual([["vllm", "healthy", "1"], ["vllm-2", "healthy", "1"], ["vllm-3", "healthy", "1"], ["vllm-4", "healthy", "1"]])

        // A pod deleted behind dart's back: its replica is lost.
        const events = yield* Stream.runHead(compute.replicaEvents(replicas).pipe(Stream.filter((e) => e.kind === "lost"))).pipe(Effect.forkChild)
        yield* Effect.promise(() => cluster.api.delete({ apiVersion: "v1", kind: "Pod", metadata: { name: replicas[1]!.id, namespace: NAMESPACE } }))
        const lost = yield* Fiber.await(events).pipe(Effect.timeout("30 seconds"))
        expect(lost._tag === "Success" && lost.value._tag === "Some" ? lost.value.value : undefined).toMatchObject({ kind: "lost", service: "vllm-2" })
      }))
    expect(exit._tag, cause(exit)).toBe("Success")
    expect(await waitGone(expId)).toEqual([])
    const log = fs.readFileSync(path.join(scratch, "runs", expId, "logs", "kubernetes-vllm.log"), "utf8")
    expect(log).toContain("INFO stand-in log line")
    for (const f of fs.readdirSync(path.join(scratch, "runs", expId), { recursive: true, withFileTypes: true }).filter((e) => e.isFile())) {
      expect(fs.readFileSync(path.join(f.parentPath, f.name), "utf8")).not.toContain(SECRET)
    }
  }, 240_000)

  it("a pod beyond the GPUs is unschedulable with the scheduler's reason; nothing is left", async () => {
    const expId = uniqueExp("kubefull")
    const port = await freePortRun(5)
    const config = makeConfig(expId, port, { gpus_per_replica: 3, start_timeout_s: 15 }, { replicas: 1 })
    // The preflight says so before anything is applied: no node has three.
    const probe = await withCompute(config, (c) => c.probeHost("kubernetes"))
    expect(cause(probe)).toContain("no schedulable node the pods may use has 3 nvidia.com/gpu (the most on one node: 2; 4 on 2 node(s))")
    const exit = await withCompute(config, (c) => c.vllm())
    expect(Exit.isFailure(exit)).toBe(true)
    expect(cause(exit)).toMatch(/vllm \(pod dart-\S+-vllm\) still pending after 15 s \(compute.kubernetes.start_timeout_s\): the scheduler says 0\/2 nodes are available: 2 Insufficient nvidia\.com\/gpu/)
    expect(await waitGone(expId)).toEqual([])
  }, 120_000)

  it("a SIGKILLed controller's pods are swept by the next start; a living owner's and kept pods stay until `down`", async () => {
    const expId = uniqueExp("kubekill")
    const port = await freePortRun(2)
    const config = makeConfig(expId, port)
    // Pods as a killed dart left them: its owner (this host, a pid that does not run) in their annotation.
    const dead = `${os.hostname()}:${2 ** 22 + 4321}`
    const pod = (service: string, owner: string) => ({
      apiVersion: "v1", kind: "Pod",
      metadata: { name: podName(expId, service), namespace: NAMESPACE, labels: { [LABELS.managedBy]: "dart", [LABELS.exp]: expId, [LABELS.role]: "vllm", [LABELS.service]: service }, annotations: { [ANNOTATIONS.owner]: owner } },
      spec: { tolerations: [{ key: "kwok.x-k8s.io/node", operator: "Exists" }], containers: [{ name: "main", image: "stand-in" }] }
    })
    await applyObject(cluster.api, pod("vllm", dead))
    await applyObject(cluster.api, pod("vllm-2", `${os.hostname()}:${process.pid}`))
    await applyObject(cluster.api, pod("vllm-3", "kept"))
    const swept = await withCompute(config, (c) => c.removeOrphans())
    expect(swept).toEqual(Exit.succeed([`vllm (pod ${podName(expId, "vllm")})`]))
    const down = await withCompute(config, (c) => c.down())
    expect(Exit.isSuccess(down) ? [...down.value].sort() : cause(down)).toEqual([`vllm-2 (pod ${podName(expId, "vllm-2")})`, `vllm-3 (pod ${podName(expId, "vllm-3")})`])
    expect(await waitGone(expId)).toEqual([])
  }, 120_000)

  it("a dart process killed with SIGKILL mid-start: the next command removes its pods", async () => {
    const expId = uniqueExp("kubesig")
    const port = await freePortRun(2)
    const up = dartAsync([
      "compute", "up", "vllm", "--attach", "--config", "configs/smoke.json", "--exp-id", expId, "--override", `run.runs_dir=${path.join(scratch, "runs")}`,
      "--override", "model.base=Qwen/Qwen2.5-0.5B-Instruct", "--override", "compute.backend=kubernetes", "--override", `compute.vllm.port=${port}`,
      "--override", `compute.kubernetes.kubeconfig=${cluster.admin}`, "--override", `compute.kubernetes.namespace=${NAMESPACE}`, "--override", "compute.kubernetes.device=cpu",
      "--override", "compute.kubernetes.gpus_per_replica=1", "--override", 'compute.kubernetes.tolerations=[{"key":"kwok.x-k8s.io/node","operator":"Exists"}]'
    ], { HF_TOKEN: SECRET })
    let err = ""
    up.child.stderr.on("data", (c: Buffer) => (err += c.toString()))
    for (let i = 0; i < 120 && !err.includes("applied as pod"); i++) await new Promise((r) => setTimeout(r, 500))
    expect(err).toContain("applied as pod")
    up.child.kill("SIGKILL")
    await up.done
    expect((await listObjects(cluster.api, "Pod", experimentSelector(expId))).length).toBeGreaterThan(0)
    const config = makeConfig(expId, port)
    const swept = await withCompute(config, (c) => c.removeOrphans())
    expect(Exit.isSuccess(swept) ? swept.value.join(" ") : cause(swept)).toContain(`vllm (pod ${podName(expId, "vllm")})`)
    // The Secret it made went with its pods (a Secret is an orphan like them).
    expect(await waitGone(expId)).toEqual([])
  }, 120_000)

  it("RBAC: a user who may only read pods gets the missing verbs named by the preflight, and a refused create is a clear error", async () => {
    const expId = uniqueExp("kuberbac")
    const config = makeConfig(expId, 8000, { kubeconfig: cluster.limited })
    const probe = await withCompute(config, (c) => c.probeHost("kubernetes"))
    expect(cause(probe)).toMatch(/not allowed in namespace dart-test: create pods, delete pods, patch pods.*create pods\/portforward.*create secrets/)
    const start = await withCompute(config, (c) => c.vllm())
    expect(cause(start)).toMatch(/HTTP 403: secrets "dart-\S+-secrets" is forbidden: User "dart-limited" cannot (patch|create) resource "secrets"/)
    expect(cause(start)).not.toContain(SECRET)
    const missing = await withCompute(makeConfig(expId, 8000, { kubeconfig: path.join(scratch, "nope.kubeconfig") }), (c) => c.probeHost("kubernetes"))
    expect(cause(missing)).toContain(`kubeconfig ${path.join(scratch, "nope.kubeconfig")}: the file does not exist`)
    const context = await withCompute(makeConfig(expId, 8000, { context: "elsewhere" }), (c) => c.probeHost("kubernetes"))
    expect(cause(context)).toContain('no context "elsewhere" (it has dart-test)')
  }, 60_000)
})
