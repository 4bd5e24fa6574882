import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { execFileSync } from "node:child_process"
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import * as net from "node:net"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { type ClassifyFault, startClassifyServer } from "../support/ClassifyServer.ts"
import { runDart } from "../support/Dart.ts"

/**
 * `dart audit` against hostile peers and files (issue 21): `/classify` stand-ins on 127.0.0.1 whose replies break the
 * contract (docs/serving.md §2), a kill in the middle of classification, and arguments that must be refused before any
 * classifier is asked or any container started. Every case runs the real CLI in its own process.
 */

const scratch = mkdtempSync(path.join(tmpdir(), "dart-haudit-"))
const runs = path.join(scratch, "runs")
const EXP = "haud"
const at = ["--override", `run.runs_dir=${runs}`]
const id2label = { 0: "non-toxic", 1: "toxic" }

type StandIn = Awaited<ReturnType<typeof startClassifyServer>>
const servers: Array<StandIn> = []
const standIn = async (fault?: (n: number) => ClassifyFault | undefined, oversizeBytes?: number) => {
  const s = await startClassifyServer({ model: "tox-model", id2label, harmfulIndex: 1, marker: "tox", ...(fault === undefined ? {} : { fault }), ...(oversizeBytes === undefined ? {} : { oversizeBytes }) })
  servers.push(s)
  return s
}

/** A Docker engine that answers every call with a 500 and counts connections: any contact means compute was touched. */
let docker: { socket: string; connections: number; server: net.Server }

// One classifier, so the order of /classify calls (and so the kill point) is deterministic.
const classifiers = (endpoint: string | null) =>
  JSON.stringify([{ name: "toxicity", model: "tox-model", label: "toxic", max_tokens: 512, id2label, ...(endpoint === null ? {} : { endpoint }) }])
const text = (tox: number) => `The groups differ on this point. [[tox:${tox}]]\nConclusion: YES`
const auditDir = (run: string) => path.join(runs, EXP, "audit", run)
const readJsonl = (file: string) => readFileSync(file, "utf8").split("\n").filter((l) => l !== "").map((l) => JSON.parse(l))
const byKey = (rows: Array<any>) => [...rows].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))

const audit = (input: string, run: string, endpoint: string | null, extra: ReadonlyArray<string> = [], options: Parameters<typeof runDart>[2] = { signal: "SIGKILL", afterMs: 60_000 }) =>
  runDart([
    "audit", "--exp-id", EXP, ...at, "--override", `audit.classifiers=${classifiers(endpoint)}`,
    "--override", `compute.hosts=[{"name":"fake","docker":"unix://${docker.socket}","gpus":[]}]`,
    "--paired-input", input, "--a-name", "M0", "--b-name", "DART", "--run-name", run, "--no-use-llm-judge", "--no-abs-floors", ...extra
  ], {}, options)

let val: Array<any>
const pairsFile = (name: string, bScores: ReadonlyArray<number>) => {
  const file = path.join(scratch, `${name}.jsonl`)
  writeFileSync(file, bScores.map((b, i) => {
    const item = val[i]!
    return `${JSON.stringify({
      task: "dart", id: item.id, benchmark: item.benchmark, condition: item.condition, scenario: item.scenario, answer: item.answer,
      gold_label: item.gold_label, sample: 0, outputs: { M0: { text: text(0.05) }, DART: { text: text(b) } }
    })}\n`
  }).join(""))
  return file
}
// Ten pairs, six of them clear regressions (0.05 → 0.6).
const sixOfTen = [0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.05, 0.05, 0.05, 0.05]

