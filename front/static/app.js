// The storefront: catalog, cart, ordering, and this browser's orders with
// their live status. Talks only to the front's JSON API and to its
// Server-Sent-Events stream (GET /events); falls back to polling
// GET /order/{id} and GET /inventory while the stream is down.
// No framework, no build step: a module the front serves as is.
//
// What the API's answers mean here (DESIGN.md, "HTTP API (front)"):
// - POST /order 201: the order service has the order (shown as Pending
//   until its outcome arrives). 202: only queued at the broker (shown as
//   Queued); the page follows it like any other order, and re-POSTs with
//   the same Idempotency-Key if GET /order/{id} keeps answering 404.
// - DELETE /order/{id} 200 (the order, canceled) or 202 (cancel queued):
//   both are accepted cancels; the status then arrives like any other.
// - Errors: the page turns codes and field names into sentences that name
//   products, never ids or raw server text.

const STORE_KEY = 'webshop.orders.v1';
const MAX_KEPT = 50;          // orders remembered in localStorage
const MAX_WATCHED = 20;       // the front's limit of ids per stream
// An order's limits come from the contract (proto/webshop/v1/order.proto),
// read at start from the OpenAPI document the front generates from it
// (loadLimits); until then, and if it cannot be read, the cart holds no
// limit of its own and the front's 400 answers hold it to theirs.
const POLL_MS = 2000;         // polling period while the stream is down
const REOPEN_MS = 10000;      // retry a refused stream after this long
const QUEUED_CHECK_MS = 3000; // how often a queued order is looked up
const REPOST_AFTER_MS = 10000; // re-POST a queued order still unknown after this
const REPOST_MAX_MS = 60000;  // ... doubling up to this
const FINAL = new Set(['UNSUCCESSFUL', 'CANCELED']);
const RANK = {
  QUEUED: 0, SENDING: 0, UNKNOWN: 0, PENDING: 1, SUCCESSFUL: 2, UNSUCCESSFUL: 2, CANCELED: 3,
};
const LABEL = {
  QUEUED: 'Queued', SENDING: 'Sending', PENDING: 'Pending', SUCCESSFUL: 'Successful',
  UNSUCCESSFUL: 'Unsuccessful', CANCELED: 'Canceled', UNKNOWN: 'Unknown',
};

const money = new Intl.NumberFormat('en', { style: 'currency', currency: 'EUR' });
const clock = new Intl.DateTimeFormat('en', {
  hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23',
});
const $ = (id) => document.getElementById(id);

const state = {
  products: new Map(),  // id -> {id, name, price, balance}
  cart: new Map(),      // product id -> count (insertion order = display order)
  notes: new Map(),     // product id -> the message shown under it
  orders: loadOrders(), // newest first: {id, items, status, reason, created, key, ...}
  maxItems: Infinity,   // products per order: the contract's, from /openapi.json
  maxCount: Infinity,   // units per product: the contract's; lowered when the
                        // front says its limit is lower
  key: null,            // {key, items}: the Idempotency-Key of the cart's order
  placing: false,
  lastPlaced: '',       // the order this page placed last
  errorFrom: '',        // what showed the current error (so only it clears it)
  stream: null,         // the EventSource, or null
  streamKey: '',        // the ids the stream watches
  streamOpen: false,
  pollTimer: 0,
  reopenTimer: 0,
  queuedTimer: 0,
  catalogTimer: 0,
};

// ---- storage -------------------------------------------------------------

function loadOrders() {
  try {
    const v = JSON.parse(localStorage.getItem(STORE_KEY) || '[]');
    return Array.isArray(v) ? v.filter((o) => o && typeof o.id === 'string') : [];
  } catch {
    return [];
  }
}

function saveOrders() {
  state.orders = state.orders.slice(0, MAX_KEPT);
  try {
    localStorage.setItem(STORE_KEY, JSON.stringify(state.orders));
  } catch {
    // Storage full or disabled: the list lives for this page only.
  }
}

// ---- talking to the front --------------------------------------------------

// A refused or failed request: status 0 when the shop could not be reached;
// body is the front's {"code", "message"} when it sent one.
class ApiError extends Error {
  constructor(status, body, retryAfter) {
    super(`HTTP ${status}`);
    this.status = status;
    this.body = body || {};
    this.retryAfter = retryAfter;
  }
}

