import { readFileSync } from "node:fs"
import { type ResolvedConfig, resolveConfig } from "../../src/config/ConfigLoader.ts"

/** A resolved config from a file in configs/ with overrides, as the CLI would build it. */
export const resolvedFor = (file: string, overrides: ReadonlyArray<string> = []): ResolvedConfig => {
  const r = resolveConfig(file, readFileSync(file, "utf8"), overrides, undefined, undefined)
  if (!("config" in r)) throw new Error(r.message)
  return r
}

export const configFor = (file: string, overrides: ReadonlyArray<string> = []) => resolvedFor(file, overrides).config
