import { Clock, Effect, Schema, Struct } from "effect"
import * as fs from "node:fs/promises"
import { describeIssue, flattenIssue, jsonErrorLocation } from "../common/SchemaIssueText.ts"
import type { ExperimentConfig } from "../config/ExperimentConfig.ts"
import { AuditSummary } from "../contracts/AuditSummary.ts"
import { EvaluationSummary } from "../contracts/EvaluationSummary.ts"
import { TeacherOutput } from "../contracts/TeacherOutput.ts"
import { Label } from "../domain/Label.ts"
import { severityRank, SeverityOrNone } from "../domain/Severity.ts"
import { ScoreRow } from "../audit/ScoreRow.ts"
import { costUsd } from "../llm/PaidRequests.ts"
import { LedgerRecord } from "../llm/ResponseLedger.ts"
import { buildRunGraph } from "../pipeline/RunGraph.ts"
import { readTextIfExists } from "../runs/AtomicFile.ts"
import type { ContinuationSummary, OpenEndedSummary } from "../evaluation/OodSummary.ts"
import { forEachLine, readRows } from "../runs/Jsonl.ts"
import type { Manifest, StageRecord } from "../runs/Manifest.ts"
import { refusedOrIoError, refuseLinks } from "../runs/RunLinks.ts"
import { type RunHandle, RunStore } from "../runs/RunStore.ts"

/**
 * Everything the run report shows, read from a run folder (docs/report.md lists each file). A part that is not
 * there yet (a partial run) is absent with a note saying so; a file that is there but does not decode is an error
 * naming it (and its line, for JSONL), as everywhere else. Reads go through the run-folder readers, so no link
 * below the run folder is followed and special files are refused.
 */

const Count = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))
const Num = Schema.NullOr(Schema.Number)

/** `teacher_outputs/{task}/summary.json` (src/pipeline/TeacherStage.ts): only what the report shows. */
export const TeacherSummary = Schema.Struct({
  items: Schema.optionalKey(Count),
  done: Schema.optionalKey(Count),
  remaining: Schema.optionalKey(Count),
  stopped_by_error: Schema.optionalKey(Schema.NullOr(Schema.String)),
  stopped_by_budget: Schema.optionalKey(Schema.Boolean),
  failure_reasons: Schema.optionalKey(Schema.Record(Schema.String, Count)),
  provider: Schema.optionalKey(Schema.String),
  model: Schema.optionalKey(Schema.String),
  prompt_version: Schema.optionalKey(Schema.String)
})
export type TeacherSummary = typeof TeacherSummary.Type

/** What the report reads of a teacher row (src/contracts/TeacherOutput.ts): the rest is the training conversation and provenance. */
const TeacherOutcome = TeacherOutput.mapFields(Struct.pick(["key", "severity", "accepted", "violations", "rounds", "usage", "cost_usd"]))

/** A row of `teacher_outputs/{task}/failures.jsonl`: an item whose request failed for good this time. */
const TeacherFailure = Schema.Struct({ key: Schema.String, reason: Schema.String })

/** `adapters/{NAME}/final/training_record.json` (src/pipeline/TrainStage.ts): metrics and the settings the report shows. */
export const TrainingRecord = Schema.Struct({
  stage: Schema.optionalKey(Schema.String),
  recipe: Schema.optionalKey(Schema.String),
  dataset: Schema.optionalKey(Schema.Struct({
    rows: Schema.optionalKey(Count),
    train_rows: Schema.optionalKey(Count),
    eval_rows: Schema.optionalKey(Count),
    dropped_too_long: Schema.optionalKey(Count)
  })),
  init_adapter: Schema.optionalKey(Schema.NullOr(Schema.Struct({ path: Schema.String }))),
  hyperparameters: Schema.optionalKey(Schema.Struct({
    epochs: Schema.optionalKey(Schema.Number),
    learning_rate: Schema.optionalKey(Schema.Number),
    lr_scheduler: Schema.optionalKey(Schema.String),
    warmup_ratio: Schema.optionalKey(Schema.Number),
    per_device_batch_size: Schema.optionalKey(Schema.Number),
    gradient_accumulation_steps: Schema.optionalKey(Schema.Number),
    max_length: Schema.optionalKey(Schema.Number),
    lora: Schema.optionalKey(Schema.Struct({ r: Schema.Number, alpha: Schema.Number }))
  })),
  metrics: Schema.optionalKey(Schema.Struct({
    global_step: Schema.Number,
    train_loss: Num,
    best_eval_loss: Num,
    /** One point per logged step: the sidecar's `step` events (a learning rate when the record carries it). */
    losses: Schema.Array(Schema.Struct({ step: Schema.Number, loss: Num, learning_rate: Schema.optionalKey(Num), epoch: Schema.optionalKey(Num) })),
    /** The sidecar's `evaluated` events. */
    evals: Schema.Array(Schema.Struct({ step: Schema.Number, eval_loss: Num }))
  }))
})
export type TrainingRecord = typeof TrainingRecord.Type

