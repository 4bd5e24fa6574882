import { describe, expect, it } from "@effect/vitest"
import { PyRandom } from "../../src/datasets/PyRandom.ts"

// Values printed by CPython 3.11: random.Random(seed) then the calls below.
describe("PyRandom", () => {
  it("matches CPython's stream for seed 42", () => {
    const r = new PyRandom(42)
    expect(r.random()).toBe(0.6394267984578837)
    expect(r.getrandbits(32)).toBe(107420369)
    expect(r.randbelow(1000)).toBe(759)
    const xs = Array.from({ length: 20 }, (_, i) => i)
    r.shuffle(xs)
    expect(xs).toEqual([16, 15, 2, 14, 5, 13, 17, 12, 0, 6, 9, 1, 19, 11, 10, 3, 4, 18, 7, 8])
  })

  it("seeds from every 32-bit word of a large seed", () => {
    expect(new PyRandom(2n ** 40n + 5n).random()).toBe(0.5043802970418443)
    expect(new PyRandom(-42).random()).toBe(new PyRandom(42).random())
  })
})
