// The whole journey through pixdex's web app in Debian's headless Chromium (puppeteer-core,
// no browser download). Run by tests/it/browser.rs, which starts the daemon and passes:
//   PIXDEX_URL     http://127.0.0.1:PORT          PIXDEX_LOGIN  the login link the daemon printed
//   PIXDEX_ROOT    the library root               PIXDEX_DROP   an image to drop on the search page
//   PIXDEX_PICK    an image to pick from disk     PIXDEX_SHOTS  (optional) folder for screenshots
//   PIXDEX_BIG     how many images ROOT/big holds (a session over them is cancelled)
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
// 401: the signed-out steps; 409: the second session's taken name (taken over as "… (2)").
page.on('console', (m) => { if (m.type() === 'error' && !/401|Unauthorized|status of 409/.test(m.text())) errors.push(m.text()); });
const requests = [];
page.on('request', (r) => requests.push(r.url()));
const shot = async (name) => { if (SHOTS) await page.screenshot({ path: path.join(SHOTS, name), fullPage: false }); };
const text = (sel) => page.$eval(sel, (e) => e.textContent);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const reEsc = (x) => x.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const BIG = Number(env('PIXDEX_BIG'));
const navShown = () => page.$eval('#nav', (n) => !n.hidden && n.getBoundingClientRect().height > 0);
const scores = () => page.$$eval('#results li .pill[aria-label=score]', (ps) => ps.map((p) => Number(p.textContent)));
// The library tree's rows by folder name: depth, name and what the row says.
const libRows = async () => {
  await page.waitForSelector('#lib tbody tr');
  return page.$$eval('#lib tbody tr', (trs) => Object.fromEntries(trs.map((tr) => {
    const name = tr.dataset.dir.split('/').pop();
    return [name, { name, depth: Number(tr.dataset.depth), note: tr.querySelector('.note')?.textContent || '', text: tr.textContent.replace(/\s+/g, ' ').trim() }];
  })));
};
const waitText = (sel, re, timeout = 30000) => page.waitForFunction((s, src) => { const e = document.querySelector(s); return e && new RegExp(src).test(e.textContent); }, { timeout }, sel, re.source);

