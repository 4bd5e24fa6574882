import { Duration, Effect, Option, Redacted, Schedule, Schema } from "effect"
import { redact } from "../common/Redaction.ts"
import { BodyTooLargeError, httpFetch } from "../llm/HttpFetch.ts"

/**
 * The MLflow tracking server's REST API (`/api/2.0/mlflow/…`) and its proxied artifact API
 * (`/api/2.0/mlflow-artifacts/artifacts/…`, a server started with `--serve-artifacts`): the calls `dart run`'s
 * tracking makes, each reply decoded with a schema. Transient failures (no connection, a timeout, HTTP 408/429/5xx)
 * are retried on a capped, jittered exponential schedule; the rest fail at once with the server's own reason.
 */

export interface MlflowServer {
  /** Base URL (http(s), no credentials); the API lies under `{uri}/api/2.0/`. */
  readonly uri: string
  /** Sent as `Authorization: Bearer …`; never in a message, a log or a file. */
  readonly token: Redacted.Redacted<string> | undefined
  readonly timeout: Duration.Duration
  /** Retries of a transient failure (0: one attempt). */
  readonly retries: number
  /** First retry delay; doubled each time, jittered, at most 5 s. */
  readonly retryBase: Duration.Duration
}

export class MlflowError extends Schema.TaggedError<MlflowError>()("MlflowError", {
  /** The server, as configured. */
  server: Schema.String,
  message: Schema.String,
  /** The server's `error_code` (`RESOURCE_DOES_NOT_EXIST`, …) when it sent one. */
  code: Schema.NullOr(Schema.String),
  status: Schema.NullOr(Schema.Number),
  retryable: Schema.Boolean,
  cause: Schema.optionalKey(Schema.Defect())
}) {}

// int64 fields arrive as JSON numbers from MLflow's server, as strings from some proxies; NaN metrics as "NaN".
const Numberish = Schema.Union([Schema.Number, Schema.String])
const toNumber = (v: number | string | undefined): number => (v === undefined ? 0 : typeof v === "number" ? v : Number(v))

const ErrorReply = Schema.Struct({ error_code: Schema.optionalKey(Schema.String), message: Schema.optionalKey(Schema.String) })
const Experiment = Schema.Struct({ experiment_id: Schema.String, name: Schema.optionalKey(Schema.String), lifecycle_stage: Schema.optionalKey(Schema.String) })
const GetExperimentReply = Schema.Struct({ experiment: Experiment })
const CreateExperimentReply = Schema.Struct({ experiment_id: Schema.String })
const RunInfo = Schema.Struct({
  run_id: Schema.String,
  experiment_id: Schema.String,
  status: Schema.optionalKey(Schema.String),
  artifact_uri: Schema.optionalKey(Schema.String),
  lifecycle_stage: Schema.optionalKey(Schema.String)
})
const KeyValue = Schema.Struct({ key: Schema.String, value: Schema.optionalKey(Schema.String) })
const Run = Schema.Struct({
  info: RunInfo,
  data: Schema.optionalKey(Schema.Struct({
    metrics: Schema.optionalKey(Schema.Array(Schema.Struct({ key: Schema.String, value: Numberish, step: Schema.optionalKey(Numberish) }))),
    params: Schema.optionalKey(Schema.Array(KeyValue)),
    tags: Schema.optionalKey(Schema.Array(KeyValue))
  }))
})
const RunReply = Schema.Struct({ run: Run })
const SearchRunsReply = Schema.Struct({ runs: Schema.optionalKey(Schema.Array(Run)) })
const Empty = Schema.Struct({})

export type RunInfo = typeof RunInfo.Type

/** A run as the server holds it: its info, params, tags, and the latest point of each metric. */
export interface RunState {
  readonly info: RunInfo
  readonly params: ReadonlyMap<string, string>
  readonly tags: ReadonlyMap<string, string>
  readonly latest: ReadonlyMap<string, { readonly step: number; readonly value: number }>
}

const toRunState = (run: typeof Run.Type): RunState => ({
  info: run.info,
  params: new Map((run.data?.params ?? []).map((p) => [p.key, p.value ?? ""])),
  tags: new Map((run.data?.tags ?? []).map((t) => [t.key, t.value ?? ""])),
  latest: new Map((run.data?.metrics ?? []).map((m) => [m.key, { step: toNumber(m.step), value: toNumber(m.value) }]))
})

export type RunStatus = "RUNNING" | "FINISHED" | "FAILED" | "KILLED"

export interface Batch {
  readonly metrics?: ReadonlyArray<{ readonly key: string; readonly value: number; readonly step: number; readonly timestamp: number }>
  readonly params?: ReadonlyArray<{ readonly key: string; readonly value: string }>
  readonly tags?: ReadonlyArray<{ readonly key: string; readonly value: string }>
}

