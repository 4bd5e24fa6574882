import { Effect, Schema } from "effect"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { sha256Hex } from "../common/Hashing.ts"
import { type BenchmarkName, benchmarkOrder } from "../config/ExperimentConfig.ts"
import { fileExists } from "../runs/AtomicFile.ts"
import { readRows } from "../runs/Jsonl.ts"
import { ioError } from "../runs/RunStoreError.ts"
import { SuiteRow } from "./BenchmarkItem.ts"

export class DatasetError extends Schema.TaggedError<DatasetError>()("DatasetError", {
  message: Schema.String,
  cause: Schema.optionalKey(Schema.Defect())
}) {}

export interface SuiteSource {
  readonly benchmark: BenchmarkName
  readonly file: string
  readonly sha256: string
  readonly rows: number
}

export interface LoadedSuite {
  readonly benchmarks: ReadonlyArray<BenchmarkName>
  /** Rows in upstream order: benchmarks D1…N4, each `neq` then `eq`. */
  readonly rows: ReadonlyArray<SuiteRow>
  readonly sources: ReadonlyArray<SuiteSource>
}

export const suiteFile = (suiteDir: string, benchmark: BenchmarkName) => path.join(suiteDir, `${benchmark}.jsonl`)

/**
 * Reads `{suite_dir}/{B}.jsonl` for the configured benchmarks (null = every one present),
 * decoding each row; a bad row fails with file:line and the field.
 */
export const loadSuite = Effect.fn("BenchmarkSuite.load")(function*(
  suiteDir: string,
  wanted: ReadonlyArray<BenchmarkName> | null
) {
  const present = yield* Effect.forEach(benchmarkOrder, (b) =>
    fileExists(suiteFile(suiteDir, b)).pipe(Effect.map((ok) => [b, ok] as const)))
  const available = present.filter(([, ok]) => ok).map(([b]) => b)
  const benchmarks = wanted === null ? available : benchmarkOrder.filter((b) => wanted.includes(b))
  for (const b of benchmarks) {
    if (!available.includes(b)) {
      return yield* new DatasetError({
        message: `benchmark ${b} is configured but ${suiteFile(suiteDir, b)} does not exist` +
          (b === "N1" ? " (N1 is not redistributed; import the upstream N1_1k.pkl with `dart datasets import N1_1k.pkl`)" : "")
      })
    }
  }
  if (benchmarks.length === 0) return yield* new DatasetError({ message: `no benchmark files (D1.jsonl … N4.jsonl) in ${suiteDir}` })

  const rows: Array<SuiteRow> = []
  const sources: Array<SuiteSource> = []
  const seen = new Set<string>()
  for (const b of benchmarks) {
    const file = suiteFile(suiteDir, b)
    const bytes = yield* Effect.tryPromise({ try: () => fs.readFile(file), catch: ioError(file, "read") })
    let torn: string | undefined
    const got = yield* readRows(file, SuiteRow, (t) => (torn = `${file}:${t.line}: incomplete last line (${t.bytes} bytes)`))
    if (torn !== undefined) return yield* new DatasetError({ message: `${torn}; the file is truncated` })
    let line = 0
    for (const r of got) {
      line++
      if (r.benchmark !== b) return yield* new DatasetError({ message: `${file}:${line}: row of benchmark ${r.benchmark} in the ${b} file` })
      if (seen.has(r.id)) return yield* new DatasetError({ message: `${file}:${line}: duplicate id ${r.id}` })
      seen.add(r.id)
      rows.push(r)
    }
    sources.push({ benchmark: b, file, sha256: sha256Hex(bytes), rows: got.length })
  }
  return { benchmarks, rows, sources } satisfies LoadedSuite
}, Effect.mapError((e) => (e._tag === "RunStoreError" ? new DatasetError({ message: e.message, cause: e }) : e)))
