import { createHash } from "node:crypto"
import { Effect } from "effect"
import * as path from "node:path"
import { formatDuration } from "../common/Progress.ts"
import type { ExperimentConfig } from "../config/ExperimentConfig.ts"
import type { DartBlock, DartEvaluationSummary, DartModelBlock, EvaluationSummary, McEvaluationSummary, PairedBlock } from "../contracts/EvaluationSummary.ts"
import { severities } from "../domain/Severity.ts"
import { type Proportion, stars } from "../evaluation/Statistics.ts"
import { OPEN_ENDED_LABELS } from "../audit/OpenEndedRubric.ts"
import type { ContinuationSummary, OpenEndedSummary } from "../evaluation/OodSummary.ts"
import { continuationTables, openEndedTables } from "../evaluation/OodTables.ts"
import type { Table } from "../evaluation/Tables.ts"
import { buildHeadline } from "../pipeline/Headline.ts"
import { BASE, DART, DART_H } from "../pipeline/RunGraph.ts"
import { writeFileAtomic } from "../runs/AtomicFile.ts"
import { RunStore } from "../runs/RunStore.ts"
import { BROWSER_CSS, BROWSER_SCRIPT, browserHtml } from "./Browser.ts"
import { barChart, type ChartInterval, countChart, histogramChart, lineChart, timelineChart, type TimelineRow } from "./Charts.ts"
import { esc, int, pct, scriptJson } from "./Html.ts"
import {
  type AdapterView,
  type AuditView,
  collectRunReport,
  type CollectOptions,
  type EvaluationView,
  type OodView,
  type RunReportData,
  type TeacherView
} from "./RunReportData.ts"

/**
 * `runs/{EXP_ID}/report.html`: the whole run on one offline page (docs/report.md) — plan and stage timings, the
 * teacher, training curves, the audits, the evaluation of M0, DART and DART_H, and a browser of the audited pairs.
 * One file: inline CSS, static SVG, one inline script (allowed by its hash in the page's Content-Security-Policy,
 * which also forbids every fetch), the pairs embedded as JSON. `renderRunReport` is pure; `writeRunReport` reads
 * the run folder and writes the page atomically.
 */

const CSS = `
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1280px; color: #222; padding: 0 16px; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 36px; border-bottom: 1px solid #ddd; padding-bottom: 4px; } h3 { font-size: 15px; margin-top: 24px; }
nav a { margin-right: 12px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-variant-numeric: tabular-nums; }
th, td { padding: 3px 8px; border-bottom: 1px solid #ddd; text-align: right; vertical-align: top; } tr > th:first-child { text-align: left; }
td.l, th.l, .facts td, table.left td, table.left th { text-align: left; } td.wrap { white-space: normal; max-width: 520px; text-align: left; }
.chart { display: block; margin: 8px 0 16px; } .chart .title { font-weight: 600; font-size: 13px; }
.chart .tick { font-size: 11px; fill: #444; } .chart .grid { stroke: #e5e5e5; } .chart .whisker { stroke: #222; stroke-width: 1.2; fill: none; }
.chart .line, .chart .step { fill: none; stroke-width: 1.6; }
.charts { display: flex; flex-wrap: wrap; gap: 8px 24px; align-items: flex-start; }
.meta { color: #555; } code { background: #f4f4f4; padding: 0 3px; }
.note { color: #8a5a00; background: #fff8e6; border-left: 3px solid #f0b400; padding: 4px 8px; margin: 6px 0; }
.missing { color: #777; font-style: italic; }
.status-done { color: #2e7d32; } .status-failed { color: #c62828; } .status-running { color: #1565c0; } .status-stopped, .status-interrupted { color: #b26a00; }
${BROWSER_CSS}`

const SCRIPT_HASH = createHash("sha256").update(BROWSER_SCRIPT).digest("base64")
/** Nothing may be fetched: no default source, the one script by its hash, inline styles, no base, no forms. */
const CSP = `default-src 'none'; script-src 'sha256-${SCRIPT_HASH}'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'`

type Html = string

/** The browser's badge colours (src/report/Browser.ts), for the severity charts. */
const SEVERITY_COLORS: Readonly<Record<string, string>> = { mild: "#e9c46a", moderate: "#f4a259", severe: "#e8704f", extreme: "#a11" }

const table = (headers: ReadonlyArray<Html>, rows: ReadonlyArray<ReadonlyArray<Html>>, cls = ""): Html =>
  [`<table${cls ? ` class="${cls}"` : ""}>`, `<tr>${headers.map((h) => `<th>${h}</th>`).join("")}</tr>`,
    ...rows.map((r) => `<tr>${r.map((c, i) => (i === 0 ? `<th>${c}</th>` : `<td>${c}</td>`)).join("")}</tr>`), "</table>"].join("\n")

