import { createHash } from "node:crypto"
import { existsSync, readFileSync } from "node:fs"
import * as http from "node:http"
import type { AddressInfo, Socket } from "node:net"
import * as path from "node:path"

/**
 * A loopback stand-in for vLLM's OpenAI-compatible server, speaking the wire format of docs/serving.md
 * §1 and §3.1: chat completions, /v1/models (adapters with root and parent), /health, /version,
 * /metrics (running, waiting, lora info), runtime LoRA load/unload with vLLM's real answers
 * (200 plain-text "Success: …", 400 already loaded, 404 no adapter / unknown model, 500 bodies).
 * It records every request. Answers are deterministic per (model, messages, seed); an adapter
 * whose weights are all zero answers exactly like the base, as a LoRA that is not applied would.
 */
export interface StandInOptions {
  readonly base?: string
  readonly port?: number
  /** Milliseconds a request spends "running" once admitted. */
  readonly latencyMs?: number | ((n: number) => number)
  /** Requests running at once; the rest wait in a queue (shown as vllm:num_requests_waiting). */
  readonly capacity?: number
  /** A load failure to inject for an adapter name: HTTP status and error message. */
  readonly loadFault?: (name: string) => { readonly status: number; readonly message: string } | undefined
  /** Answer tag (which server answered); default the port. */
  readonly tag?: string
  /** Crash (stop, dropping every connection) on receiving this chat request instead of answering it. */
  readonly crashWhen?: (chat: ChatRecord, n: number) => boolean
  /** Keep each chat request (default true); benches turn it off so the stand-in's memory stays flat. */
  readonly record?: boolean
}

export interface ChatRecord {
  readonly model: string
  readonly seed: number | undefined
  readonly messages: ReadonlyArray<{ role: string; content: string }>
  readonly body: Record<string, unknown>
  readonly at: number
}

const sha = (s: string | Buffer) => createHash("sha256").update(s).digest("hex")

/** sha256 of the tensor bytes, or "zero" when every weight byte is 0 (a LoRA that changes nothing). */
const adapterBehaviour = (dir: string): string => {
  const buf = readFileSync(path.join(dir, "adapter_model.safetensors"))
  const headerLen = Number(buf.readBigUInt64LE(0))
  const data = buf.subarray(8 + headerLen)
  return data.every((b) => b === 0) ? "zero" : sha(data).slice(0, 12)
}

const errorBody = (status: number, message: string, type: string) =>
  JSON.stringify({ error: { message, type, param: null, code: status } })

