import { CoreV1Api, type KubeConfig, KubernetesObjectApi, PatchStrategy, setHeaderOptions, type V1Pod } from "@kubernetes/client-node"
import { type ChildProcess, execFile, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { promisify } from "node:util"

const exec = promisify(execFile)
// A Docker call that hangs would stall the stand-in kubelet and, with it, the run under test.
const run = (file: string, args: ReadonlyArray<string>) => exec(file, args, { timeout: 120_000 })

/**
 * A stand-in kubelet for the test cluster's kwok nodes, which run no containers: every pod of `labelSelector` that kwok
 * has made Running is run as a Docker container here (host networking, its image, command, arguments, env with the
 * Secret's values resolved as a kubelet would, hostPath volumes bound, the files folder `filesDir` bound at the same
 * path, as a ReadWriteMany volume would be), and kwok is told where the pod really is: its ports (ClusterPortForward to
 * 127.0.0.1, same numbers), its exec (ClusterExec, run here) and its log (ClusterLogs, the container's log in the CRI
 * format). A container that ends ends its pod: Succeeded or Failed with its exit code, as the pod's status.
 */
export const kwokKubelet = (kc: KubeConfig, o: { namespace: string; labelSelector: string; filesDir: string; logsDir: string }) => {
  const core = kc.makeApiClient(CoreV1Api)
  const objects = KubernetesObjectApi.makeApiClient(kc)
  const pods = new Map<string, { container: string; logs: ChildProcess; ended: boolean }>()
  const events: Array<string> = []
  fs.mkdirSync(o.logsDir, { recursive: true })
  const kwok = (kind: string, name: string, spec: Record<string, unknown>) =>
    objects.patch({ apiVersion: "kwok.x-k8s.io/v1alpha1", kind, metadata: { name: `kubelet-${name}` }, spec } as never, undefined, undefined, "dart-tests", true, PatchStrategy.ServerSideApply)
  const unkwok = async (name: string) => {
    for (const kind of ["ClusterPortForward", "ClusterExec", "ClusterLogs"]) await objects.delete({ apiVersion: "kwok.x-k8s.io/v1alpha1", kind, metadata: { name: `kubelet-${name}` } }).catch(() => undefined)
  }

  const start = async (pod: V1Pod) => {
    const name = pod.metadata!.name!
    const c = pod.spec!.containers[0]!
    const env: Array<string> = []
    for (const e of c.env ?? []) {
      if (e.value !== undefined) env.push("-e", `${e.name}=${e.value}`)
      else if (e.valueFrom?.secretKeyRef) {
        const s = await core.readNamespacedSecret({ name: e.valueFrom.secretKeyRef.name!, namespace: o.namespace })
        const v = s.data?.[e.valueFrom.secretKeyRef.key]
        if (v !== undefined) env.push("-e", `${e.name}=${Buffer.from(v, "base64").toString()}`)
      }
    }
    const binds: Array<string> = ["-v", `${o.filesDir}:${o.filesDir}`]
    for (const m of c.volumeMounts ?? []) {
      const v = pod.spec!.volumes?.find((x) => x.name === m.name)
      if (v?.hostPath) binds.push("-v", `${v.hostPath.path}:${m.mountPath}${m.readOnly ? ":ro" : ""}`)
    }
    const shm = pod.spec!.volumes?.find((v) => v.emptyDir?.medium === "Memory")?.emptyDir?.sizeLimit
    const container = `kwok-${name}`
    await run("docker", ["rm", "-f", container]).catch(() => undefined)
    await run("docker", [
      "run", "-d", "--name", container, "--network", "host", "--label", "dart-tests=kwok-kubelet", ...(shm === undefined ? [] : ["--shm-size", String(shm).replace(/([KMG])i$/, "$1").toLowerCase()]),
      ...binds, ...env, ...(c.command === undefined ? [] : ["--entrypoint", c.command[0]!]), c.image!, ...(c.command ?? []).slice(1), ...(c.args ?? [])
    ])
    const logFile = path.join(o.logsDir, `${name}.log`)
    const out = fs.createWriteStream(logFile, { flags: "a" })
    // docker logs -t: "TIMESTAMP text"; the CRI format kwok serves: "TIMESTAMP stream F text".
    const logs = spawn("docker", ["logs", "-f", "-t", container], { stdio: ["ignore", "pipe", "pipe"] })
    for (const [stream, source] of [["stdout", logs.stdout], ["stderr", logs.stderr]] as const) {
      let rest = ""
      source.on("data", (chunk: Buffer) => {
        const lines = (rest + chunk.toString()).split("\n")
        rest = lines.pop()!
        for (const l of lines) {
          const i = l.indexOf(" ")
          if (i > 0) out.write(`${l.slice(0, i)} ${stream} F ${l.slice(i + 1)}\n`)
        }
      })
    }
    pods.set(name, { container, logs, ended: false })
    const selector = { matchNamespaces: [o.namespace], matchNames: [name] }
    const ports = (c.ports ?? []).map((p) => p.containerPort)
    if (ports.length > 0) await kwok("ClusterPortForward", name, { selector, forwards: ports.map((p) => ({ ports: [p], target: { address: "127.0.0.1", port: p } })) })
    await kwok("ClusterExec", name, { selector, execs: [{ local: { workDir: "/" } }] })
    await kwok("ClusterLogs", name, { selector, logs: [{ logsFile: logFile, follow: true }] })
    events.push(`started ${name} (${c.image})`)
  }

  const finish = async (name: string) => {
    const p = pods.get(name)!
    const { stdout } = await run("docker", ["inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", p.container]).catch(() => ({ stdout: "gone 137" }))
    const [state, code] = stdout.trim().split(" ")
    if (state !== "exited" && state !== "dead" && state !== "gone") return
    p.ended = true
    await new Promise((r) => setTimeout(r, 500))
    const exitCode = Number(code)
    const now = new Date().toISOString()
    await core.patchNamespacedPodStatus({
      name, namespace: o.namespace,
      body: { status: { phase: exitCode === 0 ? "Succeeded" : "Failed", containerStatuses: [{ name: "main", image: "x", imageID: "", ready: false, restartCount: 0, state: { terminated: { exitCode, reason: exitCode === 0 ? "Completed" : "Error", startedAt: now as never, finishedAt: now as never } } }] } }
    }, setHeaderOptions("Content-Type", PatchStrategy.StrategicMergePatch)).catch((e) => events.push(`status of ${name}: ${(e as Error).message}`))
    events.push(`ended ${name} (exit ${exitCode})`)
  }

  const remove = async (name: string) => {
    const p = pods.get(name)!
    pods.delete(name)
    p.logs.kill()
    await run("docker", ["rm", "-f", p.container]).catch(() => undefined)
    await unkwok(name)
    events.push(`removed ${name}`)
  }

  let busy = false
  const tick = async () => {
    if (busy) return
    busy = true
    try {
      const list = (await core.listNamespacedPod({ namespace: o.namespace, labelSelector: o.labelSelector })).items
      const seen = new Set<string>()
      for (const pod of list) {
        const name = pod.metadata!.name!
        seen.add(name)
        if (pod.metadata?.deletionTimestamp !== undefined) {
          if (pods.has(name)) await remove(name)
          continue
        }
        if (pods.has(name)) {
          if (!pods.get(name)!.ended) await finish(name)
          continue
        }
        if (pod.status?.phase === "Running" && pod.spec?.nodeName !== undefined) await start(pod)
      }
      for (const name of [...pods.keys()]) if (!seen.has(name)) await remove(name)
    } catch (e) {
      events.push(`tick: ${(e as Error).message}`)
    } finally {
      busy = false
    }
  }
  const timer = setInterval(() => void tick(), 500)
  return {
    events,
    stop: async () => {
      clearInterval(timer)
      while (busy) await new Promise((r) => setTimeout(r, 100))
      for (const name of [...pods.keys()]) await remove(name)
    }
  }
}
