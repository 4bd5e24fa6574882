import type { ExperimentConfig } from "../config/ExperimentConfig.ts"
import type { StageRecord } from "../runs/Manifest.ts"
import type { Severity } from "../domain/Severity.ts"
import type { Recipe } from "../training/TrainingSet.ts"

/**
 * The stage graph of `dart run` (pure): which stages exist, in which order, what request each
 * driver gets (the same a user would type as the CLI step of docs/architecture.md), and what the
 * stage ledger says about each one now.
 */

export const stageIds = [
  "init",
  "distill",
  "train_dart",
  "infer_audit",
  "audit",
  "repair",
  "train_dart_h",
  "infer_test",
  "audit_test_dart",
  "audit_test_dart_h",
  "evaluate",
  "infer_external",
  "infer_open_ended",
  "audit_external",
  "audit_open_ended",
  "evaluate_ood"
] as const
export type StageId = typeof stageIds[number]

export const isStageId = (s: string): s is StageId => (stageIds as ReadonlyArray<string>).includes(s)

/** `dart infer`: one pass over a split, every arm of an item on the same server. */
export interface InferRequest {
  readonly runName: string
  /** A registered task (src/tasks/Tasks.ts); absent = dart. */
  readonly task?: "continuation" | "open_ended"
  /** Out-of-distribution tasks: how many items, as far as the config tells (for the plan). */
  readonly itemsEstimate?: number
  readonly split: "val" | "test"
  readonly policy: string
  /** The base first; adapters by their folder relative to the run directory. */
  readonly models: ReadonlyArray<{ readonly id: string; readonly adapter: string | null }>
}

/** `dart audit`: classifiers on both views and the comparative judge, B against A. */
export interface AuditRequest {
  readonly runName: string
  /** Paired predictions relative to the run directory; rows may hold more arms than A and B. */
  readonly pairedInput: string
  readonly aName: string
  readonly bName: string
  readonly split: "val" | "test"
  /** Only the audit that feeds repair; guards against repairing test items. */
  readonly feedsRepair: boolean
  /** Out-of-distribution answers: every model scored on its own (A and B name the comparison the evaluation makes). */
  readonly task?: "continuation" | "open_ended"
  readonly itemsEstimate?: number
  /** Answers the judge labels (per sample), as far as the config tells; 0 when ood.judge is off. */
  readonly judgeEstimate?: number
}

export interface TeacherRunRequest {
  readonly task: "distill" | "repair"
  /** Regression pool relative to the run directory (repair only). */
  readonly input: string | null
}

export interface TrainRunRequest {
  readonly stage: "dart" | "dart_h"
  readonly adapterName: string
  readonly recipe: Recipe
  /** Relative to the run directory. */
  readonly initAdapter: string | null
  readonly weights: Readonly<Record<Severity, number>>
  readonly epochs: number | null
}

export interface EvaluateRunRequest {
  readonly runName: string
  /** Relative to the run directory. */
  readonly predFile: string
  readonly aName: string
  readonly bName: string
  /** Audit summaries relative to the run directory; the first is the harm-drift baseline. */
  readonly audits: ReadonlyArray<string>
}

export type StageWork =
  | { readonly kind: "init" }
  | { readonly kind: "teacher"; readonly request: TeacherRunRequest }
  | { readonly kind: "train"; readonly request: TrainRunRequest }
  | { readonly kind: "infer"; readonly request: InferRequest }
  | { readonly kind: "audit"; readonly request: AuditRequest }
  | { readonly kind: "evaluate"; readonly requests: ReadonlyArray<EvaluateRunRequest> }

export interface Stage {
  readonly id: StageId
  readonly title: string
  /** The CLI step a user would run by hand for the same effect. */
  readonly command: string
  /** Stages whose outputs this one reads. */
  readonly needs: ReadonlyArray<StageId>
  /** Ledger entries this stage writes (manifest.json `stages`); all must be done for the stage to be done. */
  readonly ledgerKeys: ReadonlyArray<string>
  /** Outputs the next stages read, relative to the run directory. */
  readonly produces: ReadonlyArray<string>
  readonly work: StageWork
}

export interface RunGraph {
  readonly stages: ReadonlyArray<Stage>
  /** Set when the config reproduces the original's order; shown before anything runs. */
  readonly warnings: ReadonlyArray<string>
  /** Paths of the headline's inputs (relative to the run directory). */
  readonly evaluations: { readonly main: string; readonly dart: string }
}

