import { Console, Effect, Option, Schema } from "effect"
import { Argument, Command, Flag } from "effect/cli"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { BenchmarkName } from "../config/ExperimentConfig.ts"
import { SuiteRow } from "../datasets/BenchmarkItem.ts"
import { DatasetError, suiteFile } from "../datasets/BenchmarkSuite.ts"
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
  force: Flag.Boolean("force").pipe(Flag.withDescription("replace an existing file with different content"), Flag.withDefault(false))
}, (args) =>
  Effect.gen(function*() {
    const { config } = yield* loadConfig
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
      "Import an upstream benchmark pickle ({B}_1k.pkl: a pair of lists of [question, answer, scenario]) or a suite JSONL into the benchmark suite; later stages pick it up."
    ),
    Command.withExamples([{ command: "dart datasets import ~/difference_awareness/benchmark_suite/N1_1k.pkl", description: "add N1" }])
  )

export const datasetsCommand = Command.make("datasets").pipe(
  Command.withDescription("Manage the benchmark suite (benchmark_suite/ by default)."),
  Command.withSubcommands([importCommand])
)
