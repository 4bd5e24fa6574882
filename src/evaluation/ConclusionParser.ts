/**
 * The pipeline's answer parser (docs/protocol.md §3): cut the output at the first
 * triple newline, then take the first `Conclusion: YES|NO` (case-insensitive);
 * anything else abstains. Python `re` semantics: Unicode `\s` and a Unicode word boundary.
 */
import type { Label } from "../domain/Label.ts"

export type Conclusion = Label

const PY_WS = "\\t\\n\\v\\f\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
const CONCLUSION = new RegExp(`Conclusion[${PY_WS}]*:[${PY_WS}]*(YES|NO)(?![\\p{L}\\p{N}\\p{Mn}\\p{Pc}])`, "iu")

export const parseConclusion = (text: string): Conclusion | null => {
  const cut = text.indexOf("\n\n\n")
  const m = CONCLUSION.exec(cut >= 0 ? text.slice(0, cut) : text)
  return m ? (m[1]!.toUpperCase() as Conclusion) : null
}

/** The analysis: the text before the conclusion line (the audit's `analysis_only` view). */
export const analysisOf = (text: string): string => {
  const cut = text.indexOf("\n\n\n")
  const body = cut >= 0 ? text.slice(0, cut) : text
  const m = CONCLUSION.exec(body)
  return (m ? body.slice(0, m.index) : body).trim()
}
