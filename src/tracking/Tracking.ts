import { Cause, Clock, Console, Duration, Effect, Exit, Option, Redacted, Schema } from "effect"
import { sha256Hex } from "../common/Hashing.ts"
import { redact, registerSecret } from "../common/Redaction.ts"
import type { ResolvedConfig } from "../config/ConfigLoader.ts"
import type { ExperimentConfig } from "../config/ExperimentConfig.ts"
import { apiKeyFromEnv } from "../config/Secrets.ts"
import { toolVersion } from "../common/Version.ts"
import { writeFileAtomic } from "../runs/AtomicFile.ts"
import type { RunHandle } from "../runs/RunStore.ts"
import { BATCH_LIMITS, makeMlflowClient, MlflowError, proxiedArtifactRoot, type RunState, type RunStatus } from "./MlflowClient.ts"
import { pointsToLog, readRunFile, readTrackedRun } from "./TrackedRun.ts"
import { CONFIG_ARTIFACT, flattenParams } from "./TrackingParams.ts"

/**
 * `dart run`'s experiment tracking (docs/tracking.md): one MLflow run per DART run, continued by every resumed or
 * repeated `dart run`. After each stage the run folder is compared with what the server holds and only the
 * difference is sent, so a process killed mid-logging leaves nothing to log twice. Tracking never costs the run its
 * work: a server that fails is a warning naming it and the reason, and the stages go on.
 */

/** What the stage loop calls. */
export interface Tracking {
  /** The plan and the checks passed and stages are about to run: tracking is on from here. */
  readonly start: (run: RunHandle) => Effect.Effect<void>
  /** After each stage: logs what it added. */
  readonly stageDone: Effect.Effect<void>
}

export const noTracking: Tracking = { start: () => Effect.void, stageDone: Effect.void }

export interface TrackingOptions {
  /** Per request. */
  readonly timeout: Duration.Duration
  readonly retries: number
  readonly retryBase: Duration.Duration
  /** Failed syncs in a row after which this process stops trying (the next `dart run` catches up). */
  readonly maxFailures: number
}

export const defaultTrackingOptions: TrackingOptions = {
  timeout: Duration.seconds(20),
  retries: 3,
  retryBase: Duration.millis(500),
  maxFailures: 3
}

export const TRACKING_FILE = "tracking.json"

/** A larger run file is named in a warning instead of uploaded. */
const MAX_ARTIFACT_BYTES = 256 * 1024 * 1024

/** `runs/{EXP_ID}/tracking.json`: per tracking server, the MLflow run this DART run logs to and what was uploaded. */
export const TrackingRecord = Schema.Struct({
  experiment: Schema.String,
  experiment_id: Schema.String,
  run_id: Schema.String,
  /** Names this run folder on the server (tag `dart.run_key`): exp id + the manifest's creation time. */
  run_key: Schema.String,
  created_at: Schema.String,
  /** The last status this tool set. */
  status: Schema.String,
  updated_at: Schema.String,
  /** Artifact path → sha256 of the file last uploaded there. */
  artifacts: Schema.Record(Schema.String, Schema.String)
})
export type TrackingRecord = typeof TrackingRecord.Type

export const TrackingFile = Schema.Struct({
  schema_version: Schema.Literal(1),
  mlflow: Schema.Record(Schema.String, TrackingRecord)
})
export type TrackingFile = typeof TrackingFile.Type

/** The manifest fields tracking reads (src/runs/Manifest.ts); the rest may change without concerning it. */
const ManifestFacts = Schema.Struct({
  exp_id: Schema.String,
  created_at: Schema.String,
  tool_version: Schema.optionalKey(Schema.String),
  git_commit: Schema.optionalKey(Schema.NullOr(Schema.String))
})

class TrackingFileError extends Schema.TaggedError<TrackingFileError>()("TrackingFileError", { message: Schema.String }) {}

