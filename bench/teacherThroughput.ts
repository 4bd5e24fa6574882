// 10,000 teacher requests against a loopback server that takes 2 s per reply, at concurrency 500:
// the ideal is 10,000 / 500 × 2 s = 40 s; DART should land within 5% of it.
import { spawn, spawnSync } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { startChatServer } from "../test/support/ChatServer.ts"

const requests = Number(process.env.BENCH_TEACHER_REQUESTS ?? 10_000)
const concurrency = 500
const latencyMs = 2000
const scratch = mkdtempSync(path.join(tmpdir(), "dart-bench-teacher-"))
process.on("exit", () => rmSync(scratch, { recursive: true, force: true }))
const runs = path.join(scratch, "runs")
const init = spawnSync(process.execPath, ["bin/dart.js", "init", "--exp-id", "bench", "--override", `run.runs_dir=${runs}`, "--override", `datasets.limits.train=${requests}`,
  "--override", "teacher.correction_rounds=0"], { encoding: "utf8" })
if (init.status !== 0) throw new Error(init.stderr)

// A fixed reply and no correction rounds: each item costs exactly one request, and the
// stand-in server does almost no work, so the figure measures DART's side.
const server = await startChatServer({ latencyMs, fixedReply: "The groups differ on these facts. The label follows.\nConclusion: YES" })
const started = performance.now()
const code = await new Promise<number | null>((resolve) => {
  const child = spawn(process.execPath, ["bin/dart.js", "teacher", "--task", "distill", "--exp-id", "bench", "--override", `run.runs_dir=${runs}`,
    "--override", "teacher.provider=compatible", "--override", `teacher.base_url=${server.url}`, "--override", `teacher.max_concurrency=${concurrency}`],
    { env: { ...process.env, OPENAI_API_KEY: "sk-bench" }, stdio: ["ignore", "ignore", "inherit"] })
  child.on("exit", resolve)
})
const seconds = (performance.now() - started) / 1000
const startWall = Date.now() - seconds * 1000
const firstAt = (server.requests[0]!.at - startWall) / 1000
const lastAt = (server.requests[server.requests.length - 1]!.at - startWall) / 1000
await server.close()
const ideal = (requests / concurrency) * (latencyMs / 1000)
console.log(`teacher: ${server.requests.length} requests at ${latencyMs / 1000} s latency, concurrency ${concurrency}: ${seconds.toFixed(1)} s wall (process start included; exit ${code}), ideal ${ideal} s, overhead ${(100 * (seconds / ideal - 1)).toFixed(1)}% (target < 5%); max in flight ${server.maxInFlight()}; first request at ${firstAt.toFixed(1)} s, last at ${lastAt.toFixed(1)} s`)
