import { describe, expect, it } from "@effect/vitest"
import { buildRunGraph, planGraph, type StageId, type StageState } from "../../src/pipeline/RunGraph.ts"
import { buildRunPlan, type PlanFacts, renderRunPlan } from "../../src/pipeline/RunPlan.ts"
import { configFor } from "../support/RunConfig.ts"

const facts = (over: Partial<PlanFacts> = {}): PlanFacts => ({
  expId: "exp_acl",
  runDir: "/runs/exp_acl",
  configPath: "configs/exp_acl.json",
  items: { train: { n: 100, questionChars: 20_000 }, val: { n: 10, questionChars: 2_000 }, test: { n: 20, questionChars: 4_000 } },
  itemsFrom: "suite",
  distill: { items: 100, done: 40, requests: 60, promptChars: 48_002 },
  repair: null,
  ...over
})

const done = (keys: ReadonlyArray<string>): StageState => ({ records: Object.fromEntries(keys.map((k) => [k, { status: "done", error: null }])), changedOutputs: [] })

describe("the run plan", () => {
  const config = configFor("configs/exp_acl.json", ["ood.enabled=false"])
  const graph = buildRunGraph(config)

  it("projects teacher and judge requests, tokens and cost from the items still to do", () => {
    const plan = buildRunPlan(config, graph, planGraph(graph, {}), facts())
    // 60 distill requests: ceil(48,002 / 4) prompt tokens, max_tokens 512 each, DeepSeek prices $0.27 / $1.10.
    expect(plan.teacher.distill).toEqual({ requests: 60, promptTokens: 12_001, completionTokens: 30_720, costUsd: (12_001 * 0.27 + 30_720 * 1.1) / 1e6 })
    // The pool is unknown before the audit: at most every val pair.
    expect(plan.teacher.repair).toBeNull()
    expect(plan.teacher.repairUpperBound).toBe(10)
    // Judge: val audit 10 pairs + two test audits of 20, one request per pair (as the audit asks).
    expect(plan.judge!.audits).toEqual([{ stage: "audit", pairs: 10 }, { stage: "audit_test_dart", pairs: 20 }, { stage: "audit_test_dart_h", pairs: 20 }])
    expect(plan.judge!.projection.requests).toBe(50)
    expect(plan.judge!.projection.completionTokens).toBe(50 * 500)
    const promptChars = (2_000 + 10 * (2400 + 2 * 256 * 4)) + 2 * (4_000 + 20 * (2400 + 2 * 256 * 4))
    expect(plan.judge!.projection.promptTokens).toBe(Math.ceil(promptChars / 4))
    expect(plan.inference).toEqual([
      { stage: "infer_audit", split: "val", items: 10, models: 2, requests: 20 },
      { stage: "infer_test", split: "test", items: 20, models: 3, requests: 60 }
    ])
  })

  it("counts only the stages that run, and the real pool once the audit wrote it", () => {
    const states: Partial<Record<StageId, StageState>> = Object.fromEntries(
      graph.stages.filter((s) => ["init", "distill", "train_dart", "infer_audit", "audit"].includes(s.id)).map((s) => [s.id, done(s.ledgerKeys)])
    )
    const plan = buildRunPlan(config, graph, planGraph(graph, states), facts({ repair: { items: 7, done: 2, requests: 5, promptChars: 4_000 } }))
    expect(plan.teacher.distill.requests).toBe(0)
    expect(plan.teacher.repair).toMatchObject({ requests: 5, promptTokens: 1_000, completionTokens: 5 * 512 })
    expect(plan.judge!.audits.map((a) => a.stage)).toEqual(["audit_test_dart", "audit_test_dart_h"])
    expect(plan.inference.map((i) => i.stage)).toEqual(["infer_test"])
    expect(plan.services.map((s) => [s.service, s.stages])).toEqual([
      ["vllm", ["infer_test"]],
      ["classifiers", ["audit_test_dart", "audit_test_dart_h"]],
      ["trainer", ["train_dart_h"]]
    ])
  })

  it("places the fleet: vLLM replicas on the GPU hosts, a CPU host named idle with its reason, configured endpoints started nowhere", () => {
    const two = configFor("configs/exp_acl.json", ["ood.enabled=false",
      `compute.hosts=[{"name":"laptop","docker":"unix:///var/run/docker.sock","gpus":[]},{"name":"box","docker":"ssh://me@box","gpus":["0","1"]}]`,
      "compute.trainer.endpoint=127.0.0.1:50051"
    ])
    const g = buildRunGraph(two)
    const plan = buildRunPlan(two, g, planGraph(g, {}), facts())
    const vllm = plan.services.find((s) => s.service === "vllm")!
    expect(vllm.host?.name).toBe("box")
    expect(vllm.placed.map((a) => `${a.name}@${a.host}:${a.port} ${JSON.stringify(a.gpus)}`)).toEqual(['vllm@box:8000 ["0"]', 'vllm-2@box:8001 ["1"]'])
    expect(vllm.image).toBe("vllm/vllm-openai:v0.33.0")
    const trainer = plan.services.find((s) => s.service === "trainer")!
    expect(trainer).toMatchObject({ host: null, image: null, endpoints: ["127.0.0.1:50051"], starts: false })
    const text = renderRunPlan(plan, two)
    expect(text).toContain("  laptop (CPU): nothing: no GPU, and the fleet's GPU hosts serve")
    expect(text).toContain("  box (GPU 0,1): vllm (GPU 0, port 8000), vllm-2 (GPU 1, port 8001), classifier-toxicity (GPU 0,1, port 8002)")
    expect(text).toContain("endpoint 127.0.0.1:50051 (already running; nothing started)")
    // A CPU-only host gets the CPU images.
    const cpu = configFor("configs/exp_acl.json", ["ood.enabled=false", `compute.hosts=[{"name":"laptop","docker":"unix:///var/run/docker.sock","gpus":[]}]`])
    expect(renderRunPlan(buildRunPlan(cpu, g, planGraph(g, {}), facts()), cpu)).toContain("dart-vllm-cpu:0.32.0 vllm on laptop (CPU, port 8000)")
  })

  it("spreads replicas over four GPU hosts by tensor_parallel_size, caps them, and puts the trainer on the host with the most GPUs", () => {
    const hosts = [
      { name: "a", docker: "ssh://me@a", gpus: ["0", "1", "2", "3"] },
      { name: "b", docker: "ssh://me@b", gpus: ["0", "1", "2", "3", "4", "5", "6", "7"] },
      { name: "c", docker: "ssh://me@c", gpus: ["0"] },
      { name: "d", docker: "tcp://d:2376", gpus: ["0", "1"] }
    ]
    const config = configFor("configs/exp_acl.json", ["ood.enabled=false", `compute.hosts=${JSON.stringify(hosts)}`, "compute.vllm.tensor_parallel_size=2", "training.gpus=4"])
    const g = buildRunGraph(config)
    const plan = buildRunPlan(config, g, planGraph(g, {}), facts())
    expect(plan.placement.vllm.map((a) => `${a.name} ${a.host} ${(a.gpus as ReadonlyArray<string>).join(",")} ${a.port}`)).toEqual([
      "vllm a 0,1 8000", "vllm-2 b 0,1 8001", "vllm-3 d 0,1 8002", "vllm-4 a 2,3 8003", "vllm-5 b 2,3 8004", "vllm-6 b 4,5 8005", "vllm-7 b 6,7 8006"
    ])
    expect(plan.placement.trainer).toMatchObject({ host: "b", gpus: ["0", "1", "2", "3"] })
    // The trainer shares b's first GPUs with two replicas, which sleep while it trains.
    expect(plan.placement.sharing).toEqual(expect.arrayContaining(["vllm-2", "vllm-5"]))
    const text = renderRunPlan(plan, config)
    // c's one GPU is too few for a replica at tensor_parallel_size 2: the classifiers take it.
    expect(text).toContain("  c (GPU 0): classifier-toxicity (GPU 0, port 8007), classifier-hate (GPU 0, port 8008)")
    expect(text).toContain("  b (GPU 0,1,2,3,4,5,6,7): vllm-2 (GPU 0,1, port 8001), vllm-5 (GPU 2,3, port 8004), vllm-6 (GPU 4,5, port 8005), vllm-7 (GPU 6,7, port 8006), trainer (GPU 0,1,2,3, port 50051)")
    const capped = configFor("configs/exp_acl.json", ["ood.enabled=false", `compute.hosts=${JSON.stringify(hosts)}`, "compute.vllm.tensor_parallel_size=2", "compute.vllm.replicas=2"])
    const p2 = buildRunPlan(capped, g, planGraph(g, {}), facts()).placement
    expect(p2.vllm.map((a) => a.host)).toEqual(["a", "b"])
    expect(p2.hosts.find((h) => h.name === "d")!.idle).toBe("compute.vllm.replicas 2 reached")
    const tooMany = configFor("configs/exp_acl.json", ["ood.enabled=false", `compute.hosts=${JSON.stringify(hosts.slice(2))}`, "training.gpus=4"])
    expect(buildRunPlan(tooMany, g, planGraph(g, {}), facts()).placement.problems).toEqual(["training.gpus is 4, but the host with the most GPUs (d) has 2"])
  })

  it("places over the hosts as they answer: a box that is down at the start is left out with its reason, not fatal", () => {
    const hosts = [
      { name: "a", docker: "ssh://me@a", gpus: ["0", "1"] },
      { name: "b", docker: "ssh://me@b", gpus: ["0", "1", "2", "3"] }
    ]
    const config = configFor("configs/exp_acl.json", ["ood.enabled=false", `compute.hosts=${JSON.stringify(hosts)}`])
    const g = buildRunGraph(config)
    const live = [{ name: "a", devices: ["0", "1"] }, { name: "b", devices: ["0", "1", "2", "3"], unusable: "does not answer (ssh: connect ECONNREFUSED)" }]
    const plan = buildRunPlan(config, g, planGraph(g, {}), facts(), live)
    expect(plan.placement.problems).toEqual([])
    expect(new Set([...plan.placement.vllm, ...plan.placement.classifiers, plan.placement.trainer!].map((a) => a.host))).toEqual(new Set(["a"]))
    expect(renderRunPlan(plan, config)).toContain("  b (GPU 0,1,2,3): nothing: does not answer (ssh: connect ECONNREFUSED)")
    // As the config declares them (no live view): b would carry the trainer.
    expect(buildRunPlan(config, g, planGraph(g, {}), facts()).placement.trainer!.host).toBe("b")
  })

  it("decides configured or started as the run does: every vLLM endpoint, and each classifier's own endpoint", () => {
    const listed = configFor("configs/exp_acl.json", ["ood.enabled=false", `compute.vllm.endpoints=["http://127.0.0.1:9001","http://127.0.0.1:9002"]`])
    const g = buildRunGraph(listed)
    const vllm = buildRunPlan(listed, g, planGraph(g, {}), facts()).services.find((s) => s.service === "vllm")!
    expect(vllm).toMatchObject({ endpoints: ["http://127.0.0.1:9001", "http://127.0.0.1:9002"], starts: false, host: null, image: null })
    const classifiers = (endpoints: ReadonlyArray<string | undefined>) =>
      JSON.stringify(listed.audit.classifiers.map((c, i) => (endpoints[i] === undefined ? c : { ...c, endpoint: endpoints[i] })))
    const own = configFor("configs/exp_acl.json", ["ood.enabled=false", `audit.classifiers=${classifiers(["http://127.0.0.1:7001", "http://127.0.0.1:7002"])}`])
    const ownPlan = buildRunPlan(own, g, planGraph(g, {}), facts())
    expect(ownPlan.services.find((s) => s.service === "classifiers")).toMatchObject({ endpoints: ["http://127.0.0.1:7001", "http://127.0.0.1:7002"], starts: false })
    expect(renderRunPlan(ownPlan, own)).not.toMatch(/classifiers +vllm\/vllm-openai/)
    // One classifier served, the other not: its container starts.
    const mixed = configFor("configs/exp_acl.json", ["ood.enabled=false", `audit.classifiers=${classifiers(["http://127.0.0.1:7001"])}`])
    const text = renderRunPlan(buildRunPlan(mixed, g, planGraph(g, {}), facts()), mixed)
    expect(text).toMatch(/classifiers +endpoint http:\/\/127\.0\.0\.1:7001 \(already running; nothing started\)\n {14}vllm\/vllm-openai/)
  })

  it("starts one vLLM for the teacher and judge too when they are the run's own server (provider vllm)", () => {
    const own = { ...config, teacher: { ...config.teacher, provider: "vllm" as never }, judge: { ...config.judge, provider: "vllm" as never } }
    const plan = buildRunPlan(own, graph, planGraph(graph, {}), facts())
    expect(plan.services.find((s) => s.service === "vllm")!.stages).toEqual([
      "distill", "infer_audit", "audit", "repair", "infer_test", "audit_test_dart", "audit_test_dart_h"
    ])
  })

  it("prints every stage with its action and reason, the items, the costs and the warning of the original's order", () => {
    const original = configFor("configs/exp_acl.json", ["ood.enabled=false", "audit.split=test"])
    const g = buildRunGraph(original)
    const text = renderRunPlan(buildRunPlan(original, g, planGraph(g, { init: done(["init"]) }), facts()), original)
    expect(text).toMatch(/^dart run: exp exp_acl \(\/runs\/exp_acl\), config configs\/exp_acl.json\nwarning: audit.split is "test"/)
    expect(text).toContain("items: train 100, val 10, test 20 (projected from the suite")
    expect(text).toMatch(/ {2}init +skip +done, outputs unchanged/)
    expect(text).toMatch(/ {2}distill +run +not run yet/)
    expect(text).toContain("distill: 40 of 100 items done; still needed: 60 requests, ~12,001 prompt + ≤30,720 completion tokens, ≤$0.04")
    expect(text).toContain("repair: pool unknown until the audit; at most 20 requests")
    expect(text).toContain("judge deepseek deepseek-chat (mode validate, one request per pair)")
  })
})