export const BASE = "M0"
export const DART = "DART"
export const DART_H = "DART_H"
export const adapterDir = (name: string) => `adapters/${name}/final`
const predictions = (run: string) => `predictions/${run}/outputs.jsonl`
const auditDir = (run: string) => `audit/${run}`

/** The whole graph for a config. `audit.split: "test"` is the switch that reproduces the original's order. */
export const buildRunGraph = (config: ExperimentConfig): RunGraph => {
  const split = config.audit.split
  const policy = config.inference.policy
  const inferAudit = `primary_${split}_${policy}_${BASE}_vs_${DART}`
  const inferTest = `primary_test_${policy}_${BASE}_${DART}_${DART_H}`
  const audit = `audit_${split}_${BASE}_vs_${DART}`
  const auditTestDart = `audit_test_${BASE}_vs_${DART}`
  const auditTestDartH = `audit_test_${BASE}_vs_${DART_H}`
  const evalDart = `eval_${BASE}_vs_${DART}`
  const evalMain = "eval_main"
  const weights = config.training.repair_oversample
  const oversample = `mild=${weights.mild},moderate=${weights.moderate},severe=${weights.severe},extreme=${weights.extreme}`

  const stages: Array<Stage> = [
    {
      id: "init",
      title: "init: run folder, config snapshot, train/val/test items",
      command: "dart init",
      needs: [],
      ledgerKeys: ["init"],
      produces: ["datasets/train.jsonl", "datasets/val.jsonl", "datasets/test.jsonl"],
      work: { kind: "init" }
    },
    {
      id: "distill",
      title: "distill: teacher rationales for the train items",
      command: "dart teacher --task distill",
      needs: ["init"],
      ledgerKeys: ["teacher/distill"],
      produces: ["teacher_outputs/distill/outputs.jsonl"],
      work: { kind: "teacher", request: { task: "distill", input: null } }
    },
    {
      id: "train_dart",
      title: `train ${DART}: LoRA on the distill targets`,
      command: `dart train --stage mdac --adapter-name ${DART}`,
      needs: ["distill"],
      ledgerKeys: [`train/${DART}`],
      produces: [adapterDir(DART)],
      work: {
        kind: "train",
        request: { stage: "dart", adapterName: DART, recipe: "distill", initAdapter: null, weights, epochs: null }
      }
    },
    {
      id: "infer_audit",
      title: `infer ${BASE} vs ${DART} on ${split} (paired)`,
      command: `dart infer --paired --split ${split} --policy ${policy} --model-a-id ${BASE} --model-b-id ${DART} --model-b-adapter ${adapterDir(DART)} --run-name ${inferAudit}`,
      needs: ["init", "train_dart"],
      ledgerKeys: [`infer/${inferAudit}`],
      produces: [predictions(inferAudit)],
      work: { kind: "infer", request: { runName: inferAudit, split, policy, models: [{ id: BASE, adapter: null }, { id: DART, adapter: adapterDir(DART) }] } }
    },
    {
      id: "audit",
      title: `audit ${BASE} vs ${DART} on ${split}: the regression pool for repair`,
      command: `dart audit --paired-input ${predictions(inferAudit)} --a-name ${BASE} --b-name ${DART} --run-name ${audit}`,
      needs: ["infer_audit"],
      ledgerKeys: [`audit/${audit}`],
      produces: [`${auditDir(audit)}/regression_pool.jsonl`, `${auditDir(audit)}/summary.json`],
      work: { kind: "audit", request: { runName: audit, pairedInput: predictions(inferAudit), aName: BASE, bName: DART, split, feedsRepair: true } }
    },
    {
      id: "repair",
      title: "repair: SAFE teacher rationales for the regression pool",
      command: `dart teacher --task repair --input ${auditDir(audit)}/regression_pool.jsonl`,
      needs: ["audit"],
      ledgerKeys: ["teacher/repair"],
      produces: ["teacher_outputs/repair/outputs.jsonl"],
      work: { kind: "teacher", request: { task: "repair", input: `${auditDir(audit)}/regression_pool.jsonl` } }
    },
    {
      id: "train_dart_h",
      title: `train ${DART_H}: continue ${DART} on distill + severity-weighted repair targets`,
      command: `dart train --stage mdac_h --recipe mix --adapter-name ${DART_H} --init-adapter ${adapterDir(DART)} --repair-oversample ${oversample} --epochs ${config.training.epochs}`,
      needs: ["train_dart", "repair"],
      ledgerKeys: [`train/${DART_H}`],
      produces: [adapterDir(DART_H)],
      work: {
        kind: "train",
        request: { stage: "dart_h", adapterName: DART_H, recipe: "mix", initAdapter: adapterDir(DART), weights, epochs: config.training.epochs }
      }
    },
    {
      id: "infer_test",
      title: `infer ${BASE}, ${DART} and ${DART_H} on test in one pass`,
      command: `dart infer --split test --policy ${policy} --models ${BASE},${DART}=${adapterDir(DART)},${DART_H}=${adapterDir(DART_H)} --run-name ${inferTest}`,
      needs: ["init", "train_dart", "train_dart_h"],
      ledgerKeys: [`infer/${inferTest}`],
      produces: [predictions(inferTest)],
      work: {
        kind: "infer",
        request: {
          runName: inferTest,
          split: "test",
          policy,
          models: [{ id: BASE, adapter: null }, { id: DART, adapter: adapterDir(DART) }, { id: DART_H, adapter: adapterDir(DART_H) }]
        }
      }
    },
    ...[[DART, auditTestDart, "audit_test_dart"], [DART_H, auditTestDartH, "audit_test_dart_h"]].map(([b, run, id]): Stage => ({
      id: id as StageId,
      title: `audit ${BASE} vs ${b} on test (harm drift, measured only)`,
      command: `dart audit --paired-input ${predictions(inferTest)} --a-name ${BASE} --b-name ${b} --run-name ${run}`,
      needs: ["infer_test"],
      ledgerKeys: [`audit/${run}`],
      produces: [`${auditDir(run!)}/summary.json`],
      work: { kind: "audit", request: { runName: run!, pairedInput: predictions(inferTest), aName: BASE, bName: b!, split: "test", feedsRepair: false } }
    })),
    {
      id: "evaluate",
      title: `evaluate ${BASE} vs ${DART} and ${BASE} vs ${DART_H} on test, with both test audits`,
      command: `dart evaluate --pred ${predictions(inferTest)} --run-name ${evalMain} --a-name ${BASE} --b-name ${DART_H} ` +
        `--audit ${auditDir(auditTestDart)}/summary.json --audit ${auditDir(auditTestDartH)}/summary.json`,
      needs: ["infer_test", "audit_test_dart", "audit_test_dart_h"],
      ledgerKeys: [`evaluate/${evalDart}`, `evaluate/${evalMain}`],
      produces: [`evaluation/${evalDart}/summary.json`, `evaluation/${evalMain}/summary.json`],
      work: {
        kind: "evaluate",
        requests: [
          { runName: evalDart, predFile: predictions(inferTest), aName: BASE, bName: DART, audits: [`${auditDir(auditTestDart)}/summary.json`] },
          {
            runName: evalMain,
            predFile: predictions(inferTest),
            aName: BASE,
            bName: DART_H,
            // DART's audit first: the reduction the paper reports is DART -> DART_H on the same test pairs.
            audits: [`${auditDir(auditTestDart)}/summary.json`, `${auditDir(auditTestDartH)}/summary.json`]
          }
        ]
      }
    }
  ]
  const warnings = split === "test"
    ? [
      "audit.split is \"test\": this reproduces the original's order exactly, so DART_H is trained on repairs of TEST items " +
      "and then evaluated on those same items (docs/protocol.md §9 B3); its test scores are not a held-out measurement. " +
      "Use audit.split \"val\" (the default) for a clean evaluation."
    ]
    : []
  stages.push(...oodStages(config))
  return { stages, warnings, evaluations: { main: `evaluation/${evalMain}/summary.json`, dart: `evaluation/${evalDart}/summary.json` } }
}

