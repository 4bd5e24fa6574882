import { Context, Duration, Effect, Layer, Schedule, Schema, type Scope, Semaphore } from "effect"
import * as fs from "node:fs/promises"
import * as http from "node:http"
import * as https from "node:https"
import * as path from "node:path"
import { IDLE_SOCKET_MS } from "../llm/HttpFetch.ts"

/** One audit classifier as the audit resolves it from config: where it is served and which label is harmful. */
export interface ClassifierSpec {
  readonly name: string
  /** HF id or local directory; a local directory's config.json supplies id2label when the config does not. */
  readonly model: string
  /** The harmful label, matched by exact name (docs/protocol.md §9 B1: `hate`, never `nothate`). */
  readonly label: string
  /** The model's window in tokens; longer texts are split and the most harmful window counts. */
  readonly max_tokens: number
  readonly endpoint: string
  /** softmax for single-label heads, sigmoid for multi-label ones; applied here to the raw logits. */
  readonly activation: "softmax" | "sigmoid"
  readonly id2label: Readonly<Record<string, string>> | undefined
}

export class ClassifierError extends Schema.TaggedError<ClassifierError>()("ClassifierError", {
  classifier: Schema.String,
  message: Schema.String,
  retryable: Schema.Boolean,
  cause: Schema.optionalKey(Schema.Defect())
}) {}

/** A text's harm score: the harmful label's probability in its most harmful window. */
export interface HarmScore {
  readonly score: number
  readonly windows: number
}

export interface Classifier {
  readonly spec: ClassifierSpec
  /** The served model id, its label index and the server's version: recorded as the evaluator's identity. */
  readonly served: { readonly model: string; readonly labelIndex: number; readonly labels: ReadonlyArray<string>; readonly version: string | null }
  readonly score: (texts: ReadonlyArray<string>) => Effect.Effect<Array<HarmScore>, ClassifierError>
}

export interface ClassifierOptions {
  readonly batchSize: number
  readonly concurrency: number
  /** A reply body larger than this is refused as it is read (`audit.classify_max_reply_bytes`). */
  readonly maxReplyBytes: number
}

// `probs` carries raw logits: the client asks for `use_activation: false` (docs/serving.md §2).
const ClassifyReply = Schema.Struct({
  data: Schema.Array(Schema.Struct({
    index: Schema.Int,
    label: Schema.optionalKey(Schema.NullOr(Schema.String)),
    probs: Schema.Array(Schema.Finite),
    num_classes: Schema.optionalKey(Schema.Int)
  }))
})
const decodeReply = Schema.decodeUnknownResult(ClassifyReply)
const ModelsReply = Schema.Struct({ data: Schema.Array(Schema.Struct({ id: Schema.String })) })
const decodeModels = Schema.decodeUnknownResult(ModelsReply)
const HfConfig = Schema.Struct({ id2label: Schema.Record(Schema.String, Schema.String) })
const decodeHfConfig = Schema.decodeUnknownResult(HfConfig)

/** ~2.5 characters per token is a conservative English estimate for BPE tokenizers; a window the server still finds too long is split again. */
const CHARS_PER_TOKEN = 2.5

/** Overlapping windows cut at whitespace, so a harmful phrase is whole in at least one window. */
export const splitWindows = (text: string, maxChars: number): Array<string> => {
  if (text.length <= maxChars) return [text]
  const out: Array<string> = []
  const stride = Math.max(1, Math.floor((maxChars * 3) / 4))
  for (let start = 0; start < text.length;) {
    let end = Math.min(text.length, start + maxChars)
    if (end < text.length) {
      const cut = text.lastIndexOf(" ", end)
      if (cut > start + maxChars / 2) end = cut
    }
    out.push(text.slice(start, end))
    if (end >= text.length) break
    let next = start + stride
    const space = text.indexOf(" ", next)
    if (space !== -1 && space < end) next = space + 1
    start = Math.min(next, end)
  }
  return out
}

const softmaxAt = (logits: ReadonlyArray<number>, i: number) => {
  let m = -Infinity
  for (const z of logits) m = Math.max(m, z)
  let s = 0
  for (const z of logits) s += Math.exp(z - m)
  return Math.exp(logits[i]! - m) / s
}
const sigmoid = (z: number) => 1 / (1 + Math.exp(-z))

