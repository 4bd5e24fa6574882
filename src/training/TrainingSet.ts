import { sha256Hex } from "../common/Hashing.ts"
import { PyRandom } from "../datasets/PyRandom.ts"
import type { ChatMessage } from "../domain/ChatMessage.ts"
import { perSeverity, type Severity, severities } from "../domain/Severity.ts"

export type Recipe = "distill" | "mix" | "repair_only"

export interface SourceRow {
  readonly id: string
  readonly messages: ReadonlyArray<ChatMessage>
  readonly severity?: Severity
}

export interface TrainingRow {
  readonly id: string
  readonly messages: ReadonlyArray<ChatMessage>
  readonly source: "distill" | "repair"
  readonly severity: Severity | null
  /** 0-based copy index for oversampled repair rows. */
  readonly copy: number
}

export interface MixManifest {
  readonly recipe: Recipe
  readonly seed: number
  readonly weights: Readonly<Record<Severity, number>>
  readonly input: { readonly distill: number; readonly repair: number }
  readonly duplicates_removed: { readonly distill: number; readonly repair: number }
  readonly unique: { readonly distill: number; readonly repair: number; readonly repair_by_severity: Readonly<Record<Severity, number>> }
  readonly output: { readonly total: number; readonly distill: number; readonly repair: number; readonly repair_by_severity: Readonly<Record<Severity, number>> }
}

const zero = (): Record<Severity, number> => perSeverity(() => 0)
const conversationKey = (m: ReadonlyArray<ChatMessage>) => sha256Hex(JSON.stringify(m.map((x) => [x.role, x.content])))

/**
 * The training set of a stage: distill rows, repair rows, or both. Duplicates (the same
 * conversation) are removed first and only then is each repair row repeated by its
 * severity weight, so the weighting survives (the original de-duplicated afterwards and
 * lost it, docs/protocol.md §9 B2). A seeded shuffle fixes the order.
 */
export const assembleTrainingSet = (input: {
  readonly distill: ReadonlyArray<SourceRow>
  readonly repair: ReadonlyArray<SourceRow>
  readonly recipe: Recipe
  readonly weights: Readonly<Record<Severity, number>>
  readonly seed: number
}): { readonly rows: Array<TrainingRow>; readonly manifest: MixManifest } => {
  const seen = new Set<string>()
  const unique = (rows: ReadonlyArray<SourceRow>) => {
    const out: Array<SourceRow> = []
    for (const r of rows) {
      const k = conversationKey(r.messages)
      if (seen.has(k)) continue
      seen.add(k)
      out.push(r)
    }
    return out
  }
  // Teacher outputs are appended in completion order, which changes from run to run: the set is built from the rows in
  // id order, so the same teacher outputs always give the same training set (and, seeded, the same adapter).
  const byId = (rows: ReadonlyArray<SourceRow>) => [...rows].sort((x, y) => (x.id < y.id ? -1 : x.id > y.id ? 1 : 0))
  const distill = input.recipe === "repair_only" ? [] : unique(byId(input.distill))
  const repair = input.recipe === "distill" ? [] : unique(byId(input.repair))
  const rows: Array<TrainingRow> = distill.map((r) => ({ id: r.id, messages: r.messages, source: "distill", severity: null, copy: 0 }))
  const uniqueBySeverity = zero()
  const outBySeverity = zero()
  for (const r of repair) {
    const severity = r.severity ?? "mild"
    uniqueBySeverity[severity]++
    const times = input.weights[severity]
    for (let c = 0; c < times; c++) rows.push({ id: r.id, messages: r.messages, source: "repair", severity, copy: c })
    outBySeverity[severity] += times
  }
  new PyRandom(input.seed).shuffle(rows)
  const usedDistill = input.recipe === "repair_only" ? 0 : input.distill.length
  const usedRepair = input.recipe === "distill" ? 0 : input.repair.length
  return {
    rows,
    manifest: {
      recipe: input.recipe,
      seed: input.seed,
      weights: perSeverity((s) => input.weights[s]),
      input: { distill: usedDistill, repair: usedRepair },
      duplicates_removed: { distill: usedDistill - distill.length, repair: usedRepair - repair.length },
      unique: { distill: distill.length, repair: repair.length, repair_by_severity: uniqueBySeverity },
      output: { total: rows.length, distill: distill.length, repair: rows.length - distill.length, repair_by_severity: outBySeverity }
    }
  }
}

const OVERSAMPLE_PART = new RegExp(`^(${severities.join("|")})=(\\d+)$`)

/** `mild=1,moderate=2,severe=3,extreme=4` (any subset; the rest keep their defaults). */
export const parseOversample = (text: string, defaults: Readonly<Record<Severity, number>>): Record<Severity, number> | string => {
  const out = { ...defaults }
  for (const part of text.split(",").map((p) => p.trim()).filter((p) => p !== "")) {
    const m = OVERSAMPLE_PART.exec(part)
    if (!m) return `--repair-oversample: "${part}" is not severity=count (severities: ${severities.join(", ")})`
    out[m[1] as Severity] = Number(m[2])
  }
  return out
}
