import { Console, Effect, Runtime, Schema, Scope } from "effect"
import * as fs from "node:fs/promises"
import { computeHosts } from "../compute/Placement.ts"
import { RegressionPoolRow } from "../contracts/RegressionPoolRow.ts"
import { TeacherOutputKey } from "../contracts/TeacherOutput.ts"
import { type Label, labelOf } from "../domain/Label.ts"
import type { ResolvedConfig } from "../config/ConfigLoader.ts"
import { NormalizedItemSchema, type Split, splits } from "../datasets/BenchmarkItem.ts"
import { loadSuite } from "../datasets/BenchmarkSuite.ts"
import { splitItems } from "../datasets/Splits.ts"
import { fileExists } from "../runs/AtomicFile.ts"
import { readRows } from "../runs/Jsonl.ts"
import { writeRunReport } from "../report/RunReport.ts"
import { type RunHandle, RunStore } from "../runs/RunStore.ts"
import type { ClassifierSpec } from "../serving/ClassifierClient.ts"
import { distillMessages, repairMessages } from "../teacher/Prompts.ts"
import { openClassifiers, openVllmServers, type VllmAccess } from "./VllmServers.ts"
import { ensureChatLayout } from "./ChatLayoutRecord.ts"
import { Compute } from "../compute/Compute.ts"
import type { ComputeError } from "../compute/ComputeError.ts"
import { bindRunServer, isRunServer } from "../config/RunServerBinding.ts"
import { buildHeadline, type HeadlineSource, parseHeadlineSource, renderHeadline } from "./Headline.ts"
import { type ComputeProbes, renderPreflight, runPreflight } from "./Preflight.ts"
import {
  BASE,
  buildRunGraph,
  DART,
  DART_H,
  GraphSelectionError,
  planGraph,
  type Selection,
  type Stage,
  type StageId,
  type StageState
} from "./RunGraph.ts"
import { buildRunPlan, type PlanFacts, renderRunPlan, type SplitFacts, type TeacherWork } from "./RunPlan.ts"
import { classifiersToStart } from "./ServicePlacement.ts"
import { type StageDrivers, stageDrivers } from "./Stages.ts"
import { type Tracking, withTracking } from "../tracking/Tracking.ts"

export class RunError extends Schema.TaggedError<RunError>()("RunError", { message: Schema.String, cause: Schema.optionalKey(Schema.Defect()) }) {}

/** Prerequisites are missing (keys, hosts, images, GPUs): nothing was started (exit code 5). */
export class PrerequisiteError extends Schema.TaggedError<PrerequisiteError>()("PrerequisiteError", { message: Schema.String }) {
  override readonly [Runtime.errorExitCode] = 5
}

/** `--from` / `--until` name stages out of order or skip unfinished ones (exit code 2, like other usage errors). */
export class SelectionError extends Schema.TaggedError<SelectionError>()("SelectionError", { message: Schema.String }) {
  override readonly [Runtime.errorExitCode] = 2
}

/** What `pipelineDrivers` shares and calls: how servers are opened, and the stages' own code. */
export interface SharedComputeParts {
  readonly openVllm: (resolved: ResolvedConfig, runDir: string) => Effect.Effect<VllmAccess, ComputeError, Scope.Scope | Compute>
  readonly openClassifiers: (resolved: ResolvedConfig, runDir: string) => Effect.Effect<ReadonlyArray<ClassifierSpec>, ComputeError, Scope.Scope | Compute>
  readonly removeOrphans: (resolved: ResolvedConfig, runDir: string) => Effect.Effect<ReadonlyArray<string>, ComputeError, Compute>
  /** Replicas that share their GPUs with the trainer or the classifiers (they sleep meanwhile). */
  readonly sharing: () => Effect.Effect<ReadonlyArray<string>, ComputeError, Compute>
  readonly stages: StageDrivers<Error, RunStore | Compute>
}

export const sharedComputeParts: SharedComputeParts = {
  openVllm: openVllmServers,
  openClassifiers,
  removeOrphans: () => Effect.gen(function*() { return yield* (yield* Compute).removeOrphans() }),
  sharing: () => Effect.gen(function*() { return (yield* (yield* Compute).placement()).sharing }),
  stages: stageDrivers
}

