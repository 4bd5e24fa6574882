import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { mkdtempSync, openSync, closeSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { type AnswerRow, indexAnswers, readAnswer } from "../../src/inference/AnswerStore.ts"

const row = (sample: number, text: string): AnswerRow => ({
  key: `q|M0|p|${sample}`, id: "q", model: "M0", policy: "p", sample, text, finish_reason: "stop", prompt_tokens: 1, completion_tokens: 1, server: "s"
})

describe("AnswerStore", () => {
  it.effect("indexes rows across read chunks, lines longer than the read buffer and a torn tail, and reads each back", () =>
    Effect.gen(function*() {
      const file = path.join(mkdtempSync(path.join(tmpdir(), "dart-answers-")), "answers.jsonl")
      // Texts of many sizes so rows straddle the 1 MiB reads; one row of 3 MiB outgrows the buffer.
      const texts = Array.from({ length: 400 }, (_, i) => "é".repeat(i === 200 ? 3 << 20 : (i * 7919) % 9000))
      const lines = texts.map((t, i) => `${JSON.stringify(row(i, t))}\n`)
      writeFileSync(file, `${lines.join("")}{"key":"torn`)
      const index = yield* indexAnswers(file, texts.length, (r) => r.sample)
      expect(index.answered).toBe(texts.length)
      expect(index.tornBytes).toBe(Buffer.byteLength('{"key":"torn'))
      const fd = openSync(file, "r")
      try {
        for (let i = 0; i < texts.length; i++) expect(readAnswer(fd, index, i).text).toBe(texts[i])
      } finally {
        closeSync(fd)
      }
    }))
})
