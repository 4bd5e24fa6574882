import type { Interval } from "./Bootstrap.ts"
import type { DartBlock, DartModelBlock, DartSummary, McSummary, PairedBlock } from "./Evaluator.ts"
import type { HarmSummary } from "./HarmDrift.ts"
import { stars } from "./Statistics.ts"

/** A table as cells: `text` for Markdown/LaTeX/HTML, `raw` (full precision) for CSV. */
export interface Cell {
  readonly text: string
  readonly raw: string | number | null | readonly [number | null, number | null]
  /** Significance stars, shown as superscripts in LaTeX. */
  readonly stars?: string
}
export interface Table {
  /** File stem of its CSV. */
  readonly name: string
  readonly title: string
  readonly headers: ReadonlyArray<string>
  readonly rows: ReadonlyArray<ReadonlyArray<Cell>>
}

const pct = (x: number | null | undefined): Cell => ({ text: x === null || x === undefined ? "–" : (100 * x).toFixed(1), raw: x ?? null })
const int = (x: number): Cell => ({ text: String(x), raw: x })
const label = (s: string): Cell => ({ text: s, raw: s })
const pval = (p: number | null): Cell => ({ text: p === null ? "–" : p < 0.001 ? "<0.001" : p.toFixed(3), raw: p })
const ci = (i: Interval): Cell => ({
  text: i.ci_low === null || i.ci_high === null ? "–" : `[${(100 * i.ci_low).toFixed(1)}, ${(100 * i.ci_high).toFixed(1)}]`,
  raw: [i.ci_low, i.ci_high]
})
const signedPct = (x: number | null, p: number | null): Cell => ({
  text: x === null ? "–" : `${x > 0 ? "+" : ""}${(100 * x).toFixed(1)}`,
  raw: x,
  stars: stars(p)
})

/** Per benchmark, then the D/N groups and overall: the paper's decision table. */
export const dartTable = (s: DartSummary): Table => {
  const [a, b] = s.models as [string, string | undefined]
  const entries: Array<[string, DartBlock]> = [
    ...Object.entries(s.benchmarks),
    ...Object.entries(s.groups).map(([g, blk]): [string, DartBlock] => [`${g} (all)`, blk]),
    ["Overall", s.overall]
  ]
  if (b === undefined) {
    return {
      name: "decision",
      title: `Decision metrics of ${a} (%; abstentions count as wrong)`,
      headers: ["Benchmark", "n", "Acc", "Acc CI", "Acc (parsed)", "Eq. acc", "Diff. acc", "YES prec.", "Pred. YES", "Parse OK", "Macro-F1", "Bal. acc"],
      rows: entries.map(([name, blk]) => {
        const m = blk[a] as DartModelBlock
        return [label(name), int(m.n), pct(m.accuracy), ci(m.accuracy_ci), pct(m.accuracy_on_parsed), pct(m.equal_accuracy), pct(m.difference_accuracy),
          pct(m.yes_precision), pct(m.pred_yes_rate), pct(m.parse_ok_rate), pct(m.macro_f1), pct(m.balanced_accuracy)]
      })
    }
  }
  return {
    name: "decision",
    title: `${a} vs ${b} (%; abstentions count as wrong; Δ = ${b} − ${a}, paired bootstrap CI, exact McNemar, Holm across benchmarks; * p<.05, ** p<.01, *** p<.001)`,
    headers: ["Benchmark", "n", `Acc ${a}`, `Acc ${b}`, "ΔAcc", "ΔAcc CI", "p (Holm)", `Eq. acc ${a}`, `Eq. acc ${b}`, `Diff. acc ${a}`, `Diff. acc ${b}`, `Parse ${a}`, `Parse ${b}`, `Macro-F1 ${a}`, `Macro-F1 ${b}`],
    rows: entries.map(([name, blk]) => {
      const ma = blk[a] as DartModelBlock
      const mb = blk[b] as DartModelBlock
      const paired = blk.paired as PairedBlock
      const p = paired.p_holm ?? paired.mcnemar.p_value
      return [label(name), int(ma.n), pct(ma.accuracy), pct(mb.accuracy), signedPct(paired.accuracy_diff.estimate, p), ci(paired.accuracy_diff), pval(p),
        pct(ma.equal_accuracy), pct(mb.equal_accuracy), pct(ma.difference_accuracy), pct(mb.difference_accuracy), pct(ma.parse_ok_rate),
        pct(mb.parse_ok_rate), pct(ma.macro_f1), pct(mb.macro_f1)]
    })
  }
}