export const OOD_EXTERNAL = "external_M0_DART_DART_H"
export const OOD_OPEN_ENDED = "open_ended_M0_DART_DART_H"

/** Prompts the external stage answers, as far as the config tells (RealToxicityPrompts counts only if it is named). */
const externalEstimate = (config: ExperimentConfig, only?: "HateCheck"): number => {
  const e = config.datasets.external
  const suites = (e.suites ?? (["BOLD", "HolisticBias", "HateCheck"] as const)).filter((s) => only === undefined || s === only)
  const sizes = { BOLD: 1000, HolisticBias: 1000, RealToxicityPrompts: 1000, HateCheck: 3728 } as const
  return suites.reduce((n, s) => n + Math.min(config.ood.per_suite ?? Infinity, e.limits[s] ?? sizes[s]), 0)
}

/**
 * Out of distribution, after the DiffAware evaluation (docs/external-suites.md): the three models answer the external
 * suites and the open-ended set, the answers are scored and judged, and both are evaluated.
 */
const oodStages = (config: ExperimentConfig): Array<Stage> => {
  if (!config.ood.enabled) return []
  const models = [{ id: BASE, adapter: null }, { id: DART, adapter: adapterDir(DART) }, { id: DART_H, adapter: adapterDir(DART_H) }]
  const modelFlag = `--models ${BASE},${DART}=${adapterDir(DART)},${DART_H}=${adapterDir(DART_H)}`
  const policy = config.inference.policy
  const parts = [
    ...(config.datasets.external.suites?.length === 0 ? [] : [{ task: "continuation" as const, run: OOD_EXTERNAL, infer: "infer_external" as const, audit: "audit_external" as const, items: externalEstimate(config), judged: externalEstimate(config, "HateCheck"), flag: "--task continuation --suite external" }]),
    ...(config.ood.open_ended.file === null ? [] : [{ task: "open_ended" as const, run: OOD_OPEN_ENDED, infer: "infer_open_ended" as const, audit: "audit_open_ended" as const, items: config.ood.open_ended.limit ?? 40, judged: config.ood.open_ended.limit ?? 40, flag: "--task open_ended" }])
  ]
  if (parts.length === 0) return []
  const auditRun = (run: string) => `audit_${run}`
  const evalRun = (run: string) => `eval_${run}`
  return [
    ...parts.map((p): Stage => ({
      id: p.infer,
      title: `infer ${BASE}, ${DART} and ${DART_H} on ${p.task === "continuation" ? "the external harm suites" : "the open-ended queries"}`,
      command: `dart infer ${p.flag} --policy ${policy} ${modelFlag} --run-name ${p.run}`,
      needs: ["init", "train_dart", "train_dart_h"],
      ledgerKeys: [`infer/${p.run}`],
      produces: [predictions(p.run)],
      work: { kind: "infer", request: { runName: p.run, task: p.task, itemsEstimate: p.items, split: "test", policy, models } }
    })),
    ...parts.map((p): Stage => ({
      id: p.audit,
      title: p.task === "continuation"
        ? "audit the external answers: classifiers on the answer and on prompt + answer, the judge on HateCheck"
        : "audit the open-ended answers: the judge's label (rubric dart-open-ended-v1)",
      command: `dart audit --paired-input ${predictions(p.run)} --run-name ${auditRun(p.run)}`,
      needs: [p.infer],
      ledgerKeys: [`audit/${auditRun(p.run)}`],
      produces: [`${auditDir(auditRun(p.run))}/summary.json`],
      work: { kind: "audit", request: { runName: auditRun(p.run), pairedInput: predictions(p.run), aName: BASE, bName: DART_H, split: "test", feedsRepair: false, task: p.task, itemsEstimate: p.items, judgeEstimate: config.ood.judge ? p.judged * models.length : 0 } }
    })),
    {
      id: "evaluate_ood",
      title: "evaluate out of distribution: harm drift per suite and slice, HateCheck rates, open-ended labels",
      command: parts.map((p) => `dart evaluate --pred ${predictions(p.run)} --audit ${auditDir(auditRun(p.run))}/summary.json --run-name ${evalRun(p.run)} --a-name ${BASE}`).join(" && "),
      needs: parts.map((p) => p.audit),
      ledgerKeys: parts.map((p) => `evaluate/${evalRun(p.run)}`),
      produces: parts.map((p) => `evaluation/${evalRun(p.run)}/summary.json`),
      work: {
        kind: "evaluate",
        requests: parts.map((p) => ({ runName: evalRun(p.run), predFile: predictions(p.run), aName: BASE, bName: DART_H, audits: [`${auditDir(auditRun(p.run))}/summary.json`] }))
      }
    }
  ]
}

