import { Console, Context, Effect, Layer, Schema } from "effect"
import * as fs from "node:fs/promises"
import { ClassifierScoreRow, textId } from "../audit/ClassifierScoreRow.ts"
import { isRunServer } from "../config/RunServerBinding.ts"
import { layoutMessages, NATIVE } from "../domain/ChatLayout.ts"
import { chatLayoutFor } from "./ChatLayoutRecord.ts"
import { extractJson, JUDGE_PROMPT_VERSION, judgeMessages, judgeResponseFormat, judgeRetryMessages, judgeStructuredSchema, JudgeVerdict } from "../audit/JudgePrompt.ts"
import { decide, type JudgeMode, needsJudge } from "../audit/Routing.ts"
import { type JudgeRecord, ScoreRow } from "../audit/ScoreRow.ts"
import type { SeverityThresholds } from "../audit/Severity.ts"
import { PredictionRow } from "../contracts/PredictionRow.ts"
import type { AuditSummary } from "../contracts/AuditSummary.ts"
import type { ChatMessage } from "../domain/ChatMessage.ts"
import { type Label, labelOf } from "../domain/Label.ts"
import { type Severity, severities } from "../domain/Severity.ts"
import { matrixTextRefs, matrixTexts, scoreMatrix, type TextScore } from "../audit/SeverityMatrix.ts"
import { buildSummary, poolRows } from "../audit/SummaryBuilder.ts"
import { hashJson, sha256File, sha256Hex } from "../common/Hashing.ts"
import { reportProgress } from "../common/Progress.ts"
import type { ResolvedConfig } from "../config/ConfigLoader.ts"
import type { ExperimentConfig } from "../config/ExperimentConfig.ts"
import { NormalizedItemSchema, splits } from "../datasets/BenchmarkItem.ts"
import { analysisOf, parseConclusion } from "../evaluation/ConclusionParser.ts"
import { fileExists, makeDirectories } from "../runs/AtomicFile.ts"
import { decodeJsonLine, forEachLine, LineError, openAppender, readRows } from "../runs/Jsonl.ts"
import { RunStore } from "../runs/RunStore.ts"
import { irregularInputReason } from "../runs/SafePath.ts"
import { type Classifier, ClassifierClient, type ClassifierSpec } from "../serving/ClassifierClient.ts"
import { makePaidRequests } from "../llm/PaidRequests.ts"
import { openLedger } from "../llm/ResponseLedger.ts"
import { providerBaseUrl, LlmClient, LlmError } from "../llm/LlmClient.ts"
import { BudgetStop, checkAuditSettings, checkName, openStage, RunName, StageArgumentError, StageIncomplete } from "./StageRun.ts"

export class AuditError extends Schema.TaggedError<AuditError>()("AuditError", {
  message: Schema.String,
  cause: Schema.optionalKey(Schema.Defect())
}) {}

export interface AuditRequest {
  readonly pairedInput: string
  readonly aName: string
  readonly bName: string
  readonly runName: string
  /** null = classifiers only. */
  readonly judgeMode: Exclude<JudgeMode, "off"> | null
  /** Every classifier with the `/classify` endpoint that serves it (configured or started: `ServicePlacement.ts`). */
  readonly classifiers: ReadonlyArray<ClassifierSpec>
  /** The judge's settings as this audit uses them (provider `vllm` bound to the run's own server). */
  readonly judge: ExperimentConfig["judge"]
  /** The judge's API, built only when a request is really sent (so a classifier-only audit needs no key). */
  readonly judgeClient: (judge: ExperimentConfig["judge"]) => Layer.Layer<LlmClient, LlmError>
  readonly progressEveryMs?: number
  /** Pairs scored and judged together: classifier batches fill across them. */
  readonly chunkSize?: number
}

/** Bad replies are asked again this many times (with the problem stated) before the pair counts as a judge failure. */
const JUDGE_REPLY_RETRIES = 2

interface Pair {
  readonly key: string
  readonly row: PredictionRow
  readonly question: string
  readonly gold: Label
  readonly split: string | null
  readonly aText: string
  readonly bText: string
}