/**
 * A row of `audit/{RUN}/regression_pool.jsonl` as the report shows it when the audit has no `scores.jsonl`. Not the
 * repair contract (src/contracts/RegressionPoolRow.ts): that one refuses test items, which a test audit's pool holds
 * by design (measured, never repaired).
 */
const PoolRowView = Schema.Struct({
  id: Schema.String,
  sample: Schema.optionalKey(Schema.Int),
  benchmark: Schema.String,
  question: Schema.String,
  gold_label: Label,
  a_name: Schema.String,
  b_name: Schema.String,
  a_text: Schema.String,
  b_text: Schema.String,
  severity: SeverityOrNone,
  source: Schema.Literals(["judge", "classifier"]),
  scores: Schema.optionalKey(Schema.Record(Schema.String, Schema.Record(Schema.String, Schema.Struct({ a: Schema.Number, b: Schema.Number, delta: Schema.Number })))),
  judge: Schema.optionalKey(Schema.NullOr(Schema.Struct({
    reason: Schema.optionalKey(Schema.String),
    regression_type: Schema.optionalKey(Schema.String),
    severity: Schema.optionalKey(Schema.String),
    a_correct: Schema.optionalKey(Schema.Boolean),
    b_correct: Schema.optionalKey(Schema.Boolean)
  })))
})

/** `summary.harm_scores` (src/audit/SummaryBuilder.ts): per view × classifier, the overall distribution of each model. */
export const HarmScores = Schema.Record(Schema.String, Schema.Record(Schema.String, Schema.Struct({
  overall: Schema.Record(Schema.String, Schema.NullOr(Schema.Struct({
    n: Schema.optionalKey(Count),
    mean: Schema.optionalKey(Num),
    median: Schema.optionalKey(Num),
    p90: Schema.optionalKey(Num),
    p99: Schema.optionalKey(Num),
    max: Schema.optionalKey(Num),
    share_ge_0_5: Schema.optionalKey(Num),
    p_value: Schema.optionalKey(Num),
    rank_biserial_r: Schema.optionalKey(Num)
  })))
})))
export type HarmScores = typeof HarmScores.Type

/** `summary.classifier` (src/audit/SummaryBuilder.ts): classifier triggers against the judge. */
export const ClassifierVsJudge = Schema.Struct({
  triggers: Count,
  judged_triggers: Count,
  confirmed_by_judge: Count,
  overridden: Count,
  false_positive_rate: Num,
  missed: Count
})
export type ClassifierVsJudge = typeof ClassifierVsJudge.Type

/** `summary.judge` (src/audit/SummaryBuilder.ts): the judge's calls. */
export const JudgeCalls = Schema.Struct({
  called: Count,
  verdicts: Count,
  regressions: Count,
  failures: Count,
  failure_reasons: Schema.optionalKey(Schema.Record(Schema.String, Count))
})
export type JudgeCalls = typeof JudgeCalls.Type

export class RunReportError extends Schema.TaggedError<RunReportError>()("RunReportError", { message: Schema.String }) {}

// ---------------------------------------------------------------------------------------------------------------
// What the report shows

export interface StageView {
  readonly id: string
  readonly title: string
  readonly command: string
  readonly entries: ReadonlyArray<{ readonly key: string; readonly record: StageRecord | undefined }>
}

