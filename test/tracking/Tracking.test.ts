import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Console, Duration, Effect, Exit } from "effect"
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import * as net from "node:net"
import { tmpdir } from "node:os"
import * as path from "node:path"
import type { ResolvedConfig } from "../../src/config/ConfigLoader.ts"
import type { RunHandle } from "../../src/runs/RunStore.ts"
import { checkTrackingServer, TRACKING_FILE, type TrackingOptions, withTracking } from "../../src/tracking/Tracking.ts"
import { flattenParams } from "../../src/tracking/TrackingParams.ts"
import { resolvedFor } from "../support/RunConfig.ts"
import { type MlflowStandIn, startMlflowStandIn } from "./support/MlflowStandIn.ts"
import { trainingRecord, writeSyntheticRun } from "./support/SyntheticRun.ts"

const scratch = mkdtempSync(path.join(tmpdir(), "dart-tracking-"))
const TOKEN = "mlflow-tok-3f9a7c1e5b2d"
const fast: TrackingOptions = { timeout: Duration.seconds(5), retries: 3, retryBase: Duration.millis(10), maxFailures: 2 }

let mlflow: MlflowStandIn
beforeAll(async () => {
  mlflow = await startMlflowStandIn()
})
afterAll(async () => {
  await mlflow.close()
  rmSync(scratch, { recursive: true, force: true })
})

const handle = (dir: string, expId: string): RunHandle => ({ expId, dir, file: (rel) => path.join(dir, rel) })

const configFor = (expId: string, uri: string, overrides: ReadonlyArray<string> = []) =>
  resolvedFor("configs/smoke.json", [`run.runs_dir=${scratch}`, `run.exp_id=${expId}`, `tracking.mlflow.uri=${uri}`, ...overrides])

/** One `dart run`'s worth of tracking around `body`: start, one stage, end. Returns the exit and what went to stderr. */
const track = <A = void, E = never>(resolved: ResolvedConfig, body?: Effect.Effect<A, E>, options: TrackingOptions = fast) =>
  Effect.gen(function*() {
    const printed: Array<string> = []
    const quiet: Console.Console = { ...globalThis.console, log: () => {}, error: (...a: Array<unknown>) => void printed.push(a.join(" ")) }
    const run = handle(path.join(scratch, resolved.config.run.exp_id), resolved.config.run.exp_id)
    const exit = yield* withTracking(resolved, (t) => t.start(run).pipe(Effect.andThen(body ?? Effect.void), Effect.tap(() => t.stageDone)), options).pipe(
      Effect.provideService(Console.Console, quiet),
      Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env: { MLFLOW_TRACKING_TOKEN: TOKEN } }))),
      Effect.exit
    )
    return { exit, stderr: printed.join("\n"), run }
  })

const trackingFile = (expId: string) => JSON.parse(readFileSync(path.join(scratch, expId, TRACKING_FILE), "utf8"))
const runOf = (expId: string) => mlflow.runs.get(trackingFile(expId).mlflow[mlflow.url].run_id)!
const steps = (runId: string, key: string) => mlflow.history(runId, key).map((m) => m.step)
const sent = (from: number, match: RegExp) => mlflow.requests.slice(from).filter((r) => match.test(`${r.method} ${r.path}`))

