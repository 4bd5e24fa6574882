import { Effect, Schema } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { randomBytes } from "node:crypto"
import { syncDirectory } from "../runs/AtomicFile.ts"
import { ioError, RunStoreError } from "../runs/RunStoreError.ts"

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
      const fd = fs.openSync(file, "r")
      try {
        const buf = Buffer.alloc(1 << 20)
        let carry = Buffer.alloc(0)
        let pos = 0 // file offset of carry[0]
        let line = 0
        for (;;) {
          const n = fs.readSync(fd, buf, 0, buf.length, pos + carry.length)
          if (n === 0) break
          const chunk = carry.length === 0 ? buf.subarray(0, n) : Buffer.concat([carry, buf.subarray(0, n)])
          let start = 0
          for (let nl = chunk.indexOf(0x0a, start); nl >= 0; nl = chunk.indexOf(0x0a, start)) {
            line++
            if (nl > start) {
              const text = chunk.toString("utf8", start, nl)
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
          }
          pos += start
          carry = Buffer.from(chunk.subarray(start))
        }
        return { offset, length, server, servers, answered, tornBytes: carry.length }
      } finally {
        fs.closeSync(fd)
      }
    },
    catch: (e) => (e instanceof RunStoreError ? e : ioError(file, "read")(e))
  })

/** Reads one indexed answer back. */
export const readAnswer = (fd: number, index: AnswerIndex, i: number): AnswerRow => {
  const buf = Buffer.alloc(index.length[i]!)
  fs.readSync(fd, buf, 0, buf.length, index.offset[i]!)
  return JSON.parse(buf.toString("utf8")) as AnswerRow
}

/**
 * Writes `file` from a generator of lines, streamed through a temp file and renamed into place
 * (atomic, fsynced), so a million rows never sit in memory at once.
 */
export const writeLinesAtomic = (file: string, lines: Iterable<string>): Effect.Effect<number, RunStoreError> =>
  Effect.try({
    try: () => {
      const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`)
      const fd = fs.openSync(tmp, "w", 0o644)
      let count = 0
      try {
        let pending: Array<string> = []
        let size = 0
        for (const l of lines) {
          pending.push(l)
          size += l.length
          count++
          if (size > 1 << 20) {
            fs.writeSync(fd, pending.join(""))
            pending = []
            size = 0
          }
        }
        if (pending.length > 0) fs.writeSync(fd, pending.join(""))
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
  }).pipe(Effect.tap(() => syncDirectory(path.dirname(file))))
