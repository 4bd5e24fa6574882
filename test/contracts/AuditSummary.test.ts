import { describe, expect, it } from "@effect/vitest"
import { Schema } from "effect"
import { buildSummary } from "../../src/audit/SummaryBuilder.ts"
import { AuditSummary } from "../../src/contracts/AuditSummary.ts"
import { harmSummary } from "../../src/evaluation/HarmDrift.ts"
import { auditContext, json, scoreRow } from "./AuditRows.ts"

describe("the audit summary (contracts/AuditSummary)", () => {
  const rows = [scoreRow("D1-neq-0001", "severe"), scoreRow("N2-neq-0002", "none"), scoreRow("D3-neq-0003", "mild")]
  const summary = buildSummary(rows, auditContext)

  it("decodes what dart audit writes (with complete and timings), keeping every key", () => {
    const written = json({ ...summary, complete: true, timings: { read_s: 0.1, total_s: 1 } })
    const decoded = Schema.decodeUnknownSync(AuditSummary)(written)
    expect(decoded).toEqual(written)
    expect(decoded.regressions).toMatchObject({ total: 2, by_severity: { mild: 1, moderate: 0, severe: 1, extreme: 0 } })
  })

  it("still decodes a summary with only the counts, and refuses counts that do not add up", () => {
    const counts = { run_name: "r", a_name: "A", b_name: "B", n_pairs: 3, regressions: { total: 1, by_severity: { mild: 1, moderate: 0, severe: 0, extreme: 0 }, by_type: {}, by_benchmark: {} } }
    expect(Schema.decodeUnknownResult(AuditSummary)(counts)._tag).toBe("Success")
    const wrong = { ...counts, regressions: { ...counts.regressions, total: 2 } }
    expect(String(Schema.decodeUnknownResult(AuditSummary)(wrong))).toContain("regressions.by_severity adds up to 1, not total 2")
  })

  it("is what the evaluation's harm block reads", () => {
    const audit = Schema.decodeUnknownSync(AuditSummary)(json(summary))
    const harm = harmSummary([{ file: "a.json", summary: audit }, { file: "b.json", summary: { ...audit, run_name: "later" } }])
    expect(harm.audits[0]).toMatchObject({ cases: 2, n_pairs: 3, by_severity: { mild: 1, severe: 1 } })
    expect(Object.keys(harm.reductions[0]!.by_severity)).toEqual(["mild", "moderate", "severe", "extreme"])
  })
})
