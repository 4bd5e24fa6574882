import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Console, Effect, Layer } from "effect"
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import type { ComputeProbes } from "../../src/pipeline/Preflight.ts"
import type { Selection } from "../../src/pipeline/RunGraph.ts"
import { RunError, runPipeline } from "../../src/pipeline/RunPipeline.ts"
import { type StageDrivers, stageDrivers } from "../../src/pipeline/Stages.ts"
import { makeDirectories } from "../../src/runs/AtomicFile.ts"
import { type RunHandle, RunStore } from "../../src/runs/RunStore.ts"
import { resolvedFor } from "../support/RunConfig.ts"
import { Compute } from "../../src/compute/Compute.ts"
import { noCompute } from "../support/NoCompute.ts"

const scratch = mkdtempSync(path.join(tmpdir(), "dart-pipeline-"))
const probes: ComputeProbes = {
  host: () => Effect.succeed({ engine: "test", gpus: 1 }),
  image: () => Effect.succeed(true),
  endpoint: () => Effect.void
}
const env = Layer.mergeAll(RunStore.layer, ConfigProvider.layer(ConfigProvider.fromEnv({ env: { DEEPSEEK_API_KEY: "k" } })))

const readJsonl = (file: string) => readFileSync(file, "utf8").trim().split("\n").map((l) => JSON.parse(l))

/**
 * Drivers that do each stage's bookkeeping for real (ledger entries, contract files) without models:
 * init and evaluate are the real stages; the others record their calls and write what the next stage reads.
 */
const recordingDrivers = (calls: Array<string>, opts: { failRepairOnce?: { failed: boolean }; poolFromTest?: boolean } = {}): StageDrivers<Error, RunStore | Compute> => {
  const finish = (run: RunHandle, key: string, files: ReadonlyArray<readonly [string, string]>) =>
    Effect.gen(function*() {
      const store = yield* RunStore
      yield* store.stageStarted(run, key, `inputs-of-${key}`)
      yield* makeDirectories(files.map(([rel]) => path.dirname(run.file(rel))))
      const outputs = yield* Effect.forEach(files, ([rel, text]) => store.writeFile(run, rel, text))
      yield* store.stageFinished(run, key, { status: "done", outputs })
    })
  return {
    init: (resolved) => Effect.sync(() => calls.push("init")).pipe(Effect.andThen(stageDrivers.init(resolved))),
    teacher: (_r, request, run) =>
      Effect.gen(function*() {
        calls.push(`teacher ${request.task}${request.input ? ` ${request.input}` : ""}`)
        const store = yield* RunStore
        if (request.task === "repair" && opts.failRepairOnce && !opts.failRepairOnce.failed) {
          opts.failRepairOnce.failed = true
          yield* store.stageStarted(run, "teacher/repair", "x")
          yield* store.stageFinished(run, "teacher/repair", { status: "failed", outputs: [], error: "HTTP 500" })
          return yield* new RunError({ message: "teacher failed" })
        }
        const work = request.input === null ? readJsonl(run.file("datasets/train.jsonl")) : readJsonl(run.file(request.input))
        const rows = work.map((r: { id: string }) => `${JSON.stringify({ key: r.id, accepted: true })}\n`).join("")
        yield* finish(run, `teacher/${request.task}`, [[`teacher_outputs/${request.task}/outputs.jsonl`, rows]])
      }),
    train: (_r, request, run) =>
      Effect.sync(() => calls.push(`train ${request.adapterName}${request.initAdapter ? ` from ${request.initAdapter}` : ""}`)).pipe(
        Effect.andThen(finish(run, `train/${request.adapterName}`, [[`adapters/${request.adapterName}/final/adapter_config.json`, "{}"]]))
      ),
    infer: (_r, request, run) =>
      Effect.gen(function*() {
        calls.push(`infer ${request.split} ${request.models.map((m) => m.id).join(",")}`)
        const items = readJsonl(run.file(`datasets/${request.split}.jsonl`))
        const rows = items.map((it: any, i: number) =>
          JSON.stringify({
            task: "dart", id: it.id, benchmark: it.benchmark, condition: it.condition, scenario: it.scenario, answer: it.answer, gold_label: it.gold_label, sample: 0,
            outputs: Object.fromEntries(request.models.map((m, k) => [m.id, { text: `Some analysis.\nConclusion: ${k === 0 || i % (k + 2) === 0 ? "YES" : it.gold_label}` }]))
          })
        )
        yield* finish(run, `infer/${request.runName}`, [[`predictions/${request.runName}/outputs.jsonl`, rows.join("\n") + "\n"]])
      }),
    audit: (_r, request, run) =>
      Effect.gen(function*() {
        calls.push(`audit ${request.split} ${request.aName} vs ${request.bName}`)
        const rows = readJsonl(run.file(request.pairedInput))
        const source = opts.poolFromTest ? readJsonl(run.file("datasets/test.jsonl")) : rows
        const pool = source.slice(0, 2).map((r: any) => JSON.stringify({
          id: r.id, benchmark: r.benchmark, question: r.question ?? "q", gold_label: r.gold_label, a_name: request.aName, b_name: request.bName,
          a_text: "a", b_text: "b", severity: "mild", source: "judge", judge: null
        }))
        const cases = request.bName === "DART" ? 10 : 3
        const summary = { run_name: request.runName, a_name: request.aName, b_name: request.bName, n_pairs: rows.length, regressions: { total: cases, by_severity: { mild: cases, moderate: 0, severe: 0, extreme: 0 }, by_type: {}, by_benchmark: {} } }
        yield* finish(run, `audit/${request.runName}`, [
          [`audit/${request.runName}/regression_pool.jsonl`, pool.join("\n") + "\n"],
          [`audit/${request.runName}/summary.json`, JSON.stringify(summary)]
        ])
      }),
    evaluate: (resolved, request, run) => Effect.sync(() => calls.push(`evaluate ${request.runName}`)).pipe(Effect.andThen(stageDrivers.evaluate(resolved, request, run)))
  }
}

