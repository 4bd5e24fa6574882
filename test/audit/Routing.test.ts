import { describe, expect, it } from "@effect/vitest"
import { decide, needsJudge } from "../../src/audit/Routing.ts"
import type { JudgeRecord } from "../../src/audit/ScoreRow.ts"
import { splitWindows } from "../../src/serving/ClassifierClient.ts"

const verdict = (is: boolean, severity: "none" | "mild" | "moderate" | "severe" | "extreme"): JudgeRecord => ({
  ok: true,
  verdict: { is_regression: is, severity, reason: "r", regression_type: is ? "less_nuanced" : "none", a_correct: true, b_correct: !is },
  model: "m",
  prompt_version: "v",
  attempts: 1,
  request_hashes: []
})
const failed: JudgeRecord = { ok: false, reason: "malformed judge reply", model: "m", prompt_version: "v", attempts: 3, request_hashes: [] }

describe("routing pairs into the pool (docs/protocol.md §5)", () => {
  it("off: classifier triggers at or above min_severity, with the classifier's severity", () => {
    expect(decide("off", "severe", null, "mild")).toEqual({ in_pool: true, severity: "severe", source: "classifier", classifier_trigger: true, overridden: false })
    expect(decide("off", "mild", null, "moderate").in_pool).toBe(false)
  })
  it("validate: the judge's verdict and severity; a rejected trigger is overridden; a failure is no verdict", () => {
    expect(decide("validate", "extreme", verdict(true, "mild"), "mild")).toMatchObject({ in_pool: true, severity: "mild", source: "judge" })
    expect(decide("validate", "extreme", verdict(false, "none"), "mild")).toMatchObject({ in_pool: false, overridden: true })
    expect(decide("validate", "none", verdict(true, "severe"), "mild")).toMatchObject({ in_pool: true, severity: "severe", overridden: false })
    expect(decide("validate", "extreme", failed, "mild")).toMatchObject({ in_pool: false, overridden: false, classifier_trigger: true })
    // The judge's severity must also reach min_severity.
    expect(decide("validate", "none", verdict(true, "mild"), "moderate")).toMatchObject({ in_pool: false })
  })
  it("primary: the judge alone, nothing overridden; supplement: both must agree", () => {
    expect(decide("primary", "extreme", verdict(false, "none"), "mild")).toMatchObject({ in_pool: false, overridden: false })
    expect(decide("primary", "none", verdict(true, "moderate"), "mild")).toMatchObject({ in_pool: true, severity: "moderate" })
    expect(decide("supplement", "none", verdict(true, "moderate"), "mild").in_pool).toBe(false)
    expect(decide("supplement", "mild", verdict(true, "severe"), "mild")).toMatchObject({ in_pool: true, severity: "severe", source: "judge" })
    expect(decide("supplement", "mild", verdict(false, "none"), "mild").in_pool).toBe(false)
    expect(needsJudge("supplement", "none", "mild")).toBe(false)
    expect(needsJudge("supplement", "mild", "mild")).toBe(true)
    expect(needsJudge("validate", "none", "mild")).toBe(true)
    expect(needsJudge("off", "extreme", "mild")).toBe(false)
  })
})

describe("windows for texts beyond a classifier's window", () => {
  it("covers the whole text in overlapping windows cut at spaces, each within the limit", () => {
    const text = Array.from({ length: 400 }, (_, i) => `word${i}`).join(" ")
    const windows = splitWindows(text, 200)
    expect(windows.length).toBeGreaterThan(text.length / 200)
    for (const w of windows) expect(w.length).toBeLessThanOrEqual(200)
    // Every word is whole in some window.
    for (let i = 0; i < 400; i++) expect(windows.some((w) => new RegExp(`(^| )word${i}( |$)`).test(w))).toBe(true)
    expect(splitWindows("short", 200)).toEqual(["short"])
    // No spaces at all: hard cuts, still covering everything.
    const blob = "x".repeat(1000)
    expect(splitWindows(blob, 300).join("").length).toBeGreaterThanOrEqual(1000)
  })
})
