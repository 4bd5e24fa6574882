import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { TestClock } from "effect/testing"
import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { progressLine, reportProgress } from "../../src/common/Progress.ts"
import { resolveAgainstSnapshot, resolveConfig } from "../../src/config/ConfigLoader.ts"
import { jsonKeyProblems } from "../../src/config/JsonKeys.ts"
import { PickleError, readPickle } from "../../src/datasets/PickleReader.ts"
import { importUpstreamPickle } from "../../src/datasets/UpstreamImport.ts"
import { toLatex, toMarkdown } from "../../src/evaluation/Tables.ts"
import { readRows } from "../../src/runs/Jsonl.ts"
import { makeBudgetGate } from "../../src/llm/Budget.ts"
import { toError } from "../../src/training/TrainerClient.ts"
import { Schema } from "effect"

describe("budget gate", () => {
  it.effect("lets requests through while they fit, then waits for those on the wire before deciding", () =>
    Effect.gen(function*() {
      const gate = yield* makeBudgetGate({ maxTokens: 1000, maxUsd: null })
      const a = yield* gate.reserve({ tokens: 400, usd: 0 })
      const b = yield* gate.reserve({ tokens: 400, usd: 0 })
      expect(a && b).toBeTruthy()
      // 800 reserved: a third 400 does not fit and waits for a settlement.
      const third = yield* Effect.forkChild(gate.reserve({ tokens: 400, usd: 0 }))
      yield* Effect.yieldNow
      expect(third.pollUnsafe()).toBeUndefined()
      yield* a!.settle({ tokens: 100, usd: 0 }) // came in under its projection: room again
      const c = yield* Fiber.join(third)
      expect(c).toBeDefined()
      yield* b!.settle({ tokens: 450, usd: 0 })
      yield* c!.settle({ tokens: 450, usd: 0 })
      expect(gate.exhausted()).toBe(true)
      expect(yield* gate.reserve({ tokens: 1, usd: 0 })).toBeUndefined()
      expect(gate.spent().tokens).toBe(1000)
    }))

  it.effect("lets one request through when the cap is smaller than a request, and no more", () =>
    Effect.gen(function*() {
      const gate = yield* makeBudgetGate({ maxTokens: 100, maxUsd: 0.01 })
      const first = yield* gate.reserve({ tokens: 600, usd: 0.001 })
      expect(first).toBeDefined()
      const others = yield* Effect.forkChild(Effect.forEach([1, 2, 3], () => gate.reserve({ tokens: 600, usd: 0.001 }), { concurrency: "unbounded" }))
      yield* first!.settle({ tokens: 120, usd: 0.0002 })
      expect(yield* Fiber.join(others)).toEqual([undefined, undefined, undefined])
    }))
})

describe("budget gate: spend", () => {
  it.effect("settles a failed request with nothing and a finished one with its real usage", () =>
    Effect.gen(function*() {
      const gate = yield* makeBudgetGate({ maxTokens: 500, maxUsd: null })
      const failed = yield* gate.spend({ tokens: 400, usd: 0 }, Effect.fail("boom"), () => ({ tokens: 400, usd: 0 })).pipe(Effect.flip)
      expect(failed).toBe("boom")
      expect(gate.spent().tokens).toBe(0)
      expect(yield* gate.spend({ tokens: 400, usd: 0 }, Effect.succeed(7), () => ({ tokens: 450, usd: 0 }))).toBe(7)
      expect(gate.spent().tokens).toBe(450)
      expect(yield* gate.spend({ tokens: 400, usd: 0 }, Effect.succeed(8), () => ({ tokens: 60, usd: 0 }))).toBe(8) // nothing on the wire: one more
      expect(yield* gate.spend({ tokens: 1, usd: 0 }, Effect.succeed(9), () => ({ tokens: 1, usd: 0 }))).toBeUndefined()
    }))
})

describe("progress line", () => {
  it("counts the rate from items done in this invocation only", () => {
    const line = progressLine("distill", { done: 1010, total: 2000, failed: 0, tokens: 5, costUsd: 0 }, 10, "", 1000)
    expect(line).toContain("1010/2000")
    expect(line).toContain("1.0/s")
    expect(line).toContain("ETA 17m") // 990 items at 1/s, not at the 101/s that counting resumed items gives
  })

  it.effect("prints a fresh line at every tick", () =>
    Effect.scoped(Effect.gen(function*() {
      const printed: Array<string> = []
      const state = { done: 5, total: 25, failed: 0, tokens: 0, costUsd: 0 }
      yield* reportProgress("distill", state, () => "", 1000, (l) => Effect.sync(() => void printed.push(l)))
      yield* TestClock.adjust("1 second")
      state.done = 10
      state.tokens = 1234
      yield* TestClock.adjust("1 second")
      state.done = 25
      yield* TestClock.adjust("1 second")
      expect(printed).toHaveLength(3)
      expect(new Set(printed).size).toBe(3)
      expect(printed[0]).toMatch(/^distill 5\/25 \(20\.0%\) 0\.0\/s/)
      expect(printed[1]).toMatch(/^distill 10\/25 \(40\.0%\) 2\.5\/s .*1,234 tokens/)
      expect(printed[2]).toMatch(/^distill 25\/25 \(100\.0%\) 6\.7\/s ETA 0s/)
    })))
})

