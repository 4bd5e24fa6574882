/** FirstRowTask: which task wrote a prediction file, read from its first row before any stage opens it. */
import { Effect } from "effect"
import * as fs from "node:fs/promises"

/**
 * The first row's `task` field. A file that cannot be read, is empty, or whose first line is not a JSON object with a
 * string `task` counts as dart: rows of the original's inference carry no task, and the DiffAware reader then reports
 * whatever is wrong with the file, with its line.
 */
export const firstRowTask = (file: string): Effect.Effect<string> =>
  Effect.promise(async () => {
    let handle: fs.FileHandle | undefined
    try {
      // Opening a FIFO blocks until a writer comes: only a regular file is opened (the stage refuses the rest).
      if (!(await fs.stat(file)).isFile()) return "dart"
      handle = await fs.open(file, "r")
      const buffer = Buffer.alloc(1 << 16)
      let text = ""
      let position = 0
      // Up to 4 MiB: a first row holds every model's answer, but no more than that.
      while (!text.includes("\n") && position < 4 << 20) {
        const { bytesRead } = await handle.read(buffer, 0, buffer.length, position)
        if (bytesRead === 0) break
        position += bytesRead
        text += buffer.subarray(0, bytesRead).toString("utf8")
      }
      const first = text.split("\n").find((l) => l.trim() !== "")
      if (first === undefined) return "dart"
      const row: unknown = JSON.parse(first)
      return row !== null && typeof row === "object" && typeof (row as { task?: unknown }).task === "string" ? (row as { task: string }).task : "dart"
    } catch {
      return "dart"
    } finally {
      await handle?.close().catch(() => {})
    }
  })
