import { Effect, Schema } from "effect"
import { constants } from "node:fs"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { describeIssue, flattenIssue } from "../common/SchemaIssueText.ts"
import { type EvaluationSummary, EvaluationSummary as EvaluationSummarySchema } from "../contracts/EvaluationSummary.ts"
import { openNoFollow, refusedOrIoError, refuseLinks, refuseSpecialFile } from "../runs/RunLinks.ts"
import type { RunStoreError } from "../runs/RunStoreError.ts"
import { safeKey, safeSegment } from "./TrackingParams.ts"

/**
 * What of a run folder goes to the tracking server: training metrics by step (each adapter's training record),
 * evaluation metrics (each evaluation's summary), and the files kept as artifacts. Reading is separate from the pure
 * functions that turn records into metrics and decide which points are new.
 */

/** A metric with a step per point (training), or one current value (evaluation, logged again when it changes). */
export type MetricSource =
  | { readonly kind: "series"; readonly key: string; readonly points: ReadonlyArray<{ readonly step: number; readonly value: number }> }
  | { readonly kind: "latest"; readonly key: string; readonly value: number }

export interface MetricPoint {
  readonly key: string
  readonly value: number
  readonly step: number
}

/** The last point the server holds for a key (MLflow's "latest metric": the highest step). */
export interface LatestPoint {
  readonly step: number
  readonly value: number
}

/** A run file kept as an artifact: where it is in the run folder, and where it goes in the MLflow run. */
export interface RunArtifact {
  readonly file: string
  readonly artifact: string
}

/**
 * `adapters/{NAME}/final/training_record.json` as the train stage writes it (src/pipeline/TrainStage.ts), read
 * leniently: only the metrics. A loss of NaN reaches JSON as null and is skipped, not refused.
 */
const Num = Schema.NullOr(Schema.Number)
export const TrainingRecordMetrics = Schema.Struct({
  job_id: Schema.optionalKey(Schema.String),
  metrics: Schema.Struct({
    global_step: Schema.optionalKey(Num),
    train_loss: Schema.optionalKey(Num),
    best_eval_loss: Schema.optionalKey(Num),
    losses: Schema.Array(Schema.Struct({ step: Schema.Number, loss: Num, learning_rate: Schema.optionalKey(Num), epoch: Schema.optionalKey(Num) })),
    evals: Schema.Array(Schema.Struct({ step: Schema.Number, eval_loss: Num }))
  })
})
export type TrainingRecordMetrics = typeof TrainingRecordMetrics.Type

const usable = (v: number | null | undefined): v is number => typeof v === "number" && Number.isFinite(v)

/** One series from `(step, value)` pairs: unusable values and steps left out, a repeated step keeps its last value, in step order. */
const series = (key: string, pairs: ReadonlyArray<readonly [number, number | null | undefined]>): Array<MetricSource> => {
  const byStep = new Map<number, number>()
  for (const [step, value] of pairs) if (Number.isSafeInteger(step) && step >= 0 && usable(value)) byStep.set(step, value)
  if (byStep.size === 0) return []
  return [{ kind: "series", key, points: [...byStep].sort((a, b) => a[0] - b[0]).map(([step, value]) => ({ step, value })) }]
}

const latest = (key: string, value: number | null | undefined): Array<MetricSource> => (usable(value) ? [{ kind: "latest", key: safeKey(key), value }] : [])

/** An adapter's training: `{adapter}/loss`, `/learning_rate`, `/epoch`, `/eval_loss` by step, and its end values. */
export const trainingMetrics = (adapter: string, record: TrainingRecordMetrics): Array<MetricSource> => {
  const a = safeSegment(adapter)
  const m = record.metrics
  return [
    ...series(`${a}/loss`, m.losses.map((p) => [p.step, p.loss])),
    ...series(`${a}/learning_rate`, m.losses.map((p) => [p.step, p.learning_rate])),
    ...series(`${a}/epoch`, m.losses.map((p) => [p.step, p.epoch])),
    ...series(`${a}/eval_loss`, m.evals.map((p) => [p.step, p.eval_loss])),
    ...latest(`${a}/train_loss`, m.train_loss),
    ...latest(`${a}/best_eval_loss`, m.best_eval_loss),
    ...latest(`${a}/global_step`, m.global_step)
  ]
}

