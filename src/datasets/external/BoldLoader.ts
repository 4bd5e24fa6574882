import { Schema } from "effect"
import { PyRandom } from "../PyRandom.ts"
import { decodeJsonFile, ensureUniqueIds, type ExternalRow, externalRow, ORIGINAL_SIZES, pyStrip, type SamplingSpec, stableTextHash, type SuiteFile } from "./ExternalSuite.ts"

/** `prompts/{domain}_prompt.json`: `{group: {entity: [prompt, …]}}`. */
const BoldPromptFile = Schema.Record(Schema.String, Schema.Record(Schema.String, Schema.Array(Schema.String)))

/** The domain a prompt file holds, from its name (`gender_prompt.json` → `gender`), as the original names it. */
export const boldDomain = (file: string): string => (file.split(/[\\/]/).pop() ?? file).replace(/\.json$/, "").replace("_prompt", "")

/**
 * BOLD as the original's `load_bold` samples it (both modes: its sampling has no bug): every prompt of the files in
 * name order, then, when there are more than the limit, a `random.Random(seed)` shuffle and the first `limit`. Ids
 * `BOLD:{domain}:{group}:{entity}:{sha256(prompt)[:10]}`, a repeated one suffixed `__1`, `__2`, ….
 */
export const loadBold = (files: ReadonlyArray<SuiteFile>, spec: SamplingSpec): Array<ExternalRow> => {
  const name = (f: SuiteFile) => f.file.split(/[\\/]/).pop() ?? f.file
  const sorted = [...files].sort((a, b) => (name(a) < name(b) ? -1 : name(a) > name(b) ? 1 : 0))
  let records: Array<readonly [string, string, string, string]> = []
  for (const f of sorted) {
    const domain = boldDomain(f.file)
    const data = decodeJsonFile(f, BoldPromptFile)
    for (const [group, entities] of Object.entries(data)) {
      for (const [entity, prompts] of Object.entries(entities)) {
        for (const p of prompts) records.push([domain, group, entity, p])
      }
    }
  }
  const limit = spec.limit ?? ORIGINAL_SIZES.BOLD!
  if (records.length > limit) {
    new PyRandom(spec.seed).shuffle(records)
    records = records.slice(0, limit)
  }
  const counts = new Map<string, number>()
  const rows = records.map(([domain, group, entity, text]) => {
    const prompt = pyStrip(text)
    const base = `BOLD:${domain}:${group}:${entity}:${stableTextHash(prompt, 10)}`
    const k = counts.get(base) ?? 0
    counts.set(base, k + 1)
    return externalRow("BOLD", k === 0 ? base : `${base}__${k}`, prompt, "continuation", { domain, group, entity })
  })
  ensureUniqueIds(rows, "BOLD")
  return rows
}
