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
  console.log(JSON.stringify({ ...shown, errors }));
} finally {
  await browser.close();
}