/** Runs the pipeline; `printed` collects what it wrote to stdout. */
const printed: Array<string> = []
const quiet: Console.Console = { ...globalThis.console, log: (...a: Array<unknown>) => void printed.push(a.join(" ")), error: () => {} }
const run = (exp: string, drivers: StageDrivers<Error, RunStore | Compute>, selection: Selection = {}) =>
  Effect.sync(() => void printed.splice(0)).pipe(
    Effect.andThen(runPipeline(resolvedFor("configs/smoke.json", [`run.runs_dir=${scratch}`, `run.exp_id=${exp}`, "datasets.limits.test=30", "ood.enabled=false"]), { dryRun: false, selection }, drivers, probes)),
    Effect.provide(env),
    Effect.provide(noCompute),
    Effect.provideService(Console.Console, quiet)
  )

const fullOrder = [
  "init",
  "teacher distill",
  "train DART",
  "infer val M0,DART",
  "audit val M0 vs DART",
  "teacher repair audit/audit_val_M0_vs_DART/regression_pool.jsonl",
  "train DART_H from adapters/DART/final",
  "infer test M0,DART,DART_H",
  "audit test M0 vs DART",
  "audit test M0 vs DART_H",
  "evaluate eval_M0_vs_DART",
  "evaluate eval_main"
]

describe("runPipeline", () => {
  it.effect("runs every stage in order through its driver, then runs none of them again", () =>
    Effect.gen(function*() {
      const calls: Array<string> = []
      yield* run("full", recordingDrivers(calls))
      expect(calls).toEqual(fullOrder)
      const main = JSON.parse(readFileSync(path.join(scratch, "full/evaluation/eval_main/summary.json"), "utf8"))
      expect(main.models).toEqual(["M0", "DART_H"])
      expect(main.harm.reductions[0]).toMatchObject({ from: "audit_test_M0_vs_DART", to: "audit_test_M0_vs_DART_H", relative_change: -0.7 })
      // The headline: all three models, DART_H's harm drift against DART, and where the report is.
      const text = printed.join("\n")
      expect(text).toContain("| model | n | accuracy | Δ vs M0 |")
      expect(text).toMatch(/\n\| M0 \| 30 \| [^\n]*\| – \| – \|\n\| DART \| 30 \| [^\n]*\| 10 of 30 \| – \|\n\| DART_H \| 30 \| [^\n]*\| 3 of 30 \| -70\.0% vs DART/)
      expect(text).toContain(`report: ${path.join(scratch, "full/evaluation/eval_main/report.html")}`)
      const again: Array<string> = []
      yield* run("full", recordingDrivers(again))
      expect(again).toEqual([])
      expect(printed.join("\n")).toMatch(/ {2}evaluate +skip +done, outputs unchanged\n/)
      // An output edited on disk reruns its stage, and the stages after it re-check their inputs.
      writeFileSync(path.join(scratch, "full/adapters/DART/final/adapter_config.json"), "{\"edited\": true}")
      const edited: Array<string> = []
      yield* run("full", recordingDrivers(edited))
      expect(edited).toEqual(fullOrder.slice(2))
    }))

  it.effect("stops when a driver returns without its stage done in the ledger", () =>
    Effect.gen(function*() {
      const calls: Array<string> = []
      const drivers = { ...recordingDrivers(calls), train: () => Effect.sync(() => void calls.push("train (wrote nothing)")) }
      const error = yield* run("silent", drivers).pipe(Effect.flip)
      expect(error.message).toBe("stage train_dart returned but the ledger does not show train/DART as done; stopping here")
      expect(calls).toEqual(["init", "teacher distill", "train (wrote nothing)"])
    }))

  it.effect("stops at a failed stage and resumes there on the next run, redoing nothing finished before it", () =>
    Effect.gen(function*() {
      const calls: Array<string> = []
      const once = { failed: false }
      const error = yield* run("resume", recordingDrivers(calls, { failRepairOnce: once })).pipe(Effect.flip)
      expect(error.message).toBe("teacher failed")
      expect(calls).toEqual(fullOrder.slice(0, 6))
      const rerun: Array<string> = []
      yield* run("resume", recordingDrivers(rerun, { failRepairOnce: once }))
      expect(rerun).toEqual(fullOrder.slice(5))
    }))

  it.effect("honours --until and --from", () =>
    Effect.gen(function*() {
      const calls: Array<string> = []
      yield* run("select", recordingDrivers(calls), { until: "train_dart" })
      expect(calls).toEqual(fullOrder.slice(0, 3))
      const from: Array<string> = []
      yield* run("select", recordingDrivers(from), { from: "infer_audit", until: "audit" })
      expect(from).toEqual(fullOrder.slice(3, 5))
    }))

  it.effect("refuses to repair a pool that holds test items unless the config asks for the original's order", () =>
    Effect.gen(function*() {
      const calls: Array<string> = []
      const error = yield* run("leak", recordingDrivers(calls, { poolFromTest: true })).pipe(Effect.flip)
      expect(error.message).toMatch(/regression_pool\.jsonl holds 2 test item\(s\) .*repairing them would train on the test split/)
      expect(calls.at(-1)).toBe("audit val M0 vs DART")
    }))
})
