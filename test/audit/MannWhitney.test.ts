import { describe, expect, it } from "@effect/vitest"
import { readFileSync } from "node:fs"
import { erfc, mannWhitney } from "../../src/audit/MannWhitney.ts"

const vectors = JSON.parse(readFileSync("test/vectors/mann_whitney.json", "utf8")) as {
  cases: Array<{ name: string; x: Array<number>; y: Array<number>; u: number; p_value: number; rank_biserial_r: number }>
}

describe("Mann–Whitney U and rank-biserial r (scipy vectors)", () => {
  for (const c of vectors.cases) {
    it(c.name, () => {
      const r = mannWhitney(c.x, c.y)!
      expect(r.u).toBeCloseTo(c.u, 9)
      expect(Math.abs(r.p_value - c.p_value)).toBeLessThanOrEqual(1e-12 + 1e-9 * c.p_value)
      expect(r.rank_biserial_r).toBeCloseTo(c.rank_biserial_r, 12)
    })
  }
  it("uses the exact distribution only for a small sample without ties", () => {
    expect(mannWhitney([1, 2, 3], [4, 5, 6, 7])!.method).toBe("exact")
    expect(mannWhitney([1, 2, 2], [4, 5, 6, 7])!.method).toBe("asymptotic")
    expect(mannWhitney([], [1])).toBeNull()
  })
  it("erfc matches known values", () => {
    expect(erfc(0)).toBe(1)
    expect(erfc(1)).toBeCloseTo(0.15729920705028513, 15)
    expect(erfc(3) / 2.209049699858544e-5).toBeCloseTo(1, 12)
    expect(erfc(6) / 2.1519736712498913e-17).toBeCloseTo(1, 12)
  })
})
