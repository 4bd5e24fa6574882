import { afterEach, describe, expect, it } from "@effect/vitest"
import { clearSecrets, containsSecret, escapeControls, redact, REDACTED, registerSecret, registerSecretsFromEnv } from "../../src/common/Redaction.ts"
import { credentialProblem } from "../../src/config/Addresses.ts"
import { showOverride } from "../../src/config/Overrides.ts"

afterEach(clearSecrets)

describe("redaction", () => {
  it("replaces registered values, also as they appear inside JSON strings and URLs", () => {
    registerSecret("abc\"def/ghi+jkl")
    expect(redact("key abc\"def/ghi+jkl end")).toBe(`key ${REDACTED} end`)
    expect(redact(JSON.stringify({ m: "abc\"def/ghi+jkl" }))).toBe(`{"m":"${REDACTED}"}`)
    expect(redact(`?k=${encodeURIComponent("abc\"def/ghi+jkl")}`)).not.toContain("ghi")
  })

  it("registers the key variables, any *_API_KEY / *_TOKEN / *_SECRET, and a config's api_key_env", () => {
    registerSecretsFromEnv(["TEACHER_KEY_VAR"], {
      OPENAI_API_KEY: "openai-value-123456", HF_TOKEN: "hf-value-1234567", MY_SERVICE_SECRET: "svc-value-1234567",
      TEACHER_KEY_VAR: "custom-value-123456", PATH: "/usr/bin:/bin", SHORT_TOKEN: "abc"
    })
    for (const v of ["openai-value-123456", "hf-value-1234567", "svc-value-1234567", "custom-value-123456"]) {
      expect(redact(`x ${v} y`)).toBe(`x ${REDACTED} y`)
    }
    expect(redact("/usr/bin:/bin abc")).toBe("/usr/bin:/bin abc") // not secrets; too short to scrub
  })

  it("scrubs secret-shaped tokens nobody registered: bearer headers, sk-/hf_ keys, URL credentials", () => {
    expect(redact("Authorization: Bearer abcdef1234567890XYZ")).toBe(`Authorization: Bearer ${REDACTED}`)
    expect(redact("Incorrect API key provided: sk-proj-AbCdEf0123456789.")).toBe(`Incorrect API key provided: sk-${REDACTED}.`)
    expect(redact("token hf_abcdefghijklmnopqrstuv")).toBe(`token hf_${REDACTED}`)
    expect(redact("https://bob:hunter2secret@host/v1")).toBe(`https://bob:${REDACTED}@host/v1`)
    expect(redact("https://host/v1?api_key=zzz&x=1")).toBe(`https://host/v1?api_key=${REDACTED}&x=1`)
    // Prose stays as it is.
    expect(containsSecret("The bearer of bad news asked a basic question. Task-distill ran.")).toBe(false)
  })

  it("never echoes the value of a secret-looking --override", () => {
    expect(showOverride("teacher.api_key=sk-live-0123456789abcdef")).toBe("teacher.api_key=…")
    expect(showOverride("teacher.api_key_env=sk-live-0123456789abcdef")).toBe("teacher.api_key_env=…")
    expect(showOverride("training.epochs=\"x\"")).toBe("training.epochs=\"x\"")
  })
})

describe("server text on a terminal", () => {
  it("shows ESC, BEL and the other C0 controls as visible \\xNN escapes, so escape sequences are inert", () => {
    expect(escapeControls("\x1b]0;pwned\x07\x1b[2J\x1b[31mred")).toBe("\\u001b]0;pwned\\u0007\\u001b[2J\\u001b[31mred")
    expect(escapeControls("a\x00b\x08c\x0bd\x0ce\rf\x1fg")).toBe("a\\u0000b\\u0008c\\u000bd\\u000ce\\u000df\\u001fg")
  })

  it("escapes DEL and the C1 controls (an 8-bit CSI is one character), not the printable text beside them", () => {
    expect(escapeControls("x\x7fy\x80z\x9b2J\x9f")).toBe("x\\u007fy\\u0080z\\u009b2J\\u009f")
    expect(escapeControls("café – 日本語 \u00a0 ~")).toBe("café – 日本語 \u00a0 ~")
  })

  it("keeps newlines and tabs, so a multi-line message keeps its lines", () => {
    expect(escapeControls("line one\n\tline two\n")).toBe("line one\n\tline two\n")
  })

  it("is idempotent: an escaped text has nothing left to escape", () => {
    const once = escapeControls("\x1b[2J\x07\x9b")
    expect(escapeControls(once)).toBe(once)
  })
})

describe("credentials in configured addresses", () => {
  it("refuses passwords, user parts, secret query parameters and fragments in any URL or address", () => {
    expect(credentialProblem("https://api.example/v1")).toBeUndefined()
    expect(credentialProblem("127.0.0.1:50051")).toBeUndefined()
    expect(credentialProblem("ssh://gpu@box.example")).toBeUndefined()
    expect(credentialProblem("unix:///var/run/docker.sock")).toBeUndefined()
    expect(credentialProblem("https://u:p@api.example/v1")).toMatch(/must not carry credentials/)
    expect(credentialProblem("user:pw@127.0.0.1:50051")).toMatch(/must not carry credentials/)
    expect(credentialProblem("ssh://gpu:pw@box.example")).toMatch(/must not carry credentials/)
    expect(credentialProblem("https://api.example/v1?api_key=x")).toMatch(/query string \(api_key=…\)/)
    expect(credentialProblem("tcp://h:2376?token=x")).toMatch(/query string/)
    expect(credentialProblem("https://api.example/v1#secret")).toMatch(/#fragment/)
  })
})