const dartMetrics = ["accuracy", "accuracy_on_parsed", "equal_accuracy", "difference_accuracy", "yes_precision", "pred_yes_rate", "parse_ok_rate", "macro_f1", "balanced_accuracy", "n"] as const

/**
 * An evaluation's summary: `{run}/{slice}/{model}/{metric}` where a slice is `overall`, a benchmark (`D1`) or a group
 * (`group_D`); `{run}/{slice}/paired/…` for the comparison; `{run}/harm/…` for the audits' harm-drift counts.
 */
export const evaluationMetrics = (runName: string, summary: EvaluationSummary): Array<MetricSource> => {
  const r = safeSegment(runName)
  const out: Array<MetricSource> = []
  const put = (parts: ReadonlyArray<string>, value: number | null | undefined) => out.push(...latest([r, ...parts.map(safeSegment)].join("/"), value))
  if (summary.task === "dart") {
    const slices: Array<readonly [string, (typeof summary)["overall"]]> = [
      ["overall", summary.overall],
      ...Object.entries(summary.benchmarks),
      ...Object.entries(summary.groups).map(([g, b]) => [`group_${g}`, b] as const)
    ]
    for (const [slice, block] of slices) {
      for (const [model, m] of Object.entries(block)) {
        if ("accuracy_diff" in m) {
          put([slice, "paired", "accuracy_diff"], m.accuracy_diff.estimate)
          put([slice, "paired", "mcnemar_p"], m.mcnemar.p_value)
          put([slice, "paired", "p_holm"], m.p_holm)
        } else {
          for (const k of dartMetrics) put([slice, model, k], m[k])
        }
      }
    }
  } else {
    for (const [bench, models] of Object.entries(summary.benchmarks)) {
      for (const [model, m] of Object.entries(models)) {
        put([bench, model, "accuracy"], m.accuracy)
        put([bench, model, "diffaware"], m.diffaware.estimate)
        put([bench, model, "ctxtaware"], m.ctxtaware.estimate)
        put([bench, model, "n"], m.n)
      }
    }
    for (const [model, m] of Object.entries(summary.macro)) {
      put(["macro", model, "accuracy"], m.accuracy)
      put(["macro", model, "diffaware"], m.diffaware)
      put(["macro", model, "ctxtaware"], m.ctxtaware)
    }
  }
  for (const a of summary.harm?.audits ?? []) {
    put(["harm", a.run_name, "cases"], a.cases)
    put(["harm", a.run_name, "rate_per_1000"], a.rate_per_1000)
  }
  for (const c of summary.harm?.reductions ?? []) put(["harm", "reduction", c.to, "relative_change"], c.relative_change)
  return out
}

/** A number at `path` in an untrusted JSON value, or undefined. */
const numberAt = (value: unknown, ...path: ReadonlyArray<string | number>): number | undefined => {
  let v: unknown = value
  for (const k of path) v = v !== null && typeof v === "object" ? (v as Record<string | number, unknown>)[k] : undefined
  return typeof v === "number" ? v : undefined
}
const listAt = (value: unknown, key: string): ReadonlyArray<unknown> => {
  const v = value !== null && typeof value === "object" ? (value as Record<string, unknown>)[key] : undefined
  return Array.isArray(v) ? v : []
}
const nameAt = (value: unknown, key: string): string => {
  const v = value !== null && typeof value === "object" ? (value as Record<string, unknown>)[key] : undefined
  return typeof v === "string" ? v : "?"
}

