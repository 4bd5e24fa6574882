import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import type { Compute } from "../../src/compute/Compute.ts"
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { inferStage, evaluateStage } from "../../src/pipeline/Stages.ts"
import { RunStore } from "../../src/runs/RunStore.ts"
import { readRows } from "../../src/runs/Jsonl.ts"
import { makeDirectories } from "../../src/runs/AtomicFile.ts"
import type { Task } from "../../src/tasks/Task.ts"
import { builtinTasks, TaskRegistry } from "../../src/tasks/Tasks.ts"
import { dartAsync } from "../support/AdapterFixture.ts"
import { noCompute } from "../support/NoCompute.ts"
import { resolvedFor } from "../support/RunConfig.ts"
import { startVllmStandIn, type VllmStandIn } from "../support/VllmStandIn.ts"

// A task added the way docs/tasks.md says: one module (below) and one line in the registry (here, the test's own
// registry: the built-in tasks plus this one). Nothing else of dart knows about it.
const scratch = mkdtempSync(path.join(tmpdir(), "dart-toy-"))
const toyFile = path.join(scratch, "toy.jsonl")
const ToyItem = Schema.Struct({ id: Schema.String, word: Schema.String })
type ToyItem = typeof ToyItem.Type
const ToyRow = Schema.Struct({ task: Schema.Literal("toy"), id: Schema.String, word: Schema.String, sample: Schema.Int, outputs: Schema.Record(Schema.String, Schema.Struct({ text: Schema.String })) })

const toyTask: Task<ToyItem> = {
  name: "toy",
  description: "say whether a word is long",
  promptVersion: "toy-v1",
  inputs: () => [{ path: toyFile, producer: "the test", inRun: false }],
  scope: () => "toy",
  readItems: () => readRows(toyFile, ToyItem),
  id: (item) => item.id,
  text: (item) => item.word,
  defaultPolicy: () => "off",
  systemText: () => "Answer in one line.",
  messages: (item, system) => [{ role: "system", content: system }, { role: "user", content: `Is "${item.word}" a long word?` }],
  sampling: () => ({ temperature: 0, top_p: 1, top_k: null, max_tokens: 16 }),
  constraint: null,
  keep: (text) => text.toUpperCase(),
  rowLine: (item, at, outputs) => `${JSON.stringify({ task: "toy", id: item.id, word: item.word, sample: at.sample, outputs })}\n`,
  evaluate: (resolved, request) =>
    Effect.gen(function*() {
      const store = yield* RunStore
      const run = yield* store.requireRun(resolved.config.run.runs_dir, resolved.config.run.exp_id)
      const rows = yield* readRows(request.predFile, ToyRow)
      // The toy metric: the share of answers that end on "YES".
      const yes = rows.filter((r) => /YES$/.test(r.outputs[request.aName]!.text)).length
      yield* makeDirectories([run.file(`evaluation/${request.runName}`)])
      yield* store.writeFile(run, `evaluation/${request.runName}/summary.json`, `${JSON.stringify({ task: "toy", rows: rows.length, yes_rate: yes / rows.length })}\n`)
    })
}
const registry = [...builtinTasks, toyTask]

const runs = path.join(scratch, "runs")
const words = ["ox", "encyclopaedia", "cat", "incomprehensibilities", "sun"]
let server: VllmStandIn

beforeAll(async () => {
  const r = await dartAsync(["init", "--exp-id", "toy", "--override", `run.runs_dir=${runs}`, "--override", 'datasets.benchmarks=["D1"]', "--override", "datasets.limits.val=4"]).done
  expect(r.stderr).toBe("")
  writeFileSync(toyFile, words.map((w, i) => `${JSON.stringify({ id: `w${i}`, word: w })}\n`).join(""))
  server = await startVllmStandIn()
}, 60_000)

afterAll(async () => {
  await server?.stop()
})

const resolved = () => resolvedFor("configs/smoke.json", [`run.runs_dir=${runs}`, "run.exp_id=toy", `compute.vllm.endpoint=${server.url}`, "inference.samples=2"])
const request = { runName: "toy_pass", arms: [{ name: "M0", adapter: null }], task: "toy", policy: "off", split: "val" as const, limit: undefined, benchmarks: undefined, constrained: false }
const provide = <A, E>(e: Effect.Effect<A, E, RunStore | Compute>) =>
  e.pipe(Effect.provide(RunStore.layer), Effect.provide(noCompute), Effect.provideService(TaskRegistry, registry))

describe("a task added by one module and one registry line", () => {
  it("runs through dart infer and dart evaluate with its own prompt, rows and metric", async () => {
    const r = resolved()
    await Effect.runPromise(provide(inferStage(r, request, path.join(runs, "toy"))))
    const chats = server.chats.filter((c) => c.messages.at(-1)!.content.startsWith("Is "))
    expect(chats.map((c) => c.messages.at(-1)!.content).sort()).toEqual([...words, ...words].map((w) => `Is "${w}" a long word?`).sort())
    expect(chats[0]!.messages[0]).toEqual({ role: "system", content: "Answer in one line." })
    expect(chats[0]!.body).toMatchObject({ temperature: 0, max_tokens: 16 })

    const predFile = path.join(runs, "toy/predictions/toy_pass/outputs.jsonl")
    const lines = readFileSync(predFile, "utf8").split("\n").filter((l) => l !== "").map((l) => JSON.parse(l))
    // One row per word and sample, in item order, each written by the module and kept through its own `keep`.
    expect(lines.map((l) => [l.task, l.id, l.sample])).toEqual(words.flatMap((_, i) => [["toy", `w${i}`, 0], ["toy", `w${i}`, 1]]))
    for (const l of lines) expect(l.outputs.M0.text).toBe(l.outputs.M0.text.toUpperCase())
    const manifest = JSON.parse(readFileSync(path.join(runs, "toy/predictions/toy_pass/manifest.json"), "utf8"))
    expect(manifest.identity).toMatchObject({ task: "toy", prompt_version: "toy-v1", split: "toy", system_prompt: "Answer in one line." })

    await Effect.runPromise(provide(evaluateStage(r, { predFile, runName: "toy_eval", aName: "M0", bName: undefined, audits: [] })))
    const summary = JSON.parse(readFileSync(path.join(runs, "toy/evaluation/toy_eval/summary.json"), "utf8"))
    const expected = lines.filter((l) => /YES$/.test(l.outputs.M0.text)).length / lines.length
    expect(summary).toEqual({ task: "toy", rows: 10, yes_rate: expected })
  }, 60_000)

  it("is unknown to a registry without its line: infer and evaluate both say so, naming the known tasks", async () => {
    const r = resolved()
    const without = <A, E>(e: Effect.Effect<A, E, RunStore | Compute>) =>
      e.pipe(Effect.provide(RunStore.layer), Effect.provide(noCompute))
    const infer = await Effect.runPromise(Effect.flip(without(inferStage(r, { ...request, runName: "toy_again" }, path.join(runs, "toy")))))
    expect(infer.message).toBe('unknown task "toy" (known: dart, mc, continuation, open_ended)')
    const predFile = path.join(runs, "toy/predictions/toy_pass/outputs.jsonl")
    const evaluate = await Effect.runPromise(Effect.flip(without(evaluateStage(r, { predFile, runName: "toy_eval2", aName: "M0", bName: undefined, audits: [] }))))
    expect(evaluate.message).toBe(`${predFile}:1: unknown task "toy" (known: dart, mc, continuation, open_ended)`)
  }, 60_000)
})
