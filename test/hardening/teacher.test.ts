import { afterAll, describe, expect, it } from "@effect/vitest"
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { hostname, tmpdir } from "node:os"
import * as path from "node:path"
import { filesUnder } from "../support/Cli.ts"
import { runDart } from "../support/Dart.ts"
import { closedPort, startEchoProvider } from "../support/EchoProvider.ts"

/**
 * The teacher stage as a hostile user meets it (issue 12): providers that echo keys or omit
 * usage, budgets under concurrency, concurrent invocations, damaged inputs, other configs,
 * signals and dead endpoints. Every case runs the real CLI in its own process.
 */

const scratch = mkdtempSync(path.join(tmpdir(), "dart-harden-"))
const runs = path.join(scratch, "runs")
const KEY = "sk-SWEEP-openai-7f3c9a1b2d4e"
const env = { OPENAI_API_KEY: KEY }
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

const init = async (exp: string, train = 16, extra: ReadonlyArray<string> = []) => {
  const r = await runDart(["init", "--exp-id", exp, ...at, "--override", `datasets.benchmarks=["D1"]`, "--override", `datasets.limits.train=${train}`, ...extra])
  expect(r.stderr).toBe("")
  expect(r.code).toBe(0)
}

const teacher = (exp: string, url: string, extra: ReadonlyArray<string> = [], options: Parameters<typeof runDart>[2] = {}, moreEnv: Record<string, string> = {}) =>
  runDart([
    "teacher", "--task", "distill", "--exp-id", exp, ...at,
    "--override", "teacher.provider=compatible", "--override", `teacher.base_url=${url}`, ...extra
  ], { ...env, ...moreEnv }, options)

const manifest = (exp: string) => JSON.parse(readFileSync(path.join(runs, exp, "manifest.json"), "utf8"))
const summary = (exp: string) => JSON.parse(readFileSync(path.join(runs, exp, "teacher_outputs/distill/summary.json"), "utf8"))

