import { describe, expect, it } from "@effect/vitest"
import {
  answeredByServer,
  answeredMask,
  answerIndexer,
  armsToAsk,
  cellOf,
  completeRows,
  itemsMissing,
  type RequestGrid,
  requestIndex,
  rowMissing,
  size
} from "../../src/inference/RequestGrid.ts"

const grid: RequestGrid = { items: 3, samples: 2, arms: 3 }

/** `done` with exactly these request indices answered. */
const answered = (indices: ReadonlyArray<number>) => {
  const done = new Uint8Array(size(grid))
  for (const i of indices) done[i] = 1
  return done
}

describe("RequestGrid", () => {
  it("request index = ((item × samples) + sample) × arms + arm, and back", () => {
    expect(size(grid)).toBe(18)
    expect(requestIndex(grid, { item: 0, sample: 0, arm: 0 })).toBe(0)
    expect(requestIndex(grid, { item: 0, sample: 1, arm: 2 })).toBe(5)
    expect(requestIndex(grid, { item: 2, sample: 1, arm: 1 })).toBe(((2 * 2) + 1) * 3 + 1)
    const seen = new Set<number>()
    for (let item = 0; item < grid.items; item++) {
      for (let sample = 0; sample < grid.samples; sample++) {
        for (let arm = 0; arm < grid.arms; arm++) {
          const i = requestIndex(grid, { item, sample, arm })
          expect(cellOf(grid, i)).toEqual({ item, sample, arm })
          seen.add(i)
        }
      }
    }
    // Every index in [0, size) is used exactly once.
    expect([...seen].sort((a, b) => a - b)).toEqual(Array.from({ length: size(grid) }, (_, i) => i))
  })

  it("maps answer rows of this run to their index and ignores the rest", () => {
    const indexOf = answerIndexer({ itemIds: ["a", "b", "c"], armNames: ["M0", "DART", "DART_H"], policy: "off", samples: 2 })
    expect(indexOf({ id: "b", model: "DART_H", policy: "off", sample: 1 })).toBe(requestIndex(grid, { item: 1, sample: 1, arm: 2 }))
    expect(indexOf({ id: "a", model: "M0", policy: "off", sample: 0 })).toBe(0)
    // Another item, model or policy, or a sample beyond this run's: kept in answers.jsonl, not part of this run.
    expect(indexOf({ id: "z", model: "M0", policy: "off", sample: 0 })).toBe(-1)
    expect(indexOf({ id: "a", model: "OTHER", policy: "off", sample: 0 })).toBe(-1)
    expect(indexOf({ id: "a", model: "M0", policy: "on", sample: 0 })).toBe(-1)
    expect(indexOf({ id: "a", model: "M0", policy: "off", sample: 2 })).toBe(-1)
    expect(indexOf({ id: "a", model: "M0", policy: "off", sample: -1 })).toBe(-1)
  })

  it("answered mask from the index offsets; earlier answers count as a server of this run only by the same URL", () => {
    const done = answeredMask(Float64Array.from([0, -1, 120, 240]))
    expect([...done]).toEqual([1, 0, 1, 1])
    // Recorded servers of earlier runs: 0 = http://a, 1 = http://gone.
    const by = answeredByServer(done, Int16Array.from([0, 0, 1, 0]), ["http://a", "http://gone"], ["http://b", "http://a"])
    expect([...by]).toEqual([1, -1, -1, 1])
  })

  it("items missing answers: any arm of any sample", () => {
    expect(itemsMissing(grid, answered([]))).toEqual([0, 1, 2])
    const item0 = Array.from({ length: 6 }, (_, k) => k)
    const item2 = Array.from({ length: 6 }, (_, k) => 12 + k)
    expect(itemsMissing(grid, answered([...item0, ...item2]))).toEqual([1])
    // Item 1 lacks only its last arm of its last sample.
    expect(itemsMissing(grid, answered([...item0, ...Array.from({ length: 5 }, (_, k) => 6 + k), ...item2]))).toEqual([1])
    expect(itemsMissing(grid, answered(Array.from({ length: 18 }, (_, k) => k)))).toEqual([])
  })

  it("a complete row is not asked again; a row's missing arms are", () => {
    const done = answered([0, 1, 2, 3])
    const by = new Int16Array(size(grid)).fill(-1)
    by.fill(0, 0, 4)
    expect(rowMissing(grid, done, 0, 0)).toBe(false)
    expect(armsToAsk(grid, done, by, 0, 0, 0)).toEqual([])
    expect(armsToAsk(grid, done, by, 1, 0, 0)).toEqual([])
    // Row (0, 1) has arm 0 from server 0: server 0 asks the other two.
    expect(armsToAsk(grid, done, by, 0, 0, 1)).toEqual([1, 2])
  })

  it("answers from another server are asked again: all arms of a row come from one server", () => {
    const done = answered([3])
    const by = new Int16Array(size(grid)).fill(-1)
    by[3] = 0
    // Server 1 takes over row (0, 1): arm 0, which server 0 answered, is asked again with the others.
    expect(armsToAsk(grid, done, by, 1, 0, 1)).toEqual([0, 1, 2])
    // An answer kept from a server this run does not have (−1) is asked again too.
    by[3] = -1
    expect(armsToAsk(grid, done, by, 0, 0, 1)).toEqual([0, 1, 2])
  })

  it("counts complete rows", () => {
    expect(completeRows(grid, answered([]))).toBe(0)
    expect(completeRows(grid, answered([0, 1, 2, 3, 4, 15, 16, 17]))).toBe(2)
    expect(completeRows(grid, answered(Array.from({ length: 18 }, (_, k) => k)))).toBe(6)
  })
})
