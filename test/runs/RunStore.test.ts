import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { execFileSync } from "node:child_process"
import { closeSync, constants, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { RunStore } from "../../src/runs/RunStore.ts"

const tmp = () => mkdtempSync(path.join(tmpdir(), "dart-store-"))

/**
 * A FIFO with no writer: a reader that opens it blocks for good. From `ms` on, the test keeps opening (and closing)
 * its write end, so a blocked reader sees end-of-file instead of pinning a thread of this worker forever.
 */
const fifoWithRelease = (file: string, ms = 5000) => {
  execFileSync("mkfifo", [file])
  const timer = setInterval(() => {
    try {
      closeSync(openSync(file, constants.O_WRONLY | constants.O_NONBLOCK))
    } catch {
      // ENXIO: no reader is waiting, nothing to release
    }
  }, ms)
  return () => clearInterval(timer)
}

describe("RunStore paths", () => {
  it.effect("refuses a relative path that leaves the run", () =>
    Effect.gen(function*() {
      const store = yield* RunStore
      const run = store.handle(tmp(), "exp")
      expect(run.file("teacher_outputs/distill/outputs.jsonl")).toBe(path.join(run.dir, "teacher_outputs/distill/outputs.jsonl"))
      expect(run.file("evaluation/main/")).toBe(path.join(run.dir, "evaluation/main/"))
      for (const bad of ["../other/manifest.json", "datasets/../../x", "/etc/passwd", ".."]) {
        expect(() => run.file(bad), bad).toThrow(/leaves the run folder|absolute/)
      }
      // Through the store's own methods it is a failure to report, not a defect.
      for (const attempt of [store.readText(run, "../x"), store.describeFile(run, "../x"), store.writeFile(run, "../x", "x").pipe(Effect.asVoid)]) {
        const error = yield* attempt.pipe(Effect.flip)
        expect(error._tag).toBe("RunStoreError")
        expect(error.message).toContain("leaves the run folder")
      }
    }).pipe(Effect.provide(RunStore.layer)))
})

describe("RunStore reads and writes never follow a link inside the run", () => {
  const setUp = () => {
    const root = tmp()
    const outside = path.join(root, "elsewhere")
    mkdirSync(outside)
    const victim = path.join(outside, "victim.jsonl")
    writeFileSync(victim, `{"secret":1}\n`)
    return { root, outside, victim }
  }

  it.effect("readText, describeFile and writeFile refuse links at the file or at a folder below the run", () =>
    Effect.gen(function*() {
      const store = yield* RunStore
      const { root, outside, victim } = setUp()
      const run = store.handle(path.join(root, "runs"), "exp")
      yield* store.create(run)
      symlinkSync(victim, run.file("datasets/train.jsonl"))
      const read = yield* store.readText(run, "datasets/train.jsonl").pipe(Effect.flip)
      expect(read.message).toContain(`${run.file("datasets/train.jsonl")} is a symbolic link (to ${victim})`)
      const hashed = yield* store.describeFile(run, "datasets/train.jsonl").pipe(Effect.flip)
      expect(hashed.message).toContain("is a symbolic link")
      symlinkSync(outside, run.file("evaluation/main"))
      const written = yield* store.writeFile(run, "evaluation/main/summary.json", "{}\n").pipe(Effect.flip)
      expect(written.message).toContain(`${run.file("evaluation/main")} is a symbolic link (to ${outside})`)
      expect(readdirSync(outside)).toEqual(["victim.jsonl"])
      expect(readFileSync(victim, "utf8")).toBe(`{"secret":1}\n`)
    }).pipe(Effect.provide(RunStore.layer)))

  it.effect("a run folder that is itself a link (runs on another disk) works", () =>
    Effect.gen(function*() {
      const store = yield* RunStore
      const { root } = setUp()
      mkdirSync(path.join(root, "disk"))
      symlinkSync(path.join(root, "disk"), path.join(root, "runs"))
      const run = store.handle(path.join(root, "runs"), "exp")
      yield* store.create(run)
      const out = yield* store.writeFile(run, "evaluation/summary.json", "{}\n")
      expect(out.bytes).toBe(3)
      expect(yield* store.readText(run, "evaluation/summary.json")).toBe("{}\n")
      expect((yield* store.describeFile(run, "evaluation/summary.json"))?.sha256).toBe(out.sha256)
    }).pipe(Effect.provide(RunStore.layer)))

  it.effect("readText and describeFile refuse a FIFO at once instead of waiting for a writer", () =>
    Effect.gen(function*() {
      const store = yield* RunStore
      const run = store.handle(path.join(tmp(), "runs"), "exp")
      yield* store.create(run)
      const release = fifoWithRelease(run.file("configs/config.json"))
      const started = Date.now()
      const read = yield* store.readText(run, "configs/config.json").pipe(Effect.flip)
      const hashed = yield* store.describeFile(run, "configs/config.json").pipe(Effect.flip)
      release()
      expect(read.message).toContain("is a FIFO, not a regular file")
      expect(hashed.message).toContain("is a FIFO, not a regular file")
      expect(Date.now() - started).toBeLessThan(4000)
    }).pipe(Effect.provide(RunStore.layer)))
})
