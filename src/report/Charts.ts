import { esc, num } from "./Html.ts"

/**
 * Static inline SVG charts for the reports (pure): no script, no fetch, deterministic text. The evaluation report
 * (src/evaluation/Report.ts) and the run report (src/report/RunReport.ts) draw with these.
 */

export const COLORS = ["#4e79a7", "#e15759", "#59a14f", "#f28e2b", "#76b7b2", "#b07aa1"]

/** A point estimate with its interval; any end may be missing. */
export interface ChartInterval {
  readonly estimate: number | null
  readonly ci_low: number | null
  readonly ci_high: number | null
}

export interface BarSeries {
  readonly name: string
  readonly values: ReadonlyArray<ChartInterval>
}

/** Grouped bars (one group per category, one bar per series) with CI whiskers; values are shares 0–1 unless `percent: false`. */
export const barChart = (title: string, categories: ReadonlyArray<string>, series: ReadonlyArray<BarSeries>, options: { readonly max?: number; readonly percent?: boolean } = {}): string => {
  const percent = options.percent ?? true
  const max = options.max ?? 1
  const barW = 18
  const gap = 22
  const left = 48
  const top = 28
  const plotH = 200
  const groupW = series.length * barW + gap
  const width = Math.max(560, left + categories.length * groupW + 10)
  const height = top + plotH + 36 + 16 * series.length
  const y = (v: number) => top + plotH - (Math.max(0, Math.min(v, max)) / max) * plotH
  const parts: Array<string> = []
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" aria-label="${esc(title)}" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">`)
  parts.push(`<text x="${left}" y="16" class="title">${esc(title)}</text>`)
  for (let t = 0; t <= 4; t++) {
    const v = (max * t) / 4
    parts.push(`<line x1="${left}" x2="${width - 10}" y1="${num(y(v))}" y2="${num(y(v))}" class="grid"/>`)
    parts.push(`<text x="${left - 6}" y="${num(y(v) + 4)}" class="tick" text-anchor="end">${percent ? `${Math.round(100 * v)}%` : num(v)}</text>`)
  }
  categories.forEach((cat, ci) => {
    const x0 = left + ci * groupW + gap / 2
    series.forEach((s, si) => {
      const v = s.values[ci]
      if (v === undefined || v.estimate === null) return
      const x = x0 + si * barW
      const label = `${s.name} · ${cat}: ${percent ? `${(100 * v.estimate).toFixed(1)}%` : num(v.estimate)}` +
        (v.ci_low !== null && v.ci_high !== null ? ` [${(100 * v.ci_low).toFixed(1)}, ${(100 * v.ci_high).toFixed(1)}]` : "")
      parts.push(`<rect class="bar" x="${num(x)}" y="${num(y(v.estimate))}" width="${barW - 3}" height="${num(y(0) - y(v.estimate))}" fill="${COLORS[si % COLORS.length]}"><title>${esc(label)}</title></rect>`)
      if (v.ci_low !== null && v.ci_high !== null) {
        const cx = num(x + (barW - 3) / 2)
        parts.push(`<path class="whisker" d="M${cx} ${num(y(v.ci_low))}V${num(y(v.ci_high))}M${num(x + 3)} ${num(y(v.ci_low))}H${num(x + barW - 6)}M${num(x + 3)} ${num(y(v.ci_high))}H${num(x + barW - 6)}"/>`)
      }
    })
    parts.push(`<text x="${num(x0 + (series.length * barW) / 2)}" y="${top + plotH + 16}" class="tick" text-anchor="middle">${esc(cat)}</text>`)
  })
  series.forEach((s, si) => {
    const ly = top + plotH + 26 + 16 * si
    parts.push(`<rect x="${left}" y="${ly}" width="12" height="12" fill="${COLORS[si % COLORS.length]}"/><text x="${left + 16}" y="${ly + 10}" class="tick">${esc(s.name)}</text>`)
  })
  parts.push("</svg>")
  return parts.join("\n")
}

/** A tick label: short, and in exponent form for values far from 1 (learning rates). */
const tick = (v: number, span: number): string => {
  if (v === 0) return "0"
  const a = Math.abs(v)
  if (a < 1e-3 || a >= 1e5) return v.toExponential(1)
  const digits = Math.max(0, Math.min(6, 2 - Math.floor(Math.log10(span > 0 ? span : a))))
  return v.toFixed(digits)
}

const extent = (values: ReadonlyArray<number>): [number, number] => {
  let lo = Number.POSITIVE_INFINITY
  let hi = Number.NEGATIVE_INFINITY
  for (const v of values) {
    if (!Number.isFinite(v)) continue
    if (v < lo) lo = v
    if (v > hi) hi = v
  }
  if (lo > hi) return [0, 1]
  if (lo === hi) return lo === 0 ? [0, 1] : [lo - Math.abs(lo) * 0.1, hi + Math.abs(hi) * 0.1]
  return [lo, hi]
}

export interface LineSeries {
  readonly name: string
  /** [x, y] in drawing order; non-finite values are skipped. */
  readonly points: ReadonlyArray<readonly [number, number]>
}

interface Frame {
  readonly width: number
  readonly height: number
  readonly left: number
  readonly top: number
  readonly plotW: number
  readonly plotH: number
  readonly x: (v: number) => number
  readonly y: (v: number) => number
}

const frame = (xs: [number, number], ys: [number, number], legendRows: number): Frame => {
  const width = 560
  const left = 64
  const top = 28
  const plotW = width - left - 16
  const plotH = 180
  const height = top + plotH + 40 + 16 * legendRows
  const [x0, x1] = xs
  const [y0, y1] = ys
  return {
    width, height, left, top, plotW, plotH,
    x: (v) => left + ((v - x0) / (x1 - x0 || 1)) * plotW,
    y: (v) => top + plotH - ((v - y0) / (y1 - y0 || 1)) * plotH
  }
}

const axes = (f: Frame, title: string, xs: [number, number], ys: [number, number], xLabel: string, integerX = false): Array<string> => {
  const parts = [`<text x="${f.left}" y="16" class="title">${esc(title)}</text>`]
  for (let t = 0; t <= 4; t++) {
    const v = ys[0] + ((ys[1] - ys[0]) * t) / 4
    parts.push(`<line x1="${f.left}" x2="${f.left + f.plotW}" y1="${num(f.y(v))}" y2="${num(f.y(v))}" class="grid"/>`)
    parts.push(`<text x="${f.left - 6}" y="${num(f.y(v) + 4)}" class="tick" text-anchor="end">${esc(tick(v, ys[1] - ys[0]))}</text>`)
  }
  for (let t = 0; t <= 4; t++) {
    const v = xs[0] + ((xs[1] - xs[0]) * t) / 4
    parts.push(`<text x="${num(f.x(v))}" y="${f.top + f.plotH + 14}" class="tick" text-anchor="middle">${esc(integerX ? String(Math.round(v)) : tick(v, xs[1] - xs[0]))}</text>`)
  }
  parts.push(`<text x="${f.left + f.plotW}" y="${f.top + f.plotH + 28}" class="tick" text-anchor="end">${esc(xLabel)}</text>`)
  return parts
}

const legend = (f: Frame, names: ReadonlyArray<string>): Array<string> =>
  names.map((name, i) => {
    const ly = f.top + f.plotH + 34 + 16 * i
    return `<rect x="${f.left}" y="${ly}" width="12" height="3" fill="${COLORS[i % COLORS.length]}"/><text x="${f.left + 16}" y="${ly + 5}" class="tick">${esc(name)}</text>`
  })

/** Lines over a numeric x axis (training curves): one `<path class="line">` per series with points. */
export const lineChart = (title: string, series: ReadonlyArray<LineSeries>, options: { readonly xLabel: string }): string => {
  const finite = series.map((s) => ({ ...s, points: s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y)) }))
  const xs = extent(finite.flatMap((s) => s.points.map((p) => p[0])))
  const ys = extent(finite.flatMap((s) => s.points.map((p) => p[1])))
  const f = frame(xs, ys, finite.length)
  const parts = [`<svg xmlns="http://www.w3.org/2000/svg" class="chart line-chart" role="img" aria-label="${esc(title)}" width="${f.width}" height="${f.height}" viewBox="0 0 ${f.width} ${f.height}">`]
  parts.push(...axes(f, title, xs, ys, options.xLabel, finite.every((s) => s.points.every(([x]) => Number.isInteger(x)))))
  finite.forEach((s, i) => {
    if (s.points.length === 0) return
    const color = COLORS[i % COLORS.length]
    const d = s.points.map(([x, y], k) => `${k === 0 ? "M" : "L"}${num(f.x(x))} ${num(f.y(y))}`).join("")
    parts.push(`<path class="line" d="${d}" stroke="${color}"><title>${esc(s.name)}</title></path>`)
    // A series of one point (or few) is drawn as dots too, so it is visible.
    if (s.points.length <= 40) for (const [x, y] of s.points) parts.push(`<circle cx="${num(f.x(x))}" cy="${num(f.y(y))}" r="2.5" fill="${color}"/>`)
  })
  parts.push(...legend(f, finite.map((s) => s.name)), "</svg>")
  return parts.join("\n")
}

export interface HistogramSeries {
  readonly name: string
  /** One count per bin. */
  readonly counts: ReadonlyArray<number>
}

/** Step outlines of histograms over the same bins, each as a share of its own total (score distributions). */
export const histogramChart = (title: string, edges: ReadonlyArray<number>, series: ReadonlyArray<HistogramSeries>, options: { readonly xLabel: string }): string => {
  const shares = series.map((s) => {
    const total = s.counts.reduce((a, c) => a + c, 0)
    return s.counts.map((c) => (total === 0 ? 0 : c / total))
  })
  const xs: [number, number] = [edges[0] ?? 0, edges[edges.length - 1] ?? 1]
  const ys: [number, number] = [0, Math.max(0.01, ...shares.flat())]
  const f = frame(xs, ys, series.length)
  const parts = [`<svg xmlns="http://www.w3.org/2000/svg" class="chart histogram" role="img" aria-label="${esc(title)}" width="${f.width}" height="${f.height}" viewBox="0 0 ${f.width} ${f.height}">`]
  parts.push(...axes(f, title, xs, ys, options.xLabel))
  series.forEach((s, i) => {
    const share = shares[i]!
    let d = `M${num(f.x(edges[0]!))} ${num(f.y(0))}`
    share.forEach((v, b) => {
      d += `V${num(f.y(v))}H${num(f.x(edges[b + 1]!))}`
    })
    d += `V${num(f.y(0))}`
    const total = s.counts.reduce((a, c) => a + c, 0)
    parts.push(`<path class="step" d="${d}" stroke="${COLORS[i % COLORS.length]}"><title>${esc(`${s.name}: ${total} values`)}</title></path>`)
  })
  parts.push(...legend(f, series.map((s) => s.name)), "</svg>")
  return parts.join("\n")
}

export interface TimelineRow {
  readonly label: string
  readonly startMs: number
  /** null while running or when the ledger has no finish. */
  readonly endMs: number | null
  readonly status: string
}

const STATUS_COLORS: Readonly<Record<string, string>> = { done: "#59a14f", running: "#4e79a7", failed: "#e15759", stopped: "#f28e2b", interrupted: "#b07aa1" }

/** When each ledger entry ran (its last run), as horizontal bars on one wall-clock axis. */
export const timelineChart = (title: string, rows: ReadonlyArray<TimelineRow>, nowMs: number, formatSeconds: (s: number) => string): string => {
  const start = Math.min(...rows.map((r) => r.startMs))
  const end = Math.max(...rows.map((r) => r.endMs ?? nowMs), start + 1000)
  const left = 16 + Math.ceil(6.2 * Math.max(8, ...rows.map((r) => r.label.length)))
  const top = 28
  const rowH = 18
  const plotW = 560
  const width = left + plotW + 90
  const height = top + rows.length * rowH + 30
  const x = (ms: number) => left + ((ms - start) / (end - start)) * plotW
  const parts = [`<svg xmlns="http://www.w3.org/2000/svg" class="chart timeline" role="img" aria-label="${esc(title)}" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">`]
  parts.push(`<text x="8" y="16" class="title">${esc(title)}</text>`)
  for (let t = 0; t <= 4; t++) {
    const ms = start + ((end - start) * t) / 4
    parts.push(`<line x1="${num(x(ms))}" x2="${num(x(ms))}" y1="${top - 4}" y2="${top + rows.length * rowH}" class="grid"/>`)
    parts.push(`<text x="${num(x(ms))}" y="${top + rows.length * rowH + 14}" class="tick" text-anchor="middle">+${esc(formatSeconds((ms - start) / 1000))}</text>`)
  }
  rows.forEach((r, i) => {
    const y = top + i * rowH
    const e = r.endMs ?? nowMs
    const w = Math.max(2, x(e) - x(r.startMs))
    parts.push(`<text x="${left - 6}" y="${y + 12}" class="tick" text-anchor="end">${esc(r.label)}</text>`)
    parts.push(`<rect class="span" x="${num(x(r.startMs))}" y="${y + 3}" width="${num(w)}" height="${rowH - 6}" fill="${STATUS_COLORS[r.status] ?? "#999"}"><title>${esc(`${r.label}: ${r.status}, ${formatSeconds((e - r.startMs) / 1000)}`)}</title></rect>`)
    parts.push(`<text x="${num(x(r.startMs) + w + 4)}" y="${y + 12}" class="tick">${esc(formatSeconds((e - r.startMs) / 1000))}</text>`)
  })
  parts.push("</svg>")
  return parts.join("\n")
}

