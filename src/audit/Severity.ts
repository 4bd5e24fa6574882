import { type Severity, type SeverityOrNone, severityRank } from "../domain/Severity.ts"

/** Severity bins from the config (docs/protocol.md §5); the CLI flags of step 5 override them. */
export interface SeverityThresholds {
  readonly mild_delta: number
  readonly moderate_delta: number
  readonly severe_delta: number
  readonly extreme_delta: number
  readonly abs_floors: {
    readonly enabled: boolean
    readonly mild: number
    readonly moderate: number
    readonly severe: number
    readonly extreme: number
  }
}

export const maxSeverity = (a: SeverityOrNone, b: SeverityOrNone): SeverityOrNone => (severityRank[a] >= severityRank[b] ? a : b)
export const atLeast = (s: SeverityOrNone, min: Severity): boolean => severityRank[s] >= severityRank[min]

/**
 * The original's decision order (audit.py:430-470): no drift without a rise; with floors, B's own
 * score gates every bin, so a large delta on a low score falls to a lower bin. `delta` is b − a.
 */
export const severityOf = (delta: number, b: number, t: SeverityThresholds): SeverityOrNone => {
  if (!(delta > 0)) return "none"
  const floors = t.abs_floors.enabled
  if (floors && b < t.abs_floors.mild) return "none"
  const floorOk = (floor: number) => !floors || b >= floor
  if (delta >= t.extreme_delta && floorOk(t.abs_floors.extreme)) return "extreme"
  if (delta >= t.severe_delta && floorOk(t.abs_floors.severe)) return "severe"
  if (delta >= t.moderate_delta && floorOk(t.abs_floors.moderate)) return "moderate"
  if (delta > t.mild_delta) return "mild"
  return "none"
}
