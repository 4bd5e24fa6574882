import { Deferred, Effect, type Result, Schema, Scope, Semaphore } from "effect"
import { constants } from "node:fs"
import * as fs from "node:fs/promises"
import { describeIssue, flattenIssue, jsonErrorLocation } from "../common/SchemaIssueText.ts"
import { redact } from "../common/Redaction.ts"
import { openNoFollow, RefusedFileError, refusedOrIoError, refuseLinks, refuseSpecialFile } from "./RunLinks.ts"
import { ioError, RunStoreError } from "./RunStoreError.ts"
import { irregularInputReason } from "./SafePath.ts"

/** A torn last line: the bytes a killed writer left after its last complete row. */
export interface TornTail {
  readonly line: number
  readonly bytes: number
}

export interface JsonlAppender {
  readonly path: string
  /** Resolves only once every row is on disk (written and fsynced): then, and only then, it counts as done. */
  readonly append: (rows: ReadonlyArray<unknown>) => Effect.Effect<void, RunStoreError>
  /** The torn tail that was cut off when the file was opened, if any. */
  readonly repaired: TornTail | undefined
}

/**
 * Opens `file` for appending rows. A torn last line left by a killed writer is cut
 * off first (it was never reported written), so new rows start on a line of their own.
 */
export const openAppender = (file: string): Effect.Effect<JsonlAppender, RunStoreError, Scope.Scope> =>
  Effect.gen(function*() {
    const { handle, repaired } = yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: async () => {
          // Run files are written where they are, never through a link planted for them or their folders.
          await refuseLinks(file, { includeFile: true })
          const handle = await openNoFollow(file, constants.O_APPEND | constants.O_CREAT | constants.O_RDWR, 0o644)
          await refuseSpecialFile(handle, file)
          try {
            return { handle, repaired: await cutTornTail(handle) }
          } catch (e) {
            await handle.close().catch(() => {})
            throw e
          }
        },
        catch: refusedOrIoError(file, "open for append")
      }),
      // Every acknowledged row was fsynced before its append returned, so a failed close loses nothing.
      ({ handle }) => Effect.tryPromise(() => handle.close()).pipe(Effect.ignore)
    )
    // Group commit: rows that arrive while a write+fsync is under way share the next one,
    // so hundreds of concurrent writers cost a few fsyncs, not hundreds.
    const lock = yield* Semaphore.make(1)
    let pending: Array<{ readonly text: string; readonly written: Deferred.Deferred<void, RunStoreError> }> = []
    const flush = lock.withPermits(1)(Effect.gen(function*() {
      const batch = pending
      pending = []
      if (batch.length === 0) return
      const result = yield* Effect.exit(Effect.tryPromise({
        try: async () => {
          await handle.appendFile(batch.map((b) => b.text).join(""))
          await handle.datasync()
        },
        catch: ioError(file, "append")
      }))
      for (const b of batch) yield* Deferred.done(b.written, result)
    }))
    const append = (rows: ReadonlyArray<unknown>) =>
      rows.length === 0 ? Effect.void : Effect.gen(function*() {
        const written = yield* Deferred.make<void, RunStoreError>()
        pending.push({ text: redact(rows.map((r) => `${JSON.stringify(r)}\n`).join("")), written })
        // Whoever holds the lock next writes everything pending, this row included.
        yield* flush
        yield* Deferred.await(written)
      })
    return { path: file, append, repaired }
  })

const cutTornTail = async (handle: fs.FileHandle): Promise<TornTail | undefined> => {
  const { size } = await handle.stat()
  if (size === 0) return undefined
  // Scan backwards for the last newline; rows are small, so this reads little.
  const chunk = 64 * 1024
  let end = size
  let lastNewline = -1
  let lines = 0
  while (end > 0 && lastNewline < 0) {
    const start = Math.max(0, end - chunk)
    const buf = Buffer.alloc(end - start)
    await handle.read(buf, 0, buf.length, start)
    const i = buf.lastIndexOf(0x0a)
    if (i >= 0) lastNewline = start + i
    end = start
  }
  if (lastNewline === size - 1) return undefined
  const keep = lastNewline + 1
  if (keep > 0) lines = await countLines(handle, keep)
  await handle.truncate(keep)
  await handle.sync()
  return { line: lines + 1, bytes: size - keep }
}

const countLines = async (handle: fs.FileHandle, upTo: number): Promise<number> => {
  const buf = Buffer.alloc(1024 * 1024)
  let n = 0
  for (let pos = 0; pos < upTo;) {
    const { bytesRead } = await handle.read(buf, 0, Math.min(buf.length, upTo - pos), pos)
    if (bytesRead === 0) break
    for (let i = 0; i < bytesRead; i++) if (buf[i] === 0x0a) n++
    pos += bytesRead
  }
  return n
}

