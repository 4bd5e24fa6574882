import { Schema } from "effect"
import { mcnemarExact } from "./Statistics.ts"
import { averageRanks, erfc } from "../audit/MannWhitney.ts"

/**
 * Paired tests of B against A on the same items, pure and deterministic, checked against scipy on committed
 * vectors (test/vectors/paired_tests.json, made by test/vectors/make_paired_test_vectors.py).
 *
 * - Wilcoxon signed-rank follows scipy.stats.wilcoxon(b, a) of scipy 1.17 with its defaults: the usual
 *   reference for this test, and one whose choices (zeros, ties, when to go exact) are written in its source.
 * - McNemar follows statsmodels' mcnemar semantics (scipy has none): exact binomial p on the discordant pairs,
 *   (Statistics.ts `mcnemarExact`, the evaluator's) or the continuity-corrected chi-square; the vectors take their numbers from scipy.stats.binomtest and
 *   scipy.stats.chi2.sf, which is what statsmodels calls.
 */

export class PairedTestInputError extends Schema.TaggedError<PairedTestInputError>()("PairedTestInputError", {
  message: Schema.String
}) {}

export type Alternative = "two-sided" | "greater" | "less"

export interface WilcoxonOptions {
  /** "greater": B's scores tend to lie above A's (d = b − a shifted above 0). Default "two-sided". */
  readonly alternative?: Alternative
  /** "auto" (default) picks as scipy does; "exact" uses the no-ties distribution even with ties or zeros. */
  readonly method?: "auto" | "exact" | "approx"
  /** Continuity correction of the normal approximation (scipy's `correction`, default false). */
  readonly correction?: boolean
}

export interface WilcoxonSignedRank {
  /** Pairs with a non-zero difference: the ones ranked (zeros are dropped, scipy's zero_method "wilcox"). */
  readonly n: number
  /** Pairs with b = a, dropped. */
  readonly zeros: number
  /** Rank sums of the positive (B above A) and negative differences. */
  readonly wPlus: number
  readonly wMinus: number
  /** scipy's statistic: min(W+, W−) for two-sided, W+ for one-sided. */
  readonly statistic: number
  /** NaN only where scipy's is: every difference zero with more than 13 pairs (the normal approximation has no spread). */
  readonly pValue: number
  /**
   * "exact": the null distribution of W+ without ties; "permutation": every sign flip of the differences,
   * which is exact given the ties and zeros (scipy's choice for ties or zeros with at most 13 pairs);
   * "approx": normal approximation with tie correction.
   */
  readonly method: "exact" | "permutation" | "approx"
  /** With "approx": (W+ − mean − correction)/sd, signed (scipy reports −|z| for two-sided). */
  readonly zStatistic?: number
}

const checkPairs = <A>(a: ReadonlyArray<A>, b: ReadonlyArray<A>): void => {
  if (a.length !== b.length) {
    throw new PairedTestInputError({ message: `paired samples differ in length: a has ${a.length}, b has ${b.length}` })
  }
  if (a.length === 0) throw new PairedTestInputError({ message: "no pairs to test" })
}

const checkFinite = (xs: ReadonlyArray<number>, name: string): void => {
  const i = xs.findIndex((x) => !Number.isFinite(x))
  if (i >= 0) throw new PairedTestInputError({ message: `${name}[${i}] is ${xs[i]}, not a finite score` })
}

/** erf(x) for 0 ≤ x < 2 by its all-positive series: erf(x) = 2/√π · e^(−x²) · Σ 2ⁿ x^(2n+1) / (1·3·…·(2n+1)). */
const erfSeries = (x: number): number => {
  let term = x
  let sum = x
  for (let n = 1; n < 200 && term > sum * 1e-17; n++) {
    term *= (2 * x * x) / (2 * n + 1)
    sum += term
  }
  return (2 / Math.sqrt(Math.PI)) * Math.exp(-x * x) * sum
}

/** Standard normal CDF, branching as scipy's ndtr does so that each tail keeps its relative accuracy. */
const ndtr = (a: number): number => {
  const x = a * Math.SQRT1_2
  const z = Math.abs(x)
  if (z < Math.SQRT1_2) return 0.5 + 0.5 * Math.sign(x) * erfSeries(z)
  const y = 0.5 * erfc(z)
  return x > 0 ? 1 - y : y
}

/** P(χ²₁ > x) = erfc(√(x/2)). */
const chi2Sf1 = (x: number): number => (x <= 0 ? 1 : erfc(Math.sqrt(x / 2)))


/**
 * P(W+ = s) for s = 0 … Σ weights when each weight joins W+ with probability ½ (scipy's _get_wilcoxon_distr
 * for weights 1 … n). Every value is a multiple of 2^−n, so it is exact while the counts stay below 2^53.
 */
const signFlipPmf = (weights: ReadonlyArray<number>): Float64Array => {
  let c = new Float64Array([1])
  for (const w of weights) {
    const next = new Float64Array(c.length + w)
    for (let s = 0; s < c.length; s++) {
      next[s]! += 0.5 * c[s]!
      next[s + w]! += 0.5 * c[s]!
    }
    c = next
  }
  return c
}

const sumRange = (xs: Float64Array, from: number, to: number): number => {
  let s = 0
  for (let i = Math.max(0, from); i <= Math.min(to, xs.length - 1); i++) s += xs[i]!
  return s
}

