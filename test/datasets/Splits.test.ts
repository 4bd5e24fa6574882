import { describe, expect, it } from "@effect/vitest"
import { readFileSync } from "node:fs"
import { SuiteRow } from "../../src/datasets/BenchmarkItem.ts"
import { countSplits, scenarioSplit, upstreamSplit } from "../../src/datasets/Splits.ts"
import { benchmarkOrder } from "../../src/config/ExperimentConfig.ts"

const loadRows = (): Array<SuiteRow> =>
  benchmarkOrder.flatMap((b) => {
    try {
      return readFileSync(`benchmark_suite/${b}.jsonl`, "utf8").trim().split("\n").map((l) => JSON.parse(l) as SuiteRow)
    } catch {
      return []
    }
  })

const rows = loadRows()
const spec = { seed: 42, train: 0.8, val: 0.1, test: 0.1 }

describe("upstream split", () => {
  it("equals the CPython-made test vector id for id", () => {
    const vector = JSON.parse(readFileSync("test/vectors/upstream_split.json", "utf8")) as Record<"train" | "val" | "test", Array<string>>
    const got = upstreamSplit(rows, { ...spec, strategy: "upstream" })
    for (const s of ["train", "val", "test"] as const) expect(got[s].map((r) => r.id)).toEqual(vector[s])
  })
})

describe("scenario split", () => {
  const got = scenarioSplit(rows, { ...spec, strategy: "scenario" })

  it("puts every (benchmark, scenario) group in exactly one split", () => {
    const home = new Map<string, string>()
    for (const s of ["train", "val", "test"] as const) {
      for (const r of got[s]) {
        const key = `${r.benchmark}/${r.scenario}`
        expect(home.get(key) ?? s).toBe(s)
        home.set(key, s)
      }
    }
    expect(home.size).toBe(new Set(rows.map((r) => `${r.benchmark}/${r.scenario}`)).size)
  })

  it("keeps every item once with counts near 80/10/10 per benchmark and condition", () => {
    const counts = countSplits(got, ["D1", "D2", "D3", "D4", "N2", "N3", "N4"])
    const ids = new Set([...got.train, ...got.val, ...got.test].map((r) => r.id))
    expect(ids.size).toBe(14_000)
    // Single-item scenarios split exactly; D1 has one scenario per item and condition pairs share ids.
    expect(counts.D1).toEqual({ neq: { train: 800, val: 100, test: 100 }, eq: { train: 800, val: 100, test: 100 } })
    for (const [b, byCondition] of Object.entries(counts)) {
      const total = { train: 0, val: 0, test: 0 }
      for (const n of Object.values(byCondition)) {
        expect(n.train + n.val + n.test).toBe(1000)
        total.train += n.train
        total.val += n.val
        total.test += n.test
      }
      // Coarse groups (D3: 66 scenarios) cannot hit 200 exactly; stay within one group's size.
      expect(Math.abs(total.val - 200), b).toBeLessThanOrEqual(40)
      expect(Math.abs(total.test - 200), b).toBeLessThanOrEqual(40)
    }
    // Seed 42 gives exactly these counts: any change to the grouping, the shuffle or the cut points
    // would move items between splits of existing runs, so it must show up here.
    const split = (train: number, val: number, test: number) => ({ train, val, test })
    expect(counts).toEqual({
      D1: { neq: split(800, 100, 100), eq: split(800, 100, 100) },
      D2: { neq: split(796, 102, 102), eq: split(804, 98, 98) },
      D3: { neq: split(798, 99, 103), eq: split(800, 93, 107) },
      D4: { neq: split(812, 96, 92), eq: split(788, 104, 108) },
      N2: { neq: split(793, 105, 102), eq: split(807, 95, 98) },
      N3: { neq: split(803, 93, 104), eq: split(797, 104, 99) },
      N4: { neq: split(802, 99, 99), eq: split(802, 98, 100) }
    })
  })

  it("is a pure function of the seed", () => {
    const again = scenarioSplit(rows, { ...spec, strategy: "scenario" })
    expect(again.test.map((r) => r.id)).toEqual(got.test.map((r) => r.id))
    const other = scenarioSplit(rows, { ...spec, seed: 7, strategy: "scenario" })
    expect(other.test.map((r) => r.id)).not.toEqual(got.test.map((r) => r.id))
  })
})
