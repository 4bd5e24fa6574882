import { Clock, Console, Effect, Schema } from "effect"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { hashJson, sha256Hex } from "../common/Hashing.ts"
import { parseOpenEndedQueries } from "../datasets/OpenEndedQueries.ts"
import { SuiteFormatError } from "../datasets/external/ExternalSuite.ts"
import { DatasetError } from "../datasets/BenchmarkSuite.ts"
import { EXTERNAL_MANIFEST, externalSuiteFile, OPEN_ENDED_FILE } from "../datasets/RunDatasetFiles.ts"
import { gitCommit, toolVersion } from "../common/Version.ts"
import { CONFIG_SNAPSHOT, type ResolvedConfig } from "../config/ConfigLoader.ts"
import { describeChanges, diffConfigs } from "../config/ConfigDiff.ts"
import { labelOf } from "../domain/Label.ts"
import { type NormalizedItem, type Split, splits, type SuiteRow } from "../datasets/BenchmarkItem.ts"
import { loadSuite } from "../datasets/BenchmarkSuite.ts"
import { loadExternalSuites } from "../datasets/external/ExternalSuites.ts"
import { countSplits, splitItems } from "../datasets/Splits.ts"
import { makeDirectories } from "../runs/AtomicFile.ts"
import { RunStore } from "../runs/RunStore.ts"
import { openStage } from "./StageRun.ts"

export class RunConflictError extends Schema.TaggedError<RunConflictError>()("RunConflictError", {
  message: Schema.String
}) {}

export const DATASET_MANIFEST = "datasets/manifest.json"
export const splitFile = (split: Split) => `datasets/${split}.jsonl`

export interface InitResult {
  readonly dir: string
  readonly upToDate: boolean
  readonly totals: Readonly<Record<Split, number>>
}

const normalize = (r: SuiteRow, split: Split): NormalizedItem => ({
  id: r.id,
  benchmark: r.benchmark,
  condition: r.condition,
  index: r.index,
  question: r.question,
  answer: r.answer,
  gold_label: labelOf(r.condition),
  scenario: r.scenario,
  marginalized_choice: r.marginalized_choice,
  split
})

const MAX_QUERY_SET_BYTES = 64 * 1024 * 1024

/** The configured open-ended query set (ood.open_ended.file, relative to the working directory), checked and limited. */
const loadOpenEnded = (config: ResolvedConfig["config"]) =>
  Effect.gen(function*() {
    const rel = config.ood.open_ended.file
    if (rel === null) return undefined
    const file = path.resolve(rel)
    const bytes = yield* Effect.tryPromise({
      try: async () => {
        // A FIFO would block the read, a device never end it, a huge file fill memory.
        const st = await fs.stat(file)
        if (!st.isFile()) throw new Error("not a regular file")
        if (st.size > MAX_QUERY_SET_BYTES) throw new Error(`${st.size} bytes, more than ${MAX_QUERY_SET_BYTES}`)
        return await fs.readFile(file)
      },
      catch: (e) => new DatasetError({ message: `ood.open_ended.file: ${file}: ${(e as Error).message.split("\n")[0]} (set it to null for no open-ended queries)` })
    })
    const queries = yield* Effect.try({
      try: () => parseOpenEndedQueries(bytes.toString("utf8"), file),
      catch: (e) => new DatasetError({ message: e instanceof SuiteFormatError ? e.message : `${file}: ${(e as Error).message}` })
    })
    const limit = config.ood.open_ended.limit
    return { sha256: sha256Hex(bytes), queries: limit === null ? queries : queries.slice(0, limit) }
  })

/**
 * Original step 1: the run folder, the resolved config snapshot, and the normalized
 * items split into train/val/test. Idempotent for the same config; refuses a changed one.
 */
export const runInit = (resolved: ResolvedConfig) => Effect.scoped(initIn(resolved))

