import { Schema } from "effect"

/** An item's condition in the DiffAware suite: `neq` (groups differ in what matters) or `eq` (they should be treated the same). */
export const Condition = Schema.Literals(["neq", "eq"])
export type Condition = typeof Condition.Type
