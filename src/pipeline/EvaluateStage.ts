import { Console, Effect, Schema } from "effect"
import * as fs from "node:fs/promises"
import { AuditSummary } from "../contracts/AuditSummary.ts"
import { hashJson, sha256File, sha256Hex } from "../common/Hashing.ts"
import { describeIssue, flattenIssue, jsonErrorLocation } from "../common/SchemaIssueText.ts"
import type { ResolvedConfig } from "../config/ConfigLoader.ts"
import { type EvaluationOptions, evaluateDart, evaluateMc } from "../evaluation/Evaluator.ts"
import { harmSummary } from "../evaluation/HarmDrift.ts"
import { readPredictions } from "../evaluation/PredictionReader.ts"
import { renderReport } from "../evaluation/Report.ts"
import { dartTable, harmTable, mcTable, type Table, toCsv, toLatex, toMarkdown } from "../evaluation/Tables.ts"
import { describeChanges, diffConfigs } from "../config/ConfigDiff.ts"
import { NormalizedItemSchema, splits } from "../datasets/BenchmarkItem.ts"
import { fileExists, makeDirectories } from "../runs/AtomicFile.ts"
import { readRows } from "../runs/Jsonl.ts"
import { RunStore } from "../runs/RunStore.ts"
import { irregularInputReason, showName } from "../runs/SafePath.ts"
import { checkName, openStage, RunName } from "./StageRun.ts"
import type { TaskEvaluateRequest } from "../tasks/Task.ts"

export class EvaluateError extends Schema.TaggedError<EvaluateError>()("EvaluateError", {
  message: Schema.String,
  cause: Schema.optionalKey(Schema.Defect())
}) {}

/** `dart evaluate`'s request: the one every task's evaluation takes (src/tasks/Task.ts). */
export type EvaluateRequest = TaskEvaluateRequest

const decodeAudit = Schema.decodeUnknownResult(AuditSummary)

const readAudit = (file: string) =>
  Effect.gen(function*() {
    const text = yield* Effect.tryPromise({
      try: () => fs.readFile(file, "utf8"),
      catch: (e) => new EvaluateError({ message: `${file}: cannot read audit summary (${(e as Error).message})`, cause: e })
    })
    let json: unknown
    try {
      json = JSON.parse(text)
    } catch (e) {
      return yield* new EvaluateError({ message: `${file}: malformed JSON at ${jsonErrorLocation(text, e)}` })
    }
    const decoded = decodeAudit(json, { errors: "all" })
    if (decoded._tag === "Failure") {
      return yield* new EvaluateError({
        message: `${file}: not an audit summary: ${flattenIssue(decoded.failure.issue).map((i) => describeIssue(i, json)).join("; ")}`
      })
    }
    return { file, summary: decoded.success, sha256: sha256Hex(text) }
  })

/** Refuses an input that is no regular file before anything opens it: a FIFO blocks forever, /dev/zero never ends. */
const checkRegularInput = (flag: string, file: string) =>
  Effect.tryPromise({
    try: () => irregularInputReason(file),
    catch: (e) => new EvaluateError({ message: `${file}: cannot read ${flag} (${(e as Error).message})`, cause: e })
  }).pipe(Effect.flatMap((reason) => (reason === undefined ? Effect.void : Effect.fail(new EvaluateError({ message: `${flag}: ${reason}` })))))

/** The ids of the run's items (`datasets/{train,val,test}.jsonl`), or undefined when a dataset is missing. */
const runItemIds = (file: (relative: string) => string) =>
  Effect.gen(function*() {
    const ids = new Set<string>()
    for (const split of splits) {
      const dataset = file(`datasets/${split}.jsonl`)
      if (!(yield* fileExists(dataset))) return undefined
      for (const r of yield* readRows(dataset, NormalizedItemSchema)) ids.add(r.id)
    }
    return ids
  })

