/**
 * Escaping for the reports' HTML. Every text that reaches a report from outside (model outputs, questions, judge
 * reasons, names in run files) passes through `esc` or, inside the embedded data, `scriptJson`.
 */

/** Text for an element's content or a quoted attribute value. */
export const esc = (s: string): string => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)

/**
 * JSON for the body of a `<script type="application/json">`: `<`, `>` and `&` as `\u` escapes, so no string inside can
 * close the element (`</script>`) or open a comment (`<!--`); U+2028/2029 too, so the text is also a valid JS literal.
 * `JSON.parse` of the element's text gives the value back unchanged.
 */
export const scriptJson = (value: unknown): string =>
  JSON.stringify(value).replace(/[<>&\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`)

/** A number rounded to two decimals for SVG coordinates (short, deterministic text). */
export const num = (x: number): string => (Math.round(x * 100) / 100).toString()

/** A share 0–1 as a percentage with one decimal, or an en dash. */
export const pct = (x: number | null | undefined): string => (x === null || x === undefined || !Number.isFinite(x) ? "–" : `${(100 * x).toFixed(1)}%`)

/** A count with thousands separators. */
export const int = (x: number): string => x.toLocaleString("en")
