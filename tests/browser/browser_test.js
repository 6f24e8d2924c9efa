// Real browser check (headless Debian Chromium via playwright-core). Arguments:
//   node browser_test.js GATEWAY_HOSTPORT ALLOWED_PAGE_ORIGIN FOREIGN_PAGE_ORIGIN TOKEN
// 1. a page on the allowed origin connects with a `bearer.<jwt>` subprotocol token;
// 2. the same with the token in the gateway's cookie;
// 3. a page on a foreign origin (same site, other port: Chromium sends the cookie) is refused;
// 4. a page on the allowed origin fetches a one-time ticket with fetch() (CORS) and connects
//    with it in the URL, then in a `ticket.<t>` subprotocol entry; each replay is refused;
// 5. a page on a foreign origin cannot read a ticket answer (the CORS preflight is refused).
// Prints "ticket-used <t>" for every ticket a page used (the script checks the gateway log).
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
  const issuer = encodeURIComponent(`http://${gw}/v1/ws-ticket`);
  for (const mode of ['ticket', 'ticket-sub']) {
    got = await title(page, `${allowed}/page.html?mode=${mode}&ws=ws://${gw}/t&issuer=${issuer}&route=/t&token=${t}`);
    check(`${mode}: a ticket fetched from the allowed origin opens the socket, its replay is refused`,
      got === 'ok browser chat.v1 replay-refused', got);
    console.log('ticket-used ' + (await page.evaluate(() => window.ticketUsed || '')));
  }
  got = await title(page, `${foreign}/page.html?mode=ticket&ws=ws://${gw}/t&issuer=${issuer}&route=/t&token=${t}`);
  check('a page on a foreign origin cannot read a ticket answer (CORS)', got === 'cors-blocked', got);
  await ctx.close();
  console.log(`browser: ${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
})().catch((e) => { console.error('FAIL', e); process.exit(1); });
