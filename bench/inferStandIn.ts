// Child process of the infer benches: a zero-latency vLLM stand-in that does not keep requests.
import { startVllmStandIn } from "../test/support/VllmStandIn.ts"

const s = await startVllmStandIn({ record: false, latencyMs: 0 })
process.stdout.write(`${s.url}\n`)
process.on("SIGTERM", () => void s.stop().then(() => process.exit(0)))
