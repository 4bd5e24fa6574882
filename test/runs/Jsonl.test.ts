import { NodeServices } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { spawn } from "node:child_process"
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { openAppender, readRows, type TornTail } from "../../src/runs/Jsonl.ts"
import { recording } from "../support/FsCalls.ts"

const Row = Schema.Struct({ i: Schema.Int })
const tmp = () => mkdtempSync(path.join(tmpdir(), "dart-jsonl-"))

/** Runs the appender child until it has acknowledged `ackTarget` rows, then SIGKILLs it. */
const killAfter = (file: string, ackTarget: number, start: number) =>
  new Promise<number>((resolve, reject) => {
    const child = spawn(process.execPath, ["test/fixtures/appendChild.ts", file, String(start)], { stdio: ["ignore", "pipe", "inherit"] })
    let lastAck = start - 1
    let buffered = ""
    child.stdout.on("data", (chunk: Buffer) => {
      buffered += chunk.toString()
      const lines = buffered.split("\n")
      buffered = lines.pop()!
      for (const l of lines) if (l.startsWith("ok ")) lastAck = Number(l.slice(3))
      if (lastAck >= ackTarget) child.kill("SIGKILL")
    })
    child.on("exit", (_code, signal) => (signal === "SIGKILL" ? resolve(lastAck) : reject(new Error(`child ended without kill: ${signal}`))))
  })

describe("JSONL run files", () => {
  it("keeps every row reported written across SIGKILLs at random points", async () => {
    const file = path.join(tmp(), "rows.jsonl")
    let next = 0
    for (const target of [37, 180, 181, 420, 611, 900]) {
      const acked = await killAfter(file, target + Math.floor(Math.random() * 40), next)
      const torn: Array<TornTail> = []
      const rows = await Effect.runPromise(readRows(file, Row, (t) => torn.push(t)))
      const ids = rows.map((r) => r.i)
      // Every acknowledged row is there, in order, once; at most the in-flight batch beyond it.
      expect(ids.slice(0, acked + 1)).toEqual(Array.from({ length: acked + 1 }, (_, k) => k))
      expect(ids.length - (acked + 1)).toBeLessThanOrEqual(3)
      expect(new Set(ids).size).toBe(ids.length)
      next = ids.length
    }
  })

  it.effect("skips and reports a torn last line, and the appender cuts it before writing", () =>
    Effect.gen(function*() {
      const file = path.join(tmp(), "torn.jsonl")
      writeFileSync(file, `{"i":0}\n{"i":1}\n{"i":`)
      const torn: Array<TornTail> = []
      const rows = yield* readRows(file, Row, (t) => torn.push(t))
      expect(rows.map((r) => r.i)).toEqual([0, 1])
      expect(torn).toEqual([{ line: 3, bytes: 5 }])
      const repaired = yield* Effect.scoped(Effect.gen(function*() {
        const out = yield* openAppender(file)
        yield* out.append([{ i: 2 }])
        return out.repaired
      }))
      expect(repaired).toEqual({ line: 3, bytes: 5 })
      expect(readFileSync(file, "utf8")).toBe(`{"i":0}\n{"i":1}\n{"i":2}\n`)
    }))

  it.effect("rejects a corrupt line in the middle with file:line", () =>
    Effect.gen(function*() {
      const file = path.join(tmp(), "bad.jsonl")
      writeFileSync(file, `{"i":0}\n{"i":1,,}\n{"i":2}\n`)
      const error = yield* readRows(file, Row).pipe(Effect.flip)
      expect(error.message).toMatch(new RegExp(`^${file}:2: malformed JSON`))
      writeFileSync(file, `{"i":0}\n{"i":"three"}\n`)
      const typed = yield* readRows(file, Row).pipe(Effect.flip)
      expect(typed.message).toBe(`${file}:2: i: expected number, got "three"`)
    }).pipe(Effect.provide(NodeServices.layer)))
})

describe("JSONL appender durability", () => {
  it("reports rows written only after their bytes are appended and fsynced", async () => {
    const dir = tmp()
    const file = path.join(dir, "rows.jsonl")
    const acked: Array<number> = []
    const { calls, result } = await recording(dir, () =>
      Effect.runPromise(Effect.scoped(Effect.gen(function*() {
        const out = yield* openAppender(file)
        yield* Effect.forEach([0, 1, 2, 3, 4], (i) => out.append([{ i }]).pipe(Effect.tap(() => Effect.sync(() => acked.push(i)))), { concurrency: "unbounded" })
      }))))
    expect(result.ok).toBe(true)
    expect(acked.sort()).toEqual([0, 1, 2, 3, 4])
    expect(readFileSync(file, "utf8")).toBe([0, 1, 2, 3, 4].map((i) => `{"i":${i}}\n`).join(""))
    // Every write to the file is followed by a sync before the appender returns.
    const ops = calls.filter((c) => c.path === file).map((c) => c.op)
    expect(ops.filter((o) => o === "write").length).toBeGreaterThan(0)
    expect(ops.lastIndexOf("sync")).toBeGreaterThan(ops.lastIndexOf("write"))
    for (let k = ops.indexOf("write"); k >= 0; k = ops.indexOf("write", k + 1)) {
      const nextWrite = ops.indexOf("write", k + 1)
      expect(ops.slice(k + 1, nextWrite < 0 ? undefined : nextWrite), `sync after write ${k}`).toContain("sync")
    }
  })

  it("does not report a row written when its fsync fails", async () => {
    const dir = tmp()
    const file = path.join(dir, "rows.jsonl")
    const { result } = await recording(dir, () =>
      Effect.runPromise(Effect.scoped(Effect.gen(function*() {
        const out = yield* openAppender(file)
        yield* out.append([{ i: 0 }])
      }))), (c) => (c.op === "sync" && c.path === file ? Object.assign(new Error("injected fsync failure"), { code: "EIO" }) : undefined))
    expect(result.ok).toBe(false)
    expect(String((result as { error: unknown }).error)).toContain(file)
  })
})
