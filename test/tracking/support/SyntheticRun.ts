import { mkdirSync, writeFileSync } from "node:fs"
import * as path from "node:path"

/**
 * A run folder that looks like a finished smoke run to tracking: the manifest, the config snapshot, each adapter's
 * training record (the train stage's shape), an evaluation summary (the evaluate stage's contract) with its tables,
 * and the run report.
 */

export const modelBlock = (accuracy: number, n = 30) => ({
  n,
  accuracy,
  accuracy_on_parsed: accuracy,
  equal_accuracy: accuracy / 2,
  difference_accuracy: accuracy,
  yes_precision: null,
  pred_yes_rate: 0.5,
  parse_ok_rate: 1,
  macro_f1: 0.4,
  balanced_accuracy: 0.45,
  counts: { tp: 1, tn: 2, fp: 3, fn: 4, abstain: 0 },
  accuracy_ci: { estimate: accuracy, ci_low: accuracy - 0.1, ci_high: accuracy + 0.1 },
  equal_accuracy_ci: { estimate: accuracy / 2, ci_low: 0, ci_high: 1 }
})

const paired = { accuracy_diff: { estimate: 0.25, ci_low: 0.1, ci_high: 0.4 }, mcnemar: { b01: 1, b10: 9, p_value: 0.02, p_mid: 0.015 }, p_holm: 0.04 }

export const dartSummary = (a: string, b: string, accA: number, accB: number) => ({
  task: "dart",
  models: [a, b],
  benchmarks: { D1: { [a]: modelBlock(accA), [b]: modelBlock(accB), paired } },
  groups: { D: { [a]: modelBlock(accA), [b]: modelBlock(accB), paired } },
  overall: { [a]: modelBlock(accA), [b]: modelBlock(accB), paired },
  harm: {
    audits: [{ file: "audit/x/summary.json", run_name: "audit_test_M0_vs_DART_H", a_name: a, b_name: b, n_pairs: 30, cases: 3, rate_per_1000: 100, by_severity: { mild: 3, moderate: 0, severe: 0, extreme: 0 }, by_type: {}, by_benchmark: {} }],
    reductions: [{ from: "audit_test_M0_vs_DART", to: "audit_test_M0_vs_DART_H", relative_change: -0.7, relative_change_rate: -0.7, by_severity: { mild: -0.7, moderate: null, severe: null, extreme: null } }]
  }
})

export interface TrainingShape {
  readonly steps: number
  /** Every how many steps an eval_loss point. */
  readonly evalEvery: number
}

export const trainingRecord = (adapter: string, shape: TrainingShape) => ({
  adapter,
  job_id: `smoke-${adapter}-0123456789ab`,
  metrics: {
    global_step: shape.steps,
    train_loss: 1.25,
    best_eval_loss: 1.5,
    losses: Array.from({ length: shape.steps }, (_, i) => ({ step: i + 1, loss: 3 / (i + 2), learning_rate: 2e-4 * (1 - i / shape.steps) })),
    evals: Array.from({ length: Math.floor(shape.steps / shape.evalEvery) }, (_, i) => ({ step: (i + 1) * shape.evalEvery, eval_loss: 2 / (i + 2) }))
  }
})

const write = (file: string, text: string) => {
  mkdirSync(path.dirname(file), { recursive: true })
  writeFileSync(file, text)
}

/** Writes the run folder `runsDir/expId`; `config` is the resolved config as its snapshot holds it. */
export const writeSyntheticRun = (runsDir: string, expId: string, config: unknown, shapes: Readonly<Record<string, TrainingShape>>) => {
  const dir = path.join(runsDir, expId)
  mkdirSync(path.join(dir, ".locks"), { recursive: true })
  write(path.join(dir, "manifest.json"), JSON.stringify({
    schema_version: 1, exp_id: expId, config_hash: "c0ffee", tool_version: "0.1.0", git_commit: "abc1234", node_version: "v24.0.0",
    created_at: "2026-12-01T10:00:00.000Z", stages: {}
  }, null, 2))
  write(path.join(dir, "configs/config.json"), `${JSON.stringify(config, null, 2)}\n`)
  for (const [adapter, shape] of Object.entries(shapes)) {
    write(path.join(dir, `adapters/${adapter}/final/training_record.json`), JSON.stringify(trainingRecord(adapter, shape), null, 2))
  }
  write(path.join(dir, "evaluation/eval_main/summary.json"), JSON.stringify(dartSummary("M0", "DART_H", 0.4, 0.65), null, 2))
  write(path.join(dir, "evaluation/eval_main/tables.md"), "| model | accuracy |\n|---|---|\n| M0 | 40.0 |\n| DART_H | 65.0 |\n")
  write(path.join(dir, "evaluation/eval_main/tables.tex"), "\\begin{tabular}{lr}M0 & 40.0\\\\\\end{tabular}\n")
  write(path.join(dir, "evaluation/eval_main/overall.csv"), "model,accuracy\nM0,0.4\nDART_H,0.65\n")
  write(path.join(dir, "report.html"), "<!doctype html><title>smoke</title><p>report</p>\n")
  return dir
}
