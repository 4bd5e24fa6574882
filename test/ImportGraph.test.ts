import { describe, expect, it } from "@effect/vitest"
import { readdirSync, readFileSync } from "node:fs"
import * as path from "node:path"
import ts from "typescript"

/**
 * The module graph of src/: every relative `import`/`export … from`, type-only ones included (a cycle is a cycle),
 * side-effect and dynamic imports too. TypeScript's own pre-processor finds them, so comments and strings that
 * look like imports are not counted.
 */

const root = path.resolve(import.meta.dirname, "..")
const src = path.join(root, "src")

const walk = (dir: string): Array<string> =>
  readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? walk(path.join(dir, e.name)) : e.name.endsWith(".ts") ? [path.join(dir, e.name)] : []
  )

const rel = (file: string) => path.relative(root, file).split(path.sep).join("/")

const graph = new Map<string, Array<string>>(
  walk(src).map((file) => {
    const imported = ts.preProcessFile(readFileSync(file, "utf8"), true, true).importedFiles
      .map((f) => f.fileName)
      .filter((name) => name.startsWith("./") || name.startsWith("../"))
      .map((name) => rel(path.resolve(path.dirname(file), name)))
    return [rel(file), [...new Set(imported)].sort()]
  })
)

/** Strongly connected components with more than one module (or a module importing itself), each as one cycle through it. */
const cycles = (g: ReadonlyMap<string, ReadonlyArray<string>>): Array<Array<string>> => {
  let next = 0
  const index = new Map<string, number>()
  const low = new Map<string, number>()
  const stack: Array<string> = []
  const onStack = new Set<string>()
  const components: Array<Array<string>> = []
  const visit = (v: string) => {
    index.set(v, next)
    low.set(v, next++)
    stack.push(v)
    onStack.add(v)
    for (const w of g.get(v) ?? []) {
      if (!g.has(w)) continue
      if (!index.has(w)) {
        visit(w)
        low.set(v, Math.min(low.get(v)!, low.get(w)!))
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!))
    }
    if (low.get(v) === index.get(v)) {
      const component: Array<string> = []
      let w: string
      do {
        w = stack.pop()!
        onStack.delete(w)
        component.push(w)
      } while (w !== v)
      if (component.length > 1 || (g.get(v) ?? []).includes(v)) components.push(component)
    }
  }
  for (const v of [...g.keys()].sort()) if (!index.has(v)) visit(v)
  // One concrete cycle per component: a shortest path back to its first module, staying inside the component.
  return components.map((component) => {
    const members = new Set(component)
    const start = [...component].sort()[0]!
    const previous = new Map<string, string>()
    const queue = [start]
    for (let i = 0; i < queue.length; i++) {
      const v = queue[i]!
      for (const w of g.get(v) ?? []) {
        if (!members.has(w)) continue
        if (w === start) {
          const cycle = [start]
          for (let u = v; u !== start; u = previous.get(u)!) cycle.splice(1, 0, u)
          return [...cycle, start]
        }
        if (!previous.has(w)) {
          previous.set(w, v)
          queue.push(w)
        }
      }
    }
    return [...component, component[0]!]
  })
}

const describeCycles = (found: ReadonlyArray<ReadonlyArray<string>>) => found.map((c) => c.join(" → ")).join("\n")

describe("the import graph of src/", () => {
  it("is read from every module", () => {
    expect(graph.size).toBeGreaterThan(50)
    expect(graph.get("src/bin.ts")?.length).toBeGreaterThan(0)
  })

  it("finds a cycle when there is one (the check itself)", () => {
    const g = new Map([["a", ["b"]], ["b", ["c"]], ["c", ["a", "d"]], ["d", []], ["e", ["e"]]])
    expect(describeCycles(cycles(g))).toBe("a → b → c → a\ne → e")
    expect(cycles(new Map([["a", ["b"]], ["b", []]]))).toEqual([])
  })

  it("has no cycle", () => {
    const found = cycles(graph)
    expect(found, `import cycles in src/:\n${describeCycles(found)}`).toEqual([])
  })

  it("has no stage driver importing another (src/pipeline/*Stage.ts): what stages share lives beside them", () => {
    const isStage = (m: string) => /^src\/pipeline\/\w+Stage\.ts$/.test(m)
    const offending = [...graph].filter(([m]) => isStage(m)).flatMap(([m, deps]) => deps.filter(isStage).map((d) => `${m} imports ${d}`))
    expect(offending).toEqual([])
  })

  it("keeps src/domain and src/contracts at the bottom: they import nothing of src/ but src/domain", () => {
    const offending = [...graph]
      .filter(([m]) => m.startsWith("src/domain/") || m.startsWith("src/contracts/"))
      .flatMap(([m, deps]) => deps.filter((d) => !d.startsWith("src/domain/")).map((d) => `${m} imports ${d}`))
    expect(offending).toEqual([])
  })

  it("keeps the engine behind the compute port: no stage, plan, preflight or client reaches src/compute/Docker* (directly or through another module)", () => {
    const reach = (from: string) => {
      const seen = new Set<string>([from])
      const queue = [from]
      for (let i = 0; i < queue.length; i++) {
        for (const d of graph.get(queue[i]!) ?? []) {
          if (seen.has(d)) continue
          seen.add(d)
          queue.push(d)
        }
      }
      return seen
    }
    const engineNeutral = [...graph.keys()].filter((m) => /^src\/(pipeline|inference|training|serving|audit|teacher|evaluation|report|runs|tracking)\//.test(m) || m === "src/compute/Compute.ts" || m === "src/compute/Placement.ts")
    expect(engineNeutral.length).toBeGreaterThan(40)
    const offending = engineNeutral.flatMap((m) => [...reach(m)].filter((d) => /^src\/compute\/Docker/.test(d)).map((d) => `${m} reaches ${d}`))
    expect(offending).toEqual([])
    // The check itself: the adapter layer does reach the Docker modules.
    expect([...reach("src/compute/ComputeLayer.ts")].some((d) => d.startsWith("src/compute/Docker"))).toBe(true)
  })
})
