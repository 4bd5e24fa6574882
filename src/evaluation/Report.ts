import { severities } from "../domain/Severity.ts"
import { barChart } from "../report/Charts.ts"
import { esc } from "../report/Html.ts"
import type { Interval } from "./Bootstrap.ts"
import type { DartModelBlock, DartSummary, McSummary } from "./Evaluator.ts"
import type { HarmSummary } from "./HarmDrift.ts"
import type { Table } from "./Tables.ts"

/**
 * The evaluation's self-contained HTML report (evaluation/{RUN}/report.html): inline CSS and static SVG, no scripts and
 * no network fetches, so it opens offline and renders the same everywhere. Deterministic text. The whole run's report,
 * all three models and the audits' examples, is src/report/RunReport.ts.
 */
const point = (x: number | null): Interval => ({ estimate: x, ci_low: null, ci_high: null })

const htmlTable = (t: Table) =>
  [`<h3>${esc(t.title)}</h3>`, "<table>", `<tr>${t.headers.map((h) => `<th>${esc(h)}</th>`).join("")}</tr>`,
    ...t.rows.map((r) => `<tr>${r.map((c, i) => `<${i === 0 ? "th" : "td"}>${esc(c.text)}${c.stars ? `<sup>${c.stars}</sup>` : ""}</${i === 0 ? "th" : "td"}>`).join("")}</tr>`),
    "</table>"].join("\n")

export interface ReportInput {
  readonly runName: string
  readonly expId: string
  readonly predFile: string
  readonly summary: DartSummary | McSummary
  readonly harm: HarmSummary | undefined
  readonly tables: ReadonlyArray<Table>
  readonly notes: ReadonlyArray<string>
}

export const renderReport = (r: ReportInput): string => {
  const s = r.summary
  const charts: Array<string> = []
  if (s.task === "dart") {
    const cats = [...Object.keys(s.benchmarks), "Overall"]
    const blocks = [...Object.values(s.benchmarks), s.overall]
    const series = (f: (m: DartModelBlock) => Interval) => s.models.map((m) => ({ name: m, values: blocks.map((b) => f(b[m] as DartModelBlock)) }))
    charts.push(barChart("Accuracy per benchmark (abstain = wrong), 95% bootstrap CI", cats, series((m) => m.accuracy_ci)))
    charts.push(barChart("Equal-treatment accuracy (recall on gold NO), 95% bootstrap CI", cats, series((m) => m.equal_accuracy_ci)))
  } else {
    const cats = Object.keys(s.benchmarks)
    const series = (f: (b: McSummary["benchmarks"][string][string]) => Interval) =>
      s.models.map((m) => ({ name: m, values: cats.map((c) => f(s.benchmarks[c]![m]!)) }))
    charts.push(barChart("DiffAware per benchmark, 95% scenario-clustered bootstrap CI", cats, series((b) => b.diffaware)))
    charts.push(barChart("CtxtAware per benchmark, 95% scenario-clustered bootstrap CI", cats, series((b) => b.ctxtaware)))
  }
  if (r.harm !== undefined && r.harm.audits.length > 0) {
    const sev = severities
    // Round the axis up to a multiple of 4 so the quarter ticks are whole counts.
    const max = 4 * Math.ceil(Math.max(1, ...r.harm.audits.flatMap((a) => sev.map((k) => a.by_severity[k]))) / 4)
    charts.push(barChart("Harm-drift cases by severity", [...sev],
      r.harm.audits.map((a) => ({ name: `${a.run_name} (${a.b_name} vs ${a.a_name})`, values: sev.map((k) => point(a.by_severity[k])) })),
      { max, percent: false }))
  }
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>DART evaluation · ${esc(r.expId)} / ${esc(r.runName)}</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1200px; color: #222; padding: 0 16px; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 32px; } h3 { font-size: 14px; font-weight: 600; }
table { border-collapse: collapse; margin: 8px 0 24px; font-variant-numeric: tabular-nums; }
th, td { white-space: nowrap; padding: 3px 8px; border-bottom: 1px solid #ddd; text-align: right; } tr > th:first-child { text-align: left; }
.chart { display: block; margin: 12px 0 24px; } .chart .title { font-weight: 600; font-size: 13px; }
.chart .tick { font-size: 11px; fill: #444; } .chart .grid { stroke: #e5e5e5; } .chart .whisker { stroke: #222; stroke-width: 1.2; fill: none; }
.meta { color: #555; } code { background: #f4f4f4; padding: 0 3px; }
</style>
</head>
<body>
<h1>DART evaluation: ${esc(r.runName)}</h1>
<p class="meta">Run <code>${esc(r.expId)}</code> · task <code>${s.task}</code> · models ${s.models.map((m) => `<code>${esc(m)}</code>`).join(", ")} · predictions <code>${esc(r.predFile)}</code></p>
${r.notes.map((n) => `<p class="meta">${esc(n)}</p>`).join("\n")}
<h2>Charts</h2>
${charts.join("\n")}
<h2>Tables</h2>
${r.tables.map(htmlTable).join("\n")}
</body>
</html>
`
}
