import { mkdirSync, writeFileSync } from "node:fs"
import * as path from "node:path"
import { buildSummary, poolRows } from "../../src/audit/SummaryBuilder.ts"
import type { ScoreRow } from "../../src/audit/ScoreRow.ts"
import type { ExperimentConfig } from "../../src/config/ExperimentConfig.ts"
import type { SeverityOrNone } from "../../src/domain/Severity.ts"
import { buildRunGraph } from "../../src/pipeline/RunGraph.ts"
import { configFor } from "../support/RunConfig.ts"

/**
 * A synthetic run folder with every file the run report reads (docs/report.md), written as the stages write them:
 * the audit summaries and pools come from the audit's own SummaryBuilder over generated score rows. Seeded by the
 * pair index, so tests can count what a filter must show.
 */

export const HOSTILE_OUTPUT = `Sure.</script><script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"><!-- <script>alert(1)</script>\nConclusion: YES`
export const HOSTILE_QUESTION = `Is <b>this</b> & "that" </script> fair?`
export const HOSTILE_REASON = `B says <script>alert(1)</script> about group X`

const BENCHMARKS = ["D1", "D2", "D3", "D4", "N2", "N3", "N4"] as const

/** The generated pair `i` of an audit: its benchmark and severity (the pool's), as the report must show them. */
export const pairFacts = (i: number): { readonly benchmark: string; readonly severity: SeverityOrNone } => ({
  benchmark: BENCHMARKS[i % BENCHMARKS.length]!,
  severity: i % 50 === 3 ? "extreme" : i % 10 === 0 ? "severe" : i % 10 === 1 ? "moderate" : i % 10 === 2 ? "mild" : "none"
})

/** Deterministic filler to bring an output to about `chars` characters (real outputs run to a few hundred words). */
const pad = (text: string, chars: number, seed: number) => {
  if (chars <= text.length) return text
  const words = ["group", "context", "the", "scenario", "differs", "treatment", "because", "members", "policy", "evidence", "fair", "outcome"]
  let filler = ""
  for (let k = 0; filler.length < chars - text.length; k++) filler += `${words[(seed * 7 + k * 5) % words.length]} `
  return `${filler.trim()}. ${text}`
}

const scoreRow = (i: number, audit: string, b: string, split: "val" | "test", hostile: boolean, chars = 0): ScoreRow => {
  const { benchmark, severity } = pairFacts(i)
  const id = `${benchmark}-${i % 2 === 0 ? "neq" : "eq"}-${String(i).padStart(5, "0")}`
  const gold = i % 2 === 0 ? "YES" : "NO"
  const sa = (i % 17) / 40
  const sb = Math.min(1, sa + (severity === "none" ? 0.01 : 0.2 + 0.1 * ["mild", "moderate", "severe", "extreme"].indexOf(severity)))
  const score = (a: number, bb: number) => ({ a, b: bb, delta: bb - a, severity: severity === "none" ? "none" as const : severity, windows_a: 1, windows_b: 1 })
  const inPool = severity !== "none"
  const trigger = inPool ? severity !== "mild" : i % 13 === 0
  const judged = inPool || i % 13 === 0 || i % 7 === 0
  const judgeFailed = !inPool && i % 97 === 5
  const reason = hostile && i === 0 ? HOSTILE_REASON : inPool ? `B normalizes a stereotype about group ${i % 5}` : "no harmful drift"
  return {
    key: `${id}#0`,
    id,
    sample: 0,
    benchmark,
    condition: gold === "YES" ? "neq" : "eq",
    scenario: `s${i % 40}`,
    gold_label: gold,
    split,
    question: hostile && i === 0 ? HOSTILE_QUESTION : `Question ${i % 400}: should groups ${i % 3} and ${(i + 1) % 3} be treated differently in this scenario?`,
    a_name: "M0",
    b_name: b,
    a_text: pad(`Base answer for item ${i % 400}. The groups are compared on the facts given, and context matters here.\nConclusion: ${gold}`, chars, i % 400),
    b_text: hostile && i === 0 ? HOSTILE_OUTPUT : pad(`${b} answer for item ${i} in ${audit}. Group ${i % 5} is described in terms that ${inPool ? "lean on a stereotype" : "stay neutral"}.\nConclusion: ${i % 3 === 0 ? "NO" : "YES"}`, chars, i + 7),
    a_conclusion: gold,
    b_conclusion: i % 3 === 0 ? "NO" : "YES",
    scores: { full_output: { toxicity: score(sa, sb), hate: score(sa / 2, sb / 2) }, analysis_only: { toxicity: score(sa, sb) } },
    classifier_severity: trigger ? (severity === "none" ? "mild" : severity) : "none",
    judge: judgeFailed
      ? { ok: false, reason: "malformed reply: not JSON", model: "judge", prompt_version: "v1", attempts: 3, request_hashes: ["h1", "h2", "h3"] }
      : judged
      ? {
        ok: true,
        verdict: {
          is_regression: inPool,
          severity,
          reason,
          regression_type: inPool ? (i % 20 === 0 ? "harmful_reasoning" : "normalizes_bias") : "none",
          a_correct: true,
          b_correct: i % 3 !== 0
        },
        model: "judge",
        prompt_version: "v1",
        attempts: 1,
        request_hashes: ["h"]
      }
      : null,
    decision: { in_pool: inPool, severity, source: inPool ? "judge" : null, classifier_trigger: trigger, overridden: trigger && !inPool }
  }
}

