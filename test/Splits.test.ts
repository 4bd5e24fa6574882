import { describe, expect, it } from "@effect/vitest"
import { readFileSync } from "node:fs"
import { SuiteRow } from "../src/datasets/BenchmarkItem.ts"
import { countSplits, scenarioSplit, upstreamSplit } from "../src/datasets/Splits.ts"
import { benchmarkOrder } from "../src/config/ExperimentConfig.ts"

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
  })

  it("is a pure function of the seed", () => {
    const again = scenarioSplit(rows, { ...spec, strategy: "scenario" })
    expect(again.test.map((r) => r.id)).toEqual(got.test.map((r) => r.id))
    const other = scenarioSplit(rows, { ...spec, seed: 7, strategy: "scenario" })
    expect(other.test.map((r) => r.id)).not.toEqual(got.test.map((r) => r.id))
  })
})
