// `npm run bench` part: DART's vLLM client against a zero-latency loopback stand-in (in its own
// process), beside a plain `openai` client loop; then the peak RSS of a whole `dart infer` run of
// 200,000 requests against one of 20,000 (memory must not grow with the run).
import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { writeAdapter } from "../test/support/AdapterFixture.ts"

const startStandIn = () =>
  new Promise<{ url: string; child: ChildProcess }>((resolve, reject) => {
    const child = spawn(process.execPath, ["bench/inferStandIn.ts"], { stdio: ["ignore", "pipe", "inherit"] })
    child.stdout!.once("data", (c: Buffer) => resolve({ url: c.toString().trim(), child }))
    child.once("exit", (code) => reject(new Error(`stand-in exited with ${code}`)))
  })

const requests = Number(process.env.BENCH_INFER_REQUESTS ?? 20_000)
const concurrency = 64
const server = await startStandIn()
try {
  const loop = (mode: string) => {
    const r = spawnSync(process.execPath, ["bench/inferClientLoop.ts", mode, server.url, String(requests), String(concurrency)], { encoding: "utf8" })
    if (r.status !== 0) throw new Error(r.stderr)
    return JSON.parse(r.stdout) as { rps: number; cpu_ms_per_request: number }
  }
  loop("dart") // warm the stand-in's JIT
  const ours = loop("dart")
  const plain = loop("openai")
  console.log(`infer client: ${requests.toLocaleString("en")} chats at concurrency ${concurrency} against a zero-latency loopback stand-in: ` +
    `VllmClient ${Math.round(ours.rps)} req/s (${ours.cpu_ms_per_request.toFixed(3)} CPU ms/request, target >= 2,000 req/s); ` +
    `plain openai loop ${Math.round(plain.rps)} req/s (${plain.cpu_ms_per_request.toFixed(3)} CPU ms/request)`)

  // Whole runs: items × samples × 2 arms, answers appended durably, rows grouped at the end.
  const scratch = mkdtempSync(path.join(tmpdir(), "dart-bench-infer-"))
  process.on("exit", () => rmSync(scratch, { recursive: true, force: true }))
  const runs = path.join(scratch, "runs")
  const adapterDir = writeAdapter(path.join(scratch, "adapter"))
  const wholeRun = (samples: number) => {
    // The sample count is part of the run's config (dart init); later stages may change only operational keys.
    const expId = `bi${samples}`
    const init = spawnSync(process.execPath, ["bin/dart.js", "init", "--exp-id", expId, "--override", `run.runs_dir=${runs}`, "--override", "datasets.limits.val=100",
      "--override", `inference.samples=${samples}`], { encoding: "utf8" })
    if (init.status !== 0) throw new Error(init.stderr)
    const t0 = performance.now()
    const r = spawnSync("/usr/bin/time", ["-f", "%M", process.execPath, "bin/dart.js", "infer", "--models", `M0,B=${adapterDir}`, "--exp-id", expId, "--run-name", `s${samples}`,
      "--override", `run.runs_dir=${runs}`, "--override", `compute.vllm.endpoint=${server.url}`, "--override", "inference.concurrency=128"], { encoding: "utf8", maxBuffer: 1 << 26 })
    const seconds = (performance.now() - t0) / 1000
    if (r.status !== 0) throw new Error(r.stderr)
    const kib = Number(r.stderr.trim().split("\n").at(-1))
    const rows = readFileSync(path.join(runs, expId, "predictions", `s${samples}`, "outputs.jsonl"), "utf8").split("\n").length - 1
    return { requests: rows * 2, seconds, rssMiB: kib / 1024 }
  }
  const small = wholeRun(100)
  const large = wholeRun(1000)
  console.log(`dart infer whole run: ${small.requests.toLocaleString("en")} requests ${small.seconds.toFixed(1)} s (${Math.round(small.requests / small.seconds)} req/s), peak RSS ${Math.round(small.rssMiB)} MiB; ` +
    `${large.requests.toLocaleString("en")} requests ${large.seconds.toFixed(1)} s (${Math.round(large.requests / large.seconds)} req/s), peak RSS ${Math.round(large.rssMiB)} MiB ` +
    `(${(100 * (large.rssMiB / small.rssMiB - 1)).toFixed(1)}% over the small run; targets < 300 MB and within 10%)`)
} finally {
  server.child.kill("SIGTERM")
}
