import { Cause, Console, Duration, Effect, Exit, Schedule, Schema } from "effect"
import { hashJson } from "../common/Hashing.ts"
import { mainThreadGcMarking } from "../common/GcMarkingScope.ts"
import { formatDuration } from "../common/Progress.ts"
import type { ResolvedConfig } from "../config/ConfigLoader.ts"
import { answerReader, type AnswerRow, indexAnswers, writeLinesAtomic } from "../inference/AnswerStore.ts"
import { loadAdapters } from "../inference/AdapterLoader.ts"
import { CanaryError, type CanaryResult, runCanary } from "../inference/Canary.ts"
import { layoutMessages } from "../domain/ChatLayout.ts"
import { chatLayoutFor } from "./ChatLayoutRecord.ts"
import { type InferRequest, requestKey } from "../inference/InferencePlan.ts"
import type { TaskSelection } from "../tasks/Task.ts"
import { taskNamed } from "../tasks/Tasks.ts"
import { type InferFailure, inferIdentity, inferManifest, type InferStats } from "../inference/InferManifest.ts"
import { predictionRows } from "../inference/PredictionRows.ts"
import { answeredByServer, answeredMask, answerIndexer, armsToAsk, completeRows, itemsMissing, type RequestGrid, requestIndex, size } from "../inference/RequestGrid.ts"
import { describeServers, makeServerScheduler, type ServerHandle, type ServerReport } from "../inference/ServerScheduler.ts"
import { makeDirectories } from "../runs/AtomicFile.ts"
import { openAppender } from "../runs/Jsonl.ts"
import { RunStore } from "../runs/RunStore.ts"
import { AdapterStore, hashAdapter } from "../serving/AdapterStore.ts"
import { VllmClient, VllmError } from "../serving/VllmClient.ts"
import { checkIdentity, checkName, openStage, RunName, StageIncomplete } from "./StageRun.ts"

// Importers of this stage keep finding these here.
export { CanaryError } from "../inference/Canary.ts"
export type { InferRequest } from "../inference/InferencePlan.ts"

export class InferStageError extends Schema.TaggedError<InferStageError>()("InferStageError", {
  message: Schema.String,
  cause: Schema.optionalKey(Schema.Defect())
}) {}

const defaultTiming = { healthIntervalMs: 1000, metricsIntervalMs: 500, downTimeoutMs: 300_000, progressEveryMs: 5000, retries: 5 }

/** A retryable chat failure (5xx, 408, 429, a timeout) is asked again after 0.2, 0.4, … s, jittered and capped at 10 s. */
const retrySchedule = Schedule.exponential("200 millis", 2).pipe(
  Schedule.jittered,
  Schedule.modifyDelay(({ duration }) => Effect.succeed(Duration.min(duration, Duration.seconds(10))))
)

