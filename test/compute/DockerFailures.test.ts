import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Redacted } from "effect"
import { execFileSync, spawnSync } from "node:child_process"
import { mkdtempSync, readdirSync, readFileSync, rmSync, statfsSync, writeFileSync } from "node:fs"
import { hostname, tmpdir } from "node:os"
import * as path from "node:path"
import { ComputeError } from "../../src/compute/ComputeError.ts"
import { preflight, removeOrphans, startService } from "../../src/compute/DockerBackend.ts"
import { connectHost, type HostConfig, ownerId } from "../../src/compute/DockerHost.ts"
import type { ServiceSpec } from "../../src/compute/ServiceSpec.ts"
import { containersOf, ensureTestImage, freePort, makeCerts, recordingProxy, SOCKET, TEST_IMAGE, testSpec, tlsProxy, uniqueExp } from "../support/DockerEngine.ts"

const scratch = mkdtempSync(path.join(tmpdir(), "dart-compute-fail-"))
let certs = ""
let otherCa = ""
let proxy: Awaited<ReturnType<typeof tlsProxy>>
beforeAll(async () => {
  await ensureTestImage()
  certs = makeCerts(path.join(scratch, "certs"))
  otherCa = makeCerts(path.join(scratch, "other"), "another-ca")
  proxy = await tlsProxy(certs)
}, 180_000)
afterAll(async () => {
  await proxy?.close()
  rmSync(scratch, { recursive: true, force: true })
})

const local: HostConfig = { name: "local", docker: `unix://${SOCKET}` }

/** Start `spec` on `host` in its own scope; the failure's message, and no container left of `exp`. */
const startFails = (host: HostConfig, spec: ServiceSpec, exp: string) =>
  Effect.gen(function*() {
    const exit = yield* Effect.scoped(Effect.gen(function*() {
      const h = yield* connectHost(host)
      return yield* startService(h, spec, { expId: exp, logsDir: path.join(scratch, exp), keep: false, healthTimeout: "30 seconds", pull: true })
    })).pipe(Effect.exit)
    expect(Exit.isFailure(exit)).toBe(true)
    const error = Exit.isFailure(exit) ? exit.cause.reasons.find((r) => r._tag === "Fail")?.error : undefined
    expect(error).toBeInstanceOf(ComputeError)
    expect(containersOf(exp)).toEqual([])
    return (error as ComputeError).message
  })

const preflightFails = (host: HostConfig) =>
  Effect.scoped(Effect.gen(function*() {
    const h = yield* connectHost(host)
    return yield* preflight(h, { images: [], gpus: false, pull: false })
  })).pipe(Effect.flip, Effect.map((e) => e.message))

