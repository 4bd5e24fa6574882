import { binomial } from "./Binomial.ts"
import type { Rng } from "./Rng.ts"
import { percentile } from "./Statistics.ts"

export interface Interval {
  readonly estimate: number | null
  readonly ci_low: number | null
  readonly ci_high: number | null
}

const finite = (x: number) => (Number.isFinite(x) ? x : null)

/** Percentile interval (linear interpolation) of bootstrap replicates around a point estimate. */
export const interval = (estimate: number, replicates: Float64Array, alpha: number): Interval => ({
  estimate: finite(estimate),
  ci_low: finite(percentile(replicates, (100 * alpha) / 2)),
  ci_high: finite(percentile(replicates, 100 - (100 * alpha) / 2))
})

/**
 * Resamples whole units (items or scenario clusters) with replacement. `columns[k][u]` is
 * unit u's contribution to sum k; `statistic` maps the summed columns of one resample
 * to the values to record. Returns one Float64Array of replicates per recorded value.
 *
 * Units with identical columns are interchangeable, so when there are few distinct
 * kinds (item-level resampling has at most a handful) a resample draws their
 * multinomial counts with exact binomials instead of one index per unit: the same
 * distribution, at a cost independent of the number of units.
 */
export const bootstrapSums = (
  columns: ReadonlyArray<Int32Array>,
  resamples: number,
  rng: Rng,
  statistic: (sums: Float64Array, out: Float64Array) => void,
  outputs: number
): Array<Float64Array> => {
  const units = columns[0]?.length ?? 0
  const k = columns.length
  const replicates = Array.from({ length: outputs }, () => new Float64Array(resamples))
  const sums = new Float64Array(k)
  const out = new Float64Array(outputs)
  // Interleave columns so one draw touches one cache line.
  const packed = new Int32Array(units * k)
  for (let u = 0; u < units; u++) for (let j = 0; j < k; j++) packed[u * k + j] = columns[j]![u]!

  const kinds = new Map<string, number>()
  const kindOf = new Int32Array(units)
  for (let u = 0; u < units; u++) {
    const key = packed.subarray(u * k, u * k + k).join(",")
    let t = kinds.get(key)
    if (t === undefined) kinds.set(key, (t = kinds.size))
    kindOf[u] = t
  }
  const types = kinds.size
  const multinomial = types * 16 <= units
  const weight = new Int32Array(types)
  const vector = new Int32Array(types * k)
  for (let u = 0; u < units; u++) {
    const t = kindOf[u]!
    if (weight[t]!++ === 0) vector.set(packed.subarray(u * k, u * k + k), t * k)
  }

  for (let r = 0; r < resamples; r++) {
    sums.fill(0)
    if (multinomial) {
      let remaining = units
      let remainingWeight = units
      for (let t = 0; t < types && remaining > 0; t++) {
        const w = weight[t]!
        const c = t === types - 1 ? remaining : binomial(rng, remaining, w / remainingWeight)
        remaining -= c
        remainingWeight -= w
        if (c !== 0) for (let j = 0; j < k; j++) sums[j]! += c * vector[t * k + j]!
      }
    } else if (k === 3) {
      // The mc hot path (9,999 resamples × thousands of clusters): unrolled.
      let s0 = 0
      let s1 = 0
      let s2 = 0
      for (let i = 0; i < units; i++) {
        const base = rng.below(units) * 3
        s0 += packed[base]!
        s1 += packed[base + 1]!
        s2 += packed[base + 2]!
      }
      sums[0] = s0
      sums[1] = s1
      sums[2] = s2
    } else {
      for (let i = 0; i < units; i++) {
        const base = rng.below(units) * k
        for (let j = 0; j < k; j++) sums[j]! += packed[base + j]!
      }
    }
    statistic(sums, out)
    for (let o = 0; o < outputs; o++) replicates[o]![r] = out[o]!
  }
  return replicates
}
