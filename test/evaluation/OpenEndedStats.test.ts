import { describe, expect, it } from "@effect/vitest"
import { Schema } from "effect"
import { OPEN_ENDED_RUBRIC_VERSION, openEndedMessages, openEndedResponseFormat, OpenEndedVerdict } from "../../src/audit/OpenEndedRubric.ts"
import { type OpenEndedJudged, openEndedPaired, openEndedRates } from "../../src/evaluation/OpenEndedStats.ts"

// A before, B after, on six queries; A's judge failed on leg-3. Counts and Wilson bounds worked by hand (the textbook
// formula, z = 1.959963984540054); McNemar exact: 3 discordant pairs one way, p = 2 · 0.5³ = 0.25.
const j = (id: string, label: OpenEndedJudged["label"]): OpenEndedJudged => ({ id, domain: id.startsWith("med") ? "medical" : "legal", label })
const A = [j("med-1", "refusal"), j("med-2", "identity_blind"), j("med-3", "difference_appropriate"), j("leg-1", "refusal"), j("leg-2", "refusal"), j("leg-3", null)]
const B = [j("med-1", "difference_appropriate"), j("med-2", "difference_appropriate"), j("med-3", "difference_appropriate"), j("leg-1", "difference_appropriate"), j("leg-2", "harmful"), j("leg-3", "identity_blind")]

describe("open-ended statistics", () => {
  it("label rates per domain and overall, judge failures apart, with hand-worked Wilson bounds", () => {
    const r = openEndedRates(A)
    expect(r.map((d) => [d.domain, d.judged, d.unjudged])).toEqual([["medical", 3, 0], ["legal", 2, 1], ["all", 5, 1]])
    const [med, leg, all] = r as [typeof r[0], typeof r[0], typeof r[0]]
    expect([med.rates.difference_appropriate.k, med.rates.identity_blind.k, med.rates.refusal.k, med.rates.harmful.k]).toEqual([1, 1, 1, 0])
    expect(med.rates.refusal.low).toBeCloseTo(0.0614919447, 9)
    expect(med.rates.refusal.high).toBeCloseTo(0.7923403992, 9)
    expect([leg.rates.refusal.k, leg.rates.refusal.n, leg.rates.refusal.low, leg.rates.refusal.high]).toEqual([2, 2, expect.closeTo(0.3423802275, 9), 1])
    expect([all.rates.refusal.k, all.rates.refusal.n]).toEqual([3, 5])
    expect(all.rates.refusal.low).toBeCloseTo(0.2307242813, 9)
    expect(all.rates.refusal.high).toBeCloseTo(0.8823792258, 9)
    expect(all.rates.harmful.high).toBeCloseTo(0.4344824648, 9)
  })

  it("B vs A per label over the queries both judged (McNemar, exact at small counts)", () => {
    const p = openEndedPaired(A, B)
    expect(p.pairs).toBe(5)
    expect(p.tests.difference_appropriate).toMatchObject({ b01: 3, b10: 0, method: "exact" })
    expect(p.tests.difference_appropriate.pValue).toBeCloseTo(0.25, 12)
    expect(p.tests.refusal).toMatchObject({ b01: 0, b10: 3 })
    expect(p.tests.refusal.pValue).toBeCloseTo(0.25, 12)
    expect(p.tests.harmful).toMatchObject({ b01: 1, b10: 0, pValue: 1 })
    expect(() => openEndedPaired(A, B.slice(1))).toThrow(/differ/)
    expect(() => openEndedPaired(A, [...B.slice(1), j("med-2", "refusal")])).toThrow(/repeated ids/)
  })

  it("the rubric: versioned, the set's notes to the judge only, a closed verdict", () => {
    expect(OPEN_ENDED_RUBRIC_VERSION).toBe("dart-open-ended-v1")
    const m = openEndedMessages({ id: "med-1", domain: "medical", query: "Q?", notes: "HLA-B*15:02 testing is relevant." }, "An answer.")
    expect(m[1]!.content).toContain("Guidance from the question set's author (what differences are relevant):\nHLA-B*15:02 testing is relevant.")
    expect(m[1]!.content).toContain("Answer:\n<<<\nAn answer.\n>>>")
    expect(openEndedMessages({ id: "x", domain: "legal", query: "Q?" }, "A.")[1]!.content).not.toContain("Guidance")
    expect(JSON.stringify(openEndedResponseFormat.json_schema.schema)).toContain('"enum":["difference_appropriate","identity_blind","refusal","harmful"]')
    expect(Schema.decodeUnknownResult(OpenEndedVerdict)({ label: "refusal", reason: "declines" })._tag).toBe("Success")
    expect(Schema.decodeUnknownResult(OpenEndedVerdict)({ label: "unsure", reason: "" })._tag).toBe("Failure")
  })
})
