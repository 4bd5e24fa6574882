import { Context, Effect, Layer, Schema } from "effect"
import OpenAI from "openai"
import type { ChatMessage } from "../domain/ChatMessage.ts"
import { parseMetrics, type ServerMetrics } from "./Metrics.ts"
import { httpFetch } from "../llm/HttpFetch.ts"

/**
 * What went wrong talking to one vLLM server. `kind` tells the caller what to do:
 * `down` (connection refused/reset, 503): the server is gone, hand its work elsewhere;
 * `lost_model` (404 unknown model): the adapter registry was lost (a restart), load again;
 * `retryable` (5xx, timeouts): try again; `fatal`: the request itself is wrong.
 */
export class VllmError extends Schema.TaggedError<VllmError>()("VllmError", {
  endpoint: Schema.String,
  kind: Schema.Literals(["down", "lost_model", "retryable", "fatal"]),
  status: Schema.NullOr(Schema.Number),
  message: Schema.String,
  cause: Schema.optionalKey(Schema.Defect())
}) {}

export interface Sampling {
  readonly temperature: number
  readonly top_p: number
  readonly top_k: number | null
  readonly max_tokens: number
  readonly seed: number
  readonly n?: number
}

export interface ChatRequest {
  readonly model: string
  readonly messages: ReadonlyArray<ChatMessage>
  readonly sampling: Sampling
  /** vLLM's `structured_outputs` (choice / regex / json); never the removed `guided_*` fields. */
  readonly structuredOutputs?: Readonly<Record<string, unknown>>
  /** Further token ids to stop at (the template's end of turn when the model's EOS list lacks it). */
  readonly stopTokenIds?: ReadonlyArray<number>
}

export interface ChatAnswer {
  readonly texts: ReadonlyArray<string>
  readonly finishReasons: ReadonlyArray<string | null>
  readonly promptTokens: number
  readonly completionTokens: number
}

export const ModelCard = Schema.Struct({
  id: Schema.String,
  root: Schema.optionalKey(Schema.NullOr(Schema.String)),
  parent: Schema.optionalKey(Schema.NullOr(Schema.String)),
  max_model_len: Schema.optionalKey(Schema.NullOr(Schema.Number))
})
export type ModelCard = typeof ModelCard.Type
const ModelList = Schema.Struct({ data: Schema.Array(ModelCard) })
const VersionBody = Schema.Struct({ version: Schema.String })
const ChatBody = Schema.Struct({
  choices: Schema.Array(Schema.Struct({
    index: Schema.optionalKey(Schema.Number),
    message: Schema.Struct({ content: Schema.NullOr(Schema.String) }),
    finish_reason: Schema.optionalKey(Schema.NullOr(Schema.String))
  })),
  usage: Schema.optionalKey(Schema.NullOr(Schema.Struct({ prompt_tokens: Schema.Number, completion_tokens: Schema.Number })))
})
const decodeChat = Schema.decodeUnknownResult(ChatBody)

/** Current servers answer `{"error":{"message"}}`; pre-2025 ones a flat `{"message"}` (docs/serving.md §1.2). */
const errorText = (body: string): string => {
  try {
    const j = JSON.parse(body) as { error?: { message?: unknown } | string; message?: unknown; detail?: unknown }
    if (typeof j.error === "object" && j.error !== null && typeof j.error.message === "string") return j.error.message
    if (typeof j.error === "string") return j.error
    if (typeof j.message === "string") return j.message
    if (typeof j.detail === "string") return j.detail
  } catch {
    // not JSON: the raw text says it
  }
  return body.trim().slice(0, 500) || "(empty body)"
}

/** One vLLM OpenAI-compatible server: chat, models, health, version, metrics, runtime LoRA load/unload. */
export interface VllmEndpoint {
  readonly url: string
  readonly chat: (request: ChatRequest) => Effect.Effect<ChatAnswer, VllmError>
  readonly models: Effect.Effect<ReadonlyArray<ModelCard>, VllmError>
  /** True when `/health` answers 200; false on 503 or no connection. */
  readonly health: Effect.Effect<boolean>
  readonly version: Effect.Effect<string, VllmError>
  readonly metrics: Effect.Effect<ServerMetrics, VllmError>
  /** `POST /v1/load_lora_adapter`; 200 answers plain text `Success: …`. */
  readonly loadAdapter: (name: string, path: string, options?: { readonly inPlace?: boolean }) => Effect.Effect<string, VllmError>
  readonly unloadAdapter: (name: string) => Effect.Effect<string, VllmError>
}

