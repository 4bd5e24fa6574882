import { describe, expect, it } from "@effect/vitest"
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { dart } from "../support/Cli.ts"

const scratch = mkdtempSync(path.join(tmpdir(), "dart-run-"))
const runs = path.join(scratch, "runs")
const noKeys = { DEEPSEEK_API_KEY: "", OPENAI_API_KEY: "" }

describe("dart run --dry-run", () => {
  it("with configs/exp_acl.json and no keys or GPUs prints the plan, names each missing prerequisite and exits non-zero", () => {
    const r = dart(["run", "--dry-run", "--config", "configs/exp_acl.json", "--override", `run.runs_dir=${runs}`], noKeys)
    expect(r.code).toBe(5)
    expect(r.stdout).toContain(`dart run: exp exp_acl (${path.join(runs, "exp_acl")}), config configs/exp_acl.json`)
    expect(r.stdout).toContain("items: train 11,202, val 1,386, test 1,412 (projected from the suite; dart init writes them)")
    for (const stage of ["init", "distill", "train_dart", "infer_audit", "audit", "repair", "train_dart_h", "infer_test", "audit_test_dart", "audit_test_dart_h", "evaluate"]) {
      expect(r.stdout).toMatch(new RegExp(`\\n  ${stage} +run +not run yet\\n`))
    }
    expect(r.stdout).toContain("distill: 0 of 11,202 items done; still needed: 11,202 requests")
    expect(r.stdout).toMatch(/judge deepseek deepseek-chat \(mode validate, one request per pair\):\n {2}audit 1,386 pairs, audit_test_dart 1,412 pairs, audit_test_dart_h 1,412 pairs, audit_external 11,184 answers, audit_open_ended 120 answers; 15,514 requests/)
    expect(r.stdout).toMatch(/vllm +vllm\/vllm-openai:v0\.33\.0 vllm on local \(all GPUs, port 8000\)/)
    expect(r.stdout).toContain("hosts (docker):\n  local (all GPUs): vllm (all GPUs, port 8000), classifier-toxicity (all GPUs, port 8001), classifier-hate (all GPUs, port 8002), trainer (all GPUs, port 50051)")
    expect(r.stdout).toContain("MISSING  teacher API key: DEEPSEEK_API_KEY is not set: the teacher (deepseek deepseek-chat) needs it for distill and repair")
    expect(r.stdout).toContain("MISSING  judge API key: DEEPSEEK_API_KEY is not set")
    // Whether or not this machine runs a Docker engine, it has no GPU for `gpus: all`.
    expect(r.stdout).toMatch(/MISSING {2}GPUs on local: (0 NVIDIA GPU\(s\) usable on local|not checked: host local does not answer)/)
    expect(r.stderr).toMatch(/dart: error: \d+ prerequisite\(s\) missing: teacher API key/)
    expect(r.stdout).not.toContain("dry run: nothing started")
    expect(existsSync(runs)).toBe(false)
  })

  it("names a host that does not answer, and what it could therefore not check", () => {
    const sock = path.join(scratch, "no-engine.sock")
    const r = dart([
      "run", "--dry-run", "--override", `run.runs_dir=${runs}`,
      "--override", `compute.hosts=[{"name":"gpu-box","docker":"unix://${sock}","gpus":["0"]}]`
    ], { ...noKeys, DEEPSEEK_API_KEY: "sk-test-not-printed" })
    expect(r.code).toBe(5)
    expect(r.stdout).toContain("ok       teacher API key: DEEPSEEK_API_KEY is set")
    expect(r.stdout).toContain(`MISSING  host gpu-box: does not answer (unix://${sock}: connect ENOENT ${sock})`)
    expect(r.stdout).toContain("MISSING  image dart-trainer:0.1.0: not checked: host gpu-box does not answer")
    expect(r.stdout).toContain("MISSING  GPUs on gpu-box: not checked: host gpu-box does not answer")
    expect(r.stdout + r.stderr).not.toContain("sk-test-not-printed")
  })

  it("passes when the selected stages have what they need, and rejects unknown stages", () => {
    const ok = dart(["run", "--dry-run", "--until", "distill", "--override", `run.runs_dir=${runs}`], { ...noKeys, DEEPSEEK_API_KEY: "k" })
    expect(ok.stderr).toBe("")
    expect(ok.code).toBe(0)
    expect(ok.stdout).toMatch(/\n {2}train_dart +excluded +after --until distill\n/)
    expect(ok.stdout).toContain("services:\n  none (no stage that needs compute runs)")
    expect(ok.stdout).toContain("dry run: nothing started")
    const bad = dart(["run", "--dry-run", "--from", "teach"], noKeys)
    expect(bad.code).toBe(2)
    expect(bad.stderr).toContain("--from teach: unknown stage; stages are init, distill, train_dart")
  })

  it("with compute.backend slurm prints the jobs it would submit and checks the cluster, never showing the token", () => {
    const r = dart([
      "run", "--dry-run", "--config", "configs/smoke.json", "--exp-id", "slurmdry", "--override", `run.runs_dir=${runs}`,
      "--override", "compute.backend=slurm", "--override", "compute.slurm.rest_url=http://127.0.0.1:9", "--override", "compute.slurm.user=me",
      "--override", "compute.slurm.shared_dir=/shared/lab", "--override", "compute.slurm.partition=gpu", "--override", "compute.slurm.time_limit_minutes=600",
      "--override", "compute.vllm.replicas=2", "--override", "compute.slurm.venv.vllm=/shared/envs/vllm", "--override", "compute.slurm.venv.trainer=/shared/envs/trainer"
    ], { SLURM_JWT: "jwt-not-printed" })
    expect(r.code).toBe(5)
    expect(r.stdout).toContain("  vllm        vllm, vllm-2: Slurm jobs (see jobs below)")
    expect(r.stdout).toContain([
      "jobs (slurm, slurmrestd http://127.0.0.1:9; partition gpu; launcher venv; shared /shared/lab):",
      "  dart-slurmdry-vllm: vllm, --gres=gpu:1, time 600 min, port 8000",
      "  dart-slurmdry-vllm-2: vllm-2, --gres=gpu:1, time 600 min, port 8001",
      "  dart-slurmdry-classifier-toxicity: classifier-toxicity, --gres=gpu:1, time 600 min, port 8002",
      "  dart-slurmdry-classifier-hate: classifier-hate, --gres=gpu:1, time 600 min, port 8003",
      "  dart-slurmdry-trainer: trainer, --gres=gpu:1, time 600 min, port 50051"
    ].join("\n"))
    expect(r.stdout).toMatch(/MISSING {2}host slurm: does not answer \([^\n]*http:\/\/127\.0\.0\.1:9/)
    expect(r.stdout).toContain("MISSING  environment /shared/envs/vllm: not checked: host slurm does not answer")
    expect(r.stdout + r.stderr).not.toContain("jwt-not-printed")
    expect(r.stdout).not.toContain("hosts (docker)")
  })

  it("with compute.backend kubernetes prints every object it would apply, secrets by reference, and checks the cluster", () => {
    const kubeconfig = path.join(runs, "kubeconfig")
    mkdirSync(runs, { recursive: true })
    writeFileSync(kubeconfig, JSON.stringify({
      apiVersion: "v1", kind: "Config", "current-context": "lab",
      clusters: [{ name: "lab", cluster: { server: "https://127.0.0.1:9" } }], users: [{ name: "me", user: { token: "kube-token-not-printed" } }],
      contexts: [{ name: "lab", context: { cluster: "lab", user: "me", namespace: "ml" } }]
    }))
    const r = dart([
      "run", "--dry-run", "--config", "configs/smoke.json", "--exp-id", "kubedry", "--override", `run.runs_dir=${runs}`,
      "--override", "compute.backend=kubernetes", "--override", `compute.kubernetes.kubeconfig=${kubeconfig}`, "--override", "compute.kubernetes.namespace=ml",
      "--override", "compute.kubernetes.host_paths=true", "--override", "compute.vllm.replicas=2"
    ], { HF_TOKEN: "hf-not-printed" })
    expect(r.code).toBe(5)
    expect(r.stdout).toContain("  vllm        vllm, vllm-2: pods (see objects below)")
    expect(r.stdout).toContain(`objects (kubernetes, the current context, namespace ml; server-side apply as "dart"; reach port-forward; files on each pod's disk, copied by exec):`)
    expect(r.stdout).toContain("  Secret dart-kubedry-secrets: HF_TOKEN, VLLM_API_KEY when set (values from this environment, never printed)")
    for (const [name, gpus] of [["vllm", 1], ["vllm-2", 1], ["classifier-toxicity", 1], ["classifier-hate", 1], ["trainer", 1]] as const) {
      expect(r.stdout).toMatch(new RegExp(`  Pod dart-kubedry-${name}: ${name}, ${gpus} nvidia.com/gpu, port \\d+\n    \\{\n      "apiVersion": "v1",\n      "kind": "Pod"`))
    }
    expect(r.stdout).toContain('"secretKeyRef": {')
    expect(r.stdout).toMatch(/MISSING {2}host kubernetes: does not answer \([^\n]*127\.0\.0\.1:9/)
    expect(r.stdout + r.stderr).not.toContain("hf-not-printed")
    expect(r.stdout + r.stderr).not.toContain("kube-token-not-printed")
  })
})
