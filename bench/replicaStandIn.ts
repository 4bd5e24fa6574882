// Child process of bench/dispatchReplicas.ts: one vLLM replica stand-in with a fixed per-request latency and a fixed
// capacity (requests running at once; the rest wait), keeping no requests. Usage: replicaStandIn.ts LATENCY_MS CAPACITY.
// Prints its URL on a line; on each "stats" line on stdin it prints one JSON line: chats served, the most running at
// once, the wall-clock ms of the first admission and of the last answer, the running time the chats really took
// (a loaded machine fires timers late), and its CPU ms so far.
import { createInterface } from "node:readline"
import { startVllmStandIn } from "../test/support/VllmStandIn.ts"

const latencyMs = Number(process.argv[2] ?? 50)
const capacity = Number(process.argv[3] ?? 8)
let first = 0
let last = 0
let ranMs = 0
const s = await startVllmStandIn({
  record: false,
  capacity,
  // Called once per chat as it is admitted (a running slot is free). A timer of the same length set just before the
  // stand-in's own fires with it: it measures how long the chat really held its slot.
  latencyMs: () => {
    const t = performance.now()
    if (first === 0) first = Date.now()
    setTimeout(() => {
      ranMs += performance.now() - t
      last = Date.now()
    }, latencyMs)
    return latencyMs
  }
})
process.stdout.write(`${s.url}\n`)
createInterface({ input: process.stdin }).on("line", (line) => {
  if (line.trim() !== "stats") return
  const cpu = process.cpuUsage()
  process.stdout.write(`${JSON.stringify({ served: s.served(), maxRunning: s.maxRunning(), first, last, ranMs, cpuMs: (cpu.user + cpu.system) / 1000 })}\n`)
})
process.on("SIGTERM", () => void s.stop().then(() => process.exit(0)))
