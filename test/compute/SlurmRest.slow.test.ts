import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Clock, Effect, Redacted } from "effect"
import { randomUUID } from "node:crypto"
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import * as path from "node:path"
import { slurmRest } from "../../src/compute/slurm/SlurmRest.ts"
import type { SlurmError, SlurmJob, SlurmJobRequest, SlurmTransport } from "../../src/compute/slurm/SlurmTransport.ts"
import { cancelJobs, ensureSlurm, type SlurmCluster, haveTestCluster } from "../support/SlurmCluster.ts"
import { failure, shown } from "../support/SlurmFailure.ts"

/**
 * The REST transport against the real single-node Slurm 22.05 on this machine (slurmrestd v0.0.38, JWT): what the
 * recorded-answer tests (SlurmRest.test.ts) cannot show — that the bodies are accepted, a GPU is handed out, the
 * secret reaches the job's environment and nothing else, cancel stops the job, and Slurm's refusals come back.
 */

let cluster: SlurmCluster
let dir: string
const submitted: Array<string> = []
const SECRET = `dart-secret-${randomUUID()}`

beforeAll(async () => {
  if (!haveTestCluster()) return
  cluster = await ensureSlurm()
  // Jobs run as the REST user (dart-slurm), not as this process's user.
  dir = mkdtempSync(path.join(cluster.sharedRoot, "rest-"))
  chmodSync(dir, 0o777)
})
afterAll(async () => {
  if (!haveTestCluster()) return
  await cancelJobs(submitted).catch(() => undefined)
  rmSync(dir, { recursive: true, force: true })
})

const connect = (token: string = cluster.token()) =>
  slurmRest({ url: cluster.restUrl, user: cluster.user, token: Redacted.make(token), apiVersion: "auto", timeoutMs: 10_000 })


/** Polls `probe` every 250 ms until it gives a value, or fails after `seconds`. */
const until = <A>(what: string, seconds: number, probe: Effect.Effect<A | undefined, SlurmError>) =>
  Effect.gen(function*() {
    const deadline = (yield* Clock.currentTimeMillis) + seconds * 1000
    for (;;) {
      const a = yield* probe
      if (a !== undefined) return a
      if ((yield* Clock.currentTimeMillis) > deadline) return yield* Effect.die(new Error(`${what}: not within ${seconds} s`))
      yield* Effect.sleep("250 millis")
    }
  })

const request = (over: Partial<SlurmJobRequest> = {}): SlurmJobRequest => ({
  name: "dart-resttest-probe",
  comment: `dart exp=resttest role=probe service=probe spec=${randomUUID().slice(0, 8)} owner=test`,
  partition: cluster.partition,
  account: null,
  qos: null,
  timeLimitMinutes: 5,
  gpus: 1,
  cpusPerTask: 1,
  memoryMb: 100,
  workdir: dir,
  logFile: path.join(dir, "job.log"),
  script: "#!/bin/bash\necho \"gpu=$CUDA_VISIBLE_DEVICES secret_len=${#DART_TEST_SECRET}\"; sleep 30\n",
  env: { DART_TEST_PLAIN: "1" },
  secretEnv: { DART_TEST_SECRET: Redacted.make(SECRET) },
  ...over
})

const job = (t: SlurmTransport, id: string) => Effect.map(t.jobs(), (jobs): SlurmJob | undefined => jobs.find((j) => j.id === id))

