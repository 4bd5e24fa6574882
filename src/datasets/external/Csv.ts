import { SuiteFormatError } from "./ExternalSuite.ts"

/** One CSV record with the 1-based line it starts on. */
export interface CsvRecord {
  readonly line: number
  readonly fields: ReadonlyArray<string>
}

/** RFC 4180 records (quoted fields may hold commas, quotes and newlines); an unterminated quote names its line. */
export const parseCsv = (text: string, file: string): Array<CsvRecord> => {
  const out: Array<CsvRecord> = []
  let fields: Array<string> = []
  let field = ""
  let line = 1
  let start = 1
  let quoted = false
  let quoteLine = 0
  let i = text.charCodeAt(0) === 0xfeff ? 1 : 0
  const endRecord = () => {
    fields.push(field)
    if (!(fields.length === 1 && fields[0] === "")) out.push({ line: start, fields })
    fields = []
    field = ""
  }
  for (; i < text.length; i++) {
    const c = text[i]!
    if (quoted) {
      if (c === "\"") {
        if (text[i + 1] === "\"") {
          field += "\""
          i++
        } else quoted = false
      } else {
        if (c === "\n") line++
        field += c
      }
    } else if (c === "\"" && field === "") {
      quoted = true
      quoteLine = line
    } else if (c === ",") {
      fields.push(field)
      field = ""
    } else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i++
      endRecord()
      line++
      start = line
    } else field += c
  }
  if (quoted) throw new SuiteFormatError(`${file}:${quoteLine}: unterminated quoted field`)
  if (field !== "" || fields.length > 0) endRecord()
  return out
}

/** Records as objects keyed by the header; a missing column or a short/long row fails naming file and line. */
export const csvObjects = (
  text: string,
  file: string,
  required: ReadonlyArray<string>
): Array<{ readonly line: number; readonly row: Readonly<Record<string, string>> }> => {
  const [header, ...records] = parseCsv(text, file)
  if (header === undefined) throw new SuiteFormatError(`${file}:1: empty file (expected a header with ${required.join(", ")})`)
  const missing = required.filter((c) => !header.fields.includes(c))
  if (missing.length > 0) {
    throw new SuiteFormatError(`${file}:${header.line}: missing column${missing.length > 1 ? "s" : ""} ${missing.join(", ")} (header has ${header.fields.join(", ")})`)
  }
  return records.map((r) => {
    if (r.fields.length !== header.fields.length) {
      throw new SuiteFormatError(`${file}:${r.line}: ${r.fields.length} fields, the header has ${header.fields.length}`)
    }
    const row: Record<string, string> = {}
    header.fields.forEach((h, k) => (row[h] = r.fields[k]!))
    return { line: r.line, row }
  })
}
