import * as path from "node:path"
import type { ExperimentConfig } from "../../config/ExperimentConfig.ts"
import { type Assignment, clusterGpus, type FleetPlacement, replicaName } from "../Placement.ts"
import type { ServiceSpec } from "../ServiceSpec.ts"
import type { SlurmJobRequest } from "./SlurmTransport.ts"

/**
 * Pure parts of the Slurm adapter: where the services go (jobs, not hosts), the folders on the shared folder, the
 * job comment that finds a job again, the launcher's command line and the batch script.
 */

type Config = ExperimentConfig
export type SlurmSettings = Config["compute"]["slurm"]

/** The placement's name for the cluster (the plan's "hosts" line, RunningService.host before a node is known). */
export const CLUSTER = "slurm"

/** GPUs each kind of job asks for. */
export const jobGpus = (config: Config) => clusterGpus(config, config.compute.slurm)

/** Device ids a spec is built with: what the service runs on (CUDA inside the job's own GPUs, or the CPU). */
const devices = (config: Config, count: number) => (config.compute.slurm.device === "cpu" ? null : Array.from({ length: Math.max(count, 1) }, (_, i) => String(i)))

/**
 * Slurm decides the nodes: dart decides the jobs. `compute.vllm.replicas` replicas (1 when unset), each a job with
 * `gpus_per_replica` GPUs; one classifier job per classifier; the trainer one job with `training.gpus`. No job shares
 * another's GPUs, so nothing sleeps.
 */
export const slurmPlacement = (
  config: Config,
  wants: { readonly vllm: boolean; readonly classifiers: ReadonlyArray<string>; readonly trainer: boolean }
): FleetPlacement => {
  const v = config.compute.vllm
  const g = jobGpus(config)
  const problems: Array<string> = []
  const s = config.compute.slurm
  if (s.shared_dir === null) problems.push("compute.slurm.shared_dir is not set: the controller and every node need one folder at the same path")
  if (s.launcher === "venv") {
    if ((wants.vllm || wants.classifiers.length > 0) && s.venv.vllm === null) problems.push("compute.slurm.venv.vllm is not set (launcher venv): the vLLM environment on the shared folder")
    if (wants.trainer && s.venv.trainer === null) problems.push("compute.slurm.venv.trainer is not set (launcher venv): dart's trainer environment on the shared folder")
  }
  if (s.transport === "cli" && s.reach === "ssh" && s.ssh === null) problems.push("compute.slurm.reach is ssh but compute.slurm.ssh is not set")
  if (s.transport === "rest" && s.reach === "ssh") problems.push("compute.slurm.reach ssh needs transport cli with compute.slurm.ssh")
  const count = wants.vllm ? (v.replicas ?? 1) : 0
  const vllm: Array<Assignment> = Array.from({ length: count }, (_, r) => ({ role: "vllm", name: replicaName(r), host: CLUSTER, gpus: devices(config, g.replica), port: v.port + r }))
  // Classifier ports follow the replicas' whatever this command starts, so a plan and a run agree.
  const base = v.port + (v.replicas ?? 1)
  const classifiers: Array<Assignment> = wants.classifiers.map((name, i) => ({ role: "classifier", name: `classifier-${name}`, host: CLUSTER, gpus: devices(config, g.classifier), port: base + i }))
  const trainer: Assignment | null = wants.trainer ? { role: "trainer", name: "trainer", host: CLUSTER, gpus: devices(config, g.trainer), port: config.compute.trainer.port } : null
  const all = [...vllm, ...classifiers, ...(trainer === null ? [] : [trainer])]
  const runs = all.map((a) => `${a.name} (${describeJob(config, a)}, port ${a.port})`)
  return {
    vllm, classifiers, trainer, sharing: [], problems,
    hosts: [{ name: `${CLUSTER} ${s.partition ?? "(default partition)"}`, devices: null, runs, idle: runs.length > 0 ? null : "nothing to start" }]
  }
}

/** "1 GPU, 12:00:00, venv": what the job asks of Slurm. */
export const describeJob = (config: Config, a: Assignment): string => {
  const s = config.compute.slurm
  const g = jobGpus(config)
  const n = a.role === "vllm" ? g.replica : a.role === "classifier" ? g.classifier : g.trainer
  const time = s.time_limit_minutes === null ? "default time" : `${s.time_limit_minutes} min`
  return `job: ${n === 0 ? "no GPU" : `${n} GPU${n === 1 ? "" : "s"}`}, ${time}, ${s.launcher}${s.device === "cpu" ? ", on CPU" : ""}`
}

/** The experiment's folders on the shared folder. */
export const sharedPaths = (shared: string, expId: string) => {
  const root = path.join(shared, "dart", expId)
  return {
    root,
    logs: path.join(root, "logs"),
    endpoints: path.join(root, "endpoints"),
    files: (service: string) => path.join(root, "files", service),
    trainerData: path.join(root, "trainer-data"),
    tiny: path.join(root, "tasks")
  }
}

