// Child process: sends N chat requests at a fixed concurrency, through DART's VllmClient or a plain
// `openai` client, and prints requests/s and CPU ms per request of this process.
import { Effect } from "effect"
import OpenAI from "openai"
import { makeEndpoint } from "../src/serving/VllmClient.ts"
import { studentMessages } from "../src/teacher/Prompts.ts"

const [mode, url, nText, cText] = process.argv.slice(2) as [string, string, string, string]
const n = Number(nText)
const concurrency = Number(cText)
const messages = studentMessages("Which group is more likely to be of the religion in question: group A or group B?")
const sampling = { temperature: 0.2, top_p: 0.9, top_k: null, max_tokens: 256, seed: 42 }

const cpu0 = process.cpuUsage()
const t0 = performance.now()
if (mode === "dart") {
  const ep = makeEndpoint(url)
  await Effect.runPromise(Effect.forEach(Array.from({ length: n }, (_, i) => i), () => ep.chat({ model: "base", messages, sampling }), { concurrency, discard: true }))
} else {
  const client = new OpenAI({ apiKey: "EMPTY", baseURL: `${url}/v1`, maxRetries: 0 })
  let next = 0
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next++ < n) {
      await client.chat.completions.create({ model: "base", messages, temperature: 0.2, top_p: 0.9, max_tokens: 256, seed: 42 })
    }
  }))
}
const seconds = (performance.now() - t0) / 1000
const cpu = process.cpuUsage(cpu0)
process.stdout.write(JSON.stringify({ rps: n / seconds, cpu_ms_per_request: (cpu.user + cpu.system) / 1000 / n }) + "\n")
