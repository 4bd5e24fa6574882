import { Schema } from "effect"
import { BenchmarkName } from "../config/ExperimentConfig.ts"
import { Condition } from "../domain/Condition.ts"
import { Label } from "../domain/Label.ts"

/** A row of `benchmark_suite/*.jsonl` (field meanings in benchmark_suite/README.md). */
export const SuiteRow = Schema.Struct({
  id: Schema.String,
  benchmark: BenchmarkName,
  condition: Condition,
  index: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)),
  question: Schema.NonEmptyString,
  answer: Schema.Literals([0, 1, 2]),
  marginalized_choice: Schema.NullOr(Schema.Literals([0, 1])),
  scenario: Schema.String
}).check(
  Schema.makeFilter((r) => {
    const expected = suiteId(r.benchmark, r.condition, r.index)
    if (r.id !== expected) return `id "${r.id}" does not match benchmark/condition/index (expected "${expected}")`
    if (r.condition === "eq" && r.answer !== 2) return "eq items always have answer 2 ((c))"
    if (r.condition === "neq" && r.answer === 2) return "neq items have answer 0 or 1"
    if (r.marginalized_choice !== null && !(r.condition === "eq" && r.benchmark.startsWith("N"))) {
      return "marginalized_choice is only set on eq items of N benchmarks"
    }
    return true
  })
)
export type SuiteRow = typeof SuiteRow.Type

export const suiteId = (benchmark: string, condition: Condition, index: number) =>
  `${benchmark}-${condition}-${String(index).padStart(4, "0")}`

export const Split = Schema.Literals(["train", "val", "test"])
export type Split = typeof Split.Type
export const splits: ReadonlyArray<Split> = Split.literals

/** The normalized item every later stage reads (docs/architecture.md row contract). */
export interface NormalizedItem extends SuiteRow {
  readonly gold_label: Label
  readonly split: Split
}

export const NormalizedItemSchema = Schema.Struct({
  ...SuiteRow.fields,
  gold_label: Label,
  split: Split
})