/**
 * `dart run`'s drivers: the same stage code, with the compute shared across stages for the scope of the run. One vLLM
 * server (the configured endpoints, or replicas started over the fleet when a stage first needs them) serves every inference stage,
 * loading adapters as they are produced, and is the teacher and judge of provider `vllm`; the audit classifiers start
 * at the first audit and stay (CPU hosts) or start for each audit and go with it (GPU hosts). Everything started is removed when the scope closes (the end, a failure or Ctrl-C). On GPU
 * hosts the server sleeps (`compute.vllm.sleep_mode`) while the trainer or the classifiers need the GPU.
 */
export const pipelineDrivers = (resolved: ResolvedConfig, runDir: string, parts: SharedComputeParts = sharedComputeParts) =>
  Effect.gen(function*() {
    const scope = yield* Effect.scope
    const vllm = yield* Effect.cached(parts.openVllm(resolved, runDir).pipe(Scope.provide(scope)))
    const classifiers = yield* Effect.cached(parts.openClassifiers(resolved, runDir).pipe(Scope.provide(scope)))
    let started: VllmAccess | undefined
    let asleep = false
    /** Replicas that sleep while the GPU trains or classifies: started ones with GPUs that share them (Placement.ts). */
    let sleepers: ReadonlyArray<string> = []
    const sleepCall = (what: "sleep?level=1" | "wake_up") =>
      Effect.forEach(sleepers, (server) =>
        Effect.tryPromise({
          try: async () => {
            const r = await fetch(`${server}/${what}`, { method: "POST", signal: AbortSignal.timeout(300_000) })
            if (!r.ok) throw new Error(`HTTP ${r.status}: ${(await r.text()).slice(0, 300)}`)
          },
          catch: (e) => new RunError({ message: `vLLM ${what.replace(/\?.*/, "")} on ${server}: ${(e as Error).message}` })
        }), { concurrency: "unbounded", discard: true })
    /** The servers, started on first use and awake. */
    const server = Effect.gen(function*() {
      if (started === undefined) {
        started = yield* vllm
        const sharing = resolved.config.compute.vllm.sleep_mode && started.services.some((s) => s.spec.gpus !== null) ? yield* parts.sharing() : []
        sleepers = started.services.filter((s) => s.spec.gpus !== null && sharing.includes(s.spec.name)).map((s) => s.endpoint)
      }
      if (asleep) {
        yield* sleepCall("wake_up")
        asleep = false
        yield* Console.error("vLLM: awake")
      }
      return started
    })
    /** Frees the GPU for the trainer or the classifiers; a no-op on CPU hosts and for configured endpoints. */
    const rest = Effect.gen(function*() {
      if (sleepers.length === 0 || asleep) return
      yield* sleepCall("sleep?level=1")
      asleep = true
      yield* Console.error(`vLLM: ${sleepers.length} replica(s) asleep while the GPU trains or classifies`)
    })
    // Provider `vllm` is the run's server: started (or woken) for the stage; a `base_url` given with it is the way to
    // reach that server (a tunnel, a recording proxy), otherwise the teacher and judge talk to it directly.
    /** `settings` with provider `vllm` bound to the run's server (started if needed); others as they are. */
    const bound = <S extends { readonly provider: string; readonly base_url: string | null }>(settings: S) =>
      isRunServer(settings) ? server.pipe(Effect.map((a) => bindRunServer(settings, a.servers[0]!))) : Effect.succeed(settings)
    /** Every replica beyond the first, for a teacher or judge bound to the run's servers (not one given its own base_url). */
    const replicasFor = (settings: { readonly provider: string; readonly base_url: string | null }) =>
      isRunServer(settings) && settings.base_url === null ? server.pipe(Effect.map((a) => a.servers.slice(1).map((u) => `${u.replace(/\/+$/, "")}/v1`))) : Effect.succeed([])

    const drivers: StageDrivers<Error, RunStore | Compute> = {
      start: Effect.gen(function*() {
        // A killed run's containers (their owner process is gone) go first, even when no stage needs a container now.
        if (computeHosts(resolved.config).length === 0) return
        const removed = yield* parts.removeOrphans(resolved, runDir).pipe(
          Effect.catch((e) => Console.error(`warning: could not look for a killed run's services: ${e.message}`).pipe(Effect.as([])))
        )
        if (removed.length > 0) yield* Console.error(`removed ${removed.length} service(s) left by a killed run: ${removed.join(", ")}`)
      }),
      init: parts.stages.init,
      teacher: (r, request, run) =>
        Effect.gen(function*() {
          const teacher = yield* bound(r.config.teacher)
          return yield* parts.stages.teacher(r, request, run, { teacher, llmReplicas: yield* replicasFor(r.config.teacher) })
        }),
      train: (r, request, run) => rest.pipe(Effect.andThen(parts.stages.train(r, request, run))),
      infer: (r, request, run) => Effect.flatMap(server, (vllm) => parts.stages.infer(r, request, run, { vllm })),
      audit: (r, request, run) =>
        Effect.gen(function*() {
          // Out-of-distribution audits ask the judge when ood.judge is on; DiffAware ones when audit.llm_judge is.
          const judged = (request.task === undefined ? r.config.audit.llm_judge.enabled : r.config.ood.judge) && isRunServer(r.config.judge)
          if (!judged) yield* rest
          const judge = judged ? yield* bound(r.config.judge) : r.config.judge
          const llmReplicas = judged ? yield* replicasFor(r.config.judge) : []
          const audit = (open: ReadonlyArray<ClassifierSpec>) => parts.stages.audit(r, request, run, { judge, classifiers: open, llmReplicas })
          // On a GPU host the classifiers hold device memory: they live for this audit only, so inference wakes vLLM
          // on a free device (the GPU memory plan counts them in the audit phase alone). On CPU they stay for the run.
          return yield* (classifiersOnGpu(r.config)
            ? Effect.scoped(Effect.flatMap(parts.openClassifiers(resolved, runDir), audit))
            : Effect.flatMap(classifiers, audit))
        }),
      evaluate: parts.stages.evaluate
    }
    return drivers
  })

