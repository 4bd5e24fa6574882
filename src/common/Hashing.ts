import { createHash } from "node:crypto"
import { createReadStream } from "node:fs"

/** JSON with object keys sorted at every level, so equal values always hash alike. */
export const canonicalJson = (u: unknown): string =>
  JSON.stringify(u, (_k, v: unknown) =>
    typeof v === "object" && v !== null && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : v)

export const sha256Hex = (data: string | Uint8Array): string => createHash("sha256").update(data).digest("hex")

export const hashJson = (u: unknown): string => sha256Hex(canonicalJson(u))

/** sha256 and size of a file, streamed: run files (predictions, ledgers) can be hundreds of megabytes. */
export const sha256File = async (file: string): Promise<{ readonly sha256: string; readonly bytes: number }> => {
  const hash = createHash("sha256")
  let bytes = 0
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) {
    hash.update(chunk as Buffer)
    bytes += (chunk as Buffer).byteLength
  }
  return { sha256: hash.digest("hex"), bytes }
}
