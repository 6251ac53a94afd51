// The storefront: catalog, cart, ordering, and this browser's orders with
// their live status. Talks only to the front's JSON API and to its
// Server-Sent-Events stream (GET /events); falls back to polling
// GET /order/{id} and GET /inventory while the stream is down.
// No framework, no build step: a module the front serves as is.

const STORE_KEY = 'webshop.orders.v1';
const MAX_KEPT = 50;          // orders remembered in localStorage
const MAX_WATCHED = 20;       // the front's limit of ids per stream
const POLL_MS = 2000;         // polling period while the stream is down
const REOPEN_MS = 10000;      // retry a refused stream after this long
const FINAL = new Set(['UNSUCCESSFUL', 'CANCELED']);
const RANK = { SENDING: 0, UNKNOWN: 0, PENDING: 1, SUCCESSFUL: 2, UNSUCCESSFUL: 2, CANCELED: 3 };
const LABEL = {
  SENDING: 'Sending', PENDING: 'Pending', SUCCESSFUL: 'Successful',
  UNSUCCESSFUL: 'Unsuccessful', CANCELED: 'Canceled', UNKNOWN: 'Unknown',
};

const money = new Intl.NumberFormat('en', { style: 'currency', currency: 'EUR' });
const $ = (id) => document.getElementById(id);

const state = {
  products: new Map(),  // id -> {id, name, price, balance}
  cart: new Map(),      // product id -> count
  orders: loadOrders(), // newest first: {id, items, status, reason, created}
  stream: null,         // the EventSource, or null
  streamKey: '',        // the ids the stream watches
  streamOpen: false,
  pollTimer: 0,
  reopenTimer: 0,
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

// ---- errors in words -----------------------------------------------------

function showError(text) {
  const el = $('error');
  el.textContent = text;
  el.hidden = !text;
}

// Turn a failed fetch into a sentence a person can act on.
async function describe(what, resp, err) {
  if (err) {
    return `${what}: the shop cannot be reached. Check your connection and try again.`;
  }
  let detail = `HTTP ${resp.status}`;
  try {
    const body = await resp.json();
    if (body && body.message) {
      detail = body.message;
    }
  } catch {
    // Not JSON: keep the status.
  }
  if (resp.status === 503 || resp.status === 504) {
    return `${what}: the shop is busy or a service is down (${detail}). Please try again in a moment.`;
  }
  return `${what}: ${detail}.`;
}

async function api(what, path, options = {}) {
  let resp;
  try {
    resp = await fetch(path, { ...options, headers: { Accept: 'application/json', ...(options.headers || {}) } });
  } catch (err) {
    throw new Error(await describe(what, null, err));
  }
  if (!resp.ok) {
    const e = new Error(await describe(what, resp, null));
    e.status = resp.status;
    throw e;
  }
  return resp.status === 204 ? null : resp.json();
}

// ---- catalog -------------------------------------------------------------

async function loadCatalog() {
  try {
    const list = await api('Loading the catalog', '/inventory');
    state.products = new Map(list.map((p) => [p.id, p]));
    $('catalog-loading').hidden = true;
    renderCatalog();
    renderCart();
  } catch (e) {
    $('catalog-loading').textContent = 'The catalog could not be loaded.';
    showError(e.message);
  }
}

function stockText(p) {
  return p.balance > 0 ? `${p.balance} in stock` : 'Out of stock';
}

function renderCatalog() {
  const ul = $('catalog');
  for (const p of state.products.values()) {
    let li = ul.querySelector(`li[data-product-id="${p.id}"]`);
    if (!li) {
      li = document.createElement('li');
      li.dataset.productId = String(p.id);
      const name = document.createElement('span');
      name.className = 'name';
      const price = document.createElement('span');
      price.className = 'price';
      const stock = document.createElement('span');
      stock.className = 'stock';
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
      label.textContent = 'Qty';
      qty.append(label, input);
      const add = document.createElement('button');
      add.type = 'button';
      add.className = 'add';
      add.addEventListener('click', () => addToCart(p.id, input));
      li.append(name, price, stock, qty, add);
      ul.append(li);
    }
    li.querySelector('.name').textContent = p.name;
    li.querySelector('.price').textContent = money.format(p.price / 100);
    const stock = li.querySelector('.stock');
    stock.textContent = stockText(p);
    stock.classList.toggle('out', p.balance <= 0);
    const add = li.querySelector('button.add');
    add.textContent = 'Add to cart';
    add.setAttribute('aria-label', `Add ${p.name} to the cart`);
  }
}

// ---- cart ----------------------------------------------------------------

function addToCart(id, input) {
  const n = Number.parseInt(input.value, 10);
  if (!Number.isInteger(n) || n < 1 || n > 1000) {
    showError('Quantity: enter a whole number from 1 to 1000.');
    input.focus();
    return;
  }
  showError('');
  state.cart.set(id, (state.cart.get(id) || 0) + n);
  renderCart();
  $('place-status').textContent = `Added ${n} × ${state.products.get(id)?.name ?? `product ${id}`}.`;
}

function renderCart() {
  const ul = $('cart');
  ul.replaceChildren();
  let total = 0;
  for (const [id, count] of state.cart) {
    const p = state.products.get(id);
    const name = p ? p.name : `Product ${id}`;
    total += p ? p.price * count : 0;
    const li = document.createElement('li');
    li.dataset.productId = String(id);
    const what = document.createElement('span');
    what.className = 'name';
    what.textContent = `${count} × ${name}`;
    const sum = document.createElement('span');
    sum.className = 'price';
    sum.textContent = p ? money.format((p.price * count) / 100) : '';
    const rm = document.createElement('button');
    rm.type = 'button';
    rm.textContent = 'Remove';
    rm.setAttribute('aria-label', `Remove ${name} from the cart`);
    rm.addEventListener('click', () => {
      state.cart.delete(id);
      renderCart();
      $('place').focus();
    });
    li.append(what, sum, rm);
    ul.append(li);
  }
  $('cart-empty').hidden = state.cart.size > 0;
  $('cart-total').textContent = money.format(total / 100);
  $('place').disabled = state.cart.size === 0;
}

async function placeOrder() {
  if (state.cart.size === 0) {
    return;
  }
  const button = $('place');
  button.disabled = true;
  $('place-status').textContent = 'Placing the order…';
  const items = [...state.cart].map(([inventoryId, count]) => ({ inventoryId, count }));
  // The same key on a retry names the same order: never a second one.
  const key = crypto.randomUUID();
  try {
    const body = await api('Placing the order', '/order', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'Idempotency-Key': key },
      body: JSON.stringify({ items }),
    });
    showError('');
    state.orders.unshift({ id: body.order_id, items, status: 'PENDING', reason: '', created: Date.now() });
    saveOrders();
    state.cart.clear();
    renderCart();
    renderOrders();
    $('place-status').textContent = 'Order placed. Its status updates below.';
    watch();
  } catch (e) {
    showError(e.message);
    $('place-status').textContent = 'The order was not placed.';
    button.disabled = false;
  }
}

