import type { AuditSummary } from "../contracts/AuditSummary.ts"
import type { RegressionPoolRowWritten } from "../contracts/RegressionPoolRow.ts"
import { perSeverity, type Severity } from "../domain/Severity.ts"
import { percentileSorted } from "../evaluation/Statistics.ts"
import { mannWhitney } from "./MannWhitney.ts"
import { type JudgeMode, poolOrder } from "./Routing.ts"
import type { ScoreRow } from "./ScoreRow.ts"

const inc = (r: Record<string, number>, k: string) => void (r[k] = (r[k] ?? 0) + 1)
const sorted = (r: Record<string, number>) => Object.fromEntries(Object.entries(r).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
/** D1…D4 are the D group, N1…N4 the N group (the paper's split of the suite). */
export const groupOf = (benchmark: string) => (/^D/.test(benchmark) ? "D" : /^N/.test(benchmark) ? "N" : "other")

const distribution = (values: Array<number>) => {
  const s = Float64Array.from(values).sort()
  const n = s.length
  if (n === 0) return { n: 0, mean: null, median: null, p90: null, p99: null, max: null, share_ge_0_5: null }
  let sum = 0
  let high = 0
  for (const v of s) {
    sum += v
    if (v >= 0.5) high++
  }
  return { n, mean: sum / n, median: percentileSorted(s, 50), p90: percentileSorted(s, 90), p99: percentileSorted(s, 99), max: s[n - 1]!, share_ge_0_5: high / n }
}

/** The pool, sorted by severity then delta, as `regression_pool.jsonl` rows (contracts/RegressionPoolRow). */
export const poolRows = (rows: ReadonlyArray<ScoreRow>, allowTestRepair: boolean) =>
  rows.filter((r) => r.decision.in_pool).sort(poolOrder).map((r): RegressionPoolRowWritten => ({
    id: r.id,
    sample: r.sample,
    benchmark: r.benchmark,
    condition: r.condition,
    scenario: r.scenario,
    question: r.question,
    gold_label: r.gold_label,
    split: r.split,
    ...(r.split === "test" && allowTestRepair ? { test_repair_allowed: true } : {}),
    a_name: r.a_name,
    b_name: r.b_name,
    a_text: r.a_text,
    b_text: r.b_text,
    scores: Object.fromEntries(Object.entries(r.scores).map(([view, byClf]) => [
      view,
      Object.fromEntries(Object.entries(byClf).map(([c, s]) => [c, { a: s.a, b: s.b, delta: s.delta }]))
    ])),
    severity: r.decision.severity as Severity,
    source: r.decision.source!,
    judge: r.judge !== null && r.judge.ok ? { ...r.judge.verdict, model: r.judge.model } : null
  }))

export interface SummaryContext {
  readonly runName: string
  readonly aName: string
  readonly bName: string
  readonly mode: JudgeMode
  readonly minSeverity: Severity
  readonly views: ReadonlyArray<string>
  readonly classifiers: ReadonlyArray<string>
  readonly thresholds: unknown
  readonly evaluators: unknown
  readonly judgeRun: unknown
  readonly input: { readonly file: string; readonly sha256: string }
  readonly allowTestRepair: boolean
}

/** `summary.json` (contracts/AuditSummary): the counts `dart evaluate` reads plus everything docs/protocol.md §5 asks to report. */
export const buildSummary = (rows: ReadonlyArray<ScoreRow>, ctx: SummaryContext) => {
  const pool = rows.filter((r) => r.decision.in_pool)
  const bySeverity = perSeverity(() => 0)
  const byType: Record<string, number> = {}
  const byBenchmark: Record<string, number> = {}
  const byGroup: Record<string, number> = {}
  const byGold: Record<string, number> = {}
  for (const r of pool) {
    bySeverity[r.decision.severity as Severity]++
    inc(byType, r.judge !== null && r.judge.ok ? r.judge.verdict.regression_type : "unjudged")
    inc(byBenchmark, r.benchmark)
    inc(byGroup, groupOf(r.benchmark))
    inc(byGold, r.gold_label)
  }

  // Classifier triggers against the judge: a trigger the judge saw and rejected is a false positive.
  const triggers = rows.filter((r) => r.decision.classifier_trigger)
  const triggersBySeverity: Record<string, number> = {}
  for (const r of triggers) inc(triggersBySeverity, r.classifier_severity)
  const judgedTriggers = triggers.filter((r) => r.judge !== null && r.judge.ok)
  const rejected = judgedTriggers.filter((r) => !(r.judge!.ok && r.judge!.verdict.is_regression))
  const classifier = {
    triggers: triggers.length,
    triggers_by_severity: sorted(triggersBySeverity),
    judged_triggers: judgedTriggers.length,
    confirmed_by_judge: judgedTriggers.length - rejected.length,
    overridden: rows.filter((r) => r.decision.overridden).length,
    false_positive_rate: judgedTriggers.length === 0 ? null : rejected.length / judgedTriggers.length,
    // Judge regressions the classifiers missed.
    missed: rows.filter((r) => !r.decision.classifier_trigger && r.judge !== null && r.judge.ok && r.judge.verdict.is_regression).length
  }

  const judged = rows.filter((r) => r.judge !== null)
  const failures = judged.filter((r) => r.judge !== null && !r.judge.ok)
  const judgeFailureReasons: Record<string, number> = {}
  for (const r of failures) if (r.judge !== null && !r.judge.ok) inc(judgeFailureReasons, r.judge.reason.replace(/:.*$/, ""))
  const judge = ctx.mode === "off" ? null : {
    called: judged.length,
    verdicts: judged.length - failures.length,
    regressions: judged.filter((r) => r.judge!.ok && r.judge!.verdict.is_regression).length,
    failures: failures.length,
    failure_reasons: sorted(judgeFailureReasons),
    failed_pairs: failures.map((r) => r.key).sort(),
    this_run: ctx.judgeRun
  }

  // Harm scores per view × classifier × model, with slices and B-vs-A Mann–Whitney tests.
  const harm: Record<string, Record<string, unknown>> = {}
  for (const view of ctx.views) {
    harm[view] = {}
    for (const c of ctx.classifiers) {
      const slice = (subset: ReadonlyArray<ScoreRow>) => {
        const a: Array<number> = []
        const b: Array<number> = []
        for (const r of subset) {
          const s = r.scores[view]?.[c]
          if (s === undefined) continue
          a.push(s.a)
          b.push(s.b)
        }
        return { [ctx.aName]: distribution(a), [ctx.bName]: distribution(b), mann_whitney_b_vs_a: mannWhitney(b, a) }
      }
      const by = (key: (r: ScoreRow) => string) => {
        const groups = new Map<string, Array<ScoreRow>>()
        for (const r of rows) {
          const k = key(r)
          const g = groups.get(k)
          if (g === undefined) groups.set(k, [r])
          else g.push(r)
        }
        return Object.fromEntries([...groups.keys()].sort().map((k) => [k, slice(groups.get(k)!)]))
      }
      harm[view]![c] = {
        overall: slice(rows),
        by_benchmark: by((r) => r.benchmark),
        by_group: by((r) => groupOf(r.benchmark)),
        by_gold_label: by((r) => r.gold_label)
      }
    }
  }

  const splitCounts: Record<string, number> = {}
  for (const r of rows) inc(splitCounts, r.split ?? "unknown")
  const testInPool = pool.filter((r) => r.split === "test").length

  return {
    run_name: ctx.runName,
    a_name: ctx.aName,
    b_name: ctx.bName,
    n_pairs: rows.length,
    regressions: {
      total: pool.length,
      by_severity: bySeverity,
      by_type: sorted(byType),
      by_benchmark: sorted(byBenchmark),
      by_group: sorted(byGroup),
      by_gold_label: sorted(byGold)
    },
    rate_per_1000: rows.length === 0 ? null : (1000 * pool.length) / rows.length,
    mode: ctx.mode,
    min_severity: ctx.minSeverity,
    thresholds: ctx.thresholds,
    classifier,
    judge,
    harm_scores: harm,
    evaluators: ctx.evaluators,
    splits: sorted(splitCounts),
    test_items_in_pool: testInPool,
    allow_test_repair: ctx.allowTestRepair,
    input: ctx.input
  } satisfies AuditSummary
}
