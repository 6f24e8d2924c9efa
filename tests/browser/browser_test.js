// Real browser check (headless Debian Chromium via playwright-core). Arguments:
//   node browser_test.js GATEWAY_HOSTPORT ALLOWED_PAGE_ORIGIN FOREIGN_PAGE_ORIGIN TOKEN
// 1. a page on the allowed origin connects with a `bearer.<jwt>` subprotocol token;
// 2. the same with the token in the gateway's cookie;
// 3. a page on a foreign origin (same site, other port: Chromium sends the cookie) is refused.
const { chromium } = require('playwright-core');
const fs = require('fs'), os = require('os'), path = require('path');

const [gw, allowed, foreign, token] = process.argv.slice(2);
let failed = 0, passed = 0;
function check(name, ok, detail) {
  if (ok) { passed++; console.log('ok   ' + name); } else { failed++; console.log('FAIL ' + name + ': ' + detail); }
}

async function title(page, url) {
  await page.goto(url);
  await page.waitForFunction(() => document.title !== 'pending', null, { timeout: 15000 });
  return page.title();
}

(async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wsgate-chromium-'));
  const ctx = await chromium.launchPersistentContext(dir, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'] });
  await ctx.addCookies([{ name: 'access_token', value: token, url: 'http://' + gw }]);
  const page = await ctx.newPage();
  const t = encodeURIComponent(token);
  let got = await title(page, `${allowed}/page.html?mode=subprotocol&ws=ws://${gw}/ws&token=${t}`);
  check('subprotocol token from the allowed origin', got === 'ok browser chat.v1', got);
  got = await title(page, `${allowed}/page.html?mode=cookie&ws=ws://${gw}/c`);
  check('cookie token from the allowed origin', got === 'ok browser chat.v1', got);
  got = await title(page, `${foreign}/page.html?mode=cookie&ws=ws://${gw}/c`);
  check('cross-site WebSocket hijacking from a foreign origin is refused', got.startsWith('refused'), got);
  got = await title(page, `${foreign}/page.html?mode=subprotocol&ws=ws://${gw}/ws&token=${t}`);
  check('a foreign origin is refused even with a valid token', got.startsWith('refused'), got);
  await ctx.close();
  console.log(`browser: ${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
})().catch((e) => { console.error('FAIL', e); process.exit(1); });
