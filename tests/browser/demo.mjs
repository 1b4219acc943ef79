// Drives the demo page in Debian's Chromium: two pages chat in a fresh room,
// a third page joining later sees the room's history and members, the ticker
// updates live, and the layout fits a phone-width window.
//
//   node tests/browser/demo.mjs BASE_URL OUT_DIR
//
// BASE_URL is where the page is served (http://127.0.0.1:PORT/, any query string
// is kept); OUT_DIR receives demo-desktop.png and demo-narrow.png. Prints one
// line per check and exits 0, or says what it was waiting for and exits 1.

import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
const CHROMIUM = '/usr/bin/chromium';
const WAIT_MS = 10_000;
const RUN_MS = 60_000;
const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

const [baseArg, outArg] = process.argv.slice(2);
if (!baseArg || !outArg) {
  console.error('usage: node tests/browser/demo.mjs BASE_URL OUT_DIR');
  process.exit(2);
}
const base = new URL(baseArg);
if (!['127.0.0.1', 'localhost', '[::1]'].includes(base.hostname)) {
  console.error(`BASE_URL must be a loopback address, not ${base.hostname}`);
  process.exit(1);
}
const outDir = resolve(outArg);
mkdirSync(outDir, { recursive: true });

if (!existsSync(CHROMIUM)) {
  console.error(`${CHROMIUM} is missing: install Debian's chromium package (apt-get install -y chromium)`);
  process.exit(1);
}

if (!existsSync(join(HERE, 'node_modules', 'playwright-core'))) {
  // stdout stays one line per check; npm's chatter goes to stderr.
  const npm = spawnSync('npm', ['ci', '--no-audit', '--no-fund'], { cwd: HERE, stdio: ['ignore', 2, 2] });
  if (npm.status !== 0) {
    console.error(`npm ci in ${HERE} failed (${npm.error?.message ?? `exit ${npm.status}`})`);
    process.exit(1);
  }
}
const { chromium } = await import('playwright-core');

const userDataDir = mkdtempSync(join(tmpdir(), 'berth-demo-chromium-'));
const pages = [];
const blocked = [];
let waitingFor = 'Chromium to start';
let context = null;

async function fail(reason) {
  console.log(`FAIL while waiting for ${waitingFor}: ${reason}`);
  for (const { name, errors } of pages) {
    console.log(errors.length ? `${name} console errors:` : `${name}: no console errors`);
    for (const e of errors) console.log(`  ${e}`);
  }
  if (blocked.length) console.log(`requests blocked (not to ${base.host}): ${blocked.join(', ')}`);
  await shutdown();
  process.exit(1);
}

async function shutdown() {
  if (context) await Promise.race([context.close().catch(() => {}), new Promise((r) => setTimeout(r, 3000).unref())]);
  rmSync(userDataDir, { recursive: true, force: true });
}

const watchdog = setTimeout(() => fail(`the whole run took over ${RUN_MS / 1000} s`), RUN_MS);

/** Runs one bounded check: `what` names what it waits for, `fn` returns the line to print. */
async function check(what, fn) {
  waitingFor = what;
  try {
    console.log(`ok - ${await fn()}`);
  } catch (e) {
    await fail(e.message.split('\n')[0]);
  }
}

async function openPage(name) {
  const page = pages.length === 0 && context.pages().length ? context.pages()[0] : await context.newPage();
  const entry = { name, page, errors: [] };
  page.on('console', (m) => m.type() === 'error' && entry.errors.push(m.text()));
  page.on('pageerror', (e) => entry.errors.push(`uncaught: ${e.message}`));
  page.setDefaultTimeout(WAIT_MS);
  pages.push(entry);
  await page.goto(base.href, { waitUntil: 'load', timeout: WAIT_MS });
  await page.locator('[data-testid="chat-state"][data-state="connected"]').waitFor();
  return page;
}

/** Joins `room` and returns the connection id the welcome message gave. */
async function joinRoom(page, room) {
  await page.getByTestId('room-input').fill(room);
  await page.getByTestId('join-button').click();
  const me = page.locator(`[data-testid="me"][data-room="${room}"]`);
  await me.waitFor();
  const id = (await me.textContent()).match(/#(\d+)/)?.[1];
  if (!id) throw new Error(`"me" shows no connection id: ${await me.textContent()}`);
  return id;
}

async function waitForText(page, testId, text) {
  await page.waitForFunction(
    ([id, t]) => document.querySelector(`[data-testid="${id}"]`)?.textContent.includes(t),
    [testId, text],
    { timeout: WAIT_MS },
  );
}

await check('Chromium to start', async () => {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: FLAGS,
    viewport: { width: 1280, height: 800 },
    timeout: WAIT_MS,
  });
  await context.route('**/*', (route) => {
    const url = new URL(route.request().url());
    if (url.host === base.host || url.protocol === 'data:') return route.continue();
    blocked.push(url.href);
    return route.abort();
  });
  return `Chromium ${context.browser()?.version() ?? ''} started`.trim();
});

