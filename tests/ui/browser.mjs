// What the browser scripts share: Debian's Chromium started headless with the flags this
// machine's closed network needs, and the job page opened and signed in to.
import { chromium } from 'playwright-core';

export async function openJobPage(base, token, job, hash = '') {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
  const page = await context.newPage();
  const urls = [];
  const errors = [];
  const seen = { websockets: 0 };
  page.on('request', (r) => urls.push(r.url()));
  page.on('websocket', (ws) => {
    seen.websockets += 1;
    urls.push(ws.url());
  });
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(`${base}/ui/jobs/${job}${hash}`);
  await page.locator('#login').waitFor({ state: 'visible' });
  await page.fill('#token', token);
  const signedInAt = Date.now();
  await page.click('#login button[type=submit]');
  return { browser, context, page, urls, errors, seen, signedInAt };
}
