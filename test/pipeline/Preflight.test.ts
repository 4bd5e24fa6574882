import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Context, Effect, Layer } from "effect"
import * as http from "node:http"
import { mkdtempSync } from "node:fs"
import * as net from "node:net"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { type ComputeProbes, computeProbes, ProbeFailure, runPreflight } from "../../src/pipeline/Preflight.ts"
import { Compute } from "../../src/compute/Compute.ts"
import { dockerCompute, gpusFromInfo } from "../../src/compute/DockerCompute.ts"
import { buildRunGraph, planGraph } from "../../src/pipeline/RunGraph.ts"
import { buildRunPlan, type PlanFacts } from "../../src/pipeline/RunPlan.ts"
import { configFor } from "../support/RunConfig.ts"
import { noCompute } from "../support/NoCompute.ts"
import type { TemplateProbe } from "../../src/domain/ChatLayout.ts"

const facts: PlanFacts = {
  expId: "x",
  runDir: "/runs/x",
  configPath: "c.json",
  items: { train: { n: 4, questionChars: 400 }, val: { n: 2, questionChars: 200 }, test: { n: 2, questionChars: 200 } },
  itemsFrom: "suite",
  distill: { items: 4, done: 0, requests: 4, promptChars: 1000 },
  repair: null
}

const planFor = (overrides: ReadonlyArray<string>) => {
  const config = configFor("configs/exp_acl.json", overrides)
  const graph = buildRunGraph(config)
  return { config, plan: buildRunPlan(config, graph, planGraph(graph, {}), facts) }
}

const withEnv = (env: Record<string, string>) => Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env })))

const fakeProbes = (over: Partial<ComputeProbes> = {}): ComputeProbes & { calls: Array<string> } => {
  const calls: Array<string> = []
  return {
    calls,
    host: (h) => Effect.sync(() => void calls.push(`host ${h.name}`)).pipe(Effect.as({ engine: "29.0", gpus: 2 })),
    image: (h, image) => Effect.sync(() => void calls.push(`image ${h.name} ${image}`)).pipe(Effect.as(true)),
    endpoint: (s, a) => Effect.sync(() => void calls.push(`endpoint ${s} ${a}`)),
    ...over
  }
}

const templateProbe = (over: Partial<TemplateProbe> = {}): TemplateProbe => ({
  layout: "native", reason: "the template renders the system message", conversations: [], template_sha256: "t", bos_token: "<bos>",
  template_adds_bos: true, double_bos: false, eos_token: "<eos>", stop_token_ids: [1], end_of_turn: "<end_of_turn>", end_of_turn_id: 107,
  end_of_turn_stops: true, pad_token: "<pad>", pad_plan: "own", ...over
})