export const startVllmStandIn = async (options: StandInOptions = {}) => {
  const base = options.base ?? "base"
  const capacity = options.capacity ?? Number.POSITIVE_INFINITY
  const adapters = new Map<string, { path: string; behaviour: string }>()
  const chats: Array<ChatRecord> = []
  const loads: Array<{ name: string; path: string; status: number }> = []
  const unloads: Array<{ name: string; status: number }> = []
  let running = 0
  let maxRunning = 0
  const waiting: Array<() => void> = []
  let maxInFlight = 0
  let inFlight = 0
  let dead = false
  let served = 0
  const sockets = new Set<Socket>()

  const send = (res: http.ServerResponse, status: number, body: string, type = "application/json") => {
    res.writeHead(status, { "content-type": type, "content-length": Buffer.byteLength(body) })
    res.end(body)
  }

  const admit = () =>
    new Promise<void>((resolve) => {
      if (running < capacity) {
        running++
        maxRunning = Math.max(maxRunning, running)
        resolve()
      } else waiting.push(() => {
        running++
        maxRunning = Math.max(maxRunning, running)
        resolve()
      })
    })
  const leave = () => {
    running--
    const next = waiting.shift()
    if (next) next()
  }

  const answer = (model: string, messages: ReadonlyArray<{ content: string }>, seed: number | undefined, tag: string) => {
    const behaviour = model === base ? "base" : adapters.get(model)!.behaviour === "zero" ? "base" : `lora-${adapters.get(model)!.behaviour}`
    const h = sha(`${behaviour}\n${seed}\n${messages.map((m) => m.content).join("\n")}`)
    const verdict = parseInt(h.slice(0, 2), 16) % 2 === 0 ? "YES" : "NO"
    return `The ${behaviour} model weighs the groups (${h.slice(2, 10)}) on ${tag}.\nConclusion: ${verdict}\n\n\ntrailing text that is cut`
  }

  let server: http.Server
  let port = options.port ?? 0
  const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const chunks: Array<Buffer> = []
    req.on("data", (c: Buffer) => chunks.push(c))
    req.on("end", async () => {
      const url = req.url ?? ""
      const text = Buffer.concat(chunks).toString("utf8")
      if (req.method === "GET" && url === "/health") return send(res, dead ? 503 : 200, "")
      if (req.method === "GET" && url === "/version") return send(res, 200, JSON.stringify({ version: "0.32.0-standin" }))
      if (req.method === "GET" && url === "/v1/models") {
        const data = [
          { id: base, object: "model", created: 1764000000, owned_by: "vllm", root: base, parent: null, max_model_len: 512, permission: [] },
          ...[...adapters].map(([id, a]) => ({ id, object: "model", created: 1764000000, owned_by: "vllm", root: a.path, parent: base, max_model_len: null, permission: [] }))
        ]
        return send(res, 200, JSON.stringify({ object: "list", data }))
      }
      if (req.method === "GET" && url === "/metrics") {
        return send(res, 200, [
          "# HELP vllm:num_requests_running Number of requests in model execution batches.",
          "# TYPE vllm:num_requests_running gauge",
          `vllm:num_requests_running{engine="0",model_name="${base}"} ${running}.0`,
          "# TYPE vllm:num_requests_waiting gauge",
          `vllm:num_requests_waiting{engine="0",model_name="${base}"} ${waiting.length}.0`,
          `vllm:kv_cache_usage_perc{engine="0",model_name="${base}"} 0.1`,
          `vllm:lora_requests_info{max_lora="2",running_lora_adapters="${[...adapters.keys()].join(",")}",waiting_lora_adapters=""} 1.764e+09`,
          ""
        ].join("\n"), "text/plain; version=0.0.4")
      }
      let body: Record<string, unknown>
      try {
        body = JSON.parse(text) as Record<string, unknown>
      } catch {
        return send(res, 400, errorBody(400, "malformed JSON", "BadRequestError"))
      }
      if (req.method === "POST" && url === "/v1/load_lora_adapter") {
        const name = String(body.lora_name ?? "")
        const p = String(body.lora_path ?? "")
        const reply = (status: number, out: string, type = "application/json") => {
          loads.push({ name, path: p, status })
          send(res, status, out, type)
        }
        if (name === "" || p === "") return reply(400, errorBody(400, "Both 'lora_name' and 'lora_path' must be provided.", "InvalidUserInput"))
        if (adapters.has(name) && body.load_inplace !== true) {
          return reply(400, errorBody(400, `The lora adapter '${name}' has already been loaded. If you want to load the adapter in place, set 'load_inplace' to True.`, "InvalidUserInput"))
        }
        const fault = options.loadFault?.(name)
        if (fault) return reply(fault.status, errorBody(fault.status, fault.message, fault.status >= 500 ? "InternalServerError" : "BadRequestError"))
        if (!existsSync(path.join(p, "adapter_config.json"))) return reply(404, errorBody(404, `Loading lora ${name} failed: No adapter found for ${p}`, "NotFoundError"))
        adapters.set(name, { path: p, behaviour: adapterBehaviour(p) })
        return reply(200, `Success: LoRA adapter '${name}' added successfully.`, "text/plain")
      }
      if (req.method === "POST" && url === "/v1/unload_lora_adapter") {
        const name = String(body.lora_name ?? "")
        if (!adapters.delete(name)) {
          unloads.push({ name, status: 404 })
          return send(res, 404, errorBody(404, `The lora adapter '${name}' cannot be found.`, "NotFoundError"))
        }
        unloads.push({ name, status: 200 })
        return send(res, 200, `Success: LoRA adapter '${name}' removed successfully.`, "text/plain")
      }
      if (req.method === "POST" && url === "/v1/chat/completions") {
        const model = String(body.model)
        if (model !== base && !adapters.has(model)) return send(res, 404, errorBody(404, `The model \`${model}\` does not exist.`, "NotFoundError"))
        const messages = body.messages as Array<{ role: string; content: string }>
        const seed = typeof body.seed === "number" ? body.seed : undefined
        const record = { model, seed, messages, body, at: Date.now() }
        if (options.crashWhen?.(record, chats.length + served)) return void stop()
        if (options.record !== false) chats.push(record)
        else served++
        maxInFlight = Math.max(maxInFlight, ++inFlight)
        await admit()
        const latency = typeof options.latencyMs === "function" ? options.latencyMs(chats.length + served) : options.latencyMs ?? 0
        if (latency > 0) await new Promise((r) => setTimeout(r, latency))
        leave()
        inFlight--
        if (res.destroyed) return
        const content = answer(model, messages, seed, options.tag ?? String(port))
        return send(res, 200, JSON.stringify({
          id: `chatcmpl-${chats.length + served}`, object: "chat.completion", created: 1764000000, model,
          choices: [{ index: 0, message: { role: "assistant", content, reasoning_content: null }, logprobs: null, finish_reason: "stop", stop_reason: null }],
          usage: { prompt_tokens: 50, completion_tokens: 20, total_tokens: 70 }
        }))
      }
      return send(res, 404, JSON.stringify({ detail: "Not Found" }))
    })
  }

  const listen = () =>
    new Promise<void>((resolve, reject) => {
      server = http.createServer(handler)
      server.keepAliveTimeout = 60_000
      server.on("connection", (s) => {
        sockets.add(s)
        s.on("close", () => sockets.delete(s))
      })
      server.once("error", reject)
      server.listen(port, "127.0.0.1", () => {
        port = (server.address() as AddressInfo).port
        resolve()
      })
    })
  await listen()

  /** Stops listening and drops every connection (a crash: in-flight requests fail). */
  const stop = () =>
    new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy()
      server.close(() => resolve())
    })

  return {
    get url() {
      return `http://127.0.0.1:${port}`
    },
    get port() {
      return port
    },
    chats,
    loads,
    unloads,
    adapters,
    maxInFlight: () => maxInFlight,
    served: () => chats.length + served,
    maxRunning: () => maxRunning,
    setDead: (d: boolean) => void (dead = d),
    stop,
    /** A restart: down, then up on the same port with an empty adapter registry (it lives in memory). */
    restart: async (downMs = 300) => {
      await stop()
      adapters.clear()
      await new Promise((r) => setTimeout(r, downMs))
      await listen()
    }
  }
}

export type VllmStandIn = Awaited<ReturnType<typeof startVllmStandIn>>
