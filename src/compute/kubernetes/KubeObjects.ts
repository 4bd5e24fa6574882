import { createHash } from "node:crypto"
import type { ExperimentConfig } from "../../config/ExperimentConfig.ts"
import { Redacted } from "effect"
import { classifierSpecs, HF_CACHE_TARGET, specHash, trainerSpec, vllmSpec } from "../ContainerSpecs.ts"
import { type Assignment, clusterGpus, type FleetPlacement, replicaName } from "../Placement.ts"
import type { ServiceSpec } from "../ServiceSpec.ts"

/**
 * Pure: the Kubernetes objects of an experiment's services (a Pod each, one Secret), their names and labels, the
 * placement as pods, and what the dry run prints. The adapter (KubeCompute.ts) applies them.
 */

type Config = ExperimentConfig

/** The cluster is one host to the plan: the scheduler picks the nodes. */
export const CLUSTER = "kubernetes"
export const FIELD_MANAGER = "dart"
export const LABELS = { managedBy: "app.kubernetes.io/managed-by", exp: "dart.dev/exp", role: "dart.dev/role", service: "dart.dev/service", owner: "dart.dev/owner" } as const
export const ANNOTATIONS = { spec: "dart.dev/spec", owner: "dart.dev/owner", exp: "dart.dev/exp" } as const

/** A label value (≤ 63 characters of [A-Za-z0-9_.-], alphanumeric at both ends); anything else is hashed. */
export const labelValue = (s: string): string =>
  /^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$/.test(s) ? s : `h-${createHash("sha256").update(s).digest("hex").slice(0, 40)}`

/** A DNS-1123 name from parts: lowercase, [a-z0-9-], ≤ 63, with a hash of the original when anything was changed. */
export const objectName = (...parts: ReadonlyArray<string>): string => {
  const raw = parts.join("-")
  const clean = raw.toLowerCase().replace(/[^a-z0-9-]+/g, "-").replace(/^-+|-+$/g, "").replace(/-{2,}/g, "-")
  if (clean === raw && clean.length <= 63) return clean
  const h = createHash("sha256").update(raw).digest("hex").slice(0, 8)
  return `${clean.slice(0, 54).replace(/-+$/, "")}-${h}`
}

export const podName = (expId: string, service: string) => objectName("dart", expId, service)
export const secretName = (config: Config) => config.compute.kubernetes.secret ?? objectName("dart", config.run.exp_id, "secrets")

/** `dart.dev/exp=…` (and the managed-by label): every object of the experiment. */
export const experimentSelector = (expId: string) => `${LABELS.managedBy}=dart,${LABELS.exp}=${labelValue(expId)}`

export const kubeGpus = (config: Config) => clusterGpus(config, config.compute.kubernetes)

const devices = (config: Config, count: number) => (config.compute.kubernetes.device === "cpu" ? null : Array.from({ length: Math.max(count, 1) }, (_, i) => String(i)))

/** Local paths a service reads (a model given as a folder): pods see them only as hostPath volumes on a one-node cluster. */
const localBinds = (spec: ServiceSpec) => spec.binds.filter((b) => b.target !== HF_CACHE_TARGET)

/**
 * The scheduler decides the nodes, dart the pods: `compute.vllm.replicas` replicas (1 when unset) of
 * `gpus_per_replica` GPUs, a pod per classifier, the trainer with `training.gpus`. No pod shares another's GPUs, so
 * nothing sleeps.
 */
export const kubePlacement = (
  config: Config,
  wants: { readonly vllm: boolean; readonly classifiers: ReadonlyArray<string>; readonly trainer: boolean }
): FleetPlacement => {
  const v = config.compute.vllm
  const k = config.compute.kubernetes
  const g = kubeGpus(config)
  const problems: Array<string> = []
  const count = wants.vllm ? (v.replicas ?? 1) : 0
  const vllm: Array<Assignment> = Array.from({ length: count }, (_, r) => ({ role: "vllm", name: replicaName(r), host: CLUSTER, gpus: devices(config, g.replica), port: v.port + r }))
  const base = v.port + (v.replicas ?? 1)
  const classifiers: Array<Assignment> = wants.classifiers.map((name, i) => ({ role: "classifier", name: `classifier-${name}`, host: CLUSTER, gpus: devices(config, g.classifier), port: base + i }))
  const trainer: Assignment | null = wants.trainer ? { role: "trainer", name: "trainer", host: CLUSTER, gpus: devices(config, g.trainer), port: config.compute.trainer.port } : null
  const all = [...vllm, ...classifiers, ...(trainer === null ? [] : [trainer])]
  if (all.length > 0 && !k.host_paths) {
    const models = [...(wants.vllm || wants.trainer ? [config.model.base] : []), ...config.audit.classifiers.filter((c) => wants.classifiers.includes(c.name)).map((c) => c.model)]
    const local = models.filter((m) => m.startsWith("/"))
    if (local.length > 0) {
      problems.push(`${local.join(", ")}: a model on this machine's disk, which pods do not see; give a hub id, or set compute.kubernetes.host_paths on a one-node cluster whose node is this machine`)
    }
  }
  const runs = all.map((a) => `${a.name} (${describePod(config, a)}, port ${a.port})`)
  return {
    vllm, classifiers, trainer, sharing: [], problems,
    hosts: [{ name: `${CLUSTER} ${k.namespace ?? "(the context's namespace)"}`, devices: null, runs, idle: runs.length > 0 ? null : "nothing to start" }]
  }
}

