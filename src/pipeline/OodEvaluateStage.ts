/**
 * OodEvaluateStage: `dart evaluate` on out-of-distribution predictions (tasks continuation and open_ended), with the
 * audit that scored them: per suite and slice (or per domain), every model against the first, written as
 * `evaluation/{RUN}/summary.json` and tables (Markdown, LaTeX, CSV); the run report draws its out-of-distribution
 * section from this summary.
 */
import { Console, Effect, Schema } from "effect"
import * as fs from "node:fs/promises"
import { hashJson, sha256File, sha256Hex } from "../common/Hashing.ts"
import type { ResolvedConfig } from "../config/ConfigLoader.ts"
import { ContinuationRow, OodAuditSummary, OpenEndedRow } from "../contracts/OodRows.ts"
import { continuationSummary, openEndedSummary, type ScoredRow } from "../evaluation/OodSummary.ts"
import { continuationTables, openEndedTables } from "../evaluation/OodTables.ts"
import { DEFAULT_REFUSAL_PATTERNS, refusalDetector, RefusalRuleError } from "../evaluation/Refusal.ts"
import { toCsv, toLatex, toMarkdown } from "../evaluation/Tables.ts"
import { makeDirectories } from "../runs/AtomicFile.ts"
import { readRows } from "../runs/Jsonl.ts"
import { RunStore } from "../runs/RunStore.ts"
import type { TaskEvaluateRequest } from "../tasks/Task.ts"
import { readOodAudit, repeatedRow } from "./OodAuditFiles.ts"
import { irregularInputReason } from "../runs/SafePath.ts"
import { checkName, openStage, RunName } from "./StageRun.ts"

export class OodEvaluateError extends Schema.TaggedError<OodEvaluateError>()("OodEvaluateError", {
  message: Schema.String,
  cause: Schema.optionalKey(Schema.Defect())
}) {}

const decodeAudit = Schema.decodeUnknownResult(OodAuditSummary)

const readAuditSummary = (file: string) =>
  Effect.tryPromise({
    try: async () => {
      const reason = await irregularInputReason(file)
      if (reason !== undefined) throw new Error(reason)
      return await fs.readFile(file, "utf8")
    },
    catch: (e) => new OodEvaluateError({ message: `${file}: cannot read audit summary (${(e as Error).message})`, cause: e })
  }).pipe(Effect.flatMap((text) => {
    let json: unknown
    try {
      json = JSON.parse(text)
    } catch {
      return Effect.fail(new OodEvaluateError({ message: `${file}: malformed JSON` }))
    }
    const d = decodeAudit(json)
    return d._tag === "Success"
      ? Effect.succeed({ file, summary: d.success, sha256: sha256Hex(text) })
      : Effect.fail(new OodEvaluateError({ message: `${file}: not an out-of-distribution audit summary (made by \`dart audit\` on continuation or open_ended predictions)` }))
  }))

/**
 * The models in the order the summary compares them: --a-name first (the baseline every other model is measured
 * against), --b-name last (the drift reduction is the last model's against the second's), the rest as the rows have
 * them. Both names must be models of the rows; the rows must not repeat an (id, sample).
 */
const modelOrder = (request: TaskEvaluateRequest, rows: ReadonlyArray<{ readonly id: string; readonly sample: number; readonly outputs: Readonly<Record<string, unknown>> }>) =>
  Effect.gen(function*() {
    if (rows.length === 0) return yield* new OodEvaluateError({ message: `${request.predFile}: no prediction rows` })
    const repeated = repeatedRow(rows)
    if (repeated !== undefined) return yield* new OodEvaluateError({ message: `${request.predFile}:${repeated.line}: ${repeated.message}` })
    const inRows = Object.keys(rows[0]!.outputs)
    for (const [flag, name] of [["--a-name", request.aName], ["--b-name", request.bName]] as const) {
      if (name !== undefined && !inRows.includes(name)) return yield* new OodEvaluateError({ message: `${flag} ${name}: not a model of ${request.predFile} (${inRows.join(", ")})` })
    }
    const b = request.bName === request.aName ? undefined : request.bName
    return [request.aName, ...inRows.filter((m) => m !== request.aName && m !== b), ...(b === undefined ? [] : [b])]
  })

