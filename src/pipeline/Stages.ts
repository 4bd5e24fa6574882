import { Effect } from "effect"
import type { ResolvedConfig } from "../config/ConfigLoader.ts"
import type { ExperimentConfig } from "../config/ExperimentConfig.ts"
import type { RunHandle, RunStore } from "../runs/RunStore.ts"
import type { Compute } from "../compute/Compute.ts"
import { ClassifierClient, type ClassifierSpec } from "../serving/ClassifierClient.ts"
import { LlmClient } from "../llm/LlmClient.ts"
import { type AuditRequest, checkAuditRequest, runAudit } from "./AuditStage.ts"
import { EvaluateError, type EvaluateRequest } from "./EvaluateStage.ts"
import { AuditError } from "./AuditStage.ts"
import { firstRowTask } from "../tasks/FirstRowTask.ts"
import { taskNamed } from "../tasks/Tasks.ts"
import { type InferRequest, runInfer } from "./InferStage.ts"
import { runInit } from "./InitStage.ts"
import type {
  AuditRequest as AuditRunRequest,
  EvaluateRunRequest,
  InferRequest as InferRunRequest,
  TeacherRunRequest,
  TrainRunRequest
} from "./RunGraph.ts"
import { runTeacher, type TeacherRequest } from "./TeacherStage.ts"
import { runTrain } from "./TrainStage.ts"
import { type VllmAccess, withClassifiers, withVllmServers } from "./VllmServers.ts"

/**
 * Each stage wired once: its clients, and the servers it needs when nobody hands it any (the configured endpoints,
 * or services started for the stage and removed after it). Its command and `dart run` both call these.
 */

/** Steps 2 and 6; `teacher` is the settings the requests go out with (provider `vllm` bound to the run's server). */
export const teacherStage = (resolved: ResolvedConfig, request: Omit<TeacherRequest, "client" | "settings">, teacher = resolved.config.teacher, replicas: ReadonlyArray<string> = []) =>
  runTeacher(resolved, { ...request, settings: teacher, client: LlmClient.layer(teacher, { replicas }) })

/** Steps 3 and 7. */
export const trainStage = runTrain

/** Steps 4 and 8 on the given servers. */
export const inferOn = (resolved: ResolvedConfig, request: Omit<InferRequest, "servers">, access: VllmAccess) =>
  runInfer(resolved, { ...request, servers: access.servers }).pipe(Effect.provide(access.layer))

/** Steps 4 and 8 on the configured vLLM servers, or replicas started for this stage. */
export const inferStage = (resolved: ResolvedConfig, request: Omit<InferRequest, "servers">, runDir: string) =>
  withVllmServers(resolved, runDir, (servers) => runInfer(resolved, { ...request, servers }))

/** The task of a prediction file (its first row's `task`; dart when it has none) and its module. */
const taskOfFile = <E>(file: string, error: (message: string) => E) =>
  firstRowTask(file).pipe(Effect.flatMap((name) => taskNamed(name).pipe(Effect.mapError((e) => error(`${file}:1: ${e.message}`)))))

/**
 * Step 5. Its arguments are checked before any service starts; `classifiers` are the open ones when the caller has
 * them (`dart run` keeps them across audits), else the stage opens its own. Predictions of a task with its own audit
 * (continuation, open_ended) go to that audit: every model's answers scored, no A/B pairing.
 */
export const auditStage = (
  resolved: ResolvedConfig,
  request: Omit<AuditRequest, "judgeClient" | "classifiers" | "judge" | "aName" | "bName"> & { readonly aName: string | undefined; readonly bName: string | undefined },
  runDir: string,
  open: { readonly judge?: ExperimentConfig["judge"]; readonly classifiers?: ReadonlyArray<ClassifierSpec>; readonly llmReplicas?: ReadonlyArray<string> } = {}
) =>
  Effect.gen(function*() {
    const task = yield* taskOfFile(request.pairedInput, (message) => new AuditError({ message }))
    const withClassifierSet = <A, E, R>(use: (classifiers: ReadonlyArray<ClassifierSpec>) => Effect.Effect<A, E, R>) =>
      open.classifiers !== undefined ? use(open.classifiers) : withClassifiers(resolved, runDir, use)
    if (task.audit !== undefined) {
      const own = task.audit
      return yield* withClassifierSet((classifiers) =>
        own(resolved, { input: request.pairedInput, runName: request.runName }, { classifiers, judge: open.judge ?? resolved.config.judge, judgeReplicas: open.llmReplicas ?? [] }))
    }
    if (request.aName === undefined || request.bName === undefined) {
      return yield* new AuditError({ message: `${request.pairedInput}: ${task.name} predictions are audited B against A: give --a-name and --b-name` })
    }
    const paired = { ...request, aName: request.aName, bName: request.bName }
    yield* checkAuditRequest(resolved.config, paired)
    return yield* withClassifierSet((classifiers) =>
      runAudit(resolved, {
        ...paired,
        classifiers,
        judge: open.judge ?? resolved.config.judge,
        judgeClient: (settings) => LlmClient.layer(settings, { replicas: open.llmReplicas ?? [] })
      }).pipe(Effect.provide(ClassifierClient.layer)))
  })