const readItems = (dir: (rel: string) => string) =>
  Effect.gen(function*() {
    const items = new Map<string, { readonly question: string; readonly split: string }>()
    for (const split of splits) {
      const file = dir(`datasets/${split}.jsonl`)
      if (!(yield* fileExists(file))) continue
      for (const r of yield* readRows(file, NormalizedItemSchema)) items.set(r.id, { question: r.question, split: r.split })
    }
    return items
  })

const decodePrediction = Schema.decodeUnknownResult(PredictionRow)

/**
 * An audit's arguments, checked before any classifier is asked or service started (or tiny model built): the run
 * name, the models, the classifiers (unique names, at least one evaluator), the run, and the paired input.
 */
export const checkAuditRequest = (config: ExperimentConfig, request: Pick<AuditRequest, "aName" | "bName" | "runName" | "judgeMode" | "pairedInput">) =>
  Effect.gen(function*() {
    yield* checkName(RunName, "--run-name", request.runName)
    if (request.aName === request.bName) return yield* new AuditError({ message: "--a-name and --b-name must differ" })
    if (request.judgeMode === null && config.audit.classifiers.length === 0) {
      return yield* new AuditError({ message: "nothing to audit with: audit.classifiers is empty and the LLM judge is off (--use-llm-judge)" })
    }
    const names = config.audit.classifiers.map((c) => c.name)
    if (new Set(names).size !== names.length) return yield* new AuditError({ message: `audit.classifiers: duplicate names ${JSON.stringify(names)}` })
    yield* (yield* RunStore).requireRun(config.run.runs_dir, config.run.exp_id)
    // A FIFO would block the read forever and a device such as /dev/zero never end: only a regular file is read.
    const file = request.pairedInput
    const reason = yield* Effect.promise(() =>
      irregularInputReason(file).catch((e: NodeJS.ErrnoException) =>
        e.code === "ENOENT" || e.code === "ENOTDIR" ? `${file}: no such file (the paired predictions \`dart infer --paired\` writes)` : `${file}: ${e.message}`
      )
    )
    if (reason !== undefined) return yield* new StageArgumentError({ message: `--paired-input ${reason}` })
  })

