import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Console, Effect, Layer } from "effect"
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import type { ComputeProbes } from "../../src/pipeline/Preflight.ts"
import type { Selection } from "../../src/pipeline/RunGraph.ts"
import { runPipeline } from "../../src/pipeline/RunPipeline.ts"
import { type StageDrivers, stageDrivers } from "../../src/pipeline/Stages.ts"
import { makeDirectories } from "../../src/runs/AtomicFile.ts"
import { type RunHandle, RunStore } from "../../src/runs/RunStore.ts"
import { TRACKING_FILE } from "../../src/tracking/Tracking.ts"
import { flattenParams } from "../../src/tracking/TrackingParams.ts"
import { dartAsync } from "../support/AdapterFixture.ts"
import { resolvedFor } from "../support/RunConfig.ts"
import { artifactPaths, history, type MlflowServer, rest, startMlflowServer } from "./support/MlflowServer.ts"
import { type TrainingShape, trainingRecord } from "./support/SyntheticRun.ts"
import { Compute } from "../../src/compute/Compute.ts"
import { noCompute } from "../support/NoCompute.ts"

// The tracking of `dart run` against a real MLflow server (containers/mlflow/.venv): the stage loop in this process
// with drivers that write what each stage would (the real init and evaluate), then `dart run` as its own process,
// SIGKILLed while it logs and run again. Everything is read back through the server's REST API.

const scratch = mkdtempSync(path.join(tmpdir(), "dart-mlflow-run-"))
const runs = path.join(scratch, "runs")
let server: MlflowServer
// Each test fails with the set-up's error (a machine without containers/mlflow/.venv: "run ./scripts/setup.sh"),
// so a missing server shows as failed tests, never as skipped ones.
let unavailable: Error | undefined
beforeAll(async () => {
  server = await startMlflowServer().catch((e: Error) => {
    unavailable = e
    return undefined as unknown as MlflowServer
  })
}, 240_000)
const needServer = Effect.suspend(() => (unavailable === undefined ? Effect.void : Effect.die(unavailable)))
afterAll(async () => {
  await server?.stop()
  if (server !== undefined) rmSync(server.dir, { recursive: true, force: true })
  rmSync(scratch, { recursive: true, force: true })
})

const probes: ComputeProbes = {
  host: () => Effect.succeed({ engine: "test", gpus: 1 }),
  image: () => Effect.succeed(true),
  endpoint: () => Effect.void
}
const env = Layer.mergeAll(RunStore.layer, ConfigProvider.layer(ConfigProvider.fromEnv({ env: {} })))
const readJsonl = (file: string) => readFileSync(file, "utf8").trim().split("\n").map((l) => JSON.parse(l))

/**
 * Drivers that do each stage's bookkeeping for real (ledger entries, contract files) without models: init and evaluate
 * are the real stages; training writes a training record of the given shape; `onAudit` runs inside each audit.
 */
