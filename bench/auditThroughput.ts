// `dart audit` on 16,000 paired rows: both views, both classifiers, the judge on (validate), against
// zero-latency loopback servers; prints the time per stage (issue 10's goal: under 10 s).
import { spawn, spawnSync } from "node:child_process"
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { startChatServer } from "../test/support/ChatServer.ts"
import { startClassifyServer } from "../test/support/ClassifyServer.ts"
import { benchItems, writeRows } from "./fixtures.ts"

const pairs = Number(process.env.BENCH_AUDIT_PAIRS ?? 16_000)
const dir = mkdtempSync(path.join(tmpdir(), "dart-bench-audit-"))
process.on("exit", () => rmSync(dir, { recursive: true, force: true }))
const runs = path.join(dir, "runs")

const items = benchItems()
const input = path.join(dir, "pairs.jsonl")
const texts = [
  "The groups differ in law here, and the analysis weighs the facts given. [[tox:0.02]] [[hate:0.01]]\nConclusion: YES",
  "The groups should be treated alike; nothing in the prompt justifies a difference. [[tox:0.05]] [[hate:0.3]]\nConclusion: NO",
  "This group is worse and everyone knows it. [[tox:0.7]] [[hate:0.8]]\nConclusion: YES"
]
await writeRows(input, pairs, (i) => {
  const it = items[i % items.length]!
  return {
    task: "dart", id: it.id, benchmark: it.benchmark, condition: it.condition, scenario: it.scenario, answer: it.answer, sample: Math.floor(i / items.length),
    question: `Question ${it.id}: which of the following groups …`,
    outputs: { M0: { text: texts[i % 2]! }, DART: { text: texts[(i * 7) % 3]! } }
  }
})

const tox = await startClassifyServer({ model: "tox", id2label: { 0: "non-toxic", 1: "toxic" }, harmfulIndex: 1, marker: "tox" })
const hate = await startClassifyServer({ model: "hate", id2label: { 0: "nothate", 1: "hate" }, harmfulIndex: 1, marker: "hate" })
const judge = await startChatServer({ fixedReply: JSON.stringify({ is_regression: false, severity: "none", reason: "no drift", regression_type: "none", a_correct: true, b_correct: true }) })
const classifiers = JSON.stringify([
  { name: "toxicity", model: "tox", label: "toxic", max_tokens: 512, endpoint: tox.url, id2label: { 0: "non-toxic", 1: "toxic" } },
  { name: "hate", model: "hate", label: "hate", max_tokens: 512, endpoint: hate.url, id2label: { 0: "nothate", 1: "hate" } }
])
// The classifiers are part of the run's config (dart init); a later stage may change only their endpoints.
const init = spawnSync(process.execPath, ["bin/dart.js", "init", "--exp-id", "bench", "--override", `run.runs_dir=${runs}`, "--override", "datasets.limits.train=8",
  "--override", `audit.classifiers=${classifiers}`], { encoding: "utf8" })
if (init.status !== 0) throw new Error(init.stderr)
const cpuFile = path.join(dir, "cpu.txt")
const started = performance.now()
const code = await new Promise<number | null>((resolve) => {
  // GNU time, where present, adds the process's CPU seconds: on a shared machine wall time alone overstates DART's cost.
  const timed = existsSync("/usr/bin/time") ? ["/usr/bin/time", "-f", "%U %S", "-o", cpuFile, process.execPath] : [process.execPath]
  const child = spawn(timed[0]!, [...timed.slice(1), ...(process.env.BENCH_AUDIT_PROF ? ["--cpu-prof", "--cpu-prof-dir", process.env.BENCH_AUDIT_PROF] : []), "bin/dart.js", "audit", "--exp-id", "bench", "--override", `run.runs_dir=${runs}`, "--override", `audit.classifiers=${classifiers}`,
    "--override", `judge.base_url=${judge.url}`, "--override", "judge.max_concurrency=256", "--paired-input", input, "--a-name", "M0", "--b-name", "DART",
    "--run-name", "bench", "--use-llm-judge", "--llm-judge-mode", "validate", "--llm-judge-provider", "compatible"],
    { env: { ...process.env, OPENAI_API_KEY: "sk-bench", EXP_ID: "" }, stdio: ["ignore", "ignore", "inherit"] })
  child.on("exit", resolve)
})
const seconds = (performance.now() - started) / 1000
await Promise.all([tox.close(), hate.close(), judge.close()])
const s = JSON.parse(readFileSync(path.join(runs, "bench/audit/bench/summary.json"), "utf8"))
const t = s.timings
const cpu = existsSync(cpuFile) ? readFileSync(cpuFile, "utf8").trim().split("\n").pop()!.split(" ").map(Number) : undefined
console.log(
  `audit: ${s.n_pairs.toLocaleString("en")} pairs x 2 views x 2 classifiers + judge (validate), zero-latency servers: ${seconds.toFixed(2)} s wall ` +
    `(process start included; exit ${code}; target < 10 s${cpu ? `; dart process CPU ${cpu[0]!.toFixed(2)} s user + ${cpu[1]!.toFixed(2)} s sys` : ""}); read ${t.read_s.toFixed(2)} s, classify ${t.classify_busy_s.toFixed(2)} s busy, ` +
    `judge+write ${t.judge_and_write_busy_s.toFixed(2)} s busy, pool+summary ${t.finalize_s.toFixed(2)} s; ` +
    `${tox.requests.length + hate.requests.length} /classify requests, ${judge.requests.length} judge requests`
)
