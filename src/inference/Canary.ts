/** Canary: `runCanary` (adapters must answer the canary prompts unlike the base) and its `CanaryError`. */
import { Effect, Schema } from "effect"
import type { Sampling, VllmEndpoint, VllmError } from "../serving/VllmClient.ts"
import { type Arm, canaryPrompts } from "./InferencePlan.ts"
import { type ChatLayout, layoutMessages, NATIVE } from "../domain/ChatLayout.ts"

/** An adapter answered the canary prompts exactly like the base: it is probably not applied (vllm#34186). */
export class CanaryError extends Schema.TaggedError<CanaryError>()("CanaryError", { message: Schema.String }) {}

/** What the manifest records per adapter: where it was checked and on how many prompts it differed from the base. */
export interface CanaryResult {
  readonly server: string
  readonly prompts: number
  readonly differing_from_base: number
}

/**
 * Asks the base and then each adapter arm for greedy answers to `canaryPrompts`. vLLM silently serves the base for an
 * adapter whose module names it does not match, so an adapter that differs from the base on none of them stops the run.
 * Returns the record per adapter name; arms without an adapter are skipped.
 */
export const runCanary = Effect.fn("Canary.run")(function*(options: {
  readonly endpoint: VllmEndpoint
  /** The server as the user gave it, for the record and the message. */
  readonly server: string
  /** The base model's served id. */
  readonly baseId: string
  readonly arms: ReadonlyArray<Arm>
  readonly seed: number
  /** The run's chat layout: the canary is asked as every other request is. */
  readonly layout?: ChatLayout
}): Effect.fn.Return<Record<string, CanaryResult>, CanaryError | VllmError> {
  const results: Record<string, CanaryResult> = {}
  const adapterArms = options.arms.filter((a) => a.adapter !== null)
  if (adapterArms.length === 0) return results
  // Greedy and short: a LoRA that is applied changes some of these answers, one that is not changes none.
  const layout = options.layout ?? NATIVE
  const greedy: Sampling = { temperature: 0, top_p: 1, top_k: null, max_tokens: 24, seed: options.seed }
  const ask = (model: string) =>
    Effect.forEach(canaryPrompts, (messages) =>
      options.endpoint.chat({
        model,
        messages: layoutMessages(layout, messages),
        sampling: greedy,
        ...(layout.stopTokenIds.length > 0 ? { stopTokenIds: layout.stopTokenIds } : {})
      }).pipe(Effect.map((r) => r.texts[0]!)))
  const baseAnswers = yield* ask(options.baseId)
  for (const a of adapterArms) {
    const answers = yield* ask(a.name)
    const differing = answers.filter((t, i) => t !== baseAnswers[i]).length
    results[a.name] = { server: options.server, prompts: canaryPrompts.length, differing_from_base: differing }
    if (differing === 0) {
      return yield* new CanaryError({
        message: `canary failed on ${options.server}: adapter "${a.name}" (${a.adapter}) gives exactly the base model's greedy answers on all ` +
          `${canaryPrompts.length} canary prompts, so it is probably not applied (vLLM silently serves the base for adapters whose ` +
          "module names it does not match, vllm#34186); check its target modules and weights"
      })
    }
  }
  return results
})
