import { createHash } from "node:crypto"

/** JSON with object keys sorted at every level, so equal values always hash alike. */
export const canonicalJson = (u: unknown): string =>
  JSON.stringify(u, (_k, v: unknown) =>
    typeof v === "object" && v !== null && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : v)

export const sha256Hex = (data: string | Uint8Array): string => createHash("sha256").update(data).digest("hex")

export const hashJson = (u: unknown): string => sha256Hex(canonicalJson(u))