let first, second;
await check(`two pages at ${base.href} to load and connect to /chat`, async () => {
  first = await openPage('first page');
  second = await openPage('second page');
  return 'two pages loaded, chat connected';
});

const room = `t-${randomBytes(4).toString('hex')}`;
let firstId;
await check(`both pages to join room ${room}`, async () => {
  const secondId = await joinRoom(second, room);
  firstId = await joinRoom(first, room);
  return `joined ${room}: first page is #${firstId}, second page is #${secondId}`;
});

await check(`the second page to show "#${firstId} joined"`, async () => {
  await waitForText(second, 'messages', `#${firstId} joined`);
  return `second page saw #${firstId} join`;
});

const text = `hello <b>${randomBytes(3).toString('hex')}</b>`;
await check(`"#${firstId}: ${text}" on the second page`, async () => {
  await first.getByTestId('message-input').fill(text);
  await first.getByTestId('message-input').press('Enter');
  await waitForText(first, 'messages', text);
  await waitForText(second, 'messages', `#${firstId}: ${text}`);
  if (await second.locator('[data-testid="messages"] b').count()) throw new Error('message text was inserted as HTML');
  return 'a message typed on the first page appeared on the second, as text';
});

await check('the chat sockets to have negotiated permessage-deflate', async () => {
  const extensions = await Promise.all(
    [first, second].map((page) => page.getByTestId('chat-state').getAttribute('data-extensions')),
  );
  for (const e of extensions) {
    if (!e?.startsWith('permessage-deflate')) throw new Error(`the chat socket's extensions are "${e}"`);
  }
  return `both chat sockets negotiated "${extensions[0]}"`;
});

// Over the 1 KiB threshold, so berth sends it compressed, and Chromium
// compresses what it sends.
const long = `${'a long line that compresses well, '.repeat(45)}${randomBytes(8).toString('hex')}`;
await check(`a ${long.length}-character message to cross compressed`, async () => {
  await first.getByTestId('message-input').fill(long);
  await first.getByTestId('message-input').press('Enter');
  await waitForText(second, 'messages', `#${firstId}: ${long}`);
  return `a ${long.length}-character message crossed intact through permessage-deflate`;
});

await check(`a third page joining ${room} to see the earlier messages and the members`, async () => {
  const third = await openPage('third page');
  const thirdId = await joinRoom(third, room);
  // berth keeps the room's history: what was said before this page came is shown.
  await waitForText(third, 'messages', `#${firstId}: ${text}`);
  await waitForText(third, 'members', `3 people in ${room}`);
  await waitForText(third, 'members', `#${firstId}`);
  await third.close();
  return `third page #${thirdId} saw the earlier message and all three members`;
});

await check('a ticker symbol to show two different values', async () => {
  const symbol = await first
    .locator('[data-testid="ticker"] [data-testid^="tick-"]')
    .first()
    .getAttribute('data-testid');
  const values = new Set();
  const deadline = Date.now() + WAIT_MS;
  while (values.size < 2) {
    if (Date.now() > deadline) throw new Error(`${symbol} only ever showed ${[...values].join(' | ') || 'nothing'}`);
    const value = (await first.getByTestId(symbol).textContent()).match(/\d+(\.\d+)?/)?.[0];
    if (value) values.add(value);
    await first.waitForTimeout(50);
  }
  return `${symbol} updated live: ${[...values].join(' -> ')}`;
});

await check(`${join(outDir, 'demo-desktop.png')} to be written`, async () => {
  await first.screenshot({ path: join(outDir, 'demo-desktop.png') });
  return `desktop screenshot: ${join(outDir, 'demo-desktop.png')}`;
});

await check('the page to fit a 360 px wide window', async () => {
  await second.setViewportSize({ width: 360, height: 740 });
  const { scrollWidth, innerWidth } = await second.evaluate(
    () => new Promise((r) => requestAnimationFrame(() => r({
      scrollWidth: document.documentElement.scrollWidth,
      innerWidth: window.innerWidth,
    }))),
  );
  if (scrollWidth > innerWidth) throw new Error(`scrollWidth ${scrollWidth} > innerWidth ${innerWidth}`);
  await second.screenshot({ path: join(outDir, 'demo-narrow.png'), fullPage: true });
  return `no horizontal overflow at 360x740 (scrollWidth ${scrollWidth}); narrow screenshot: ${join(outDir, 'demo-narrow.png')}`;
});

await check('no uncaught errors or outside requests', async () => {
  const uncaught = pages.flatMap((p) => p.errors.filter((e) => e.startsWith('uncaught:')));
  if (uncaught.length) throw new Error(uncaught.join('; '));
  if (blocked.length) throw new Error(`requests outside ${base.host}: ${blocked.join(', ')}`);
  return 'no uncaught page errors, no requests outside BASE_URL';
});

clearTimeout(watchdog);
await shutdown();
