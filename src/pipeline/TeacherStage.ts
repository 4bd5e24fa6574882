import { Console, Context, Effect, Layer, Schema } from "effect"
import { hashJson, sha256Hex } from "../common/Hashing.ts"
import { checkPoolEntries, readPoolEntries, readRunItems } from "../audit/RegressionPool.ts"
import { type TeacherOutput, TeacherOutputKey } from "../contracts/TeacherOutput.ts"
import { reportProgress } from "../common/Progress.ts"
import type { ResolvedConfig } from "../config/ConfigLoader.ts"
import type { ExperimentConfig } from "../config/ExperimentConfig.ts"
import { NormalizedItemSchema, type Split, splits } from "../datasets/BenchmarkItem.ts"
import { fileExists, makeDirectories } from "../runs/AtomicFile.ts"
import { irregularInputReason } from "../runs/SafePath.ts"
import { openAppender, readRows } from "../runs/Jsonl.ts"
import { RunStore } from "../runs/RunStore.ts"
import { costUsd, makePaidRequests } from "../llm/PaidRequests.ts"
import type { ChatMessage } from "../domain/ChatMessage.ts"
import type { Label } from "../domain/Label.ts"
import { isRunServer } from "../config/RunServerBinding.ts"
import { layoutMessages, NATIVE } from "../domain/ChatLayout.ts"
import { chatLayoutFor } from "./ChatLayoutRecord.ts"
import { correctionMessage, distillMessages, PROMPT_VERSION, repairMessages, studentMessages } from "../teacher/Prompts.ts"
import { checkReply } from "../teacher/ReplyFilter.ts"
import { openLedger } from "../llm/ResponseLedger.ts"
import { providerBaseUrl, LlmClient, LlmError } from "../llm/LlmClient.ts"
import { BudgetStop, openStage, StageIncomplete } from "./StageRun.ts"

export type TeacherTask = "distill" | "repair"

export class TeacherStageError extends Schema.TaggedError<TeacherStageError>()("TeacherStageError", {
  message: Schema.String,
  cause: Schema.optionalKey(Schema.Defect())
}) {}

/** One unit of teacher work: a question with its gold label, and fields to carry into the output row. */
interface WorkItem {
  readonly key: string
  readonly question: string
  readonly gold: Label
  readonly carry: Readonly<Record<string, unknown>>
}


/** Where the repair teacher checks a pool: the run's datasets and config (src/audit/RegressionPool.ts). */
interface PoolAuthority {
  readonly datasetFile: (split: Split) => string
  readonly allowTestRepair: boolean
  readonly allowForeignRows: boolean
}

