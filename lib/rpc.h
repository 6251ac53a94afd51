/*
 * What the RPC server and client share: the status codes of a call,
 * numbered exactly as gRPC's (and as webshop.v1.StatusCode in rpc.proto),
 * and their names. Transport over nng req/rep; envelope in rpc.proto.
 */
#ifndef WS_RPC_H
#define WS_RPC_H

#include <stddef.h>

/* X(name, number) */
#define WS_RPC_CODE_MAP(X)                                                    \
    X(OK, 0)                                                                  \
    X(CANCELLED, 1)                                                           \
    X(UNKNOWN, 2)                                                             \
    X(INVALID_ARGUMENT, 3)                                                    \
    X(DEADLINE_EXCEEDED, 4)                                                   \
    X(NOT_FOUND, 5)                                                           \
    X(ALREADY_EXISTS, 6)                                                      \
    X(PERMISSION_DENIED, 7)                                                   \
    X(RESOURCE_EXHAUSTED, 8)                                                  \
    X(FAILED_PRECONDITION, 9)                                                 \
    X(ABORTED, 10)                                                            \
    X(OUT_OF_RANGE, 11)                                                       \
    X(UNIMPLEMENTED, 12)                                                      \
    X(INTERNAL, 13)                                                           \
    X(UNAVAILABLE, 14)                                                        \
    X(DATA_LOSS, 15)                                                          \
    X(UNAUTHENTICATED, 16)

typedef enum ws_rpc_code {
#define WS_RPC_CODE_ENUM(name, num) WS_RPC_##name = num,
    WS_RPC_CODE_MAP(WS_RPC_CODE_ENUM)
#undef WS_RPC_CODE_ENUM
} ws_rpc_code;

/* "OK", "NOT_FOUND", ...; "UNKNOWN" for a number outside the table. */
const char *ws_rpc_code_name(ws_rpc_code code);

/* Default cap on an RPC message (envelope included), both directions. */
#define WS_RPC_DEFAULT_MAX_MSG (1u << 20)

/* Room for a status message carried in RpcResponse.message. */
#define WS_RPC_MSG_LEN 256

#endif
