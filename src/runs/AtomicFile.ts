import { Effect } from "effect"
import { constants } from "node:fs"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { randomBytes } from "node:crypto"
import { redactData } from "../common/Redaction.ts"
import { openNoFollow, refusedOrIoError, refuseLinks, refuseSpecialFile } from "./RunLinks.ts"
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

/** Where a run file lies, when the caller knows: links are refused below `root` (see RunLinks.ts). */
export interface RunFileOptions {
  readonly root?: string
}

/**
 * Write-then-rename in the same folder: readers see the old file or the new one,
 * never a mix, and the new one is on disk before the call returns. Text is redacted
 * on the way (Redaction.ts); the returned data is what reached the disk. Inside a run,
 * a link at the file or at a folder on its way is refused before anything is written;
 * the temp file is made new (O_EXCL) and never through a link (O_NOFOLLOW); and
 * rename replaces a link at the target itself, never what it points to.
 */
export const writeFileAtomic = (file: string, raw: string | Uint8Array, options: RunFileOptions = {}): Effect.Effect<string | Uint8Array, RunStoreError> =>
  Effect.gen(function*() {
    const data = redactData(raw)
    const dir = path.dirname(file)
    const tmp = tempFileName(file)
    yield* Effect.tryPromise({
      try: async () => {
        await refuseLinks(file, { root: options.root, includeFile: true })
        const handle = await openNoFollow(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o644)
        try {
          await handle.writeFile(data)
          await handle.sync()
        } finally {
          await handle.close()
        }
        await fs.rename(tmp, file)
      },
      catch: refusedOrIoError(file, "atomic write")
    }).pipe(
      // Best effort: the write's own error is the one to report, not a failed clean-up of its temp file.
      Effect.tapError(() => Effect.tryPromise(() => fs.rm(tmp, { force: true })).pipe(Effect.ignore))
    )
    yield* syncDirectory(dir)
    return data
  })

/** `mkdir -p` of each folder; inside a run, not through a link (mkdir would make the folders where it points). */
export const makeDirectories = (dirs: ReadonlyArray<string>): Effect.Effect<void, RunStoreError> =>
  Effect.forEach(dirs, (dir) =>
    Effect.tryPromise({
      try: async () => {
        await refuseLinks(dir, { includeFile: true })
        await fs.mkdir(dir, { recursive: true })
      },
      catch: refusedOrIoError(dir, "mkdir")
    }), { discard: true })

/**
 * The text of `file`, or undefined when it is not there. Only a regular file is read (a FIFO would
 * block forever), and inside a run never through a link (see `writeFileAtomic`).
 */
export const readTextIfExists = (file: string, options: RunFileOptions = {}): Effect.Effect<string | undefined, RunStoreError> =>
  Effect.tryPromise({
    try: async () => {
      await refuseLinks(file, { root: options.root, includeFile: true })
      // Outside a known run the file may be the user's own link (refuseLinks judged whether it lies in a run).
      const opened = options.root !== undefined ? openNoFollow(file, constants.O_RDONLY) : fs.open(file, constants.O_RDONLY | constants.O_NONBLOCK)
      const handle = await opened.catch((e: NodeJS.ErrnoException) => (e.code === "ENOENT" ? undefined : Promise.reject(e)))
      if (handle === undefined) return undefined
      await refuseSpecialFile(handle, file)
      try {
        return await handle.readFile("utf8")
      } finally {
        await handle.close()
      }
    },
    catch: refusedOrIoError(file, "read")
  })

/** Whether `file` exists; a failure other than "not there" (a permission, an I/O error) is an error, not `false`. */
export const fileExists = (file: string): Effect.Effect<boolean, RunStoreError> =>
  Effect.tryPromise({
    try: () => fs.stat(file).then(() => true, (e: NodeJS.ErrnoException) => (e.code === "ENOENT" || e.code === "ENOTDIR" ? false : Promise.reject(e))),
    catch: ioError(file, "stat")
  })