/** Whether the run starts classifiers on GPUs (some host has them: the placement puts the classifiers on one). */
const classifiersOnGpu = (config: ResolvedConfig["config"]) =>
  classifiersToStart(config).length > 0 && computeHosts(config).some((h) => h.gpus === "all" || h.gpus.length > 0)

export interface RunOptions {
  readonly dryRun: boolean
  readonly selection: Selection
}

const exists = fileExists


const doneKeys = (file: string) =>
  Effect.gen(function*() {
    if (!(yield* exists(file))) return new Set<string>()
    return new Set((yield* readRows(file, TeacherOutputKey)).map((r) => r.key))
  })

const chars = (messages: ReadonlyArray<{ readonly content: string }>) => messages.reduce((n, m) => n + m.content.length, 0)

/** What the ledger and the run folder say now: per-stage states, item counts and the teacher work left. */
export const gatherFacts = Effect.fn("RunPipeline.gatherFacts")(function*(resolved: ResolvedConfig, stages: ReadonlyArray<Stage>) {
  const store = yield* RunStore
  const { config } = resolved
  const run = store.handle(config.run.runs_dir, config.run.exp_id)
  const manifest = yield* store.readManifest(run)

  const states: Partial<Record<StageId, StageState>> = {}
  for (const stage of stages) {
    const records: Record<string, StageState["records"][string]> = {}
    const changed: Array<string> = []
    for (const key of stage.ledgerKeys) {
      const r = manifest?.stages[key]
      records[key] = r
      if (r?.status !== "done") continue
      for (const out of r.outputs) {
        const now = yield* store.describeFile(run, out.path)
        if (now === undefined || now.sha256 !== out.sha256) changed.push(out.path)
      }
    }
    states[stage.id] = { records, changedOutputs: changed }
  }

  const initDone = manifest?.stages.init?.status === "done" && (states.init?.changedOutputs.length ?? 0) === 0
  const questions: Record<Split, Array<{ readonly id: string; readonly question: string; readonly gold: Label }>> = { train: [], val: [], test: [] }
  if (initDone) {
    for (const s of splits) {
      for (const r of yield* readRows(run.file(`datasets/${s}.jsonl`), NormalizedItemSchema)) questions[s].push({ id: r.id, question: r.question, gold: r.gold_label })
    }
  } else {
    // The same items `dart init` would write: suite, split, limits.
    const suite = yield* loadSuite(config.datasets.suite_dir, config.datasets.benchmarks)
    const split = splitItems(suite.rows, config.datasets.split)
    for (const s of splits) {
      for (const r of split[s].slice(0, config.datasets.limits[s] ?? undefined)) {
        questions[s].push({ id: r.id, question: r.question, gold: labelOf(r.condition) })
      }
    }
  }
  const items = Object.fromEntries(splits.map((s) => [s, { n: questions[s].length, questionChars: questions[s].reduce((a, q) => a + q.question.length, 0) }])) as Record<Split, SplitFacts>

  const distillDone = yield* doneKeys(run.file("teacher_outputs/distill/outputs.jsonl"))
  const pendingDistill = questions.train.filter((q) => !distillDone.has(q.id))
  const distill: TeacherWork = {
    items: questions.train.length,
    done: questions.train.length - pendingDistill.length,
    requests: pendingDistill.length,
    promptChars: pendingDistill.reduce((a, q) => a + chars(distillMessages(q.question, q.gold)), 0)
  }

  const repairStage = stages.find((s) => s.id === "repair")
  const pool = repairStage?.work.kind === "teacher" && repairStage.work.request.input !== null ? run.file(repairStage.work.request.input) : undefined
  let repair: TeacherWork | null = null
  if (pool !== undefined && (yield* exists(pool))) {
    const rows = yield* readRows(pool, RegressionPoolRow)
    const byKey = new Map(rows.map((r) => [r.sample === undefined ? r.id : `${r.id}#${r.sample}`, r]))
    const done = yield* doneKeys(run.file("teacher_outputs/repair/outputs.jsonl"))
    const pending = [...byKey].filter(([k]) => !done.has(k)).map(([, r]) => r)
    repair = { items: byKey.size, done: byKey.size - pending.length, requests: pending.length, promptChars: pending.reduce((a, r) => a + chars(repairMessages(r.question, r.gold_label)), 0) }
  }

  const facts: PlanFacts = {
    expId: config.run.exp_id,
    runDir: run.dir,
    configPath: resolved.configPath,
    items,
    itemsFrom: initDone ? "run" : "suite",
    distill,
    repair
  }
  return { run, states, facts, testIds: new Set(questions.test.map((q) => q.id)) }
})

