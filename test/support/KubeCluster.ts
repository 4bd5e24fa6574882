import { type KubernetesObject, KubeConfig, KubernetesObjectApi, PatchStrategy } from "@kubernetes/client-node"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"

/**
 * The Kubernetes test cluster (scripts/setup-kubernetes.sh): a real control plane on 127.0.0.1:6443 with two kwok
 * GPU nodes (kwok-gpu-0, kwok-gpu-1, nvidia.com/gpu: 2 each) and namespace dart-test. kwok pods run no containers:
 * a test points a pod's ports, exec and logs at local things with kwok's ClusterPortForward / ClusterExec /
 * ClusterLogs resources.
 */

export const KUBE_ROOT = process.env.DART_K8S_ROOT ?? "/var/tmp/dart-k8s"
export const NAMESPACE = "dart-test"
const script = path.resolve("scripts/setup-kubernetes.sh")

/** Root and the binaries built (the set-up builds them): else the Kubernetes tests skip. */
export const haveKubeCluster = (): boolean => {
  if (process.getuid?.() !== 0 || !fs.existsSync(script)) return false
  try {
    execFileSync(script, ["--status"], { stdio: "ignore" })
    return true
  } catch {
    // --status fails when the binaries are not built: the set-up was not run here.
    return false
  }
}

export interface KubeCluster {
  readonly admin: string
  readonly limited: string
  readonly namespace: string
  readonly api: KubernetesObjectApi
}

export const ensureKube = (): KubeCluster => {
  execFileSync(script, ["--start"], { stdio: ["ignore", "ignore", "inherit"], timeout: 600_000 })
  const admin = path.join(KUBE_ROOT, "admin.kubeconfig")
  const kc = new KubeConfig()
  kc.loadFromFile(admin)
  return { admin, limited: path.join(KUBE_ROOT, "limited.kubeconfig"), namespace: NAMESPACE, api: KubernetesObjectApi.makeApiClient(kc) }
}

export const applyObject = (api: KubernetesObjectApi, o: KubernetesObject) => api.patch(o, undefined, undefined, "dart-tests", true, PatchStrategy.ServerSideApply)

export const listObjects = async (api: KubernetesObjectApi, kind: string, labelSelector: string, apiVersion = "v1") =>
  (await api.list<KubernetesObject & { spec?: any; status?: any; data?: Record<string, string> }>(apiVersion, kind, NAMESPACE, undefined, undefined, undefined, undefined, labelSelector)).items

/** kwok's resources that make pods `names` real enough: their ports at 127.0.0.1 (same numbers), exec run here, a log file. */
export const kwokStandIns = (name: string, pods: ReadonlyArray<string>, o: { ports?: ReadonlyArray<number>; execDir?: string; logsFile?: string }): Array<KubernetesObject> => {
  const selector = { matchNamespaces: [NAMESPACE], matchNames: [...pods] }
  const meta = { name, labels: { "dart-tests": "kwok" } }
  return [
    ...(o.ports === undefined ? [] : [{ apiVersion: "kwok.x-k8s.io/v1alpha1", kind: "ClusterPortForward", metadata: meta, spec: { selector, forwards: o.ports.map((p) => ({ ports: [p], target: { address: "127.0.0.1", port: p } })) } }]),
    ...(o.execDir === undefined ? [] : [{ apiVersion: "kwok.x-k8s.io/v1alpha1", kind: "ClusterExec", metadata: meta, spec: { selector, execs: [{ local: { workDir: o.execDir } }] } }]),
    ...(o.logsFile === undefined ? [] : [{ apiVersion: "kwok.x-k8s.io/v1alpha1", kind: "ClusterLogs", metadata: meta, spec: { selector, logs: [{ logsFile: o.logsFile, follow: true }] } }])
  ] as unknown as Array<KubernetesObject>
}

export const deleteKwokStandIns = async (api: KubernetesObjectApi, name: string) => {
  for (const kind of ["ClusterPortForward", "ClusterExec", "ClusterLogs"]) {
    await api.delete({ apiVersion: "kwok.x-k8s.io/v1alpha1", kind, metadata: { name } }).catch(() => undefined)
  }
}