const gpusOf = (config: Config, a: Assignment) => {
  const g = kubeGpus(config)
  return a.role === "vllm" ? g.replica : a.role === "classifier" ? g.classifier : g.trainer
}

export const describePod = (config: Config, a: Assignment): string => {
  const n = gpusOf(config, a)
  return `${n === 0 ? "no GPU" : `${n} ${config.compute.kubernetes.gpu_resource}`}${config.compute.kubernetes.device === "cpu" ? ", on CPU" : ""}`
}

export interface PodOptions {
  readonly expId: string
  readonly owner: string
  readonly hash: string
  /** GPUs the pod asks for (the GPU resource's limit). */
  readonly gpus: number
  readonly secret: string | null
  /** Where the files (adapters, the trainer's data) live in the pod, and the PVC behind it (null: the pod's own disk). */
  readonly filesRoot: string
  readonly pvc: string | null
  /** A task that runs to its end (tiny models, the chat-template probe), not a service. */
  readonly task?: boolean
}

const label = (config: Config, spec: Pick<ServiceSpec, "role" | "name">, o: Pick<PodOptions, "expId" | "owner">, role = spec.role as string) => ({
  // The user's first: dart's own (which `down` and the orphan sweep select by) always win.
  ...config.compute.kubernetes.labels,
  [LABELS.managedBy]: "dart",
  [LABELS.exp]: labelValue(o.expId),
  [LABELS.role]: role,
  [LABELS.service]: labelValue(spec.name),
  [LABELS.owner]: labelValue(o.owner)
})

/** The Secret the pods read their secrets from, by name (values base64, as the API stores them). */
export const secretObject = (config: Config, values: Readonly<Record<string, string>>, owner: string) => ({
  apiVersion: "v1",
  kind: "Secret",
  metadata: {
    name: secretName(config),
    labels: label(config, { role: "trainer", name: "secrets" }, { expId: config.run.exp_id, owner }, "secrets"),
    annotations: { [ANNOTATIONS.exp]: config.run.exp_id, [ANNOTATIONS.owner]: owner }
  },
  type: "Opaque",
  data: Object.fromEntries(Object.entries(values).map(([k, v]) => [k, Buffer.from(v).toString("base64")]))
})

/**
 * A service (or a task) as one Pod: never restarted by Kubernetes (a restarted vLLM forgets its adapters; dart starts
 * it again itself), secrets by reference to the Secret, GPUs as a limit of the GPU resource, the files folder on the
 * PVC (a subfolder per experiment) or the pod's own disk.
 */
