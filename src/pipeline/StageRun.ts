import { Effect, Runtime, Schema, type Scope } from "effect"
import * as path from "node:path"
import { type ConfigChange, describeChanges, diffConfigs } from "../config/ConfigDiff.ts"
import type { ExperimentConfig } from "../config/ExperimentConfig.ts"
import type { OutputRecord } from "../runs/Manifest.ts"
import { acquireStageLock, type RunLockedError } from "../runs/RunLock.ts"
import { type InputChangedError, type NoSuchRunError, type RunHandle, RunStore } from "../runs/RunStore.ts"
import type { RunStoreError } from "../runs/RunStoreError.ts"

const namePattern = /^[A-Za-z0-9][A-Za-z0-9._-]*$/

/** `--run-name`: one folder under the run, so a single safe path segment. */
export const RunName = Schema.String.check(Schema.isPattern(namePattern), Schema.isMaxLength(128)).pipe(Schema.brand("RunName"))
export type RunName = typeof RunName.Type

/** `--adapter-name`: a folder under `adapters/`, also the name the adapter is served as. */
export const AdapterName = Schema.String.check(Schema.isPattern(namePattern), Schema.isMaxLength(64)).pipe(Schema.brand("AdapterName"))
export type AdapterName = typeof AdapterName.Type

/** A stage argument that cannot be used as given (a name, a pair of models); nothing was started. */
export class StageArgumentError extends Schema.TaggedError<StageArgumentError>()("StageArgumentError", { message: Schema.String }) {}

/** A spending cap was reached: finished work is kept, the stage resumes on the next run (exit code 3). */
export class BudgetStop extends Schema.TaggedError<BudgetStop>()("BudgetStop", { message: Schema.String }) {
  override readonly [Runtime.errorExitCode] = 3
}

/** Some items failed for good this run; finished ones are kept and a rerun retries exactly the rest (exit code 4). */
export class StageIncomplete extends Schema.TaggedError<StageIncomplete>()("StageIncomplete", { message: Schema.String }) {
  override readonly [Runtime.errorExitCode] = 4
}

/** A stage's recorded identity (its settings, its prompts) differs from what this invocation would use. */
export class StageIdentityError extends Schema.TaggedError<StageIdentityError>()("StageIdentityError", {
  message: Schema.String,
  /** The dotted keys that differ. */
  keys: Schema.Array(Schema.String)
}) {}

const shown = (value: string) => (value.length > 80 ? `${JSON.stringify(value.slice(0, 80))}… (${value.length} characters)` : JSON.stringify(value))

/** A name checked against its schema; the error names the flag and what is allowed. */
export const checkName = <S extends typeof RunName | typeof AdapterName>(schema: S, flag: string, value: string): Effect.Effect<S["Type"], StageArgumentError> => {
  const decoded = Schema.decodeUnknownResult(schema)(value)
  return decoded._tag === "Success"
    ? Effect.succeed(decoded.success)
    : Effect.fail(new StageArgumentError({ message: `${flag} ${shown(value)}: use letters, digits, '.', '_' or '-' (starting with a letter or digit)` }))
}

/** A file a stage reads: checked against what the stage that wrote it recorded in the ledger. */
export interface StageInput {
  /** Relative to the run folder, or a path the user gave (absolute or relative to the working directory). */
  readonly path: string
  /** `true` when `path` is relative to the run folder; a user's path is checked only when it lies inside the run. */
  readonly inRun?: boolean
  /** A missing ledger record is an error (else the file is taken as given). */
  readonly required: boolean
  /** What writes it, for the hint: "`dart init`". */
  readonly producer: string
}

export interface StageSpec {
  readonly config: ExperimentConfig
  /** The ledger key: `audit/R`, `train/DART`, `teacher/distill`. */
  readonly stage: string
  /** One writer per run and stage (default); off for read-only work such as a dry run. */
  readonly lock?: boolean
  /** `dart init` makes the run, so it is the one stage that does not require it to exist. */
  readonly createsRun?: boolean
  readonly inputs?: ReadonlyArray<StageInput>
}

