import { createHash } from "node:crypto"
import * as http from "node:http"
import type { AddressInfo } from "node:net"

/**
 * A loopback stand-in for an OpenAI-compatible chat-completions API (DeepSeek, OpenAI).
 * It speaks the wire format, records every request and can inject faults. It bills every
 * reply it sends, whatever the Idempotency-Key says: a provider that ignores the key is the
 * worst case DART must handle, so tests count re-billing themselves (the key is recorded).
 */
export type Fault = "429" | "500" | "malformed" | "empty" | "length" | "hang"

export interface ChatMessage {
  readonly role: string
  readonly content: string
}

export interface ServerOptions {
  /** Milliseconds before the reply (per request). */
  readonly latencyMs?: number | ((n: number) => number)
  /** Decides a fault for the n-th request (0-based); undefined = answer normally. */
  readonly fault?: (n: number, body: { messages: Array<ChatMessage> }) => Fault | undefined
  /** retry-after-ms sent with a 429 (200 unless retryAfterS is given). */
  readonly retryAfterMs?: number
  /** retry-after (whole seconds) sent with a 429 instead of retry-after-ms. */
  readonly retryAfterS?: number
  /** Keep-alive newlines before the JSON body, as slow providers send. */
  readonly keepAlive?: boolean
  readonly reply?: (messages: ReadonlyArray<ChatMessage>) => string
  /** Answer every request with this text without parsing it or keeping its body (throughput benches). */
  readonly fixedReply?: string
  /** Listen on this port (0 = any free one). */
  readonly port?: number
}

export interface RecordedRequest {
  readonly n: number
  readonly key: string | undefined
  readonly authorization: string | undefined
  readonly url: string
  readonly body: string
  readonly at: number
  outcome: string
  /** Tokens billed for this request (0 unless a billable reply was sent). */
  tokens: number
}

const hash = (s: string) => createHash("sha256").update(s).digest()

/** A deterministic teacher: follows the gold label, except that some first replies need a correction and a few never comply. */
export const simulatedTeacher = (messages: ReadonlyArray<ChatMessage>): string => {
  const text = messages.map((m) => m.content).join("\n")
  const gold = /Conclusion: (YES|NO)\s*$/m.exec(messages[messages.length - 1]!.content)?.[1] ?? /Gold label: (YES|NO)\./.exec(text)?.[1] ?? "NO"
  const question = /Prompt:\n([\s\S]*)$/.exec(messages.find((m) => m.role === "user")?.content ?? "")?.[1] ?? ""
  const h = hash(question)
  const correcting = messages.some((m) => m.role === "assistant")
  const wrong = gold === "YES" ? "NO" : "YES"
  if (h[0]! % 50 === 0) return `I would rather not judge this.\nConclusion: ${wrong}`
  if (!correcting && h[1]! % 4 === 0) return `The groups seem alike here. Treating them the same is fair.\nConclusion: ${wrong}`
  if (!correcting && h[2]! % 9 === 0) return `Short answer.\nConclusion: ${gold}`
  return `The question weighs the groups on the facts it gives. A careful reading supports the label ${gold.toLowerCase()}.\nConclusion: ${gold}`
}

