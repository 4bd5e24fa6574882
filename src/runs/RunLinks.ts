import { constants } from "node:fs"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { ioError, RunStoreError } from "./RunStoreError.ts"
import { fileKind } from "./SafePath.ts"

/**
 * Symbolic links inside a run folder. DART never makes one there, so one found below `runs/{EXP_ID}/` was planted
 * (a shared runs folder, an unpacked archive) and following it would read or write a file elsewhere. Links at or
 * above the run folder are the user's own (runs/ on another disk) and are followed.
 */

/** The folder of a run's lock files (RunLock.ts). Every stage makes it before it writes, so it marks a run folder. */
export const LOCK_DIR = ".locks"

export interface PlantedLink {
  /** The link itself: `file` or one of its folders. */
  readonly link: string
  /** What it points to, as written in the link. */
  readonly target: string
  /** The run folder it lies in. */
  readonly root: string
}

const lstatOrUndefined = (p: string) =>
  fs.lstat(p).catch((e: NodeJS.ErrnoException) => (e.code === "ENOENT" || e.code === "ENOTDIR" ? undefined : Promise.reject(e)))

const isRunFolder = (dir: string) => fs.stat(path.join(dir, LOCK_DIR)).then((s) => s.isDirectory(), () => false)

const planted = async (link: string, root: string): Promise<PlantedLink> => ({
  link,
  target: await fs.readlink(link).catch(() => "?"),
  root
})

/**
 * The first symbolic link on the way to `file` that lies inside a run folder: one of its folders below the run
 * folder, or `file` itself when `includeFile`. `root` is the run folder when the caller knows it; without it, the
 * run folder is the nearest folder above a link that holds `.locks/`. One lstat per folder on the way when there
 * is no link at all (the usual case), so it is cheap enough for every open.
 */
export const findPlantedLink = async (file: string, options: { readonly root?: string | undefined; readonly includeFile: boolean }): Promise<PlantedLink | undefined> => {
  const abs = path.resolve(file)
  const chain: Array<string> = []
  for (let p = options.includeFile ? abs : path.dirname(abs); ; p = path.dirname(p)) {
    chain.push(p)
    if (path.dirname(p) === p) break
  }
  if (options.root !== undefined) {
    const root = path.resolve(options.root)
    for (const p of chain) {
      if (p === root || !p.startsWith(`${root}${path.sep}`)) break
      if ((await lstatOrUndefined(p))?.isSymbolicLink()) return planted(p, root)
    }
    return undefined
  }
  const links: Array<number> = []
  for (let i = 0; i < chain.length; i++) if ((await lstatOrUndefined(chain[i]!))?.isSymbolicLink()) links.push(i)
  for (const i of links) {
    for (let j = i + 1; j < chain.length; j++) {
      if (await isRunFolder(chain[j]!)) return planted(chain[i]!, chain[j]!)
    }
  }
  return undefined
}

/** What a user reads when a run file is refused because of `l`. */
export const plantedLinkMessage = (file: string, l: PlantedLink) =>
  `${l.link === path.resolve(file) ? file : `${file}: ${l.link}`} is a symbolic link (to ${l.target}) inside the run folder ${l.root}; ` +
  "dart never follows links there, so nothing was read or written through it. Remove the link (`dart status --verify` lists them all)"

/** The refusal when an open with O_NOFOLLOW failed (ELOOP): `file` itself is a link. */
export const noFollowMessage = (file: string) =>
  `${file} is a symbolic link; dart opens this file only where it is, never through a link. Remove the link (\`dart status --verify\` lists those in a run)`

/** A run file refused before a byte of it was read or written; its message says why, whole. */
export class RefusedFileError extends Error {}

/** Rejects with `RefusedFileError` when `file` (with `includeFile`) or a folder on its way is a link inside a run. */
export const refuseLinks = async (file: string, options: { readonly root?: string | undefined; readonly includeFile: boolean }): Promise<void> => {
  const l = await findPlantedLink(file, options)
  if (l !== undefined) throw new RefusedFileError(plantedLinkMessage(file, l))
}

/**
 * Opens `file` with O_NOFOLLOW added: a link at `file` itself (planted after `refuseLinks` looked) fails with ELOOP,
 * which becomes a `RefusedFileError`. O_NONBLOCK keeps an open of a FIFO from waiting for a writer; on a regular
 * file it changes nothing.
 */
export const openNoFollow = async (file: string, flags: number, mode?: number): Promise<fs.FileHandle> => {
  try {
    return await fs.open(file, flags | constants.O_NOFOLLOW | constants.O_NONBLOCK, mode)
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ELOOP") throw new RefusedFileError(noFollowMessage(file))
    throw e
  }
}

/**
 * Rejects (closing `handle`) when it is a FIFO, a device or a socket: reading one blocks or never ends. A folder
 * is let through: reading it fails at once with EISDIR, which says what it is.
 */
export const refuseSpecialFile = async (handle: fs.FileHandle, file: string): Promise<void> => {
  // Closed on every failure, a failed stat too: callers call this before their own try/finally owns the handle.
  const st = await handle.stat().catch(async (e: unknown) => {
    await handle.close().catch(() => {})
    throw e
  })
  if (!(st.isFIFO() || st.isCharacterDevice() || st.isBlockDevice() || st.isSocket())) return
  await handle.close().catch(() => {})
  throw new RefusedFileError(`${file} is ${fileKind(st)}, not a regular file`)
}

/** The `catch` of a run file's promise code: a refusal keeps its message; anything else is an I/O error. */
export const refusedOrIoError = (file: string, what: string) => (e: unknown): RunStoreError =>
  e instanceof RunStoreError ? e : e instanceof RefusedFileError ? new RunStoreError({ path: file, message: e.message, cause: e }) : ioError(file, what)(e)

/** A symbolic link found under a run folder: its path relative to the run, and its target. */
export interface RunLink {
  readonly path: string
  readonly target: string
}

/**
 * Every entry under `root`, found without following a link (the run folder itself may be one): the files and
 * folders, by path relative to `root`, and the links with their targets. (`fs.readdir` with `recursive` follows
 * folder links.)
 */
export const walkRun = async (root: string): Promise<{ readonly entries: ReadonlyArray<string>; readonly links: ReadonlyArray<RunLink> }> => {
  const entries: Array<string> = []
  const links: Array<RunLink> = []
  const walk = async (rel: string): Promise<void> => {
    const listed = await fs.readdir(path.join(root, rel), { withFileTypes: true })
      .catch((e: NodeJS.ErrnoException) => (e.code === "ENOENT" || e.code === "ENOTDIR" ? [] : Promise.reject(e)))
    for (const e of listed.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
      const p = rel === "" ? e.name : path.join(rel, e.name)
      // Dirent types come from the listing (lstat semantics): a link to a folder is a link, not a folder.
      if (e.isSymbolicLink()) {
        links.push({ path: p, target: await fs.readlink(path.join(root, p)).catch(() => "?") })
        continue
      }
      entries.push(p)
      if (e.isDirectory()) await walk(p)
    }
  }
  await walk("")
  return { entries, links }
}

/** Every symbolic link under `root`, with its target. */
export const listRunLinks = async (root: string): Promise<ReadonlyArray<RunLink>> => (await walkRun(root)).links
