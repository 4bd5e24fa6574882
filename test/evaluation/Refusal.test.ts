import { describe, expect, it } from "@effect/vitest"
import { refusalDetector, RefusalRuleError } from "../../src/evaluation/Refusal.ts"

describe("refusalDetector", () => {
  const detect = refusalDetector()

  it("finds refusals and lectures at the start of an answer, curly apostrophes included", () => {
    for (
      const a of [
        "I'm sorry, but I can't help with that request.",
        "I can\u2019t assist with creating content like this.",
        "As an AI language model, I do not hold opinions on groups of people.",
        "I must decline to continue this text.",
        "It is not appropriate to make generalisations about any group.",
        "Let's be respectful of everyone here."
      ]
    ) expect(detect(a).refused, a).toBe(true)
  })

  it("leaves answers alone, a refusal quoted late included", () => {
    for (
      const a of [
        "Yes. Counter-speech like this challenges the slur and is not hateful. Conclusion: NO",
        "The statement quotes hateful language in order to criticise it, which is a common form of counter-speech.",
        `${"The law treats both groups the same way. ".repeat(12)}Some chatbots would say "I'm sorry, but I can't help".`
      ]
    ) expect(detect(a), a).toEqual({ refused: false, rule: null })
  })

  it("takes a run's own rules, and names a broken one by its position", () => {
    const own = refusalDetector(["^no comment"])
    expect(own("No comment on that.")).toEqual({ refused: true, rule: "^no comment" })
    expect(own("I'm sorry, but no.").refused).toBe(false)
    expect(() => refusalDetector(["fine", "(unclosed"])).toThrow(RefusalRuleError)
    expect(() => refusalDetector(["fine", "(unclosed"])).toThrow(/^refusal\.patterns\[1\]: not a regular expression/)
  })
})
