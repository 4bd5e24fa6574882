import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { createHash } from "node:crypto"
import { spawn } from "node:child_process"
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { studentMessages } from "../../src/teacher/Prompts.ts"
import { dart } from "../support/Cli.ts"
import { buildTinyModel, startSidecar } from "../support/Trainer.ts"

const scratch = mkdtempSync(path.join(tmpdir(), "dart-train-"))
const runs = path.join(scratch, "runs")
const exp = path.join(runs, "tr")
let sidecar: Awaited<ReturnType<typeof startSidecar>>
let model = ""
const sha = (file: string) => createHash("sha256").update(readFileSync(file)).digest("hex")

// Settings that change results belong to the run (dart init); later stages may change only operational keys.
const settings = () => [
  "--override", `model.base=${model}`, "--override", "model.dtype=float32", "--override", "training.per_device_batch_size=4",
  "--override", "training.gradient_accumulation_steps=1", "--override", "training.learning_rate=0.01", "--override", "training.save_steps=2",
  "--override", "training.eval_steps=2", "--override", "training.gradient_checkpointing=false", "--override", "training.max_length=512",
  "--override", "training.lora.r=8", "--override", "training.lora.alpha=16", "--override", "training.max_lora_rank=16",
  "--override", "training.eval_fraction=0.1", "--override", "training.lr_scheduler=constant"
]
const common = (expId = "tr") => ["--exp-id", expId, "--override", `run.runs_dir=${runs}`, "--override", `compute.trainer.endpoint=${sidecar.address}`]

