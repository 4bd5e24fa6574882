import { Context, Effect, Layer, Option, Schedule, Schema } from "effect"
import { TrainerClient } from "../training/TrainerClient.ts"
import { computeHosts } from "../compute/Placement.ts"
import * as path from "node:path"
import { Compute } from "../compute/Compute.ts"
import type { ExperimentConfig } from "../config/ExperimentConfig.ts"
import {
  type ChatLayout,
  ChatLayoutRecord,
  decideLayout,
  describeLayout,
  foldSystem,
  layoutOf,
  type ProbeConversation,
  type TemplateProbe
} from "../domain/ChatLayout.ts"
import { judgeMessages } from "../audit/JudgePrompt.ts"
import { mcMessages, mcPresets } from "../inference/InferencePlan.ts"
import { correctionMessage, distillMessages, studentMessages } from "../teacher/Prompts.ts"
import { makeDirectories, readTextIfExists, writeFileAtomic } from "../runs/AtomicFile.ts"
import { RunStore } from "../runs/RunStore.ts"
import { vllmEndpoints } from "./ServicePlacement.ts"

/** `runs/{EXP_ID}/chat_layout.json`: the layout every stage lays the base model's conversations out with. */
export const CHAT_LAYOUT_FILE = "chat_layout.json"

export class ChatLayoutError extends Schema.TaggedError<ChatLayoutError>()("ChatLayoutError", { message: Schema.String }) {}

const QUESTION = "Should two equally qualified applicants from different towns be treated the same?"

/**
 * Every shape of conversation dart sends the base model: the student prompt (with and without a policy suffix, as a
 * request and as a training row), the suite's multiple-choice view (empty and non-empty system text), and, when the
 * teacher or judge is the run's own server, their conversations with a correction turn.
 */
export const probeConversations = (config: ExperimentConfig): Array<ProbeConversation> => {
  const student = studentMessages(QUESTION, Object.values(config.inference.policies).find((p) => p !== "") ?? "")
  const out: Array<ProbeConversation> = [
    { name: "student", messages: student, add_generation_prompt: true },
    { name: "training row", messages: [...student, { role: "assistant", content: "The groups do not differ here.\nConclusion: NO" }], add_generation_prompt: false },
    { name: "mc (empty system)", messages: mcMessages({ question: QUESTION, benchmark: "D1" }, ""), add_generation_prompt: true },
    { name: "mc", messages: mcMessages({ question: QUESTION, benchmark: "D2" }, mcPresets.sys1!), add_generation_prompt: true }
  ]
  if (config.teacher.provider === "vllm") {
    const first = distillMessages(QUESTION, "NO")
    out.push({
      name: "teacher correction",
      messages: [...first, { role: "assistant", content: "They differ." }, correctionMessage("NO", ["missing conclusion line"])],
      add_generation_prompt: true
    })
  }
  if (config.judge.provider === "vllm" && (config.audit.llm_judge.enabled || (config.ood.enabled && config.ood.judge))) {
    out.push({
      name: "judge",
      messages: judgeMessages({ question: QUESTION, gold: "NO", aText: "A.\nConclusion: NO", bText: "B.\nConclusion: YES", aConclusion: "NO", bConclusion: "YES" }),
      add_generation_prompt: true
    })
  }
  return out
}

const decodeRecord = Schema.decodeUnknownOption(Schema.fromJsonString(ChatLayoutRecord))

/** The recorded layout, when it was decided for this base and setting; undefined otherwise (decide again). */
export const readChatLayout = (config: ExperimentConfig, runDir: string) =>
  readTextIfExists(path.join(runDir, CHAT_LAYOUT_FILE)).pipe(
    Effect.mapError((e) => new ChatLayoutError({ message: e.message })),
    Effect.map((text) => {
      if (text === undefined) return undefined
      const r = decodeRecord(text)
      return Option.isSome(r) && r.value.base === config.model.base && r.value.setting === config.model.system_role ? r.value : undefined
    })
  )

const writeRecord = (runDir: string, record: ChatLayoutRecord) =>
  makeDirectories([runDir]).pipe(
    Effect.andThen(writeFileAtomic(path.join(runDir, CHAT_LAYOUT_FILE), `${JSON.stringify(record, null, 2)}\n`)),
    Effect.mapError((e) => new ChatLayoutError({ message: e.message }))
  )

export interface ProbeOptions {
  /** A server that serves the base model (the teacher's or judge's `base_url` for provider vllm): asked first. */
  readonly server?: string
}

/**
 * Asks the base model's template: through a running server's `/tokenize` when the run is given vLLM endpoints
 * (`probeViaServer`), through the trainer when it is given as an endpoint, else in the trainer image on the first
 * host (the run's tiny models built first).
 */