const drivers = (shapes: Readonly<Record<string, TrainingShape>>, onAudit: () => Promise<void> = async () => {}): StageDrivers<Error, RunStore | Compute> => {
  const finish = (run: RunHandle, key: string, files: ReadonlyArray<readonly [string, string]>) =>
    Effect.gen(function*() {
      const store = yield* RunStore
      yield* store.stageStarted(run, key, `inputs-of-${key}`)
      yield* makeDirectories(files.map(([rel]) => path.dirname(run.file(rel))))
      const outputs = yield* Effect.forEach(files, ([rel, text]) => store.writeFile(run, rel, text))
      yield* store.stageFinished(run, key, { status: "done", outputs })
    })
  return {
    init: (resolved) => stageDrivers.init(resolved),
    teacher: (_r, request, run) =>
      Effect.gen(function*() {
        const work = request.input === null ? readJsonl(run.file("datasets/train.jsonl")) : readJsonl(run.file(request.input))
        const rows = work.map((r: { id: string }) => `${JSON.stringify({ key: r.id, accepted: true })}\n`).join("")
        yield* finish(run, `teacher/${request.task}`, [[`teacher_outputs/${request.task}/outputs.jsonl`, rows]])
      }),
    train: (_r, request, run) =>
      finish(run, `train/${request.adapterName}`, [
        [`adapters/${request.adapterName}/final/adapter_config.json`, "{}"],
        [`adapters/${request.adapterName}/final/training_record.json`, JSON.stringify(trainingRecord(request.adapterName, shapes[request.adapterName]!))]
      ]),
    infer: (_r, request, run) =>
      Effect.gen(function*() {
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
        yield* Effect.promise(onAudit)
        const rows = readJsonl(run.file(request.pairedInput))
        const pool = rows.slice(0, 2).map((r: any) => JSON.stringify({
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
    evaluate: (resolved, request, run) => stageDrivers.evaluate(resolved, request, run)
  }
}

const overridesFor = (expId: string, tracking: boolean) => [
  // The DiffAware stages only: what tracking logs of the out-of-distribution ones is checked in run.smoke.test.ts.
  `run.runs_dir=${runs}`, `run.exp_id=${expId}`, "datasets.limits.test=30", "ood.enabled=false",
  ...(tracking ? [`tracking.mlflow.uri=${server.url}`, `tracking.mlflow.experiment=dart-${expId}`] : [])
]

const pipeline = (expId: string, tracking: boolean, d: StageDrivers<Error, RunStore | Compute>, selection: Selection = {}) => {
  const stderr: Array<string> = []
  const quiet: Console.Console = { ...globalThis.console, log: () => {}, error: (...a: Array<unknown>) => void stderr.push(a.join(" ")) }
  return runPipeline(resolvedFor("configs/smoke.json", overridesFor(expId, tracking)), { dryRun: false, selection }, d, probes).pipe(
    Effect.provide(env),
    Effect.provide(noCompute),
    Effect.provideService(Console.Console, quiet),
    Effect.as(stderr)
  )
}

const trackingRecord = (expId: string) => JSON.parse(readFileSync(path.join(runs, expId, TRACKING_FILE), "utf8")).mlflow[server.url]
const getRun = (runId: string) => rest(server.url, "mlflow/runs/get", { run_id: runId }).then((r) => r.run)
const steps = (points: ReadonlyArray<{ step: number }>) => points.map((p) => p.step)
const oneTo = (n: number) => Array.from({ length: n }, (_, i) => i + 1)

describe("dart run's tracking on a real MLflow server", () => {
  it.live("the stage loop logs params, metrics by step and per model, and artifacts; a second run continues the same MLflow run, found by its tag", () =>
    Effect.gen(function*() {
      yield* needServer
      const shapes = { DART: { steps: 120, evalEvery: 20 }, DART_H: { steps: 60, evalEvery: 20 } }
      const firstErr = yield* pipeline("pipe", true, drivers(shapes), { until: "infer_audit" })
      const record = trackingRecord("pipe")
      const runId: string = record.run_id
      let run = yield* Effect.promise(() => getRun(runId))
      expect(run.info.status, firstErr.join("\n")).toBe("FINISHED")
      expect(firstErr.join("\n")).not.toContain("warning: tracking")
      const experiment = yield* Effect.promise(() => rest(server.url, "mlflow/experiments/get-by-name", { experiment_name: "dart-pipe" }))
      expect(run.info.experiment_id).toBe(experiment.experiment.experiment_id)
      expect(steps(yield* Effect.promise(() => history(server.url, runId, "DART/loss")))).toEqual(oneTo(120))
      // The second run: the MLflow run is RUNNING again while its stages run, FINISHED after them. Without tracking.json
      // (as when a process is killed before writing it) the run is found on the server by its tag.
      rmSync(path.join(runs, "pipe", TRACKING_FILE))
      const during: Array<string> = []
      const secondErr = yield* pipeline("pipe", true, drivers(shapes, async () => void during.push((await getRun(runId)).info.status)))
      expect(trackingRecord("pipe").run_id).toBe(runId)
      expect(during).toEqual(["RUNNING", "RUNNING", "RUNNING"])
      run = yield* Effect.promise(() => getRun(runId))
      expect(run.info.status, secondErr.join("\n")).toBe("FINISHED")
      expect(secondErr.join("\n")).toContain(`tracking: MLflow run ${runId} (found by its tag)`)

      // Params: the resolved config, flattened, read back as the server holds them.
      const resolved = resolvedFor("configs/smoke.json", overridesFor("pipe", true))
      const params = new Map<string, string>(run.data.params.map((p: any) => [p.key, p.value ?? ""]))
      expect(params.size).toBe(flattenParams(resolved.json).length)
      expect(params.get("training.lora.r")).toBe("8")
      expect(params.get("tracking.mlflow.uri")).toBe(server.url)
      // Training metrics by step, per adapter, each step once although two processes logged.
      expect(steps(yield* Effect.promise(() => history(server.url, runId, "DART/loss")))).toEqual(oneTo(120))
      expect(steps(yield* Effect.promise(() => history(server.url, runId, "DART_H/loss")))).toEqual(oneTo(60))
      expect(steps(yield* Effect.promise(() => history(server.url, runId, "DART_H/eval_loss")))).toEqual([20, 40, 60])
      const lr = yield* Effect.promise(() => history(server.url, runId, "DART/learning_rate"))
      expect(lr[0]!.value).toBeCloseTo(2e-4)
      // Evaluation metrics per model, as the evaluation's summary has them.
      const summary = JSON.parse(readFileSync(path.join(runs, "pipe/evaluation/eval_main/summary.json"), "utf8"))
      const metrics = new Map<string, number>(run.data.metrics.map((m: any) => [m.key, m.value]))
      expect(metrics.get("eval_main/overall/DART_H/accuracy")).toBeCloseTo(summary.overall.DART_H.accuracy, 12)
      expect(metrics.get("eval_main/overall/M0/equal_accuracy")).toBeCloseTo(summary.overall.M0.equal_accuracy, 12)
      expect(metrics.get("eval_M0_vs_DART/overall/DART/accuracy")).toBeGreaterThanOrEqual(0)
      expect(metrics.get("eval_main/harm/reduction/audit_test_M0_vs_DART_H/relative_change")).toBeCloseTo(-0.7, 12)
      // Artifacts through the server's proxied artifact API.
      const files = yield* Effect.promise(() => artifactPaths(server.url, runId))
      for (const f of ["config/config.json", "manifest.json", "evaluation/eval_main/summary.json", "evaluation/eval_main/tables.md", "evaluation/eval_main/tables.tex"]) {
        expect(files).toContain(f)
      }
      expect(files.some((f) => /^evaluation\/eval_main\/.*\.csv$/.test(f))).toBe(true)
      // The run report, when the run wrote one (runs/{EXP_ID}/report.html, after the evaluation).
      if (existsSync(path.join(runs, "pipe/report.html"))) expect(files).toContain("report.html")
      const config = yield* Effect.promise(() => fetch(`${server.url}/api/2.0/mlflow-artifacts/artifacts/${run.info.experiment_id}/${runId}/artifacts/config/config.json`).then((r) => r.json()))
      expect(config).toEqual(resolved.json)
    }))

  it.live("`dart run` SIGKILLed while it logs, then run again: the same MLflow run, every step once, FINISHED; a third run changes nothing", () =>
    Effect.gen(function*() {
      yield* needServer
      const N = 20_000
      // A finished run folder, made without tracking; its training records are long enough to take many batches.
      yield* pipeline("killed", false, drivers({ DART: { steps: N, evalEvery: 100 }, DART_H: { steps: N, evalEvery: 100 } }))
      expect(existsSync(path.join(runs, "killed", TRACKING_FILE))).toBe(false)
      // As the end of a run leaves it (the run's own report step writes it again when it can).
      writeFileSync(path.join(runs, "killed/report.html"), "<!doctype html><title>killed</title><p>run report</p>\n")
      const args = ["run", "--config", "configs/smoke.json", ...overridesFor("killed", true).flatMap((o) => ["--override", o])]

      // Killed once DART/loss has reached a step chosen at random (DART_TRACKING_KILL_STEP repeats one), before its end.
      const killFrom = Number(process.env.DART_TRACKING_KILL_STEP ?? 1000 * (1 + Math.floor(Math.random() * 12)))
      const first = dartAsync(args)
      let killedAt: number | undefined
      let runId: string | undefined
      const t0 = Date.now()
      while (killedAt === undefined && first.child.exitCode === null && Date.now() - t0 < 180_000) {
        yield* Effect.sleep("25 millis")
        if (runId === undefined && existsSync(path.join(runs, "killed", TRACKING_FILE))) runId = trackingRecord("killed").run_id
        if (runId === undefined) continue
        const latest = (yield* Effect.promise(() => getRun(runId!))).data.metrics?.find((m: any) => m.key === "DART/loss")
        if (latest !== undefined && latest.step >= Math.min(killFrom, N - 1) && latest.step < N) {
          first.child.kill("SIGKILL")
          killedAt = latest.step
        }
      }
      const killed = yield* Effect.promise(() => first.done)
      console.log(`dart run SIGKILLed ${Date.now() - t0} ms after its start, at DART/loss step ${killedAt} of ${N} (DART_TRACKING_KILL_STEP=${killFrom})`)
      expect(killedAt, `never saw the run part-logged; dart run ended with ${killed.code}:\n${killed.stderr.slice(-3000)}`).toBeDefined()
      expect(killed.signal).toBe("SIGKILL")
      expect((yield* Effect.promise(() => getRun(runId!))).info.status).toBe("RUNNING")
      const partial = steps(yield* Effect.promise(() => history(server.url, runId!, "DART/loss")))
      expect(partial.length).toBeLessThan(N)
      expect(partial).toEqual(oneTo(partial.length))

      const resumed = yield* Effect.promise(() => dartAsync(args).done)
      expect(resumed.code, resumed.stderr.slice(-3000)).toBe(0)
      expect(resumed.stderr).toContain(`tracking: continuing MLflow run ${runId}`)
      expect(resumed.stderr).not.toContain("warning: tracking")
      expect(trackingRecord("killed").run_id).toBe(runId)
      const done = yield* Effect.promise(() => getRun(runId!))
      expect(done.info.status).toBe("FINISHED")
      for (const key of ["DART/loss", "DART/learning_rate", "DART_H/loss", "DART_H/learning_rate"]) {
        expect(steps(yield* Effect.promise(() => history(server.url, runId!, key))), key).toEqual(oneTo(N))
      }
      expect(steps(yield* Effect.promise(() => history(server.url, runId!, "DART_H/eval_loss")))).toHaveLength(N / 100)
      const params = new Map<string, string>(done.data.params.map((p: any) => [p.key, p.value ?? ""]))
      expect(params.size).toBe(flattenParams(resolvedFor("configs/smoke.json", overridesFor("killed", true)).json).length)
      const files = yield* Effect.promise(() => artifactPaths(server.url, runId!))
      expect(files).toEqual(expect.arrayContaining(["config/config.json", "manifest.json", "evaluation/eval_main/tables.md", "evaluation/eval_main/summary.json"]))
      expect(files).toContain("report.html")

      // A re-run of the finished run: the same MLflow run, RUNNING and FINISHED again, no point added.
      const again = yield* Effect.promise(() => dartAsync(args).done)
      expect(again.code, again.stderr.slice(-3000)).toBe(0)
      const after = yield* Effect.promise(() => getRun(runId!))
      expect(after.info.status).toBe("FINISHED")
      expect(Number(after.info.end_time)).toBeGreaterThan(Number(done.info.end_time))
      expect(steps(yield* Effect.promise(() => history(server.url, runId!, "DART/loss")))).toHaveLength(N)
      const experiment = yield* Effect.promise(() => rest(server.url, "mlflow/experiments/get-by-name", { experiment_name: "dart-killed" }))
      const all = yield* Effect.promise(() => rest(server.url, "mlflow/runs/search", {}, { experiment_ids: [experiment.experiment.experiment_id] }))
      expect(all.runs.map((r: any) => r.info.run_id)).toEqual([runId])
    }), 600_000)
})
