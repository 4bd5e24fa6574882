import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { createHash, randomBytes } from "node:crypto"
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { specHash } from "../../src/compute/ContainerSpecs.ts"
import { getPath, putDirectory, startService } from "../../src/compute/DockerBackend.ts"
import { connectHost, type HostConfig, ownerId } from "../../src/compute/DockerHost.ts"
import { containersOf, ensureTestImage, freePort, makeCerts, SOCKET, startSshd, testSpec, tlsProxy, uniqueExp } from "../support/DockerEngine.ts"

// The same lifecycle over the three transports: the local socket, tcp:// with TLS (client certificate required)
// and ssh:// through one persistent SSH connection to an sshd on loopback.
const scratch = mkdtempSync(path.join(tmpdir(), "dart-compute-"))
const hosts: Record<string, HostConfig> = {}
let proxy: Awaited<ReturnType<typeof tlsProxy>>
let sshd: Awaited<ReturnType<typeof startSshd>>

beforeAll(async () => {
  await ensureTestImage()
  const certs = makeCerts(path.join(scratch, "certs"))
  proxy = await tlsProxy(certs)
  sshd = await startSshd(path.join(scratch, "ssh"))
  hosts.unix = { name: "local", docker: `unix://${SOCKET}` }
  hosts.tls = { name: "tls", docker: `tcp://127.0.0.1:${proxy.port}`, cert_path: certs }
  hosts.ssh = { name: "ssh", docker: sshd.url, identity_file: sshd.identityFile }
}, 180_000)

afterAll(async () => {
  await proxy?.close()
  await sshd?.stop()
  rmSync(scratch, { recursive: true, force: true })
})

const sha = (data: Buffer) => createHash("sha256").update(data).digest("hex")

describe.each(["unix", "tls", "ssh"])("Docker over %s", (transport) => {
  it.live("create → healthy → logs captured → reused with the same spec → removed at scope end", () =>
    Effect.gen(function*() {
      const exp = uniqueExp("life")
      const port = yield* Effect.promise(freePort)
      const spec = testSpec(port)
      const logsDir = path.join(scratch, exp, "logs")
      const loginsBefore = transport === "ssh" ? sshd.logins() : 0
      const { id, channels } = yield* Effect.scoped(Effect.gen(function*() {
        const host = yield* connectHost(hosts[transport]!)
        const s = yield* startService(host, spec, { expId: exp, logsDir, keep: false, healthTimeout: "60 seconds", pull: false })
        expect(s.reused).toBe(false)
        // Reachable from here: directly, or through a tunnel on the SSH connection.
        const reply = yield* Effect.promise(() => fetch(`${s.endpoint}/health`).then((r) => r.text()))
        expect(reply).toBe("ok\n")
        const info = yield* Effect.promise(() => host.docker.getContainer(s.id).inspect())
        expect(info.Config.Labels).toMatchObject({ "dart.managed": "true", "dart.exp": exp, "dart.role": "vllm", "dart.service": "svc", "dart.spec": specHash(spec), "dart.owner": ownerId() })
        expect(info.HostConfig.Init).toBe(true)
        expect(info.HostConfig.NetworkMode).toBe("host")
        // Same spec, nested scope: the running container is reused, and its closing leaves it running.
        const again = yield* Effect.scoped(startService(host, spec, { expId: exp, logsDir, keep: false, healthTimeout: "60 seconds", pull: false }))
        expect(again).toMatchObject({ reused: true, id: s.id })
        expect(containersOf(exp)).toHaveLength(1)
        // A different spec replaces it.
        return { id: s.id, channels: host.sshStats().channels }
      }))
      expect(containersOf(exp)).toEqual([])
      const log = readFileSync(path.join(logsDir, `${hosts[transport]!.name}-svc.log`), "utf8")
      expect(log).toContain(`serving on 127.0.0.1:${port}`)
      expect(log).toContain("request GET /health")
      expect(id).toMatch(/^[0-9a-f]{64}$/)
      if (transport === "ssh") {
        // Every API call and the tunnel rode one SSH login.
        expect(sshd.logins() - loginsBefore).toBe(1)
        expect(channels).toBeGreaterThan(10)
      }
    }), 120_000)

  it.live("put/get archive round trip of a 50 MB file, checksums equal, into a folder the image lacks", () =>
    Effect.gen(function*() {
      const exp = uniqueExp("copy")
      const port = yield* Effect.promise(freePort)
      const local = path.join(scratch, exp, "adapter")
      mkdirSync(path.join(local, "sub"), { recursive: true })
      const big = randomBytes(50 * 1024 * 1024)
      writeFileSync(path.join(local, "adapter_model.safetensors"), big, { mode: 0o600 })
      writeFileSync(path.join(local, "sub", "adapter_config.json"), "{\"r\": 8}\n")
      yield* Effect.scoped(Effect.gen(function*() {
        const host = yield* connectHost(hosts[transport]!)
        const s = yield* startService(host, testSpec(port), { expId: exp, logsDir: path.join(scratch, exp, "logs"), keep: false, healthTimeout: "60 seconds", pull: false })
        const put = yield* putDirectory(host, s.id, local, "/adapters/DART")
        expect(put.path).toBe("/adapters/DART")
        expect(put.files.find((f) => f.path === "adapter_model.safetensors")?.sha256).toBe(sha(big))
        const back = path.join(scratch, exp, "back")
        const got = yield* getPath(host, s.id, "/adapters/DART", back)
        expect(got.find((f) => f.path === "adapter_model.safetensors")).toEqual({ path: "adapter_model.safetensors", size: big.length, sha256: sha(big) })
        expect(sha(readFileSync(path.join(back, "adapter_model.safetensors")))).toBe(sha(big))
        expect(readFileSync(path.join(back, "sub", "adapter_config.json"), "utf8")).toBe("{\"r\": 8}\n")
        // A single file comes back inside the folder under its own name.
        const one = yield* getPath(host, s.id, "/adapters/DART/sub/adapter_config.json", path.join(scratch, exp, "one"))
        expect(one.map((f) => f.path)).toEqual(["adapter_config.json"])
      }))
      expect(containersOf(exp)).toEqual([])
    }), 180_000)
})