/** Step 9, by the predictions' task (dart and mc: the DiffAware evaluation; continuation, open_ended: their own). */
export const evaluateStage = (resolved: ResolvedConfig, request: EvaluateRequest) =>
  taskOfFile(request.predFile, (message) => new EvaluateError({ message })).pipe(Effect.flatMap((task) => task.evaluate(resolved, request)))

/** Servers and settings `dart run` already holds open for a stage; a stage given none opens its own. */
export interface OpenServices {
  readonly teacher?: ExperimentConfig["teacher"]
  readonly judge?: ExperimentConfig["judge"]
  readonly classifiers?: ReadonlyArray<ClassifierSpec>
  readonly vllm?: VllmAccess
  /** The run's further vLLM replicas (`…/v1`) a teacher or judge of provider `vllm` spreads its requests over. */
  readonly llmReplicas?: ReadonlyArray<string>
}

/**
 * Each stage's driver in `dart run`, from the stage graph's requests (paths relative to the run directory). Drivers
 * are idempotent through the ledger: called on a finished stage they redo only what their inputs changed.
 */
export interface StageDrivers<E, R> {
  /** Before the first stage (not on a dry run): housekeeping such as removing a killed run's services. */
  readonly start?: Effect.Effect<void, E, R>
  readonly init: (resolved: ResolvedConfig) => Effect.Effect<unknown, E, R>
  readonly teacher: (resolved: ResolvedConfig, request: TeacherRunRequest, run: RunHandle, open?: OpenServices) => Effect.Effect<unknown, E, R>
  readonly train: (resolved: ResolvedConfig, request: TrainRunRequest, run: RunHandle) => Effect.Effect<unknown, E, R>
  readonly infer: (resolved: ResolvedConfig, request: InferRunRequest, run: RunHandle, open?: OpenServices) => Effect.Effect<unknown, E, R>
  readonly audit: (resolved: ResolvedConfig, request: AuditRunRequest, run: RunHandle, open?: OpenServices) => Effect.Effect<unknown, E, R>
  readonly evaluate: (resolved: ResolvedConfig, request: EvaluateRunRequest, run: RunHandle) => Effect.Effect<unknown, E, R>
}

const inferRequest = (resolved: ResolvedConfig, request: InferRunRequest, run: RunHandle): Omit<InferRequest, "servers"> => ({
  runName: request.runName,
  arms: request.models.map((m) => ({ name: m.id, adapter: m.adapter === null ? null : run.file(m.adapter) })),
  task: request.task ?? "dart",
  policy: request.policy,
  split: request.split,
  limit: undefined,
  benchmarks: undefined,
  constrained: resolved.config.inference.constrained
})

/** The stage graph's requests through the stages above; each stage opens what it is not handed. */
export const stageDrivers: StageDrivers<Error, RunStore | Compute> = {
  init: (resolved) => runInit(resolved),
  teacher: (resolved, request, run, open = {}) =>
    teacherStage(resolved, { task: request.task, input: request.input === null ? undefined : run.file(request.input), dryRun: false }, open.teacher, open.llmReplicas),
  train: (resolved, request, run) =>
    trainStage(resolved, {
      stage: request.stage,
      adapterName: request.adapterName,
      recipe: request.recipe,
      initAdapter: request.initAdapter === null ? undefined : run.file(request.initAdapter),
      weights: request.weights,
      epochs: request.epochs ?? undefined
    }),
  infer: (resolved, request, run, open = {}) =>
    open.vllm !== undefined
      ? inferOn(resolved, inferRequest(resolved, request, run), open.vllm)
      : inferStage(resolved, inferRequest(resolved, request, run), run.dir),
  audit: (resolved, request, run, open = {}) =>
    auditStage(resolved, {
      pairedInput: run.file(request.pairedInput),
      aName: request.task === undefined ? request.aName : undefined,
      bName: request.task === undefined ? request.bName : undefined,
      runName: request.runName,
      judgeMode: resolved.config.audit.llm_judge.enabled ? resolved.config.audit.llm_judge.mode : null
    }, run.dir, open),
  evaluate: (resolved, request, run) =>
    evaluateStage(resolved, {
      predFile: run.file(request.predFile),
      runName: request.runName,
      aName: request.aName,
      bName: request.bName,
      audits: request.audits.map((a) => run.file(a))
    })
}
