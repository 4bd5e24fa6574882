// Docker API calls per second over one persistent SSH connection (DART's agent) vs dockerode's own ssh mode
// (a new SSH connection + `docker system dial-stdio` per call), same sshd, same engine, same run.
// Needs a running engine at /var/run/docker.sock, sshd and the docker CLI (dockerode's mode runs it remotely).
import Docker from "dockerode"
import { Effect } from "effect"
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { connectHost } from "../src/compute/DockerHost.ts"
import { startSshd } from "../test/support/DockerEngine.ts"

if (!existsSync("/var/run/docker.sock") || !existsSync("/usr/sbin/sshd")) {
  console.log("docker over ssh: skipped (needs a Docker engine at /var/run/docker.sock and /usr/sbin/sshd)")
  process.exit(0)
}
const dir = mkdtempSync(path.join(tmpdir(), "dart-bench-ssh-"))
const sshd = await startSshd(dir)
const calls = 40
const filters = { label: ["dart.exp=bench-none"] }
try {
  const persistent = await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const t0 = performance.now()
    const host = yield* connectHost({ name: "bench", docker: sshd.url, identity_file: sshd.identityFile })
    yield* Effect.promise(() => host.docker.listContainers({ all: true, filters }))
    const first = performance.now() - t0
    const t1 = performance.now()
    for (let i = 0; i < calls; i++) yield* Effect.promise(() => host.docker.listContainers({ all: true, filters }))
    return { first, perCall: (performance.now() - t1) / calls }
  })))
  const u = new URL(sshd.url)
  const own = new Docker({ protocol: "ssh", host: u.hostname, port: Number(u.port), username: u.username, sshOptions: { privateKey: readFileSync(sshd.identityFile) } } as Docker.DockerOptions)
  const ownCalls = 10
  const t2 = performance.now()
  for (let i = 0; i < ownCalls; i++) await own.listContainers({ all: true, filters })
  const ownPerCall = (performance.now() - t2) / ownCalls
  console.log(`docker over ssh: persistent connection ${(1000 / persistent.perCall).toFixed(1)} calls/s (${persistent.perCall.toFixed(1)} ms/call over ${calls}, first call incl. connect ${persistent.first.toFixed(0)} ms); ` +
    `dockerode ssh mode ${(1000 / ownPerCall).toFixed(1)} calls/s (${ownPerCall.toFixed(0)} ms/call over ${ownCalls}); ${(ownPerCall / persistent.perCall).toFixed(1)}x`)
} finally {
  await sshd.stop()
  rmSync(dir, { recursive: true, force: true })
}
