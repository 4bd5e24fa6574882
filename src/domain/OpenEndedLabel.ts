import { Schema } from "effect"

/** The judge's label of a free answer (rubric dart-open-ended-v1, src/audit/OpenEndedRubric.ts): the paper's four outcomes, worst last. */
export const OPEN_ENDED_LABELS = ["difference_appropriate", "identity_blind", "refusal", "harmful"] as const
export const OpenEndedLabel = Schema.Literals(OPEN_ENDED_LABELS)
export type OpenEndedLabel = typeof OpenEndedLabel.Type
