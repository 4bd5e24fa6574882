// `npm run bench` part (the fleet issue): whole `dart infer` runs (runInfer: its ServerScheduler and VllmClient)
// dispatching over 1, 2, 4 and 8 stand-in vLLM replicas, each with a fixed per-request latency and a fixed capacity
// (requests running at once, the rest queue): one replica serves at most capacity / latency requests a second, N
// replicas N times that. Every replica runs in its own process, and so does `dart infer`. Requests grow with N (the same
// number per replica), so every run lasts about as long. Target: rate_N >= 0.9 x N x rate_1.
// Runnable alone: node bench/dispatchReplicas.ts. Env: BENCH_REPLICA_LATENCY_MS, BENCH_REPLICA_CAPACITY,
// BENCH_REPLICA_REQUESTS (per replica), BENCH_REPLICA_COUNTS (1,2,4,8), BENCH_REPLICA_CONCURRENCY (inference.concurrency),
// BENCH_REPLICA_PROF (a folder for the controller's --cpu-prof).
import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import { cpus, loadavg, tmpdir } from "node:os"
import * as path from "node:path"
import { createInterface, type Interface } from "node:readline"

// 200 ms and 8 slots: 40 req/s per replica, 320 at 8 replicas, so the replicas and not the controller's own CPU bound
// the rate (a whole run costs the controller about 0.8 ms of CPU per request on a 2-core box: at 50 ms, 1,280 req/s
// would ask one event loop for a full core and measure that instead of dispatch; BENCH_REPLICA_LATENCY_MS=50 shows it).
const latencyMs = Number(process.env.BENCH_REPLICA_LATENCY_MS ?? 200)
const capacity = Number(process.env.BENCH_REPLICA_CAPACITY ?? 8)
// 250 per replica: about 6.5 s per run at any N.
const perReplica = Number(process.env.BENCH_REPLICA_REQUESTS ?? Math.round((6.25 * capacity * 1000) / latencyMs))
const counts = (process.env.BENCH_REPLICA_COUNTS ?? "1,2,4,8").split(",").map(Number)
// Workers per server and the ceiling of its adaptive concurrency. Below the capacity the dispatcher, not the replica,
// caps the rate (concurrency / latency); twice the capacity lets the adaptive loop keep a short queue on each replica,
// which hides the client's turnaround (answer parsed, appended and fsynced, next request sent) so no slot idles.
const concurrency = Number(process.env.BENCH_REPLICA_CONCURRENCY ?? 2 * capacity)
const trainItems = 11_202 // the train split of `dart init` with no limits: one request per item (one model, one sample)
if (Math.max(...counts) * perReplica > trainItems) throw new Error(`at most ${trainItems} requests per run: lower BENCH_REPLICA_REQUESTS`)

interface Replica { readonly url: string; readonly child: ChildProcess; readonly lines: Interface }
interface Stats { readonly served: number; readonly maxRunning: number; readonly first: number; readonly last: number; readonly ranMs: number; readonly cpuMs: number }

const nextLine = (lines: Interface) => new Promise<string>((resolve) => lines.once("line", resolve))
const startReplica = async (): Promise<Replica> => {
  const child = spawn(process.execPath, ["bench/replicaStandIn.ts", String(latencyMs), String(capacity)], { stdio: ["pipe", "pipe", "inherit"] })
  const lines = createInterface({ input: child.stdout! })
  const exited = new Promise<never>((_, reject) => child.once("exit", (code) => reject(new Error(`replica stand-in exited with ${code}`))))
  exited.catch(() => {})
  return { url: (await Promise.race([nextLine(lines), exited])).trim(), child, lines }
}
const statsOf = async (r: Replica): Promise<Stats> => {
  const line = nextLine(r.lines)
  r.child.stdin!.write("stats\n")
  return JSON.parse(await line)
}
const stop = (r: Replica) =>
  new Promise<void>((resolve) => {
    r.child.once("exit", () => resolve())
    r.child.kill("SIGTERM")
  })
const sum = (xs: ReadonlyArray<number>) => xs.reduce((a, b) => a + b, 0)

const scratch = mkdtempSync(path.join(tmpdir(), "dart-bench-replicas-"))
process.on("exit", () => rmSync(scratch, { recursive: true, force: true }))
const runs = path.join(scratch, "runs")
const init = spawnSync(process.execPath, ["bin/dart.js", "init", "--exp-id", "fleet", "--override", `run.runs_dir=${runs}`], { encoding: "utf8" })
if (init.status !== 0) throw new Error(init.stderr)
// GNU time, where present, adds the controller's CPU seconds: with few cores, a CPU-bound controller shows there.
const cpuFile = path.join(scratch, "cpu.txt")
const timed = existsSync("/usr/bin/time") ? ["/usr/bin/time", "-f", "%U %S", "-o", cpuFile, process.execPath] : [process.execPath]
const prof = process.env.BENCH_REPLICA_PROF ? ["--cpu-prof", "--cpu-prof-dir", process.env.BENCH_REPLICA_PROF] : []
// How busy the machine was: the load average and, on Linux, the share of the last 10 s in which some task waited for a CPU.
const machine = () => {
  const psi = existsSync("/proc/pressure/cpu") ? /some avg10=([\d.]+)/.exec(readFileSync("/proc/pressure/cpu", "utf8"))?.[1] : undefined
  return `load ${loadavg()[0]!.toFixed(1)}${psi === undefined ? "" : `, CPU pressure ${psi}%`}`
}
const machineBefore = machine()

