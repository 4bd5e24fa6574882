import { NodeServices } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { execFileSync, spawn } from "node:child_process"
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { forEachLine, MAX_LINE_BYTES, openAppender, readRows, type TornTail } from "../../src/runs/Jsonl.ts"
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

/**
 * `forEachLine` in a child process with a hard deadline: on a reader that never stops (a FIFO with no writer,
 * /dev/zero) the child, not the test worker, is what hangs or fills its memory, and it is killed.
 */
const readInChild = (file: string, deadlineMs = 15_000) =>
  new Promise<{ readonly result: { readonly lines?: number; readonly error?: string } | undefined; readonly ms: number }>((resolve) => {
    const started = Date.now()
    const script = [
      `import { Cause, Effect, Exit } from "effect"`,
      `import { forEachLine } from "./src/runs/Jsonl.ts"`,
      `const exit = await Effect.runPromiseExit(forEachLine(process.argv[1], () => {}))`,
      `console.log(JSON.stringify(Exit.isSuccess(exit) ? { lines: exit.value } : { error: Cause.squash(exit.cause).message }))`
    ].join("\n")
    const child = spawn(process.execPath, ["--max-old-space-size=256", "--input-type=module", "-e", script, file], { stdio: ["ignore", "pipe", "inherit"] })
    let out = ""
    child.stdout.on("data", (c: Buffer) => (out += c.toString()))
    const timer = setTimeout(() => child.kill("SIGKILL"), deadlineMs)
    child.on("exit", () => {
      clearTimeout(timer)
      resolve({ result: out.trim() === "" ? undefined : JSON.parse(out.trim()), ms: Date.now() - started })
    })
  })

describe("JSONL inputs that are not plain files", () => {
  it("refuses a FIFO at once instead of waiting forever for a writer", async () => {
    const fifo = path.join(tmp(), "pairs.jsonl")
    execFileSync("mkfifo", [fifo])
    const { result, ms } = await readInChild(fifo)
    expect(result?.error).toBe(`${fifo} is a FIFO, not a regular file`)
    expect(ms).toBeLessThan(10_000)
  })

  it("refuses /dev/zero (a device never ends) instead of reading it until memory runs out", async () => {
    const { result, ms } = await readInChild("/dev/zero")
    expect(result?.error).toBe("/dev/zero is a character device, not a regular file")
    expect(ms).toBeLessThan(10_000)
  })

  it.effect("fails a line longer than the bound with file:line, and takes a smaller bound per call", () =>
    Effect.gen(function*() {
      expect(MAX_LINE_BYTES).toBe(16 * 1024 * 1024)
      const file = path.join(tmp(), "long.jsonl")
      writeFileSync(file, `{"i":0}\n${"x".repeat(17 * 1024 * 1024)}\n{"i":2}\n`)
      const seen: Array<number> = []
      const error = yield* forEachLine(file, (_t, line) => void seen.push(line)).pipe(Effect.flip)
      expect(error.message).toBe(`${file}:2: line longer than 16 MiB`)
      expect(seen).toEqual([1])
      // A file with no newline at all is one over-long line too, not a torn tail read whole into memory.
      writeFileSync(file, "y".repeat(17 * 1024 * 1024))
      expect((yield* forEachLine(file, () => {}).pipe(Effect.flip)).message).toBe(`${file}:1: line longer than 16 MiB`)
      writeFileSync(file, `{"i":0}\n{"i":10000}\n`)
      expect((yield* readRows(file, Row, undefined, { maxLineBytes: 8 }).pipe(Effect.flip)).message).toBe(`${file}:2: line longer than 8 bytes`)
      expect((yield* readRows(file, Row, undefined, { maxLineBytes: 11 })).map((r) => r.i)).toEqual([0, 10000])
    }))

  it.effect("still drops a byte-order mark and decodes characters split across read chunks", () =>
    Effect.gen(function*() {
      const file = path.join(tmp(), "utf8.jsonl")
      // "é" is two bytes: a 1 MiB read boundary falls inside one of them.
      const long = "é".repeat(700_000)
      writeFileSync(file, `\uFEFF{"i":0}\n${JSON.stringify({ s: long })}\n{"i":2}\n{"i":`)
      const lines: Array<string> = []
      const torn: Array<TornTail> = []
      const n = yield* forEachLine(file, (t) => void lines.push(t), (t) => void torn.push(t))
      expect(n).toBe(3)
      expect(lines[0]).toBe(`{"i":0}`)
      expect(JSON.parse(lines[1]!).s).toBe(long)
      expect(lines[2]).toBe(`{"i":2}`)
      expect(torn).toEqual([{ line: 4, bytes: 5 }])
    }))
})