describe("preflight: the chat template", () => {
  const keys = withEnv({ DEEPSEEK_API_KEY: "k" })
  it.effect("says the layout the template asks for and why, and hands the probe on to be recorded", () =>
    Effect.gen(function*() {
      const { config, plan } = planFor([])
      const probe = templateProbe({ layout: "folded", reason: "the template raises on a system message: System role not supported (student)", end_of_turn_stops: false })
      const r = yield* runPreflight(config, plan, fakeProbes({ chatTemplate: () => Effect.succeed(probe) })).pipe(keys)
      const check = r.checks.find((c) => c.name === "chat template")!
      expect(check.ok).toBe(true)
      expect(check.detail).toBe("system role folded into the first user turn (the template raises on a system message: System role not supported (student)); " +
        "stops also at <end_of_turn> (id 107), which the model's EOS list lacks")
      expect(r.templateProbe).toEqual(probe)
    }))

  it.effect("a template that renders nothing is a missing prerequisite, named with its reason", () =>
    Effect.gen(function*() {
      const { config, plan } = planFor([])
      const r = yield* runPreflight(config, plan, fakeProbes({ chatTemplate: () => Effect.succeed(templateProbe({ layout: null, reason: "the template raises: boom (student)" })) })).pipe(keys)
      expect(r.missing).toEqual([{
        name: "chat template", ok: false,
        detail: "meta-llama/Llama-3.1-8B-Instruct: the base model's chat template cannot render DART's conversations: the template raises: boom (student)"
      }])
      const failed = yield* runPreflight(config, plan, fakeProbes({ chatTemplate: () => Effect.fail(new ProbeFailure({ message: "no tokenizer" })) })).pipe(keys)
      expect(failed.missing.map((c) => c.detail)).toEqual(["meta-llama/Llama-3.1-8B-Instruct: no tokenizer"])
    }))

  it.effect("a recorded layout is shown as such; an unreachable host is not probed; a forced setting wins", () =>
    Effect.gen(function*() {
      const { config, plan } = planFor([])
      const recorded = { base: config.model.base, setting: "auto" as const, system: "native" as const, reason: "the template renders the system message", stop_token_ids: [], probe: null }
      const r = yield* runPreflight(config, plan, fakeProbes({ chatTemplate: () => Effect.succeed(recorded) })).pipe(keys)
      expect(r.checks.find((c) => c.name === "chat template")?.detail).toBe("system role native (the template renders the system message) (recorded for this run)")
      expect(r.templateProbe).toBeUndefined()
      let asked = false
      const down = yield* runPreflight(config, plan, fakeProbes({
        host: () => Effect.fail(new ProbeFailure({ message: "refused" })),
        chatTemplate: () => Effect.sync(() => (asked = true)).pipe(Effect.as(templateProbe()))
      })).pipe(keys)
      expect(asked).toBe(false)
      expect(down.checks.some((c) => c.name === "chat template")).toBe(false)
      const forced = planFor(["model.system_role=folded"])
      const f = yield* runPreflight(forced.config, forced.plan, fakeProbes({ chatTemplate: () => Effect.succeed(templateProbe()) })).pipe(keys)
      expect(f.checks.find((c) => c.name === "chat template")?.detail).toBe("system role folded into the first user turn (forced by model.system_role; the template alone would give native (the template renders the system message))")
    }))
})

