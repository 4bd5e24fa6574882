import * as http from "node:http"
import type { AddressInfo } from "node:net"

/**
 * A hostile OpenAI-compatible provider on loopback: it echoes the caller's API key back
 * (in a 401/403/500 error body or inside a 200 reply), can omit or falsify `usage`, stream
 * oversized bodies, ask for absurd retry-after waits or put terminal escapes in its errors,
 * and records every request so tests can count what was sent (and billed).
 */
export type EchoMode = "ok" | "401" | "403" | "500" | "echo-200" | "no-usage"

export interface EchoOptions {
  readonly mode: EchoMode
  readonly latencyMs?: number
  /** Tokens reported per reply when `usage` is sent (negative ones too: a lying provider). */
  readonly usage?: { readonly prompt_tokens: number; readonly completion_tokens: number }
  /** The message of a 500's error body, instead of the key echo (e.g. with terminal escapes). */
  readonly errorMessage?: string
  /**
   * The first `prompts` distinct prompts get, every time they are asked, a well-formed reply whose content makes the
   * body `bytes` long, streamed in chunks without a content-length and never held in memory; writing stops when
   * the client hangs up.
   */
  readonly huge?: { readonly prompts: number; readonly bytes: number }
  /** The first `count` requests get a 429 with these headers (e.g. `retry-after`). */
  readonly rateLimited?: { readonly count: number; readonly headers: Readonly<Record<string, string>> }
}

export interface EchoRequest {
  readonly authorization: string
  readonly messages: ReadonlyArray<{ readonly role: string; readonly content: string }>
}

const goldOf = (messages: ReadonlyArray<{ readonly content: string }>) =>
  /Gold label: (YES|NO)\./.exec(messages.map((m) => m.content).join("\n"))?.[1] ??
    /Conclusion: (YES|NO)\s*$/m.exec(messages[messages.length - 1]?.content ?? "")?.[1] ?? "NO"

export const startEchoProvider = async (options: EchoOptions) => {
  const requests: Array<EchoRequest> = []
  let inFlight = 0
  let maxInFlight = 0
  const hugePrompts = new Set<string>()
  let hugeSent = 0
  const server = http.createServer((req, res) => {
    const chunks: Array<Buffer> = []
    req.on("data", (c: Buffer) => chunks.push(c))
    req.on("end", () => {
      const auth = String(req.headers.authorization ?? "")
      const key = auth.replace(/^Bearer\s+/i, "")
      let body: { messages?: Array<{ role: string; content: string }> } = {}
      try {
        body = JSON.parse(Buffer.concat(chunks).toString("utf8"))
      } catch {
        // recorded with no messages
      }
      const messages = body.messages ?? []
      requests.push({ authorization: auth, messages })
      maxInFlight = Math.max(maxInFlight, ++inFlight)
      const send = (status: number, payload: unknown) => {
        inFlight--
        res.writeHead(status, { "content-type": "application/json" })
        res.end(JSON.stringify(payload))
      }
      const index = requests.length
      if (options.rateLimited !== undefined && index <= options.rateLimited.count) {
        inFlight--
        res.writeHead(429, { "content-type": "application/json", ...options.rateLimited.headers })
        return res.end(JSON.stringify({ error: { message: "slow down", type: "rate_limit_exceeded" } }))
      }
      if (options.huge !== undefined) {
        const prompt = JSON.stringify(messages)
        if (!hugePrompts.has(prompt) && hugePrompts.size < options.huge.prompts) hugePrompts.add(prompt)
        if (hugePrompts.has(prompt)) {
          hugeSent++
          return streamHuge(res, options.huge.bytes, () => inFlight--)
        }
      }
      setTimeout(() => {
        if (options.mode === "500" && options.errorMessage !== undefined) {
          return send(500, { error: { message: options.errorMessage, type: "server_error" } })
        }
        const echoError = (status: number, type: string) =>
          send(status, { error: { message: `Incorrect API key provided: ${key}. Authorization header was: ${auth}`, type, code: type } })
        if (options.mode === "401") return echoError(401, "invalid_api_key")
        if (options.mode === "403") return echoError(403, "permission_denied")
        if (options.mode === "500") return echoError(500, "server_error")
        const gold = goldOf(messages)
        const content = options.mode === "echo-200"
          ? `Your key ${key} was accepted. The facts given differ between the groups.\nConclusion: ${gold}`
          : `The question weighs the groups on the facts it gives. A careful reading supports the label ${gold.toLowerCase()}.\nConclusion: ${gold}`
        send(200, {
          id: `chatcmpl-${requests.length}`,
          object: "chat.completion",
          created: 1764000000,
          model: "echo",
          choices: [{ index: 0, message: { role: "assistant", content }, finish_reason: "stop" }],
          ...(options.mode === "no-usage" ? {} : { usage: options.usage ?? { prompt_tokens: 100, completion_tokens: 20 } })
        })
      }, options.latencyMs ?? 0)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const port = (server.address() as AddressInfo).port
  return {
    url: `http://127.0.0.1:${port}/v1`,
    requests,
    maxInFlight: () => maxInFlight,
    /** Requests answered with a `huge` body. */
    hugeSent: () => hugeSent,
    stop: () => new Promise<void>((resolve) => server.close(() => resolve()))
  }
}

/** A well-formed chat completion of about `bytes` bytes, written as the client reads it (backpressure). */
const streamHuge = (res: http.ServerResponse, bytes: number, done: () => void) => {
  const head = `{"id":"chatcmpl-huge","object":"chat.completion","created":1764000000,"model":"echo","choices":[{"index":0,"message":{"role":"assistant","content":"`
  const tail = `\\nConclusion: YES"},"finish_reason":"stop"}],"usage":{"prompt_tokens":100,"completion_tokens":20}}`
  const chunk = Buffer.alloc(1024 * 1024, "a")
  let left = Math.max(0, bytes - head.length - tail.length)
  let closed = false
  res.on("close", () => {
    if (!closed) done()
    closed = true
  })
  res.on("error", () => undefined)
  res.writeHead(200, { "content-type": "application/json" })
  res.write(head)
  const pump = () => {
    while (!closed && left > 0) {
      const piece = left >= chunk.length ? chunk : chunk.subarray(0, left)
      left -= piece.length
      if (!res.write(piece)) return void res.once("drain", pump)
    }
    if (!closed) res.end(tail)
  }
  pump()
}

/** A loopback port that nothing listens on (bound, then closed). */
export const closedPort = async (): Promise<number> => {
  const server = http.createServer()
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const port = (server.address() as AddressInfo).port
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}
