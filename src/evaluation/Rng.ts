/**
 * xoshiro128** seeded through splitmix32 from (seed, label): every bootstrap stream is a
 * pure function of the configured seed and what it resamples, so results are
 * byte-identical run to run and independent of evaluation order.
 */
export class Rng {
  private a: number
  private b: number
  private c: number
  private d: number

  constructor(seed: number, label: string) {
    let h = (seed ^ 0x9e3779b9) >>> 0
    for (let i = 0; i < label.length; i++) h = Math.imul(h ^ label.charCodeAt(i), 0x01000193) >>> 0
    const next = () => {
      h = (h + 0x9e3779b9) >>> 0
      let z = h
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b)
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35)
      return (z ^ (z >>> 16)) >>> 0
    }
    this.a = next()
    this.b = next()
    this.c = next()
    this.d = next() | 1
  }

  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.b, 5), 7), 9) >>> 0
    const t = this.b << 9
    this.c ^= this.a
    this.d ^= this.b
    this.b ^= this.c
    this.a ^= this.d
    this.c ^= t
    this.d = rotl(this.d, 11)
    return result
  }

  /** Uniform integer in [0, n) for n ≤ 2^21 (multiply-shift; bias below n / 2^32). */
  below(n: number): number {
    return Math.floor((this.nextUint32() * n) / 4294967296)
  }
}

const rotl = (x: number, k: number) => (x << k) | (x >>> (32 - k))
