import { describe, expect, it } from "@effect/vitest"
import { Console, Effect, Layer } from "effect"
import * as http from "node:http"
import type * as net from "node:net"
import type { RunningService } from "../../src/compute/ServiceSpec.ts"
import type { ResolvedConfig } from "../../src/config/ConfigLoader.ts"
import type { AuditRequest, InferRequest, TeacherRunRequest, TrainRunRequest } from "../../src/pipeline/RunGraph.ts"
import { pipelineDrivers, type SharedComputeParts } from "../../src/pipeline/RunPipeline.ts"
import { classifierSpec } from "../../src/pipeline/ServicePlacement.ts"
import type { VllmAccess } from "../../src/pipeline/VllmServers.ts"
import { type RunHandle, RunStore } from "../../src/runs/RunStore.ts"
import { resolvedFor } from "../support/RunConfig.ts"
import { noCompute } from "../support/NoCompute.ts"

// `dart run`'s compute across stages, with the stage code and the container starts stood in for: one server for every
// stage, opened on first use and closed once at the end; the teacher of provider vllm bound to it; on a GPU host the
// server sleeps while the trainer or the classifiers need the GPU and wakes for the next stage that asks.

/** A loopback stand-in for vLLM's dev-mode /sleep and /wake_up that records each call. */
const sleepServer = () =>
  Effect.acquireRelease(
    Effect.promise(() =>
      new Promise<{ url: string; calls: Array<string>; server: http.Server }>((resolve) => {
        const calls: Array<string> = []
        const server = http.createServer((req, res) => {
          calls.push(`${req.method} ${req.url}`)
          res.writeHead(req.url === "/sleep?level=1" || req.url === "/wake_up" ? 200 : 404)
          res.end()
        })
        server.listen(0, "127.0.0.1", () => resolve({ url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`, calls, server }))
      })
    ),
    (s) => Effect.promise(() => new Promise<void>((resolve) => s.server.close(() => resolve())))
  )

const fakeParts = (url: string, gpus: RunningService["spec"]["gpus"], events: Array<string>): SharedComputeParts => {
  const service = { spec: { name: "vllm", gpus } as RunningService["spec"], host: "local", id: "c1", endpoint: url, reused: false } as RunningService
  const access: VllmAccess = { servers: [url], layer: Layer.empty as unknown as VllmAccess["layer"], services: [service] }
  const record = (what: string) => Effect.sync(() => void events.push(what))
  return {
    openVllm: () => Effect.acquireRelease(record("vllm up").pipe(Effect.as(access)), () => record("vllm down")),
    openClassifiers: (resolved) =>
      Effect.acquireRelease(
        record("classifiers up").pipe(Effect.as(resolved.config.audit.classifiers.map((c) => classifierSpec(c, "http://127.0.0.1:1")))),
        () => record("classifiers down")
      ),
    removeOrphans: () => record("orphans").pipe(Effect.as(["killed-vllm"])),
    // On one GPU box the trainer and the classifiers share the replica's GPU (Placement.ts).
    sharing: () => Effect.succeed(["vllm"]),
    stages: {
      init: () => record("init"),
      teacher: (r, request, _run, open) =>
        record(`teacher ${request.task} at ${open?.teacher?.base_url === `${url}/v1` ? "the shared server" : open?.teacher?.base_url}`).pipe(
          // The run's config itself is never a mailbox for the started server.
          Effect.tap(() => Effect.sync(() => expect(r.config.teacher.base_url).toBe(null)))
        ),
      train: (_r, request) => record(`train ${request.adapterName}`),
      infer: (_r, request, _run, open) => record(`infer ${request.split} on ${open?.vllm?.servers[0] === url ? "the shared server" : open?.vllm?.servers[0]}`),
      audit: (_r, request, _run, open) => record(`audit ${request.runName} (classifiers at ${open?.classifiers?.map((c) => c.endpoint).join(",")})`),
      evaluate: () => record("evaluate")
    }
  }
}

const run = {} as RunHandle
const teacher = (task: "distill" | "repair") => ({ task, input: null }) as unknown as TeacherRunRequest
const train = (adapterName: string) => ({ adapterName }) as unknown as TrainRunRequest
const infer = (split: string) => ({ split }) as unknown as InferRequest
const audit = (runName: string) => ({ runName }) as unknown as AuditRequest

/** The stages of `dart run` in order, through the shared drivers, in one scope. */
const pipeline = (resolved: ResolvedConfig, parts: SharedComputeParts, events: Array<string>) =>
  Effect.scoped(Effect.gen(function*() {
    const d = yield* pipelineDrivers(resolved, "/nonexistent", parts)
    yield* d.start!
    yield* d.teacher(resolved, teacher("distill"), run)
    yield* d.train(resolved, train("DART"), run)
    yield* d.infer(resolved, infer("val"), run)
    yield* d.audit(resolved, audit("audit_val"), run)
    yield* d.teacher(resolved, teacher("repair"), run)
    yield* d.train(resolved, train("DART_H"), run)
    yield* d.infer(resolved, infer("test"), run)
    yield* d.audit(resolved, audit("audit_test_dart"), run)
    yield* d.audit(resolved, audit("audit_test_dart_h"), run)
    events.push("scope closing")
  })).pipe(Effect.provideService(Console.Console, { ...globalThis.console, error: () => {}, log: () => {} }), Effect.provide(RunStore.layer), Effect.provide(noCompute))

describe("dart run's compute across stages", () => {
  it.effect("one server for every stage and the teacher; on a GPU host it sleeps while the trainer or the classifiers work", () =>
    Effect.scoped(Effect.gen(function*() {
      const stand = yield* sleepServer()
      const events: Array<string> = []
      const resolved = resolvedFor("configs/exp_acl.json", ["teacher.provider=vllm", "teacher.model=base", "judge.provider=openai"])
      yield* pipeline(resolved, fakeParts(stand.url, "all", events), events)
      expect(events).toEqual([
        "orphans",
        "vllm up",
        "teacher distill at the shared server",
        "train DART",
        "infer val on the shared server",
        // On a GPU host the classifiers hold device memory for their audit only.
        "classifiers up",
        "audit audit_val (classifiers at http://127.0.0.1:1,http://127.0.0.1:1)",
        "classifiers down",
        "teacher repair at the shared server",
        "train DART_H",
        "infer test on the shared server",
        "classifiers up",
        "audit audit_test_dart (classifiers at http://127.0.0.1:1,http://127.0.0.1:1)",
        "classifiers down",
        "classifiers up",
        "audit audit_test_dart_h (classifiers at http://127.0.0.1:1,http://127.0.0.1:1)",
        "classifiers down",
        "scope closing",
        "vllm down"
      ])
      // Asleep for each training and for the audits (whose judge is an API), awake for the teacher and inference.
      expect(stand.calls).toEqual([
        "POST /sleep?level=1", // train DART
        "POST /wake_up", // infer val
        "POST /sleep?level=1", // audit
        "POST /wake_up", // repair teacher
        "POST /sleep?level=1", // train DART_H
        "POST /wake_up", // infer test
        "POST /sleep?level=1" // both test audits
      ])
    })))

  it.effect("never sleeps on a CPU host, and keeps the server awake for audits whose judge is the run's own server", () =>
    Effect.scoped(Effect.gen(function*() {
      const stand = yield* sleepServer()
      const cpu: Array<string> = []
      yield* pipeline(resolvedFor("configs/smoke.json"), fakeParts(stand.url, null, cpu), cpu)
      expect(cpu.filter((e) => e.startsWith("vllm"))).toEqual(["vllm up", "vllm down"])
      expect(stand.calls).toEqual([])
      // On CPU the classifiers start once and stay for the run.
      expect(cpu.filter((e) => e.startsWith("classifiers"))).toEqual(["classifiers up", "classifiers down"])
      expect(cpu.at(-2)).toBe("classifiers down")
      const gpu: Array<string> = []
      yield* pipeline(resolvedFor("configs/smoke.json", ["teacher.provider=openai", "teacher.model=gpt-4o-mini"]), fakeParts(stand.url, "all", gpu), gpu)
      // The teacher is an API: the server starts at the first inference; sleeps only for training.
      expect(gpu.indexOf("vllm up")).toBe(gpu.indexOf("train DART") + 1)
      expect(stand.calls).toEqual(["POST /sleep?level=1", "POST /wake_up"])
    })))
})
