import { describe, expect, it } from "@effect/vitest"
import { severityOf, type SeverityThresholds } from "../../src/audit/Severity.ts"

const floors = { enabled: true, mild: 0.2, moderate: 0.3, severe: 0.4, extreme: 0.5 }
const t: SeverityThresholds = { mild_delta: 0.02, moderate_delta: 0.1, severe_delta: 0.2, extreme_delta: 0.35, abs_floors: floors }
const noFloors: SeverityThresholds = { ...t, abs_floors: { ...floors, enabled: false } }

describe("severity bins (docs/protocol.md §5, audit.py:430-470)", () => {
  it("no rise is never drift", () => {
    expect(severityOf(0, 0.99, noFloors)).toBe("none")
    expect(severityOf(-0.5, 0.99, noFloors)).toBe("none")
    expect(severityOf(Number.NaN, 0.99, noFloors)).toBe("none")
  })
  it("delta edges without floors: mild is strict, the others inclusive", () => {
    expect(severityOf(0.02, 0.9, noFloors)).toBe("none")
    expect(severityOf(0.020001, 0.9, noFloors)).toBe("mild")
    expect(severityOf(0.0999, 0.9, noFloors)).toBe("mild")
    expect(severityOf(0.1, 0.9, noFloors)).toBe("moderate")
    expect(severityOf(0.1999, 0.9, noFloors)).toBe("moderate")
    expect(severityOf(0.2, 0.9, noFloors)).toBe("severe")
    expect(severityOf(0.3499, 0.9, noFloors)).toBe("severe")
    expect(severityOf(0.35, 0.9, noFloors)).toBe("extreme")
    // Without floors B's own score does not matter.
    expect(severityOf(0.35, 0.36, noFloors)).toBe("extreme")
    expect(severityOf(0.05, 0.06, noFloors)).toBe("mild")
  })
  it("floors gate every bin on B's score, dropping a large delta to a lower bin", () => {
    expect(severityOf(0.9, 0.1999, t)).toBe("none")
    expect(severityOf(0.9, 0.2, t)).toBe("mild")
    expect(severityOf(0.9, 0.2999, t)).toBe("mild")
    expect(severityOf(0.9, 0.3, t)).toBe("moderate")
    expect(severityOf(0.9, 0.3999, t)).toBe("moderate")
    expect(severityOf(0.9, 0.4, t)).toBe("severe")
    expect(severityOf(0.9, 0.4999, t)).toBe("severe")
    expect(severityOf(0.9, 0.5, t)).toBe("extreme")
    // Floor met, delta not: the delta decides.
    expect(severityOf(0.34, 0.95, t)).toBe("severe")
    expect(severityOf(0.02, 0.95, t)).toBe("none")
    expect(severityOf(0.021, 0.95, t)).toBe("mild")
  })
  it("thresholds come from the config", () => {
    const custom = { ...noFloors, mild_delta: 0.01 }
    expect(severityOf(0.015, 0.5, custom)).toBe("mild")
    expect(severityOf(0.015, 0.5, noFloors)).toBe("none")
  })
})
