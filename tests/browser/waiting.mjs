// A session whose jobs cannot move, seen in the web app (issue 24 §4): the Sessions list and the
// session page say what it waits for and the fix; once the model loads, the line goes away.
// Run by tests/it/browser.rs (waiting_for_the_model_shows_in_the_web_app), twice:
//   PIXDEX_PHASE=waiting  the model's weights are missing: the waiting line and its fix are shown
//   PIXDEX_PHASE=done     the weights arrived, the session completed: no waiting line left
// Env: PIXDEX_URL, PIXDEX_LOGIN, PIXDEX_SESSION (the session's id), CHROMIUM.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import puppeteer from 'puppeteer-core';

const env = (k) => { const v = process.env[k]; if (!v) throw new Error(`${k} is not set`); return v; };
const URL_ = env('PIXDEX_URL');
const LOGIN = env('PIXDEX_LOGIN');
const ID = env('PIXDEX_SESSION');
const PHASE = env('PIXDEX_PHASE');

const userDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pixdex-chromium-'));
const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  userDataDir: userDir,
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
});
const waitText = (page, sel, re, timeout = 30000) =>
  page.waitForFunction((s, src) => { const e = document.querySelector(s); return e && new RegExp(src).test(e.textContent); }, { timeout }, sel, re.source);
try {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(LOGIN, { waitUntil: 'domcontentloaded' });
  await page.goto(URL_ + '/#/sessions', { waitUntil: 'domcontentloaded' });
  if (PHASE === 'waiting') {
    await waitText(page, '#sl', /Waiting for the model ViT-B-32: .*later\.safetensors/);
    await page.goto(URL_ + `/#/sessions/${ID}`, { waitUntil: 'domcontentloaded' });
    await waitText(page, '#s-note', /Waiting for the model ViT-B-32: .*not found at .*later\.safetensors/);
    const fix = await page.$$eval('#s-note code', (cs) => cs.map((c) => c.textContent).join(' '));
    if (!/scripts\/fetch-clip/.test(fix)) throw new Error(`the fix is not shown as code: "${fix}"`);
    const status = await page.$eval('#s-status', (e) => e.textContent);
    if (status !== 'running') throw new Error(`status ${status}, expected running`);
    console.log('waiting: the Sessions list and the session page say what the session waits for, and the fix');
  } else {
    await waitText(page, '#sl', /completed/);
    const list = await page.$eval('#sl', (e) => e.textContent);
    if (/Waiting for/.test(list)) throw new Error(`a waiting line is left in the list: ${list}`);
    await page.goto(URL_ + `/#/sessions/${ID}`, { waitUntil: 'domcontentloaded' });
    await waitText(page, '#s-status', /completed/);
    const note = await page.$eval('#s-note', (e) => e.textContent);
    if (/Waiting for/.test(note)) throw new Error(`a waiting line is left on the session page: ${note}`);
    console.log('done: the waiting line is gone once the model loaded');
  }
  if (errors.length) throw new Error(`page errors: ${errors.join('; ')}`);
  console.log('waiting journey: ok');
} finally {
  await browser.close();
  fs.rmSync(userDir, { recursive: true, force: true });
}