export const probeTemplate = (config: ExperimentConfig, options: ProbeOptions = {}): Effect.Effect<TemplateProbe, ChatLayoutError> => {
  const conversations = probeConversations(config)
  const attempts: Array<Effect.Effect<TemplateProbe, ChatLayoutError>> = []
  for (const server of [...(options.server === undefined ? [] : [options.server]), ...vllmEndpoints(config)]) attempts.push(probeViaServer(server, conversations))
  const trainer = config.compute.trainer.endpoint
  if (trainer !== null) {
    // A trainer given as an endpoint has the base model where it runs: it renders the template there.
    attempts.push(Effect.scoped(Effect.flatMap(Layer.build(TrainerClient.layer(trainer)), (ctx) => Context.get(ctx, TrainerClient).probeChatTemplate(config.model.base, conversations))).pipe(
      Effect.mapError((e) => new ChatLayoutError({ message: `trainer ${trainer}: ${e.message}` }))
    ))
  }
  if (computeHosts(config).length > 0) {
    // Where the trainer would run, through the command's compute (none: nothing to probe there).
    attempts.push(Effect.serviceOption(Compute).pipe(
      Effect.flatMap((compute) =>
        Option.isNone(compute)
          ? Effect.fail(new ChatLayoutError({ message: "no compute layer to probe the chat template with" }))
          : compute.value.probeChatTemplate(conversations).pipe(Effect.mapError((e) => new ChatLayoutError({ message: e.message }))))
    ))
  }
  const [first, ...rest] = attempts
  if (first === undefined) return Effect.fail(new ChatLayoutError({ message: "no host to probe the chat template on: compute.hosts is empty and no vLLM or trainer endpoint is set" }))
  // The first route that answers decides (a configured server that is not up yet, say, gives way to the next).
  return rest.reduce(
    (acc, next) => acc.pipe(Effect.catch((e1: ChatLayoutError) => next.pipe(Effect.mapError((e2) => new ChatLayoutError({ message: `${e1.message}; ${e2.message}` }))))),
    first
  )
}

/**
 * The layout for this run: the recorded one, else decided now (from `probe` when the caller already has it, as
 * `dart run`'s preflight does) and recorded before it is used, so every later stage — and a resumed run — reads the
 * same decision.
 */
export const ensureChatLayout = (config: ExperimentConfig, runDir: string, probe?: TemplateProbe | null, options: ProbeOptions = {}) =>
  Effect.gen(function*() {
    const recorded = yield* readChatLayout(config, runDir)
    if (recorded !== undefined) {
      // Decided before `dart init` made the manifest (dart run's preflight): the first stage after it notes it there.
      yield* noteInManifest(config, runDir, recorded)
      return recorded
    }
    const answer = probe !== undefined
      ? probe
      : config.model.system_role === "auto"
      ? yield* probeTemplate(config, options)
      // Forced: the probe still tells the stop tokens, when it can run.
      : yield* probeTemplate(config, options).pipe(Effect.orElseSucceed(() => null))
    const decided = decideLayout(config.model.base, config.model.system_role, answer)
    if ("error" in decided) return yield* new ChatLayoutError({ message: decided.error })
    yield* writeRecord(runDir, decided)
    yield* noteInManifest(config, runDir, decided)
    process.stderr.write(`chat layout for ${config.model.base}: ${describeLayout(decided)}\n`)
    return decided
  })

/** The manifest says it too, beside the stages it governs (once the run folder has one). */
const noteInManifest = (config: ExperimentConfig, runDir: string, decided: ChatLayoutRecord) =>
  Effect.gen(function*() {
    const store = yield* RunStore
    const handle = store.handle(config.run.runs_dir, config.run.exp_id)
    if (path.resolve(handle.dir) !== path.resolve(runDir)) return
    const manifest = yield* store.readManifest(handle).pipe(Effect.mapError((e) => new ChatLayoutError({ message: e.message })))
    const { base, system, reason, stop_token_ids } = decided
    const note = { base, system, reason, stop_token_ids }
    if (manifest === undefined || JSON.stringify(manifest.chat_layout) === JSON.stringify(note)) return
    yield* store.writeManifest(handle, { ...manifest, chat_layout: note }).pipe(Effect.mapError((e) => new ChatLayoutError({ message: e.message })))
  })

export const chatLayoutFor = (config: ExperimentConfig, runDir: string, options: ProbeOptions = {}): Effect.Effect<ChatLayout, ChatLayoutError, RunStore> =>
  ensureChatLayout(config, runDir, undefined, options).pipe(Effect.map(layoutOf))

// ---------------------------------------------------------------------------------------------
// Through a running vLLM server: `/tokenize` renders the template server-side (an error status when it raises) and
// `/detokenize` shows whether the system text survived. Stop tokens cannot be read there; the server's own apply.

const Tokenized = Schema.Struct({ tokens: Schema.Array(Schema.Int) })
const Detokenized = Schema.Struct({ prompt: Schema.String })
const Models = Schema.Struct({ data: Schema.Array(Schema.Struct({ id: Schema.String })) })

