import { Console, Effect, Option, Schema } from "effect"
import { Argument, Command, Flag } from "effect/cli"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { BenchmarkName } from "../config/ExperimentConfig.ts"
import { SuiteRow } from "../datasets/BenchmarkItem.ts"
import { DatasetError, suiteFile } from "../datasets/BenchmarkSuite.ts"
import { SuiteFormatError } from "../datasets/external/ExternalSuite.ts"
import { rtpFile, rtpRecordFile } from "../datasets/external/ExternalSuites.ts"
import { checkRtpImport, RTP_PUBLISHED, type RtpImportRecord } from "../datasets/external/RealToxicityPromptsLoader.ts"
import { parseOpenEndedQueries } from "../datasets/OpenEndedQueries.ts"
import { PickleError } from "../datasets/PickleReader.ts"
import { importUpstreamPickle, pythonJsonLine } from "../datasets/UpstreamImport.ts"
import { readTextIfExists, writeFileAtomic } from "../runs/AtomicFile.ts"
import { readRows } from "../runs/Jsonl.ts"
import { loadConfig } from "./Root.ts"

const decodeBenchmark = Schema.decodeUnknownOption(BenchmarkName)

const importCommand = Command.make("import", {
  file: Argument.String("file").pipe(Argument.withDescription("an upstream {B}_1k.pkl or a suite .jsonl")),
  benchmark: Flag.String("benchmark").pipe(
    Flag.withDescription("benchmark name (D1…D4, N1…N4); default: from the file name"),
    Flag.optional
  ),
  out: Flag.String("out").pipe(Flag.withDescription("output JSONL (default: {datasets.suite_dir}/{B}.jsonl)"), Flag.optional),
  force: Flag.Boolean("force").pipe(Flag.withDescription("replace an existing file with different content"), Flag.withDefault(false)),
  suite: Flag.String("suite").pipe(
    Flag.withDescription("RealToxicityPrompts: import your own prompts.jsonl as that external suite (default for a file named prompts.jsonl)"),
    Flag.optional
  ),
  sha256: Flag.String("sha256").pipe(Flag.withDescription("the sha256 the RealToxicityPrompts file must have (none is published)"), Flag.optional)
}, (args) =>
  Effect.gen(function*() {
    const { config } = yield* loadConfig
    const suite = Option.getOrUndefined(args.suite)
    if (suite !== undefined && suite !== "RealToxicityPrompts") {
      return yield* new DatasetError({ message: `--suite ${suite}: only RealToxicityPrompts is imported (BOLD, HolisticBias and HateCheck are shipped in benchmark_suite/external/)` })
    }
    if (suite !== undefined || (Option.isNone(args.benchmark) && path.basename(args.file) === "prompts.jsonl")) {
      return yield* importRtp(args.file, config.datasets.suite_dir, Option.getOrNull(args.sha256), args.force)
    }
    const stem = path.basename(args.file).replace(/(_1k)?\.(pkl|jsonl)$/i, "")
    const name = Option.getOrElse(args.benchmark, () => stem)
    const benchmark = Option.getOrUndefined(decodeBenchmark(name))
    if (benchmark === undefined) {
      return yield* new DatasetError({
        message: `unknown benchmark "${name}" (from ${Option.isSome(args.benchmark) ? "--benchmark" : args.file}); expected one of ${BenchmarkName.literals.join(", ")}`
      })
    }
    let rows: ReadonlyArray<SuiteRow>
    if (/\.jsonl$/i.test(args.file)) {
      rows = yield* readRows(args.file, SuiteRow).pipe(Effect.mapError((e) => new DatasetError({ message: e.message, cause: e })))
      const wrong = rows.find((r) => r.benchmark !== benchmark)
      if (wrong) return yield* new DatasetError({ message: `${args.file}: row ${wrong.id} is not from benchmark ${benchmark}` })
    } else {
      const data = yield* Effect.tryPromise({
        try: () => fs.readFile(args.file),
        catch: (e) => new DatasetError({ message: `${args.file}: cannot read (${(e as Error).message})`, cause: e })
      })
      try {
        rows = importUpstreamPickle(data, benchmark)
      } catch (e) {
        if (e instanceof PickleError) return yield* new DatasetError({ message: `${args.file}: ${e.message}`, cause: e })
        throw e
      }
    }
    if (rows.length === 0) return yield* new DatasetError({ message: `${args.file}: no items to import` })
    const text = rows.map((r) => pythonJsonLine(r)).join("\n") + "\n"
    const out = Option.getOrElse(args.out, () => suiteFile(config.datasets.suite_dir, benchmark))
    const previous = yield* readTextIfExists(out)
    if (previous === text) return yield* Console.log(`${out} already holds these ${rows.length} rows`)
    if (previous !== undefined && !args.force) {
      return yield* new DatasetError({ message: `${out} exists with different content; pass --force to replace it` })
    }
    yield* Effect.tryPromise({ try: () => fs.mkdir(path.dirname(out), { recursive: true }), catch: (e) => new DatasetError({ message: `${out}: ${(e as Error).message}`, cause: e }) })
    yield* writeFileAtomic(out, text)
    const neq = rows.filter((r) => r.condition === "neq").length
    yield* Console.log(`wrote ${out}: ${rows.length} rows of ${benchmark} (${neq} neq, ${rows.length - neq} eq)`)
  })).pipe(
    Command.withDescription(
      "Import an upstream benchmark pickle ({B}_1k.pkl: a pair of lists of [question, answer, scenario]) or a suite JSONL into the benchmark suite; later stages pick it up. " +
        "A RealToxicityPrompts prompts.jsonl (the published 99,442 rows) becomes the external suite of that name."
    ),
    Command.withExamples([
      { command: "dart datasets import ~/difference_awareness/benchmark_suite/N1_1k.pkl", description: "add N1" },
      { command: "dart datasets import ~/realtoxicityprompts-data/prompts.jsonl", description: "add RealToxicityPrompts" }
    ])
  )

