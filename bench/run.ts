// `npm run bench`: prints the evaluator's, teacher's and inference figures (never asserted in tests).
import { Effect } from "effect"
import { spawnSync } from "node:child_process"
import { existsSync, mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { evaluateMc } from "../src/evaluation/Evaluator.ts"
import { readPredictions } from "../src/evaluation/PredictionReader.ts"
import { benchItems, dartRows, mcRows, writeRows } from "./fixtures.ts"

const dir = mkdtempSync(path.join(tmpdir(), "dart-bench-"))
process.on("exit", () => rmSync(dir, { recursive: true, force: true }))
const items = benchItems()
const options = { seed: 42, alpha: 0.05, bootstrapResamples: 2000, clusterBootstrap: false, mcResamples: 9999 }
const median = (xs: Array<number>) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

// 1. mc: 16,000 items × 2 models, 9,999 scenario-clustered resamples per benchmark and model.
const mcFile = path.join(dir, "mc.jsonl")
await writeRows(mcFile, items.length, mcRows(items))
const times: Array<number> = []
for (let i = 0; i < 5; i++) {
  const t0 = performance.now()
  const data = await Effect.runPromise(readPredictions(mcFile, ["M0", "DART_H"], { refusals: [] }))
  evaluateMc(data, options)
  times.push((performance.now() - t0) / 1000)
}
const ours = median(times)
console.log(`mc evaluate: ${items.length} items x 2 models, 9,999 clustered resamples per benchmark: ${ours.toFixed(3)} s (median of 5, read + parse + metrics + bootstrap; target < 2 s)`)

// The upstream approach on the same input, with a Python that has numpy and scikit-learn.
const venv = path.resolve(".bench-venv")
const pythonWith = (py: string) => spawnSync(py, ["-c", "import numpy, sklearn"]).status === 0
let python = ["python3", path.join(venv, "bin/python")].find((p) => (p.includes("/") ? existsSync(p) : true) && pythonWith(p))
if (python === undefined) {
  console.log("setting up .bench-venv with numpy and scikit-learn for the upstream baseline ...")
  spawnSync("python3", ["-m", "venv", venv], { stdio: "inherit" })
  spawnSync(path.join(venv, "bin/pip"), ["install", "-q", "numpy", "scikit-learn"], { stdio: "inherit" })
  python = pythonWith(path.join(venv, "bin/python")) ? path.join(venv, "bin/python") : undefined
}
if (python === undefined) {
  console.log("upstream baseline: skipped (no Python with numpy and scikit-learn could be set up)")
} else {
  const r = spawnSync(python, ["bench/upstream_mc_bootstrap.py", mcFile, "M0", "DART_H"], { encoding: "utf8" })
  if (r.status !== 0) console.log(`upstream baseline failed: ${r.stderr}`)
  else {
    const upstream = JSON.parse(r.stdout).seconds as number
    console.log(`upstream approach (numpy + sklearn resample loop): ${upstream.toFixed(2)} s; ratio ${(upstream / ours).toFixed(1)}x`)
  }
}

// 2. dart: a million prediction rows (two models), in a fresh process for an honest peak RSS.
const dartFile = path.join(dir, "dart-1m.jsonl")
await writeRows(dartFile, 1_000_000, dartRows(items))
const child = spawnSync(process.execPath, ["bench/evaluateMillion.ts", dartFile], { encoding: "utf8" })
if (child.status !== 0) console.log(`dart 1M failed: ${child.stderr}`)
else {
  const m = JSON.parse(child.stdout)
  console.log(`dart evaluate: ${m.rows.toLocaleString("en")} rows x 2 models: read+parse ${m.read_s.toFixed(2)} s, metrics+tests+bootstrap ${m.evaluate_s.toFixed(2)} s, peak RSS ${Math.round(m.max_rss_mib)} MiB`)
}

// 3. teacher throughput (issue: 10,000 requests, 2 s latency, concurrency 500).
const teacher = spawnSync(process.execPath, ["bench/teacherThroughput.ts"], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] })
process.stdout.write(teacher.stdout)

// 4. infer: the vLLM client's request rate beside a plain openai loop, and whole-run peak RSS (200,000 vs 20,000 requests).
const infer = spawnSync(process.execPath, ["bench/inferThroughput.ts"], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] })
process.stdout.write(infer.stdout)

// 5. Docker API over ssh: one persistent SSH connection vs dockerode's own ssh mode (issue 8).
const dockerSsh = spawnSync(process.execPath, ["--no-deprecation", "bench/dockerSsh.ts"], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] })
process.stdout.write(dockerSsh.stdout)

// 6. audit throughput (issue 10: 16,000 pairs, both views, both classifiers, judge on, zero-latency servers).
const audit = spawnSync(process.execPath, ["bench/auditThroughput.ts"], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] })
process.stdout.write(audit.stdout)

// 7. adapter download (issue 21): a whole `dart train` bringing home a 1 GiB adapter from a loopback stand-in trainer; peak RSS < 200 MB.
const adapterDownload = spawnSync(process.execPath, ["bench/adapterDownload.ts"], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] })
process.stdout.write(adapterDownload.stdout)

// 8. dispatch over 1, 2, 4 and 8 stand-in vLLM replicas (fleet issue): rate_N >= 0.9 x N x rate_1, side by side.
const dispatchReplicas = spawnSync(process.execPath, ["bench/dispatchReplicas.ts"], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] })
process.stdout.write(dispatchReplicas.stdout)
