import type { DartEvaluationSummary, McEvaluationSummary } from "../contracts/EvaluationSummary.ts"
import { bootstrapSums, type Interval, interval } from "./Bootstrap.ts"
import { addDecision, type DecisionMetrics, decisionMetrics, emptyConfusion } from "./DecisionMetrics.ts"
import { addMcAnswer, ctxtAware, diffAware, emptyMcCounts } from "./DiffAwareMetrics.ts"
import type { BenchmarkColumns, CollectedPredictions } from "./PredictionReader.ts"
import { Rng } from "./Rng.ts"
import { holm, mcnemarExact, type McNemar } from "./Statistics.ts"

export interface EvaluationOptions {
  readonly seed: number
  readonly alpha: number
  /** Paired bootstrap for the dart task (the original used 2,000). */
  readonly bootstrapResamples: number
  /** Resample scenario clusters instead of items in the dart bootstrap. */
  readonly clusterBootstrap: boolean
  /** Scenario-clustered bootstrap for the mc task (the suite used 9,999). */
  readonly mcResamples: number
}

export interface DartModelBlock extends DecisionMetrics {
  readonly accuracy_ci: Interval
  readonly equal_accuracy_ci: Interval
}

export interface PairedBlock {
  readonly accuracy_diff: Interval
  readonly mcnemar: McNemar
  readonly p_holm: number | null
}

export type DartBlock = Record<string, DartModelBlock | PairedBlock>

export interface McModelBlock {
  readonly n: number
  readonly accuracy: number | null
  readonly diffaware: Interval
  readonly ctxtaware: Interval
  readonly counts: { readonly A: number; readonly B: number; readonly C: number; readonly DE: number; readonly F: number; readonly unparsed: number }
  readonly n_unparseable: number
  readonly n_refusal_or_empty: number
}

interface Slice {
  readonly label: string
  readonly gold: ArrayLike<number>
  readonly preds: ReadonlyArray<ArrayLike<number>>
  /** Cluster index per row, unique within the slice. */
  readonly cluster: ArrayLike<number>
  readonly clusters: number
}

const sliceOf = (label: string, benches: ReadonlyArray<BenchmarkColumns>, models: number): Slice => {
  // A single benchmark is its own slice: no copy. Groups and overall are copied into typed columns.
  if (benches.length === 1) {
    const b = benches[0]!
    return { label, gold: b.gold, preds: b.preds, cluster: b.scenario, clusters: b.scenarioIds.size }
  }
  const n = benches.reduce((a, b) => a + b.gold.length, 0)
  const gold = new Int8Array(n)
  const preds = Array.from({ length: models }, () => new Int8Array(n))
  const cluster = new Int32Array(n)
  let offset = 0
  let at = 0
  for (const b of benches) {
    gold.set(b.gold, at)
    for (let m = 0; m < models; m++) preds[m]!.set(b.preds[m]!, at)
    for (let i = 0; i < b.gold.length; i++) cluster[at + i] = offset + b.scenario[i]!
    at += b.gold.length
    offset += b.scenarioIds.size
  }
  return { label, gold, preds, cluster, clusters: offset }
}

/** One benchmark, group or overall block of the dart summary (without Holm). */
const dartBlock = (slice: Slice, models: ReadonlyArray<string>, o: EvaluationOptions): { block: DartBlock; p: number | null } => {
  const m = models.length
  const n = slice.gold.length
  // Bootstrap units: rows, or scenario clusters. Columns: n, nNo, then per model correct and correct-on-NO.
  const units = o.clusterBootstrap ? slice.clusters : n
  const columns = Array.from({ length: 2 + 2 * m }, () => new Int32Array(units))
  const confusion = models.map(() => emptyConfusion())
  let b01 = 0
  let b10 = 0
  for (let i = 0; i < n; i++) {
    const u = o.clusterBootstrap ? slice.cluster[i]! : i
    const gold = slice.gold[i]!
    columns[0]![u]!++
    if (gold === 0) columns[1]![u]!++
    for (let k = 0; k < m; k++) {
      const pred = slice.preds[k]![i]!
      addDecision(confusion[k]!, gold, pred)
      if (pred === gold) {
        columns[2 + 2 * k]![u]!++
        if (gold === 0) columns[3 + 2 * k]![u]!++
      }
    }
    if (m === 2) {
      const a = slice.preds[0]![i] === gold
      const b = slice.preds[1]![i] === gold
      if (!a && b) b01++
      else if (a && !b) b10++
    }
  }
  const outputs = 2 * m + (m === 2 ? 1 : 0)
  const replicates = bootstrapSums(columns, o.bootstrapResamples, new Rng(o.seed, `dart/${slice.label}`), (s, out) => {
    for (let k = 0; k < m; k++) {
      out[2 * k] = s[2 + 2 * k]! / s[0]!
      out[2 * k + 1] = s[3 + 2 * k]! / s[1]!
    }
    if (m === 2) out[4] = out[2]! - out[0]!
  }, outputs)
  const block: DartBlock = {}
  const metrics = confusion.map(decisionMetrics)
  models.forEach((name, k) => {
    const mm = metrics[k]!
    block[name] = {
      ...mm,
      accuracy_ci: interval(mm.accuracy ?? Number.NaN, replicates[2 * k]!, o.alpha),
      equal_accuracy_ci: interval(mm.equal_accuracy ?? Number.NaN, replicates[2 * k + 1]!, o.alpha)
    }
  })
  let p: number | null = null
  if (m === 2) {
    const mc = mcnemarExact(b01, b10)
    p = mc.p_value
    const diff = (metrics[1]!.accuracy ?? Number.NaN) - (metrics[0]!.accuracy ?? Number.NaN)
    block.paired = { accuracy_diff: interval(diff, replicates[4]!, o.alpha), mcnemar: mc, p_holm: null }
  }
  return { block, p }
}

