import { Clock, Console, Context, Duration, Effect, Layer, Option, Redacted, Schedule, Schema } from "effect"
import OpenAI from "openai"
import { escapeControls } from "../common/Redaction.ts"
import { apiKeyFromEnv, defaultKeyVariable } from "../config/Secrets.ts"
import type { ExperimentConfig } from "../config/ExperimentConfig.ts"
import { makeAdaptiveLimiter } from "./AdaptiveLimiter.ts"
import { BodyTooLargeError, httpFetch } from "./HttpFetch.ts"
import type { ChatMessage } from "../domain/ChatMessage.ts"

export type LlmSettings = ExperimentConfig["teacher"] | ExperimentConfig["judge"]

/** The config section `settings` came from, for messages that name a key to change. */
const sectionOf = (settings: LlmSettings): "teacher" | "judge" => ("correction_rounds" in settings ? "teacher" : "judge")

export const providerBaseUrl = (s: Pick<LlmSettings, "provider" | "base_url">): string | undefined =>
  s.base_url ?? (s.provider === "deepseek" ? "https://api.deepseek.com" : s.provider === "openai" ? undefined : undefined)

/** Why a request did not produce a usable completion; `retryable` failures are retried with backoff. */
export class LlmError extends Schema.TaggedError<LlmError>()("LlmError", {
  reason: Schema.String,
  retryable: Schema.Boolean,
  rateLimited: Schema.Boolean,
  retryAfterMs: Schema.NullOr(Schema.Number),
  /** No other request can succeed either (bad key, endpoint unreachable): stop the stage now. */
  fatal: Schema.optionalKey(Schema.Boolean),
  /** The SDK, network or parse error beneath (shown with DART_DEBUG=1). */
  cause: Schema.optionalKey(Schema.Defect())
}) {
  override get message() {
    return this.reason
  }
}

export interface Completion {
  readonly content: string
  readonly finishReason: string | null
  readonly promptTokens: number
  readonly completionTokens: number
  readonly model: string
  /** The provider sent no `usage`, or one that is not counts: the token counts are a local estimate (prompt characters / 4 + max_tokens). */
  readonly usageEstimated: boolean
}

/** ~4 characters per token, the usual estimate for English text. */
export const estimateTokens = (text: string) => Math.ceil(text.length / 4)

/** The parts of a chat-completions reply DART relies on; anything else is ignored. `usage` is checked on its own. */
const CompletionBody = Schema.Struct({
  model: Schema.optionalKey(Schema.String),
  choices: Schema.Array(Schema.Struct({
    message: Schema.Struct({ content: Schema.NullOr(Schema.String) }),
    finish_reason: Schema.optionalKey(Schema.NullOr(Schema.String))
  })),
  usage: Schema.optionalKey(Schema.Unknown)
})
const decodeBody = Schema.decodeUnknownResult(CompletionBody)

/** Token counts a budget can trust: negative or fractional ones would refund spending, so they count as absent. */
const TokenCount = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))
const Usage = Schema.Struct({ prompt_tokens: TokenCount, completion_tokens: TokenCount })
const decodeUsage = Schema.decodeUnknownResult(Usage)

/** The wait a server asks for in ms (`retry-after-ms`, or `retry-after` in seconds or as a date), uncapped. */
const retryAfter = (headers: Headers | undefined): number | null => {
  const ms = headers?.get("retry-after-ms")
  if (ms && Number.isFinite(Number(ms))) return Math.max(0, Number(ms))
  const s = headers?.get("retry-after")
  if (!s) return null
  if (Number.isFinite(Number(s))) return Math.max(0, Number(s) * 1000)
  const at = Date.parse(s)
  return Number.isNaN(at) ? null : Math.max(0, at - Date.now())
}

/** Waits longer than this are said on stderr, so a stage that sits still says why. */
const SAY_WAITS_OVER_MS = 5000

const seconds = (ms: number) => String(Number((ms / 1000).toFixed(3)))

/** Errors that mean the endpoint could not be reached at all (as opposed to a dropped or slow reply). */
const connectCodes = new Set(["ECONNREFUSED", "ENOTFOUND", "EHOSTUNREACH", "ENETUNREACH", "EAI_AGAIN"])
const connectFailed = Symbol("connectFailed")
/** Any broken connection (refused, reset, hung up): with replicas, enough to try another one. */
const connectionBroken = Symbol("connectionBroken")
/** How long a replica that could not be reached is left out while others answer. */
const REPLICA_DOWN_MS = 30_000

