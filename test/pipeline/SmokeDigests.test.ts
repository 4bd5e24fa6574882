import { afterAll, describe, expect, it } from "@effect/vitest"
import { spawnSync } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { dartAsync } from "../support/AdapterFixture.ts"
import { containersOf } from "../support/DockerEngine.ts"
import { compareDigests, machineFingerprint, runDigests } from "../support/RunDigests.ts"

// A change that only moves code must leave every artifact of the smoke run as it was: the digests of a run made on
// the commit before the architecture change (test/vectors/smoke_digests.json, its command inside) against a run now.
// One request at a time everywhere, one text per /classify call: vLLM on CPU batches concurrent requests differently
// from run to run, a random tiny model's sampled tokens follow those float differences, and classifier scores move in
// their 7th digit with the batch a text lands in; serially, two runs are identical (checked on two runs).
const IMAGES = ["dart-vllm-cpu:0.32.0", "dart-trainer-cpu:0.1.0"]
const haveImages = IMAGES.every((i) => spawnSync("docker", ["image", "inspect", i], { stdio: "ignore" }).status === 0)
const scratch = mkdtempSync(path.join(tmpdir(), "dart-digests-"))
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

const DIGEST_RUN_ARGS = [
  "run", "--config", "configs/smoke.json",
  "--override", "inference.concurrency=1", "--override", "teacher.max_concurrency=1",
  "--override", "judge.max_concurrency=1", "--override", "audit.classifier_concurrency=1", "--override", "audit.classifier_batch_size=1"
]

describe.skipIf(!haveImages)("the smoke run's artifacts", () => {
  it("are the ones the commit before the architecture change made (same profile and seed)", async () => {
    const expected = JSON.parse(readFileSync("test/vectors/smoke_digests.json", "utf8")) as { digests: Record<string, string>; machine?: string }
    const sameMachine = expected.machine === machineFingerprint()
    if (!sameMachine) console.log(`smoke digests: made on another CPU (${expected.machine ?? "unrecorded"} vs ${machineFingerprint()}): float-dependent artifacts are checked for presence only`)
    const runs = path.join(scratch, "runs")
    try {
      const r = await dartAsync([...DIGEST_RUN_ARGS, "--override", `run.runs_dir=${runs}`]).done
      expect(r.code, r.stderr.slice(-3000)).toBe(0)
      const diff = compareDigests(expected.digests, runDigests(path.join(runs, "smoke")), sameMachine)
      expect(diff).toEqual({ changed: [], missing: [], extra: [] })
    } finally {
      spawnSync("docker", ["rm", "-f", "-v", ...containersOf("smoke")], { stdio: "ignore" })
    }
  }, 1_200_000)
})
