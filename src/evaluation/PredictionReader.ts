import { Console, Effect, Schema } from "effect"
import * as fs from "node:fs/promises"
import { looksLikeOriginalPrediction, originalPredictionDecoder } from "../compat/OriginalPredictions.ts"
import { PredictionRow } from "../contracts/PredictionRow.ts"
import { labelCode, labelOf } from "../domain/Label.ts"
import { decodeJsonLine, LineError, type TornTail } from "../runs/Jsonl.ts"
import { ioError, RunStoreError } from "../runs/RunStoreError.ts"
import { irregularInputReason } from "../runs/SafePath.ts"
import { parseConclusion } from "./ConclusionParser.ts"
import { parseMcAnswer } from "./McAnswerParser.ts"

/** Compact per-benchmark columns: one entry per scored row (dart: every sample; mc: sample 0). */
export interface BenchmarkColumns {
  readonly name: string
  /** dart: 1 YES / 0 NO. mc: the correct option 0/1/2. */
  readonly gold: Int8Array
  /** mc only: 1 for the ≠ set, 0 for the = set. */
  readonly neq: Int8Array
  /** Per model, in model order. dart: 1/0/−1. mc: 0/1/2/−1/−2. */
  readonly preds: ReadonlyArray<Int8Array>
  /** Index of the row's scenario within this benchmark. */
  readonly scenario: Int32Array
  readonly scenarioIds: Map<string, number>
}

/**
 * A column that grows like an array but stores one byte (or four) per row: a million rows of
 * plain JS arrays cost ~8 bytes per number plus growth slack, typed columns 1–4 bytes.
 */
class Column<T extends Int8Array | Int32Array> {
  length = 0
  private data: T
  private readonly make: (n: number) => T
  constructor(data: T, make: (n: number) => T) {
    this.data = data
    this.make = make
  }
  push(v: number) {
    if (this.length === this.data.length) {
      const bigger = this.make(this.data.length * 2)
      bigger.set(this.data)
      this.data = bigger
    }
    this.data[this.length++] = v
  }
  done(): T {
    return this.data.subarray(0, this.length) as T
  }
}
const int8 = () => new Column(new Int8Array(1024), (n) => new Int8Array(n))
const int32 = () => new Column(new Int32Array(1024), (n) => new Int32Array(n))

interface Building {
  readonly name: string
  readonly gold: Column<Int8Array>
  readonly neq: Column<Int8Array>
  readonly preds: Array<Column<Int8Array>>
  readonly scenario: Column<Int32Array>
  readonly scenarioIds: Map<string, number>
}

export interface CollectedPredictions {
  readonly task: "dart" | "mc"
  readonly models: ReadonlyArray<string>
  readonly benchmarks: ReadonlyArray<BenchmarkColumns>
  readonly rows: number
  /** mc rows with sample > 0: counted, not scored (the suite scores sample 0 only). */
  readonly extraSamples: number
  readonly tornTail: TornTail | undefined
}

const decodeRow = Schema.decodeUnknownResult(PredictionRow)

/** The longest line a prediction file may hold: rows are kilobytes; a longer line is a broken or hostile file. */
export const MAX_PREDICTION_LINE_BYTES = 16 * 1024 * 1024

/**
 * Calls `f` on every complete line, read in 1 MiB byte chunks and decoded one line at a time.
 * A text stream + split would make a megabyte string per chunk and slices pinning it; with a
 * million rows that garbage alone lifted the peak RSS past 200 MiB. The buffer grows for a long line up to
 * `MAX_PREDICTION_LINE_BYTES` and no further, and only a regular file is opened (a FIFO blocks, /dev/zero never ends).
 */
const forEachLineCompact = (file: string, f: (text: string, line: number) => void, onTornTail: (t: TornTail) => void) =>
  Effect.tryPromise({
    try: async () => {
      const irregular = await irregularInputReason(file)
      if (irregular !== undefined) throw new RunStoreError({ path: file, message: irregular })
      const handle = await fs.open(file, "r")
      try {
        let buf = Buffer.alloc(1 << 20)
        let filled = 0
        let pos = 0
        let line = 0
        for (;;) {
          if (filled === buf.length) {
            // The buffer holds one unfinished line: refused once it is longer than the bound.
            if (buf.length > MAX_PREDICTION_LINE_BYTES) {
              throw new RunStoreError({ path: file, message: `${file}:${line + 1}: line longer than ${MAX_PREDICTION_LINE_BYTES / (1024 * 1024)} MiB (no newline within it)` })
            }
            const bigger = Buffer.alloc(Math.min(buf.length * 2, MAX_PREDICTION_LINE_BYTES + 1))
            buf.copy(bigger, 0, 0, filled)
            buf = bigger
          }
          const { bytesRead } = await handle.read(buf, filled, buf.length - filled, pos)
          if (bytesRead === 0) break
          const first = pos === 0
          pos += bytesRead
          filled += bytesRead
          // A byte-order mark (some editors add one) is not part of the first row.
          let start = first && filled >= 3 && buf[0] === 0xef && buf[1] === 0xbb && buf[2] === 0xbf ? 3 : 0
          for (let nl = buf.indexOf(0x0a, start); nl >= 0 && nl < filled; nl = buf.indexOf(0x0a, start)) {
            line++
            try {
              f(buf.toString("utf8", start, nl), line)
            } catch (e) {
              if (e instanceof LineError) throw new RunStoreError({ path: file, message: `${file}:${line}: ${e.message}` })
              throw e
            }
            start = nl + 1
          }
          buf.copy(buf, 0, start, filled)
          filled -= start
        }
        if (filled > 0) onTornTail({ line: line + 1, bytes: filled })
        return line
      } finally {
        await handle.close()
      }
    },
    catch: (e) => (e instanceof RunStoreError ? e : ioError(file, "read")(e))
  })

