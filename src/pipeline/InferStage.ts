import { Cause, Console, Deferred, Duration, Effect, Exit, Latch, Queue, Schedule, Schema, Semaphore } from "effect"
import * as fs from "node:fs"
import { hashJson } from "../common/Hashing.ts"
import { mainThreadMarking } from "../common/MainThreadMarking.ts"
import { formatDuration } from "../common/Progress.ts"
import type { ResolvedConfig } from "../config/ConfigLoader.ts"
import { NormalizedItemSchema, type Split } from "../datasets/BenchmarkItem.ts"
import { type AnswerIndex, type AnswerRow, indexAnswers, readAnswer, writeLinesAtomic } from "../inference/AnswerStore.ts"
import { nextConcurrency } from "../inference/Concurrency.ts"
import {
  type Arm,
  canaryPrompts,
  constraintFor,
  cutOutput,
  type InferTask,
  mcSampling,
  messagesFor,
  policyText,
  promptVersion,
  requestKey
} from "../inference/InferencePlan.ts"
import { openAppender } from "../runs/Jsonl.ts"
import { readRows } from "../runs/Jsonl.ts"
import { acquireStageLock } from "../runs/RunLock.ts"
import { RunStore } from "../runs/RunStore.ts"
import { AdapterStore, hashAdapter } from "../serving/AdapterStore.ts"
import { type Sampling, VllmClient, type VllmEndpoint, VllmError } from "../serving/VllmClient.ts"
import { Runtime } from "effect"

export class InferStageError extends Schema.TaggedError<InferStageError>()("InferStageError", { message: Schema.String }) {}

/** An adapter answered the canary prompts exactly like the base: it is probably not applied (vllm#34186). */
export class CanaryError extends Schema.TaggedError<CanaryError>()("CanaryError", { message: Schema.String }) {}

/** Some requests failed for good this run; a rerun asks for exactly those (exit code 4). */
export class InferIncomplete extends Schema.TaggedError<InferIncomplete>()("InferIncomplete", { message: Schema.String }) {
  override readonly [Runtime.errorExitCode] = 4
}

export interface InferRequest {
  readonly runName: string
  readonly arms: ReadonlyArray<Arm>
  readonly task: InferTask
  readonly policy: string
  readonly split: Split
  readonly limit: number | undefined
  readonly benchmarks: ReadonlyArray<string> | undefined
  /** vLLM servers (one per box); all arms of an item go to the same one. */
  readonly servers: ReadonlyArray<string>
  readonly constrained: boolean
  readonly timing?: {
    readonly healthIntervalMs?: number
    readonly metricsIntervalMs?: number
    /** How long the run waits with no server up before it stops (answers so far are kept). */
    readonly downTimeoutMs?: number
    readonly progressEveryMs?: number
    readonly retries?: number
  }
}

const runNamePattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/

interface Server {
  readonly idx: number
  readonly url: string
  readonly ep: VllmEndpoint
  readonly latch: Latch.Latch
  readonly sem: Semaphore.Semaphore
  up: boolean
  target: number
  minSeen: number
  maxSeen: number
  downSince: number
  baseId: string | null
  version: string | null
  answered: number
  restarts: number
  busy: number
}

