/*
 * Private to lib/http*.c: the server's struct, the request being served,
 * the per-worker slot the guard watches, and the functions the files share
 * (ws__ prefix). Nothing outside lib/http*.c includes this.
 *
 *   http.c         options, civetweb callbacks, the request, routing
 *   http_strict.c  what a request must look like (framing, path, query)
 *   http_reply.c   answers, body reads, streams
 *   http_guard.c   worker slots, deadlines, the reserve (a watchdog thread)
 */
#ifndef WS_HTTP_INT_H
#define WS_HTTP_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "http.h"

struct mg_connection;
struct mg_request_info;

#define HTTP_MAX_ROUTES 32

/* civetweb's max_request_size: the request line and headers must fit. */
#define HTTP_MAX_REQUEST_HEAD 16384

typedef struct http_route {
    char uri[128];  /* without the trailing '$' */
    bool exact;     /* the pattern ended with '$' */
    char allow[64]; /* "" = the handler checks the method */
    ws_http_handler_fn fn;
    void *ctx;
} http_route;

/* What a worker's connection is doing, as the guard sees it. */
typedef enum http_slot_state {
    SLOT_NONE,    /* no connection */
    SLOT_WAITING, /* civetweb reads request line and headers (or idles) */
    SLOT_HANDLER, /* a handler runs (RPCs, waits: the server's time) */
    SLOT_BODY,    /* a handler reads the body (the client's time) */
    SLOT_STREAM,  /* a streamed answer (SSE): lives as long as allowed */
} http_slot_state;

/* One per worker thread (civetweb serves one connection per worker), from
 * init_thread to exit_thread. Fields marked [mu] are under ws_http.guard_mu;
 * the rest belong to the worker thread. */
typedef struct http_slot {
    ws_http *h;
    http_slot_state state; /* [mu] */
    double since;          /* [mu] monotonic seconds the state began */
    double deadline;       /* [mu] SLOT_BODY: when the body is due */
    unsigned gen;          /* [mu] bumped on each state change */
    bool cut;              /* [mu] the guard shut this connection's read side */
    bool first;            /* [mu] waiting for the connection's first request */
    bool admitted;         /* [mu] counted against its address's cap */
    bool refused;          /* [mu] over its address's cap: answered 503 or cut */
    int fd;                /* [mu] the socket, -1 until looked up */
    const struct mg_connection *conn; /* [mu] the worker's connection */
    char remote_addr[48];             /* [mu] peer identity, to find the socket */
    int remote_port;                  /* [mu] */
    int server_port;                  /* [mu] */
    ws_http_req *req;                 /* the request being answered, or NULL */
    struct http_slot *next;           /* [mu] h->slots list */
} http_slot;

/* The request being served; on the stack of begin_request (or of the
 * civetweb error callback). */
struct ws_http_req {
    struct mg_connection *conn;
    ws_http *h;
    http_slot *slot;    /* the worker's; NULL only if init_thread failed */
    const char *method; /* as sent */
    bool head;
    const char *query;        /* raw, or NULL */
    const char *remote_addr;  /* civetweb's text, or "" */
    long long content_length; /* -1: none (or chunked) */
    bool chunked;
    bool body_done; /* no body, or the handler read all of it */
    bool close;     /* answer with Connection: close */
    ws_trace trace; /* this server's span; trace_id[0] == 0: none */
    char path[WS_HTTP_PATH_MAX];
};

struct ws_http {
    struct mg_context *ctx; /* owned */
    int port;               /* bound port, read once at start */
    char host[64];          /* the address it listens on */
    bool tls;
    bool access_log;
    int threads;
    int request_timeout_ms;
    int keep_alive_ms;
    int body_timeout_ms;
    int reserve;
    int busy_grace_ms;
    int max_headers;
    int max_conns_per_addr;   /* 0 = no cap */
    char hsts[64];            /* "Strict-Transport-Security: ...\r\n" or "" */
    ws_metrics *metrics;      /* for ws_http_route_basics; not owned */
    bool (*ready)(void *ctx); /* for /readyz; NULL = always ready */
    void *ready_ctx;
    atomic_bool serving; /* set by ws_http_serve; until then every request is 503 */
    http_route routes[HTTP_MAX_ROUTES];
    atomic_int n_routes;