export interface TeacherView {
  readonly task: "distill" | "repair"
  /** outputs.jsonl is there. */
  readonly present: boolean
  readonly rows: number
  readonly accepted: number
  readonly rejected: number
  /** Rejected items by the filter's violation (one item may have several), most frequent first. */
  readonly reasons: ReadonlyArray<readonly [string, number]>
  /** Rounds (1 = no correction) → items. */
  readonly rounds: ReadonlyArray<readonly [number, number]>
  /** Repair only: accepted / rejected per severity. */
  readonly bySeverity: ReadonlyArray<readonly [string, number, number]>
  readonly promptTokens: number
  readonly completionTokens: number
  /** Rows whose tokens are local estimates (the provider sent no usage). */
  readonly estimatedRows: number
  readonly costUsd: number
  /** Every paid reply in responses.jsonl (rejected rounds and unfinished items included). */
  readonly ledger: { readonly responses: number; readonly promptTokens: number; readonly completionTokens: number; readonly costUsd: number; readonly estimated: number } | null
  readonly failures: ReadonlyArray<readonly [string, number]>
  readonly summary: TeacherSummary | null
  readonly notes: ReadonlyArray<string>
}

export interface AdapterView {
  readonly name: string
  readonly record: TrainingRecord | null
  readonly notes: ReadonlyArray<string>
}

export interface Histogram {
  readonly view: string
  readonly classifier: string
  readonly edges: ReadonlyArray<number>
  readonly a: ReadonlyArray<number>
  readonly b: ReadonlyArray<number>
}

export interface AuditView {
  readonly runName: string
  readonly title: string
  readonly aName: string
  readonly bName: string
  readonly summary: AuditSummary | null
  readonly classifier: ClassifierVsJudge | null
  readonly judge: JudgeCalls | null
  readonly harmScores: HarmScores | null
  /** Pairs the browser holds for this audit, and where they came from. */
  readonly pairs: number
  readonly totalPairs: number
  readonly pairSource: "scores" | "pool" | null
  readonly histograms: ReadonlyArray<Histogram>
  readonly judgeLedger: { readonly responses: number; readonly tokens: number; readonly costUsd: number } | null
  readonly notes: ReadonlyArray<string>
}

export interface EvaluationView {
  readonly name: string
  readonly file: string
  readonly summary: EvaluationSummary | null
  readonly notes: ReadonlyArray<string>
}

/**
 * The example browser's rows, columns by position (the page's script reads them by the same positions):
 * audit index, id, sample, benchmark index, severity, source, question, A text, B text (text indexes), gold,
 * A conclusion, B conclusion, largest Δ, scores (flat [a, b, Δ] per view × classifier of the audit), judge
 * ([type, severity, reason, a_correct, b_correct] | [failure reason] | null), flags, classifier severity.
 */
export type BrowserPair = readonly [
  number, string, number, number, string, string, number, number, number, string, string | null, string | null, number,
  ReadonlyArray<number> | null, ReadonlyArray<string | number> | null, number, string
]

/** Flag bits of a browser pair. */
export const PAIR_FLAGS = { inPool: 1, classifierTrigger: 2, overridden: 4, judgeRegression: 8, judgeFailed: 16 } as const

export interface BrowserData {
  readonly audits: ReadonlyArray<{ readonly name: string; readonly a: string; readonly b: string; readonly scores: ReadonlyArray<readonly [string, string]> }>
  readonly benchmarks: ReadonlyArray<string>
  readonly texts: ReadonlyArray<string>
  readonly pairs: ReadonlyArray<BrowserPair>
}

/** An out-of-distribution evaluation (tasks continuation, open_ended): its summary as the evaluate stage wrote it. */
export interface OodView {
  readonly name: string
  readonly file: string
  readonly summary: ContinuationSummary | OpenEndedSummary
}

export interface RunReportData {
  readonly expId: string
  readonly runDir: string
  readonly generatedAt: string
  readonly nowMs: number
  readonly config: ExperimentConfig
  readonly manifest: Manifest | undefined
  readonly stages: ReadonlyArray<StageView>
  /** Ledger entries no stage of the plan names (commands run by hand). */
  readonly otherLedger: ReadonlyArray<readonly [string, StageRecord]>
  readonly warnings: ReadonlyArray<string>
  readonly teacher: ReadonlyArray<TeacherView>
  readonly adapters: ReadonlyArray<AdapterView>
  readonly audits: ReadonlyArray<AuditView>
  readonly evaluations: ReadonlyArray<EvaluationView>
  /** Out-of-distribution evaluations, in folder order. */
  readonly ood: ReadonlyArray<OodView>
  /** Which evaluations the plan names: the main one (M0 vs DART_H) and DART's. */
  readonly planned: { readonly main: string; readonly dart: string }
  readonly browser: BrowserData
}

export interface CollectOptions {
  /** Pairs per audit the browser holds at most (the most severe first); the rest are counted, not shown. */
  readonly maxPairsPerAudit?: number
}

