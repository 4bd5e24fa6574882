import { Clock, Data, Duration, Effect, Redacted, Schedule, Schema } from "effect"
import { redact } from "../../common/Redaction.ts"
import { BodyTooLargeError, httpFetch } from "../../llm/HttpFetch.ts"
import { SlurmError, type SlurmJob, type SlurmJobRequest, type SlurmTransport, type SlurmVersion } from "./SlurmTransport.ts"

/**
 * The Slurm transport over slurmrestd (JWT auth): submit, list, cancel, node address and version, in two wire
 * families. v0.0.38 (Slurm 22.05) takes sbatch-like options (`environment` an object, plain integers, GPUs as
 * `gpus_per_node`); v0.0.40 to v0.0.42 (Slurm 23.11 to 25.05, data_parser) take a job_desc_msg (`environment` a list
 * of `K=V`, numbers as `{set, infinite, number}`, GPUs as `tres_per_node: gres/gpu:N`) and report `job_state` as a
 * list (base state, then flags). Every reply is decoded; Slurm's own `errors[]` become the error message.
 */

export type SlurmApiVersion = "v0.0.38" | "v0.0.40" | "v0.0.41" | "v0.0.42"

/** The versions spoken here, best first: discovery takes the first one the cluster offers. */
export const SUPPORTED_API_VERSIONS: ReadonlyArray<SlurmApiVersion> = ["v0.0.42", "v0.0.41", "v0.0.40", "v0.0.38"]

export interface SlurmRestOptions {
  /** slurmrestd's base URL, `http(s)://host:port`. */
  readonly url: string
  /** Sent as X-SLURM-USER-NAME; the jobs run as this user. */
  readonly user: string
  /** Sent as X-SLURM-USER-TOKEN; never in a message, a URL or a log. */
  readonly token: Redacted.Redacted<string>
  /** "auto": the highest supported version the cluster's OpenAPI document lists. */
  readonly apiVersion: "auto" | string
  /** Per request (default 30 s). */
  readonly timeoutMs?: number
}

// ---------------------------------------------------------------------------------------------------------------
// Wire schemas. Replies are untrusted: decoded, extra fields ignored, fields dart does not need left out.

const Str = Schema.optionalKey(Schema.NullOr(Schema.String))
const Num = Schema.optionalKey(Schema.NullOr(Schema.Number))

/**
 * One entry of `errors[]`. The number's key varies in v0.0.38: `error_number` mostly, `error_code` from job submit,
 * `errno` from node lookup (all three measured on 22.05.8).
 */
const SlurmErrorEntry = Schema.Struct({ error: Str, error_number: Num, error_code: Num, errno: Num, description: Str, source: Str })
const numberOf = (e: typeof SlurmErrorEntry.Type) => e.error_number ?? e.error_code ?? e.errno ?? null
const Envelope = Schema.Struct({ errors: Schema.optionalKey(Schema.NullOr(Schema.Array(SlurmErrorEntry))) })

const OpenApiDocument = Schema.Struct({
  paths: Schema.Record(Schema.String, Schema.Unknown),
  servers: Schema.optionalKey(Schema.Array(Schema.Struct({ url: Schema.optionalKey(Schema.String) })))
})

const Release = Schema.Struct({ release: Schema.String })

/** v0.0.38 (22.05): `meta.Slurm` with a capital S. */
const V38 = {
  Ping: Schema.Struct({ meta: Schema.Struct({ Slurm: Release }) }),
  Jobs: Schema.Struct({
    jobs: Schema.Array(Schema.Struct({
      job_id: Schema.Number,
      name: Str,
      comment: Str,
      job_state: Schema.String,
      state_reason: Str,
      nodes: Str,
      user_name: Str
    }))
  }),
  Submitted: Schema.Struct({ job_id: Schema.Number }),
  /** POST /slurm/v0.0.38/job/submit: `script` beside `job` (v0.0.38_job_submission, v0.0.38_job_properties). */
  SubmitBody: Schema.Struct({
    script: Schema.String,
    job: Schema.Struct({
      name: Schema.String,
      comment: Schema.String,
      partition: Schema.optionalKey(Schema.String),
      account: Schema.optionalKey(Schema.String),
      qos: Schema.optionalKey(Schema.String),
      time_limit: Schema.optionalKey(Schema.Int),
      /** [min, max] node count. */
      nodes: Schema.Tuple([Schema.Int, Schema.Int]),
      cpus_per_task: Schema.optionalKey(Schema.Int),
      memory_per_node: Schema.optionalKey(Schema.Int),
      current_working_directory: Schema.String,
      standard_output: Schema.String,
      standard_error: Schema.String,
      environment: Schema.Record(Schema.String, Schema.String),
      /** A count as a string ("1"); "gpu:1" is refused with error 2014 (measured on 22.05). */
      gpus_per_node: Schema.optionalKey(Schema.String),
      requeue: Schema.optionalKey(Schema.Boolean)
    })
  })
}

