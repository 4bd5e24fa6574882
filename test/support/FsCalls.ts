import * as fsp from "node:fs/promises"
import { createRequire, syncBuiltinESMExports } from "node:module"
import * as path from "node:path"

// The CommonJS object behind node:fs/promises: patching it (then syncing the ESM view) reaches every importer.
const fsCjs = createRequire(import.meta.url)("node:fs/promises") as typeof fsp

export type Call = { readonly op: string; readonly path: string; readonly to?: string }

/**
 * Records the file-system calls made under `dir` while `body` runs: opens, writes and syncs on
 * handles (by the path they were opened with), renames. `fail` may make one of them throw.
 */
export const recording = async <A>(dir: string, body: () => Promise<A>, fail?: (c: Call) => Error | undefined) => {
  const calls: Array<Call> = []
  const paths = new WeakMap<object, string>()
  const probe = await fsp.open(path.join(dir, ".probe"), "w")
  const Handle = Object.getPrototypeOf(probe) as Record<string, (...args: Array<unknown>) => Promise<unknown>>
  await probe.close()
  const saved = { open: fsCjs.open, rename: fsCjs.rename, ...Object.fromEntries(["write", "writeFile", "appendFile", "sync", "datasync"].map((m) => [m, Handle[m]!])) }
  const note = (c: Call) => {
    if (!c.path.startsWith(dir)) return
    calls.push(c)
    const e = fail?.(c)
    if (e) throw e
  }
  ;(fsCjs as any).open = async (p: string, ...rest: Array<unknown>) => {
    note({ op: `open ${rest[0] ?? "r"}`, path: String(p) })
    const h = await (saved.open as any)(p, ...rest)
    paths.set(h, String(p))
    return h
  }
  ;(fsCjs as any).rename = async (from: string, to: string) => {
    note({ op: "rename", path: String(from), to: String(to) })
    return saved.rename(from, to)
  }
  for (const m of ["write", "writeFile", "appendFile", "sync", "datasync"]) {
    Handle[m] = async function(this: object, ...args: Array<unknown>) {
      note({ op: m === "datasync" ? "sync" : m === "writeFile" || m === "appendFile" ? "write" : m, path: paths.get(this) ?? "?" })
      return (saved as any)[m].apply(this, args)
    }
  }
  syncBuiltinESMExports()
  try {
    return { calls, result: await body().then((value) => ({ ok: true as const, value }), (error: unknown) => ({ ok: false as const, error })) }
  } finally {
    ;(fsCjs as any).open = saved.open
    ;(fsCjs as any).rename = saved.rename
    for (const m of ["write", "writeFile", "appendFile", "sync", "datasync"]) Handle[m] = (saved as any)[m]
    syncBuiltinESMExports()
  }
}