describe("budgets that hold", () => {
  it("reserves before sending: a 100-token cap is crossed by at most the requests on the wire", async () => {
    await init("cap", 32)
    const p = await provider({ mode: "ok", latencyMs: 100, usage: { prompt_tokens: 100, completion_tokens: 20 } })
    const r = await teacher("cap", p.url, ["--override", "teacher.budget.max_tokens=100", "--override", "teacher.max_concurrency=8"])
    expect(r.code).toBe(3)
    const s = summary("cap")
    // Before: every queued request went out (~1,200 tokens). Now: one request (nothing was on the wire when it started).
    expect(p.requests.length).toBeLessThanOrEqual(8)
    expect(s.this_run.tokens).toBeLessThanOrEqual(100 + 8 * 120)
    expect(p.requests.length).toBe(1)
    expect(s.stopped_by_budget).toBe(true)
  })

  it("estimates tokens when the provider sends no usage, warns once, records estimates, and stops at the cap", async () => {
    await init("nousage", 32)
    const p = await provider({ mode: "no-usage" })
    const r = await teacher("nousage", p.url, ["--override", "teacher.budget.max_tokens=3000", "--override", "teacher.max_concurrency=4"])
    expect(r.code).toBe(3)
    expect(r.stderr.match(/sent no token usage/g)?.length).toBe(1)
    const s = summary("nousage")
    expect(s.this_run.tokens).toBeGreaterThan(0)
    expect(s.this_run.usage_estimated_requests).toBe(p.requests.length)
    // Each reply counts its prompt plus max_tokens (512): 3,000 tokens buy 4, plus one started with nothing on the wire.
    expect(p.requests.length).toBeGreaterThan(0)
    expect(p.requests.length).toBeLessThanOrEqual(5)
    expect(s.this_run.tokens).toBeLessThanOrEqual(3000 + 700)
    const ledger = readFileSync(path.join(runs, "nousage/teacher_outputs/distill/responses.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l))
    expect(ledger.every((l) => l.usage_estimated === true)).toBe(true)
  })
})

describe("one writer per run and stage", () => {
  it("refuses a second teacher on the same run, naming the holder; no item is billed twice", async () => {
    await init("twice", 24)
    const p = await provider({ mode: "ok", latencyMs: 150 })
    const first = teacher("twice", p.url, ["--override", "teacher.max_concurrency=2"])
    // Start the second once the first is sending.
    while (p.requests.length === 0) await new Promise((r) => setTimeout(r, 20))
    const second = await teacher("twice", p.url, ["--override", "teacher.max_concurrency=2"])
    expect(second.code).toBe(1)
    expect(second.stderr).toMatch(/stage teacher\/distill of .* is already running: pid \d+ on \S+ since \d{4}-/)
    const one = await first
    expect(one.code).toBe(0)
    const firstRounds = p.requests.filter((q) => q.messages.length === 2).map((q) => q.messages[1]!.content)
    expect(new Set(firstRounds).size).toBe(firstRounds.length)
    expect(firstRounds.length).toBe(24)
    expect(existsSync(path.join(runs, "twice/.locks/teacher+distill.lock"))).toBe(false)
  })
})

describe("inputs checked against what was recorded", () => {
  it("refuses a torn, shortened, duplicated or emptied train.jsonl with the file and what changed, sending nothing", async () => {
    await init("torn", 16)
    const p = await provider({ mode: "ok" })
    const file = path.join(runs, "torn/datasets/train.jsonl")
    const original = readFileSync(file, "utf8")
    const lines = original.trimEnd().split("\n")
    const damaged = [
      ["torn last line", original.slice(0, original.length - 40)],
      ["a deleted row", lines.slice(1).join("\n") + "\n"],
      ["a duplicated row", original + lines[0] + "\n"],
      ["an empty file", ""]
    ] as const
    for (const [what, text] of damaged) {
      writeFileSync(file, text)
      const r = await teacher("torn", p.url)
      expect(r.code, what).toBe(1)
      expect(r.stderr, what).toContain(`${file}: changed since init wrote it`)
    }
    expect(p.requests.length).toBe(0)
    writeFileSync(file, original)
    expect((await teacher("torn", p.url)).code).toBe(0)
  })

  it("uses the run's own config; another --config or a result-changing --override is refused with the keys", async () => {
    const init2 = await runDart(["init", "--config", "configs/smoke.json", "--exp-id", "snap", ...at, "--override", "datasets.limits.train=8"])
    expect(init2.code).toBe(0)
    const p = await provider({ mode: "ok" })
    const other = await teacher("snap", p.url, [], {}, {})
    expect(other.code).toBe(0) // no --config: the snapshot (smoke: D1+N2, 8 items), not configs/exp_acl.json
    expect(summary("snap").items).toBe(8)
    const withFile = await runDart(["teacher", "--task", "distill", "--config", "configs/exp_acl.json", "--exp-id", "snap", ...at], env)
    expect(withFile.code).toBe(1)
    expect(withFile.stderr).toContain("differs from the run's config")
    expect(withFile.stderr).toMatch(/datasets\.limits\.train: 8 \(recorded\) -> null \(now\)/)
    expect(withFile.stderr).toMatch(/datasets\.benchmarks: \["D1","N2"\] \(recorded\) -> null \(now\)/)
    const model = await teacher("snap", p.url, ["--override", "teacher.model=other-model"])
    expect(model.code).toBe(1)
    expect(model.stderr).toMatch(/teacher\.model: "base" \(recorded\) -> "other-model" \(now\)/)
    // Operational keys may change.
    const ops = await teacher("snap", p.url, ["--override", "teacher.max_concurrency=1", "--override", "teacher.budget.max_usd=1", "--override", "teacher.max_retries=0"])
    expect(ops.code).toBe(0)
  })
})

describe("fail fast", () => {
  it("stops within seconds when the endpoint refuses every connection", async () => {
    await init("closed", 64)
    const port = await closedPort()
    const r = await teacher("closed", `http://127.0.0.1:${port}/v1`, ["--override", "teacher.max_concurrency=1"])
    expect(r.code).toBe(1)
    expect(r.stderr).toContain(`cannot reach http://127.0.0.1:${port}/v1`)
    expect(r.stderr).toContain("ECONNREFUSED")
    expect(r.ms).toBeLessThan(20_000)
    expect(manifest("closed").stages["teacher/distill"].status).toBe("failed")
  })

  for (const status of ["401", "403"] as const) {
    it(`stops at the first ${status}, without the key anywhere`, async () => {
      await init(`auth${status}`, 64)
      const p = await provider({ mode: status })
      const r = await teacher(`auth${status}`, p.url, ["--override", "teacher.max_concurrency=4"])
      expect(r.code).toBe(1)
      expect(r.stderr).toContain(`HTTP ${status}`)
      expect(p.requests.length).toBeLessThanOrEqual(8)
      expect(r.stderr + r.stdout).not.toContain(KEY)
    })
  }
})

describe("status tells the truth", () => {
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    it(`records interrupted on ${signal} and releases the lock`, async () => {
      const exp = `sig-${signal.toLowerCase()}`
      await init(exp, 32)
      const p = await provider({ mode: "ok", latencyMs: 400 })
      const r = await teacher(exp, p.url, ["--override", "teacher.max_concurrency=2"], { signal, when: () => p.requests.length > 0 })
      expect(r.code === 130 || r.code === 143 || r.signal !== null, `exit ${r.code} ${r.signal}`).toBe(true)
      const stage = manifest(exp).stages["teacher/distill"]
      expect(stage.status).toBe("interrupted")
      expect(existsSync(path.join(runs, exp, ".locks/teacher+distill.lock"))).toBe(false)
      const s = await runDart(["status", "--exp-id", exp, ...at])
      expect(s.stdout).toMatch(/teacher\/distill\s+interrupted/)
    })
  }

  it("shows a SIGKILLed stage as interrupted (its lock owner is gone), and a rerun takes over", async () => {
    await init("sigkill", 32)
    const p = await provider({ mode: "ok", latencyMs: 400 })
    const r = await teacher("sigkill", p.url, ["--override", "teacher.max_concurrency=2"], { signal: "SIGKILL", when: () => p.requests.length > 0 })
    expect(r.signal).toBe("SIGKILL")
    expect(manifest("sigkill").stages["teacher/distill"].status).toBe("running") // nothing could record it
    const s = await runDart(["status", "--exp-id", "sigkill", ...at])
    expect(s.stdout).toMatch(/teacher\/distill\s+interrupted/)
    expect(s.stdout).toContain("its process is gone")
    const again = await teacher("sigkill", p.url)
    expect(again.code).toBe(0)
  })

  it("shows init as changed when a dataset is truncated or deleted, and --verify catches a same-size edit", async () => {
    await init("verify", 16)
    const status = () => runDart(["status", "--exp-id", "verify", ...at])
    expect((await status()).stdout).toMatch(/init\s+done/)
    const file = path.join(runs, "verify/datasets/val.jsonl")
    const text = readFileSync(file, "utf8")
    writeFileSync(file, text.replace(/"question":"(.)/, (_m, c: string) => `"question":"${c === "X" ? "Y" : "X"}`))
    expect((await status()).stdout).toMatch(/init\s+done/) // same size: only the hash check sees it
    const full = await runDart(["status", "--verify", "--exp-id", "verify", ...at])
    expect(full.code).toBe(1)
    expect(full.stdout).toMatch(/init\s+changed/)
    expect(full.stdout).toContain("datasets/val.jsonl: same size but sha256")
    writeFileSync(file, text.slice(0, 100))
    const cut = await status()
    expect(cut.stdout).toMatch(/init\s+changed/)
    expect(cut.stdout).toMatch(/datasets\/val\.jsonl: \d+ bytes recorded, 100 now/)
  })

  it("recovers from a killed init: shown interrupted, its temp files swept, a rerun completes it", async () => {
    await init("sweep", 16)
    const dead = 2 ** 22 + 12345 // above Linux's default pid_max: never a live process
    const stale = path.join(runs, "sweep/datasets", `.train.jsonl.${dead}.0a1b2c3d.tmp`)
    writeFileSync(stale, "x".repeat(1000))
    const mine = path.join(runs, "sweep/datasets", `.train.jsonl.${process.pid}.0a1b2c3d.tmp`)
    writeFileSync(mine, "x")
    // What a SIGKILLed init leaves: the ledger says running, its lock names a dead pid, a dataset is cut short.
    const m = manifest("sweep")
    m.stages.init.status = "running"
    writeFileSync(path.join(runs, "sweep/manifest.json"), JSON.stringify(m))
    writeFileSync(path.join(runs, "sweep/.locks/init.lock"), JSON.stringify({ pid: dead, host: hostname(), started_at: "2026-01-01T00:00:00.000Z", stage: "init", command: "init", token: "x" }))
    writeFileSync(path.join(runs, "sweep/datasets/test.jsonl"), "{\"id\":")
    const s = await runDart(["status", "--exp-id", "sweep", ...at])
    expect(s.stdout).toMatch(/init\s+interrupted/)
    await init("sweep", 16)
    expect(manifest("sweep").stages.init.status).toBe("done")
    expect((await runDart(["status", "--verify", "--exp-id", "sweep", ...at])).code).toBe(0)
    expect(existsSync(stale)).toBe(false)
    expect(existsSync(mine)).toBe(true) // its writer (this process) is alive
  })
})

describe("secrets never leave the environment", () => {
  it("redacts every key value from runs/, stdout and stderr, whatever the provider echoes", async () => {
    const keys = {
      OPENAI_API_KEY: KEY,
      DEEPSEEK_API_KEY: "dsk-SWEEP-deepseek-4411aa",
      HF_TOKEN: "hf_SWEEPhuggingface00112233",
      MY_TEACHER_SECRET: "plain-SWEEP-custom-secret-99"
    }
    const out: Array<string> = []
    const note = (r: { stdout: string; stderr: string }) => out.push(r.stdout, r.stderr)
    await init("sweep-keys", 8)
    for (const mode of ["401", "403", "500", "echo-200"] as const) {
      const p = await provider({ mode })
      for (const variable of ["OPENAI_API_KEY", "MY_TEACHER_SECRET"]) {
        note(await runDart([
          "teacher", "--task", "distill", "--exp-id", "sweep-keys", ...at, "--override", "teacher.provider=compatible",
          "--override", `teacher.base_url=${p.url}`, "--override", `teacher.api_key_env=${variable}`, "--override", "teacher.max_retries=1"
        ], keys))
      }
    }
    // Keys pasted where they do not belong: overrides, URLs, addresses.
    for (const bad of [
      `teacher.api_key=${keys.OPENAI_API_KEY}`,
      `teacher.api_key_env=${keys.OPENAI_API_KEY}`,
      `teacher.base_url=https://api.example/v1?api_key=${keys.DEEPSEEK_API_KEY}`,
      `teacher.base_url=https://user:${keys.HF_TOKEN}@api.example/v1`,
      `teacher.base_url=https://api.example/v1#${keys.MY_TEACHER_SECRET}`,
      `compute.trainer.endpoint=user:${keys.HF_TOKEN}@127.0.0.1:50051`,
      `compute.hosts=[{"name":"gpu","docker":"tcp://127.0.0.1:2376?token=${keys.MY_TEACHER_SECRET}","gpus":"all"}]`
    ]) {
      const r = await runDart(["init", "--exp-id", "sweep-keys2", ...at, "--override", bad], keys)
      expect(r.code, bad).not.toBe(0)
      note(r)
    }
    note(await runDart(["train", "--stage", "mdac", "--adapter-name", "X", "--exp-id", "sweep-keys", ...at, "--override", `compute.trainer.endpoint=user:${keys.HF_TOKEN}@127.0.0.1:1`], keys))
    note(await runDart(["status", "--json", "--exp-id", "sweep-keys", ...at], keys))
    note(await runDart(["status", "--exp-id", "sweep-keys", ...at], keys))
    const pred = path.join(scratch, `pred-${keys.OPENAI_API_KEY}.jsonl`)
    writeFileSync(pred, `{"task":"dart","id":"x","benchmark":"D1","condition":"neq","answer":0,"gold_label":"YES","sample":0,"outputs":{"M0":{"text":"token ${keys.OPENAI_API_KEY}\\nConclusion: YES"}}}\n{oops\n`)
    note(await runDart(["evaluate", "--exp-id", "sweep-keys", ...at, "--pred", pred, "--run-name", "e", "--a-name", "M0"], keys))

    const hits: Array<string> = []
    for (const f of filesUnder(path.join(runs, "sweep-keys"))) {
      const text = readFileSync(f, "utf8")
      for (const v of Object.values(keys)) if (text.includes(v)) hits.push(`${f}: ${v}`)
    }
    for (const [i, text] of out.entries()) for (const v of Object.values(keys)) if (text.includes(v)) hits.push(`output ${i}: ${v}`)
    expect(hits).toEqual([])
    // The files still say what happened, without the key.
    const failures = readFileSync(path.join(runs, "sweep-keys/teacher_outputs/distill/failures.jsonl"), "utf8")
    expect(failures).toContain("[REDACTED]")
    expect(out.join("\n")).toContain("must not carry credentials")
  })
})
