#include "trace.h"

#include <errno.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static _Thread_local ws_trace trace_cur;
static _Thread_local bool trace_cur_set;

static int hex_val(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    return -1;
}

/* n lower-case hex digits at s, not all zero (when nonzero is asked). */
static bool hex_field(const char *s, size_t n, bool nonzero)
{
    bool any = false;
    for (size_t i = 0; i < n; i++) {
        int v = hex_val(s[i]);
        if (v < 0) {
            return false;
        }
        any = any || v != 0;
    }
    return any || !nonzero;
}

bool ws_trace_parse(const char *s, size_t n, ws_trace *out)
{
    if (s == NULL || out == NULL || n < WS_TRACEPARENT_LEN) {
        return false;
    }
    if (!hex_field(s, 2, false) || s[2] != '-' || s[35] != '-' || s[52] != '-') {
        return false;
    }
    bool v00 = s[0] == '0' && s[1] == '0';
    if (s[0] == 'f' && s[1] == 'f') {
        return false;
    }
    if (v00 ? n != WS_TRACEPARENT_LEN : (n > WS_TRACEPARENT_LEN && s[55] != '-')) {
        return false;
    }
    if (!hex_field(s + 3, 32, true) || !hex_field(s + 36, 16, true) ||
        !hex_field(s + 53, 2, false)) {
        return false;
    }
    memcpy(out->trace_id, s + 3, 32);
    out->trace_id[32] = '\0';
    memcpy(out->span_id, s + 36, 16);
    out->span_id[16] = '\0';
    out->flags = (uint8_t)(hex_val(s[53]) * 16 + hex_val(s[54]));
    return true;
}

/* Random bytes from the kernel; should getrandom fail (it does not block
 * once the pool is ready, and it is ready long before a service runs), a
 * counter mixed with the clock still gives distinct ids. */
static void random_bytes(uint8_t *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = getrandom(p + got, n - got, GRND_NONBLOCK);
        if (r <= 0) {
            if (r < 0 && errno == EINTR) {
                continue;
            }
            break;
        }
        got += (size_t)r;
    }
    if (got < n) {
        static atomic_uint_fast64_t counter;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^
                     (atomic_fetch_add(&counter, 1) * 0x9e3779b97f4a7c15ULL);
        for (size_t i = got; i < n; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            p[i] = (uint8_t)x;
        }
    }
}

/* n <= 16 random bytes from a per-thread pool refilled 256 bytes at a
 * time: one getrandom(2) per ~20 ids instead of one per id (4 per GET
 * /order/{id} at the front: trace id, span id, the RPC's child span). */
static void random_pooled(uint8_t *p, size_t n)
{
    static _Thread_local uint8_t pool[256];
    static _Thread_local size_t left;
    if (left < n) {
        random_bytes(pool, sizeof(pool));
        left = sizeof(pool);
    }
    left -= n;
    memcpy(p, pool + left, n);
    memset(pool + left, 0, n); /* a byte is never handed out twice */
}

static void random_hex(char *out, size_t digits)
{
    static const char hex[] = "0123456789abcdef";
    uint8_t raw[16];
    size_t nbytes = digits / 2;
    do {
        random_pooled(raw, nbytes);
        for (size_t i = 0; i < nbytes; i++) {
            out[2 * i] = hex[raw[i] >> 4];
            out[2 * i + 1] = hex[raw[i] & 15];
        }
        out[digits] = '\0';
    } while (!hex_field(out, digits, true));
}

void ws_trace_new(ws_trace *out)
{
    random_hex(out->trace_id, 32);
    random_hex(out->span_id, 16);
    out->flags = 1;
}

void ws_trace_child(const ws_trace *parent, ws_trace *out)
{
    ws_trace t = *parent;
    random_hex(t.span_id, 16);
    *out = t;
}

void ws_trace_format(const ws_trace *t, char out[WS_TRACEPARENT_SIZE])
{
    static const char hex[] = "0123456789abcdef";
    memcpy(out, "00-", 3);
    memcpy(out + 3, t->trace_id, 32);
    out[35] = '-';
    memcpy(out + 36, t->span_id, 16);
    out[52] = '-';
    out[53] = hex[t->flags >> 4];
    out[54] = hex[t->flags & 15];
    out[55] = '\0';
}

const ws_trace *ws_trace_current(void)
{
    return trace_cur_set ? &trace_cur : NULL;
}

void ws_trace_set_current(const ws_trace *t)
{
    if (t == NULL) {
        trace_cur_set = false;
        return;
    }
    trace_cur = *t;
    trace_cur_set = true;
}

void ws_trace_save(ws_trace_saved *out)
{
    out->had = trace_cur_set;
    if (trace_cur_set) {
        out->trace = trace_cur;
    }
}

void ws_trace_restore(const ws_trace_saved *s)
{
    ws_trace_set_current(s->had ? &s->trace : NULL);
}

const ws_trace *ws_trace_adopt(const char *s, size_t n)
{
    ws_trace t;
    if (s == NULL || !ws_trace_parse(s, n, &t)) {
        ws_trace_new(&t);
    }
    ws_trace_set_current(&t);
    return &trace_cur;
}