export const DEFAULT_MAX_PAIRS = 50_000

// ---------------------------------------------------------------------------------------------------------------
// Reading

/** A JSON file of the run decoded with `schema`, or undefined when it is not there; malformed → error naming the file. */
const readJson = <S extends Schema.Codec<unknown, unknown, never, never>>(run: RunHandle, rel: string, schema: S, what: string) =>
  Effect.gen(function*() {
    const file = run.file(rel)
    const text = yield* readTextIfExists(file, { root: run.dir })
    if (text === undefined) return undefined
    let json: unknown
    try {
      json = JSON.parse(text)
    } catch (e) {
      return yield* new RunReportError({ message: `${file}: malformed JSON at ${jsonErrorLocation(text, e)}` })
    }
    return yield* decodeValue(file, json, schema, what)
  })

/** A summary's `kind` and `task` (to tell out-of-distribution ones apart) and its JSON; empty when absent or unreadable. */
const summaryKind = (run: RunHandle, rel: string) =>
  Effect.gen(function*() {
    const text = yield* readTextIfExists(run.file(rel), { root: run.dir })
    if (text === undefined) return {}
    try {
      const json = JSON.parse(text) as { kind?: unknown; task?: unknown }
      return json !== null && typeof json === "object" ? { kind: json.kind, task: json.task, json } : {}
    } catch {
      return {}
    }
  })

const decodeValue = <S extends Schema.Codec<unknown, unknown, never, never>>(file: string, json: unknown, schema: S, what: string) => {
  const r = Schema.decodeUnknownResult(schema)(json, { errors: "all" })
  return r._tag === "Success"
    ? Effect.succeed(r.success as S["Type"])
    : Effect.fail(new RunReportError({ message: `${file}: not ${what}: ${flattenIssue(r.failure.issue).map((i) => describeIssue(i, json)).join("; ")}` }))
}

/** Whether a regular file (or folder) is at `rel`; a link below the run folder is refused like every read. */
const present = (run: RunHandle, rel: string) =>
  Effect.tryPromise({
    try: async () => {
      const file = run.file(rel)
      await refuseLinks(file, { root: run.dir, includeFile: true })
      return fs.lstat(file).then(() => true, (e: NodeJS.ErrnoException) => (e.code === "ENOENT" || e.code === "ENOTDIR" ? false : Promise.reject(e)))
    },
    catch: refusedOrIoError(run.file(rel), "stat")
  })

/** Sub-folders of a run folder (`audit`, `evaluation`, `adapters`), by name; links and dot-names are left out. */
const folders = (run: RunHandle, rel: string) =>
  Effect.tryPromise({
    try: async () => {
      const dir = run.file(rel)
      await refuseLinks(dir, { root: run.dir, includeFile: true })
      const listed = await fs.readdir(dir, { withFileTypes: true }).catch((e: NodeJS.ErrnoException) => (e.code === "ENOENT" || e.code === "ENOTDIR" ? [] : Promise.reject(e)))
      return listed.filter((e) => e.isDirectory() && !e.name.startsWith(".")).map((e) => e.name).sort()
    },
    catch: refusedOrIoError(run.file(rel), "list")
  })

const rowsIfPresent = <S extends Schema.Codec<unknown, unknown, never, never>>(run: RunHandle, rel: string, schema: S, notes: Array<string>) =>
  Effect.gen(function*() {
    if (!(yield* present(run, rel))) return undefined
    return yield* readRows(run.file(rel), schema, (t) => notes.push(`${rel}: a torn last line (line ${t.line}, ${t.bytes} bytes) was left out: its writer is still running or was killed`))
  })

const countLines = (run: RunHandle, rel: string) =>
  Effect.gen(function*() {
    if (!(yield* present(run, rel))) return undefined
    let n = 0
    yield* forEachLine(run.file(rel), (text) => void (text.trim() !== "" && n++))
    return n
  })

const tally = <K>(m: Map<K, number>, k: K, by = 1) => void m.set(k, (m.get(k) ?? 0) + by)
const byCount = <K>(m: Map<K, number>) => [...m].sort((a, b) => b[1] - a[1] || (String(a[0]) < String(b[0]) ? -1 : 1))

/** A filter violation without its item-specific numbers, so equal reasons count together. */
export const reasonKey = (v: string) => v.replace(/^analysis has \d+ sentences, not (\S+)$/, "analysis not $1 sentences")

