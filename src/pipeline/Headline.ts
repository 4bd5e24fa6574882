import { Schema } from "effect"
import { describeIssue, flattenIssue } from "../common/SchemaIssueText.ts"
import { DartEvaluationSummary, type DartModelBlock, type PairedBlock } from "../contracts/EvaluationSummary.ts"
import { mcnemarExact, stars } from "../evaluation/Statistics.ts"

/**
 * The final headline of `dart run` (pure): M0, DART and DART_H side by side — accuracy,
 * equal-treatment accuracy, predicted-YES rate, parse-OK rate, harm-drift cases and their
 * reduction, with significance — from the evaluations' `summary.json` files (docs/architecture.md).
 */

/** An evaluation summary of task dart: the headline reads the models' overall blocks and the harm audits. */
export type HeadlineSource = DartEvaluationSummary

export class HeadlineError extends Error {
  override readonly name = "HeadlineError"
}

const decodeSource = Schema.decodeUnknownResult(DartEvaluationSummary)
const isModelBlock = (b: DartModelBlock | PairedBlock | undefined): b is DartModelBlock => b !== undefined && "n" in b
const isPairedBlock = (b: DartModelBlock | PairedBlock | undefined): b is PairedBlock => b !== undefined && "mcnemar" in b

/** Decodes one summary.json text, naming the file and the field on failure. */
export const parseHeadlineSource = (file: string, text: string): HeadlineSource => {
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (e) {
    throw new HeadlineError(`${file}: malformed JSON (${(e as Error).message})`)
  }
  const r = decodeSource(json, { errors: "all" })
  if (r._tag === "Failure") {
    throw new HeadlineError(`${file}: not a dart evaluation summary: ${flattenIssue(r.failure.issue).map((i) => describeIssue(i, json)).join("; ")}`)
  }
  return r.success
}

export interface HeadlineRow {
  readonly model: string
  readonly n: number
  readonly accuracy: number | null
  readonly equal_accuracy: number | null
  readonly pred_yes_rate: number | null
  readonly parse_ok_rate: number | null
  /** Against the baseline (null for the baseline itself or when no paired evaluation has this model). */
  readonly vs_baseline: { readonly accuracy_diff: number | null; readonly ci_low: number | null; readonly ci_high: number | null; readonly p_value: number } | null
  /** Confirmed harm-drift cases of this model against the baseline on the test pairs. */
  readonly harm: { readonly cases: number; readonly n_pairs: number } | null
  /**
   * Relative change of harm-drift cases from the first audited model (DART) to this one, with an exact
   * conditional test of equal rates (k₁ vs k₂ given k₁ + k₂, both audits on the same pairs).
   */
  readonly harm_change: { readonly from: string; readonly relative: number | null; readonly p_value: number | null } | null
}

export interface Headline {
  readonly baseline: string
  readonly rows: ReadonlyArray<HeadlineRow>
}

/**
 * Builds the rows for `models` (the baseline first) from one or more summaries: each model's
 * metrics from the first summary that has it, its significance from the summary pairing it
 * with the baseline, harm drift from the audits any summary carries.
 */
