import { Effect, Schedule, Schema, type Scope } from "effect"
import { randomBytes } from "node:crypto"
import { constants } from "node:fs"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { tempFileOwner } from "./AtomicFile.ts"
import { LOCK_DIR, openNoFollow, refusedOrIoError, refuseLinks, refuseSpecialFile, walkRun } from "./RunLinks.ts"
import { ioError, RunStoreError } from "./RunStoreError.ts"

/**
 * One writer per run and stage. A stage that writes takes `runs/{EXP_ID}/.locks/{stage}.lock`
 * (created with O_EXCL, holding pid, host and start time) for as long as it runs; a second
 * invocation is refused with the holder's details. A lock whose owner died (kill -9, power
 * loss) is taken over; one held from another host is never guessed dead.
 */

export const LockOwner = Schema.Struct({
  pid: Schema.Int,
  host: Schema.String,
  started_at: Schema.String,
  stage: Schema.String,
  command: Schema.String,
  token: Schema.String
})
export type LockOwner = typeof LockOwner.Type

/** Another live process holds the stage (exit code 1, the message says who). */
export class RunLockedError extends Schema.TaggedError<RunLockedError>()("RunLockedError", { message: Schema.String }) {}

export { LOCK_DIR }

export const lockFile = (runDir: string, stage: string) =>
  path.join(runDir, LOCK_DIR, `${stage.replace(/[^A-Za-z0-9._-]/g, "+")}.lock`)

/** true: running; false: gone; undefined: on another host, so unknowable from here. */
export const ownerAlive = (owner: Pick<LockOwner, "pid" | "host">): boolean | undefined => {
  if (owner.host !== os.hostname()) return undefined
  return pidAlive(owner.pid)
}

export const pidAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    // EPERM: it exists but belongs to someone else.
    return (e as NodeJS.ErrnoException).code === "EPERM"
  }
}

const decodeOwner = Schema.decodeUnknownOption(LockOwner)

/** The owner recorded in a lock file, or undefined when there is none (or it is unreadable, e.g. half-written). */
export const readLockOwner = async (file: string): Promise<LockOwner | undefined> => {
  // Never through a link, never from a FIFO (it would block): either is no owner's record.
  const text = await openNoFollow(file, constants.O_RDONLY).then(async (handle) => {
    try {
      await refuseSpecialFile(handle, file)
      return await handle.readFile("utf8")
    } finally {
      await handle.close().catch(() => {})
    }
  }).catch(() => undefined)
  if (text === undefined) return undefined
  try {
    const o = decodeOwner(JSON.parse(text))
    return o._tag === "Some" ? o.value : undefined
  } catch {
    return undefined
  }
}

const describeOwner = (o: LockOwner) =>
  `pid ${o.pid} on ${o.host} since ${o.started_at}${o.command ? ` (${o.command})` : ""}`

type TryLock = { readonly taken: LockOwner } | { readonly heldBy: LockOwner }

/** One attempt: create the lock, or take over a dead owner's, or report the live holder. */
const tryLock = async (file: string, stage: string): Promise<TryLock> => {
  // Lock files lie in `{run}/.locks/`: a link planted there or for `.locks` itself would put them elsewhere.
  const runDir = path.dirname(path.dirname(file))
  await refuseLinks(file, { root: runDir, includeFile: true })
  await fs.mkdir(path.dirname(file), { recursive: true })
  const me: LockOwner = {
    pid: process.pid,
    host: os.hostname(),
    started_at: new Date().toISOString(),
    stage,
    command: process.argv.slice(2).join(" ").slice(0, 300),
    token: randomBytes(8).toString("hex")
  }
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      const handle = await openNoFollow(file, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o644)
      try {
        await handle.writeFile(`${JSON.stringify(me)}\n`)
        await handle.sync()
      } finally {
        await handle.close()
      }
      return { taken: me }
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e
      await refuseLinks(file, { root: runDir, includeFile: true })
    }
    const holder = await readLockOwner(file)
    if (holder === undefined) {
      // Created but not yet written by a racing process, or garbage: give it a moment, then judge by age.
      const st = await fs.lstat(file).catch((e: NodeJS.ErrnoException) => (e.code === "ENOENT" ? undefined : Promise.reject(e)))
      if (st !== undefined && Date.now() - st.mtimeMs < 2000) {
        await new Promise((r) => setTimeout(r, 50))
        continue
      }
    } else if (ownerAlive(holder) !== false) {
      return { heldBy: holder }
    }
    // The owner is gone: remove its lock, but only if it is still the same file we judged.
    const again = await readLockOwner(file)
    if (again?.token === holder?.token) await fs.rm(file, { force: true })
  }
  const holder = await readLockOwner(file)
  if (holder !== undefined) return { heldBy: holder }
  throw new Error(`cannot take ${file}`)
}

