// The job page on a huge archived step, for tests/ui.rs: opens it (at its end), scrolls up by
// turns, follows a link to a line in the middle, drags the position slider, goes to the start
// and back to the end, searches; then opens a small step of the same job. At each stop it
// records the lines on screen (number and text) and the lines the page holds; it measures the
// time to first lines (signing in, and a reload) and the page's memory through the Chrome
// DevTools Protocol. Prints it all as JSON; a screenshot goes to SHOTS/job-huge-step.png.
// Last, a running step that prints 20,000 more lines (when this script creates GATE) while the
// page follows it.
//   node huge_step.mjs BASE_URL TOKEN JOB HUGE_STEP SMALL_STEP LIVE_STEP LINKED_LINE SHOTS_DIR GATE
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { openJobPage } from './browser.mjs';

const [base, token, job, huge, small, live, linked, shots, gate] = process.argv.slice(2);
const linkedLine = Number(linked);
const { browser, context, page, errors, signedInAt } = await openJobPage(base, token, job, `#${huge}`);
const list = (step) => `ol.lines[data-step="${step}"]`;

/// The lines on screen and the number the page holds.
const view = (step) => page.evaluate((sel) => {
  const ol = document.querySelector(sel);
  const box = document.querySelector('#output').getBoundingClientRect();
  const onScreen = [...ol.children].filter((li) => {
    const r = li.getBoundingClientRect();
    return r.bottom > box.top && r.top < box.bottom;
  });
  return {
    held: ol.children.length,
    all: [...ol.children].map((li) => [Number(li.querySelector('a.ln').textContent), li.querySelector('.text').textContent.split(' ')[1]]),
    onScreen: onScreen.map((li) => [Number(li.querySelector('a.ln').textContent), li.querySelector('.text').textContent]),
    following: document.querySelector('#follow').checked,
  };
}, list(step));

/// Checks that every held line's number matches the number printed in it, with no gap.
const numbered = (v) => v.all.every(([n, printed], i) => String(n) === printed && (i === 0 || v.all[i - 1][0] === n - 1));

async function memory() {
  const cdp = await context.newCDPSession(page);
  await cdp.send('HeapProfiler.collectGarbage');
  await cdp.send('Performance.enable');
  const { metrics } = await cdp.send('Performance.getMetrics');
  const get = (name) => metrics.find((m) => m.name === name)?.value;
  await cdp.detach();
  // The renderer process's resident memory (the page's whole cost: DOM, layout, heap), read
  // from /proc for the renderer processes the browser names.
  const bcdp = await browser.newBrowserCDPSession();
  const { processInfo } = await bcdp.send('SystemInfo.getProcessInfo');
  await bcdp.detach();
  const rss = processInfo.filter((p) => p.type === 'renderer').map((p) => {
    const status = readFileSync(`/proc/${p.id}/status`, 'utf8');
    return Number(/VmRSS:\s+(\d+)/.exec(status)[1]) / 1024;
  });
  return { jsHeapUsedMB: +(get('JSHeapUsedSize') / 1048576).toFixed(1), nodes: get('Nodes'), rendererRssMB: +Math.max(...rss).toFixed(1) };
}

const waitOnScreen = (id) => page.waitForFunction((id) => {
  const el = document.getElementById(id);
  const box = document.querySelector('#output').getBoundingClientRect();
  const r = el?.getBoundingClientRect();
  return r && r.top >= box.top && r.bottom <= box.bottom;
}, id, { timeout: 60000 });