/** Label → value rows, no header; values are HTML already. */
const facts = (rows: ReadonlyArray<readonly [string, Html]>): Html =>
  [`<table class="facts">`, ...rows.map(([k, v]) => `<tr><th>${esc(k)}</th><td class="l">${v}</td></tr>`), "</table>"].join("\n")

const notes = (ns: ReadonlyArray<string>): Html => ns.map((n) => `<p class="note">${esc(n)}</p>`).join("\n")
const missing = (text: string): Html => `<p class="missing">${esc(text)}</p>`
const usd = (x: number) => `$${x.toFixed(x < 1 ? 4 : 2)}`
const ms = (iso: string | null | undefined) => (iso ? Date.parse(iso) : Number.NaN)
const ci = (i: ChartInterval | undefined): string =>
  i === undefined || i.ci_low === null || i.ci_high === null ? "" : ` [${(100 * i.ci_low).toFixed(1)}, ${(100 * i.ci_high).toFixed(1)}]`
const pp = (x: number | null | undefined) => (x === null || x === undefined ? "–" : `${x > 0 ? "+" : ""}${(100 * x).toFixed(1)} pp`)
const pText = (p: number | null | undefined) => (p === null || p === undefined ? "" : p < 0.001 ? "p<0.001" : `p=${p.toFixed(3)}`)
const fixed = (x: number | null | undefined, d = 4) => (x === null || x === undefined || !Number.isFinite(x) ? "–" : x.toFixed(d))

// ---------------------------------------------------------------------------------------------------------------
// Plan and stage timings

const planSection = (d: RunReportData): Html => {
  const parts = [`<h2>Plan and stage timings</h2>`]
  if (d.manifest === undefined) parts.push(missing("manifest.json is not there: `dart init` has not run"))
  for (const w of d.warnings) parts.push(`<p class="note">${esc(w)}</p>`)
  const rows: Array<Array<Html>> = []
  const spans: Array<TimelineRow> = []
  d.stages.forEach((s, i) => {
    for (const { key, record } of s.entries) {
      const start = ms(record?.started_at)
      const end = ms(record?.finished_at)
      const duration = Number.isFinite(start) ? ((Number.isFinite(end) ? end : d.nowMs) - start) / 1000 : Number.NaN
      const status = record?.status ?? "not run"
      rows.push([
        `${i + 1}`,
        `<span class="l">${esc(s.id)}</span>`,
        `<code>${esc(key)}</code>`,
        `<span class="status-${esc(status)}">${esc(status === "running" ? "running (or killed)" : status)}</span>`,
        record ? String(record.runs) : "",
        esc(record?.started_at ?? ""),
        esc(record?.finished_at ?? ""),
        Number.isFinite(duration) ? esc(formatDuration(duration)) : "",
        record?.error ? esc(record.error) : ""
      ])
      if (record !== undefined && Number.isFinite(start)) spans.push({ label: key, startMs: start, endMs: Number.isFinite(end) ? end : null, status: record.status })
    }
  })
  parts.push(table(["#", "stage", "ledger", "status", "runs", "started", "finished", "took", "error"], rows, "left"))
  if (spans.length > 0) parts.push(timelineChart("When each stage ran (its last run)", spans, d.nowMs, formatDuration))
  parts.push(`<details><summary>The commands of the plan (what <code>dart run</code> does, step by step)</summary>\n${
    table(["stage", "command"], d.stages.map((s) => [esc(s.title), `<code>${esc(s.command)}</code>`]))
  }</details>`)
  if (d.otherLedger.length > 0) {
    parts.push(`<h3>Other ledger entries (commands run by hand)</h3>`)
    parts.push(table(["ledger", "status", "runs", "started", "finished"], d.otherLedger.map(([k, r]) => [
      `<code>${esc(k)}</code>`, esc(r.status), String(r.runs), esc(r.started_at), esc(r.finished_at ?? "")
    ])))
  }
  return parts.join("\n")
}

// ---------------------------------------------------------------------------------------------------------------
// Teacher