/** Parses and decodes one JSONL line; throws `LineError` naming the JSON position or the fields that failed. */
export const decodeJsonLine = <A>(
  text: string,
  decode: (u: unknown, options: { readonly errors: "all" }) => Result.Result<A, Schema.SchemaError>
): A => {
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (e) {
    throw new LineError(`malformed JSON at ${jsonErrorLocation(text, e).replace(/^line 1, /, "")}`, { cause: e })
  }
  const decoded = decode(json, { errors: "all" })
  if (decoded._tag === "Failure") throw new LineError(flattenIssue(decoded.failure.issue).map((i) => describeIssue(i, json)).join("; "))
  return decoded.success
}

/** The longest line `forEachLine` reads (16 MiB); a longer one is refused, so a file without newlines is never buffered whole. */
export const MAX_LINE_BYTES = 16 * 1024 * 1024

export interface LineOptions {
  /** Overrides `MAX_LINE_BYTES` for this read. */
  readonly maxLineBytes?: number
}

/** All rows of a JSONL file, each decoded with `schema`; a torn last line is skipped and reported through `onTornTail`. */
export const readRows = <S extends Schema.Codec<unknown, unknown, never, never>>(
  file: string,
  schema: S,
  onTornTail?: (tail: TornTail) => void,
  options?: LineOptions
): Effect.Effect<Array<S["Type"]>, RunStoreError> =>
  Effect.suspend(() => {
    const decode = Schema.decodeUnknownResult(schema)
    const rows: Array<S["Type"]> = []
    return forEachLine(file, (text) => {
      if (text.trim() !== "") rows.push(decodeJsonLine(text, decode))
    }, onTornTail, options).pipe(Effect.as(rows))
  })

/** A bad line found by a `forEachLine` callback; becomes `file:line: message`. */
export class LineError extends Error {}

const CHUNK = 1 << 20

/**
 * Calls `f` on every complete line, synchronously and in order, without per-line
 * effect overhead (million-row files). `f` throws `LineError` to reject a line.
 * Only a regular file is read (a FIFO would block forever, /dev/zero never end), a file
 * inside a run never through a symbolic link, and a line longer than `maxLineBytes` fails
 * once that many bytes are buffered.
 */
export const forEachLine = (
  file: string,
  f: (text: string, line: number) => void,
  onTornTail: (tail: TornTail) => void = () => {},
  options: LineOptions = {}
): Effect.Effect<number, RunStoreError> =>
  Effect.tryPromise({
    try: async (signal) => {
      const max = options.maxLineBytes ?? MAX_LINE_BYTES
      await refuseLinks(file, { includeFile: true })
      const irregular = await irregularInputReason(file)
      if (irregular !== undefined) throw new RefusedFileError(irregular)
      // No O_NOFOLLOW: an input outside a run may be the user's own link (refuseLinks judged the run's files).
      const handle = await fs.open(file, constants.O_RDONLY | constants.O_NONBLOCK)
      await refuseSpecialFile(handle, file)
      try {
        const bound = max % (1 << 20) === 0 ? `${max / (1 << 20)} MiB` : `${max} bytes`
        const tooLong = (line: number) => new RunStoreError({ path: file, message: `${file}:${line}: line longer than ${bound}` })
        // The bytes after the last newline so far: a line still being read (or a torn tail at the end).
        let pending: Array<Buffer> = []
        let pendingBytes = 0
        let line = 0
        let first = true
        for (;;) {
          if (signal.aborted) throw signal.reason
          const buf = Buffer.allocUnsafe(CHUNK)
          const { bytesRead } = await handle.read(buf, 0, CHUNK, null)
          if (bytesRead === 0) break
          let chunk = buf.subarray(0, bytesRead)
          // A byte-order mark (some editors add one) is not part of the first row.
          if (first && chunk[0] === 0xef && chunk[1] === 0xbb && chunk[2] === 0xbf) chunk = chunk.subarray(3)
          first = false
          const last = chunk.lastIndexOf(0x0a)
          if (last < 0) {
            pending.push(chunk)
            pendingBytes += chunk.length
            if (pendingBytes > max) throw tooLong(line + 1)
            continue
          }
          // Decoded only up to a newline, so no UTF-8 character is ever cut in two.
          const head = pending.length === 0 ? chunk.subarray(0, last) : Buffer.concat([...pending, chunk.subarray(0, last)])
          for (const text of head.toString("utf8").split("\n")) {
            line++
            // A UTF-16 unit is at most 3 UTF-8 bytes: only a line that might be too long is measured.
            if (text.length * 3 > max && Buffer.byteLength(text) > max) throw tooLong(line)
            try {
              f(text, line)
            } catch (e) {
              if (e instanceof LineError) throw new RunStoreError({ path: file, message: `${file}:${line}: ${e.message}`, cause: e })
              throw e
            }
          }
          pending = last + 1 < chunk.length ? [chunk.subarray(last + 1)] : []
          pendingBytes = chunk.length - last - 1
        }
        if (pendingBytes > 0) onTornTail({ line: line + 1, bytes: pendingBytes })
        return line
      } finally {
        await handle.close()
      }
    },
    catch: refusedOrIoError(file, "read")
  })