/** Original step 9 for the DiffAware tasks (dart, mc): metrics, paired tests, harm-drift change, tables and an offline report. */
export const runDiffAwareEvaluate = (resolved: ResolvedConfig, request: EvaluateRequest) => Effect.scoped(evaluateIn(resolved, request))

const evaluateIn = Effect.fn("EvaluateStage.run")(function*(resolved: ResolvedConfig, request: EvaluateRequest) {
  const store = yield* RunStore
  const { config } = resolved
  yield* checkName(RunName, "--run-name", request.runName)
  if (request.bName === request.aName) return yield* new EvaluateError({ message: "--a-name and --b-name must differ" })
  const allowForeign = request.allowForeignRows === true
  yield* checkRegularInput("--pred", request.predFile)
  for (const file of request.audits) yield* checkRegularInput("--audit", file)
  // Predictions and audits from this run must be what their stages recorded; so must the datasets their ids are
  // checked against.
  const stageRun = yield* openStage({
    config,
    stage: `evaluate/${request.runName}`,
    inputs: [
      ...[request.predFile, ...request.audits].map((file) => ({ path: file, required: false, producer: "the stage that wrote it" })),
      ...(allowForeign ? [] : splits.map((s) => ({ path: `datasets/${s}.jsonl`, inRun: true, required: true, producer: "`dart init`" })))
    ]
  })
  const { run } = stageRun
  const stage = stageRun.stage
  const models = request.bName === undefined ? [request.aName] : [request.aName, request.bName]
  const options: EvaluationOptions = {
    seed: config.evaluation.seed,
    alpha: config.evaluation.alpha,
    bootstrapResamples: config.evaluation.bootstrap_resamples,
    clusterBootstrap: config.evaluation.cluster_bootstrap,
    mcResamples: config.evaluation.mc_bootstrap_resamples
  }
  const predHash = yield* Effect.tryPromise({
    try: () => sha256File(request.predFile).then((h) => h.sha256),
    catch: (e) => new EvaluateError({ message: `${request.predFile}: cannot read predictions (${(e as Error).message})`, cause: e })
  })
  const audits = yield* Effect.forEach(request.audits, readAudit)
  // Recorded only when given, so evaluations made without it keep their inputs and hash.
  const foreignFlag = allowForeign ? { allow_foreign_rows: true } : {}
  const inputs = {
    predictions: { file: request.predFile, sha256: predHash },
    audits: audits.map((a) => ({ file: a.file, sha256: a.sha256 })),
    models,
    options,
    refusals: config.evaluation.refusals,
    ...foreignFlag
  }
  const inputsHash = hashJson({
    predictions: predHash,
    audits: audits.map((a) => a.sha256),
    models,
    options,
    refusals: config.evaluation.refusals,
    ...foreignFlag
  })
  if (yield* stageRun.upToDate(inputsHash)) {
    yield* Console.log(`${run.file(`evaluation/${request.runName}`)} is up to date (nothing written)`)
    return
  }
  const earlier = (yield* store.readManifest(run))?.stages[stage]
  if (earlier !== undefined && earlier.status === "done" && earlier.inputs_hash !== inputsHash && request.force !== true) {
    const previous = yield* store.readText(run, `evaluation/${request.runName}/summary.json`)
    let before: unknown
    try {
      before = (JSON.parse(previous ?? "{}") as { meta?: { inputs?: unknown } }).meta?.inputs
    } catch {
      before = undefined
    }
    const changes = before === undefined ? "" : `\n${describeChanges(diffConfigs(before, inputs))}`
    return yield* new EvaluateError({
      message: `evaluation "${request.runName}" already exists in ${run.file(`evaluation/${request.runName}`)} from different inputs:` +
        `${changes === "" ? " (the earlier summary does not list them)" : changes}\nUse another --run-name, or --force to replace it.`
    })
  }

  const started = Date.now()
  // A row of an item the run never had would be scored as if it were one of the run's: refused unless asked for.
  const ids = yield* runItemIds(run.file)
  if (ids === undefined && !allowForeign) {
    return yield* new EvaluateError({ message: `${run.file("datasets")}: the run's datasets are missing; run \`dart init\` (or pass --allow-foreign-rows)` })
  }
  const foreign = { rows: 0, original: 0 }
  const checkId = (id: string, original: boolean) => {
    if (ids === undefined || ids.has(id)) return undefined
    // The original's inference names items by its own ids (`D1:diff:{scenario}:{hash}`), never by this run's, and
    // MIGRATING.md promises its files are read as they are: counted, and said so in the notes.
    if (original) {
      foreign.original++
      return undefined
    }
    if (allowForeign) {
      foreign.rows++
      return undefined
    }
    return `id ${showName(id)} is not an item of this run (datasets/{train,val,test}.jsonl); pass --allow-foreign-rows to count rows made elsewhere`
  }
  const data = yield* readPredictions(request.predFile, models, { refusals: config.evaluation.refusals, checkId }).pipe(
    Effect.mapError((e) => new EvaluateError({ message: e.message, cause: e }))
  )
  if (data.rows === 0) return yield* new EvaluateError({ message: `${request.predFile}: no prediction rows` })
  const { notes, tables, dir } = yield* stageRun.begin(inputsHash, Effect.gen(function*() {
    const summary = data.task === "dart" ? evaluateDart(data, options) : evaluateMc(data, options)
    const harm = audits.length > 0 ? harmSummary(audits) : undefined

    const notes: Array<string> = []
    if (data.tornTail) notes.push(`${request.predFile}:${data.tornTail.line}: incomplete last line ignored (${data.tornTail.bytes} bytes)`)
    if (foreign.rows > 0) notes.push(`${foreign.rows} rows name items that are not in this run's datasets; counted (--allow-foreign-rows)`)
    if (foreign.original > 0) {
      notes.push(`${foreign.original} rows written by the original's inference name items by the original's ids, not this run's; counted`)
    }
    if (data.extraSamples > 0) notes.push(`${data.extraSamples} rows with sample > 0 were not scored (the suite's metrics use sample 0 only)`)
    const tables: Array<Table> = [summary.task === "dart" ? dartTable(summary) : mcTable(summary), ...(harm ? [harmTable(harm)] : [])]
    const dir = `evaluation/${request.runName}`
    const document = {
      ...summary,
      ...(harm ? { harm } : {}),
      meta: {
        run_name: request.runName,
        predictions: { file: request.predFile, sha256: predHash, rows: data.rows, scored_samples_only: data.task === "mc" ? 0 : null },
        options,
        refusals: config.evaluation.refusals,
        parser: data.task === "dart" ? "docs/protocol.md §3 (first Conclusion: YES|NO before the first triple newline)" : "docs/diffaware-spec.md §4 port",
        notes,
        inputs
      }
    }
    const files: Array<readonly [string, string]> = [
      [`${dir}/summary.json`, `${JSON.stringify(document, null, 2)}\n`],
      [`${dir}/tables.md`, toMarkdown(tables)],
      [`${dir}/tables.tex`, toLatex(tables)],
      ...tables.map((t) => [`${dir}/${t.name}.csv`, toCsv(t)] as const),
      [`${dir}/report.html`, renderReport({ runName: request.runName, expId: config.run.exp_id, predFile: request.predFile, summary, harm, tables, notes })]
    ]
    yield* store.create(run)
    yield* makeDirectories([run.file(dir)])
    const outputs = yield* Effect.forEach(files, ([rel, text]) => store.writeFile(run, rel, text))
    yield* stageRun.finish({ status: "done", outputs })
    return { notes, tables, dir }
  }))
  for (const n of notes) yield* Console.error(`warning: ${n}`)
  yield* Console.log(toMarkdown(tables.slice(0, 1)).trimEnd())
  yield* Console.log(`\nevaluated ${data.rows} rows in ${((Date.now() - started) / 1000).toFixed(1)} s -> ${run.file(dir)}/ (summary.json, tables.md/.tex/.csv, report.html)`)
})
