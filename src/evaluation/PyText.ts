/**
 * Python `str` semantics the upstream parsers rely on: code-point slicing,
 * `isspace`-based `strip`, and `splitlines` line boundaries.
 */

/** Characters for which CPython's `str.isspace()` is true. */
const PY_SPACE = new Set([
  0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x85, 0xa0, 0x1680,
  0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a,
  0x2028, 0x2029, 0x202f, 0x205f, 0x3000
])

export const isPySpace = (cp: number) => PY_SPACE.has(cp)

/** `s.strip()` */
export const pyStrip = (s: string): string => {
  let start = 0
  let end = s.length
  // All Python whitespace is in the BMP, so UTF-16 units can be tested directly.
  while (start < end && PY_SPACE.has(s.charCodeAt(start))) start++
  while (end > start && PY_SPACE.has(s.charCodeAt(end - 1))) end--
  return s.slice(start, end)
}

/** `s[:n]` by code points. */
export const pyHead = (s: string, n: number): string => {
  let units = 0
  let points = 0
  while (units < s.length && points < n) {
    const cp = s.codePointAt(units)!
    units += cp > 0xffff ? 2 : 1
    points++
  }
  return s.slice(0, units)
}

/** `s.lower()`: JS full lowercase mapping matches CPython's for the characters in play. */
export const pyLower = (s: string): string => s.toLowerCase()

/** Line boundaries of `str.splitlines()`. */
const LINE_BREAK = /\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]/

/** `s.splitlines()`: no empty last element for a trailing line break. */
export const pySplitlines = (s: string): Array<string> => {
  if (s === "") return []
  const lines = s.split(LINE_BREAK)
  if (lines.length > 1 && lines[lines.length - 1] === "") lines.pop()
  return lines
}

/** `sub in s` for strings: plain substring test. */
export const pyContains = (s: string, sub: string) => s.includes(sub)