export const podObject = (config: Config, spec: ServiceSpec, o: PodOptions) => {
  const k = config.compute.kubernetes
  const volumes: Array<Record<string, unknown>> = []
  const mounts: Array<Record<string, unknown>> = []
  const hf = { name: "hf-cache", mountPath: HF_CACHE_TARGET }
  if (o.pvc !== null) {
    volumes.push({ name: "dart", persistentVolumeClaim: { claimName: o.pvc } })
    mounts.push({ name: "dart", mountPath: o.filesRoot, subPath: labelValue(o.expId) }, { name: "dart", mountPath: HF_CACHE_TARGET, subPath: "hf-cache" })
  } else {
    volumes.push({ name: "files", emptyDir: {} }, { name: "hf-cache", emptyDir: {} })
    mounts.push({ name: "files", mountPath: o.filesRoot }, hf)
  }
  localBinds(spec).forEach((b, i) => {
    volumes.push({ name: `local-${i}`, hostPath: { path: b.source } })
    mounts.push({ name: `local-${i}`, mountPath: b.target, readOnly: b.readOnly })
  })
  if (spec.shmBytes !== null) {
    volumes.push({ name: "shm", emptyDir: { medium: "Memory", sizeLimit: `${Math.ceil(spec.shmBytes / 1024 ** 2)}Mi` } })
    mounts.push({ name: "shm", mountPath: "/dev/shm" })
  }
  const env = [
    ...Object.entries(spec.env).map(([name, value]) => ({ name, value })),
    ...Object.keys(spec.secretEnv).sort().map((name) => ({ name, valueFrom: { secretKeyRef: { name: o.secret ?? secretName(config), key: name } } }))
  ]
  const limits: Record<string, string> = { ...(o.gpus > 0 ? { [k.gpu_resource]: String(o.gpus) } : {}), ...(k.memory === null ? {} : { memory: k.memory }) }
  const requests: Record<string, string> = { ...(k.cpu === null ? {} : { cpu: k.cpu }), ...(k.memory === null ? {} : { memory: k.memory }) }
  const probe = spec.protocol === "http" ? { httpGet: { path: "/health", port: spec.port } } : { tcpSocket: { port: spec.port } }
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: {
      name: podName(o.expId, spec.name),
      labels: label(config, spec, o, o.task ? "task" : spec.role),
      annotations: { [ANNOTATIONS.spec]: o.hash, [ANNOTATIONS.owner]: o.owner, [ANNOTATIONS.exp]: o.expId }
    },
    spec: {
      restartPolicy: "Never",
      ...(Object.keys(k.node_selector).length === 0 ? {} : { nodeSelector: k.node_selector }),
      ...(k.tolerations.length === 0 ? {} : { tolerations: k.tolerations }),
      ...(k.image_pull_secrets.length === 0 ? {} : { imagePullSecrets: k.image_pull_secrets.map((name) => ({ name })) }),
      ...(k.service_account === null ? {} : { serviceAccountName: k.service_account }),
      automountServiceAccountToken: false,
      containers: [{
        name: "main",
        image: spec.image,
        ...(spec.entrypoint === undefined ? {} : { command: [...spec.entrypoint] }),
        args: [...spec.cmd],
        env,
        ...(o.task ? {} : { ports: [{ name: spec.protocol, containerPort: spec.port }], readinessProbe: { ...probe, periodSeconds: 5, failureThreshold: 3 } }),
        resources: { ...(Object.keys(limits).length === 0 ? {} : { limits }), ...(Object.keys(requests).length === 0 ? {} : { requests }) },
        volumeMounts: mounts
      }],
      volumes
    }
  }
}

/** A NodePort Service in front of one pod (`reach: node-port`): its port on every node. */
export const nodePortObject = (config: Config, spec: ServiceSpec, o: Pick<PodOptions, "expId" | "owner">) => ({
  apiVersion: "v1",
  kind: "Service",
  metadata: { name: podName(o.expId, spec.name), labels: label(config, spec, o), annotations: { [ANNOTATIONS.owner]: o.owner, [ANNOTATIONS.exp]: o.expId } },
  spec: { type: "NodePort", selector: { [LABELS.exp]: labelValue(o.expId), [LABELS.service]: labelValue(spec.name) }, ports: [{ name: spec.protocol, port: spec.port, targetPort: spec.port }] }
})

/** The verbs a run needs, as SelfSubjectAccessReview attributes (preflight). */
export const neededAccess = (config: Config): ReadonlyArray<{ verb: string; resource: string; subresource?: string; group?: string }> => {
  const k = config.compute.kubernetes
  return [
    ...["create", "get", "list", "watch", "delete", "patch"].map((verb) => ({ verb, resource: "pods" })),
    { verb: "get", resource: "pods", subresource: "log" },
    // Port-forward and exec are opened as WebSocket GETs: both verbs.
    ...["get", "create"].flatMap((verb) => [...(k.reach === "port-forward" ? [{ verb, resource: "pods", subresource: "portforward" }] : []), { verb, resource: "pods", subresource: "exec" }]),
    ...(k.secret === null ? ["create", "patch", "delete"].map((verb) => ({ verb, resource: "secrets" })) : []),
    ...(k.reach === "node-port" ? ["create", "patch", "delete", "list"].map((verb) => ({ verb, resource: "services" })) : [])
  ]
}