/** Sorts D1…D4, N1…N4 first, then any other benchmark by name. */
const benchmarkRank = (name: string) => {
  const m = /^([DN])([1-4])$/.exec(name)
  return m ? (m[1] === "D" ? 0 : 4) + Number(m[2]) : 100
}

/**
 * Streams a predictions file into columns, parsing each model's text with the task's
 * parser. Memory is a few numbers per row, so a million rows stay well under a gigabyte.
 */
export const readPredictions = Effect.fn("PredictionReader.read")(function*(
  file: string,
  models: ReadonlyArray<string>,
  options: {
    readonly refusals: ReadonlyArray<string>
    /**
     * Called with each row's id (and whether the original's code wrote the row, with its own ids); a message refuses
     * the row (`file:line: message`), undefined accepts it.
     */
    readonly checkId?: (id: string, original: boolean) => string | undefined
  }
): Effect.fn.Return<CollectedPredictions, RunStoreError> {
  let task: "dart" | "mc" | undefined
  const byName = new Map<string, Building>()
  // Samples seen per id, as a bitmap: one small array per item instead of one string per row.
  const seen = new Map<string, Uint8Array>()
  let rows = 0
  let extraSamples = 0
  let tornTail: TornTail | undefined

  const original = originalPredictionDecoder(file)
  yield* forEachLineCompact(file, (text, _line) => {
    if (text.trim() === "") return
    // Rows the original Python code wrote are read through src/compat (a repeated item counts once).
    const fromOriginal = looksLikeOriginalPrediction(text)
    const row = fromOriginal ? original.decode(text) : decodeJsonLine(text, decodeRow)
    if (row === undefined) return
    const refused = options.checkId?.(row.id, fromOriginal)
    if (refused !== undefined) throw new LineError(refused)
    task ??= row.task
    if (row.task !== task) throw new LineError(`task "${row.task}" differs from the file's first row ("${task}")`)
    let bits = seen.get(row.id)
    if (bits === undefined || bits.length <= row.sample >> 3) {
      const grown = new Uint8Array(Math.max(8, (row.sample >> 3) + 1, (bits?.length ?? 0) * 2))
      if (bits !== undefined) grown.set(bits)
      seen.set(row.id, (bits = grown))
    }
    const bit = 1 << (row.sample & 7)
    if (bits[row.sample >> 3]! & bit) throw new LineError(`duplicate prediction for ${row.id} sample ${row.sample}`)
    bits[row.sample >> 3]! |= bit
    rows++
    const texts = models.map((m) => {
      const out = row.outputs[m]
      if (out === undefined) throw new LineError(`no output for model "${m}" (has: ${Object.keys(row.outputs).join(", ") || "none"})`)
      return out.text
    })
    if (row.task === "mc" && row.sample !== 0) {
      extraSamples++
      return
    }
    let gold: number
    if (row.task === "dart") {
      const expected = labelOf(row.condition)
      if (row.gold_label !== undefined && row.gold_label !== expected) {
        throw new LineError(`gold_label ${row.gold_label} contradicts condition ${row.condition}`)
      }
      gold = labelCode(expected)
    } else {
      if (row.answer === undefined) throw new LineError("mc rows need the benchmark's answer (0, 1 or 2)")
      if ((row.condition === "eq") !== (row.answer === 2)) throw new LineError(`answer ${row.answer} does not fit condition ${row.condition}`)
      gold = row.answer
    }
    let bench = byName.get(row.benchmark)
    if (bench === undefined) {
      bench = { name: row.benchmark, gold: int8(), neq: int8(), preds: models.map(() => int8()), scenario: int32(), scenarioIds: new Map() }
      byName.set(row.benchmark, bench)
    }
    // Upstream clusters by (condition, scenario): the same id under ≠ and = is two clusters.
    const scenarioKey = row.task === "mc" ? `${row.condition}\u0000${row.scenario}` : row.scenario
    let s = bench.scenarioIds.get(scenarioKey)
    if (s === undefined) {
      s = bench.scenarioIds.size
      bench.scenarioIds.set(scenarioKey, s)
    }
    bench.gold.push(gold)
    bench.neq.push(row.condition === "neq" ? 1 : 0)
    bench.scenario.push(s)
    texts.forEach((t, m) => {
      const pred = row.task === "dart" ? labelCode(parseConclusion(t)) : parseMcAnswer(t, options.refusals)
      bench.preds[m]!.push(pred)
    })
  }, (t) => (tornTail = t))
  for (const notice of original.notices()) yield* Console.error(notice)

  return {
    task: task ?? "dart",
    models,
    benchmarks: [...byName.values()].map((b): BenchmarkColumns => ({
      name: b.name,
      gold: b.gold.done(),
      neq: b.neq.done(),
      preds: b.preds.map((p) => p.done()),
      scenario: b.scenario.done(),
      scenarioIds: b.scenarioIds
    })).sort((a, b) => benchmarkRank(a.name) - benchmarkRank(b.name) || (a.name < b.name ? -1 : 1)),
    rows,
    extraSamples,
    tornTail
  }
})
