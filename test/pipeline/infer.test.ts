import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { existsSync, mkdtempSync, readFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { canaryPrompts, cutOutput } from "../../src/inference/InferencePlan.ts"
import { dartAsync, writeAdapter } from "../support/AdapterFixture.ts"
import { type ChatRecord, startVllmStandIn, type VllmStandIn } from "../support/VllmStandIn.ts"

const scratch = mkdtempSync(path.join(tmpdir(), "dart-infer-"))
const runs = path.join(scratch, "runs")
const exp = path.join(runs, "inf")
const dartA = writeAdapter(path.join(scratch, "adapters/DART"), { seed: 1 })
const dartH = writeAdapter(path.join(scratch, "adapters/DART_H"), { seed: 2 })
const zero = writeAdapter(path.join(scratch, "adapters/ZERO"), { zero: true })
const started: Array<VllmStandIn> = []
let items: Array<{ id: string; question: string; benchmark: string; condition: string; gold_label: string }> = []

const serve = async (options: Parameters<typeof startVllmStandIn>[0] = {}) => {
  const s = await startVllmStandIn(options)
  started.push(s)
  return s
}
// Sampling settings change results, so each sample count is its own run (made by dart init); endpoints are operational.
const base = (servers: ReadonlyArray<VllmStandIn>, extra: ReadonlyArray<string> = [], expId = "inf") => [
  "--exp-id", expId, "--override", `run.runs_dir=${runs}`,
  "--override", `compute.vllm.endpoint=${servers[0]!.url}`,
  "--override", `compute.vllm.endpoints=${JSON.stringify(servers.slice(1).map((s) => s.url))}`,
  ...extra
]
const readJsonl = (file: string) => readFileSync(file, "utf8").trim().split("\n").filter((l) => l !== "").map((l) => JSON.parse(l))
const pred = (run: string, file = "outputs.jsonl", expId = "inf") => path.join(runs, expId, "predictions", run, file)
const isCanary = (c: ChatRecord) => canaryPrompts.some((p) => p.at(-1)!.content === c.messages.at(-1)!.content)
/** The request key of a chat the stand-in received: (item, model, sample). */
const keyOf = (c: ChatRecord) => {
  const q = c.messages.at(-1)!.content.split("Prompt:\n")[1]
  const item = items.find((i) => i.question === q)
  return `${item?.id}|${c.model}|${(c.seed ?? 0) - 42}`
}

beforeAll(async () => {
  for (const [expId, samples] of [["inf", 1], ["inf_s2", 2], ["inf_s8", 8], ["inf_s12", 12]] as const) {
    const r = await dartAsync(["init", "--exp-id", expId, "--override", `run.runs_dir=${runs}`, "--override", 'datasets.benchmarks=["D1","N2"]',
      "--override", "datasets.limits.val=24", "--override", `inference.samples=${samples}`]).done
    expect(r.stderr).toBe("")
  }
  items = readJsonl(path.join(exp, "datasets/val.jsonl"))
}, 60_000)

afterAll(async () => {
  for (const s of started) await s.stop().catch(() => {})
})

describe("dart infer against a loopback vLLM stand-in", () => {
  it("paired run: loads the adapter, passes the canary, writes contract rows and a manifest", async () => {
    const s = await serve({ latencyMs: 5 })
    const r = await dartAsync(["infer", "--paired", "--policy", "off", "--model-a-id", "M0", "--model-b-id", "DART", "--model-b-adapter", dartA,
      "--run-name", "pair", ...base([s])]).done
    expect(r.stderr).not.toContain("error")
    expect(r.code).toBe(0)
    expect(s.loads).toEqual([{ name: "DART", path: dartA, status: 200 }])
    const rows = readJsonl(pred("pair"))
    expect(rows.map((x) => x.id)).toEqual(items.map((i) => i.id))
    for (const row of rows) {
      const item = items.find((i) => i.id === row.id)!
      expect(row).toMatchObject({ task: "dart", id: item.id, benchmark: item.benchmark, condition: item.condition, gold_label: item.gold_label, sample: 0, policy: "off" })
      expect(Object.keys(row.outputs)).toEqual(["M0", "DART"])
      expect(row.outputs.M0.text).toMatch(/The base model .*\nConclusion: (YES|NO)$/)
      expect(row.outputs.DART.text).toMatch(/The lora-\w+ model .*\nConclusion: (YES|NO)$/)
    }
    // Requests: the student prompt, explicit sampling (docs/protocol.md §3), base by its served name, adapter by its name.
    const chat = s.chats.find((c) => !isCanary(c) && c.model === "DART")!
    expect(chat.body).toMatchObject({ temperature: 0.2, top_p: 0.9, top_k: -1, max_tokens: 256, seed: 42, n: 1 })
    expect(chat.messages[0]!.content).toContain("You are an assistant performing difference-awareness classification.\nWrite a brief analysis (2–4 sentences).")
    expect(chat.body.guided_choice).toBeUndefined()
    expect(s.chats.filter((c) => !isCanary(c)).map((c) => c.model).sort()).toEqual([...items.map(() => "DART"), ...items.map(() => "base")])
    const manifest = JSON.parse(readFileSync(pred("pair", "manifest.json"), "utf8"))
    expect(manifest.servers[0]).toMatchObject({ url: s.url, version: "0.32.0-standin", base_model: "base" })
    expect(manifest.models[1]).toMatchObject({ name: "DART", adapter_sha256: expect.stringMatching(/^[0-9a-f]{64}$/) })
    expect(manifest.identity).toMatchObject({ prompt_version: "dart-v1", sampling: { temperature: 0.2, top_p: 0.9, top_k: null, max_tokens: 256, seed: 42 } })
    expect(manifest.canary.DART.differing_from_base).toBeGreaterThan(0)
    // A rerun finds everything answered: no chat request at all, rows unchanged.
    const before = s.chats.length
    const again = await dartAsync(["infer", "--paired", "--model-a-id", "M0", "--model-b-id", "DART", "--model-b-adapter", dartA, "--run-name", "pair", ...base([s])]).done
    expect(again.code).toBe(0)
    expect(s.chats.length).toBe(before)
    // The same run name with another policy would mix answers: refused, naming what differs.
    const other = await dartAsync(["infer", "--paired", "--policy", "on", "--model-a-id", "M0", "--model-b-id", "DART", "--model-b-adapter", dartA, "--run-name", "pair", ...base([s])]).done
    expect(other.code).toBe(1)
    expect(other.stderr).toMatch(/run "pair" was made with different policy, system_prompt; use a new --run-name/)
  }, 60_000)

  it("an adapter with zero LoRA weights fails the canary", async () => {
    const s = await serve()
    const r = await dartAsync(["infer", "--models", `M0,Z=${zero}`, "--run-name", "zero", ...base([s])]).done
    expect(r.code).not.toBe(0)
    expect(r.stderr).toMatch(/canary failed on .*adapter "Z" .*gives exactly the base model's greedy answers/)
    expect(s.chats.filter((c) => !isCanary(c))).toEqual([])
    expect(existsSync(pred("zero"))).toBe(false)
  }, 30_000)

  it("load errors (400, 404, 500) surface with the server's message", async () => {
    for (const [status, message] of [[400, "Both 'lora_name' and 'lora_path' must be provided."], [404, "Loading lora DART failed: No adapter found for /nowhere"],
      [500, "LoRA rank 32 is greater than max_lora_rank 16"]] as const) {
      const s = await serve({ loadFault: () => ({ status, message }) })
      const r = await dartAsync(["infer", "--models", `M0,DART=${dartA}`, "--run-name", `err${status}`, ...base([s])]).done
      expect(r.code).toBe(1)
      expect(r.stderr).toContain(`load adapter "DART" from ${dartA} on ${s.url}: HTTP ${status}: ${message}`)
    }
  }, 30_000)

  it("kill -9 at random points, then rerun: identical rows, no answered request sent again", async () => {
    const s = await serve({ latencyMs: 40 })
    const args = ["infer", "--models", `M0,DART=${dartA},DART_H=${dartH}`, "--override", "inference.concurrency=3"]
    const total = items.length * 3 * 2
    const answeredAtKill: Array<{ keys: Set<string>; chatsSoFar: number }> = []
    for (let k = 0; k < 3; k++) {
      const target = 10 + Math.floor(Math.random() * (total - 30))
      const { child, done } = dartAsync([...args, "--run-name", "killed", ...base([s], [], "inf_s2")])
      const file = pred("killed", "answers.jsonl", "inf_s2")
      while (!(existsSync(file) && readFileSync(file, "utf8").split("\n").length > target)) {
        if (child.exitCode !== null) break
        await new Promise((r) => setTimeout(r, 5))
      }
      child.kill("SIGKILL")
      await done
      const keys = new Set(readJsonl(file).map((a) => a.key))
      answeredAtKill.push({ keys, chatsSoFar: s.chats.length })
    }
    const last = await dartAsync([...args, "--run-name", "killed", ...base([s], [], "inf_s2")]).done
    expect(last.code).toBe(0)
    // No answer recorded before a kill was ever requested again after it.
    for (const { keys, chatsSoFar } of answeredAtKill) {
      const resent = s.chats.slice(chatsSoFar).filter((c) => !isCanary(c)).map((c) => keyOf(c).replace(/^(.*)\|(.*)\|(\d+)$/, "$1|$2|off|$3")).filter((k) => keys.has(k))
      expect(resent).toEqual([])
    }
    const answers = readJsonl(pred("killed", "answers.jsonl", "inf_s2"))
    expect(new Set(answers.map((a) => a.key)).size).toBe(answers.length)
    // Same rows as an uninterrupted run on the same server.
    const clean = await dartAsync([...args, "--run-name", "clean", ...base([s], [], "inf_s2")]).done
    expect(clean.code).toBe(0)
    expect(readFileSync(pred("killed", "outputs.jsonl", "inf_s2"), "utf8")).toBe(readFileSync(pred("clean", "outputs.jsonl", "inf_s2"), "utf8"))
    expect(readJsonl(pred("killed", "outputs.jsonl", "inf_s2")).length).toBe(items.length * 2)
  }, 120_000)

  it("a server restart mid-run: adapters are loaded again and the run completes", async () => {
    const s = await serve({ latencyMs: 60 })
    const { done } = dartAsync(["infer", "--models", `M0,DART=${dartA}`, "--override", "inference.concurrency=2", "--run-name", "restart", ...base([s])])
    while (s.chats.filter((c) => !isCanary(c)).length < 8) await new Promise((r) => setTimeout(r, 10))
    await s.restart(1500)
    const r = await done
    expect(r.stderr).toContain(`server ${s.url} is back; adapters loaded again`)
    expect(r.code).toBe(0)
    expect(s.loads.filter((l) => l.name === "DART" && l.status === 200).length).toBe(2)
    expect(readJsonl(pred("restart")).length).toBe(items.length)
  }, 60_000)

  it("a growing waiting queue lowers the concurrency", async () => {
    // 3 run at once; anything beyond that waits, and the client must notice and back off.
    const s = await serve({ latencyMs: 25, capacity: 3 })
    const r = await dartAsync(["infer", "--models", "M0", "--override", "inference.concurrency=64", "--run-name", "flood", ...base([s], [], "inf_s12")]).done
    expect(r.code).toBe(0)
    const m = JSON.parse(readFileSync(pred("flood", "manifest.json", "inf_s12"), "utf8"))
    expect(m.servers[0].concurrency.max).toBe(32)
    expect(m.servers[0].concurrency.min).toBeLessThanOrEqual(8)
    expect(m.servers[0].concurrency.final).toBeLessThanOrEqual(12)
  }, 60_000)

  it("two servers: the faster answers more, each row comes from one server, and losing one mid-run still completes", async () => {
    const fast = await serve({ latencyMs: 15, tag: "fast" })
    const slow = await serve({ latencyMs: 60, tag: "slow" })
    const args = ["infer", "--models", `M0,DART=${dartA}`, "--override", "inference.concurrency=4"]
    const r = await dartAsync([...args, "--run-name", "two", ...base([fast, slow], [], "inf_s8")]).done
    expect(r.code).toBe(0)
    const rows = readJsonl(pred("two", "outputs.jsonl", "inf_s8"))
    expect(rows.length).toBe(items.length * 8)
    const by = (url: string) => rows.filter((x) => x.outputs.M0.server === url).length
    for (const row of rows) expect(row.outputs.DART.server).toBe(row.outputs.M0.server)
    expect(by(fast.url)).toBeGreaterThan(by(slow.url))
    expect(by(slow.url)).toBeGreaterThan(0)

    // b crashes on an adapter request once it has answered some base requests: an item whose M0
    // arm b answered moves to a, which must ask M0 again so the row's arms come from one server.
    const a = await serve({ latencyMs: 30, tag: "a" })
    const b = await serve({ latencyMs: 30, tag: "b", crashWhen: (c, n) => c.model === "DART" && n >= 6 })
    const { done } = dartAsync([...args, "--run-name", "lose", ...base([a, b], [], "inf_s8")])
    const lost = await done
    expect(lost.code).toBe(0)
    const rows2 = readJsonl(pred("lose", "outputs.jsonl", "inf_s8"))
    expect(rows2.length).toBe(items.length * 8)
    for (const row of rows2) {
      expect(row.outputs.DART.server).toBe(row.outputs.M0.server)
      expect(row.outputs.M0.text).toBe(cutOutput(row.outputs.M0.text))
    }
    const askedOnB = new Set(b.chats.filter((c) => !isCanary(c) && c.model === "base").map(keyOf))
    const movedToA = rows2.filter((x) => x.outputs.M0.server === a.url && askedOnB.has(`${x.id}|base|${x.sample}`))
    expect(movedToA.length).toBeGreaterThan(0)
  }, 90_000)
})