const teacherPart = (t: TeacherView): Html => {
  const parts = [`<h3>${t.task === "distill" ? "Distill: rationales for the train items" : "Repair: SAFE rationales for the regression pool"}</h3>`]
  parts.push(notes(t.notes))
  if (!t.present) return parts.join("\n")
  const s = t.summary
  const rows: Array<[string, Html]> = [
    ["items", s?.items !== undefined ? `${int(t.rows)} done of ${int(s.items)}` : int(t.rows)],
    ["accepted", `${int(t.accepted)} (${pct(t.rows === 0 ? null : t.accepted / t.rows)})`],
    ["rejected after the last correction round", int(t.rejected)],
    ["tokens (finished items)", `${int(t.promptTokens)} prompt + ${int(t.completionTokens)} completion${t.estimatedRows > 0 ? ` (${int(t.estimatedRows)} items estimated locally)` : ""}`],
    ["cost (finished items)", usd(t.costUsd)]
  ]
  if (t.ledger !== null) {
    rows.push(["paid replies (responses.jsonl)", `${int(t.ledger.responses)}: ${int(t.ledger.promptTokens)} prompt + ${int(t.ledger.completionTokens)} completion tokens, ${usd(t.ledger.costUsd)}${t.ledger.estimated > 0 ? ` (${int(t.ledger.estimated)} estimated)` : ""}`])
  }
  if (s?.provider !== undefined) rows.push(["provider / model", esc(`${s.provider} / ${s.model ?? "?"}`)])
  if (s?.stopped_by_budget === true) rows.push(["stopped", "by the budget"])
  if (s?.stopped_by_error) rows.push(["stopped by an error", esc(s.stopped_by_error)])
  if (t.failures.length > 0) rows.push(["failed requests", esc(t.failures.map(([r, n]) => `${n}× ${r}`).join("; "))])
  parts.push(facts(rows))
  const side: Array<Html> = []
  if (t.reasons.length > 0) side.push(table(["rejected because", "items"], t.reasons.map(([r, n]) => [esc(r), int(n)])))
  if (t.rounds.length > 0) side.push(table(["rounds (1 = no correction)", "items"], t.rounds.map(([r, n]) => [String(r), int(n)])))
  if (t.bySeverity.length > 0) side.push(table(["severity", "accepted", "rejected"], t.bySeverity.map(([k, a, r]) => [esc(k), int(a), int(r)])))
  if (side.length > 0) parts.push(`<div class="charts">${side.join("\n")}</div>`)
  return parts.join("\n")
}

const teacherSection = (d: RunReportData): Html =>
  [`<h2>Teacher</h2>`, `<p class="meta">${esc(`${d.config.teacher.provider} / ${d.config.teacher.model}, up to ${d.config.teacher.correction_rounds} correction round(s); prices $${d.config.teacher.prices.input_per_mtok} / $${d.config.teacher.prices.output_per_mtok} per million tokens`)}</p>`,
    ...d.teacher.map(teacherPart)].join("\n")

// ---------------------------------------------------------------------------------------------------------------
// Training

const adapterPart = (a: AdapterView): Html => {
  const parts = [`<h3>${esc(a.name)}</h3>`]
  const r = a.record
  if (r !== null) {
    const h = r.hyperparameters
    const m = r.metrics
    const rows: Array<[string, string]> = []
    if (r.recipe !== undefined) rows.push(["recipe", `${r.recipe}${r.stage ? ` (stage ${r.stage})` : ""}`])
    if (r.init_adapter) rows.push(["continues from", r.init_adapter.path])
    if (r.dataset !== undefined) rows.push(["rows", `${r.dataset.train_rows ?? "?"} train / ${r.dataset.eval_rows ?? "?"} eval${r.dataset.dropped_too_long ? `, ${r.dataset.dropped_too_long} longer than max_length left out` : ""}`])
    if (h !== undefined) {
      rows.push(["settings", [
        h.epochs !== undefined ? `${h.epochs} epochs` : "",
        h.learning_rate !== undefined ? `lr ${h.learning_rate}${h.lr_scheduler ? ` (${h.lr_scheduler}${h.warmup_ratio ? `, warmup ${h.warmup_ratio}` : ""})` : ""}` : "",
        h.per_device_batch_size !== undefined ? `batch ${h.per_device_batch_size}×${h.gradient_accumulation_steps ?? 1}` : "",
        h.lora ? `LoRA r ${h.lora.r}, alpha ${h.lora.alpha}` : ""
      ].filter((x) => x !== "").join(", ")])
    }
    if (m !== undefined) rows.push(["result", `${m.global_step} steps, train loss ${fixed(m.train_loss)}, best eval loss ${fixed(m.best_eval_loss)}`])
    parts.push(facts(rows.map(([k, v]) => [k, esc(v)])))
    if (m !== undefined) {
      const charts: Array<Html> = []
      const loss = m.losses.flatMap((p) => (p.loss === null ? [] : [[p.step, p.loss] as const]))
      const evals = m.evals.flatMap((p) => (p.eval_loss === null ? [] : [[p.step, p.eval_loss] as const]))
      if (loss.length + evals.length > 0) {
        charts.push(lineChart(`${a.name}: loss`, [{ name: "train loss", points: loss }, { name: "eval loss", points: evals }], { xLabel: "step" }))
      }
      const lr = m.losses.flatMap((p) => (p.learning_rate === undefined || p.learning_rate === null ? [] : [[p.step, p.learning_rate] as const]))
      if (lr.length > 0) charts.push(lineChart(`${a.name}: learning rate`, [{ name: "learning rate", points: lr }], { xLabel: "step" }))
      if (charts.length > 0) parts.push(`<div class="charts">${charts.join("\n")}</div>`)
      else parts.push(missing("no loss was logged (too few steps for the logging interval)"))
    }
  }
  parts.push(notes(a.notes))
  return parts.join("\n")
}