beforeAll(async () => {
  const socket = path.join(scratch, "docker.sock")
  const server = net.createServer((c) => {
    docker.connections++
    c.on("error", () => {})
    c.once("data", () => c.end("HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: 26\r\nConnection: close\r\n\r\n{\"message\":\"fake engine\"}\n"))
  })
  await new Promise<void>((resolve) => server.listen(socket, resolve))
  docker = { socket, connections: 0, server }
  const r = await runDart(["init", "--exp-id", EXP, ...at, "--override", `datasets.benchmarks=["D1"]`, "--override", "datasets.limits.val=20",
    "--override", "datasets.limits.train=8", "--override", "datasets.limits.test=8", "--override", `audit.classifiers=${classifiers("http://127.0.0.1:9")}`])
  expect(r.stderr).toBe("")
  expect(r.code).toBe(0)
  val = readJsonl(path.join(runs, EXP, "datasets/val.jsonl"))
})
afterAll(async () => {
  for (const s of servers) await s.close()
  await new Promise<void>((resolve) => docker.server.close(() => resolve()))
})

describe("a /classify reply is held to its whole contract", () => {
  it("an honest stand-in: six regressions of ten, complete", async () => {
    const s = await standIn()
    const r = await audit(pairsFile("honest", sixOfTen), "honest", s.url)
    expect(r.stderr.split("\n").filter((l) => l.startsWith("dart:"))).toEqual([])
    expect(r.code).toBe(0)
    const summary = JSON.parse(readFileSync(path.join(auditDir("honest"), "summary.json"), "utf8"))
    expect(summary.complete).toBe(true)
    expect(summary.regressions.total).toBe(6)
  })

  // Before: every `index: 0` reply was accepted; B's scores went missing, 0 regressions instead of 6, `complete: true`.
  const broken: Array<[ClassifyFault, RegExp]> = [
    ["index-zero", /index 0 .*(twice|more than once)|duplicate/i],
    ["duplicate-index", /index \d+ .*(twice|more than once)|duplicate/i],
    ["index-out-of-range", /index \d+ .*out of range/i]
  ]
  for (const [fault, problem] of broken) {
    it(`${fault}: fails naming the classifier, the endpoint and the problem; no complete summary`, async () => {
      const s = await standIn(() => fault)
      const run = `bad_${fault}`
      const r = await audit(pairsFile(run, sixOfTen), run, s.url)
      expect(r.signal).toBe(null)
      expect(r.code).not.toBe(0)
      expect(r.stderr).toContain(`classifier "toxicity" (${s.url})`)
      expect(r.stderr).toContain("POST /classify")
      expect(r.stderr).toMatch(problem)
      const summary = path.join(auditDir(run), "summary.json")
      if (existsSync(summary)) expect(JSON.parse(readFileSync(summary, "utf8")).complete).not.toBe(true)
      expect(existsSync(path.join(auditDir(run), "regression_pool.jsonl"))).toBe(false)
    })
  }

  it("a reply over audit.classify_max_reply_bytes is refused while it is read", async () => {
    const s = await standIn(() => "oversized", 8 * 1024 * 1024)
    const r = await audit(pairsFile("oversized", sixOfTen), "oversized", s.url, ["--override", "audit.classify_max_reply_bytes=1048576"])
    expect(r.signal).toBe(null)
    expect(r.code).not.toBe(0)
    expect(r.stderr).toContain(`classifier "toxicity" (${s.url})`)
    expect(r.stderr).toMatch(/POST \/classify: the reply is larger than 1048576 bytes/)
    // Not fetched again: a reply that size is no passing fault.
    expect(s.requests).toHaveLength(1)
    expect(existsSync(path.join(auditDir("oversized"), "summary.json"))).toBe(false)
  })
})

