import { Schema } from "effect"
import type { Condition } from "./Condition.ts"

/**
 * A gold label or a parsed conclusion (`Conclusion: YES|NO`): YES when a correct answer needs group
 * differences recognised, NO when the groups should be treated the same.
 */
export const Label = Schema.Literals(["YES", "NO"])
export type Label = typeof Label.Type

/** docs/protocol.md §1: a correct answer needs group differences exactly for the ≠ set. */
export const labelOf = (condition: Condition): Label => (condition === "neq" ? "YES" : "NO")

/** The evaluator's column code of a decision: 1 YES, 0 NO, −1 no conclusion. */
export const labelCode = (label: Label | null): 1 | 0 | -1 => (label === null ? -1 : label === "YES" ? 1 : 0)