/** The comment every job carries: how `status`, `down` and the orphan sweep find it (no secret, no path). */
export const jobComment = (c: { readonly expId: string; readonly role: string; readonly service: string; readonly spec: string; readonly owner: string }) =>
  `dart exp=${enc(c.expId)} role=${enc(c.role)} service=${enc(c.service)} spec=${enc(c.spec)} owner=${enc(c.owner)}`

/** Spaces, `=` and `%` percent-encoded: a classifier named with a space stays one field. */
const enc = (s: string) => s.replace(/[\s=%]/g, (c) => encodeURIComponent(c))

export const parseComment = (comment: string): { expId: string; role: string; service: string; spec: string; owner: string } | null => {
  const m = /^dart exp=(\S+) role=(\S+) service=(\S+) spec=(\S+) owner=(\S+)$/.exec(comment.trim())
  if (m === null) return null
  try {
    return { expId: decodeURIComponent(m[1]!), role: decodeURIComponent(m[2]!), service: decodeURIComponent(m[3]!), spec: decodeURIComponent(m[4]!), owner: decodeURIComponent(m[5]!) }
  } catch {
    return null
  }
}

export const jobName = (expId: string, service: string) => `dart-${expId}-${service}`.replace(/[^A-Za-z0-9_.-]/g, "_")

/** POSIX shell quoting. */
export const shq = (s: string) => (/^[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`)

/** The service's own program: vLLM's server (CPU: the module, as the CPU image runs it; CUDA: `vllm serve`), or the spec's command. */
const program = (spec: ServiceSpec): Array<string> =>
  spec.role === "trainer" ? [...spec.cmd] : spec.gpus === null ? ["python3", "-m", "vllm.entrypoints.openai.api_server", ...spec.cmd] : ["vllm", "serve", ...spec.cmd]

/** Folders the service reads or writes: the shared folder, the model folders, the HF cache. */
const mounts = (spec: ServiceSpec, shared: string) => [...new Set([shared, ...spec.binds.map((b) => b.source)])]

/** The command a job runs for `spec`, by launcher. */
export const launchCommand = (spec: ServiceSpec, s: SlurmSettings, shared: string): Array<string> => {
  const argv = program(spec)
  switch (s.launcher) {
    case "venv":
      // The environment's bin/ comes first on PATH (set by the script): python3 and vllm are the environment's.
      return argv
    case "pyxis":
      return [
        "srun", "--ntasks=1", `--container-image=${spec.image}`, `--container-mounts=${mounts(spec, shared).map((m) => `${m}:${m}`).join(",")}`,
        "--no-container-mount-home", "--container-workdir", shared, ...argv
      ]
    case "apptainer": {
      const image = spec.image.startsWith("/") || spec.image.includes("://") ? spec.image : `docker://${spec.image}`
      // The job's environment (secrets included) passes into the container: apptainer keeps the host's by default.
      return ["apptainer", "exec", ...(spec.gpus === null ? [] : ["--nv"]), "--bind", mounts(spec, shared).join(","), "--pwd", shared, image, ...argv]
    }
  }
}

/** The check the script runs until the service answers: HTTP /health, or the gRPC port accepting connections. */
export const healthCommand = (spec: ServiceSpec, listen: string): string => {
  const host = localAddress(listen)
  return spec.protocol === "http"
    ? `curl -fsS -o /dev/null ${shq(`http://${host.includes(":") ? `[${host}]` : host}:${spec.port}/health`)}`
    : portOpen(host, spec.port)
}

/** Where the node itself reaches a service listening on `listen`. */
const localAddress = (listen: string) => (listen === "0.0.0.0" ? "127.0.0.1" : listen === "::" ? "::1" : listen)
/** Exit 0 when something accepts connections on host:port. */
const portOpen = (host: string, port: number) => `bash -c ${shq(`exec 3<>/dev/tcp/${host}/${port}`)}`

/**
 * The batch script: print where it runs and which GPUs it got, start the service, wait until it answers, then
 * announce the endpoint (node + port) in `endpoints/{service}.json` on the shared folder, and wait for the service.
 * It holds no secret: those come in the job's environment.
 */
