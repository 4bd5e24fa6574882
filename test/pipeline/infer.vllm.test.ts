import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { spawnSync } from "node:child_process"
import { cpSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { cutOutput } from "../../src/inference/InferencePlan.ts"
import { makeEndpoint } from "../../src/serving/VllmClient.ts"
import { studentMessages } from "../../src/teacher/Prompts.ts"
import { dartAsync } from "../support/AdapterFixture.ts"
import { trainerPython, startSidecar } from "../support/Trainer.ts"
import { startVllm } from "../support/VllmProcess.ts"

// The real thing: a tiny Llama built here, a LoRA trained by the real sidecar, served by real vLLM (CPU).
const scratch = mkdtempSync(path.join(tmpdir(), "dart-vllm-"))
const runs = path.join(scratch, "runs")
const exp = path.join(runs, "vl")
const model = path.join(scratch, "tiny")
const adapter = path.join(exp, "adapters/DART/final")
let vllm: Awaited<ReturnType<typeof startVllm>> | undefined
let items: Array<{ id: string; question: string; gold_label: string }> = []
const readJsonl = (file: string) => readFileSync(file, "utf8").trim().split("\n").map((l) => JSON.parse(l))
const common = () => ["--exp-id", "vl", "--override", `run.runs_dir=${runs}`, "--override", `model.base=${model}`, "--override", "model.dtype=float32",
  "--override", `compute.vllm.endpoint=${vllm?.url ?? "http://127.0.0.1:1"}`]
const run = <A, E>(e: Effect.Effect<A, E>) => Effect.runPromise(e)

beforeAll(async () => {
  const built = spawnSync(trainerPython(), ["test/support/tiny_llama.py", model, "benchmark_suite"], { encoding: "utf8", env: { ...process.env, HF_HUB_OFFLINE: "1" } })
  if (built.status !== 0) throw new Error(`tiny Llama build failed: ${built.stderr}`)
  // Training settings change results: they belong to the run (dart init); later stages may change only operational keys.
  const init = await dartAsync(["init", ...common(), "--override", 'datasets.benchmarks=["D1","N2"]', "--override", "datasets.limits.train=16", "--override", "datasets.limits.val=4",
    "--override", "training.per_device_batch_size=4", "--override", "training.gradient_accumulation_steps=1", "--override", "training.learning_rate=0.01",
    "--override", "training.gradient_checkpointing=false", "--override", "training.max_length=512", "--override", "training.lora.r=8",
    "--override", "training.lora.alpha=16", "--override", "training.max_lora_rank=16", "--override", "training.eval_fraction=0.1",
    "--override", "training.lr_scheduler=constant", "--override", "training.save_steps=100", "--override", "training.eval_steps=100",
    // Greedy answers, so each arm can be compared with vLLM's and transformers' own greedy output.
    "--override", "inference.temperature=0", "--override", "inference.max_tokens=48"]).done
  expect(init.code).toBe(0)
  items = readJsonl(path.join(exp, "datasets/val.jsonl"))
  const train = readJsonl(path.join(exp, "datasets/train.jsonl"))
  mkdirSync(path.join(exp, "teacher_outputs/distill"), { recursive: true })
  writeFileSync(path.join(exp, "teacher_outputs/distill/outputs.jsonl"), train.map((it) => JSON.stringify({
    key: it.id, accepted: true,
    messages: [...studentMessages(it.question), { role: "assistant", content: `the facts differ here. careful reading supports the label.\nConclusion: ${it.gold_label}` }]
  })).join("\n") + "\n")
  // Train DART with the real sidecar, then stop it before vLLM starts (memory).
  const sidecar = await startSidecar(path.join(scratch, "sidecar"), 16)
  try {
    const r = await dartAsync(["train", "--stage", "mdac", "--adapter-name", "DART", ...common(), "--epochs", "2",
      "--override", `compute.trainer.endpoint=${sidecar.address}`]).done
    if (r.code !== 0) throw new Error(`dart train failed: ${r.stderr}`)
  } finally {
    sidecar.stop()
  }
  vllm = await startVllm(model, path.join(scratch, "vllm"))
}, 600_000)

afterAll(async () => {
  await vllm?.stop()
})

describe("dart infer against real vLLM (CPU) with a LoRA trained by the sidecar", () => {
  it("load → listed with the base as parent → canary → paired greedy rows equal base and adapter → unload", async () => {
    const r = await dartAsync(["infer", "--paired", "--policy", "off", "--model-a-id", "M0", "--model-b-id", "DART", "--model-b-adapter", adapter,
      "--run-name", "paired", ...common()]).done
    expect(r.stderr).not.toContain("error")
    expect(r.code).toBe(0)
    const ep = makeEndpoint(vllm!.url)
    const cards = await run(ep.models)
    expect(cards.find((c) => c.id === "DART")).toMatchObject({ root: adapter, parent: "base" })
    const manifest = JSON.parse(readFileSync(path.join(exp, "predictions/paired/manifest.json"), "utf8"))
    expect(manifest.canary.DART.differing_from_base).toBeGreaterThan(0)
    expect(manifest.servers[0].version).toMatch(/^0\.\d+/)
    const rows = readJsonl(path.join(exp, "predictions/paired/outputs.jsonl"))
    expect(rows.map((x) => x.id)).toEqual(items.map((i) => i.id))

    // Each arm is exactly that model's greedy answer: asked directly of vLLM, and computed by transformers + PEFT.
    const sampling = { temperature: 0, top_p: 0.9, top_k: null, max_tokens: 48, seed: 42 }
    const conversations = items.map((i) => studentMessages(i.question))
    const reference = (adapterDir: string) => {
      const p = spawnSync(trainerPython(), ["test/support/greedy_reference.py", model, adapterDir, "48"], {
        input: JSON.stringify(conversations), encoding: "utf8", env: { ...process.env, HF_HUB_OFFLINE: "1" }
      })
      if (p.status !== 0) throw new Error(p.stderr)
      return JSON.parse(p.stdout) as Array<string>
    }
    const hfBase = reference("-")
    const hfLora = reference(adapter)
    let differ = 0
    for (const [k, row] of rows.entries()) {
      const direct = async (m: string) => (await run(ep.chat({ model: m, messages: conversations[k]!, sampling }))).texts[0]!
      expect(row.outputs.M0.text).toBe(cutOutput(await direct("base")))
      expect(row.outputs.DART.text).toBe(cutOutput(await direct("DART")))
      expect(row.outputs.M0.text).toBe(cutOutput(hfBase[k]!))
      expect(row.outputs.DART.text).toBe(cutOutput(hfLora[k]!))
      if (row.outputs.M0.text !== row.outputs.DART.text) differ++
    }
    expect(differ).toBeGreaterThan(0)

    // Real load/unload answers.
    expect(await run(ep.unloadAdapter("DART"))).toBe("Success: LoRA adapter 'DART' removed successfully.")
    expect((await run(ep.models)).map((c) => c.id)).toEqual(["base"])
    const again = await run(Effect.flip(ep.unloadAdapter("DART")))
    expect(again.status).toBe(404)
    expect(again.message).toContain("cannot be found")
    const missing = await run(Effect.flip(ep.loadAdapter("X", path.join(scratch, "nowhere"))))
    expect(missing.status).toBe(404)
    expect(missing.message).toContain("No adapter found")
    const metrics = await run(ep.metrics)
    expect(metrics.running).toBe(0)
    expect(metrics.lora?.maxLora).toBe(2)
  }, 300_000)

  it("an adapter with zero LoRA weights fails the canary", async () => {
    const zero = path.join(scratch, "zero")
    cpSync(adapter, zero, { recursive: true })
    const file = path.join(zero, "adapter_model.safetensors")
    const buf = readFileSync(file)
    const header = 8 + Number(buf.readBigUInt64LE(0))
    buf.fill(0, header)
    writeFileSync(file, buf)
    const r = await dartAsync(["infer", "--models", `M0,ZERO=${zero}`, "--run-name", "zero", ...common()]).done
    expect(r.code).not.toBe(0)
    expect(r.stderr).toMatch(/canary failed .*adapter "ZERO"/)
  }, 120_000)

  it("structured outputs constrain mc answers to an option", async () => {
    const r = await dartAsync(["infer", "--model-id", "M0", "--task", "mc", "--constrained", "--run-name", "mc", ...common()]).done
    expect(r.code).toBe(0)
    for (const row of readJsonl(path.join(exp, "predictions/mc/outputs.jsonl"))) expect(["(a)", "(b)", "(c)"]).toContain(row.outputs.M0.text)
  }, 120_000)
})
