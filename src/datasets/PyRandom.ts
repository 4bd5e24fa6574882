/**
 * CPython's `random.Random` (MT19937) for integer seeds: `seed`, `getrandbits(k ≤ 32)`,
 * `_randbelow` and `shuffle` give the same stream as CPython 3.x, so the upstream
 * item-level split (docs/protocol.md §8) is reproduced exactly.
 */
const N = 624
const M = 397

export class PyRandom {
  private readonly mt = new Uint32Array(N)
  private index = N + 1

  constructor(seed: number | bigint) {
    this.seed(seed)
  }

  /** `random.seed(int)`: init_by_array over the 32-bit words of |seed|, least significant first. */
  seed(seed: number | bigint): void {
    let n = BigInt(seed)
    if (n < 0n) n = -n
    const key: Array<number> = []
    while (n > 0n) {
      key.push(Number(n & 0xffffffffn))
      n >>= 32n
    }
    if (key.length === 0) key.push(0)
    this.initByArray(key)
  }

  private initGenrand(s: number): void {
    const mt = this.mt
    mt[0] = s >>> 0
    for (let i = 1; i < N; i++) {
      const prev = mt[i - 1]!
      mt[i] = (Math.imul(1812433253, prev ^ (prev >>> 30)) + i) >>> 0
    }
    this.index = N
  }

  private initByArray(key: ReadonlyArray<number>): void {
    const mt = this.mt
    this.initGenrand(19650218)
    let i = 1
    let j = 0
    for (let k = Math.max(N, key.length); k > 0; k--) {
      const prev = mt[i - 1]!
      mt[i] = ((mt[i]! ^ Math.imul(prev ^ (prev >>> 30), 1664525)) + key[j]! + j) >>> 0
      i++
      j++
      if (i >= N) {
        mt[0] = mt[N - 1]!
        i = 1
      }
      if (j >= key.length) j = 0
    }
    for (let k = N - 1; k > 0; k--) {
      const prev = mt[i - 1]!
      mt[i] = ((mt[i]! ^ Math.imul(prev ^ (prev >>> 30), 1566083941)) - i) >>> 0
      i++
      if (i >= N) {
        mt[0] = mt[N - 1]!
        i = 1
      }
    }
    mt[0] = 0x80000000
    this.index = N
  }

  private twist(): void {
    const mt = this.mt
    for (let kk = 0; kk < N; kk++) {
      const y = (mt[kk]! & 0x80000000) | (mt[(kk + 1) % N]! & 0x7fffffff)
      mt[kk] = mt[(kk + M) % N]! ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0)
    }
    this.index = 0
  }

  genrandUint32(): number {
    if (this.index >= N) this.twist()
    let y = this.mt[this.index++]!
    y ^= y >>> 11
    y ^= (y << 7) & 0x9d2c5680
    y ^= (y << 15) & 0xefc60000
    y ^= y >>> 18
    return y >>> 0
  }

  getrandbits(k: number): number {
    if (k < 0 || k > 32) throw new RangeError("getrandbits supports 0..32 bits here")
    return k === 0 ? 0 : this.genrandUint32() >>> (32 - k)
  }

  /** `_randbelow_with_getrandbits`: rejection sampling on bit_length(n) bits. */
  randbelow(n: number): number {
    if (n <= 0) return 0
    const k = 32 - Math.clz32(n)
    let r = this.getrandbits(k)
    while (r >= n) r = this.getrandbits(k)
    return r
  }

  /** `random.random()`: 53-bit float from two words. */
  random(): number {
    const a = this.genrandUint32() >>> 5
    const b = this.genrandUint32() >>> 6
    return (a * 67108864 + b) / 9007199254740992
  }

  /** In-place Fisher–Yates exactly as CPython's `shuffle`. */
  shuffle<A>(x: Array<A>): void {
    for (let i = x.length - 1; i > 0; i--) {
      const j = this.randbelow(i + 1)
      const t = x[i]!
      x[i] = x[j]!
      x[j] = t
    }
  }
}
