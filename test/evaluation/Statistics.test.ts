import { describe, expect, it } from "@effect/vitest"
import { readFileSync } from "node:fs"
import { addDecision, decisionMetrics, emptyConfusion } from "../../src/evaluation/DecisionMetrics.ts"
import { holm, mcnemarExact, percentile, stars } from "../../src/evaluation/Statistics.ts"

// Reference values computed by scikit-learn, scipy, statsmodels and numpy (test/vectors/make_stat_vectors.py).
const v = JSON.parse(readFileSync("test/vectors/stat_vectors.json", "utf8"))
const close = (a: number | null, b: number | null) => {
  if (a === null || b === null) return expect(a).toBe(b)
  expect(Math.abs(a - b)).toBeLessThanOrEqual(1e-12 * Math.max(1, Math.abs(b)))
}

describe("decision metrics against scikit-learn", () => {
  v.sets.forEach((set: { gold: Array<number>; pred: Array<number>; macro_f1: number | null; balanced_accuracy: number | null; confusion: Record<string, number> }, i: number) => {
    it(`set ${i}: confusion, macro-F1 and balanced accuracy on parsed items`, () => {
      const c = emptyConfusion()
      set.gold.forEach((g, k) => addDecision(c, g, set.pred[k]!))
      const m = decisionMetrics(c)
      expect({ tp: m.counts.tp, tn: m.counts.tn, fp: m.counts.fp, fn: m.counts.fn }).toEqual(set.confusion)
      close(m.macro_f1, set.macro_f1)
      close(m.balanced_accuracy, set.balanced_accuracy)
      const abstain = set.pred.filter((p) => p < 0).length
      expect(m.counts.abstain).toBe(abstain)
      // Abstentions count as wrong in accuracy, parse rate is over all items.
      close(m.accuracy, (set.confusion.tp! + set.confusion.tn!) / set.gold.length)
      close(m.parse_ok_rate, (set.gold.length - abstain) / set.gold.length)
      const goldNo = set.gold.filter((g) => g === 0).length
      close(m.equal_accuracy, goldNo === 0 ? null : set.confusion.tn! / goldNo)
    })
  })
})

describe("tests against scipy/statsmodels", () => {
  it("exact McNemar and mid-p", () => {
    for (const c of v.mcnemar) {
      const got = mcnemarExact(c.b01, c.b10)
      close(got.p_value, c.p_value)
      close(got.p_mid, c.p_mid)
    }
  })

  it("Holm–Bonferroni", () => {
    for (const c of v.holm) holm(c.p).forEach((p, i) => close(p, c.adjusted[i]))
  })

  it("numpy linear-interpolation percentiles, bit for bit", () => {
    for (const c of v.percentile) {
      const xs = Float64Array.from(c.values)
      c.q.forEach((q: number, i: number) => expect(percentile(xs, q)).toBe(c.expected[i]))
    }
  })

  it("stars at .05, .01 and .001", () => {
    expect([0.2, 0.04, 0.009, 0.0009, null].map(stars)).toEqual(["", "*", "**", "***", ""])
  })
})
