import type { Stats } from "node:fs"
import * as fs from "node:fs/promises"
import * as path from "node:path"

/**
 * Why `name` is not a relative path that stays inside its folder, or undefined when it is.
 * Peers (a trainer's file names, a server's model ids) choose these names, so nothing is taken on trust:
 * no absolute path, no `..` or `.` segment, no empty segment, no backslash, no control character,
 * no segment longer than 255 bytes, at most 8 segments.
 */
export const unsafePathReason = (name: string): string | undefined => {
  if (name === "") return "it is empty"
  if (name.length > 1024) return "it is longer than 1024 characters"
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(name)) return "it holds a control character"
  if (name.includes("\\")) return "it holds a backslash"
  if (path.posix.isAbsolute(name) || path.win32.isAbsolute(name)) return "it is an absolute path"
  const segments = name.split("/")
  if (segments.length > 8) return "it has more than 8 segments"
  for (const s of segments) {
    if (s === "") return "it has an empty segment"
    if (s === "." || s === "..") return `it has a "${s}" segment`
    if (Buffer.byteLength(s) > 255) return "a segment is longer than 255 bytes"
  }
  return undefined
}

/** Whether `name` is a single path segment: safe (above) and without `/`. */
export const unsafeSegmentReason = (name: string): string | undefined =>
  name.includes("/") ? "it holds a /" : unsafePathReason(name)

/** `name` shown in an error: quoted with escapes (JSON), cut to 80 characters. */
export const showName = (name: string): string => {
  const json = JSON.stringify(name)
  return json.length > 82 ? `${json.slice(0, 80)}…"` : json
}

/** What a file that is not a regular file is, for a message: "a FIFO", "a character device", … */
export const fileKind = (st: Stats): string =>
  st.isFile() ? "a regular file" : st.isFIFO() ? "a FIFO" : st.isCharacterDevice() ? "a character device" : st.isBlockDevice() ? "a block device"
    : st.isDirectory() ? "a directory" : st.isSocket() ? "a socket" : st.isSymbolicLink() ? "a symbolic link" : "an unknown kind of file"

/**
 * Why `file` may not be read as an input (a FIFO blocks forever, a device such as /dev/zero never ends,
 * a folder is no file), or undefined when it is a regular file. Follows a symlink to its target: an input
 * the user names may be a link; what counts is what it points at.
 */
export const irregularInputReason = async (file: string): Promise<string | undefined> => {
  const st = await fs.stat(file)
  return st.isFile() ? undefined : `${file} is ${fileKind(st)}, not a regular file`
}
