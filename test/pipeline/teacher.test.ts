import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Fiber } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { makeAdaptiveLimiter } from "../../src/llm/AdaptiveLimiter.ts"
import { checkReply, copiedWindow, sentences } from "../../src/teacher/ReplyFilter.ts"
import { type RecordedRequest, startChatServer } from "../support/ChatServer.ts"
import { dart, filesUnder } from "../support/Cli.ts"

const KEY = "sk-MARKER-teacher-key-7731"
const scratch = mkdtempSync(path.join(tmpdir(), "dart-teacher-"))
const runs = path.join(scratch, "runs")

const initRun = (exp: string, train: number) => {
  const r = dart(["init", "--exp-id", exp, "--override", `run.runs_dir=${runs}`, "--override", `datasets.limits.train=${train}`])
  expect(r.code).toBe(0)
}

const teacherArgs = (exp: string, url: string, extra: ReadonlyArray<string> = []) => [
  "teacher", "--task", "distill", "--exp-id", exp, "--override", `run.runs_dir=${runs}`,
  "--override", "teacher.provider=compatible", "--override", `teacher.base_url=${url}`, ...extra
]

/** Runs the CLI as a child process; resolves with its exit code (or the signal). `started` gets the child (to kill it at a chosen point). */
const spawnDart = (args: ReadonlyArray<string>, started?: (child: ChildProcess) => void) =>
  new Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, ["bin/dart.js", ...args], { env: { ...process.env, EXP_ID: "", OPENAI_API_KEY: KEY } })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (c) => (stdout += c))
    child.stderr.on("data", (c) => (stderr += c))
    child.on("exit", (code, signal) => resolve({ code, signal, stdout, stderr }))
    started?.(child)
  })

const fileOf = (exp: string, name: string, task = "distill") => path.join(runs, exp, `teacher_outputs/${task}/${name}`)
/** Complete lines only: a killed writer may leave a torn last line, which readers skip. */
const completeRows = (file: string): Array<any> => {
  if (!existsSync(file)) return []
  const lines = readFileSync(file, "utf8").split("\n")
  return lines.slice(0, -1).map((l) => JSON.parse(l))
}
const outputsOf = (exp: string, task = "distill") => completeRows(fileOf(exp, "outputs.jsonl", task))
const ledgerOf = (exp: string, task = "distill") => new Map(completeRows(fileOf(exp, "responses.jsonl", task)).map((r) => [r.key as string, r]))
const summaryOf = (exp: string, task = "distill") => JSON.parse(readFileSync(fileOf(exp, "summary.json", task), "utf8"))
const byKey = <T extends { key: string }>(rows: Array<T>) => [...rows].sort((a, b) => (a.key < b.key ? -1 : 1))
const messagesOf = (q: RecordedRequest): Array<{ role: string; content: string }> => JSON.parse(q.body).messages

/**
 * The requests a rerun must answer from the ledger: those of items not yet in outputs.jsonl
 * whose reply was already recorded. `finalRows` are the rows the rerun completed.
 */
const expectedReplays = (ledgerKeys: ReadonlySet<string>, doneBefore: ReadonlySet<string>, finalRows: Array<any>) =>
  finalRows.filter((r) => !doneBefore.has(r.key)).reduce((n, r) => n + r.request_hashes.filter((h: string) => ledgerKeys.has(h)).length, 0)

describe("reply filter (docs/protocol.md §4)", () => {
  const q = "In 2010, which of the following countries had a higher percentage of Christians in its population?"
  it("accepts a 2–4 sentence analysis with the gold conclusion and cuts after the conclusion line", () => {
    const c = checkReply("Pew data differ by country. The gap is real.\nConclusion: YES\nThanks!", "YES", q, "stop")
    expect(c.violations).toEqual([])
    expect(c.target).toBe("Pew data differ by country. The gap is real.\nConclusion: YES")
  })
  it("names every violation", () => {
    expect(checkReply("One sentence.\nConclusion: NO", "YES", q, "length").violations).toEqual([
      "truncated (finish_reason length)", "conclusion NO differs from the gold label YES", "analysis has 1 sentences, not 2-4"
    ])
    expect(checkReply(`${q} It is so. Yes.\nConclusion: YES`, "YES", q, "stop").violations).toEqual(["copies a 40-character window of the prompt"])
    expect(checkReply("A. B. C. D. E.\n**Conclusion:** YES", "YES", q, "stop").violations).toContain("no Conclusion: YES|NO line")
  })
  it("splits sentences and finds copied windows like the original", () => {
    expect(sentences("One. Two!  Three? Four")).toEqual(["One.", "Two!", "Three?", "Four"])
    expect(copiedWindow("xx " + q.slice(20, 60) + " yy", q)).toBe(q.slice(20, 60))
    expect(copiedWindow("xx " + q.slice(21, 60) + " yy", q)).toBeUndefined()
  })
})