const loadWork = Effect.fn("TeacherStage.loadWork")(function*(task: TeacherTask, trainFile: string, input: string | undefined, authority: PoolAuthority) {
  if (task === "distill") {
    let torn: { line: number; bytes: number } | undefined
    const rows = yield* readRows(trainFile, NormalizedItemSchema, (tail) => (torn = tail))
    if (torn !== undefined) {
      return yield* new TeacherStageError({ message: `${trainFile}:${torn.line}: incomplete last line (${torn.bytes} bytes); the file was damaged after dart init wrote it` })
    }
    const seen = new Map<string, number>()
    for (const [i, r] of rows.entries()) {
      const first = seen.get(r.id)
      if (first !== undefined) return yield* new TeacherStageError({ message: `${trainFile}:${i + 1}: item ${r.id} repeats line ${first}; each item is billed once` })
      seen.set(r.id, i + 1)
    }
    if (rows.length === 0) return yield* new TeacherStageError({ message: `${trainFile}: no items (is the train split empty? see dart init's warning)` })
    return rows.map((r): WorkItem => ({
      key: r.id,
      question: r.question,
      gold: r.gold_label,
      carry: { id: r.id, benchmark: r.benchmark, condition: r.condition, scenario: r.scenario, question: r.question, answer: r.answer, gold_label: r.gold_label, split: r.split }
    }))
  }
  if (input === undefined) return yield* new TeacherStageError({ message: "--task repair needs --input regression_pool.jsonl" })
  const entries = yield* readPoolEntries(input) // dart's pool rows, or the original's through src/compat
  // Every row against the run's own datasets before anything is sent: the pool is a file anyone may have edited.
  const items = yield* readRunItems(authority.datasetFile)
  yield* checkPoolEntries(input, entries, items, authority).pipe(Effect.mapError((e) => new TeacherStageError({ message: e.message, cause: e })))
  const seen = new Set<string>()
  const out: Array<WorkItem> = []
  for (const { row: r } of entries) {
    const key = r.sample === undefined ? r.id : `${r.id}#${r.sample}`
    if (seen.has(key)) continue // a pool lists each regression once; a repeat adds nothing
    seen.add(key)
    // The teacher is asked the run's question with the run's label (equal to the row's once checked); only a
    // foreign row, allowed by --allow-foreign-rows, has nothing but its own.
    const item = items.get(r.id)
    const { question: _question, gold_label: _gold, ...provenance } = r
    const question = item?.question ?? r.question
    const gold_label = item?.gold_label ?? r.gold_label
    out.push({ key, question, gold: gold_label, carry: { ...provenance, question, gold_label, pool_file: input } })
  }
  return out
})

/**
 * Refuses a `--input` that is no regular file before anything opens it: a FIFO would block the stage forever and
 * /dev/zero never ends.
 */
const checkRegularInput = (file: string) =>
  Effect.tryPromise({
    try: () => irregularInputReason(file),
    catch: (e) => new TeacherStageError({ message: `${file}: cannot read the regression pool (${(e as Error).message})`, cause: e })
  }).pipe(Effect.flatMap((reason) => (reason === undefined ? Effect.void : Effect.fail(new TeacherStageError({ message: `--input: ${reason}` })))))

export interface TeacherRequest {
  readonly task: TeacherTask
  readonly input: string | undefined
  readonly dryRun: boolean
  /** Repair rows whose id is not an item of this run (a pool made on another run), as written (`--allow-foreign-rows`). */
  readonly allowForeignRows?: boolean
  /** The teacher's settings as the requests go out (provider `vllm` bound to the run's own server). */
  readonly settings: ExperimentConfig["teacher"]
  readonly progressEveryMs?: number
  /** Built only when requests are really sent, so --dry-run needs no API key. */
  readonly client: Layer.Layer<LlmClient, LlmError>
}

/** Original steps 2 and 6: teacher rationales with correction rounds, resumable with zero re-billing. */
export const runTeacher = (resolved: ResolvedConfig, request: TeacherRequest) => Effect.scoped(teacherIn(resolved, request))

