import { describe, expect, it } from "@effect/vitest"
import { Redacted, Schema } from "effect"
import { spawnSync } from "node:child_process"
import { trainerSpec, vllmSpec } from "../../src/compute/ContainerSpecs.ts"
import { sbatchArgs, submitCommand, submitStdin, toJob } from "../../src/compute/slurm/SlurmCli.ts"
import { jobComment, jobRequest, jobScript, launchCommand, parseComment, renderSlurmJobs, slurmPlacement } from "../../src/compute/slurm/SlurmJobs.ts"
import { defaults, ExperimentConfig } from "../../src/config/ExperimentConfig.ts"

const decode = Schema.decodeUnknownSync(ExperimentConfig)
const slurmConfig = (slurm: Record<string, unknown> = {}, more: Record<string, unknown> = {}) =>
  decode({
    ...defaults,
    ...more,
    compute: { ...defaults.compute, backend: "slurm", vllm: { ...defaults.compute.vllm, replicas: 2, tensor_parallel_size: 2 }, slurm: { ...defaults.compute.slurm, shared_dir: "/shared", partition: "gpu", time_limit_minutes: 720, ...slurm } }
  })
const gpuSpec = (config: ReturnType<typeof slurmConfig>) => vllmSpec(config, { gpus: ["0", "1"] }, "0.0.0.0", Redacted.make("hf_secret"), { name: "vllm-2", port: 8001, gpus: ["0", "1"] })