// ---- orders --------------------------------------------------------------

function itemsText(items) {
  return (items || []).map((it) => {
    const id = it.inventoryId ?? it.inventory_id;
    const p = state.products.get(id);
    return `${it.count} × ${p ? p.name : `product ${id}`}`;
  }).join(', ');
}

function renderOrders() {
  const ul = $('orders');
  const seen = new Set();
  state.orders.forEach((o, index) => {
    seen.add(o.id);
    let li = ul.querySelector(`li[data-order-id="${o.id}"]`);
    if (!li) {
      li = document.createElement('li');
      li.dataset.orderId = o.id;
      const id = document.createElement('span');
      id.className = 'id';
      id.textContent = o.id;
      const what = document.createElement('span');
      what.className = 'what';
      const badge = document.createElement('span');
      badge.setAttribute('role', 'status');
      const cancel = document.createElement('button');
      cancel.type = 'button';
      cancel.className = 'cancel';
      cancel.textContent = 'Cancel';
      cancel.setAttribute('aria-label', `Cancel order ${o.id}`);
      cancel.addEventListener('click', () => cancelOrder(o.id, cancel));
      const reason = document.createElement('p');
      reason.className = 'reason';
      li.append(what, badge, cancel, id, reason);
    }
    if (ul.children[index] !== li) {
      ul.insertBefore(li, ul.children[index] || null);
    }
    li.querySelector('.what').textContent = itemsText(o.items);
    const badge = li.querySelector('[role="status"]');
    badge.className = `badge ${o.status}`;
    badge.textContent = LABEL[o.status] || o.status;
    li.dataset.status = o.status;
    const reason = li.querySelector('.reason');
    reason.textContent = o.reason ? `Reason: ${o.reason}` : '';
    reason.hidden = !o.reason;
    const cancel = li.querySelector('button.cancel');
    cancel.hidden = FINAL.has(o.status);
  });
  for (const li of [...ul.children]) {
    if (!seen.has(li.dataset.orderId)) {
      li.remove();
    }
  }
  $('orders-empty').hidden = state.orders.length > 0;
}

// Apply a status seen on the stream or by polling; never move backwards.
function applyStatus(id, status, reason) {
  const o = state.orders.find((x) => x.id === id);
  if (!o || (RANK[status] ?? 0) <= (RANK[o.status] ?? 0)) {
    return false;
  }
  o.status = status;
  o.reason = reason || '';
  saveOrders();
  renderOrders();
  return true;
}

async function cancelOrder(id, button) {
  button.disabled = true;
  try {
    await api('Canceling the order', `/order/${encodeURIComponent(id)}`, { method: 'DELETE' });
    showError('');
    $('place-status').textContent = 'Cancel requested.';
  } catch (e) {
    showError(e.message);
  } finally {
    button.disabled = false;
  }
  watch();
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
  const key = ids.join(',');
  const watched = new Set(state.streamKey.split(','));
  if (state.stream && state.stream.readyState !== EventSource.CLOSED &&
      ids.every((id) => watched.has(id))) {
    return;
  }
  closeStream();
  clearTimeout(state.reopenTimer);
  state.streamKey = key;
  const url = `/events?stock=true${ids.length ? `&orders=${ids.join(',')}` : ''}`;
  const es = new EventSource(url);
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
      renderCatalog();
    }
  });
  es.addEventListener('end', () => {
    closeStream();
    watch();
  });
  es.addEventListener('error', () => {
    state.streamOpen = false;
    setConnection('Live updates interrupted; checking every few seconds');
    startPolling();
    if (es.readyState === EventSource.CLOSED) {
      // Refused (e.g. 503: too many streams): try again later.
      state.stream = null;
      state.reopenTimer = setTimeout(watch, REOPEN_MS);
    }
  });
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
  for (const id of liveIds()) {
    try {
      const o = await api('Checking an order', `/order/${encodeURIComponent(id)}`);
      changed = applyStatus(o.id, o.status, o.reason) || changed;
    } catch (e) {
      if (e.status !== 404) { // 404: the order service has not heard of it yet
        setConnection('The shop cannot be reached; retrying');
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

$('place').addEventListener('click', placeOrder);
renderCart();
renderOrders();
loadCatalog().then(renderOrders);
watch();