/** `{set, infinite, number}`: how data_parser (v0.0.40+) writes an integer that may be unset or infinite. */
const NoVal = Schema.Struct({ set: Schema.Boolean, infinite: Schema.Boolean, number: Schema.Int })
const noVal = (number: number) => ({ set: true, infinite: false, number })

const V40Job = Schema.Struct({
  script: Schema.optionalKey(Schema.String),
  name: Schema.String,
  comment: Schema.String,
  partition: Schema.optionalKey(Schema.String),
  account: Schema.optionalKey(Schema.String),
  qos: Schema.optionalKey(Schema.String),
  time_limit: Schema.optionalKey(NoVal),
  nodes: Schema.String,
  cpus_per_task: Schema.optionalKey(Schema.Int),
  memory_per_node: Schema.optionalKey(NoVal),
  current_working_directory: Schema.String,
  standard_output: Schema.String,
  standard_error: Schema.String,
  environment: Schema.Array(Schema.String),
  tres_per_node: Schema.optionalKey(Schema.String),
  requeue: Schema.optionalKey(Schema.Boolean)
})

/** v0.0.40, v0.0.41, v0.0.42 (23.11 to 25.05): `meta.slurm`, `job_state` a list. */
const V40 = {
  Ping: Schema.Struct({ meta: Schema.Struct({ slurm: Release }) }),
  Jobs: Schema.Struct({
    jobs: Schema.Array(Schema.Struct({
      job_id: Schema.Number,
      name: Str,
      comment: Str,
      job_state: Schema.Array(Schema.String),
      state_reason: Str,
      nodes: Str,
      user_name: Str
    }))
  }),
  Submitted: Schema.Struct({ job_id: Schema.Number }),
  /** v0.0.40_job_submit_req; 23.11 insists on the top-level `script`, v0.0.41 deprecates it for `job.script`. */
  SubmitBody: Schema.Struct({ script: Schema.optionalKey(Schema.String), job: V40Job })
}

const Nodes = Schema.Struct({ nodes: Schema.Array(Schema.Struct({ name: Str, address: Str })) })

// ---------------------------------------------------------------------------------------------------------------
// Pure pieces.

