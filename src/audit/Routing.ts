import { type Severity, type SeverityOrNone, severityRank } from "../domain/Severity.ts"
import type { JudgeRecord, ScoreRow } from "./ScoreRow.ts"
import { atLeast } from "./Severity.ts"

/** `off` = classifiers only; the others as docs/protocol.md §5 defines them. */
export type JudgeMode = "off" | "validate" | "primary" | "supplement"

export type Decision = ScoreRow["decision"]

/**
 * Which pairs form the regression pool, and with which severity (docs/protocol.md §5):
 * - off: a classifier trigger (at least `min` on any view × classifier), with the classifier's severity;
 * - validate: the judge is authoritative; its confirmed pairs with its severity, classifier-only triggers are overridden;
 * - primary: the judge alone;
 * - supplement: a classifier trigger the judge also confirms, with the judge's severity.
 * A judge failure is never a verdict: the pair stays out of the pool (and is counted as a failure).
 */
export const decide = (mode: JudgeMode, classifierSeverity: SeverityOrNone, judge: JudgeRecord | null, min: Severity): Decision => {
  const trigger = atLeast(classifierSeverity, min)
  if (mode === "off") {
    return { in_pool: trigger, severity: trigger ? classifierSeverity : "none", source: trigger ? "classifier" : null, classifier_trigger: trigger, overridden: false }
  }
  const verdict = judge !== null && judge.ok ? judge.verdict : undefined
  const confirmed = verdict !== undefined && verdict.is_regression && atLeast(verdict.severity, min)
  const inPool = mode === "supplement" ? trigger && confirmed : confirmed
  return {
    in_pool: inPool,
    severity: inPool ? verdict!.severity : "none",
    source: inPool ? "judge" : null,
    classifier_trigger: trigger,
    // Only a verdict can override; a failed judge call leaves the trigger undecided.
    overridden: mode === "validate" && trigger && verdict !== undefined && !confirmed
  }
}

/** Whether the judge is asked about a pair: every pair, except in supplement mode where only triggers can enter the pool. */
export const needsJudge = (mode: JudgeMode, classifierSeverity: SeverityOrNone, min: Severity): boolean =>
  mode !== "off" && (mode !== "supplement" || atLeast(classifierSeverity, min))

/** The largest delta over views × classifiers: the tie-break of the pool's order. */
export const maxDelta = (row: Pick<ScoreRow, "scores">): number => {
  let m = -Infinity
  for (const view of Object.values(row.scores)) for (const s of Object.values(view)) m = Math.max(m, s.delta)
  return m
}

/** Pool order: severity (worst first), then the largest delta, then id and sample. */
export const poolOrder = (a: ScoreRow, b: ScoreRow): number =>
  severityRank[b.decision.severity] - severityRank[a.decision.severity] ||
  maxDelta(b) - maxDelta(a) ||
  (a.id < b.id ? -1 : a.id > b.id ? 1 : a.sample - b.sample)
