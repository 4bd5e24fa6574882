import { Effect, Schema, type Scope } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { randomBytes } from "node:crypto"
import { syncDirectory } from "../runs/AtomicFile.ts"
import { ioError, RunStoreError } from "../runs/RunStoreError.ts"
import { noFollowMessage, refusedOrIoError, refuseLinks } from "../runs/RunLinks.ts"

/** One answered request, appended (fsynced) to `answers.jsonl` as soon as it arrives. */
export const AnswerRow = Schema.Struct({
  key: Schema.String,
  id: Schema.String,
  model: Schema.String,
  policy: Schema.String,
  sample: Schema.Int,
  text: Schema.String,
  finish_reason: Schema.NullOr(Schema.String),
  prompt_tokens: Schema.Number,
  completion_tokens: Schema.Number,
  server: Schema.String
})
export type AnswerRow = typeof AnswerRow.Type
const decodeAnswer = Schema.decodeUnknownResult(AnswerRow)

/** Where each request's answer lies in `answers.jsonl`: byte offset and length per request index (−1 = none). */
export interface AnswerIndex {
  readonly offset: Float64Array
  readonly length: Int32Array
  /** The server that answered, as an index into `servers`. */
  readonly server: Int16Array
  readonly servers: Array<string>
  readonly answered: number
  /** Bytes of a torn last line (a killed writer); the appender cuts them off. */
  readonly tornBytes: number
}

/**
 * Scans `answers.jsonl` once, keeping only offsets (a few bytes per request, never the texts), so
 * memory stays flat however long the run. `indexOf` maps a row to its request index, or −1 when
 * the row belongs to no request of this plan (ignored). A later row for a key replaces an earlier one.
 */
export const indexAnswers = (
  file: string,
  total: number,
  indexOf: (row: AnswerRow) => number
): Effect.Effect<AnswerIndex, RunStoreError> =>
  Effect.try({
    try: () => {
      const offset = new Float64Array(total).fill(-1)
      const length = new Int32Array(total)
      const server = new Int16Array(total)
      const servers: Array<string> = []
      let answered = 0
      if (!fs.existsSync(file)) return { offset, length, server, servers, answered, tornBytes: 0 }
      const fd = openRunFileSync(file)
      try {
        // One reused read buffer: a partial last line moves to its front and the next read
        // continues after it (grown only for a line longer than the buffer), so the scan
        // allocates no per-chunk buffers however large the file.
        let buf = Buffer.allocUnsafe(1 << 20)
        let carry = 0 // bytes of a partial line at buf[0..carry)
        let pos = 0 // file offset of buf[0]
        let line = 0
        for (;;) {
          if (carry === buf.length) {
            const bigger = Buffer.allocUnsafe(buf.length * 2)
            buf.copy(bigger, 0, 0, carry)
            buf = bigger
          }
          const n = fs.readSync(fd, buf, carry, buf.length - carry, pos + carry)
          if (n === 0) break
          const end = carry + n
          let start = 0
          for (let nl = buf.indexOf(0x0a, carry); nl >= 0 && nl < end; nl = buf.indexOf(0x0a, start)) {
            line++
            if (nl > start) {
              const text = buf.toString("utf8", start, nl)
              let raw: unknown
              try {
                raw = JSON.parse(text)
              } catch {
                throw new RunStoreError({ path: file, message: `${file}:${line}: malformed JSON` })
              }
              const decoded = decodeAnswer(raw)
              if (decoded._tag === "Failure") throw new RunStoreError({ path: file, message: `${file}:${line}: not an answer row: ${String(decoded.failure)}` })
              const i = indexOf(decoded.success)
              if (i >= 0) {
                if (offset[i]! < 0) answered++
                offset[i] = pos + start
                length[i] = nl - start
                let s = servers.indexOf(decoded.success.server)
                if (s < 0) s = servers.push(decoded.success.server) - 1
                server[i] = s
              }
            }
            start = nl + 1
            if (start >= end) break
          }
          buf.copyWithin(0, start, end)
          carry = end - start
          pos += start
        }
        return { offset, length, server, servers, answered, tornBytes: carry }
      } finally {
        fs.closeSync(fd)
      }
    },
    catch: (e) => (e instanceof RunStoreError ? e : ioError(file, "read")(e))
  })

