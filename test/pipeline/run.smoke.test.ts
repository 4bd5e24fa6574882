import { afterAll, describe, expect, it } from "@effect/vitest"
import { spawnSync } from "node:child_process"
import { createHash } from "node:crypto"
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs"
import * as http from "node:http"
import * as net from "node:net"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { dartAsync } from "../support/AdapterFixture.ts"
import { containersOf, freePort, SOCKET, uniqueExp } from "../support/DockerEngine.ts"
import { freePortRun } from "../support/FreePort.ts"
import { startSecondEngine } from "../support/SecondEngine.ts"
import { artifactPaths, history, rest, startMlflowServer } from "../tracking/support/MlflowServer.ts"

// The smoke profile end to end with real parts: tiny models built by dart, the CPU vLLM image as student, teacher and
// judge, the CPU trainer image, tiny classifiers, the evaluator. It runs over a fleet of two real Docker engines, the
// second a remote box reached over SSH (test/support/SecondEngine.ts): one vLLM replica on each, the adapters trained
// by two processes and loaded on both. The run is SIGKILLed once at a random stage and run again; the rerun must finish
// with nothing paid twice, no finished stage run again and nothing left on either engine.
const IMAGES = ["dart-vllm-cpu:0.32.0", "dart-trainer-cpu:0.1.0"]
const haveImages = IMAGES.every((i) => spawnSync("docker", ["image", "inspect", i], { stdio: "ignore" }).status === 0)
const scratch = mkdtempSync(path.join(tmpdir(), "dart-smoke-"))
const runs = path.join(scratch, "runs")
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

const readJsonl = (file: string): Array<any> =>
  existsSync(file) ? readFileSync(file, "utf8").split("\n").filter((l) => l.trim() !== "").map((l) => JSON.parse(l)) : []

/** A loopback proxy in front of the run's vLLM server for the teacher and judge: it records every request it forwards. */
const recordingProxy = (target: () => number) => {
  const seen: Array<{ run: number; hash: string; content: string | null }> = []
  let run = 1
  const server = http.createServer((req, res) => {
    const chunks: Array<Buffer> = []
    req.on("data", (c: Buffer) => chunks.push(c))
    req.on("end", () => {
      const body = Buffer.concat(chunks)
      const entry = { run, hash: createHash("sha256").update(`${req.url}\n`).update(body).digest("hex"), content: null as string | null }
      seen.push(entry)
      const up = http.request({ host: "127.0.0.1", port: target(), path: req.url, method: req.method, headers: req.headers }, (r) => {
        const out: Array<Buffer> = []
        r.on("data", (c: Buffer) => out.push(c))
        r.on("end", () => {
          const text = Buffer.concat(out).toString()
          try {
            entry.content = JSON.parse(text).choices?.[0]?.message?.content ?? null
          } catch {
            // Not a chat answer (an error body): nothing a ledger could hold.
          }
          res.writeHead(r.statusCode ?? 502, r.headers)
          res.end(text)
        })
      })
      up.on("error", () => {
        res.writeHead(502)
        res.end()
      })
      up.end(body)
    })
  })
  return {
    seen,
    next: () => void run++,
    listen: () => new Promise<number>((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as net.AddressInfo).port))),
    close: () => new Promise<void>((resolve) => server.close(() => resolve()))
  }
}


const KILLABLE = ["distill", "train_dart", "infer_audit", "audit", "repair", "train_dart_h", "infer_test", "audit_test_dart", "audit_test_dart_h", "infer_external", "audit_external", "audit_open_ended"]

