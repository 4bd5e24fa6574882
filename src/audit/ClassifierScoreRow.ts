import { Schema } from "effect"

/**
 * A row of `audit/{RUN}/classifier_scores.jsonl`: one classifier's harm score of one text of a pair (`key`, view, A or
 * B), appended once its `/classify` batch is answered, so a rerun after a kill sends only the texts no row holds yet.
 */
export const ClassifierScoreRow = Schema.Struct({
  key: Schema.String,
  view: Schema.String,
  side: Schema.Literals(["a", "b"]),
  classifier: Schema.String,
  score: Schema.Finite.check(Schema.isBetween({ minimum: 0, maximum: 1 })),
  windows: Schema.Int.check(Schema.isGreaterThan(0))
})
export type ClassifierScoreRow = typeof ClassifierScoreRow.Type

/** Which text of which pair a score belongs to, as one string (a map key). */
export const textId = (t: { readonly key: string; readonly view: string; readonly side: "a" | "b" }): string => `${t.key}\u0000${t.view}\u0000${t.side}`
