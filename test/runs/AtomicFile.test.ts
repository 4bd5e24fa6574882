import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { spawn } from "node:child_process"
import { constants, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, symlinkSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { makeDirectories, readTextIfExists, writeFileAtomic } from "../../src/runs/AtomicFile.ts"
import { recording } from "../support/FsCalls.ts"

const tmp = () => mkdtempSync(path.join(tmpdir(), "dart-atomic-"))
const listing = (dir: string) => readdirSync(dir).filter((f) => f !== ".probe").sort()

describe("writeFileAtomic", () => {
  it("writes and fsyncs a temporary file in the same folder, renames it over the target, then fsyncs the folder", async () => {
    const dir = tmp()
    const file = path.join(dir, "summary.json")
    writeFileSync(file, "old\n")
    const { calls, result } = await recording(dir, () => Effect.runPromise(writeFileAtomic(file, "new\n")))
    expect(result.ok).toBe(true)
    expect(readFileSync(file, "utf8")).toBe("new\n")
    expect(listing(dir)).toEqual(["summary.json"])
    const rename = calls.findIndex((c) => c.op === "rename")
    expect(rename, JSON.stringify(calls)).toBeGreaterThan(0)
    const temp = calls[rename]!.path
    expect(calls[rename]!.to).toBe(file)
    expect(path.dirname(temp)).toBe(dir)
    expect(temp).not.toBe(file)
    // The target itself is never opened for writing: readers see the old bytes or the new, never a part.
    expect(calls.filter((c) => c.path === file)).toEqual([])
    const before = calls.slice(0, rename).filter((c) => c.path === temp).map((c) => c.op)
    // Created new (O_EXCL) and never through a link (O_NOFOLLOW): a planted temp name cannot redirect the write.
    const flags = Number(before[0]!.replace(/^open /, ""))
    for (const bit of ["O_WRONLY", "O_CREAT", "O_EXCL", "O_NOFOLLOW"] as const) expect(flags & constants[bit], bit).toBe(constants[bit])
    expect(before.indexOf("write")).toBeGreaterThan(0)
    expect(before.lastIndexOf("sync")).toBeGreaterThan(before.lastIndexOf("write"))
    // The rename is made durable by syncing the folder after it.
    const after = calls.slice(rename + 1)
    expect(after.map((c) => [c.op, c.path])).toContainEqual(["sync", dir])
  })

  for (const step of ["sync", "rename"] as const) {
    it(`leaves the old file intact and no temporary file behind when the ${step} fails`, async () => {
      const dir = tmp()
      const file = path.join(dir, "manifest.json")
      writeFileSync(file, "old\n")
      const { result } = await recording(
        dir,
        () => Effect.runPromise(writeFileAtomic(file, "new\n")),
        (c) => (c.op === step && c.path !== dir ? Object.assign(new Error(`injected ${step} failure`), { code: "EIO" }) : undefined)
      )
      expect(result.ok).toBe(false)
      expect(String((result as { error: unknown }).error)).toContain(file)
      expect(readFileSync(file, "utf8")).toBe("old\n")
      expect(listing(dir)).toEqual(["manifest.json"])
    })
  }

  it("leaves the old or the new content, whole, when the writer is SIGKILLed at random points", async () => {
    const dir = tmp()
    const file = path.join(dir, "big.json")
    const size = 4 << 20
    const whole = new Set(["a", "b"].map((c) => `${c}:${c.repeat(size)}\n`))
    writeFileSync(file, `a:${"a".repeat(size)}\n`)
    let sawKillMidWrite = 0
    for (let k = 0; k < 8; k++) {
      const child = spawn(process.execPath, ["test/fixtures/atomicChild.ts", file, String(size)], { stdio: ["ignore", "pipe", "inherit"] })
      const target = 1 + Math.floor(Math.random() * 4)
      let oks = 0
      let armed = false
      await new Promise<void>((resolve, reject) => {
        child.stdout.on("data", (c: Buffer) => {
          oks += c.toString().split("\n").filter((l) => l.startsWith("ok ")).length
          if (oks < target || child.killed || armed) return
          armed = true
          if (k % 2 === 0) {
            // Even rounds: kill the moment the next write's temporary file exists, so some kills surely land mid-write
            // however loaded the machine is.
            const poll = () => {
              if (listing(dir).some((f) => f !== "big.json")) child.kill("SIGKILL")
              else if (!child.killed && child.exitCode === null) setImmediate(poll)
            }
            poll()
          } else {
            // Odd rounds: a random time into the next write, not right at a write's end.
            setTimeout(() => child.kill("SIGKILL"), Math.random() * 30)
          }
        })
        child.on("exit", (_code, signal) => (signal === "SIGKILL" ? resolve() : reject(new Error(`child ended without kill: ${signal}`))))
      })
      const content = readFileSync(file, "utf8")
      expect(whole.has(content), `after kill ${k}: ${content.length} bytes`).toBe(true)
      // A killed writer may leave its temporary file; it is hidden beside the target and never the target.
      const left = listing(dir).filter((f) => f !== "big.json")
      sawKillMidWrite += left.length > 0 ? 1 : 0
      for (const f of left) expect(f).toMatch(/^\./)
    }
    // At least one kill landed inside a write (a temporary file was left): the point of the test.
    expect(sawKillMidWrite).toBeGreaterThan(0)
  })
})

describe("atomic writes and reads inside a run never go through a symbolic link", () => {
  /** A run folder as a stage sees it (`.locks/` is made by every stage's lock), and a file outside it. */
  const setUp = () => {
    const root = tmp()
    const run = path.join(root, "runs", "exp")
    mkdirSync(path.join(run, ".locks"), { recursive: true })
    mkdirSync(path.join(run, "evaluation"), { recursive: true })
    const outside = path.join(root, "elsewhere")
    mkdirSync(outside)
    const victim = path.join(outside, "victim.json")
    writeFileSync(victim, "precious\n")
    return { root, run, outside, victim }
  }

  it.effect("refuses a link planted at the target, and one planted for a folder on the way, writing nothing outside", () =>
    Effect.gen(function*() {
      const { run, outside, victim } = setUp()
      const file = path.join(run, "evaluation/summary.json")
      symlinkSync(victim, file)
      const atFile = yield* writeFileAtomic(file, "{}\n").pipe(Effect.flip)
      expect(atFile.message).toContain(`${file} is a symbolic link (to ${victim})`)
      expect(readlinkSync(file)).toBe(victim)
      const read = yield* readTextIfExists(file).pipe(Effect.flip)
      expect(read.message).toContain("is a symbolic link")
      symlinkSync(outside, path.join(run, "evaluation/linked"))
      const inFolder = yield* writeFileAtomic(path.join(run, "evaluation/linked/summary.json"), "{}\n").pipe(Effect.flip)
      expect(inFolder.message).toContain(`${path.join(run, "evaluation/linked")} is a symbolic link (to ${outside})`)
      // Not even a temporary file reached the folder the link points to.
      expect(readdirSync(outside)).toEqual(["victim.json"])
      expect(readFileSync(victim, "utf8")).toBe("precious\n")
    }))

  it.effect("makes no folder through a folder link inside the run", () =>
    Effect.gen(function*() {
      const { run, outside } = setUp()
      symlinkSync(outside, path.join(run, "adapters"))
      const error = yield* makeDirectories([path.join(run, "adapters/DART/final")]).pipe(Effect.flip)
      expect(error.message).toContain(`${path.join(run, "adapters")} is a symbolic link (to ${outside})`)
      expect(readdirSync(outside)).toEqual(["victim.json"])
    }))

  it.effect("outside any run, rename replaces a link itself and never writes through it", () =>
    Effect.gen(function*() {
      const { root, victim } = setUp()
      const file = path.join(root, "out.json")
      symlinkSync(victim, file)
      yield* writeFileAtomic(file, "new\n")
      expect(readFileSync(file, "utf8")).toBe("new\n")
      expect(readFileSync(victim, "utf8")).toBe("precious\n")
    }))
})