describe("Slurm jobs", () => {
  it("placement: N replicas as jobs of tensor_parallel_size GPUs, a classifier job each, the trainer with training.gpus; nothing shares", () => {
    const config = slurmConfig({}, { training: { ...defaults.training, gpus: 4 } })
    const p = slurmPlacement(config, { vllm: true, classifiers: ["hate"], trainer: true })
    expect(p.problems).toEqual(["compute.slurm.venv.vllm is not set (launcher venv): the vLLM environment on the shared folder", "compute.slurm.venv.trainer is not set (launcher venv): dart's trainer environment on the shared folder"])
    expect(p.vllm.map((a) => [a.name, a.port, a.gpus])).toEqual([["vllm", 8000, ["0", "1"]], ["vllm-2", 8001, ["0", "1"]]])
    expect(p.classifiers.map((a) => [a.name, a.port, a.gpus])).toEqual([["classifier-hate", 8002, ["0"]]])
    expect(p.trainer).toMatchObject({ name: "trainer", gpus: ["0", "1", "2", "3"] })
    expect(p.sharing).toEqual([])
    const lines = renderSlurmJobs(config, p)
    expect(lines[0]).toBe("jobs (slurm, slurmrestd http://127.0.0.1:6820; partition gpu; launcher venv; shared /shared):")
    expect(lines.slice(1)).toEqual([
      "  dart-default-vllm: vllm, --gres=gpu:2, time 720 min, port 8000",
      "  dart-default-vllm-2: vllm-2, --gres=gpu:2, time 720 min, port 8001",
      "  dart-default-classifier-hate: classifier-hate, --gres=gpu:1, time 720 min, port 8002",
      "  dart-default-trainer: trainer, --gres=gpu:4, time 720 min, port 50051"
    ].map((l) => l.replace(/dart-default-/g, `dart-${config.run.exp_id}-`)))
  })

  it("device cpu: CPU services that still ask for the GPUs configured per replica (the CI cluster's fake GPUs)", () => {
    const config = slurmConfig({ device: "cpu", gpus_per_replica: 1, venv: { vllm: "/v", trainer: "/t", trainer_source: null } })
    const p = slurmPlacement(config, { vllm: true, classifiers: [], trainer: true })
    expect(p.problems).toEqual([])
    expect(p.vllm.map((a) => a.gpus)).toEqual([null, null])
    expect(renderSlurmJobs(config, p)[1]).toContain("--gres=gpu:1, time 720 min, port 8000, runs on CPU")
    expect(renderSlurmJobs(config, p)[3]).toContain("trainer, no GPU")
  })

  it("the comment finds a job again; anything else is not ours", () => {
    const c = { expId: "e1", role: "vllm", service: "vllm-2", spec: "abc", owner: "box:42" }
    expect(parseComment(jobComment(c))).toEqual(c)
    // A classifier named with a space (the config allows it) is still one field.
    const odd = { ...c, role: "classifier", service: "classifier-my hate=1" }
    expect(parseComment(jobComment(odd))).toEqual(odd)
    expect(parseComment("someone else's job")).toBeNull()
  })

  it("launchers: venv runs the program itself; pyxis and apptainer wrap it with the image and the shared folder", () => {
    const venv = slurmConfig({ launcher: "venv" })
    const spec = gpuSpec(venv)
    expect(launchCommand(spec, venv.compute.slurm, "/shared/dart/e").slice(0, 3)).toEqual(["vllm", "serve", venv.model.base])
    const pyxis = slurmConfig({ launcher: "pyxis" })
    expect(launchCommand(gpuSpec(pyxis), pyxis.compute.slurm, "/shared/dart/e")).toEqual([
      "srun", "--ntasks=1", `--container-image=${pyxis.compute.vllm.image}`, "--container-mounts=/shared/dart/e:/shared/dart/e",
      "--no-container-mount-home", "--container-workdir", "/shared/dart/e", "vllm", "serve", ...spec.cmd
    ])
    const app = slurmConfig({ launcher: "apptainer" })
    expect(launchCommand(gpuSpec(app), app.compute.slurm, "/shared/dart/e")).toEqual([
      "apptainer", "exec", "--nv", "--bind", "/shared/dart/e", "--pwd", "/shared/dart/e", `docker://${app.compute.vllm.image}`, "vllm", "serve", ...spec.cmd
    ])
    // A CPU service has no --nv; a .sif path is used as it is; the trainer runs its own command.
    const cpuTrainer = { ...trainerSpec(app, { gpus: [] }, "127.0.0.1"), image: "/images/trainer.sif" }
    expect(launchCommand(cpuTrainer, app.compute.slurm, "/s")).toEqual(["apptainer", "exec", "--bind", "/s", "--pwd", "/s", "/images/trainer.sif", ...cpuTrainer.cmd])
  })

  it("the batch script holds no secret, announces the endpoint once healthy, and is valid bash", () => {
    const config = slurmConfig({ venv: { vllm: "/envs/vllm", trainer: null, trainer_source: null } })
    const spec = gpuSpec(config)
    const script = jobScript(spec, config.compute.slurm, { shared: "/shared/dart/e", announce: "/shared/dart/e/endpoints/vllm-2.json", venv: "/envs/vllm", expId: "e" })
    expect(script).not.toContain("hf_secret")
    expect(script).toContain("export PATH=/envs/vllm/bin:\"$PATH\"")
    expect(script).toContain("until curl -fsS -o /dev/null http://127.0.0.1:8001/health")
    expect(script).toContain("\"$(hostname)\" 8001")
    // A port some other process holds on the node: the job refuses to start rather than announce someone else's server.
    expect(script).toContain("if bash -c 'exec 3<>/dev/tcp/127.0.0.1/8001' 2>/dev/null; then echo \"dart: port 8001 is already in use")
    expect(spawnSync("bash", ["-n"], { input: script }).status).toBe(0)
  })

  it("sbatch: options without secrets; secrets only on stdin, base64 per line before the script", () => {
    const config = slurmConfig({ account: "lab", qos: "high", cpus_per_job: 8, memory_mb: 64000 })
    const spec = gpuSpec(config)
    const r = jobRequest(config, spec, 2, { shared: "/shared/dart/e", logFile: "/shared/dart/e/logs/vllm-2-%j.log", script: "#!/bin/bash\necho hi\n", comment: "dart exp=e role=vllm service=vllm-2 spec=x owner=o" })
    expect(sbatchArgs(r)).toEqual([
      "--parsable", `--job-name=dart-${config.run.exp_id}-vllm-2`, "--comment=dart exp=e role=vllm service=vllm-2 spec=x owner=o", "--partition=gpu", "--account=lab", "--qos=high",
      "--time=720", "--nodes=1", "--ntasks=1", "--gres=gpu:2", "--cpus-per-task=8", "--mem=64000", "--chdir=/shared/dart/e",
      "--output=/shared/dart/e/logs/vllm-2-%j.log", "--error=/shared/dart/e/logs/vllm-2-%j.log", "--no-requeue", "--export=PATH,HOME,USER,LANG,HF_TOKEN"
    ])
    expect(submitCommand(r)).not.toContain("hf_secret")
    const stdin = submitStdin(r)
    expect(stdin).not.toContain("hf_secret")
    expect(stdin).toBe(`HF_TOKEN ${Buffer.from("hf_secret").toString("base64")}\n\n#!/bin/bash\necho hi\n`)
    // The remote side, with `sbatch` a function that prints its environment's secret and its script: both arrive.
    const fake = submitCommand(r).replace("exec sbatch", "sbatch")
    const out = spawnSync("bash", ["-c", `sbatch() { echo "token=$HF_TOKEN"; cat; }; export -f sbatch; ${fake}`], { input: stdin })
    expect(out.stdout.toString()).toBe("token=hf_secret\n#!/bin/bash\necho hi\n")
  })

  it("squeue --json: a state string (22.05) or a base state with flags (23.11+), a flag such as COMPLETING shown as squeue shows it", () => {
    expect(toJob({ job_id: 7, name: "n", comment: "c", job_state: "PENDING", state_reason: "Resources", nodes: "", user_name: "u" })).toEqual({ id: "7", name: "n", comment: "c", state: "PENDING", reason: "Resources", nodes: "", user: "u" })
    expect(toJob({ job_id: 8, name: "n", job_state: ["RUNNING", "COMPLETING"], state_reason: "None", nodes: "gpu01" })).toMatchObject({ state: "COMPLETING", reason: null, nodes: "gpu01", comment: "" })
  })
})
