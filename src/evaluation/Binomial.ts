import type { Rng } from "./Rng.ts"

/**
 * Exact binomial variates: inversion through geometric gaps for small means, and
 * Hörmann's BTRS (transformed rejection with squeeze, 1993) otherwise. Lets a bootstrap
 * draw the multinomial counts of a few distinct unit types instead of n indices.
 */
const uniform = (rng: Rng) => (rng.nextUint32() + 0.5) / 4294967296

const STIRLING_TAIL = [
  0.0810614667953272, 0.0413406959554092, 0.0276779256849983, 0.02079067210376509, 0.0166446911898211,
  0.0138761288230707, 0.0118967099458917, 0.010411265261972, 0.00925546218271273, 0.00833056343336287
]

/** log(k!) − [(k + ½)·log(k + 1) − (k + 1) + ½·log(2π)] */
const stirlingTail = (k: number) => {
  if (k <= 9) return STIRLING_TAIL[k]!
  const kp1sq = (k + 1) * (k + 1)
  return (1 / 12 - (1 / 360 - 1 / 1260 / kp1sq) / kp1sq) / (k + 1)
}

const inversion = (rng: Rng, n: number, p: number) => {
  const logQ = Math.log1p(-p)
  let sum = 0
  let successes = 0
  for (;;) {
    sum += Math.ceil(Math.log(uniform(rng)) / logQ)
    if (sum > n) return successes
    successes++
  }
}

const btrs = (rng: Rng, n: number, p: number) => {
  const q = 1 - p
  const spq = Math.sqrt(n * p * q)
  const b = 1.15 + 2.53 * spq
  const a = -0.0873 + 0.0248 * b + 0.01 * p
  const c = n * p + 0.5
  const vr = 0.92 - 4.2 / b
  const r = p / q
  const alpha = (2.83 + 5.1 / b) * spq
  const m = Math.floor((n + 1) * p)
  for (;;) {
    const u = uniform(rng) - 0.5
    let v = uniform(rng)
    const us = 0.5 - Math.abs(u)
    const k = Math.floor(((2 * a) / us + b) * u + c)
    if (k < 0 || k > n) continue
    if (us >= 0.07 && v <= vr) return k
    v = Math.log((v * alpha) / (a / (us * us) + b))
    const bound = (m + 0.5) * Math.log((m + 1) / (r * (n - m + 1))) +
      (n + 1) * Math.log((n - m + 1) / (n - k + 1)) +
      (k + 0.5) * Math.log((r * (n - k + 1)) / (k + 1)) +
      stirlingTail(m) + stirlingTail(n - m) - stirlingTail(k) - stirlingTail(n - k)
    if (v <= bound) return k
  }
}

export const binomial = (rng: Rng, n: number, p: number): number => {
  if (n <= 0 || p <= 0) return 0
  if (p >= 1) return n
  if (p > 0.5) return n - binomial(rng, n, 1 - p)
  return n * p < 10 ? inversion(rng, n, p) : btrs(rng, n, p)
}