// One request; resolves to {status, body, location} for a 2xx answer.
async function request(path, options = {}) {
  let resp;
  try {
    resp = await fetch(path, {
      ...options, headers: { Accept: 'application/json', ...(options.headers || {}) },
    });
  } catch {
    throw new ApiError(0, null, 0);
  }
  let body = null;
  try {
    body = resp.status === 204 ? null : await resp.json();
  } catch {
    // Not JSON (e.g. a proxy's page): only the status counts.
  }
  if (!resp.ok) {
    const retry = Number.parseInt(resp.headers.get('Retry-After') || '', 10);
    throw new ApiError(resp.status, body, Number.isInteger(retry) ? retry : 0);
  }
  return { status: resp.status, body, location: resp.headers.get('Location') || '' };
}

// ---- messages in shop words --------------------------------------------------

function showError(text, from = '') {
  const el = $('error');
  el.textContent = text;
  el.hidden = !text;
  state.errorFrom = text ? from : '';
}

// Clear the error only if `from` showed it.
function clearError(from) {
  if (state.errorFrom === from) {
    showError('');
  }
}

function productName(id, items) {
  const p = state.products.get(id);
  if (p) {
    return p.name;
  }
  const it = (items || []).find((x) => (x.inventoryId ?? x.inventory_id) === id);
  return it && it.name ? it.name : `product ${id}`;
}

// The shop is down, busy, or unreachable: say so and when to try again.
function unavailableText(what, e) {
  if (e.status === 0) {
    return `${what}: the shop cannot be reached. Check your connection and try again.`;
  }
  const when = e.retryAfter > 0
    ? `in ${e.retryAfter} second${e.retryAfter === 1 ? '' : 's'}` : 'in a moment';
  if (e.status === 429 || e.status >= 500) {
    return `${what}: the shop is busy or part of it is down. Please try again ${when}.`;
  }
  return `${what}: something went wrong at the shop. Please try again ${when}.`;
}

// A 400 from POST /order names the field ("items[1].count: must be between
// 1 and 1000, got 1200"); say it with the product's name.
function invalidOrderText(message, items) {
  let m = /^items\[(\d+)\]\.count: must be between 1 and (\d+)/.exec(message);
  if (m) {
    const it = items[Number(m[1])];
    const name = productName(it?.inventoryId, items);
    const limit = Number(m[2]);
    if (limit >= 1 && limit < state.maxCount) {
      // The front is stricter than this page knew: hold the cart to it.
      state.maxCount = limit;
      clampCart();
      renderCart();
      renderCatalog();
      if (state.cart.get(it?.inventoryId) === limit) {
        return `You can order at most ${limit} of ${name}. ` +
          `Your cart now holds ${limit}; check it and place the order again.`;
      }
    }
    return `You can order at most ${limit} of ${name}. ` +
      'Lower the quantity in your cart and place the order again.';
  }
  m = /^items\[(\d+)\]\.inventory_id/.exec(message);
  if (m) {
    const it = items[Number(m[1])];
    return `${productName(it?.inventoryId, items)} is not sold here. Remove it from your cart.`;
  }
  m = /^items: at most (\d+) items/.exec(message);
  if (m) {
    return `An order can hold at most ${m[1]} different products. Remove some from your cart.`;
  }
  if (/^items: at least one/.test(message)) {
    return 'Your cart is empty: add a product first.';
  }
  return 'The shop could not take this order. Check the quantities in your cart and try again.';
}

function orderRefusalText(e, items) {
  if (e.status === 400) {
    return invalidOrderText(e.body.message || '', items);
  }
  if (e.status === 413) {
    return 'This order is too large for the shop. Remove some products and try again.';
  }
  if (e.status === 422) {
    return 'This order had already been placed with other products. ' +
      'Press "Place order" again to place your cart as a new order.';
  }
  return `${unavailableText('Your order was not placed', e)} Trying again never orders twice.`;
}

function cancelRefusalText(e) {
  if (e.status === 404) {
    return 'The shop has not confirmed this order yet, so it cannot be canceled yet. ' +
      'Please try again in a moment.';
  }
  if (e.status === 400 || e.status === 409 || e.status === 422) {
    return 'This order can no longer be canceled.';
  }
  return unavailableText('The order was not canceled', e);
}

