import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import * as net from "node:net"
import { LlmClient } from "../../src/llm/LlmClient.ts"
import { startChatServer } from "../support/ChatServer.ts"
import { configFor } from "../support/RunConfig.ts"

// A teacher or judge of provider `vllm` over a fleet: its requests are spread over the run's replicas, and one that
// cannot be reached is left out while the others answer (never "the server cannot be reached" while one answers).
const settingsFor = (baseUrl: string) => ({ ...configFor("configs/smoke.json").teacher, base_url: baseUrl, max_retries: 4 })

const closedPort = () =>
  new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const p = (s.address() as net.AddressInfo).port
      s.close(() => resolve(p))
    })
  })

const ask = (client: LlmClient["Service"], n: number) =>
  Effect.forEach(Array.from({ length: n }, (_, i) => i), (i) =>
    client.complete({ key: `k${i}`, messages: [{ role: "user", content: `Question ${i}: is it so?` }] }), { concurrency: 8 })

describe("LlmClient over several replicas", () => {
  it.live("spreads requests over every replica by load", () =>
    Effect.gen(function*() {
      const a = yield* Effect.acquireRelease(Effect.promise(() => startChatServer({ latencyMs: 30 })), (s) => Effect.promise(() => s.close()))
      const b = yield* Effect.acquireRelease(Effect.promise(() => startChatServer({ latencyMs: 30 })), (s) => Effect.promise(() => s.close()))
      const client = Context.get(yield* Layer.build(LlmClient.layer(settingsFor(a.url), { replicas: [b.url] })), LlmClient)
      yield* ask(client, 40)
      expect(a.requests.length + b.requests.length).toBe(40)
      expect(a.requests.length).toBeGreaterThanOrEqual(10)
      expect(b.requests.length).toBeGreaterThanOrEqual(10)
    }).pipe(Effect.scoped))

  it.live("a replica that cannot be reached is left out: every request is answered by the other", () =>
    Effect.gen(function*() {
      const a = yield* Effect.acquireRelease(Effect.promise(() => startChatServer({ latencyMs: 5 })), (s) => Effect.promise(() => s.close()))
      const dead = `http://127.0.0.1:${yield* Effect.promise(closedPort)}/v1`
      const client = Context.get(yield* Layer.build(LlmClient.layer(settingsFor(dead), { replicas: [a.url] })), LlmClient)
      const answers = yield* ask(client, 30)
      expect(answers.length).toBe(30)
      expect(new Set(a.requests.map((r) => r.key)).size).toBe(30)
    }).pipe(Effect.scoped))

  it.live("a replica that accepts and drops every connection (a dead box behind an SSH tunnel) is left out too", () =>
    Effect.gen(function*() {
      const a = yield* Effect.acquireRelease(Effect.promise(() => startChatServer({ latencyMs: 5 })), (s) => Effect.promise(() => s.close()))
      let dropped = 0
      const resetter = yield* Effect.acquireRelease(
        Effect.promise(() => new Promise<net.Server>((resolve) => {
          const s = net.createServer((socket) => {
            dropped++
            socket.resetAndDestroy()
          })
          s.listen(0, "127.0.0.1", () => resolve(s))
        })),
        (s) => Effect.promise(() => new Promise<void>((r) => s.close(() => r())))
      )
      const dead = `http://127.0.0.1:${(resetter.address() as net.AddressInfo).port}/v1`
      const client = Context.get(yield* Layer.build(LlmClient.layer(settingsFor(dead), { replicas: [a.url] })), LlmClient)
      const answers = yield* ask(client, 30)
      expect(answers.length).toBe(30)
      expect(new Set(a.requests.map((r) => r.key)).size).toBe(30)
      // Left out after its first drops, not asked once per request (the SDK retries a reset itself a few times).
      expect(dropped).toBeLessThan(20)
    }).pipe(Effect.scoped))
})