/** Original steps 4 and 8: paired / multi-adapter inference on vLLM, resumable by request key. */
export const runInfer = Effect.fn("InferStage.run")(function*(resolved: ResolvedConfig, request: InferRequest) {
  const store = yield* RunStore
  const vllm = yield* VllmClient
  const adapters = yield* AdapterStore
  const { config } = resolved
  const inf = config.inference
  const timing = { ...defaultTiming, ...request.timing }
  yield* checkName(RunName, "--run-name", request.runName)
  const task = yield* taskNamed(request.task).pipe(Effect.mapError((e) => new InferStageError({ message: e.message })))
  const selection: TaskSelection = { split: request.split, suites: request.suites, limit: request.limit, benchmarks: request.benchmarks }
  const stage = yield* openStage({
    config,
    stage: `infer/${request.runName}`,
    inputs: task.inputs(selection).map((i) => ({ path: i.path, inRun: i.inRun ?? true, required: true, producer: i.producer }))
  })
  const { run } = stage
  const system = task.systemText(request.policy, inf.policies)
  if (typeof system !== "string") return yield* new InferStageError({ message: system.error })
  for (const w of task.warnings?.(selection) ?? []) yield* Console.error(`warning: ${w}`)

  const items = yield* task.readItems(run.file, selection, config).pipe(
    Effect.mapError((e) => new InferStageError({ message: e.message, cause: e }))
  )
  // Answers are keyed by item id: a repeated id would be asked once and written twice.
  const ids = new Set<string>()
  for (const item of items) {
    const id = task.id(item)
    if (ids.has(id)) return yield* new InferStageError({ message: `${task.name} items: id ${JSON.stringify(id)} occurs twice; ids must be unique` })
    ids.add(id)
  }

  const arms = request.arms
  const samples = inf.samples
  const sampling = { ...task.sampling(inf, config), seed: inf.seed }
  const adapterShas = new Map<string, string>()
  for (const a of arms) {
    if (a.adapter !== null) adapterShas.set(a.name, yield* hashAdapter(a.adapter).pipe(Effect.mapError((e) => new InferStageError({ message: `--models ${a.name}: ${e.message}`, cause: e }))))
  }
  // One layout for every request of the run, the canary's too: the one training used (src/domain/ChatLayout.ts).
  const layout = yield* chatLayoutFor(config, run.dir).pipe(Effect.mapError((e) => new InferStageError({ message: e.message, cause: e })))
  const identity = inferIdentity({
    ...request, promptVersion: task.promptVersion, split: task.scope(selection), system, items: items.map((i) => [task.id(i), task.text(i)] as const), samples, adapterShas, sampling, layout
  })
  const dir = `predictions/${request.runName}`
  yield* makeDirectories([run.file(dir)])
  const manifestText = yield* store.readText(run, `${dir}/manifest.json`)
  yield* checkIdentity({
    file: run.file(`${dir}/manifest.json`),
    what: `run "${request.runName}"`,
    recorded: manifestText === undefined ? undefined : (JSON.parse(manifestText) as { identity?: unknown }).identity ?? {},
    current: identity,
    advice: "use a new --run-name (answers are keyed per run)"
  })

  const grid: RequestGrid = { items: items.length, samples, arms: arms.length }
  const total = size(grid)
  const indexOf = answerIndexer({ itemIds: items.map(task.id), armNames: arms.map((a) => a.name), policy: request.policy, samples })
  const answersFile = run.file(`${dir}/answers.jsonl`)
  const before = yield* indexAnswers(answersFile, total, indexOf)
  const done = answeredMask(before.offset)
  const inputsHash = hashJson(identity)
  // SIGINT/SIGTERM and failures are recorded in the ledger; a rerun resumes from answers.jsonl.
  return yield* stage.begin(inputsHash, Effect.gen(function*() {

  // No server is asked (and none reported) when every answer is already there.
  let serverReports: () => ReadonlyArray<ServerReport> = () => []
  const canary: Record<string, CanaryResult> = {}
  const stats: InferStats = { requests: 0, failed: 0, promptTokens: 0, completionTokens: 0, answeredBefore: before.answered }
  const failures: Array<InferFailure> = []
  const started = Date.now()

  /** Loads (or reloads after a restart) every adapter, checks the listing, and runs the canary. */
  const prepare = (s: ServerHandle) =>
    loadAdapters(s, arms, (endpoint, name, dir) => adapters.place(endpoint, name, dir)).pipe(
      Effect.flatMap((baseId) => runCanary({ endpoint: s.endpoint, server: s.url, baseId, arms, seed: inf.seed, layout })),
      Effect.map((passed) => void Object.assign(canary, passed))
    )

  /** Ready, or not yet (a server still starting answers /health before it serves): anything else ends the run. */
  const bringUp = (s: ServerHandle) =>
    Effect.gen(function*() {
      const r = yield* Effect.exit(prepare(s))
      if (Exit.isSuccess(r)) return true
      const e = Cause.squash(r.cause)
      if (e instanceof VllmError && (e.kind === "down" || e.kind === "retryable")) return false
      return yield* (e instanceof InferStageError || e instanceof CanaryError ? e : new InferStageError({ message: e instanceof Error ? e.message : String(e), cause: e }))
    })

  if (before.answered < total) {
    if (request.servers.length === 0) {
      return yield* new InferStageError({ message: "no vLLM server: set compute.vllm.endpoint (or compute.vllm.endpoints for several boxes)" })
    }
    yield* Effect.scoped(Effect.gen(function*() {
      yield* mainThreadGcMarking
      const appender = yield* openAppender(answersFile)
      const answeredBy = answeredByServer(done, before.server, before.servers, request.servers)
      const scheduler = yield* makeServerScheduler({ servers: request.servers, endpoint: vllm.endpoint, maxConcurrency: inf.concurrency, ...timing, prepare: bringUp })
      serverReports = scheduler.report

      /** Asks for every missing answer of one item on `s`; false when `s` went down meanwhile (the item goes back). */
      const processItem = (s: ServerHandle, it: number) =>
        Effect.gen(function*() {
          const item = items[it]!
          const messages = layoutMessages(layout, task.messages(item, system))
          for (let sample = 0; sample < samples; sample++) {
            for (const a of armsToAsk(grid, done, answeredBy, s.idx, it, sample)) {
              if (!s.isUp()) return false
              const arm = arms[a]!
              const key = requestKey(task.id(item), arm.name, request.policy, sample)
              const result = yield* Effect.exit(s.endpoint.chat({
                model: arm.adapter === null ? s.baseId! : arm.name,
                messages,
                sampling: { ...sampling, seed: sampling.seed + sample },
                ...(layout.stopTokenIds.length > 0 ? { stopTokenIds: layout.stopTokenIds } : {}),
                ...(request.constrained && task.constraint !== null ? { structuredOutputs: task.constraint } : {})
              }).pipe(Effect.retry({ schedule: retrySchedule, times: timing.retries, while: (e) => e.kind === "retryable" })))
              stats.requests++
              if (Exit.isFailure(result)) {
                const e = Cause.squash(result.cause)
                if (e instanceof VllmError && (e.kind === "down" || e.kind === "lost_model")) {
                  yield* s.markDown(e.message)
                  return false
                }
                stats.failed++
                failures.push({ key, server: s.url, reason: e instanceof Error ? e.message : String(e) })
                continue
              }
              const answer = result.value
              yield* appender.append([{
                key,
                id: task.id(item),
                model: arm.name,
                policy: request.policy,
                sample,
                text: answer.texts[0]!,
                finish_reason: answer.finishReasons[0] ?? null,
                prompt_tokens: answer.promptTokens,
                completion_tokens: answer.completionTokens,
                server: s.url
              } satisfies AnswerRow])
              const i = requestIndex(grid, { item: it, sample, arm: a })
              done[i] = 1
              answeredBy[i] = s.idx
              s.countAnswer()
              stats.promptTokens += answer.promptTokens
              stats.completionTokens += answer.completionTokens
            }
          }
          return true
        })

      const progress = Effect.gen(function*() {
        const elapsed = (Date.now() - started) / 1000
        const answered = stats.requests
        const left = total - before.answered - stats.requests
        const rate = elapsed > 0 ? answered / elapsed : 0
        yield* Console.error(
          `infer ${request.runName}: ${total - left}/${total} requests ${rate.toFixed(1)}/s ` +
            `${(stats.completionTokens / Math.max(elapsed, 1e-9)).toFixed(0)} tokens/s ETA ${formatDuration(rate > 0 ? left / rate : Number.POSITIVE_INFINITY)}` +
            ` | ${describeServers(scheduler.report())}`
        )
      }).pipe(Effect.repeat(Schedule.spaced(Duration.millis(timing.progressEveryMs))), Effect.delay(Duration.millis(timing.progressEveryMs)))

      yield* Effect.forkScoped(progress)
      yield* scheduler.run(itemsMissing(grid, done), processItem).pipe(
        Effect.catchTag("NoServerAnswered", (e) => Effect.fail(new InferStageError({ message: e.message })))
      )
    }))
  }

  // Group the answers into contract rows: all arms of an item and sample in one row.
  const index = yield* indexAnswers(answersFile, total, indexOf)
  yield* Effect.scoped(Effect.gen(function*() {
    const read = yield* answerReader(answersFile, index)
    const rows = predictionRows({ task, policy: request.policy, items, samples, arms: arms.map((a) => a.name), answered: (i) => index.offset[i]! >= 0, read })
    yield* writeLinesAtomic(run.file(`${dir}/outputs.jsonl`), rows)
  }))
  const complete = completeRows(grid, answeredMask(index.offset))
  const rowsTotal = items.length * samples
  const manifest = inferManifest({
    runName: request.runName, identity, arms, adapterShas, servers: serverReports(), canary, rows: { complete, total: rowsTotal }, stats, failures,
    seconds: (Date.now() - started) / 1000
  })
  const manifestOut = yield* store.writeFile(run, `${dir}/manifest.json`, `${JSON.stringify(manifest, null, 2)}\n`)
  const outs = yield* Effect.forEach([`${dir}/outputs.jsonl`, `${dir}/answers.jsonl`], (p) => store.describeFile(run, p))
  const allDone = complete === rowsTotal
  yield* stage.finish({
    status: allDone ? "done" : "failed",
    outputs: [manifestOut, ...outs.filter((o) => o !== undefined)],
    ...(allDone ? {} : { error: `${rowsTotal - complete} rows incomplete` })
  })
  yield* Console.log(`infer ${request.runName}: ${complete}/${rowsTotal} rows in ${run.file(`${dir}/outputs.jsonl`)} (${stats.requests} requests this run, ${stats.answeredBefore} answers kept from earlier runs)`)
  if (!allDone) {
    const why = failures.slice(0, 3).map((f) => `${f.key} on ${f.server}: ${f.reason}`).join("; ")
    return yield* new StageIncomplete({ message: `${rowsTotal - complete} of ${rowsTotal} rows incomplete (${stats.failed} requests failed${why ? `: ${why}` : ""}); run again to retry them` })
  }
  }))
}, Effect.scoped)
