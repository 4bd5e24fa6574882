import { SchemaAST, SchemaIssue } from "effect"

/** One failed check of a decode, located by its key path in the input. */
export interface PathIssue {
  readonly path: ReadonlyArray<PropertyKey>
  readonly message: string
  /** For an unknown key: the keys that were allowed beside it. */
  readonly allowedKeys?: ReadonlyArray<string>
}

const formatLeaf = SchemaIssue.makeFormatterDefault()

/** Flattens a schema issue tree into located leaf messages (first line of each). */
export const flattenIssue = (issue: SchemaIssue.Issue): Array<PathIssue> => {
  const out: Array<PathIssue> = []
  const walk = (i: SchemaIssue.Issue, path: ReadonlyArray<PropertyKey>): void => {
    switch (i._tag) {
      case "Pointer":
        return walk(i.issue, [...path, ...i.path])
      case "Composite":
        return i.issues.forEach((x) => walk(x, path))
      case "UnexpectedKey":
        out.push({ path, message: "unknown key", allowedKeys: objectKeys(i.ast) })
        return
      case "AnyOf":
        // Members that failed only on their type are dropped by the parser; descend into the rest.
        if (i.issues.length > 0) return i.issues.forEach((x) => walk(x, path))
        out.push({ path, message: lowerFirst(formatLeaf(i).split("\n")[0] ?? "invalid value") })
        return
      case "MissingKey":
        out.push({ path, message: "missing key" })
        return
      default:
        out.push({ path, message: lowerFirst(formatLeaf(i).split("\n")[0] ?? "invalid value") })
    }
  }
  walk(issue, [])
  return out
}

const objectKeys = (ast: SchemaAST.AST): ReadonlyArray<string> =>
  ast._tag === "Objects" ? ast.propertySignatures.map((p) => String(p.name)) : []

const lowerFirst = (s: string) => s.charAt(0).toLowerCase() + s.slice(1)

/** `a.b[2].c` */
export const formatPath = (path: ReadonlyArray<PropertyKey>): string =>
  path.reduce<string>(
    (acc, k) => typeof k === "number" ? `${acc}[${k}]` : acc === "" ? String(k) : `${acc}.${String(k)}`,
    ""
  )

export const valueAt = (tree: unknown, path: ReadonlyArray<PropertyKey>): unknown =>
  path.reduce<unknown>(
    (acc, k) => (typeof acc === "object" && acc !== null ? (acc as Record<PropertyKey, unknown>)[k] : undefined),
    tree
  )

/** Closest candidate by edit distance (ties go to the longer shared prefix), if close enough to be a typo. */
export const nearest = (word: string, candidates: ReadonlyArray<string>): string | undefined => {
  const w = word.toLowerCase()
  const scored = candidates
    .map((c) => ({ c, d: editDistance(w, c.toLowerCase()), p: commonPrefix(w, c.toLowerCase()) }))
    .sort((a, b) => a.d - b.d || b.p - a.p)
  const best = scored[0]
  return best !== undefined && best.d <= Math.max(2, Math.ceil(word.length / 2)) ? best.c : undefined
}

const commonPrefix = (a: string, b: string) => {
  let i = 0
  while (i < a.length && i < b.length && a[i] === b[i]) i++
  return i
}

const editDistance = (a: string, b: string): number => {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const cur = [i]
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1))
    }
    prev = cur
  }
  return prev[b.length]!
}

/** One line per issue: `path: message, got <value>` with a suggestion for unknown keys. */
export const describeIssue = (issue: PathIssue, input: unknown): string => {
  const where = formatPath(issue.path) || "(top level)"
  if (issue.allowedKeys !== undefined) {
    const last = issue.path[issue.path.length - 1]
    const hint = typeof last === "string" ? nearest(last, issue.allowedKeys) : undefined
    const help = hint !== undefined
      ? ` (did you mean "${hint}"?)`
      : issue.allowedKeys.length > 0 ? ` (allowed here: ${issue.allowedKeys.join(", ")})` : ""
    return `${where}: unknown key${help}`
  }
  if (issue.message === "missing key") return `${where}: missing key`
  return `${where}: ${issue.message}, got ${preview(valueAt(input, issue.path))}`
}

const preview = (u: unknown): string => {
  const s = u === undefined ? "nothing" : JSON.stringify(u)
  return s.length > 80 ? `${s.slice(0, 77)}...` : s
}

/** Python-style JSON.parse error location: line and column of the failing character. */
export const jsonErrorLocation = (text: string, error: unknown): string => {
  const message = error instanceof Error ? error.message : String(error)
  const lc = /line (\d+) column (\d+)/.exec(message)
  if (lc) return `line ${lc[1]}, column ${lc[2]}: ${message.replace(/\s*\(line \d+ column \d+\)/, "")}`
  const pos = /position (\d+)/.exec(message)
  if (pos) {
    const before = text.slice(0, Number(pos[1]))
    const line = before.split("\n").length
    const column = Number(pos[1]) - before.lastIndexOf("\n")
    return `line ${line}, column ${column}: ${message}`
  }
  return message
}