describe("config files and overrides", () => {
  const err = (r: ReturnType<typeof resolveConfig> | ReturnType<typeof resolveAgainstSnapshot>) => ("config" in r ? "" : r.message)

  it("finds duplicate and reserved keys that JSON.parse hides, with their line", () => {
    expect(jsonKeyProblems(`{"a": 1,\n "b": {"c": 1, "c": 2}}`)).toEqual(["b.c: duplicate key (line 2); JSON would silently keep only the last"])
    expect(jsonKeyProblems(`{"x": [{"__proto__": {}}]}`)).toEqual(["x[0].__proto__: reserved key not allowed (line 1)"])
    expect(jsonKeyProblems(`{"s": "a\\"}{\\"b", "n": [1, 2.5e3, true, null]}`)).toEqual([])
    expect(err(resolveConfig("c.json", `{"teacher": {"model": "a", "model": "b"}}`, [], undefined, undefined))).toContain("c.json: invalid config\n  teacher.model: duplicate key")
    expect(err(resolveConfig("c.json", `{"__proto__": {"x": 1}}`, [], undefined, undefined))).toContain("__proto__: reserved key")
    expect(err(resolveConfig("c.json", "{}", ["__proto__.x=1"], undefined, undefined))).toContain("reserved key")
  })

  it("attributes a cross-field failure to the override that caused it, and a malformed override is a usage error", () => {
    const r = resolveConfig("c.json", "{}", ["datasets.split.train=0.5"], undefined, undefined)
    expect(err(r)).toMatch(/datasets\.split: train \+ val \+ test must add up to 1, got .*  \[from --override datasets\.split\.train=0\.5\]/)
    const bad = resolveConfig("c.json", "{}", ["teacher.api_key sk-live-abcdef0123456789"], undefined, undefined)
    expect("config" in bad ? undefined : bad._tag).toBe("ConfigUsageError")
    expect(err(bad)).not.toContain("abcdef0123456789")
  })

  it("never echoes a key given in an override or a URL", () => {
    const key = "sk-live-abcdef0123456789"
    for (const o of [`teacher.api_key=${key}`, `teacher.api_key_env=${key}`, `teacher.base_url=https://h/v1?key=${key}`, `compute.trainer.endpoint=u:${key}@h:1`]) {
      const m = err(resolveConfig("c.json", "{}", [o], undefined, undefined))
      expect(m, o).not.toBe("")
      expect(m, o).not.toContain(key)
    }
  })

  it("lets a later stage change operational keys of the snapshot and refuses the rest with every key listed", () => {
    const snap = JSON.stringify({ run: { exp_id: "s" }, teacher: { model: "deepseek-chat" } })
    const ok = resolveAgainstSnapshot("runs/s/configs/config.json", snap, undefined, ["teacher.max_concurrency=2", "teacher.budget.max_usd=1", "compute.trainer.endpoint=127.0.0.1:5"], undefined, undefined)
    expect(err(ok)).toBe("")
    const refused = resolveAgainstSnapshot("runs/s/configs/config.json", snap, undefined, ["teacher.model=x", "training.lora.r=8", "teacher.timeout_s=5"], undefined, undefined)
    expect(err(refused)).toContain("teacher.model: \"deepseek-chat\" (recorded) -> \"x\" (now)")
    expect(err(refused)).toContain("training.lora.r: 16 (recorded) -> 8 (now)")
    expect(err(refused)).not.toContain("timeout_s")
  })
})

describe("smaller ones", () => {
  it("escapes | and backslashes in markdown cells and backslashes in LaTeX", () => {
    const t = { name: "t", title: "T", headers: ["model", "a|b\\c"], rows: [[{ text: "x|y", raw: null }, { text: "C:\\m_1 {x}", raw: null }]] }
    const md = toMarkdown([t])
    expect(md).toContain("| model | a\\|b\\\\c |")
    expect(md).toContain("| x\\|y | C:\\\\m_1 {x} |")
    for (const line of md.split("\n").filter((l) => l.startsWith("|"))) expect(line.replace(/\\\\/g, "").split(/(?<!\\)\|/).length).toBe(4)
    const tex = toLatex([t])
    expect(tex).toContain("C:\\textbackslash{}m\\_1 \\{x\\}")
    expect(tex).toContain("a|b\\textbackslash{}c")
  })

  it("names a non-pickle file as such and refuses an empty pair", () => {
    expect(() => readPickle(new TextEncoder().encode("{\"not\": \"a pickle\"}\n"))).toThrow(/not a Python pickle \(.*first bytes: 7b 22/)
    expect(() => readPickle(new Uint8Array())).toThrow(PickleError)
    // pickle.dumps(([], []), protocol=2)
    expect(() => importUpstreamPickle(Uint8Array.from([0x80, 2, 0x5d, 0x71, 0, 0x5d, 0x71, 1, 0x86, 0x71, 2, 0x2e]), "D1")).toThrow(/no items/)
  })

  it.effect("reads a JSONL file that starts with a byte-order mark", () =>
    Effect.gen(function*() {
      const file = path.join(mkdtempSync(path.join(tmpdir(), "dart-bom-")), "x.jsonl")
      writeFileSync(file, "\uFEFF{\"a\":1}\n{\"a\":2}\n")
      expect(yield* readRows(file, Schema.Struct({ a: Schema.Number }))).toEqual([{ a: 1 }, { a: 2 }])
    }))

  it("drops grpc-js's empty resolution note", () => {
    const e = toError("Version")({ code: 14, details: "No connection established. Last error: connect ECONNREFUSED 127.0.0.1:1. Resolution note: " })
    expect(e.message).toBe("Version: UNAVAILABLE: No connection established. Last error: connect ECONNREFUSED 127.0.0.1:1.")
    expect(toError("Version")({ code: 14, details: "" }).message).toBe("Version: UNAVAILABLE")
  })
})
