import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { execFileSync } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import * as net from "node:net"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { removeAll, startService } from "../../src/compute/DockerBackend.ts"
import { connectHost } from "../../src/compute/DockerHost.ts"
import { containersOf, ensureTestImage, freePort, SOCKET, TEST_IMAGE, testSpec, uniqueExp } from "../support/DockerEngine.ts"
import { engine2Processes, type SecondEngine, startSecondEngine } from "../support/SecondEngine.ts"

// A second real Docker engine on this machine, reached by DART as a remote box over ssh:// (test/support/SecondEngine.ts),
// beside the main engine; then its network is cut, then the box dies, then it comes back.
const scratch = mkdtempSync(path.join(tmpdir(), "dart-engine2-test-"))
let box: SecondEngine | undefined
const exps: Array<string> = []

beforeAll(async () => {
  await ensureTestImage()
  // Waits for another test file's engine 2 (the lock) and copies the test image in when it is missing.
  box = await startSecondEngine({ images: [TEST_IMAGE] })
}, 600_000)

afterAll(async () => {
  // Should a failure have left containers of this file's experiments, they go (the test checks cleanliness itself).
  for (const exp of exps) {
    for (const id of containersOf(exp)) execFileSync("docker", ["rm", "-fv", id], { stdio: "ignore" })
    const left = (() => {
      try {
        return box?.containers(exp) ?? []
      } catch {
        return [] // engine 2 is down
      }
    })()
    for (const id of left) execFileSync("docker", ["-H", `unix://${box!.socket}`, "rm", "-fv", id], { stdio: "ignore" })
  }
  await box?.stop()
  rmSync(scratch, { recursive: true, force: true })
  // Nothing of engine 2 runs once stopped (its image cache stays on disk).
  expect(engine2Processes()).toEqual([])
}, 120_000)

const get = (url: string) => Effect.promise(() => fetch(url, { signal: AbortSignal.timeout(5000) }).then((r) => r.text()))
const fails = (url: string) => Effect.promise(() => fetch(url, { signal: AbortSignal.timeout(5000) }).then((r) => r.text().then(() => false), () => true))
const accepts = (port: number) =>
  Effect.promise(() => new Promise<boolean>((r) => {
    const s = net.connect(port, "127.0.0.1", () => {
      s.destroy()
      r(true)
    })
    s.on("error", () => r(false))
  }))

describe("a second Docker engine reached over ssh", () => {
  it.live("a service on each engine; a cut network; a dead box; the box comes back and is cleaned up", () =>
    Effect.gen(function*() {
      const engine = box!
      const exp = uniqueExp("box2")
      exps.push(exp)
      const port = yield* Effect.promise(freePort)
      const mainPort = yield* Effect.promise(freePort)
      const options = { expId: exp, logsDir: path.join(scratch, exp, "logs"), keep: false, healthTimeout: "60 seconds", pull: false } as const
      const loginsBefore = engine.logins()
      yield* Effect.scoped(Effect.gen(function*() {
        const box2 = yield* connectHost(engine.hostConfig)
        const local = yield* connectHost({ name: "local", docker: `unix://${SOCKET}` })
        const [remote, mine] = yield* Effect.all([startService(box2, testSpec(port), options), startService(local, testSpec(mainPort), options)], { concurrency: 2 })
        expect(remote.reused).toBe(false)
        const info = yield* Effect.promise(() => box2.docker.getContainer(remote.id).inspect())
        expect(info.State.Health?.Status).toBe("healthy")
        expect(info.HostConfig.NetworkMode).toBe("host")
        // Each engine sees its own container only.
        expect(engine.containers(exp)).toEqual([remote.id.slice(0, 12)])
        expect(containersOf(exp)).toEqual([mine.id.slice(0, 12)])
        // Through the tunnel on the SSH connection (a local port other than the service's).
        expect(remote.endpoint).not.toBe(`http://127.0.0.1:${port}`)
        expect(yield* get(`${remote.endpoint}/health`)).toBe("ok\n")
        const tunnel = yield* box2.reach(port)
        expect(yield* get(`http://${tunnel.host}:${tunnel.port}/health`)).toBe("ok\n")
        expect(engine.logins() - loginsBefore).toBe(1)
        // Host networking on this same machine: the service also answers on its own port.
        expect(yield* get(`http://127.0.0.1:${port}/health`)).toBe("ok\n")

        // The network to the box is cut: the tunnel stops answering, the service itself lives on.
        yield* Effect.promise(() => engine.cutSsh())
        expect(yield* fails(`http://${tunnel.host}:${tunnel.port}/health`)).toBe(true)
        expect(yield* get(`http://127.0.0.1:${port}/health`)).toBe("ok\n")

        // The box dies: nothing answers on the service's port any more; the main engine's service is untouched.
        yield* Effect.promise(() => engine.kill())
        expect(yield* accepts(port)).toBe(false)
        expect(engine2Processes()).toEqual([])
        expect(yield* get(`${mine.endpoint}/health`)).toBe("ok\n")
        // The scope's release cannot reach box2 (ignored); it removes the main engine's container.
      }))
      expect(containersOf(exp)).toEqual([])

      // The box comes back (same socket and ssh address): its container is there, exited, until DART cleans up.
      yield* Effect.promise(() => engine.restart())
      expect(engine.containers(exp)).toHaveLength(1)
      const removed = yield* Effect.scoped(Effect.gen(function*() {
        const box2 = yield* connectHost(engine.hostConfig)
        return yield* removeAll(box2, exp)
      }))
      expect(removed).toHaveLength(1)
      expect(engine.containers(exp)).toEqual([])
    }), 60_000)
})