// Why an order is UNSUCCESSFUL, from the inventory's reason text.
function reasonText(o) {
  const r = o.reason || '';
  let m = /not enough stock for product (\d+)/.exec(r);
  if (m) {
    return `Not enough stock for ${productName(Number(m[1]), o.items)}.`;
  }
  m = /unknown product (\d+)/.exec(r);
  if (m) {
    return `${productName(Number(m[1]), o.items)} is not sold here.`;
  }
  m = /invalid count for product (\d+)/.exec(r);
  if (m) {
    return `The quantity of ${productName(Number(m[1]), o.items)} was not accepted.`;
  }
  if (/too many items/.test(r)) {
    return 'The order had too many different products.';
  }
  return 'The shop could not fill this order.';
}

// ---- catalog -------------------------------------------------------------

async function loadCatalog() {
  clearTimeout(state.catalogTimer);
  let list;
  try {
    list = (await request('/inventory')).body;
  } catch (e) {
    if (state.products.size === 0) {
      $('catalog-loading').textContent = 'The catalog cannot be loaded right now.';
      showError(unavailableText('The catalog could not be loaded', e), 'catalog');
      state.catalogTimer = setTimeout(loadCatalog, REOPEN_MS);
    }
    return; // otherwise keep showing the last catalog
  }
  state.products = new Map((Array.isArray(list) ? list : []).map((p) => [p.id, p]));
  $('catalog-loading').hidden = true;
  clearError('catalog');
  clampCart();
  renderCatalog();
  renderCart();
  renderOrders();
}

// The most units of p the cart may hold: what is in stock, within the limit.
function limitFor(p) {
  return p ? Math.max(0, Math.min(p.balance, state.maxCount)) : 0;
}

function stockText(p) {
  const inCart = state.cart.get(p.id) || 0;
  const stock = p.balance > 0 ? `${p.balance} in stock` : 'Out of stock';
  return inCart > 0 ? `${stock} · ${inCart} in your cart` : stock;
}

function productRow(p) {
  const li = document.createElement('li');
  li.dataset.productId = String(p.id);
  const name = document.createElement('span');
  name.className = 'name';
  const price = document.createElement('span');
  price.className = 'price';
  const stock = document.createElement('span');
  stock.className = 'stock';
  stock.id = `stock-${p.id}`;
  const qty = document.createElement('span');
  qty.className = 'qty';
  const label = document.createElement('label');
  const input = document.createElement('input');
  input.type = 'number';
  input.min = '1';
  input.value = '1';
  input.id = `qty-${p.id}`;
  input.inputMode = 'numeric';
  label.htmlFor = input.id;
  const note = document.createElement('p');
  note.className = 'note';
  note.id = `note-${p.id}`;
  note.tabIndex = -1;
  note.setAttribute('aria-live', 'polite');
  input.setAttribute('aria-describedby', `${stock.id} ${note.id}`);
  qty.append(label, input);
  const add = document.createElement('button');
  add.type = 'button';
  add.className = 'add';
  add.textContent = 'Add to cart';
  add.setAttribute('aria-describedby', `${stock.id} ${note.id}`);
  add.addEventListener('click', () => addToCart(p.id, input));
  input.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !add.disabled) {
      addToCart(p.id, input);
    }
  });
  li.append(name, price, stock, qty, add, note);
  return li;
}

function renderCatalog() {
  const ul = $('catalog');
  for (const p of state.products.values()) {
    let li = ul.querySelector(`li[data-product-id="${p.id}"]`);
    if (!li) {
      li = productRow(p);
      ul.append(li);
    }
    li.querySelector('.name').textContent = p.name;
    li.querySelector('.price').textContent = money.format(p.price / 100);
    const stock = li.querySelector('.stock');
    stock.textContent = stockText(p);
    stock.classList.toggle('out', p.balance <= 0);
    // "Quantity of Coffee": the visible "Quantity" plus the product's name.
    const label = li.querySelector('label');
    label.replaceChildren('Quantity', Object.assign(document.createElement('span'), {
      className: 'vh', textContent: ` of ${p.name}`,
    }));
    const room = limitFor(p) - (state.cart.get(p.id) || 0);
    const input = li.querySelector('input');
    const add = li.querySelector('button.add');
    const focused = document.activeElement;
    input.max = String(Math.max(1, room));
    input.disabled = room <= 0;
    add.disabled = room <= 0;
    add.setAttribute('aria-label', `Add ${p.name} to the cart`);
    const note = li.querySelector('.note');
    note.textContent = state.notes.get(p.id) || fullText(p, room);
    note.hidden = !note.textContent;
    if ((focused === add || focused === input) && room <= 0) {
      // The control just became disabled: keep the focus, on why.
      if (note.hidden) {
        note.textContent = `${p.name} is out of stock now.`;
        note.hidden = false;
      }
      note.focus();
    }
  }
}