try {
  step('open without a token: the sign-in panel, "signed out", no navigation');
  await page.goto(URL_ + '/', { waitUntil: 'domcontentloaded' });
  await waitText('main', /Sign in/);
  await waitText('#live', /^signed out$/);
  if (await navShown()) fail('the navigation is shown while signed out (it can show nothing)');

  step('login link: cookie set, library shown');
  await page.goto(LOGIN, { waitUntil: 'domcontentloaded' });
  await waitText('#lib', new RegExp(reEsc(ROOT)));
  const cookies = await page.cookies();
  const c = cookies.find((x) => x.name === 'pixdex_token') || fail('no pixdex_token cookie');
  if (!c.httpOnly || c.sameSite !== 'Strict') fail(`cookie flags: ${JSON.stringify(c)}`);
  await waitText('#live', /live/);
  if (!(await navShown())) fail('no navigation once signed in');

  step('library tree: every folder, those without images too (empty, or other files only)');
  let lib = {};
  for (let i = 0; i < 60; i++) {
    lib = await libRows();
    if (/1 other file/.test(lib.docs?.note || '')) break;
    await sleep(500);
    await page.reload({ waitUntil: 'domcontentloaded' });
  }
  if (lib.empty?.note !== 'empty' || lib.photos?.note !== '') fail(`the empty folder is not shown as empty: ${JSON.stringify(lib)}`);
  if (lib.docs?.note !== 'no images · 1 other file') fail(`the folder of other files is not shown as such: ${JSON.stringify(lib)}`);

  step('new session: subdirectories with counts, non-empty preselected, the same folders as the library');
  await page.goto(URL_ + '/#/new', { waitUntil: 'domcontentloaded' });
  await page.waitForSelector('#ns-subdirs input[type=checkbox]');
  const rows = await page.$$eval('#ns-subdirs tbody tr', (trs) => trs.map((tr) => ({ name: tr.children[1].textContent.trim(), images: Number(tr.children[2].textContent), checked: tr.querySelector('input').checked })));
  const byName = Object.fromEntries(rows.map((r) => [r.name, r]));
  if (!byName.photos?.checked || !byName.more?.checked || byName.empty?.checked !== false || byName.docs?.checked !== false) fail(`preselection: ${JSON.stringify(rows)}`);
  const listed = rows.map((r) => r.name).filter((n) => n !== '(top level)').sort().join(',');
  const inTree = Object.values(lib).filter((r) => r.depth === 1).map((r) => r.name).sort().join(',');
  if (listed !== inTree) fail(`New session lists [${listed}], the library tree [${inTree}]`);
  const name1 = await page.$eval('#ns-name', (i) => i.value);
  if (!/^Session \d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/.test(name1)) fail(`the proposed name has no seconds: ${name1}`);
  await waitText('#ns-verdict', /can start/);
  if (await page.$eval('#ns-start', (b) => b.disabled)) fail('Start disabled on an admissible selection');

  step('Start disabled on an empty selection, with the reason in words (no backticks, no "1 files")');
  await page.click('#ns-none');
  await waitText('#ns-verdict', /none is selected/);
  if (!(await page.$eval('#ns-start', (b) => b.disabled))) fail('Start enabled with nothing selected');
  await shot('new-session-refused.png');
  await page.click(`#sd${rows.findIndex((r) => r.name === 'docs')}`);
  await waitText('#ns-verdict', /holds 1 file,/);
  const verdict = await text('#ns-verdict');
  if (verdict.includes('`') || !(await page.$('#ns-verdict code'))) fail(`the reason shows backticks instead of code: ${verdict}`);
  await page.click('#ns-none');
  await waitText('#ns-verdict', /none is selected/);
  await page.click(`#sd${rows.findIndex((r) => r.name === 'empty')}`);
  await waitText('#ns-verdict', /The selected subdirectory .* is empty: it holds no images/);
  if (!(await page.$eval('#ns-start', (b) => b.disabled))) fail('Start enabled on an empty folder');
  await page.click('#ns-all');
  await page.click(`#sd${rows.findIndex((r) => r.name === 'big')}`); // left for the session cancelled below
  await waitText('#ns-verdict', /can start: \d+ images in 2 of 2 selected subdirectories/);
  await shot('new-session.png');

  step('start: progress reaches 100 % through server-sent events');
  await Promise.all([page.waitForFunction(() => /#\/sessions\/\d+$/.test(location.hash), { timeout: 60000 }), page.click('#ns-start')]);
  const sid1 = await page.evaluate(() => location.hash.split('/').pop());
  const before = requests.length;
  await waitText('#s-pct', /^100%/, 180000);
  await waitText('#s-status', /completed/, 30000);
  const polled = requests.slice(before).filter((u) => /\/progress/.test(u));
  if (polled.length) fail(`the session page polled: ${polled.join(', ')}`);

  step('failed job: the file relative to the root, the reason without the absolute path');
  await page.waitForSelector('#s-failed tbody tr');
  const [file, reason] = await page.$$eval('#s-failed tbody tr:first-child td', (tds) => tds.map((t) => t.textContent));
  if (file !== 'photos/broken.jpg') fail(`failed job's file: ${file}`);
  if (reason.includes(ROOT) || reason.includes('broken.jpg') || !/truncated|corrupt/.test(reason)) fail(`failed job's reason: ${reason}`);
  const pipe = await text('#s-pipe');
  if (!/daemon/i.test(pipe) || !/all sessions/.test(pipe)) fail(`the pipeline counters are not labelled as the daemon's: ${pipe}`);
  await shot('session.png');

  step('restart failed: the message in words, above the page (covering nothing), dismissable');
  await page.click('#a-restart');
  await waitText('#toast-msg', /restarted: 1 failed job queued again$/);
  const cover = await page.evaluate(() => {
    const t = document.querySelector('#toast').getBoundingClientRect();
    const m = document.querySelector('#main').getBoundingClientRect();
    return { toastBottom: t.bottom, mainTop: m.top, visible: t.height > 0 };
  });
  if (!cover.visible || cover.toastBottom > cover.mainTop + 1) fail(`the message covers the page: ${JSON.stringify(cover)}`);
  await page.click('#toast-x');
  await page.waitForFunction(() => document.querySelector('#toast').hidden, { timeout: 2000 });
  await waitText('#s-status', /completed/, 60000);
  await page.waitForSelector('#s-failed tbody tr', { timeout: 30000 });

  step('a second session at once: its own proposed name; a taken proposed name gets the next free one');
  await page.goto(URL_ + '/#/new', { waitUntil: 'domcontentloaded' });
  await page.waitForSelector('#ns-subdirs input[type=checkbox]');
  const name2 = await page.$eval('#ns-name', (i) => i.value);
  if (name2 === name1) fail(`the second session is proposed the first one's name ${name1}`);
  // Started within the same second as the first: the proposed name is taken.
  await page.$eval('#ns-name', (i, n) => { i.value = n; }, name1);
  await page.click('#ns-none');
  await page.click(`#sd${rows.findIndex((r) => r.name === 'big')}`);
  await waitText('#ns-verdict', new RegExp(`can start: ${BIG} images in 1 of 1 selected subdirectory\\.`));

  step('cancel it while it runs: it looks cancelled, with what was and was not done');
  await Promise.all([page.waitForFunction(() => /#\/sessions\/\d+$/.test(location.hash), { timeout: 60000 }), page.click('#ns-start')]);
  await page.waitForSelector('#a-cancel');
  await page.click('#a-cancel');
  await waitText('#s-status', /^cancelled$/, 30000);
  await waitText('#s-title', new RegExp(`^${reEsc(name1)} \\(2\\)$`));
  await waitText('#toast-msg', /cancelled: \d+ unfinished jobs? cancelled$/);
  const pct = await text('#s-pct');
  const m = pct.match(new RegExp(`^Cancelled — (\\d+) of ${BIG} images indexed(?:, \\d+ failed)?(?:, \\d+ skipped)?, (\\d+) never indexed$`));
  if (!m || Number(m[2]) < 1) fail(`a cancelled session reads: ${pct}`);
  const eta = await page.$$eval('#s-stats .stat', (ss) => ss.find((x) => /ETA/.test(x.textContent))?.querySelector('b').textContent);
  if (eta !== '—') fail(`a cancelled session's ETA: ${eta}`);
  if (!(await page.$eval('#a-cancel', (b) => b.disabled))) fail('Cancel still enabled on a cancelled session');
  console.log(`cancelled: ${pct}`);
  await shot('session-cancelled.png');
  await page.waitForFunction(() => document.querySelector('#toast').hidden, { timeout: 12000 });
  await page.goto(URL_ + '/#/sessions', { waitUntil: 'domcontentloaded' });
  await page.waitForSelector('#sl table');
  const listRow = await page.$$eval('#sl tbody tr', (trs, n) => trs.find((tr) => tr.textContent.includes(n))?.children[2].textContent, `${name1} (2)`);
  if (!/^Cancelled — \d+ of \d+ images indexed/.test(listRow || '')) fail(`the sessions list shows the cancelled session as ${listRow}`);

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

  step('pick an image from disk: the words cleared, close matches only, how many more below');
  const pick = path.basename(env('PIXDEX_PICK'));
  const input = await page.$('#pick');
  await input.uploadFile(env('PIXDEX_PICK'));
  await waitText('#s-info', new RegExp(`results? like ${reEsc(pick)}`));
  const picked = await page.$eval('#results li img', (i) => i.alt);
  if (picked !== pick) fail(`picked ${pick}, first result ${picked}`);
  if ((await page.$eval('#q', (i) => i.value)) !== '') fail('the words box still holds "cat" after an image search');
  const cutoff = Number(await page.$eval('#f-min', (s) => s.value));
  const shownScores = await scores();
  console.log(`scores like ${pick}: ${shownScores.join(' ')} (cut-off ${cutoff}); ${await text('#s-info')}`);
  if (!(cutoff > 0) || shownScores.some((x) => x < cutoff)) fail(`results below the cut-off ${cutoff}: ${shownScores.join(' ')}`);
  const more = (await text('#s-info')).match(/(\d+) more below/);
  if (!more) fail(`no "more below" for an image search: ${await text('#s-info')}`);
  await page.click('#s-more');
  await page.waitForFunction((n) => document.querySelectorAll('#results li').length === n, { timeout: 5000 }, shownScores.length + Number(more[1]));
  if (!(await scores()).some((x) => x < cutoff)) fail('"Show more" shows nothing below the cut-off');
  await page.select('#f-min', String(cutoff));

  step('drop an image');
  const dropName = path.basename(env('PIXDEX_DROP'));
  const b64 = fs.readFileSync(env('PIXDEX_DROP')).toString('base64');
  await page.evaluate((data, name) => {
    const bytes = Uint8Array.from(atob(data), (ch) => ch.charCodeAt(0));
    const dt = new DataTransfer();
    dt.items.add(new File([bytes], name, { type: 'image/png' }));
    document.querySelector('#drop').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
  }, b64, dropName);
  await waitText('#s-info', new RegExp(`results? like ${reEsc(dropName)}`));
  await page.waitForFunction((n) => document.querySelector('#results li img')?.alt === n, { timeout: 30000 }, dropName);

  step('similar names the file, then the detail view');
  await page.click('#results li [data-similar]');
  await waitText('#s-info', new RegExp(`results? similar to ${reEsc(dropName)}`));
  if (/image \d/.test(await text('#s-info'))) fail(`similar names an internal id: ${await text('#s-info')}`);
  console.log(`similar: ${await text('#s-info')}`);
  // Nothing close enough here maybe (the samples are unlike each other): the rest is one click away.
  if (await page.$('#s-more')) await page.click('#s-more');
  await page.waitForSelector('#results li img');
  console.log(`similar scores: ${(await scores()).join(' ')}`);
  await page.click('#results li img');
  await page.waitForSelector('dialog[open] img.full');
  await page.waitForFunction(() => { const i = document.querySelector('dialog[open] img.full'); return i.complete && i.naturalWidth > 0; }, { timeout: 30000 });
  await shot('detail.png');
  await page.keyboard.press('Escape');

  step('library after indexing: counts pushed live');
  await page.goto(URL_ + '/#/library', { waitUntil: 'domcontentloaded' });
  // The identical copy counts as indexed (it shares the cat's vector); the broken file does not.
  await page.waitForFunction(() => {
    const row = (n) => [...document.querySelectorAll('#lib tbody tr')].find((tr) => tr.dataset.dir.split('/').pop() === n);
    const nums = (tr) => tr && [tr.children[1].textContent, tr.children[2].textContent].join('/');
    return nums(row('photos')) === '4/3' && nums(row('more')) === '2/2';
  }, { timeout: 30000 });
  await shot('library.png');

  step('health: shown from the live stream, never refetched');
  await page.goto(URL_ + '/#/health', { waitUntil: 'domcontentloaded' });
  await waitText('#h', /Vector store/);
  const hBefore = requests.length;
  const assets0 = Number((await text('#h')).match(/— (\d+) images?/)[1]);
  // The vector count too comes with the stream, and follows the indexing done above.
  await waitText('#h', /— [1-9]\d* vectors?/, 30000);
  fs.mkdirSync(path.join(ROOT, 'later'), { recursive: true });
  fs.copyFileSync(env('PIXDEX_PICK'), path.join(ROOT, 'later', 'coffee-again.png'));
  await waitText('#h', new RegExp(`— ${assets0 + 1} images`), 60000);
  const refetched = requests.slice(hBefore).filter((u) => /\/api\/v1\/health/.test(u));
  if (refetched.length) fail(`the Health page refetched ${refetched.length} times: ${refetched[0]}`);
  await shot('health.png');

  step('signed out (the cookie gone): the sign-in, "signed out", no dead navigation; then sign in again');
  await page.deleteCookie({ name: 'pixdex_token', url: URL_ });
  await page.click('nav a[data-nav="library"]');
  await waitText('main', /Sign in/);
  await waitText('#live', /^signed out$/);
  if (await navShown()) fail('the navigation stays shown (and dead) while signed out');
  await page.type('#tok', new URL(LOGIN).searchParams.get('token'));
  await Promise.all([page.waitForNavigation({ waitUntil: 'domcontentloaded' }), page.click('#signin button[type=submit]')]);
  await waitText('#live', /live/);
  if (!(await navShown())) fail('no navigation after signing in again');

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

  step('phone width: no horizontal scrolling; a failed job\'s reason wraps in a few lines');
  await page.setViewport({ width: 390, height: 844 });
  await page.goto(URL_ + '/#/search', { waitUntil: 'domcontentloaded' });
  await page.waitForSelector('#q');
  await page.type('#q', 'cat');
  await page.click('#sf button[type=submit]');
  await page.waitForSelector('#results li img');
  let overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  if (overflow > 1) fail(`page is ${overflow}px wider than a phone screen`);
  await shot('search-phone.png');
  await page.goto(URL_ + `/#/sessions/${sid1}`, { waitUntil: 'domcontentloaded' });
  await page.waitForSelector('#s-failed tbody tr');
  const reasonLines = await page.$eval('#s-failed tbody tr td:last-child', (td) => Math.round(td.getBoundingClientRect().height / parseFloat(getComputedStyle(td).lineHeight)));
  overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  if (overflow > 1) fail(`the session page is ${overflow}px wider than a phone screen`);
  if (reasonLines > 4) fail(`a failed job's reason takes ${reasonLines} lines at phone width`);
  await shot('session-phone.png');

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
