import { Schema } from "effect"
import * as http from "node:http"
import * as https from "node:https"

/** A reply body grew past the caller's limit; it was cut off unread (a broken or hostile server). */
export class BodyTooLargeError extends Schema.TaggedError<BodyTooLargeError>()("BodyTooLargeError", {
  url: Schema.String,
  limit: Schema.Number
}) {
  override get message() {
    return `${this.url}: reply body over ${this.limit} bytes`
  }
}

export interface HttpFetchInit extends RequestInit {
  /** Bodies longer than this are cut off while they stream (the socket closed) and fail with `BodyTooLargeError`. */
  readonly maxBodyBytes?: number
}

/**
 * A small `fetch` for the openai client over node:http(s) with keep-alive agents. Teacher
 * calls are plain JSON POSTs; at hundreds in flight, WHATWG fetch's per-request cost
 * (streams, header objects) delayed sends by ~150 ms per burst (see bench/teacherThroughput.ts).
 */
/**
 * An idle pooled socket is closed after 4 s (a request in flight is not timed out by it): before a server's own
 * keep-alive timeout (uvicorn's 5 s) closes it, and before a path that does not pass a close on (a Kubernetes
 * port-forward whose node keeps the stream open) would swallow the next request sent on it.
 */
export const IDLE_SOCKET_MS = 4000
const agents = {
  "http:": new http.Agent({ keepAlive: true, maxSockets: Infinity, timeout: IDLE_SOCKET_MS }),
  "https:": new https.Agent({ keepAlive: true, maxSockets: Infinity, timeout: IDLE_SOCKET_MS })
}

export const httpFetch = (input: string | URL | Request, init: HttpFetchInit = {}): Promise<Response> =>
  new Promise((resolve, reject) => {
    const url = new URL(typeof input === "string" || input instanceof URL ? input : input.url)
    const lib = url.protocol === "https:" ? https : http
    const headers: Record<string, string> = {}
    new Headers(init.headers).forEach((v, k) => (headers[k] = v))
    const signal = init.signal
    // A caller's signal may outlive the request; the listener goes once the request settles, so a long-lived
    // signal never keeps finished requests reachable.
    const onAbort = () => req.destroy(Object.assign(new Error("The operation was aborted."), { name: "AbortError" }))
    const settle = <A>(f: (a: A) => void) => (a: A) => {
      signal?.removeEventListener("abort", onAbort)
      f(a)
    }
    const limit = init.maxBodyBytes ?? Infinity
    const req = lib.request(url, { method: init.method ?? "GET", headers, agent: agents[url.protocol as "http:" | "https:"] }, (res) => {
      const chunks: Array<Buffer> = []
      let bytes = 0
      // Never hold more than the limit: a declared length over it fails before reading, a streamed one at the byte.
      const tooLarge = () => {
        settle(reject)(new BodyTooLargeError({ url: `${url.origin}${url.pathname}`, limit }))
        chunks.length = 0
        res.destroy()
      }
      if (Number(res.headers["content-length"] ?? 0) > limit) return tooLarge()
      res.on("data", (c: Buffer) => {
        bytes += c.length
        if (bytes > limit) return tooLarge()
        chunks.push(c)
      })
      res.on("error", settle(reject))
      res.on("end", () => {
        const out = new Headers()
        for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) out.set(k, Array.isArray(v) ? v.join(", ") : v)
        settle(resolve)(new Response(res.statusCode === 204 ? null : Buffer.concat(chunks), { status: res.statusCode ?? 0, statusText: res.statusMessage ?? "", headers: out }))
      })
    })
    req.on("error", settle(reject))
    if (signal) {
      if (signal.aborted) return req.destroy(signal.reason instanceof Error ? signal.reason : new Error("aborted"))
      signal.addEventListener("abort", onAbort, { once: true })
    }
    if (init.body !== undefined && init.body !== null) req.end(typeof init.body === "string" ? init.body : Buffer.from(init.body as ArrayBuffer))
    else req.end()
  })
