import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { createHash } from "node:crypto"
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { showName } from "../../src/runs/SafePath.ts"
import { studentMessages } from "../../src/teacher/Prompts.ts"
import { filesUnder } from "../support/Cli.ts"
import { runDart } from "../support/Dart.ts"
import { type AdapterPlan, adapterFiles, generatedFile, honestFile, type SentFile, startHostileTrainer } from "../support/HostileTrainer.ts"

/**
 * `dart train` against a trainer that lies (issue 21): the adapter's file names, sizes and bytes come from the
 * peer, so a name must not place a file outside `adapters/NAME/final/`, a size must hold as bytes arrive, and
 * nothing lands in `final/` until every file is verified. Every case runs the real CLI in its own process.
 */

const scratch = mkdtempSync(path.join(tmpdir(), "dart-trainer-dl-"))
const runs = path.join(scratch, "runs")
const EXP = "hx"
const dir = path.join(runs, EXP)
const plans = new Map<string, AdapterPlan>()
let trainer: Awaited<ReturnType<typeof startHostileTrainer>>

// Job ids are `${exp}-${adapter}-${hash}`; neither the exp id nor the adapter names here hold a "-".
const planFor = (jobId: string): AdapterPlan => plans.get(jobId.split("-")[1]!) ?? { declared: [], sent: [] }