/** This many requests in a row failing to connect, with no reply in between, stop the stage. */
export const CONNECT_FAILURES_TO_STOP = 4

/** `section` names the config keys in messages ("teacher" or "judge"). */
const classify = (e: unknown, section: string): LlmError => {
  // Reasons carry server text (error bodies, JSON parse snippets) to the terminal: no raw control characters.
  const fail = (reason: string, retryable: boolean, rateLimited = false, retryAfterMs: number | null = null) =>
    new LlmError({ reason: escapeControls(reason), retryable, rateLimited, retryAfterMs, cause: e })
  if (e instanceof OpenAI.APIConnectionTimeoutError) return fail("timeout", true)
  if (e instanceof OpenAI.APIConnectionError && e.cause instanceof BodyTooLargeError) {
    // A server fault, like a 5xx: retried within max_retries, each try reading at most the limit.
    return fail(`reply body over ${e.cause.limit} bytes (${section}.max_reply_bytes), cut off unread`, true)
  }
  if (e instanceof OpenAI.APIConnectionError) {
    const cause = e.cause as (Error & { code?: string }) | undefined
    const reason = `connection error: ${cause instanceof Error ? cause.message : e.message}`
    return Object.assign(fail(reason, true), {
      [connectFailed]: connectCodes.has(cause?.code ?? "") || /ECONNREFUSED|ENOTFOUND|EHOSTUNREACH|ENETUNREACH|EAI_AGAIN/.test(reason),
      [connectionBroken]: true
    })
  }
  if (e instanceof OpenAI.APIError) {
    const status = e.status ?? 0
    if (status === 429) return fail("HTTP 429 rate limited", true, true, retryAfter(e.headers))
    // The SDK prefixes its message with the status; keep one.
    const text = e.message.replace(/^\d{3}\s+/, "")
    if (status >= 500 || status === 408 || status === 409) return fail(`HTTP ${status}: ${text}`, true, false, retryAfter(e.headers))
    // A rejected key fails every other request the same way: stop at once, not after thousands more.
    if (status === 401 || status === 403) {
      return new LlmError({ reason: escapeControls(`HTTP ${status}: ${text}`), retryable: false, rateLimited: false, retryAfterMs: null, fatal: true, cause: e })
    }
    // 400/401/403/404/422: the request itself is wrong; retrying cannot help.
    return fail(`HTTP ${status}: ${text}`, false)
  }
  if (e instanceof SyntaxError) return fail(`malformed JSON body: ${e.message}`, true)
  return fail(`unexpected error: ${e instanceof Error ? e.message : String(e)}`, true)
}

export interface CompletionRequest {
  readonly messages: ReadonlyArray<ChatMessage>
  /** Sent as Idempotency-Key: a provider that honours it never bills the same request twice. */
  readonly key: string
  /** vLLM `structured_outputs` (e.g. `{ regex }` or `{ json }`), sent as is; never the removed `guided_*` fields. */
  readonly structuredOutputs?: Readonly<Record<string, unknown>>
  /** OpenAI-style `response_format` (e.g. json_schema). */
  readonly responseFormat?: Readonly<Record<string, unknown>>
  /** vLLM `stop_token_ids`: the base model's end-of-turn token when its EOS list lacks it (src/domain/ChatLayout.ts). */
  readonly stopTokenIds?: ReadonlyArray<number>
}

