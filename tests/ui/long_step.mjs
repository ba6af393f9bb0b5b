// The job page on a step longer than the page keeps, opened at a linked line: prints, as JSON,
// how many lines the list holds, its first and last line, the notice about the dropped ones,
// and whether the linked line is on screen.
//   node long_step.mjs BASE_URL TOKEN JOB STEP LINE
import { openJobPage } from './browser.mjs';

const [base, token, job, step, line] = process.argv.slice(2);
const { browser, page, errors } = await openJobPage(base, token, job, `#${step}-L${line}`);
try {
  const list = `ol.lines[data-step="${step}"]`;
  await page.locator(`${list}[data-ended]`).waitFor({ timeout: 60000 });
  const shown = await page.evaluate(([list, linked]) => {
    const ol = document.querySelector(list);
    const first = ol.firstElementChild;
    const notice = ol.parentElement.querySelector('p.dropped');
    return {
      kept: ol.children.length,
      firstId: first.id,
      firstNumber: first.querySelector('a.ln').textContent,
      firstText: first.querySelector('.text').textContent,
      lastText: ol.lastElementChild.querySelector('.text').textContent,
      notice: notice.hidden ? '' : notice.textContent,
      following: document.querySelector('#follow').checked,
      linkedOnScreen: (() => {
        const el = document.getElementById(linked);
        if (!el) return false;
        const r = el.getBoundingClientRect();
        return r.top >= 0 && r.bottom <= window.innerHeight;
      })(),
    };
  }, [list, `${step}-L${line}`]);
  // Search: the server finds the lines; a result the page keeps is shown, one it dropped says so.
  await page.fill('#q', 'line 29999');
  await page.click('#search button[type=submit]');
  await page.locator('#results li').first().waitFor({ timeout: 30000 });
  const one = await page.$$eval('#results li', (lis) => lis.map((li) => li.textContent));
  await page.click('#results li a');
  await page.waitForFunction((id) => {
    const r = document.getElementById(id)?.getBoundingClientRect();
    return r && r.top >= 0 && r.bottom <= window.innerHeight;
  }, `${step}-L29999`, { timeout: 30000 });
  await page.fill('#q', 'line 5');
  await page.click('#search button[type=submit]');
  await page.waitForFunction(() => document.querySelector('#search-summary').textContent.includes('+'), null, { timeout: 30000 });
  const many = { summary: await page.textContent('#search-summary'), count: await page.locator('#results li').count() };
  await page.click('#results li a >> nth=0');
  await page.waitForFunction(() => document.querySelector('#status').textContent.includes('before the lines this page keeps'), null, { timeout: 30000 });
  console.log(JSON.stringify({ ...shown, search: { one, many, status: await page.textContent('#status') }, errors }));
} finally {
  await browser.close();
}
