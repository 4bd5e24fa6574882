import { Schema } from "effect"

export const Role = Schema.Literals(["system", "user", "assistant"])
export type Role = typeof Role.Type

/** One message of an OpenAI-style chat: what the teacher, the judge, the student and the trainer exchange. */
export const ChatMessage = Schema.Struct({ role: Role, content: Schema.String })
export type ChatMessage = typeof ChatMessage.Type
