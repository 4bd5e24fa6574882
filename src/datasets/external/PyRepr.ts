/**
 * Python's `repr()` of decoded JSON (`str(dict)`), for the original's RealToxicityPrompts prompt, which is the
 * `prompt` object's repr rather than its text. A number is a float when its JSON source had a `.` or an exponent.
 */
export type PyValue = string | number | boolean | null | PyFloat | ReadonlyArray<PyValue> | { readonly [k: string]: PyValue }

/** A JSON number that Python's `json` reads as a float. */
export class PyFloat {
  readonly value: number
  constructor(value: number) {
    this.value = value
  }
}

/** `JSON.parse` that keeps floats apart from integers (Node's reviver sees each number's source). */
export const parsePyJson = (text: string): unknown =>
  JSON.parse(text, (_key, value: unknown, context?: { source?: string }) =>
    typeof value === "number" && context?.source !== undefined && /[.eE]/.test(context.source) ? new PyFloat(value) : value)

/** `float.__repr__`: the shortest round-trip digits, scientific below 1e-4 and from 1e16. */
export const pyFloatRepr = (x: number): string => {
  if (Number.isNaN(x)) return "nan"
  if (!Number.isFinite(x)) return x > 0 ? "inf" : "-inf"
  if (x === 0) return Object.is(x, -0) ? "-0.0" : "0.0"
  const [mant, expText] = x.toExponential().split("e") as [string, string]
  const exp = Number(expText)
  const sign = mant.startsWith("-") ? "-" : ""
  const digits = mant.replace("-", "").replace(".", "")
  if (exp < -4 || exp >= 16) {
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits
    return `${sign}${m}e${exp < 0 ? "-" : "+"}${String(Math.abs(exp)).padStart(2, "0")}`
  }
  if (exp < 0) return `${sign}0.${"0".repeat(-exp - 1)}${digits}`
  const int = digits.slice(0, exp + 1).padEnd(exp + 1, "0")
  const frac = digits.slice(exp + 1)
  return `${sign}${int}.${frac === "" ? "0" : frac}`
}

// Python's non-printable set for str.__repr__: categories C* and Z* except the ASCII space.
const NON_PRINTABLE = /[\p{C}\p{Z}]/u

/** `str.__repr__`: single quotes unless the text has `'` and no `"`. */
export const pyStrRepr = (s: string): string => {
  const quote = s.includes("'") && !s.includes("\"") ? "\"" : "'"
  let out = quote
  for (const ch of s) {
    const cp = ch.codePointAt(0)!
    if (ch === quote || ch === "\\") out += `\\${ch}`
    else if (ch === "\t") out += "\\t"
    else if (ch === "\n") out += "\\n"
    else if (ch === "\r") out += "\\r"
    else if (ch !== " " && NON_PRINTABLE.test(ch)) {
      out += cp < 0x100 ? `\\x${cp.toString(16).padStart(2, "0")}` : cp < 0x10000 ? `\\u${cp.toString(16).padStart(4, "0")}` : `\\U${cp.toString(16).padStart(8, "0")}`
    } else out += ch
  }
  return out + quote
}

export const pyRepr = (v: unknown): string => {
  if (v === null || v === undefined) return "None"
  if (v === true) return "True"
  if (v === false) return "False"
  if (v instanceof PyFloat) return pyFloatRepr(v.value)
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : pyFloatRepr(v)
  if (typeof v === "string") return pyStrRepr(v)
  if (Array.isArray(v)) return `[${v.map(pyRepr).join(", ")}]`
  return `{${Object.entries(v as Record<string, unknown>).map(([k, x]) => `${pyStrRepr(k)}: ${pyRepr(x)}`).join(", ")}}`
}
