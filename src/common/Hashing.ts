import { createHash } from "node:crypto"
import { open } from "node:fs/promises"

/** JSON with object keys sorted at every level, so equal values always hash alike. */
export const canonicalJson = (u: unknown): string =>
  JSON.stringify(u, (_k, v: unknown) =>
    typeof v === "object" && v !== null && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : v)

export const sha256Hex = (data: string | Uint8Array): string => createHash("sha256").update(data).digest("hex")

export const hashJson = (u: unknown): string => sha256Hex(canonicalJson(u))

/**
 * sha256 and size of a file, streamed: run files (predictions, ledgers) can be hundreds of
 * megabytes. One read buffer is reused, so hashing allocates no per-chunk buffers.
 */
export const sha256File = async (file: string): Promise<{ readonly sha256: string; readonly bytes: number }> => {
  const hash = createHash("sha256")
  const handle = await open(file, "r")
  try {
    const buf = Buffer.allocUnsafe(1 << 18)
    let bytes = 0
    for (;;) {
      const { bytesRead } = await handle.read(buf, 0, buf.length, bytes)
      if (bytesRead === 0) break
      hash.update(buf.subarray(0, bytesRead))
      bytes += bytesRead
    }
    return { sha256: hash.digest("hex"), bytes }
  } finally {
    await handle.close()
  }
}
