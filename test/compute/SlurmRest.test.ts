import { describe, expect, it } from "@effect/vitest"
import { Effect, Redacted } from "effect"
import { readFileSync } from "node:fs"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import * as path from "node:path"
import { slurmRest } from "../../src/compute/slurm/SlurmRest.ts"
import type { SlurmJobRequest } from "../../src/compute/slurm/SlurmTransport.ts"
import { freePort } from "../support/FreePort.ts"
import { failure, shown } from "../support/SlurmFailure.ts"

const VECTORS = path.join(import.meta.dirname, "..", "vectors", "slurm")
/** A recorded slurmrestd answer (test/vectors/slurm/README.md says where each shape comes from). */
const vector = (name: string): unknown => JSON.parse(readFileSync(path.join(VECTORS, name), "utf8"))

/** A token shaped like `scontrol token`'s (HS256 JWT, claims exp/iat/sun); the signature part is what must never leak. */
const jwt = (claims: object, signature = "tok-9c2f51aa7e3b4dQx") =>
  [{ alg: "HS256", typ: "JWT" }, claims].map((p) => Buffer.from(JSON.stringify(p)).toString("base64url")).concat(signature).join(".")
const NOW_S = Math.floor(Date.now() / 1000)
const TOKEN = jwt({ exp: NOW_S + 3600, iat: NOW_S, sun: "dart" })
const SECRET = "hf_s3cretValue4f1e2d9c0b7a"
const USER = "dart"

interface Answer {
  readonly status?: number
  /** JSON (an object) or plain text (a string, sent as text/plain like slurmrestd's own refusals). */
  readonly body: unknown
}
interface Received {
  readonly method: string
  readonly path: string
  readonly headers: http.IncomingHttpHeaders
  readonly body: string
}

const NOT_FOUND: Answer = { status: 404, body: "Unable find requested URL. Please view /openapi/v3 for API reference." }
const route = (p: string) => p.replace(/\/+$/, "")

/**
 * A stand-in slurmrestd on 127.0.0.1: answers `METHOD /path` (trailing slash ignored, as slurmrestd does) from the
 * table and records every request.
 */
const standIn = (answers: Record<string, Answer>) =>
  Effect.acquireRelease(
    Effect.promise(() =>
      new Promise<{ url: string; received: Array<Received>; server: http.Server }>((resolve) => {
        const received: Array<Received> = []
        const table = new Map(Object.entries(answers).map(([k, v]) => {
          const [method, p] = k.split(" ") as [string, string]
          return [`${method} ${route(p)}`, v]
        }))
        const server = http.createServer((req, res) => {
          let body = ""
          req.on("data", (c: Buffer) => (body += c))
          req.on("end", () => {
            received.push({ method: req.method ?? "", path: req.url ?? "", headers: req.headers, body })
            const answer = table.get(`${req.method} ${route(req.url ?? "")}`) ?? NOT_FOUND
            const text = typeof answer.body === "string" ? answer.body : JSON.stringify(answer.body)
            res.writeHead(answer.status ?? 200, { "content-type": typeof answer.body === "string" ? "text/plain" : "application/json" })
            res.end(text)
          })
        })
        server.listen(0, "127.0.0.1", () => resolve({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, received, server }))
      })
    ),
    ({ server }) => Effect.promise(() => new Promise<void>((resolve) => server.close(() => resolve())))
  )

const connect = (url: string, apiVersion = "auto", token = TOKEN) => slurmRest({ url, user: USER, token: Redacted.make(token), apiVersion, timeoutMs: 5000 })


const request = (over: Partial<SlurmJobRequest> = {}): SlurmJobRequest => ({
  name: "dart-e1-vllm-0",
  comment: "dart exp=e1 role=replica service=vllm-0 spec=3f9a1c owner=dart@login01",
  partition: "gpu",
  account: null,
  qos: null,
  timeLimitMinutes: 720,
  gpus: 2,
  cpusPerTask: 4,
  memoryMb: 32768,
  workdir: "/shared/dart/e1/vllm-0",
  logFile: "/shared/dart/e1/vllm-0/job.log",
  script: "#!/bin/bash\nexec python -m vllm.entrypoints.openai.api_server\n",
  env: { VLLM_PORT: "8000", HF_HOME: "/shared/hf" },
  secretEnv: { HF_TOKEN: Redacted.make(SECRET) },
  ...over
})

