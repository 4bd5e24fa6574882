import { describe, expect, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { readPoolRows } from "../../src/audit/RegressionPool.ts"
import { poolRows } from "../../src/audit/SummaryBuilder.ts"
import { RegressionPoolRow } from "../../src/contracts/RegressionPoolRow.ts"
import { scoreRow } from "./AuditRows.ts"

const decode = Schema.decodeUnknownResult(RegressionPoolRow)

const lines = (rows: ReadonlyArray<unknown>) => rows.map((r) => `${JSON.stringify(r)}\n`).join("")

describe("a regression pool row (contracts/RegressionPoolRow)", () => {
  it("decodes what dart audit writes, dropping only the item's condition and scenario", () => {
    const written = poolRows([scoreRow("D1-neq-0001", "severe"), scoreRow("D2-neq-0002", "none"), scoreRow("N1-neq-0003", "mild")], false)
    expect(written.map((r) => r.id)).toEqual(["D1-neq-0001", "N1-neq-0003"])
    for (const w of JSON.parse(`[${lines(written).trim().split("\n").join(",")}]`)) {
      const r = decode(w)
      expect(r._tag).toBe("Success")
      const { condition: _c, scenario: _s, ...rest } = w
      if (r._tag === "Success") expect(r.success).toEqual(rest)
    }
  })

  it("refuses a test item unless its audit allowed repairing test items", () => {
    const [refused] = poolRows([scoreRow("D1-neq-0001", "severe", "test")], false)
    const [allowed] = poolRows([scoreRow("D1-neq-0001", "severe", "test")], true)
    expect(decode(JSON.parse(JSON.stringify(refused)))._tag).toBe("Failure")
    expect(decode(JSON.parse(JSON.stringify(allowed)))._tag).toBe("Success")
  })

  it("keeps its key order: the repair teacher copies decoded rows into its outputs", () => {
    expect(Object.keys(RegressionPoolRow.fields)).toEqual([
      "id", "benchmark", "question", "gold_label", "sample", "a_name", "b_name", "a_text", "b_text",
      "severity", "source", "scores", "judge", "split", "test_repair_allowed"
    ])
  })

  it.effect("is read by readPoolRows from dart's pools, and the original's rows through src/compat", () =>
    Effect.gen(function*() {
      const dir = mkdtempSync(path.join(tmpdir(), "dart-pool-row-"))
      try {
        const file = path.join(dir, "pool.jsonl")
        const original = readFileSync(new URL("../vectors/original/audit/regression_pool.jsonl", import.meta.url), "utf8").trim().split("\n")
        writeFileSync(file, lines(poolRows([scoreRow("D1-neq-0001", "severe")], false)) + `${original[0]}\n`)
        const rows = yield* readPoolRows(file)
        expect(rows.map((r) => r.id)).toEqual(["D1-neq-0001", JSON.parse(original[0]!).sample_id])
        expect(rows[0]).not.toHaveProperty("condition")
      } finally {
        rmSync(dir, { recursive: true, force: true })
      }
    }))
})
