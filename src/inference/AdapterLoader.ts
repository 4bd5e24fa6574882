/** AdapterLoader: `loadAdapters` puts every adapter arm on a vLLM server and checks it is listed under the base (`AdapterLoadError` when not). */
import { Effect, Schema } from "effect"
import type { AdapterError, PlacedAdapter } from "../serving/AdapterStore.ts"
import type { VllmError } from "../serving/VllmClient.ts"
import type { Arm } from "./InferencePlan.ts"
import type { ServerHandle } from "./ServerScheduler.ts"

/** The server lists no base model, or an adapter is missing from its listing or hangs under another parent after loading. */
export class AdapterLoadError extends Schema.TaggedError<AdapterLoadError>()("AdapterLoadError", { message: Schema.String }) {}

/**
 * Records the server's version and base model on `server`, then places and loads each adapter arm (again after a
 * restart: a restarted server has forgotten them). An adapter already listed from the same folder is left as it is.
 * Returns the base model's id.
 */
export const loadAdapters = Effect.fn("AdapterLoader.load")(function*(
  server: ServerHandle,
  arms: ReadonlyArray<Arm>,
  place: (endpoint: string, name: string, localDir: string) => Effect.Effect<PlacedAdapter, AdapterError>
): Effect.fn.Return<string, AdapterLoadError | AdapterError | VllmError> {
  const ep = server.endpoint
  server.version = yield* ep.version.pipe(Effect.orElseSucceed(() => "unknown"))
  let cards = yield* ep.models
  const base = cards.find((c) => c.parent === null || c.parent === undefined)
  if (base === undefined) return yield* new AdapterLoadError({ message: `${server.url}/v1/models lists no base model` })
  const baseId = (server.baseId = base.id)
  for (const a of arms) {
    if (a.adapter === null) continue
    const placed = yield* place(server.url, a.name, a.adapter)
    const card = cards.find((c) => c.id === a.name)
    if (card !== undefined && card.root === placed.serverPath) continue
    yield* ep.loadAdapter(a.name, placed.serverPath, { inPlace: card !== undefined }).pipe(
      // A load whose reply was lost (reset socket, retried) may already have registered it: the listing decides.
      Effect.catchIf((e) => e.status === 400 && /already been loaded/.test(e.message), (e) =>
        ep.models.pipe(Effect.flatMap((now) => (now.some((c) => c.id === a.name && c.root === placed.serverPath) ? Effect.void : Effect.fail(e)))))
    )
  }
  // vLLM lists a loaded LoRA with its base as parent; anything else means it is not served on top of this base.
  cards = yield* ep.models
  for (const a of arms) {
    if (a.adapter === null) continue
    const card = cards.find((c) => c.id === a.name)
    if (card === undefined || card.parent !== baseId) {
      return yield* new AdapterLoadError({
        message: `${server.url}: adapter "${a.name}" ${card === undefined ? "is not listed" : `is listed with parent ${String(card.parent)}`} after loading (expected parent ${baseId})`
      })
    }
  }
  return baseId
})