const emptyFile: TrackingFile = { schema_version: 1, mlflow: {} }

const nowIso = Clock.currentTimeMillis.pipe(Effect.map((ms) => new Date(ms).toISOString()))

const readJson = <S extends Schema.Codec<unknown, unknown, never, never>>(run: RunHandle, rel: string, schema: S) =>
  readRunFile(run.dir, rel).pipe(
    Effect.mapError((e) => new TrackingFileError({ message: e.message })),
    Effect.flatMap((bytes) => {
      if (bytes === undefined) return Effect.succeed(undefined)
      try {
        const r = Schema.decodeUnknownResult(schema)(JSON.parse(new TextDecoder().decode(bytes)))
        return r._tag === "Success" ? Effect.succeed(r.success as S["Type"]) : Effect.fail(new TrackingFileError({ message: `${run.file(rel)}: ${String(r.failure)}` }))
      } catch (e) {
        return Effect.fail(new TrackingFileError({ message: `${run.file(rel)}: not JSON (${(e as Error).message})` }))
      }
    })
  )

const chunks = <A>(items: ReadonlyArray<A>, size: number): Array<ReadonlyArray<A>> => {
  const out: Array<ReadonlyArray<A>> = []
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size))
  return out
}

const experimentName = (config: ExperimentConfig) => config.tracking.mlflow.experiment ?? config.run.exp_id

/** Where the MLflow UI shows the run. */
const runPage = (uri: string, experimentId: string, runId: string) => `${uri.replace(/\/+$/, "")}/#/experiments/${experimentId}/runs/${runId}`

const clientFor = (config: ExperimentConfig, options: TrackingOptions) =>
  apiKeyFromEnv(config.tracking.mlflow.token_env).pipe(
    Effect.map((token) => {
      // The token is scrubbed from anything written or printed, whatever its variable is called.
      if (Option.isSome(token)) registerSecret(Redacted.value(token.value))
      return makeMlflowClient({ uri: config.tracking.mlflow.uri!, token: Option.getOrUndefined(token), timeout: options.timeout, retries: options.retries, retryBase: options.retryBase })
    })
  )

/**
 * Runs `body` (the stage loop of `dart run`) with tracking when `tracking.mlflow.uri` is set: the MLflow run is
 * created or continued at `start`, brought up to date after each stage, and at the end, whatever ended it, marked
 * FINISHED, FAILED or KILLED (Ctrl-C: only the status, at once).
 */
export const withTracking = <A, E, R>(resolved: ResolvedConfig, body: (tracking: Tracking) => Effect.Effect<A, E, R>, options: TrackingOptions = defaultTrackingOptions) =>
  Effect.suspend(() => {
    if (resolved.config.tracking.mlflow.uri === null) return body(noTracking)
    return Effect.gen(function*() {
      const session = yield* openSession(resolved, options)
      return yield* body(session.tracking).pipe(Effect.onExit(session.end))
    })
  })