/** What a stage body gets: its run, and the ledger steps in the order every stage takes them. */
export interface StageRun {
  readonly run: RunHandle
  readonly stage: string
  /** Whether the ledger shows this stage done with these inputs and its outputs unchanged. */
  readonly upToDate: (inputsHash: string) => Effect.Effect<boolean, RunStoreError>
  /**
   * Records the stage as running with these inputs, then runs `body`; a failure or Ctrl-C (SIGINT/SIGTERM) is
   * recorded in the ledger as `failed` / `interrupted`, so `dart status` never shows a dead stage as running.
   */
  readonly begin: <A, E, R>(inputsHash: string, body: Effect.Effect<A, E, R>) => Effect.Effect<A, E | RunStoreError, R>
  readonly finish: (outcome: {
    readonly status: "done" | "failed" | "stopped"
    readonly outputs: ReadonlyArray<OutputRecord>
    readonly error?: string
  }) => Effect.Effect<void, RunStoreError>
}

export type StageOpenError = NoSuchRunError | RunLockedError | RunStoreError | InputChangedError

/**
 * The lifecycle every stage shares, before its own work: the run must exist, the stage's lock is held for the
 * caller's scope, and every input is what its producer recorded.
 */
export const openStage = Effect.fn("StageRun.open")(function*(spec: StageSpec): Effect.fn.Return<StageRun, StageOpenError, RunStore | Scope.Scope> {
  const store = yield* RunStore
  const run = spec.createsRun === true
    ? store.handle(spec.config.run.runs_dir, spec.config.run.exp_id)
    : yield* store.requireRun(spec.config.run.runs_dir, spec.config.run.exp_id)
  if (spec.lock !== false) yield* acquireStageLock(run.dir, spec.stage)
  for (const input of spec.inputs ?? []) {
    const relative = input.inRun === true ? input.path : path.relative(run.dir, path.resolve(input.path))
    if (relative.startsWith("..") || path.isAbsolute(relative)) continue
    yield* store.verifyInput(run, relative, { required: input.required, producer: input.producer })
  }
  return {
    run,
    stage: spec.stage,
    upToDate: (inputsHash) => store.isUpToDate(run, spec.stage, inputsHash),
    begin: (inputsHash, body) => store.stageStarted(run, spec.stage, inputsHash).pipe(Effect.andThen(store.guard(run, spec.stage, body))),
    finish: (outcome) => store.stageFinished(run, spec.stage, outcome)
  } satisfies StageRun
})

/** The top-level keys among `changes`, in order. */
const topKeys = (changes: ReadonlyArray<ConfigChange>) => [...new Set(changes.map((c) => c.key.split(/[.[]/)[0]!))]

/**
 * A resumed stage continues only with the identity it was started with (its rows were made under it): the recorded
 * and current identities are compared key by key, and a difference names every key that changed.
 */
export const checkIdentity = (options: {
  /** The file the identity was recorded in, for the message. */
  readonly file: string
  /** `run "pair"`, `this audit`. */
  readonly what: string
  readonly recorded: unknown
  readonly current: unknown
  readonly advice: string
}): Effect.Effect<void, StageIdentityError> => {
  if (options.recorded === undefined) return Effect.void
  const changes = diffConfigs(options.recorded, options.current)
  if (changes.length === 0) return Effect.void
  const keys = topKeys(changes)
  return Effect.fail(new StageIdentityError({
    message: `${options.file}: ${options.what} was made with different ${keys.join(", ")}; ${options.advice}\n${describeChanges(changes)}`,
    keys: changes.map((c) => c.key)
  }))
}

/**
 * An audit's `settings.json` (relative to the run) against the settings it runs with now: a rerun continues only with
 * the same ones, since its rows were made under them. Returns the recorded text (undefined on the first run).
 */
export const checkAuditSettings = (run: RunHandle, file: string, settings: unknown) =>
  Effect.gen(function*() {
    const store = yield* RunStore
    const previous = yield* store.readText(run, file)
    yield* checkIdentity({
      file: run.file(file),
      what: "this audit",
      recorded: previous === undefined ? undefined : JSON.parse(previous),
      current: settings,
      advice: "use another --run-name, or delete that folder to start over"
    })
    return previous
  })