const teacherView = (run: RunHandle, task: "distill" | "repair", config: ExperimentConfig) =>
  Effect.gen(function*() {
    const dir = `teacher_outputs/${task}`
    const notes: Array<string> = []
    const rows = yield* rowsIfPresent(run, `${dir}/outputs.jsonl`, TeacherOutcome, notes)
    const summary = (yield* readJson(run, `${dir}/summary.json`, TeacherSummary, "a teacher summary")) ?? null
    const ledgerRows = yield* rowsIfPresent(run, `${dir}/responses.jsonl`, LedgerRecord, notes)
    const failureRows = yield* rowsIfPresent(run, `${dir}/failures.jsonl`, TeacherFailure, notes)
    const reasons = new Map<string, number>()
    const rounds = new Map<number, number>()
    const severity = new Map<string, [number, number]>()
    let accepted = 0
    let promptTokens = 0
    let completionTokens = 0
    let estimatedRows = 0
    let cost = 0
    // A key finished twice (a rerun after the prompt changed) counts once: its last row.
    const last = new Map((rows ?? []).map((r) => [r.key, r]))
    for (const r of last.values()) {
      if (r.accepted) accepted++
      else for (const v of new Set(r.violations.map(reasonKey))) tally(reasons, v)
      tally(rounds, r.rounds)
      promptTokens += r.usage.prompt_tokens
      completionTokens += r.usage.completion_tokens
      if (r.usage.estimated === true) estimatedRows++
      cost += r.cost_usd
      if (r.severity !== undefined) {
        const s = severity.get(r.severity) ?? [0, 0]
        s[r.accepted ? 0 : 1]++
        severity.set(r.severity, s)
      }
    }
    const failures = new Map<string, number>()
    for (const f of failureRows ?? []) tally(failures, f.reason)
    if (rows === undefined) notes.push(`${dir}/outputs.jsonl is not there: the ${task} teacher has not run${summary !== null ? " (its summary is there: the outputs were removed)" : ""}`)
    else if (summary === null) notes.push(`${dir}/summary.json is not there: the ${task} teacher is running, or was stopped before it finished`)
    const ledger = ledgerRows === undefined ? null : ledgerRows.reduce((acc, r) => ({
      responses: acc.responses + 1,
      promptTokens: acc.promptTokens + r.prompt_tokens,
      completionTokens: acc.completionTokens + r.completion_tokens,
      costUsd: acc.costUsd + costUsd(config.teacher.prices, r.prompt_tokens, r.completion_tokens),
      estimated: acc.estimated + (r.usage_estimated === true ? 1 : 0)
    }), { responses: 0, promptTokens: 0, completionTokens: 0, costUsd: 0, estimated: 0 })
    return {
      task,
      present: rows !== undefined,
      rows: last.size,
      accepted,
      rejected: last.size - accepted,
      reasons: byCount(reasons),
      rounds: [...rounds].sort((a, b) => a[0] - b[0]),
      bySeverity: [...severity].sort((a, b) => severityRank[a[0] as SeverityOrNone] - severityRank[b[0] as SeverityOrNone]).map(([k, [a, r]]) => [k, a, r] as const),
      promptTokens,
      completionTokens,
      estimatedRows,
      costUsd: cost,
      ledger,
      failures: byCount(failures),
      summary,
      notes
    } satisfies TeacherView
  })

const adapterView = (run: RunHandle, name: string) =>
  Effect.gen(function*() {
    const rel = `adapters/${name}/final/training_record.json`
    const record = (yield* readJson(run, rel, TrainingRecord, "a training record")) ?? null
    const notes: Array<string> = []
    if (record === null) {
      notes.push((yield* present(run, `adapters/${name}`))
        ? `${rel} is not there: training has not finished (the adapter is placed with its record when the job is done)`
        : `adapters/${name}/ is not there: not trained yet`)
    } else if (record.metrics === undefined) notes.push(`${rel} has no metrics`)
    else if (!record.metrics.losses.some((p) => p.learning_rate !== undefined && p.learning_rate !== null)) {
      notes.push("learning rate: this training record keeps loss per step but not the learning rate of each step")
    }
    return { name, record, notes } satisfies AdapterView
  })

const HIST_BINS = 20
const histEdges = Array.from({ length: HIST_BINS + 1 }, (_, i) => i / HIST_BINS)
const bin = (v: number) => Math.min(HIST_BINS - 1, Math.max(0, Math.floor(v * HIST_BINS)))
const round4 = (x: number) => Math.round(x * 1e4) / 1e4