/** The dry run's section: every object dart would create, as the API would get it (secret values left out). */
export const renderKubeObjects = (config: Config, p: FleetPlacement, podFor: (a: Assignment) => Record<string, unknown>): Array<string> => {
  const k = config.compute.kubernetes
  const pods = [...p.vllm, ...p.classifiers, ...(p.trainer === null ? [] : [p.trainer])]
  return [
    `objects (kubernetes, ${k.context === null ? "the current context" : `context ${k.context}`}, namespace ${k.namespace ?? "(the context's)"}; server-side apply as "${FIELD_MANAGER}"; reach ${k.reach}; files ${k.storage.pvc === null ? "on each pod's disk, copied by exec" : `on PVC ${k.storage.pvc}`}):`,
    ...(k.secret === null ? [`  Secret ${secretName(config)}: HF_TOKEN, VLLM_API_KEY when set (values from this environment, never printed)`] : [`  Secret ${k.secret} (yours, read by name)`]),
    ...pods.flatMap((a) => [`  Pod ${podName(config.run.exp_id, a.name)}: ${a.name}, ${describePod(config, a)}, port ${a.port}`, ...JSON.stringify(podFor(a), null, 2).split("\n").map((l) => `    ${l}`)])
  ]
}

/** The scheduler's word on a pod that waits ("0/2 nodes are available: 2 Insufficient nvidia.com/gpu."), or null. */
export const unschedulable = (pod: { status?: { conditions?: ReadonlyArray<{ type?: string; status?: string; reason?: string; message?: string }> } }): string | null => {
  const c = pod.status?.conditions?.find((x) => x.type === "PodScheduled" && x.status === "False")
  return c === undefined ? null : (c.message ?? c.reason ?? "unschedulable")
}

/** Container states that waiting does not clear: a bad image, a missing Secret or config. */
export const NEVER_STARTS = new Set(["ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError", "CreateContainerError", "ErrImageNeverPull", "RunContainerError"])

/** Is the services' listen address beyond loopback (then vLLM asks for a key: the pod network reaches it)? */
export const listensBeyondLoopback = (config: Config) => !["127.0.0.1", "::1", "localhost"].includes(config.compute.kubernetes.listen_host)

/**
 * A spec as a pod runs it: its files under files_dir (on a PVC, the replicas' adapters in one folder, published
 * once), hub ids fetched by the pod itself, no sleep mode (no pod shares another's GPUs), and VLLM_API_KEY from the
 * Secret when the server listens beyond loopback.
 */
export const kubeServiceSpec = (config: Config, spec: ServiceSpec, vllmKey: Redacted.Redacted<string> | undefined): ServiceSpec => {
  const k = config.compute.kubernetes
  const { HF_HUB_OFFLINE: _offline, ...env } = spec.env
  const { VLLM_SERVER_DEV_MODE: _dev, ...kept } = spec.hubModels.length > 0 ? env : spec.env
  const base = {
    ...spec,
    cmd: spec.cmd.filter((a) => a !== "--enable-sleep-mode"),
    env: kept,
    secretEnv: { ...spec.secretEnv, ...(spec.role === "vllm" && vllmKey !== undefined ? { VLLM_API_KEY: vllmKey } : {}) },
    volumes: [],
    hubModels: []
  }
  const root = k.storage.files_dir
  if (spec.role === "trainer") return { ...base, cmd: spec.cmd.map((a, i) => (spec.cmd[i - 1] === "--data-dir" ? root : a)), filesDir: root }
  return { ...base, filesDir: k.storage.pvc === null ? root : `${root.replace(/\/+$/, "")}/adapters` }
}

/** The engine-neutral spec of one placed service. */
export const assignmentSpec = (config: Config, a: Assignment, hfToken: Redacted.Redacted<string> | undefined, firstClassifierPort?: number): ServiceSpec => {
  const listen = config.compute.kubernetes.listen_host
  const on = { gpus: a.gpus === null ? [] : a.gpus === "all" ? "all" as const : a.gpus }
  if (a.role === "vllm") return vllmSpec(config, on, listen, hfToken, { name: a.name, port: a.port, gpus: a.gpus })
  if (a.role === "trainer") return trainerSpec(config, { gpus: [] }, listen, hfToken, { gpus: a.gpus })
  return classifierSpecs(config, { gpus: a.gpus === null ? [] : "all" }, listen, hfToken, { gpus: a.gpus, firstPort: firstClassifierPort ?? a.port }).find((x) => x.name === a.name)!
}

/** The pod the dry run shows for a placed service (secrets by reference only: their values are never read here). */
export const dryRunPod = (config: Config, a: Assignment, p?: FleetPlacement): Record<string, unknown> => {
  const placeholder = Redacted.make("(from the environment)")
  const hf = process.env.HF_TOKEN === undefined ? undefined : placeholder
  const spec = kubeServiceSpec(config, assignmentSpec(config, a, hf, p?.classifiers[0]?.port), listensBeyondLoopback(config) ? placeholder : undefined)
  return podObject(config, spec, { expId: config.run.exp_id, owner: "(this process)", hash: specHash(spec), gpus: gpusOf(config, a), secret: null, filesRoot: config.compute.kubernetes.storage.files_dir, pvc: config.compute.kubernetes.storage.pvc })
}
