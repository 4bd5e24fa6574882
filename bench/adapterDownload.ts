// `npm run bench` part (issue 21): a whole `dart train` whose trainer sends a 1 GiB adapter, against an in-process
// gRPC stand-in that makes the file as it sends it. Prints the download's throughput and the peak RSS of the `dart`
// process, which must stay under 200 MB: the adapter streams to disk, it is never held.
// Separately runnable: `node bench/adapterDownload.ts` (BENCH_ADAPTER_BYTES changes the size).
import { spawn } from "node:child_process"
import { createHash } from "node:crypto"
import { createReadStream, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { studentMessages } from "../src/teacher/Prompts.ts"
import { adapterFiles, generatedFile, startHostileTrainer } from "../test/support/HostileTrainer.ts"

const bytes = Number(process.env.BENCH_ADAPTER_BYTES ?? 1024 ** 3)
const scratch = mkdtempSync(path.join(tmpdir(), "dart-bench-download-"))
process.on("exit", () => rmSync(scratch, { recursive: true, force: true }))
const runs = path.join(scratch, "runs")

/** Runs `dart` without blocking this process (the stand-in trainer answers from it); `timed` adds /usr/bin/time's peak RSS. */
const dart = (args: ReadonlyArray<string>, timed = false) =>
  new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const argv = [process.execPath, "bin/dart.js", ...args]
    const child = timed ? spawn("/usr/bin/time", ["-f", "%M", ...argv]) : spawn(argv[0]!, argv.slice(1))
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (c) => (stdout += c))
    child.stderr.on("data", (c) => (stderr += c))
    child.on("exit", (code) => resolve({ code, stdout, stderr }))
  })

const init = await dart(["init", "--exp-id", "bd", "--override", `run.runs_dir=${runs}`, "--override", `datasets.benchmarks=["D1"]`, "--override", "datasets.limits.train=16"])
if (init.code !== 0) throw new Error(init.stderr)
const items = readFileSync(path.join(runs, "bd/datasets/train.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l) as { id: string; question: string; gold_label: string })
mkdirSync(path.join(runs, "bd/teacher_outputs/distill"), { recursive: true })
writeFileSync(path.join(runs, "bd/teacher_outputs/distill/outputs.jsonl"), items.map((it) => JSON.stringify({
  key: it.id, accepted: true, messages: [...studentMessages(it.question), { role: "assistant", content: `The facts differ.\nConclusion: ${it.gold_label}` }]
})).join("\n") + "\n")

const model = generatedFile("adapter_model.safetensors", bytes)
const sent = [adapterFiles()[0]!, model]
const trainer = await startHostileTrainer(() => ({ declared: sent.map((f) => f.header), sent }))
try {
  const t0 = performance.now()
  const r = await dart(["train", "--stage", "dart", "--adapter-name", "BIG", "--exp-id", "bd", "--override", `run.runs_dir=${runs}`,
    "--override", `compute.trainer.endpoint=${trainer.address}`], true)
  const seconds = (performance.now() - t0) / 1000
  if (r.code !== 0) throw new Error(r.stderr)
  const kib = Number(r.stderr.trim().split("\n").at(-1))
  const d = trainer.downloads[0]!
  const downloadS = ((d.endedAt ?? Date.now()) - d.startedAt) / 1000
  // The file on disk is what the trainer meant to send (read back in a stream, never whole).
  const file = path.join(runs, "bd/adapters/BIG/final/adapter_model.safetensors")
  const hash = createHash("sha256")
  for await (const c of createReadStream(file)) hash.update(c as Buffer)
  const intact = hash.digest("hex") === model.header.sha256
  console.log(`adapter download: ${(bytes / 1024 ** 3).toFixed(2)} GiB adapter through a whole \`dart train\` (loopback gRPC stand-in): ` +
    `download ${downloadS.toFixed(1)} s (${Math.round(bytes / 1024 ** 2 / downloadS)} MiB/s), whole run ${seconds.toFixed(1)} s, ` +
    `peak RSS ${Math.round(kib / 1024)} MiB (target < 200 MB), sha256 ${intact ? "intact" : "MISMATCH"}`)
} finally {
  await trainer.stop()
}