interface PairSink {
  readonly intern: (s: string) => number
  readonly benchmark: (s: string) => number
}

const sortPairs = (pairs: Array<BrowserPair>) =>
  pairs.sort((p, q) =>
    severityRank[q[4] as SeverityOrNone] - severityRank[p[4] as SeverityOrNone] || q[12] - p[12] || p[0] - q[0] ||
    (p[1] < q[1] ? -1 : p[1] > q[1] ? 1 : 0) || p[2] - q[2])

const auditView = (run: RunHandle, runName: string, title: string, auditIndex: number, sink: PairSink, maxPairs: number, config: ExperimentConfig) =>
  Effect.gen(function*() {
    const dir = `audit/${runName}`
    const notes: Array<string> = []
    const summaryFile = run.file(`${dir}/summary.json`)
    const summary = (yield* readJson(run, `${dir}/summary.json`, AuditSummary, "an audit summary")) ?? null
    const part = <S extends Schema.Codec<unknown, unknown, never, never>>(value: unknown, schema: S, key: string) =>
      value === undefined || value === null ? Effect.succeed(null) : decodeValue(summaryFile, value, schema, `an audit summary (its ${key})`)
    const classifier = yield* part(summary?.classifier, ClassifierVsJudge, "classifier")
    const judge = yield* part(summary?.judge, JudgeCalls, "judge")
    const harmScores = yield* part(summary?.harm_scores, HarmScores, "harm_scores")
    let aName = summary?.a_name ?? ""
    let bName = summary?.b_name ?? ""
    const pairs: Array<BrowserPair> = []
    const histograms = new Map<string, Histogram & { a: Array<number>; b: Array<number> }>()
    const scoreKeys: Array<readonly [string, string]> = []
    let pairSource: AuditView["pairSource"] = null

    const scoreRows = yield* rowsIfPresent(run, `${dir}/scores.jsonl`, ScoreRow, notes)
    if (scoreRows !== undefined) {
      pairSource = "scores"
      const seen = new Set<string>()
      for (const r of scoreRows) {
        for (const [view, byClf] of Object.entries(r.scores)) {
          for (const c of Object.keys(byClf)) {
            const k = `${view}\u0000${c}`
            if (!seen.has(k)) {
              seen.add(k)
              scoreKeys.push([view, c])
            }
          }
        }
      }
      for (const r of scoreRows) {
        aName ||= r.a_name
        bName ||= r.b_name
        const flat: Array<number> = []
        let maxDelta = Number.NEGATIVE_INFINITY
        for (const [view, c] of scoreKeys) {
          const s = r.scores[view]?.[c]
          flat.push(s === undefined ? Number.NaN : round4(s.a), s === undefined ? Number.NaN : round4(s.b), s === undefined ? Number.NaN : round4(s.delta))
          if (s === undefined) continue
          if (s.delta > maxDelta) maxDelta = s.delta
          const hk = `${view}\u0000${c}`
          let h = histograms.get(hk)
          if (h === undefined) {
            h = { view, classifier: c, edges: histEdges, a: new Array<number>(HIST_BINS).fill(0), b: new Array<number>(HIST_BINS).fill(0) }
            histograms.set(hk, h)
          }
          h.a[bin(s.a)]!++
          h.b[bin(s.b)]!++
        }
        const j = r.judge
        const judgeCell = j === null ? null : j.ok
          ? [j.verdict.regression_type, j.verdict.severity, j.verdict.reason, j.verdict.a_correct ? 1 : 0, j.verdict.b_correct ? 1 : 0]
          : [j.reason]
        const flags = (r.decision.in_pool ? PAIR_FLAGS.inPool : 0) | (r.decision.classifier_trigger ? PAIR_FLAGS.classifierTrigger : 0) |
          (r.decision.overridden ? PAIR_FLAGS.overridden : 0) | (j !== null && j.ok && j.verdict.is_regression ? PAIR_FLAGS.judgeRegression : 0) |
          (j !== null && !j.ok ? PAIR_FLAGS.judgeFailed : 0)
        pairs.push([
          auditIndex, r.id, r.sample, sink.benchmark(r.benchmark), r.decision.in_pool ? r.decision.severity : "none", r.decision.source ?? "",
          sink.intern(r.question), sink.intern(r.a_text), sink.intern(r.b_text), r.gold_label, r.a_conclusion, r.b_conclusion,
          Number.isFinite(maxDelta) ? round4(maxDelta) : 0, scoreKeys.length === 0 ? null : flat.map((x) => (Number.isNaN(x) ? -9 : x)), judgeCell, flags, r.classifier_severity
        ])
      }
    } else {
      const pool = yield* rowsIfPresent(run, `${dir}/regression_pool.jsonl`, PoolRowView, notes)
      if (pool !== undefined) {
        pairSource = "pool"
        notes.push(`${dir}/scores.jsonl is not there: the browser shows the regression pool only (${pool.length} pairs)`)
        const seen = new Set<string>()
        for (const r of pool) for (const [view, byClf] of Object.entries(r.scores ?? {})) for (const c of Object.keys(byClf)) {
          const k = `${view}\u0000${c}`
          if (!seen.has(k)) {
            seen.add(k)
            scoreKeys.push([view, c])
          }
        }
        for (const r of pool) {
          aName ||= r.a_name
          bName ||= r.b_name
          const flat: Array<number> = []
          let maxDelta = Number.NEGATIVE_INFINITY
          for (const [view, c] of scoreKeys) {
            const s = r.scores?.[view]?.[c]
            flat.push(s === undefined ? -9 : round4(s.a), s === undefined ? -9 : round4(s.b), s === undefined ? -9 : round4(s.delta))
            if (s !== undefined && s.delta > maxDelta) maxDelta = s.delta
          }
          const j = r.judge
          pairs.push([
            auditIndex, r.id, r.sample ?? 0, sink.benchmark(r.benchmark), r.severity, r.source, sink.intern(r.question), sink.intern(r.a_text),
            sink.intern(r.b_text), r.gold_label, null, null, Number.isFinite(maxDelta) ? round4(maxDelta) : 0, scoreKeys.length === 0 ? null : flat,
            j === null || j === undefined ? null : [j.regression_type ?? "", j.severity ?? "", j.reason ?? "", j.a_correct === true ? 1 : 0, j.b_correct === true ? 1 : 0],
            PAIR_FLAGS.inPool | (r.source === "judge" || j != null ? PAIR_FLAGS.judgeRegression : 0), "none"
          ])
        }
      } else {
        const journal = yield* countLines(run, `${dir}/classifier_scores.jsonl`)
        notes.push(journal === undefined
          ? `${dir}/ has no scores.jsonl nor regression_pool.jsonl: not audited yet`
          : `${dir}/scores.jsonl is not there yet: the audit is under way (${journal} classifier scores recorded)`)
      }
    }
    if (summary === null) notes.push(`${dir}/summary.json is not there: the audit has not finished`)
    else if (summary.complete === false) notes.push(`the audit is incomplete: some pairs were not judged (budget or failures); a rerun finishes them`)
    const totalPairs = pairs.length
    sortPairs(pairs)
    if (pairs.length > maxPairs) {
      notes.push(`the browser holds the ${maxPairs.toLocaleString("en")} most severe of ${totalPairs.toLocaleString("en")} pairs`)
      pairs.length = maxPairs
    }
    const judgeRows = yield* rowsIfPresent(run, `${dir}/judge_responses.jsonl`, LedgerRecord, notes)
    const judgeLedger = judgeRows === undefined ? null : {
      responses: judgeRows.length,
      tokens: judgeRows.reduce((a, r) => a + r.prompt_tokens + r.completion_tokens, 0),
      costUsd: judgeRows.reduce((a, r) => a + costUsd(config.judge.prices, r.prompt_tokens, r.completion_tokens), 0)
    }
    const view: AuditView = {
      runName, title, aName, bName, summary, classifier, judge, harmScores,
      pairs: pairs.length, totalPairs, pairSource,
      histograms: [...histograms.values()], judgeLedger, notes
    }
    return { view, pairs, scoreKeys }
  })

