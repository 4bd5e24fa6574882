import { describe, expect, it } from "vitest"
import { readFileSync } from "node:fs"
import * as path from "node:path"
import { decideLayout, describeLayout, foldSystem, layoutMessages, type TemplateProbe } from "../../src/domain/ChatLayout.ts"
import type { ChatMessage } from "../../src/domain/ChatMessage.ts"
import { probeFromResults, probeViaServer } from "../../src/pipeline/ChatLayoutRecord.ts"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import { Effect } from "effect"
import { canaryPrompts, messagesFor } from "../../src/inference/InferencePlan.ts"
import { studentMessages } from "../../src/teacher/Prompts.ts"
import { resolveTinyModels, tinyFamily, tinyRoot } from "../../src/config/TinyModels.ts"
import { configFor } from "../support/RunConfig.ts"

const vectors = JSON.parse(readFileSync(path.join(import.meta.dirname, "../vectors/chat_layout.json"), "utf8")) as {
  cases: Array<{ name: string; messages: Array<ChatMessage>; folded: Array<ChatMessage> }>
}

const probe = (over: Partial<TemplateProbe>): TemplateProbe => ({
  layout: "native", reason: "the template renders the system message", conversations: [], template_sha256: "x", bos_token: "<s>",
  template_adds_bos: true, double_bos: false, eos_token: "</s>", stop_token_ids: [2], end_of_turn: "</s>", end_of_turn_id: 2,
  end_of_turn_stops: true, pad_token: null, pad_plan: "eos", ...over
})

describe("foldSystem", () => {
  for (const c of vectors.cases) {
    it(c.name, () => expect(foldSystem(c.messages)).toEqual(c.folded))
  }

  it("leaves the input alone and is what layoutMessages does for folded only", () => {
    const m = studentMessages("Q?", "policy")
    const copy = JSON.parse(JSON.stringify(m))
    expect(layoutMessages({ system: "native" }, m)).toEqual(m)
    expect(layoutMessages({ system: "folded" }, m)).toEqual(foldSystem(m))
    expect(m).toEqual(copy)
    expect(foldSystem(m)[0]!.content.startsWith(m[0]!.content + "\n\n")).toBe(true)
  })

  it("the served prompt and the training prompt of an item are the same laid-out messages", () => {
    // Training rows are the teacher's studentMessages + the reply; inference sends messagesFor(dart): one function lays both out.
    const item = { question: "Do the groups differ?", benchmark: "D1" as const }
    for (const system of ["native", "folded"] as const) {
      const served = layoutMessages({ system }, messagesFor("dart", item, ""))
      const trained = layoutMessages({ system }, [...studentMessages(item.question), { role: "assistant", content: "A.\nConclusion: NO" }])
      expect(trained.slice(0, -1)).toEqual(served)
    }
    expect(canaryPrompts.map((p) => foldSystem(p).every((m) => m.role !== "system"))).toEqual([true, true, true])
  })
})

describe("decideLayout", () => {
  it("takes the template's answer when auto, with the end-of-turn stop when the EOS list lacks it", () => {
    const r = decideLayout("b", "auto", probe({ layout: "folded", reason: "the template raises: System role not supported", end_of_turn: "<|end|>", end_of_turn_id: 7, end_of_turn_stops: false }))
    expect(r).toMatchObject({ system: "folded", stop_token_ids: [7], setting: "auto" })
    expect(describeLayout(r as Exclude<typeof r, { error: string }>)).toContain("folded into the first user turn (the template raises: System role not supported)")
    expect(describeLayout(r as Exclude<typeof r, { error: string }>)).toContain("<|end|> (id 7)")
  })

  it("fails when the template renders nothing and the layout is not forced", () => {
    expect(decideLayout("b", "auto", probe({ layout: null, reason: "the template raises: boom (student)" }))).toEqual({
      error: "the base model's chat template cannot render DART's conversations: the template raises: boom (student)"
    })
    expect(decideLayout("b", "auto", null)).toHaveProperty("error")
  })

  it("a forced setting wins and says what the template alone would do", () => {
    const r = decideLayout("b", "native", probe({ layout: "folded", reason: "the template drops the system message (student)" }))
    expect(r).toMatchObject({ system: "native", reason: "forced by model.system_role; the template alone would give folded (the template drops the system message (student))" })
    expect(decideLayout("b", "folded", null)).toMatchObject({ system: "folded", probe: null, stop_token_ids: [] })
  })
})