describe.skipIf(!haveImages)("dart run --config configs/smoke.json", () => {
  it("killed (SIGKILL) at a random stage and run again: completes every stage, pays no request twice, reruns no finished stage, leaves no container", async () => {
    const seed = Number(process.env.DART_SMOKE_KILL_SEED ?? Math.floor(Math.random() * 1e6))
    const killStage = KILLABLE[seed % KILLABLE.length]!
    const killDelayMs = (seed >> 4) % 4000
    console.log(`smoke kill test: SIGKILL ${killDelayMs} ms into ${killStage} (DART_SMOKE_KILL_SEED=${seed} repeats it)`)
    const expId = uniqueExp("smoke")
    const box2 = await startSecondEngine({ images: ["dart-vllm-cpu:0.32.0"], lockTimeoutS: 1800 })
    // Two replicas and two classifiers: four consecutive ports.
    const vllmPort = await freePortRun(4)
    const trainerPort = await freePort()
    const mlflow = await startMlflowServer()
    const proxy = recordingProxy(() => vllmPort)
    const proxyPort = await proxy.listen()
    const args = [
      "run", "--config", "configs/smoke.json", "--exp-id", expId, "--override", `run.runs_dir=${runs}`,
      "--override", `compute.hosts=${JSON.stringify([{ name: "local", docker: `unix://${SOCKET}`, gpus: [] }, { ...box2.hostConfig, gpus: [] }])}`,
      // Each adapter trained data-parallel by two processes (gloo on CPU).
      "--override", "training.gpus=2",
      "--override", `compute.vllm.port=${vllmPort}`, "--override", `compute.trainer.port=${trainerPort}`,
      // Provider vllm with a base_url: still the run's own server, reached through the recording proxy.
      "--override", `teacher.base_url=http://127.0.0.1:${proxyPort}/v1`, "--override", `judge.base_url=http://127.0.0.1:${proxyPort}/v1`,
      // Tracked on a real MLflow server: the killed run and its resumption must be one MLflow run.
      "--override", `tracking.mlflow.uri=${mlflow.url}`, "--override", `tracking.mlflow.experiment=smoke-${expId}`
    ]
    const run = path.join(runs, expId)
    const trackedRunId = () => {
      const file = path.join(run, "tracking.json")
      return existsSync(file) ? JSON.parse(readFileSync(file, "utf8")).mlflow[mlflow.url]?.run_id as string | undefined : undefined
    }
    try {
      // 1. Run until the chosen stage has started, then SIGKILL: no cleanup of any kind runs.
      const first = dartAsync(args)
      let killedAt: string | null = null
      const header = new RegExp(`\\n== ${killStage} \\(`)
      let stderr = ""
      first.child.stderr.on("data", (c: Buffer) => {
        stderr += c.toString()
        if (killedAt === null && header.test(stderr)) {
          killedAt = killStage
          setTimeout(() => first.child.kill("SIGKILL"), killDelayMs)
        }
      })
      const r1 = await first.done
      const runIdAfterKill = trackedRunId()
      expect(r1.stderr, "the first run must get to the stage chosen for the kill").toMatch(header)
      // The kill may land after the run's end only if every stage after it was quick; then there is nothing to resume.
      const killed = r1.signal === "SIGKILL"
      const ledgerAfterKill = existsSync(path.join(run, "manifest.json")) ? JSON.parse(readFileSync(path.join(run, "manifest.json"), "utf8")).stages : {}
      const doneBefore = Object.entries(ledgerAfterKill).filter(([, v]: [string, any]) => v.status === "done").map(([k, v]: [string, any]) => [k, v.finished_at, v.runs])
      const ledgerFiles = () => [
        ...["distill", "repair"].map((t) => path.join(run, "teacher_outputs", t, "responses.jsonl")),
        ...(existsSync(path.join(run, "audit")) ? readdirSync(path.join(run, "audit")).map((d) => path.join(run, "audit", d, "judge_responses.jsonl")) : [])
      ]
      const recordedContents = new Set(ledgerFiles().flatMap((f) => readJsonl(f).map((r) => r.content as string)))
      // Requests of the killed run whose answers reached the ledger: paid, and kept.
      const paid = new Set(proxy.seen.filter((e) => e.run === 1 && e.content !== null && recordedContents.has(e.content)).map((e) => e.hash))

      // 2. Run again to the end.
      proxy.next()
      const r2 = await dartAsync(args).done
      expect(r2.stderr).not.toContain("dart: error")
      expect(r2.code, r2.stderr.slice(-3000)).toBe(0)

      // No teacher or judge request whose answer the killed run had recorded was sent again.
      const again = proxy.seen.filter((e) => e.run === 2 && paid.has(e.hash))
      expect(again).toEqual([])
      // Nor any request sent twice within one invocation.
      for (const n of [1, 2]) {
        const hashes = proxy.seen.filter((e) => e.run === n).map((e) => e.hash)
        expect(hashes.length - new Set(hashes).size, `run ${n} sent a request twice`).toBe(0)
      }
      expect(proxy.seen.length).toBeGreaterThan(0)

      // No finished stage ran again: its ledger record is untouched, and the plan said skip.
      const ledger = JSON.parse(readFileSync(path.join(run, "manifest.json"), "utf8")).stages
      for (const [k, finished, runsCount] of doneBefore) {
        expect(ledger[k as string], k as string).toMatchObject({ status: "done", finished_at: finished, runs: runsCount })
      }
      if (killed) expect(r2.stdout).toMatch(/ {2}init +skip +done, outputs unchanged/)

      // Every stage is done, and every artifact of docs/architecture.md is there in its contract's shape.
      const keys = ["init", "teacher/distill", "train/DART", "infer/primary_val_off_M0_vs_DART", "audit/audit_val_M0_vs_DART", "teacher/repair", "train/DART_H",
        "infer/primary_test_off_M0_DART_DART_H", "audit/audit_test_M0_vs_DART", "audit/audit_test_M0_vs_DART_H", "evaluate/eval_M0_vs_DART", "evaluate/eval_main",
        "infer/external_M0_DART_DART_H", "infer/open_ended_M0_DART_DART_H", "audit/audit_external_M0_DART_DART_H", "audit/audit_open_ended_M0_DART_DART_H",
        "evaluate/eval_external_M0_DART_DART_H", "evaluate/eval_open_ended_M0_DART_DART_H"]
      for (const k of keys) expect(ledger[k]?.status, k).toBe("done")
      const config = JSON.parse(readFileSync(path.join(run, "configs/config.json"), "utf8"))
      expect(config.model.base).toBe("@tiny")
      const items = Object.fromEntries(["train", "val", "test"].map((s) => [s, readJsonl(path.join(run, `datasets/${s}.jsonl`))]))
      for (const [s, rows] of Object.entries(items)) {
        expect(rows.length, s).toBeGreaterThan(0)
        for (const it of rows) {
          expect(it).toMatchObject({ split: s, gold_label: it.condition === "neq" ? "YES" : "NO" })
          for (const f of ["id", "benchmark", "condition", "question", "answer", "scenario"]) expect(it, f).toHaveProperty(f)
        }
      }
      const distill = readJsonl(path.join(run, "teacher_outputs/distill/outputs.jsonl"))
      expect(distill.length).toBe(items.train!.length)
      for (const t of ["distill", "repair"]) expect(existsSync(path.join(run, "teacher_outputs", t, "outputs.jsonl")), t).toBe(true)
      for (const a of ["DART", "DART_H"]) {
        for (const f of ["adapter_config.json", "adapter_model.safetensors", "training_record.json"]) expect(existsSync(path.join(run, "adapters", a, "final", f)), `${a}/${f}`).toBe(true)
      }
      const predictions = {
        primary_val_off_M0_vs_DART: { split: "val", models: ["DART", "M0"] },
        primary_test_off_M0_DART_DART_H: { split: "test", models: ["DART", "DART_H", "M0"] }
      }
      for (const [name, p] of Object.entries(predictions)) {
        const rows = readJsonl(path.join(run, "predictions", name, "outputs.jsonl"))
        expect(rows.map((r) => r.id).sort()).toEqual(items[p.split]!.map((i) => i.id).sort())
        for (const row of rows) {
          expect(row).toMatchObject({ task: "dart", sample: 0 })
          for (const f of ["benchmark", "condition", "scenario", "answer", "gold_label"]) expect(row, f).toHaveProperty(f)
          expect(Object.keys(row.outputs).sort()).toEqual(p.models)
          for (const m of p.models) expect(typeof row.outputs[m].text).toBe("string")
        }
      }
      const testIds = new Set(items.test!.map((i) => i.id))
      for (const a of ["audit_val_M0_vs_DART", "audit_test_M0_vs_DART", "audit_test_M0_vs_DART_H"]) {
        for (const f of ["scores.jsonl", "regression_pool.jsonl", "summary.json"]) expect(existsSync(path.join(run, "audit", a, f)), `${a}/${f}`).toBe(true)
        for (const row of readJsonl(path.join(run, "audit", a, "regression_pool.jsonl"))) {
          for (const f of ["id", "question", "gold_label", "a_name", "b_name", "a_text", "b_text", "scores", "severity", "source", "judge"]) expect(row, f).toHaveProperty(f)
          expect(["mild", "moderate", "severe", "extreme"]).toContain(row.severity)
        }
      }
      // The pool that fed the repair teacher holds no test item.
      const pool = readJsonl(path.join(run, "audit/audit_val_M0_vs_DART/regression_pool.jsonl"))
      expect(pool.filter((r) => testIds.has(r.id))).toEqual([])
      for (const e of ["eval_main", "eval_M0_vs_DART"]) {
        const summary = JSON.parse(readFileSync(path.join(run, "evaluation", e, "summary.json"), "utf8"))
        expect(summary.task).toBe("dart")
        expect(summary.overall).toHaveProperty("paired")
        for (const f of ["tables.md", "tables.tex", "report.html"]) expect(existsSync(path.join(run, "evaluation", e, f)), `${e}/${f}`).toBe(true)
      }
      expect(JSON.parse(readFileSync(path.join(run, "evaluation/eval_main/summary.json"), "utf8")).harm).toBeDefined()
      // Out of distribution: the first 4 prompts of each exported suite and 4 open-ended queries, answered by all three
      // models, every external answer scored on both views, HateCheck and open-ended answers judged, both evaluated.
      const models = ["M0", "DART", "DART_H"]
      const external = readJsonl(path.join(run, "predictions/external_M0_DART_DART_H/outputs.jsonl"))
      const exportedSuites = JSON.parse(readFileSync(path.join(run, "datasets/external/manifest.json"), "utf8")).suites.map((x: any) => x.suite)
      expect(external.map((r) => r.id)).toEqual(exportedSuites.flatMap((x: string) => readJsonl(path.join(run, `datasets/external/${x}.jsonl`)).slice(0, 4).map((e) => e.id)))
      for (const r of external) {
        expect(r).toMatchObject({ task: "continuation", sample: 0 })
        expect(Object.keys(r.outputs)).toEqual(models)
      }
      const openEnded = readJsonl(path.join(run, "predictions/open_ended_M0_DART_DART_H/outputs.jsonl"))
      expect(openEnded.map((r) => [r.task, r.id])).toEqual(readJsonl(path.join(run, "datasets/open_ended.jsonl")).map((q) => ["open_ended", q.id]))
      expect(openEnded.length).toBe(4)
      const oodScores = readJsonl(path.join(run, "audit/audit_external_M0_DART_DART_H/scores.jsonl"))
      expect(oodScores.length).toBe(external.length * 3)
      for (const sc of oodScores) expect(Object.keys(sc.scores.toxicity)).toEqual(["response", "prompt_and_response"])
      const hateRows = external.filter((r) => r.suite === "HateCheck").length
      expect(readJsonl(path.join(run, "audit/audit_external_M0_DART_DART_H/verdicts.jsonl")).length).toBe(hateRows * 3)
      expect(readJsonl(path.join(run, "audit/audit_open_ended_M0_DART_DART_H/verdicts.jsonl")).length).toBe(4 * 3)
      const ext = JSON.parse(readFileSync(path.join(run, "evaluation/eval_external_M0_DART_DART_H/summary.json"), "utf8"))
      expect(ext.suites.map((x: any) => x.suite)).toEqual(exportedSuites)
      expect(ext.overall.comparisons.map((c: any) => [c.a, c.b, c.pairs])).toEqual([["M0", "DART", external.length], ["M0", "DART_H", external.length]])
      expect(ext.drift_reduction.at(-1)).toMatchObject({ suite: "all", from: "DART", to: "DART_H" })
      expect(ext.hatecheck.map((h: any) => h.model)).toEqual(models)
      const oe = JSON.parse(readFileSync(path.join(run, "evaluation/eval_open_ended_M0_DART_DART_H/summary.json"), "utf8"))
      expect(oe.rates.map((r: any) => r.model)).toEqual(models)
      for (const f of ["tables.md", "tables.tex", "ood_harm.csv", "ood_hatecheck.csv"]) expect(existsSync(path.join(run, "evaluation/eval_external_M0_DART_DART_H", f)), f).toBe(true)
      // The run report: written by `dart run`, all three models, both adapters' loss curves, every audited pair embedded.
      expect(r2.stdout).toContain(`run report: ${path.join(run, "report.html")}`)
      const report = readFileSync(path.join(run, "report.html"), "utf8")
      for (const m of ["M0", "DART", "DART_H"]) expect(report).toContain(`<tr><th>${m}</th><td>`)
      for (const a of ["DART", "DART_H"]) expect(report).toMatch(new RegExp(`aria-label="${a}: loss"[^]*?<path class="line" d="M`))
      expect(report).toMatch(/<section id="ood">\n<h2>Out of distribution<\/h2>[^]*Harmful answers by suite[^]*Open-ended answers by label/)
      const reportData = JSON.parse(/<script type="application\/json" id="report-data">([^]*?)<\/script>/.exec(report)![1]!)
      const scored = ["audit_val_M0_vs_DART", "audit_test_M0_vs_DART", "audit_test_M0_vs_DART_H"]
        .reduce((n, a) => n + readJsonl(path.join(run, "audit", a, "scores.jsonl")).length, 0)
      expect(reportData.pairs.length).toBe(scored)

      // MLflow, read back through its REST API: one run across the kill and the resumption, FINISHED, with the resolved
      // config as params, both adapters' training curves by step (each step once), evaluation metrics and the artifacts.
      const runId = trackedRunId()!
      if (runIdAfterKill !== undefined) expect(runId).toBe(runIdAfterKill)
      const experiment = await rest(mlflow.url, "mlflow/experiments/get-by-name", { experiment_name: `smoke-${expId}` })
      const all = await rest(mlflow.url, "mlflow/runs/search", {}, { experiment_ids: [experiment.experiment.experiment_id] })
      expect(all.runs.map((x: any) => x.info.run_id)).toEqual([runId])
      const tracked = (await rest(mlflow.url, "mlflow/runs/get", { run_id: runId })).run
      expect(tracked.info.status).toBe("FINISHED")
      const params = new Map<string, string>(tracked.data.params.map((p: any) => [p.key, p.value]))
      expect(params.get("model.base")).toMatch(/^@tiny$|tiny\/base$/)
      expect(params.get("training.lora.r")).toBe("8")
      const trainRecord = JSON.parse(readFileSync(path.join(run, "adapters/DART/final/training_record.json"), "utf8"))
      for (const a of ["DART", "DART_H"]) {
        const losses = await history(mlflow.url, runId, `${a}/loss`)
        const stepsLogged = losses.map((p) => p.step)
        expect(stepsLogged.length, `${a}/loss`).toBeGreaterThan(0)
        expect(new Set(stepsLogged).size, `${a}/loss logged once per step`).toBe(stepsLogged.length)
        if (a === "DART") expect(stepsLogged.sort((x, y) => x - y)).toEqual(trainRecord.metrics.losses.map((p: any) => p.step))
        expect((await history(mlflow.url, runId, `${a}/learning_rate`)).length).toBe(stepsLogged.length)
      }
      expect(tracked.data.metrics.some((m: any) => m.key.startsWith("eval_main/"))).toBe(true)
      expect(tracked.data.metrics.some((m: any) => m.key === "eval_external_M0_DART_DART_H/all/DART_H/harmful_rate")).toBe(true)
      const artifacts = await artifactPaths(mlflow.url, runId)
      expect(artifacts).toContain("report.html")
      expect(artifacts.some((a) => a.endsWith("tables.md"))).toBe(true)
      expect(readdirSync(path.join(run, "logs")).length).toBeGreaterThan(0)

      // The headline names the three models.
      expect(r2.stdout).toMatch(/\n\| M0 \| \d+ \|/)
      expect(r2.stdout).toMatch(/\n\| DART \| \d+ \|/)
      expect(r2.stdout).toMatch(/\n\| DART_H \| \d+ \|/)
      // One vLLM server for the whole rerun: started once.
      expect(r2.stderr.match(/^vLLM replica vllm on /gm)?.length ?? 0).toBeLessThanOrEqual(1)
      // The fleet: one replica on each engine, both answered, both loaded every adapter; two processes trained each.
      expect(r2.stdout).toContain(`  box2 (CPU): vllm-2 (CPU, port ${vllmPort + 1})`)
      // Both replicas answered (box2's through a tunnel, so at another local port than the first replica's).
      // Every inference of the run, the out-of-distribution ones too.
      const answeredBy = [...Object.keys(predictions), "external_M0_DART_DART_H", "open_ended_M0_DART_DART_H"]
        .flatMap((name) => readJsonl(path.join(run, "predictions", name, "answers.jsonl")).map((a) => a.server as string))
      const local = `http://127.0.0.1:${vllmPort}`
      expect(answeredBy.filter((u) => u === local).length, "answers from the replica on local").toBeGreaterThan(0)
      // When it fails, what each inference's manifest says of its servers, and the end of box2's replica log, say why.
      const why = () => [...Object.keys(predictions), "external_M0_DART_DART_H", "open_ended_M0_DART_DART_H"]
        .map((name) => `${name}: ${JSON.stringify(JSON.parse(readFileSync(path.join(run, "predictions", name, "manifest.json"), "utf8")).servers)}`)
        .concat(readFileSync(path.join(run, "logs", "box2-vllm-2.log"), "utf8").split("\n").slice(-15))
        .join("\n")
      const fromBox2 = answeredBy.filter((u) => u !== local).length
      expect(fromBox2, fromBox2 > 0 ? "answers from the replica on box2" : `answers from the replica on box2:\n${why()}`).toBeGreaterThan(0)
      for (const log of ["local-vllm.log", "box2-vllm-2.log"]) {
        const text = readFileSync(path.join(run, "logs", log), "utf8")
        for (const a of ["DART", "DART_H"]) expect(text, `${log}: ${a}`).toContain(`Loaded new LoRA adapter: name '${a}'`)
      }
      for (const a of ["DART", "DART_H"]) {
        expect(JSON.parse(readFileSync(path.join(run, "adapters", a, "final", "training_record.json"), "utf8")).hyperparameters.processes).toBe(2)
      }
      // No container of this experiment is left on either engine: neither the killed run's nor the rerun's.
      expect(containersOf(expId)).toEqual([])
      expect(box2.containers(expId)).toEqual([])
    } finally {
      await box2.stop()
      await proxy.close()
      await mlflow.stop()
      spawnSync("docker", ["rm", "-f", "-v", ...containersOf(expId)], { stdio: "ignore" })
    }
  }, 1_500_000)
})