/**
 * No test item may reach the repair teacher unless the config reproduces the original's order on purpose
 * (`audit.allow_test_repair`, the same key the teacher stage obeys). Ids are looked up in the run's datasets, never
 * taken from the rows' own `split`; the teacher stage then checks every field (src/audit/RegressionPool.ts).
 */
export const checkPoolSplit = Effect.fn("RunPipeline.checkPoolSplit")(function*(resolved: ResolvedConfig, run: RunHandle, poolRel: string, testIds: ReadonlySet<string>) {
  if (resolved.config.audit.allow_test_repair) return
  const rows = yield* readRows(run.file(poolRel), RegressionPoolRow)
  const leaked = rows.filter((r) => testIds.has(r.id)).map((r) => r.id)
  if (leaked.length > 0) {
    return yield* new RunError({
      message: `${run.file(poolRel)} holds ${leaked.length} test item(s) (${leaked.slice(0, 5).join(", ")}${leaked.length > 5 ? ", …" : ""}); ` +
        "repairing them would train on the test split. Set audit.allow_test_repair to true only to reproduce the original on purpose."
    })
  }
})

const ledgerDone = (run: RunHandle, stage: Stage) =>
  Effect.gen(function*() {
    const store = yield* RunStore
    const m = yield* store.readManifest(run)
    return stage.ledgerKeys.filter((k) => m?.stages[k]?.status !== "done")
  })

/**
 * `dart run`: the plan and the checks first, then every stage the ledger says must run, in order, each
 * through its driver; the headline at the end. `--dry-run` stops after the plan and the checks.
 */
export const runPipeline = <E, R>(resolved: ResolvedConfig, options: RunOptions, drivers: StageDrivers<E, R>, probes: ComputeProbes) =>
  withTracking(resolved, (tracking) => runStages(resolved, options, drivers, probes, tracking))

