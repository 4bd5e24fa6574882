/** ServerScheduler: `makeServerScheduler` spreads queued work over vLLM servers that go down and come back, each at its own adaptive concurrency. */
import { Clock, Console, Deferred, Duration, Effect, Latch, Queue, Schedule, Schema, type Scope, Semaphore } from "effect"
import type { VllmEndpoint } from "../serving/VllmClient.ts"
import { nextConcurrency } from "./Concurrency.ts"

/** How long a server that has not come up yet still counts for its share of the queue. */
const STARTING_GRACE_MS = 60_000

/** No server was up for `downTimeoutMs`: the run stops (what was answered is kept). */
export class NoServerAnswered extends Schema.TaggedError<NoServerAnswered>()("NoServerAnswered", { message: Schema.String }) {}

/** One server as `prepare` and `process` see it. */
export interface ServerHandle {
  /** Its position in `servers`. */
  readonly idx: number
  /** As the user gave it. */
  readonly url: string
  readonly endpoint: VllmEndpoint
  /** False from the moment it is marked down until `prepare` passes on it again; `process` checks it before each request. */
  readonly isUp: () => boolean
  /** Written by `prepare` as it learns them, so the manifest reports them even when a later step of it failed. */
  version: string | null
  baseId: string | null
  /** Out of rotation: its workers stop taking work and the monitor watches /health until it answers again. */
  readonly markDown: (why: string) => Effect.Effect<void>
  readonly countAnswer: () => void
}

/** A server's state for the progress line and the manifest. */
export interface ServerReport {
  readonly url: string
  readonly up: boolean
  readonly version: string | null
  readonly baseId: string | null
  readonly answered: number
  readonly concurrency: { readonly final: number; readonly min: number; readonly max: number }
}

export interface ServerScheduler<P> {
  readonly report: () => ReadonlyArray<ServerReport>
  /**
   * Hands each unit of `work` to whichever server's worker is free and waits until every unit is done. A unit whose
   * `process` answers false (its server went down meanwhile) goes back to the queue for any server. Fails with what
   * `prepare` failed with, with NoServerAnswered, or with what `process` failed with (an answer that cannot be stored,
   * a full disk: the stage ends instead of waiting for workers that are gone).
   * Monitors and workers live in the caller's scope.
   */
  readonly run: <E, R>(
    work: ReadonlyArray<number>,
    process: (server: ServerHandle, unit: number) => Effect.Effect<boolean, E, R>
  ) => Effect.Effect<void, P | NoServerAnswered | E, R | Scope.Scope>
}

export interface SchedulerOptions<P> {
  readonly servers: ReadonlyArray<string>
  readonly endpoint: (url: string) => VllmEndpoint
  /** Workers per server and the ceiling of its adaptive concurrency. */
  readonly maxConcurrency: number
  readonly healthIntervalMs: number
  readonly metricsIntervalMs: number
  readonly downTimeoutMs: number
  /**
   * Makes a server that answers /health ready for work (first time and after each restart): true when it is, false
   * when it is not ready yet (asked again at the next check); a failure ends the run.
   */
  readonly prepare: (server: ServerHandle) => Effect.Effect<boolean, P>
}

/** `url c=N answered` per server (or `down`), for the progress line. */
export const describeServers = (reports: ReadonlyArray<ServerReport>): string =>
  reports.map((s) => `${s.url} ${s.up ? `c=${s.concurrency.final}` : "down"} ${s.answered}`).join(", ")

interface ServerState extends ServerHandle {
  readonly latch: Latch.Latch
  readonly sem: Semaphore.Semaphore
  up: boolean
  target: number
  minSeen: number
  maxSeen: number
  answered: number
  restarts: number
  /** Permits this client holds right now, a hint for `nextConcurrency`. */
  busy: number
  /** Never up yet and never found down: it is coming, so it counts for its share of the queue. */
  starting: boolean
}