describe.skipIf(!haveTestCluster())("slurmrestd transport against a real Slurm 22.05 (v0.0.38)", () => {
  it.live("version, submit with a GPU and a secret, list, log, cancel", () =>
    Effect.gen(function*() {
      const t = yield* connect()
      expect(t.via).toBe(`slurmrestd ${cluster.restUrl} (v0.0.38)`)
      const v = yield* t.version()
      expect(v.api).toBe("v0.0.38")
      expect(v.slurm).toMatch(/^22\.05\.\d+$/)

      const r = request()
      const id = yield* t.submit(r)
      submitted.push(id)
      expect(id).toMatch(/^\d+$/)
      let last: SlurmJob | undefined
      const running = yield* until(
        "job RUNNING (is every GPU taken by other jobs? squeue -a)",
        40,
        Effect.map(job(t, id), (j) => {
          last = j
          return j?.state === "RUNNING" ? j : undefined
        })
      ).pipe(Effect.tapDefect(() => Effect.sync(() => console.error(`job ${id} last seen:`, last))))
      expect(running).toMatchObject({ id, name: r.name, comment: r.comment, state: "RUNNING", reason: null, nodes: cluster.node, user: cluster.user })

      const log = yield* until("the job's first line", 10, Effect.sync(() => {
        const text = existsSync(r.logFile) ? readFileSync(r.logFile, "utf8") : ""
        return text.includes("secret_len=") ? text : undefined
      }))
      expect(log).toMatch(new RegExp(`^gpu=[0-${cluster.gpus - 1}] secret_len=${SECRET.length}\\n$`))
      expect(log).not.toContain(SECRET)
      // slurmrestd's own log (this machine's) never saw the secret either.
      const restLog = "/var/log/dart-slurm/slurmrestd.log"
      if (existsSync(restLog)) expect(readFileSync(restLog, "utf8")).not.toContain(SECRET)

      const nodeAddress = yield* t.nodeAddress(cluster.node)
      expect(nodeAddress).toBe("127.0.0.1")

      yield* t.cancel(id)
      const gone = yield* until("job no longer RUNNING", 10, Effect.map(job(t, id), (j) => (j === undefined || j.state !== "RUNNING" ? j ?? { state: "purged" } : undefined)))
      expect(["CANCELLED", "COMPLETING", "purged"]).toContain(gone.state)
      // Cancelling again (the job is over) is no error.
      yield* t.cancel(id)
    }))

  it.live("refusals: an unknown partition with Slurm's message; wrong, tampered and expired tokens with what to do, never the token", () =>
    Effect.gen(function*() {
      const t = yield* connect()
      const nope = yield* failure(t.submit(request({ partition: "nope" })))
      expect(nope.message).toContain("Invalid partition name specified")
      expect(shown(nope)).not.toContain(SECRET)

      const hint = `set SLURM_JWT to a valid, unexpired token (e.g. \`scontrol token username=${cluster.user}\`)`
      const wrongToken = `wrong-${randomUUID()}`
      const wrong = yield* failure(Effect.flatMap(connect(wrongToken), (t) => t.jobs()))
      expect(wrong.message).toContain(`slurmrestd at ${cluster.restUrl} rejected the token for user ${cluster.user} (HTTP 500`)
      expect(wrong.message).toContain("the token is not a JWT")
      expect(wrong.message).toContain(hint)
      expect(shown(wrong)).not.toContain(wrongToken)

      // Signed with another key: 22.05 cannot tell it from a controller that does not answer, and says so.
      const good = cluster.token()
      const tampered = `${good.slice(0, -6)}${good.endsWith("AAAAAA") ? "BBBBBB" : "AAAAAA"}`
      const bad = yield* failure(Effect.flatMap(connect(tampered), (t) => t.submit(request())))
      expect(bad.message).toContain(`the token for user ${cluster.user} (HTTP 500`)
      expect(bad.message).toContain(hint)
      expect(shown(bad)).not.toContain(tampered.split(".")[2]!)

      const expiring = cluster.token(1)
      yield* Effect.sleep("2 seconds")
      const expired = yield* failure(Effect.flatMap(connect(expiring), (t) => t.jobs()))
      expect(expired.message).toContain(`rejected the token for user ${cluster.user} (HTTP 500`)
      expect(expired.message).toContain("the token expired at")
      expect(expired.message).toContain(hint)
      expect(shown(expired)).not.toContain(expiring.split(".")[2]!)
    }))
})
