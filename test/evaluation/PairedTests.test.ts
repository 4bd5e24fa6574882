import { describe, expect, it } from "@effect/vitest"
import { readFileSync } from "node:fs"
import { mcnemar, PairedTestInputError, wilcoxonSignedRank, type WilcoxonOptions } from "../../src/evaluation/PairedTests.ts"

// Reference values computed by scipy (test/vectors/make_paired_test_vectors.py; versions inside).
interface WilcoxonCase {
  readonly name: string
  readonly a: Array<number>
  readonly b: Array<number>
  readonly options: { alternative?: "two-sided" | "greater" | "less"; method?: "exact" | "asymptotic"; correction?: boolean }
  readonly statistic: number
  readonly p_value: number | null
  readonly z_statistic?: number
}
interface McNemarCase {
  readonly name: string
  readonly a: Array<boolean>
  readonly b: Array<boolean>
  readonly options: { method?: "exact" | "chi2" }
  readonly b01: number
  readonly b10: number
  readonly method: "exact" | "chi2"
  readonly statistic: number
  readonly p_value: number
}
const v = JSON.parse(readFileSync("test/vectors/paired_tests.json", "utf8")) as {
  scipy: string
  numpy: string
  wilcoxon: Array<WilcoxonCase>
  mcnemar: Array<McNemarCase>
}

/** 1e-12 relative; absolute below 1e-300, where scipy's own tails are denormal or zero; null is scipy's NaN. */
const close = (got: number, want: number | null) => {
  if (want === null) return expect(got).toBeNaN()
  const tolerance = Math.abs(want) < 1e-300 ? 1e-300 : 1e-12 * Math.abs(want)
  expect(Math.abs(got - want), `${got} vs ${want}`).toBeLessThanOrEqual(tolerance)
}

const thrown = (f: () => unknown): PairedTestInputError => {
  try {
    f()
  } catch (e) {
    if (e instanceof PairedTestInputError) return e
    throw e
  }
  throw new Error("expected a PairedTestInputError")
}

