// The storefront in a real browser: Debian's chromium driven by
// playwright-core, against a shop that tests/browser/test_storefront.py
// started. Usage: node storefront.test.mjs URL SCREENSHOT_DIR CONFIG_JSON
// (CONFIG_JSON: {"catalog": [...], "frontMaxCount": N}, as the shop has them).
//
// Steps, each with a screenshot, as a shopper meets them: the catalog;
// "Add to cart" disabled for a product out of stock; quantity fields named
// by their product; the cart; an order that becomes SUCCESSFUL and the
// stock that drops without a reload; its Cancel button named by its
// contents, and the cancel (200 or 202) that restores the stock; a cart
// held to the stock shown and to the per-item limit; the front's refusal
// said in shop words; focus after removing cart lines; "not enough stock"
// named by product (two orders for the last units while the inventory is
// stopped); an order placed while the order service is stopped (202:
// "Queued"), followed until final once it is back; orders kept across a
// reload; the <noscript> message; a phone-sized screen. Every wait is
// bounded; the page must never navigate on its own or log an error.
//
// The script asks test_storefront.py to stop or start a service by
// printing "@@control stop|start NAME" and reading "ok" from stdin.
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const [url, shots, configJson] = process.argv.slice(2);
if (!url || !shots || !configJson) {
  console.error('usage: node storefront.test.mjs URL SCREENSHOT_DIR CONFIG_JSON');
  process.exit(2);
}
const config = JSON.parse(configJson);
mkdirSync(shots, { recursive: true });

const STEP_MS = 20000;
const CONTROL_MS = 60000;
const results = [];
const byName = (name) => config.catalog.find((p) => p.name === name);
const COFFEE = byName('Coffee');
const TEA = byName('Tea');
const MUG = byName('Mug');
const CAKE = byName('Cake');
assert.ok(COFFEE && TEA && MUG && CAKE, 'the catalog the shop was given');
assert.equal(MUG.balance, 0);
assert.ok(CAKE.balance < 10 && TEA.balance > 1000 && config.frontMaxCount < 1000);

// ---- the control channel to test_storefront.py ----------------------------

const lines = createInterface({ input: process.stdin });
const replies = [];
let waiter = null;
lines.on('line', (l) => {
  if (waiter) {
    const w = waiter;
    waiter = null;
    w(l);
  } else {
    replies.push(l);
  }
});

async function control(verb, name) {
  console.log(`@@control ${verb} ${name}`);
  let timer;
  const reply = await new Promise((resolve, reject) => {
    if (replies.length) {
      resolve(replies.shift());
      return;
    }
    waiter = resolve;
    timer = setTimeout(() => reject(new Error(`no answer to "${verb} ${name}"`)), CONTROL_MS);
  });
  clearTimeout(timer);
  assert.equal(reply, 'ok', `${verb} ${name}`);
}