/** `runPipeline`'s body; `tracking` (docs/tracking.md) hears when the stages start and after each one. */
const runStages = <E, R>(resolved: ResolvedConfig, options: RunOptions, drivers: StageDrivers<E, R>, probes: ComputeProbes, tracking: Tracking) =>
  Effect.gen(function*() {
    const { config } = resolved
    const graph = buildRunGraph(config)
    const { run, states, facts, testIds } = yield* gatherFacts(resolved, graph.stages)
    const planned = yield* Effect.try({
      try: () => planGraph(graph, states, options.selection),
      catch: (e) => new SelectionError({ message: e instanceof GraphSelectionError ? e.message : String(e) })
    })
    const declared = buildRunPlan(config, graph, planned, facts)
    // Services to start: a box that does not answer now is left out when the others can carry its services (the plan
    // shows it idle, with why). When they cannot, the plan stays as declared and the checks name everything missing.
    const live = declared.services.some((s) => s.starts) && probes.fleet !== undefined && config.compute.backend === "docker" ? yield* probes.fleet() : []
    const livePlan = live.some((h) => h.unusable !== undefined) ? buildRunPlan(config, graph, planned, facts, live) : undefined
    const plan = livePlan !== undefined && livePlan.placement.problems.length === 0 ? livePlan : declared
    yield* Console.log(renderRunPlan(plan, config))
    const preflight = yield* runPreflight(config, plan, probes)
    yield* Console.log(renderPreflight(preflight))
    for (const w of graph.warnings) yield* Console.error(`warning: ${w}`)
    if (preflight.missing.length > 0) {
      return yield* new PrerequisiteError({
        message: `${preflight.missing.length} prerequisite(s) missing${options.dryRun ? "" : "; nothing was started"}: ` +
          preflight.missing.map((c) => `${c.name} (${c.detail})`).join("; ")
      })
    }
    if (options.dryRun) {
      yield* Console.log("dry run: nothing started")
      return
    }

    // The chat layout preflight decided is recorded before the first stage: every stage (and a resumed run) reads it.
    if (preflight.templateProbe !== undefined) yield* ensureChatLayout(config, run.dir, preflight.templateProbe)
    if (drivers.start !== undefined) yield* drivers.start
    yield* tracking.start(run)
    for (const { stage, decision } of planned) {
      if (decision.action === "skip" || decision.action === "excluded") continue
      yield* Console.error(`\n== ${stage.id} (${decision.action}: ${decision.reason})\n   ${stage.command}`)
      const w = stage.work
      switch (w.kind) {
        case "init":
          yield* drivers.init(resolved)
          break
        case "teacher":
          if (w.request.task === "repair" && w.request.input !== null) yield* checkPoolSplit(resolved, run, w.request.input, testIds)
          yield* drivers.teacher(resolved, w.request, run)
          break
        case "train":
          yield* drivers.train(resolved, w.request, run)
          break
        case "infer":
          yield* drivers.infer(resolved, w.request, run)
          break
        case "audit":
          yield* drivers.audit(resolved, w.request, run)
          break
        case "evaluate":
          for (const r of w.requests) yield* drivers.evaluate(resolved, r, run)
          break
      }
      const open = yield* ledgerDone(run, stage)
      if (open.length > 0) {
        return yield* new RunError({ message: `stage ${stage.id} returned but the ledger does not show ${open.join(", ")} as done; stopping here` })
      }
      yield* tracking.stageDone
    }

    const evaluate = planned.find((p) => p.stage.id === "evaluate")
    const evaluated = (yield* ledgerDone(run, evaluate!.stage)).length === 0
    if (!evaluated) {
      yield* Console.log(`\nstopped before the evaluation (${options.selection.until !== undefined ? `--until ${options.selection.until}` : "not reached"}); no headline yet`)
      return
    }
    const sources: Array<{ file: string; summary: HeadlineSource }> = []
    for (const rel of [graph.evaluations.main, graph.evaluations.dart]) {
      const file = run.file(rel)
      const text = yield* Effect.tryPromise({ try: () => fs.readFile(file, "utf8"), catch: (e) => new RunError({ message: `${file}: ${(e as Error).message}`, cause: e }) })
      sources.push({ file, summary: yield* Effect.try({ try: () => parseHeadlineSource(file, text), catch: (e) => new RunError({ message: (e as Error).message }) }) })
    }
    const headline = yield* Effect.try({ try: () => buildHeadline(sources, [BASE, DART, DART_H]), catch: (e) => new RunError({ message: (e as Error).message }) })
    const main = run.file(graph.evaluations.main.replace(/summary\.json$/, ""))
    yield* Console.log([
      "",
      renderHeadline(headline),
      "",
      `report: ${main}report.html`,
      `tables: ${main}tables.md, ${main}tables.tex, ${main}*.csv`,
      `summaries: ${sources.map((s) => s.file).join(", ")}`
    ].join("\n"))
    // The whole run on one page (docs/report.md). The run is done either way: a report that cannot be built is a warning.
    yield* writeRunReport(config).pipe(
      Effect.flatMap((file) => Console.log(`run report: ${file}`)),
      Effect.catch((e) => Console.error(`warning: the run report was not written: ${e.message} (\`dart report\` builds it again)`))
    )
  })
