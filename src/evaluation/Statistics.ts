/** Pure statistics used by the evaluator; each function is checked against scipy/statsmodels vectors. */

/** log C(n, k) + k·log p + (n−k)·log(1−p) for p = 1/2, summed in log space. */
const logHalfPmf = (n: number): Float64Array => {
  const out = new Float64Array(n + 1)
  out[0] = -n * Math.LN2
  for (let i = 0; i < n; i++) out[i + 1] = out[i]! + Math.log((n - i) / (i + 1))
  return out
}

const logSumExp = (xs: ArrayLike<number>, from: number, to: number): number => {
  let m = -Infinity
  for (let i = from; i <= to; i++) m = Math.max(m, xs[i]!)
  if (m === -Infinity) return -Infinity
  let s = 0
  for (let i = from; i <= to; i++) s += Math.exp(xs[i]! - m)
  return m + Math.log(s)
}

export interface McNemar {
  /** A wrong, B right. */
  readonly b01: number
  /** A right, B wrong. */
  readonly b10: number
  /** Exact two-sided binomial p on the discordant pairs (statsmodels `mcnemar(exact=True)`). */
  readonly p_value: number
  /** Mid-p variant: 2·(P(X < k) + ½·P(X = k)), capped at 1. */
  readonly p_mid: number
}

export const mcnemarExact = (b01: number, b10: number): McNemar => {
  const n = b01 + b10
  if (n === 0) return { b01, b10, p_value: 1, p_mid: 1 }
  const k = Math.min(b01, b10)
  const lp = logHalfPmf(n)
  const cdf = Math.exp(logSumExp(lp, 0, k))
  const pk = Math.exp(lp[k]!)
  return { b01, b10, p_value: Math.min(1, 2 * cdf), p_mid: Math.min(1, 2 * (cdf - 0.5 * pk)) }
}

/** Holm–Bonferroni step-down adjusted p-values, in the input order (statsmodels `multipletests(method="holm")`). */
export const holm = (ps: ReadonlyArray<number>): Array<number> => {
  const m = ps.length
  const order = ps.map((p, i) => [p, i] as const).sort((a, b) => a[0] - b[0] || a[1] - b[1])
  const out = new Array<number>(m)
  let running = 0
  order.forEach(([p, i], rank) => {
    running = Math.max(running, Math.min(1, (m - rank) * p))
    out[i] = running
  })
  return out
}

/** numpy `percentile(x, q)` with linear interpolation; sorts `sorted` in place if asked. */
export const percentileSorted = (sorted: ArrayLike<number>, q: number): number => {
  const n = sorted.length
  if (n === 0) return Number.NaN
  const pos = (n - 1) * (q / 100)
  const lo = Math.floor(pos)
  const hi = Math.min(lo + 1, n - 1)
  const frac = pos - lo
  const a = sorted[lo]!
  const b = sorted[hi]!
  // numpy's `_lerp`, including its switch to the upper end for t >= 0.5, so results match bit for bit.
  const diff = b - a
  return frac >= 0.5 ? b - diff * (1 - frac) : a + diff * frac
}

/** Sorts with NaN last (numpy's order), then reports the percentile; NaN if any value is NaN (as numpy does). */
export const percentile = (values: Float64Array, q: number): number => {
  const sorted = Float64Array.from(values).sort()
  if (sorted.length > 0 && Number.isNaN(sorted[sorted.length - 1]!)) return Number.NaN
  return percentileSorted(sorted, q)
}

export const stars = (p: number | null): string =>
  p === null || Number.isNaN(p) ? "" : p < 0.001 ? "***" : p < 0.01 ? "**" : p < 0.05 ? "*" : ""

/** Two-sided 95 %: the normal quantile z(0.975). */
export const Z95 = 1.959963984540054

export interface Proportion {
  readonly k: number
  readonly n: number
  /** k / n; null when n = 0. */
  readonly rate: number | null
  /** Wilson score interval; null when n = 0. */
  readonly low: number | null
  readonly high: number | null
}

/**
 * k of n with its Wilson score interval (better than the normal one at small n and rates near 0 or 1: per-functionality
 * HateCheck cells hold 100–200 cases with rates of a few percent). Checked against hand-worked bounds, not scipy.
 */
export const wilson = (k: number, n: number, z = Z95): Proportion => {
  if (!Number.isInteger(k) || !Number.isInteger(n) || k < 0 || n < 0 || k > n) throw new RangeError(`wilson: need integers 0 <= k <= n, got k=${k} n=${n}`)
  if (n === 0) return { k, n, rate: null, low: null, high: null }
  const p = k / n
  const z2 = z * z
  const denom = 1 + z2 / n
  const centre = (p + z2 / (2 * n)) / denom
  const half = (z / denom) * Math.sqrt((p * (1 - p)) / n + z2 / (4 * n * n))
  return { k, n, rate: p, low: Math.max(0, centre - half), high: Math.min(1, centre + half) }
}
