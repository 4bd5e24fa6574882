import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Scope } from "effect"
import { spawnSync } from "node:child_process"
import { existsSync, mkdtempSync, readdirSync, readFileSync, symlinkSync, writeFileSync, mkdirSync } from "node:fs"
import { hostname, tmpdir } from "node:os"
import * as path from "node:path"
import { acquireStageLock, liveHolder, lockFile, sweepStaleTemps } from "../../src/runs/RunLock.ts"

const deadPid = () => {
  // A pid that surely existed and is gone: a child that already exited.
  const r = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"], { encoding: "utf8" })
  return Number(r.stdout)
}

const owner = (pid: number, host = hostname()) =>
  JSON.stringify({ pid, host, started_at: "2026-01-01T00:00:00.000Z", stage: "teacher/distill", command: "teacher --task distill", token: "t0" })

describe("stage lock", () => {
  it.effect("is exclusive, says who holds it, and is released when the scope closes", () =>
    Effect.gen(function*() {
      const dir = mkdtempSync(path.join(tmpdir(), "dart-lock-"))
      const scope = yield* Scope.make()
      const me = yield* acquireStageLock(dir, "teacher/distill").pipe(Scope.provide(scope))
      expect(me.pid).toBe(process.pid)
      expect(JSON.parse(readFileSync(lockFile(dir, "teacher/distill"), "utf8")).host).toBe(hostname())
      // A second taker in this same (live) process is refused with the holder's details.
      const second = yield* Effect.scoped(acquireStageLock(dir, "teacher/distill")).pipe(Effect.flip)
      expect(second.message).toMatch(new RegExp(`already running: pid ${process.pid} on ${hostname()} since \\d{4}-`))
      // Another stage of the same run is independent.
      yield* Effect.scoped(acquireStageLock(dir, "evaluate/x"))
      expect((yield* liveHolder(dir, "teacher/distill"))?.owner.pid).toBe(process.pid)
      yield* Scope.close(scope, Exit.void)
      expect(existsSync(lockFile(dir, "teacher/distill"))).toBe(false)
      expect(yield* liveHolder(dir, "teacher/distill")).toBeUndefined()
    }))

  it.effect("takes over a lock whose owner is dead, but never one held from another host", () =>
    Effect.gen(function*() {
      const dir = mkdtempSync(path.join(tmpdir(), "dart-lock-"))
      mkdirSync(path.join(dir, ".locks"))
      writeFileSync(lockFile(dir, "init"), owner(deadPid()))
      expect(yield* liveHolder(dir, "init")).toBeUndefined()
      const taken = yield* Effect.scoped(acquireStageLock(dir, "init"))
      expect(taken.pid).toBe(process.pid)
      writeFileSync(lockFile(dir, "init"), owner(deadPid(), "another-host.example"))
      const refused = yield* Effect.scoped(acquireStageLock(dir, "init")).pipe(Effect.flip)
      expect(refused.message).toContain("on another-host.example")
      expect(refused.message).toContain("cannot be checked from here")
    }))

  it.effect("sweeps temp files of dead writers only", () =>
    Effect.gen(function*() {
      const dir = mkdtempSync(path.join(tmpdir(), "dart-sweep-"))
      mkdirSync(path.join(dir, "datasets"))
      const dead = path.join(dir, "datasets", `.train.jsonl.${deadPid()}.deadbeef.tmp`)
      const live = path.join(dir, "datasets", `.train.jsonl.${process.pid}.deadbeef.tmp`)
      const other = path.join(dir, "datasets", "notes.tmp")
      for (const f of [dead, live, other]) writeFileSync(f, "x")
      const removed = yield* sweepStaleTemps(dir)
      expect(removed).toEqual([path.join("datasets", path.basename(dead))])
      expect([existsSync(dead), existsSync(live), existsSync(other)]).toEqual([false, true, true])
    }))
})

describe("lock files are never reached through a symbolic link", () => {
  it.effect("refuses a planted .locks folder link and a planted lock-file link, creating nothing where they point", () =>
    Effect.gen(function*() {
      const root = mkdtempSync(path.join(tmpdir(), "dart-lock-"))
      const run = path.join(root, "exp")
      const outside = path.join(root, "elsewhere")
      mkdirSync(run)
      mkdirSync(outside)
      symlinkSync(outside, path.join(run, ".locks"))
      const folder = yield* Effect.scoped(acquireStageLock(run, "init")).pipe(Effect.flip)
      expect(folder.message).toContain(`${path.join(run, ".locks")} is a symbolic link (to ${outside})`)
      expect(readdirSync(outside)).toEqual([])

      const run2 = path.join(root, "exp2")
      mkdirSync(path.join(run2, ".locks"), { recursive: true })
      const victim = path.join(outside, "victim")
      writeFileSync(victim, "precious\n")
      symlinkSync(victim, lockFile(run2, "init"))
      const file = yield* Effect.scoped(acquireStageLock(run2, "init")).pipe(Effect.flip)
      expect(file.message).toContain(`${lockFile(run2, "init")} is a symbolic link (to ${victim})`)
      expect(readFileSync(victim, "utf8")).toBe("precious\n")
    }))

  it.effect("the sweep of dead writers' temp files does not walk into a folder link", () =>
    Effect.gen(function*() {
      const root = mkdtempSync(path.join(tmpdir(), "dart-sweep-"))
      const run = path.join(root, "exp")
      const outside = path.join(root, "elsewhere")
      mkdirSync(path.join(run, "teacher_outputs"), { recursive: true })
      mkdirSync(outside)
      const theirs = `.notes.json.${deadPid()}.deadbeef.tmp`
      writeFileSync(path.join(outside, theirs), "someone else's\n")
      symlinkSync(outside, path.join(run, "teacher_outputs/distill"))
      expect(yield* sweepStaleTemps(run)).toEqual([])
      expect(readdirSync(outside)).toEqual([theirs])
    }))
})
