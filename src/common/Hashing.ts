import { createHash } from "node:crypto"
import { constants, type Stats } from "node:fs"
import { open } from "node:fs/promises"

/** JSON with object keys sorted at every level, so equal values always hash alike. */
export const canonicalJson = (u: unknown): string =>
  JSON.stringify(u, (_k, v: unknown) =>
    typeof v === "object" && v !== null && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : v)

export const sha256Hex = (data: string | Uint8Array): string => createHash("sha256").update(data).digest("hex")

export const hashJson = (u: unknown): string => sha256Hex(canonicalJson(u))

/** A FIFO, device or socket: hashing one would block or never end. Undefined for anything else (a folder fails by itself: EISDIR). */
const specialKind = (st: Stats) =>
  st.isFIFO() ? "a FIFO" : st.isCharacterDevice() ? "a character device" : st.isBlockDevice() ? "a block device" : st.isSocket() ? "a socket" : undefined

/**
 * sha256 and size of a file, streamed: run files (predictions, ledgers) can be hundreds of
 * megabytes. One read buffer is reused, so hashing allocates no per-chunk buffers. A FIFO
 * would block (O_NONBLOCK keeps even the open from waiting) and a device such as /dev/zero
 * never end: both are refused. `noFollow`: a symbolic link at `file` fails (ELOOP).
 */
export const sha256File = async (file: string, options: { readonly noFollow?: boolean } = {}): Promise<{ readonly sha256: string; readonly bytes: number }> => {
  const hash = createHash("sha256")
  const handle = await open(file, constants.O_RDONLY | constants.O_NONBLOCK | (options.noFollow === true ? constants.O_NOFOLLOW : 0))
  try {
    const special = specialKind(await handle.stat())
    if (special !== undefined) throw new Error(`${file} is ${special}, not a regular file`)
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