/** MLflow's limits for one `runs/log-batch` request. */
export const BATCH_LIMITS = { metrics: 1000, params: 100, tags: 100, total: 1000 } as const

export interface MlflowClient {
  readonly server: string
  /** The experiment of that name (deleted ones too: `lifecycle_stage` says), or none. */
  getExperimentByName(name: string): Effect.Effect<Option.Option<typeof Experiment.Type>, MlflowError>
  createExperiment(name: string): Effect.Effect<string, MlflowError>
  createRun(request: { readonly experimentId: string; readonly runName: string; readonly startTime: number; readonly tags: ReadonlyArray<{ readonly key: string; readonly value: string }> }): Effect.Effect<RunState, MlflowError>
  /** The run, or none when the server has no run of that id. */
  getRun(runId: string): Effect.Effect<Option.Option<RunState>, MlflowError>
  /** Runs of the experiment matching an MLflow search filter (`tags.\`dart.run_key\` = '…'`). */
  searchRuns(experimentId: string, filter: string): Effect.Effect<ReadonlyArray<RunState>, MlflowError>
  logBatch(runId: string, batch: Batch): Effect.Effect<void, MlflowError>
  updateRun(runId: string, status: RunStatus, endTime: number | undefined): Effect.Effect<void, MlflowError>
  /** PUT one file under the run's artifact root (its `mlflow-artifacts:` path). */
  uploadArtifact(artifactRoot: string, artifactPath: string, data: Uint8Array): Effect.Effect<void, MlflowError>
}

const MAX_REPLY_BYTES = 64 * 1024 * 1024

// eslint-disable-next-line no-control-regex
const oneLine = (s: string, max = 300) => redact(s).replace(/[\u0000-\u001f\u007f]+/g, " ").trim().slice(0, max)

const retryableStatus = (status: number) => status === 408 || status === 429 || status >= 500

const encodePath = (p: string) => p.split("/").filter((s) => s !== "").map(encodeURIComponent).join("/")

/**
 * The path under `/api/2.0/mlflow-artifacts/artifacts/` of a run's artifact root: `mlflow-artifacts:/1/abc/artifacts`
 * (or `mlflow-artifacts://host:port/1/abc/artifacts`) gives `1/abc/artifacts`. Any other scheme is a store the
 * tracking server does not proxy: undefined.
 */
export const proxiedArtifactRoot = (artifactUri: string): string | undefined => {
  const m = /^mlflow-artifacts:(?:\/\/[^/]*)?(\/.*)?$/.exec(artifactUri)
  if (m === null) return undefined
  return (m[1] ?? "").replace(/^\/+|\/+$/g, "")
}

