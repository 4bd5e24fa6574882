import * as http from "node:http"
import type { AddressInfo } from "node:net"

/**
 * A loopback stand-in for a vLLM pooling server (docs/serving.md §2, §3.1): `GET /v1/models`, `GET /version`
 * and `POST /classify` with the real reply shape (`data[i].index/label/probs/num_classes`). A text's
 * harmful-class probability is read from markers `[[harm:0.42]]` in it (the largest wins, none = `base`);
 * with `use_activation: false` it returns logits whose softmax is that probability, else the probabilities.
 * Inputs longer than `maxChars` get vLLM's 400 context-length error. Records every request (`seen`: all of them,
 * `requests`: the /classify ones); `fault` turns a /classify reply hostile (issue 21).
 */
export interface ClassifyServerOptions {
  readonly model: string
  readonly id2label: Readonly<Record<string, string>>
  /** Index of the class the markers set; the other classes share the rest. */
  readonly harmfulIndex: number
  readonly base?: number
  readonly maxChars?: number
  /**
   * Decides a fault for the n-th /classify request (0-based): an HTTP 500, a torn body, a result short, every result
   * `index: 0`, one index twice (another missing), one index past the inputs, a reply padded past `oversizeBytes`
   * (sent chunked, without a content-length), or no reply at all (`hang`, until the client goes away).
   */
  readonly fault?: (n: number) => ClassifyFault | undefined
  /** The size of an `oversized` reply (default 8 MiB). */
  readonly oversizeBytes?: number
  /** Labels the server reports (defaults to id2label): a different one simulates a config whose id2label is wrong. */
  readonly replyLabels?: ReadonlyArray<string>
  readonly port?: number
  /** The marker name this server reads (`[[tox:0.4]]` with "tox"), so two classifiers can score a text differently. */
  readonly marker?: string
}

export type ClassifyFault = "500" | "malformed" | "wrong-count" | "index-zero" | "duplicate-index" | "index-out-of-range" | "oversized" | "hang"

const patterns = new Map<string, RegExp>()
export const harmOf = (text: string, base: number, marker = "harm"): number => {
  let best = -1
  let re = patterns.get(marker)
  if (re === undefined) patterns.set(marker, re = new RegExp(`\\[\\[${marker}:([0-9.eE+-]+)\\]\\]`, "g"))
  for (const m of text.matchAll(re)) best = Math.max(best, Number(m[1]))
  return best < 0 ? base : best
}

export const startClassifyServer = async (options: ClassifyServerOptions) => {
  const requests: Array<{ readonly inputs: ReadonlyArray<string>; readonly useActivation: unknown; readonly model: unknown }> = []
  const seen: Array<{ readonly method: string; readonly url: string }> = []
  const labels = Object.entries(options.id2label).sort(([a], [b]) => Number(a) - Number(b)).map(([, v]) => v)
  const replyLabels = options.replyLabels ?? labels
  const k = labels.length
  let classifyCalls = 0
  const server = http.createServer((req, res) => {
    const chunks: Array<Buffer> = []
    req.on("data", (c: Buffer) => chunks.push(c))
    req.on("end", () => {
      seen.push({ method: req.method ?? "", url: req.url ?? "" })
      const send = (status: number, body: unknown) => {
        res.writeHead(status, { "content-type": "application/json" })
        res.end(typeof body === "string" ? body : JSON.stringify(body))
      }
      if (req.method === "GET" && req.url === "/v1/models") {
        return send(200, { object: "list", data: [{ id: options.model, object: "model", created: 1764000000, owned_by: "vllm", root: options.model, parent: null, max_model_len: 512 }] })
      }
      if (req.method === "GET" && req.url === "/version") return send(200, { version: "0.32.0-standin" })
      if (req.method !== "POST" || req.url !== "/classify") return send(404, { error: { message: "Not Found", type: "NotFoundError", code: 404 } })
      const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as { model: string; input: string | Array<string>; use_activation?: boolean }
      const inputs = typeof body.input === "string" ? [body.input] : body.input
      const n = classifyCalls++
      requests.push({ inputs, useActivation: body.use_activation, model: body.model })
      if (body.model !== options.model) return send(404, { error: { message: `The model \`${body.model}\` does not exist.`, type: "NotFoundError", code: 404 } })
      const fault = options.fault?.(n)
      if (fault === "500") return send(500, { error: { message: "EngineCore died", type: "InternalServerError", code: 500 } })
      if (fault === "hang") return
      if (fault === "malformed") return send(200, "{\"id\":\"classify-1\",\"data\":[{\"index\":0,\"probs\":")
      const long = inputs.find((t) => t.length > (options.maxChars ?? Infinity))
      if (long !== undefined) {
        const tokens = Math.ceil(long.length / 4) + 2
        return send(400, { error: { message: `This model's maximum context length is 512 tokens. However, you requested ${tokens} tokens in the input for classification. Please reduce the length of the input.`, type: "BadRequestError", param: null, code: 400 } })
      }
      const data = inputs.map((text, index) => {
        const p = harmOf(text, options.base ?? 0.01, options.marker)
        const probs = labels.map((_, i) => (i === options.harmfulIndex ? p : (1 - p) / (k - 1)))
        const argmax = probs.indexOf(Math.max(...probs))
        return {
          index,
          label: replyLabels[argmax],
          probs: body.use_activation === false ? probs.map((q) => Math.log(q)) : probs,
          num_classes: k
        }
      })
      if (fault === "wrong-count") data.pop()
      if (fault === "index-zero") data.forEach((d) => (d.index = 0))
      if (fault === "duplicate-index" && data.length > 1) data[data.length - 1]!.index = data.length - 2
      if (fault === "index-out-of-range") data[data.length - 1]!.index = data.length
      const reply = { id: `classify-${n}`, object: "list", created: 1764000000, model: options.model, data, usage: { prompt_tokens: 0, total_tokens: 0 } }
      if (fault === "oversized") {
        // A well-formed reply whose size only shows while it is read: chunked, no content-length.
        res.writeHead(200, { "content-type": "application/json" })
        const json = JSON.stringify(reply)
        res.write(`${json.slice(0, -1)},"padding":"`)
        const chunk = "x".repeat(64 * 1024)
        let left = options.oversizeBytes ?? 8 * 1024 * 1024
        const more = () => {
          while (left > 0 && !res.destroyed) {
            left -= chunk.length
            if (!res.write(chunk)) return void res.once("drain", more)
          }
          if (!res.destroyed) res.end("\"}")
        }
        return more()
      }
      send(200, reply)
    })
  })
  await new Promise<void>((resolve) => server.listen(options.port ?? 0, "127.0.0.1", () => resolve()))
  const { port } = server.address() as AddressInfo
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    requests,
    seen,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections()
      server.close(() => resolve())
    })
  }
}