/** Counts as horizontal bars, one row per label (a distribution over a few categories: severities). */
export const countChart = (title: string, entries: ReadonlyArray<readonly [string, number]>, colors: Readonly<Record<string, string>> = {}): string => {
  const left = 16 + Math.ceil(6.2 * Math.max(6, ...entries.map(([k]) => k.length)))
  const top = 28
  const rowH = 20
  const plotW = 240
  const width = left + plotW + 60
  const height = top + entries.length * rowH + 8
  const max = Math.max(1, ...entries.map(([, n]) => n))
  const parts = [`<svg xmlns="http://www.w3.org/2000/svg" class="chart counts" role="img" aria-label="${esc(title)}" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">`]
  parts.push(`<text x="8" y="16" class="title">${esc(title)}</text>`)
  entries.forEach(([label, n], i) => {
    const y = top + i * rowH
    const w = (n / max) * plotW
    parts.push(`<text x="${left - 6}" y="${y + 14}" class="tick" text-anchor="end">${esc(label)}</text>`)
    parts.push(`<rect class="bar" x="${left}" y="${y + 3}" width="${num(w)}" height="${rowH - 6}" fill="${colors[label] ?? COLORS[0]}"><title>${esc(`${label}: ${n}`)}</title></rect>`)
    parts.push(`<text x="${num(left + w + 4)}" y="${y + 14}" class="tick">${n.toLocaleString("en")}</text>`)
  })
  parts.push("</svg>")
  return parts.join("\n")
}
