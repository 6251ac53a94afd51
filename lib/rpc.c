/*
 * Names of the RPC status codes, generated from WS_RPC_CODE_MAP in rpc.h so
 * that the enum, the names and rpc.proto's StatusCode cannot drift apart.
 */
#include "rpc.h"

static const char *const rpc_code_names[] = {
#define WS_RPC_CODE_NAME(name, num) [num] = #name,
    WS_RPC_CODE_MAP(WS_RPC_CODE_NAME)
#undef WS_RPC_CODE_NAME
};

const char *ws_rpc_code_name(ws_rpc_code code)
{
    if ((unsigned)code >= sizeof(rpc_code_names) / sizeof(rpc_code_names[0]) ||
        rpc_code_names[code] == NULL) {
        return "UNKNOWN";
    }
    return rpc_code_names[code];
}
