import { afterAll, describe, expect, it } from "@effect/vitest"
import { existsSync, mkdtempSync, readFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { runDart } from "../support/Dart.ts"
import { startEchoProvider } from "../support/EchoProvider.ts"

/**
 * The teacher against providers that lie or attack (issue 21): usage that would refund the budget, bodies larger
 * than memory, retry-after waits that never end, terminal escapes in error bodies, and the exit code of a SIGTERM.
 * Every case runs the real CLI in its own process.
 */

const scratch = mkdtempSync(path.join(tmpdir(), "dart-provider-"))
const runs = path.join(scratch, "runs")
const env = { OPENAI_API_KEY: "sk-PROVIDER-openai-5e1d7c3b9a" }
const at = ["--override", `run.runs_dir=${runs}`]
const servers: Array<{ stop: () => Promise<void> }> = []
afterAll(async () => {
  for (const s of servers) await s.stop()
})

const provider = async (...args: Parameters<typeof startEchoProvider>) => {
  const p = await startEchoProvider(...args)
  servers.push(p)
  return p
}

const init = async (exp: string, train: number) => {
  const r = await runDart(["init", "--exp-id", exp, ...at, "--override", `datasets.benchmarks=["D1"]`, "--override", `datasets.limits.train=${train}`])
  expect(r.stderr).toBe("")
  expect(r.code).toBe(0)
}

const teacher = (exp: string, url: string, extra: ReadonlyArray<string> = [], options: Parameters<typeof runDart>[2] = {}, moreEnv: Record<string, string> = {}) =>
  runDart([
    "teacher", "--task", "distill", "--exp-id", exp, ...at,
    "--override", "teacher.provider=compatible", "--override", `teacher.base_url=${url}`, ...extra
  ], { ...env, ...moreEnv }, options)

const stageDir = (exp: string) => path.join(runs, exp, "teacher_outputs/distill")
const summary = (exp: string) => JSON.parse(readFileSync(path.join(stageDir(exp), "summary.json"), "utf8"))
const manifest = (exp: string) => JSON.parse(readFileSync(path.join(runs, exp, "manifest.json"), "utf8"))
const lockOf = (exp: string) => path.join(runs, exp, ".locks/teacher+distill.lock")

/** Every number anywhere inside `value`. */
const numbers = (value: unknown): Array<number> =>
  typeof value === "number" ? [value] : typeof value === "object" && value !== null ? Object.values(value).flatMap(numbers) : []

describe("usage a provider cannot falsify", () => {
  it("treats negative usage as absent: estimated, warned once, and the token cap holds like an honest server's", async () => {
    const budget = ["--override", "teacher.budget.max_tokens=2000", "--override", "teacher.max_concurrency=4"]
    await init("honest", 64)
    const honest = await provider({ mode: "ok", usage: { prompt_tokens: 100, completion_tokens: 20 } })
    expect((await teacher("honest", honest.url, budget)).code).toBe(3)

    await init("liar", 64)
    const liar = await provider({ mode: "ok", usage: { prompt_tokens: -1_000_000, completion_tokens: -1_000_000 } })
    const r = await teacher("liar", liar.url, budget)
    // Before: 48 requests, "-96,000,000 tokens", "$-960", exit 0.
    expect(r.code).toBe(3)
    expect(liar.requests.length).toBeGreaterThan(0)
    expect(liar.requests.length).toBeLessThanOrEqual(honest.requests.length)
    expect(r.stderr.match(/sent invalid token usage/g)?.length).toBe(1)
    const out = r.stdout + r.stderr
    expect(out).not.toMatch(/\$-|-\d[\d,]* tokens/)
    const s = summary("liar")
    expect(s.stopped_by_budget).toBe(true)
    expect(numbers(s).filter((n) => n < 0)).toEqual([])
    expect(s.this_run.tokens).toBeGreaterThan(0)
    expect(s.this_run.tokens).toBeLessThanOrEqual(2000 + 4 * 700)
    expect(s.this_run.usage_estimated_requests).toBe(liar.requests.length)
    const ledger = readFileSync(path.join(stageDir("liar"), "responses.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l))
    expect(ledger.every((l) => l.usage_estimated === true && l.prompt_tokens >= 0 && l.completion_tokens >= 0)).toBe(true)
  })
})

describe("replies larger than memory", () => {
  it("cuts a 200 MB body off at max_reply_bytes, counts a bounded number of failed tries, and keeps the ledger whole", async () => {
    await init("huge", 4)
    const p = await provider({ mode: "ok", huge: { prompts: 1, bytes: 200 * 1024 * 1024 } })
    // A small heap: buffering even one such body would kill the process (before: 7.2 GB, exit 134).
    const r = await teacher("huge", p.url, ["--override", "teacher.max_concurrency=1", "--override", "teacher.max_retries=1"], {}, {
      NODE_OPTIONS: "--max-old-space-size=192"
    })
    expect(r.signal).toBeNull()
    expect(r.code, r.stderr).toBe(4) // one item failed for good, the rest done
    expect(r.ms).toBeLessThan(60_000)
    expect(r.stderr).toMatch(/reply body over 4194304 bytes \(teacher\.max_reply_bytes\)/)
    // One item's prompt always gets the huge body: asked once and retried once (max_retries), never more.
    expect(p.hugeSent()).toBe(2)
    const lines = readFileSync(path.join(stageDir("huge"), "responses.jsonl"), "utf8").split("\n").filter((l) => l !== "")
    expect(lines.length).toBeGreaterThanOrEqual(3)
    for (const l of lines) expect(() => JSON.parse(l)).not.toThrow()
    expect(lines.every((l) => l.length < 10_000)).toBe(true)
    expect(summary("huge").this_run.failed).toBe(1)
    expect(existsSync(lockOf("huge"))).toBe(false)
  })
})

describe("retry-after within reason", () => {
  it("caps a 999999999 s retry-after at max_retry_after_s and says so", async () => {
    await init("patience", 2)
    const p = await provider({ mode: "ok", rateLimited: { count: 1, headers: { "retry-after": "999999999" } } })
    // Before: waited forever with nothing said; the kill only bounds this test.
    const r = await teacher("patience", p.url, ["--override", "teacher.max_concurrency=1", "--override", "teacher.max_retry_after_s=1"], {
      signal: "SIGKILL",
      afterMs: 30_000
    })
    expect(r.signal).toBeNull()
    expect(r.code, r.stderr).toBe(0)
    expect(r.ms).toBeLessThan(20_000)
    expect(r.stderr).toContain("provider asked to wait 999999999 s; waiting 1 s (teacher.max_retry_after_s)")
    expect(p.requests.length).toBe(3)
  })

  it("caps retry-after-ms the same way", async () => {
    await init("patience-ms", 1)
    const p = await provider({ mode: "ok", rateLimited: { count: 1, headers: { "retry-after-ms": "999999999999" } } })
    const r = await teacher("patience-ms", p.url, ["--override", "teacher.max_retry_after_s=0.5"], { signal: "SIGKILL", afterMs: 30_000 })
    expect(r.code, r.stderr).toBe(0)
    expect(r.stderr).toContain("provider asked to wait 999999999.999 s; waiting 0.5 s (teacher.max_retry_after_s)")
  })
})

describe("server text on the terminal", () => {
  it("shows escape sequences from an error body as visible escapes, never raw", async () => {
    await init("escapes", 2)
    const p = await provider({ mode: "500", errorMessage: "\x1b]0;pwned\x07\x1b[2J\x1b[31mboom\x9b1m\rgone\x7f" })
    const r = await teacher("escapes", p.url, ["--override", "teacher.max_retries=0"])
    expect(r.code).toBe(4)
    const out = r.stdout + r.stderr
    expect(out).not.toMatch(/[\x00-\x08\x0b-\x1f\x7f-\x9f]/)
    expect(r.stderr).toContain("dart: error: ")
    expect(r.stderr).toContain("HTTP 500: \\u001b]0;pwned\\u0007\\u001b[2J\\u001b[31mboom\\u009b1m\\u000dgone\\u007f")
    expect(p.requests.length).toBe(2)
  })
})

describe("signals", () => {
  for (const [signal, code] of [["SIGTERM", 143], ["SIGINT", 130]] as const) {
    it(`exits ${code} on ${signal}, recording the stage interrupted and releasing its lock`, async () => {
      const exp = `exit-${signal.toLowerCase()}`
      await init(exp, 32)
      const p = await provider({ mode: "ok", latencyMs: 400 })
      const r = await teacher(exp, p.url, ["--override", "teacher.max_concurrency=2"], { signal, when: () => p.requests.length > 0 })
      expect(r.signal).toBeNull()
      expect(r.code).toBe(code)
      expect(manifest(exp).stages["teacher/distill"].status).toBe("interrupted")
      expect(existsSync(lockOf(exp))).toBe(false)
    })
  }
})
