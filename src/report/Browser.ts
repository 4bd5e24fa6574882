import { severities } from "../domain/Severity.ts"
import type { BrowserData } from "./RunReportData.ts"
import { esc, int } from "./Html.ts"

/**
 * The run report's example browser: every audited pair (base output beside adapter output), its classifier scores
 * and the judge's verdict, filterable by audit, benchmark, severity and kind. The rows are embedded once as JSON
 * (src/report/Html.ts `scriptJson`) and drawn by the script below: only the rows in view exist in the DOM (a virtual
 * list), so 16,000 pairs open as fast as 16. Every untrusted text reaches the page through `textContent`.
 */

/** Row height of the virtual list, in pixels (the CSS's `.ex-row` height). */
const ROW_PX = 28

export const BROWSER_CSS = `
.ex-filters { display: flex; gap: 14px; flex-wrap: wrap; align-items: center; margin: 8px 0; }
.ex-filters label { font-size: 13px; } .ex-filters select, .ex-filters input { margin-left: 4px; }
#ex-count { color: #555; }
.ex-list { height: ${ROW_PX * 12}px; overflow-y: auto; border: 1px solid #ccc; }
.ex-spacer { position: relative; }
.ex-row { position: absolute; left: 0; right: 0; height: ${ROW_PX}px; line-height: ${ROW_PX}px; display: flex; gap: 10px; padding: 0 8px; cursor: pointer;
  border-bottom: 1px solid #eee; white-space: nowrap; overflow: hidden; font-size: 13px; box-sizing: border-box; }
.ex-row:hover { background: #f5f7fb; } .ex-row.sel { background: #dde8f7; }
.ex-row .c-bench { width: 34px; } .ex-row .c-id { width: 150px; overflow: hidden; text-overflow: ellipsis; } .ex-row .c-audit { width: 120px; color: #555; }
.ex-row .c-delta { width: 70px; text-align: right; font-variant-numeric: tabular-nums; } .ex-row .c-judge { width: 130px; color: #555; }
.ex-row .c-snip { flex: 1; color: #777; overflow: hidden; text-overflow: ellipsis; }
.sev { display: inline-block; min-width: 64px; text-align: center; border-radius: 3px; font-size: 12px; line-height: 18px; padding: 0 4px; align-self: center; }
.sev-none { background: #eee; } .sev-mild { background: #fde9b5; } .sev-moderate { background: #f9c784; }
.sev-severe { background: #e8704f; color: #fff; } .sev-extreme { background: #a11; color: #fff; }
.ex-detail { margin-top: 12px; }
.ex-head { display: flex; gap: 12px; align-items: baseline; flex-wrap: wrap; }
.ex-question { margin: 8px 0; padding: 8px; background: #f4f6f9; border-left: 3px solid #4e79a7; white-space: pre-wrap; }
.ex-cols { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; }
.ex-side h4 { margin: 4px 0; font-size: 13px; }
.ex-text { white-space: pre-wrap; word-break: break-word; background: #fafafa; border: 1px solid #e5e5e5; padding: 8px; margin: 0; max-height: 420px; overflow: auto;
  font: 12.5px/1.45 ui-monospace, SFMono-Regular, Menlo, monospace; }
.ex-scores { margin: 10px 0; } .ex-judge { margin: 8px 0; } .ex-reason { margin: 4px 0; white-space: pre-wrap; }
.muted { color: #777; }
`

/** The browser's markup: filters (options from the data, escaped), the list and the detail pane. */
export const browserHtml = (data: BrowserData): string => {
  const audits = data.audits.map((a, i) => `<option value="${i}">${esc(`${a.name} (${a.b} vs ${a.a})`)}</option>`).join("")
  const benchmarks = data.benchmarks.map((b, i) => ({ b, i })).sort((x, y) => (x.b < y.b ? -1 : x.b > y.b ? 1 : 0))
    .map(({ b, i }) => `<option value="${i}">${esc(b)}</option>`).join("")
  const sev = [...severities].reverse().map((s) => `<option value="${s}">${s}</option>`).join("")
  return `<div class="ex-filters" id="ex-filters">
<label>Audit <select id="f-audit"><option value="">all</option>${audits}</select></label>
<label>Benchmark <select id="f-benchmark"><option value="">all</option>${benchmarks}</select></label>
<label>Severity <select id="f-severity"><option value="">all</option><option value="regression">any regression (in the pool)</option>${sev}<option value="none">none (not in the pool)</option></select></label>
<label>Kind <select id="f-kind"><option value="">all pairs</option><option value="fp">classifier false positives (judge: no regression)</option><option value="missed">judge regressions the classifiers missed</option><option value="failed">judge failures</option></select></label>
<label>Search <input id="f-search" type="search" placeholder="id or text"></label>
<span id="ex-count" data-count="0">${int(data.pairs.length)} pairs</span>
</div>
<div class="ex-list" id="ex-list" role="listbox" tabindex="0"><div class="ex-spacer" id="ex-spacer"></div></div>
<div class="ex-detail" id="ex-detail"></div>`
}

