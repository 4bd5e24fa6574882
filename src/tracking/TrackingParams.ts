/**
 * The resolved config as MLflow params: one param per leaf key (`training.lora.r`), a list of plain values as one
 * JSON param, a list of objects by index (`audit.classifiers.0.name`). Pure functions over plain data.
 */

export interface Param {
  readonly key: string
  readonly value: string
}

/** MLflow keeps params to this length on every store (newer servers accept more); longer values are cut with a marker. */
export const MAX_PARAM_VALUE = 500
/** MLflow's limit for param and metric names. */
export const MAX_KEY = 250
/** Where the whole config goes, so a cut value can be read in full. */
export const CONFIG_ARTIFACT = "config/config.json"
export const TRUNCATED_MARKER = ` …[truncated; whole value in artifact ${CONFIG_ARTIFACT}]`

/**
 * A name MLflow accepts: alphanumerics, `_`, `-`, `.`, space, `:` and `/` only, no `..` (the server treats names as
 * paths in places and refuses those), at most 250 characters.
 */
export const safeKey = (key: string): string => {
  const cleaned = key.replace(/[^A-Za-z0-9_\-. :/]/g, "_").replace(/\.{2,}/g, (m) => "_".repeat(m.length)).replace(/^\/+/, "")
  return cleaned.length <= MAX_KEY ? cleaned : cleaned.slice(0, MAX_KEY)
}

/** One path segment of a metric name: a `/` inside it would make a new level. */
export const safeSegment = (segment: string): string => safeKey(segment.replaceAll("/", "_"))

/** A value cut to MLflow's param length, the marker saying where the rest is. */
export const fitValue = (value: string): string =>
  value.length <= MAX_PARAM_VALUE ? value : `${value.slice(0, MAX_PARAM_VALUE - TRUNCATED_MARKER.length)}${TRUNCATED_MARKER}`

const isPlain = (v: unknown): boolean => v === null || typeof v !== "object"

const show = (v: unknown): string => (typeof v === "string" ? v : JSON.stringify(v) ?? "null")

/** Flattened params of a JSON tree, in key order as written; names made safe and unique, values fitted. */
export const flattenParams = (tree: unknown): Array<Param> => {
  const out: Array<Param> = []
  const seen = new Set<string>()
  const emit = (key: string, value: string) => {
    let k = safeKey(key)
    // Two keys that differ only in characters MLflow refuses would collide once cleaned: number the later one.
    for (let n = 2; seen.has(k); n++) k = safeKey(`${key}_${n}`)
    seen.add(k)
    out.push({ key: k, value: fitValue(value) })
  }
  const walk = (prefix: string, v: unknown) => {
    if (isPlain(v)) return emit(prefix, show(v))
    if (Array.isArray(v)) {
      if (v.length === 0 || v.every(isPlain)) return emit(prefix, JSON.stringify(v))
      v.forEach((x, i) => walk(`${prefix}.${i}`, x))
      return
    }
    const entries = Object.entries(v as Record<string, unknown>)
    if (entries.length === 0) return emit(prefix, "{}")
    for (const [k, x] of entries) walk(prefix === "" ? k : `${prefix}.${k}`, x)
  }
  walk("", tree)
  return out
}
