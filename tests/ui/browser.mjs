// What the browser scripts share: Debian's Chromium started headless with the flags this
// machine's closed network needs, and the job page opened and signed in to.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);

/// The page checked by axe-core against WCAG 2 A and AA (contrast, names, roles, keyboard
/// focusability): the violations, each with the selectors of its first nodes, and the rules
/// that passed.
export async function audit(page) {
  // Evaluated through the DevTools protocol: the page's CSP (scripts from itself only) stays on.
  await page.evaluate(readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8'));
  return page.evaluate(async () => {
    const r = await window.axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } });
    return {
      violations: r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map((n) => n.target.join(' ')) })),
      passed: r.passes.map((p) => p.id),
    };
  });
}

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
