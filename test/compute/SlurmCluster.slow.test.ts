import { execFileSync } from "node:child_process"
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { activeState, cancelJobs, ensureSlurm, type SlurmCluster, slurmJobs, haveTestCluster } from "../support/SlurmCluster.ts"

// A sanity check of the test cluster itself (scripts/setup-slurm.sh): GPU jobs get distinct fake GPUs, slurmrestd
// authenticates JWTs for dart-slurm and serves the v0.0.38 OpenAPI description.
let slurm: SlurmCluster
let dir: string
const ids: Array<string> = []

beforeAll(async () => {
  if (!haveTestCluster()) return
  slurm = await ensureSlurm()
  dir = mkdtempSync(path.join("/var/tmp/dart-slurm", "sanity-"))
  chmodSync(dir, 0o777)
}, 180_000)

afterAll(async () => {
  if (!haveTestCluster()) return
  await cancelJobs((await slurmJobs((j) => ids.includes(j.id) && activeState(j.state))).map((j) => j.id))
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true })
})

const rest = (p: string, token: string) =>
  fetch(`${slurm.restUrl}${p}`, {
    headers: { "X-SLURM-USER-NAME": slurm.user, "X-SLURM-USER-TOKEN": token },
    signal: AbortSignal.timeout(10_000)
  })

const until = async (what: string, check: () => Promise<boolean>, timeoutMs = 20_000) => {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 200))
  }
}

describe.skipIf(!haveTestCluster())("the Slurm test cluster", () => {
  it("gives two one-GPU jobs different GPUs", async () => {
    const submit = (i: number) =>
      execFileSync("sbatch", [
        "--parsable",
        "--gres=gpu:1",
        `--job-name=dart-sanity-${i}`,
        "--comment=dart-sanity",
        `--output=${dir}/job-${i}.out`,
        "--wrap",
        "echo CVD=$CUDA_VISIBLE_DEVICES; sleep 1"
      ], { encoding: "utf8" }).trim().split(";")[0]!
    ids.push(submit(1), submit(2))
    await until("both jobs to finish", async () =>
      (await slurmJobs((j) => ids.includes(j.id) && activeState(j.state))).length === 0)
    const jobs = await slurmJobs((j) => ids.includes(j.id))
    expect(jobs.map((j) => j.state)).toEqual(["COMPLETED", "COMPLETED"])
    expect(jobs.map((j) => j.comment)).toEqual(["dart-sanity", "dart-sanity"])
    const cvd = [1, 2].map((i) => {
      const f = `${dir}/job-${i}.out`
      expect(existsSync(f)).toBe(true)
      return readFileSync(f, "utf8").trim()
    })
    expect(cvd[0]).toMatch(/^CVD=[0-3]$/)
    expect(cvd[1]).toMatch(/^CVD=[0-3]$/)
    expect(cvd[0]).not.toEqual(cvd[1])
  }, 30_000)

  it("REST authenticates dart-slurm's JWT and refuses a wrong one", async () => {
    const ok = await rest("/slurm/v0.0.38/ping", slurm.token(300))
    expect(ok.status).toBe(200)
    const body = await ok.json() as { pings: Array<{ hostname: string; ping: string }> }
    expect(body.pings[0]).toMatchObject({ hostname: slurm.node, ping: "UP" })
    // Slurm 22.05's slurmrestd passes the token through to slurmctld, which rejects it; slurmrestd then answers
    // 500 with errors[0] = { error: "Unspecified error", source: "slurm_load_ctl_conf", description: "slurmctld
    // config is unable to load" } (no 401). Without any token header it answers 401 "Authentication failure".
    const bad = await rest("/slurm/v0.0.38/ping", "not-a-token")
    expect(bad.status).toBe(500)
    const badBody = await bad.json() as { errors: Array<{ source: string }> }
    expect(badBody.errors.length).toBeGreaterThan(0)
    const none = await fetch(`${slurm.restUrl}/slurm/v0.0.38/ping`, { signal: AbortSignal.timeout(10_000) })
    expect(none.status).toBe(401)
  })

  it("serves the v0.0.38 OpenAPI description (authenticated too)", async () => {
    const res = await rest("/openapi/v3", slurm.token(300))
    expect(res.status).toBe(200)
    const spec = await res.json() as { paths: Record<string, unknown> }
    expect(Object.keys(spec.paths)).toContain("/slurm/v0.0.38/job/submit")
  })
})