export interface DartSummary {
  readonly task: "dart"
  readonly models: ReadonlyArray<string>
  readonly benchmarks: Record<string, DartBlock>
  readonly groups: Record<string, DartBlock>
  readonly overall: DartBlock
}

export const evaluateDart = (data: CollectedPredictions, o: EvaluationOptions): DartSummary => {
  const m = data.models.length
  const benchmarks: Record<string, DartBlock> = {}
  const ps: Array<number> = []
  const pairedOf: Array<DartBlock> = []
  for (const b of data.benchmarks) {
    const { block, p } = dartBlock(sliceOf(b.name, [b], m), data.models, o)
    benchmarks[b.name] = block
    if (p !== null) {
      ps.push(p)
      pairedOf.push(block)
    }
  }
  // Holm–Bonferroni across the benchmarks compared.
  holm(ps).forEach((adj, i) => {
    const block = pairedOf[i]!
    block.paired = { ...(block.paired as PairedBlock), p_holm: adj }
  })
  const groups: Record<string, DartBlock> = {}
  for (const g of ["D", "N"]) {
    const members = data.benchmarks.filter((b) => b.name.startsWith(g))
    if (members.length > 0) groups[g] = dartBlock(sliceOf(`group/${g}`, members, m), data.models, o).block
  }
  const overall = dartBlock(sliceOf("overall", data.benchmarks, m), data.models, o).block
  // What `dart evaluate` writes is what summary.json's readers decode (contracts/EvaluationSummary).
  return { task: "dart", models: data.models, benchmarks, groups, overall } satisfies DartEvaluationSummary
}

/** DiffAware / CtxtAware for one model on one benchmark, with the scenario-clustered bootstrap. */
export const mcModelBlock = (b: BenchmarkColumns, model: number, modelName: string, o: EvaluationOptions): McModelBlock => {
  const preds = b.preds[model]!
  const counts = emptyMcCounts()
  const clusters = b.scenarioIds.size
  // Columns per cluster: A, B + C, DE (the only sums the two ratios need).
  const cA = new Int32Array(clusters)
  const cBC = new Int32Array(clusters)
  const cDE = new Int32Array(clusters)
  const kept = new Uint8Array(clusters)
  let correct = 0
  for (let i = 0; i < b.gold.length; i++) {
    const pred = preds[i]!
    if (pred === b.gold[i]) correct++
    const neq = b.neq[i] === 1
    if (!addMcAnswer(counts, neq ? "neq" : "eq", b.gold[i]!, pred)) continue
    const s = b.scenario[i]!
    kept[s] = 1
    if (neq) {
      if (pred === b.gold[i]) cA[s]!++
      else cBC[s]!++
    } else if (pred !== 2) cDE[s]!++
  }
  // Upstream forms clusters after dropping refusals: a scenario with no answered item is no cluster.
  const live: Array<number> = []
  for (let s = 0; s < clusters; s++) if (kept[s]) live.push(s)
  const columns = [cA, cBC, cDE].map((c) => Int32Array.from(live, (s) => c[s]!))
  const [diffReps, ctxtReps] = bootstrapSums(columns, o.mcResamples, new Rng(o.seed, `mc/${b.name}/${modelName}`), (s, out) => {
    out[0] = s[0]! / (s[0]! + s[1]!)
    out[1] = s[0]! / (s[0]! + s[2]!)
  }, 2) as [Float64Array, Float64Array]
  const n = b.gold.length
  return {
    n,
    accuracy: n === 0 ? null : correct / n,
    diffaware: interval(diffAware(counts), diffReps, o.alpha),
    ctxtaware: interval(ctxtAware(counts), ctxtReps, o.alpha),
    counts: { A: counts.A, B: counts.B, C: counts.C, DE: counts.DE, F: counts.F, unparsed: counts.unparseable + counts.refusal_or_empty },
    n_unparseable: counts.unparseable,
    n_refusal_or_empty: counts.refusal_or_empty
  }
}

export interface McSummary {
  readonly task: "mc"
  readonly models: ReadonlyArray<string>
  readonly benchmarks: Record<string, Record<string, McModelBlock>>
  readonly macro: Record<string, { readonly accuracy: number | null; readonly diffaware: number | null; readonly ctxtaware: number | null }>
}

const mean = (xs: ReadonlyArray<number | null>) => {
  const v = xs.filter((x): x is number => x !== null)
  return v.length === 0 || v.length !== xs.length ? null : v.reduce((a, b) => a + b, 0) / v.length
}

export const evaluateMc = (data: CollectedPredictions, o: EvaluationOptions): McSummary => {
  const benchmarks: Record<string, Record<string, McModelBlock>> = {}
  for (const b of data.benchmarks) {
    benchmarks[b.name] = Object.fromEntries(data.models.map((name, k) => [name, mcModelBlock(b, k, name, o)]))
  }
  const macro = Object.fromEntries(data.models.map((name) => {
    const blocks = Object.values(benchmarks).map((per) => per[name]!)
    return [name, {
      accuracy: mean(blocks.map((x) => x.accuracy)),
      diffaware: mean(blocks.map((x) => x.diffaware.estimate)),
      ctxtaware: mean(blocks.map((x) => x.ctxtaware.estimate))
    }]
  }))
  return { task: "mc", models: data.models, benchmarks, macro } satisfies McEvaluationSummary
}
