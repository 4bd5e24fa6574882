import type { ServerMetrics } from "../serving/Metrics.ts"

export interface ConcurrencyBounds {
  readonly min: number
  readonly max: number
}

/**
 * The next in-flight target for one server from its queue: a server with nothing waiting has spare
 * batch slots, so grow (by an eighth, at least one); one whose waiting queue climbs past a tenth of
 * the target is flooded, so shrink by a quarter. Between the two, hold.
 */
export const nextConcurrency = (
  current: number,
  m: Pick<ServerMetrics, "waiting" | "running" | "kvCacheUsage">,
  b: ConcurrencyBounds,
  /** Slots this client had in use at the poll; a full cap with an idle queue is a reason to grow. */
  busy = 0
): number => {
  const clamp = (n: number) => Math.max(b.min, Math.min(b.max, Math.round(n)))
  const flooded = m.waiting > Math.max(2, current / 10) || (m.kvCacheUsage !== null && m.kvCacheUsage > 0.98 && m.waiting > 0)
  if (flooded) return clamp(Math.min(current * 0.75, Math.max(b.min, m.running + 1)))
  // Growing only pays when our requests are what keeps the server busy.
  if (m.waiting === 0 && (m.running >= current * 0.5 || busy >= current * 0.9)) return clamp(current + Math.max(1, current / 8))
  return clamp(current)
}
