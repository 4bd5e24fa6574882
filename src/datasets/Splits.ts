import type { BenchmarkName } from "../config/ExperimentConfig.ts"
import type { Split, SuiteRow } from "./BenchmarkItem.ts"
import { PyRandom } from "./PyRandom.ts"

export interface SplitSpec {
  readonly strategy: "scenario" | "upstream"
  readonly seed: number
  readonly train: number
  readonly val: number
  readonly test: number
}

export type SplitResult = Readonly<Record<Split, ReadonlyArray<SuiteRow>>>

export const splitItems = (rows: ReadonlyArray<SuiteRow>, spec: SplitSpec): SplitResult =>
  spec.strategy === "upstream" ? upstreamSplit(rows, spec) : scenarioSplit(rows, spec)

const groupBy = <K>(rows: ReadonlyArray<SuiteRow>, key: (r: SuiteRow) => K): Array<Array<SuiteRow>> => {
  const groups = new Map<K, Array<SuiteRow>>()
  for (const r of rows) {
    const k = key(r)
    const g = groups.get(k)
    if (g) g.push(r)
    else groups.set(k, [r])
  }
  return [...groups.values()]
}

/**
 * The original's item-level split (datasets.py `stratified_split_primary`): one
 * `random.Random(seed)` shuffles each (benchmark, condition) group in load order,
 * cuts it at int(n·train) and int(n·val), then shuffles train, val and test in turn.
 */
export const upstreamSplit = (rows: ReadonlyArray<SuiteRow>, spec: SplitSpec): SplitResult => {
  const rng = new PyRandom(spec.seed)
  const out: Record<Split, Array<SuiteRow>> = { train: [], val: [], test: [] }
  for (const group of groupBy(rows, (r) => `${r.benchmark}\u0000${r.condition}`)) {
    rng.shuffle(group)
    const nTrain = Math.trunc(group.length * spec.train)
    const nVal = Math.trunc(group.length * spec.val)
    out.train.push(...group.slice(0, nTrain))
    out.val.push(...group.slice(nTrain, nTrain + nVal))
    out.test.push(...group.slice(nTrain + nVal))
  }
  rng.shuffle(out.train)
  rng.shuffle(out.val)
  rng.shuffle(out.test)
  return out
}

/**
 * Scenario-level split: every (benchmark, scenario) group, across both conditions,
 * lands in exactly one split, so no test question shares a template with a training
 * one. Per benchmark the groups are shuffled (seeded) and each goes to the split
 * furthest below its target item count.
 */
export const scenarioSplit = (rows: ReadonlyArray<SuiteRow>, spec: SplitSpec): SplitResult => {
  const rng = new PyRandom(spec.seed)
  const out: Record<Split, Array<SuiteRow>> = { train: [], val: [], test: [] }
  const order: ReadonlyArray<Split> = ["train", "val", "test"]
  for (const benchmarkRows of groupBy(rows, (r) => r.benchmark)) {
    const groups = groupBy(benchmarkRows, (r) => r.scenario)
    rng.shuffle(groups)
    const target = { train: benchmarkRows.length * spec.train, val: benchmarkRows.length * spec.val, test: benchmarkRows.length * spec.test }
    const have = { train: 0, val: 0, test: 0 }
    for (const g of groups) {
      let best: Split = "train"
      let bestDeficit = -Infinity
      for (const s of order) {
        if (target[s] <= 0) continue
        const deficit = target[s] - have[s]
        if (deficit > bestDeficit) [best, bestDeficit] = [s, deficit]
      }
      have[best] += g.length
      out[best].push(...g)
    }
  }
  // Seeded order inside each split, so a size limit takes a spread of benchmarks and scenarios.
  rng.shuffle(out.train)
  rng.shuffle(out.val)
  rng.shuffle(out.test)
  return out
}

export type SplitCounts = Record<string, Record<string, Record<Split, number>>>

/** Items per benchmark × condition × split. */
export const countSplits = (result: SplitResult, benchmarks: ReadonlyArray<BenchmarkName>): SplitCounts => {
  const counts: SplitCounts = {}
  for (const b of benchmarks) counts[b] = { neq: { train: 0, val: 0, test: 0 }, eq: { train: 0, val: 0, test: 0 } }
  for (const split of ["train", "val", "test"] as const) {
    for (const r of result[split]) counts[r.benchmark]![r.condition]![split]++
  }
  return counts
}