export const makeMlflowClient = (config: MlflowServer): MlflowClient => {
  const base = config.uri.replace(/\/+$/, "")
  const server = config.uri

  const fail = (what: string, message: string, extra: { code?: string | null; status?: number | null; retryable: boolean; cause?: unknown }) =>
    new MlflowError({ server, message: `${what}: ${message}`, code: extra.code ?? null, status: extra.status ?? null, retryable: extra.retryable, ...(extra.cause === undefined ? {} : { cause: extra.cause }) })

  const once = (what: string, url: string, init: { method: string; headers: Record<string, string>; body?: string | Uint8Array }) =>
    Effect.tryPromise({
      try: async () => {
        const headers: Record<string, string> = { ...init.headers }
        if (config.token !== undefined) headers.authorization = `Bearer ${Redacted.value(config.token)}`
        const response = await httpFetch(url, {
          method: init.method,
          headers,
          ...(init.body === undefined ? {} : { body: init.body as NonNullable<RequestInit["body"]> }),
          signal: AbortSignal.timeout(Duration.toMillis(config.timeout)),
          maxBodyBytes: MAX_REPLY_BYTES
        })
        return { status: response.status, text: await response.text() }
      },
      catch: (e) => {
        if (e instanceof BodyTooLargeError) return fail(what, `reply over ${MAX_REPLY_BYTES} bytes`, { retryable: false, cause: e })
        const err = e as Error & { code?: string }
        const timedOut = err.name === "TimeoutError" || err.name === "AbortError"
        const reason = timedOut ? `no reply within ${Duration.format(config.timeout)}` : oneLine(`${err.code !== undefined && !err.message.includes(err.code) ? `${err.code} ` : ""}${err.message}`)
        return fail(what, reason, { retryable: true, cause: e })
      }
    }).pipe(
      Effect.flatMap(({ status, text }) => {
        if (status >= 200 && status < 300) return Effect.succeed(text)
        let code: string | null = null
        let message = text
        try {
          const r = Schema.decodeUnknownResult(ErrorReply)(JSON.parse(text))
          if (r._tag === "Success") {
            code = r.success.error_code ?? null
            message = r.success.message ?? text
          }
        } catch {
          // Not JSON (a proxy's HTML page): its start is the reason.
        }
        return Effect.fail(fail(what, `HTTP ${status}${code === null ? "" : ` ${code}`}: ${oneLine(message) || "(no body)"}`, { code, status, retryable: retryableStatus(status) }))
      })
    )

  const retrying = <A>(effect: Effect.Effect<A, MlflowError>) =>
    effect.pipe(Effect.retry({
      schedule: Schedule.exponential(config.retryBase).pipe(
        Schedule.jittered,
        Schedule.modifyDelay(({ duration }) => Effect.succeed(Duration.min(duration, Duration.seconds(5))))
      ),
      times: config.retries,
      while: (e) => e.retryable
    }))

  const decode = <S extends Schema.Codec<unknown, unknown, never, never>>(what: string, schema: S, text: string) => {
    let json: unknown = {}
    if (text.trim() !== "") {
      try {
        json = JSON.parse(text)
      } catch {
        return Effect.fail(fail(what, `the reply is not JSON: ${oneLine(text, 120)}`, { retryable: false }))
      }
    }
    const r = Schema.decodeUnknownResult(schema)(json)
    return r._tag === "Success"
      ? Effect.succeed(r.success as S["Type"])
      : Effect.fail(fail(what, `unexpected reply: ${oneLine(String(r.failure), 300)}`, { retryable: false }))
  }

  const api = <S extends Schema.Codec<unknown, unknown, never, never>>(method: "GET" | "POST", endpoint: string, schema: S, payload: Record<string, unknown>) => {
    const what = `${method} /api/2.0/mlflow/${endpoint}`
    const url = method === "GET"
      ? `${base}/api/2.0/mlflow/${endpoint}?${new URLSearchParams(Object.entries(payload).map(([k, v]): [string, string] => [k, String(v)])).toString()}`
      : `${base}/api/2.0/mlflow/${endpoint}`
    const init = method === "GET"
      ? { method, headers: { accept: "application/json" } }
      : { method, headers: { accept: "application/json", "content-type": "application/json" }, body: JSON.stringify(payload) }
    return retrying(once(what, url, init)).pipe(Effect.flatMap((text) => decode(what, schema, text)))
  }

  const notFound = <A>(effect: Effect.Effect<A, MlflowError>) =>
    effect.pipe(
      Effect.map(Option.some),
      Effect.catchIf((e: MlflowError) => e.code === "RESOURCE_DOES_NOT_EXIST", () => Effect.succeed(Option.none<A>()))
    )

  return {
    server,
    getExperimentByName: (name) =>
      notFound(api("GET", "experiments/get-by-name", GetExperimentReply, { experiment_name: name }).pipe(Effect.map((r) => r.experiment))),
    createExperiment: (name) => api("POST", "experiments/create", CreateExperimentReply, { name }).pipe(Effect.map((r) => r.experiment_id)),
    createRun: (r) =>
      api("POST", "runs/create", RunReply, { experiment_id: r.experimentId, run_name: r.runName, start_time: r.startTime, tags: r.tags }).pipe(
        Effect.map((reply) => toRunState(reply.run))
      ),
    getRun: (runId) => notFound(api("GET", "runs/get", RunReply, { run_id: runId }).pipe(Effect.map((r) => toRunState(r.run)))),
    searchRuns: (experimentId, filter) =>
      api("POST", "runs/search", SearchRunsReply, { experiment_ids: [experimentId], filter, max_results: 10, run_view_type: "ACTIVE_ONLY" }).pipe(
        Effect.map((r) => (r.runs ?? []).map(toRunState))
      ),
    logBatch: (runId, batch) =>
      api("POST", "runs/log-batch", Empty, { run_id: runId, metrics: batch.metrics ?? [], params: batch.params ?? [], tags: batch.tags ?? [] }).pipe(Effect.asVoid),
    updateRun: (runId, status, endTime) =>
      api("POST", "runs/update", Empty, { run_id: runId, status, ...(endTime === undefined ? {} : { end_time: endTime }) }).pipe(Effect.asVoid),
    uploadArtifact: (artifactRoot, artifactPath, data) => {
      const rel = `${encodePath(artifactRoot)}/${encodePath(artifactPath)}`
      const what = `PUT /api/2.0/mlflow-artifacts/artifacts/${rel}`
      return retrying(once(what, `${base}/api/2.0/mlflow-artifacts/artifacts/${rel}`, {
        method: "PUT",
        headers: { "content-type": "application/octet-stream", "content-length": String(data.byteLength) },
        body: data
      })).pipe(Effect.asVoid)
    }
  }
}