const trainingSection = (d: RunReportData): Html =>
  [`<h2>Training</h2>`, ...(d.adapters.length === 0 ? [missing("no adapter in this run yet")] : d.adapters.map(adapterPart))].join("\n")

// ---------------------------------------------------------------------------------------------------------------
// Audit

const countsTable = (title: string, counts: Readonly<Record<string, number>> | undefined, total: number): Html => {
  const entries = Object.entries(counts ?? {}).sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
  if (entries.length === 0) return ""
  return table([esc(title), "cases", "share"], entries.map(([k, n]) => [esc(k), int(n), pct(total === 0 ? null : n / total)]))
}

const auditPart = (a: AuditView): Html => {
  const parts = [`<h3>${esc(a.runName)}</h3>`, `<p class="meta">${esc(a.title)}</p>`]
  const s = a.summary
  if (s !== null) {
    const rows: Array<[string, string]> = [
      ["pairs", int(s.n_pairs)],
      ["harm-drift regressions (the pool)", `${int(s.regressions.total)}${s.rate_per_1000 !== undefined && s.rate_per_1000 !== null ? ` (${s.rate_per_1000.toFixed(1)} per 1,000 pairs)` : ""}`]
    ]
    if (s.mode !== undefined) rows.push(["judge mode", s.mode])
    if (s.min_severity !== undefined) rows.push(["lowest severity kept", s.min_severity])
    if (s.complete !== undefined) rows.push(["complete", s.complete ? "yes" : "no"])
    if (a.judge !== null) {
      rows.push(["judge", `${int(a.judge.called)} calls, ${int(a.judge.verdicts)} verdicts, ${int(a.judge.regressions)} regressions, ${int(a.judge.failures)} failures` +
        (a.judge.failure_reasons && Object.keys(a.judge.failure_reasons).length > 0 ? ` (${Object.entries(a.judge.failure_reasons).map(([r, n]) => `${n}× ${r}`).join("; ")})` : "")])
    }
    if (a.judgeLedger !== null) rows.push(["judge replies paid", `${int(a.judgeLedger.responses)}, ${int(a.judgeLedger.tokens)} tokens, ${usd(a.judgeLedger.costUsd)}`])
    parts.push(facts(rows.map(([k, v]) => [k, esc(v)])))
    const side = [
      countChart(`${a.bName} vs ${a.aName}: regressions by severity`, severities.map((k) => [k, s.regressions.by_severity[k]] as const), SEVERITY_COLORS),
      countsTable("drift type (judge)", s.regressions.by_type, s.regressions.total),
      countsTable("benchmark", s.regressions.by_benchmark, s.regressions.total)
    ]
    parts.push(`<div class="charts">${side.join("\n")}</div>`)
    if (a.classifier !== null) {
      const c = a.classifier
      const fp = c.judged_triggers - c.confirmed_by_judge
      parts.push(table(["classifiers against the judge", ""], [
        ["classifier triggers", int(c.triggers)],
        ["judged", int(c.judged_triggers)],
        ["confirmed by the judge", int(c.confirmed_by_judge)],
        ["false positives (judge: no regression)", `${int(fp)} (${pct(c.false_positive_rate)} of the judged)`],
        ["overridden (trigger kept out of the pool)", int(c.overridden)],
        ["judge regressions the classifiers missed", int(c.missed)]
      ].map(([k, v]) => [esc(k!), v!])))
    }
  }
  if (a.histograms.length > 0 || a.harmScores !== null) {
    const charts = a.histograms.map((h) =>
      histogramChart(`${h.view} · ${h.classifier}: harm score`, h.edges, [{ name: a.aName, counts: h.a }, { name: a.bName, counts: h.b }], { xLabel: "score (share of pairs per bin)" }))
    if (charts.length > 0) parts.push(`<div class="charts">${charts.join("\n")}</div>`)
    if (a.harmScores !== null) {
      const stats: Array<Array<Html>> = []
      for (const [view, byClf] of Object.entries(a.harmScores)) {
        for (const [clf, slice] of Object.entries(byClf)) {
          const mw = slice.overall["mann_whitney_b_vs_a"]
          for (const model of [a.aName, a.bName]) {
            const m = slice.overall[model]
            if (m === undefined || m === null || (m.n ?? 0) === 0) continue
            stats.push([esc(`${view} · ${clf}`), esc(model), int(m.n ?? 0), fixed(m.mean), fixed(m.median), fixed(m.p90), fixed(m.p99), pct(m.share_ge_0_5),
              model === a.bName && mw ? esc(`${pText(mw.p_value)}${mw.rank_biserial_r !== undefined && mw.rank_biserial_r !== null ? `, r=${mw.rank_biserial_r.toFixed(3)}` : ""}`) : ""])
          }
        }
      }
      if (stats.length > 0) parts.push(table(["view · classifier", "model", "n", "mean", "median", "p90", "p99", "≥ 0.5", "Mann–Whitney B vs A"], stats))
    }
  }
  if (a.pairSource !== null) parts.push(`<p class="meta">${int(a.pairs)} pair(s) in the <a href="#examples">example browser</a>.</p>`)
  parts.push(notes(a.notes))
  return parts.join("\n")
}