// Why a product in stock cannot be added any more ('' when it can).
function fullText(p, room) {
  if (room > 0 || p.balance <= 0) {
    return '';
  }
  return p.balance <= state.maxCount
    ? `All ${p.balance} ${p.name} in stock are in your cart.`
    : `Your cart holds the most you can order of ${p.name} (${state.maxCount}).`;
}

// What to say when the cart was held to limitFor(p) units of p.
function heldText(p, holds) {
  return p.balance <= state.maxCount
    ? `Only ${p.balance} ${p.name} in stock: your cart now holds ${holds}.`
    : `You can order at most ${state.maxCount} of ${p.name}: your cart now holds ${holds}.`;
}

// ---- cart ----------------------------------------------------------------

// A whole number >= 1 typed into a quantity field, or NaN.
function parseCount(text) {
  const t = String(text).trim();
  return /^\d{1,7}$/.test(t) && Number(t) >= 1 ? Number(t) : Number.NaN;
}

function addToCart(id, input) {
  const p = state.products.get(id);
  if (!p) {
    return;
  }
  const have = state.cart.get(id) || 0;
  const room = limitFor(p) - have;
  const n = parseCount(input.value);
  state.notes.delete(id);
  if (Number.isNaN(n)) {
    state.notes.set(id, `Enter how many ${p.name} you want: a whole number from 1 to ${Math.max(1, room)}.`);
    renderCatalog();
    input.focus();
    return;
  }
  if (!state.cart.has(id) && state.cart.size >= state.maxItems) {
    state.notes.set(id, `An order can hold at most ${state.maxItems} different products.`);
    renderCatalog();
    return;
  }
  if (room <= 0) {
    renderCatalog();
    return;
  }
  const added = Math.min(n, room);
  state.cart.set(id, have + added);
  if (added < n) {
    state.notes.set(id, heldText(p, have + added));
  }
  input.value = '1';
  keyChanged();
  renderCart();
  renderCatalog();
  $('place-status').textContent = `Added ${added} × ${p.name}.`;
}

// Keep every cart line within limitFor(): stock fell, or the limit did.
function clampCart() {
  const said = [];
  for (const [id, count] of [...state.cart]) {
    const p = state.products.get(id);
    if (!p) {
      continue;
    }
    const limit = limitFor(p);
    if (limit <= 0) {
      state.cart.delete(id);
      state.notes.delete(id);
      said.push(`${p.name} is now out of stock and was removed from your cart.`);
    } else if (count > limit) {
      state.cart.set(id, limit);
      state.notes.set(id, heldText(p, limit));
      said.push(heldText(p, limit));
    }
  }
  if (said.length) {
    keyChanged();
    $('place-status').textContent = said.join(' ');
  }
}

function cartRow(id) {
  const li = document.createElement('li');
  li.dataset.productId = String(id);
  const name = document.createElement('span');
  name.className = 'name';
  const label = document.createElement('label');
  label.className = 'vh';
  const input = document.createElement('input');
  input.type = 'number';
  input.min = '1';
  input.id = `cart-qty-${id}`;
  input.inputMode = 'numeric';
  label.htmlFor = input.id;
  input.addEventListener('change', () => setCartCount(id, input));
  const sum = document.createElement('span');
  sum.className = 'price';
  const rm = document.createElement('button');
  rm.type = 'button';
  rm.className = 'remove';
  rm.textContent = 'Remove';
  rm.addEventListener('click', () => removeFromCart(id));
  li.append(name, label, input, sum, rm);
  return li;
}