/**
 * The page's one script. Plain ES2020, no imports, no network; reads `#report-data` and draws the browser, then
 * marks `dart-report-ready` (performance.mark, and `data-ready` on <html>) so a test can time it.
 */
export const BROWSER_SCRIPT = `"use strict";
(function () {
  var ROW = ${ROW_PX};
  var $ = function (id) { return document.getElementById(id); };
  var node = $("report-data");
  var D = node ? JSON.parse(node.textContent) : { audits: [], benchmarks: [], texts: [], pairs: [] };
  var T = D.texts, P = D.pairs, A = D.audits, B = D.benchmarks;
  var list = $("ex-list"), spacer = $("ex-spacer"), count = $("ex-count"), detail = $("ex-detail");
  var fAudit = $("f-audit"), fBench = $("f-benchmark"), fSev = $("f-severity"), fKind = $("f-kind"), fText = $("f-search");
  if (!list) { done(); return; }
  var shown = [], selected = -1, drawn = "", pending = false, lower = null;

  function el(tag, cls, s) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (s !== undefined && s !== null) e.textContent = String(s);
    return e;
  }
  function fmt(x) { return typeof x === "number" && x > -1.5 ? x.toFixed(3) : "\\u2013"; }
  function name(i) { var p = P[i]; return p[1] + (p[2] ? " #" + p[2] : ""); }
  function judgeText(j) { return !j ? "" : j.length === 1 ? "judge failed" : j[0]; }

  function matches(p, audit, bench, sev, kind, q, i) {
    if (audit !== "" && p[0] !== +audit) return false;
    if (bench !== "" && p[3] !== +bench) return false;
    if (sev === "regression") { if (!(p[15] & 1)) return false; }
    else if (sev !== "" && p[4] !== sev) return false;
    if (kind === "fp" && !((p[15] & 2) && p[14] && p[14].length === 5 && !(p[15] & 8))) return false;
    if (kind === "missed" && !(!(p[15] & 2) && (p[15] & 8))) return false;
    if (kind === "failed" && !(p[15] & 16)) return false;
    if (q !== "") {
      if (lower === null) lower = T.map(function (t) { return t.toLowerCase(); });
      if (p[1].toLowerCase().indexOf(q) < 0 && lower[p[6]].indexOf(q) < 0 && lower[p[7]].indexOf(q) < 0 && lower[p[8]].indexOf(q) < 0) return false;
    }
    return true;
  }

  function apply() {
    var audit = fAudit.value, bench = fBench.value, sev = fSev.value, kind = fKind.value, q = fText.value.trim().toLowerCase();
    shown = [];
    for (var i = 0; i < P.length; i++) if (matches(P[i], audit, bench, sev, kind, q, i)) shown.push(i);
    count.textContent = shown.length.toLocaleString("en") + " of " + P.length.toLocaleString("en") + " pairs";
    count.setAttribute("data-count", String(shown.length));
    spacer.style.height = (shown.length * ROW) + "px";
    list.scrollTop = 0;
    drawn = "";
    select(shown.indexOf(selected) >= 0 ? selected : shown.length > 0 ? shown[0] : -1);
    draw();
  }

  function row(i, k) {
    var p = P[i], a = A[p[0]];
    var r = el("div", "ex-row" + (i === selected ? " sel" : ""));
    r.style.top = (k * ROW) + "px";
    r.setAttribute("role", "option");
    r.setAttribute("data-index", String(i));
    r.setAttribute("data-benchmark", B[p[3]]);
    r.setAttribute("data-severity", p[4]);
    r.setAttribute("data-audit", a.name);
    r.appendChild(el("span", "sev sev-" + p[4], p[4]));
    r.appendChild(el("span", "c-bench", B[p[3]]));
    r.appendChild(el("span", "c-id", name(i)));
    r.appendChild(el("span", "c-audit", a.b + " vs " + a.a));
    r.appendChild(el("span", "c-delta", "\\u0394 " + fmt(p[12])));
    r.appendChild(el("span", "c-judge", judgeText(p[14])));
    r.appendChild(el("span", "c-snip", T[p[8]].slice(0, 200)));
    return r;
  }

  function draw() {
    var h = list.clientHeight || ROW * 12;
    var first = Math.max(0, Math.floor(list.scrollTop / ROW) - 8);
    var last = Math.min(shown.length, Math.ceil((list.scrollTop + h) / ROW) + 8);
    var key = first + ":" + last + ":" + selected;
    if (key === drawn) return;
    drawn = key;
    var frag = document.createDocumentFragment();
    for (var k = first; k < last; k++) frag.appendChild(row(shown[k], k));
    spacer.replaceChildren(frag);
  }

  function side(cls, who, conclusion, body) {
    var d = el("div", "ex-side " + cls);
    d.appendChild(el("h4", null, who + (conclusion ? " \\u00b7 Conclusion: " + conclusion : "")));
    d.appendChild(el("pre", "ex-text", body));
    return d;
  }

  function select(i) {
    selected = i;
    drawn = "";
    detail.replaceChildren();
    if (i < 0) { detail.appendChild(el("p", "muted", "No pair matches the filters.")); return; }
    var p = P[i], a = A[p[0]];
    var head = el("div", "ex-head");
    head.appendChild(el("span", "sev sev-" + p[4], p[4] === "none" ? "not in pool" : p[4]));
    head.appendChild(el("strong", "ex-name", name(i)));
    head.appendChild(el("span", null, B[p[3]] + " \\u00b7 gold " + p[9] + " \\u00b7 " + a.name + (p[5] ? " \\u00b7 source " + p[5] : "") +
      (p[16] && p[16] !== "none" ? " \\u00b7 classifier bin " + p[16] : "")));
    detail.appendChild(head);
    detail.appendChild(el("div", "ex-question", T[p[6]]));
    var cols = el("div", "ex-cols");
    cols.appendChild(side("ex-a", a.a, p[10], T[p[7]]));
    cols.appendChild(side("ex-b", a.b, p[11], T[p[8]]));
    detail.appendChild(cols);
    if (p[13] && a.scores.length > 0) {
      var t = el("table", "ex-scores"), tr = el("tr");
      ["view", "classifier", a.a, a.b, "\\u0394"].forEach(function (h) { tr.appendChild(el("th", null, h)); });
      t.appendChild(tr);
      for (var s = 0; s < a.scores.length; s++) {
        tr = el("tr");
        tr.appendChild(el("th", null, a.scores[s][0]));
        tr.appendChild(el("td", null, a.scores[s][1]));
        tr.appendChild(el("td", null, fmt(p[13][3 * s])));
        tr.appendChild(el("td", null, fmt(p[13][3 * s + 1])));
        tr.appendChild(el("td", null, fmt(p[13][3 * s + 2])));
        t.appendChild(tr);
      }
      detail.appendChild(t);
    }
    var j = p[14], jd = el("div", "ex-judge");
    if (!j) jd.appendChild(el("span", "muted", "Not judged."));
    else if (j.length === 1) jd.appendChild(el("span", null, "Judge failed: " + j[0]));
    else {
      jd.appendChild(el("strong", null, "Judge: " + (j[0] || "?") + (j[1] ? " (" + j[1] + ")" : "")));
      jd.appendChild(el("span", null, " \\u2014 " + a.a + (j[3] ? " correct" : " wrong") + ", " + a.b + (j[4] ? " correct" : " wrong")));
      jd.appendChild(el("p", "ex-reason", j[2]));
    }
    detail.appendChild(jd);
  }

  function done() {
    if (window.performance && performance.mark) performance.mark("dart-report-ready");
    document.documentElement.setAttribute("data-ready", "1");
  }

  [fAudit, fBench, fSev, fKind].forEach(function (f) { f.addEventListener("change", apply); });
  var timer = 0;
  fText.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(apply, 150); });
  list.addEventListener("scroll", function () {
    if (pending) return;
    pending = true;
    requestAnimationFrame(function () { pending = false; draw(); });
  });
  spacer.addEventListener("click", function (e) {
    var r = e.target.closest(".ex-row");
    if (r) { select(+r.getAttribute("data-index")); draw(); }
  });
  list.addEventListener("keydown", function (e) {
    if (e.key !== "ArrowDown" && e.key !== "ArrowUp") return;
    e.preventDefault();
    var k = shown.indexOf(selected) + (e.key === "ArrowDown" ? 1 : -1);
    if (k < 0 || k >= shown.length) return;
    select(shown[k]);
    if (k * ROW < list.scrollTop) list.scrollTop = k * ROW;
    else if ((k + 1) * ROW > list.scrollTop + list.clientHeight) list.scrollTop = (k + 1) * ROW - list.clientHeight;
    draw();
  });
  apply();
  done();
})();
`
