/** OodTables: the out-of-distribution tables (CSV, LaTeX, Markdown through Tables.ts) of a continuation or open-ended summary. */
import { OPEN_ENDED_LABELS } from "../audit/OpenEndedRubric.ts"
import type { ContinuationSummary, HarmCell, OpenEndedSummary } from "./OodSummary.ts"
import type { Proportion } from "./Statistics.ts"
import { stars } from "./Statistics.ts"
import type { Cell, Table } from "./Tables.ts"

const text = (s: string): Cell => ({ text: s, raw: s })
const int = (x: number): Cell => ({ text: String(x), raw: x })
const num = (x: number | null, digits = 3): Cell => ({ text: x === null ? "–" : x.toFixed(digits), raw: x })
const pct = (p: Proportion): Cell => ({ text: p.rate === null ? "–" : (100 * p.rate).toFixed(1), raw: p.rate })
const ci = (p: Proportion): Cell => ({
  text: p.low === null || p.high === null ? "–" : `[${(100 * p.low).toFixed(1)}, ${(100 * p.high).toFixed(1)}]`,
  raw: [p.low, p.high]
})
const pval = (p: number | null | undefined): Cell => ({ text: p === null || p === undefined ? "–" : p < 0.001 ? "<0.001" : p.toFixed(3), raw: p ?? null, stars: stars(p ?? null) })
const change = (x: number | null): Cell => ({ text: x === null ? "–" : `${x > 0 ? "+" : ""}${(100 * x).toFixed(1)}%`, raw: x })

const cellRows = (suite: string, c: HarmCell): Array<Array<Cell>> =>
  c.models.map((m, i) => {
    const cmp = i === 0 ? undefined : c.comparisons[i - 1]
    return [
      text(suite), text(c.slice), text(m.model), int(c.rows), num(m.mean_score), pct(m.harmful), ci(m.harmful), pct(m.refusal),
      cmp === undefined ? text("–") : pct(cmp.regression_rate),
      cmp === undefined ? text("–") : num(cmp.mean_delta),
      pval(cmp?.wilcoxon?.p_value), pval(cmp?.mcnemar?.pValue)
    ]
  })

export const continuationTables = (s: ContinuationSummary): Array<Table> => [
  {
    name: "ood_harm",
    title: `External suites: harm by suite and slice (harmful = score ≥ ${s.harm_threshold}; B against ${s.models[0]})`,
    headers: ["Suite", "Slice", "Model", "Rows", "Mean score", "Harmful %", "95% CI", "Refusal %", "Regression %", "Δ score", "Wilcoxon p", "McNemar p"],
    rows: [...s.suites.flatMap((x) => [...cellRows(x.suite, x), ...x.slices.flatMap((c) => cellRows(x.suite, c))]), ...cellRows("all", s.overall)]
  },
  ...(s.drift_reduction.length === 0 ? [] : [{
    name: "ood_drift_reduction",
    title: "Drift reduction: the last model's drift against the second's, both from the base",
    headers: ["Suite", "Base", "From", "To", "Regression rate change", "Mean drift change"],
    rows: s.drift_reduction.map((d) => [text(d.suite), text(d.baseline), text(d.from), text(d.to), change(d.regression_rate_change), change(d.mean_drift_change)])
  }]),
  ...(s.hatecheck.length === 0 ? [] : [{
    name: "ood_hatecheck",
    title: "HateCheck per functionality: over-refusal (non-hateful cases) and harmful compliance (hateful cases, judged)",
    headers: ["Model", "Functionality", "Gold", "Cases", "Over-refusal %", "95% CI", "Harmful compliance %", "95% CI"],
    rows: s.hatecheck.flatMap((h) => [
      ...h.functionalities.map((f) => [
        text(h.model), text(f.functionality), text(f.label_gold), int(f.cases),
        f.overRefusal === null ? text("–") : pct(f.overRefusal), f.overRefusal === null ? text("–") : ci(f.overRefusal),
        f.harmfulCompliance === null ? text("–") : pct(f.harmfulCompliance), f.harmfulCompliance === null ? text("–") : ci(f.harmfulCompliance)
      ]),
      [text(h.model), text("all"), text("–"), int(h.functionalities.reduce((a, f) => a + f.cases, 0)),
        pct(h.overall.overRefusal), ci(h.overall.overRefusal), pct(h.overall.harmfulCompliance), ci(h.overall.harmfulCompliance)]
    ])
  }])
]

export const openEndedTables = (s: OpenEndedSummary): Array<Table> => [
  {
    name: "ood_open_ended",
    title: "Open-ended queries: the judge's labels per domain (rubric dart-open-ended-v1)",
    headers: ["Model", "Domain", "Judged", "Unjudged", ...OPEN_ENDED_LABELS.flatMap((l) => [`${l} %`, "95% CI"]), "Rule refusal %"],
    rows: s.rates.flatMap((r) =>
      r.domains.map((d) => [
        text(r.model), text(d.domain), int(d.judged), int(d.unjudged), ...OPEN_ENDED_LABELS.flatMap((l) => [pct(d.rates[l]), ci(d.rates[l])]),
        d.domain === "all" ? pct(r.rule_refusal) : text("–")
      ])
    )
  },
  {
    name: "ood_open_ended_paired",
    title: `Open-ended queries: B against ${s.models[0]} per label (McNemar over answers both had judged)`,
    headers: ["A", "B", "Domain", "Pairs", ...OPEN_ENDED_LABELS.flatMap((l) => [`${l} B+/A+`, "p"])],
    rows: s.paired.map((p) => [
      text(p.a), text(p.b), text(p.domain), int(p.pairs),
      ...OPEN_ENDED_LABELS.flatMap((l) => (p.tests === null ? [text("–"), text("–")] : [text(`${p.tests[l].b01}/${p.tests[l].b10}`), pval(p.tests[l].pValue)]))
    ])
  }
]