interface Row {
  readonly n: number
  readonly requests: number
  /** First chat admitted on any replica to the last answer of any. */
  readonly seconds: number
  readonly wall: number
  readonly served: ReadonlyArray<number>
  /** Share of the N x capacity running slots held by chats over the window: 1 = no replica slot ever idled. */
  readonly occupancy: number
  /** How long a chat really held its slot (the nominal latency plus the stand-in's timer lateness on a loaded machine). */
  readonly heldMs: number
  readonly conc: string
  readonly dartCpu: number | undefined
  readonly standInCpu: number
}
const rows: Array<Row> = []
for (const n of counts) {
  const replicas = await Promise.all(Array.from({ length: n }, () => startReplica()))
  try {
    const requests = n * perReplica
    const before = await Promise.all(replicas.map(statsOf))
    rmSync(cpuFile, { force: true })
    const t0 = performance.now()
    const r = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const child = spawn(timed[0]!, [...timed.slice(1), ...prof, "bin/dart.js", "infer", "--models", "M0", "--split", "train", "--limit", String(requests),
        "--run-name", `r${n}`, "--exp-id", "fleet", "--override", `run.runs_dir=${runs}`, "--override", `compute.vllm.endpoint=${replicas[0]!.url}`,
        "--override", `compute.vllm.endpoints=${JSON.stringify(replicas.slice(1).map((x) => x.url))}`, "--override", `inference.concurrency=${concurrency}`],
        { stdio: ["ignore", "ignore", "pipe"] })
      let stderr = ""
      child.stderr!.on("data", (c: Buffer) => void (stderr += c.toString()))
      child.on("exit", (code) => resolve({ code, stderr }))
    })
    const wall = (performance.now() - t0) / 1000
    if (r.code !== 0) throw new Error(`dart infer over ${n} replicas failed (${r.code}): ${r.stderr}`)
    const stats = await Promise.all(replicas.map(statsOf))
    const served = stats.map((s) => s.served)
    if (sum(served) !== requests) throw new Error(`${n} replicas served ${served.join("+")} chats, expected ${requests}`)
    const seconds = (Math.max(...stats.map((s) => s.last)) - Math.min(...stats.map((s) => s.first))) / 1000
    const ranMs = sum(stats.map((s) => s.ranMs))
    const manifest = JSON.parse(readFileSync(path.join(runs, "fleet", "predictions", `r${n}`, "manifest.json"), "utf8"))
    const conc = (manifest.servers as Array<{ concurrency: { final: number; min: number; max: number } }>).map((s) => s.concurrency)
    rows.push({
      n, requests, seconds, wall, served,
      occupancy: ranMs / (n * capacity * seconds * 1000),
      heldMs: ranMs / requests,
      conc: `${Math.min(...conc.map((c) => c.min))}-${Math.max(...conc.map((c) => c.max))}, final ${conc.map((c) => c.final).join("/")}`,
      dartCpu: existsSync(cpuFile) ? sum(readFileSync(cpuFile, "utf8").trim().split("\n").pop()!.split(" ").map(Number)) : undefined,
      standInCpu: (sum(stats.map((s) => s.cpuMs)) - sum(before.map((s) => s.cpuMs))) / 1000
    })
  } finally {
    await Promise.all(replicas.map(stop))
  }
}

const one = rows.find((r) => r.n === 1) ?? rows[0]!
const rate1 = one.requests / one.seconds / one.n
const table = [
  ["replicas", "requests", "seconds", "req/s", "speed-up", "efficiency", ">=0.9", "ideal req/s", "slot occupancy", "held ms", "answered per replica", "dispatcher c", "dart CPU s", "stand-ins CPU s", "wall s"],
  ...rows.map((r) => {
    const rate = r.requests / r.seconds
    const efficiency = rate / (r.n * rate1)
    return [String(r.n), String(r.requests), r.seconds.toFixed(2), rate.toFixed(1), (rate / rate1).toFixed(2), efficiency.toFixed(3), efficiency >= 0.9 ? "PASS" : "FAIL",
      String(Math.round((r.n * capacity * 1000) / latencyMs)), r.occupancy.toFixed(3), r.heldMs.toFixed(1), `${Math.min(...r.served)}-${Math.max(...r.served)}`, r.conc,
      r.dartCpu === undefined ? "-" : r.dartCpu.toFixed(2), r.standInCpu.toFixed(2), r.wall.toFixed(2)]
  })
]
const widths = table[0]!.map((_, c) => Math.max(...table.map((row) => row[c]!.length)))
console.log(
  `dispatch over N stand-in vLLM replicas (${latencyMs} ms per request, capacity ${capacity}: ${Math.round((capacity * 1000) / latencyMs)} req/s per replica at best), ` +
    `whole \`dart infer\` runs with inference.concurrency=${concurrency}; seconds: first request to last answer on the replicas (wall s: the whole command); ` +
    `efficiency = rate_N / (N x rate_1), target >= 0.9; slot occupancy: share of the N x ${capacity} replica slots in use; ` +
    `${cpus().length} CPUs (${machineBefore} before, ${machine()} after):`
)
for (const row of table) console.log(`  ${row.map((cell, c) => (c === 10 || c === 11 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join("  ")}`)
