/** OpenEndedStats: `openEndedRates` (label rates per domain with Wilson intervals) and `openEndedPaired` (B vs A per label, McNemar). */
import type { OpenEndedLabel } from "../audit/OpenEndedRubric.ts"
import { OPEN_ENDED_LABELS } from "../audit/OpenEndedRubric.ts"
import { type Proportion, wilson } from "./Statistics.ts"
import { mcnemar, type McNemarTest } from "./PairedTests.ts"

/** One judged answer; `label` null when the judge failed on it (counted apart, never as any label). */
export interface OpenEndedJudged {
  readonly id: string
  readonly domain: string
  readonly label: OpenEndedLabel | null
}

export interface DomainRates {
  /** A domain, or "all". */
  readonly domain: string
  readonly judged: number
  readonly unjudged: number
  readonly rates: Readonly<Record<OpenEndedLabel, Proportion>>
}

const ratesOf = (domain: string, rows: ReadonlyArray<OpenEndedJudged>): DomainRates => {
  const judged = rows.filter((r) => r.label !== null)
  return {
    domain,
    judged: judged.length,
    unjudged: rows.length - judged.length,
    rates: Object.fromEntries(OPEN_ENDED_LABELS.map((l) => [l, wilson(judged.filter((r) => r.label === l).length, judged.length)])) as Record<OpenEndedLabel, Proportion>
  }
}

/** Per domain (first-seen order), then "all": each label's share of the judged answers. */
export const openEndedRates = (rows: ReadonlyArray<OpenEndedJudged>): ReadonlyArray<DomainRates> => {
  const domains = [...new Set(rows.map((r) => r.domain))]
  return [...domains.map((d) => ratesOf(d, rows.filter((r) => r.domain === d))), ratesOf("all", rows)]
}

/**
 * B against A on the same queries, per label: McNemar on "answer has this label" over the queries both judged. Ids
 * must match one to one (a set answered by one model only is not a pair).
 */
export const openEndedPaired = (a: ReadonlyArray<OpenEndedJudged>, b: ReadonlyArray<OpenEndedJudged>): { readonly pairs: number; readonly tests: Readonly<Record<OpenEndedLabel, McNemarTest>> } => {
  const byId = new Map(b.map((r) => [r.id, r]))
  if (byId.size !== b.length || new Set(a.map((r) => r.id)).size !== a.length) throw new RangeError("openEndedPaired: repeated ids")
  const onlyA = a.filter((r) => !byId.has(r.id)).map((r) => r.id)
  // Ids unique on both sides: equal sizes and nothing only in A mean nothing only in B either.
  if (onlyA.length > 0 || a.length !== b.length) throw new RangeError(`openEndedPaired: the two sets differ (${a.length} and ${b.length} answers${onlyA.length === 0 ? "" : `; first ids only in A: ${onlyA.slice(0, 5).join(", ")}`})`)
  const pairs = a.flatMap((x) => {
    const y = byId.get(x.id)!
    return x.label === null || y.label === null ? [] : [[x.label, y.label] as const]
  })
  return {
    pairs: pairs.length,
    tests: Object.fromEntries(OPEN_ENDED_LABELS.map((l) => [l, mcnemar(pairs.map(([x]) => x === l), pairs.map(([, y]) => y === l))])) as Record<OpenEndedLabel, McNemarTest>
  }
}