/** Original step 5: classifiers on two views, severity bins, the comparative judge, the regression pool. */
export const runAudit = Effect.fn("AuditStage.run")(function*(resolved: ResolvedConfig, request: AuditRequest) {
  const store = yield* RunStore
  const classifierClient = yield* ClassifierClient
  const { config } = resolved
  const audit = config.audit
  const j = request.judge
  yield* checkAuditRequest(config, request)
  const mode: JudgeMode = request.judgeMode ?? "off"
  const specs = request.classifiers
  const dir = `audit/${request.runName}`
  // Predictions this run wrote are checked against the sizes and hashes the ledger recorded.
  const stage = yield* openStage({ config, stage: dir, inputs: [{ path: request.pairedInput, required: false, producer: "`dart infer`" }] })
  const { run } = stage
  yield* makeDirectories([run.file(dir)])

  const thresholds: SeverityThresholds = {
    mild_delta: audit.mild_delta,
    moderate_delta: audit.moderate_delta,
    severe_delta: audit.severe_delta,
    extreme_delta: audit.extreme_delta,
    abs_floors: audit.abs_floors
  }
  const judgeIdentity = { provider: j.provider, base_url: providerBaseUrl(j) ?? null, model: j.model, temperature: j.temperature, max_tokens: j.max_tokens, seed: j.seed, prompt_version: JUDGE_PROMPT_VERSION }
  const inputSha = yield* Effect.tryPromise({
    try: () => sha256File(request.pairedInput),
    catch: (cause) => new AuditError({ message: `${request.pairedInput}: cannot read the paired predictions`, cause })
  })
  // A rerun continues only with the same settings: scores.jsonl rows were decided under them.
  const settings = {
    paired_input_sha256: inputSha.sha256,
    a_name: request.aName,
    b_name: request.bName,
    views: audit.views,
    classifiers: specs.map((s) => ({ name: s.name, model: s.model, label: s.label, max_tokens: s.max_tokens, activation: s.activation, id2label: s.id2label ?? null })),
    thresholds,
    min_severity: audit.min_severity,
    mode,
    judge: mode === "off" ? null : judgeIdentity
  }
  const settingsText = `${JSON.stringify(settings, null, 2)}\n`
  const previous = yield* checkAuditSettings(run, `${dir}/settings.json`, settings)

  // The paired rows; rows written before they carried the question (and files from elsewhere) take it from the run's datasets.
  const readStarted = Date.now()
  const items = yield* readItems(run.file)
  const pairs: Array<Pair> = []
  const seen = new Set<string>()
  yield* forEachLine(request.pairedInput, (text) => {
    if (text.trim() === "") return
    const row = decodeJsonLine(text, decodePrediction)
    if (row.task !== "dart") throw new LineError(`task "${row.task}": the audit reads paired dart predictions`)
    const key = `${row.id}#${row.sample}`
    if (seen.has(key)) throw new LineError(`duplicate prediction for ${row.id} sample ${row.sample}`)
    seen.add(key)
    const a = row.outputs[request.aName]
    const b = row.outputs[request.bName]
    const have = Object.keys(row.outputs).join(", ") || "none"
    if (a === undefined) throw new LineError(`no output for model A "${request.aName}" (has: ${have})`)
    if (b === undefined) throw new LineError(`no output for model B "${request.bName}" (has: ${have})`)
    const item = items.get(row.id)
    const question = row.question ?? item?.question
    if (question === undefined) throw new LineError(`item ${row.id} has no question: not in the row and not in this run's datasets/`)
    const gold = labelOf(row.condition)
    if (row.gold_label !== undefined && row.gold_label !== gold) throw new LineError(`gold_label ${row.gold_label} contradicts condition ${row.condition}`)
    pairs.push({ key, row, question, gold, split: row.split ?? item?.split ?? null, aText: a.text, bText: b.text })
  }).pipe(Effect.mapError((e) => new AuditError({ message: e.message, cause: e })))

  const scoresFile = run.file(`${dir}/scores.jsonl`)
  const done = new Set<string>()
  if (yield* fileExists(scoresFile)) for (const r of yield* readRows(scoresFile, Schema.Struct({ key: Schema.String }))) done.add(r.key)
  const pending = pairs.filter((p) => !done.has(p.key))
  // Classifier scores a killed run appended for pairs still to do: those texts are not sent again.
  const journalFile = run.file(`${dir}/classifier_scores.jsonl`)
  const journal = new Map<string, Map<string, TextScore>>(specs.map((s) => [s.name, new Map()]))
  // Only an audit whose settings were recorded (and found equal above) resumes from it: with no settings.json the
  // folder is a fresh start, and a journal found there belongs to whatever was deleted.
  if (previous === undefined && (yield* fileExists(journalFile))) {
    yield* Effect.tryPromise({ try: () => fs.rm(journalFile, { force: true }), catch: (cause) => new AuditError({ message: `${journalFile}: cannot remove`, cause }) })
  }
  if (previous !== undefined && pending.length > 0 && (yield* fileExists(journalFile))) {
    const pendingKeys = new Set(pending.map((p) => p.key))
    for (const r of yield* readRows(journalFile, ClassifierScoreRow)) {
      if (pendingKeys.has(r.key)) journal.get(r.classifier)?.set(textId(r), { score: r.score, windows: r.windows })
    }
  }
  const readSeconds = (Date.now() - readStarted) / 1000
  if (previous === undefined) yield* store.writeFile(run, `${dir}/settings.json`, settingsText)
  const inputsHash = hashJson(settings)
  // A constraint changes the replies, so it is part of the hash; unconstrained audits keep their hashes.
  const identityText = JSON.stringify([judgeIdentity.provider, judgeIdentity.base_url, j.model, j.temperature, j.max_tokens, j.seed, JUDGE_PROMPT_VERSION,
    ...(j.constrain === null ? [] : [j.constrain])])
  const constraint = j.constrain === "response_format"
    ? { responseFormat: judgeResponseFormat }
    : j.constrain === "structured_outputs"
    ? { structuredOutputs: { json: judgeStructuredSchema, disable_any_whitespace: true } }
    : {}
  // A judge that is the run's own server is the base model: laid out as every other conversation it gets.
  const layout = mode !== "off" && isRunServer(j) && j.base_url !== null
    ? yield* chatLayoutFor(config, run.dir, { server: j.base_url }).pipe(Effect.mapError((e) => new AuditError({ message: e.message, cause: e })))
    : NATIVE
  const requestKey = (messages: ReadonlyArray<ChatMessage>, attempt: number) =>
    sha256Hex(`${identityText}\n${attempt}\n${JSON.stringify(layoutMessages(layout, messages).map((m) => [m.role, m.content]))}`)

  return yield* stage.begin(inputsHash, Effect.scoped(Effect.gen(function*() {
    const classifiers: Array<Classifier> = yield* Effect.forEach(specs, (s) =>
      classifierClient.open(s, { batchSize: audit.classifier_batch_size, concurrency: audit.classifier_concurrency, maxReplyBytes: audit.classify_max_reply_bytes }))
    const ledger = mode === "off" ? undefined : yield* openLedger(run.file(`${dir}/judge_responses.jsonl`))
    const judgeNeeded = mode !== "off" && pending.length > 0
    const client = judgeNeeded ? Context.get(yield* Layer.build(request.judgeClient(j)), LlmClient) : undefined
    const scores = yield* openAppender(scoresFile)
    const classified = pending.length > 0 && classifiers.length > 0 ? yield* openAppender(journalFile) : undefined
    const failures = yield* openAppender(run.file(`${dir}/failures.jsonl`))

    const state = { done: done.size, total: pairs.length, failed: 0, tokens: 0, costUsd: 0 }
    const judgeRun = { requests: 0, replayed: 0, bad_replies: 0, budget_skipped: 0, tokens: 0, cost_usd: 0 }
    // Busy time per phase, summed over chunks (two chunks overlap, so the sum can exceed the wall time).
    const timings = { read_s: readSeconds, classify_busy_s: 0, judge_and_write_busy_s: 0, finalize_s: 0, total_s: 0 }
    const paid = ledger === undefined ? undefined : yield* makePaidRequests({ ledger, budget: j.budget, prices: j.prices, maxTokens: j.max_tokens })
    const written: Array<ScoreRow> = []
    const finalLine = yield* reportProgress("audit", state, () => "", request.progressEveryMs ?? 5000)

    /** One judge request: from the ledger when it was ever answered, else sent (within the budget) and recorded. */
    const ask = (messages: ReadonlyArray<ChatMessage>, attempt: number) =>
      Effect.gen(function*() {
        const key = requestKey(messages, attempt)
        const reply = yield* paid!.ask(key, messages, client!.complete({
          messages: layoutMessages(layout, messages),
          key,
          ...constraint,
          ...(layout.stopTokenIds.length > 0 ? { stopTokenIds: layout.stopTokenIds } : {})
        }))
        if (reply === undefined) return yield* new BudgetStop({ message: "judge budget reached" })
        // Durable before it is used: a kill after this point never pays for this reply again.
        yield* reply.durable
        state.tokens = judgeRun.tokens = paid!.stats.tokens
        state.costUsd = judgeRun.cost_usd = paid!.stats.costUsd
        judgeRun.requests = paid!.stats.requests
        judgeRun.replayed = paid!.stats.replayed
        return { key, content: reply.record.content, model: reply.record.model }
      })

    const decodeVerdict = Schema.decodeUnknownResult(JudgeVerdict)
    const judgePair = (p: Pair) =>
      Effect.gen(function*() {
        const first = judgeMessages({
          question: p.question,
          gold: p.gold,
          aText: p.aText,
          bText: p.bText,
          aConclusion: parseConclusion(p.aText),
          bConclusion: parseConclusion(p.bText)
        })
        let messages = first
        const hashes: Array<string> = []
        let model = j.model
        let problem = ""
        for (let attempt = 0; attempt <= JUDGE_REPLY_RETRIES; attempt++) {
          const reply = yield* ask(messages, attempt)
          hashes.push(reply.key)
          model = reply.model
          let json: unknown
          try {
            json = JSON.parse(extractJson(reply.content))
          } catch {
            problem = "the reply is not JSON"
          }
          if (json !== undefined) {
            const d = decodeVerdict(json, { errors: "all" })
            if (d._tag === "Success") {
              return { ok: true, verdict: d.success, model, prompt_version: JUDGE_PROMPT_VERSION, attempts: attempt + 1, request_hashes: hashes } satisfies JudgeRecord
            }
            problem = `the JSON does not match the schema: ${d.failure.message.replace(/\s+/g, " ").slice(0, 300)}`
          }
          judgeRun.bad_replies++
          messages = judgeRetryMessages(first, reply.content, problem)
        }
        return { ok: false, reason: `malformed judge reply: ${problem}`, model, prompt_version: JUDGE_PROMPT_VERSION, attempts: JUDGE_REPLY_RETRIES + 1, request_hashes: hashes } satisfies JudgeRecord
      })

    const views = audit.views
    const textOf = (t: string, view: string) => (view === "analysis_only" ? analysisOf(t) : t)

    /**
     * One classifier's scores of a chunk's texts: those in the journal read back, the rest sent a batch at a time,
     * each batch appended (durably) as soon as it is answered, so a kill loses at most the batches on the wire.
     */
    const scoreTexts = (c: Classifier, texts: ReadonlyArray<string>, refs: ReturnType<typeof matrixTextRefs>) =>
      Effect.gen(function*() {
        const known = journal.get(c.spec.name)!
        const out = new Array<TextScore>(texts.length)
        const missing: Array<number> = []
        refs.forEach((r, i) => {
          const s = known.get(textId(r))
          if (s === undefined) missing.push(i)
          else out[i] = s
        })
        const batches: Array<Array<number>> = []
        for (let i = 0; i < missing.length; i += audit.classifier_batch_size) batches.push(missing.slice(i, i + audit.classifier_batch_size))
        yield* Effect.forEach(batches, (batch) =>
          Effect.gen(function*() {
            const got = yield* c.score(batch.map((i) => texts[i]!))
            yield* classified!.append(batch.map((i, k): ClassifierScoreRow => ({ ...refs[i]!, classifier: c.spec.name, score: got[k]!.score, windows: got[k]!.windows })))
            batch.forEach((i, k) => (out[i] = got[k]!))
          }), { concurrency: audit.classifier_concurrency, discard: true })
        // This chunk's rows are written next: its journaled scores are not read again.
        for (const r of refs) known.delete(textId(r))
        return out
      })

    const processChunk = (chunk: ReadonlyArray<Pair>) =>
      Effect.gen(function*() {
        // Classifiers: every text of the chunk not yet in the journal, in batches (windowed by the client).
        const t0 = Date.now()
        const texts = matrixTexts(chunk, views, textOf)
        const refs = matrixTextRefs(chunk, views)
        const perClassifier = yield* Effect.forEach(classifiers, (c) => scoreTexts(c, texts, refs), { concurrency: "unbounded" })
        timings.classify_busy_s += (Date.now() - t0) / 1000
        const t1 = Date.now()
        const matrix = scoreMatrix(chunk.length, views, classifiers.map((c) => c.spec.name), perClassifier, thresholds)
        const scored = chunk.map((p, i) => ({ p, byView: matrix[i]!.byView, sev: matrix[i]!.severity }))
        yield* Effect.forEach(scored, ({ p, byView, sev }) =>
          Effect.gen(function*() {
            const judge = needsJudge(mode, sev, audit.min_severity) ? yield* judgePair(p) : null
            const decision = decide(mode, sev, judge, audit.min_severity)
            const row: ScoreRow = {
              key: p.key,
              id: p.row.id,
              sample: p.row.sample,
              benchmark: p.row.benchmark,
              condition: p.row.condition,
              scenario: p.row.scenario,
              gold_label: p.gold,
              split: p.split,
              question: p.question,
              a_name: request.aName,
              b_name: request.bName,
              a_text: p.aText,
              b_text: p.bText,
              a_conclusion: parseConclusion(p.aText),
              b_conclusion: parseConclusion(p.bText),
              scores: byView,
              classifier_severity: sev,
              judge,
              decision
            }
            // A pair is done only once its row is on disk.
            yield* scores.append([row])
            written.push(row)
            state.done++
          }).pipe(
            Effect.catchTag("LlmError", (e: LlmError) =>
              Effect.gen(function*() {
                state.failed++
                yield* failures.append([{ key: p.key, reason: e.reason }])
              })),
            Effect.catchTag("BudgetStop", () => Effect.sync(() => void judgeRun.budget_skipped++))
          ), { concurrency: mode === "off" ? "unbounded" : 2 * j.max_concurrency, discard: true })
        timings.judge_and_write_busy_s += (Date.now() - t1) / 1000
      })

    const started = Date.now()
    const chunkSize = request.chunkSize ?? 512
    const chunks: Array<Array<Pair>> = []
    for (let i = 0; i < pending.length; i += chunkSize) chunks.push(pending.slice(i, i + chunkSize))
    // Two chunks at once: one is being classified while the other waits on the judge.
    yield* Effect.forEach(chunks, processChunk, { concurrency: 2, discard: true })
    const elapsed = (Date.now() - started) / 1000
    yield* Console.error(yield* finalLine)

    // Pool and summary from every row on disk (this run's and earlier runs').
    const finalizeStarted = Date.now()
    // Rows of earlier runs are read back; a first run already holds all of its rows.
    const rows = done.size === 0 ? written : yield* readRows(scoresFile, ScoreRow)
    const pool = poolRows(rows, audit.allow_test_repair)
    const summary = buildSummary(rows, {
      runName: request.runName,
      aName: request.aName,
      bName: request.bName,
      mode,
      minSeverity: audit.min_severity as Severity,
      views,
      classifiers: specs.map((s) => s.name),
      thresholds,
      evaluators: {
        classifiers: classifiers.map((c) => ({
          name: c.spec.name,
          model: c.spec.model,
          served_model: c.served.model,
          label: c.spec.label,
          label_index: c.served.labelIndex,
          labels: c.served.labels,
          activation: c.spec.activation,
          max_tokens: c.spec.max_tokens,
          server_version: c.served.version
        })),
        judge: mode === "off" ? null : { ...judgeIdentity, mode }
      },
      judgeRun: { ...judgeRun, seconds: elapsed },
      input: { file: request.pairedInput, sha256: settings.paired_input_sha256 },
      allowTestRepair: audit.allow_test_repair
    })
    const complete = rows.length === pairs.length
    const budgetHit = paid?.budgetReached() ?? false
    timings.finalize_s = (Date.now() - finalizeStarted) / 1000
    timings.total_s = timings.read_s + elapsed + timings.finalize_s
    const poolOut = yield* store.writeFile(run, `${dir}/regression_pool.jsonl`, pool.map((r) => `${JSON.stringify(r)}\n`).join(""))
    const summaryOut = yield* store.writeFile(run, `${dir}/summary.json`, `${JSON.stringify({ ...summary, complete, timings } satisfies AuditSummary, null, 2)}\n`)
    const scoresOut = yield* store.describeFile(run, `${dir}/scores.jsonl`)
    // Every pair's row holds its classifier scores now: the journal has nothing left to resume.
    if (complete) {
      yield* Effect.tryPromise({
        try: () => fs.rm(journalFile, { force: true }),
        catch: (cause) => new AuditError({ message: `${journalFile}: cannot remove`, cause })
      })
    }
    yield* stage.finish({
      status: complete ? "done" : budgetHit ? "stopped" : "failed",
      outputs: [poolOut, summaryOut, ...(scoresOut === undefined ? [] : [scoresOut])],
      ...(complete ? {} : { error: budgetHit ? "judge budget reached" : `${pairs.length - rows.length} pairs not done` })
    })
    const testInPool = pool.filter((r) => r.split === "test").length
    if (testInPool > 0) {
      yield* Console.error(audit.allow_test_repair
        ? `dart: warning: ${testInPool} pool rows are TEST items and audit.allow_test_repair is set: repairing them trains on the test split (the original's behaviour, protocol B3)`
        : `dart: warning: ${testInPool} pool rows are test items; \`dart teacher --task repair\` refuses them (audit the val split, or set audit.allow_test_repair=true to reproduce the original)`)
    }
    yield* Console.log(
      `audit ${request.runName}: ${rows.length}/${pairs.length} pairs, ${pool.length} regressions ` +
        `(${severities.map((s) => `${s} ${summary.regressions.by_severity[s]}`).join(", ")}), mode ${mode}` +
        (mode === "off" ? "" : `; judge: ${judgeRun.requests} requests, ${judgeRun.replayed} replayed from the ledger, ${summary.judge?.failures ?? 0} failures, $${judgeRun.cost_usd.toFixed(4)} this run`)
    )
    if (budgetHit) return yield* new BudgetStop({ message: `judge budget reached (${JSON.stringify(j.budget)}): ${pairs.length - rows.length} pairs left; run again (with a larger budget) to resume` })
    if (!complete) return yield* new StageIncomplete({ message: `${pairs.length - rows.length} pairs not done (judge request failures, see ${dir}/failures.jsonl); run again to retry them` })
  })))
}, Effect.scoped)
