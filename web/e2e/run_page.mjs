// Drive the FeatherFace page in a real headless Chromium (playwright-core + the system browser).
//
//   node e2e/run_page.mjs URL OUT_DIR IMAGE [IMAGE ...] [--chromium /usr/bin/chromium] [--bad-inputs] [--huge-image PATH]
//
// Picks each IMAGE with the page's file input, waits for the detections, saves OUT_DIR/page-<i>.png and prints one
// JSON object on stdout: {images: [{faces, width, height, ms, ...}], threads, crossOriginIsolated, console, badInputs?}.
// With --bad-inputs it then feeds a text file, a huge image and a denied webcam, and records each message shown.
import { chromium } from "playwright-core";
import { writeFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";

const args = process.argv.slice(2);
const flag = (name) => { const i = args.indexOf(name); return i >= 0 ? args.splice(i, 2)[1] : null; };
const executablePath = flag("--chromium") ?? process.env.CHROMIUM ?? "/usr/bin/chromium";
const hugeImage = flag("--huge-image");
const badInputs = args.includes("--bad-inputs");
const [url, outDir, ...images] = args.filter((a) => !a.startsWith("--"));
const image = images[0];
if (!url || !image || !outDir) {
  console.error("usage: run_page.mjs URL OUT_DIR IMAGE [IMAGE ...] [--chromium PATH] [--bad-inputs] [--huge-image PATH]");
  process.exit(2);
}
mkdirSync(outDir, { recursive: true });
const userDataDir = join(outDir, "chromium-profile");

const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath,
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    // a fake camera exists, so an ungranted permission is a real denial (NotAllowedError), not "no camera"
    "--use-fake-device-for-media-stream"],
  viewport: { width: 1100, height: 900 },
});
const consoleLines = [];
const result = { timings: {} };
const t0 = Date.now();
const mark = (name) => { result.timings[name] = (Date.now() - t0) / 1000; };
try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("console", (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => consoleLines.push(`pageerror: ${e.message}`));
  page.on("requestfailed", (r) => consoleLines.push(`requestfailed: ${r.url()} ${r.failure()?.errorText}`));
  await page.goto(url);
  await page.waitForFunction(() => ["ready", "error"].includes(window.featherface?.state), null, { timeout: 60000 });
  const boot = await page.evaluate(() => ({ state: window.featherface.state, error: window.featherface.error }));
  if (boot.state !== "ready") throw new Error(`page did not become ready: ${boot.error}`);
  mark("ready");

  result.images = [];
  for (const [i, img] of images.entries()) {
    const before = await page.evaluate(() => window.featherface.runs);
    await page.setInputFiles("#file", img);
    await page.waitForFunction((n) => ["done", "error"].includes(window.featherface.state) && window.featherface.runs > n,
      before, { timeout: 60000 }).catch(() => {});
    result.images.push(await page.evaluate(() => {
      const s = window.featherface;
      return {
        state: s.state, error: s.error, faces: s.result?.faces ?? null, width: s.result?.width, height: s.result?.height,
        inputWidth: s.result?.inputWidth, inputHeight: s.result?.inputHeight, ms: s.result?.ms,
        status: document.getElementById("status").textContent,
      };
    }));
    await page.screenshot({ path: join(outDir, `page-${i}.png`), fullPage: true });
  }
  // the last image again with the "longest side 640" resize policy (featherface.api.ResizePolicy(640))
  {
    const before = await page.evaluate(() => window.featherface.runs);
    await page.selectOption("#resize", "640");
    await page.waitForFunction((n) => window.featherface.state === "done" && window.featherface.runs > n, before, { timeout: 60000 });
    result.resized640 = await page.evaluate(() => {
      const r = window.featherface.result;
      return { faces: r.faces, inputWidth: r.inputWidth, inputHeight: r.inputHeight, scale: r.scale };
    });
  }
  mark("images");
  Object.assign(result, await page.evaluate(() => ({ threads: window.featherface.threads, crossOriginIsolated: self.crossOriginIsolated })));

  if (badInputs) {
    const bad = {};
    const messageAfter = async (action) => {
      await page.evaluate(() => { window.featherface.error = null; });
      await action();
      await page.waitForFunction(() => window.featherface.error && !document.getElementById("message").hidden,
        null, { timeout: 30000 });
      return page.evaluate(() => ({
        message: document.getElementById("message").textContent,
        visible: !document.getElementById("message").hidden && document.getElementById("message").offsetHeight > 0,
      }));
    };
    const textFile = join(outDir, "not-an-image.jpg");
    writeFileSync(textFile, "this is a text file, not a JPEG\n");
    bad.nonImage = await messageAfter(() => page.setInputFiles("#file", textFile));
    if (hugeImage) bad.hugeImage = await messageAfter(() => page.setInputFiles("#file", hugeImage));
    bad.webcamDenied = await messageAfter(() => page.click("#webcam"));
    // the page still works after the errors: pick the photo again
    await page.setInputFiles("#file", image);
    await page.waitForFunction(() => window.featherface.state === "done", null, { timeout: 60000 });
    bad.facesAfterErrors = await page.evaluate(() => window.featherface.result.faces.length);
    result.badInputs = bad;
    mark("badInputs");

    // webcam granted: Chromium's fake camera stream runs through the same detector, frame after frame
    await context.grantPermissions(["camera"], { origin: new URL(url).origin });
    const before = await page.evaluate(() => window.featherface.runs);
    await page.click("#webcam");
    await page.waitForFunction((n) => window.featherface.state === "webcam" && window.featherface.runs >= n + 2 /* two frames */,
      before, { timeout: 60000 });
    result.webcam = await page.evaluate(() => ({ status: document.getElementById("status").textContent,
      width: window.featherface.result.width, height: window.featherface.result.height }));
    await page.click("#webcam");
    mark("webcam");
  }
} catch (err) {
  result.fatal = String(err?.message ?? err);
} finally {
  result.console = consoleLines;
  await context.close();
}
process.stdout.write(JSON.stringify(result) + "\n");
process.exit(result.fatal ? 1 : 0);
