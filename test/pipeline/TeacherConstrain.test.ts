import { describe, expect, it } from "@effect/vitest"
import { spawn } from "node:child_process"
import { mkdtempSync, readFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { startChatServer } from "../support/ChatServer.ts"
import { dart } from "../support/Cli.ts"

const scratch = mkdtempSync(path.join(tmpdir(), "dart-constrain-"))
const runs = path.join(scratch, "runs")
/** The CLI as a child process without blocking this one: the test server answers from this event loop. */
const dartAsync = (args: ReadonlyArray<string>, env: Record<string, string>) =>
  new Promise<{ code: number | null; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, ["bin/dart.js", ...args], { env: { ...process.env, EXP_ID: "", ...env } })
    let stderr = ""
    child.stderr.on("data", (c) => (stderr += c))
    child.on("exit", (code) => resolve({ code, stderr }))
  })
const regex = "[A-Z][a-z]{1,12}( [a-z]{1,12}){3,8}\\.( [A-Z][a-z]{1,12}( [a-z]{1,12}){3,8}\\.){1,2}\\nConclusion: {gold}"

describe("teacher.constrain and provider vllm", () => {
  it("sends the regex as vLLM structured_outputs with the item's gold label, and needs no API key", async () => {
    const server = await startChatServer()
    try {
      const init = dart(["init", "--exp-id", "c", "--override", `run.runs_dir=${runs}`, "--override", "datasets.limits.train=6",
        "--override", "teacher.model=base", "--override", `teacher.constrain=${JSON.stringify({ regex })}`])
      expect(init.code).toBe(0)
      const r = await dartAsync(["teacher", "--task", "distill", "--exp-id", "c", "--override", `run.runs_dir=${runs}`,
        "--override", "teacher.provider=vllm", "--override", `teacher.base_url=${server.url}`],
        { OPENAI_API_KEY: "", DEEPSEEK_API_KEY: "" })
      expect(r.stderr).not.toContain("dart: error")
      expect(r.code).toBe(0)
      const bodies = server.requests.map((q) => JSON.parse(q.body))
      expect(bodies.length).toBeGreaterThanOrEqual(6)
      for (const b of bodies) {
        const gold = /Gold label: (YES|NO)\./.exec(b.messages.map((m: { content: string }) => m.content).join("\n"))![1]
        expect(b.structured_outputs).toEqual({ regex: regex.replace("{gold}", gold!) })
        // The removed guided_* fields are silently ignored by current vLLM: never send them.
        expect(Object.keys(b).filter((k) => k.startsWith("guided_"))).toEqual([])
        expect(b.model).toBe("base")
      }
      const rows = readFileSync(path.join(runs, "c/teacher_outputs/distill/outputs.jsonl"), "utf8").trim().split("\n")
      expect(rows).toHaveLength(6)
    } finally {
      await server.close()
    }
  })

  it("refuses provider vllm without a server to talk to", () => {
    dart(["init", "--exp-id", "d", "--override", `run.runs_dir=${runs}`, "--override", "datasets.limits.train=2"])
    const r = dart(["teacher", "--task", "distill", "--exp-id", "d", "--override", `run.runs_dir=${runs}`, "--override", "teacher.provider=vllm"])
    expect(r.code).not.toBe(0)
    expect(r.stderr).toContain("provider vllm needs the run's vLLM server")
  })

  it("rejects a constraint that is not a regular expression, naming the key", () => {
    const r = dart(["init", "--exp-id", "e", "--override", `run.runs_dir=${runs}`, "--override", `teacher.constrain=${JSON.stringify({ regex: "([A-Z" })}`])
    expect(r.code).not.toBe(0)
    expect(r.stderr).toContain("teacher.constrain.regex")
    expect(r.stderr).toContain("not a regular expression")
  })
})
