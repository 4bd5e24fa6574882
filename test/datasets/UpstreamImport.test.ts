import { describe, expect, it } from "@effect/vitest"
import { readFileSync } from "node:fs"
import { PickleError, readPickle } from "../../src/datasets/PickleReader.ts"
import { importUpstreamPickle, pythonJsonLine } from "../../src/datasets/UpstreamImport.ts"

const toJsonl = (rows: ReadonlyArray<object>) => rows.map((r) => pythonJsonLine(r as Record<string, unknown>)).join("\n") + "\n"

describe("upstream pickle import", () => {
  it("turns the original D1_1k.pkl into benchmark_suite/D1.jsonl byte for byte", () => {
    const rows = importUpstreamPickle(readFileSync(new URL("../fixtures/upstream/D1_1k.pkl", import.meta.url)), "D1")
    expect(rows).toHaveLength(2000)
    expect(toJsonl(rows)).toBe(readFileSync("benchmark_suite/D1.jsonl", "utf8"))
  })

  it.each([2, 4])("reads numpy integer scenario ids (protocol %i)", (protocol) => {
    const rows = importUpstreamPickle(readFileSync(`test/fixtures/numpy_scenarios_p${protocol}.pkl`), "N4")
    expect(rows.map((r) => [r.id, r.answer, r.marginalized_choice, r.scenario])).toEqual([
      ["N4-neq-0000", 1, null, "7"],
      ["N4-neq-0001", 0, null, "s-1"],
      ["N4-eq-0000", 2, 0, "-3"],
      ["N4-eq-0001", 2, 1, "12"]
    ])
  })

  it("refuses globals other than plain data", () => {
    // pickle.dumps(os.system) at protocol 0: GLOBAL 'posix system'
    const evil = new TextEncoder().encode("cposix\nsystem\np0\n.")
    expect(() => readPickle(evil)).toThrow(/refusing pickle global "posix system"/)
  })

  it("rejects a truncated file and a wrong shape with a reason", () => {
    const data = readFileSync(new URL("../fixtures/upstream/D1_1k.pkl", import.meta.url))
    expect(() => importUpstreamPickle(data.subarray(0, 5000), "D1")).toThrow(PickleError)
    // pickle.dumps([1, 2], protocol=2)
    expect(() => importUpstreamPickle(Uint8Array.from([0x80, 2, 0x5d, 0x71, 0, 0x28, 0x4b, 1, 0x4b, 2, 0x65, 0x2e]), "D1"))
      .toThrow(/pair of lists/)
  })

  it("checks labels: a D-benchmark eq item must answer (c)", () => {
    // pickle.dumps([[], [["q", 1, 0]]], protocol=2)
    const bytes = Uint8Array.from([
      0x80, 2, 0x5d, 0x71, 0, 0x28, 0x5d, 0x71, 1, 0x5d, 0x71, 2, 0x5d, 0x71, 3, 0x28, 0x58, 1, 0, 0, 0, 0x71, 0x71, 4,
      0x4b, 1, 0x4b, 0, 0x65, 0x61, 0x65, 0x2e
    ])
    expect(() => importUpstreamPickle(bytes, "D2")).toThrow(/equal\[0\]: eq answer must be 2, got 1/)
  })
})
