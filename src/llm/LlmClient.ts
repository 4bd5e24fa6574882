import { Console, Context, Duration, Effect, Layer, Option, Redacted, Schedule, Schema } from "effect"
import OpenAI from "openai"
import { apiKeyFromEnv, defaultKeyVariable } from "../config/Secrets.ts"
import type { ExperimentConfig } from "../config/ExperimentConfig.ts"
import { makeAdaptiveLimiter } from "./AdaptiveLimiter.ts"
import { httpFetch } from "./HttpFetch.ts"
import type { ChatMessage } from "../domain/ChatMessage.ts"

export type LlmSettings = ExperimentConfig["teacher"] | ExperimentConfig["judge"]

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
  /** The provider sent no `usage`: the token counts are a local estimate (prompt characters / 4 + max_tokens). */
  readonly usageEstimated: boolean
}

/** ~4 characters per token, the usual estimate for English text. */
export const estimateTokens = (text: string) => Math.ceil(text.length / 4)

/** The parts of a chat-completions reply DART relies on; anything else is ignored. */
const CompletionBody = Schema.Struct({
  model: Schema.optionalKey(Schema.String),
  choices: Schema.Array(Schema.Struct({
    message: Schema.Struct({ content: Schema.NullOr(Schema.String) }),
    finish_reason: Schema.optionalKey(Schema.NullOr(Schema.String))
  })),
  usage: Schema.optionalKey(Schema.NullOr(Schema.Struct({ prompt_tokens: Schema.Number, completion_tokens: Schema.Number })))
})
const decodeBody = Schema.decodeUnknownResult(CompletionBody)

const retryAfter = (headers: Headers | undefined): number | null => {
  const ms = headers?.get("retry-after-ms")
  if (ms && Number.isFinite(Number(ms))) return Number(ms)
  const s = headers?.get("retry-after")
  if (!s) return null
  if (Number.isFinite(Number(s))) return Number(s) * 1000
  const at = Date.parse(s)
  return Number.isNaN(at) ? null : Math.max(0, at - Date.now())
}

/** Errors that mean the endpoint could not be reached at all (as opposed to a dropped or slow reply). */
const connectCodes = new Set(["ECONNREFUSED", "ENOTFOUND", "EHOSTUNREACH", "ENETUNREACH", "EAI_AGAIN"])
const connectFailed = Symbol("connectFailed")

/** This many requests in a row failing to connect, with no reply in between, stop the stage. */
export const CONNECT_FAILURES_TO_STOP = 4