describe("tracking against an MLflow server (stand-in)", () => {
  it.live("creates the experiment and the run, logs params, tags, metrics by step and artifacts, records the run id and ends FINISHED", () =>
    Effect.gen(function*() {
      const resolved = configFor("fresh", mlflow.url)
      writeSyntheticRun(scratch, "fresh", resolved.json, { DART: { steps: 1200, evalEvery: 100 }, DART_H: { steps: 30, evalEvery: 10 } })
      const from = mlflow.requests.length
      const { exit, stderr } = yield* track(resolved)
      expect(Exit.isSuccess(exit)).toBe(true)
      const experiment = [...mlflow.experiments.values()].find((e) => e.name === "fresh")!
      const run = runOf("fresh")
      expect(run.experiment_id).toBe(experiment.id)
      expect(run.run_name).toBe("fresh")
      expect(run.status).toBe("FINISHED")
      expect(run.end_time).toBeGreaterThan(0)
      expect(stderr).toContain(`tracking: MLflow run ${run.run_id} at ${mlflow.url}/#/experiments/${experiment.id}/runs/${run.run_id}`)
      // Params: the whole resolved config, flattened.
      const params = flattenParams(resolved.json)
      expect(run.params.size).toBe(params.length)
      expect(run.params.get("training.lora.r")).toBe(String(resolved.config.training.lora.r))
      expect(run.tags.get("dart.exp_id")).toBe("fresh")
      expect(run.tags.get("dart.config_hash")).toBe(resolved.hash)
      expect(run.tags.get("dart.git_commit")).toBe("abc1234")
      // Metrics by step, each step once; several batches, none over MLflow's limits.
      expect(steps(run.run_id, "DART/loss")).toEqual(Array.from({ length: 1200 }, (_, i) => i + 1))
      expect(steps(run.run_id, "DART/eval_loss")).toHaveLength(12)
      expect(mlflow.history(run.run_id, "DART/learning_rate")[0]!.value).toBeCloseTo(2e-4)
      expect(steps(run.run_id, "DART_H/loss")).toHaveLength(30)
      expect(mlflow.history(run.run_id, "eval_main/overall/DART_H/accuracy")).toMatchObject([{ value: 0.65, step: 0 }])
      const batches = sent(from, /^POST \/api\/2\.0\/mlflow\/runs\/log-batch/).map((r) => JSON.parse(r.body))
      expect(batches.filter((b) => b.metrics.length > 0).length).toBeGreaterThanOrEqual(3)
      for (const b of batches) expect(b.metrics.length + b.params.length + b.tags.length).toBeLessThanOrEqual(1000)
      // Artifacts through the proxied artifact API.
      expect([...run.artifacts.keys()].sort()).toEqual([
        "config/config.json", "evaluation/eval_main/overall.csv", "evaluation/eval_main/summary.json", "evaluation/eval_main/tables.md",
        "evaluation/eval_main/tables.tex", "manifest.json", "report.html"
      ])
      expect(run.artifacts.get("report.html")!.toString()).toContain("<p>report</p>")
      expect(JSON.parse(run.artifacts.get("config/config.json")!.toString())).toEqual(resolved.json)
      // tracking.json: the run id, written atomically; the token went only into the Authorization header.
      const record = trackingFile("fresh").mlflow[mlflow.url]
      expect(record).toMatchObject({ experiment: "fresh", experiment_id: experiment.id, run_id: run.run_id, status: "FINISHED" })
      expect(Object.keys(record.artifacts)).toHaveLength(7)
      for (const r of mlflow.requests.slice(from)) expect(r.authorization).toBe(`Bearer ${TOKEN}`)
      expect(readFileSync(path.join(scratch, "fresh", TRACKING_FILE), "utf8")).not.toContain(TOKEN)
      expect(stderr).not.toContain(TOKEN)
      expect(stderr).not.toContain("warning")
    }))

  it.live("a second run continues the same MLflow run (RUNNING again, then FINISHED): new steps appended, nothing logged or uploaded twice", () =>
    Effect.gen(function*() {
      const resolved = configFor("fresh", mlflow.url)
      const runId = runOf("fresh").run_id
      const dir = path.join(scratch, "fresh")
      writeFileSync(path.join(dir, "adapters/DART_H/final/training_record.json"), JSON.stringify(trainingRecord("DART_H", { steps: 45, evalEvery: 10 })))
      writeFileSync(path.join(dir, "report.html"), "<!doctype html><p>report, again</p>\n")
      const from = mlflow.requests.length
      const { exit, stderr } = yield* track(resolved)
      expect(Exit.isSuccess(exit)).toBe(true)
      expect(mlflow.runs.size).toBe(1)
      expect(trackingFile("fresh").mlflow[mlflow.url].run_id).toBe(runId)
      expect(stderr).toContain(`tracking: continuing MLflow run ${runId}`)
      const updates = sent(from, /^POST \/api\/2\.0\/mlflow\/runs\/update/).map((r) => JSON.parse(r.body).status)
      expect(updates).toEqual(["RUNNING", "FINISHED"])
      expect(runOf("fresh").status).toBe("FINISHED")
      expect(steps(runId, "DART/loss")).toHaveLength(1200)
      expect(steps(runId, "DART_H/loss")).toEqual(Array.from({ length: 45 }, (_, i) => i + 1))
      expect(steps(runId, "DART_H/eval_loss")).toEqual([10, 20, 30, 40])
      expect(steps(runId, "eval_main/overall/DART_H/accuracy")).toEqual([0])
      // No param sent again, only the changed file uploaded.
      expect(sent(from, /log-batch/).every((r) => JSON.parse(r.body).params.length === 0)).toBe(true)
      expect(sent(from, /^PUT /).map((r) => r.path)).toEqual([`/api/2.0/mlflow-artifacts/artifacts/${runOf("fresh").experiment_id}/${runId}/artifacts/report.html`])
      expect(runOf("fresh").artifacts.get("report.html")!.toString()).toContain("again")
    }))

  it.live("a process stopped mid-logging leaves a run the next one completes without a duplicate point", () =>
    Effect.gen(function*() {
      const resolved = configFor("partial", mlflow.url)
      writeSyntheticRun(scratch, "partial", resolved.json, { DART: { steps: 2500, evalEvery: 500 } })
      let batches = 0
      mlflow.fail = (r) =>
        /log-batch/.test(r.path) && JSON.parse(r.body).metrics.length > 0 && ++batches >= 3
          ? { status: 400, body: JSON.stringify({ error_code: "INVALID_PARAMETER_VALUE", message: "refused once" }) }
          : undefined
      const first = yield* track(resolved)
      mlflow.fail = undefined
      expect(Exit.isSuccess(first.exit)).toBe(true)
      expect(first.stderr).toContain(`warning: tracking server ${mlflow.url}: POST /api/2.0/mlflow/runs/log-batch: HTTP 400 INVALID_PARAMETER_VALUE: refused once; the run goes on`)
      const runId = runOf("partial").run_id
      expect(steps(runId, "DART/loss")).toHaveLength(2000)
      expect(runOf("partial").status).toBe("RUNNING")
      yield* track(resolved)
      expect(steps(runId, "DART/loss")).toEqual(Array.from({ length: 2500 }, (_, i) => i + 1))
      expect(steps(runId, "DART/learning_rate")).toEqual(Array.from({ length: 2500 }, (_, i) => i + 1))
      expect(runOf("partial").status).toBe("FINISHED")
    }))

  it.live("finds its run by the run folder's tag when killed before it wrote tracking.json", () =>
    Effect.gen(function*() {
      const resolved = configFor("fresh", mlflow.url)
      const runId = runOf("fresh").run_id
      rmSync(path.join(scratch, "fresh", TRACKING_FILE))
      const runs = mlflow.runs.size
      const { stderr } = yield* track(resolved)
      expect(mlflow.runs.size).toBe(runs)
      expect(stderr).toContain(`tracking: MLflow run ${runId} (found by its tag)`)
      expect(trackingFile("fresh").mlflow[mlflow.url].run_id).toBe(runId)
      expect(steps(runId, "DART/loss")).toHaveLength(1200)
    }))

  it.live("retries transient failures (HTTP 503, 429) and gives up at once on the others", () =>
    Effect.gen(function*() {
      const resolved = configFor("flaky", mlflow.url)
      writeSyntheticRun(scratch, "flaky", resolved.json, { DART: { steps: 10, evalEvery: 5 } })
      let creates = 0
      mlflow.fail = (r) =>
        /runs\/create/.test(r.path) && ++creates <= 2
          ? { status: creates === 1 ? 503 : 429, body: JSON.stringify({ error_code: "TEMPORARILY_UNAVAILABLE", message: "busy" }) }
          : undefined
      const { exit, stderr } = yield* track(resolved)
      mlflow.fail = undefined
      expect(Exit.isSuccess(exit)).toBe(true)
      expect(creates).toBe(3)
      expect(stderr).not.toContain("warning")
      expect(steps(runOf("flaky").run_id, "DART/loss")).toHaveLength(10)
      expect(runOf("flaky").status).toBe("FINISHED")
    }))

  it.live("a server that does not answer: a warning naming it and the reason, the run's work goes on, and tracking stops trying after a few failures", () =>
    Effect.gen(function*() {
      const port = yield* Effect.promise(() => new Promise<number>((resolve) => {
        const s = net.createServer().listen(0, "127.0.0.1", () => {
          const p = (s.address() as net.AddressInfo).port
          s.close(() => resolve(p))
        })
      }))
      const uri = `http://127.0.0.1:${port}`
      const resolved = configFor("down", uri)
      writeSyntheticRun(scratch, "down", resolved.json, { DART: { steps: 10, evalEvery: 5 } })
      const { exit, stderr } = yield* track(resolved, Effect.succeed(42))
      expect(exit).toEqual(Exit.succeed(42))
      expect(stderr).toContain(`warning: tracking server ${uri}: GET /api/2.0/mlflow/experiments/get-by-name: connect ECONNREFUSED 127.0.0.1:${port}; the run goes on\n`)
      expect(stderr).toContain("tracking is off for the rest of this process after 2 failed attempts; the next `dart run` logs what is missing")
      // start and the stage failed: the end makes no third attempt.
      expect(stderr.match(/warning: tracking server/g)).toHaveLength(2)
      expect(existsSync(path.join(scratch, "down", TRACKING_FILE))).toBe(false)
    }))

  it.live("a failed run is marked FAILED, an interrupted one KILLED; the caller sees the run's own outcome", () =>
    Effect.gen(function*() {
      const resolved = configFor("ends", mlflow.url)
      writeSyntheticRun(scratch, "ends", resolved.json, { DART: { steps: 5, evalEvery: 5 } })
      const failed = yield* track(resolved, Effect.fail("stage failed"))
      expect(failed.exit).toEqual(Exit.fail("stage failed"))
      expect(runOf("ends").status).toBe("FAILED")
      const interrupted = yield* track(resolved, Effect.interrupt)
      expect(Exit.hasInterrupts(interrupted.exit)).toBe(true)
      expect(runOf("ends").status).toBe("KILLED")
      expect(interrupted.stderr).toContain(`tracking: MLflow run ${runOf("ends").run_id} KILLED`)
      expect(mlflow.runs.size).toBe([...mlflow.runs.values()].filter((r) => r.run_name !== "ends").length + 1)
    }))

  it.live("a config value changed since the params were logged is named in a warning and left as MLflow holds it", () =>
    Effect.gen(function*() {
      const first = configFor("changed", mlflow.url)
      writeSyntheticRun(scratch, "changed", first.json, { DART: { steps: 5, evalEvery: 5 } })
      yield* track(first)
      const from = mlflow.requests.length
      const { stderr } = yield* track(configFor("changed", mlflow.url, ["teacher.max_concurrency=3", "inference.concurrency=7"]))
      expect(stderr).toContain("2 config value(s) differ from the params this MLflow run logged before (teacher.max_concurrency, inference.concurrency)")
      expect(sent(from, /log-batch/).some((r) => JSON.parse(r.body).params.length > 0)).toBe(false)
      expect(runOf("changed").params.get("teacher.max_concurrency")).toBe(String(first.config.teacher.max_concurrency))
      // The config artifact is this run's, whole.
      expect(JSON.parse(runOf("changed").artifacts.get("config/config.json")!.toString()).teacher.max_concurrency).toBe(3)
      expect(runOf("changed").status).toBe("FINISHED")
    }))

  it.live("a reply that is not MLflow's shape is refused by its schema; an artifact store the server does not proxy is named", () =>
    Effect.gen(function*() {
      const resolved = configFor("hostile", mlflow.url)
      writeSyntheticRun(scratch, "hostile", resolved.json, { DART: { steps: 5, evalEvery: 5 } })
      mlflow.mangle = (r, reply) => (/get-by-name/.test(r.path) ? { status: 200, body: JSON.stringify({ experiment: { id: 7 } }) } : reply)
      const broken = yield* track(resolved)
      expect(Exit.isSuccess(broken.exit)).toBe(true)
      expect(broken.stderr).toMatch(/warning: tracking server [^ ]+: GET \/api\/2\.0\/mlflow\/experiments\/get-by-name: unexpected reply: .*experiment_id/)
      mlflow.mangle = (r, reply) =>
        /runs\/(create|get)/.test(r.path) ? { ...reply, body: reply.body.replaceAll(/mlflow-artifacts:\/[^"]*/g, "s3://bucket/run/artifacts") } : reply
      const s3 = yield* track(resolved)
      mlflow.mangle = undefined
      expect(s3.stderr).toContain("keeps its artifacts at s3://bucket/run/artifacts, which the server does not proxy (start it with --serve-artifacts); artifacts are not uploaded")
      expect(runOf("hostile").artifacts.size).toBe(0)
      expect(steps(runOf("hostile").run_id, "DART/loss")).toHaveLength(5)
    }))

  it.live("does nothing at all when tracking.mlflow.uri is null", () =>
    Effect.gen(function*() {
      const resolved = resolvedFor("configs/smoke.json", [`run.runs_dir=${scratch}`, "run.exp_id=off"])
      writeSyntheticRun(scratch, "off", resolved.json, { DART: { steps: 5, evalEvery: 5 } })
      const from = mlflow.requests.length
      const { exit, stderr } = yield* track(resolved, Effect.succeed("ok"))
      expect(exit).toEqual(Exit.succeed("ok"))
      expect(stderr).toBe("")
      expect(mlflow.requests.length).toBe(from)
      expect(existsSync(path.join(scratch, "off", TRACKING_FILE))).toBe(false)
    }))
})

describe("checkTrackingServer (for the preflight)", () => {
  it.live("passes a server that answers, names one that refuses the token or does not answer", () =>
    Effect.gen(function*() {
      const env = (vars: Record<string, string>) => Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env: vars })))
      expect(yield* checkTrackingServer(configFor("check", mlflow.url).config).pipe(env({}))).toBeUndefined()
      expect(yield* checkTrackingServer(resolvedFor("configs/smoke.json").config).pipe(env({}))).toBeUndefined()
      mlflow.fail = (r) => (r.authorization === "Bearer wrong-token-000" ? { status: 401, body: JSON.stringify({ error_code: "UNAUTHENTICATED", message: "bad token" }) } : undefined)
      const refused = yield* checkTrackingServer(configFor("check", mlflow.url, ["tracking.mlflow.token_env=MY_MLFLOW_TOKEN"]).config).pipe(env({ MY_MLFLOW_TOKEN: "wrong-token-000" }))
      mlflow.fail = undefined
      expect(refused).toBe(`tracking server ${mlflow.url}: GET /api/2.0/mlflow/experiments/get-by-name: HTTP 401 UNAUTHENTICATED: bad token (is MY_MLFLOW_TOKEN set to a valid token?)`)
      const down = yield* checkTrackingServer(configFor("check", "http://127.0.0.1:9").config).pipe(env({}))
      expect(down).toMatch(/^tracking server http:\/\/127\.0\.0\.1:9: GET \/api\/2\.0\/mlflow\/experiments\/get-by-name: (ECONNREFUSED|connect)/)
    }))

  it("refuses a tracking URI with credentials or a non-http scheme in the config", () => {
    expect(() => configFor("bad", "http://user:pw@127.0.0.1:5000")).toThrow(/tracking\.mlflow\.uri.*credentials/)
    expect(() => configFor("bad", "ftp://127.0.0.1:5000")).toThrow(/tracking\.mlflow\.uri.*http\(s\) URL/)
  })
})
