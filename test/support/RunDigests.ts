import { createHash } from "node:crypto"
import { readdirSync, readFileSync, statSync } from "node:fs"
import { cpus } from "node:os"
import * as path from "node:path"

/**
 * Digests of a run folder's artifacts, comparable across two runs of the same profile and seed: a refactor must leave
 * every artifact as it was. What legitimately differs between two runs is taken out first, and nothing else:
 * - the folder the run lives in (absolute paths in records);
 * - wall-clock facts: timestamps, durations, rates, process ids, host names;
 * - files that are not artifacts: locks, logs, the tiny models dart builds as inputs.
 * - what a change under test adds on purpose, named in `INTENDED` (and the hashes and sizes of files that changed by
 *   it: a recorded sha256 of a run file stands for that file, which is compared itself).
 * JSON and JSONL are compared as data (rows sorted, since concurrent appends land in completion order); every other
 * file byte for byte.
 */

/** Fields added or reworded on purpose since the digests were made: file pattern → keys left out of the comparison. */
export const INTENDED: ReadonlyArray<readonly [RegExp, ReadonlyArray<string>, string]> = [
  [/^predictions\/[^/]+\/outputs\.jsonl$/, ["question"], "prediction rows carry their question (architecture issue: contracts)"],
  [/^evaluation\/[^/]+\/summary\.json$/, ["meta.parser"], "the parser's description cites docs/protocol.md, now in the repository"],
  [/^configs\/config\.json$/, [
    "teacher.max_reply_bytes", "teacher.max_retry_after_s", "judge.max_reply_bytes", "judge.max_retry_after_s",
    "audit.classify_max_reply_bytes", "compute.hf_cache", "model.system_role", "tracking",
    "compute.backend", "compute.vllm.tensor_parallel_size", "compute.vllm.replicas", "training.gpus", "datasets.external", "compute.slurm",
    "compute.kubernetes", "ood"
  ], "config keys for hostile peers (issue 21), the hosts' HF cache (issue 27), the chat layout (issue 24), tracking (issue 26), the fleet (issue 22), the external suites (issue 25), the Slurm backend (issue 23), the Kubernetes backend (issue 28) and out-of-distribution measures (issue 25)"],
  [/^manifest\.json$/, ["chat_layout"], "the base model's chat layout, decided before the first stage (issue 24)"]
]

/** Run files added on purpose since the digests were made: their presence is not a difference. */
export const INTENDED_FILES: ReadonlyArray<readonly [RegExp, string]> = [
  [/^chat_layout\.json$/, "the base model's chat layout (issue 24)"],
  [/^report\.html$/, "one report for the whole run (issue 26)"],
  [/^datasets\/external\/[^/]+\.(jsonl|json)$/, "the external harm suites' exports (issue 25)"],
  [/^datasets\/open_ended\.jsonl$/, "the open-ended query set's export (issue 25)"]
]

/**
 * Artifacts whose bytes follow the CPU's floating point: LoRA training on CPU and the classifiers' logits differ in
 * their last digits between CPU models (the same commit, profile and seed on two machines gave different adapters
 * and scores, and so different pools, repairs and DART_H), while serial runs on one machine are identical. They are
 * compared only against digests made on a machine with the same fingerprint; elsewhere only their presence counts.
 */
export const MACHINE_DEPENDENT: ReadonlyArray<RegExp> = [
  /^adapters\/[^/]+\/final\/(adapter_model\.safetensors|training_record\.json)$/,
  /^audit\/[^/]+\/(scores\.jsonl|regression_pool\.jsonl|summary\.json)$/,
  /^teacher_outputs\/repair\/outputs\.jsonl$/
]

/** What decides floating-point results on CPU here: the processor model, its instruction-set flags and the core count. */
export const machineFingerprint = (): string => {
  const info = (() => {
    try {
      return readFileSync("/proc/cpuinfo", "utf8")
    } catch {
      return ""
    }
  })()
  const first = info.split("\n\n")[0] ?? ""
  const field = (name: string) => new RegExp(`^${name}\\s*:\\s*(.*)$`, "m").exec(first)?.[1]?.trim() ?? ""
  return sha(JSON.stringify([field("model name"), field("flags").split(/\s+/).sort(), cpus().length])).slice(0, 16)
}

const SKIP_DIRS = new Set([".locks", "logs", "models"])

/** Keys whose values are wall-clock facts. */
const VOLATILE = new Set([
  "created_at", "started_at", "finished_at", "at", "seconds", "timings", "pid", "host", "git_commit", "node_version", "tool_version",
  "tokens_per_second", "eta_seconds", "elapsed_s", "wall_s", "duration_s", "runtime_s", "train_runtime", "train_samples_per_second",
  "train_steps_per_second", "samples_per_second", "steps_per_second", "concurrency",
  // Hashes over contents that hold the run folder's path (the resolved config; an adapter's config names its base model by path), and
  // names made from them: the files themselves are compared.
  "inputs_hash", "config_hash", "adapter_sha256", "job_id"
])