const auditSection = (d: RunReportData): Html =>
  [`<h2>Audit</h2>`,
    `<p class="meta">${esc(`classifiers: ${d.config.audit.classifiers.map((c) => c.name).join(", ") || "none"} on ${d.config.audit.views.join(", ")}; judge ${d.config.audit.llm_judge.enabled ? `${d.config.judge.provider} / ${d.config.judge.model} (${d.config.audit.llm_judge.mode})` : "off"}`)}</p>`,
    ...(d.audits.length === 0 ? [missing("no audit in this run yet")] : d.audits.map(auditPart))].join("\n")

// ---------------------------------------------------------------------------------------------------------------
// Evaluation

const isModel = (b: DartBlock[string] | undefined): b is DartModelBlock => b !== undefined && "n" in b
const isPaired = (b: DartBlock[string] | undefined): b is PairedBlock => b !== undefined && "mcnemar" in b

const orderModels = (names: Iterable<string>) => {
  const all = [...new Set(names)]
  const known = [BASE, DART, DART_H].filter((m) => all.includes(m))
  return [...known, ...all.filter((m) => !known.includes(m))]
}

const dartEvaluation = (d: RunReportData, sources: ReadonlyArray<{ readonly view: EvaluationView; readonly summary: DartEvaluationSummary }>): Html => {
  const parts: Array<Html> = []
  const models = orderModels(sources.flatMap((s) => s.summary.models))
  const holder = (m: string) => sources.find((s) => s.summary.models.includes(m))!
  const comparisons = sources.filter((s) => s.summary.models.length === 2).map((s) => ({ a: s.summary.models[0]!, b: s.summary.models[1]!, s }))
    .sort((x, y) => models.indexOf(x.b) - models.indexOf(y.b))
  // Slices: the benchmarks (first summary's order), the groups, overall.
  const benchmarks = [...new Set(sources.flatMap((s) => Object.keys(s.summary.benchmarks)))]
  const groups = [...new Set(sources.flatMap((s) => Object.keys(s.summary.groups)))]
  const slices: Array<{ name: string; block: (s: DartEvaluationSummary) => DartBlock | undefined }> = [
    ...benchmarks.map((b) => ({ name: b, block: (s: DartEvaluationSummary) => s.benchmarks[b] })),
    ...groups.map((g) => ({ name: `${g} (all)`, block: (s: DartEvaluationSummary) => s.groups[g] })),
    { name: "Overall", block: (s: DartEvaluationSummary) => s.overall }
  ]
  const model = (slice: typeof slices[number], m: string) => {
    const b = slice.block(holder(m).summary)?.[m]
    return isModel(b) ? b : undefined
  }

  // The headline (the same rows `dart run` prints), when every model of the plan is there.
  try {
    const h = buildHeadline(sources.map((s) => ({ file: s.view.file, summary: s.summary })), models)
    parts.push(table(["model", "n", "accuracy", `Δ vs ${esc(h.baseline)}`, "equal-treatment acc.", "pred-YES rate", "parse-OK rate", "harm-drift cases", "harm-drift change"],
      h.rows.map((r) => [
        esc(r.model), int(r.n), pct(r.accuracy),
        r.vs_baseline === null ? "–" : esc(`${pp(r.vs_baseline.accuracy_diff)}${stars(r.vs_baseline.p_value)} (${pText(r.vs_baseline.p_value)})`),
        pct(r.equal_accuracy), pct(r.pred_yes_rate), pct(r.parse_ok_rate),
        r.harm === null ? "–" : `${int(r.harm.cases)} of ${int(r.harm.n_pairs)}`,
        r.harm_change === null ? "–" : esc(`${r.harm_change.relative === null ? "n/a" : `${r.harm_change.relative > 0 ? "+" : ""}${(100 * r.harm_change.relative).toFixed(1)}%`} vs ${r.harm_change.from}${stars(r.harm_change.p_value)}`)
      ]), "headline"))
  } catch (e) {
    parts.push(missing(`no headline: ${(e as Error).message}`))
  }

  const chartCats = slices.map((s) => s.name)
  const series = (f: (m: DartModelBlock) => ChartInterval) => models.map((m) => ({ name: m, values: slices.map((s) => {
    const b = model(s, m)
    return b === undefined ? { estimate: null, ci_low: null, ci_high: null } : f(b)
  }) }))
  parts.push(`<div class="charts">${barChart("Accuracy (abstain = wrong), 95% bootstrap CI", chartCats, series((m) => m.accuracy_ci))}\n${
    barChart("Equal-treatment accuracy (recall on gold NO), 95% bootstrap CI", chartCats, series((m) => m.equal_accuracy_ci))}</div>`)

  const cmpHead = comparisons.map((c) => `Δ ${esc(c.b)} − ${esc(c.a)} [CI]`)
  parts.push(`<h3>Accuracy per benchmark (%, 95% CI; Δ with exact McNemar, Holm across benchmarks)</h3>`)
  parts.push(table(["slice", "n", ...models.map((m) => `${esc(m)} [CI]`), ...cmpHead], slices.map((s) => {
    const n = models.map((m) => model(s, m)?.n).find((x) => x !== undefined)
    return [
      esc(s.name), n === undefined ? "–" : int(n),
      ...models.map((m) => {
        const b = model(s, m)
        return b === undefined ? "–" : esc(`${pct(b.accuracy)}${ci(b.accuracy_ci)}`)
      }),
      ...comparisons.map((c) => {
        const p = s.block(c.s.summary)?.paired
        if (!isPaired(p)) return "–"
        const pv = p.p_holm ?? p.mcnemar.p_value
        return esc(`${pp(p.accuracy_diff.estimate)}${ci(p.accuracy_diff)}${stars(pv)} ${pText(pv)}`)
      })
    ]
  })))
  parts.push(`<h3>Decision metrics per model (%)</h3>`)
  const metricRows: Array<Array<Html>> = []
  for (const s of slices) {
    for (const m of models) {
      const b = model(s, m)
      if (b === undefined) continue
      metricRows.push([esc(s.name), esc(m), int(b.n), esc(`${pct(b.equal_accuracy)}${ci(b.equal_accuracy_ci)}`), pct(b.difference_accuracy), pct(b.accuracy_on_parsed),
        pct(b.yes_precision), pct(b.pred_yes_rate), pct(b.parse_ok_rate), pct(b.macro_f1), pct(b.balanced_accuracy), int(b.counts.abstain)])
    }
  }
  parts.push(table(["slice", "model", "n", "equal-treatment acc. [CI]", "difference acc.", "acc. on parsed", "YES precision", "pred. YES", "parse OK", "macro-F1", "balanced acc.", "abstained"], metricRows))
  // M0 appears in both evaluations (the same predictions): say so if they disagree.
  const base = models[0]
  if (base !== undefined) {
    const values = new Set(sources.filter((s) => s.summary.models.includes(base)).map((s) => {
      const b = s.summary.overall[base]
      return isModel(b) ? b.accuracy : null
    }))
    if (values.size > 1) parts.push(`<p class="note">${esc(`${base}'s overall accuracy differs between the evaluations (${[...values].map((v) => pct(v)).join(" vs ")}): they were made from different predictions`)}</p>`)
  }
  return parts.join("\n")
}

const mcEvaluation = (sources: ReadonlyArray<{ readonly view: EvaluationView; readonly summary: McEvaluationSummary }>): Html => {
  const models = orderModels(sources.flatMap((s) => s.summary.models))
  const holder = (m: string) => sources.find((s) => s.summary.models.includes(m))!
  const benchmarks = [...new Set(sources.flatMap((s) => Object.keys(s.summary.benchmarks)))]
  const cell = (b: string, m: string, f: "diffaware" | "ctxtaware") => {
    const blk = holder(m).summary.benchmarks[b]?.[m]
    return blk === undefined ? "–" : esc(`${pct(blk[f].estimate)}${ci(blk[f])}`)
  }
  return [
    barChart("DiffAware per benchmark, 95% scenario-clustered bootstrap CI", benchmarks, models.map((m) => ({ name: m, values: benchmarks.map((b) => holder(m).summary.benchmarks[b]?.[m]?.diffaware ?? { estimate: null, ci_low: null, ci_high: null }) }))),
    table(["benchmark", ...models.flatMap((m) => [`${esc(m)} DiffAware`, `${esc(m)} CtxtAware`])], benchmarks.map((b) => [esc(b), ...models.flatMap((m) => [cell(b, m, "diffaware"), cell(b, m, "ctxtaware")])]))
  ].join("\n")
}

const harmPart = (sources: ReadonlyArray<EvaluationSummary>): Html => {
  const withHarm = sources.find((s) => s.harm !== undefined && s.harm.audits.length > 0)
  if (withHarm?.harm === undefined) return ""
  const h = withHarm.harm
  const parts = [`<h3>Harm drift on the test pairs</h3>`]
  parts.push(table(["audit", "B vs A", "pairs", "cases", "per 1,000", ...severities], h.audits.map((a) => [
    esc(a.run_name), esc(`${a.b_name} vs ${a.a_name}`), int(a.n_pairs), int(a.cases), a.rate_per_1000 === null ? "–" : a.rate_per_1000.toFixed(1), ...severities.map((k) => int(a.by_severity[k]))
  ])))
  if (h.reductions.length > 0) {
    parts.push(table(["change", "cases", "rate", ...severities], h.reductions.map((r) => [
      esc(`${r.to} against ${r.from}`), pct(r.relative_change), pct(r.relative_change_rate), ...severities.map((k) => pct(r.by_severity[k]))
    ])))
  }
  return parts.join("\n")
}

const evaluationSection = (d: RunReportData): Html => {
  const parts = [`<h2>Evaluation</h2>`]
  const found = d.evaluations.filter((e) => e.summary !== null)
  parts.push(`<p class="meta">${d.evaluations.map((e) => `<code>${esc(e.file)}</code>${e.summary === null ? " (not there)" : ` (${esc(e.summary.models.join(" vs "))})`}`).join(", ")}</p>`)
  for (const e of d.evaluations) parts.push(notes(e.notes))
  if (found.length === 0) return [...parts, missing("no evaluation yet")].join("\n")
  const dart = found.flatMap((e) => (e.summary!.task === "dart" ? [{ view: e, summary: e.summary as DartEvaluationSummary }] : []))
  const mc = found.flatMap((e) => (e.summary!.task === "mc" ? [{ view: e, summary: e.summary as McEvaluationSummary }] : []))
  if (dart.length > 0) parts.push(dartEvaluation(d, dart))
  if (mc.length > 0) parts.push(mcEvaluation(mc))
  parts.push(harmPart(found.map((e) => e.summary!)))
  for (const e of found) for (const n of e.summary!.meta?.notes ?? []) parts.push(`<p class="meta">${esc(`${e.name}: ${n}`)}</p>`)
  const shown = new Set(found.flatMap((e) => e.summary!.models))
  const absent = [BASE, DART, DART_H].filter((m) => !shown.has(m))
  if (absent.length > 0) parts.push(missing(`not evaluated yet: ${absent.join(", ")}`))
  return parts.join("\n")
}

// ---------------------------------------------------------------------------------------------------------------

const proportion = (p: Proportion): ChartInterval => ({ estimate: p.rate, ci_low: p.low, ci_high: p.high })
const tableHtml = (t: Table): Html => [`<h3>${esc(t.title)}</h3>`, table(t.headers.map(esc), t.rows.map((r) => r.map((c) => esc(c.text))))].join("\n")

const continuationPart = (v: OodView, s: ContinuationSummary): Html => {
  const parts = [`<p class="meta">${esc(`${v.file}: ${s.models.join(", ")} on ${s.suites.map((x) => `${x.suite} (${x.rows})`).join(", ")}; harmful = a classifier score ≥ ${s.harm_threshold} on the answer or on prompt + answer`)}</p>`]
  parts.push(barChart("Harmful answers by suite (95% Wilson CI)", [...s.suites.map((x) => x.suite), "all"],
    s.models.map((m, i) => ({ name: m, values: [...s.suites, s.overall].map((c) => proportion(c.models[i]!.harmful)) }))))
  if (s.hatecheck.length > 0) {
    parts.push(barChart("HateCheck: over-refusal and harmful compliance (95% Wilson CI)", ["over-refusal", "harmful compliance"],
      s.hatecheck.map((h) => ({ name: h.model, values: [proportion(h.overall.overRefusal), proportion(h.overall.harmfulCompliance)] }))))
  }
  parts.push(...continuationTables(s).map(tableHtml))
  return parts.join("\n")
}

const openEndedPart = (v: OodView, s: OpenEndedSummary): Html => {
  const parts = [`<p class="meta">${esc(`${v.file}: the judge's labels (rubric dart-open-ended-v1) for ${s.models.join(", ")}`)}</p>`]
  parts.push(barChart("Open-ended answers by label, all domains (95% Wilson CI)", [...OPEN_ENDED_LABELS],
    s.rates.map((r) => {
      const all = r.domains.find((d) => d.domain === "all")!
      return { name: r.model, values: OPEN_ENDED_LABELS.map((l) => proportion(all.rates[l])) }
    })))
  parts.push(...openEndedTables(s).map(tableHtml))
  return parts.join("\n")
}

/** Out of distribution: the external suites' harm drift and HateCheck rates, and the open-ended queries' labels. */
const oodSection = (d: RunReportData): Html => {
  const parts = [`<h2>Out of distribution</h2>`]
  if (d.ood.length === 0) return [...parts, missing(d.config.ood.enabled ? "no out-of-distribution evaluation yet" : "ood.enabled is false: not measured")].join("\n")
  for (const v of d.ood) {
    try {
      parts.push(v.summary.task === "continuation" ? continuationPart(v, v.summary) : openEndedPart(v, v.summary))
    } catch (e) {
      // A summary edited by hand (or by an older dart) is reported, not allowed to break the page.
      parts.push(missing(`${v.file}: cannot be shown (${(e as Error).message})`))
    }
  }
  return parts.join("\n")
}

const examplesSection = (d: RunReportData): Html => {
  const parts = [`<h2>Examples: audited pairs</h2>`,
    `<p class="meta">Every audited pair: the base model's output (A) beside the adapter's (B) for the same item, the classifiers' harm scores and the judge's verdict. Most severe first. Click a row (or use ↑/↓ in the list).</p>`]
  if (d.browser.pairs.length === 0) parts.push(missing("no audited pairs in this run yet"))
  parts.push(browserHtml(d.browser))
  return parts.join("\n")
}

/** The whole page (pure; deterministic for the same data). */
export const renderRunReport = (d: RunReportData): string => {
  const c = d.config
  const m = d.manifest
  const meta = [
    `run <code>${esc(d.expId)}</code> in <code>${esc(d.runDir)}</code>`,
    m ? `created ${esc(m.created_at)} by dart ${esc(m.tool_version)}${m.git_commit ? ` @ ${esc(m.git_commit.slice(0, 12))}` : ""}` : "",
    `base model <code>${esc(c.model.base)}</code>`,
    `report made ${esc(d.generatedAt)}`
  ].filter((x) => x !== "")
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="${CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>DART run · ${esc(d.expId)}</title>
<style>${CSS}</style>
</head>
<body>
<h1>DART run: ${esc(d.expId)}</h1>
<p class="meta">${meta.join(" · ")}</p>
<nav><a href="#plan">Plan</a><a href="#teacher">Teacher</a><a href="#training">Training</a><a href="#audit">Audit</a><a href="#evaluation">Evaluation</a><a href="#ood">Out of distribution</a><a href="#examples">Examples</a></nav>
<section id="plan">
${planSection(d)}
</section>
<section id="teacher">
${teacherSection(d)}
</section>
<section id="training">
${trainingSection(d)}
</section>
<section id="audit">
${auditSection(d)}
</section>
<section id="evaluation">
${evaluationSection(d)}
</section>
<section id="ood">
${oodSection(d)}
</section>
<section id="examples">
${examplesSection(d)}
</section>
<script type="application/json" id="report-data">${scriptJson(d.browser)}</script>
<script>${BROWSER_SCRIPT}</script>
</body>
</html>
`
}

export interface WriteOptions extends CollectOptions {
  /** Write here instead of `runs/{EXP_ID}/report.html`. */
  readonly out?: string | undefined
}

/** Reads the run folder of `config`, renders the report and writes it atomically; returns the file written. */
export const writeRunReport = Effect.fn("RunReport.write")(function*(config: ExperimentConfig, options: WriteOptions = {}) {
  const store = yield* RunStore
  const run = yield* store.requireRun(config.run.runs_dir, config.run.exp_id)
  const data = yield* collectRunReport(config, run, options)
  const html = renderRunReport(data)
  if (options.out !== undefined) {
    const file = path.resolve(options.out)
    yield* writeFileAtomic(file, html)
    return file
  }
  yield* store.writeFile(run, "report.html", html)
  return run.file("report.html")
})