describe("probeFromResults (a served template)", () => {
  it("native only when every conversation renders with its system text", () => {
    expect(probeFromResults([{ name: "a", native: "ok", folded: "ok" }]).layout).toBe("native")
    expect(probeFromResults([{ name: "a", native: "ok", folded: "ok" }, { name: "mc", native: "dropped", folded: "ok" }])).toMatchObject({
      layout: "folded", reason: "the template drops the system message (mc)"
    })
    expect(probeFromResults([{ name: "s", native: "System role not supported", folded: "ok" }]).reason).toBe("the template raises on a system message: System role not supported (s)")
    expect(probeFromResults([{ name: "s", native: "x", folded: "Conversation roles must alternate" }])).toMatchObject({ layout: null })
  })
})

describe("@tiny families", () => {
  it("names each family and builds each into its own folder", () => {
    expect(tinyFamily("@tiny")).toBe("llama3")
    expect(tinyFamily("@tiny:gemma2")).toBe("gemma2")
    expect(tinyFamily("@tiny:nope")).toBeUndefined()
    const config = configFor("configs/smoke.json", ["model.base=@tiny:gemma2"])
    const root = tinyRoot(config)
    expect(path.basename(root)).toBe("tiny-gemma2")
    const resolved = resolveTinyModels(config)
    expect(resolved.model.base).toBe(path.join(root, "base"))
    expect(tinyRoot(resolved)).toBe(root)
    expect(resolved.audit.classifiers[0]!.model.startsWith(root + path.sep)).toBe(true)
    expect(path.basename(tinyRoot(configFor("configs/smoke.json")))).toBe("tiny")
    expect(() => resolveTinyModels(configFor("configs/smoke.json", ["model.base=@tiny:nope"]))).toThrow(/"@tiny:gemma2"/)
  })
})

/** A vLLM-like server whose template refuses system messages (`refuses`), or one without /tokenize (`bare`). */
const templateServer = (kind: "refuses" | "bare" | "drops") =>
  new Promise<{ url: string; close: () => void; seen: Array<string> }>((resolve) => {
    const seen: Array<string> = []
    const server = http.createServer((req, res) => {
      let body = ""
      req.on("data", (c) => (body += c))
      req.on("end", () => {
        seen.push(req.url ?? "")
        const send = (status: number, value: unknown) => res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(value))
        if (req.url === "/v1/models") return send(200, { data: [{ id: "base" }, { id: "DART" }] })
        if (kind === "bare") return send(404, { detail: "Not Found" })
        const j = JSON.parse(body)
        if (req.url === "/tokenize") {
          expect(j.model).toBe("base")
          const msgs = j.messages as Array<ChatMessage>
          if (kind === "refuses" && msgs.some((m) => m.role === "system")) return send(400, { error: { message: "System role not supported" } })
          const text = msgs.filter((m) => kind !== "drops" || m.role !== "system").map((m) => m.content).join("|")
          return send(200, { tokens: [...Buffer.from(text)] })
        }
        if (req.url === "/detokenize") return send(200, { prompt: Buffer.from(j.tokens as Array<number>).toString() })
        send(404, {})
      })
    })
    server.listen(0, "127.0.0.1", () => resolve({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`, close: () => server.close(), seen }))
  })

describe("probeViaServer (vLLM's /tokenize and /detokenize)", () => {
  const conversations = [{ name: "student", messages: studentMessages("Q?", "policy"), add_generation_prompt: true }]
  it("folds for a template that raises on the system role or drops it; native without /tokenize", async () => {
    const refuses = await templateServer("refuses")
    const drops = await templateServer("drops")
    const bare = await templateServer("bare")
    try {
      expect(await Effect.runPromise(probeViaServer(refuses.url, conversations))).toMatchObject({
        layout: "folded", reason: "the template raises on a system message: System role not supported (student)"
      })
      expect(await Effect.runPromise(probeViaServer(drops.url, conversations))).toMatchObject({ layout: "folded", reason: "the template drops the system message (student)" })
      const r = await Effect.runPromise(probeViaServer(bare.url, conversations))
      expect(r.layout).toBe("native")
      expect(r.reason).toContain("has no /tokenize")
    } finally {
      for (const s of [refuses, drops, bare]) s.close()
    }
  })
})