const v38 = {
  "GET /openapi/v3": { body: vector("openapi-v3.22.05.json") },
  "GET /slurm/v0.0.38/ping": { body: vector("v0.0.38/ping.json") },
  "GET /slurm/v0.0.38/jobs": { body: vector("v0.0.38/jobs.json") },
  "GET /slurm/v0.0.38/node/vm": { body: vector("v0.0.38/node.json") },
  "GET /slurm/v0.0.38/node/nope": { status: 500, body: vector("v0.0.38/node-unknown.json") },
  "POST /slurm/v0.0.38/job/submit": { body: vector("v0.0.38/submit.json") },
  "DELETE /slurm/v0.0.38/job/29": { body: vector("v0.0.38/cancel.json") },
  "DELETE /slurm/v0.0.38/job/999999": { status: 500, body: vector("v0.0.38/cancel-unknown.json") }
} satisfies Record<string, Answer>

const v41 = {
  "GET /openapi/v3": { body: vector("openapi-v3.24.05.json") },
  "GET /slurm/v0.0.41/ping": { body: vector("v0.0.41/ping.json") },
  "GET /slurm/v0.0.41/jobs": { body: vector("v0.0.41/jobs.json") },
  "GET /slurm/v0.0.41/node/gpu01": { body: vector("v0.0.41/node.json") },
  "POST /slurm/v0.0.41/job/submit": { body: vector("v0.0.41/submit.json") },
  "DELETE /slurm/v0.0.41/job/4242": { body: vector("v0.0.41/cancel.json") },
  "DELETE /slurm/v0.0.41/job/4100": { body: vector("v0.0.41/cancel-already-done.json") }
} satisfies Record<string, Answer>

