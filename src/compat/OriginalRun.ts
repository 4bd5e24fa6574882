import { Effect } from "effect"
import { ioError, type RunStoreError } from "../runs/RunStoreError.ts"
import * as fs from "node:fs/promises"
import * as path from "node:path"

/**
 * What the original Python code left in a `runs/{EXP_ID}/` (its `materialize_run`, datasets
 * export, teacher, training, inference, audit and evaluation writers), for `dart status` on a run
 * that has no dart manifest.
 */

export interface OriginalStageOutput {
  readonly step: string
  readonly path: string
  readonly detail: string
}

export interface OriginalRunExplanation {
  readonly dir: string
  readonly materialized_at: string | null
  readonly outputs: ReadonlyArray<OriginalStageOutput>
  readonly missing: ReadonlyArray<string>
}

const exists = (p: string) => fs.access(p).then(() => true, () => false)
const subdirs = (p: string) =>
  fs.readdir(p, { withFileTypes: true }).then((es) => es.filter((e) => e.isDirectory()).map((e) => e.name).sort(), () => [] as Array<string>)

/** Rows of a JSONL file, and how many repeat an earlier row's key (the original's resume, bug B7). */
const countRows = async (file: string, key: (row: Record<string, unknown>) => string | undefined) => {
  const text = await fs.readFile(file, "utf8")
  const seen = new Set<string>()
  let rows = 0
  let repeats = 0
  let bad = 0
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue
    rows++
    let row: unknown
    try {
      row = JSON.parse(line)
    } catch {
      bad++
      continue
    }
    const k = typeof row === "object" && row !== null ? key(row as Record<string, unknown>) : undefined
    if (k === undefined) continue
    if (seen.has(k)) repeats++
    else seen.add(k)
  }
  return `${rows} rows${repeats > 0 ? ` (${repeats} repeat an earlier item: the original's resume, bug B7)` : ""}${bad > 0 ? `, ${bad} unreadable` : ""}`
}

const sampleKey = (r: Record<string, unknown>) => (typeof r.sample_id === "string" ? `${r.sample_id}|${String(r.policy_id ?? "")}` : undefined)

const describe = async (dir: string): Promise<OriginalRunExplanation | undefined> => {
  if (await exists(path.join(dir, "manifest.json"))) return undefined
  const configs = path.join(dir, "configs")
  const marks = ["configs/config.snapshot.json", "configs/meta.snapshot.json", "audit_reports", "repair_pool", "fig_data"]
  const found = await Promise.all(marks.map((m) => exists(path.join(dir, m))))
  if (!found.some(Boolean)) return undefined

  let materialized: string | null = null
  try {
    const meta = JSON.parse(await fs.readFile(path.join(configs, "meta.snapshot.json"), "utf8")) as { materialized_at_utc?: unknown }
    if (typeof meta.materialized_at_utc === "string") materialized = meta.materialized_at_utc
  } catch {
    // No or unreadable meta snapshot: the time is simply unknown.
  }

  const outputs: Array<OriginalStageOutput> = []
  const missing: Array<string> = []
  const add = async (step: string, rel: string, detail: () => Promise<string>) => {
    if (await exists(path.join(dir, rel))) outputs.push({ step, path: rel, detail: await detail().catch((e: Error) => `unreadable (${e.message})`) })
    else missing.push(`${step}: ${rel}`)
  }

  await add("1 config", "configs/config.snapshot.json", async () => "resolved config snapshot (`dart config migrate` translates it)")
  for (const split of ["train", "val", "test"]) {
    await add("1 datasets", `datasets/primary/${split}.jsonl`, () => countRows(path.join(dir, `datasets/primary/${split}.jsonl`), sampleKey))
  }
  for (const task of ["distill", "repair"]) {
    await add(task === "distill" ? "2 teacher distill" : "6 teacher repair", `teacher_outputs/${task}/outputs.jsonl`, () =>
      countRows(path.join(dir, `teacher_outputs/${task}/outputs.jsonl`), sampleKey))
  }
  for (const name of await subdirs(path.join(dir, "adapters"))) {
    await add("3/7 train", `adapters/${name}/final`, async () =>
      (await exists(path.join(dir, `adapters/${name}/final/adapter_config.json`))) ? "adapter (adapter_config.json present)" : "no adapter_config.json: training did not finish")
  }
  for (const name of await subdirs(path.join(dir, "predictions"))) {
    await add("4/8 infer", `predictions/${name}/outputs.jsonl`, async () =>
      `${await countRows(path.join(dir, `predictions/${name}/outputs.jsonl`), sampleKey)}; \`dart evaluate --pred\` reads it`)
  }
  for (const name of await subdirs(path.join(dir, "audit"))) {
    await add("5 audit", `audit/${name}/regression_pool.jsonl`, async () =>
      `${await countRows(path.join(dir, `audit/${name}/regression_pool.jsonl`), sampleKey)}; \`dart teacher --task repair --input\` reads it`)
  }
  for (const name of await subdirs(path.join(dir, "evaluation"))) {
    await add("9 evaluate", `evaluation/${name}/summary.json`, async () => "the original's metrics (its abstain_rate is among parsed rows only, bug B8)")
  }
  return { dir, materialized_at: materialized, outputs, missing }
}

/** Undefined when `dir` is not a run the original made (or has a dart manifest). */
export const explainOriginalRun = (dir: string): Effect.Effect<OriginalRunExplanation | undefined, RunStoreError> =>
  Effect.tryPromise({ try: () => describe(dir), catch: ioError(dir, "reading the original's run") })

export const formatOriginalRun = (e: OriginalRunExplanation): string =>
  [
    `run        ${e.dir}`,
    `made by    the original Python code (GitHub zihanliang/DART): no dart manifest.json${e.materialized_at ? `; materialized ${e.materialized_at}` : ""}`,
    "",
    `${"step".padEnd(20)}${"output".padEnd(58)}what it holds`,
    ...(e.outputs.length === 0 ? ["(no stage output yet)"] : e.outputs.map((o) => `${o.step.padEnd(20)}${o.path.padEnd(58)}${o.detail}`)),
    ...(e.missing.length === 0 ? [] : ["", `not there: ${e.missing.join("; ")}`]),
    "",
    "dart reads this run's predictions and regression pools as they are; to continue in dart, start a run of its own (dart init --exp-id NEW)."
  ].join("\n")