describe("preflight", () => {
  it.effect("names the key variable each provider in use needs, and never its value", () =>
    Effect.gen(function*() {
      const { config, plan } = planFor(["judge.provider=openai", "judge.model=gpt-4o-mini"])
      const none = yield* runPreflight(config, plan, fakeProbes()).pipe(withEnv({}))
      expect(none.missing.map((c) => c.detail)).toEqual([
        "DEEPSEEK_API_KEY is not set: the teacher (deepseek deepseek-chat) needs it for distill and repair",
        "OPENAI_API_KEY is not set: the judge (openai gpt-4o-mini) needs it for audit, audit_test_dart, audit_test_dart_h, audit_external, audit_open_ended"
      ])
      const set = yield* runPreflight(config, plan, fakeProbes()).pipe(withEnv({ DEEPSEEK_API_KEY: "sk-secret-1", OPENAI_API_KEY: "sk-secret-2" }))
      expect(set.missing).toEqual([])
      expect(JSON.stringify(set)).not.toMatch(/sk-secret/)
      // An empty variable is no key.
      const empty = yield* runPreflight(config, plan, fakeProbes()).pipe(withEnv({ DEEPSEEK_API_KEY: "", OPENAI_API_KEY: "x" }))
      expect(empty.missing.map((c) => c.name)).toEqual(["teacher API key"])
      // api_key_env names another variable; the judge is off: only the teacher's variable matters.
      const other = planFor(["teacher.api_key_env=MY_TEACHER_KEY", "audit.llm_judge.enabled=false"])
      const r = yield* runPreflight(other.config, other.plan, fakeProbes()).pipe(withEnv({ DEEPSEEK_API_KEY: "k" }))
      expect(r.missing.map((c) => c.detail)).toEqual(["MY_TEACHER_KEY is not set: the teacher (deepseek deepseek-chat) needs it for distill and repair"])
    }))

  it.effect("probes each host once, every image on it, its GPUs, and configured endpoints instead of containers", () =>
    Effect.gen(function*() {
      const { config, plan } = planFor([`compute.vllm.endpoint=http://127.0.0.1:9/v1`])
      const probes = fakeProbes({ host: () => Effect.succeed({ engine: "20.10", gpus: 0 }), image: (_h, image) => Effect.succeed(image.startsWith("vllm")) })
      const r = yield* runPreflight(config, plan, probes).pipe(withEnv({ DEEPSEEK_API_KEY: "k" }))
      expect(probes.calls).toEqual(["endpoint vllm http://127.0.0.1:9/v1"])
      expect(r.checks.map((c) => [c.name, c.ok])).toEqual([
        ["teacher API key", true],
        ["judge API key", true],
        ["vllm endpoint", true],
        ["host local", true],
        ["image vllm/vllm-openai:v0.33.0", true],
        ["image dart-trainer:0.1.0", false],
        ["GPUs on local", false]
      ])
      expect(r.missing.at(-1)!.detail).toContain("0 NVIDIA GPU(s) usable on local, wanted at least 1 (gpus: all)")
    }))

  it.effect("reports a host that does not answer, and leaves its images and GPUs unchecked rather than passed", () =>
    Effect.gen(function*() {
      const { config, plan } = planFor([])
      const probes = fakeProbes({ host: () => Effect.fail(new ProbeFailure({ message: "connect ENOENT /nope.sock" })) })
      const r = yield* runPreflight(config, plan, probes).pipe(withEnv({ DEEPSEEK_API_KEY: "k" }))
      expect(r.missing.map((c) => `${c.name}: ${c.detail}`)).toEqual([
        "host local: does not answer (connect ENOENT /nope.sock)",
        "image vllm/vllm-openai:v0.33.0: not checked: host local does not answer",
        "image dart-trainer:0.1.0: not checked: host local does not answer",
        "GPUs on local: not checked: host local does not answer"
      ])
    }))

  it.effect("checks every hub model on the host that starts its service, before anything is paid for", () =>
    Effect.gen(function*() {
      const { config, plan } = planFor(["model.base=meta-llama/Llama-3.1-8B-Instruct"])
      const asked: Array<ReadonlyArray<string>> = []
      const probes = fakeProbes({
        models: (_h, _c, ids) =>
          Effect.sync(() => {
            asked.push(ids)
            return ids.map((repo) =>
              repo.startsWith("meta-llama/")
                ? { repo, ok: false as const, kind: "gated" as const, message: `${repo} is gated: accept its licence on the model page and set HF_TOKEN` }
                : { repo, ok: true as const, cached: false, bytes: 500_000_000, revision: "a".repeat(40) }
            )
          })
      })
      const r = yield* runPreflight(config, plan, probes).pipe(withEnv({ DEEPSEEK_API_KEY: "k" }))
      // One task per host for the base and both classifiers.
      expect(asked).toEqual([["meta-llama/Llama-3.1-8B-Instruct", ...config.audit.classifiers.map((c) => c.model)]])
      expect(r.missing.map((c) => `${c.name}: ${c.detail}`)).toEqual([
        "model meta-llama/Llama-3.1-8B-Instruct: on local: meta-llama/Llama-3.1-8B-Instruct is gated: accept its licence on the model page and set HF_TOKEN"
      ])
      // Without the trainer image (the fetch task's) on the host, the services fetch for themselves: said, not passed
      // silently (the image's own check names what is missing for the trainer).
      const noImage = yield* runPreflight(config, plan, fakeProbes({
        image: (_h, image) => Effect.succeed(image !== config.compute.trainer.image),
        models: () => Effect.die("must not run")
      })).pipe(withEnv({ DEEPSEEK_API_KEY: "k" }))
      expect(noImage.checks.filter((c) => c.name.startsWith("model ")).map((c) => c.detail)).toEqual(
        [config.model.base, ...config.audit.classifiers.map((c) => c.model)].map(() => expect.stringContaining(`not checked: ${config.compute.trainer.image} (dart's hub fetch) is not on local`))
      )
    }))

  it("counts GPUs from the engine's info: CDI devices, else the nvidia runtime, else none", () => {
    expect(gpusFromInfo({ DiscoveredDevices: [{ Source: "cdi", ID: "nvidia.com/gpu=0" }, { Source: "cdi", ID: "nvidia.com/gpu=1" }] })).toBe(2)
    expect(gpusFromInfo({ Runtimes: { runc: {}, nvidia: {} } })).toBeNull()
    expect(gpusFromInfo({ Runtimes: { runc: {} }, DiscoveredDevices: null })).toBe(0)
  })

  describe("probes through the compute port", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "dart-preflight-"))

    it.effect("the Docker adapter asks the host's engine: version, info, image inspect", () =>
      Effect.gen(function*() {
        const socket = path.join(dir, "docker.sock")
        const seen: Array<string> = []
        const server = http.createServer((req, res) => {
          seen.push(req.url!)
          if (req.url === "/version") return res.end(JSON.stringify({ Version: "20.10.24", ApiVersion: "1.41" }))
          if (req.url === "/info") return res.end(JSON.stringify({ ServerVersion: "20.10.24", Runtimes: { runc: {} } }))
          if (decodeURIComponent(req.url!) === "/images/dart-trainer:0.1.0/json") return res.end("{}")
          res.statusCode = 404
          res.end(JSON.stringify({ message: "No such image" }))
        })
        yield* Effect.acquireRelease(
          Effect.callback<void>((resume) => void server.listen(socket, () => resume(Effect.void))),
          () => Effect.sync(() => server.close())
        )
        const host = { name: "fake", docker: `unix://${socket}`, gpus: "all" as const }
        const absent = { name: "absent", docker: `unix://${path.join(dir, "absent.sock")}`, gpus: [] }
        const config = configFor("configs/exp_acl.json", [`compute.hosts=${JSON.stringify([host, absent])}`])
        const compute = Context.get(yield* Layer.build(dockerCompute(config, { runDir: dir })), Compute)
        const probes = computeProbes(compute, 2000)
        expect(yield* probes.host(host)).toEqual({ address: host.docker, engine: "Docker 20.10.24", gpus: 0 })
        expect(yield* probes.image(host, "dart-trainer:0.1.0")).toBe(true)
        expect(yield* probes.image(host, "vllm/vllm-openai:v0.33.0")).toBe(false)
        expect(seen.map((u) => decodeURIComponent(u))).toEqual(["/version", "/info", "/images/dart-trainer:0.1.0/json", "/images/vllm/vllm-openai:v0.33.0/json"])
        const missing = yield* probes.host(absent).pipe(Effect.flip)
        expect(missing.message).toContain("ENOENT")
      }).pipe(Effect.scoped))

    it.effect("check endpoints: vLLM /health over HTTP, the trainer's port over TCP", () =>
      Effect.gen(function*() {
        const server = http.createServer((req, res) => {
          res.statusCode = req.url === "/health" ? 200 : 404
          res.end()
        })
        const port = yield* Effect.acquireRelease(
          Effect.callback<number>((resume) => void server.listen(0, "127.0.0.1", () => resume(Effect.succeed((server.address() as net.AddressInfo).port)))),
          () => Effect.sync(() => server.close())
        )
        const probes = computeProbes(Context.get(yield* Layer.build(noCompute), Compute), 2000)
        yield* probes.endpoint("vllm", `http://127.0.0.1:${port}/v1`)
        yield* probes.endpoint("trainer", `127.0.0.1:${port}`)
        // A port nobody listens on: take one and release it.
        const closed = yield* Effect.callback<number>((resume) => {
          const s = net.createServer().listen(0, "127.0.0.1", () => {
            const p = (s.address() as net.AddressInfo).port
            s.close(() => resume(Effect.succeed(p)))
          })
        })
        const bad = yield* probes.endpoint("classifiers", `http://127.0.0.1:${closed}`).pipe(Effect.flip)
        expect(bad.message).toContain("ECONNREFUSED")
        const badTrainer = yield* probes.endpoint("trainer", `127.0.0.1:${closed}`).pipe(Effect.flip)
        expect(badTrainer.message).toBe(`trainer 127.0.0.1:${closed}: connect ECONNREFUSED 127.0.0.1:${closed}`)
      }).pipe(Effect.scoped))
  })
})