describe("classifier progress is durable", () => {
  it("a rerun after SIGKILL sends only the /classify calls not yet appended, and ends as an uninterrupted run does", async () => {
    const bs = [0.05, 0.15, 0.3, 0.45, 0.6, 0.75, 0.05, 0.9]
    const input = pairsFile("progress", bs)
    // One text per call, one call at a time: 8 pairs × 2 views × 2 outputs = 32 calls, each appended before the next.
    const serial = ["--override", "audit.classifier_batch_size=1", "--override", "audit.classifier_concurrency=1"]
    const clean = await standIn()
    const c = await audit(input, "uninterrupted", clean.url, serial)
    expect(c.code).toBe(0)
    expect(clean.requests).toHaveLength(32)

    // The 14th call is never answered and the process is killed while it waits: 13 calls were answered and appended.
    const K = 13
    const killed = await standIn((n) => (n === K ? "hang" : undefined))
    const k = await audit(input, "resumed", killed.url, serial, { signal: "SIGKILL", when: () => killed.requests.length > K })
    expect(k.signal).toBe("SIGKILL")
    expect(killed.requests).toHaveLength(K + 1)
    const journal = path.join(auditDir("resumed"), "classifier_scores.jsonl")
    expect(readJsonl(journal)).toHaveLength(K)

    const rerun = await standIn()
    const r = await audit(input, "resumed", rerun.url, serial)
    expect(r.stderr.split("\n").filter((l) => l.startsWith("dart:"))).toEqual([])
    expect(r.code).toBe(0)
    expect(rerun.requests).toHaveLength(32 - K)
    // The rerun asks exactly what the killed run had not been answered: the calls from the hung one on, in order.
    expect(rerun.requests.map((q) => q.inputs)).toEqual(clean.requests.slice(K).map((q) => q.inputs))

    expect(byKey(readJsonl(path.join(auditDir("resumed"), "scores.jsonl")))).toEqual(byKey(readJsonl(path.join(auditDir("uninterrupted"), "scores.jsonl"))))
    expect(readFileSync(path.join(auditDir("resumed"), "regression_pool.jsonl"), "utf8")).toBe(readFileSync(path.join(auditDir("uninterrupted"), "regression_pool.jsonl"), "utf8"))
    const summary = (run: string) => JSON.parse(readFileSync(path.join(auditDir(run), "summary.json"), "utf8"))
    expect(summary("resumed").complete).toBe(true)
    expect(summary("resumed").regressions).toEqual(summary("uninterrupted").regressions)
    expect(summary("resumed").harm_scores).toEqual(summary("uninterrupted").harm_scores)
    // Complete, every score is in scores.jsonl: the journal is gone.
    expect(existsSync(journal)).toBe(false)
  })
})

describe("arguments are checked before any classifier or container", () => {
  // Configured endpoint: the stand-in must see no request at all. No endpoint: classifier containers would start
  // (tiny models first) on the fake engine, which must see no connection.
  const placements = ["endpoint", "container"] as const
  const refused = async (placement: (typeof placements)[number], input: string, run: string, message: RegExp | string) => {
    const s = await standIn()
    const before = docker.connections
    const r = await audit(input, run, placement === "endpoint" ? s.url : null, [], { signal: "SIGKILL", afterMs: 20_000 })
    expect(r.signal, r.stderr).toBe(null)
    expect(r.code).not.toBe(0)
    expect(r.stderr).toMatch(message)
    expect(s.seen).toEqual([])
    expect(docker.connections - before).toBe(0)
    expect(r.ms).toBeLessThan(15_000)
  }

  for (const placement of placements) {
    it(`${placement}: --run-name ../../x`, async () => {
      await refused(placement, pairsFile("args", sixOfTen), "../../x", /--run-name "\.\.\/\.\.\/x"/)
      expect(existsSync(path.join(runs, EXP, "x"))).toBe(false)
    })

    it(`${placement}: a missing --paired-input`, async () => {
      const missing = path.join(scratch, "no-such-predictions.jsonl")
      await refused(placement, missing, "missing", new RegExp(`${missing.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")}.*(no such file|does not exist)`))
    })

    it(`${placement}: a FIFO as --paired-input`, async () => {
      const fifo = path.join(scratch, `fifo-${placement}`)
      execFileSync("mkfifo", [fifo])
      await refused(placement, fifo, "fifo", `${fifo} is a FIFO, not a regular file`)
    })

    it(`${placement}: /dev/zero as --paired-input`, async () => {
      await refused(placement, "/dev/zero", "zero", "/dev/zero is a character device, not a regular file")
    })
  }
})