beforeAll(async () => {
  const init = await runDart(["init", "--exp-id", EXP, "--override", `run.runs_dir=${runs}`, "--override", `datasets.benchmarks=["D1"]`, "--override", "datasets.limits.train=16"])
  expect(init.stderr).not.toContain("dart: error")
  expect(init.code).toBe(0)
  const items = readFileSync(path.join(dir, "datasets/train.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l))
  mkdirSync(path.join(dir, "teacher_outputs/distill"), { recursive: true })
  writeFileSync(path.join(dir, "teacher_outputs/distill/outputs.jsonl"), items.map((it: { id: string; question: string; gold_label: string }) => JSON.stringify({
    key: it.id, accepted: true,
    messages: [...studentMessages(it.question), { role: "assistant", content: `the facts differ here.\nConclusion: ${it.gold_label}` }]
  })).join("\n") + "\n")
  trainer = await startHostileTrainer(planFor)
}, 60_000)

afterAll(() => trainer?.stop())

const train = (name: string, extra: ReadonlyArray<string> = [], options: Parameters<typeof runDart>[2] = {}) =>
  runDart(["train", "--stage", "dart", "--adapter-name", name, "--exp-id", EXP, "--override", `run.runs_dir=${runs}`,
    "--override", `compute.trainer.endpoint=${trainer.address}`, ...extra], {}, options)

const sha = (file: string) => createHash("sha256").update(readFileSync(file)).digest("hex")
const manifest = () => JSON.parse(readFileSync(path.join(dir, "manifest.json"), "utf8"))
/** Every file under `scratch` that is not inside the run. */
const outsideRun = () => filesUnder(scratch).filter((f) => !f.startsWith(dir + path.sep))
const declaredAsSent = (sent: ReadonlyArray<SentFile>): AdapterPlan => ({ declared: sent.map((f) => f.header), sent })

/**
 * The stage failed for `name` and left no trace: a message naming the job, the file name (escaped) and why;
 * nothing in `final/`, no temp or staging files, nothing outside the run, and a ledger that does not say done.
 */
const refused = async (name: string, badName: string, why: RegExp) => {
  const before = outsideRun()
  const r = await train(name)
  expect(r.code, r.stderr).toBe(1)
  const jobId = trainer.jobs.find((j) => j.split("-")[1] === name)!
  expect(r.stderr).toContain(jobId)
  expect(r.stderr).toContain(showName(badName))
  expect(r.stderr).toMatch(why)
  // A control character in a name reaches the terminal escaped, never raw.
  expect(r.stderr).not.toMatch(/[\u0000-\u0008\u000b-\u001f\u007f]/)
  const adapter = path.join(dir, "adapters", name)
  expect(filesUnder(path.join(adapter, "final"))).toEqual([])
  expect(existsSync(adapter) ? readdirSync(adapter) : []).toEqual([])
  expect(filesUnder(dir).filter((f) => /\.tmp$|\.part|\.download/.test(f))).toEqual([])
  expect(outsideRun()).toEqual(before)
  expect(manifest().stages[`train/${name}`]?.status).toBe("failed")
  return r
}

describe("file names the trainer chooses", () => {
  it("refuses a name that climbs out of final/ and writes nothing there", async () => {
    // adapters/TRAVERSAL/final -> five levels up is the scratch folder that holds runs/.
    const bad = "../../../../../escaped-traversal"
    plans.set("TRAVERSAL", declaredAsSent([...adapterFiles(), honestFile(bad, "owned")]))
    await refused("TRAVERSAL", bad, /it has a "\.\." segment/)
    expect(existsSync(path.join(scratch, "escaped-traversal"))).toBe(false)
    // The same name sent without being declared: refused as it arrives, before any of its bytes are written.
    const files = adapterFiles()
    plans.set("SNEAKED", { declared: files.map((f) => f.header), sent: [files[0]!, honestFile(bad, "owned"), files[1]!] })
    await refused("SNEAKED", bad, /it has a "\.\." segment/)
    expect(existsSync(path.join(scratch, "escaped-traversal"))).toBe(false)
  })

  it("refuses an absolute name before anything reaches final/", async () => {
    const bad = path.join(scratch, "escaped-absolute")
    plans.set("ABSOLUTE", declaredAsSent([...adapterFiles(), honestFile(bad, "owned")]))
    await refused("ABSOLUTE", bad, /it is an absolute path/)
    expect(existsSync(bad)).toBe(false)
  })

  it("refuses a name with control characters and shows it escaped", async () => {
    const bad = "adapter\u001b[2J\nmodel.bin"
    plans.set("CONTROL", declaredAsSent([...adapterFiles(), honestFile(bad, "owned")]))
    await refused("CONTROL", bad, /it holds a control character/)
  })

  it("refuses a trainer file named like the training record DART writes into final/", async () => {
    plans.set("RESERVED", declaredAsSent([...adapterFiles(), honestFile("training_record.json", "{}")]))
    await refused("RESERVED", "training_record.json", /DART writes its training record/)
  })

  it("refuses a file sent twice under one name", async () => {
    const [config, model] = adapterFiles()
    plans.set("DUPLICATE", { declared: [config!.header, model!.header], sent: [config!, model!, model!] })
    await refused("DUPLICATE", "adapter_model.safetensors", /more than once|twice/)
  })

  it("refuses a file the job's done event did not declare", async () => {
    const files = adapterFiles()
    plans.set("UNDECLARED", { declared: files.map((f) => f.header), sent: [...files, honestFile("notes.txt", "hello")] })
    await refused("UNDECLARED", "notes.txt", /not declared|did not declare/)
  })

  it("refuses a download that leaves out a declared file", async () => {
    const [config, model] = adapterFiles()
    plans.set("MISSING", { declared: [config!.header, model!.header], sent: [config!] })
    await refused("MISSING", "adapter_model.safetensors", /declared.*not sent|never sent/)
  })
})

describe("sizes and bytes the trainer sends", () => {
  it("stops reading the moment a file runs past its declared size", async () => {
    // The header claims 1 MiB (with the sha256 of those bytes); the trainer goes on sending up to 256 MiB.
    const honest = generatedFile("adapter_model.safetensors", 1024 * 1024)
    const endless = generatedFile("adapter_model.safetensors", 256 * 1024 * 1024)
    const lying: SentFile = { header: honest.header, chunks: endless.chunks }
    const [config] = adapterFiles()
    plans.set("LYING", { declared: [config!.header, honest.header], sent: [config!, lying] })
    await refused("LYING", "adapter_model.safetensors", /more than (its|the) declared 1048576 bytes/)
    const download = trainer.downloads.find((d) => d.jobId.split("-")[1] === "LYING")!
    // Flow control lets a few windows through after the limit, not the 256 MiB the trainer meant to send.
    expect(download.bytesSent).toBeLessThan(32 * 1024 * 1024)
    expect(download.endedAt).toBeUndefined()
  })

  it("refuses a file whose bytes do not match its sha256", async () => {
    const [config, model] = adapterFiles()
    const wrong = { ...model!.header, sha256: "0".repeat(64) }
    plans.set("BADSHA", { declared: [config!.header, wrong], sent: [config!, { header: wrong, chunks: model!.chunks }] })
    await refused("BADSHA", "adapter_model.safetensors", /sha256 [0-9a-f]{64}.*expected 0{64}/)
  })
})

describe("a download cut short", () => {
  it("Ctrl-C mid-download removes the partial files, leaves no final/ and records the stage interrupted", async () => {
    const big = generatedFile("adapter_model.safetensors", 256 * 1024 * 1024)
    plans.set("CTRLC", declaredAsSent([adapterFiles()[0]!, big]))
    const download = () => trainer.downloads.find((d) => d.jobId.split("-")[1] === "CTRLC")
    const r = await train("CTRLC", [], { signal: "SIGINT", when: () => (download()?.bytesSent ?? 0) > 16 * 1024 * 1024 })
    expect(r.code, r.stderr).toBe(130)
    expect(download()?.endedAt).toBeUndefined()
    const adapter = path.join(dir, "adapters/CTRLC")
    expect(existsSync(adapter) ? readdirSync(adapter) : []).toEqual([])
    expect(manifest().stages["train/CTRLC"]?.status).toBe("interrupted")
  })
})

describe("an honest trainer", () => {
  it("brings the adapter home with the declared files and sha256s, records them, and is up to date after", async () => {
    const files = [...adapterFiles("one"), honestFile("tokenizer/vocab.json", "{\"a\":1}")]
    plans.set("HONEST", declaredAsSent(files))
    const before = outsideRun()
    const r = await train("HONEST")
    expect(r.stderr).not.toContain("dart: error")
    expect(r.code).toBe(0)
    const adapter = path.join(dir, "adapters/HONEST")
    const final = path.join(adapter, "final")
    for (const f of files) expect(sha(path.join(final, f.header.path)), f.header.path).toBe(f.header.sha256)
    const record = JSON.parse(readFileSync(path.join(final, "training_record.json"), "utf8"))
    expect(record.files.map((f: { path: string }) => f.path)).toEqual(files.map((f) => f.header.path))
    expect(readdirSync(adapter).sort()).toEqual(["final", "mix_manifest.json", "train.jsonl"])
    expect(outsideRun()).toEqual(before)
    const stage = manifest().stages["train/HONEST"]
    expect(stage.status).toBe("done")
    for (const f of files) {
      expect(stage.outputs).toContainEqual({ path: `adapters/HONEST/final/${f.header.path}`, sha256: f.header.sha256, bytes: f.header.size })
    }
    expect(stage.outputs.map((o: { path: string }) => o.path)).toContain("adapters/HONEST/final/training_record.json")
    const again = await train("HONEST")
    expect(again.code).toBe(0)
    expect(again.stdout).toContain("is up to date")

    // Trained again with other inputs: final/ holds the new adapter only, not files left from the last one.
    const next = adapterFiles("two")
    plans.set("HONEST", declaredAsSent(next))
    const retrained = await train("HONEST", ["--epochs", "2"])
    expect(retrained.stderr).not.toContain("dart: error")
    expect(retrained.code).toBe(0)
    expect(filesUnder(final).map((f) => path.relative(final, f)).sort()).toEqual(["adapter_config.json", "adapter_model.safetensors", "training_record.json"])
    for (const f of next) expect(sha(path.join(final, f.header.path))).toBe(f.header.sha256)
    expect(readdirSync(adapter).sort()).toEqual(["final", "mix_manifest.json", "train.jsonl"])
  })
})