const isContextError = (status: number, body: string) =>
  status === 400 && /maximum context length|too long|exceeds|max_model_len|longer than/i.test(body)

/**
 * Talks to a vLLM pooling server's `POST /classify` (docs/serving.md §2, §3.1). Raw logits are requested
 * (`use_activation: false`) and the activation applied here, so an old or mis-configured server's
 * default activation cannot change the scores; every reply's argmax label is checked against id2label.
 */
export class ClassifierClient extends Context.Service<ClassifierClient, {
  /** The classifier's connections last as long as the caller's scope. */
  open(spec: ClassifierSpec, options: ClassifierOptions): Effect.Effect<Classifier, ClassifierError, Scope.Scope>
}>()("dart/serving/ClassifierClient") {
  static readonly layer = Layer.succeed(ClassifierClient, ClassifierClient.of({
    open: (spec, options) => openClassifier(spec, options)
  }))
}

/** A reply body cut off at the limit: the server is broken or hostile, and reading on would only grow memory. */
class ReplyTooLarge extends Error {}

/**
 * One HTTP exchange with the reply body read up to `maxBytes`: a declared or streamed body past it ends the request
 * there (an endless or huge reply must not be buffered whole before it can be judged).
 */
const boundedRequest = (
  agent: http.Agent,
  url: URL,
  method: "GET" | "POST",
  body: string | undefined,
  maxBytes: number,
  signal: AbortSignal
) =>
  new Promise<{ readonly status: number; readonly text: string }>((resolve, reject) => {
    const lib = url.protocol === "https:" ? https : http
    const req = lib.request(url, { method, agent, headers: { "content-type": "application/json" } }, (res) => {
      const tooLarge = () => {
        reject(new ReplyTooLarge())
        req.destroy()
      }
      if (Number(res.headers["content-length"]) > maxBytes) return tooLarge()
      const chunks: Array<Buffer> = []
      let bytes = 0
      res.on("data", (c: Buffer) => {
        bytes += c.length
        if (bytes > maxBytes) return tooLarge()
        chunks.push(c)
      })
      res.on("error", reject)
      res.on("end", () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString("utf8") }))
    })
    req.on("error", reject)
    const onAbort = () => req.destroy(Object.assign(new Error("The operation was aborted."), { name: "AbortError" }))
    if (signal.aborted) return onAbort()
    signal.addEventListener("abort", onAbort, { once: true })
    req.on("close", () => signal.removeEventListener("abort", onAbort))
    req.end(body)
  })

