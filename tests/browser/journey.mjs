// The whole journey through pixdex's web app in Debian's headless Chromium (puppeteer-core,
// no browser download). Run by tests/it/browser.rs, which starts the daemon and passes:
//   PIXDEX_URL     http://127.0.0.1:PORT          PIXDEX_LOGIN  the login link the daemon printed
//   PIXDEX_ROOT    the library root               PIXDEX_DROP   an image to drop on the search page
//   PIXDEX_PICK    an image to pick from disk     PIXDEX_SHOTS  (optional) folder for screenshots
import puppeteer from 'puppeteer-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const env = (k) => { const v = process.env[k]; if (!v) throw new Error(`${k} is not set`); return v; };
const URL_ = env('PIXDEX_URL');
const LOGIN = env('PIXDEX_LOGIN');
const ROOT = env('PIXDEX_ROOT');
const SHOTS = process.env.PIXDEX_SHOTS || '';
const step = (m) => console.log(`step: ${m}`);
const fail = (m) => { throw new Error(m); };

const userDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pixdex-chromium-'));
const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  userDataDir: userDir,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
});
const page = await browser.newPage();
await page.setViewport({ width: 1280, height: 800 });
const errors = [];
page.on('pageerror', (e) => errors.push(String(e)));
page.on('console', (m) => { if (m.type() === 'error' && !/401|Unauthorized/.test(m.text())) errors.push(m.text()); });
const requests = [];
page.on('request', (r) => requests.push(r.url()));
const shot = async (name) => { if (SHOTS) await page.screenshot({ path: path.join(SHOTS, name), fullPage: false }); };
const text = (sel) => page.$eval(sel, (e) => e.textContent);
const waitText = (sel, re, timeout = 30000) => page.waitForFunction((s, src) => { const e = document.querySelector(s); return e && new RegExp(src).test(e.textContent); }, { timeout }, sel, re.source);

