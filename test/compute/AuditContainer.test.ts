import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { spawnSync } from "node:child_process"
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { dartAsync } from "../support/AdapterFixture.ts"
import { containersOf, freePort, SOCKET } from "../support/DockerEngine.ts"
import { trainerPython } from "../support/Trainer.ts"

// `dart audit` with no /classify endpoint: it starts the classifier on the CPU vLLM image (pooling runner), scores
// through it, and removes the container. The image is built by set-up.
const IMAGE = "dart-vllm-cpu:0.32.0"
const haveImage = spawnSync("docker", ["image", "inspect", IMAGE], { stdio: "ignore" }).status === 0
const scratch = mkdtempSync(path.join(tmpdir(), "dart-audit-ctr-"))
const runs = path.join(scratch, "runs")
const expId = `tauditctr${process.pid}`
const models = path.join(scratch, "models")

beforeAll(() => {
  if (!haveImage) return
  const built = spawnSync(trainerPython(), ["test/support/tiny_classifiers.py", "build", models], { encoding: "utf8", env: { ...process.env, HF_HUB_OFFLINE: "1" } })
  expect(built.status, built.stderr).toBe(0)
  // No endpoint and no id2label: the labels come from the model folder, the server from the compute layer.
  const classifiers = JSON.stringify([{ name: "hate", model: path.join(models, "hate"), label: "hate", max_tokens: 512 }])
  const init = spawnSync(process.execPath, ["bin/dart.js", "init", "--exp-id", expId, "--override", `run.runs_dir=${runs}`, "--override", 'datasets.benchmarks=["D1"]',
    "--override", "datasets.limits.val=4", "--override", `audit.classifiers=${classifiers}`], { encoding: "utf8", env: { ...process.env, EXP_ID: "" } })
  expect(init.status, init.stderr).toBe(0)
}, 300_000)
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

describe.skipIf(!haveImage)("dart audit without a /classify endpoint", () => {
  it("starts the classifier in a container, scores both views through it, and removes the container", async () => {
    const val = readFileSync(path.join(runs, expId, "datasets/val.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l))
    const input = path.join(scratch, "pairs.jsonl")
    writeFileSync(input, val.map((it) => `${JSON.stringify({
      task: "dart", id: it.id, benchmark: it.benchmark, condition: it.condition, scenario: it.scenario, sample: 0,
      outputs: { M0: { text: "The groups differ on a measurable fact.\nConclusion: YES" }, DART: { text: "This group is worse than the other one.\nConclusion: YES" } }
    })}\n`).join(""))
    const port = await freePort()
    const r = await dartAsync(["audit", "--paired-input", input, "--a-name", "M0", "--b-name", "DART", "--run-name", "ctr", "--no-use-llm-judge",
      "--exp-id", expId, "--override", `run.runs_dir=${runs}`,
      "--override", `compute.hosts=[{"name":"local","docker":"unix://${SOCKET}","gpus":[]}]`, "--override", `compute.vllm.port=${port - 1}`]).done
    expect(r.stderr).not.toContain("dart: error")
    expect(r.code).toBe(0)
    const scores = readFileSync(path.join(runs, expId, "audit/ctr/scores.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l))
    expect(scores).toHaveLength(val.length)
    for (const row of scores) {
      for (const view of ["full_output", "analysis_only"]) {
        const s = row.scores[view].hate
        expect(s.a).toBeGreaterThanOrEqual(0)
        expect(s.b).toBeLessThanOrEqual(1)
        expect(s.delta).toBeCloseTo(s.b - s.a, 12)
      }
    }
    expect(existsSync(path.join(runs, expId, "logs/local-classifier-hate.log"))).toBe(true)
    expect(containersOf(expId)).toEqual([])
  }, 600_000)
})