const teacherIn = Effect.fn("TeacherStage.run")(function*(resolved: ResolvedConfig, request: TeacherRequest) {
  const store = yield* RunStore
  const { config } = resolved
  const t = request.settings
  if (request.task === "repair" && request.input !== undefined) yield* checkRegularInput(request.input)
  // One writer per run and task (a second invocation would bill every item again); a dry run only reads.
  // Inputs must be what their stage recorded: a torn, edited or emptied file is refused, not half-used.
  const stage = yield* openStage({
    config,
    stage: `teacher/${request.task}`,
    lock: !request.dryRun,
    // A pool is checked against the run's datasets, so they too must be what init wrote.
    inputs: request.task === "distill"
      ? [{ path: "datasets/train.jsonl", inRun: true, required: true, producer: "`dart init`" }]
      : request.input === undefined
      ? []
      : [
        { path: request.input, required: false, producer: "`dart audit`" },
        ...splits.map((s) => ({ path: `datasets/${s}.jsonl`, inRun: true, required: true, producer: "`dart init`" }))
      ]
  })
  const { run } = stage
  const dir = `teacher_outputs/${request.task}`
  yield* makeDirectories([run.file(dir)])
  const work = yield* loadWork(request.task, run.file("datasets/train.jsonl"), request.input, {
    datasetFile: (s) => run.file(`datasets/${s}.jsonl`),
    allowTestRepair: config.audit.allow_test_repair,
    allowForeignRows: request.allowForeignRows === true
  })
  const outputsFile = run.file(`${dir}/outputs.jsonl`)
  // Counts are of this invocation's work: outputs.jsonl may also hold rows of another pool (repairs accumulate
  // across pools; an item any earlier pool repaired is done and keeps that row, provenance included).
  const written = new Set<string>()
  if (yield* fileExists(outputsFile)) for (const r of yield* readRows(outputsFile, TeacherOutputKey)) written.add(r.key)
  const already = new Set(work.filter((w) => written.has(w.key)).map((w) => w.key))
  const pending = work.filter((w) => !already.has(w.key))

  const sampling = { temperature: t.temperature, max_tokens: t.max_tokens, seed: t.seed }
  const identity = { provider: t.provider, base_url: providerBaseUrl(t) ?? null, model: t.model, sampling, prompt_version: PROMPT_VERSION }
  // Hashed once per request on the hot path: a fixed-order serialization, no key sorting needed.
  // The constraint changes the replies, so it is part of the hash; unconstrained runs keep their old hashes.
  const identityText = JSON.stringify([identity.provider, identity.base_url, identity.model, sampling.temperature, sampling.max_tokens, sampling.seed, PROMPT_VERSION,
    ...(t.constrain === null ? [] : [t.constrain.regex])])
  const constraintFor = (gold: Label) => (t.constrain === null ? undefined : { regex: t.constrain.regex.replaceAll("{gold}", gold) })
  // The run's own server is the base model: its conversations are laid out as every other (src/domain/ChatLayout.ts).
  // Without a base_url the client refuses provider vllm below, with the reason.
  const layout = isRunServer(t) && t.base_url !== null
    ? yield* chatLayoutFor(config, run.dir, { server: t.base_url }).pipe(Effect.mapError((e) => new TeacherStageError({ message: e.message, cause: e })))
    : NATIVE
  const requestKey = (messages: ReadonlyArray<ChatMessage>, attempt = 0) =>
    sha256Hex(`${identityText}\n${attempt}\n${JSON.stringify(layoutMessages(layout, messages).map((m) => [m.role, m.content]))}`)
  const firstMessages = (w: WorkItem) => (request.task === "distill" ? distillMessages : repairMessages)(w.question, w.gold)
  const cost = (prompt: number, completion: number) => costUsd(t.prices, prompt, completion)

  if (request.dryRun) {
    const ledger = yield* openLedger(run.file(`${dir}/responses.jsonl`))
    const needed = pending.filter((w) => ledger.get(requestKey(firstMessages(w))) === undefined)
    const recorded = [...ledger.records()]
    const avgCompletion = recorded.length >= 10 ? recorded.reduce((a, r) => a + r.completion_tokens, 0) / recorded.length : t.max_tokens
    // ~4 characters per token is the usual English estimate; replies are capped at max_tokens.
    const promptTokens = needed.reduce((a, w) => a + Math.ceil(firstMessages(w).reduce((n, m) => n + m.content.length, 0) / 4), 0)
    const completionTokens = Math.round(needed.length * avgCompletion)
    yield* Console.log([
      `${request.task}: ${work.length} items, ${already.size} done, ${pending.length} to do`,
      `requests still needed (first round; recorded ones excluded): ${needed.length}`,
      `projected tokens: ~${promptTokens.toLocaleString("en")} prompt + ~${completionTokens.toLocaleString("en")} completion` +
        ` (${recorded.length >= 10 ? "mean of recorded replies" : "max_tokens per reply"})`,
      `projected cost: ~$${cost(promptTokens, completionTokens).toFixed(4)} at $${t.prices.input_per_mtok}/$${t.prices.output_per_mtok} per million tokens` +
        `; correction rounds (up to ${t.correction_rounds} per item) come on top`
    ].join("\n"))
    return
  }

  const ledger = yield* openLedger(run.file(`${dir}/responses.jsonl`))
  const client = Context.get(yield* Layer.build(request.client), LlmClient)
  const outputs = yield* openAppender(outputsFile)
  const failures = yield* openAppender(run.file(`${dir}/failures.jsonl`))
  const inputsHash = hashJson({ identity, items: work.map((w) => w.key), correction_rounds: t.correction_rounds })
  return yield* stage.begin(inputsHash, Effect.gen(function*() {
    const paid = yield* makePaidRequests({ ledger, budget: t.budget, prices: t.prices, maxTokens: t.max_tokens })
    let fatal: string | undefined

    const state = { done: already.size, total: work.length, failed: 0, tokens: 0, costUsd: 0 }
    const stats = { accepted: 0, rejected: 0, budgetSkipped: 0 }
    const reasons = new Map<string, number>()
    const finalLine = yield* reportProgress(request.task, state, () => ` | concurrency ${client.concurrency()}`, request.progressEveryMs ?? 5000)

    const ask = (messages: ReadonlyArray<ChatMessage>, gold: Label) =>
      Effect.gen(function*() {
        const key = requestKey(messages)
        const structuredOutputs = constraintFor(gold)
        const reply = yield* paid.ask(key, messages, client.complete({
          messages: layoutMessages(layout, messages),
          key,
          ...(structuredOutputs === undefined ? {} : { structuredOutputs }),
          ...(layout.stopTokenIds.length > 0 ? { stopTokenIds: layout.stopTokenIds } : {})
        }))
        if (reply === undefined) return yield* new BudgetStop({ message: "budget reached" })
        state.tokens = paid.stats.tokens
        state.costUsd = paid.stats.costUsd
        return reply
      })

    const processItem = (w: WorkItem) =>
      Effect.gen(function*() {
        let messages: Array<ChatMessage> = firstMessages(w)
        const hashes: Array<string> = []
        let promptTokens = 0
        let completionTokens = 0
        let estimated = false
        for (let round = 0; ; round++) {
          const { key, record, durable } = yield* ask(messages, w.gold)
          hashes.push(key)
          promptTokens += record.prompt_tokens
          completionTokens += record.completion_tokens
          estimated ||= record.usage_estimated === true
          const check = checkReply(record.content, w.gold, w.question, record.finish_reason)
          const accepted = check.violations.length === 0
          // A reply counts only once it is in the ledger on disk.
          yield* durable
          if (accepted || round >= t.correction_rounds) {
            yield* outputs.append([{
              key: w.key,
              ...w.carry,
              messages: [...studentMessages(w.question), { role: "assistant", content: accepted ? check.target : record.content }],
              conclusion: check.conclusion,
              accepted,
              violations: check.violations,
              rounds: round + 1,
              usage: { prompt_tokens: promptTokens, completion_tokens: completionTokens, ...(estimated ? { estimated: true } : {}) },
              cost_usd: cost(promptTokens, completionTokens),
              provider: t.provider,
              model: record.model,
              prompt_version: PROMPT_VERSION,
              request_hashes: hashes
            } satisfies TeacherOutput])
            state.done++
            if (accepted) stats.accepted++
            else stats.rejected++
            return
          }
          messages = [...messages, { role: "assistant", content: record.content }, correctionMessage(w.gold, check.violations)]
        }
      }).pipe(
        Effect.catchTag("LlmError", (e: LlmError) =>
          Effect.gen(function*() {
            if (e.fatal === true) {
              // Every other request would fail the same way: stop the whole stage now.
              fatal ??= e.reason
              return yield* new TeacherStageError({ message: e.reason, cause: e })
            }
            state.failed++
            reasons.set(e.reason, (reasons.get(e.reason) ?? 0) + 1)
            yield* failures.append([{ key: w.key, reason: e.reason }])
          })),
        Effect.catchTag("BudgetStop", () => Effect.sync(() => void stats.budgetSkipped++))
      )

    const started = Date.now()
    // Twice the cap in items: while some items parse and record replies, others already hold
    // the freed request slots, so the API sees a steady max_concurrency (the client enforces the cap).
    yield* Effect.forEach(pending, processItem, { concurrency: 2 * t.max_concurrency, discard: true }).pipe(
      Effect.catchTag("TeacherStageError", (e) => (fatal !== undefined ? Effect.void : Effect.fail(e)))
    )
    yield* Console.error(yield* finalLine)

    const allRecords = [...ledger.records()]
    const totalTokens = allRecords.reduce((a, r) => a + r.prompt_tokens + r.completion_tokens, 0)
    const totalCost = allRecords.reduce((a, r) => a + cost(r.prompt_tokens, r.completion_tokens), 0)
    const totalEstimated = allRecords.filter((r) => r.usage_estimated === true).length
    const budgetStopped = paid.budgetReached()
    const summary = {
      task: request.task,
      items: work.length,
      done: state.done,
      remaining: work.length - state.done,
      this_run: {
        requests: paid.stats.requests,
        replayed_from_ledger: paid.stats.replayed,
        accepted: stats.accepted,
        rejected: stats.rejected,
        failed: state.failed,
        not_started_budget: stats.budgetSkipped,
        tokens: state.tokens,
        cost_usd: state.costUsd,
        /** Requests whose provider sent no usage: their tokens and cost are local estimates. */
        usage_estimated_requests: paid.stats.estimatedUsage,
        seconds: (Date.now() - started) / 1000
      },
      stopped_by_error: fatal ?? null,
      failure_reasons: Object.fromEntries([...reasons].sort()),
      ledger: { responses: allRecords.length, tokens: totalTokens, cost_usd: totalCost, usage_estimated_responses: totalEstimated },
      provider: t.provider,
      model: t.model,
      prompt_version: PROMPT_VERSION,
      budget: t.budget,
      stopped_by_budget: budgetStopped
    }
    const summaryOut = yield* store.writeFile(run, `${dir}/summary.json`, `${JSON.stringify(summary, null, 2)}\n`)
    const complete = state.done === work.length
    const outs = yield* Effect.forEach([`${dir}/outputs.jsonl`, `${dir}/responses.jsonl`], (p) => store.describeFile(run, p))
    yield* stage.finish({
      status: complete ? "done" : budgetStopped && fatal === undefined ? "stopped" : "failed",
      outputs: [summaryOut, ...outs.filter((o) => o !== undefined)],
      ...(complete ? {} : { error: fatal ?? (budgetStopped ? "budget reached" : `${state.failed} items failed`) })
    })
    yield* Console.log(
      `${request.task}: ${state.done}/${work.length} items done (${stats.accepted} accepted, ${stats.rejected} rejected this run), ` +
        `${paid.stats.requests} requests, ${paid.stats.replayed} replayed from the ledger, ${state.tokens.toLocaleString("en")} tokens, $${state.costUsd.toFixed(4)} this run`
    )
    if (fatal !== undefined) {
      return yield* new TeacherStageError({ message: `stopped early: ${fatal}; ${work.length - state.done} items not done (fix the cause and run again)` })
    }
    if (budgetStopped) {
      return yield* new BudgetStop({ message: `budget reached (${JSON.stringify(t.budget)}): ${work.length - state.done} items left; run again (with a larger budget) to resume` })
    }
    if (!complete) {
      const why = [...reasons].map(([r, n]) => `${n}× ${r}`).join("; ")
      return yield* new StageIncomplete({ message: `${work.length - state.done} items not done (${why}); run again to retry them` })
    }
  }))
})