/** Original steps 4 and 8: paired / multi-adapter inference on vLLM, resumable by request key. */
export const runInfer = Effect.fn("InferStage.run")(function*(resolved: ResolvedConfig, request: InferRequest) {
  const store = yield* RunStore
  const vllm = yield* VllmClient
  const adapters = yield* AdapterStore
  const { config } = resolved
  const inf = config.inference
  const timing = {
    healthIntervalMs: request.timing?.healthIntervalMs ?? 1000,
    metricsIntervalMs: request.timing?.metricsIntervalMs ?? 500,
    downTimeoutMs: request.timing?.downTimeoutMs ?? 300_000,
    progressEveryMs: request.timing?.progressEveryMs ?? 5000,
    retries: request.timing?.retries ?? 5
  }
  if (!runNamePattern.test(request.runName)) {
    return yield* new InferStageError({ message: `--run-name "${request.runName}": use letters, digits, '.', '_' or '-'` })
  }
  const run = yield* store.requireRun(config.run.runs_dir, config.run.exp_id)
  const stageName = `infer/${request.runName}`
  yield* acquireStageLock(run.dir, stageName)
  const system = policyText(request.task, request.policy, inf.policies)
  if (typeof system !== "string") return yield* new InferStageError({ message: system.error })
  if (request.split === "test") {
    yield* Console.error("warning: --split test: never feed these predictions to an audit whose repairs train a model (protocol §9 B3)")
  }

  // Items: the split's normalized rows, optionally a subset.
  const itemsFile = run.file(`datasets/${request.split}.jsonl`)
  if (!fs.existsSync(itemsFile)) return yield* new InferStageError({ message: `${itemsFile} does not exist: run \`dart init\` first` })
  yield* store.verifyInput(run, `datasets/${request.split}.jsonl`, { required: true, producer: "`dart init`" })
  let items = yield* readRows(itemsFile, NormalizedItemSchema)
  if (request.benchmarks !== undefined) {
    const known = new Set(items.map((i) => i.benchmark))
    const unknown = request.benchmarks.filter((b) => !known.has(b as never))
    if (unknown.length > 0) return yield* new InferStageError({ message: `--benchmarks: ${unknown.join(", ")} not in the ${request.split} split (has ${[...known].join(", ")})` })
    const wanted = new Set(request.benchmarks)
    items = items.filter((i) => wanted.has(i.benchmark))
  }
  if (request.limit !== undefined) items = items.slice(0, request.limit)
  if (items.length === 0) return yield* new InferStageError({ message: `no items in the ${request.split} split to run` })

  const arms = request.arms
  const samples = inf.samples
  const baseSampling = request.task === "dart"
    ? { temperature: inf.temperature, top_p: inf.top_p, top_k: inf.top_k, max_tokens: inf.max_tokens }
    : mcSampling
  const sampling = { ...baseSampling, seed: inf.seed }
  const adapterShas = new Map<string, string>()
  for (const a of arms) {
    if (a.adapter !== null) adapterShas.set(a.name, yield* hashAdapter(a.adapter).pipe(Effect.mapError((e) => new InferStageError({ message: `--models ${a.name}: ${e.message}` }))))
  }
  const identity = {
    task: request.task,
    policy: request.policy,
    system_prompt: system,
    split: request.split,
    prompt_version: promptVersion(request.task),
    items_hash: hashJson(items.map((i) => [i.id, i.question])),
    samples,
    models: arms.map((a) => ({ name: a.name, adapter_sha256: adapterShas.get(a.name) ?? null })),
    sampling,
    constrained: request.constrained
  }
  const dir = `predictions/${request.runName}`
  yield* Effect.sync(() => fs.mkdirSync(run.file(dir), { recursive: true }))
  const manifestText = yield* store.readText(run, `${dir}/manifest.json`)
  if (manifestText !== undefined) {
    const previous = (JSON.parse(manifestText) as { identity?: Record<string, unknown> }).identity ?? {}
    const differs = Object.keys(identity).filter((k) => JSON.stringify(previous[k]) !== JSON.stringify((identity as Record<string, unknown>)[k]))
    if (differs.length > 0) {
      return yield* new InferStageError({
        message: `${run.file(`${dir}/manifest.json`)}: run "${request.runName}" was made with different ${differs.join(", ")}; use a new --run-name (answers are keyed per run)`
      })
    }
  }

  // Request index = ((item × samples) + sample) × arms + arm.
  const armCount = arms.length
  const total = items.length * samples * armCount
  const itemIndex = new Map(items.map((it, i) => [it.id, i]))
  const armIndex = new Map(arms.map((a, i) => [a.name, i]))
  const indexOf = (r: AnswerRow) => {
    const it = itemIndex.get(r.id)
    const a = armIndex.get(r.model)
    if (it === undefined || a === undefined || r.policy !== request.policy || r.sample < 0 || r.sample >= samples) return -1
    return (it * samples + r.sample) * armCount + a
  }
  const answersFile = run.file(`${dir}/answers.jsonl`)
  const before = yield* indexAnswers(answersFile, total, indexOf)
  const done = new Uint8Array(total)
  for (let i = 0; i < total; i++) done[i] = before.offset[i]! >= 0 ? 1 : 0
  const inputsHash = hashJson(identity)
  yield* store.stageStarted(run, stageName, inputsHash)
  // SIGINT/SIGTERM and failures are recorded in the ledger; a rerun resumes from answers.jsonl.
  return yield* store.guard(run, stageName, Effect.gen(function*() {

  const servers: Array<Server> = []
  const canary: Record<string, unknown> = {}
  const stats = { requests: 0, failed: 0, promptTokens: 0, completionTokens: 0, answeredBefore: before.answered }
  const failures: Array<{ key: string; server: string; reason: string }> = []
  const started = Date.now()

  if (before.answered < total) {
    if (request.servers.length === 0) {
      return yield* new InferStageError({ message: "no vLLM server: set compute.vllm.endpoint (or compute.vllm.endpoints for several boxes)" })
    }
    yield* Effect.scoped(Effect.gen(function*() {
      yield* mainThreadMarking
      const appender = yield* openAppender(answersFile)
      const answeredBy = new Int16Array(total).fill(-1)
      // Earlier answers count as this run's server only when it is the same URL.
      for (let i = 0; i < total; i++) {
        if (done[i]) answeredBy[i] = request.servers.indexOf(before.servers[before.server[i]!]!)
      }
      const maxC = inf.concurrency
      for (const [idx, url] of request.servers.entries()) {
        const initial = Math.min(maxC, 32)
        servers.push({
          idx, url, ep: vllm.endpoint(url), latch: yield* Latch.make(false), sem: yield* Semaphore.make(initial),
          up: false, target: initial, minSeen: initial, maxSeen: initial, downSince: Date.now(), baseId: null, version: null, answered: 0, restarts: 0, busy: 0
        })
      }
      const finished = yield* Deferred.make<void, InferStageError | CanaryError>()
      const queue = yield* Queue.unbounded<number>()
      let remaining = 0
      for (let it = 0; it < items.length; it++) {
        let missing = false
        for (let k = it * samples * armCount; k < (it + 1) * samples * armCount; k++) if (!done[k]) missing = true
        if (missing) {
          remaining++
          yield* Queue.offer(queue, it)
        }
      }

      const markDown = (s: Server, why: string) =>
        Effect.gen(function*() {
          if (!s.up) return
          s.up = false
          s.downSince = Date.now()
          yield* s.latch.close
          yield* Console.error(`infer: server ${s.url} unavailable (${why}); its items go to the others, and it is watched until it answers again`)
        })

      const greedy: Sampling = { temperature: 0, top_p: 1, top_k: null, max_tokens: 24, seed: inf.seed }

      /** Load (or reload after a restart) every adapter, check the listing, and run the canary. */
      const prepare = (s: Server) =>
        Effect.gen(function*() {
          s.version = yield* s.ep.version.pipe(Effect.orElseSucceed(() => "unknown"))
          let cards = yield* s.ep.models
          const base = cards.find((c) => c.parent === null || c.parent === undefined)
          if (base === undefined) return yield* new InferStageError({ message: `${s.url}/v1/models lists no base model` })
          s.baseId = base.id
          for (const a of arms) {
            if (a.adapter === null) continue
            const placed = yield* adapters.place(s.url, a.name, a.adapter).pipe(Effect.mapError((e) => new InferStageError({ message: e.message })))
            const card = cards.find((c) => c.id === a.name)
            if (card !== undefined && card.root === placed.serverPath) continue
            yield* s.ep.loadAdapter(a.name, placed.serverPath, { inPlace: card !== undefined }).pipe(
              // A load whose reply was lost (reset socket, retried) may already have registered it: the listing decides.
              Effect.catchIf((e) => e.status === 400 && /already been loaded/.test(e.message), (e) =>
                s.ep.models.pipe(Effect.flatMap((now) => (now.some((c) => c.id === a.name && c.root === placed.serverPath) ? Effect.void : Effect.fail(e)))))
            )
          }
          cards = yield* s.ep.models
          for (const a of arms) {
            if (a.adapter === null) continue
            const card = cards.find((c) => c.id === a.name)
            if (card === undefined || card.parent !== s.baseId) {
              return yield* new InferStageError({
                message: `${s.url}: adapter "${a.name}" ${card === undefined ? "is not listed" : `is listed with parent ${String(card.parent)}`} after loading (expected parent ${s.baseId})`
              })
            }
          }
          const adapterArms = arms.filter((a) => a.adapter !== null)
          if (adapterArms.length > 0) {
            const ask = (model: string) =>
              Effect.forEach(canaryPrompts, (messages) => s.ep.chat({ model, messages, sampling: greedy }).pipe(Effect.map((r) => r.texts[0]!)))
            const baseAnswers = yield* ask(s.baseId)
            for (const a of adapterArms) {
              const answers = yield* ask(a.name)
              const differing = answers.filter((t, i) => t !== baseAnswers[i]).length
              canary[a.name] = { server: s.url, prompts: canaryPrompts.length, differing_from_base: differing }
              if (differing === 0) {
                return yield* new CanaryError({
                  message: `canary failed on ${s.url}: adapter "${a.name}" (${a.adapter}) gives exactly the base model's greedy answers on all ` +
                    `${canaryPrompts.length} canary prompts, so it is probably not applied (vLLM silently serves the base for adapters whose ` +
                    "module names it does not match, vllm#34186); check its target modules and weights"
                })
              }
            }
          }
        })

      const bringUp = (s: Server) =>
        Effect.gen(function*() {
          const r = yield* Effect.exit(prepare(s))
          if (Exit.isSuccess(r)) {
            s.up = true
            yield* s.latch.open
            if (s.restarts++ > 0) yield* Console.error(`infer: server ${s.url} is back; adapters loaded again, canary passed`)
            return
          }
          const e = Cause.squash(r.cause)
          if (e instanceof VllmError && (e.kind === "down" || e.kind === "retryable")) return // not ready yet: try again later
          yield* Deferred.fail(finished, e instanceof InferStageError || e instanceof CanaryError ? e : new InferStageError({ message: e instanceof Error ? e.message : String(e) }))
        })

      const monitor = (s: Server) =>
        Effect.gen(function*() {
          if (!s.up) {
            if (yield* s.ep.health) yield* bringUp(s)
            return
          }
          const m = yield* Effect.result(s.ep.metrics)
          if (m._tag === "Success") {
            const next = nextConcurrency(s.target, m.success, { min: 1, max: maxC }, s.busy)
            if (next !== s.target) {
              s.target = next
              s.minSeen = Math.min(s.minSeen, next)
              s.maxSeen = Math.max(s.maxSeen, next)
              yield* Semaphore.resize(s.sem, next)
            }
          } else if (!(yield* s.ep.health)) yield* markDown(s, m.failure.message)
        }).pipe(Effect.repeat(Schedule.spaced(Duration.millis(Math.min(timing.healthIntervalMs, timing.metricsIntervalMs)))))

      let lastUp = Date.now()
      const watchdog = Effect.gen(function*() {
        if (servers.some((s) => s.up)) lastUp = Date.now()
        else if (Date.now() - lastUp > timing.downTimeoutMs) {
          yield* Deferred.fail(finished, new InferStageError({
            message: `no vLLM server answered for ${Math.round(timing.downTimeoutMs / 1000)} s (${request.servers.join(", ")}); answers so far are kept, run again to go on`
          }))
        }
      }).pipe(Effect.repeat(Schedule.spaced(Duration.millis(timing.healthIntervalMs))))

      const retrySchedule = Schedule.exponential("200 millis", 2).pipe(
        Schedule.jittered,
        Schedule.modifyDelay(({ duration }) => Effect.succeed(Duration.min(duration, Duration.seconds(10))))
      )

      const processItem = (s: Server, it: number) =>
        Effect.gen(function*() {
          const item = items[it]!
          const messages = messagesFor(request.task, item, system)
          for (let sample = 0; sample < samples; sample++) {
            const row = (it * samples + sample) * armCount
            let missing = false
            for (let a = 0; a < armCount; a++) if (!done[row + a]) missing = true
            if (!missing) continue
            for (let a = 0; a < armCount; a++) {
              const i = row + a
              // All arms of a row come from one server: answers another server gave are asked again here.
              if (done[i] && answeredBy[i] === s.idx) continue
              if (!s.up) return false
              const arm = arms[a]!
              const result = yield* Effect.exit(s.ep.chat({
                model: arm.adapter === null ? s.baseId! : arm.name,
                messages,
                sampling: { ...sampling, seed: sampling.seed + sample },
                ...(request.constrained ? { structuredOutputs: constraintFor(request.task) } : {})
              }).pipe(Effect.retry({ schedule: retrySchedule, times: timing.retries, while: (e) => e.kind === "retryable" })))
              stats.requests++
              if (Exit.isFailure(result)) {
                const e = Cause.squash(result.cause)
                if (e instanceof VllmError && (e.kind === "down" || e.kind === "lost_model")) {
                  yield* markDown(s, e.message)
                  return false
                }
                stats.failed++
                failures.push({ key: requestKey(item.id, arm.name, request.policy, sample), server: s.url, reason: e instanceof Error ? e.message : String(e) })
                continue
              }
              const answer = result.value
              yield* appender.append([{
                key: requestKey(item.id, arm.name, request.policy, sample),
                id: item.id,
                model: arm.name,
                policy: request.policy,
                sample,
                text: answer.texts[0]!,
                finish_reason: answer.finishReasons[0] ?? null,
                prompt_tokens: answer.promptTokens,
                completion_tokens: answer.completionTokens,
                server: s.url
              } satisfies AnswerRow])
              done[i] = 1
              answeredBy[i] = s.idx
              s.answered++
              stats.promptTokens += answer.promptTokens
              stats.completionTokens += answer.completionTokens
            }
          }
          return true
        })

      const worker = (s: Server) =>
        Effect.gen(function*() {
          yield* s.latch.await
          yield* s.sem.take(1)
          const it = yield* Queue.take(queue)
          s.busy++
          const complete = yield* processItem(s, it).pipe(Effect.ensuring(Effect.andThen(Effect.sync(() => void s.busy--), s.sem.release(1))))
          if (!complete) {
            yield* Queue.offer(queue, it)
            return
          }
          if (--remaining === 0) yield* Deferred.succeed(finished, undefined)
        }).pipe(Effect.forever)

      const progress = Effect.gen(function*() {
        const elapsed = (Date.now() - started) / 1000
        const answered = stats.requests
        const left = total - before.answered - stats.requests
        const rate = elapsed > 0 ? answered / elapsed : 0
        yield* Console.error(
          `infer ${request.runName}: ${total - left}/${total} requests ${rate.toFixed(1)}/s ` +
            `${(stats.completionTokens / Math.max(elapsed, 1e-9)).toFixed(0)} tokens/s ETA ${formatDuration(rate > 0 ? left / rate : Number.POSITIVE_INFINITY)}` +
            ` | ${servers.map((s) => `${s.url} ${s.up ? `c=${s.target}` : "down"} ${s.answered}`).join(", ")}`
        )
      }).pipe(Effect.repeat(Schedule.spaced(Duration.millis(timing.progressEveryMs))), Effect.delay(Duration.millis(timing.progressEveryMs)))

      if (remaining === 0) return
      for (const s of servers) {
        yield* Effect.forkScoped(monitor(s))
        for (let w = 0; w < maxC; w++) yield* Effect.forkScoped(worker(s))
      }
      yield* Effect.forkScoped(watchdog)
      yield* Effect.forkScoped(progress)
      yield* Deferred.await(finished)
    }))
  }

  // Group the answers into contract rows: all arms of an item and sample in one row.
  const index: AnswerIndex = yield* indexAnswers(answersFile, total, indexOf)
  const fd = fs.existsSync(answersFile) ? fs.openSync(answersFile, "r") : -1
  let complete = 0
  const rowsOut = function*() {
    for (let it = 0; it < items.length; it++) {
      const item = items[it]!
      for (let sample = 0; sample < samples; sample++) {
        const base = (it * samples + sample) * armCount
        const outputs: Record<string, { text: string; finish_reason: string | null; server: string }> = {}
        let ok = true
        for (let a = 0; a < armCount; a++) {
          if (index.offset[base + a]! < 0) {
            ok = false
            break
          }
          const r = readAnswer(fd, index, base + a)
          outputs[arms[a]!.name] = { text: cutOutput(r.text), finish_reason: r.finish_reason, server: r.server }
        }
        if (!ok) continue
        complete++
        yield `${JSON.stringify({
          task: request.task,
          id: item.id,
          benchmark: item.benchmark,
          condition: item.condition,
          scenario: item.scenario,
          answer: item.answer,
          gold_label: item.gold_label,
          split: item.split,
          policy: request.policy,
          sample,
          outputs
        })}\n`
      }
    }
  }
  yield* writeLinesAtomic(run.file(`${dir}/outputs.jsonl`), rowsOut()).pipe(Effect.ensuring(Effect.sync(() => fd >= 0 && fs.closeSync(fd))))
  const rowsTotal = items.length * samples
  const manifest = {
    run_name: request.runName,
    identity,
    models: arms.map((a) => ({ name: a.name, adapter: a.adapter, adapter_sha256: adapterShas.get(a.name) ?? null, served_as: a.adapter === null ? servers[0]?.baseId ?? null : a.name })),
    key: "id|model|policy|sample",
    servers: servers.map((s) => ({ url: s.url, version: s.version, base_model: s.baseId, answered: s.answered, concurrency: { final: s.target, min: s.minSeen, max: s.maxSeen } })),
    canary,
    rows: { complete, total: rowsTotal },
    this_run: {
      requests: stats.requests,
      failed: stats.failed,
      answered_before: stats.answeredBefore,
      prompt_tokens: stats.promptTokens,
      completion_tokens: stats.completionTokens,
      seconds: (Date.now() - started) / 1000
    },
    failures: failures.slice(0, 100)
  }
  const manifestOut = yield* store.writeFile(run, `${dir}/manifest.json`, `${JSON.stringify(manifest, null, 2)}\n`)
  const outs = yield* Effect.forEach([`${dir}/outputs.jsonl`, `${dir}/answers.jsonl`], (p) => store.describeFile(run, p))
  const allDone = complete === rowsTotal
  yield* store.stageFinished(run, stageName, {
    status: allDone ? "done" : "failed",
    outputs: [manifestOut, ...outs.filter((o) => o !== undefined)],
    ...(allDone ? {} : { error: `${rowsTotal - complete} rows incomplete` })
  })
  yield* Console.log(`infer ${request.runName}: ${complete}/${rowsTotal} rows in ${run.file(`${dir}/outputs.jsonl`)} (${stats.requests} requests this run, ${stats.answeredBefore} answers kept from earlier runs)`)
  if (!allDone) {
    const why = failures.slice(0, 3).map((f) => `${f.key} on ${f.server}: ${f.reason}`).join("; ")
    return yield* new InferIncomplete({ message: `${rowsTotal - complete} of ${rowsTotal} rows incomplete (${stats.failed} requests failed${why ? `: ${why}` : ""}); run again to retry them` })
  }
  }))
}, Effect.mapError((e) =>
  e._tag === "RunStoreError" || e._tag === "NoSuchRunError"
    ? new InferStageError({ message: e.message })
    : e
), Effect.scoped)
