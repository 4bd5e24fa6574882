import { describe, expect, it } from "vitest"
import { execFileSync } from "node:child_process"
import { existsSync, lstatSync, readdirSync, readFileSync } from "node:fs"
import * as path from "node:path"

/**
 * Every document the code cites must be in this repository: a clone alone (without the project's shared folder beside
 * it) can then follow each citation. Citations read `docs/<name>.md §N` (or `§9 B3` for a bug of the protocol).
 */

const root = path.resolve(import.meta.dirname, "../..")
const self = path.relative(root, import.meta.filename).split(path.sep).join("/")
const scope = ["src", "test", "scripts", "containers", "bench", "configs", ".ci", "proto", "README.md", "MIGRATING.md", "benchmark_suite/README.md"]
const skippedDirs = new Set(["node_modules", ".venv", "__pycache__", ".pytest_cache"])

/** Tracked files plus new ones git does not ignore; a copy without `.git` is walked instead. */
const filesInScope = (): Array<string> => {
  try {
    const out = execFileSync("git", ["ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", ...scope], {
      cwd: root,
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"],
      maxBuffer: 64 * 1024 * 1024
    })
    return out.split("\0").filter((f) => f !== "" && existsSync(path.join(root, f)) && lstatSync(path.join(root, f)).isFile())
  } catch {
    const walk = (rel: string): Array<string> => {
      const stat = lstatSync(path.join(root, rel), { throwIfNoEntry: false })
      if (stat === undefined || stat.isSymbolicLink()) return []
      if (stat.isFile()) return [rel]
      if (!stat.isDirectory() || skippedDirs.has(path.basename(rel))) return []
      return readdirSync(path.join(root, rel)).flatMap((name) => walk(`${rel}/${name}`))
    }
    return scope.flatMap(walk)
  }
}

/** Files below a folder of the repository (new ones included), as repository paths. */
const filesUnder = (dir: string): Array<string> => {
  const walk = (rel: string): Array<string> =>
    readdirSync(path.join(root, rel), { withFileTypes: true }).flatMap((e) =>
      e.isDirectory() ? (skippedDirs.has(e.name) ? [] : walk(`${rel}/${e.name}`)) : e.isFile() ? [`${rel}/${e.name}`] : []
    )
  return existsSync(path.join(root, dir)) ? walk(dir) : []
}

interface Line {
  readonly file: string
  readonly line: number
  readonly text: string
}

const lines: Array<Line> = filesInScope().flatMap((file) => {
  const data = readFileSync(path.join(root, file))
  if (data.includes(0)) return [] // binary
  return data.toString("utf8").split(/\r?\n/).map((text, i) => ({ file, line: i + 1, text }))
})

const where = (l: Line, what: string) => `${l.file}:${l.line}: ${what}`

// The names the documents had in the shared folder's docs, cited without a folder (or by that folder's path).
const oldName = /(?<![\w/.-])(?:ARCHITECTURE\.md|dart-protocol(?:\.md)?|diffaware-spec(?:\.md)?|serving\.md|STYLE\.md|slurm\.md|[Pp]rotocol §)/g
// Spelled in pieces, so this file does not itself name the folder it forbids.
const sharedPath = new RegExp(String.raw`\.\./` + "sha" + String.raw`red\b|(?<![\w.-])` + "sha" + String.raw`red/(?:docs|data|reference|tools|hooks)/`, "g")
const docPath = new RegExp(String.raw`(?<![\w/.-])` + "docs" + String.raw`/([\w./-]+\.md)`, "g")
// `§1.2`, `§3, §5 and §7`, `§9 B3` after a document's name.
const sections = String.raw`((?:\s*(?:,|and)?\s*§\d+(?:\.\d+)*(?:\s+B\d+)?)+)`
// `docs/<name>.md §1.2` (or `docs/reference/<name>.md §1`), `… §3, §5 and §7`, `… §9 B3`.
const sectioned = new RegExp(String.raw`(?<![\w/.-])` + "docs" + String.raw`/((?:[\w.-]+/)*[\w.-]+\.md)` + "`?" + sections, "g")
// A Markdown link to a file of the repository, `[text](path)` or `[text](path#anchor)`, then maybe ` §N`.
const mdLink = new RegExp(String.raw`\]\(([^)\s#]+)(?:#[^)\s]*)?\)(?:` + sections + ")?", "g")

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")
const docText = new Map<string, string | null>()
const readDoc = (name: string) => {
  if (!docText.has(name)) {
    const file = path.join(root, "docs", name)
    docText.set(name, existsSync(file) ? readFileSync(file, "utf8") : null)
  }
  return docText.get(name)!
}
/** `§1.2` is a heading `### 1.2 …` (or `## 1. …`); `B3` a row of the bug table. */
const hasSection = (doc: string, section: string, bug: string | undefined) =>
  new RegExp(String.raw`^#{1,6}\s+` + escape(section) + String.raw`\.?\s`, "m").test(doc) &&
  (bug === undefined || new RegExp(String.raw`^\|\s*` + bug + String.raw`\s*\|`, "m").test(doc))