function renderCart() {
  const ul = $('cart');
  let total = 0;
  let index = 0;
  for (const [id, count] of state.cart) {
    const p = state.products.get(id);
    const name = productName(id);
    total += p ? p.price * count : 0;
    let li = ul.querySelector(`li[data-product-id="${id}"]`);
    if (!li) {
      li = cartRow(id);
    }
    if (ul.children[index] !== li) {
      ul.insertBefore(li, ul.children[index] || null);
    }
    index++;
    li.querySelector('.name').textContent = name;
    li.querySelector('label').textContent = `Quantity of ${name} in the cart`;
    const input = li.querySelector('input');
    input.max = String(Math.max(1, limitFor(p)));
    if (document.activeElement !== input || parseCount(input.value) !== count) {
      input.value = String(count);
    }
    li.querySelector('.price').textContent = p ? money.format((p.price * count) / 100) : '';
    li.querySelector('button.remove').setAttribute('aria-label', `Remove ${name} from the cart`);
  }
  for (const li of [...ul.children]) {
    if (!state.cart.has(Number(li.dataset.productId))) {
      li.remove();
    }
  }
  $('cart-empty').hidden = state.cart.size > 0;
  $('cart-total').textContent = money.format(total / 100);
  // While placing, the button stays focusable (aria-disabled, clicks
  // ignored): a disabled focused button would drop the keyboard focus.
  $('place').disabled = state.cart.size === 0;
  $('place').setAttribute('aria-disabled', String(state.placing));
}

function setCartCount(id, input) {
  const p = state.products.get(id);
  const n = parseCount(input.value);
  const name = productName(id);
  if (Number.isNaN(n)) {
    input.value = String(state.cart.get(id) || 1);
    $('place-status').textContent =
      `Enter a whole number from 1 to ${Math.max(1, limitFor(p))} for ${name}, or remove it.`;
    return;
  }
  const held = p ? Math.min(n, limitFor(p)) : n;
  state.cart.set(id, held);
  if (held < n) {
    state.notes.set(id, heldText(p, held));
  } else {
    state.notes.delete(id);
  }
  $('place-status').textContent = held < n ? heldText(p, held) : `Your cart holds ${held} × ${name}.`;
  keyChanged();
  renderCart();
  renderCatalog();
}

// Remove a line; focus goes to the line that took its place, or to the
// cart's heading once the cart is empty (never to a disabled button).
function removeFromCart(id) {
  const ids = [...state.cart.keys()];
  const at = ids.indexOf(id);
  const name = productName(id);
  state.cart.delete(id);
  state.notes.delete(id);
  keyChanged();
  renderCart();
  renderCatalog();
  const rows = $('cart').querySelectorAll('button.remove');
  if (rows.length > 0) {
    rows[Math.min(at, rows.length - 1)].focus();
    $('place-status').textContent = `Removed ${name} from the cart.`;
  } else {
    $('cart-title').focus();
    $('place-status').textContent = `Removed ${name}. Your cart is empty.`;
  }
}

// ---- placing an order ------------------------------------------------------

function cartItems() {
  return [...state.cart].map(([inventoryId, count]) => ({
    inventoryId, count, name: productName(inventoryId),
  }));
}

function wireItems(items) {
  return JSON.stringify({ items: items.map(({ inventoryId, count }) => ({ inventoryId, count })) });
}

// The cart changed: its next order gets a new Idempotency-Key, and what
// was said about the last try no longer holds.
function keyChanged() {
  state.key = null;
  clearError('place');
}

// The same cart keeps its key across retries, so a retry after a timeout
// or a 503 names the same order: never a second one.
function keyFor(items) {
  const what = wireItems(items);
  if (!state.key || state.key.items !== what) {
    state.key = { key: crypto.randomUUID(), items: what };
  }
  return state.key.key;
}

function postOrder(items, key) {
  return request('/order', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'Idempotency-Key': key },
    body: wireItems(items),
  });
}

// The order's id from a 201/202 answer: the body, else the Location.
function acceptedId(r) {
  const b = r.body || {};
  const id = b.order_id || b.orderId || b.id || r.location.split('/').pop() || '';
  return String(id).toLowerCase();
}

// The status a 201/202 answer stands for.
function acceptedStatus(r) {
  if (r.status === 202) {
    return 'QUEUED';
  }
  const s = r.body && r.body.status;
  return RANK[s] > 0 ? s : 'PENDING';
}

