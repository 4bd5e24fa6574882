/**
 * Problems JSON.parse hides: a key given twice in one object (the last silently wins) and
 * keys that reach for Object.prototype (`__proto__` even changes what the merged config
 * inherits). `text` must already be valid JSON; each problem names its key path and line.
 */
export const jsonKeyProblems = (text: string): Array<string> => {
  const problems: Array<string> = []
  let i = 0
  const lineAt = (pos: number) => text.slice(0, pos).split("\n").length
  const ws = () => {
    while (i < text.length && " \t\r\n\uFEFF".includes(text[i]!)) i++
  }
  const string = (): string => {
    const start = i
    i++ // opening quote
    while (text[i] !== "\"") i += text[i] === "\\" ? 2 : 1
    i++
    return JSON.parse(text.slice(start, i)) as string
  }
  const value = (path: string): void => {
    ws()
    const c = text[i]
    if (c === "{") {
      i++
      const seen = new Set<string>()
      ws()
      if (text[i] === "}") return void i++
      for (;;) {
        ws()
        const at = i
        const key = string()
        const keyPath = path === "" ? key : `${path}.${key}`
        if (seen.has(key)) problems.push(`${keyPath}: duplicate key (line ${lineAt(at)}); JSON would silently keep only the last`)
        if (key === "__proto__" || key === "constructor" || key === "prototype") problems.push(`${keyPath}: reserved key not allowed (line ${lineAt(at)})`)
        seen.add(key)
        ws()
        i++ // colon
        value(keyPath)
        ws()
        if (text[i++] === "}") return
      }
    }
    if (c === "[") {
      i++
      ws()
      if (text[i] === "]") return void i++
      for (let n = 0; ; n++) {
        value(`${path}[${n}]`)
        ws()
        if (text[i++] === "]") return
      }
    }
    if (c === "\"") return void string()
    while (i < text.length && !",}] \t\r\n".includes(text[i]!)) i++
  }
  value("")
  return problems
}

/** Key paths that must never be set, whatever their source. */
export const reservedKey = (key: string) => key === "__proto__" || key === "constructor" || key === "prototype"
