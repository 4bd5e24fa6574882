import { pyStrip } from "./PyText.ts"

/**
 * The text of the first element of an HTML fragment, as upstream's `clean_html`
 * computes it with BeautifulSoup's `html.parser`: each direct text piece stripped,
 * child elements recursively, all joined by one space. Undefined when there is no element.
 */
export const firstElementText = (html: string): string | undefined => {
  interface Node {
    readonly name: string
    readonly contents: Array<Node | string>
  }
  const rootNode: Node = { name: "#root", contents: [] }
  const stack: Array<Node> = [rootNode]
  let first: Node | undefined
  const token = /<!--[\s\S]*?(?:-->|$)|<\/([a-zA-Z][^\s/>]*)[^>]*>|<([a-zA-Z][^\s/>]*)((?:[^>"']|"[^"]*"|'[^']*')*)>|[^<]+|</g
  for (const m of html.matchAll(token)) {
    const top = stack[stack.length - 1]!
    const [text, closeName, openName, attrs] = m
    if (text.startsWith("<!--")) {
      top.contents.push(text.replace(/^<!--/, "").replace(/-->$/, ""))
    } else if (closeName !== undefined) {
      const name = closeName.toLowerCase()
      const at = stack.findLastIndex((n) => n.name === name)
      if (at > 0) stack.length = at
    } else if (openName !== undefined) {
      const node: Node = { name: openName.toLowerCase(), contents: [] }
      top.contents.push(node)
      first ??= node
      if (!VOID.has(node.name) && !(attrs ?? "").trimEnd().endsWith("/")) stack.push(node)
    } else {
      top.contents.push(decodeEntities(text))
    }
  }
  if (first === undefined) return undefined
  const extract = (n: Node): string =>
    n.contents.length === 0 ? "" : n.contents.map((c) => (typeof c === "string" ? pyStrip(c) : extract(c))).join(" ")
  return extract(first)
}

const VOID = new Set(["area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track", "wbr"])

const ENTITIES: Record<string, string> = { amp: "&", lt: "<", gt: ">", quot: "\"", apos: "'", nbsp: "\u00a0" }

const decodeEntities = (s: string) =>
  s.replace(/&(#x[0-9a-fA-F]+|#\d+|[a-zA-Z]+);/g, (all, e: string) => {
    if (e.startsWith("#x")) return String.fromCodePoint(parseInt(e.slice(2), 16))
    if (e.startsWith("#")) return String.fromCodePoint(parseInt(e.slice(1), 10))
    return ENTITIES[e] ?? all
  })