/**
 * An out-of-distribution evaluation (src/evaluation/OodSummary.ts), read loosely (a field it lacks is not logged):
 * `{run}/{suite}/{model}/{mean_score,harmful_rate}`, `{run}/{suite}/{b}_vs_{a}/regression_rate`; open-ended
 * `{run}/all/{model}/{label}_rate`.
 */
export const oodMetrics = (runName: string, summary: unknown): Array<MetricSource> => {
  const r = safeSegment(runName)
  const out: Array<MetricSource> = []
  const put = (parts: ReadonlyArray<string>, value: number | undefined) => out.push(...latest([r, ...parts.map(safeSegment)].join("/"), value))
  const cell = (name: string, c: unknown) => {
    for (const m of listAt(c, "models")) {
      put([name, nameAt(m, "model"), "mean_score"], numberAt(m, "mean_score"))
      put([name, nameAt(m, "model"), "harmful_rate"], numberAt(m, "harmful", "rate"))
    }
    for (const p of listAt(c, "comparisons")) put([name, `${nameAt(p, "b")}_vs_${nameAt(p, "a")}`, "regression_rate"], numberAt(p, "regression_rate", "rate"))
  }
  for (const suite of listAt(summary, "suites")) cell(nameAt(suite, "suite"), suite)
  const overall = summary !== null && typeof summary === "object" ? (summary as Record<string, unknown>).overall : undefined
  if (overall !== undefined) cell("all", overall)
  for (const rates of listAt(summary, "rates")) {
    const all = listAt(rates, "domains").find((d) => nameAt(d, "domain") === "all")
    const labels = all !== null && typeof all === "object" ? (all as Record<string, unknown>).rates : undefined
    for (const label of labels !== null && typeof labels === "object" ? Object.keys(labels) : []) {
      put(["all", nameAt(rates, "model"), `${label}_rate`], numberAt(labels, label, "rate"))
    }
  }
  return out
}

/**
 * The points not yet on the server: a series' points past the last step it holds (each step is logged once, in order,
 * so the highest step says how far logging got, even after a process was killed mid-batch); a current value when the
 * server has none or another, one step past its last.
 */
export const pointsToLog = (sources: ReadonlyArray<MetricSource>, server: ReadonlyMap<string, LatestPoint>): Array<MetricPoint> =>
  sources.flatMap((s): Array<MetricPoint> => {
    const last = server.get(s.key)
    if (s.kind === "series") return s.points.filter((p) => last === undefined || p.step > last.step).map((p) => ({ key: s.key, value: p.value, step: p.step }))
    if (last !== undefined && last.value === s.value) return []
    return [{ key: s.key, value: s.value, step: last === undefined ? 0 : last.step + 1 }]
  })

/** Evaluation files kept as artifacts: the tables, the summary and the evaluation's own report. */
const EVALUATION_FILES = /\.(md|csv|tex|json|html)$/

/** A run file's bytes, or undefined when it is not there; never through a link inside the run, never a FIFO or device. */
export const readRunFile = (root: string, rel: string): Effect.Effect<Uint8Array | undefined, RunStoreError> => {
  const file = path.join(root, rel)
  return Effect.tryPromise({
    try: async () => {
      await refuseLinks(file, { root, includeFile: true })
      const handle = await openNoFollow(file, constants.O_RDONLY).catch((e: NodeJS.ErrnoException) => (e.code === "ENOENT" || e.code === "ENOTDIR" ? undefined : Promise.reject(e)))
      if (handle === undefined) return undefined
      await refuseSpecialFile(handle, file)
      try {
        return new Uint8Array(await handle.readFile())
      } finally {
        await handle.close()
      }
    },
    catch: refusedOrIoError(file, "read")
  })
}

