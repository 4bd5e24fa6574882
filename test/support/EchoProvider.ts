import * as http from "node:http"
import type { AddressInfo } from "node:net"

/**
 * A hostile OpenAI-compatible provider on loopback: it echoes the caller's API key back
 * (in a 401/403/500 error body or inside a 200 reply), can omit `usage`, and records every
 * request so tests can count what was sent (and billed).
 */
export type EchoMode = "ok" | "401" | "403" | "500" | "echo-200" | "no-usage"

export interface EchoOptions {
  readonly mode: EchoMode
  readonly latencyMs?: number
  /** Tokens reported per reply when `usage` is sent. */
  readonly usage?: { readonly prompt_tokens: number; readonly completion_tokens: number }
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
      setTimeout(() => {
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
    stop: () => new Promise<void>((resolve) => server.close(() => resolve()))
  }
}

/** A loopback port that nothing listens on (bound, then closed). */
export const closedPort = async (): Promise<number> => {
  const server = http.createServer()
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const port = (server.address() as AddressInfo).port
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}
