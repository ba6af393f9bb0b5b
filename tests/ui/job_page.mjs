// Drives the job page in headless Chromium (Debian's, through playwright-core) for tests/ui.rs:
// signs in with a token, watches a step stream, lets its second part out by creating the first
// gate file and times it onto the screen; then prints CUT on stdout and waits for a line on
// stdin (the test cuts the page's connections meanwhile), lets the third part out through the
// second gate and waits for it and the end. Prints what the page shows as JSON on stdout; a
// screenshot goes to SHOTS/job-page.png.
//   node job_page.mjs BASE_URL TOKEN JOB STEP GATE_1 GATE_2 SHOTS_DIR
import { writeFileSync, mkdirSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { audit, openJobPage } from './browser.mjs';

const [base, token, job, step, gate1, gate2, shots] = process.argv.slice(2);
const stdin = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const { browser, context, page, urls, errors, seen } = await openJobPage(base, token, job);
try {
  const lines = page.locator(`ol.lines[data-step="${step}"] > li`);
  await page.locator(`ol.lines[data-step="${step}"] > li .text:has-text("first part done")`).waitFor({ timeout: 30000 });
  const before = await lines.count();

  // The second part: how long from its release to its line on screen.
  const released = Date.now();
  writeFileSync(gate1, '');
  await page.locator(`ol.lines[data-step="${step}"] > li .text:has-text("second part arrived")`).waitFor({ timeout: 30000 });
  const newLineMs = Date.now() - released;

  // The connection is cut (by the test, at the TCP proxy in front of the server) while the
  // step runs; the page must resume from the byte it had, with nothing missing or doubled.
  console.log('CUT');
  await stdin.next();
  writeFileSync(gate2, '');
  await page.locator(`ol.lines[data-step="${step}"] > li .text:has-text("third part after the cut")`).waitFor({ timeout: 30000 });
  await page.locator(`ol.lines[data-step="${step}"][data-ended]`).waitFor({ timeout: 30000 });

  const shown = await page.evaluate((step) => {
    const list = document.querySelector(`ol.lines[data-step="${step}"]`);
    return {
      lines: [...list.children].map((li) => li.querySelector('.text').textContent),
      spans: [...list.querySelectorAll('.text span')].map((s) => ({ cls: s.className, text: s.textContent })),
      anchors: [...list.children].slice(0, 3).map((li) => li.querySelector('a.ln').getAttribute('href')),
      offset: Number(list.dataset.offset),
      ended: list.dataset.ended,
      steps: [...document.querySelectorAll('#steps button')].map((b) => b.textContent),
      cookieVisibleToScript: document.cookie.includes('tailrace_token'),
      loginVisible: !document.querySelector('#login').hidden && getComputedStyle(document.querySelector('#login')).display !== 'none',
    };
  }, step);
  // Timestamps: turned on, each line shows when it arrived per the server's time index.
  const times = await (await page.request.get(new URL(`/api/v1/jobs/${job}/steps/${step}/times`, page.url()).href)).json();
  await page.check('#timestamps');
  const firstArrived = new Date(times.points[0][1]).toISOString();
  await page.waitForFunction(([step, iso]) => {
    const t = document.querySelector(`ol.lines[data-step="${step}"] > li time`);
    return t && t.dateTime === iso && getComputedStyle(t).display !== 'none';
  }, [step, firstArrived], { timeout: 30000 });
  const stamps = await page.$$eval(`ol.lines[data-step="${step}"] > li time`, (ts) => ts.map((t) => t.textContent));
  const cookies = await context.cookies();
  mkdirSync(shots, { recursive: true });
  await page.screenshot({ path: `${shots}/job-page.png` });
  const a11y = { job: await audit(page) };

  // The tests tab (reached with the keyboard) and the artifacts tab.
  await page.focus('#tab-output');
  await page.keyboard.press('ArrowRight');
  await page.locator('#tests tbody tr').first().waitFor({ timeout: 30000 }).catch(async (e) => {
    throw new Error(`tests tab: ${await page.textContent('#tests-summary')} (${e.message})`);
  });
  const tests = await page.$$eval('#tests tbody tr', (rows) => rows.map((r) => ({
    result: r.querySelector('.result').textContent,
    name: r.querySelector('.name').firstChild.textContent,
    flaky: !!r.querySelector('.flaky'),
    message: r.querySelector('pre')?.textContent || '',
  })));
  const testsSummary = await page.textContent('#tests-summary');
  await page.screenshot({ path: `${shots}/job-tests.png` });
  await page.click('#tab-artifacts');
  await page.locator('#artifacts tbody tr').first().waitFor({ timeout: 30000 });
  const artifacts = await page.$$eval('#artifacts tbody tr', (rows) => rows.map((r) => ({
    path: r.querySelector('a').textContent,
    href: r.querySelector('a').getAttribute('href'),
    size: r.children[1].textContent,
  })));
  // The links as the page has them, fetched with the page's cookie.
  const fetchText = async (href) => (await page.request.get(new URL(href, page.url()).href)).text();
  const download = await fetchText(artifacts[0].href);
  const raw = await fetchText(await page.getAttribute('#raw', 'href'));
  // The project's insights page, linked from the job page with the job's workflow.
  await page.click('#tab-output');
  await page.click('#insights');
  await page.locator('#flaky tbody tr').first().waitFor({ timeout: 30000 });
  await page.locator('#workflow-metrics:not([hidden])').waitFor({ timeout: 30000 });
  const rows = (sel) => page.$$eval(`${sel} tbody tr`, (trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent)));
  await page.locator('#jobs tbody tr.job').first().waitFor({ timeout: 30000 });
  const insights = {
    url: new URL(page.url()).pathname + new URL(page.url()).search,
    flaky: await rows('#flaky'),
    failed: await rows('#failed'),
    slowest: await rows('#slowest'),
    jobs: await rows('#jobs'),
    jobLinks: await page.$$eval('#jobs tbody a', (as) => as.map((a) => a.getAttribute('href'))),
  };
  await page.screenshot({ path: `${shots}/project-insights.png` });
  a11y.project = await audit(page);
  // The start page lists the projects; its link leads back to the project's page.
  await page.click('.crumbs a');
  await page.locator('#projects li a').first().waitFor({ timeout: 30000 });
  const projects = await page.$$eval('#projects li a', (as) => as.map((a) => [a.textContent, a.getAttribute('href')]));
  a11y.home = await audit(page);
  await page.click('#projects li a');
  await page.locator('#jobs tbody tr.job').first().waitFor({ timeout: 30000 });
  await page.click('#jobs tbody a');
  await page.locator('#steps button').first().waitFor({ timeout: 30000 });
  const backToJob = new URL(page.url()).pathname;
  console.log(JSON.stringify({
    insights,
    projects,
    a11y,
    backToJob,
    ...shown,
    tests,
    testsSummary,
    artifacts,
    artifactBody: download,
    raw,
    timePoints: times.points.length,
    stamps,
    linesBeforeRelease: before,
    websockets: seen.websockets,
    newLineMs,
    cookieHttpOnly: cookies.some((c) => c.name === 'tailrace_token' && c.httpOnly),
    tokenInUrls: urls.filter((u) => u.includes(token)).length,
    errors,
  }));
} finally {
  await browser.close();
  process.stdin.destroy();
}
