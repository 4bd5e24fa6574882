/**
 * Mann–Whitney U of x (B's harm scores) against y (A's), two-sided, as scipy.stats.mannwhitneyu
 * computes it with its defaults (use_continuity=True, method="auto"), plus the rank-biserial r.
 * Checked against scipy on committed vectors (test/vectors/mann_whitney.json).
 */
export interface MannWhitney {
  readonly n_x: number
  readonly n_y: number
  /** U of x: the number of (x, y) pairs with x > y, ties counting one half. */
  readonly u: number
  readonly p_value: number
  readonly method: "exact" | "asymptotic"
  /** 2U/(n_x·n_y) − 1: +1 when every x is above every y, −1 when every x is below. */
  readonly rank_biserial_r: number
}

/** Average ranks (1-based) of `values` (ties share their mean rank), and Σ(t³ − t) over tie groups. */
export const averageRanks = (values: ArrayLike<number>) => {
  const n = values.length
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => values[a]! - values[b]!)
  const ranks = new Float64Array(n)
  let tieTerm = 0
  for (let i = 0; i < n;) {
    let j = i
    while (j + 1 < n && values[order[j + 1]!] === values[order[i]!]) j++
    const avg = (i + j) / 2 + 1
    for (let k = i; k <= j; k++) ranks[order[k]!] = avg
    const t = j - i + 1
    tieTerm += t * t * t - t
    i = j + 1
  }
  return { ranks, tieTerm }
}

/** Average ranks of the pooled sample (x first, then y). */
const rankPooled = (x: ArrayLike<number>, y: ArrayLike<number>) => {
  const values = new Float64Array(x.length + y.length)
  for (let i = 0; i < x.length; i++) values[i] = x[i]!
  for (let i = 0; i < y.length; i++) values[x.length + i] = y[i]!
  return averageRanks(values)
}

/** erfc with ~1e-14 relative accuracy: a positive-term series below 2.5, Lentz's continued fraction above. */
export const erfc = (x: number): number => {
  if (x < 0) return 2 - erfc(-x)
  if (x < 2.5) {
    // erf(x) = 2/√π · e^(−x²) · Σ 2ⁿ x^(2n+1) / (1·3·…·(2n+1))
    let term = x
    let sum = x
    for (let n = 1; n < 200; n++) {
      term *= (2 * x * x) / (2 * n + 1)
      sum += term
      if (term < sum * 1e-17) break
    }
    return 1 - (2 / Math.sqrt(Math.PI)) * Math.exp(-x * x) * sum
  }
  // erfc(x) = e^(−x²)/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + …))))
  const tiny = 1e-300
  let f = x
  let c = x
  let d = 0
  for (let n = 1; n < 500; n++) {
    const a = n / 2
    d = x + a * d
    d = d === 0 ? tiny : 1 / d
    c = x + a / c
    if (c === 0) c = tiny
    const delta = c * d
    f *= delta
    if (Math.abs(delta - 1) < 1e-16) break
  }
  return Math.exp(-x * x) / Math.sqrt(Math.PI) / f
}

const normalSf = (z: number) => 0.5 * erfc(z / Math.SQRT2)

/** P(U ≥ u) under H0 without ties, by counting rank arrangements (small samples only). */
const exactSf = (u: number, nx: number, ny: number): number => {
  // f[k][v]: arrangements of k x's among the ranks seen so far with U = v, grown one y at a time.
  const maxU = nx * ny
  let f: Array<Float64Array> = Array.from({ length: nx + 1 }, (_, k) => {
    const row = new Float64Array(maxU + 1)
    if (k >= 0) row[0] = 1
    return row
  })
  for (let j = 1; j <= ny; j++) {
    const g = Array.from({ length: nx + 1 }, () => new Float64Array(maxU + 1))
    g[0]![0] = 1
    for (let k = 1; k <= nx; k++) {
      for (let v = 0; v <= maxU; v++) {
        // The largest element is a y (contributes nothing) or an x (beats all j y's).
        g[k]![v] = f[k]![v]! + (v >= j ? g[k - 1]![v - j]! : 0)
      }
    }
    f = g
  }
  const counts = f[nx]!
  let total = 0
  let tail = 0
  for (let v = 0; v <= maxU; v++) {
    total += counts[v]!
    if (v >= u) tail += counts[v]!
  }
  return tail / total
}

export const mannWhitney = (x: ArrayLike<number>, y: ArrayLike<number>): MannWhitney | null => {
  const nx = x.length
  const ny = y.length
  if (nx === 0 || ny === 0) return null
  const { ranks, tieTerm } = rankPooled(x, y)
  let rx = 0
  for (let i = 0; i < nx; i++) rx += ranks[i]!
  const u = rx - (nx * (nx + 1)) / 2
  const r = (2 * u) / (nx * ny) - 1
  const uMax = Math.max(u, nx * ny - u)
  const n = nx + ny
  if (Math.min(nx, ny) <= 8 && tieTerm === 0) {
    return { n_x: nx, n_y: ny, u, p_value: Math.min(1, 2 * exactSf(uMax, nx, ny)), method: "exact", rank_biserial_r: r }
  }
  const mu = (nx * ny) / 2
  const s = Math.sqrt(((nx * ny) / 12) * (n + 1 - tieTerm / (n * (n - 1))))
  const p = s === 0 ? 1 : Math.min(1, 2 * normalSf((uMax - mu - 0.5) / s))
  return { n_x: nx, n_y: ny, u, p_value: p, method: "asymptotic", rank_biserial_r: r }
}
