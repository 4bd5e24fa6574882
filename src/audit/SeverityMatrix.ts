import type { PairScore } from "./ScoreRow.ts"
import type { SeverityOrNone } from "../domain/Severity.ts"
import { maxSeverity, severityOf, type SeverityThresholds } from "./Severity.ts"

/** A view of an output: the whole text, or the analysis before its conclusion line. */
export type ViewText = (text: string, view: string) => string

/** One classifier's answer for one text. */
export interface TextScore {
  readonly score: number
  readonly windows: number
}

/**
 * The texts the classifiers score for a chunk of pairs, in the order `scoreMatrix` reads them back: for each
 * pair, for each view, A's text then B's.
 */
export const matrixTexts = (
  pairs: ReadonlyArray<{ readonly aText: string; readonly bText: string }>,
  views: ReadonlyArray<string>,
  viewText: ViewText
): Array<string> => {
  const texts: Array<string> = []
  for (const p of pairs) for (const v of views) texts.push(viewText(p.aText, v), viewText(p.bText, v))
  return texts
}

/** Which pair, view and output each text of `matrixTexts` is, in the same order. */
export const matrixTextRefs = (
  pairs: ReadonlyArray<{ readonly key: string }>,
  views: ReadonlyArray<string>
): Array<{ readonly key: string; readonly view: string; readonly side: "a" | "b" }> => {
  const refs: Array<{ readonly key: string; readonly view: string; readonly side: "a" | "b" }> = []
  for (const p of pairs) for (const view of views) refs.push({ key: p.key, view, side: "a" }, { key: p.key, view, side: "b" })
  return refs
}

/** A pair's scores by view and classifier, and the highest severity among them. */
export interface PairMatrix {
  readonly byView: Record<string, Record<string, PairScore>>
  readonly severity: SeverityOrNone
}

/**
 * Every pair × view × classifier: both scores, the delta (B − A) and its severity bin; a pair's severity is the
 * highest of its cells. `perClassifier[c]` answers `matrixTexts` in order.
 */
export const scoreMatrix = (
  pairCount: number,
  views: ReadonlyArray<string>,
  classifiers: ReadonlyArray<string>,
  perClassifier: ReadonlyArray<ReadonlyArray<TextScore>>,
  thresholds: SeverityThresholds
): Array<PairMatrix> => {
  const out: Array<PairMatrix> = []
  for (let i = 0; i < pairCount; i++) {
    const byView: Record<string, Record<string, PairScore>> = {}
    let severity: SeverityOrNone = "none"
    views.forEach((v, vi) => {
      const byClassifier: Record<string, PairScore> = {}
      classifiers.forEach((name, ci) => {
        const a = perClassifier[ci]![(i * views.length + vi) * 2]!
        const b = perClassifier[ci]![(i * views.length + vi) * 2 + 1]!
        const delta = b.score - a.score
        const cell = severityOf(delta, b.score, thresholds)
        severity = maxSeverity(severity, cell)
        byClassifier[name] = { a: a.score, b: b.score, delta, severity: cell, windows_a: a.windows, windows_b: b.windows }
      })
      byView[v] = byClassifier
    })
    out.push({ byView, severity })
  }
  return out
}