const began = Date.now();
const stage = (name) => console.error(`${name}: ${Date.now() - began} ms`);
try {
  const report = {};
  await page.locator(`${list(huge)} > li`).first().waitFor({ timeout: 60000 });
  report.signInToFirstLinesMs = Date.now() - signedInAt;
  // Opened at the end: it ends up scrolled to the last line.
  const atBottom = (sel) => {
    const o = document.querySelector('#output');
    return document.querySelector(sel).dataset.ended && o.scrollHeight - o.scrollTop - o.clientHeight < 8;
  };
  await page.waitForFunction(atBottom, list(huge), { timeout: 60000 });
  report.atEnd = await view(huge);
  stage('opened');

  // A reload (signed in by the cookie): from navigation to the first lines on screen.
  await page.reload();
  const firstLines = await page.waitForFunction((sel) => document.querySelector(`${sel} > li`) && performance.now(), list(huge), { polling: 'raf', timeout: 60000 });
  stage('reloaded');
  report.reloadToFirstLinesMs = Math.round(await firstLines.jsonValue());
  await page.locator(`${list(huge)}[data-ended]`).waitFor({ timeout: 60000 });

  // Scrolling up: each turn at the top fetches the lines before.
  const top = async () => page.evaluate((sel) => Number(document.querySelector(`${sel} > li a.ln`).textContent), list(huge));
  // The first turn by keyboard (the output is focusable; Home scrolls it to the window's top).
  for (let turn = 0; turn < 4; turn++) {
    const before = await top();
    if (turn === 0) {
      await page.focus('#output');
      await page.keyboard.press('Home');
    } else {
      await page.evaluate(() => { document.querySelector('#output').scrollTop = 0; });
    }
    await page.waitForFunction(([sel, before]) => Number(document.querySelector(`${sel} > li a.ln`).textContent) < before, [list(huge), before], { timeout: 60000 });
  }
  report.scrolledUp = await view(huge);
  report.scrolledUp.numbered = numbered(report.scrolledUp);
  stage('scrolled up');

  // A link to a line far from the window.
  await page.evaluate(([step, n]) => { location.hash = `#${step}-L${n}`; }, [huge, linkedLine]);
  await waitOnScreen(`${huge}-L${linkedLine}`);
  report.linked = await view(huge);
  stage('linked');
  // ... and scrolling down from it.
  for (let turn = 0; turn < 3; turn++) {
    const held = await page.evaluate((sel) => document.querySelector(sel).dataset.offset, list(huge));
    await page.evaluate(() => { const o = document.querySelector('#output'); o.scrollTop = o.scrollHeight; });
    await page.waitForFunction(([sel, held]) => document.querySelector(sel).dataset.offset !== held, [list(huge), held], { timeout: 60000 });
  }
  report.scrolledDown = await view(huge);
  report.scrolledDown.numbered = numbered(report.scrolledDown);
  stage('down');

  // The position slider, set to the middle with the keyboard's value and a change event.
  const firstHeld = await top();
  await page.evaluate(() => {
    const p = document.querySelector('#position');
    p.value = '500';
    p.dispatchEvent(new Event('change'));
  });
  await page.waitForFunction(([sel, was]) => Number(document.querySelector(`${sel} > li a.ln`).textContent) !== was, [list(huge), firstHeld], { timeout: 60000 });
  report.middle = await view(huge);
  report.middle.numbered = numbered(report.middle);
  stage('middle');

  // Start, then End.
  await page.click('#to-start');
  await waitOnScreen(`${huge}-L1`);
  report.start = await view(huge);
  await page.click('#to-end');
  await page.waitForFunction(atBottom, list(huge), { timeout: 60000 });
  report.end = await view(huge);
  report.end.numbered = numbered(report.end);
  report.memoryHuge = await memory();
  stage('end');
  mkdirSync(shots, { recursive: true });
  await page.screenshot({ path: `${shots}/job-huge-step.png` });

  // Search (on the server, over the whole step), and its first result opens that line.
  await page.fill('#q', `line ${linkedLine - 1} `);
  await page.click('#search button[type=submit]');
  await page.locator('#results li').first().waitFor({ timeout: 120000 });
  report.searchResults = await page.$$eval('#results li', (lis) => lis.map((li) => li.querySelector('a').textContent));
  await page.click('#results li a');
  await waitOnScreen(`${huge}-L${linkedLine - 1}`);
  stage('search');

  // The small step of the same job, for the memory beside it.
  await page.click(`#steps button[data-step="${small}"]`);
  await page.locator(`${list(small)}[data-ended]`).waitFor({ timeout: 60000 });
  report.small = { held: await page.locator(`${list(small)} > li`).count() };
  report.memorySmall = await memory();

  // Following a running step as it prints more than the page keeps.
  await page.click(`#steps button[data-step="${live}"]`);
  await page.locator(`${list(live)} > li`).first().waitFor({ timeout: 60000 });
  writeFileSync(gate, '');
  await page.locator(`${list(live)}[data-ended]`).waitFor({ timeout: 60000 });
  await page.waitForFunction(atBottom, list(live), { timeout: 60000 });
  report.live = await view(live);
  report.live.numbered = numbered(report.live);
  console.log(JSON.stringify({ ...report, errors }));
} catch (e) {
  // What the page showed when it went wrong.
  const state = await page.evaluate(() => ({
    status: document.querySelector('#status').textContent,
    scroll: ((o) => [o.scrollTop, o.scrollHeight, o.clientHeight])(document.querySelector("#output")),
    follow: document.querySelector("#follow").checked,
    lists: [...document.querySelectorAll('ol.lines')].map((ol) => ({ ...ol.dataset, held: ol.children.length })),
  })).catch(() => null);
  console.error(JSON.stringify({ state, errors }));
  throw e;
} finally {
  await browser.close();
}