/** A run of 16 training items with teacher outputs as `dart teacher` writes them (accepted rows with the student prompt). */
const initRun = (expId: string, extra: ReadonlyArray<string> = []) => {
  const init = dart(["init", "--exp-id", expId, "--override", `run.runs_dir=${runs}`, "--override", "datasets.limits.train=16", ...settings(), ...extra])
  expect(init.stderr).not.toContain("dart: error")
  expect(init.code).toBe(0)
  const dir = path.join(runs, expId)
  const items = readFileSync(path.join(dir, "datasets/train.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l))
  const row = (it: { id: string; question: string; gold_label: string }, extra: object = {}) => JSON.stringify({
    key: it.id, accepted: true, ...extra,
    messages: [...studentMessages(it.question), { role: "assistant", content: `the facts differ here. careful reading supports the label.\nConclusion: ${it.gold_label}` }]
  })
  mkdirSync(path.join(dir, "teacher_outputs/distill"), { recursive: true })
  writeFileSync(path.join(dir, "teacher_outputs/distill/outputs.jsonl"), items.map((it) => row(it)).join("\n") + "\n")
  const severities = ["mild", "moderate", "severe", "extreme"]
  writeFileSync(path.join(dir, "teacher_outputs/repair/outputs.jsonl"), items.slice(0, 4).map((it, i) =>
    JSON.stringify({ key: it.id, accepted: true, severity: severities[i],
      messages: [...studentMessages(it.question), { role: "assistant", content: `this is a safe high level analysis. it avoids detail.\nConclusion: ${it.gold_label}` }] })
  ).join("\n") + "\n")
}

beforeAll(async () => {
  model = buildTinyModel(path.join(scratch, "tiny"))
  sidecar = await startSidecar(path.join(scratch, "sidecar"), 16)
  initRun("tr")
}, 180_000)

afterAll(() => sidecar?.stop())

describe("dart train against the real sidecar", () => {
  it("trains DART (stage mdac) and brings the adapter home intact", () => {
    const r = dart(["train", "--stage", "mdac", "--adapter-name", "DART", ...common(), "--epochs", "1"])
    expect(r.stderr).not.toContain("dart: error")
    expect(r.code).toBe(0)
    const final = path.join(exp, "adapters/DART/final")
    const record = JSON.parse(readFileSync(path.join(final, "training_record.json"), "utf8"))
    expect(record.stage).toBe("dart")
    expect(record.recipe).toBe("distill")
    for (const f of record.files) expect(sha(path.join(final, f.path)), f.path).toBe(f.sha256)
    expect(record.files.map((f: { path: string }) => f.path)).toEqual(["adapter_config.json", "adapter_model.safetensors"])
    expect(record.validation.rank).toBe("8")
    // 16 items, 10% held out for eval: 15 training rows in batches of 4.
    expect(record.metrics.global_step).toBe(4)
    expect(record.versions.protocol).toBe("dart.trainer.v1")
    expect(JSON.parse(readFileSync(path.join(final, "adapter_config.json"), "utf8")).modules_to_save ?? null).toBeNull()
    expect(r.stderr).toMatch(/train DART step \d+\/\d+ loss/)
  })

  it("trains DART_H (stage mdac_h) from the DART adapter with repairs repeated by severity", () => {
    const init = path.join(exp, "adapters/DART/final")
    const r = dart(["train", "--stage", "mdac_h", "--recipe", "mix", "--adapter-name", "DART_H", "--init-adapter", init,
      "--repair-oversample", "mild=1,moderate=2,severe=3,extreme=4", ...common(), "--epochs", "1"])
    expect(r.stderr).not.toContain("dart: error")
    expect(r.code).toBe(0)
    const dir = path.join(exp, "adapters/DART_H")
    const record = JSON.parse(readFileSync(path.join(dir, "final/training_record.json"), "utf8"))
    expect(record.stage).toBe("dart_h")
    expect(record.init_adapter.files).toEqual([
      { path: "adapter_config.json", sha256: sha(path.join(init, "adapter_config.json")) },
      { path: "adapter_model.safetensors", sha256: sha(path.join(init, "adapter_model.safetensors")) }
    ])
    const uploaded = readFileSync(path.join(dir, "train.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l))
    const safe = uploaded.filter((u) => u.messages[2].content.startsWith("this is a safe"))
    expect(safe).toHaveLength(1 + 2 + 3 + 4)
    const manifest = JSON.parse(readFileSync(path.join(dir, "mix_manifest.json"), "utf8"))
    expect(manifest.output).toEqual({ total: 16 + 10, distill: 16, repair: 10, repair_by_severity: { mild: 1, moderate: 2, severe: 3, extreme: 4 } })
    for (const f of record.files) expect(sha(path.join(dir, "final", f.path))).toBe(f.sha256)
    const again = dart(["train", "--stage", "dart_h", "--recipe", "mix", "--adapter-name", "DART_H", "--init-adapter", init,
      "--repair-oversample", "mild=1,moderate=2,severe=3,extreme=4", ...common(), "--epochs", "1"])
    expect(again.stdout).toContain("is up to date")
  })

  it("cancels the job on the sidecar when the user presses Ctrl-C", async () => {
    const child = spawn(process.execPath, ["bin/dart.js", "train", "--stage", "dart", "--adapter-name", "CTRLC", ...common(), "--epochs", "500"],
      { env: { ...process.env, EXP_ID: "" }, stdio: ["ignore", "ignore", "pipe"] })
    let stderr = ""
    const exit = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)))
    await new Promise<void>((resolve) => child.stderr!.on("data", (c) => {
      stderr += c
      if (/train CTRLC step \d+/.test(stderr)) resolve()
    }))
    child.kill("SIGINT")
    expect(await exit).toBe(130)
    const jobs = path.join(scratch, "sidecar/jobs")
    const job = readdirSync(jobs).find((d) => d.includes("-CTRLC-"))!
    const lastEvent = async () => {
      for (let i = 0; i < 200; i++) {
        const events = readFileSync(path.join(jobs, job, "events.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l))
        const last = events[events.length - 1]
        if (last.kind === "failed" || last.kind === "done") return last
        await new Promise((r) => setTimeout(r, 100))
      }
      return undefined
    }
    expect(await lastEvent()).toMatchObject({ kind: "failed", code: "cancelled" })
  })

  it("reports bad input with the trainer's status, and the sidecar keeps serving", () => {
    initRun("big", ["--override", "training.lora.r=32", "--override", "training.max_lora_rank=64"])
    initRun("nobase", ["--override", "model.base=/no/such/model"])
    initRun("after", ["--override", "training.per_device_batch_size=16"])
    const rank = dart(["train", "--stage", "dart", "--adapter-name", "BIG", ...common("big")])
    expect(rank.code).toBe(1)
    expect(rank.stderr).toContain("INVALID_ARGUMENT: LoRA rank 32 is outside 1..16 (the configured max_lora_rank)")
    const ledger = JSON.parse(readFileSync(path.join(runs, "big", "manifest.json"), "utf8")).stages["train/BIG"]
    expect(ledger.status).toBe("failed")
    expect(ledger.error).toContain("LoRA rank 32")
    const base = dart(["train", "--stage", "dart", "--adapter-name", "NOBASE", ...common("nobase")])
    expect(base.code).toBe(1)
    expect(base.stderr).toContain("INVALID_ARGUMENT: unknown base model path /no/such/model")
    const noInit = dart(["train", "--stage", "dart_h", "--adapter-name", "X", "--init-adapter", "/nope", ...common()])
    expect(noInit.stderr).toContain("--init-adapter /nope: adapter_config.json is missing")
    const ok = dart(["train", "--stage", "mdac", "--adapter-name", "DART", ...common(), "--epochs", "1"])
    expect(ok.stdout).toContain("is up to date")
    // The same sidecar still trains: a new adapter (one step) goes through it after all that.
    const after = dart(["train", "--stage", "dart", "--adapter-name", "AFTER", ...common("after"), "--epochs", "1"])
    expect(after.stderr).not.toContain("dart: error")
    expect(after.code).toBe(0)
    const record = JSON.parse(readFileSync(path.join(runs, "after", "adapters/AFTER/final/training_record.json"), "utf8"))
    expect(record.metrics.global_step).toBe(1)
    const job = readdirSync(path.join(scratch, "sidecar/jobs")).find((d) => d.includes("-AFTER-"))!
    const events = readFileSync(path.join(scratch, "sidecar/jobs", job, "events.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l))
    expect(events.map((e) => e.kind)).toContain("done")
  })
})
