import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { runCanary } from "../../src/inference/Canary.ts"
import { canaryPrompts } from "../../src/inference/InferencePlan.ts"
import type { ChatRequest, VllmEndpoint } from "../../src/serving/VllmClient.ts"
import { type ChatLayout, layoutMessages, NATIVE } from "../../src/domain/ChatLayout.ts"

/** An endpoint whose chat answers `answer(model, prompt number)` and records each request. */
const endpoint = (answer: (model: string, prompt: number) => string, layout: ChatLayout = NATIVE) => {
  const asked: Array<ChatRequest> = []
  const ep = {
    url: "http://box:8000",
    chat: (request: ChatRequest) =>
      Effect.sync(() => {
        asked.push(request)
        const text = answer(request.model, canaryPrompts.findIndex((p) => JSON.stringify(layoutMessages(layout, p)) === JSON.stringify(request.messages)))
        return { texts: [text], finishReasons: ["stop"], promptTokens: 1, completionTokens: 1 }
      })
  } as unknown as VllmEndpoint
  return { ep, asked }
}

const arms = [{ name: "M0", adapter: null }, { name: "DART", adapter: "/a/dart" }, { name: "ZERO", adapter: "/a/zero" }]

describe("Canary", () => {
  it.effect("records per adapter how many greedy answers differ from the base", () =>
    Effect.gen(function*() {
      const { ep, asked } = endpoint((model, p) => (model === "base" || (model === "ZERO" && p > 0) ? `b${p}` : `${model}${p}`))
      const record = yield* runCanary({ endpoint: ep, server: "http://box:8000/v1", baseId: "base", arms, seed: 7 })
      expect(record).toEqual({
        DART: { server: "http://box:8000/v1", prompts: canaryPrompts.length, differing_from_base: canaryPrompts.length },
        ZERO: { server: "http://box:8000/v1", prompts: canaryPrompts.length, differing_from_base: 1 }
      })
      // The base first, then each adapter; greedy, short, with the run's seed.
      expect(asked.map((r) => r.model)).toEqual([...canaryPrompts.map(() => "base"), ...canaryPrompts.map(() => "DART"), ...canaryPrompts.map(() => "ZERO")])
      expect(asked[0]!.sampling).toEqual({ temperature: 0, top_p: 1, top_k: null, max_tokens: 24, seed: 7 })
    }))

  it.effect("asks with the run's chat layout: system text folded, the end-of-turn stop added", () =>
    Effect.gen(function*() {
      const layout: ChatLayout = { system: "folded", stopTokenIds: [107] }
      const { ep, asked } = endpoint((model, p) => (p < 0 ? "unknown prompt" : `${model}${p}`), layout)
      yield* runCanary({ endpoint: ep, server: "s", baseId: "base", arms: arms.slice(0, 2), seed: 0, layout })
      expect(asked.every((r) => r.messages.every((m) => m.role !== "system") && r.stopTokenIds?.[0] === 107)).toBe(true)
      expect(asked[0]!.messages[0]!.content.startsWith(canaryPrompts[0]![0]!.content + "\n\n")).toBe(true)
    }))

  it.effect("an adapter answering exactly like the base fails with the canary message", () =>
    Effect.gen(function*() {
      const { ep } = endpoint((model, p) => (model === "DART" ? `D${p}` : `b${p}`))
      const error = yield* Effect.flip(runCanary({ endpoint: ep, server: "http://box:8000", baseId: "base", arms, seed: 0 }))
      expect(error._tag).toBe("CanaryError")
      expect(error.message).toBe(
        `canary failed on http://box:8000: adapter "ZERO" (/a/zero) gives exactly the base model's greedy answers on all ${canaryPrompts.length} canary prompts, ` +
          "so it is probably not applied (vLLM silently serves the base for adapters whose module names it does not match, vllm#34186); check its target modules and weights"
      )
    }))

  it.effect("no adapter arm: nothing is asked", () =>
    Effect.gen(function*() {
      const { ep, asked } = endpoint(() => "x")
      expect(yield* runCanary({ endpoint: ep, server: "s", baseId: "base", arms: [{ name: "M0", adapter: null }], seed: 0 })).toEqual({})
      expect(asked).toEqual([])
    }))
})