async function placeOrder() {
  if (state.cart.size === 0 || state.placing) {
    return;
  }
  const items = cartItems();
  const key = keyFor(items);
  state.placing = true;
  renderCart();
  $('place-status').textContent = 'Placing the order…';
  let r;
  try {
    r = await postOrder(items, key);
  } catch (e) {
    state.placing = false;
    if (e.status === 400 || e.status === 413 || e.status === 422) {
      keyChanged(); // nothing was recorded under it (422: it names another order)
    }
    showError(orderRefusalText(e, items), 'place');
    $('place-status').textContent = 'The order was not placed.';
    renderCart();
    return;
  }
  state.placing = false;
  orderAccepted(r, items, key);
}

function orderAccepted(r, items, key) {
  const id = acceptedId(r);
  const status = acceptedStatus(r);
  const now = Date.now();
  state.orders = state.orders.filter((o) => o.id !== id); // a retry: the same order
  state.orders.unshift({
    id, items, status, reason: '', created: now, key: status === 'QUEUED' ? key : '',
    sentAt: now, repostMs: REPOST_AFTER_MS,
  });
  saveOrders();
  state.lastPlaced = id;
  clearError('place');
  state.cart.clear();
  state.notes.clear();
  keyChanged();
  renderCart();
  renderCatalog();
  renderOrders();
  $('place-status').textContent = status === 'QUEUED'
    ? 'Your order is queued: the shop has it and will confirm it shortly. Its status updates below.'
    : 'Order placed. Its status updates below.';
  $('orders-title').focus();
  watch();
  followQueued();
}

// ---- orders --------------------------------------------------------------

function itemsText(items) {
  return (items || []).map((it) => {
    const id = it.inventoryId ?? it.inventory_id;
    return `${it.count} × ${productName(id, items)}`;
  }).join(', ');
}

// "Cancel order: 2 × Coffee, 1 × Tea"; orders with the same contents also
// get their time, then a number, so that every button's name is unique.
function cancelLabels() {
  const base = state.orders.map((o) => {
    const what = itemsText(o.items);
    return what ? `Cancel order: ${what}` : 'Cancel order';
  });
  const count = (list, s) => list.filter((x) => x === s).length;
  const timed = base.map((b, i) => (count(base, b) > 1
    ? `${b}, placed at ${clock.format(state.orders[i].created || 0)}` : b));
  return timed.map((t, i) => {
    if (count(timed, t) === 1) {
      return t;
    }
    const older = timed.slice(i + 1).filter((x) => x === t).length;
    return `${t}, number ${older + 1}`;
  });
}

function orderRow(o) {
  const li = document.createElement('li');
  li.dataset.orderId = o.id;
  const what = document.createElement('span');
  what.className = 'what';
  const when = document.createElement('span');
  when.className = 'when';
  const badge = document.createElement('span');
  badge.setAttribute('role', 'status');
  const cancel = document.createElement('button');
  cancel.type = 'button';
  cancel.className = 'cancel';
  cancel.textContent = 'Cancel';
  cancel.addEventListener('click', () => cancelOrder(o.id, cancel));
  const id = document.createElement('span');
  id.className = 'id';
  id.textContent = `Order number ${o.id}`;
  const note = document.createElement('p');
  note.className = 'note';
  li.append(what, when, badge, cancel, id, note);
  return li;
}

function orderNote(o) {
  if (o.status === 'UNSUCCESSFUL') {
    return reasonText(o);
  }
  if (o.note && !FINAL.has(o.status)) {
    return o.note;
  }
  return o.status === 'QUEUED' ? 'The shop has your order and will confirm it shortly.' : '';
}

