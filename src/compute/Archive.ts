import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as fsp from "node:fs/promises"
import * as path from "node:path"
import type { Readable } from "node:stream"
import { pipeline } from "node:stream/promises"
import * as tar from "tar-stream"
import type { CopiedFile } from "./ServiceSpec.ts"

/**
 * Tar a local folder so that, put at `/` in a container, it lands at `target` (an absolute folder). Every parent
 * is its own entry, so the target's parents need not exist (a put into a missing folder answers a misleading 404).
 * Files are hashed while they stream into the archive.
 */
export const packDirectory = async (localDir: string, target: string): Promise<{ stream: Readable; files: Promise<Array<CopiedFile>> }> => {
  const parts = target.split("/").filter((p) => p !== "")
  const listing: Array<{ rel: string; size: number; mode: number }> = []
  const walk = async (dir: string, rel: string): Promise<void> => {
    for (const entry of (await fsp.readdir(dir, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
      const full = path.join(dir, entry.name)
      const r = rel === "" ? entry.name : `${rel}/${entry.name}`
      if (entry.isDirectory()) {
        listing.push({ rel: `${r}/`, size: 0, mode: 0o755 })
        await walk(full, r)
      } else if (entry.isFile()) {
        const st = await fsp.stat(full)
        listing.push({ rel: r, size: st.size, mode: st.mode & 0o777 })
      }
    }
  }
  await walk(localDir, "")
  const pack = tar.pack()
  const files = (async () => {
    const out: Array<CopiedFile> = []
    for (let i = 1; i <= parts.length; i++) {
      await new Promise<void>((res, rej) => pack.entry({ name: `${parts.slice(0, i).join("/")}/`, type: "directory", mode: 0o755 }, (e) => (e ? rej(e) : res())))
    }
    const prefix = parts.join("/")
    for (const item of listing) {
      if (item.rel.endsWith("/")) {
        await new Promise<void>((res, rej) => pack.entry({ name: `${prefix}/${item.rel}`, type: "directory", mode: item.mode }, (e) => (e ? rej(e) : res())))
        continue
      }
      const hash = createHash("sha256")
      // Readable by any user in the container (the trainer writes its safetensors 0600).
      const entry = pack.entry({ name: `${prefix}/${item.rel}`, size: item.size, mode: item.mode | 0o644 })
      const source = fs.createReadStream(path.join(localDir, item.rel))
      source.on("data", (chunk) => hash.update(chunk))
      await pipeline(source, entry)
      out.push({ path: item.rel, size: item.size, sha256: hash.digest("hex") })
    }
    pack.finalize()
    return out
  })()
  files.catch((e) => pack.destroy(e as Error))
  return { stream: pack as unknown as Readable, files }
}

/**
 * Unpack a getArchive stream (entries prefixed by the remote basename) into `localDir`, hashing while streaming.
 * Written into a temporary sibling and renamed at the end, so `localDir` holds all of it or none.
 */
export const unpackInto = async (stream: Readable, localDir: string): Promise<Array<CopiedFile>> => {
  const parent = path.dirname(localDir)
  await fsp.mkdir(parent, { recursive: true })
  const tmp = await fsp.mkdtemp(path.join(parent, `.${path.basename(localDir)}.tmp-`))
  const out: Array<CopiedFile> = []
  try {
    const extract = tar.extract()
    let root: string | undefined
    extract.on("entry", (header, body, next) => {
      const name = header.name.replace(/\/+$/, "")
      const slash = name.indexOf("/")
      root ??= slash < 0 ? name : name.slice(0, slash)
      // A single file comes back as one entry without a folder: it lands inside localDir under its own name.
      const rel = slash < 0 ? (header.type === "file" ? name : "") : name.slice(slash + 1)
      if (rel.split("/").includes("..") || path.isAbsolute(rel)) return next(new Error(`archive entry ${header.name} leaves the target folder`))
      const dest = path.join(tmp, rel)
      if (header.type === "directory") {
        fsp.mkdir(dest, { recursive: true }).then(() => { body.resume(); next() }, next)
      } else if (header.type === "file") {
        const hash = createHash("sha256")
        let size = 0
        fsp.mkdir(path.dirname(dest), { recursive: true })
          .then(() => {
            // Listen only once the file is ready: a data listener alone would start the flow and lose bytes.
            body.on("data", (c) => {
              hash.update(c as Buffer)
              size += (c as Buffer).length
            })
            return pipeline(body, fs.createWriteStream(dest, { mode: 0o644 }))
          })
          .then(() => { out.push({ path: rel, size, sha256: hash.digest("hex") }); next() }, next)
      } else {
        body.resume()
        next()
      }
    })
    await pipeline(stream, extract)
    await fsp.rm(localDir, { recursive: true, force: true })
    await fsp.rename(tmp, localDir)
    return out
  } catch (e) {
    await fsp.rm(tmp, { recursive: true, force: true })
    throw e
  }
}
