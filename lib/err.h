/*
 * The runtime's one error enum. Every adapter (errno, SQLite, libmosquitto,
 * nng, jansson) translates its library's codes into ws_err at its boundary,
 * so no library's codes leak into service code. The list lives in one table,
 * WS_ERR_MAP, from which both the enum and ws_strerror() are generated.
 */
#ifndef WS_ERR_H
#define WS_ERR_H

/* X(name, message) */
#define WS_ERR_MAP(X)                                                         \
    X(WS_OK, "success")                                                       \
    X(WS_ENOMEM, "out of memory")                                             \
    X(WS_EINVAL, "invalid argument")                                          \
    X(WS_ERANGE, "value out of range")                                        \
    X(WS_ETOOBIG, "message or value too large")                               \
    X(WS_EPARSE, "malformed input")                                           \
    X(WS_ENOTFOUND, "not found")                                              \
    X(WS_EEXIST, "already exists")                                            \
    X(WS_ETIMEDOUT, "timed out")                                              \
    X(WS_EUNAVAIL, "peer unavailable")                                        \
    X(WS_ECLOSED, "object closed")                                            \
    X(WS_EBUSY, "resource busy")                                              \
    X(WS_EIO, "input/output error")                                           \
    X(WS_ESTORE, "database error")                                            \
    X(WS_EPROTO, "protocol error")                                            \
    X(WS_EAUTH, "not authorized")                                             \
    X(WS_ECANCELED, "operation canceled")                                     \
    X(WS_EINTERNAL, "internal error")

typedef enum ws_err {
#define WS_ERR_ENUM(name, msg) name,
    WS_ERR_MAP(WS_ERR_ENUM)
#undef WS_ERR_ENUM
        WS_ERR__COUNT
} ws_err;

/* A static, human-readable message for err; never NULL, "unknown error" for
 * a value outside the enum. */
const char *ws_strerror(ws_err err);

/* The enum constant's name ("WS_ENOMEM"), for logs; never NULL. */
const char *ws_errname(ws_err err);

/* Translate an errno value into ws_err (ENOMEM -> WS_ENOMEM, ...). */
ws_err ws_err_from_errno(int errnum);

#endif
