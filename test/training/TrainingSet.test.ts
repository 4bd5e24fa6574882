import { describe, expect, it } from "@effect/vitest"
import { assembleTrainingSet, parseOversample } from "../../src/training/TrainingSet.ts"

const conv = (q: string, a: string) => [
  { role: "system" as const, content: "sys" },
  { role: "user" as const, content: q },
  { role: "assistant" as const, content: a }
]
const weights = { mild: 1, moderate: 2, severe: 3, extreme: 4 }

describe("training-set assembly", () => {
  const distill = [
    { id: "d1", messages: conv("q1", "a1") },
    { id: "d2", messages: conv("q2", "a2") },
    { id: "d2-again", messages: conv("q2", "a2") }
  ]
  const repair = [
    { id: "r1", messages: conv("q3", "safe3"), severity: "mild" as const },
    { id: "r2", messages: conv("q4", "safe4"), severity: "severe" as const },
    { id: "r2-dup", messages: conv("q4", "safe4"), severity: "severe" as const },
    { id: "r3", messages: conv("q5", "safe5"), severity: "extreme" as const }
  ]

  it("de-duplicates first, then repeats each repair row by its severity weight (docs/protocol.md §9 B2)", () => {
    const { rows, manifest } = assembleTrainingSet({ distill, repair, recipe: "mix", weights, seed: 42 })
    const count = (id: string) => rows.filter((r) => r.id === id).length
    expect([count("d1"), count("d2"), count("d2-again"), count("r1"), count("r2"), count("r2-dup"), count("r3")]).toEqual([1, 1, 0, 1, 3, 0, 4])
    expect(manifest.duplicates_removed).toEqual({ distill: 1, repair: 1 })
    expect(manifest.output).toEqual({ total: 10, distill: 2, repair: 8, repair_by_severity: { mild: 1, moderate: 0, severe: 3, extreme: 4 } })
  })

  it("shuffles with the seed, and the recipes select their sources", () => {
    const a = assembleTrainingSet({ distill, repair, recipe: "mix", weights, seed: 1 }).rows.map((r) => `${r.id}.${r.copy}`)
    const b = assembleTrainingSet({ distill, repair, recipe: "mix", weights, seed: 1 }).rows.map((r) => `${r.id}.${r.copy}`)
    const c = assembleTrainingSet({ distill, repair, recipe: "mix", weights, seed: 2 }).rows.map((r) => `${r.id}.${r.copy}`)
    expect(a).toEqual(b)
    expect(c).not.toEqual(a)
    expect(new Set(assembleTrainingSet({ distill, repair, recipe: "repair_only", weights, seed: 1 }).rows.map((r) => r.source))).toEqual(new Set(["repair"]))
    expect(assembleTrainingSet({ distill, repair, recipe: "distill", weights, seed: 1 }).rows).toHaveLength(2)
  })

  it("parses --repair-oversample", () => {
    expect(parseOversample("mild=1,moderate=2,severe=3,extreme=4", { mild: 0, moderate: 0, severe: 0, extreme: 0 })).toEqual(weights)
    expect(parseOversample("severe=5", weights)).toEqual({ ...weights, severe: 5 })
    expect(parseOversample("awful=2", weights)).toMatch(/"awful=2" is not severity=count/)
  })
})

describe("training-set order", () => {
  it("does not depend on the order the teacher's rows were appended in (completion order)", () => {
    const distill = Array.from({ length: 12 }, (_, i) => ({ id: `D1_${i}`, messages: conv(`q${i}`, `a${i}`) }))
    const repair = Array.from({ length: 5 }, (_, i) => ({ id: `N2_${i}#0`, messages: conv(`r${i}`, `s${i}`), severity: "severe" as const }))
    const one = assembleTrainingSet({ distill, repair, recipe: "mix", weights, seed: 42 })
    const other = assembleTrainingSet({ distill: [...distill].reverse(), repair: [repair[3]!, repair[0]!, repair[4]!, repair[1]!, repair[2]!], recipe: "mix", weights, seed: 42 })
    expect(other.rows).toEqual(one.rows)
  })
})