// ---- the browser -------------------------------------------------------------

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
  // While a backend is stopped on purpose, the refused event stream is
  // reported by chromium itself (a JSON 503 is not text/event-stream).
  let backendDown = false;
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    const text = m.text();
    if (m.type() !== 'error' || text.startsWith('Failed to load resource') ||
        (backendDown && text.startsWith("EventSource's response has a MIME type"))) {
      return;
    }
    problems.push(`console error: ${text}`);
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

  const step = async (name, fn, shotPage = page) => {
    const t0 = Date.now();
    try {
      const p = (await fn()) || shotPage;
      await p.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
      if (p !== page) {
        await p.context().close();
      }
      results.push({ name, ok: true, ms: Date.now() - t0 });
      console.log(`ok - ${name} (${Date.now() - t0} ms)`);
    } catch (e) {
      await page.screenshot({ path: join(shots, `${name}-FAILED.png`), fullPage: true })
        .catch(() => {});
      results.push({ name, ok: false });
      console.log(`not ok - ${name}: ${e.message}`);
      throw e;
    }
  };

  const product = (p) => page.locator(`#catalog li[data-product-id="${p.id}"]`);
  const qty = (p) => page.getByLabel(`Quantity of ${p.name}`, { exact: true });
  const cartQty = (p) => page.getByLabel(`Quantity of ${p.name} in the cart`, { exact: true });
  const addButton = (p) => page.getByRole('button', { name: `Add ${p.name} to the cart`, exact: true });
  const stockOf = async (p) => {
    const t = await product(p).locator('.stock').textContent();
    return t.startsWith('Out') ? 0 : Number.parseInt(t, 10);
  };
  const waitStock = (p, want) => page.waitForFunction(
    ([id, n]) => document.querySelector(`#catalog li[data-product-id="${id}"] .stock`)
      ?.textContent.startsWith(n > 0 ? `${n} in stock` : 'Out of stock'),
    [p.id, want], { timeout: STEP_MS });
  const add = async (p, n) => {
    await qty(p).fill(String(n));
    await addButton(p).click();
  };
  const orderRow = (id) => page.locator(`#orders li[data-order-id="${id}"]`);
  const waitStatus = (id, status, timeout = STEP_MS) =>
    page.locator(`#orders li[data-order-id="${id}"][data-status="${status}"]`).waitFor({ timeout });
  const focusedId = () => page.evaluate(() => document.activeElement?.id || '');
  // Place the cart's order; returns {id, status} of the POST's answer.
  const place = async () => {
    const answer = page.waitForResponse((r) => r.request().method() === 'POST' &&
      new URL(r.url()).pathname === '/order');
    await page.getByRole('button', { name: 'Place order' }).click();
    const r = await answer;
    let id = '';
    if (r.status() === 201 || r.status() === 202) {
      id = (await r.json()).order_id;
      await orderRow(id).waitFor();
    }
    return { id, status: r.status() };
  };
  const noRawText = async (text) => {
    assert.doesNotMatch(text, /items\[|inventory_id|count:|product \d|HTTP \d|[0-9a-f]{8}-[0-9a-f]{4}-/,
      `shop words, not server text: ${text}`);
  };

  let firstOrder = '';

  await step('01-catalog', async () => {
    await page.goto(url);
    for (const p of config.catalog) {
      await product(p).locator('.name', { hasText: p.name }).waitFor();
      assert.equal(await product(p).locator('.price').textContent(),
        `€${(p.price / 100).toFixed(2)}`);
      assert.equal(await stockOf(p), p.balance, `${p.name}'s stock`);
    }
    await page.locator('#connection', { hasText: 'Live updates on' }).waitFor();
  });

  await step('02-out-of-stock-disabled', async () => {
    assert.equal(await product(MUG).locator('.stock').textContent(), 'Out of stock');
    assert.ok(await addButton(MUG).isDisabled(), '"Add to cart" is disabled for Mug');
    assert.ok(await qty(MUG).isDisabled(), 'so is its quantity');
    assert.ok(await addButton(COFFEE).isEnabled(), 'but not for Coffee');
  });

  await step('03-quantity-labels', async () => {
    for (const p of config.catalog) {
      const input = page.getByRole('spinbutton', { name: `Quantity of ${p.name}`, exact: true });
      assert.equal(await input.count(), 1, `one field named "Quantity of ${p.name}"`);
      assert.equal(await input.getAttribute('id'), `qty-${p.id}`);
    }
  });

  await step('04-cart', async () => {
    await add(COFFEE, 2);
    await qty(TEA).fill('1');
    await qty(TEA).press('Enter'); // Enter in the field adds, too
    await cartQty(COFFEE).waitFor();
    await cartQty(TEA).waitFor();
    assert.equal(await cartQty(COFFEE).inputValue(), '2');
    assert.equal(await cartQty(TEA).inputValue(), '1');
    assert.equal(await page.locator('#cart-total').textContent(),
      `€${((2 * COFFEE.price + TEA.price) / 100).toFixed(2)}`);
  });

  await step('05-successful', async () => {
    // Keyboard: focus the button and press Enter.
    const answer = page.waitForResponse((r) => r.request().method() === 'POST');
    await page.locator('#place').focus();
    await page.keyboard.press('Enter');
    const r = await answer;
    assert.ok([201, 202].includes(r.status()), `POST answered ${r.status()}`);
    firstOrder = (await r.json()).order_id;
    assert.match(firstOrder, /^[0-9a-f-]{36}$/);
    await waitStatus(firstOrder, 'SUCCESSFUL');
    await waitStock(COFFEE, COFFEE.balance - 2);
    await waitStock(TEA, TEA.balance - 1);
    assert.equal(await orderRow(firstOrder).locator('[role="status"]').textContent(), 'Successful');
    assert.equal(await page.locator('#cart li').count(), 0, 'the cart is emptied');
    assert.equal(await focusedId(), 'orders-title', 'focus moves to the orders');
    console.log(`# POST /order answered ${r.status()}`);
  });

  await step('06-cancel-named-by-contents', async () => {
    const name = 'Cancel order: 2 × Coffee, 1 × Tea';
    const cancel = page.getByRole('button', { name, exact: true });
    assert.equal(await cancel.count(), 1, `one button named "${name}"`);
    const answer = page.waitForResponse((r) => r.request().method() === 'DELETE');
    await cancel.click();
    const r = await answer;
    assert.ok([200, 202].includes(r.status()), `DELETE answered ${r.status()}`);
    console.log(`# DELETE /order/{id} answered ${r.status()}`);
    await waitStatus(firstOrder, 'CANCELED');
    await waitStock(COFFEE, COFFEE.balance);
    await waitStock(TEA, TEA.balance);
    assert.ok(await orderRow(firstOrder).locator('button.cancel').isHidden(), 'no cancel once canceled');
    assert.ok(await orderRow(firstOrder).locator('.note').isHidden(), 'no "Cancel requested" left');
    assert.equal(await page.evaluate(() => document.activeElement?.dataset.orderId), firstOrder,
      'focus stays on the canceled order');
  });

  await step('07-cart-held-to-stock', async () => {
    await add(CAKE, CAKE.balance + 2);
    await cartQty(CAKE).waitFor();
    assert.equal(await cartQty(CAKE).inputValue(), String(CAKE.balance));
    const note = `Only ${CAKE.balance} Cake in stock: your cart now holds ${CAKE.balance}.`;
    assert.equal(await product(CAKE).locator('.note').textContent(), note);
    assert.ok(await addButton(CAKE).isDisabled(), 'all the Cake is in the cart');
    assert.equal(await focusedId(), `note-${CAKE.id}`, 'focus on the note, not lost');
    // Typing more into the cart line is held to the stock, too.
    await cartQty(CAKE).fill('9');
    await cartQty(CAKE).press('Tab');
    assert.equal(await cartQty(CAKE).inputValue(), String(CAKE.balance));
    assert.equal(await page.locator('#place-status').textContent(), note);
  });

  await step('08-cart-held-to-item-limit', async () => {
    await add(TEA, 1200);
    await cartQty(TEA).waitFor();
    assert.equal(await cartQty(TEA).inputValue(), '1000');
    assert.equal(await product(TEA).locator('.note').textContent(),
      'You can order at most 1000 of Tea: your cart now holds 1000.');
  });

  await step('09-refusal-in-shop-words', async () => {
    // The front allows fewer units per item than the page knew: it answers
    // 400 "items[1].count: must be between 1 and N, got 1000".
    const r = await place();
    assert.equal(r.status, 400);
    const alert = page.getByRole('alert');
    await alert.waitFor();
    const text = await alert.textContent();
    const max = config.frontMaxCount;
    assert.equal(text, `You can order at most ${max} of Tea. ` +
      `Your cart now holds ${max}; check it and place the order again.`);
    await noRawText(text);
    assert.equal(await cartQty(TEA).inputValue(), String(max));
    assert.equal(await cartQty(CAKE).inputValue(), String(CAKE.balance), 'Cake untouched');
  });

  await step('10-focus-after-remove', async () => {
    await page.getByRole('button', { name: 'Remove Tea from the cart', exact: true }).click();
    assert.equal(await page.evaluate(() => document.activeElement?.getAttribute('aria-label')),
      'Remove Cake from the cart', 'focus on the line that took its place');
    await page.keyboard.press('Enter'); // remove the last line from the keyboard
    await page.locator('#cart-empty').waitFor();
    assert.equal(await page.locator('#cart li').count(), 0);
    assert.equal(await focusedId(), 'cart-title', 'focus on the cart heading');
    assert.ok(await page.getByRole('alert').isHidden(), "step 09's message went with the cart");
    assert.ok(await page.locator('#place').isDisabled());
    assert.ok(await addButton(CAKE).isEnabled(), 'Cake can be added again');
  });

  const cakeOrders = [];
  await step('11-not-enough-stock-by-name', async () => {
    // Two orders for the last Cake while the inventory is stopped: the
    // page shows the same stock for both; one of them cannot be filled.
    await control('stop', 'inventory');
    for (let i = 0; i < 2; i++) {
      await add(CAKE, CAKE.balance);
      const r = await place();
      assert.ok([201, 202].includes(r.status), `POST answered ${r.status}`);
      cakeOrders.push(r.id);
    }
    const names = await page.locator('#orders button.cancel:visible')
      .evaluateAll((bs) => bs.map((b) => b.getAttribute('aria-label')));
    assert.equal(new Set(names).size, names.length, `distinct Cancel names: ${names}`);
    assert.ok(names.every((n) => n.startsWith(`Cancel order: ${CAKE.balance} × Cake`)), String(names));
    await control('start', 'inventory');
    await page.locator('#orders li[data-status="UNSUCCESSFUL"]').waitFor();
    const bad = page.locator('#orders li[data-status="UNSUCCESSFUL"]');
    assert.equal(await bad.count(), 1);
    const badId = await bad.getAttribute('data-order-id');
    assert.ok(cakeOrders.includes(badId));
    assert.equal(await bad.locator('.note').textContent(), 'Not enough stock for Cake.');
    await waitStatus(cakeOrders.find((id) => id !== badId), 'SUCCESSFUL');
    await waitStock(CAKE, 0);
    assert.ok(await addButton(CAKE).isDisabled(), 'Cake is sold out now');
    for (const t of await page.locator('#orders .note').allTextContents()) {
      await noRawText(t);
    }
  });

  let queued = '';
  await step('12-queued-then-final', async () => {
    await control('stop', 'order');
    backendDown = true;
    await add(COFFEE, 1);
    const r = await place();
    queued = r.id;
    console.log(`# POST /order with the order service stopped answered ${r.status}`);
    assert.ok([201, 202].includes(r.status), `POST answered ${r.status}`);
    const badge = orderRow(queued).locator('[role="status"]');
    if (r.status === 202) {
      assert.equal(await badge.textContent(), 'Queued');
      assert.equal(await orderRow(queued).locator('.note').textContent(),
        'The shop has your order and will confirm it shortly.');
    } else {
      // A front that answers 201 at the broker's ack (before issue 12).
      assert.equal(await badge.textContent(), 'Pending');
    }
    await page.screenshot({ path: join(shots, '12-queued-while-order-service-stopped.png'),
      fullPage: true });
    await control('start', 'order');
    await waitStatus(queued, 'SUCCESSFUL', 3 * STEP_MS);
    backendDown = false;
    if (r.status === 202) {
      assert.equal(await page.locator('#place-status').textContent(), 'The shop confirmed your order.');
      assert.ok(await orderRow(queued).locator('.note').isHidden(), 'no "queued" note left');
    }
    await waitStock(COFFEE, COFFEE.balance - 1);
  });

  await step('13-reload-keeps-orders', async () => {
    assert.equal(navigations, 1, 'no navigation before this step: statuses came live');
    await page.reload();
    await waitStatus(firstOrder, 'CANCELED');
    await waitStatus(queued, 'SUCCESSFUL');
    assert.equal(await page.locator('#orders li').count(), 4);
    await page.locator('#orders li[data-status="UNSUCCESSFUL"] .note',
      { hasText: 'Not enough stock for Cake.' }).waitFor();
  });

  await step('14-noscript', async () => {
    const ctx = await browser.newContext({ viewport: { width: 1100, height: 600 },
      javaScriptEnabled: false });
    const p = await ctx.newPage();
    p.setDefaultTimeout(STEP_MS);
    await p.goto(url);
    const msg = p.locator('noscript .noscript, p.noscript');
    await msg.first().waitFor();
    assert.match(await msg.first().textContent(), /This shop needs JavaScript/);
    assert.ok(await p.locator('main').isHidden(), 'no dead catalog, cart or "Loading…"');
    return p;
  });

  await step('15-narrow-screen', async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    await product(TEA).locator('button.add').waitFor();
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