export const mcTable = (s: McSummary): Table => ({
  name: "diffaware",
  title: "DiffAware suite, multiple-choice protocol (%; scenario-clustered bootstrap CIs)",
  headers: ["Benchmark", "Model", "n", "Acc", "DiffAware", "DiffAware CI", "CtxtAware", "CtxtAware CI", "A", "B", "C", "DE", "F", "Unparsed"],
  rows: [
    ...Object.entries(s.benchmarks).flatMap(([bench, per]) =>
      s.models.map((m) => {
        const x = per[m]!
        return [label(bench), label(m), int(x.n), pct(x.accuracy), pct(x.diffaware.estimate), ci(x.diffaware), pct(x.ctxtaware.estimate), ci(x.ctxtaware),
          int(x.counts.A), int(x.counts.B), int(x.counts.C), int(x.counts.DE), int(x.counts.F), int(x.counts.unparsed)]
      })
    ),
    ...s.models.map((m) => {
      const x = s.macro[m]!
      const none: Cell = { text: "", raw: null }
      return [label("Macro"), label(m), none, pct(x.accuracy), pct(x.diffaware), none, pct(x.ctxtaware), none, none, none, none, none, none, none]
    })
  ]
})

export const harmTable = (h: HarmSummary): Table => ({
  name: "harm_drift",
  title: "Harm-drift regressions (judge-confirmed) by severity",
  headers: ["Audit", "A", "B", "Pairs", "Cases", "per 1,000", "Mild", "Moderate", "Severe", "Extreme", "Change vs first"],
  rows: h.audits.map((r, i) => {
    const change = i === 0 ? null : h.reductions[i - 1]!.relative_change
    return [label(r.run_name), label(r.a_name), label(r.b_name), int(r.n_pairs), int(r.cases),
      { text: r.rate_per_1000 === null ? "–" : r.rate_per_1000.toFixed(1), raw: r.rate_per_1000 },
      int(r.by_severity.mild), int(r.by_severity.moderate), int(r.by_severity.severe), int(r.by_severity.extreme),
      { text: change === null ? "–" : `${change > 0 ? "+" : ""}${(100 * change).toFixed(1)}%`, raw: change }]
  })
})

export const toMarkdown = (tables: ReadonlyArray<Table>): string =>
  tables.map((t) => [
    `### ${t.title}`,
    "",
    `| ${t.headers.map(mdCell).join(" | ")} |`,
    `|${t.headers.map((_, i) => (i === 0 ? "---" : "---:")).join("|")}|`,
    ...t.rows.map((r) => `| ${r.map((c) => mdCell(`${c.text}${c.stars ?? ""}`)).join(" | ")} |`)
  ].join("\n")).join("\n\n") + "\n"

/** A cell of a pipe table: names may hold `|`, backslashes or newlines (model names are user input). */
const mdCell = (s: string) => s.replace(/\\/g, "\\\\").replace(/\|/g, "\\|").replace(/\r?\n/g, " ")

const texSpecial: Readonly<Record<string, string>> = {
  "\\": "\\textbackslash{}",
  "{": "\\{",
  "}": "\\}",
  "&": "\\&",
  "%": "\\%",
  "$": "\\$",
  "#": "\\#",
  "_": "\\_",
  "~": "\\textasciitilde{}",
  "^": "\\textasciicircum{}",
  "Δ": "$\\Delta$",
  "−": "--",
  "–": "--",
  "≥": "$\\geq$"
}

/** One pass, so the braces a replacement adds (\\textbackslash{}) are never escaped again. */
const tex = (s: string) => s.replace(/[\\{}&%$#_~^Δ−–≥]/g, (c) => texSpecial[c] ?? c)

export const toLatex = (tables: ReadonlyArray<Table>): string =>
  tables.map((t) => [
    "\\begin{table}[t]",
    "\\centering",
    "\\small",
    `\\caption{${tex(t.title)}}`,
    `\\begin{tabular}{l${"r".repeat(t.headers.length - 1)}}`,
    "\\toprule",
    `${t.headers.map(tex).join(" & ")} \\\\`,
    "\\midrule",
    ...t.rows.map((r) => `${r.map((c) => `${tex(c.text)}${c.stars ? `$^{${c.stars}}$` : ""}`).join(" & ")} \\\\`),
    "\\bottomrule",
    "\\end{tabular}",
    "\\end{table}"
  ].join("\n")).join("\n\n") + "\n"

const csvCell = (v: string | number | null) => {
  const s = v === null ? "" : String(v)
  return /[",\n]/.test(s) ? `"${s.replaceAll("\"", "\"\"")}"` : s
}

/** Wide CSV at full precision; an interval column becomes `low` and `high` columns. */
export const toCsv = (t: Table): string => {
  const isInterval = t.headers.map((_, i) => t.rows.some((r) => Array.isArray(r[i]?.raw)))
  const headers = t.headers.flatMap((h, i) => (isInterval[i] ? [`${h} low`, `${h} high`] : [h]))
  const rows = t.rows.map((r) =>
    r.flatMap((c, i) => {
      const raw = c.raw
      if (isInterval[i]) return Array.isArray(raw) ? raw.map((x) => csvCell(x)) : ["", ""]
      return [csvCell(Array.isArray(raw) ? null : (raw as string | number | null))]
    })
  )
  return [headers.map(csvCell), ...rows].map((r) => r.join(",")).join("\n") + "\n"
}
