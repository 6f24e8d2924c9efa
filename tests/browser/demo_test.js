// The demo's own browser page in headless Chromium (playwright-core). Arguments:
//   node demo_test.js PAGE_URL SCREENSHOT_PNG
// PAGE_URL is what `wsgate demo` prints as "browser page:" (the token rides in the fragment).
// The page must connect through the gateway, show what it sent and what the echo upstream
// answered, show the gateway's error frame for an unknown type and, with a short-lived
// demo token (`--token-ttl 40s`), its expiry warning. Then a screenshot is saved.
const { chromium } = require('playwright-core');
const fs = require('fs'), os = require('os'), path = require('path');

const [url, shot] = process.argv.slice(2);
let failed = 0, passed = 0;
function check(name, ok, detail) {
  if (ok) { passed++; console.log('ok   ' + name); } else { failed++; console.log('FAIL ' + name + ': ' + detail); }
}
const entries = (page, kind) => page.$$eval(`#log li.${kind}`, (els) => els.map((e) => e.textContent));
async function waitEntry(page, kind, needle, timeout) {
  try {
    await page.waitForFunction(([k, n]) => [...document.querySelectorAll(`#log li.${k}`)]
      .some((e) => e.textContent.includes(n)), [kind, needle], { timeout });
    return true;
  } catch (_) { return false; }
}

(async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wsgate-demo-chromium-'));
  const ctx = await chromium.launchPersistentContext(dir, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true,
    viewport: { width: 1000, height: 640 },
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'] });
  const page = await ctx.newPage();
  await page.goto(url);
  let open = true;
  try { await page.waitForFunction(() => document.getElementById('status').textContent.startsWith('open'), null, { timeout: 15000 }); }
  catch (_) { open = false; }
  check('the page connects through the gateway with its subprotocol token', open, await page.textContent('#status'));
  check('the fragment with the token is removed from the address bar', !page.url().includes('token='), page.url());
  check('the echo upstream greets with what the gateway forwarded',
    await waitEntry(page, 'received', 'x-wsgate-subject', 10000), JSON.stringify(await entries(page, 'received')));
  await page.click('#send');
  check('a message sent is shown and its echo received',
    (await waitEntry(page, 'sent', 'chat.send', 5000)) && (await waitEntry(page, 'received', '"text":"hi"', 10000)),
    JSON.stringify(await entries(page, 'received')));
  await page.click('#bad');
  check("the gateway's error frame for an unknown type is shown",
    await waitEntry(page, 'error', 'unknown_type', 10000), JSON.stringify(await entries(page, 'error')));
  check("the gateway's expiry warning is shown",
    await waitEntry(page, 'warning', 'auth.expiring', 40000), JSON.stringify(await entries(page, 'warning')));
  await page.screenshot({ path: shot, fullPage: true });
  check('a screenshot was saved', fs.existsSync(shot) && fs.statSync(shot).size > 10000, shot);
  await ctx.close();
  console.log(`demo page: ${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
})().catch((e) => { console.error('FAIL', e); process.exit(1); });
