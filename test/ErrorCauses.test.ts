import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit } from "effect"
import { spawnSync } from "node:child_process"
import { mkdirSync, mkdtempSync, statSync, writeFileSync } from "node:fs"
import * as net from "node:net"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { checkStage } from "../src/cli/StatusCommand.ts"
import { putDirectory } from "../src/compute/DockerBackend.ts"
import type { DockerHost } from "../src/compute/DockerHost.ts"
import { loadSuite } from "../src/datasets/BenchmarkSuite.ts"
import { sweepStaleTemps } from "../src/runs/RunLock.ts"
import { RunStore } from "../src/runs/RunStore.ts"
import { hashAdapter } from "../src/serving/AdapterStore.ts"
import { makeEndpoint } from "../src/serving/VllmClient.ts"
import { dart } from "./support/Cli.ts"

// Tests run as root, so permissions cannot make a file unreadable: a folder where a file is expected can.
const tmp = () => mkdtempSync(path.join(tmpdir(), "dart-causes-"))

const deadPid = () => Number(spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"], { encoding: "utf8" }).stdout)

/** The error an effect failed with; a defect (a crash with a stack trace) fails the test. */
const failure = <E>(effect: Effect.Effect<unknown, E>) =>
  Effect.exit(effect).pipe(Effect.map((exit) => {
    if (Exit.isSuccess(exit)) throw new Error("expected a failure")
    const fail = exit.cause.reasons.find((r) => r._tag === "Fail")
    if (fail === undefined) throw new Error(`expected a failure, got a defect: ${String(exit.cause)}`)
    return fail.error as E
  }))

describe("file-system failures are errors naming the path, not defects", () => {
  it.effect("dart status --verify: a recorded output that is now a folder", () =>
    Effect.gen(function*() {
      const dir = tmp()
      mkdirSync(path.join(dir, "predictions", "x.jsonl"), { recursive: true })
      const run = { expId: "demo", dir, file: (r: string) => path.join(dir, r) }
      const bytes = statSync(run.file("predictions/x.jsonl")).size
      const record = {
        status: "done", inputs_hash: "h", started_at: "2026-01-01T00:00:00.000Z", finished_at: "2026-01-01T00:00:01.000Z",
        outputs: [{ path: "predictions/x.jsonl", sha256: "0".repeat(64), bytes }], error: null, runs: 1
      } as const
      const e = yield* failure(checkStage(run, "infer", record, true))
      expect(e._tag).toBe("RunStoreError")
      expect(e.path).toBe(run.file("predictions/x.jsonl"))
      expect(e.message).toMatch(new RegExp(`^${run.file("predictions/x.jsonl")}: read failed: EISDIR`))
      expect((e.cause as NodeJS.ErrnoException).code).toBe("EISDIR")
    }))

  it.effect("the temp-file sweep: a dead writer's leftover that cannot be removed", () =>
    Effect.gen(function*() {
      const dir = tmp()
      const stale = path.join(dir, `.train.jsonl.${deadPid()}.deadbeef.tmp`)
      mkdirSync(stale)
      const e = yield* failure(sweepStaleTemps(dir))
      expect(e._tag).toBe("RunStoreError")
      expect(e.path).toBe(stale)
      expect(e.message).toContain(`${stale}: removing a dead writer's temp file failed:`)
      expect(e.cause).toBeInstanceOf(Error)
    }))

  it.effect("putting a missing adapter folder into a container fails with the host and the folder", () =>
    Effect.gen(function*() {
      const missing = path.join(tmp(), "no-such-adapter")
      // The folder is read before the engine is asked anything, so no engine is needed.
      const host = { name: "gpu-1" } as unknown as DockerHost
      const e = yield* failure(putDirectory(host, "c0ffee", missing, "/adapters/a"))
      expect(e._tag).toBe("ComputeError")
      expect(e.host).toBe("gpu-1")
      expect(e.message).toMatch(new RegExp(`^${missing}: reading the folder failed: ENOENT`))
      expect((e.cause as NodeJS.ErrnoException).code).toBe("ENOENT")
    }))
})

describe("a wrapped error keeps the original as its cause", () => {
  it.effect("a manifest.json that is a folder: the RunStoreError carries the EISDIR", () =>
    Effect.gen(function*() {
      const store = yield* RunStore
      const dir = tmp()
      mkdirSync(path.join(dir, "demo", "manifest.json"), { recursive: true })
      const e = yield* failure(store.readManifest(store.handle(dir, "demo")))
      expect(e.path).toBe(path.join(dir, "demo", "manifest.json"))
      expect(e.message).toContain("manifest.json: read failed: EISDIR")
      expect((e.cause as NodeJS.ErrnoException).code).toBe("EISDIR")
    }).pipe(Effect.provide(RunStore.layer)))

  it.effect("loading the suite: DatasetError ← RunStoreError ← the system error, messages unchanged", () =>
    Effect.gen(function*() {
      const dir = tmp()
      mkdirSync(path.join(dir, "D1.jsonl"))
      const e = yield* failure(loadSuite(dir, ["D1"]))
      expect(e._tag).toBe("DatasetError")
      const inner = e.cause as { _tag: string; message: string; cause: NodeJS.ErrnoException }
      expect(inner._tag).toBe("RunStoreError")
      expect(e.message).toBe(inner.message)
      expect(inner.cause.code).toBe("EISDIR")
    }))

  it.effect("an adapter file that cannot be read: AdapterError with the system error beneath", () =>
    Effect.gen(function*() {
      const dir = tmp()
      writeFileSync(path.join(dir, "adapter_config.json"), "{}")
      mkdirSync(path.join(dir, "adapter_model.safetensors"))
      const e = yield* failure(hashAdapter(dir))
      expect(e.message).toContain("EISDIR")
      expect((e.cause as NodeJS.ErrnoException).code).toBe("EISDIR")
      // A missing file keeps its own wording, and the ENOENT beneath it.
      const empty = tmp()
      const missing = yield* failure(hashAdapter(empty))
      expect(missing.message).toBe(`${path.join(empty, "adapter_config.json")} is missing (an adapter folder holds adapter_config.json + adapter_model.safetensors)`)
      expect((missing.cause as NodeJS.ErrnoException).code).toBe("ENOENT")
    }))

  it.effect("a vLLM server that refuses connections: VllmError `down` with the connection error beneath", () =>
    Effect.gen(function*() {
      // A port that was just free: nothing listens there now.
      const port = yield* Effect.promise(() => new Promise<number>((resolve) => {
        const server = net.createServer().listen(0, "127.0.0.1", () => {
          const { port } = server.address() as net.AddressInfo
          server.close(() => resolve(port))
        })
      }))
      const e = yield* failure(makeEndpoint(`http://127.0.0.1:${port}`, { timeoutMs: 5000 }).models)
      expect(e.kind).toBe("down")
      expect(e.message).toContain("ECONNREFUSED")
      expect(e.cause).toBeInstanceOf(Error)
    }))
})

describe("dart prints one line per error; DART_DEBUG=1 adds the cause", () => {
  const folder = tmp()
  it("without DART_DEBUG: the message alone", () => {
    const r = dart(["config", "migrate", folder])
    expect(r.code).toBe(1)
    expect(r.stderr.trimEnd().split("\n")).toEqual([`dart: error: ${folder}: cannot read config file (EISDIR: illegal operation on a directory, read)`])
  })
  it("with DART_DEBUG=1: the same line, then the error beneath with its code", () => {
    const r = dart(["config", "migrate", folder], { DART_DEBUG: "1" })
    expect(r.code).toBe(1)
    const lines = r.stderr.split("\n")
    expect(lines[0]).toBe(`dart: error: ${folder}: cannot read config file (EISDIR: illegal operation on a directory, read)`)
    expect(lines[1]).toMatch(/^caused by: Error: EISDIR/)
    expect(r.stderr).toContain("code: 'EISDIR'")
  })
})
