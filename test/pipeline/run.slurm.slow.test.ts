import { afterAll, describe, expect, it } from "@effect/vitest"
import { execFileSync } from "node:child_process"
import { existsSync, mkdtempSync, readFileSync, realpathSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { dartAsync } from "../support/AdapterFixture.ts"
import { compareDigests, machineFingerprint, runDigests } from "../support/RunDigests.ts"
import { ensureSlurm, haveTestCluster, slurmJobs } from "../support/SlurmCluster.ts"

// The smoke profile with `compute.backend: "slurm"` on the real single-node cluster (scripts/setup-slurm.sh): two vLLM
// replicas, the two classifiers and the trainer are batch jobs started by the venv launcher from the CPU vLLM and
// trainer environments (containers/*/.venv), reached over the command line here. The run is SIGKILLed in the middle of
// its first inference and run again: the killed run's jobs are cancelled, the rerun completes, and every artifact is
// the one the reference run made (test/vectors/smoke_digests.json: made with Docker before the architecture change) —
// the adapter changes nothing a stage writes, and the resumed run asked nothing twice (a request sent again would be
// a second ledger row). One request at a time everywhere, as the reference was made (see RunDigests.ts).
const venv = (role: string) => {
  const p = path.resolve("containers", role, ".venv")
  return existsSync(path.join(p, "bin", "python3")) ? realpathSync(p) : null
}
const VLLM_VENV = venv("vllm-cpu")
const TRAINER_VENV = venv("trainer")
const haveSlurm = haveTestCluster() && VLLM_VENV !== null && TRAINER_VENV !== null
const scratch = mkdtempSync(path.join(tmpdir(), "dart-slurm-run-"))
afterAll(() => (process.env.DART_KEEP_SCRATCH === "1" ? console.log(`kept ${scratch}`) : rmSync(scratch, { recursive: true, force: true })))

const active = async (expId: string) => (await slurmJobs((j) => j.comment.includes(`exp=${expId} `))).filter((j) => ["PENDING", "RUNNING", "COMPLETING", "CONFIGURING"].includes(j.state))

describe.skipIf(!haveSlurm)("dart run --config configs/smoke.json on Slurm", () => {
  it("SIGKILLed mid-inference and run again: the killed run's jobs are cancelled, it completes, and its artifacts are the reference run's", async () => {
    await ensureSlurm()
    const expected = JSON.parse(readFileSync("test/vectors/smoke_digests.json", "utf8")) as { digests: Record<string, string>; machine?: string }
    const sameMachine = expected.machine === machineFingerprint()
    if (!sameMachine) console.log(`smoke digests: made on another CPU (${expected.machine ?? "unrecorded"} vs ${machineFingerprint()}): float-dependent artifacts are checked for presence only`)
    // The reference's exp id and ports: they are in the run's config.
    const expId = "smoke"
    const shared = mkdtempSync(path.join("/var/tmp/dart-slurm", "run-"))
    const runs = path.join(scratch, "runs")
    const args = [
      // The reference run ends at the DiffAware evaluation (the out-of-distribution stages came later).
      "run", "--config", "configs/smoke.json", "--until", "evaluate", "--override", `run.runs_dir=${runs}`,
      "--override", "inference.concurrency=1", "--override", "teacher.max_concurrency=1",
      "--override", "judge.max_concurrency=1", "--override", "audit.classifier_concurrency=1", "--override", "audit.classifier_batch_size=1",
      "--override", "compute.backend=slurm", "--override", "compute.vllm.replicas=2",
      ...Object.entries({
        transport: "cli", partition: "debug", device: "cpu", gpus_per_replica: "1", listen_host: "127.0.0.1", shared_dir: shared, launcher: "venv",
        "venv.vllm": VLLM_VENV!, "venv.trainer": TRAINER_VENV!, "venv.trainer_source": path.resolve("containers/trainer"), start_timeout_s: "300"
      }).flatMap(([k, v]) => ["--override", `compute.slurm.${k}=${v}`])
    ]
    const run = path.join(runs, expId)
    try {
      // 1. Killed once the first inference has answered a few requests: no cleanup of any kind runs.
      const first = dartAsync(args)
      let stderr = ""
      let killedJobs: Array<string> = []
      first.child.stderr.on("data", (c: Buffer) => {
        const before = stderr.length
        stderr += c.toString()
        if (before === stderr.length || killedJobs.length > 0) return
        if (/infer primary_val_off_M0_vs_DART: ([4-9]|[12]\d)\/32 requests/.test(stderr)) {
          killedJobs = ["pending"]
          void active(expId).then((jobs) => {
            killedJobs = jobs.map((j) => j.id)
            first.child.kill("SIGKILL")
          })
        }
      })
      const r1 = await first.done
      expect(r1.signal, r1.stderr.slice(-3000)).toBe("SIGKILL")
      // Both replicas (and the classifiers, which live for the run on CPU) were jobs when it died; they outlive it.
      expect(killedJobs.length).toBeGreaterThanOrEqual(2)
      expect((await active(expId)).map((j) => j.id).sort()).toEqual([...killedJobs].sort())

      // 2. Run again: the orphans go first, then the run resumes to the end. Midway through the test-split inference the
      // replica answering is scancelled: the stage completes on the other (and nothing the run writes changes).
      const second = dartAsync(args)
      let stderr2 = ""
      let cancelled: { service: string; job: string } | undefined
      second.child.stderr.on("data", (c: Buffer) => {
        stderr2 += c.toString()
        if (cancelled !== undefined) return
        const line = /infer primary_test_off_M0_DART_DART_H: (\d+)\/48 requests[^\n]*\n/.exec(stderr2.slice(-600))
        if (line === null || Number(line[1]) < 10 || Number(line[1]) > 40) return
        // The replica answering now (the most answers so far), not one that sits idle.
        const serving = [...line[0].matchAll(/http:\/\/127\.0\.0\.1:(800[01]) c=\d+ (\d+)/g)].sort((a, b) => Number(b[2]) - Number(a[2]))[0]
        if (serving === undefined || Number(serving[2]) === 0) return
        const service = serving[1] === "8000" ? "vllm" : "vllm-2"
        cancelled = { service, job: "" }
        void active(expId).then((jobs) => {
          const job = jobs.find((j) => j.comment.includes(` service=${service} `))
          if (job === undefined) return
          cancelled = { service, job: job.id }
          execFileSync("scancel", [job.id])
        })
      })
      const r2 = await second.done
      expect(r2.code, r2.stderr.slice(-3000)).toBe(0)
      expect(r2.stderr).toMatch(new RegExp(`removed ${killedJobs.length} service\\(s\\) left by a killed run`))
      expect(cancelled?.job, "a replica was scancelled mid-inference").toMatch(/^\d+$/)
      expect(r2.stderr).toMatch(new RegExp(`vLLM replica ${cancelled!.service} on \\S+: lost \\(job ${cancelled!.job}`))
      const testServers = JSON.parse(readFileSync(path.join(run, "predictions/primary_test_off_M0_DART_DART_H/manifest.json"), "utf8")).servers as Array<{ url: string; answered: number }>
      expect(testServers.filter((x) => x.answered > 0).length, "both replicas answered part of the stage").toBe(2)
      const nowActive = new Set((await active(expId)).map((j) => j.id))
      for (const id of killedJobs) expect(nowActive.has(id), `job ${id} of the killed run`).toBe(false)

      // Every artifact is the reference run's, but for what a resumed run records about itself: the stage ledger
      // (runs, interruptions) and the killed inference's own bookkeeping (requests this run, answers kept from before).
      const killedStage = "predictions/primary_val_off_M0_vs_DART"
      const lostStage = "predictions/primary_test_off_M0_DART_DART_H"
      const resumeFacts = ["manifest.json", ...[killedStage, lostStage].flatMap((d) => [`${d}/manifest.json`, `${d}/answers.jsonl`])]
      const diff = compareDigests(expected.digests, runDigests(run, runs, "http://127.0.0.1:8000"), sameMachine)
      expect({ ...diff, changed: diff.changed.filter((f) => !resumeFacts.includes(f)) }).toEqual({ changed: [], missing: [], extra: [] })
      // Those: every request answered, all rows complete, the killed run's answers kept. A request is asked again only
      // to keep a row's arms on one server (docs/fleet.md §3): an arm the other replica had answered, never one the
      // same server had (the rows' texts are the reference's either way: outputs.jsonl is compared above).
      for (const [stage, requests, rows] of [[killedStage, 32, 16], [lostStage, 48, 16]] as const) {
        const answers = readFileSync(path.join(run, stage, "answers.jsonl"), "utf8").split("\n").filter((l) => l.trim() !== "").map((l) => JSON.parse(l) as { key: string; server: string })
        expect(new Set(answers.map((a) => a.key)).size, stage).toBe(requests)
        const twice = answers.filter((a, i) => answers.findIndex((b) => b.key === a.key && b.server === a.server) !== i)
        expect(twice.map((a) => a.key), `${stage}: asked twice on one server`).toEqual([])
        expect(JSON.parse(readFileSync(path.join(run, stage, "manifest.json"), "utf8")).rows).toEqual({ complete: rows, total: rows })
      }
      const manifest = JSON.parse(readFileSync(path.join(run, killedStage, "manifest.json"), "utf8"))
      expect(manifest.this_run.answered_before).toBeGreaterThan(0)
      const ledger = JSON.parse(readFileSync(path.join(run, "manifest.json"), "utf8")).stages
      for (const [k, v] of Object.entries(ledger)) expect((v as { status: string }).status, k).toBe("done")

      // Each service was a job: its log starts with the node and the GPUs Slurm gave it; the two replicas got different ones.
      const jobLine = (service: string) => {
        const lines = readFileSync(path.join(run, "logs", `slurm-${service}.log`), "utf8").split("\n").filter((l) => l.startsWith("dart: job "))
        expect(lines.length, service).toBeGreaterThan(0)
        return lines.at(-1)!
      }
      for (const s of ["trainer", "classifier-toxicity", "classifier-hate"]) jobLine(s)
      const gpus = ["vllm", "vllm-2"].map((s) => /CUDA_VISIBLE_DEVICES=(\d)/.exec(jobLine(s))?.[1])
      expect(gpus.every((g) => g !== undefined)).toBe(true)
      expect(gpus[0]).not.toBe(gpus[1])
      // And nothing of the experiment is left in the queue (a cancelled job is COMPLETING for a few seconds while its
      // service stops).
      for (let i = 0; i < 60 && (await active(expId)).length > 0; i++) await new Promise((r) => setTimeout(r, 500))
      expect(await active(expId)).toEqual([])
    } finally {
      const left = (await active(expId)).map((j) => j.id)
      if (left.length > 0) execFileSync("scancel", left)
      rmSync(shared, { recursive: true, force: true })
    }
  }, 1_500_000)
})
