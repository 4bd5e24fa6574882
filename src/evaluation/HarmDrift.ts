import type { AuditSummary } from "../contracts/AuditSummary.ts"
import type { HarmSummary as HarmSummaryContract } from "../contracts/EvaluationSummary.ts"
import { perSeverity, type Severity } from "../domain/Severity.ts"

export interface HarmAudit {
  readonly file: string
  readonly run_name: string
  readonly a_name: string
  readonly b_name: string
  readonly n_pairs: number
  readonly cases: number
  readonly rate_per_1000: number | null
  readonly by_severity: AuditSummary["regressions"]["by_severity"]
  readonly by_type: Readonly<Record<string, number>>
  readonly by_benchmark: Readonly<Record<string, number>>
}

export interface HarmReduction {
  readonly from: string
  readonly to: string
  /** (cases_to − cases_from) / cases_from: the paper reports −72.6% from DART to DART_H. */
  readonly relative_change: number | null
  /** The same on rates per 1,000 pairs, for audits of different sizes. */
  readonly relative_change_rate: number | null
  readonly by_severity: Readonly<Record<Severity, number | null>>
}

export interface HarmSummary {
  readonly audits: ReadonlyArray<HarmAudit>
  readonly reductions: ReadonlyArray<HarmReduction>
}

const rel = (from: number | null, to: number | null) => (from === null || to === null || from === 0 ? null : (to - from) / from)

/** Audits in the order given; each later audit is compared with the first (the baseline). */
export const harmSummary = (audits: ReadonlyArray<{ readonly file: string; readonly summary: AuditSummary }>): HarmSummary => {
  const rows: Array<HarmAudit> = audits.map(({ file, summary: s }) => ({
    file,
    run_name: s.run_name,
    a_name: s.a_name,
    b_name: s.b_name,
    n_pairs: s.n_pairs,
    cases: s.regressions.total,
    rate_per_1000: s.n_pairs === 0 ? null : (1000 * s.regressions.total) / s.n_pairs,
    by_severity: s.regressions.by_severity,
    by_type: sortKeys(s.regressions.by_type),
    by_benchmark: sortKeys(s.regressions.by_benchmark)
  }))
  const [base, ...rest] = rows
  const reductions = base === undefined ? [] : rest.map((r) => ({
    from: base.run_name,
    to: r.run_name,
    relative_change: rel(base.cases, r.cases),
    relative_change_rate: rel(base.rate_per_1000, r.rate_per_1000),
    by_severity: perSeverity((k) => rel(base.by_severity[k], r.by_severity[k]))
  }))
  // The evaluation summary's `harm` block (contracts/EvaluationSummary).
  return { audits: rows, reductions } satisfies HarmSummaryContract
}

const sortKeys = (r: Readonly<Record<string, number>>) => Object.fromEntries(Object.entries(r).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
