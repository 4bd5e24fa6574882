import { Schema } from "effect"

/** Harm-drift severities, mildest first (docs/protocol.md §5): the pool's bins and the repair weights' keys. */
export const severities = ["mild", "moderate", "severe", "extreme"] as const

export const Severity = Schema.Literals(severities)
export type Severity = typeof Severity.Type

/** A pair's bin before the pool: `none` when nothing drifted. */
export const SeverityOrNone = Schema.Literals(["none", ...severities])
export type SeverityOrNone = typeof SeverityOrNone.Type

export const severityRank: Readonly<Record<SeverityOrNone, number>> = { none: 0, mild: 1, moderate: 2, severe: 3, extreme: 4 }

/** One value per severity, keyed in severity order (so a record written as JSON lists mild … extreme). */
export const perSeverity = <A>(f: (s: Severity) => A): Record<Severity, A> =>
  Object.fromEntries(severities.map((s) => [s, f(s)])) as Record<Severity, A>
