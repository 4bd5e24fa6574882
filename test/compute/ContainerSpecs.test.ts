import { describe, expect, it } from "@effect/vitest"
import { Redacted, Schema } from "effect"
import { classifierSpecs, createBody, DEFAULT_VLLM_CPU_IMAGE, specHash, trainerSpec, vllmSpec } from "../../src/compute/ContainerSpecs.ts"
import { parseHostAddress } from "../../src/compute/DockerHost.ts"
import { defaults, ExperimentConfig } from "../../src/config/ExperimentConfig.ts"

const config = Schema.decodeUnknownSync(ExperimentConfig)(defaults)
const gpuHost = { name: "gpu", docker: "ssh://me@box", gpus: "all" as const }
const cpuHost = { name: "cpu", docker: "unix:///var/run/docker.sock", gpus: [] }
const token = Redacted.make("hf_secret")

describe("container specs", () => {
  it("vLLM on a GPU host: official image, base name, LoRA flags from the training config, GPUs, ipc host", () => {
    const spec = vllmSpec(config, gpuHost, "127.0.0.1", token)
    expect(spec.image).toBe(config.compute.vllm.image)
    const flag = (name: string) => spec.cmd[spec.cmd.indexOf(name) + 1]
    expect(flag("--served-model-name")).toBe("base")
    // The official image runs `vllm serve`: the model is its positional argument (`--model` is deprecated there).
    expect(spec.cmd[0]).toBe(config.model.base)
    expect(spec.cmd).not.toContain("--model")
    expect(spec.cmd).toContain("--enable-lora")
    expect(flag("--max-lora-rank")).toBe(String(config.training.max_lora_rank))
    expect(flag("--max-loras")).toBe(String(config.compute.vllm.max_loras))
    expect(Number(flag("--max-cpu-loras"))).toBeGreaterThanOrEqual(config.compute.vllm.max_loras)
    expect(flag("--generation-config")).toBe("vllm")
    expect(flag("--host")).toBe("127.0.0.1")
    expect(spec.env.VLLM_ALLOW_RUNTIME_LORA_UPDATING).toBe("True")
    const body = createBody(spec, { "dart.exp": "e" }) as { Env: Array<string>; HostConfig: Record<string, unknown>; Healthcheck: { StartPeriod: number } }
    expect(body.HostConfig).toMatchObject({ NetworkMode: "host", Init: true, IpcMode: "host", DeviceRequests: [{ Driver: "nvidia", Count: -1, Capabilities: [["gpu"]] }] })
    expect(body.Healthcheck.StartPeriod).toBe(1200 * 1e9)
    expect(body.Env).toContain("HF_TOKEN=hf_secret")
    // Only the body sees the secret: the spec (hashed, logged) holds it redacted.
    expect(JSON.stringify(spec)).not.toContain("hf_secret")
  })

  it("a CPU host gets the CPU image, no device request, shm, and a local model mounted with the hub offline", () => {
    const local = { ...config, model: { ...config.model, base: "/models/tiny", dtype: "float16" as const } }
    const spec = vllmSpec(local, cpuHost, "127.0.0.1")
    expect(spec.image).toBe(DEFAULT_VLLM_CPU_IMAGE)
    expect(spec.cmd[spec.cmd.indexOf("--dtype") + 1]).toBe("bfloat16")
    expect(spec.cmd).not.toContain("--gpu-memory-utilization")
    // The CPU image starts the server module, which takes only `--model`.
    expect(spec.cmd.slice(0, 2)).toEqual(["--model", "/models/tiny"])
    expect(spec.env).toMatchObject({ HF_HUB_OFFLINE: "1", VLLM_TARGET_DEVICE: "cpu" })
    expect(trainerSpec(local, cpuHost, "127.0.0.1").env.DART_REQUIRE_CUDA).toBeUndefined()
    const body = createBody(spec, {}) as { HostConfig: Record<string, unknown> }
    expect(body.HostConfig.DeviceRequests).toBeUndefined()
    expect(body.HostConfig.ShmSize).toBe(2 * 1024 ** 3)
    expect(body.HostConfig.Mounts).toContainEqual({ Type: "bind", Source: "/models/tiny", Target: "/models/tiny", ReadOnly: true })
    expect((createBody(spec, {}).Env as Array<string>).filter((e) => e.startsWith("HF_TOKEN="))).toEqual([])
  })

  it("classifiers: one pooling server per audit classifier on the ports after vLLM's; trainer: gRPC health", () => {
    const specs = classifierSpecs(config, gpuHost, "127.0.0.1")
    expect(specs.map((s) => [s.name, s.port])).toEqual(config.audit.classifiers.map((c, i) => [`classifier-${c.name}`, config.compute.vllm.port + 1 + i]))
    expect(specs[0]!.cmd).toEqual(expect.arrayContaining(["--runner", "pooling", "--convert", "classify"]))
    expect(specs[0]!.cmd[0]).toBe(config.audit.classifiers[0]!.model)
    const t = trainerSpec(config, gpuHost, "127.0.0.1")
    // On a GPU host the sidecar must find CUDA or refuse to start (it would otherwise train on CPU).
    expect(t.env.DART_REQUIRE_CUDA).toBe("1")
    expect(t).toMatchObject({ role: "trainer", image: config.compute.trainer.image, port: config.compute.trainer.port, protocol: "grpc" })
    expect(t.health.shell).toContain(`127.0.0.1:${config.compute.trainer.port}`)
  })

  it("the spec hash changes with the spec, not with a secret's value", () => {
    const a = vllmSpec(config, gpuHost, "127.0.0.1", Redacted.make("one"))
    expect(specHash(a)).toBe(specHash(vllmSpec(config, gpuHost, "127.0.0.1", Redacted.make("two"))))
    expect(specHash(a)).not.toBe(specHash(vllmSpec(config, gpuHost, "127.0.0.1")))
    expect(specHash(a)).not.toBe(specHash({ ...a, cmd: [...a.cmd, "--seed", "1"] }))
  })

  it("host addresses", () => {
    expect(parseHostAddress("unix:///var/run/docker.sock")).toEqual({ kind: "unix", socket: "/var/run/docker.sock" })
    expect(parseHostAddress("tcp://10.0.0.5")).toEqual({ kind: "tcp", host: "10.0.0.5", port: 2376 })
    expect(parseHostAddress("ssh://ann@gpu1:2222")).toEqual({ kind: "ssh", user: "ann", host: "gpu1", port: 2222, socket: "/var/run/docker.sock" })
    expect(parseHostAddress("ssh://ann@gpu1/run/user/1000/docker.sock")).toMatchObject({ socket: "/run/user/1000/docker.sock" })
    expect(parseHostAddress("ssh://gpu1")).toContain("ssh://user@host")
    expect(parseHostAddress("http://x")).toContain("unsupported scheme")
  })
})