export const startChatServer = async (options: ServerOptions = {}) => {
  const requests: Array<RecordedRequest> = []
  const billed = new Map<string, number>()
  const hooks: { onReply: ((rec: RecordedRequest) => void) | undefined } = { onReply: undefined }
  let inFlight = 0
  let maxInFlight = 0
  const sockets = new Set<import("node:net").Socket>()
  const reply = options.reply ?? simulatedTeacher

  const fixed = options.fixedReply === undefined ? undefined : JSON.stringify({
    id: "chatcmpl-fixed", object: "chat.completion", created: 1764000000, model: "fixed",
    choices: [{ index: 0, message: { role: "assistant", content: options.fixedReply }, finish_reason: "stop" }],
    usage: { prompt_tokens: 100, completion_tokens: 20, total_tokens: 120 }
  })
  const server = http.createServer((req, res) => {
    // An OpenAI-compatible API: chat completions only (no /v1/models, no vLLM /tokenize).
    if (!(req.url ?? "").endsWith("/chat/completions")) {
      req.resume()
      req.on("end", () => res.writeHead(404, { "content-type": "application/json" }).end(JSON.stringify({ error: { message: "Not Found" } })))
      return
    }
    if (fixed !== undefined) {
      req.resume()
      req.on("end", () => {
        requests.push({ n: requests.length, key: undefined, authorization: undefined, url: "", body: "", at: Date.now(), outcome: "ok", tokens: 120 })
        maxInFlight = Math.max(maxInFlight, ++inFlight)
        const latency = typeof options.latencyMs === "function" ? options.latencyMs(requests.length) : options.latencyMs ?? 0
        setTimeout(() => {
          inFlight--
          res.writeHead(200, { "content-type": "application/json" })
          res.end(fixed)
        }, latency)
      })
      return
    }
    const chunks: Array<Buffer> = []
    req.on("data", (c: Buffer) => chunks.push(c))
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString("utf8")
      const n = requests.length
      const key = req.headers["idempotency-key"] as string | undefined
      const rec: RecordedRequest = { n, key, authorization: req.headers.authorization, url: req.url ?? "", body, at: Date.now(), outcome: "pending", tokens: 0 }
      requests.push(rec)
      inFlight++
      maxInFlight = Math.max(maxInFlight, inFlight)
      let finished = false
      const done = () => {
        if (!finished) {
          finished = true
          inFlight--
        }
      }
      res.on("close", done)
      const parsed = JSON.parse(body) as { model: string; messages: Array<ChatMessage> }
      const latency = typeof options.latencyMs === "function" ? options.latencyMs(n) : options.latencyMs ?? 0
      const fault = options.fault?.(n, parsed)
      rec.outcome = fault ?? "ok"
      if (fault === "hang") return // never answers; the client's timeout must fire
      setTimeout(() => {
        if (fault === "429") {
          const after = options.retryAfterS === undefined
            ? { "retry-after-ms": String(options.retryAfterMs ?? 200) }
            : { "retry-after": String(options.retryAfterS) }
          res.writeHead(429, { "content-type": "application/json", ...after })
          res.end(JSON.stringify({ error: { message: "Rate limit reached", type: "rate_limit_error", code: 429 } }))
          return hooks.onReply?.(rec)
        }
        if (fault === "500") {
          res.writeHead(500, { "content-type": "application/json" })
          res.end(JSON.stringify({ error: { message: "internal error", type: "server_error", code: 500 } }))
          return hooks.onReply?.(rec)
        }
        res.writeHead(200, { "content-type": "application/json" })
        if (fault === "malformed") {
          res.end("{\"id\": \"chatcmpl-x\", \"choices\": [")
          return hooks.onReply?.(rec)
        }
        const billable = fault === undefined || fault === "length"
        const content = reply(parsed.messages)
        const prompt = Math.ceil(parsed.messages.reduce((a, m) => a + m.content.length, 0) / 4)
        const completion = Math.ceil(content.length / 4)
        const json = JSON.stringify({
          id: `chatcmpl-${n}`,
          object: "chat.completion",
          created: 1764000000,
          model: parsed.model,
          choices: fault === "empty" ? [] : [{ index: 0, message: { role: "assistant", content }, finish_reason: fault === "length" ? "length" : "stop" }],
          usage: { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion }
        })
        if (billable) {
          billed.set(key ?? "", (billed.get(key ?? "") ?? 0) + 1)
          rec.tokens = prompt + completion
        }
        if (options.keepAlive) res.write("\n\n")
        res.end(json)
        hooks.onReply?.(rec)
      }, latency)
    })
  })
  server.on("connection", (s) => {
    sockets.add(s)
    s.on("close", () => sockets.delete(s))
  })
  server.keepAliveTimeout = 60_000
  await new Promise<void>((resolve) => server.listen(options.port ?? 0, "127.0.0.1", () => resolve()))
  const { port } = server.address() as AddressInfo
  return {
    port,
    url: `http://127.0.0.1:${port}/v1`,
    requests,
    /** Billable replies sent, per Idempotency-Key. */
    billed,
    /** Called after each reply is sent (tests use it to kill the client at a point of progress). */
    hooks,
    maxInFlight: () => maxInFlight,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy()
        server.close(() => resolve())
      })
  }
}
