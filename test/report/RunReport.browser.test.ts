import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { existsSync, mkdtempSync, readFileSync, statSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { pathToFileURL } from "node:url"
import { type BrowserContext, chromium, type Page } from "playwright-core"
import { writeRunReport } from "../../src/report/RunReport.ts"
import { RunStore } from "../../src/runs/RunStore.ts"
import { HOSTILE_OUTPUT, HOSTILE_QUESTION, type Fixture, writeRunFixture } from "./RunFixture.ts"

/**
 * The run report in headless Chromium, offline: the page is loaded from file:// with every other request refused
 * (and counted), and must show the three models, the training curves and the audited pairs, filter them, and draw
 * a 16,000-pair audit in under 2 s from navigation start. Chromium is the system's (never downloaded).
 */

const CHROMIUM = "/usr/bin/chromium"
const PAIRS = 16_000
const scratch = mkdtempSync(path.join(tmpdir(), "dart-report-browser-"))

let fixture: Fixture
let reportUrl: string
let context: BrowserContext
let page: Page
/** Every request the page made, and those refused: only the page itself may be fetched. */
const requests: Array<string> = []
const refused: Array<string> = []

beforeAll(async () => {
  fixture = writeRunFixture(path.join(scratch, "runs"), "browse", { pairs: PAIRS, hostile: true })
  const file = await Effect.runPromise(writeRunReport(fixture.config).pipe(Effect.provide(RunStore.layer)))
  reportUrl = pathToFileURL(file).href
  context = await chromium.launchPersistentContext(path.join(scratch, "profile"), {
    executablePath: CHROMIUM,
    headless: true,
    offline: true,
    viewport: { width: 1280, height: 900 },
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"]
  })
  await context.route("**/*", (route) => {
    const url = route.request().url()
    if (url === reportUrl) return route.continue()
    refused.push(url)
    return route.abort()
  })
  page = context.pages()[0] ?? await context.newPage()
  page.on("request", (r) => void requests.push(r.url()))
  page.on("pageerror", (e) => void refused.push(`page error: ${e.message}`))
}, 120_000)

afterAll(async () => {
  await context?.close()
})

/** The count the browser shows for the current filters. */
const shownCount = () => page.locator("#ex-count").getAttribute("data-count").then(Number)
const expected = (f: (p: Fixture["pairs"][number]) => boolean) => fixture.pairs.filter(f).length

describe.skipIf(!existsSync(CHROMIUM))("the run report in headless Chromium", () => {
  it("opens offline from file:// and draws a 16,000-pair audit in under 2 s", async () => {
    await page.goto(reportUrl, { waitUntil: "load" })
    await page.waitForSelector("html[data-ready='1']", { timeout: 30_000 })
    const readyMs = await page.evaluate(() => performance.getEntriesByName("dart-report-ready")[0]?.startTime ?? Number.NaN)
    const bytes = statSync(new URL(reportUrl)).size
    console.log(`run report: ${fixture.pairs.length} pairs (${PAIRS} in the largest audit), ${(bytes / 1e6).toFixed(1)} MB, ready ${readyMs.toFixed(0)} ms after navigation start`)
    expect(readyMs).toBeGreaterThan(0)
    expect(readyMs).toBeLessThan(2000)
    expect(await shownCount()).toBe(fixture.pairs.length)
    // A virtual list: only the rows in view (and a margin) exist.
    const rows = await page.locator(".ex-row").count()
    expect(rows).toBeGreaterThan(5)
    expect(rows).toBeLessThan(60)
    expect(requests).toEqual([reportUrl])
    expect(refused).toEqual([])
  })

  it("shows the three models, the training curves and the audits", async () => {
    const headline = page.locator("table.headline tr th:first-child")
    expect(await headline.allTextContents()).toEqual(["model", "M0", "DART", "DART_H"])
    for (const adapter of ["DART", "DART_H"]) {
      const paths = page.locator(`svg[aria-label="${adapter}: loss"] path.line`)
      expect(await paths.count()).toBe(2)
      expect(((await paths.first().getAttribute("d")) ?? "").split("L").length).toBeGreaterThan(5)
      expect(await page.locator(`svg[aria-label="${adapter}: learning rate"] path.line`).count()).toBe(1)
    }
    expect(await page.locator("#audit h3").allTextContents()).toEqual(["audit_val_M0_vs_DART", "audit_test_M0_vs_DART", "audit_test_M0_vs_DART_H"])
    expect(await page.locator("#audit svg.histogram").count()).toBe(3 * 3)
  })

  it("shows a regression pair side by side, with scores and the judge's reason", async () => {
    await page.selectOption("#f-severity", "severe")
    expect(await shownCount()).toBe(expected((p) => p.severity === "severe"))
    const first = page.locator(".ex-row").first()
    expect(await first.getAttribute("data-severity")).toBe("severe")
    await first.click()
    const a = (await page.locator("#ex-detail .ex-a .ex-text").textContent()) ?? ""
    const b = (await page.locator("#ex-detail .ex-b .ex-text").textContent()) ?? ""
    expect(a).toMatch(/^Base answer for item \d+\./)
    expect(b).toMatch(/^(DART|DART_H) answer for item \d+ in audit_/)
    expect(await page.locator("#ex-detail .ex-scores tr").count()).toBe(1 + 3)
    expect(await page.locator("#ex-detail .ex-reason").textContent()).toMatch(/stereotype/)
  })

  it("filters by benchmark and severity, and counts what it shows", async () => {
    await page.selectOption("#f-severity", "")
    const benchmarkValue = await page.locator("#f-benchmark option", { hasText: /^N3$/ }).getAttribute("value")
    await page.selectOption("#f-benchmark", benchmarkValue!)
    expect(await shownCount()).toBe(expected((p) => p.benchmark === "N3"))
    expect(new Set(await page.locator(".ex-row").evaluateAll((rs) => rs.map((r) => r.getAttribute("data-benchmark"))))).toEqual(new Set(["N3"]))

    await page.selectOption("#f-severity", "moderate")
    expect(await shownCount()).toBe(expected((p) => p.benchmark === "N3" && p.severity === "moderate"))
    const shown = await page.locator(".ex-row").evaluateAll((rs) => rs.map((r) => `${r.getAttribute("data-benchmark")}/${r.getAttribute("data-severity")}`))
    expect(shown.length).toBeGreaterThan(0)
    expect(new Set(shown)).toEqual(new Set(["N3/moderate"]))

    await page.selectOption("#f-severity", "regression")
    expect(await shownCount()).toBe(expected((p) => p.benchmark === "N3" && p.severity !== "none"))
    const auditValue = await page.locator("#f-audit option", { hasText: /^audit_val_M0_vs_DART / }).getAttribute("value")
    await page.selectOption("#f-audit", auditValue!)
    expect(await shownCount()).toBe(expected((p) => p.audit === "audit_val_M0_vs_DART" && p.benchmark === "N3" && p.severity !== "none"))

    // Scrolling the list draws the rows further down.
    await page.selectOption("#f-audit", "")
    await page.selectOption("#f-benchmark", "")
    await page.selectOption("#f-severity", "none")
    await page.locator("#ex-list").evaluate((l) => void (l.scrollTop = 28 * 5000))
    // Page-side functions reach the DOM through globalThis: the test project is typed without the DOM library (and the
    // page's Content-Security-Policy refuses code given as a string).
    await page.waitForFunction(() => [...(globalThis as any).document.querySelectorAll(".ex-row")].some((r: any) => parseInt(r.style.top, 10) >= 28 * 5000))
    expect(new Set(await page.locator(".ex-row").evaluateAll((rs) => rs.map((r) => r.getAttribute("data-severity"))))).toEqual(new Set(["none"]))
  })

  it("shows hostile outputs as text: no script of theirs runs, no element of theirs appears", async () => {
    await page.selectOption("#f-severity", "")
    await page.fill("#f-search", "window.__pwned")
    await page.waitForFunction(() => (globalThis as any).document.querySelector("#ex-count").getAttribute("data-count") === "1")
    await page.locator(".ex-row").first().click()
    expect(await page.locator("#ex-detail .ex-b .ex-text").textContent()).toBe(HOSTILE_OUTPUT)
    expect(await page.locator("#ex-detail .ex-question").textContent()).toBe(HOSTILE_QUESTION)
    expect(await page.locator("#ex-detail .ex-reason").textContent()).toContain("<script>alert(1)</script>")
    expect(await page.evaluate(() => typeof (globalThis as any).__pwned)).toBe("undefined")
    expect(await page.locator("img, iframe, object, embed, [src]").count()).toBe(0)
    expect(await page.locator("script").count()).toBe(2)
    await page.fill("#f-search", "")
  })

  it("takes a screenshot", async () => {
    await page.selectOption("#f-severity", "extreme")
    await page.locator(".ex-row").first().click()
    const file = path.join(scratch, "report.png")
    await page.screenshot({ path: file, fullPage: true })
    const png = readFileSync(file)
    expect(png.subarray(0, 8)).toEqual(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))
    expect(png.length).toBeGreaterThan(20_000)
    expect(requests).toEqual([reportUrl])
    expect(refused).toEqual([])
  })
})
