import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { TestClock } from "effect/testing"
import { makeServerScheduler, type ServerHandle } from "../../src/inference/ServerScheduler.ts"
import type { VllmEndpoint } from "../../src/serving/VllmClient.ts"

/** An endpoint whose /health answers `healthy()`; its queue is always empty. */
const endpoint = (url: string, healthy: () => boolean) =>
  ({
    url,
    health: Effect.sync(healthy),
    metrics: Effect.succeed({ running: 0, waiting: 0, kvCacheUsage: null, lora: null })
  }) as unknown as VllmEndpoint

const timing = { healthIntervalMs: 100, metricsIntervalMs: 100, downTimeoutMs: 1000 }

/** Runs `effect` while moving the test clock on in 100 ms steps. */
const withTime = <A, E>(effect: Effect.Effect<A, E>, steps = 50) =>
  Effect.gen(function*() {
    const fiber = yield* Effect.forkChild(effect)
    for (let k = 0; k < steps && fiber.pollUnsafe() === undefined; k++) yield* TestClock.adjust(100)
    return yield* Fiber.join(fiber)
  })

describe("ServerScheduler", () => {
  it.effect("a unit that fails (an answer that cannot be stored) ends the run with that failure instead of hanging", () =>
    Effect.gen(function*() {
      const scheduler = yield* makeServerScheduler({
        servers: ["http://a"],
        endpoint: (url) => endpoint(url, () => true),
        maxConcurrency: 2,
        ...timing,
        prepare: (s) => Effect.sync(() => ((s.baseId = "base"), true))
      })
      const process = (_s: ServerHandle, unit: number) => (unit === 3 ? Effect.fail("ENOSPC: no space left on device" as const) : Effect.succeed(true))
      const result = yield* withTime(Effect.scoped(scheduler.run([0, 1, 2, 3, 4, 5], process)).pipe(Effect.flip))
      expect(result).toBe("ENOSPC: no space left on device")
    }))

  it.effect("work goes to the servers that are up; a unit handed back by a server going down is done by another", () =>
    Effect.gen(function*() {
      const up = new Map([["http://a", true], ["http://b", true], ["http://c", false]])
      const done: Array<[string, number]> = []
      let handedBack: number | undefined
      const scheduler = yield* makeServerScheduler({
        servers: [...up.keys()],
        endpoint: (url) => endpoint(url, () => up.get(url)!),
        maxConcurrency: 1,
        ...timing,
        prepare: (s) => Effect.sync(() => ((s.baseId = "base"), true))
      })
      const process = (s: ServerHandle, unit: number) =>
        Effect.gen(function*() {
          if (s.url === "http://a" && handedBack === undefined) {
            // a dies while asking for the first unit it takes: it stays down, the unit goes back to the queue.
            handedBack = unit
            up.set("http://a", false)
            yield* s.markDown("gone")
            return false
          }
          done.push([s.url, unit])
          s.countAnswer()
          return true
        })
      yield* withTime(Effect.scoped(scheduler.run([0, 1, 2, 3, 4, 5], process)))
      expect(done.map(([, u]) => u).sort()).toEqual([0, 1, 2, 3, 4, 5])
      expect(done.filter(([url]) => url === "http://c")).toEqual([])
      expect(done.filter(([, u]) => u === handedBack)).toEqual([["http://b", handedBack]])
      const report = scheduler.report()
      expect(report.map((s) => [s.url, s.up, s.baseId])).toEqual([["http://a", false, "base"], ["http://b", true, "base"], ["http://c", false, null]])
      expect(report.reduce((n, s) => n + s.answered, 0)).toBe(6)
      expect(report[0]!.concurrency).toEqual({ final: 1, min: 1, max: 1 })
    }))

  it.effect("no server up for downTimeoutMs: NoServerAnswered names the servers", () =>
    Effect.gen(function*() {
      const scheduler = yield* makeServerScheduler({
        servers: ["http://a", "http://b"],
        endpoint: (url) => endpoint(url, () => false),
        maxConcurrency: 2,
        ...timing,
        prepare: () => Effect.succeed(true)
      })
      const error = yield* withTime(Effect.flip(Effect.scoped(scheduler.run([0], () => Effect.succeed(true)))))
      expect(error).toMatchObject({
        _tag: "NoServerAnswered",
        message: "no vLLM server answered for 1 s (http://a, http://b); answers so far are kept, run again to go on"
      })
    }))

  it.effect("a server not ready yet is asked again; a failing prepare ends the run with its error", () =>
    Effect.gen(function*() {
      let tries = 0
      const scheduler = yield* makeServerScheduler({
        servers: ["http://a"],
        endpoint: (url) => endpoint(url, () => true),
        maxConcurrency: 1,
        ...timing,
        prepare: () => (++tries < 3 ? Effect.succeed(false) : Effect.fail("adapter broken" as const))
      })
      const error = yield* withTime(Effect.flip(Effect.scoped(scheduler.run([0], () => Effect.succeed(true)))))
      expect(error).toBe("adapter broken")
      expect(tries).toBe(3)
    }))

  it.effect("a short queue is shared: the first server up does not take it whole while another is still coming up", () =>
    Effect.gen(function*() {
      // b passes its preparation a few checks after a; both have room for every unit at once.
      let checks = 0
      const done = new Map<string, number>()
      const scheduler = yield* makeServerScheduler({
        servers: ["http://a", "http://b"],
        endpoint: (url) => endpoint(url, () => true),
        maxConcurrency: 32,
        ...timing,
        prepare: (s) => Effect.sync(() => ((s.baseId = "base"), s.url === "http://a" || ++checks > 3))
      })
      const process = (s: ServerHandle, _unit: number) =>
        Effect.sleep("1 second").pipe(Effect.andThen(Effect.sync(() => (done.set(s.url, (done.get(s.url) ?? 0) + 1), true))))
      yield* withTime(Effect.scoped(scheduler.run(Array.from({ length: 16 }, (_, i) => i), process)), 100)
      expect(done.get("http://a")).toBe(8)
      expect(done.get("http://b")).toBe(8)
    }))
})