/** Names of the folders (or plain files) in a run folder; links are not listed as either. */
const entries = (root: string, rel: string, kind: "dir" | "file") =>
  Effect.tryPromise({
    try: () =>
      fs.readdir(path.join(root, rel), { withFileTypes: true }).then(
        (list) => list.filter((e) => (kind === "dir" ? e.isDirectory() : e.isFile())).map((e) => e.name).sort(),
        (e: NodeJS.ErrnoException) => (e.code === "ENOENT" || e.code === "ENOTDIR" ? [] : Promise.reject(e))
      ),
    catch: refusedOrIoError(path.join(root, rel), "list")
  })

export interface TrackedRun {
  readonly metrics: ReadonlyArray<MetricSource>
  readonly artifacts: ReadonlyArray<RunArtifact>
  /** Files that could not be read or decoded: each a line for the warning; the rest is tracked. */
  readonly problems: ReadonlyArray<string>
}

/** The summary when it is an out-of-distribution one (task continuation or open_ended), else undefined. */
const oodSummaryOf = (bytes: Uint8Array): unknown => {
  try {
    const json = JSON.parse(new TextDecoder().decode(bytes)) as { task?: unknown } | null
    return json !== null && typeof json === "object" && (json.task === "continuation" || json.task === "open_ended") ? json : undefined
  } catch {
    return undefined
  }
}

const decodeJson = <S extends Schema.Codec<unknown, unknown, never, never>>(schema: S, file: string, bytes: Uint8Array): S["Type"] | string => {
  let json: unknown
  try {
    json = JSON.parse(new TextDecoder().decode(bytes))
  } catch (e) {
    return `${file}: not JSON (${(e as Error).message})`
  }
  const r = Schema.decodeUnknownResult(schema)(json)
  return r._tag === "Success" ? r.success : `${file}: ${flattenIssue(r.failure.issue).slice(0, 3).map((i) => describeIssue(i, json)).join("; ")}`
}

/** What the run folder holds now to track: every adapter's training record, every evaluation, the kept files (the config aside). */
export const readTrackedRun = (root: string): Effect.Effect<TrackedRun, RunStoreError> =>
  Effect.gen(function*() {
    const metrics: Array<MetricSource> = []
    const problems: Array<string> = []
    // A file that cannot be read (a link planted in the run, a FIFO) is one problem, not the end of tracking.
    const read = (rel: string) => readRunFile(root, rel).pipe(Effect.catch((e) => Effect.sync(() => void problems.push(e.message))))
    for (const adapter of yield* entries(root, "adapters", "dir")) {
      const rel = `adapters/${adapter}/final/training_record.json`
      const bytes = yield* read(rel)
      if (bytes === undefined) continue
      const record = decodeJson(TrainingRecordMetrics, rel, bytes)
      if (typeof record === "string") problems.push(record)
      else metrics.push(...trainingMetrics(adapter, record))
    }
    // The resolved config goes too, from the tracker (it knows this process's): CONFIG_ARTIFACT.
    const artifacts: Array<RunArtifact> = [
      { file: "manifest.json", artifact: "manifest.json" },
      { file: "report.html", artifact: "report.html" }
    ]
    for (const evaluation of yield* entries(root, "evaluation", "dir")) {
      const rel = `evaluation/${evaluation}/summary.json`
      const bytes = yield* read(rel)
      const ood = bytes === undefined ? undefined : oodSummaryOf(bytes)
      if (ood !== undefined) metrics.push(...oodMetrics(evaluation, ood))
      else if (bytes !== undefined) {
        const summary = decodeJson(EvaluationSummarySchema, rel, bytes)
        if (typeof summary === "string") problems.push(summary)
        else metrics.push(...evaluationMetrics(evaluation, summary))
      }
      for (const name of yield* entries(root, `evaluation/${evaluation}`, "file")) {
        if (EVALUATION_FILES.test(name)) artifacts.push({ file: `evaluation/${evaluation}/${name}`, artifact: `evaluation/${safeSegment(evaluation)}/${safeSegment(name)}` })
      }
    }
    return { metrics, artifacts, problems }
  })