function renderOrders() {
  const ul = $('orders');
  const labels = cancelLabels();
  const seen = new Set();
  state.orders.forEach((o, index) => {
    seen.add(o.id);
    let li = ul.querySelector(`li[data-order-id="${o.id}"]`);
    if (!li) {
      li = orderRow(o);
    }
    if (ul.children[index] !== li) {
      ul.insertBefore(li, ul.children[index] || null);
    }
    li.querySelector('.what').textContent = itemsText(o.items) || 'Order';
    li.querySelector('.when').textContent = o.created ? `Placed ${clock.format(o.created)}` : '';
    const badge = li.querySelector('[role="status"]');
    badge.className = `badge ${o.status}`;
    badge.textContent = LABEL[o.status] || o.status;
    li.dataset.status = o.status;
    const note = li.querySelector('.note');
    note.textContent = orderNote(o);
    note.hidden = !note.textContent;
    note.classList.toggle('bad', o.status === 'UNSUCCESSFUL');
    const cancel = li.querySelector('button.cancel');
    cancel.setAttribute('aria-label', labels[index]);
    const hadFocus = document.activeElement === cancel;
    cancel.hidden = FINAL.has(o.status);
    if (hadFocus && cancel.hidden) {
      li.tabIndex = -1;
      li.focus(); // the order just canceled, not the top of the page
    }
  });
  for (const li of [...ul.children]) {
    if (!seen.has(li.dataset.orderId)) {
      li.remove();
    }
  }
  $('orders-empty').hidden = state.orders.length > 0;
}

// Apply a status seen on the stream, by polling or in an answer; never
// move backwards.
function applyStatus(id, status, reason) {
  const o = state.orders.find((x) => x.id === id);
  if (!o || !(status in RANK) || RANK[status] <= (RANK[o.status] ?? 0)) {
    return false;
  }
  if (o.status === 'QUEUED' && id === state.lastPlaced) {
    $('place-status').textContent = 'The shop confirmed your order.';
  }
  o.status = status;
  o.reason = reason || '';
  if (RANK[status] > 0) {
    o.key = ''; // the order service has it: no re-POST any more
  }
  if (FINAL.has(status)) {
    o.note = '';
  }
  saveOrders();
  renderOrders();
  return true;
}

async function cancelOrder(id, button) {
  const o = state.orders.find((x) => x.id === id);
  if (button.getAttribute('aria-disabled') === 'true') {
    return; // a cancel of this order is on its way
  }
  button.setAttribute('aria-disabled', 'true');
  let r;
  try {
    r = await request(`/order/${encodeURIComponent(id)}`, { method: 'DELETE' });
  } catch (e) {
    showError(cancelRefusalText(e), 'cancel');
    return;
  } finally {
    button.setAttribute('aria-disabled', 'false');
  }
  clearError('cancel');
  // 200: the cancel is committed and the body is the order; 202: queued,
  // its status arrives like any other. The stream may have been faster.
  const b = r.body || {};
  if (!(r.status === 200 && applyStatus(id, b.status, b.reason)) && o && !FINAL.has(o.status)) {
    o.note = 'Cancel requested.';
    saveOrders();
    renderOrders();
  }
  watch();
}

// ---- following queued orders ----------------------------------------------

function scheduleQueued() {
  if (!state.queuedTimer && state.orders.some((o) => o.status === 'QUEUED')) {
    state.queuedTimer = setTimeout(followQueued, QUEUED_CHECK_MS);
  }
}

// Look each queued order up; one that stays unknown (404) is re-POSTed
// with its Idempotency-Key, as the API asks, at growing intervals.
async function followQueued() {
  clearTimeout(state.queuedTimer);
  state.queuedTimer = 0;
  for (const o of state.orders.filter((x) => x.status === 'QUEUED')) {
    try {
      const r = await request(`/order/${encodeURIComponent(o.id)}`);
      if (applyStatus(o.id, r.body.status, r.body.reason)) {
        loadCatalog();
      }
    } catch (e) {
      if (e.status === 404) {
        await repost(o);
      }
    }
  }
  scheduleQueued();
}

async function repost(o) {
  if (!o.key || Date.now() - (o.sentAt || 0) < (o.repostMs || REPOST_AFTER_MS)) {
    return;
  }
  o.sentAt = Date.now();
  o.repostMs = Math.min((o.repostMs || REPOST_AFTER_MS) * 2, REPOST_MAX_MS);
  saveOrders();
  try {
    const r = await postOrder(o.items, o.key);
    applyStatus(o.id, acceptedStatus(r), '');
  } catch (e) {
    if (e.status === 400 || e.status === 422) {
      o.key = '';
      o.note = 'The shop did not take this order. Please place it again.';
      saveOrders();
      renderOrders();
    }
  }
}

// ---- live status ---------------------------------------------------------

function liveIds() {
  return state.orders.filter((o) => !FINAL.has(o.status)).slice(0, MAX_WATCHED).map((o) => o.id);
}

function setConnection(text) {
  $('connection').textContent = text;
}