describe("slurmrestd transport (stand-in slurmrestd, recorded answers)", () => {
  it.live("discovery takes the highest version the cluster offers that dart speaks; every request carries the user and token headers", () =>
    Effect.gen(function*() {
      const s = yield* standIn(v41)
      const t = yield* connect(s.url)
      expect(t.via).toBe(`slurmrestd ${s.url} (v0.0.41)`)
      expect(yield* t.version()).toEqual({ slurm: "24.05.4", api: "v0.0.41" })
      expect(s.received.map((r) => `${r.method} ${r.path}`)).toEqual(["GET /openapi/v3", "GET /slurm/v0.0.41/ping"])
      for (const r of s.received) {
        expect(r.headers["x-slurm-user-name"]).toBe(USER)
        expect(r.headers["x-slurm-user-token"]).toBe(TOKEN)
        expect(r.path).not.toContain("tok-")
      }
      // 25.11 offers v0.0.41 to v0.0.44: v0.0.42 is the newest dart speaks.
      const newer = yield* standIn({ "GET /openapi/v3": { body: vector("openapi-v3.25.11.json") } })
      expect((yield* connect(newer.url)).via).toBe(`slurmrestd ${newer.url} (v0.0.42)`)
    }).pipe(Effect.scoped))

  it.live("an older slurmrestd without /openapi/v3: the document at /openapi", () =>
    Effect.gen(function*() {
      const s = yield* standIn({ "GET /openapi": { body: vector("openapi-v3.24.05.json") } })
      const t = yield* connect(s.url)
      expect(t.via).toContain("(v0.0.41)")
      expect(s.received.map((r) => r.path)).toEqual(["/openapi/v3", "/openapi"])
    }).pipe(Effect.scoped))

  it.live("a cluster offering only versions dart does not speak: an error naming what it offers and what dart speaks", () =>
    Effect.gen(function*() {
      const s = yield* standIn({ "GET /openapi/v3": { body: vector("openapi-v3.25.11-v0.0.43-only.json") } })
      const e = yield* failure(connect(s.url))
      expect(e.message).toContain(`slurmrestd at ${s.url} offers v0.0.44, v0.0.43`)
      expect(e.message).toContain("dart speaks v0.0.38, v0.0.40, v0.0.41, v0.0.42")
      // A version named in the config skips discovery; one dart does not speak is refused before any request.
      expect((yield* connect(s.url, "v0.0.40")).via).toContain("(v0.0.40)")
      expect((yield* failure(connect(s.url, "v0.0.43"))).message).toContain("api_version v0.0.43 is not one dart speaks")
      expect(s.received).toHaveLength(1)
    }).pipe(Effect.scoped))

  it.live("v0.0.41 submit: environment as K=V strings, numbers as {set, infinite, number}, GPUs as tres_per_node, the script in job; the secret only in the body", () =>
    Effect.gen(function*() {
      const s = yield* standIn(v41)
      const t = yield* connect(s.url)
      expect(yield* t.submit(request())).toBe("4244")
      const post = s.received.find((r) => r.method === "POST")!
      expect(post.path).toBe("/slurm/v0.0.41/job/submit")
      expect(post.headers["content-type"]).toBe("application/json")
      expect(JSON.parse(post.body)).toEqual({
        job: {
          script: "#!/bin/bash\nexec python -m vllm.entrypoints.openai.api_server\n",
          name: "dart-e1-vllm-0",
          comment: "dart exp=e1 role=replica service=vllm-0 spec=3f9a1c owner=dart@login01",
          partition: "gpu",
          time_limit: { set: true, infinite: false, number: 720 },
          nodes: "1",
          cpus_per_task: 4,
          memory_per_node: { set: true, infinite: false, number: 32768 },
          current_working_directory: "/shared/dart/e1/vllm-0",
          standard_output: "/shared/dart/e1/vllm-0/job.log",
          standard_error: "/shared/dart/e1/vllm-0/job.log",
          environment: ["VLLM_PORT=8000", "HF_HOME=/shared/hf", `HF_TOKEN=${SECRET}`],
          tres_per_node: "gres/gpu:2",
          requeue: false
        }
      })
      // The secret travels in that one body: not in a path, a header or any other request.
      const elsewhere = s.received.map((r) => `${r.method} ${r.path} ${JSON.stringify(r.headers)} ${r === post ? "" : r.body}`).join("\n")
      expect(elsewhere).not.toContain(SECRET)
      // No GPU asked, no time limit, no memory: those keys are left out; an empty environment still gets PATH
      // (slurmctld refuses a batch job without one).
      yield* t.submit(request({ gpus: 0, timeLimitMinutes: null, memoryMb: null, cpusPerTask: null, partition: null, env: {}, secretEnv: {} }))
      const bare = JSON.parse(s.received.filter((r) => r.method === "POST")[1]!.body).job
      expect(Object.keys(bare).sort()).toEqual(["comment", "current_working_directory", "environment", "name", "nodes", "requeue", "script", "standard_error", "standard_output"])
      expect(bare.environment).toEqual(["PATH=/usr/local/bin:/usr/bin:/bin"])
    }).pipe(Effect.scoped))

  it.live("v0.0.40 submit: the script at the top level (23.11 requires it there), the rest as in v0.0.41", () =>
    Effect.gen(function*() {
      const s = yield* standIn({ "POST /slurm/v0.0.40/job/submit": { body: vector("v0.0.40/submit.json") } })
      const t = yield* connect(s.url, "v0.0.40")
      expect(yield* t.submit(request({ account: "ml", qos: "high", gpus: 1 }))).toBe("979")
      const body = JSON.parse(s.received[0]!.body)
      expect(body.script).toBe("#!/bin/bash\nexec python -m vllm.entrypoints.openai.api_server\n")
      expect(body.job.script).toBeUndefined()
      expect(body.job).toMatchObject({ account: "ml", qos: "high", tres_per_node: "gres/gpu:1", time_limit: { set: true, infinite: false, number: 720 } })
      expect(body.job.environment).toContain(`HF_TOKEN=${SECRET}`)
    }).pipe(Effect.scoped))

  it.live("v0.0.38 submit: sbatch-style options (environment an object, plain integers, gpus_per_node a count string)", () =>
    Effect.gen(function*() {
      const s = yield* standIn({ "POST /slurm/v0.0.38/job/submit": { body: vector("v0.0.38/submit.json") } })
      const t = yield* connect(s.url, "v0.0.38")
      expect(t.via).toContain("(v0.0.38)")
      const id = yield* t.submit(request())
      expect(id).toMatch(/^\d+$/)
      expect(JSON.parse(s.received[0]!.body)).toEqual({
        script: "#!/bin/bash\nexec python -m vllm.entrypoints.openai.api_server\n",
        job: {
          name: "dart-e1-vllm-0",
          comment: "dart exp=e1 role=replica service=vllm-0 spec=3f9a1c owner=dart@login01",
          partition: "gpu",
          time_limit: 720,
          nodes: [1, 1],
          cpus_per_task: 4,
          memory_per_node: 32768,
          current_working_directory: "/shared/dart/e1/vllm-0",
          standard_output: "/shared/dart/e1/vllm-0/job.log",
          standard_error: "/shared/dart/e1/vllm-0/job.log",
          environment: { VLLM_PORT: "8000", HF_HOME: "/shared/hf", HF_TOKEN: SECRET },
          gpus_per_node: "2",
          requeue: false
        }
      })
    }).pipe(Effect.scoped))

  it.live("jobs: v0.0.41's job_state lists read as one state (a flag such as COMPLETING wins, as squeue shows it); reason None is null", () =>
    Effect.gen(function*() {
      const s = yield* standIn(v41)
      const jobs = yield* (yield* connect(s.url)).jobs()
      expect(jobs).toEqual([
        { id: "4242", name: "dart-e1-vllm-0", comment: "dart exp=e1 role=replica service=vllm-0 spec=3f9a1c owner=dart@login01", state: "RUNNING", reason: null, nodes: "gpu01", user: "dart" },
        { id: "4243", name: "dart-e1-vllm-1", comment: "dart exp=e1 role=replica service=vllm-1 spec=3f9a1c owner=dart@login01", state: "PENDING", reason: "Resources", nodes: "", user: "dart" },
        { id: "4100", name: "dart-e0-trainer", comment: "dart exp=e0 role=trainer service=trainer spec=77b2e0 owner=dart@login01", state: "COMPLETING", reason: null, nodes: "gpu02", user: "dart" },
        { id: "4001", name: "wrap", comment: "", state: "COMPLETED", reason: null, nodes: "cpu07", user: "dart" }
      ])
      const v40 = yield* standIn({ "GET /slurm/v0.0.40/jobs": { body: vector("v0.0.40/jobs.json") } })
      const jobs40 = yield* (yield* connect(v40.url, "v0.0.40")).jobs()
      expect(jobs40.map((j) => [j.id, j.state, j.reason])).toEqual([["977", "RUNNING", null], ["978", "PENDING", "Priority"]])
    }).pipe(Effect.scoped))

  it.live("cancel is DELETE /job/{id} (an already-ended job is no error); nodeAddress reads the node's address", () =>
    Effect.gen(function*() {
      const s = yield* standIn(v41)
      const t = yield* connect(s.url)
      yield* t.cancel("4242")
      yield* t.cancel("4100")
      expect(yield* t.nodeAddress("gpu01")).toBe("10.20.0.11")
      expect(s.received.slice(1).map((r) => `${r.method} ${r.path}`)).toEqual([
        "DELETE /slurm/v0.0.41/job/4242",
        "DELETE /slurm/v0.0.41/job/4100",
        "GET /slurm/v0.0.41/node/gpu01"
      ])
      expect((yield* failure(t.cancel("4242; rm -rf /"))).message).toContain("is not a job id")
    }).pipe(Effect.scoped))

  it.live("a rejected token (401 text, or 511 with Slurm error 1007): what to do, and never the token", () =>
    Effect.gen(function*() {
      const plain = yield* standIn({ "GET /openapi/v3": { status: 401, body: "Authentication failure" } })
      const e = yield* failure(connect(plain.url))
      expect(e.message).toBe(
        `slurmrestd at ${plain.url} rejected the token for user ${USER} (HTTP 401: Authentication failure): set SLURM_JWT to a valid, unexpired token (e.g. \`scontrol token username=${USER}\`)`
      )
      expect(shown(e)).not.toContain(TOKEN)
      expect(shown(e)).not.toContain("tok-9c2f")

      const later = yield* standIn({ ...v41, "GET /slurm/v0.0.41/jobs": { status: 511, body: vector("v0.0.41/jobs-token-rejected.json") } })
      const e2 = yield* failure(Effect.flatMap(connect(later.url), (t) => t.jobs()))
      expect(e2.message).toContain(`rejected the token for user ${USER} (HTTP 511: Protocol authentication error`)
      expect(e2.message).toContain("set SLURM_JWT to a valid, unexpired token")
      expect(shown(e2)).not.toContain("tok-9c2f")
    }).pipe(Effect.scoped))

  it.live("Slurm's errors[] are the message: a submit to a partition that does not exist; the secret stays out", () =>
    Effect.gen(function*() {
      const s = yield* standIn({ ...v41, "POST /slurm/v0.0.41/job/submit": { status: 500, body: vector("v0.0.41/submit-invalid-partition.json") } })
      const e = yield* failure(Effect.flatMap(connect(s.url), (t) => t.submit(request({ partition: "nope" }))))
      expect(e.via).toBe(`slurmrestd ${s.url} (v0.0.41)`)
      expect(e.message).toContain("submit of job dart-e1-vllm-0: Slurm refused (HTTP 500): Invalid partition name specified: Batch job submission failed (Slurm error 2000)")
      expect(shown(e)).not.toContain(SECRET)
      expect(shown(e)).not.toContain("tok-9c2f")
    }).pipe(Effect.scoped))

  it.live("nothing listening: an error naming the URL (after a few quick retries of the GET)", () =>
    Effect.gen(function*() {
      const port = yield* Effect.promise(() => freePort())
      const url = `http://127.0.0.1:${port}`
      const e = yield* failure(connect(url))
      expect(e.message).toBe(`GET /openapi/v3: cannot reach slurmrestd at ${url}: connection refused (is slurmrestd running there?)`)
      expect(shown(e)).not.toContain("tok-9c2f")
    }))

  it.live("v0.0.38 (22.05, recorded here): discovery, version, jobs with a string job_state, node address, Slurm's errors under their three keys", () =>
    Effect.gen(function*() {
      const s = yield* standIn(v38)
      const t = yield* connect(s.url)
      expect(t.via).toBe(`slurmrestd ${s.url} (v0.0.38)`)
      expect(yield* t.version()).toEqual({ slurm: "22.05.8", api: "v0.0.38" })
      expect(yield* t.jobs()).toEqual([
        { id: "24", name: "dart-slurmman1-vllm", comment: "dart exp=slurmman1 role=vllm service=vllm spec=e7e29bf52ee02fb1 owner=vm:18198", state: "RUNNING", reason: null, nodes: "vm", user: "root" },
        { id: "29", name: "dart-rec-probe", comment: "dart exp=rec role=probe", state: "PENDING", reason: null, nodes: "", user: "dart-slurm" }
      ])
      expect(yield* t.nodeAddress("vm")).toBe("127.0.0.1")
      expect(yield* t.submit(request())).toBe("29")
      yield* t.cancel("29")
      expect((yield* failure(t.nodeAddress("nope"))).message).toBe("GET /slurm/v0.0.38/node/nope: Slurm refused (HTTP 500): Invalid node name specified (Slurm error 2018)")
      expect((yield* failure(t.cancel("999999"))).message).toBe(
        "cancel of job 999999: Slurm refused (HTTP 500): Invalid job id specified: unable to kill JobId=999999 with signal 9: Invalid job id specified (Slurm error 2017) [slurm_kill_job]"
      )
      const refused = yield* standIn({ "POST /slurm/v0.0.38/job/submit": { status: 500, body: vector("v0.0.38/submit-invalid-partition.json") } })
      const e = yield* failure(Effect.flatMap(connect(refused.url, "v0.0.38"), (t) => t.submit(request({ partition: "nope" }))))
      expect(e.message).toBe("submit of job dart-e1-vllm-0: Slurm refused (HTTP 500): Invalid partition name specified (Slurm error 2000)")
    }).pipe(Effect.scoped))

  it.live("22.05 says nothing about a refused token (HTTP 500, -1 or 5005): an expired or malformed token is named as the cause; a fresh-looking one gets the hint and a caveat", () =>
    Effect.gen(function*() {
      const answers = {
        ...v38,
        "GET /slurm/v0.0.38/jobs": { status: 500, body: vector("v0.0.38/jobs-token-expired.json") },
        "POST /slurm/v0.0.38/job/submit": { status: 500, body: vector("v0.0.38/submit-token-expired.json") }
      }
      const s = yield* standIn(answers)
      const expired = jwt({ exp: NOW_S - 5, iat: NOW_S - 6, sun: "dart" })
      const t = yield* connect(s.url, "auto", expired)
      const e = yield* failure(t.jobs())
      expect(e.message).toMatch(new RegExp(`^slurmrestd at ${s.url} rejected the token for user dart \\(HTTP 500: Failed while looking for jobs \\[slurm_load_jobs\\]; the token expired at 20\\d\\d-`))
      expect(e.message).toContain("): set SLURM_JWT to a valid, unexpired token (e.g. `scontrol token username=dart`)")
      const e2 = yield* failure(t.submit(request()))
      expect(e2.message).toContain("rejected the token for user dart (HTTP 500: Zero Bytes were transmitted or received (Slurm error 5005); the token expired at")
      expect(shown(e2)).not.toContain(SECRET)
      const garbage = yield* failure(Effect.flatMap(connect(s.url, "v0.0.38", "not-a-token-123456789"), (t) => t.jobs()))
      expect(garbage.message).toContain("rejected the token for user dart (HTTP 500: Failed while looking for jobs [slurm_load_jobs]; the token is not a JWT)")
      expect(shown(garbage)).not.toContain("not-a-token-123456789")
      const other = yield* failure(Effect.flatMap(connect(s.url, "v0.0.38", jwt({ exp: NOW_S + 60, sun: "alice" })), (t) => t.jobs()))
      expect(other.message).toContain("the token is for user alice)")
      // A well-formed, unexpired token for the right user with a bad signature looks the same as slurmctld being down.
      const fresh = yield* failure(Effect.flatMap(connect(s.url, "v0.0.38"), (t) => t.jobs()))
      expect(fresh.message).toBe(
        `slurmrestd at ${s.url} could not use the token for user dart (HTTP 500: Failed while looking for jobs [slurm_load_jobs]): set SLURM_JWT to a valid, unexpired token (e.g. \`scontrol token username=dart\`); ` +
          "Slurm before 24.11 gives no reason, so if the token is fresh check that slurmctld answers (scontrol ping)"
      )
      for (const x of [e, e2, other, fresh]) expect(shown(x)).not.toContain("tok-9c2f")
    }).pipe(Effect.scoped))

  it.live("a reply of the wrong shape is an error naming the call, not a crash", () =>
    Effect.gen(function*() {
      const s = yield* standIn({ ...v41, "GET /slurm/v0.0.41/jobs": { body: { jobs: [{ job_id: 1, job_state: "RUNNING" }], errors: [], warnings: [] } } })
      const e = yield* failure(Effect.flatMap(connect(s.url), (t) => t.jobs()))
      expect(e.message).toContain(`GET /slurm/v0.0.41/jobs: unexpected reply from slurmrestd at ${s.url}`)
      expect(e.message).toContain("job_state")
    }).pipe(Effect.scoped))
})
