import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Schema, type Scope, Stream } from "effect"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as http from "node:http"
import * as os from "node:os"
import * as path from "node:path"
import { Compute } from "../../src/compute/Compute.ts"
import { slurmCompute } from "../../src/compute/slurm/SlurmCompute.ts"
import { jobComment } from "../../src/compute/slurm/SlurmJobs.ts"
import { defaults, ExperimentConfig } from "../../src/config/ExperimentConfig.ts"
import { dartAsync } from "../support/AdapterFixture.ts"
import { startSshd, uniqueExp } from "../support/DockerEngine.ts"
import { freePortRun } from "../support/FreePort.ts"
import { ensureSlurm, type SlurmCluster, slurmJobs, haveTestCluster } from "../support/SlurmCluster.ts"

// The Slurm adapter's lifecycle on the real single-node cluster (scripts/setup-slurm.sh), over both transports:
// slurmrestd with a JWT (jobs run as the cluster user dart-slurm) and the command line over SSH to a local sshd.
// The services are a stand-in for vLLM's server (a Python HTTP server that answers /health), started by the venv
// launcher from a stand-in environment: what is tested is Slurm's side (jobs, GPUs, endpoints, loss, cleanup).

const SECRET = `hf_lifecycle_${Math.random().toString(36).slice(2)}`
let cluster: SlurmCluster
let sshd: Awaited<ReturnType<typeof startSshd>>
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), "dart-slurm-life-"))

beforeAll(async () => {
  if (!haveTestCluster()) return
  cluster = await ensureSlurm()
  sshd = await startSshd(path.join(scratch, "sshd"))
}, 120_000)
const started = new Set<string>()
afterAll(async () => {
  fs.rmSync(scratch, { recursive: true, force: true })
  // A failed test's shared folder too: /var/tmp outlives the run.
  for (const dir of folders) fs.rmSync(dir, { recursive: true, force: true })
  if (!haveTestCluster()) return
  // A failed test's jobs must not hold the cluster's GPUs for the next file.
  const left = (await slurmJobs((j) => [...started].some((e) => j.comment.includes(`exp=${e} `)))).filter((j) => !["COMPLETED", "CANCELLED", "FAILED"].includes(j.state))
  if (left.length > 0) execFileSync("scancel", left.map((j) => j.id))
  await sshd?.stop()
})

/** A folder under the cluster's shared root owned by `user`, with a stand-in vLLM environment in it. */
const folders: Array<string> = []
const sharedFolder = (user: string) => {
  const dir = fs.mkdtempSync(path.join("/var/tmp/dart-slurm", "life-"))
  folders.push(dir)
  const venv = path.join(dir, "venv")
  fs.mkdirSync(path.join(venv, "bin"), { recursive: true })
  fs.writeFileSync(path.join(venv, "bin", "python3"), [
    "#!/bin/bash",
    "# stand-in for `python3 -m vllm.entrypoints.openai.api_server ... --host H --port P`",
    "host=127.0.0.1; port=0",
    "while [ $# -gt 0 ]; do case \"$1\" in --host) host=$2; shift;; --port) port=$2; shift;; esac; shift; done",
    "echo \"stand-in on $host:$port hf_token_length=${#HF_TOKEN}\"",
    "exec /usr/bin/python3 -c '",
    "import http.server, sys",
    "class H(http.server.BaseHTTPRequestHandler):",
    "    def do_GET(self):",
    "        self.send_response(200); self.end_headers(); self.wfile.write(b\"ok\")",
    "    def log_message(self, *a): pass",
    "http.server.HTTPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()' \"$host\" \"$port\"",
    ""
  ].join("\n"), { mode: 0o755 })
  const uid = Number(execFileSync("id", ["-u", user], { encoding: "utf8" }))
  const gid = Number(execFileSync("id", ["-g", user], { encoding: "utf8" }))
  for (const p of [dir, venv, path.join(venv, "bin"), path.join(venv, "bin", "python3")]) fs.chownSync(p, uid, gid)
  return { dir, venv }
}