describe("JSONL files inside a run are never reached through a symbolic link", () => {
  /** A run folder as a stage sees it: `.locks/` (made by every stage's lock) marks it. */
  const runWithOutside = () => {
    const root = tmp()
    const run = path.join(root, "runs", "exp")
    mkdirSync(path.join(run, ".locks"), { recursive: true })
    mkdirSync(path.join(run, "teacher_outputs"), { recursive: true })
    const outside = path.join(root, "elsewhere")
    mkdirSync(outside)
    const victim = path.join(outside, "victim.txt")
    writeFileSync(victim, "precious\n")
    return { root, run, outside, victim }
  }

  it.effect("refuses to append through a link planted at the file, leaving its target untouched", () =>
    Effect.gen(function*() {
      const { run, victim } = runWithOutside()
      mkdirSync(path.join(run, "teacher_outputs/distill"))
      for (const [name, target] of [["outputs.jsonl", victim], ["failures.jsonl", path.join(path.dirname(victim), "new.jsonl")]] as const) {
        const file = path.join(run, "teacher_outputs/distill", name)
        symlinkSync(target, file)
        const error = yield* Effect.scoped(Effect.gen(function*() {
          const out = yield* openAppender(file)
          yield* out.append([{ i: 1 }])
        })).pipe(Effect.flip)
        expect(error.message).toContain(file)
        expect(error.message).toContain("is a symbolic link")
      }
      expect(readFileSync(victim, "utf8")).toBe("precious\n")
      expect(readdirSync(path.dirname(victim))).toEqual(["victim.txt"])
    }))

  it.effect("refuses a folder link inside the run, for appending and for reading", () =>
    Effect.gen(function*() {
      const { run, outside, victim } = runWithOutside()
      symlinkSync(outside, path.join(run, "teacher_outputs/distill"))
      const file = path.join(run, "teacher_outputs/distill/victim.txt")
      const append = yield* Effect.scoped(openAppender(file)).pipe(Effect.flip)
      expect(append.message).toContain(`${path.join(run, "teacher_outputs/distill")} is a symbolic link (to ${outside})`)
      const read = yield* forEachLine(file, () => {}).pipe(Effect.flip)
      expect(read.message).toContain("is a symbolic link")
      expect(readFileSync(victim, "utf8")).toBe("precious\n")
    }))

  it.effect("follows links at or above the run folder (runs/ on another disk) and outside any run", () =>
    Effect.gen(function*() {
      const root = tmp()
      const disk = path.join(root, "disk", "runs")
      mkdirSync(path.join(disk, "exp", ".locks"), { recursive: true })
      symlinkSync(disk, path.join(root, "runs"))
      const file = path.join(root, "runs", "exp", "rows.jsonl")
      yield* Effect.scoped(Effect.gen(function*() {
        const out = yield* openAppender(file)
        yield* out.append([{ i: 7 }])
      }))
      expect(readFileSync(path.join(disk, "exp", "rows.jsonl"), "utf8")).toBe(`{"i":7}\n`)
      // A user's own input outside any run may be a link.
      const mine = path.join(root, "mine.jsonl")
      symlinkSync(path.join(disk, "exp", "rows.jsonl"), mine)
      expect((yield* readRows(mine, Row)).map((r) => r.i)).toEqual([7])
    }))
})