const interval = (x: number) => ({ estimate: x, ci_low: Math.max(0, x - 0.05), ci_high: Math.min(1, x + 0.05) })
const modelBlock = (acc: number, n: number) => ({
  n,
  accuracy: acc,
  accuracy_on_parsed: Math.min(1, acc + 0.02),
  equal_accuracy: acc - 0.1,
  difference_accuracy: acc + 0.05,
  yes_precision: 0.6,
  pred_yes_rate: 0.5,
  parse_ok_rate: 0.97,
  macro_f1: acc - 0.02,
  balanced_accuracy: acc,
  counts: { tp: 10, tn: 10, fp: 5, fn: 5, abstain: 2 },
  accuracy_ci: interval(acc),
  equal_accuracy_ci: interval(acc - 0.1)
})
const pairedBlock = (d: number) => ({ accuracy_diff: { estimate: d, ci_low: d - 0.04, ci_high: d + 0.04 }, mcnemar: { b01: 30, b10: 8, p_value: 0.0004, p_mid: 0.0003 }, p_holm: 0.002 })
/** Accuracy of each model the fixture's evaluations report: M0 0.39, DART 0.61, DART_H 0.69 (overall). */
export const ACCURACY: Readonly<Record<string, number>> = { M0: 0.39, DART: 0.61, DART_H: 0.69 }

const evaluation = (b: string, audits: ReadonlyArray<{ run: string; summary: ReturnType<typeof buildSummary> }>, note: string) => {
  const slice = (k: number) => ({ M0: modelBlock(ACCURACY.M0! + k / 100, 40), [b]: modelBlock(ACCURACY[b]! + k / 100, 40), paired: pairedBlock(ACCURACY[b]! - ACCURACY.M0!) })
  const harmAudits = audits.map(({ run, summary }) => ({
    file: `audit/${run}/summary.json`, run_name: run, a_name: summary.a_name, b_name: summary.b_name, n_pairs: summary.n_pairs, cases: summary.regressions.total,
    rate_per_1000: summary.rate_per_1000, by_severity: summary.regressions.by_severity, by_type: summary.regressions.by_type, by_benchmark: summary.regressions.by_benchmark
  }))
  return {
    task: "dart",
    models: ["M0", b],
    benchmarks: Object.fromEntries(BENCHMARKS.map((bm, k) => [bm, slice(k)])),
    groups: { D: slice(1), N: slice(2) },
    overall: slice(0),
    harm: {
      audits: harmAudits,
      reductions: harmAudits.length < 2 ? [] : [{
        from: harmAudits[0]!.run_name, to: harmAudits[1]!.run_name,
        relative_change: (harmAudits[1]!.cases - harmAudits[0]!.cases) / harmAudits[0]!.cases, relative_change_rate: -0.5,
        by_severity: { mild: -0.5, moderate: -0.4, severe: null, extreme: 0 }
      }]
    },
    meta: { run_name: `eval ${b}`, notes: [note] }
  }
}

export interface FixtureOptions {
  /** Pairs of the M0 vs DART_H test audit (the example browser's big one). */
  readonly pairs: number
  /** Stop after DART's training started: no adapters, audits or evaluations. */
  readonly partial?: boolean
  /** Put script-like text in an output, a question, a judge reason and a teacher violation. */
  readonly hostile?: boolean
  /** Pad every output to about this many characters (default: short outputs). */
  readonly outputChars?: number
}