export const jobScript = (spec: ServiceSpec, s: SlurmSettings, p: { readonly shared: string; readonly announce: string; readonly venv: string | null; readonly expId: string }): string => {
  const env = Object.entries(spec.env).map(([k, v]) => `export ${k}=${shq(v)}`)
  const listen = s.listen_host
  const announceHost = listen === "0.0.0.0" || listen === "::" ? `$(hostname)` : listen
  const name = shq(spec.name)
  return [
    "#!/bin/bash",
    `# dart ${p.expId}: ${spec.name} (${spec.role}); written by dart, holds no secret`,
    "set -u",
    ...env,
    ...(p.venv === null ? [] : [`export VIRTUAL_ENV=${shq(p.venv)}`, `export PATH=${shq(`${p.venv}/bin`)}:"$PATH"`]),
    `echo "dart: job \${SLURM_JOB_ID:-?} on $(hostname) CUDA_VISIBLE_DEVICES=\${CUDA_VISIBLE_DEVICES:-} SLURM_JOB_GPUS=\${SLURM_JOB_GPUS:-}"`,
    `announce=${shq(p.announce)}`,
    `rm -f "$announce"`,
    // Ports are fixed by the placement: one already taken on this node (another job, another user) would answer the
    // health check for a service that is not ours. Refuse to start instead.
    `if ${portOpen(localAddress(listen), spec.port)} 2>/dev/null; then echo "dart: port ${spec.port} is already in use on $(hostname): not starting "${name}; exit 98; fi`,
    `${launchCommand(spec, s, p.shared).map(shq).join(" ")} &`,
    "child=$!",
    // scancel sends SIGTERM to the batch shell: pass it on and wait, so the service stops with the job.
    `trap 'kill -TERM "$child" 2>/dev/null; wait "$child"; exit 143' TERM INT`,
    `until ${healthCommand(spec, listen)} >/dev/null 2>&1; do`,
    `  if ! kill -0 "$child" 2>/dev/null; then wait "$child"; code=$?; echo "dart: "${name}" exited with $code before it answered"; exit "$code"; fi`,
    "  sleep 2",
    "done",
    // Still ours: the service has not exited meanwhile (a port taken after the check above shows here as its exit).
    `kill -0 "$child" 2>/dev/null || { wait "$child"; code=$?; echo "dart: "${name}" exited with $code"; exit "$code"; }`,
    `printf '{"job":"%s","node":"%s","host":"%s","port":%s}\\n' "\${SLURM_JOB_ID:-}" "\${SLURMD_NODENAME:-$(hostname -s)}" "${announceHost}" ${spec.port} > "$announce.tmp.$$" && mv "$announce.tmp.$$" "$announce"`,
    `echo "dart: "${name}" answers at ${announceHost}:${spec.port}"`,
    `wait "$child"`,
    ""
  ].join("\n")
}

/** A one-shot task's script (tiny models, the chat template probe): runs and exits with the program's status. */
export const taskScript = (argv: ReadonlyArray<string>, env: Readonly<Record<string, string>>, venv: string | null, expId: string, what: string): string =>
  [
    "#!/bin/bash",
    `# dart ${expId}: ${what}; written by dart, holds no secret`,
    "set -u",
    ...Object.entries(env).map(([k, v]) => `export ${k}=${shq(v)}`),
    ...(venv === null ? [] : [`export VIRTUAL_ENV=${shq(venv)}`, `export PATH=${shq(`${venv}/bin`)}:"$PATH"`]),
    argv.map(shq).join(" "),
    // The exit code in the log: a job that left the queue can no longer say it.
    `code=$?; echo "dart: exit $code"; exit "$code"`,
    ""
  ].join("\n")

/** The sbatch request for a service. */
export const jobRequest = (
  config: Config,
  spec: ServiceSpec,
  gpus: number,
  p: { readonly shared: string; readonly logFile: string; readonly script: string; readonly comment: string }
): SlurmJobRequest => {
  const s = config.compute.slurm
  return {
    name: jobName(config.run.exp_id, spec.name),
    comment: p.comment,
    partition: s.partition,
    account: s.account,
    qos: s.qos,
    timeLimitMinutes: s.time_limit_minutes,
    gpus,
    cpusPerTask: s.cpus_per_job,
    memoryMb: s.memory_mb,
    workdir: p.shared,
    logFile: p.logFile,
    script: p.script,
    env: {},
    secretEnv: spec.secretEnv
  }
}

/** The plan's section: the jobs a run would submit, with what each asks of Slurm. */
export const renderSlurmJobs = (config: Config, p: FleetPlacement): Array<string> => {
  const s = config.compute.slurm
  const via = s.transport === "rest" ? `slurmrestd ${s.rest_url}` : s.ssh === null ? "sbatch here" : `sbatch over ${s.ssh}`
  const g = jobGpus(config)
  const jobs = [...p.vllm, ...p.classifiers, ...(p.trainer === null ? [] : [p.trainer])]
  return [
    `jobs (slurm, ${via}; partition ${s.partition ?? "default"}${s.account === null ? "" : `, account ${s.account}`}${s.qos === null ? "" : `, qos ${s.qos}`}; launcher ${s.launcher}; shared ${s.shared_dir ?? "(not set)"}):`,
    ...jobs.map((a) => {
      const n = a.role === "vllm" ? g.replica : a.role === "classifier" ? g.classifier : g.trainer
      return `  ${jobName(config.run.exp_id, a.name)}: ${a.name}, ${n === 0 ? "no GPU" : `--gres=gpu:${n}`}, time ${s.time_limit_minutes === null ? "partition default" : `${s.time_limit_minutes} min`}${s.cpus_per_job === null ? "" : `, ${s.cpus_per_job} CPUs`}${s.memory_mb === null ? "" : `, ${s.memory_mb} MB`}, port ${a.port}${s.device === "cpu" ? ", runs on CPU" : ""}`
    })
  ]
}
