// The storefront in a real browser: Debian's chromium driven by
// playwright-core, against a shop that tests/browser/test_storefront.py
// started. Usage: node storefront.test.mjs URL SCREENSHOT_DIR
//
// Steps, each with a screenshot: the catalog shows both products; add to
// the cart; place the order and see it become SUCCESSFUL and the stock drop
// without a reload; cancel and see CANCELED and the stock restored; order
// more than is in stock and see UNSUCCESSFUL with its reason. Every wait is
// bounded; the page must never navigate again or log an error.
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [url, shots] = process.argv.slice(2);
if (!url || !shots) {
  console.error('usage: node storefront.test.mjs URL SCREENSHOT_DIR');
  process.exit(2);
}
mkdirSync(shots, { recursive: true });

const STEP_MS = 20000;
const results = [];

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic',
    '--disable-dev-shm-usage'],
});

let failed = false;
try {
  const context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_MS);
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    // A refused request is logged by the browser itself; the page's answer
    // to it is what step 06 checks.
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) {
      problems.push(`console error: ${m.text()}`);
    }
  });
  let navigations = 0;
  page.on('framenavigated', (f) => {
    if (f === page.mainFrame()) {
      navigations++;
    }
  });
  const streams = [];
  page.on('request', (r) => {
    if (new URL(r.url()).pathname === '/events') {
      streams.push(r.url());
    }
  });

  const step = async (name, fn) => {
    const t0 = Date.now();
    try {
      await fn();
      await page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
      results.push({ name, ok: true, ms: Date.now() - t0 });
      console.log(`ok - ${name} (${Date.now() - t0} ms)`);
    } catch (e) {
      await page.screenshot({ path: join(shots, `${name}-FAILED.png`), fullPage: true }).catch(() => {});
      results.push({ name, ok: false });
      console.log(`not ok - ${name}: ${e.message}`);
      throw e;
    }
  };

  const product = (id) => page.locator(`#catalog li[data-product-id="${id}"]`);
  const stockOf = async (id) => {
    const t = await product(id).locator('.stock').textContent();
    return t.startsWith('Out') ? 0 : Number.parseInt(t, 10);
  };
  const newestOrder = () => page.locator('#orders li').first();
  const waitStatus = (li, status) =>
    li.and(page.locator(`[data-status="${status}"]`)).waitFor({ timeout: STEP_MS });

  let stock1 = 0;
  let orderId = '';

  await step('01-catalog', async () => {
    await page.goto(url);
    await product(1).locator('.name', { hasText: 'One Leg Web Shop Prototype' }).waitFor();
    await product(2).locator('.name', { hasText: 'One Leg Web Shop Prototype v 2.0' }).waitFor();
    assert.equal(await product(1).locator('.price').textContent(), '€10.00');
    assert.equal(await product(2).locator('.price').textContent(), '€20.00');
    stock1 = await stockOf(1);
    assert.ok(stock1 >= 2, `product 1 has stock (${stock1})`);
    await page.locator('#connection', { hasText: 'Live updates on' }).waitFor();
  });

  await step('02-cart', async () => {
    await product(1).getByLabel('Qty').fill('2');
    await page.getByRole('button', { name: 'Add One Leg Web Shop Prototype to the cart' }).click();
    await page.locator('#cart li', { hasText: '2 × One Leg Web Shop Prototype' }).waitFor();
    assert.equal(await page.locator('#cart-total').textContent(), '€20.00');
  });

  await step('03-successful', async () => {
    // Keyboard: focus the button and press Enter.
    await page.locator('#place').focus();
    await page.keyboard.press('Enter');
    await page.locator('#orders li').first().waitFor();
    orderId = await newestOrder().getAttribute('data-order-id');
    assert.match(orderId, /^[0-9a-f-]{36}$/);
    await waitStatus(newestOrder(), 'SUCCESSFUL');
    await page.waitForFunction(
      (want) => document.querySelector('#catalog li[data-product-id="1"] .stock')
        ?.textContent.startsWith(`${want} in stock`),
      stock1 - 2, { timeout: STEP_MS });
    assert.equal(await newestOrder().locator('[role="status"]').textContent(), 'Successful');
    assert.equal(await page.locator('#cart li').count(), 0, 'the cart is emptied');
  });

  await step('04-canceled', async () => {
    await newestOrder().getByRole('button', { name: `Cancel order ${orderId}` }).click();
    await waitStatus(newestOrder(), 'CANCELED');
    await page.waitForFunction(
      (want) => document.querySelector('#catalog li[data-product-id="1"] .stock')
        ?.textContent.startsWith(`${want} in stock`),
      stock1, { timeout: STEP_MS });
    assert.ok(await newestOrder().locator('button.cancel').isHidden(), 'no cancel once canceled');
  });

  await step('05-unsuccessful', async () => {
    const stock2 = await stockOf(2);
    await product(2).getByLabel('Qty').fill(String(Math.min(1000, stock2 + 1)));
    await page.getByRole('button', { name: 'Add One Leg Web Shop Prototype v 2.0 to the cart' }).click();
    await page.getByRole('button', { name: 'Place order' }).click();
    await page.locator(`#orders li:not([data-order-id="${orderId}"])`).first().waitFor();
    const li = newestOrder();
    await waitStatus(li, 'UNSUCCESSFUL');
    const reason = await li.locator('.reason').textContent();
    assert.match(reason, /^Reason: .+/, 'the reason is shown');
    assert.equal(await stockOf(2), stock2, 'nothing reserved');
  });

  await step('06-api-error-in-words', async () => {
    // An order for a product the shop cannot take (count above the front's
    // limit) is refused by the API: the page says why.
    await product(1).getByLabel('Qty').fill('1000');
    await page.getByRole('button', { name: 'Add One Leg Web Shop Prototype to the cart' }).click();
    await product(1).getByLabel('Qty').fill('1000');
    await page.getByRole('button', { name: 'Add One Leg Web Shop Prototype to the cart' }).click();
    await page.getByRole('button', { name: 'Place order' }).click();
    const alert = page.getByRole('alert');
    await alert.waitFor();
    assert.match(await alert.textContent(), /^Placing the order: .*count/);
  });

  await step('07-reload-keeps-orders', async () => {
    assert.equal(navigations, 1, 'no navigation before this step: statuses came live');
    await page.reload();
    await page.locator(`#orders li[data-order-id="${orderId}"][data-status="CANCELED"]`).waitFor();
    assert.equal(await page.locator('#orders li').count(), 2);
  });

  await step('08-narrow-screen', async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    await product(2).locator('button.add').waitFor();
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(overflow <= 390, `no sideways scrolling on a phone (${overflow}px wide)`);
  });

  assert.ok(streams.length >= 1, 'the page used the event stream');
  assert.deepEqual(problems, [], 'no page or console errors');
  await context.close();
} catch (e) {
  failed = true;
  console.error(e.stack || String(e));
} finally {
  await browser.close();
}
const passed = results.filter((r) => r.ok).length;
console.log(`${passed} passed, ${results.length - passed + (failed && passed === results.length ? 1 : 0)} failed`);
process.exit(failed ? 1 : 0);