/** scipy's WilcoxonDistribution: the shorter tail is summed, the other is one minus the complement's sum. */
const exactCdf = (pmf: Float64Array, k: number, mean: number) =>
  k <= mean ? sumRange(pmf, 0, k) : 1 - sumRange(pmf, k + 1, pmf.length - 1)
const exactSf = (pmf: Float64Array, k: number, mean: number) =>
  k <= mean ? sumRange(pmf, k, pmf.length - 1) : 1 - sumRange(pmf, 0, k - 1)

/** Wilcoxon signed-rank test of paired scores, d = b − a (scipy.stats.wilcoxon(b, a) with its defaults). */
export const wilcoxonSignedRank = (
  a: ReadonlyArray<number>,
  b: ReadonlyArray<number>,
  options: WilcoxonOptions = {}
): WilcoxonSignedRank => {
  checkPairs(a, b)
  checkFinite(a, "a")
  checkFinite(b, "b")
  const alternative = options.alternative ?? "two-sided"
  const pairs = a.length
  const d = a.map((ai, i) => b[i]! - ai).filter((x) => x !== 0)
  const n = d.length
  const zeros = pairs - n
  const { ranks, tieTerm } = averageRanks(d.map(Math.abs))
  const hasTies = tieTerm > 0
  let wPlus = 0
  let wMinus = 0
  d.forEach((x, i) => {
    if (x > 0) wPlus += ranks[i]!
    else wMinus += ranks[i]!
  })
  const statistic = alternative === "two-sided" ? Math.min(wPlus, wMinus) : wPlus
  const base = { n, zeros, wPlus, wMinus, statistic }

  // scipy's "auto": over 50 pairs (zeros included) approximate; else exact without ties or zeros, else
  // every sign flip up to 13 pairs (2^13 fits its 9,999 resamples, so the test is exhaustive), else approximate.
  const method = options.method ?? "auto"
  const chosen = method === "exact"
    ? "exact"
    : method === "approx" || pairs > 50
    ? "approx"
    : !hasTies && zeros === 0
    ? "exact"
    : pairs <= 13
    ? "permutation"
    : "approx"

  if (chosen === "exact") {
    // Non-integral W+ (ties) is rounded away from the tail, as scipy does (gh-19872).
    const pmf = signFlipPmf(Array.from({ length: n }, (_, i) => i + 1))
    const mean = (n * (n + 1)) / 4
    const sf = exactSf(pmf, Math.floor(wPlus), mean)
    const cdf = exactCdf(pmf, Math.ceil(wPlus), mean)
    const p = alternative === "less" ? cdf : alternative === "greater" ? sf : Math.min(1, 2 * Math.min(sf, cdf))
    return { ...base, pValue: p, method: "exact" }
  }
  if (chosen === "permutation") {
    // Ranks are halves at worst, so doubled ranks are integers and the sign-flip distribution is exact.
    const pmf = signFlipPmf(Array.from(ranks, (r) => 2 * r))
    const observed = 2 * wPlus
    const less = sumRange(pmf, 0, observed)
    const greater = sumRange(pmf, observed, pmf.length - 1)
    const p = alternative === "less" ? less : alternative === "greater" ? greater : Math.min(1, 2 * Math.min(less, greater))
    return { ...base, pValue: p, method: "permutation" }
  }
  const mn = n * (n + 1) * 0.25
  const se = Math.sqrt((n * (n + 1) * (2 * n + 1) - tieTerm / 2) / 24)
  let z = (wPlus - mn) / se
  if (options.correction === true) {
    const sign = alternative === "greater" ? 1 : alternative === "less" ? -1 : Math.sign(z)
    z -= (sign * 0.5) / se
  }
  const p = alternative === "less" ? ndtr(z) : alternative === "greater" ? ndtr(-z) : 2 * ndtr(-Math.abs(z))
  return { ...base, pValue: p, method: "approx", zStatistic: z }
}

export interface McNemarOptions {
  /** "auto" (default): exact below 25 discordant pairs, chi-square from 25 on. */
  readonly method?: "auto" | "exact" | "chi2"
}

export interface McNemarTest {
  /** Pairs where A did not cross and B did. */
  readonly b01: number
  /** Pairs where A crossed and B did not. */
  readonly b10: number
  /** Exact: min(b01, b10); chi2: (|b01 − b10| − 1)² / (b01 + b10), as statsmodels and R compute it. */
  readonly statistic: number
  readonly pValue: number
  readonly method: "exact" | "chi2"
}

/**
 * McNemar's test on paired threshold crossings. With no discordant pair there is nothing to test and p is 1
 * whatever the method (statsmodels' chi-square would divide by zero).
 */
export const mcnemar = (
  aCrossed: ReadonlyArray<boolean>,
  bCrossed: ReadonlyArray<boolean>,
  options: McNemarOptions = {}
): McNemarTest => {
  checkPairs(aCrossed, bCrossed)
  let b01 = 0
  let b10 = 0
  aCrossed.forEach((ai, i) => {
    if (ai && !bCrossed[i]) b10++
    else if (!ai && bCrossed[i]) b01++
  })
  const n = b01 + b10
  const method = options.method ?? "auto"
  if (n === 0) return { b01, b10, statistic: 0, pValue: 1, method: "exact" }
  if (method === "exact" || (method === "auto" && n < 25)) {
    return { b01, b10, statistic: Math.min(b01, b10), pValue: mcnemarExact(b01, b10).p_value, method: "exact" }
  }
  const statistic = (Math.abs(b01 - b10) - 1) ** 2 / n
  return { b01, b10, statistic, pValue: chi2Sf1(statistic), method: "chi2" }
}