const openSession = (resolved: ResolvedConfig, options: TrackingOptions) =>
  Effect.gen(function*() {
    const { config } = resolved
    const client = yield* clientFor(config, options)
    const uri = client.server
    let run: RunHandle | undefined
    let current: { readonly record: TrackingRecord; readonly artifactRoot: string | undefined } | undefined
    let paramsLogged = false
    let failures = 0
    let disabled = false
    const warned = new Set<string>()

    const warnOnce = (key: string, line: string) => (warned.has(key) ? Effect.void : Effect.sync(() => warned.add(key)).pipe(Effect.andThen(Console.error(line))))

    const saveRecord = (record: TrackingRecord) =>
      Effect.gen(function*() {
        const file = (yield* readJson(run!, TRACKING_FILE, TrackingFile).pipe(Effect.orElseSucceed(() => undefined))) ?? emptyFile
        const next: TrackingFile = { schema_version: 1, mlflow: { ...file.mlflow, [uri]: record } }
        yield* writeFileAtomic(run!.file(TRACKING_FILE), `${JSON.stringify(next, null, 2)}\n`, { root: run!.dir }).pipe(
          Effect.mapError((e) => new TrackingFileError({ message: e.message }))
        )
      })

    const ensureExperiment = Effect.gen(function*() {
      const name = experimentName(config)
      const found = yield* client.getExperimentByName(name)
      if (Option.isSome(found)) {
        if (found.value.lifecycle_stage === "deleted") {
          return yield* new TrackingFileError({ message: `experiment "${name}" is deleted on the server: restore it there, or set tracking.mlflow.experiment to another name` })
        }
        return found.value.experiment_id
      }
      return yield* client.createExperiment(name).pipe(
        // Another process made it in between: take that one.
        Effect.catchIf((e: MlflowError) => e.code === "RESOURCE_ALREADY_EXISTS", () =>
          client.getExperimentByName(name).pipe(Effect.flatMap(Option.match({
            onNone: () => Effect.fail(new TrackingFileError({ message: `experiment "${name}" exists but cannot be read` })),
            onSome: (e) => Effect.succeed(e.experiment_id)
          }))))
      )
    })

    /** The run recorded in tracking.json, else the run tagged with this folder's key (a process killed before it wrote tracking.json), else a new one. */
    const ensureRun = Effect.gen(function*() {
      const manifest = yield* readJson(run!, "manifest.json", ManifestFacts)
      if (manifest === undefined) return undefined // `dart init` has not made the run folder yet
      const runKey = sha256Hex(`${manifest.exp_id}\n${manifest.created_at}`).slice(0, 16)
      const file = yield* readJson(run!, TRACKING_FILE, TrackingFile).pipe(
        Effect.catch((e) => Console.error(`warning: ${e.message}; looking the MLflow run up by its tag instead`).pipe(Effect.as(undefined)))
      )
      const recorded = file?.mlflow[uri]
      const now = yield* nowIso
      let state: RunState | undefined
      let record: TrackingRecord | undefined
      if (recorded !== undefined && recorded.run_key === runKey) {
        const found = yield* client.getRun(recorded.run_id)
        if (Option.isSome(found) && found.value.info.lifecycle_stage !== "deleted") {
          state = found.value
          record = recorded
        } else {
          yield* Console.error(`warning: tracking server ${uri}: MLflow run ${recorded.run_id} of ${TRACKING_FILE} is ${Option.isSome(found) ? "deleted" : "gone"}; starting a new one`)
        }
      }
      if (state === undefined) {
        const experimentId = yield* ensureExperiment
        const tagged = yield* client.searchRuns(experimentId, `tags.\`dart.run_key\` = '${runKey}'`)
        const startTime = yield* Clock.currentTimeMillis
        state = tagged[0] ?? (yield* client.createRun({
          experimentId,
          runName: config.run.exp_id,
          startTime,
          tags: [
            { key: "dart.exp_id", value: config.run.exp_id },
            { key: "dart.run_key", value: runKey },
            { key: "mlflow.source.name", value: "dart run" }
          ]
        }))
        record = { experiment: experimentName(config), experiment_id: state.info.experiment_id, run_id: state.info.run_id, run_key: runKey, created_at: now, status: "RUNNING", updated_at: now, artifacts: {} }
        yield* saveRecord(record)
        yield* Console.error(`tracking: MLflow run ${state.info.run_id}${tagged[0] !== undefined ? " (found by its tag)" : ""} at ${runPage(uri, state.info.experiment_id, state.info.run_id)}`)
      } else {
        yield* Console.error(`tracking: continuing MLflow run ${state.info.run_id} at ${runPage(uri, state.info.experiment_id, state.info.run_id)}`)
      }
      if (state.info.status !== "RUNNING") yield* client.updateRun(state.info.run_id, "RUNNING", undefined)
      const artifactRoot = proxiedArtifactRoot(state.info.artifact_uri ?? "")
      return { state, record: record!, artifactRoot, manifest }
    })

    /** Brings the MLflow run up to date with the run folder; `status` also ends it. */
    const syncOnce = (status: RunStatus | undefined) =>
      Effect.gen(function*() {
        let state: RunState
        let manifest: typeof ManifestFacts.Type | undefined
        if (current === undefined) {
          const made = yield* ensureRun
          if (made === undefined) return
          current = { record: made.record, artifactRoot: made.artifactRoot }
          state = made.state
          manifest = made.manifest
        } else {
          const found = yield* client.getRun(current.record.run_id)
          if (Option.isNone(found)) {
            const gone = current.record.run_id
            current = undefined
            return yield* new TrackingFileError({ message: `MLflow run ${gone} is gone from the server; the next sync starts a new one` })
          }
          state = found.value
        }
        const cur = current
        const runId = cur.record.run_id

        if (!paramsLogged) {
          const params = flattenParams(resolved.json)
          const changed = params.filter((p) => state.params.has(p.key) && state.params.get(p.key) !== p.value)
          if (changed.length > 0) {
            yield* warnOnce("params", `warning: tracking server ${uri}: ${changed.length} config value(s) differ from the params this MLflow run logged before ` +
              `(${changed.slice(0, 3).map((p) => p.key).join(", ")}${changed.length > 3 ? ", …" : ""}); MLflow keeps a param's first value, the artifact config/config.json has this run's`)
          }
          const tags = [
            { key: "dart.config_hash", value: resolved.hash },
            { key: "dart.tool_version", value: manifest?.tool_version ?? toolVersion },
            ...(manifest?.git_commit ? [{ key: "dart.git_commit", value: manifest.git_commit }] : [])
          ]
          const fresh = params.filter((p) => !state.params.has(p.key))
          yield* client.logBatch(runId, { tags })
          for (const batch of chunks(fresh, BATCH_LIMITS.params)) yield* client.logBatch(runId, { params: batch })
          paramsLogged = true
        }

        const tracked = yield* readTrackedRun(run!.dir).pipe(Effect.mapError((e) => new TrackingFileError({ message: e.message })))
        for (const p of tracked.problems) yield* warnOnce(`problem:${p}`, `warning: tracking: ${p}; not logged`)
        const points = pointsToLog(tracked.metrics, state.latest)
        for (const batch of chunks(points, BATCH_LIMITS.metrics)) {
          const timestamp = yield* Clock.currentTimeMillis
          yield* client.logBatch(runId, { metrics: batch.map((p) => ({ ...p, timestamp })) })
        }

        let record = cur.record
        if (cur.artifactRoot === undefined) {
          yield* warnOnce("artifacts", `warning: tracking server ${uri}: run ${runId} keeps its artifacts at ${state.info.artifact_uri ?? "(none)"}, ` +
            "which the server does not proxy (start it with --serve-artifacts); artifacts are not uploaded")
        } else {
          // The config this `dart run` resolved (the run's snapshot may predate an operational change), then the run's files.
          const uploads: Array<{ readonly artifact: string; readonly bytes: Effect.Effect<Uint8Array | undefined> }> = [
            { artifact: CONFIG_ARTIFACT, bytes: Effect.succeed(new TextEncoder().encode(redact(`${JSON.stringify(resolved.json, null, 2)}\n`))) },
            ...tracked.artifacts.map((a) => ({
              artifact: a.artifact,
              bytes: readRunFile(run!.dir, a.file).pipe(Effect.catch((e) => warnOnce(`read:${a.file}`, `warning: tracking: ${e.message}; not uploaded`).pipe(Effect.as(undefined))))
            }))
          ]
          for (const a of uploads) {
            const bytes = yield* a.bytes
            if (bytes === undefined) continue
            if (bytes.byteLength > MAX_ARTIFACT_BYTES) {
              yield* warnOnce(`size:${a.artifact}`, `warning: tracking: ${a.artifact} is ${bytes.byteLength} bytes, over ${MAX_ARTIFACT_BYTES}; not uploaded`)
              continue
            }
            const sha = sha256Hex(bytes)
            if (record.artifacts[a.artifact] === sha) continue
            yield* client.uploadArtifact(cur.artifactRoot, a.artifact, bytes)
            record = { ...record, artifacts: { ...record.artifacts, [a.artifact]: sha }, updated_at: yield* nowIso }
            current = { ...cur, record }
            yield* saveRecord(record)
          }
        }

        if (status !== undefined) {
          yield* client.updateRun(runId, status, yield* Clock.currentTimeMillis)
          record = { ...record, status, updated_at: yield* nowIso }
          current = { ...cur, record }
          yield* saveRecord(record)
          yield* Console.error(`tracking: MLflow run ${runId} ${status}`)
        }
      })

    const sync = (status: RunStatus | undefined) =>
      Effect.suspend(() => {
        if (run === undefined || disabled) return Effect.void
        return syncOnce(status).pipe(
          Effect.asVoid,
          Effect.tap(() => Effect.sync(() => void (failures = 0))),
          Effect.catchCause((cause) => {
            if (Cause.hasInterruptsOnly(cause)) return Effect.interrupt
            failures++
            disabled = failures >= options.maxFailures
            const e = Cause.squash(cause)
            const reason = e instanceof MlflowError || e instanceof TrackingFileError ? e.message : String((e as Error)?.message ?? e)
            return Console.error(`warning: tracking server ${uri}: ${reason}; the run goes on` +
              (disabled ? ` (tracking is off for the rest of this process after ${failures} failed attempts; the next \`dart run\` logs what is missing)` : ""))
          })
        )
      })

    /** Ctrl-C: the status only, one quick attempt. */
    const markKilled = Effect.suspend(() => {
      if (current === undefined || disabled) return Effect.void
      const runId = current.record.run_id
      return clientFor(config, { ...options, timeout: Duration.seconds(5), retries: 0 }).pipe(
        Effect.flatMap((c) => Clock.currentTimeMillis.pipe(Effect.flatMap((t) => c.updateRun(runId, "KILLED", t)))),
        Effect.andThen(Console.error(`tracking: MLflow run ${runId} KILLED`)),
        Effect.catch((e) => Console.error(`warning: tracking server ${uri}: ${e.message}; MLflow run ${runId} stays RUNNING until the next \`dart run\``))
      )
    })

    const tracking: Tracking = {
      start: (r) => Effect.suspend(() => {
        run = r
        return sync(undefined)
      }),
      stageDone: Effect.suspend(() => sync(undefined))
    }

    const end = <A, E>(exit: Exit.Exit<A, E>): Effect.Effect<void> => {
      if (Exit.isSuccess(exit)) return sync("FINISHED")
      if (Exit.hasInterrupts(exit) && !Exit.hasFails(exit)) return markKilled
      return sync("FAILED")
    }
    return { tracking, end }
  })

/**
 * For `dart run`'s preflight: whether the tracking server answers the experiment lookup with this token. A problem
 * is a line to show (tracking never stops a run), undefined when tracking is off or the server answers.
 */
export const checkTrackingServer = (config: ExperimentConfig, options: TrackingOptions = { ...defaultTrackingOptions, retries: 0, timeout: Duration.seconds(10) }) =>
  Effect.gen(function*() {
    if (config.tracking.mlflow.uri === null) return undefined
    const client = yield* clientFor(config, options)
    return yield* client.getExperimentByName(experimentName(config)).pipe(
      Effect.as(undefined),
      Effect.catch((e) => Effect.succeed(`tracking server ${client.server}: ${e.message}${e.status === 401 || e.status === 403 ? ` (is ${config.tracking.mlflow.token_env} set to a valid token?)` : ""}`))
    )
  })
