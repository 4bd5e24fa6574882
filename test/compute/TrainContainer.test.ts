import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { execFileSync, spawnSync } from "node:child_process"
import { createHash } from "node:crypto"
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { DEFAULT_TRAINER_CPU_IMAGE } from "../../src/compute/ContainerSpecs.ts"
import { studentMessages } from "../../src/teacher/Prompts.ts"
import { dart } from "../support/Cli.ts"
import { containersOf, freePort, SOCKET } from "../support/DockerEngine.ts"
import { buildTinyModel } from "../support/Trainer.ts"

// `dart train` with compute.trainer.endpoint null: it starts the trainer image (CPU build, on the local Debian
// base) on the engine, trains through it, brings the adapter home, and removes the container.
const scratch = mkdtempSync(path.join(tmpdir(), "dart-train-ctr-"))
const runs = path.join(scratch, "runs")
const expId = `ttrain${process.pid}`
let model = ""
let port = 0

beforeAll(async () => {
  const present = spawnSync("docker", ["image", "inspect", DEFAULT_TRAINER_CPU_IMAGE], { stdio: "ignore" }).status === 0
  // About 4 minutes and 6.5 GB the first time; set-up builds it beforehand.
  if (!present) execFileSync("containers/base/build-trainer.sh", ["cpu"], { stdio: "ignore", timeout: 900_000 })
  model = buildTinyModel(path.join(scratch, "tiny"))
  port = await freePort()
  // Settings that change results belong to the run (dart init); the train stage may change only operational keys.
  expect(dart(["init", "--exp-id", expId, "--override", `run.runs_dir=${runs}`, "--override", "datasets.limits.train=8",
    "--override", `model.base=${model}`, "--override", "model.dtype=float32", "--override", "training.per_device_batch_size=4",
    "--override", "training.gradient_accumulation_steps=1", "--override", "training.save_steps=2", "--override", "training.eval_steps=2",
    "--override", "training.gradient_checkpointing=false", "--override", "training.max_length=512", "--override", "training.lora.r=8",
    "--override", "training.lora.alpha=16", "--override", "training.max_lora_rank=16", "--override", "training.eval_fraction=0.1"
  ]).code).toBe(0)
  const exp = path.join(runs, expId)
  const items = readFileSync(path.join(exp, "datasets/train.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l))
  mkdirSync(path.join(exp, "teacher_outputs/distill"), { recursive: true })
  writeFileSync(path.join(exp, "teacher_outputs/distill/outputs.jsonl"), items.map((it: { id: string; question: string; gold_label: string }) => JSON.stringify({
    key: it.id, accepted: true,
    messages: [...studentMessages(it.question), { role: "assistant", content: `the facts differ here. careful reading supports the label.\nConclusion: ${it.gold_label}` }]
  })).join("\n") + "\n")
}, 1_000_000)
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

describe("dart train without a trainer endpoint", () => {
  it("starts its own trainer container, trains through it, and removes it", () => {
    const r = dart([
      "train", "--stage", "mdac", "--adapter-name", "DART", "--epochs", "1", "--exp-id", expId,
      "--override", `run.runs_dir=${runs}`,
      "--override", `compute.hosts=[{"name":"local","docker":"unix://${SOCKET}","gpus":[]}]`,
      "--override", `compute.trainer.port=${port}`
    ])
    expect(r.stderr).not.toContain("dart: error")
    expect(r.code).toBe(0)
    expect(r.stderr).toContain(`trainer trainer on local at 127.0.0.1:${port}`)
    const final = path.join(runs, expId, "adapters/DART/final")
    const record = JSON.parse(readFileSync(path.join(final, "training_record.json"), "utf8"))
    for (const f of record.files) expect(createHash("sha256").update(readFileSync(path.join(final, f.path))).digest("hex")).toBe(f.sha256)
    expect(record.metrics.global_step).toBeGreaterThan(0)
    expect(containersOf(expId)).toEqual([])
    expect(readFileSync(path.join(runs, expId, "logs", "local-trainer.log"), "utf8").length).toBeGreaterThan(0)
  }, 600_000)
})
