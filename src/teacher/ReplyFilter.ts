import { parseConclusion } from "../evaluation/ConclusionParser.ts"
import type { Label } from "../domain/Label.ts"

export interface ReplyCheck {
  readonly conclusion: Label | null
  readonly violations: ReadonlyArray<string>
  /** The training target: the reply cut after its conclusion line. */
  readonly target: string
}

const CONCLUSION_LINE = /Conclusion\s*:\s*(YES|NO)\b[^\n]*/i

/** Sentences as the original splits them: on whitespace after `.`, `!` or `?`. */
export const sentences = (text: string) => text.trim().split(/(?<=[.!?])\s+/).filter((s) => s.trim() !== "")

/** 40-character windows of the prompt, taken every 20 characters (docs/protocol.md §4). */
export const copiedWindow = (reply: string, prompt: string, size = 40, step = 20): string | undefined => {
  for (let i = 0; i + size <= prompt.length; i += step) {
    const w = prompt.slice(i, i + size)
    if (reply.includes(w)) return w
  }
  return undefined
}

/** docs/protocol.md §4 acceptance: parses, matches the gold label, 2–4 sentences, no copied prompt window, not truncated. */
export const checkReply = (reply: string, gold: Label, prompt: string, finishReason: string | null): ReplyCheck => {
  const violations: Array<string> = []
  const cut = reply.indexOf("\n\n\n")
  const body = cut >= 0 ? reply.slice(0, cut) : reply
  const m = CONCLUSION_LINE.exec(body)
  const conclusion = parseConclusion(reply)
  if (finishReason === "length") violations.push("truncated (finish_reason length)")
  if (conclusion === null) violations.push("no Conclusion: YES|NO line")
  else if (conclusion !== gold) violations.push(`conclusion ${conclusion} differs from the gold label ${gold}`)
  const analysis = m ? body.slice(0, m.index).trim() : body.trim()
  const n = sentences(analysis).length
  if (n < 2 || n > 4) violations.push(`analysis has ${n} sentences, not 2-4`)
  const copied = copiedWindow(reply, prompt)
  if (copied !== undefined) violations.push("copies a 40-character window of the prompt")
  const target = m ? `${body.slice(0, m.index + m[0].length).trimEnd()}` : body.trimEnd()
  return { conclusion, violations, target: target.replace(/^\s+/, "") }
}