export const buildHeadline = (sources: ReadonlyArray<{ readonly file: string; readonly summary: HeadlineSource }>, models: ReadonlyArray<string>): Headline => {
  const [baseline] = models
  if (baseline === undefined) throw new HeadlineError("no models to show")
  const audits = sources.flatMap((s) => s.summary.harm?.audits ?? []).filter((a) => a.a_name === baseline)
  const harmOf = (m: string) => audits.find((a) => a.b_name === m)
  const firstAudited = models.slice(1).find((m) => harmOf(m) !== undefined)
  const rows = models.map((model): HeadlineRow => {
    const holder = sources.find((s) => s.summary.models.includes(model))
    if (holder === undefined) throw new HeadlineError(`no evaluation summary has model ${model} (read: ${sources.map((s) => s.file).join(", ")})`)
    const block = holder.summary.overall[model]
    if (!isModelBlock(block)) throw new HeadlineError(`${holder.file}: overall.${model} lacks the decision metrics`)
    let vs: HeadlineRow["vs_baseline"] = null
    if (model !== baseline) {
      const pairing = sources.find((s) => s.summary.models.length === 2 && s.summary.models[0] === baseline && s.summary.models[1] === model)
      if (pairing !== undefined) {
        const p = pairing.summary.overall.paired
        if (!isPairedBlock(p)) throw new HeadlineError(`${pairing.file}: overall.paired lacks accuracy_diff / mcnemar`)
        vs = { accuracy_diff: p.accuracy_diff.estimate, ci_low: p.accuracy_diff.ci_low, ci_high: p.accuracy_diff.ci_high, p_value: p.mcnemar.p_value }
      }
    }
    const audit = harmOf(model)
    let change: HeadlineRow["harm_change"] = null
    const from = firstAudited === undefined ? undefined : harmOf(firstAudited)
    if (audit !== undefined && from !== undefined && firstAudited !== model) {
      const relative = from.cases === 0 ? null : (audit.cases - from.cases) / from.cases
      // Equal rates on the same pairs: k₂ | k₁ + k₂ ~ Binomial(k₁ + k₂, ½), the same exact test McNemar uses.
      const p = from.n_pairs === audit.n_pairs ? mcnemarExact(from.cases, audit.cases).p_value : null
      change = { from: firstAudited!, relative, p_value: p }
    }
    return {
      model,
      n: block.n,
      accuracy: block.accuracy,
      equal_accuracy: block.equal_accuracy,
      pred_yes_rate: block.pred_yes_rate,
      parse_ok_rate: block.parse_ok_rate,
      vs_baseline: vs,
      harm: audit === undefined ? null : { cases: audit.cases, n_pairs: audit.n_pairs },
      harm_change: change
    }
  })
  return { baseline, rows }
}

const pct = (x: number | null) => (x === null ? "–" : `${(100 * x).toFixed(1)}%`)
const pp = (x: number | null) => (x === null ? "–" : `${x > 0 ? "+" : ""}${(100 * x).toFixed(1)} pp`)
const pText = (p: number | null) => (p === null ? "" : p < 0.001 ? "p<0.001" : `p=${p.toFixed(3)}`)

/** The headline as a Markdown table (stars at .05/.01/.001) with a line on how significance was tested. */
export const renderHeadline = (h: Headline): string => {
  const header = ["model", "n", "accuracy", `Δ vs ${h.baseline}`, "equal-treatment acc.", "pred-YES rate", "parse-OK rate", "harm-drift cases", "harm-drift change"]
  const body = h.rows.map((r) => [
    r.model,
    String(r.n),
    pct(r.accuracy),
    r.vs_baseline === null ? "–" : `${pp(r.vs_baseline.accuracy_diff)}${stars(r.vs_baseline.p_value)} (${pText(r.vs_baseline.p_value)})`,
    pct(r.equal_accuracy),
    pct(r.pred_yes_rate),
    pct(r.parse_ok_rate),
    r.harm === null ? "–" : `${r.harm.cases} of ${r.harm.n_pairs}`,
    r.harm_change === null
      ? "–"
      : `${r.harm_change.relative === null ? "n/a" : `${r.harm_change.relative > 0 ? "+" : ""}${(100 * r.harm_change.relative).toFixed(1)}%`} vs ${r.harm_change.from}` +
        `${stars(r.harm_change.p_value)}${r.harm_change.p_value === null ? "" : ` (${pText(r.harm_change.p_value)})`}`
  ])
  const esc = (s: string) => s.replace(/\|/g, "\\|")
  const lines = [
    `| ${header.join(" | ")} |`,
    `|${header.map(() => "---").join("|")}|`,
    ...body.map((cells) => `| ${cells.map(esc).join(" | ")} |`),
    "",
    `Δ: accuracy difference against ${h.baseline} on the same test items, exact two-sided McNemar; harm-drift change: confirmed cases ` +
      `against ${h.baseline} on the same test pairs, exact conditional test of equal rates. * p<.05, ** p<.01, *** p<.001.`
  ]
  return lines.join("\n")
}