const makeConfig = (expId: string, port: number, slurm: Record<string, unknown>) =>
  started.add(expId) && Schema.decodeUnknownSync(ExperimentConfig)({
    ...defaults,
    run: { ...defaults.run, exp_id: expId, runs_dir: path.join(scratch, "runs") },
    model: { ...defaults.model, base: "/models/stand-in" },
    compute: {
      ...defaults.compute, backend: "slurm",
      vllm: { ...defaults.compute.vllm, replicas: 2, port },
      slurm: { ...defaults.compute.slurm, partition: "debug", device: "cpu", gpus_per_replica: 1, listen_host: "127.0.0.1", start_timeout_s: 60, ...slurm }
    }
  })

type Transport = "rest" | "cli over ssh"
const transports: ReadonlyArray<Transport> = ["rest", "cli over ssh"]

const settingsFor = (t: Transport, shared: { dir: string; venv: string }) =>
  t === "rest"
    ? { transport: "rest", rest_url: cluster.restUrl, user: cluster.user, shared_dir: shared.dir, venv: { vllm: shared.venv, trainer: null, trainer_source: null } }
    // Over SSH, the endpoints too: tunnels on the transport's one connection (reach "ssh").
    : { transport: "cli", ssh: sshd.url, identity_file: sshd.identityFile, reach: "ssh", shared_dir: shared.dir, venv: { vllm: shared.venv, trainer: null, trainer_source: null } }

let lastJwt = ""
/** Runs `f` with the adapter for `config`, SLURM_JWT and HF_TOKEN set for the duration. */
const withCompute = <A, E>(config: ExperimentConfig, runDir: string, f: (c: Compute["Service"]) => Effect.Effect<A, E, Scope.Scope>, jwt?: string) => {
  const saved = { jwt: process.env.SLURM_JWT, hf: process.env.HF_TOKEN }
  // Only the REST transport reads it; the command-line tools would take it as their identity (the cluster user).
  if (config.compute.slurm.transport === "rest") process.env.SLURM_JWT = lastJwt = jwt ?? cluster.token(600)
  else delete process.env.SLURM_JWT
  process.env.HF_TOKEN = SECRET
  return Effect.runPromiseExit(Effect.scoped(Effect.gen(function*() { return yield* f(yield* Compute) })).pipe(Effect.provide(slurmCompute(config, { runDir })))).finally(() => {
    for (const [k, v] of [["SLURM_JWT", saved.jwt], ["HF_TOKEN", saved.hf]] as const) {
      if (v === undefined) delete process.env[k]
      else process.env[k] = v
    }
  })
}

const activeJobs = async (expId: string) => (await slurmJobs((j) => j.comment.includes(`exp=${expId} `))).filter((j) => ["PENDING", "RUNNING", "COMPLETING", "CONFIGURING"].includes(j.state))

/** Every file under `dir`, as text. */
const allText = (dir: string): string =>
  fs.existsSync(dir) ? fs.readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => fs.readFileSync(path.join(e.parentPath, e.name), "utf8")).join("\n") : ""