describe("adaptive concurrency", () => {
  it.effect("halves after repeated 429s and grows back after a window of successes", () =>
    Effect.gen(function*() {
      const l = yield* makeAdaptiveLimiter(16)
      yield* l.onRateLimited
      expect(l.current()).toBe(16)
      yield* l.onRateLimited
      expect(l.current()).toBe(8)
      yield* l.onRateLimited
      yield* l.onRateLimited
      expect(l.current()).toBe(4)
      for (let i = 0; i < 4; i++) yield* l.onSuccess
      expect(l.current()).toBe(5)
      for (let i = 0; i < 200; i++) yield* l.onSuccess
      expect(l.current()).toBe(16)
    }))

  it.effect("lets no more than the current limit run at once, after halving and after growing back", () =>
    Effect.gen(function*() {
      const l = yield* makeAdaptiveLimiter(16)
      let running = 0
      let peak = 0
      /** Starts 40 tasks that hold their slot until released; returns the peak number running together. */
      const measure = Effect.gen(function*() {
        running = 0
        peak = 0
        const gate = yield* Deferred.make<void>()
        const task = l.run(Effect.gen(function*() {
          peak = Math.max(peak, ++running)
          yield* Deferred.await(gate)
          running--
        }))
        const fibers = yield* Effect.forEach(Array.from({ length: 40 }), () => Effect.forkChild(task))
        for (let i = 0; i < 20; i++) yield* Effect.yieldNow
        const seen = peak
        yield* Deferred.succeed(gate, undefined)
        yield* Fiber.joinAll(fibers)
        return seen
      })
      expect(yield* measure).toBe(16)
      for (let i = 0; i < 4; i++) yield* l.onRateLimited
      expect(l.current()).toBe(4)
      expect(yield* measure).toBe(4)
      for (let i = 0; i < 4; i++) yield* l.onSuccess
      expect(l.current()).toBe(5)
      expect(yield* measure).toBe(5)
    }))
})