/**
 * The user's own RealToxicityPrompts `prompts.jsonl` (not redistributable here) into
 * `{suite_dir}/external/RealToxicityPrompts/`, after checking it is the published file (row count; sha256 when given),
 * with a record of its sha256 that later loads check (docs/external-suites.md).
 */
const importRtp = Effect.fn("DatasetsCommand.importRtp")(function*(file: string, suiteDir: string, sha256: string | null, force: boolean) {
  const bytes = yield* Effect.tryPromise({
    try: () => fs.readFile(file),
    catch: (e) => new DatasetError({ message: `${file}: cannot read (${(e as Error).message})`, cause: e })
  })
  const checked = yield* Effect.try({
    try: () => checkRtpImport(bytes, file, { sha256: sha256 ?? RTP_PUBLISHED.sha256, rows: RTP_PUBLISHED.rows }),
    catch: (e) => new DatasetError({ message: e instanceof SuiteFormatError ? e.message : `${file}: ${(e as Error).message}`, cause: e })
  })
  const out = rtpFile(suiteDir)
  const record: RtpImportRecord = { file: "prompts.jsonl", sha256: checked.sha256, rows: checked.rows, source: path.basename(file) }
  const previous = yield* readTextIfExists(rtpRecordFile(suiteDir))
  if (previous !== undefined && !force && !previous.includes(checked.sha256)) {
    return yield* new DatasetError({ message: `${out} exists with different content; pass --force to replace it` })
  }
  yield* Effect.tryPromise({ try: () => fs.mkdir(path.dirname(out), { recursive: true }), catch: (e) => new DatasetError({ message: `${out}: ${(e as Error).message}`, cause: e }) })
  yield* writeFileAtomic(out, bytes)
  yield* writeFileAtomic(rtpRecordFile(suiteDir), `${JSON.stringify(record, null, 2)}\n`)
  yield* Console.log(`wrote ${out}: ${checked.rows} RealToxicityPrompts rows, sha256 ${checked.sha256}`)
})

/** Reads an open-ended query set as the measurement will, so a user finds a bad row before anything is spent. */
const checkQueriesCommand = Command.make("check-queries", {
  file: Argument.String("file").pipe(Argument.withDescription("an open-ended query set (JSONL: id, domain, query, optional notes)"))
}, (args) =>
  Effect.gen(function*() {
    const text = yield* Effect.tryPromise({
      try: () => fs.readFile(args.file, "utf8"),
      catch: (e) => new DatasetError({ message: `${args.file}: cannot read (${(e as Error).message})`, cause: e })
    })
    const queries = yield* Effect.try({
      try: () => parseOpenEndedQueries(text, args.file),
      catch: (e) => new DatasetError({ message: e instanceof SuiteFormatError ? e.message : `${args.file}: ${(e as Error).message}`, cause: e })
    })
    const domains = new Map<string, number>()
    for (const q of queries) domains.set(q.domain, (domains.get(q.domain) ?? 0) + 1)
    const noted = queries.filter((q) => (q.notes ?? "") !== "").length
    yield* Console.log(`${args.file}: ${queries.length} open-ended queries in ${domains.size} domain(s) (${[...domains].map(([d, n]) => `${d} ${n}`).join(", ")}); ${noted} with notes for the judge`)
  })).pipe(
    Command.withDescription("Check an open-ended query set: every row's shape, unique ids; bad rows are named by file and line (docs/external-suites.md)."),
    Command.withExamples([{ command: "dart datasets check-queries benchmark_suite/open_ended/example.jsonl", description: "the shipped example (40 queries of ours)" }])
  )

export const datasetsCommand = Command.make("datasets").pipe(
  Command.withDescription("Manage the benchmark suite (benchmark_suite/ by default) and check query sets."),
  Command.withSubcommands([importCommand, checkQueriesCommand])
)
