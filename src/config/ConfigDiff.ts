import { isPlainObject } from "./Overrides.ts"

export interface ConfigChange {
  readonly key: string
  readonly before: unknown
  readonly after: unknown
}

/** Leaf-level differences between two JSON trees, by dotted key path. */
export const diffConfigs = (before: unknown, after: unknown, prefix = ""): Array<ConfigChange> => {
  if (isPlainObject(before) && isPlainObject(after)) {
    const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])].sort()
    return keys.flatMap((k) => diffConfigs(before[k], after[k], prefix === "" ? k : `${prefix}.${k}`))
  }
  // Lists of objects of the same length (classifiers, hosts) differ key by key, so an operational key inside
  // one entry (a classifier's endpoint) can be told from the rest.
  if (Array.isArray(before) && Array.isArray(after) && before.length === after.length && before.every(isPlainObject) && after.every(isPlainObject)) {
    return before.flatMap((b, i) => diffConfigs(b, after[i], `${prefix}[${i}]`))
  }
  return JSON.stringify(before) === JSON.stringify(after) ? [] : [{ key: prefix, before, after }]
}

export const describeChanges = (changes: ReadonlyArray<ConfigChange>): string =>
  changes.map((c) => `  ${c.key}: ${show(c.before)} (recorded) -> ${show(c.after)} (now)`).join("\n")

const show = (u: unknown) => (u === undefined ? "(absent)" : JSON.stringify(u))