    /* The guard (http_guard.c). */
    pthread_mutex_t guard_mu;
    pthread_cond_t guard_cv;
    pthread_t guard_thread;
    bool guard_started;
    bool guard_stop;          /* [guard_mu] */
    http_slot *slots;         /* [guard_mu] every worker's slot */
    int busy;                 /* [guard_mu] slots with a connection */
    ws_counter *cut_total[4]; /* connections cut: idle, slow body, deadline,
                                 over the per-address cap */
};

/* ---- http_strict.c ------------------------------------------------------ */

/* Framing checks on the parsed request: header count, Content-Length,
 * Transfer-Encoding, Host, header names. 0 when acceptable, else the
 * status to answer (400, 431) with its error code and message. */
int ws__http_check_framing(const struct mg_request_info *ri, int max_headers,
                           const char **code, char *msg, size_t msg_len);

/* Decode raw (the path as sent) into out (out_len >= 2). 0 when it is an
 * acceptable path, else 400 or 414 with a message. */
int ws__http_decode_path(const char *raw, char *out, size_t out_len, char *msg,
                         size_t msg_len);

/* See ws_http_query_var. */
int ws__http_query_var(const char *qs, const char *name, char *out, size_t out_len);

/* Length of the longest prefix of s (n bytes) that is valid UTF-8, stopping
 * at the first invalid sequence. */
size_t ws__http_utf8_valid_prefix(const unsigned char *s, size_t n);

/* ---- http.c ------------------------------------------------------------- */

/* Fill the fields of r before path from conn (as far as civetweb parsed
 * it) and adopt its traceparent: r->trace is this server's span and the
 * thread's current trace until ws__http_req_end. */
void ws__http_req_begin(ws_http_req *r, struct mg_connection *conn);

/* The answer to r is out: the thread works for no trace any more. */
void ws__http_req_end(ws_http_req *r);

/* ---- http_reply.c ------------------------------------------------------- */

/* Answer one of civetweb's own errors (its http_error callback) as JSON
 * and close. */
void ws__http_reply_civetweb_error(struct mg_connection *conn, int status,
                                   const char *errmsg);

/* ---- http_guard.c ------------------------------------------------------- */

ws_err ws__http_guard_start(ws_http *h);
void ws__http_guard_stop(ws_http *h);

/* mg_stop(ctx) without civetweb's wait of up to 2 s for its master thread
 * (http_stop.c): host and port are where the server listens. */
struct mg_context;
void ws__http_stop(struct mg_context *ctx, const char *host, int port);
http_slot *ws__http_slot_new(ws_http *h);
void ws__http_slot_free(http_slot *s);
/* State changes, from the worker thread; s may be NULL. */
void ws__http_slot_connect(http_slot *s, const struct mg_connection *conn);
void ws__http_slot_set(http_slot *s, http_slot_state state);
void ws__http_slot_body(http_slot *s, int timeout_ms);
void ws__http_slot_disconnect(http_slot *s);
/* True when the guard cut s's connection (shut its read side). */
bool ws__http_slot_was_cut(http_slot *s);
/* True when s's connection is over its address's cap (decided once, the
 * first time its address is known); from the worker thread. */
bool ws__http_slot_refused(http_slot *s);
/* The seconds s has been in its current state. */
double ws__http_slot_age(http_slot *s);
bool ws__http_slot_first(http_slot *s);
/* Look up s's socket now, while its peer is connected (a streamed
 * answer calls this first, so ws_http_peer_gone sees a reset too). */
void ws__http_slot_find_socket(http_slot *s);
/* See ws_http_peer_gone. */
bool ws__http_slot_peer_gone(http_slot *s);
/* The bytes s's connection has received so far (TCP_INFO), -1 unknown. */
long long ws__http_slot_bytes_received(http_slot *s);

double ws__http_now(void);

#endif