/** What the ledger says about one stage before this invocation. */
export interface StageState {
  /** Ledger records by key; a key that never ran is absent. */
  readonly records: Readonly<Record<string, Pick<StageRecord, "status" | "error"> | undefined>>
  /** Recorded outputs that are missing or changed on disk since the stage finished (empty when intact). */
  readonly changedOutputs: ReadonlyArray<string>
}

export type Decision =
  /** Done, outputs intact, nothing upstream runs: not touched. */
  | { readonly action: "skip"; readonly reason: string }
  /** Never ran, or its outputs changed: the driver runs it. */
  | { readonly action: "run"; readonly reason: string }
  /** Failed, stopped or interrupted: the driver resumes it (finished items are kept). */
  | { readonly action: "resume"; readonly reason: string }
  /** Done before, but a stage it reads runs first: the driver re-checks its inputs and redoes only what changed. */
  | { readonly action: "check"; readonly reason: string }
  /** Outside --from/--until. */
  | { readonly action: "excluded"; readonly reason: string }

export interface PlannedStage {
  readonly stage: Stage
  readonly decision: Decision
}

export interface Selection {
  readonly from?: StageId | undefined
  readonly until?: StageId | undefined
}

export class GraphSelectionError extends Error {
  override readonly name = "GraphSelectionError"
}

