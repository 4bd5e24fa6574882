/**
 * Task: what one kind of question asks a model, how its answers are stored, and how they are measured. `dart infer`,
 * `dart audit` and `dart evaluate` are written against this interface only; each task is one module in this folder and
 * one line of the registry (Tasks.ts) (docs/tasks.md).
 */
import type { Effect } from "effect"
import type { ResolvedConfig } from "../config/ConfigLoader.ts"
import type { ExperimentConfig } from "../config/ExperimentConfig.ts"
import type { PredictionOutput } from "../contracts/PredictionRow.ts"
import type { ChatMessage } from "../domain/ChatMessage.ts"
import type { RunStore } from "../runs/RunStore.ts"
import type { ClassifierSpec } from "../serving/ClassifierClient.ts"

/** Which items a `dart infer` pass asks: a split of the benchmark (dart, mc), external suites, a query set. */
export interface TaskSelection {
  readonly split: "train" | "val" | "test"
  /** External suites by name (continuation); undefined = every suite the run exported. */
  readonly suites: ReadonlyArray<string> | undefined
  /** The first N items (per suite for continuation). */
  readonly limit: number | undefined
  readonly benchmarks: ReadonlyArray<string> | undefined
}

/** A file the task reads and who makes it: relative to the run directory (checked against the ledger), or outside the run. */
export interface TaskInput {
  readonly path: string
  readonly producer: string
  /** false: a path outside the run folder (a user's own file), read as it is. */
  readonly inRun?: boolean
}

/** Sampling without the seed (the run's seed is added per sample). */
export interface TaskSampling {
  readonly temperature: number
  readonly top_p: number
  readonly top_k: number | null
  readonly max_tokens: number
}

/** A selection or a file the task cannot use; the message names the flag, file or line. */
export class TaskInputError extends Error {}

/** What `dart evaluate` hands a task: its own predictions, the audits given with them, and the names to compare. */
export interface TaskEvaluateRequest {
  readonly predFile: string
  readonly runName: string
  readonly aName: string
  readonly bName: string | undefined
  readonly audits: ReadonlyArray<string>
  /** Replace an earlier evaluation of the same --run-name made from different inputs. */
  readonly force?: boolean
  /** Count rows whose id is not an item of this run (predictions made elsewhere); refused otherwise. */
  readonly allowForeignRows?: boolean
}

/** What `dart audit` hands a task that scores its own answers (no pairing of A and B: every model is scored). */
export interface TaskAuditRequest {
  readonly input: string
  readonly runName: string
}

export interface Task<I = any> {
  /** The row's `task` field and `dart infer --task`. */
  readonly name: string
  readonly description: string
  /** Recorded in the inference identity: a prompt change is a new version. */
  readonly promptVersion: string
  /** Run files the items come from (checked before anything starts). */
  readonly inputs: (selection: TaskSelection) => ReadonlyArray<TaskInput>
  /** What the inference identity records as `split`. */
  readonly scope: (selection: TaskSelection) => string
  /** Said before the pass starts (e.g. answers of test items must never feed a repair). */
  readonly warnings?: (selection: TaskSelection) => ReadonlyArray<string>
  /** The items, in the order rows are written. */
  readonly readItems: (file: (relative: string) => string, selection: TaskSelection, config: ExperimentConfig) => Effect.Effect<ReadonlyArray<I>, Error>
  readonly id: (item: I) => string
  /** The text the identity hashes per item (a changed prompt is a changed item). */
  readonly text: (item: I) => string
  readonly defaultPolicy: (config: ExperimentConfig) => string
  readonly systemText: (policy: string, policies: Readonly<Record<string, string>>) => string | { readonly error: string }
  readonly messages: (item: I, system: string) => Array<ChatMessage>
  readonly sampling: (inference: ExperimentConfig["inference"], config: ExperimentConfig) => TaskSampling
  /** vLLM `structured_outputs` for `--constrained`; null = the task is never constrained. */
  readonly constraint: Record<string, unknown> | null
  /** What is kept of an answer's text (dart and mc cut at the first triple newline, docs/protocol.md §3). */
  readonly keep: (text: string) => string
  /** One prediction row (a JSONL line with its newline): every model's answer to one item and sample. */
  readonly rowLine: (item: I, at: { readonly policy: string; readonly sample: number }, outputs: Readonly<Record<string, PredictionOutput>>) => string
  /** `dart evaluate` on this task's predictions. */
  readonly evaluate: (resolved: ResolvedConfig, request: TaskEvaluateRequest) => Effect.Effect<unknown, Error, RunStore>
  /**
   * `dart audit` on this task's predictions when the task scores every answer on its own (no A/B pairing); absent for
   * dart, whose audit compares B against A and feeds repair.
   */
  readonly audit?: (resolved: ResolvedConfig, request: TaskAuditRequest, open: TaskAuditServices) => Effect.Effect<unknown, Error, RunStore>
}

/** The servers an audit uses, handed over by the stage (classifiers already open; the judge's client factory). */
export interface TaskAuditServices {
  readonly classifiers: ReadonlyArray<ClassifierSpec>
  readonly judge: ExperimentConfig["judge"]
  readonly judgeReplicas: ReadonlyArray<string>
}

export const findTask = (tasks: ReadonlyArray<Task>, name: string): Task | undefined => tasks.find((t) => t.name === name)