const initIn = Effect.fn("InitStage.run")(function*(resolved: ResolvedConfig) {
  const store = yield* RunStore
  const { config } = resolved
  // One init per run at a time; taking the lock also sweeps temp files a killed init left.
  const stage = yield* openStage({ config, stage: "init", createsRun: true })
  const { run } = stage
  const configText = `${JSON.stringify(resolved.json, null, 2)}\n`

  const existing = yield* store.readManifest(run)
  if (existing !== undefined) {
    const recordedText = yield* store.readText(run, CONFIG_SNAPSHOT)
    let recorded: unknown = {}
    try {
      recorded = JSON.parse(recordedText ?? "{}")
    } catch {
      // A damaged snapshot is a conflict like any other: show everything as changed.
    }
    // An init killed before it wrote the snapshot recorded no config: nothing to conflict with.
    const changes = recordedText === undefined && existing.stages.init?.status !== "done" ? [] : diffConfigs(recorded, resolved.json)
    if (changes.length > 0) {
      return yield* new RunConflictError({
        message: `run ${config.run.exp_id} already exists at ${run.dir} with a different config:\n${describeChanges(changes)}\n` +
          "Use a new --exp-id, or restore the recorded values."
      })
    }
  }

  const suite = yield* loadSuite(config.datasets.suite_dir, config.datasets.benchmarks)
  const split = splitItems(suite.rows, config.datasets.split)
  const { limits } = config.datasets
  const limited = {
    train: split.train.slice(0, limits.train ?? undefined),
    val: split.val.slice(0, limits.val ?? undefined),
    test: split.test.slice(0, limits.test ?? undefined)
  }
  const counts = countSplits(limited, suite.benchmarks)
  const totals = { train: limited.train.length, val: limited.val.length, test: limited.test.length }
  for (const s of splits) {
    if (totals[s] === 0) {
      yield* Console.error(`warning: the ${s} split is empty (datasets.split ${JSON.stringify(config.datasets.split)}); stages that read ${splitFile(s)} will have nothing to do`)
    }
  }

  const files: Array<readonly [string, string]> = [[CONFIG_SNAPSHOT, configText]]
  for (const s of splits) {
    files.push([splitFile(s), limited[s].map((r) => `${JSON.stringify(normalize(r, s))}\n`).join("")])
  }
  files.push([DATASET_MANIFEST, `${JSON.stringify({
    strategy: config.datasets.split.strategy,
    seed: config.datasets.split.seed,
    ratios: { train: config.datasets.split.train, val: config.datasets.split.val, test: config.datasets.split.test },
    limits: config.datasets.limits,
    benchmarks: suite.benchmarks,
    sources: suite.sources.map((s) => ({ benchmark: s.benchmark, file: s.file, sha256: s.sha256, rows: s.rows })),
    totals,
    counts
  }, null, 2)}\n`])

  const external = yield* loadExternalSuites(config.datasets.suite_dir, config.datasets.external)
  for (const e of external) files.push([externalSuiteFile(e.suite), e.rows.map((r) => `${JSON.stringify(r)}\n`).join("")])
  if (external.length > 0) {
    files.push([EXTERNAL_MANIFEST, `${JSON.stringify({
      sampling: config.datasets.external.sampling,
      seed: config.datasets.external.seed,
      holisticbias_version: config.datasets.external.holisticbias_version,
      limits: config.datasets.external.limits,
      trainable: false,
      suites: external.map((e) => ({
        suite: e.suite,
        file: externalSuiteFile(e.suite),
        rows: e.rows.length,
        sources: e.sources.map((s) => ({ file: s.file, sha256: s.sha256, bytes: s.bytes }))
      }))
    }, null, 2)}\n`])
  }

  const openEnded = yield* loadOpenEnded(config)
  if (openEnded !== undefined) files.push([OPEN_ENDED_FILE, openEnded.queries.map((q) => `${JSON.stringify(q)}\n`).join("")])

  const externalShas = external.flatMap((e) => e.sources.map((s) => s.sha256))
  const inputsHash = hashJson({
    config: resolved.hash,
    sources: suite.sources.map((s) => s.sha256),
    ...(externalShas.length > 0 ? { external: externalShas } : {}),
    ...(openEnded === undefined ? {} : { open_ended: openEnded.sha256 })
  })
  if (existing !== undefined && (yield* stage.upToDate(inputsHash))) {
    return { dir: run.dir, upToDate: true, totals } satisfies InitResult
  }

  yield* store.create(run)
  if (existing === undefined) {
    const now = yield* Clock.currentTimeMillis
    yield* store.writeManifest(run, {
      schema_version: 1,
      exp_id: config.run.exp_id,
      config_hash: resolved.hash,
      tool_version: toolVersion,
      git_commit: gitCommit(),
      node_version: process.version,
      created_at: new Date(now).toISOString(),
      stages: {}
    })
  }
  yield* stage.begin(inputsHash, Effect.gen(function*() {
    if (external.length > 0) yield* makeDirectories([run.file("datasets/external")])
    const outputs = yield* Effect.forEach(files, ([rel, text]) => store.writeFile(run, rel, text))
    yield* stage.finish({ status: "done", outputs })
  }))
  yield* Console.log(renderCounts(counts, totals))
  if (external.length > 0) {
    yield* Console.log(`  external (${config.datasets.external.sampling}): ${external.map((e) => `${e.suite} ${e.rows.length}`).join(", ")}`)
  }
  return { dir: run.dir, upToDate: false, totals } satisfies InitResult
})

const renderCounts = (counts: ReturnType<typeof countSplits>, totals: Record<Split, number>): string => {
  const rows = Object.entries(counts).flatMap(([b, byCond]) =>
    Object.entries(byCond).map(([c, n]) => `  ${b.padEnd(4)}${c.padEnd(5)}${String(n.train).padStart(7)}${String(n.val).padStart(7)}${String(n.test).padStart(7)}`)
  )
  return [
    `  ${"".padEnd(9)}${"train".padStart(7)}${"val".padStart(7)}${"test".padStart(7)}`,
    ...rows,
    `  ${"total".padEnd(9)}${String(totals.train).padStart(7)}${String(totals.val).padStart(7)}${String(totals.test).padStart(7)}`
  ].join("\n")
}
