import { Console, Effect, Schema } from "effect"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { AuditSummary } from "../audit/AuditSummary.ts"
import { hashJson, sha256File, sha256Hex } from "../common/Hashing.ts"
import { describeIssue, flattenIssue, jsonErrorLocation } from "../common/IssuePaths.ts"
import type { ResolvedConfig } from "../config/ConfigLoader.ts"
import { type EvaluationOptions, evaluateDart, evaluateMc } from "../evaluation/Evaluator.ts"
import { harmSummary } from "../evaluation/HarmDrift.ts"
import { readPredictions } from "../evaluation/PredictionReader.ts"
import { renderReport } from "../evaluation/Report.ts"
import { dartTable, harmTable, mcTable, type Table, toCsv, toLatex, toMarkdown } from "../evaluation/Tables.ts"
import { describeChanges, diffConfigs } from "../config/ConfigDiff.ts"
import { acquireStageLock } from "../runs/RunLock.ts"
import { RunStore } from "../runs/RunStore.ts"

export class EvaluateError extends Schema.TaggedError<EvaluateError>()("EvaluateError", {
  message: Schema.String
}) {}

export interface EvaluateRequest {
  readonly predFile: string
  readonly runName: string
  readonly aName: string
  readonly bName: string | undefined
  readonly audits: ReadonlyArray<string>
  /** Replace an earlier evaluation of the same --run-name made from different inputs. */
  readonly force?: boolean
}

const decodeAudit = Schema.decodeUnknownResult(AuditSummary)

const readAudit = (file: string) =>
  Effect.gen(function*() {
    const text = yield* Effect.tryPromise({
      try: () => fs.readFile(file, "utf8"),
      catch: (e) => new EvaluateError({ message: `${file}: cannot read audit summary (${(e as Error).message})` })
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

/** Original step 9: metrics, paired tests, harm-drift change, tables and an offline report. */
export const runEvaluate = (resolved: ResolvedConfig, request: EvaluateRequest) => Effect.scoped(evaluateIn(resolved, request))

const evaluateIn = Effect.fn("EvaluateStage.run")(function*(resolved: ResolvedConfig, request: EvaluateRequest) {
  const store = yield* RunStore
  const { config } = resolved
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(request.runName)) {
    return yield* new EvaluateError({ message: `--run-name "${request.runName}": use letters, digits, '.', '_' or '-'` })
  }
  if (request.bName === request.aName) return yield* new EvaluateError({ message: "--a-name and --b-name must differ" })
  const run = yield* store.requireRun(config.run.runs_dir, config.run.exp_id)
  const stage = `evaluate/${request.runName}`
  yield* acquireStageLock(run.dir, stage)
  // Predictions and audits from this run must be what their stages recorded.
  for (const file of [request.predFile, ...request.audits]) {
    const abs = path.resolve(file)
    if (abs.startsWith(`${run.dir}${path.sep}`)) {
      yield* store.verifyInput(run, path.relative(run.dir, abs), { required: false, producer: "the stage that wrote it" })
    }
  }
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
    catch: (e) => new EvaluateError({ message: `${request.predFile}: cannot read predictions (${(e as Error).message})` })
  })
  const audits = yield* Effect.forEach(request.audits, readAudit)
  const inputs = {
    predictions: { file: request.predFile, sha256: predHash },
    audits: audits.map((a) => ({ file: a.file, sha256: a.sha256 })),
    models,
    options,
    refusals: config.evaluation.refusals
  }
  const inputsHash = hashJson({
    predictions: predHash,
    audits: audits.map((a) => a.sha256),
    models,
    options,
    refusals: config.evaluation.refusals
  })
  if (yield* store.isUpToDate(run, stage, inputsHash)) {
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
  const data = yield* readPredictions(request.predFile, models, { refusals: config.evaluation.refusals }).pipe(
    Effect.mapError((e) => new EvaluateError({ message: e.message }))
  )
  if (data.rows === 0) return yield* new EvaluateError({ message: `${request.predFile}: no prediction rows` })
  yield* store.stageStarted(run, stage, inputsHash)
  const { notes, tables, dir } = yield* store.guard(run, stage, Effect.gen(function*() {
    const summary = data.task === "dart" ? evaluateDart(data, options) : evaluateMc(data, options)
    const harm = audits.length > 0 ? harmSummary(audits) : undefined

    const notes: Array<string> = []
    if (data.tornTail) notes.push(`${request.predFile}:${data.tornTail.line}: incomplete last line ignored (${data.tornTail.bytes} bytes)`)
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
        parser: data.task === "dart" ? "dart-protocol §3 (first Conclusion: YES|NO before the first triple newline)" : "diffaware-spec §4 port",
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
    yield* Effect.promise(() => fs.mkdir(run.file(dir), { recursive: true }))
    const outputs = yield* Effect.forEach(files, ([rel, text]) => store.writeFile(run, rel, text))
    yield* store.stageFinished(run, stage, { status: "done", outputs })
    return { notes, tables, dir }
  }))
  for (const n of notes) yield* Console.error(`warning: ${n}`)
  yield* Console.log(toMarkdown(tables.slice(0, 1)).trimEnd())
  yield* Console.log(`\nevaluated ${data.rows} rows in ${((Date.now() - started) / 1000).toFixed(1)} s -> ${run.file(dir)}/ (summary.json, tables.md/.tex/.csv, report.html)`)
})