/** Chat completions over any OpenAI-compatible API, with a concurrency cap that adapts to 429s and retries with capped, jittered backoff. */
export class LlmClient extends Context.Service<LlmClient, {
  complete(request: CompletionRequest): Effect.Effect<Completion, LlmError>
  concurrency(): number
}>()("dart/llm/LlmClient") {
  /**
   * `replicas`: further base URLs serving the same model (the run's own vLLM replicas over a fleet): each request goes
   * to the one with the fewest in flight; one that cannot be reached is left out for 30 s while another answers.
   */
  static readonly layer = (settings: LlmSettings & { readonly api_key_env: string | null }, options: { readonly replicas?: ReadonlyArray<string> } = {}) =>
    Layer.effect(
      LlmClient,
      Effect.gen(function*() {
        const fail = (reason: string) => new LlmError({ reason, retryable: false, rateLimited: false, retryAfterMs: null })
        if (settings.provider === "vllm" && settings.base_url === null) {
          return yield* fail(`${settings.model}: provider vllm needs the run's vLLM server; set compute.vllm.endpoint or use dart run, which starts it`)
        }
        const variable = settings.api_key_env ?? defaultKeyVariable(settings.provider)
        // The run's own vLLM server asks for a key only when it was started with one (VLLM_API_KEY, as dart's other clients send).
        const apiKey = variable === null
          ? Option.some(settings.provider === "vllm" ? Option.getOrElse(yield* apiKeyFromEnv("VLLM_API_KEY"), () => Redacted.make("unused")) : Redacted.make("unused"))
          : yield* apiKeyFromEnv(variable)
        if (Option.isNone(apiKey)) return yield* fail(`no API key: set ${variable} in the environment`)
        const section = sectionOf(settings)
        const openai = (baseURL: string | undefined) => new OpenAI({
          apiKey: Redacted.value(apiKey.value),
          baseURL,
          // Retries (and retry-after, capped) are ours, in `schedule` below; the SDK's would honour any wait.
          maxRetries: 0,
          timeout: settings.timeout_s * 1000,
          // A reply is held in memory whole: a body past the cap is cut off as it streams, never buffered.
          fetch: (input: string | URL | Request, init?: RequestInit) => httpFetch(input, { ...init, maxBodyBytes: settings.max_reply_bytes })
        })
        const targets = [providerBaseUrl(settings), ...(options.replicas ?? []).filter((u) => u !== providerBaseUrl(settings))]
          .map((url) => ({ client: openai(url), inFlight: 0, downUntil: 0 }))
        /** The reachable target with the fewest requests in flight (all unreachable: the one left out longest ago). */
        const pick = () => {
          const now = Date.now()
          const up = targets.filter((t) => t.downUntil <= now)
          const from = up.length > 0 ? up : [...targets].sort((a, b) => a.downUntil - b.downUntil).slice(0, 1)
          return from.reduce((best, t) => (t.inFlight < best.inFlight ? t : best))
        }
        const limiter = yield* makeAdaptiveLimiter(settings.max_concurrency)
        const endpoint = providerBaseUrl(settings) ?? "https://api.openai.com/v1"
        let connectFailures = 0
        let warnedNoUsage = false
        let warnedBadUsage = false
        let waitSaidAt = Number.NEGATIVE_INFINITY
        // Any reply from the server (even an error status) proves it is reachable.
        const noteOutcome = (e: LlmError | undefined): LlmError | undefined => {
          if (e === undefined || !(e as unknown as Record<symbol, boolean>)[connectFailed]) {
            connectFailures = 0
            return e
          }
          if (++connectFailures < CONNECT_FAILURES_TO_STOP) return e
          return new LlmError({
            reason: `cannot reach ${endpoint}: ${e.reason} (the last ${connectFailures} requests all failed to connect)`,
            retryable: false,
            rateLimited: false,
            retryAfterMs: null,
            fatal: true,
            cause: e
          })
        }

        // The slot is held only while the request is on the wire: once the body has arrived the next
        // request may start, and parsing happens outside the cap.
        const send = (request: CompletionRequest) =>
          Effect.suspend(() => {
            const target = pick()
            return Effect.tryPromise({
            try: async (signal) => {
              target.inFlight++
              try {
              const response = await target.client.chat.completions.create({
                model: settings.model,
                messages: request.messages.map((m) => ({ role: m.role, content: m.content })),
                temperature: settings.temperature,
                max_tokens: settings.max_tokens,
                ...(settings.seed === null ? {} : { seed: settings.seed }),
                // The SDK sends body fields it does not know as they are; vLLM reads structured_outputs from there.
                ...(request.structuredOutputs === undefined ? {} : { structured_outputs: request.structuredOutputs }),
                ...(request.responseFormat === undefined ? {} : { response_format: request.responseFormat as never }),
                ...(request.stopTokenIds === undefined || request.stopTokenIds.length === 0 ? {} : { stop_token_ids: request.stopTokenIds })
              } as OpenAI.ChatCompletionCreateParamsNonStreaming, { signal, headers: { "Idempotency-Key": request.key } }).asResponse()
              return await response.text()
              } finally {
                target.inFlight--
              }
            },
            catch: (e) => classify(e, section)
          }).pipe(
            Effect.tap(() => Effect.sync(() => noteOutcome(undefined))),
            Effect.mapError((e) => {
              // One replica out of reach while another answers: leave it out a while, and do not count it toward
              // "the server cannot be reached" (the retry goes to another). A reset counts too: through an SSH tunnel
              // a dead box's port accepts the local connection and then drops it, never refusing.
              if (targets.length > 1 && (e as unknown as Record<symbol, boolean>)[connectionBroken]) {
                target.downUntil = Date.now() + REPLICA_DOWN_MS
                if (targets.some((t) => t.downUntil <= Date.now())) return e
              }
              return noteOutcome(e)!
            })
            )
          }).pipe(
            Effect.tapError((e) => (e.rateLimited ? limiter.onRateLimited : Effect.void)),
            Effect.tap(() => limiter.onSuccess),
            limiter.run
          )

        const attempt = (request: CompletionRequest) =>
          send(request).pipe(
            Effect.flatMap((text) => {
              let raw: unknown
              try {
                raw = JSON.parse(text) // providers may send keep-alive whitespace first; JSON allows it
              } catch (e) {
                return Effect.fail(classify(e, section))
              }
              const body = decodeBody(raw)
              if (body._tag === "Failure") return Effect.fail(classify(new SyntaxError("reply is not a chat completion"), section))
              const choice = body.success.choices[0]
              if (choice === undefined) {
                return Effect.fail(new LlmError({ reason: "empty choices", retryable: true, rateLimited: false, retryAfterMs: null }))
              }
              const sent = body.success.usage
              const absent = sent === undefined || sent === null
              const decoded = absent ? undefined : decodeUsage(sent)
              const usage = decoded?._tag === "Success" ? decoded.success : undefined
              const estimated = usage === undefined
              const completion: Completion = {
                content: choice.message.content ?? "",
                finishReason: choice.finish_reason ?? null,
                // Without usage, count what the request could have cost: its prompt and a full reply.
                promptTokens: usage?.prompt_tokens ?? request.messages.reduce((n, m) => n + estimateTokens(m.content), 0),
                completionTokens: usage?.completion_tokens ?? settings.max_tokens,
                model: body.success.model ?? settings.model,
                usageEstimated: estimated
              }
              const estimate = `tokens and cost are estimated (prompt characters / 4 + max_tokens ${settings.max_tokens} per reply) and recorded as estimates`
              if (absent && !warnedNoUsage) {
                warnedNoUsage = true
                return Console.error(`warning: ${endpoint} sent no token usage; ${estimate}`).pipe(Effect.as(completion))
              }
              if (estimated && !absent && !warnedBadUsage) {
                warnedBadUsage = true
                const shown = escapeControls(JSON.stringify(sent).slice(0, 200))
                return Console.error(`warning: ${endpoint} sent invalid token usage (${shown}; counts must be non-negative integers); ${estimate}`)
                  .pipe(Effect.as(completion))
              }
              return Effect.succeed(completion)
            })
          )

        // A server's retry-after, capped at max_retry_after_s: a hostile one could otherwise park the stage forever.
        // A capped or long wait is said (at most every few seconds, however many requests wait at once).
        const maxWaitMs = settings.max_retry_after_s * 1000
        const serverWait = (asked: number | null) =>
          Effect.gen(function*() {
            if (asked === null) return 0
            const wait = Math.min(asked, maxWaitMs)
            const now = yield* Clock.currentTimeMillis
            if ((wait < asked || wait > SAY_WAITS_OVER_MS) && now - waitSaidAt >= SAY_WAITS_OVER_MS) {
              waitSaidAt = now
              yield* Console.error(
                `${section}: provider asked to wait ${seconds(asked)} s; waiting ${seconds(wait)} s` + (wait < asked ? ` (${section}.max_retry_after_s)` : "")
              )
            }
            return wait
          })
        // Capped, jittered exponential backoff; a server's (capped) retry-after wins when it asks for longer.
        const schedule = Schedule.exponential("500 millis", 2).pipe(
          Schedule.jittered,
          Schedule.setInputType<LlmError>(),
          Schedule.modifyDelay(({ duration, input }) =>
            Effect.map(serverWait(input.retryAfterMs), (wait) => Duration.max(Duration.min(duration, Duration.seconds(30)), Duration.millis(wait)))
          )
        )
        // Untraced: this is the hot path of a stage that sends thousands of requests.
        const complete = Effect.fnUntraced(function*(request: CompletionRequest) {
          return yield* attempt(request).pipe(Effect.retry({ schedule, times: settings.max_retries, while: (e) => e.retryable && e.fatal !== true }))
        })
        return LlmClient.of({ complete, concurrency: limiter.current })
      })
    )
}
