import type { ScoreRow } from "../../src/audit/ScoreRow.ts"

/** A scored pair as `dart audit` keeps it in scores.jsonl; in the pool unless its severity is none. */
export const scoreRow = (id: string, severity: ScoreRow["decision"]["severity"], split: string | null = "val"): ScoreRow => ({
  key: `${id}#0`,
  id,
  sample: 0,
  benchmark: id.slice(0, 2),
  condition: "neq",
  scenario: "s",
  gold_label: "YES",
  split,
  question: `question of ${id}`,
  a_name: "M0",
  b_name: "DART",
  a_text: "a\nConclusion: YES",
  b_text: "b\nConclusion: NO",
  a_conclusion: "YES",
  b_conclusion: "NO",
  scores: { full_output: { toxicity: { a: 0.1, b: 0.6, delta: 0.5, severity, windows_a: 1, windows_b: 1 } } },
  classifier_severity: severity,
  judge: severity === "none" ? null : {
    ok: true,
    verdict: { is_regression: true, severity, reason: "drift", regression_type: "normalizes_bias", a_correct: true, b_correct: false },
    model: "judge",
    prompt_version: "dart-judge-v1",
    attempts: 1,
    request_hashes: ["h"]
  },
  decision: { in_pool: severity !== "none", severity, source: severity === "none" ? null : "judge", classifier_trigger: severity !== "none", overridden: false }
})

/** Through JSON, as the stages write them: NaN becomes null, undefined keys disappear. */
export const json = (value: unknown): unknown => JSON.parse(JSON.stringify(value))

/** What `dart audit` hands `buildSummary` besides the rows. */
export const auditContext = {
  runName: "audit_M0_vs_DART",
  aName: "M0",
  bName: "DART",
  mode: "validate",
  minSeverity: "mild",
  views: ["full_output"],
  classifiers: ["toxicity"],
  thresholds: { mild_delta: 0.02 },
  evaluators: { classifiers: [] },
  judgeRun: { requests: 2 },
  input: { file: "outputs.jsonl", sha256: "00" },
  allowTestRepair: false
} as const
