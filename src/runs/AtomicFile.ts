import { Effect } from "effect"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { randomBytes } from "node:crypto"
import { redactData } from "../common/Redaction.ts"
import { ioError, RunStoreError } from "./RunStoreError.ts"

/** fsync a directory so a rename or create inside it survives a crash. */
export const syncDirectory = (dir: string): Effect.Effect<void, RunStoreError> =>
  Effect.tryPromise({
    try: async () => {
      const handle = await fs.open(dir, "r")
      try {
        await handle.sync()
      } finally {
        await handle.close()
      }
    },
    catch: ioError(dir, "fsync of directory")
  })

/** Temp files are named `.{name}.{pid}.{random}.tmp`, so a sweep can tell whose they are. */
export const tempFileName = (file: string) =>
  path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`)

/** The pid that wrote a temp file, when `name` is one of ours. */
export const tempFileOwner = (name: string): number | undefined => {
  const m = /^\..+\.(\d+)\.[0-9a-f]{8}\.tmp$/.exec(name)
  return m ? Number(m[1]) : undefined
}

/**
 * Write-then-rename in the same folder: readers see the old file or the new one,
 * never a mix, and the new one is on disk before the call returns. Text is redacted
 * on the way (Redaction.ts); the returned data is what reached the disk.
 */
export const writeFileAtomic = (file: string, raw: string | Uint8Array): Effect.Effect<string | Uint8Array, RunStoreError> =>
  Effect.gen(function*() {
    const data = redactData(raw)
    const dir = path.dirname(file)
    const tmp = tempFileName(file)
    yield* Effect.tryPromise({
      try: async () => {
        const handle = await fs.open(tmp, "w", 0o644)
        try {
          await handle.writeFile(data)
          await handle.sync()
        } finally {
          await handle.close()
        }
        await fs.rename(tmp, file)
      },
      catch: ioError(file, "atomic write")
    }).pipe(
      // Best effort: the write's own error is the one to report, not a failed clean-up of its temp file.
      Effect.tapError(() => Effect.tryPromise(() => fs.rm(tmp, { force: true })).pipe(Effect.ignore))
    )
    yield* syncDirectory(dir)
    return data
  })

export const makeDirectories = (dirs: ReadonlyArray<string>): Effect.Effect<void, RunStoreError> =>
  Effect.forEach(dirs, (dir) => Effect.tryPromise({ try: () => fs.mkdir(dir, { recursive: true }), catch: ioError(dir, "mkdir") }), {
    discard: true
  })

export const readTextIfExists = (file: string): Effect.Effect<string | undefined, RunStoreError> =>
  Effect.tryPromise({
    try: () => fs.readFile(file, "utf8").catch((e: NodeJS.ErrnoException) => (e.code === "ENOENT" ? undefined : Promise.reject(e))),
    catch: ioError(file, "read")
  })

/** Whether `file` exists; a failure other than "not there" (a permission, an I/O error) is an error, not `false`. */
export const fileExists = (file: string): Effect.Effect<boolean, RunStoreError> =>
  Effect.tryPromise({
    try: () => fs.stat(file).then(() => true, (e: NodeJS.ErrnoException) => (e.code === "ENOENT" || e.code === "ENOTDIR" ? false : Promise.reject(e))),
    catch: ioError(file, "stat")
  })
