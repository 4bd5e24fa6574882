import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { spawn } from "node:child_process"
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { startChatServer } from "../support/ChatServer.ts"
import { startClassifyServer } from "../support/ClassifyServer.ts"

// `dart run --dry-run` projects the judge's requests before anything is paid; the audit must then send exactly that
// many (one per pair, no bad replies), or the cost a user is shown is wrong (it was twice the real count).

const dart = (args: ReadonlyArray<string>, env: Record<string, string> = {}) =>
  new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, ["bin/dart.js", ...args], { env: { ...process.env, EXP_ID: "", ...env } })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (c) => (stdout += c))
    child.stderr.on("data", (c) => (stderr += c))
    child.on("exit", (code) => resolve({ code, stdout, stderr }))
  })

const KEY = "sk-projection-test-key"
const scratch = mkdtempSync(path.join(tmpdir(), "dart-judge-projection-"))
const runs = path.join(scratch, "runs")
const EXP = "proj"

let tox: Awaited<ReturnType<typeof startClassifyServer>>
let hate: Awaited<ReturnType<typeof startClassifyServer>>
let judge: Awaited<ReturnType<typeof startChatServer>>

const verdict = JSON.stringify({ is_regression: false, severity: "none", reason: "same", regression_type: "none", a_correct: true, b_correct: true })

beforeAll(async () => {
  tox = await startClassifyServer({ model: "tox-model", id2label: { 0: "non-toxic", 1: "toxic" }, harmfulIndex: 1, marker: "tox", maxChars: 1000 })
  hate = await startClassifyServer({ model: "hate-model", id2label: { 0: "nothate", 1: "hate" }, harmfulIndex: 1, marker: "hate", maxChars: 1000 })
  judge = await startChatServer({ reply: () => verdict })
})
afterAll(async () => {
  await tox.close()
  await hate.close()
  await judge.close()
})

describe("the judge projection of `dart run --dry-run`", () => {
  it("equals the requests the audit then sends: one per pair", async () => {
    const classifiers = JSON.stringify([
      { name: "toxicity", model: "tox-model", label: "toxic", max_tokens: 512, endpoint: tox.url, id2label: { 0: "non-toxic", 1: "toxic" } },
      { name: "hate", model: "hate-model", label: "hate", max_tokens: 512, endpoint: hate.url, id2label: { 0: "nothate", 1: "hate" } }
    ])
    const common = [
      "--exp-id", EXP, "--override", `run.runs_dir=${runs}`, "--override", `audit.classifiers=${classifiers}`,
      "--override", "judge.provider=compatible", "--override", `judge.base_url=${judge.url}`, "--override", "judge.model=judge-model",
      "--override", "audit.llm_judge.enabled=true", "--override", "audit.llm_judge.mode=validate",
      "--override", "datasets.limits.train=4", "--override", "datasets.limits.val=13", "--override", "datasets.limits.test=4"
    ]
    const init = await dart(["init", ...common])
    expect(init.stderr).not.toContain("dart: error")
    expect(init.code).toBe(0)

    // The plan: its line for the audit stage that feeds repair.
    const plan = await dart(["run", "--dry-run", ...common], { OPENAI_API_KEY: KEY, DEEPSEEK_API_KEY: KEY })
    const judged = /judge compatible judge-model \(mode validate, one request per pair\):\n {2}audit (\d+) pairs/.exec(plan.stdout)
    expect(judged, plan.stdout).not.toBeNull()
    const projected = Number(judged![1])

    // The audit of that stage's predictions (every val item), against a loopback judge that counts what it gets.
    const val = readFileSync(path.join(runs, EXP, "datasets/val.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l))
    const text = (t: number) => `The groups differ here. [[tox:${t}]] [[hate:0.01]]\nConclusion: YES`
    const input = path.join(scratch, "pairs.jsonl")
    writeFileSync(input, val.map((it) => `${JSON.stringify({
      task: "dart", id: it.id, benchmark: it.benchmark, condition: it.condition, scenario: it.scenario, answer: it.answer,
      gold_label: it.gold_label, sample: 0, outputs: { M0: { text: text(0.05) }, DART: { text: text(0.5) } }
    })}\n`).join(""))
    const before = judge.requests.length
    const audit = await dart(["audit", ...common, "--paired-input", input, "--a-name", "M0", "--b-name", "DART", "--run-name", "audit_val"], { OPENAI_API_KEY: KEY })
    expect(audit.stderr).not.toContain("dart: error")
    expect(audit.code).toBe(0)
    const sent = judge.requests.length - before
    expect(sent).toBe(val.length)
    expect(projected).toBe(sent)
  })
})