try {
  step('open without a token: the sign-in panel');
  await page.goto(URL_ + '/', { waitUntil: 'domcontentloaded' });
  await waitText('main', /Sign in/);

  step('login link: cookie set, library shown');
  await page.goto(LOGIN, { waitUntil: 'domcontentloaded' });
  await waitText('#lib', new RegExp(ROOT.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')));
  const cookies = await page.cookies();
  const c = cookies.find((x) => x.name === 'pixdex_token') || fail('no pixdex_token cookie');
  if (!c.httpOnly || c.sameSite !== 'Strict') fail(`cookie flags: ${JSON.stringify(c)}`);
  await waitText('#live', /live/);

  step('new session: subdirectories with counts, non-empty preselected');
  await page.goto(URL_ + '/#/new', { waitUntil: 'domcontentloaded' });
  await page.waitForSelector('#ns-subdirs input[type=checkbox]');
  const rows = await page.$$eval('#ns-subdirs tbody tr', (trs) => trs.map((tr) => ({ name: tr.children[1].textContent.trim(), images: Number(tr.children[2].textContent), checked: tr.querySelector('input').checked })));
  const byName = Object.fromEntries(rows.map((r) => [r.name, r]));
  if (!byName.photos?.checked || !byName.more?.checked || byName.empty?.checked !== false) fail(`preselection: ${JSON.stringify(rows)}`);
  await waitText('#ns-verdict', /can start/);
  if (await page.$eval('#ns-start', (b) => b.disabled)) fail('Start disabled on an admissible selection');

  step('Start disabled on an empty selection, with the reason');
  await page.click('#ns-none');
  await waitText('#ns-verdict', /none is selected/);
  if (!(await page.$eval('#ns-start', (b) => b.disabled))) fail('Start enabled with nothing selected');
  await shot('new-session-refused.png');
  const emptyBox = await page.$$eval('#ns-subdirs tbody tr', (trs) => trs.findIndex((tr) => tr.children[1].textContent.trim() === 'empty'));
  await page.click(`#sd${emptyBox}`);
  await waitText('#ns-verdict', /are empty/);
  if (!(await page.$eval('#ns-start', (b) => b.disabled))) fail('Start enabled on an empty folder');
  await page.click('#ns-all');
  await waitText('#ns-verdict', /can start/);
  await shot('new-session.png');

  step('start: progress reaches 100 % through server-sent events');
  await Promise.all([page.waitForFunction(() => /#\/sessions\/\d+$/.test(location.hash), { timeout: 60000 }), page.click('#ns-start')]);
  const before = requests.length;
  await waitText('#s-pct', /^100%/, 180000);
  await waitText('#s-status', /completed/, 30000);
  const polled = requests.slice(before).filter((u) => /\/progress/.test(u));
  if (polled.length) fail(`the session page polled: ${polled.join(', ')}`);
  await shot('session.png');

  step('search by word: the cat photo first, as a thumbnail');
  const t0 = Date.now();
  await page.goto(URL_ + '/#/search', { waitUntil: 'domcontentloaded' });
  await page.waitForSelector('#q');
  const tReady = Date.now();
  await page.type('#q', 'cat');
  const tQuery = Date.now();
  await page.click('#sf button[type=submit]');
  await page.waitForSelector('#results li img');
  await page.waitForFunction(() => { const i = document.querySelector('#results li img'); return i && i.complete && i.naturalWidth > 0; }, { timeout: 30000 });
  console.log(`timing: search page usable in ${tReady - t0} ms; query to first thumbnail shown in ${Date.now() - tQuery} ms`);
  const first = await page.$eval('#results li img', (i) => i.alt);
  if (first !== 'chelsea.png') fail(`first result for "cat" is ${first}`);
  const copies = await page.$eval('#results li', (li) => li.querySelector('.copies')?.textContent || '');
  if (copies !== '+1 similar copy') fail(`the cat's card shows ${JSON.stringify(copies)}, expected "+1 similar copy"`);
  const info = await page.$eval('#s-info', (p) => p.textContent);
  if (!/by ImageNet labels/.test(info) || !/model efficientnet-lite0-imagenet/.test(info)) fail(`search info does not say how and which model: ${info}`);
  await shot('search.png');

  step('pick an image from disk');
  const input = await page.$('#pick');
  await input.uploadFile(env('PIXDEX_PICK'));
  await waitText('#s-info', new RegExp(`results? like ${path.basename(env('PIXDEX_PICK'))}`));
  const picked = await page.$eval('#results li img', (i) => i.alt);
  if (picked !== path.basename(env('PIXDEX_PICK'))) fail(`picked ${path.basename(env('PIXDEX_PICK'))}, first result ${picked}`);

  step('drop an image');
  const dropName = path.basename(env('PIXDEX_DROP'));
  const b64 = fs.readFileSync(env('PIXDEX_DROP')).toString('base64');
  await page.evaluate((data, name) => {
    const bytes = Uint8Array.from(atob(data), (ch) => ch.charCodeAt(0));
    const dt = new DataTransfer();
    dt.items.add(new File([bytes], name, { type: 'image/png' }));
    document.querySelector('#drop').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
  }, b64, dropName);
  await waitText('#s-info', new RegExp(`results? like ${dropName}`));
  await page.waitForFunction((n) => document.querySelector('#results li img')?.alt === n, { timeout: 30000 }, dropName);

  step('similar, then the detail view');
  await page.click('#results li [data-similar]');
  await waitText('#s-info', /results? similar to image/);
  await page.waitForSelector('#results li img');
  await page.click('#results li img');
  await page.waitForSelector('dialog[open] img.full');
  await page.waitForFunction(() => { const i = document.querySelector('dialog[open] img.full'); return i.complete && i.naturalWidth > 0; }, { timeout: 30000 });
  await shot('detail.png');
  await page.keyboard.press('Escape');

  step('library after indexing: counts pushed live');
  await page.goto(URL_ + '/#/library', { waitUntil: 'domcontentloaded' });
  await waitText('#lib', /5 images, 5 indexed/); // the identical copy counts as indexed (it shares the cat's vector)
  await shot('library.png');

  step('health');
  await page.goto(URL_ + '/#/health', { waitUntil: 'domcontentloaded' });
  await waitText('#h', /Vector store/);
  await shot('health.png');

  step('accessibility: every control has a label; keyboard reaches the search box');
  await page.goto(URL_ + '/#/search', { waitUntil: 'domcontentloaded' });
  await page.waitForSelector('#q');
  const unlabelled = await page.$$eval('input, select, button', (els) => els.filter((e) => {
    if (e.type === 'file') return false;
    const byFor = e.id && document.querySelector(`label[for="${e.id}"]`);
    return !(byFor || e.closest('label') || e.getAttribute('aria-label') || (e.tagName === 'BUTTON' && e.textContent.trim()));
  }).map((e) => e.outerHTML.slice(0, 80)));
  if (unlabelled.length) fail(`controls without a label: ${unlabelled.join(' | ')}`);
  let reached = false;
  for (let i = 0; i < 15 && !reached; i++) {
    await page.keyboard.press('Tab');
    reached = await page.evaluate(() => document.activeElement?.id === 'q');
  }
  if (!reached) fail('Tab never reaches the search box');

  step('phone width: no horizontal scrolling');
  await page.setViewport({ width: 390, height: 844 });
  await page.goto(URL_ + '/#/search', { waitUntil: 'domcontentloaded' });
  await page.waitForSelector('#q');
  await page.type('#q', 'cat');
  await page.click('#sf button[type=submit]');
  await page.waitForSelector('#results li img');
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  if (overflow > 1) fail(`page is ${overflow}px wider than a phone screen`);
  await shot('search-phone.png');

  if (errors.length) fail(`page errors: ${errors.join(' | ')}`);
  console.log('journey: ok');
  await browser.close();
} catch (e) {
  console.error(`journey FAILED: ${e.message}`);
  try { await page.screenshot({ path: path.join(SHOTS || os.tmpdir(), 'failure.png') }); console.error(`screenshot: ${path.join(SHOTS || os.tmpdir(), 'failure.png')}`); } catch (_) { /* ignore */ }
  try { console.error((await page.content()).slice(0, 4000)); } catch (_) { /* ignore */ }
  await browser.close();
  process.exit(1);
}