describe("compute failures are clear and leave nothing behind", () => {
  it.live("a host that does not answer", () =>
    Effect.gen(function*() {
      const port = yield* Effect.promise(freePort)
      expect(yield* preflightFails({ name: "gone", docker: `tcp://127.0.0.1:${port}`, cert_path: certs })).toMatch(/does not answer: .*ECONNREFUSED/)
      const key = path.join(scratch, "id_ed25519")
      execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", key])
      expect(yield* preflightFails({ name: "gone", docker: `ssh://root@127.0.0.1:${port}`, identity_file: key })).toMatch(/ssh root@127.0.0.1:\d+: .*ECONNREFUSED/)
      writeFileSync(path.join(scratch, "not-a-key"), "hello\n")
      expect(yield* preflightFails({ name: "gone", docker: `ssh://root@127.0.0.1:${port}`, identity_file: path.join(scratch, "not-a-key") })).toContain("Cannot parse privateKey")
    }), 60_000)

  it.live("TLS with a wrong CA", () =>
    Effect.gen(function*() {
      const message = yield* preflightFails({ name: "tls", docker: `tcp://127.0.0.1:${proxy.port}`, cert_path: otherCa })
      expect(message).toMatch(/certificate|self.signed|alert/i)
      // The right CA answers (so the failure above is the CA's doing).
      const ok = yield* Effect.scoped(Effect.gen(function*() {
        const h = yield* connectHost({ name: "tls", docker: `tcp://127.0.0.1:${proxy.port}`, cert_path: certs })
        return yield* preflight(h, { images: [], gpus: false, pull: false })
      }))
      expect(ok.api).toMatch(/^1\.\d+$/)
    }), 60_000)

  it.live("an image that does not exist", () =>
    Effect.gen(function*() {
      const port = yield* Effect.promise(freePort)
      const message = yield* startFails(local, testSpec(port, { image: "dart-no-such-image:0" }), uniqueExp("img"))
      expect(message).toContain("image dart-no-such-image:0 cannot be pulled")
    }), 60_000)

  it.live("a GPU request on an engine without NVIDIA support fails at start and the container is removed", () =>
    Effect.gen(function*() {
      const port = yield* Effect.promise(freePort)
      const message = yield* startFails(local, testSpec(port, { gpus: "all" }), uniqueExp("gpu"))
      expect(message).toContain("could not select device driver \"nvidia\" with capabilities: [[gpu]]")
      const probe = yield* Effect.scoped(Effect.gen(function*() {
        const h = yield* connectHost(local)
        return yield* preflight(h, { images: [], gpus: true, pull: false })
      })).pipe(Effect.flip)
      expect(probe.message).toContain("no NVIDIA runtime")
    }), 60_000)

  it.live("free disk: measured in the engine's data folder by a throwaway container; too little is a clear error", () =>
    Effect.gen(function*() {
      // This process's probes only: other test files probe the same engine at the same time.
      const probes = () =>
        execFileSync("docker", ["ps", "-aq", "--filter", "label=dart.role=disk-probe", "--filter", `label=dart.owner=${ownerId()}`], { encoding: "utf8" }).trim()
      // The image declares a VOLUME: a probe removed without its anonymous volume leaves one behind, dangling.
      const dangling = () => new Set(execFileSync("docker", ["volume", "ls", "-q", "--filter", "dangling=true"], { encoding: "utf8" }).split("\n").filter(Boolean))
      const danglingBefore = dangling()
      const report = yield* Effect.scoped(Effect.gen(function*() {
        const h = yield* connectHost(local)
        return yield* preflight(h, { images: [], gpus: false, pull: false, probeImage: TEST_IMAGE, minFreeBytes: 1 })
      }))
      const disk = statfsSync(execFileSync("docker", ["info", "--format", "{{.DockerRootDir}}"], { encoding: "utf8" }).trim())
      // The same file system seen from outside: within 1 GiB (other work on the machine writes meanwhile).
      expect(Math.abs(report.freeBytes! - disk.bavail * disk.bsize)).toBeLessThan(2 ** 30)
      const tooLittle = yield* Effect.scoped(Effect.gen(function*() {
        const h = yield* connectHost(local)
        return yield* preflight(h, { images: [], gpus: false, pull: false, probeImage: TEST_IMAGE, minFreeBytes: 2 ** 60 })
      })).pipe(Effect.flip)
      expect(tooLittle.message).toMatch(/only [\d.]+ GiB free in .* \(the engine's data\); at least \d+\.\d GiB are needed/)
      expect(probes()).toBe("")
      expect([...dangling()].filter((v) => !danglingBefore.has(v))).toEqual([])
    }), 60_000)

  it.live("a probe left by a killed process is an orphan of any experiment; a live process's probe is kept", () =>
    Effect.gen(function*() {
      // A pid that existed and is gone, and this (live) process.
      const dead = spawnSync("true").pid!
      const probe = (owner: string) =>
        execFileSync("docker", ["create", "--network", "none", "--label", "dart.managed=true", "--label", "dart.role=disk-probe",
          "--label", `dart.owner=${owner}`, "--entrypoint", "true", TEST_IMAGE], { encoding: "utf8" }).trim().slice(0, 12)
      const orphan = probe(`${hostname()}:${dead}`)
      const alive = probe(ownerId())
      try {
        const removed = yield* Effect.scoped(Effect.gen(function*() {
          const h = yield* connectHost(local)
          return yield* removeOrphans(h, uniqueExp("orph"))
        }))
        expect(removed.length).toBeGreaterThanOrEqual(1)
        const left = execFileSync("docker", ["ps", "-aq", "--filter", "label=dart.role=disk-probe"], { encoding: "utf8" })
        expect(left).not.toContain(orphan)
        expect(left).toContain(alive)
      } finally {
        execFileSync("docker", ["rm", "-f", "-v", orphan, alive], { stdio: "ignore" })
      }
    }), 60_000)

  it.live("a service that exits before it is healthy: its exit code and log tail", () =>
    Effect.gen(function*() {
      const port = yield* Effect.promise(freePort)
      const message = yield* startFails(local, testSpec(port, { env: { DART_TEST_EXIT: "1" } }), uniqueExp("exit"))
      expect(message).toContain("svc exited with code 3 before it was healthy")
      expect(message).toContain(`serving on 127.0.0.1:${port}`)
    }), 60_000)

  it.live("no secret in request URLs, logs or runs/ (HTTP traffic to the engine recorded)", () =>
    Effect.gen(function*() {
      const rec = yield* Effect.promise(() => recordingProxy(scratch))
      const exp = uniqueExp("sec")
      const port = yield* Effect.promise(freePort)
      const secret = "hf_SECRETtoken0123456789"
      const logsDir = path.join(scratch, exp, "logs")
      yield* Effect.scoped(Effect.gen(function*() {
        const h = yield* connectHost({ name: "rec", docker: `unix://${rec.socket}` })
        const s = yield* startService(h, testSpec(port, { secretEnv: { HF_TOKEN: Redacted.make(secret) } }), { expId: exp, logsDir, keep: false, healthTimeout: "30 seconds", pull: false })
        const env = (yield* Effect.promise(() => h.docker.getContainer(s.id).inspect())).Config.Env
        // It did reach the container (so the checks below look at a run that carried it).
        expect(env).toContain(`HF_TOKEN=${secret}`)
      }))
      yield* Effect.promise(() => rec.close())
      const sent = rec.sent()
      const requestLines = sent.split("\r\n").filter((l) => /^(GET|POST|PUT|DELETE|HEAD) /.test(l))
      expect(requestLines.some((l) => l.startsWith("POST /containers/create?name="))).toBe(true)
      expect(requestLines.filter((l) => l.includes(secret) || l.includes("HF_TOKEN"))).toEqual([])
      // Only the create body carries it.
      expect(sent.split(secret).length - 1).toBe(1)
      for (const f of readdirSync(logsDir)) expect(readFileSync(path.join(logsDir, f), "utf8")).not.toContain(secret)
      expect(containersOf(exp)).toEqual([])
    }), 60_000)
})
