/*
 * ws_strerror() and friends, generated from the WS_ERR_MAP table in err.h.
 */
#include "err.h"

#include <errno.h>

static const char *const err_messages[] = {
#define WS_ERR_MSG(name, msg) [name] = msg,
    WS_ERR_MAP(WS_ERR_MSG)
#undef WS_ERR_MSG
};

static const char *const err_names[] = {
#define WS_ERR_NAME(name, msg) [name] = #name,
    WS_ERR_MAP(WS_ERR_NAME)
#undef WS_ERR_NAME
};

const char *ws_strerror(ws_err err)
{
    if ((unsigned)err >= WS_ERR__COUNT) {
        return "unknown error";
    }
    return err_messages[err];
}

const char *ws_errname(ws_err err)
{
    if ((unsigned)err >= WS_ERR__COUNT) {
        return "WS_E?";
    }
    return err_names[err];
}

ws_err ws_err_from_errno(int errnum)
{
    switch (errnum) {
    case 0:
        return WS_OK;
    case ENOMEM:
        return WS_ENOMEM;
    case EINVAL:
        return WS_EINVAL;
    case ERANGE:
    case EOVERFLOW:
        return WS_ERANGE;
    case E2BIG:
    case EMSGSIZE:
    case EFBIG:
        return WS_ETOOBIG;
    case ENOENT:
        return WS_ENOTFOUND;
    case EEXIST:
        return WS_EEXIST;
    case ETIMEDOUT:
        return WS_ETIMEDOUT;
    case ECONNREFUSED:
    case ECONNRESET:
    case EHOSTUNREACH:
    case ENETUNREACH:
    case EPIPE:
        return WS_EUNAVAIL;
    case EBUSY:
    case EAGAIN:
        return WS_EBUSY;
    case EACCES:
    case EPERM:
        return WS_EAUTH;
    case ECANCELED:
        return WS_ECANCELED;
    default:
        return WS_EIO;
    }
}
