// A user's session start at scale, in Chromium: the New session page over a large library
// (benches/scale/web-start makes the library and the daemon and passes PIXDEX_URL), every
// folder with images preselected, Start, and the session page until every job is queued.
// Prints how long each step took. Not part of CI (it needs a million files).
import puppeteer from 'puppeteer-core';

const URL_ = process.env.PIXDEX_URL;
const t0 = Date.now();
const lap = (m) => console.log(`${((Date.now() - t0) / 1000).toFixed(2)} s  ${m}`);
const browser = await puppeteer.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
const page = await browser.newPage();
const errors = [];
page.on('pageerror', (e) => errors.push(String(e)));
const waitText = (sel, re, timeout) => page.waitForFunction((s, src) => { const e = document.querySelector(s); return e && new RegExp(src).test(e.textContent); }, { timeout }, sel, re.source);
try {
  await page.goto(URL_ + '/#/library', { waitUntil: 'domcontentloaded' });
  await waitText('#lib', /images/, 60000);
  lap(`library page: ${await page.$eval('#lib p', (e) => e.textContent.replace(/\s+/g, ' ').trim())}`);
  await page.goto(URL_ + '/#/new', { waitUntil: 'domcontentloaded' });
  await page.waitForSelector('#ns-subdirs input[type=checkbox]', { timeout: 60000 });
  const n = await page.$$eval('#ns-subdirs input:checked', (x) => x.length);
  lap(`new session page: ${n} folders preselected`);
  await waitText('#ns-verdict', /can start/, 60000);
  lap(`verdict: ${await page.$eval('#ns-verdict', (e) => e.textContent.trim())}`);
  await Promise.all([page.waitForFunction(() => /#\/sessions\/\d+$/.test(location.hash), { timeout: 60000 }), page.click('#ns-start')]);
  lap(`started: ${await page.evaluate(() => location.hash)}`);
  await waitText('#s-pct', /./, 30000);
  lap(`session page: ${await page.$eval('#s-pct', (e) => e.textContent)}`);
  await waitText('#s-status', /^running$/, 600000);
  lap(`all jobs queued: ${await page.$eval('#s-pct', (e) => e.textContent)}; pending ${await page.$$eval('#s-stats .stat', (s) => s.find((x) => /Pending/.test(x.textContent))?.querySelector('b').textContent)}`);
  if (errors.length) throw new Error(`page errors: ${errors.join(' | ')}`);
} finally {
  await browser.close();
}
