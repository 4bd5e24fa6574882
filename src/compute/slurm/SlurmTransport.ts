import { Schema, type Effect, type Redacted } from "effect"

/**
 * How the Slurm adapter talks to the cluster: slurmrestd (SlurmRest.ts, JWT) or the command line (SlurmCli.ts:
 * sbatch/squeue/scancel/scontrol here or over one SSH connection). Both give the same typed view of jobs.
 */

export class SlurmError extends Schema.TaggedError<SlurmError>()("SlurmError", {
  /** The transport, as the user configured it ("slurmrestd http://127.0.0.1:6820 (v0.0.38)", "sbatch over ssh://…"). */
  via: Schema.String,
  message: Schema.String,
  cause: Schema.optionalKey(Schema.Defect())
}) {}

/** One batch job to submit. */
export interface SlurmJobRequest {
  /** Job name (`dart-{exp}-{service}`). */
  readonly name: string
  /** Carries exp id, role, service, spec hash and owner: how a later process finds the job. */
  readonly comment: string
  readonly partition: string | null
  readonly account: string | null
  readonly qos: string | null
  /** Minutes; null = the partition's default. */
  readonly timeLimitMinutes: number | null
  /** GPUs on the (single) node: `--gres=gpu:N`; 0 = none asked. */
  readonly gpus: number
  readonly cpusPerTask: number | null
  readonly memoryMb: number | null
  /** Working directory of the job (on the shared folder). */
  readonly workdir: string
  /** stdout and stderr of the job, one file (on the shared folder). */
  readonly logFile: string
  /** The batch script, `#!/bin/bash` first; holds no secret. */
  readonly script: string
  /** Environment of the job beyond what the script sets (no secret). */
  readonly env: Readonly<Record<string, string>>
  /** Secrets: only in the REST body's environment or the SSH channel's stdin, never argv, a file or a log. */
  readonly secretEnv: Readonly<Record<string, Redacted.Redacted<string>>>
}

/** A job as the cluster reports it. */
export interface SlurmJob {
  readonly id: string
  readonly name: string
  readonly comment: string
  /** Base state: PENDING, RUNNING, COMPLETING, COMPLETED, CANCELLED, FAILED, TIMEOUT, PREEMPTED, NODE_FAIL, OUT_OF_MEMORY, … */
  readonly state: string
  /** Why it pends or ended (`Resources`, `PartitionDown`, `BadConstraints`…); null when none. */
  readonly reason: string | null
  /** Node list (`node01`), empty while pending. */
  readonly nodes: string
  readonly user: string
}

export interface SlurmVersion {
  /** e.g. "22.05.8". */
  readonly slurm: string
  /** The REST API version spoken ("v0.0.38"), or "cli". */
  readonly api: string
}

export interface SlurmTransport {
  /** For messages: how the cluster is reached. */
  readonly via: string
  /** The cluster user jobs run as (the JWT's user, or the account the commands run under). */
  readonly user: string
  readonly version: () => Effect.Effect<SlurmVersion, SlurmError>
  /** Submits; the job id. A refused submission (bad partition, unknown account…) fails with Slurm's own message. */
  readonly submit: (request: SlurmJobRequest) => Effect.Effect<string, SlurmError>
  /** The jobs of the cluster that are not finished long ago (whatever squeue / GET jobs lists). */
  readonly jobs: () => Effect.Effect<ReadonlyArray<SlurmJob>, SlurmError>
  readonly cancel: (id: string) => Effect.Effect<void, SlurmError>
  /** The address of a node (NodeAddr), to reach services there. */
  readonly nodeAddress: (node: string) => Effect.Effect<string, SlurmError>
}

/** Terminal states: the job no longer runs. */
export const finished = (state: string) => !["PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "REQUEUED", "RESIZING", "SIGNALING", "STAGE_OUT"].includes(state)
