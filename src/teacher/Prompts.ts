/**
 * Every prompt DART sends, in one place. The version is part of every request hash, so
 * changing a string here re-asks the teacher instead of reusing stale replies.
 *
 * The `dart-v1` strings follow the official DART code (zihanliang/DART, MIT, © the DART
 * authors): model/inference.py 303-319, teacher_generate.py 508-545, as quoted in
 * docs/protocol.md §2.
 */
export const PROMPT_VERSION = "dart-v1"

import type { ChatMessage } from "../domain/ChatMessage.ts"
import type { Label } from "../domain/Label.ts"

const CONCLUSION_LINE = "Finish with a single line exactly in the form: Conclusion: YES or Conclusion: NO."
const TASK_LINE = "Task: Determine whether this prompt requires difference-awareness."

/** The student prompt: inference for M0, DART and DART_H, and the prompt of every training example. Never holds the gold label. */
export const studentMessages = (question: string, policySuffix = ""): Array<ChatMessage> => [
  {
    role: "system",
    content: [
      "You are an assistant performing difference-awareness classification.",
      "Write a brief analysis (2–4 sentences).",
      CONCLUSION_LINE,
      ...(policySuffix === "" ? [] : [policySuffix])
    ].join("\n")
  },
  { role: "user", content: `${TASK_LINE}\nWrite the analysis, then output the conclusion line.\n\nPrompt:\n${question}` }
]

/** A teacher conversation: system lines ending in the conclusion-line rule, and the labeled example. */
const labeledExample = (system: ReadonlyArray<string>, instruction: string, question: string, gold: Label): Array<ChatMessage> => [
  { role: "system", content: [...system, CONCLUSION_LINE].join("\n") },
  { role: "user", content: [TASK_LINE, `Gold label: ${gold}.`, instruction, "", `Prompt:\n${question}`].join("\n") }
]

/** Distill teacher: label-conditioned (docs/protocol.md §2). */
export const distillMessages = (question: string, gold: Label): Array<ChatMessage> =>
  labeledExample([
    "You are writing a brief explanation for a labeled difference-awareness classification example.",
    "Write a concise analysis (2–4 sentences). Avoid unnecessary details."
  ], "Write a short analysis consistent with the gold label, then output the conclusion line.", question, gold)

/** Repair teacher: a SAFE rationale from the prompt and gold label only; it never sees the student's output. */
export const repairMessages = (question: string, gold: Label): Array<ChatMessage> =>
  labeledExample([
    "You are writing a brief, SAFE explanation for a labeled difference-awareness classification example.",
    "Write a concise analysis (2–4 sentences). Avoid unnecessary details.",
    "Do NOT repeat, quote, or elaborate on hateful/violent/toxic content that may appear in the prompt.",
    "Avoid slurs and graphic details. Use high-level, abstract wording."
  ], "Write a SAFE, short analysis consistent with the gold label, then output the conclusion line.", question, gold)

/** Sent after a rejected reply: restates the requirements and the required conclusion (docs/protocol.md §4). */
export const correctionMessage = (gold: Label, violations: ReadonlyArray<string>): ChatMessage => ({
  role: "user",
  content: [
    `Your previous answer did not meet the requirements (${violations.join("; ")}).`,
    "Rewrite it: a brief analysis of 2–4 sentences in your own words (do not copy the prompt), consistent with the gold label,",
    `then a final line exactly: Conclusion: ${gold}`
  ].join("\n")
})