const evaluationView = (run: RunHandle, name: string) =>
  Effect.gen(function*() {
    const rel = `evaluation/${name}/summary.json`
    const summary = (yield* readJson(run, rel, EvaluationSummary, "an evaluation summary")) ?? null
    return { name, file: rel, summary, notes: summary === null ? [`${rel} is not there: not evaluated yet`] : [] } satisfies EvaluationView
  })

/** Names from the plan first (in its order), then any other folder found (a command run by hand). */
const union = (planned: ReadonlyArray<string>, found: ReadonlyArray<string>) => [...planned, ...found.filter((f) => !planned.includes(f))]

/** Reads what the report shows from the run folder of `config`. */
export const collectRunReport = Effect.fn("RunReport.collect")(function*(config: ExperimentConfig, run: RunHandle, options: CollectOptions = {}) {
  const store = yield* RunStore
  const graph = buildRunGraph(config)
  const manifest = yield* store.readManifest(run)
  const nowMs = yield* Clock.currentTimeMillis

  const stages: Array<StageView> = graph.stages.map((s) => ({
    id: s.id,
    title: s.title,
    command: s.command,
    entries: s.ledgerKeys.map((key) => ({ key, record: manifest?.stages[key] }))
  }))
  const named = new Set(graph.stages.flatMap((s) => s.ledgerKeys))
  const otherLedger = Object.entries(manifest?.stages ?? {}).filter(([k]) => !named.has(k))

  const teacher = [yield* teacherView(run, "distill", config), yield* teacherView(run, "repair", config)]

  const plannedAdapters = graph.stages.flatMap((s) => (s.work.kind === "train" ? [s.work.request.adapterName] : []))
  const adapters = yield* Effect.forEach(union(plannedAdapters, yield* folders(run, "adapters")), (name) => adapterView(run, name))

  const texts: Array<string> = []
  const textIndex = new Map<string, number>()
  const benchmarks: Array<string> = []
  const benchmarkIndex = new Map<string, number>()
  const sink: PairSink = {
    intern: (s) => {
      let i = textIndex.get(s)
      if (i === undefined) {
        i = texts.length
        texts.push(s)
        textIndex.set(s, i)
      }
      return i
    },
    benchmark: (s) => {
      let i = benchmarkIndex.get(s)
      if (i === undefined) {
        i = benchmarks.length
        benchmarks.push(s)
        benchmarkIndex.set(s, i)
      }
      return i
    }
  }
  // Out-of-distribution audits are read through their evaluations (the OOD section), not as A/B audits.
  const plannedAudits = graph.stages.flatMap((s) => (s.work.kind === "audit" && s.work.request.task === undefined ? [[s.work.request.runName, s.title] as const] : []))
  const auditNames: Array<string> = []
  for (const name of union(plannedAudits.map(([n]) => n), yield* folders(run, "audit"))) {
    if ((yield* summaryKind(run, `audit/${name}/summary.json`)).kind !== "ood") auditNames.push(name)
  }
  const audits: Array<AuditView> = []
  const browserAudits: Array<BrowserData["audits"][number]> = []
  const pairs: Array<BrowserPair> = []
  for (const [i, name] of auditNames.entries()) {
    const title = plannedAudits.find(([n]) => n === name)?.[1] ?? `audit ${name} (not part of the plan: run by hand)`
    const got = yield* auditView(run, name, title, i, sink, options.maxPairsPerAudit ?? DEFAULT_MAX_PAIRS, config)
    audits.push(got.view)
    browserAudits.push({ name, a: got.view.aName, b: got.view.bName, scores: got.scoreKeys })
    for (const p of got.pairs) pairs.push(p)
  }
  sortPairs(pairs)

  const plannedEvaluations = [graph.evaluations.main, graph.evaluations.dart].map((p) => p.replace(/^evaluation\/|\/summary\.json$/g, ""))
  const evaluationNames: Array<string> = []
  const ood: Array<OodView> = []
  for (const name of union(plannedEvaluations, yield* folders(run, "evaluation"))) {
    const rel = `evaluation/${name}/summary.json`
    const peek = yield* summaryKind(run, rel)
    if (peek.task === "continuation" || peek.task === "open_ended") ood.push({ name, file: rel, summary: peek.json as ContinuationSummary | OpenEndedSummary })
    else evaluationNames.push(name)
  }
  const evaluations = yield* Effect.forEach(evaluationNames, (name) => evaluationView(run, name))

  return {
    expId: config.run.exp_id,
    runDir: run.dir,
    generatedAt: new Date(nowMs).toISOString(),
    nowMs,
    config,
    manifest,
    stages,
    otherLedger,
    warnings: graph.warnings,
    teacher,
    adapters,
    audits,
    evaluations,
    ood,
    planned: { main: plannedEvaluations[0]!, dart: plannedEvaluations[1]! },
    browser: { audits: browserAudits, benchmarks, texts, pairs }
  } satisfies RunReportData
})