const files = (dir: string, prefix = ""): Array<string> =>
  readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const rel = prefix === "" ? e.name : `${prefix}/${e.name}`
    if (e.isDirectory()) return prefix === "" && SKIP_DIRS.has(e.name) ? [] : files(path.join(dir, e.name), rel)
    return e.isFile() && !e.name.includes(".tmp") ? [rel] : []
  })

/** A ledger's record of a file added on purpose (INTENDED_FILES): like the file itself, its presence is no difference. */
const intendedRecord = (v: unknown) => {
  const r = v as { path?: unknown; sha256?: unknown } | null
  return r !== null && typeof r === "object" && typeof r.path === "string" && typeof r.sha256 === "string" &&
    INTENDED_FILES.some(([pattern]) => pattern.test(r.path as string))
}

const strip = (value: unknown, drop: ReadonlyArray<string>, at = ""): unknown => {
  if (Array.isArray(value)) return value.filter((v) => !intendedRecord(v)).map((v) => strip(v, drop, at))
  if (value !== null && typeof value === "object") {
    const record = value as Record<string, unknown>
    // A run file's record (the ledger's outputs): its path stands for it.
    const fileRecord = typeof record.path === "string" && typeof record.sha256 === "string"
    const out: Record<string, unknown> = {}
    for (const k of Object.keys(record).sort()) {
      const key = at === "" ? k : `${at}.${k}`
      if (VOLATILE.has(k) || drop.includes(key) || (fileRecord && (k === "sha256" || k === "bytes" || k === "size"))) continue
      out[k] = strip(record[k], drop, key)
    }
    return out
  }
  return value
}

const sha = (text: string | Buffer) => createHash("sha256").update(text).digest("hex")

/**
 * A run over several vLLM replicas seen as over one server (`url`): which replica answered a request is load balancing,
 * not a result (one request at a time, every replica answers it alike). Rows' and canaries' `server` become `url`; a
 * prediction manifest's `servers` become one entry that answered them all.
 */
const oneServer = (value: unknown, url: string): unknown => {
  if (Array.isArray(value)) return value.map((v) => oneServer(v, url))
  if (value === null || typeof value !== "object") return value
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    if (k === "server" && typeof v === "string") out[k] = url
    else if (k === "servers" && Array.isArray(v) && v.length > 0) {
      const all = v as Array<Record<string, unknown>>
      out[k] = [{ ...all[0], url, answered: all.reduce((n, x) => n + (typeof x.answered === "number" ? x.answered : 0), 0) }]
    } else out[k] = oneServer(v, url)
  }
  return out
}

/**
 * `{ relative path: sha256 of its canonical form }` for every artifact of the run at `runDir`; `runsDir` is the runs
 * folder the run was made in, when it has been moved since; `oneServerUrl`: compare a run over replicas with a
 * one-server reference (see oneServer).
 */
export const runDigests = (runDir: string, runsDir = path.dirname(path.resolve(runDir)), oneServerUrl?: string): Record<string, string> => {
  const out: Record<string, string> = {}
  const root = path.resolve(runDir)
  const all = files(root).sort()
  // A recorded hash of a run file is replaced by the file's name.
  const named = new Map(all.map((rel) => [sha(readFileSync(path.join(root, rel))), `<sha256 of ${rel}>`] as const))
  const unhash = (text: string) => text.replace(/\b[0-9a-f]{64}\b/g, (h) => named.get(h) ?? h)
  for (const rel of all) {
    const file = path.join(root, rel)
    if (statSync(file).size === 0) {
      out[rel] = sha("")
      continue
    }
    const raw = readFileSync(file)
    if (!/\.(json|jsonl|md|tex|csv|html|txt)$/.test(rel)) {
      out[rel] = sha(raw)
      continue
    }
    const text = unhash(raw.toString("utf8").replaceAll(runsDir, "<RUNS>"))
    const drop = INTENDED.filter(([pattern]) => pattern.test(rel)).flatMap(([, keys]) => keys)
    const served = (v: unknown) => (oneServerUrl !== undefined && rel.startsWith("predictions/") ? oneServer(v, oneServerUrl) : v)
    if (rel.endsWith(".jsonl")) {
      const rows = text.split("\n").filter((l) => l.trim() !== "").map((l) => JSON.stringify(strip(served(JSON.parse(l)), drop))).sort()
      out[rel] = sha(rows.join("\n"))
    } else if (rel.endsWith(".json")) {
      out[rel] = sha(JSON.stringify(strip(served(JSON.parse(text)), drop)))
    } else {
      out[rel] = sha(text)
    }
  }
  return out
}

/** The paths whose digests differ between `expected` and `actual`, and those only one of them has. */
export const compareDigests = (expected: Record<string, string>, actual: Record<string, string>, sameMachine = true) => ({
  changed: Object.keys(expected).filter((k) => k in actual && actual[k] !== expected[k] && (sameMachine || !MACHINE_DEPENDENT.some((p) => p.test(k)))),
  missing: Object.keys(expected).filter((k) => !(k in actual)),
  extra: Object.keys(actual).filter((k) => !(k in expected) && !INTENDED_FILES.some(([p]) => p.test(k)))
})
