import { describe, expect, it } from "@effect/vitest"
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { runDart } from "../support/Dart.ts"

/** The command-line corners of issue 12 ("Smaller ones" and the evaluate overwrite). */

const scratch = mkdtempSync(path.join(tmpdir(), "dart-harden-cli-"))
const runs = path.join(scratch, "runs")
const at = ["--override", `run.runs_dir=${runs}`]
const small = [...at, "--override", `datasets.benchmarks=["D1"]`, "--override", "datasets.limits.train=8"]

/** Twelve predictions for items of run `ev` (dart evaluate refuses ids that are not the run's). */
const predictions = (file: string, flip: boolean) => {
  const items = ["train", "val", "test"].flatMap((s) =>
    readFileSync(path.join(runs, "ev", "datasets", `${s}.jsonl`), "utf8").split("\n").filter((l) => l.trim() !== "").map((l) => JSON.parse(l)))
  const rows = items.slice(0, 12).map((item, i) => {
    const gold = item.gold_label as string
    const said = flip && i < 3 ? (gold === "YES" ? "NO" : "YES") : gold
    return JSON.stringify({
      task: "dart", id: item.id, benchmark: item.benchmark, condition: item.condition,
      scenario: item.scenario, answer: item.answer ?? 0, gold_label: gold, sample: 0, outputs: { "M|0\\x": { text: `Because.\nConclusion: ${said}` } }
    })
  })
  writeFileSync(file, rows.join("\n") + "\n")
}

describe("command-line corners", () => {
  it("exits 2 for a malformed --override and for --epochs that is not a whole number of 1 or more", async () => {
    const o = await runDart(["init", ...at, "--override", "training.epochs"])
    expect(o.code).toBe(2)
    expect(o.stderr).toContain(`malformed --override "training.epochs": expected key.path=value`)
    for (const e of ["-1", "0", "1.5"]) {
      const r = await runDart(["train", "--stage", "mdac", "--adapter-name", "X", ...at, `--epochs=${e}`])
      expect(r.code, e).toBe(2)
      expect(r.stderr, e).toMatch(/--epochs/)
    }
  })

  it("refuses duplicate keys in a config file with their line", async () => {
    const cfg = path.join(scratch, "dup.json")
    writeFileSync(cfg, `{\n  "teacher": { "max_concurrency": 4 },\n  "teacher": { "max_concurrency": 16 }\n}\n`)
    const r = await runDart(["init", "--config", cfg, ...at])
    expect(r.code).toBe(1)
    expect(r.stderr).toContain(`${cfg}: invalid config\n  teacher: duplicate key (line 3)`)
  })

  it("warns when a split is empty", async () => {
    const r = await runDart(["init", "--exp-id", "split100", ...small, "--override", "datasets.split={\"strategy\":\"scenario\",\"seed\":1,\"train\":1,\"val\":0,\"test\":0}"])
    expect(r.code).toBe(0)
    expect(r.stderr).toContain("warning: the val split is empty")
    expect(r.stderr).toContain("warning: the test split is empty")
  })

  it("refuses to overwrite an evaluation made from other inputs unless --force, and says what differs", async () => {
    expect((await runDart(["init", "--exp-id", "ev", ...small])).code).toBe(0)
    const a = path.join(scratch, "a.jsonl")
    const b = path.join(scratch, "b.jsonl")
    predictions(a, false)
    predictions(b, true)
    const evaluate = (pred: string, extra: ReadonlyArray<string> = []) =>
      runDart(["evaluate", "--exp-id", "ev", ...at, "--pred", pred, "--run-name", "main_with_a_rather_long_evaluation_name", "--a-name", "M|0\\x", ...extra])
    const first = await evaluate(a)
    expect(first.stderr).toBe("")
    expect(first.code).toBe(0)
    const again = await evaluate(b)
    expect(again.code).toBe(1)
    expect(again.stderr).toContain(`evaluation "main_with_a_rather_long_evaluation_name" already exists`)
    expect(again.stderr).toMatch(/predictions\.file: ".*a\.jsonl" \(recorded\) -> ".*b\.jsonl" \(now\)/)
    expect(again.stderr).toContain("--force")
    expect((await evaluate(b, ["--force"])).code).toBe(0)
    // Long stage names keep the status columns apart.
    const s = await runDart(["status", "--exp-id", "ev", ...at])
    expect(s.stdout).toMatch(/evaluate\/main_with_a_rather_long_evaluation_name {2,}done {2,}/)
  })

  it("names a non-pickle file and refuses an empty import", async () => {
    const notPickle = path.join(scratch, "D1_1k.pkl")
    writeFileSync(notPickle, "{\"hello\": 1}\n")
    const r = await runDart(["datasets", "import", notPickle, "--out", path.join(scratch, "D1.jsonl")])
    expect(r.code).toBe(1)
    expect(r.stderr).toContain("not a Python pickle")
    const empty = path.join(scratch, "D2_1k.pkl")
    writeFileSync(empty, Uint8Array.from([0x80, 2, 0x5d, 0x71, 0, 0x5d, 0x71, 1, 0x86, 0x71, 2, 0x2e]))
    const e = await runDart(["datasets", "import", empty, "--out", path.join(scratch, "D2.jsonl")])
    expect(e.code).toBe(1)
    expect(e.stderr).toContain("no items")
  })
})
