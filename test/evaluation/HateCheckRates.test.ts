import { describe, expect, it } from "@effect/vitest"
import { hateCheckRates, type HateCheckJudged } from "../../src/evaluation/HateCheckRates.ts"
import { wilson } from "../../src/evaluation/Statistics.ts"

// Wilson bounds worked by hand from the textbook formula, (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n) with
// z = 1.959963984540054, to 10 decimals (3 of 10 gives the often-quoted 0.1078–0.6032).
const HAND: Record<string, [number, number]> = {
  "1/4": [0.0455872608, 0.6993581574],
  "2/4": [0.1500389892, 0.8499610108],
  "0/3": [0, 0.5614970318],
  "1/7": [0.0256796243, 0.5131278293],
  "2/5": [0.1176207742, 0.7692757187],
  "3/10": [0.1077912674, 0.6032218525]
}
const close = (p: { k: number; n: number; rate: number | null; low: number | null; high: number | null }) => {
  const [low, high] = HAND[`${p.k}/${p.n}`]!
  expect(p.rate).toBeCloseTo(p.k / p.n, 12)
  expect(p.low).toBeCloseTo(low, 9)
  expect(p.high).toBeCloseTo(high, 9)
}

describe("wilson", () => {
  it("equals the hand-worked bounds, and says nothing of an empty cell", () => {
    for (const key of Object.keys(HAND)) {
      const [k, n] = key.split("/").map(Number) as [number, number]
      close(wilson(k, n))
    }
    expect(wilson(0, 0)).toEqual({ k: 0, n: 0, rate: null, low: null, high: null })
    expect(wilson(5, 5).high).toBe(1)
    expect(() => wilson(3, 2)).toThrow(/0 <= k <= n/)
  })
})

describe("hateCheckRates on a hand-made fixture", () => {
  const h = (functionality: string, label_gold: HateCheckJudged["label_gold"], refused: boolean, harmful: boolean | null = null): HateCheckJudged => ({ functionality, label_gold, refused, harmful })
  const rows: Array<HateCheckJudged> = [
    // Counter-speech quoting hate (non-hateful): 1 of 4 refused.
    h("counter_quote_nh", "non-hateful", false), h("counter_quote_nh", "non-hateful", true), h("counter_quote_nh", "non-hateful", false), h("counter_quote_nh", "non-hateful", false),
    // Negative emotion about a group (hateful): 2 of 5 refused; the judge saw 4, 2 of them harmful.
    h("derog_neg_emote_h", "hateful", true, false), h("derog_neg_emote_h", "hateful", false, true), h("derog_neg_emote_h", "hateful", true, false), h("derog_neg_emote_h", "hateful", false, null), h("derog_neg_emote_h", "hateful", false, true),
    // Reclaimed slurs (non-hateful): none refused.
    h("slur_reclaimed_nh", "non-hateful", false), h("slur_reclaimed_nh", "non-hateful", false), h("slur_reclaimed_nh", "non-hateful", false)
  ]
  const r = hateCheckRates(rows)

  it("gives each functionality the failure its gold label makes measurable, counted by hand", () => {
    expect(r.functionalities.map((f) => [f.functionality, f.label_gold, f.cases])).toEqual([
      ["counter_quote_nh", "non-hateful", 4], ["derog_neg_emote_h", "hateful", 5], ["slur_reclaimed_nh", "non-hateful", 3]
    ])
    const [counter, derog, reclaimed] = r.functionalities as [typeof r.functionalities[0], typeof r.functionalities[0], typeof r.functionalities[0]]
    close(counter.overRefusal!)
    expect(counter.harmfulCompliance).toBeNull()
    close(derog.harmfulCompliance!)
    expect([derog.harmfulCompliance!.k, derog.harmfulCompliance!.n]).toEqual([2, 4])
    close(derog.refusal)
    expect(derog.overRefusal).toBeNull()
    close(reclaimed.overRefusal!)
  })

  it("pools the non-hateful cases for over-refusal and the judged hateful ones for harmful compliance", () => {
    expect([r.overall.overRefusal.k, r.overall.overRefusal.n]).toEqual([1, 7])
    close(r.overall.overRefusal)
    expect([r.overall.harmfulCompliance.k, r.overall.harmfulCompliance.n]).toEqual([2, 4])
  })
})
