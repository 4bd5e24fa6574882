/** `--override key.path=value`: the value is JSON when it parses as JSON, else a plain string. */
export interface Override {
  readonly raw: string
  readonly path: ReadonlyArray<string>
  readonly value: unknown
}

import { redact } from "../common/Redaction.ts"
import { reservedKey } from "./JsonKeys.ts"

const keyPath = /^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$/

/** Keys whose values are never echoed back (a key pasted where a variable name belongs). */
const sensitiveKey = /key|token|secret|password|passwd|credential/i

/** An override as it may be shown: the value hidden for secret-looking keys, secrets redacted. */
export const showOverride = (raw: string): string => {
  const eq = raw.indexOf("=")
  if (eq > 0 && sensitiveKey.test(raw.slice(0, eq))) return `${raw.slice(0, eq)}=…`
  return redact(raw)
}

/** Returns the override, or a message saying what is wrong with it. */
export const parseOverride = (raw: string): Override | string => {
  const eq = raw.indexOf("=")
  if (eq <= 0) return `malformed --override "${showOverride(raw)}": expected key.path=value`
  const key = raw.slice(0, eq).trim()
  if (!keyPath.test(key)) return `malformed --override "${showOverride(raw)}": "${redact(key)}" is not a dotted key path`
  const reserved = key.split(".").find(reservedKey)
  if (reserved !== undefined) return `malformed --override "${showOverride(raw)}": "${reserved}" is a reserved key`
  const text = raw.slice(eq + 1)
  let value: unknown = text
  try {
    value = JSON.parse(text)
  } catch {
    // Not JSON: keep the raw string, as documented.
  }
  return { raw, path: key.split("."), value }
}

/** Sets `path` in a plain JSON tree, creating objects on the way; returns a new tree. */
export const setPath = (tree: unknown, path: ReadonlyArray<string>, value: unknown): unknown => {
  if (path.length === 0) return value
  const [head, ...rest] = path as [string, ...Array<string>]
  if (Array.isArray(tree) && /^\d+$/.test(head)) {
    const copy = [...tree]
    copy[Number(head)] = setPath(copy[Number(head)], rest, value)
    return copy
  }
  const base = isPlainObject(tree) ? tree : {}
  return { ...base, [head]: setPath(base[head], rest, value) }
}

export const isPlainObject = (u: unknown): u is Record<string, unknown> =>
  typeof u === "object" && u !== null && !Array.isArray(u)

/** Objects merge key by key; arrays and scalars from `over` replace what `base` had. */
export const deepMerge = (base: unknown, over: unknown): unknown => {
  if (!isPlainObject(base) || !isPlainObject(over)) return over
  const out: Record<string, unknown> = { ...base }
  for (const [k, v] of Object.entries(over)) out[k] = Object.hasOwn(base, k) ? deepMerge(base[k], v) : v
  return out
}
