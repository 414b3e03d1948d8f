// Open sigward's approvals page in headless Chromium, wait for the approval whose prompt
// contains TEXT, click Approve, and wait for the page to say so.
//   node approve.mjs ADMIN_URL TOKEN TEXT SCREENSHOT.png
import { chromium } from "playwright-core";

const [url, token, text, screenshot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
try {
  const page = await browser.newPage();
  await page.goto(`${url}/#token=${encodeURIComponent(token)}`);
  await page.fill("#by", "browser-user");
  await page.dispatchEvent("#by", "change");
  // The page refreshes itself: no reload here.
  const approval = page.locator(".approval", { hasText: text });
  await approval.waitFor({ timeout: 60000 });
  const id = await approval.getAttribute("data-id");
  await approval.getByRole("button", { name: "Approve" }).click();
  await page.locator("#status", { hasText: `Approved ${id}` }).waitFor({ timeout: 10000 });
  await page.locator(`.approval[data-id="${id}"]`).waitFor({ state: "detached", timeout: 10000 });
  if (screenshot) await page.screenshot({ path: screenshot });
  console.log(`approved ${id}`);
} finally {
  await browser.close();
}