describe.skipIf(!haveTestCluster()).each(transports)("Slurm adapter over %s", (transport) => {
  it("two replicas as jobs, each with its own GPU; secrets reach the jobs and no file; a cancelled replica is lost; nothing is left", async () => {
    const expId = uniqueExp("slurm")
    const shared = sharedFolder(transport === "rest" ? cluster.user : "root")
    const runDir = path.join(scratch, "runs", expId)
    const port = await freePortRun(2)
    const config = makeConfig(expId, port, settingsFor(transport, shared))
    const exit = await withCompute(config, runDir, (compute) =>
      Effect.gen(function*() {
        expect(compute.backend).toBe("slurm")
        const probe = yield* compute.probeHost("slurm")
        expect(probe.engine).toMatch(/^Slurm 22\.05\.\d+ \((v0\.0\.38|cli)\)$/)
        const replicas = yield* compute.vllm()
        expect(replicas.map((r) => r.spec.name)).toEqual(["vllm", "vllm-2"])
        if (transport === "rest") expect(replicas.map((r) => r.endpoint)).toEqual([`http://127.0.0.1:${port}`, `http://127.0.0.1:${port + 1}`])
        else for (const r of replicas) expect(r.endpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/), expect(r.endpoint).not.toMatch(new RegExp(`:(${port}|${port + 1})$`))
        for (const r of replicas) {
          const res = yield* Effect.promise(() => fetch(`${r.endpoint}/health`))
          expect(res.status).toBe(200)
        }
        const running = yield* Effect.promise(() => activeJobs(expId))
        expect(running.map((j) => j.state)).toEqual(["RUNNING", "RUNNING"])
        expect(running.every((j) => j.user === (transport === "rest" ? cluster.user : "root"))).toBe(true)
        const status = yield* compute.status()
        expect(status.map((s) => [s.name, s.health]).sort()).toEqual([["vllm", "healthy"], ["vllm-2", "healthy"]])

        // Each job printed the GPUs it got: one each, not the same one; and the secret's length, never its value.
        yield* Effect.sleep("1500 millis")
        const logs = ["vllm", "vllm-2"].map((n) => fs.readFileSync(path.join(runDir, "logs", `slurm-${n}.log`), "utf8"))
        const gpus = logs.map((l) => /CUDA_VISIBLE_DEVICES=(\S*)/.exec(l)?.[1])
        expect(gpus.every((g) => g !== undefined && /^\d$/.test(g))).toBe(true)
        expect(new Set(gpus).size).toBe(2)
        for (const l of logs) expect(l).toContain(`hf_token_length=${SECRET.length}`)

        // scancel of one replica: the adapter reports it lost.
        const events = yield* Stream.runHead(compute.replicaEvents(replicas).pipe(Stream.filter((e) => e.kind === "lost"))).pipe(Effect.forkChild)
        execFileSync("scancel", [replicas[1]!.id])
        const lost = yield* Fiber.await(events).pipe(Effect.timeout("30 seconds"))
        expect(lost._tag === "Success" && lost.value._tag === "Some" ? lost.value.value : undefined).toMatchObject({ kind: "lost", service: "vllm-2" })
      }))
    expect(exit._tag, Exit.isFailure(exit) ? String(exit.cause) : "").toBe("Success")
    // The scope's end cancelled every job; the secret is in no file dart or the jobs wrote.
    for (let i = 0; i < 20 && (await activeJobs(expId)).length > 0; i++) await new Promise((r) => setTimeout(r, 500))
    expect(await activeJobs(expId)).toEqual([])
    expect(allText(runDir)).not.toContain(SECRET)
    expect(allText(shared.dir)).not.toContain(SECRET)
    if (transport === "rest") for (const dir of [runDir, shared.dir]) expect(allText(dir)).not.toContain(lastJwt)
    expect(allText(path.join(shared.dir, "dart", expId, "logs"))).toContain("stand-in on 127.0.0.1")
    fs.rmSync(shared.dir, { recursive: true, force: true })
  }, 180_000)

  it("a partition that does not exist fails at once with Slurm's message; a killed run's job is swept by the next", async () => {
    const expId = uniqueExp("slurmbad")
    const shared = sharedFolder(transport === "rest" ? cluster.user : "root")
    const runDir = path.join(scratch, "runs", expId)
    const port = await freePortRun(2)
    const t0 = Date.now()
    const bad = await withCompute(makeConfig(expId, port, { ...settingsFor(transport, shared), partition: "nope" }), runDir, (c) => c.vllm())
    expect(Date.now() - t0).toBeLessThan(15_000)
    expect(Exit.isFailure(bad)).toBe(true)
    expect(String(Exit.isFailure(bad) ? bad.cause : "")).toMatch(/[Ii]nvalid partition/)

    // A port something else already holds on the node: the job refuses to start (it would announce that server).
    const squatter = http.createServer((_q, r) => r.end("not vLLM")).listen(port, "127.0.0.1")
    await new Promise((r) => squatter.once("listening", r))
    const taken = await withCompute(makeConfig(expId, port, settingsFor(transport, shared)), runDir, (c) => c.vllm())
    squatter.close()
    expect(String(Exit.isFailure(taken) ? taken.cause : "")).toContain(`dart: port ${port} is already in use`)

    // A job whose owner process is gone (a killed `dart`): removeOrphans cancels it; a living owner's job stays.
    const config = makeConfig(expId, port, settingsFor(transport, shared))
    const dead = `${os.hostname()}:${2 ** 22 + 12345}`
    const user = transport === "rest" ? cluster.user : "root"
    const submit = (service: string, owner: string) =>
      execFileSync("runuser", ["-u", user, "--", "sbatch", "--parsable", `--job-name=dart-${expId}-${service}`, `--comment=${jobComment({ expId, role: "vllm", service, spec: "x", owner })}`,
        "--partition=debug", "--time=5", "--output=/dev/null", "--chdir=/tmp", "--wrap", "sleep 300"], { encoding: "utf8" }).trim()
    const orphan = await submit("vllm", dead)
    const alive = await submit("vllm-2", `${os.hostname()}:${process.pid}`)
    const swept = await withCompute(config, runDir, (c) => c.removeOrphans())
    expect(swept).toEqual(Exit.succeed([`vllm (job ${orphan})`]))
    const left = await withCompute(config, runDir, (c) => c.down())
    expect(left).toEqual(Exit.succeed([`vllm-2 (job ${alive})`]))
    for (let i = 0; i < 20 && (await activeJobs(expId)).length > 0; i++) await new Promise((r) => setTimeout(r, 500))
    expect(await activeJobs(expId)).toEqual([])
    fs.rmSync(shared.dir, { recursive: true, force: true })
  }, 120_000)

  it("`dart compute up --attach`: the replica jobs run until Ctrl-C, which cancels them", async () => {
    const expId = uniqueExp("slurmup")
    started.add(expId)
    const shared = sharedFolder(transport === "rest" ? cluster.user : "root")
    const port = await freePortRun(2)
    const settings: Array<[string, unknown]> = Object.entries(settingsFor(transport, shared)).flatMap(([k, v]): Array<[string, unknown]> =>
      typeof v === "object" && v !== null ? Object.entries(v).map(([kk, vv]): [string, unknown] => [`${k}.${kk}`, vv]) : [[k, v]])
    const up = dartAsync([
      "compute", "up", "vllm", "--attach", "--config", "configs/smoke.json", "--exp-id", expId, "--override", `run.runs_dir=${path.join(scratch, "runs")}`,
      "--override", "model.base=/models/stand-in", "--override", "compute.backend=slurm", "--override", "compute.vllm.replicas=2", "--override", `compute.vllm.port=${port}`,
      ...Object.entries({ partition: "debug", device: "cpu", gpus_per_replica: 1, listen_host: "127.0.0.1", ...Object.fromEntries(settings) })
        .flatMap(([k, v]) => ["--override", `compute.slurm.${k}=${v === null ? "null" : String(v)}`])
    ], transport === "rest" ? { SLURM_JWT: cluster.token(600), HF_TOKEN: SECRET } : { HF_TOKEN: SECRET })
    let out = ""
    up.child.stdout.on("data", (c: Buffer) => (out += c.toString()))
    for (let i = 0; i < 120 && !out.includes("ready; Ctrl-C cancels the jobs"); i++) await new Promise((r) => setTimeout(r, 500))
    expect(out).toContain("ready; Ctrl-C cancels the jobs")
    expect(out).toMatch(/vllm-2 http:\/\/127\.0\.0\.1:\d+ \(node \S+, job \d+\)/)
    expect((await activeJobs(expId)).map((j) => j.state)).toEqual(["RUNNING", "RUNNING"])
    up.child.kill("SIGINT")
    const r = await up.done
    // Interrupted, as Ctrl-C is everywhere in dart (128 + SIGINT), after its scope cancelled the jobs.
    expect(r.code, r.stderr).toBe(130)
    for (let i = 0; i < 20 && (await activeJobs(expId)).length > 0; i++) await new Promise((r) => setTimeout(r, 500))
    expect(await activeJobs(expId), r.stderr).toEqual([])
    fs.rmSync(shared.dir, { recursive: true, force: true })
  }, 120_000)

  if (transport === "rest") {
    it("a wrong or expired JWT is a clear error that never shows the token", async () => {
      const expId = uniqueExp("slurmjwt")
      const shared = sharedFolder(cluster.user)
      const config = makeConfig(expId, 8000, settingsFor(transport, shared))
      const expired = cluster.token(1)
      await new Promise((r) => setTimeout(r, 2500))
      for (const token of ["not-a-token", expired]) {
        const exit = await withCompute(config, path.join(scratch, "runs", expId), (c) => c.probeHost("slurm"), token)
        const text = String(Exit.isFailure(exit) ? exit.cause : "")
        expect(Exit.isFailure(exit)).toBe(true)
        expect(text).toMatch(/token/i)
        expect(text).not.toContain(token)
      }
      fs.rmSync(shared.dir, { recursive: true, force: true })
    })
  }
})
