import { Schema } from "effect"
import type { ChatMessage } from "./ChatMessage.ts"

/**
 * How the base model's chat template takes DART's conversations, decided once per run before anything is spent
 * (src/pipeline/ChatLayoutRecord.ts) and applied by `layoutMessages` to every conversation that reaches the base
 * model or its adapters: training rows, inference, the canary, and the teacher or judge when they are the run's own
 * vLLM server. One function for all of them, so training and serving never see different prompts.
 *
 * `native`: the system message is sent as a system message. `folded`: the template refuses the system role (Gemma 2,
 * system-less Mistral templates) or drops it silently, so the system text opens the first user turn instead.
 */
export const SystemRole = Schema.Literals(["native", "folded"])
export type SystemRole = typeof SystemRole.Type

/** `model.system_role`: `auto` lets the template decide; the others force a layout. */
export const SystemRoleSetting = Schema.Literals(["auto", "native", "folded"])
export type SystemRoleSetting = typeof SystemRoleSetting.Type

export interface ChatLayout {
  readonly system: SystemRole
  /**
   * Token ids vLLM must stop at beyond the model's own: the template's end-of-turn token when neither the tokenizer's
   * EOS nor the generation config's eos ids hold it (the model would otherwise talk past its turn).
   */
  readonly stopTokenIds: ReadonlyArray<number>
}

export const NATIVE: ChatLayout = { system: "native", stopTokenIds: [] }

/**
 * The system text folded into the first user turn: `system + "\n\n" + user` (an empty system message is dropped).
 * The trainer's probe folds the same way (containers/trainer/dart_trainer/chat_layout.py); test/vectors/chat_layout.json
 * holds cases both sides check.
 */
export const foldSystem = (messages: ReadonlyArray<ChatMessage>): Array<ChatMessage> => {
  const [first, ...rest] = messages
  if (first === undefined || first.role !== "system") return [...messages]
  const i = rest.findIndex((m) => m.role === "user")
  if (first.content === "" || i < 0) return rest
  return rest.map((m, k) => (k === i ? { role: "user", content: `${first.content}\n\n${m.content}` } : m))
}

/** The conversation as the base model receives it under `layout`. */
export const layoutMessages = (layout: Pick<ChatLayout, "system">, messages: ReadonlyArray<ChatMessage>): Array<ChatMessage> =>
  layout.system === "folded" ? foldSystem(messages) : [...messages]

/** One conversation the probe renders, under the name its result carries. */
export interface ProbeConversation {
  readonly name: string
  readonly messages: ReadonlyArray<ChatMessage>
  readonly add_generation_prompt: boolean
}

/** What `python -m dart_trainer.chat_layout` prints (one JSON object). */
export const TemplateProbe = Schema.Struct({
  layout: Schema.NullOr(SystemRole),
  reason: Schema.String,
  conversations: Schema.Array(Schema.Struct({
    name: Schema.String,
    native: Schema.String,
    folded: Schema.String
  })),
  template_sha256: Schema.NullOr(Schema.String),
  template_source: Schema.optionalKey(Schema.NullOr(Schema.String)),
  bos_token: Schema.NullOr(Schema.String),
  template_adds_bos: Schema.Boolean,
  double_bos: Schema.Boolean,
  eos_token: Schema.NullOr(Schema.String),
  stop_token_ids: Schema.Array(Schema.Int),
  end_of_turn: Schema.NullOr(Schema.String),
  end_of_turn_id: Schema.NullOr(Schema.Int),
  end_of_turn_stops: Schema.Boolean,
  pad_token: Schema.NullOr(Schema.String),
  pad_plan: Schema.String
})
export type TemplateProbe = typeof TemplateProbe.Type

/** What the run records (`runs/{EXP_ID}/chat_layout.json`) and every stage reads. */
export const ChatLayoutRecord = Schema.Struct({
  /** `model.base` as configured when the layout was decided: another base decides again. */
  base: Schema.String,
  setting: SystemRoleSetting,
  system: SystemRole,
  reason: Schema.String,
  stop_token_ids: Schema.Array(Schema.Int),
  /** The probe's full answer; null when the layout was forced and no probe could run. */
  probe: Schema.NullOr(TemplateProbe)
})
export type ChatLayoutRecord = typeof ChatLayoutRecord.Type

export const layoutOf = (record: ChatLayoutRecord): ChatLayout => ({ system: record.system, stopTokenIds: record.stop_token_ids })

/**
 * The decision from the probe and the setting: a forced setting wins (said so in the reason); `auto` takes the
 * template's answer. Returns an error text when the template renders no layout and none is forced.
 */
export const decideLayout = (
  base: string,
  setting: SystemRoleSetting,
  probe: TemplateProbe | null
): ChatLayoutRecord | { readonly error: string } => {
  const stops = probe !== null && !probe.end_of_turn_stops && probe.end_of_turn_id !== null ? [probe.end_of_turn_id] : []
  if (setting !== "auto") {
    const said = probe === null ? "" : probe.layout === null ? `; the template renders neither (${probe.reason})` : probe.layout === setting ? "" : `; the template alone would give ${probe.layout} (${probe.reason})`
    return { base, setting, system: setting, reason: `forced by model.system_role${said}`, stop_token_ids: stops, probe }
  }
  if (probe === null) return { error: "model.system_role is auto but the chat template could not be probed" }
  if (probe.layout === null) return { error: `the base model's chat template cannot render DART's conversations: ${probe.reason}` }
  return { base, setting, system: probe.layout, reason: probe.reason, stop_token_ids: stops, probe }
}

/** One line for the plan and the checks: the layout and why. */
export const describeLayout = (r: ChatLayoutRecord): string => {
  const parts = [`system role ${r.system === "native" ? "native" : "folded into the first user turn"} (${r.reason})`]
  if (r.stop_token_ids.length > 0) parts.push(`stops also at ${r.probe?.end_of_turn ?? "the end-of-turn token"} (id ${r.stop_token_ids.join(", ")}), which the model's EOS list lacks`)
  if (r.probe?.double_bos === true) parts.push("the template writes BOS itself: prompts are tokenised without adding another")
  return parts.join("; ")
}