/** The innermost cause's code and message: fetch wraps socket errors as `TypeError: fetch failed`. */
const connectionDetail = (e: unknown): string => {
  const parts: Array<string> = []
  for (let c: unknown = e, depth = 0; c !== undefined && c !== null && depth < 5; c = (c as { cause?: unknown }).cause, depth++) {
    const code = (c as { code?: unknown }).code
    if (typeof code === "string") parts.push(code)
    if (c instanceof Error && c.message !== "" && !parts.includes(c.message)) parts.push(c.message)
  }
  return parts.join(": ")
}

const isConnectionError = (e: unknown): boolean =>
  /ECONNREFUSED|ECONNRESET|EPIPE|EHOSTUNREACH|ECONNABORTED|UND_ERR_SOCKET|socket hang up|other side closed|fetch failed/.test(connectionDetail(e))

export interface EndpointOptions {
  /** Requests queue server-side, so a long timeout; vLLM's own batching decides latency. */
  readonly timeoutMs?: number
  /** Sent as a Bearer token when the server runs with `--api-key`; from the environment only. */
  readonly apiKey?: string
}

export const makeEndpoint = (rawUrl: string, options: EndpointOptions = {}): VllmEndpoint => {
  const url = rawUrl.replace(/\/+$/, "").replace(/\/v1$/, "")
  const client = new OpenAI({
    apiKey: options.apiKey ?? "EMPTY",
    baseURL: `${url}/v1`,
    maxRetries: 0,
    // node:http with a keep-alive agent under the openai client: about a fifth less allocation and
    // CPU per chat than the platform fetch (undici's WHATWG Request, Headers and streams), which in
    // a 200,000-request `dart infer` means fewer collections and a flat RSS (bench/inferThroughput.ts).
    fetch: httpFetch,
    timeout: options.timeoutMs ?? 600_000
  })
  const fail = (kind: VllmError["kind"], status: number | null, message: string, cause?: unknown) =>
    new VllmError({ endpoint: url, kind, status, message, ...(cause === undefined ? {} : { cause }) })

  const classify = (what: string) => (e: unknown): VllmError => {
    if (e instanceof VllmError) return e
    if (e instanceof OpenAI.APIConnectionTimeoutError) return fail("retryable", null, `${what}: timeout`, e)
    if (e instanceof OpenAI.APIConnectionError) return fail("down", null, `${what}: connection error: ${connectionDetail(e.cause ?? e)}`, e)
    if (e instanceof OpenAI.APIError) {
      const status = e.status ?? 0
      const text = e.message.replace(/^\d{3}\s+/, "")
      if (status === 404 && /does not exist/.test(text)) return fail("lost_model", status, `${what}: HTTP 404: ${text}`, e)
      if (status === 503) return fail("down", status, `${what}: HTTP 503: ${text}`, e)
      if (status >= 500 || status === 408 || status === 429) return fail("retryable", status, `${what}: HTTP ${status}: ${text}`, e)
      return fail("fatal", status, `${what}: HTTP ${status}: ${text}`, e)
    }
    if (isConnectionError(e)) return fail("down", null, `${what}: connection error: ${connectionDetail(e)}`, e)
    return fail("retryable", null, `${what}: ${e instanceof Error ? e.message : String(e)}`, e)
  }

  // A pooled keep-alive socket the server closed while this process was busy fails with a reset on
  // reuse; one immediate retry on a fresh socket tells that apart from a server that is really gone.
  const staleSocket = (e: VllmError) => e.kind === "down" && /hang up|ECONNRESET|EPIPE|UND_ERR_SOCKET|other side closed/.test(e.message)
  // (A plain catch, not Effect.retry: that builds a retry schedule per request.)
  const onceMore = <A>(effect: Effect.Effect<A, VllmError>) => Effect.catchIf(effect, staleSocket, () => effect)

  const headers = options.apiKey === undefined ? {} : { authorization: `Bearer ${options.apiKey}` }
  const request = (method: "GET" | "POST", path: string, body?: unknown) =>
    onceMore(Effect.tryPromise({
      try: async (signal) => {
        const res = await fetch(`${url}${path}`, {
          method,
          signal,
          headers: body === undefined ? headers : { ...headers, "content-type": "application/json" },
          ...(body === undefined ? {} : { body: JSON.stringify(body) })
        })
        return { status: res.status, text: await res.text() }
      },
      catch: classify(`${method} ${path}`)
    }))

  const json = <S extends Schema.Codec<unknown, unknown, never, never>>(path: string, schema: S) =>
    request("GET", path).pipe(Effect.flatMap(({ status, text }) => {
      if (status !== 200) return Effect.fail(fail(status === 503 ? "down" : "retryable", status, `GET ${path}: HTTP ${status}: ${errorText(text)}`))
      let raw: unknown
      try {
        raw = JSON.parse(text)
      } catch (e) {
        return Effect.fail(fail("retryable", status, `GET ${path}: reply is not JSON`, e))
      }
      const decoded = Schema.decodeUnknownResult(schema)(raw)
      return decoded._tag === "Failure"
        ? Effect.fail(fail("fatal", status, `GET ${path}: unexpected reply: ${String(decoded.failure)}`, decoded.failure))
        : Effect.succeed(decoded.success as S["Type"])
    }))

  const lora = (path: string, body: Record<string, unknown>, name: string) =>
    request("POST", path, body).pipe(Effect.flatMap(({ status, text }) => {
      if (status === 200) return Effect.succeed(text)
      // Match on the body too: older releases said 400 where current ones say 500 (docs/serving.md §1.2).
      const detail = errorText(text)
      const what = path.includes("unload") ? `unload adapter "${name}"` : `load adapter "${name}" from ${String(body.lora_path)}`
      const hint = status === 404 && /runtime|Not Found$/i.test(detail) && !/adapter|lora/i.test(detail)
        ? " (is VLLM_ALLOW_RUNTIME_LORA_UPDATING=True set on the server?)"
        : ""
      return Effect.fail(fail(status === 503 ? "down" : status >= 500 ? "fatal" : "fatal", status, `${what} on ${url}: HTTP ${status}: ${detail}${hint}`))
    }))

  const chat = (req: ChatRequest) =>
    onceMore(Effect.tryPromise({
      try: async (signal) => {
        const s = req.sampling
        const body: Record<string, unknown> = {
          model: req.model,
          messages: req.messages.map((m) => ({ role: m.role, content: m.content })),
          temperature: s.temperature,
          top_p: s.top_p,
          // vLLM: -1 disables top-k; sent explicitly so the model's generation_config never fills it in.
          top_k: s.top_k ?? -1,
          max_tokens: s.max_tokens,
          seed: s.seed,
          n: s.n ?? 1,
          ...(req.structuredOutputs === undefined ? {} : { structured_outputs: req.structuredOutputs }),
          ...(req.stopTokenIds === undefined || req.stopTokenIds.length === 0 ? {} : { stop_token_ids: req.stopTokenIds })
        }
        const response = await client.chat.completions.create(body as never, { signal }).asResponse()
        return response.text()
      },
      catch: classify(`chat ${req.model}`)
    })).pipe(Effect.flatMap((text) => {
      let raw: unknown
      try {
        raw = JSON.parse(text)
      } catch (e) {
        return Effect.fail(fail("retryable", 200, `chat ${req.model}: reply is not JSON`, e))
      }
      const body = decodeChat(raw)
      if (body._tag === "Failure" || body.success.choices.length === 0) {
        return Effect.fail(fail("retryable", 200, `chat ${req.model}: reply is not a chat completion`))
      }
      const choices = [...body.success.choices].sort((a, b) => (a.index ?? 0) - (b.index ?? 0))
      return Effect.succeed<ChatAnswer>({
        texts: choices.map((c) => c.message.content ?? ""),
        finishReasons: choices.map((c) => c.finish_reason ?? null),
        promptTokens: body.success.usage?.prompt_tokens ?? 0,
        completionTokens: body.success.usage?.completion_tokens ?? 0
      })
    }))

  return {
    url,
    chat,
    models: json("/v1/models", ModelList).pipe(Effect.map((l) => l.data)),
    health: request("GET", "/health").pipe(Effect.map((r) => r.status === 200), Effect.orElseSucceed(() => false)),
    version: json("/version", VersionBody).pipe(Effect.map((v) => v.version)),
    metrics: request("GET", "/metrics").pipe(Effect.flatMap(({ status, text }) =>
      status === 200 ? Effect.succeed(parseMetrics(text)) : Effect.fail(fail(status === 503 ? "down" : "retryable", status, `GET /metrics: HTTP ${status}`))
    )),
    loadAdapter: (name, path, o = {}) =>
      lora("/v1/load_lora_adapter", { lora_name: name, lora_path: path, ...(o.inPlace ? { load_inplace: true } : {}) }, name),
    unloadAdapter: (name) => lora("/v1/unload_lora_adapter", { lora_name: name }, name)
  }
}

/** Hands out one client per server URL (several boxes → several endpoints). */
export class VllmClient extends Context.Service<VllmClient, {
  endpoint(url: string): VllmEndpoint
}>()("dart/serving/VllmClient") {
  static readonly layer = (options: EndpointOptions = {}) =>
    Layer.sync(VllmClient, () => {
      const cache = new Map<string, VllmEndpoint>()
      return VllmClient.of({
        endpoint: (url) => {
          let e = cache.get(url)
          if (e === undefined) cache.set(url, (e = makeEndpoint(url, options)))
          return e
        }
      })
    })
}