/** Reads one indexed answer back. */
export const readAnswer = (fd: number, index: AnswerIndex, i: number): AnswerRow => {
  const n = index.length[i]!
  // A shared scratch buffer: a fresh Buffer per answer is a separate off-heap allocation each,
  // which grouping a few 100,000 answers turns into tens of MB of garbage outside the JS heap.
  if (scratch.length < n) scratch = Buffer.allocUnsafe(Math.max(n, scratch.length * 2))
  fs.readSync(fd, scratch, 0, n, index.offset[i]!)
  return JSON.parse(scratch.toString("utf8", 0, n)) as AnswerRow
}
let scratch = Buffer.allocUnsafe(64 * 1024)

/**
 * Opens a run file for reading where it is: never through a link at its place (ELOOP), never a FIFO or a device
 * (O_NONBLOCK keeps the open from waiting for a FIFO's writer; the check refuses it).
 */
const openRunFileSync = (file: string): number => {
  let fd: number
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK)
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ELOOP") throw new RunStoreError({ path: file, message: noFollowMessage(file), cause: e })
    throw e
  }
  if (!fs.fstatSync(fd).isFile()) {
    fs.closeSync(fd)
    throw new RunStoreError({ path: file, message: `${file} is not a regular file` })
  }
  return fd
}

/** `readAnswer` on `file`, kept open for the scope; with no file nothing is indexed, so nothing is read. */
export const answerReader = (file: string, index: AnswerIndex): Effect.Effect<(i: number) => AnswerRow, RunStoreError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.try({ try: () => (fs.existsSync(file) ? openRunFileSync(file) : -1), catch: (e) => (e instanceof RunStoreError ? e : ioError(file, "open")(e)) }),
    (fd) => Effect.sync(() => fd >= 0 && fs.closeSync(fd))
  ).pipe(Effect.map((fd) => (i: number) => readAnswer(fd, index, i)))

/**
 * Writes `file` from a generator of lines, streamed through a temp file and renamed into place
 * (atomic, fsynced), so a million rows never sit in memory at once.
 */
export const writeLinesAtomic = (file: string, lines: Iterable<string>): Effect.Effect<number, RunStoreError> =>
  Effect.tryPromise({ try: () => refuseLinks(file, { includeFile: true }), catch: refusedOrIoError(file, "atomic write") }).pipe(Effect.andThen(Effect.try({
    try: () => {
      const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`)
      // A fresh name, never through a link (a planted one fails with EEXIST or ELOOP).
      const fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o644)
      let count = 0
      try {
        // Lines are encoded into one reused buffer and written a MiB at a time (no per-chunk buffers).
        const buf = Buffer.allocUnsafe(1 << 20)
        let used = 0
        for (const l of lines) {
          count++
          // A UTF-16 code unit takes at most 3 bytes in UTF-8.
          if (used + l.length * 3 > buf.length) {
            if (used > 0) fs.writeSync(fd, buf, 0, used)
            used = 0
            if (l.length * 3 > buf.length) {
              fs.writeSync(fd, l)
              continue
            }
          }
          used += buf.write(l, used)
        }
        if (used > 0) fs.writeSync(fd, buf, 0, used)
        fs.fsyncSync(fd)
      } catch (e) {
        fs.closeSync(fd)
        fs.rmSync(tmp, { force: true })
        throw e
      }
      fs.closeSync(fd)
      fs.renameSync(tmp, file)
      return count
    },
    catch: (e) => (e instanceof RunStoreError ? e : ioError(file, "atomic write")(e))
  }).pipe(Effect.tap(() => syncDirectory(path.dirname(file))))))
