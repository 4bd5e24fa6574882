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
  return JSON.stringify(before) === JSON.stringify(after) ? [] : [{ key: prefix, before, after }]
}

export const describeChanges = (changes: ReadonlyArray<ConfigChange>): string =>
  changes.map((c) => `  ${c.key}: ${show(c.before)} (recorded) -> ${show(c.after)} (now)`).join("\n")

const show = (u: unknown) => (u === undefined ? "(absent)" : JSON.stringify(u))
