import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { spawnSync } from "node:child_process"
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { dartAsync, writeAdapter } from "../support/AdapterFixture.ts"
import { containersOf, freePort, SOCKET } from "../support/DockerEngine.ts"
import { trainerPython } from "../support/Trainer.ts"

// `dart infer` with no endpoint configured: it starts the CPU vLLM image on the Docker host, moves the adapter in by
// put-archive, loads it, passes the canary, answers, and removes the container. The image is built by set-up.
const IMAGE = "dart-vllm-cpu:0.32.0"
const haveImage = spawnSync("docker", ["image", "inspect", IMAGE], { stdio: "ignore" }).status === 0
const scratch = mkdtempSync(path.join(tmpdir(), "dart-infer-ctr-"))
const runs = path.join(scratch, "runs")
const expId = `tinferctr${process.pid}`
const model = path.join(scratch, "tiny")

beforeAll(() => {
  if (!haveImage) return
  const built = spawnSync(trainerPython(), ["test/support/tiny_llama.py", model, "benchmark_suite"], { encoding: "utf8", env: { ...process.env, HF_HUB_OFFLINE: "1" } })
  expect(built.status, built.stderr).toBe(0)
  const init = spawnSync(process.execPath, ["bin/dart.js", "init", "--exp-id", expId, "--override", `run.runs_dir=${runs}`, "--override", 'datasets.benchmarks=["D1"]',
    "--override", "datasets.limits.val=3", "--override", `model.base=${model}`, "--override", "model.dtype=float32", "--override", "model.max_model_len=512",
    "--override", "inference.max_tokens=16"], { encoding: "utf8", env: { ...process.env, EXP_ID: "" } })
  expect(init.status, init.stderr).toBe(0)
}, 300_000)
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

describe.skipIf(!haveImage)("dart infer without a vLLM endpoint", () => {
  it("starts vLLM in a container, puts the adapter in by archive, answers through it, and removes the container", async () => {
    const adapter = writeAdapter(path.join(scratch, "adapter"), { seed: 3 })
    const port = await freePort()
    const r = await dartAsync(["infer", "--models", `M0,DART=${adapter}`, "--run-name", "ctr", "--exp-id", expId, "--override", `run.runs_dir=${runs}`,
      "--override", `compute.hosts=[{"name":"local","docker":"unix://${SOCKET}","gpus":[]}]`, "--override", `compute.vllm.port=${port}`]).done
    expect(r.stderr).not.toContain("dart: error")
    expect(r.code).toBe(0)
    const rows = readFileSync(path.join(runs, expId, "predictions/ctr/outputs.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l))
    expect(rows).toHaveLength(3)
    for (const row of rows) expect(Object.keys(row.outputs).sort()).toEqual(["DART", "M0"])
    // The adapter was loaded from the container's own copy, content-addressed by its checksum.
    const log = readFileSync(path.join(runs, expId, "logs/local-vllm.log"), "utf8")
    expect(log).toMatch(/\/adapters\/DART-[0-9a-f]{12}/)
    expect(existsSync(path.join(runs, expId, "predictions/ctr/manifest.json"))).toBe(true)
    expect(containersOf(expId)).toEqual([])
  }, 600_000)
})
