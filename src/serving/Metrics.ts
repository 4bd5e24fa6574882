/** The few gauges of vLLM's Prometheus `/metrics` that steer a client (docs/serving.md §1.3). */
export interface ServerMetrics {
  readonly running: number
  readonly waiting: number
  /** 0–1; null when the server does not export it. */
  readonly kvCacheUsage: number | null
  readonly lora: { readonly running: ReadonlyArray<string>; readonly waiting: ReadonlyArray<string>; readonly maxLora: number | null } | null
}

const labelPattern = /([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"/g

const labelsOf = (text: string): Record<string, string> => {
  const out: Record<string, string> = {}
  for (const m of text.matchAll(labelPattern)) out[m[1]!] = m[2]!.replace(/\\(.)/g, "$1")
  return out
}

const list = (s: string | undefined) => (s === undefined || s === "" ? [] : s.split(",").map((x) => x.trim()).filter((x) => x !== ""))

/**
 * Parses the Prometheus text format for the gauges DART uses. Samples with several label sets
 * (one per served model name) are summed; `vllm:lora_requests_info` is an info gauge whose newest
 * sample (largest value = timestamp) carries the adapter lists in its labels.
 */
export const parseMetrics = (text: string): ServerMetrics => {
  let running = 0
  let waiting = 0
  let kv: number | null = null
  let lora: { value: number; labels: Record<string, string> } | null = null
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue
    const brace = line.indexOf("{")
    const space = line.lastIndexOf(" ")
    if (space < 0) continue
    const name = brace >= 0 && brace < space ? line.slice(0, brace) : line.slice(0, line.indexOf(" "))
    const value = Number(line.slice(space + 1))
    if (!Number.isFinite(value)) continue
    switch (name) {
      case "vllm:num_requests_running":
        running += value
        break
      case "vllm:num_requests_waiting":
        waiting += value
        break
      case "vllm:kv_cache_usage_perc":
      case "vllm:gpu_cache_usage_perc":
        kv = Math.max(kv ?? 0, value)
        break
      case "vllm:lora_requests_info":
        if (lora === null || value >= lora.value) lora = { value, labels: labelsOf(line.slice(brace, line.lastIndexOf("}") + 1)) }
        break
    }
  }
  return {
    running,
    waiting,
    kvCacheUsage: kv,
    lora: lora === null ? null : {
      running: list(lora.labels.running_lora_adapters),
      waiting: list(lora.labels.waiting_lora_adapters),
      maxLora: lora.labels.max_lora === undefined ? null : Number(lora.labels.max_lora)
    }
  }
}