export const runOodEvaluate = Effect.fn("OodEvaluateStage.run")(function*(
  resolved: ResolvedConfig,
  request: TaskEvaluateRequest & { readonly task: "continuation" | "open_ended" }
) {
  const store = yield* RunStore
  const { config } = resolved
  yield* checkName(RunName, "--run-name", request.runName)
  const stageRun = yield* openStage({
    config,
    stage: `evaluate/${request.runName}`,
    inputs: [request.predFile, ...request.audits].map((file) => ({ path: file, required: false, producer: "the stage that wrote it" }))
  })
  const { run } = stageRun
  if (request.audits.length !== 1) {
    return yield* new OodEvaluateError({ message: `${request.task} predictions are evaluated with exactly one --audit (the audit that scored them); got ${request.audits.length}` })
  }
  const audit = yield* readAuditSummary(request.audits[0]!)
  if (audit.summary.task !== request.task) return yield* new OodEvaluateError({ message: `${audit.file}: an audit of ${audit.summary.task} answers, not ${request.task}` })
  const predSha = yield* Effect.tryPromise({
    try: () => sha256File(request.predFile).then((h) => h.sha256),
    catch: (e) => new OodEvaluateError({ message: `${request.predFile}: cannot read predictions (${(e as Error).message})`, cause: e })
  })
  if (audit.summary.input.sha256 !== predSha) {
    return yield* new OodEvaluateError({ message: `${audit.file}: this audit scored another version of ${request.predFile} (sha256 ${audit.summary.input.sha256.slice(0, 12)}…, the file is ${predSha.slice(0, 12)}…); audit it again` })
  }
  const patterns = config.ood.refusal_patterns ?? DEFAULT_REFUSAL_PATTERNS
  const refused = yield* Effect.try({
    try: () => refusalDetector(patterns),
    catch: (e) => new OodEvaluateError({ message: `ood.refusal_patterns: ${e instanceof RefusalRuleError ? e.message : String(e)}` })
  })
  const inputs = {
    predictions: { file: request.predFile, sha256: predSha },
    models: { a: request.aName, b: request.bName ?? null },
    audits: [{ file: audit.file, sha256: audit.sha256 }],
    harm_threshold: config.ood.harm_threshold,
    refusal_patterns: patterns
  }
  const inputsHash = hashJson(inputs)
  if ((yield* stageRun.upToDate(inputsHash)) && request.force !== true) {
    yield* Console.log(`${run.file(`evaluation/${request.runName}`)} is up to date (nothing written)`)
    return
  }
  const { scores, verdicts } = yield* readOodAudit(audit.file)
  const dir = `evaluation/${request.runName}`

  yield* stageRun.begin(inputsHash, Effect.gen(function*() {
    let summary: unknown
    let tables
    if (request.task === "continuation") {
      const rows = yield* readRows(request.predFile, ContinuationRow)
      const models = yield* modelOrder(request, rows)
      const scored: Array<ScoredRow> = rows.map((r) => ({
        id: r.id,
        sample: r.sample,
        suite: r.suite,
        meta: r.meta,
        answers: Object.fromEntries(Object.entries(r.outputs).map(([m, o]) => {
          const key = `${r.id}#${r.sample}#${m}`
          return [m, { score: scores.get(key)?.score ?? null, refused: refused(o.text).refused, label: verdicts.get(key)?.label ?? null }]
        }))
      }))
      const s = continuationSummary(scored, models, config.ood.harm_threshold)
      summary = s
      tables = continuationTables(s)
    } else {
      const rows = yield* readRows(request.predFile, OpenEndedRow)
      const models = yield* modelOrder(request, rows)
      const s = openEndedSummary(rows.map((r) => ({
        id: r.id,
        sample: r.sample,
        domain: r.domain,
        labels: Object.fromEntries(models.map((m) => [m, verdicts.get(`${r.id}#${r.sample}#${m}`)?.label ?? null])),
        refused: Object.fromEntries(models.map((m) => [m, r.outputs[m] === undefined ? false : refused(r.outputs[m]!.text).refused]))
      })), models)
      summary = s
      tables = openEndedTables(s)
    }
    const document = { ...(summary as object), meta: { run_name: request.runName, audit: audit.summary, inputs } }
    yield* makeDirectories([run.file(dir)])
    const files: Array<readonly [string, string]> = [
      [`${dir}/summary.json`, `${JSON.stringify(document, null, 2)}\n`],
      [`${dir}/tables.md`, toMarkdown(tables)],
      [`${dir}/tables.tex`, toLatex(tables)],
      ...tables.map((t) => [`${dir}/${t.name}.csv`, toCsv(t)] as const)
    ]
    const outputs = yield* Effect.forEach(files, ([rel, text]) => store.writeFile(run, rel, text))
    yield* stageRun.finish({ status: "done", outputs })
    yield* Console.log(toMarkdown(tables.slice(0, 1)).split("\n").slice(0, 12).join("\n"))
    yield* Console.log(`\nevaluated ${request.task} -> ${run.file(dir)}/ (summary.json, tables.md/.tex/.csv)`)
  }))
}, Effect.scoped)
