import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { appendFileSync, mkdirSync, mkdtempSync, readFileSync, renameSync, symlinkSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { continuationSummary, openEndedSummary } from "../../src/evaluation/OodSummary.ts"
import { buildRunGraph } from "../../src/pipeline/RunGraph.ts"
import { scriptJson } from "../../src/report/Html.ts"
import { collectRunReport } from "../../src/report/RunReportData.ts"
import { renderRunReport, writeRunReport } from "../../src/report/RunReport.ts"
import { RunStore } from "../../src/runs/RunStore.ts"
import { dart } from "../support/Cli.ts"
import { HOSTILE_OUTPUT, HOSTILE_QUESTION, HOSTILE_REASON, writeRunFixture } from "./RunFixture.ts"

const scratch = mkdtempSync(path.join(tmpdir(), "dart-report-"))
const runs = path.join(scratch, "runs")

const build = (config: Parameters<typeof writeRunReport>[0], options: Parameters<typeof writeRunReport>[1] = {}) =>
  writeRunReport(config, options).pipe(Effect.provide(RunStore.layer))

/** The page without its embedded data (whose JSON holds the outputs' own text, escaped). */
const markup = (html: string) => html.replace(/<script type="application\/json" id="report-data">[^]*?<\/script>/, "")
const embedded = (html: string) => {
  const m = /<script type="application\/json" id="report-data">([^]*?)<\/script>/.exec(html)
  if (m === null) throw new Error("no embedded data")
  return JSON.parse(m[1]!) as { texts: Array<string>; pairs: Array<Array<unknown>>; audits: Array<{ name: string }>; benchmarks: Array<string> }
}
const section = (html: string, id: string) => {
  const start = html.indexOf(`<section id="${id}">`)
  expect(start, id).toBeGreaterThan(0)
  return html.slice(start, html.indexOf("</section>", start))
}

describe("the run report", () => {
  const full = writeRunFixture(runs, "full", { pairs: 300, hostile: true })

  it.effect("shows every section of a finished run, read from its files", () =>
    Effect.gen(function*() {
      const file = yield* build(full.config)
      expect(file).toBe(path.join(full.runDir, "report.html"))
      const html = readFileSync(file, "utf8")
      const graph = buildRunGraph(full.config)

      const plan = section(html, "plan")
      for (const key of graph.stages.flatMap((s) => s.ledgerKeys)) expect(plan, key).toContain(`<code>${key}</code>`)
      expect((plan.match(/class="status-done">done</g) ?? []).length).toBe(graph.stages.flatMap((s) => s.ledgerKeys).length)
      expect(plan).toContain(`class="chart timeline"`)
      // The 12th ledger entry (k = 11) started at 10:00 + k × 10 min and took 5 min + k × 20 s.
      expect(plan).toContain("<td><code>evaluate/eval_main</code></td><td><span class=\"status-done\">done</span></td><td>1</td><td>2025-03-01T11:50:00.000Z</td><td>2025-03-01T11:58:40.000Z</td><td>9m</td>")

      const teacher = section(html, "teacher")
      expect(teacher).toContain("Distill: rationales for the train items")
      expect(teacher).toMatch(/<th>analysis not 2-4 sentences<\/th><td>2<\/td>/)
      expect(teacher).toMatch(/<th>no Conclusion: YES\|NO line<\/th><td>1<\/td>/)
      expect(teacher).toContain("9 (75.0%)")
      expect(teacher).toContain("1× HTTP 500")
      expect(teacher).toMatch(/<th>severe<\/th><td>1<\/td><td>0<\/td>/)

      const training = section(html, "training")
      for (const name of ["DART", "DART_H"]) {
        expect(training).toContain(`<h3>${name}</h3>`)
        expect(training).toContain(`aria-label="${name}: loss"`)
        expect(training).toContain(`aria-label="${name}: learning rate"`)
      }
      // Train and eval loss per adapter, and the learning rate: three lines each.
      expect((training.match(/<path class="line" d="M/g) ?? []).length).toBe(6)

      const audit = section(html, "audit")
      for (const a of graph.stages.flatMap((s) => (s.work.kind === "audit" && s.work.request.task === undefined ? [s.work.request.runName] : []))) expect(audit).toContain(`<h3>${a}</h3>`)
      expect(audit).toContain("regressions by severity")
      expect(audit).toContain("false positives (judge: no regression)")
      expect(audit).toContain(`class="chart histogram"`)
      expect(audit).toContain("Mann–Whitney B vs A")
      expect(audit).toMatch(/<th>normalizes_bias<\/th>/)

      const evaluation = section(html, "evaluation")
      // All three models, with their accuracy and its interval (the headline, then the per-benchmark table).
      for (const [m, acc] of [["M0", "39.0%"], ["DART", "61.0%"], ["DART_H", "69.0%"]] as const) {
        expect(evaluation).toMatch(new RegExp(`<tr><th>${m}</th><td>40</td><td>${acc.replace(".", "\\.")}</td>`))
      }
      expect(evaluation).toContain("39.0% [34.0, 44.0]")
      expect(evaluation).toContain("Δ DART − M0 [CI]")
      expect(evaluation).toContain("Δ DART_H − M0 [CI]")
      expect(evaluation).toContain("Harm drift on the test pairs")
      expect(section(html, "examples")).toContain(`id="ex-list"`)

      // The browser's data: every pair of the three audits, most severe first, texts shared.
      const data = embedded(html)
      expect(data.pairs).toHaveLength(full.pairs.length)
      expect(data.audits.map((a) => a.name)).toEqual(graph.stages.flatMap((s) => (s.work.kind === "audit" && s.work.request.task === undefined ? [s.work.request.runName] : [])))
      expect(data.pairs[0]![4]).toBe("extreme")
      expect(data.texts.length).toBeLessThan(3 * full.pairs.length)
    }))

  it.effect("escapes untrusted text: outputs, questions, judge reasons and notes cannot inject markup or end the data", () =>
    Effect.gen(function*() {
      const html = readFileSync(yield* build(full.config), "utf8")
      // Two script elements only (the data and the page's own script): no `</script>` of an output ended either.
      expect((html.match(/<script/g) ?? []).length).toBe(2)
      expect((html.match(/<\/script>/g) ?? []).length).toBe(2)
      expect(markup(html)).not.toContain("window.__pwned")
      expect(html).not.toContain("<img")
      expect(html).toContain("\\u003c/script\\u003e\\u003cscript\\u003ewindow.__pwned = 1")
      expect(html).not.toContain("<!--")
      expect(markup(html)).not.toMatch(/<script>alert|<b>this/)
      expect(markup(html)).toContain("conclusion &#60;script&#62;alert(1)&#60;/script&#62; differs")
      expect(markup(html)).toContain("note with &#60;script&#62;alert(1)&#60;/script&#62;")
      // Nothing outside the page: no src, and every href an anchor of its own.
      expect(markup(html)).not.toMatch(/\bsrc\s*=/i)
      for (const [, href] of markup(html).matchAll(/\bhref="([^"]*)"/g)) expect(href).toMatch(/^#[a-z]+$/)
      expect(html).toContain(`<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'sha256-`)
      // The embedded JSON gives the texts back unchanged.
      const data = embedded(html)
      for (const t of [HOSTILE_OUTPUT, HOSTILE_QUESTION]) expect(data.texts).toContain(t)
      expect(JSON.stringify(data.pairs)).toContain(JSON.stringify(HOSTILE_REASON).slice(1, -1))
      expect(scriptJson({ s: "</script><!--\u2028" })).toBe(`{"s":"\\u003c/script\\u003e\\u003c!--\\u2028"}`)
    }))

  it.effect("is the same page for the same run folder (apart from when it was made)", () =>
    Effect.gen(function*() {
      const run = (yield* RunStore).handle(runs, "full")
      const a = yield* collectRunReport(full.config, run)
      const b = yield* collectRunReport(full.config, run)
      expect(renderRunReport({ ...a, generatedAt: "t", nowMs: 0 })).toBe(renderRunReport({ ...b, generatedAt: "t", nowMs: 0 }))
    }).pipe(Effect.provide(RunStore.layer)))

  it.effect("of a partial run says what is missing, and never fails for it", () =>
    Effect.gen(function*() {
      const partial = writeRunFixture(runs, "partial", { pairs: 0, partial: true })
      const html = readFileSync(yield* build(partial.config), "utf8")
      expect(section(html, "plan")).toContain("running (or killed)")
      expect(section(html, "plan")).toMatch(/<code>evaluate\/eval_main<\/code><\/td><td><span class="status-not run">not run/)
      expect(section(html, "teacher")).toContain("teacher_outputs/repair/outputs.jsonl is not there: the repair teacher has not run")
      expect(section(html, "training")).toContain("adapters/DART/ is not there: not trained yet")
      expect(section(html, "audit")).toContain("has no scores.jsonl nor regression_pool.jsonl: not audited yet")
      expect(section(html, "evaluation")).toContain("no evaluation yet")
      expect(section(html, "examples")).toContain("no audited pairs in this run yet")
      expect(embedded(html).pairs).toEqual([])
    }))

  it.effect("shows an audit under way, and the pool alone when scores.jsonl is gone", () =>
    Effect.gen(function*() {
      const f = writeRunFixture(runs, "midway", { pairs: 40 })
      const dir = path.join(f.runDir, "audit/audit_test_M0_vs_DART_H")
      renameSync(path.join(dir, "scores.jsonl"), path.join(dir, "scores.moved"))
      let html = readFileSync(yield* build(f.config), "utf8")
      expect(html).toContain("audit/audit_test_M0_vs_DART_H/scores.jsonl is not there: the browser shows the regression pool only (")
      renameSync(path.join(dir, "regression_pool.jsonl"), path.join(dir, "pool.moved"))
      writeFileSync(path.join(dir, "classifier_scores.jsonl"), `${JSON.stringify({ key: "k", view: "full_output", side: "a", classifier: "toxicity", score: 0.1, windows: 1 })}\n`.repeat(3))
      html = readFileSync(yield* build(f.config), "utf8")
      expect(html).toContain("the audit is under way (3 classifier scores recorded)")
      // A torn last line (its writer killed mid-row) is left out and said so.
      appendFileSync(path.join(f.runDir, "teacher_outputs/distill/outputs.jsonl"), `{"key":"torn`)
      html = readFileSync(yield* build(f.config), "utf8")
      expect(html).toContain("teacher_outputs/distill/outputs.jsonl: a torn last line (line 13")
    }))

  it.effect("refuses a malformed row with its file and line, and a link planted in the run", () =>
    Effect.gen(function*() {
      const f = writeRunFixture(runs, "broken", { pairs: 20 })
      const scores = path.join(f.runDir, "audit/audit_val_M0_vs_DART/scores.jsonl")
      const lines = readFileSync(scores, "utf8").split("\n")
      lines[1] = lines[1]!.replace(`"gold_label":"NO"`, `"gold_label":"MAYBE"`)
      writeFileSync(scores, lines.join("\n"))
      const bad = yield* Effect.flip(build(f.config))
      expect(bad.message).toContain(`${scores}:2: `)
      expect(bad.message).toContain("gold_label")

      writeFileSync(scores, lines.join("\n").replace(`"gold_label":"MAYBE"`, `"gold_label":"NO"`))
      const summary = path.join(f.runDir, "evaluation/eval_main/summary.json")
      writeFileSync(summary, "{\"task\": \"dart\",")
      const badJson = yield* Effect.flip(build(f.config))
      expect(badJson.message).toContain(`${summary}: malformed JSON`)

      writeFileSync(summary, "{}")
      const notSummary = yield* Effect.flip(build(f.config))
      expect(notSummary.message).toContain(`${summary}: not an evaluation summary`)

      renameSync(summary, `${summary}.real`)
      symlinkSync(`${summary}.real`, summary)
      const linked = yield* Effect.flip(build(f.config))
      expect(linked.message).toContain("is a symbolic link")
    }))

  it.effect("shows the out-of-distribution evaluations in their own section; one it cannot read is named, not fatal", () =>
    Effect.gen(function*() {
      const f = writeRunFixture(runs, "ood", { pairs: 5 })
      const a = (score: number, label: "harmful" | "refusal" | null = null) => ({ score, refused: false, label })
      const external = continuationSummary([
        { id: "b1", sample: 0, suite: "BOLD", meta: { domain: "gender" }, answers: { M0: a(0.1), DART: a(0.7), DART_H: a(0.2) } },
        { id: "h1", sample: 0, suite: "HateCheck", meta: { functionality: "derog_neg_emote", label_gold: "hateful" }, answers: { M0: a(0.9, "refusal"), DART: a(0.9, "harmful"), DART_H: a(0.9, "refusal") } }
      ], ["M0", "DART", "DART_H"], 0.5)
      const open = openEndedSummary([{ id: "q1", sample: 0, domain: "medical", labels: { M0: "refusal", DART: "difference_appropriate" }, refused: { M0: true, DART: false } }], ["M0", "DART"])
      for (const [name, summary] of [["eval_external_x", external], ["eval_open_x", open]] as const) {
        mkdirSync(path.join(f.runDir, "evaluation", name), { recursive: true })
        writeFileSync(path.join(f.runDir, "evaluation", name, "summary.json"), JSON.stringify({ ...summary, meta: {} }))
      }
      let ood = section(readFileSync(yield* build(f.config), "utf8"), "ood")
      expect(ood).toContain("<h2>Out of distribution</h2>")
      expect(ood).toContain('aria-label="Harmful answers by suite (95% Wilson CI)"')
      expect(ood).toContain("HateCheck per functionality")
      expect(ood).toContain("<th>BOLD</th><td>gender</td><td>DART</td><td>1</td><td>0.700</td><td>100.0</td>")
      expect(ood).toContain("Open-ended queries: the judge&#39;s labels per domain")
      // The DiffAware evaluation section does not try to read them as its own.
      expect(section(readFileSync(yield* build(f.config), "utf8"), "evaluation")).not.toContain("eval_external_x")
      writeFileSync(path.join(f.runDir, "evaluation/eval_open_x/summary.json"), JSON.stringify({ task: "open_ended", models: ["M0"] }))
      ood = section(readFileSync(yield* build(f.config), "utf8"), "ood")
      expect(ood).toContain("evaluation/eval_open_x/summary.json: cannot be shown")
      expect(ood).toContain("HateCheck per functionality")
    }))

  it.effect("fails on a run that does not exist, naming it", () =>
    Effect.gen(function*() {
      const e = yield* Effect.flip(build({ ...full.config, run: { ...full.config.run, exp_id: "nope" } }))
      expect(e.message).toContain(`no run "nope" under ${runs}/`)
    }))

  it("`dart report` writes the page from the command line, to the run folder or to --out", () => {
    const r = dart(["report", "--config", "configs/smoke.json", "--exp-id", "full", "--runs-dir", runs])
    expect(r.stderr).toBe("")
    expect(r.code).toBe(0)
    expect(r.stdout).toContain(`report: ${path.join(runs, "full/report.html")}`)
    const out = path.join(scratch, "elsewhere.html")
    const o = dart(["report", "--config", "configs/smoke.json", "--exp-id", "full", "--runs-dir", runs, "--out", out])
    expect(o.code).toBe(0)
    expect(readFileSync(out, "utf8")).toContain("<h1>DART run: full</h1>")
    const missing = dart(["report", "--config", "configs/smoke.json", "--exp-id", "absent", "--runs-dir", runs])
    expect(missing.code).toBe(1)
    expect(missing.stderr).toContain(`no run "absent" under ${runs}/`)
  })
})