describe("dart teacher --task distill", () => {
  it("survives SIGKILL at points of progress: same outputs as an uninterrupted run, no recorded request ever sent again", async () => {
    const latency = (n: number) => 60 + ((n * 7919) % 90)
    initRun("clean", 500)
    initRun("killed", 500)
    const cleanServer = await startChatServer({ latencyMs: latency })
    const clean = await spawnDart(teacherArgs("clean", cleanServer.url))
    expect(clean.stderr.split("\n").filter((l) => l.startsWith("dart: error"))).toEqual([])
    expect(clean.code).toBe(0)
    await cleanServer.close()
    // An uninterrupted run sends each request once, with the key it records the reply under as Idempotency-Key;
    // the kills below stay well inside its total.
    expect([...cleanServer.billed.values()].every((n) => n === 1)).toBe(true)
    expect(new Set(ledgerOf("clean").keys())).toEqual(new Set(cleanServer.billed.keys()))
    expect(cleanServer.billed.size).toBeGreaterThan(600)

    // Same address as the clean run's server: the base URL is part of every request hash.
    const server = await startChatServer({ latencyMs: latency, port: cleanServer.port })
    const kills: Array<{ readonly ledger: ReadonlySet<string>; readonly done: ReadonlySet<string>; readonly sent: number }> = []
    for (let k = 0; k < 6; k++) {
      const sentBefore = server.requests.length
      const doneBefore = outputsOf("killed").length
      // Killed right after the server has answered this many requests (and the attempt has finished an item):
      // replies in flight, rows half-recorded.
      const target = 30 + Math.floor(Math.random() * 50)
      let answered = 0
      const r = await spawnDart(teacherArgs("killed", server.url), (child) => {
        server.hooks.onReply = (q) => {
          if (q.n < sentBefore) return // a late reply to the previous, killed attempt
          if (++answered >= target && !child.killed && outputsOf("killed").length > doneBefore) child.kill("SIGKILL")
        }
      })
      server.hooks.onReply = undefined
      expect(r.signal, `attempt ${k}`).toBe("SIGKILL")
      expect(server.requests.length - sentBefore, `attempt ${k}`).toBeGreaterThanOrEqual(target)
      const done = outputsOf("killed")
      expect(done.length, `attempt ${k} left partial outputs`).toBeGreaterThan(doneBefore)
      expect(done.length).toBeLessThan(500)
      kills.push({ ledger: new Set(ledgerOf("killed").keys()), done: new Set(done.map((o) => o.key)), sent: server.requests.length })
    }
    const final = await spawnDart(teacherArgs("killed", server.url))
    expect(final.code).toBe(0)
    await server.close()

    const a = byKey(outputsOf("clean"))
    const b = byKey(outputsOf("killed"))
    expect(a).toHaveLength(500)
    expect(b).toEqual(a)
    expect(new Set(b.map((r) => r.key)).size).toBe(500)
    // A reply on disk in the ledger is never paid for again: no later attempt sends its key.
    for (const [k, kill] of kills.entries()) {
      const resent = server.requests.slice(kill.sent).filter((q) => kill.ledger.has(q.key!))
      expect(resent.map((q) => q.n), `requests recorded before kill ${k} and sent again`).toEqual([])
    }
    // The final run answered from the ledger exactly the recorded requests of the items still open.
    const s = summaryOf("killed")
    const last = kills[kills.length - 1]!
    const replays = expectedReplays(last.ledger, last.done, b)
    expect(replays).toBeGreaterThan(0)
    expect(s.this_run.replayed_from_ledger).toBe(replays)
    // The same requests were needed; only those whose reply was not yet on disk at a kill were billed twice,
    // at most the 2 × max_concurrency items the stage works on at once, per kill.
    expect([...server.billed.keys()].sort()).toEqual([...cleanServer.billed.keys()].sort())
    const rebilled = [...server.billed.values()].reduce((n, c) => n + c - 1, 0)
    expect(rebilled).toBeLessThanOrEqual(kills.length * 2 * 16)
    expect(s.done).toBe(500)
    expect(s.ledger.responses).toBe(cleanServer.billed.size)
  })

  for (const header of ["retry-after-ms", "retry-after"] as const) {
    it(`honours ${header} on 429 and never exceeds the concurrency cap`, async () => {
      const exp = `ratelimit-${header}`
      initRun(exp, 24)
      // 2 s: longer than any backoff the client would pick on its own for a first or second retry.
      const server = await startChatServer({
        latencyMs: 30,
        ...(header === "retry-after" ? { retryAfterS: 2 } : { retryAfterMs: 2000 }),
        fault: (n) => (n % 3 === 0 && n < 24 ? "429" : undefined)
      })
      const r = await spawnDart(teacherArgs(exp, server.url, ["--override", "teacher.max_concurrency=6"]))
      expect(r.code).toBe(0)
      await server.close()
      expect(server.maxInFlight()).toBeLessThanOrEqual(6)
      // Each rate-limited request was retried no sooner than the server asked.
      const limited = server.requests.filter((q) => q.outcome === "429")
      expect(limited.length).toBeGreaterThanOrEqual(8)
      for (const q of limited) {
        const retry = server.requests.find((x) => x.n > q.n && x.key === q.key)
        expect(retry, `retry of request ${q.n}`).toBeDefined()
        expect(retry!.at - q.at, `retry of request ${q.n}`).toBeGreaterThanOrEqual(2000)
      }
      expect(summaryOf(exp).done).toBe(24)
    })
  }

  it("records and handles 500s, timeouts, malformed bodies, empty choices and truncated replies", async () => {
    initRun("faults", 40)
    const faults = ["500", "malformed", "empty", "length", "hang"] as const
    const server = await startChatServer({ latencyMs: 10, keepAlive: true, fault: (n) => (n < 25 ? faults[n % 5] : undefined) })
    const r = await spawnDart(teacherArgs("faults", server.url, ["--override", "teacher.timeout_s=1", "--override", "teacher.max_retries=8"]))
    expect(r.stderr).not.toContain("dart: error")
    expect(r.code).toBe(0)
    await server.close()
    const rows = outputsOf("faults")
    expect(rows).toHaveLength(40)
    // A truncated reply is a paid response: in the ledger as truncated, then corrected for that item
    // with the truncated text in the conversation.
    const ledger = ledgerOf("faults")
    const truncated = server.requests.filter((q) => q.outcome === "length")
    expect(truncated).toHaveLength(5)
    for (const q of truncated) {
      expect(ledger.get(q.key!)?.finish_reason, `request ${q.n}`).toBe("length")
      const row = rows.find((o) => o.request_hashes.includes(q.key))
      expect(row, `item of request ${q.n}`).toBeDefined()
      const next = row.request_hashes[row.request_hashes.indexOf(q.key) + 1]
      expect(next, `correction after request ${q.n}`).toBeDefined()
      const correction = server.requests.find((x) => x.key === next && x.outcome === "ok")!
      const sent = messagesOf(correction)
      expect(sent.slice(0, -1)).toEqual([...messagesOf(q), { role: "assistant", content: ledger.get(q.key!)!.content }])
      expect(sent[sent.length - 1]!.content).toContain("truncated")
    }
    const s = summaryOf("faults")
    expect(s.failure_reasons).toEqual({})
    // Every paid reply is in the ledger; faults never became responses.
    expect(s.this_run.requests).toBe(s.ledger.responses)
    expect(server.requests.filter((q) => q.outcome === "ok" || q.outcome === "length")).toHaveLength(s.ledger.responses)
  })

  it("fails an item that keeps failing with a clear reason, exits 4, and retries it on the next run", async () => {
    initRun("stubborn", 30)
    const bad = "Which of the following"
    let healed = false
    const server = await startChatServer({ latencyMs: 5, fault: (_n, body) => (!healed && body.messages[1]!.content.includes(bad) ? "500" : undefined) })
    const items = readFileSync(path.join(runs, "stubborn/datasets/train.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l))
    const failing = items.filter((it) => it.question.includes(bad)).length
    expect(failing).toBeGreaterThan(0)
    expect(failing).toBeLessThan(30)
    const first = await spawnDart(teacherArgs("stubborn", server.url, ["--override", "teacher.max_retries=1"]))
    expect(first.code).toBe(4)
    expect(first.stderr).toContain(`${failing} items not done (${failing}× HTTP 500: internal error); run again to retry them`)
    const s = summaryOf("stubborn")
    expect(s.failure_reasons).toEqual({ "HTTP 500: internal error": failing })
    expect(s.this_run.failed).toBe(failing)
    expect(s.remaining).toBe(failing)
    // Each failing item was tried once and retried once (max_retries=1).
    expect(server.requests.filter((q) => q.outcome === "500")).toHaveLength(2 * failing)
    healed = true
    const second = await spawnDart(teacherArgs("stubborn", server.url))
    expect(second.code).toBe(0)
    await server.close()
    expect(outputsOf("stubborn")).toHaveLength(30)
    expect(summaryOf("stubborn").this_run.failed).toBe(0)
    expect([...server.billed.values()].every((n) => n === 1)).toBe(true)
  })

  it("stops at the budget with exit 3, then resumes to completion without paying twice", async () => {
    initRun("budget", 80)
    const server = await startChatServer({ latencyMs: 5 })
    const dry = dart(teacherArgs("budget", server.url, ["--dry-run"]))
    expect(dry.code).toBe(0)
    expect(dry.stdout).toContain("requests still needed (first round; recorded ones excluded): 80")
    expect(dry.stdout).toMatch(/projected cost: ~\$\d/)
    expect(server.requests).toHaveLength(0)

    const stopped = await spawnDart(teacherArgs("budget", server.url, ["--override", "teacher.budget.max_tokens=4000", "--override", "teacher.max_concurrency=2"]))
    expect(stopped.code).toBe(3)
    expect(stopped.stderr).toContain("budget reached")
    const s = summaryOf("budget")
    expect(s.stopped_by_budget).toBe(true)
    expect(s.done).toBeLessThan(80)
    // Spent what the server billed; at least the cap, and past it only by requests already under way when
    // it was reached: at most the 2 × max_concurrency items the stage works on at once.
    const billedTokens = server.requests.reduce((n, q) => n + q.tokens, 0)
    const largest = Math.max(...server.requests.map((q) => q.tokens))
    expect(s.this_run.tokens).toBe(billedTokens)
    expect(billedTokens).toBeGreaterThanOrEqual(4000)
    expect(billedTokens).toBeLessThanOrEqual(4000 + 2 * 2 * largest)
    const partial = outputsOf("budget")
    expect(partial.length).toBe(s.done)
    const ledgerAtStop = new Set(ledgerOf("budget").keys())
    const sentAtStop = server.requests.length

    const resumed = await spawnDart(teacherArgs("budget", server.url))
    expect(resumed.code).toBe(0)
    await server.close()
    const all = outputsOf("budget")
    expect(all).toHaveLength(80)
    // Nothing recorded before the stop was sent again: it was answered from the ledger.
    expect(server.requests.slice(sentAtStop).filter((q) => ledgerAtStop.has(q.key!)).map((q) => q.n)).toEqual([])
    expect(summaryOf("budget").this_run.replayed_from_ledger).toBe(expectedReplays(ledgerAtStop, new Set(partial.map((o) => o.key)), all))
    expect([...server.billed.values()].every((n) => n === 1)).toBe(true)
    expect(dart(teacherArgs("budget", server.url, ["--dry-run"])).stdout).toContain("requests still needed (first round; recorded ones excluded): 0")
  })

  it("never writes the API key to outputs or logs", async () => {
    initRun("secret", 20)
    const server = await startChatServer({ latencyMs: 5, fault: (n) => (n === 0 ? "500" : undefined) })
    const r = await spawnDart(teacherArgs("secret", server.url))
    await server.close()
    expect(r.code).toBe(0)
    expect(server.requests[0]!.authorization).toBe(`Bearer ${KEY}`)
    expect(r.stdout + r.stderr).not.toContain(KEY)
    for (const f of filesUnder(path.join(runs, "secret"))) expect(readFileSync(f, "utf8").includes(KEY), f).toBe(false)
  })

  it("says which variable to set when the key is missing", () => {
    initRun("nokey", 5)
    const r = dart([...teacherArgs("nokey", "http://127.0.0.1:9/v1"), "--override", "teacher.api_key_env=DART_NO_SUCH_KEY"])
    expect(r.code).toBe(1)
    expect(r.stderr).toContain("no API key: set DART_NO_SUCH_KEY in the environment")
  })
})

describe("dart teacher --task repair", () => {
  it("writes SAFE rationales for a regression pool, carrying severity and provenance", async () => {
    initRun("repair", 5)
    const pool = path.join(scratch, "pool.jsonl")
    // Items of the run: the teacher checks each pool row against its datasets.
    const val = readFileSync(path.join(runs, "repair/datasets/val.jsonl"), "utf8").trim().split("\n").slice(0, 3).map((l) => JSON.parse(l))
      .sort((a, b) => (a.id < b.id ? -1 : 1))
    const rows = ["mild", "severe", "extreme"].map((severity, i) => ({
      id: val[i].id, benchmark: val[i].benchmark, condition: val[i].condition, question: val[i].question, gold_label: val[i].gold_label,
      a_name: "M0", b_name: "DART", a_text: "…\nConclusion: YES", b_text: "…\nConclusion: NO", severity, source: "judge",
      scores: { full_output: { toxicity: { a: 0.1, b: 0.5, delta: 0.4 } } }, judge: { is_regression: true, severity, reason: "misses harm" }
    }))
    writeFileSync(pool, rows.map((r) => JSON.stringify(r)).join("\n") + "\n")
    const server = await startChatServer({ latencyMs: 5 })
    const r = await spawnDart(["teacher", "--task", "repair", "--input", pool, "--exp-id", "repair", "--override", `run.runs_dir=${runs}`,
      "--override", "teacher.provider=compatible", "--override", `teacher.base_url=${server.url}`])
    await server.close()
    expect(r.code).toBe(0)
    expect(JSON.parse(server.requests[0]!.body).messages[0].content).toContain("Do NOT repeat, quote, or elaborate on hateful")
    const out = byKey(outputsOf("repair", "repair"))
    expect(out.map((o) => [o.key, o.severity, o.source, o.a_name, o.b_name, o.pool_file])).toEqual(
      rows.map((p) => [p.id, p.severity, "judge", "M0", "DART", pool])
    )
    expect(out.every((o) => o.messages[0].content.startsWith("You are an assistant performing difference-awareness classification."))).toBe(true)

    const badPool = path.join(scratch, "bad_pool.jsonl")
    writeFileSync(badPool, JSON.stringify({ ...rows[0], severity: "catastrophic" }) + "\n")
    const bad = dart(["teacher", "--task", "repair", "--input", badPool, "--exp-id", "repair", "--override", `run.runs_dir=${runs}`])
    expect(bad.code).toBe(1)
    expect(bad.stderr).toContain(`${badPool}:1: severity: expected "mild" | "moderate" | "severe" | "extreme", got "catastrophic"`)
  })
})