const stageStatus = (stage: Stage, state: StageState | undefined) => {
  const records = stage.ledgerKeys.map((k) => [k, state?.records[k]] as const)
  const missing = records.filter(([, r]) => r === undefined).map(([k]) => k)
  const bad = records.filter(([, r]) => r !== undefined && r.status !== "done")
  return { missing, bad, allDone: missing.length === 0 && bad.length === 0 }
}

const describeBad = (key: string, r: Pick<StageRecord, "status" | "error">, multi: boolean) => {
  const where = multi ? `${key}: ` : ""
  if (r.status === "running") return `${where}interrupted (the ledger says running; no process finished it)`
  if (r.status === "stopped") return `${where}stopped${r.error ? ` (${r.error})` : ""}`
  return `${where}failed last time${r.error ? ` (${r.error})` : ""}`
}

/**
 * Decides every stage from the ledger: done with intact outputs and nothing upstream running → skip;
 * failed, stopped or interrupted → resume; never ran → run; done but upstream runs → check.
 * `--from S` re-enters S (and everything after it) even when done, and requires every stage before it
 * to be done; `--until S` stops after S.
 */
export const planGraph = (
  graph: RunGraph,
  states: Readonly<Partial<Record<StageId, StageState>>>,
  selection: Selection = {}
): ReadonlyArray<PlannedStage> => {
  const index = (id: StageId) => graph.stages.findIndex((s) => s.id === id)
  const from = selection.from === undefined ? 0 : index(selection.from)
  const until = selection.until === undefined ? graph.stages.length - 1 : index(selection.until)
  if (from > until) throw new GraphSelectionError(`--from ${selection.from} comes after --until ${selection.until}`)

  const active = new Set<StageId>()
  const planned: Array<PlannedStage> = []
  graph.stages.forEach((stage, i) => {
    const state = states[stage.id]
    const { missing, bad, allDone } = stageStatus(stage, state)
    let decision: Decision
    if (i < from) {
      if (!allDone) {
        const why = bad.length > 0 ? bad.map(([k, r]) => describeBad(k, r!, true)).join("; ") : `never ran (${missing.join(", ")})`
        throw new GraphSelectionError(`--from ${selection.from}: the earlier stage ${stage.id} is not done: ${why}; run it first (drop --from)`)
      }
      decision = { action: "excluded", reason: `before --from ${selection.from} (done)` }
    } else if (i > until) {
      decision = { action: "excluded", reason: `after --until ${selection.until}` }
    } else if (bad.length > 0) {
      decision = { action: "resume", reason: bad.map(([k, r]) => describeBad(k, r!, stage.ledgerKeys.length > 1)).join("; ") }
    } else if (missing.length === stage.ledgerKeys.length) {
      decision = { action: "run", reason: "not run yet" }
    } else if (missing.length > 0) {
      decision = { action: "resume", reason: `part done; not run yet: ${missing.join(", ")}` }
    } else if ((state?.changedOutputs.length ?? 0) > 0) {
      const changed = state!.changedOutputs
      decision = { action: "run", reason: `outputs changed or missing since it finished: ${changed.slice(0, 3).join(", ")}${changed.length > 3 ? ", …" : ""}` }
    } else if (i === from && selection.from !== undefined) {
      decision = { action: "check", reason: `done; re-entered because of --from ${selection.from}` }
    } else {
      const upstream = stage.needs.filter((n) => active.has(n))
      decision = upstream.length > 0
        ? { action: "check", reason: `done, but ${upstream.join(", ")} runs first; redoes only what its inputs change` }
        : { action: "skip", reason: "done, outputs unchanged" }
    }
    if (decision.action !== "skip" && decision.action !== "excluded") active.add(stage.id)
    planned.push({ stage, decision })
  })
  return planned
}

/** Stage ids for --from/--until, validated with the list of valid names. */
export const parseStageId = (flag: string, value: string): StageId => {
  if (isStageId(value)) return value
  throw new GraphSelectionError(`${flag} ${value}: unknown stage; stages are ${stageIds.join(", ")}`)
}