export const makeServerScheduler = Effect.fn("ServerScheduler.make")(function*<P>(options: SchedulerOptions<P>) {
  const maxC = options.maxConcurrency
  // Start at most at 32 in flight: the metrics loop grows it from there once the server shows spare room.
  const initial = Math.min(maxC, 32)
  const servers: Array<ServerState> = []
  for (const [idx, url] of options.servers.entries()) {
    const s: ServerState = {
      idx, url, endpoint: options.endpoint(url), latch: yield* Latch.make(false), sem: yield* Semaphore.make(initial),
      up: false, target: initial, minSeen: initial, maxSeen: initial, version: null, baseId: null, answered: 0, restarts: 0, busy: 0, starting: true,
      isUp: () => s.up,
      countAnswer: () => void s.answered++,
      markDown: (why) =>
        Effect.gen(function*() {
          if (!s.up) return
          s.up = false
          yield* s.latch.close
          yield* Console.error(`infer: server ${s.url} unavailable (${why}); its items go to the others, and it is watched until it answers again`)
        })
    }
    servers.push(s)
  }

  const report = (): ReadonlyArray<ServerReport> =>
    servers.map((s) => ({
      url: s.url, up: s.up, version: s.version, baseId: s.baseId, answered: s.answered,
      concurrency: { final: s.target, min: s.minSeen, max: s.maxSeen }
    }))

  const run = <E, R>(work: ReadonlyArray<number>, process: (server: ServerHandle, unit: number) => Effect.Effect<boolean, E, R>) =>
    Effect.gen(function*() {
      const finished = yield* Deferred.make<void, P | NoServerAnswered | E>()
      const queue = yield* Queue.unbounded<number>()
      let remaining = work.length
      for (const unit of work) yield* Queue.offer(queue, unit)

      const bringUp = (s: ServerState) =>
        options.prepare(s).pipe(
          Effect.flatMap((ready) =>
            ready
              ? Effect.gen(function*() {
                s.up = true
                s.starting = false
                yield* s.latch.open
                if (s.restarts++ > 0) yield* Console.error(`infer: server ${s.url} is back; adapters loaded again, canary passed`)
              })
              : Effect.void
          ),
          Effect.catch((e) => Deferred.fail(finished, e))
        )

      // Down: poll /health and bring it up when it answers. Up: steer its concurrency by its queue; a failed
      // metrics scrape with a failing /health means it went away.
      const monitor = (s: ServerState) =>
        Effect.gen(function*() {
          if (!s.up) {
            if (yield* s.endpoint.health) yield* bringUp(s)
            // Coming up late (a slow first health check, adapters still moving) is not being down: it keeps its share
            // of the queue for the first minute; after that only servers that answer count.
            else if ((yield* Clock.currentTimeMillis) - startedAt > STARTING_GRACE_MS) s.starting = false
            return
          }
          const m = yield* Effect.result(s.endpoint.metrics)
          if (m._tag === "Success") {
            const next = nextConcurrency(s.target, m.success, { min: 1, max: maxC }, s.busy)
            if (next !== s.target) {
              s.target = next
              s.minSeen = Math.min(s.minSeen, next)
              s.maxSeen = Math.max(s.maxSeen, next)
              yield* Semaphore.resize(s.sem, next)
            }
          } else if (!(yield* s.endpoint.health)) yield* s.markDown(m.failure.message)
        }).pipe(Effect.repeat(Schedule.spaced(Duration.millis(Math.min(options.healthIntervalMs, options.metricsIntervalMs)))))

      let lastUp = yield* Clock.currentTimeMillis
      const startedAt = lastUp
      const watchdog = Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        if (servers.some((s) => s.up)) lastUp = now
        else if (now - lastUp > options.downTimeoutMs) {
          yield* Deferred.fail(finished, new NoServerAnswered({
            message: `no vLLM server answered for ${Math.round(options.downTimeoutMs / 1000)} s (${options.servers.join(", ")}); answers so far are kept, run again to go on`
          }))
        }
      }).pipe(Effect.repeat(Schedule.spaced(Duration.millis(options.healthIntervalMs))))

      /**
       * A server's fair part of the work left: queued and in flight, over the servers that are up or still coming.
       * Without it the first server up takes a short queue whole (its workers start together) and the others idle.
       */
      const share = Effect.map(Queue.size(queue), (queued) => {
        const expected = servers.filter((x) => x.up || x.starting).length
        const busy = servers.reduce((n, x) => n + x.busy, 0)
        return Math.max(1, Math.ceil((queued + busy) / Math.max(1, expected)))
      })
      // maxC workers per server, gated by its latch (up), its semaphore (current concurrency target) and its share.
      const worker = (s: ServerState) =>
        Effect.gen(function*() {
          yield* s.latch.await
          yield* s.sem.take(1)
          while (s.busy >= (yield* share)) {
            yield* s.sem.release(1)
            yield* Effect.sleep("50 millis")
            yield* s.latch.await
            yield* s.sem.take(1)
          }
          const unit = yield* Queue.take(queue)
          s.busy++
          const complete = yield* process(s, unit).pipe(Effect.ensuring(Effect.andThen(Effect.sync(() => void s.busy--), s.sem.release(1))))
          if (!complete) {
            yield* Queue.offer(queue, unit)
            return
          }
          if (--remaining === 0) yield* Deferred.succeed(finished, undefined)
        }).pipe(Effect.forever, Effect.catch((e) => Deferred.fail(finished, e)))

      if (remaining === 0) return
      for (const s of servers) {
        yield* Effect.forkScoped(monitor(s))
        for (let w = 0; w < maxC; w++) yield* Effect.forkScoped(worker(s))
      }
      yield* Effect.forkScoped(watchdog)
      yield* Deferred.await(finished)
    })

  return { report, run } satisfies ServerScheduler<P>
})