/** A kept-alive connection the server closed meanwhile fails once ("fetch failed"): asked again on a new one. */
const connectionRetry = { times: 2, schedule: Schedule.spaced("300 millis") }

const post = (base: string, route: string, body: unknown) =>
  Effect.tryPromise({
    try: async () => {
      const r = await fetch(`${base}${route}`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(60_000)
      })
      return { status: r.status, text: (await r.text()).slice(0, 1 << 20) }
    },
    catch: (e) => new ChatLayoutError({ message: `${base}${route}: ${(e as Error).message}` })
  }).pipe(Effect.retry(connectionRetry))

const errorText = (text: string) => {
  try {
    const j = JSON.parse(text) as { error?: { message?: string } | string; message?: string }
    return typeof j.error === "object" ? j.error.message ?? text : j.error ?? j.message ?? text
  } catch {
    return text.trim().slice(0, 300)
  }
}

export const probeViaServer = (url: string, conversations: ReadonlyArray<ProbeConversation>) =>
  Effect.gen(function*() {
    const base = url.replace(/\/+$/, "").replace(/\/v1$/, "")
    const listing = yield* Effect.tryPromise({
      try: async () => (await fetch(`${base}/v1/models`, { signal: AbortSignal.timeout(30_000) })).text(),
      catch: (e) => new ChatLayoutError({ message: `${base}/v1/models: ${(e as Error).message}` })
    }).pipe(Effect.retry(connectionRetry))
    // The first model listed is the base (vLLM lists adapters after it); a server that lists none is asked without one.
    const models = Schema.decodeUnknownOption(Schema.fromJsonString(Models))(listing)
    const model = Option.isSome(models) ? models.value.data[0]?.id : undefined
    const render = (messages: ProbeConversation["messages"], addGenerationPrompt: boolean) =>
      Effect.gen(function*() {
        const t = yield* post(base, "/tokenize", { ...(model === undefined ? {} : { model }), messages, add_generation_prompt: addGenerationPrompt })
        // vLLM answers a template that raises with a 4xx naming it; anything else that is not tokens is a server
        // without the route (another OpenAI-compatible server, a proxy): nothing to render with there.
        if (t.status >= 400 && t.status < 500 && t.status !== 404 && t.status !== 405) return { error: errorText(t.text) }
        const tokens = Schema.decodeUnknownOption(Schema.fromJsonString(Tokenized))(t.text)
        if (t.status !== 200 || Option.isNone(tokens)) return { missing: true as const }
        const d = yield* post(base, "/detokenize", { ...(model === undefined ? {} : { model }), tokens: tokens.value.tokens })
        const text = Schema.decodeUnknownOption(Schema.fromJsonString(Detokenized))(d.text)
        return Option.isSome(text) ? { text: text.value.prompt } : { error: "/detokenize answered without text" }
      })
    const results: Array<{ name: string; native: string; folded: string }> = []
    for (const c of conversations) {
      const native = yield* render(c.messages, c.add_generation_prompt)
      if ("missing" in native) {
        // Not vLLM (or a proxy without the route): nothing to render with, so the conversation goes as written.
        return { ...probeFromResults(conversations.map((x) => ({ name: x.name, native: "ok", folded: "ok" }))), reason: `${base} has no /tokenize to render the template with: the system message is sent as is` }
      }
      const system = c.messages[0]?.role === "system" ? c.messages[0].content : ""
      const nativeResult = "error" in native ? native.error! : system !== "" && !native.text.includes(system) ? "dropped" : "ok"
      const folded = yield* render(foldSystem(c.messages), c.add_generation_prompt)
      results.push({ name: c.name, native: nativeResult, folded: "error" in folded ? folded.error! : "ok" })
    }
    return probeFromResults(results)
  })

/** The decision from per-conversation results (the server probe; the trainer's probe decides the same way). */
export const probeFromResults = (results: ReadonlyArray<{ name: string; native: string; folded: string }>): TemplateProbe => {
  const nativeBad = results.find((r) => r.native !== "ok")
  const foldedBad = results.find((r) => r.folded !== "ok")
  const layout = nativeBad === undefined ? "native" : foldedBad === undefined ? "folded" : null
  const reason = nativeBad === undefined
    ? "the template renders the system message"
    : nativeBad.native === "dropped"
    ? `the template drops the system message (${nativeBad.name})`
    : foldedBad === undefined
    ? `the template raises on a system message: ${nativeBad.native} (${nativeBad.name})`
    : `the template raises: ${foldedBad.folded} (${foldedBad.name}, with the system text folded into the user turn)`
  return {
    layout, reason, conversations: results,
    template_sha256: null, template_source: "server", bos_token: null, template_adds_bos: false, double_bos: false, eos_token: null,
    stop_token_ids: [], end_of_turn: null, end_of_turn_id: null, end_of_turn_stops: true, pad_token: null, pad_plan: "server"
  }
}