// Open (or re-open) the one stream of this page: the live orders' status
// and every stock change. An order that became final stays on the open
// stream (harmless): re-opening only for new ids keeps the stock changes
// that follow a cancel from falling into the gap between two streams.
function watch() {
  const ids = liveIds();
  const watched = new Set(state.streamKey.split(','));
  if (state.stream && state.stream.readyState !== EventSource.CLOSED &&
      ids.every((id) => watched.has(id))) {
    return;
  }
  closeStream();
  clearTimeout(state.reopenTimer);
  state.streamKey = ids.join(',');
  const es = new EventSource(`/events?stock=true${ids.length ? `&orders=${ids.join(',')}` : ''}`);
  state.stream = es;
  es.addEventListener('open', () => {
    state.streamOpen = true;
    setConnection('Live updates on');
    stopPolling();
    loadCatalog(); // catch up on stock changes missed while down
  });
  es.addEventListener('status', (ev) => {
    const m = JSON.parse(ev.data);
    if (applyStatus(m.order_id, m.status, m.reason)) {
      loadCatalog();
    }
  });
  es.addEventListener('stock', (ev) => {
    const m = JSON.parse(ev.data);
    const p = state.products.get(m.product_id);
    if (p) {
      p.balance = m.balance;
      clampCart();
      renderCatalog();
      renderCart();
    }
  });
  es.addEventListener('end', () => {
    closeStream();
    watch();
  });
  es.addEventListener('error', () => streamFailed(es));
}

function streamFailed(es) {
  state.streamOpen = false;
  setConnection('Live updates interrupted; checking every few seconds');
  startPolling();
  if (es.readyState === EventSource.CLOSED) {
    // Refused (e.g. 503: too many streams, or the order service is down):
    // try again later; polling covers the gap.
    if (state.stream === es) {
      state.stream = null;
    }
    clearTimeout(state.reopenTimer);
    state.reopenTimer = setTimeout(watch, REOPEN_MS);
  }
}

function closeStream() {
  if (state.stream) {
    state.stream.close();
    state.stream = null;
  }
  state.streamOpen = false;
}

function startPolling() {
  if (!state.pollTimer) {
    state.pollTimer = setInterval(poll, POLL_MS);
    poll();
  }
}

function stopPolling() {
  clearInterval(state.pollTimer);
  state.pollTimer = 0;
}

async function poll() {
  let changed = false;
  const ids = liveIds().filter((id) => state.orders.find((o) => o.id === id)?.status !== 'QUEUED');
  for (const id of ids) {
    try {
      const r = await request(`/order/${encodeURIComponent(id)}`);
      changed = applyStatus(id, r.body.status, r.body.reason) || changed;
    } catch (e) {
      if (e.status !== 404) { // 404: the order service has not heard of it yet
        setConnection(e.status === 0
          ? 'The shop cannot be reached; retrying'
          : 'Order status is not available right now; retrying');
        return;
      }
    }
  }
  await loadCatalog();
  if (changed) {
    watch();
  }
}

// ---- start ---------------------------------------------------------------

// The contract's limits of an order (items per order, units per item), as
// the front's OpenAPI document states them (maxItems of PlaceOrderRequest's
// items, maximum of OrderItem.count). Keeps what it has when the document
// cannot be read.
async function loadLimits() {
  try {
    const resp = await fetch('/openapi.json', { headers: { Accept: 'application/json' } });
    if (!resp.ok) {
      return;
    }
    const schemas = (await resp.json())?.components?.schemas ?? {};
    const items = schemas.PlaceOrderRequest?.properties?.items?.maxItems;
    const count = schemas.OrderItem?.properties?.count?.maximum;
    if (Number.isInteger(items) && items >= 1) {
      state.maxItems = items;
    }
    if (Number.isInteger(count) && count >= 1 && count < state.maxCount) {
      state.maxCount = count;
      clampCart();
    }
    renderCart();
    renderCatalog();
  } catch {
    // No document: the front's answers still hold the cart to its limits.
  }
}

// Without JavaScript the shop stays hidden and <noscript> says why.
document.querySelector('main').hidden = false;
$('place').addEventListener('click', placeOrder);
setConnection('Connecting…');
$('catalog-loading').hidden = false;
renderCart();
renderOrders();
loadLimits();
loadCatalog();
watch();
followQueued();