const classify = (e: unknown): LlmError => {
  const fail = (reason: string, retryable: boolean, rateLimited = false, retryAfterMs: number | null = null) =>
    new LlmError({ reason, retryable, rateLimited, retryAfterMs, cause: e })
  if (e instanceof OpenAI.APIConnectionTimeoutError) return fail("timeout", true)
  if (e instanceof OpenAI.APIConnectionError) {
    const cause = e.cause as (Error & { code?: string }) | undefined
    const reason = `connection error: ${cause instanceof Error ? cause.message : e.message}`
    return Object.assign(fail(reason, true), { [connectFailed]: connectCodes.has(cause?.code ?? "") || /ECONNREFUSED|ENOTFOUND|EHOSTUNREACH|ENETUNREACH|EAI_AGAIN/.test(reason) })
  }
  if (e instanceof OpenAI.APIError) {
    const status = e.status ?? 0
    if (status === 429) return fail("HTTP 429 rate limited", true, true, retryAfter(e.headers))
    // The SDK prefixes its message with the status; keep one.
    const text = e.message.replace(/^\d{3}\s+/, "")
    if (status >= 500 || status === 408 || status === 409) return fail(`HTTP ${status}: ${text}`, true)
    // A rejected key fails every other request the same way: stop at once, not after thousands more.
    if (status === 401 || status === 403) {
      return new LlmError({ reason: `HTTP ${status}: ${text}`, retryable: false, rateLimited: false, retryAfterMs: null, fatal: true, cause: e })
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
}

/** Chat completions over any OpenAI-compatible API, with a concurrency cap that adapts to 429s and retries with capped, jittered backoff. */
export class LlmClient extends Context.Service<LlmClient, {
  complete(request: CompletionRequest): Effect.Effect<Completion, LlmError>
  concurrency(): number
}>()("dart/llm/LlmClient") {
  static readonly layer = (settings: LlmSettings & { readonly api_key_env: string | null }) =>
    Layer.effect(
      LlmClient,
      Effect.gen(function*() {
        const fail = (reason: string) => new LlmError({ reason, retryable: false, rateLimited: false, retryAfterMs: null })
        if (settings.provider === "vllm" && settings.base_url === null) {
          return yield* fail(`${settings.model}: provider vllm needs the run's vLLM server; set compute.vllm.endpoint or use dart run, which starts it`)
        }
        const variable = settings.api_key_env ?? defaultKeyVariable(settings.provider)
        const apiKey = variable === null ? Option.some(Redacted.make("unused")) : yield* apiKeyFromEnv(variable)
        if (Option.isNone(apiKey)) return yield* fail(`no API key: set ${variable} in the environment`)
        const client = new OpenAI({
          apiKey: Redacted.value(apiKey.value),
          baseURL: providerBaseUrl(settings),
          maxRetries: 0,
          timeout: settings.timeout_s * 1000,
          fetch: httpFetch
        })
        const limiter = yield* makeAdaptiveLimiter(settings.max_concurrency)
        const endpoint = providerBaseUrl(settings) ?? "https://api.openai.com/v1"
        let connectFailures = 0
        let warnedNoUsage = false
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
          Effect.tryPromise({
            try: async (signal) => {
              const response = await client.chat.completions.create({
                model: settings.model,
                messages: request.messages.map((m) => ({ role: m.role, content: m.content })),
                temperature: settings.temperature,
                max_tokens: settings.max_tokens,
                ...(settings.seed === null ? {} : { seed: settings.seed }),
                // The SDK sends body fields it does not know as they are; vLLM reads structured_outputs from there.
                ...(request.structuredOutputs === undefined ? {} : { structured_outputs: request.structuredOutputs }),
                ...(request.responseFormat === undefined ? {} : { response_format: request.responseFormat as never })
              } as OpenAI.ChatCompletionCreateParamsNonStreaming, { signal, headers: { "Idempotency-Key": request.key } }).asResponse()
              return response.text()
            },
            catch: classify
          }).pipe(
            Effect.tap(() => Effect.sync(() => noteOutcome(undefined))),
            Effect.mapError((e) => noteOutcome(e)!),
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
                return Effect.fail(classify(e))
              }
              const body = decodeBody(raw)
              if (body._tag === "Failure") return Effect.fail(classify(new SyntaxError("reply is not a chat completion")))
              const choice = body.success.choices[0]
              if (choice === undefined) {
                return Effect.fail(new LlmError({ reason: "empty choices", retryable: true, rateLimited: false, retryAfterMs: null }))
              }
              const usage = body.success.usage
              const estimated = usage === undefined || usage === null
              const completion: Completion = {
                content: choice.message.content ?? "",
                finishReason: choice.finish_reason ?? null,
                // Without usage, count what the request could have cost: its prompt and a full reply.
                promptTokens: usage?.prompt_tokens ?? request.messages.reduce((n, m) => n + estimateTokens(m.content), 0),
                completionTokens: usage?.completion_tokens ?? settings.max_tokens,
                model: body.success.model ?? settings.model,
                usageEstimated: estimated
              }
              if (!estimated || warnedNoUsage) return Effect.succeed(completion)
              warnedNoUsage = true
              return Console.error(
                `warning: ${endpoint} sent no token usage; tokens and cost are estimated (prompt characters / 4 + max_tokens ${settings.max_tokens} per reply) and recorded as estimates`
              ).pipe(Effect.as(completion))
            })
          )

        // Capped, jittered exponential backoff; a server's retry-after wins when it asks for longer.
        const schedule = Schedule.exponential("500 millis", 2).pipe(
          Schedule.jittered,
          Schedule.setInputType<LlmError>(),
          Schedule.modifyDelay(({ duration, input }) =>
            Effect.succeed(Duration.max(Duration.min(duration, Duration.seconds(30)), Duration.millis(input.retryAfterMs ?? 0)))
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