describe("Wilcoxon signed-rank against scipy.stats.wilcoxon(b, a)", () => {
  it("has vectors from a recorded scipy", () => {
    expect(v.scipy).toMatch(/^\d+\.\d+/)
    expect(v.wilcoxon.length).toBeGreaterThanOrEqual(30)
  })

  for (const c of v.wilcoxon) {
    it(c.name, () => {
      const { method, ...rest } = c.options
      const options: WilcoxonOptions = method === undefined ? rest : { ...rest, method: method === "asymptotic" ? "approx" : method }
      const r = wilcoxonSignedRank(c.a, c.b, options)
      expect(r.statistic).toBe(c.statistic)
      close(r.pValue, c.p_value)
      expect(r.n + r.zeros).toBe(c.a.length)
      expect(r.wPlus + r.wMinus).toBe((r.n * (r.n + 1)) / 2)
      // scipy reports −|z| for two-sided and the signed z otherwise.
      if (c.z_statistic !== undefined) close(c.options.alternative === undefined ? -Math.abs(r.zStatistic!) : r.zStatistic!, c.z_statistic)
    })
  }

  it("picks the method as scipy's 'auto' does", () => {
    const seq = (n: number, f: (i: number) => number) => Array.from({ length: n }, (_, i) => f(i))
    const zeros = (n: number) => seq(n, () => 0)
    // Distinct non-zero differences up to 50 pairs: exact; 51 pairs: normal approximation.
    expect(wilcoxonSignedRank(zeros(50), seq(50, (i) => i + 1)).method).toBe("exact")
    expect(wilcoxonSignedRank(zeros(51), seq(51, (i) => i + 1)).method).toBe("approx")
    // A tie or a zero: every sign flip up to 13 pairs (zeros counted), the approximation from 14.
    expect(wilcoxonSignedRank(zeros(13), seq(13, (i) => (i === 0 ? 0 : i))).method).toBe("permutation")
    expect(wilcoxonSignedRank(zeros(14), seq(14, (i) => (i === 0 ? 0 : i))).method).toBe("approx")
    expect(wilcoxonSignedRank(zeros(13), seq(13, (i) => (i === 0 ? 2 : i + 1))).method).toBe("permutation")
  })

  it("hand-checked: five increases of distinct size", () => {
    // W+ = 15, W− = 0; P(W+ = 15) = 1/32 under the null, two-sided 2/32.
    const r = wilcoxonSignedRank([0, 0, 0, 0, 0], [0.1, 0.2, 0.3, 0.4, 0.5])
    expect(r).toEqual({ n: 5, zeros: 0, wPlus: 15, wMinus: 0, statistic: 0, pValue: 1 / 16, method: "exact" })
    expect(wilcoxonSignedRank([0, 0, 0, 0, 0], [0.1, 0.2, 0.3, 0.4, 0.5], { alternative: "greater" }).pValue).toBe(1 / 32)
    expect(wilcoxonSignedRank([0, 0, 0, 0, 0], [0.1, 0.2, 0.3, 0.4, 0.5], { alternative: "less" }).pValue).toBe(1)
  })

  it("hand-checked: d = b − a, so swapping the samples swaps W+ and W−", () => {
    // d = (+0.3, −0.1, +0.2): ranks 3, 1, 2 → W+ = 5, W− = 1.
    const ab = wilcoxonSignedRank([0.1, 0.5, 0.2], [0.4, 0.4, 0.4], { alternative: "greater" })
    const ba = wilcoxonSignedRank([0.4, 0.4, 0.4], [0.1, 0.5, 0.2], { alternative: "greater" })
    expect([ab.wPlus, ab.wMinus, ab.statistic]).toEqual([5, 1, 5])
    expect([ba.wPlus, ba.wMinus, ba.statistic]).toEqual([1, 5, 1])
    // P(W+ ≥ 5) over 8 sign patterns: {1,2,3} → 6, {2,3} → 5.
    expect(ab.pValue).toBe(2 / 8)
  })

  it("hand-checked: a zero is dropped and the test runs over sign flips of the rest", () => {
    // d = (0, +1, +1): the tied pair has ranks 1.5 each; W+ = 3 is reached by 1 of 4 flips.
    const r = wilcoxonSignedRank([1, 1, 1], [1, 2, 2])
    expect(r).toMatchObject({ n: 2, zeros: 1, wPlus: 3, wMinus: 0, statistic: 0, pValue: 0.5, method: "permutation" })
  })

  it("all pairs equal: p = 1 over sign flips, NaN (as scipy) under the approximation", () => {
    expect(wilcoxonSignedRank([0.2, 0.4], [0.2, 0.4])).toMatchObject({ n: 0, zeros: 2, statistic: 0, pValue: 1 })
    const r = wilcoxonSignedRank(Array(20).fill(0.3), Array(20).fill(0.3))
    expect(r.method).toBe("approx")
    expect(r.pValue).toBeNaN()
  })

  it("refuses unpaired, empty and non-finite input, naming what is wrong", () => {
    expect(thrown(() => wilcoxonSignedRank([1, 2, 3], [1, 2])).message).toBe("paired samples differ in length: a has 3, b has 2")
    expect(thrown(() => wilcoxonSignedRank([], [])).message).toBe("no pairs to test")
    expect(thrown(() => wilcoxonSignedRank([1, Number.NaN], [1, 2])).message).toBe("a[1] is NaN, not a finite score")
    expect(thrown(() => wilcoxonSignedRank([1, 2], [Number.POSITIVE_INFINITY, 2])).message).toBe("b[0] is Infinity, not a finite score")
  })
})

describe("McNemar on paired crossings (statsmodels semantics, scipy numbers)", () => {
  for (const c of v.mcnemar) {
    it(c.name, () => {
      const r = mcnemar(c.a, c.b, c.options)
      expect({ b01: r.b01, b10: r.b10, method: r.method }).toEqual({ b01: c.b01, b10: c.b10, method: c.method })
      close(r.statistic, c.statistic)
      close(r.pValue, c.p_value)
    })
  }

  it("hand-checked: b01 counts B crossing where A did not", () => {
    // Pairs (A, B): (F, T) ×3, (T, F) ×1, (T, T), (F, F). Exact: 2·P(X ≤ 1 | n = 4, ½) = 2·5/16.
    const r = mcnemar([false, false, false, true, true, false], [true, true, true, false, true, false])
    expect(r).toEqual({ b01: 3, b10: 1, statistic: 1, pValue: 10 / 16, method: "exact" })
  })

  it("switches from exact to chi-square at 25 discordant pairs", () => {
    const pairs = (b01: number, b10: number) => {
      const a = [...Array<boolean>(b01).fill(false), ...Array<boolean>(b10).fill(true)]
      return [a, a.map((x) => !x)] as const
    }
    expect(mcnemar(...pairs(10, 14)).method).toBe("exact")
    expect(mcnemar(...pairs(10, 15)).method).toBe("chi2")
    // (|15 − 10| − 1)² / 25
    expect(mcnemar(...pairs(10, 15)).statistic).toBe(16 / 25)
    expect(mcnemar(...pairs(10, 15), { method: "exact" }).method).toBe("exact")
  })

  it("refuses unpaired and empty input", () => {
    expect(thrown(() => mcnemar([true], [true, false])).message).toBe("paired samples differ in length: a has 1, b has 2")
    expect(thrown(() => mcnemar([], [])).message).toBe("no pairs to test")
  })
})
