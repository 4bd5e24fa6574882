import { Effect } from "effect"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { randomBytes } from "node:crypto"
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

/**
 * Write-then-rename in the same folder: readers see the old file or the new one,
 * never a mix, and the new one is on disk before the call returns.
 */
export const writeFileAtomic = (file: string, data: string | Uint8Array): Effect.Effect<void, RunStoreError> =>
  Effect.gen(function*() {
    const dir = path.dirname(file)
    const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`)
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
    }).pipe(Effect.tapError(() => Effect.promise(() => fs.rm(tmp, { force: true }))))
    yield* syncDirectory(dir)
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