describe("document citations resolve inside the repository", () => {
  it("scans the code, tests, scripts, containers and top-level docs", () => {
    const files = new Set(lines.map((l) => l.file))
    expect(files.has("README.md")).toBe(true)
    expect([...files].some((f) => f.startsWith("src/"))).toBe(true)
  })

  it("cites no document by its old name (ARCHITECTURE.md, dart-protocol.md, … without docs/)", () => {
    const found = lines.filter((l) => l.file !== self).flatMap((l) => [...l.text.matchAll(oldName)].map((m) => where(l, m[0])))
    expect(found).toEqual([])
  })

  it("cites only docs/ files that exist, and sections those files have", () => {
    const found = lines.flatMap((l) => {
      const missing = [...l.text.matchAll(docPath)]
        .filter((m) => !existsSync(path.join(root, "docs", m[1]!)))
        .map((m) => where(l, `${m[0]} does not exist`))
      const sections = [...l.text.matchAll(sectioned)].flatMap((m) => {
        const doc = readDoc(m[1]!)
        if (doc === null) return []
        return [...m[2]!.matchAll(/§(\d+(?:\.\d+)*)(?:\s+(B\d+))?/g)]
          .filter((s) => !hasSection(doc, s[1]!, s[2]))
          .map((s) => where(l, `docs/${m[1]} has no ${s[0]}`))
      })
      return [...missing, ...sections]
    })
    expect(found).toEqual([])
  })

  it("links, in the README and docs/, only to files that exist, and to sections those documents have", () => {
    const markdown = ["README.md", ...filesUnder("docs").filter((f) => f.endsWith(".md"))]
    const found = markdown.flatMap((file) =>
      readFileSync(path.join(root, file), "utf8").split(/\r?\n/).flatMap((text, i) =>
        [...text.matchAll(mdLink)].flatMap((m) => {
          const target = m[1]!
          if (/^[a-z][a-z0-9+.-]*:/i.test(target)) return [] // http:, https:, mailto:
          const rel = path.relative(root, path.resolve(root, path.dirname(file), target)).split(path.sep).join("/")
          const at = `${file}:${i + 1}: ${target}`
          if (!existsSync(path.join(root, rel))) return [`${at} does not exist`]
          if (m[2] === undefined || !rel.endsWith(".md")) return []
          const doc = readFileSync(path.join(root, rel), "utf8")
          return [...m[2].matchAll(/§(\d+(?:\.\d+)*)(?:\s+(B\d+))?/g)].filter((s) => !hasSection(doc, s[1]!, s[2])).map((s) => `${at} has no ${s[0]}`)
        })
      )
    )
    expect(found).toEqual([])
  })

  it("reads nothing from the shared folder beside the repository", () => {
    const found = lines.filter((l) => l.file !== self).flatMap((l) => [...l.text.matchAll(sharedPath)].map((m) => where(l, m[0])))
    expect(found).toEqual([])
  })
})