/** Flags that, when set, name the state squeue and v0.0.38 report instead of the base state (job_state_string()). */
const STATE_FLAGS = ["COMPLETING", "STAGE_OUT", "CONFIGURING", "EXPEDITING", "RESIZING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "SPECIAL_EXIT", "STOPPED", "REVOKED", "RESV_DEL_HOLD", "SIGNALING"]

/** A v0.0.40+ `job_state` list (`["RUNNING"]`, `["CANCELLED", "COMPLETING"]`) as the one word v0.0.38 gives. */
export const stateOf = (states: ReadonlyArray<string>): string =>
  STATE_FLAGS.find((f) => states.includes(f)) ?? states.find((s) => !STATE_FLAGS.includes(s)) ?? states[0] ?? "UNKNOWN"

const toJob = (j: { job_id: number; name?: string | null; comment?: string | null; state_reason?: string | null; nodes?: string | null; user_name?: string | null }, state: string): SlurmJob => {
  const reason = j.state_reason ?? null
  return {
    id: String(j.job_id),
    name: j.name ?? "",
    comment: j.comment ?? "",
    state,
    reason: reason === null || reason === "" || reason === "None" ? null : reason,
    nodes: j.nodes ?? "",
    user: j.user_name ?? ""
  }
}

/** The versions whose submit path the OpenAPI document lists (paths are absolute since 21.08; `servers` prefixes older ones). */
export const offeredVersions = (doc: { readonly paths: Readonly<Record<string, unknown>>; readonly servers?: ReadonlyArray<{ readonly url?: string }> }): Array<string> => {
  const prefixes = ["", ...(doc.servers ?? []).map((s) => (s.url ?? "").replace(/\/+$/, ""))]
  const found = new Set<string>()
  for (const key of Object.keys(doc.paths)) {
    for (const prefix of prefixes) {
      const m = /^\/slurm\/(v\d+\.\d+\.\d+)\/job\/submit\/?$/.exec(`${prefix}${key}`)
      if (m !== null) found.add(m[1]!)
    }
  }
  const n = (v: string) => v.slice(1).split(".").map(Number)
  return [...found].sort((a, b) => {
    const [x, y] = [n(a), n(b)]
    return (y[0]! - x[0]!) || (y[1]! - x[1]!) || (y[2]! - x[2]!)
  })
}

/** bash's own default, for a job given no variables at all: slurmctld refuses a batch job without an environment. */
const DEFAULT_PATH = "PATH=/usr/local/bin:/usr/bin:/bin"

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/

/** The submit body for `version`. Reads the secrets: call it only while building the request. */
export const submitBody = (version: SlurmApiVersion, r: SlurmJobRequest): typeof V38.SubmitBody.Type | typeof V40.SubmitBody.Type => {
  const env: Record<string, string> = { ...r.env }
  for (const [k, v] of Object.entries(r.secretEnv)) env[k] = Redacted.value(v)
  const optional = {
    ...(r.partition === null ? {} : { partition: r.partition }),
    ...(r.account === null ? {} : { account: r.account }),
    ...(r.qos === null ? {} : { qos: r.qos })
  }
  const io = { current_working_directory: r.workdir, standard_output: r.logFile, standard_error: r.logFile }
  if (version === "v0.0.38") {
    return {
      script: r.script,
      job: {
        name: r.name,
        comment: r.comment,
        ...optional,
        ...(r.timeLimitMinutes === null ? {} : { time_limit: r.timeLimitMinutes }),
        nodes: [1, 1],
        ...(r.cpusPerTask === null ? {} : { cpus_per_task: r.cpusPerTask }),
        ...(r.memoryMb === null ? {} : { memory_per_node: r.memoryMb }),
        ...io,
        environment: Object.keys(env).length === 0 ? { PATH: DEFAULT_PATH.slice(5) } : env,
        ...(r.gpus > 0 ? { gpus_per_node: String(r.gpus) } : {}),
        // A preempted or failed service job must end (and be seen lost), not wait in the queue to start again.
        requeue: false
      }
    }
  }
  const entries = Object.entries(env).map(([k, v]) => `${k}=${v}`)
  const job = {
    name: r.name,
    comment: r.comment,
    ...optional,
    ...(r.timeLimitMinutes === null ? {} : { time_limit: noVal(r.timeLimitMinutes) }),
    nodes: "1",
    ...(r.cpusPerTask === null ? {} : { cpus_per_task: r.cpusPerTask }),
    ...(r.memoryMb === null ? {} : { memory_per_node: noVal(r.memoryMb) }),
    ...io,
    environment: entries.length === 0 ? [DEFAULT_PATH] : entries,
    ...(r.gpus > 0 ? { tres_per_node: `gres/gpu:${r.gpus}` } : {}),
    requeue: false
  }
  return version === "v0.0.40" ? { script: r.script, job } : { job: { script: r.script, ...job } }
}

// ---------------------------------------------------------------------------------------------------------------
// The client.

/** No answer at all (refused, reset, unreachable): the one failure a GET is retried on. */
class Unreachable extends Data.TaggedError("Unreachable")<{ readonly reason: string; readonly cause: unknown }> {}

interface Reply {
  readonly status: number
  readonly text: string
}

const MAX_REPLY_BYTES = 64 * 1024 * 1024

/** Error numbers that mean "this token is not accepted": protocol authentication (1007), auth plugin (6000-6011), REST auth (9008). */
const authErrorNumber = (n: number | null) => n !== null && (n === 1007 || (n >= 6000 && n <= 6011) || n === 9008)
const authText = /authentication (failure|error)|invalid authentication credential|credential expired|rejecting .*token|jwt/i
/**
 * How slurmctld's refusal of a token reaches a client through slurmrestd before 24.11: it drops the connection, so a
 * query says -1 "Unspecified error" and an RPC 5005 "Zero Bytes were transmitted or received" (measured on 22.05.8).
 */
const opaqueErrorNumber = (n: number | null) => n === -1 || n === 5005

const JwtClaims = Schema.Struct({ exp: Schema.optionalKey(Schema.Number), sun: Schema.optionalKey(Schema.String) })

/** What is wrong with the token that can be seen without its key (Slurm's claims: `exp`, `sun`), or null. */
export const tokenProblem = (token: string, user: string, nowMs: number): string | null => {
  const parts = token.split(".")
  if (parts.length !== 3) return "the token is not a JWT"
  let claims: unknown
  try {
    claims = JSON.parse(Buffer.from(parts[1]!, "base64url").toString("utf8"))
  } catch {
    return "the token is not a JWT"
  }
  const r = Schema.decodeUnknownResult(JwtClaims)(claims)
  if (r._tag === "Failure") return "the token is not a JWT"
  if (r.success.exp !== undefined && r.success.exp * 1000 <= nowMs) return `the token expired at ${new Date(r.success.exp * 1000).toISOString()}`
  if (r.success.sun !== undefined && r.success.sun !== user) return `the token is for user ${r.success.sun}`
  return null
}

// eslint-disable-next-line no-control-regex
const oneLine = (s: string, max = 400) => s.replace(/[\u0000-\u001f\u007f]+/g, " ").trim().slice(0, max)

const describe = (e: typeof SlurmErrorEntry.Type) => {
  const number = numberOf(e)
  const head = e.error ?? ""
  const parts = [
    head !== "" && head !== "No error" && head !== "Unspecified error" ? head : "",
    e.description !== undefined && e.description !== null && e.description !== head ? e.description : ""
  ].filter((p) => p !== "")
  const text = parts.length === 0 ? head || "(no message)" : parts.join(": ")
  return `${text}${number === null || number === 0 || number === -1 ? "" : ` (Slurm error ${number})`}${e.source ? ` [${e.source}]` : ""}`
}

const normalizeVersion = (v: string) => (v.startsWith("v") ? v : `v${v}`)

export const slurmRest = (options: SlurmRestOptions): Effect.Effect<SlurmTransport, SlurmError> =>
  Effect.gen(function*() {
    const base = options.url.replace(/\/+$/, "")
    const timeoutMs = options.timeoutMs ?? 30_000
    const user = options.user
    const tokenValue = () => Redacted.value(options.token)
    let via = `slurmrestd ${base}`

    /** Messages pass here: the token (and, for a submit, the secrets) can never come back in one. */
    const scrub = (text: string, secrets: ReadonlyArray<string> = []) => {
      let out = redact(text)
      for (const s of [tokenValue(), ...secrets]) if (s.length >= 8) out = out.split(s).join("[REDACTED]")
      return out
    }
    const fail = (message: string, secrets: ReadonlyArray<string> = []) => new SlurmError({ via, message: scrub(message, secrets) })

    /** `sure`: the answer says so; otherwise only that slurmctld gave up (see opaqueErrorNumber) and no local check explains why. */
    const tokenRejected = (status: number, detail: string, sure: boolean) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => {
        const problem = tokenProblem(tokenValue(), user, now)
        const why = [detail === "" ? "" : oneLine(detail, 200), problem ?? ""].filter((s) => s !== "").join("; ")
        const hint = `set SLURM_JWT to a valid, unexpired token (e.g. \`scontrol token username=${user}\`)`
        return Effect.fail(
          sure || problem !== null
            ? fail(`slurmrestd at ${base} rejected the token for user ${user} (HTTP ${status}${why === "" ? "" : `: ${why}`}): ${hint}`)
            : fail(
              `slurmrestd at ${base} could not use the token for user ${user} (HTTP ${status}: ${why}): ${hint}; ` +
                "Slurm before 24.11 gives no reason, so if the token is fresh check that slurmctld answers (scontrol ping)"
            )
        )
      })

    const send = (method: "GET" | "POST" | "DELETE", path: string, body?: string): Effect.Effect<Reply, Unreachable | SlurmError> =>
      Effect.tryPromise({
        try: async (signal) => {
          const response = await httpFetch(`${base}${path}`, {
            method,
            headers: {
              accept: "application/json",
              "x-slurm-user-name": user,
              "x-slurm-user-token": tokenValue(),
              ...(body === undefined ? {} : { "content-type": "application/json" })
            },
            ...(body === undefined ? {} : { body }),
            signal: AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]),
            maxBodyBytes: MAX_REPLY_BYTES
          })
          return { status: response.status, text: await response.text() }
        },
        catch: (e): Unreachable | SlurmError => {
          if (e instanceof BodyTooLargeError) return fail(`${method} ${path}: reply over ${MAX_REPLY_BYTES} bytes`)
          const err = e as Error & { code?: string; cause?: { code?: string } }
          if (err.name === "TimeoutError" || err.name === "AbortError") return fail(`${method} ${path}: no reply from slurmrestd at ${base} within ${Duration.format(Duration.millis(timeoutMs))}`)
          const code = err.code ?? err.cause?.code
          const reason = code === "ECONNREFUSED" ? "connection refused (is slurmrestd running there?)" : oneLine(`${code !== undefined && !err.message.includes(code) ? `${code} ` : ""}${err.message}`)
          return new Unreachable({ reason, cause: e })
        }
      })

    const unreachable = (method: string, path: string) => (e: Unreachable | SlurmError) =>
      e._tag === "Unreachable" ? new SlurmError({ via, message: scrub(`${method} ${path}: cannot reach slurmrestd at ${base}: ${e.reason}`), cause: e.cause }) : e

    // Only reads are repeated: a submit that reached slurmctld before the connection broke must not run twice.
    const retrySchedule = Schedule.exponential(Duration.millis(100)).pipe(
      Schedule.jittered,
      Schedule.modifyDelay(({ duration }) => Effect.succeed(Duration.min(duration, Duration.seconds(2))))
    )
    const get = (path: string) =>
      send("GET", path).pipe(
        Effect.retry({ schedule: retrySchedule, times: 3, while: (e) => e._tag === "Unreachable" }),
        Effect.mapError(unreachable("GET", path))
      )

    /** The reply's JSON, or Slurm's errors / the HTTP status as a SlurmError. */
    const check = (what: string, reply: Reply, secrets: ReadonlyArray<string> = [], allow: (n: number) => boolean = () => false): Effect.Effect<unknown, SlurmError> => {
      let json: unknown = undefined
      try {
        json = JSON.parse(reply.text)
      } catch {
        // Plain text: slurmrestd's own refusals ("Authentication failure", "Unable find requested URL…").
      }
      const envelope = json === undefined ? undefined : Schema.decodeUnknownResult(Envelope)(json)
      const errors = envelope?._tag === "Success" ? (envelope.success.errors ?? []).filter((e) => !allow(numberOf(e) ?? 0)) : []
      const text = errors.length > 0 ? errors.map(describe).join("; ") : json === undefined ? oneLine(reply.text) : ""
      const auth = reply.status === 401 || reply.status === 403 || reply.status === 511 ||
        errors.some((e) => authErrorNumber(numberOf(e)) || authText.test(`${e.error ?? ""} ${e.description ?? ""}`)) ||
        (json === undefined && authText.test(reply.text))
      if (auth) return tokenRejected(reply.status, text, true)
      if (reply.status >= 500 && errors.length > 0 && errors.every((e) => opaqueErrorNumber(numberOf(e)))) return tokenRejected(reply.status, text, false)
      if (errors.length > 0) return Effect.fail(fail(`${what}: Slurm refused (HTTP ${reply.status}): ${text}`, secrets))
      if (reply.status < 200 || reply.status >= 300) return Effect.fail(fail(`${what}: HTTP ${reply.status} from slurmrestd at ${base}: ${text || "(no body)"}`, secrets))
      if (json === undefined) return Effect.fail(fail(`${what}: the reply is not JSON: ${oneLine(reply.text, 120)}`, secrets))
      return Effect.succeed(json)
    }

    const decode = <S extends Schema.Codec<unknown, unknown, never, never>>(what: string, schema: S) => (json: unknown) => {
      const r = Schema.decodeUnknownResult(schema)(json)
      return r._tag === "Success"
        ? Effect.succeed(r.success as S["Type"])
        : Effect.fail(fail(`${what}: unexpected reply from slurmrestd at ${base}: ${oneLine(String(r.failure), 600)}`))
    }

    const fetchJson = <S extends Schema.Codec<unknown, unknown, never, never>>(path: string, schema: S) =>
      get(path).pipe(Effect.flatMap((reply) => check(`GET ${path}`, reply)), Effect.flatMap(decode(`GET ${path}`, schema)))

    // -- Which version.
    let version: SlurmApiVersion
    if (options.apiVersion === "auto") {
      const first = yield* get("/openapi/v3")
      // slurmrestd before 20.11 served its document at /openapi only.
      const reply = first.status === 404 ? yield* get("/openapi") : first
      const json = yield* check("GET /openapi/v3", reply)
      const doc = yield* decode("GET /openapi/v3", OpenApiDocument)(json)
      const offered = offeredVersions(doc)
      const pick = SUPPORTED_API_VERSIONS.find((v) => offered.includes(v))
      if (pick === undefined) {
        return yield* fail(
          `slurmrestd at ${base} offers ${offered.length === 0 ? "no /slurm/vX/job/submit API" : offered.join(", ")}; dart speaks ${[...SUPPORTED_API_VERSIONS].reverse().join(", ")}: ` +
            "load one of them in slurmrestd (-s openapi/v0.0.38 on 22.05, -d data_parser/v0.0.42 or similar on 23.11 and later) or set compute.slurm.api_version"
        )
      }
      version = pick
    } else {
      const asked = normalizeVersion(options.apiVersion)
      const known = SUPPORTED_API_VERSIONS.find((v) => v === asked)
      if (known === undefined) return yield* fail(`api_version ${options.apiVersion} is not one dart speaks (${[...SUPPORTED_API_VERSIONS].reverse().join(", ")}, or auto)`)
      version = known
    }
    via = `slurmrestd ${base} (${version})`
    const v38 = version === "v0.0.38"
    const api = `/slurm/${version}`

    const versionOf: SlurmTransport["version"] = Effect.fn("SlurmRest.version")(function*() {
      const release = v38
        ? (yield* fetchJson(`${api}/ping`, V38.Ping)).meta.Slurm.release
        : (yield* fetchJson(`${api}/ping`, V40.Ping)).meta.slurm.release
      return { slurm: release, api: version } satisfies SlurmVersion
    })

    const submit: SlurmTransport["submit"] = Effect.fn("SlurmRest.submit")(function*(request: SlurmJobRequest) {
      const what = `submit of job ${request.name}`
      const names = [...Object.keys(request.env), ...Object.keys(request.secretEnv)]
      const bad = names.find((k) => !ENV_NAME.test(k))
      if (bad !== undefined) return yield* fail(`${what}: ${JSON.stringify(bad)} is not a valid environment variable name`)
      const path = `${api}/job/submit`
      const secrets = Object.values(request.secretEnv).map((s) => Redacted.value(s))
      // The body (with the secrets in it) is made here and lives only as long as this request.
      const body = yield* Effect.suspend(() => {
        const raw = submitBody(version, request)
        const valid = Schema.decodeUnknownResult(v38 ? V38.SubmitBody : V40.SubmitBody)(raw)
        return valid._tag === "Success"
          ? Effect.succeed(JSON.stringify(raw))
          : Effect.fail(fail(`${what}: invalid request: ${oneLine(String(valid.failure), 300)}`, secrets))
      })
      const reply = yield* send("POST", path, body).pipe(Effect.mapError(unreachable("POST", path)))
      const json = yield* check(what, reply, secrets)
      const submitted = yield* decode(what, v38 ? V38.Submitted : V40.Submitted)(json)
      return String(submitted.job_id)
    })

    const jobs: SlurmTransport["jobs"] = Effect.fn("SlurmRest.jobs")(function*() {
      if (v38) return (yield* fetchJson(`${api}/jobs`, V38.Jobs)).jobs.map((j) => toJob(j, j.job_state))
      return (yield* fetchJson(`${api}/jobs`, V40.Jobs)).jobs.map((j) => toJob(j, stateOf(j.job_state)))
    })

    const cancel: SlurmTransport["cancel"] = Effect.fn("SlurmRest.cancel")(function*(id: string) {
      if (!/^\d+$/.test(id)) return yield* fail(`cancel: ${JSON.stringify(id)} is not a job id`)
      const path = `${api}/job/${id}`
      const reply = yield* send("DELETE", path).pipe(Effect.mapError(unreachable("DELETE", path)))
      // A job that already ended is cancelled enough (ESLURM_ALREADY_DONE, 2021).
      yield* check(`cancel of job ${id}`, reply, [], (n) => n === 2021)
    })

    const nodeAddress: SlurmTransport["nodeAddress"] = Effect.fn("SlurmRest.nodeAddress")(function*(node: string) {
      const path = `${api}/node/${encodeURIComponent(node)}`
      const reply = yield* fetchJson(path, Nodes)
      const found = reply.nodes.find((n) => n.name === node) ?? reply.nodes[0]
      const address = found?.address ?? ""
      if (address === "") return yield* fail(`GET ${path}: slurmrestd at ${base} reports no address for node ${node}`)
      return address
    })

    return { via, user: options.user, version: versionOf, submit, jobs, cancel, nodeAddress } satisfies SlurmTransport
  })