const openClassifier = Effect.fn("ClassifierClient.open")(function*(spec: ClassifierSpec, options: ClassifierOptions) {
  const fail = (message: string, retryable = false, cause?: unknown) =>
    new ClassifierError({ classifier: spec.name, message: `classifier "${spec.name}" (${spec.endpoint}): ${message}`, retryable, ...(cause === undefined ? {} : { cause }) })
  const base = spec.endpoint.replace(/\/+$/, "").replace(/\/v1$/, "")
  const secure = base.startsWith("https:")
  // Keep-alive connections of this classifier, closed with the caller's scope.
  const agent = yield* Effect.acquireRelease(
    // Idle sockets closed after IDLE_SOCKET_MS (see HttpFetch.ts): never reused after the far side let them go.
    Effect.sync(() => (secure ? new https.Agent({ keepAlive: true, timeout: IDLE_SOCKET_MS }) : new http.Agent({ keepAlive: true, timeout: IDLE_SOCKET_MS }))),
    (a) => Effect.sync(() => a.destroy())
  )

  const request = (method: "GET" | "POST", route: string, body?: unknown) =>
    Effect.tryPromise({
      try: (signal) => boundedRequest(agent, new URL(`${base}${route}`), method, body === undefined ? undefined : JSON.stringify(body), options.maxReplyBytes, signal),
      catch: (e) =>
        e instanceof ReplyTooLarge
          ? fail(`${method} ${route}: the reply is larger than ${options.maxReplyBytes} bytes (audit.classify_max_reply_bytes)`)
          : fail(`${method} ${route}: ${e instanceof Error ? e.message : String(e)}`, true, e)
    })
  const retrySchedule = Schedule.exponential("100 millis", 2).pipe(
    Schedule.jittered,
    Schedule.modifyDelay(({ duration }) => Effect.succeed(Duration.min(duration, Duration.seconds(10))))
  )
  const withRetry = <A>(e: Effect.Effect<A, ClassifierError>) => e.pipe(Effect.retry({ schedule: retrySchedule, times: 4, while: (x) => x.retryable }))

  // Which model the server serves: the configured one, or its only model.
  const models = yield* withRetry(request("GET", "/v1/models").pipe(Effect.flatMap((r) => {
    if (r.status >= 500) return Effect.fail(fail(`GET /v1/models: HTTP ${r.status}`, true))
    if (r.status !== 200) return Effect.fail(fail(`GET /v1/models: HTTP ${r.status}: ${r.text.slice(0, 200)}`))
    let json: unknown
    try {
      json = JSON.parse(r.text)
    } catch (e) {
      return Effect.fail(fail("GET /v1/models: reply is not JSON", false, e))
    }
    const d = decodeModels(json)
    return d._tag === "Success" ? Effect.succeed(d.success.data.map((m) => m.id)) : Effect.fail(fail("GET /v1/models: reply is not a model list"))
  })))
  const served = models.includes(spec.model) ? spec.model : models.length === 1 ? models[0]! : undefined
  if (served === undefined) return yield* fail(`the server serves ${JSON.stringify(models)}, not "${spec.model}"`)
  const version = yield* request("GET", "/version").pipe(
    Effect.map((r) => {
      try {
        return r.status === 200 ? String((JSON.parse(r.text) as { version?: unknown }).version ?? "") || null : null
      } catch {
        return null
      }
    }),
    Effect.orElseSucceed(() => null)
  )

  // id2label: the config's, else the local model directory's config.json.
  let id2label = spec.id2label
  if (id2label === undefined) {
    const file = path.join(spec.model, "config.json")
    // Not there (an HF id rather than a folder): say what to configure; unreadable: say why.
    const text = yield* Effect.tryPromise({
      try: () => fs.readFile(file, "utf8").catch((e: NodeJS.ErrnoException) => (e.code === "ENOENT" || e.code === "ENOTDIR" ? undefined : Promise.reject(e))),
      catch: (e) => fail(`${file}: read failed: ${e instanceof Error ? e.message : String(e)}`, false, e)
    })
    if (text === undefined) {
      return yield* fail(`no id2label: set audit.classifiers[].id2label (e.g. {"0":"nothate","1":"hate"}) or give a local model directory with a config.json`)
    }
    let json: unknown
    try {
      json = JSON.parse(text)
    } catch (e) {
      return yield* fail(`${file}: malformed JSON`, false, e)
    }
    const d = decodeHfConfig(json)
    if (d._tag === "Failure") return yield* fail(`${file}: no id2label object`)
    id2label = d.success.id2label
  }
  const labels: Array<string> = []
  for (const [k, v] of Object.entries(id2label)) {
    const i = Number(k)
    if (!Number.isInteger(i) || i < 0) return yield* fail(`id2label key "${k}" is not a class index`)
    labels[i] = v
  }
  if (labels.some((l) => l === undefined) || labels.length === 0) return yield* fail(`id2label ${JSON.stringify(id2label)} does not cover indices 0..${labels.length - 1}`)
  const labelIndex = labels.indexOf(spec.label)
  if (labelIndex === -1) {
    return yield* fail(`harmful label "${spec.label}" is not one of the model's labels ${JSON.stringify(labels)} (matched by exact name)`)
  }

  const semaphore = yield* Semaphore.make(options.concurrency)
  const maxChars = Math.max(16, Math.floor(spec.max_tokens * CHARS_PER_TOKEN))

  /** Harm probability of each input, one request; `tooLong` when the server rejects the length. */
  const classifyBatch = (inputs: ReadonlyArray<string>) =>
    withRetry(semaphore.withPermits(1)(request("POST", "/classify", { model: served, input: inputs, use_activation: false })).pipe(
      Effect.flatMap((r): Effect.Effect<{ readonly tooLong: true } | { readonly tooLong: false; readonly scores: Array<number> }, ClassifierError> => {
        if (isContextError(r.status, r.text)) return Effect.succeed({ tooLong: true })
        if (r.status >= 500 || r.status === 429) return Effect.fail(fail(`POST /classify: HTTP ${r.status}: ${r.text.slice(0, 200)}`, true))
        if (r.status !== 200) return Effect.fail(fail(`POST /classify: HTTP ${r.status}: ${r.text.slice(0, 300)}`))
        let json: unknown
        try {
          json = JSON.parse(r.text)
        } catch (e) {
          return Effect.fail(fail(`POST /classify: malformed reply (not JSON): ${r.text.slice(0, 120)}`, true, e))
        }
        const d = decodeReply(json)
        if (d._tag === "Failure") return Effect.fail(fail(`POST /classify: malformed reply: ${d.failure.message.slice(0, 300)}`, true, d.failure))
        // The results must answer every input once: their indices a permutation of 0..n-1 (count, range, no repeat).
        // A broken reply is a server fault, retried like one; accepted, it would leave inputs without a score.
        const data = d.success.data
        const n = inputs.length
        if (data.length !== n) return Effect.fail(fail(`POST /classify: ${data.length} results for ${n} inputs`, true))
        const scores = new Array<number>(n)
        const answered = new Array<boolean>(n).fill(false)
        for (const item of data) {
          if (item.index < 0 || item.index >= n) return Effect.fail(fail(`POST /classify: result index ${item.index} out of range for ${n} inputs`, true))
          if (answered[item.index]) return Effect.fail(fail(`POST /classify: result index ${item.index} appears more than once (${n} inputs want indices 0..${n - 1}, each once)`, true))
          answered[item.index] = true
          if (item.num_classes !== undefined && item.num_classes !== item.probs.length) {
            return Effect.fail(fail(`POST /classify: result ${item.index} says num_classes ${item.num_classes} but carries ${item.probs.length} logits`, true))
          }
          if (item.probs.length !== labels.length) {
            return Effect.fail(fail(`POST /classify: ${item.probs.length} classes, but id2label has ${labels.length} (${JSON.stringify(labels)})`))
          }
          let argmax = 0
          for (let i = 1; i < item.probs.length; i++) if (item.probs[i]! > item.probs[argmax]!) argmax = i
          // The server names the argmax class from the model's own id2label: a disagreement means ours is wrong (B1).
          if (item.label != null && item.label !== labels[argmax]) {
            return Effect.fail(fail(`the server labels class ${argmax} "${item.label}" but id2label says "${labels[argmax]}": fix audit.classifiers[].id2label`))
          }
          scores[item.index] = spec.activation === "softmax" ? softmaxAt(item.probs, labelIndex) : sigmoid(item.probs[labelIndex]!)
        }
        return Effect.succeed({ tooLong: false, scores })
      })
    ))

  /** One text's windows, re-split smaller while the server says a window is too long. */
  const scoreLong = (text: string, chars: number): Effect.Effect<HarmScore, ClassifierError> =>
    Effect.gen(function*() {
      const windows = splitWindows(text, chars)
      const r = yield* classifyBatch(windows)
      if (!r.tooLong) return { score: Math.max(...r.scores), windows: windows.length }
      if (chars <= 16) return yield* fail(`a window of ${chars} characters is still too long for the server`)
      return yield* scoreLong(text, Math.floor(chars / 2))
    })

  const score = (texts: ReadonlyArray<string>) =>
    Effect.gen(function*() {
      const out = new Array<HarmScore>(texts.length)
      const short: Array<number> = []
      const long: Array<number> = []
      texts.forEach((t, i) => (t.length <= maxChars ? short : long).push(i))
      const batches: Array<Array<number>> = []
      for (let i = 0; i < short.length; i += options.batchSize) batches.push(short.slice(i, i + options.batchSize))
      yield* Effect.forEach(batches, (batch) =>
        Effect.gen(function*() {
          const r = yield* classifyBatch(batch.map((i) => texts[i]!))
          if (r.tooLong) {
            // Which one is too long is unknown: score this batch's texts one by one, splitting as needed.
            for (const i of batch) out[i] = yield* scoreLong(texts[i]!, maxChars)
            return
          }
          batch.forEach((i, k) => (out[i] = { score: r.scores[k]!, windows: 1 }))
        }), { concurrency: options.concurrency, discard: true })
      yield* Effect.forEach(long, (i) => scoreLong(texts[i]!, maxChars).pipe(Effect.map((s) => void (out[i] = s))), {
        concurrency: options.concurrency,
        discard: true
      })
      return out
    })

  return { spec, served: { model: served, labelIndex, labels, version }, score } satisfies Classifier
})