/** A finalizer: it must not fail. A lock left behind is taken over once its owner is gone. */
const release = (file: string, token: string) =>
  Effect.tryPromise(async () => {
    const current = await readLockOwner(file)
    if (current?.token === token) await fs.rm(file, { force: true })
  }).pipe(Effect.ignore)

/**
 * Holds the lock of `stage` in `runDir` for the surrounding scope; released on success,
 * failure and interruption (SIGINT/SIGTERM). Also sweeps temp files of dead writers.
 */
export const acquireStageLock = (runDir: string, stage: string): Effect.Effect<LockOwner, RunLockedError | RunStoreError, Scope.Scope> =>
  Effect.gen(function*() {
    const file = lockFile(runDir, stage)
    const owner = yield* Effect.acquireRelease(
      Effect.tryPromise({ try: () => tryLock(file, stage), catch: refusedOrIoError(file, "lock") }).pipe(
        Effect.flatMap((r) =>
          "taken" in r
            ? Effect.succeed(r.taken)
            : Effect.fail(new RunLockedError({
              message: `stage ${stage} of ${runDir} is already running: ${describeOwner(r.heldBy)}. ` +
                (ownerAlive(r.heldBy) === undefined
                  ? `That host cannot be checked from here; if that process is gone, delete ${file}.`
                  : "Wait for it to finish, or stop it first.")
            }))
        )
      ),
      (o) => release(file, o.token)
    )
    yield* sweepStaleTemps(runDir)
    return owner
  })

/** The live holder of a stage's lock, if any; `undefined` when free or its owner is gone. */
export const liveHolder = (runDir: string, stage: string): Effect.Effect<{ readonly owner: LockOwner; readonly alive: boolean | undefined } | undefined> =>
  Effect.promise(async () => {
    const owner = await readLockOwner(lockFile(runDir, stage))
    if (owner === undefined) return undefined
    const alive = ownerAlive(owner)
    return alive === false ? undefined : { owner, alive }
  })

/**
 * Runs `effect` while holding a short-lived lock (e.g. around a manifest read-modify-write
 * shared by processes running different stages); waits for it instead of failing.
 */
export const withFileLock = <A, E, R>(file: string, effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | RunStoreError, R> =>
  Effect.scoped(Effect.gen(function*() {
    const acquire = Effect.tryPromise({ try: () => tryLock(file, path.basename(file)), catch: refusedOrIoError(file, "lock") }).pipe(
      Effect.flatMap((r) => ("taken" in r ? Effect.succeed(r.taken) : Effect.fail("busy" as const))),
      Effect.retry({ schedule: Schedule.spaced("20 millis"), times: 1500, while: (e) => e === "busy" }),
      Effect.catch((e) => Effect.fail(e === "busy" ? new RunStoreError({ path: file, message: `${file}: still locked after 30 s` }) : e))
    )
    yield* Effect.acquireRelease(acquire, (o) => release(file, o.token))
    return yield* effect
  }))

/** Removes `.name.{pid}.{rand}.tmp` files under `dir` whose writer is no longer running. */
export const sweepStaleTemps = (dir: string): Effect.Effect<ReadonlyArray<string>, RunStoreError> =>
  Effect.gen(function*() {
    // Not through links: a folder link planted in the run must not make the sweep delete files elsewhere
    // (a link named like a temp file is itself removed, never what it points to).
    const names = yield* Effect.tryPromise({ try: () => walkRun(dir).then((w) => [...w.entries, ...w.links.map((l) => l.path)]), catch: ioError(dir, "listing") })
    const removed: Array<string> = []
    for (const rel of names) {
      const pid = tempFileOwner(path.basename(rel))
      if (pid === undefined || pid === process.pid || pidAlive(pid)) continue
      const file = path.join(dir, rel)
      yield* Effect.tryPromise({ try: () => fs.rm(file, { force: true }), catch: ioError(file, "removing a dead writer's temp file") })
      removed.push(rel)
    }
    return removed
  })