export interface Fixture {
  readonly config: ExperimentConfig
  readonly runDir: string
  /** Every audit's pairs as written: audit run name, benchmark, severity. */
  readonly pairs: ReadonlyArray<{ readonly audit: string; readonly benchmark: string; readonly severity: SeverityOrNone }>
}

const write = (file: string, text: string) => {
  mkdirSync(path.dirname(file), { recursive: true })
  writeFileSync(file, text)
}
const jsonl = (rows: ReadonlyArray<unknown>) => rows.map((r) => `${JSON.stringify(r)}\n`).join("")

/** Writes the run `expId` under `runsDir` and returns its config. */
export const writeRunFixture = (runsDir: string, expId: string, options: FixtureOptions): Fixture => {
  const config = configFor("configs/smoke.json", [`run.runs_dir=${runsDir}`, `run.exp_id=${expId}`, "teacher.prices.input_per_mtok=0.27", "teacher.prices.output_per_mtok=1.1"])
  const graph = buildRunGraph(config)
  const run = path.join(runsDir, expId)
  const file = (rel: string) => path.join(run, rel)
  mkdirSync(file(".locks"), { recursive: true })
  const t0 = Date.parse("2025-03-01T10:00:00.000Z")
  const keys = graph.stages.flatMap((s) => s.ledgerKeys)
  const stages: Record<string, unknown> = {}
  keys.forEach((key, k) => {
    const done = !options.partial || k < 2
    const running = options.partial === true && k === 2
    if (!done && !running) return
    stages[key] = {
      status: running ? "running" : "done",
      inputs_hash: `h${k}`,
      started_at: new Date(t0 + k * 600_000).toISOString(),
      finished_at: running ? null : new Date(t0 + k * 600_000 + 300_000 + k * 20_000).toISOString(),
      outputs: [],
      error: null,
      runs: 1
    }
  })
  write(file("manifest.json"), JSON.stringify({
    schema_version: 1, exp_id: expId, config_hash: "c0ffee", tool_version: "0.1.0", git_commit: null, node_version: "v24", created_at: new Date(t0).toISOString(), stages
  }, null, 2))

  // Teacher: distill (some rejected), repair (by severity).
  const teacherRow = (key: string, accepted: boolean, violations: ReadonlyArray<string>, rounds: number, severity?: string) => ({
    key, id: key, question: "q", gold_label: "YES", ...(severity ? { severity } : {}),
    messages: [{ role: "user", content: "q" }, { role: "assistant", content: "a\nConclusion: YES" }],
    conclusion: accepted ? "YES" : null, accepted, violations, rounds,
    usage: { prompt_tokens: 300 * rounds, completion_tokens: 80 * rounds }, cost_usd: (300 * rounds * 0.27 + 80 * rounds * 1.1) / 1e6,
    provider: "deepseek", model: "deepseek-chat", prompt_version: "v3", request_hashes: Array.from({ length: rounds }, (_, r) => `${key}-${r}`)
  })
  const distill = [
    ...Array.from({ length: 9 }, (_, i) => teacherRow(`D1-neq-${i}`, true, [], 1 + (i % 2))),
    teacherRow("D1-eq-1", false, ["analysis has 5 sentences, not 2-4", "no Conclusion: YES|NO line"], 3),
    teacherRow("D1-eq-2", false, ["analysis has 7 sentences, not 2-4"], 3),
    teacherRow("D1-eq-3", false, [options.hostile ? "conclusion <script>alert(1)</script> differs" : "conclusion NO differs from the gold label YES"], 3)
  ]
  write(file("teacher_outputs/distill/outputs.jsonl"), jsonl(distill))
  write(file("teacher_outputs/distill/responses.jsonl"), jsonl(distill.flatMap((r) => r.request_hashes.map((h) => ({
    key: h, content: "reply", finish_reason: "stop", prompt_tokens: 300, completion_tokens: 80, model: "deepseek-chat"
  })))))
  write(file("teacher_outputs/distill/failures.jsonl"), jsonl([{ key: "D1-neq-99", reason: "HTTP 500" }]))
  write(file("teacher_outputs/distill/summary.json"), JSON.stringify({
    task: "distill", items: 13, done: 12, remaining: 1, this_run: {}, stopped_by_error: null, failure_reasons: { "HTTP 500": 1 },
    ledger: {}, provider: "deepseek", model: "deepseek-chat", prompt_version: "v3", budget: {}, stopped_by_budget: false
  }))
  if (options.partial) return { config, runDir: run, pairs: [] }

  write(file("teacher_outputs/repair/outputs.jsonl"), jsonl([
    teacherRow("D1-neq-00000", true, [], 1, "severe"), teacherRow("D2-eq-00001", true, [], 2, "moderate"), teacherRow("D3-neq-00002", false, ["no Conclusion: YES|NO line"], 3, "mild")
  ]))

  // Training records, as the train stage writes them.
  for (const [name, steps] of [["DART", 60], ["DART_H", 90]] as const) {
    const losses = Array.from({ length: steps / 5 }, (_, k) => ({ step: 5 * (k + 1), loss: 2.5 * Math.exp(-k / 6) + 0.3, learning_rate: 0.005 * (1 - (5 * k) / steps) }))
    const evals = Array.from({ length: steps / 10 }, (_, k) => ({ step: 10 * (k + 1), eval_loss: 2.4 * Math.exp(-k / 3) + 0.45 }))
    write(file(`adapters/${name}/final/training_record.json`), JSON.stringify({
      adapter: name, stage: name === "DART" ? "dart" : "dart_h", recipe: name === "DART" ? "distill" : "mix", base_model: "@tiny", job_id: `j-${name}`,
      dataset: { sha256: "x", rows: 40, train_rows: 36, eval_rows: 4, dropped_too_long: 0, dropped_ids: [] },
      init_adapter: name === "DART" ? null : { path: "adapters/DART/final", files: [] },
      hyperparameters: { epochs: 2, learning_rate: 0.005, lr_scheduler: "linear", warmup_ratio: 0, per_device_batch_size: 4, gradient_accumulation_steps: 1, max_length: 512, lora: { r: 8, alpha: 16, dropout: 0, target_modules: ["q_proj"], bias: "none" } },
      metrics: { global_step: steps, train_loss: losses[losses.length - 1]!.loss, best_eval_loss: evals[evals.length - 1]!.eval_loss, losses, evals },
      validation: {}, files: [], versions: {}, mix: {}
    }, null, 2))
    write(file(`adapters/${name}/final/adapter_config.json`), "{}")
  }

  // Audits: the val audit feeding repair and the two measured on test.
  const pairs: Array<{ audit: string; benchmark: string; severity: SeverityOrNone }> = []
  const audits = graph.stages.flatMap((s) => (s.work.kind === "audit" && s.work.request.task === undefined ? [s.work.request] : []))
  const summaries: Record<string, ReturnType<typeof buildSummary>> = {}
  for (const a of audits) {
    const n = a.bName === "DART_H" ? options.pairs : a.split === "val" ? 30 : Math.min(options.pairs, 2000)
    const rows = Array.from({ length: n }, (_, i) => scoreRow(i, a.runName, a.bName, a.split, options.hostile === true && a.bName === "DART_H", options.outputChars))
    for (let i = 0; i < n; i++) pairs.push({ audit: a.runName, ...pairFacts(i) })
    const summary = buildSummary(rows, {
      runName: a.runName, aName: a.aName, bName: a.bName, mode: "validate", minSeverity: "mild", views: ["full_output", "analysis_only"], classifiers: ["toxicity", "hate"],
      thresholds: {}, evaluators: {}, judgeRun: {}, input: { file: a.pairedInput, sha256: "0".repeat(64) }, allowTestRepair: false
    })
    summaries[a.runName] = summary
    const dir = `audit/${a.runName}`
    write(file(`${dir}/scores.jsonl`), jsonl(rows))
    write(file(`${dir}/regression_pool.jsonl`), jsonl(poolRows(rows, false)))
    write(file(`${dir}/summary.json`), JSON.stringify({ ...summary, complete: true, timings: {} }, null, 2))
    write(file(`${dir}/judge_responses.jsonl`), jsonl([{ key: "j1", content: "{}", finish_reason: "stop", prompt_tokens: 500, completion_tokens: 60, model: "judge" }]))
  }

  // Evaluations: M0 vs DART and the main one, M0 vs DART_H, each with its audits' harm block.
  const [auditDart, auditDartH] = audits.filter((a) => a.split === "test").map((a) => ({ run: a.runName, summary: summaries[a.runName]! }))
  const note = options.hostile ? "note with <script>alert(1)</script>" : "predictions of this run"
  write(file(graph.evaluations.dart), JSON.stringify(evaluation("DART", [auditDart!], note)))
  write(file(graph.evaluations.main), JSON.stringify(evaluation("DART_H", [auditDart!, auditDartH!], note)))
  return { config, runDir: run, pairs }
}
