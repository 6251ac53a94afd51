/*
 * Emitter of one method: its full-name macro, the declarations of its
 * client stubs, its member in the server struct, the stub bodies (typed
 * wrappers of ws_rpc_client_call()) and the static thunk that turns the
 * runtime's untyped handler call into the typed one of the server struct.
 */
#include "gen.h"

void emit_method_decls(const gen_service *s, const gen_method *m, strbuf *out)
{
    (void)s;
    strbuf_puts(out, "\n");
    emit_comment(out, m->comment, "");
    strbuf_printf(out,
                  "#define %s \"%s\"\n"
                  "\n"
                  "/* Call %s with req; wait at most deadline_ms (0 = no deadline).\n"
                  " * On WS_RPC_OK *resp owns the response: free it with\n"
                  " * protobuf_c_message_free_unpacked((ProtobufCMessage *)*resp, NULL)\n"
                  " * (or the type's __free_unpacked). On any other code *resp is\n"
                  " * untouched.\n"
                  " * Any thread. */\n"
                  "ws_rpc_code %s(ws_rpc_client *c, const %s *req,\n"
                  "    %s **resp /* OUT */, uint32_t deadline_ms);\n"
                  "\n"
                  "/* The same, and on failure the status message into msg (msg_len\n"
                  " * bytes, NUL-terminated, truncated; msg may be NULL). */\n"
                  "ws_rpc_code %s_ex(ws_rpc_client *c, const %s *req,\n"
                  "    %s **resp /* OUT */, uint32_t deadline_ms,\n"
                  "    char *msg /* OUT */, size_t msg_len);\n",
                  m->macro, m->path, m->path, m->fn, m->in_type, m->out_type, m->fn,
                  m->in_type, m->out_type);
}

void emit_method_handler_field(const gen_service *s, const gen_method *m, strbuf *out)
{
    (void)s;
    strbuf_printf(out,
                  "    /* %s */\n"
                  "    ws_rpc_code (*%s)(void *ctx, const %s *req,\n"
                  "        %s **resp /* OUT */, ws_rpc_call *call);\n",
                  m->path, m->field, m->in_type, m->out_type);
}

void emit_method_stubs(const gen_service *s, const gen_method *m, strbuf *out)
{
    (void)s;
    strbuf_printf(out,
                  "\n"
                  "ws_rpc_code %s_ex(ws_rpc_client *c, const %s *req,\n"
                  "    %s **resp, uint32_t deadline_ms, char *msg, size_t msg_len)\n"
                  "{\n"
                  "    ProtobufCMessage *out = NULL;\n"
                  "    ws_rpc_code code;\n"
                  "\n"
                  "    code = ws_rpc_client_call(c, %s, (const ProtobufCMessage *)req,\n"
                  "        &%s__descriptor, &out, deadline_ms, msg, msg_len);\n"
                  "    if (code == WS_RPC_OK) {\n"
                  "        *resp = (%s *)out;\n"
                  "    }\n"
                  "    return code;\n"
                  "}\n"
                  "\n"
                  "ws_rpc_code %s(ws_rpc_client *c, const %s *req,\n"
                  "    %s **resp, uint32_t deadline_ms)\n"
                  "{\n"
                  "    return %s_ex(c, req, resp, deadline_ms, NULL, 0);\n"
                  "}\n",
                  m->fn, m->in_type, m->out_type, m->macro, m->out_lower, m->out_type,
                  m->fn, m->in_type, m->out_type, m->fn);
}

void emit_method_thunk(const gen_service *s, const gen_method *m, strbuf *out)
{
    strbuf_printf(
        out,
        "\n"
        "static ws_rpc_code %s__serve(void *ctx, const ProtobufCMessage *req,\n"
        "    ProtobufCMessage **resp, ws_rpc_call *call)\n"
        "{\n"
        "    const %s_server *impl = ctx;\n"
        "    %s *out = NULL;\n"
        "    ws_rpc_code code;\n"
        "\n"
        "    if (impl->%s == NULL) {\n"
        "        ws_rpc_call_set_message(call, \"%%s is not implemented\", %s);\n"
        "        return WS_RPC_UNIMPLEMENTED;\n"
        "    }\n"
        "    code = impl->%s(impl->ctx, (const %s *)req, &out, call);\n"
        "    if (code != WS_RPC_OK) {\n"
        "        if (out != NULL) {\n"
        "            protobuf_c_message_free_unpacked((ProtobufCMessage *)out, NULL);\n"
        "        }\n"
        "        return code;\n"
        "    }\n"
        "    if (out == NULL) {\n"
        "        ws_rpc_call_set_message(call, \"%%s: handler returned no response\", "
        "%s);\n"
        "        return WS_RPC_INTERNAL;\n"
        "    }\n"
        "    *resp = (ProtobufCMessage *)out;\n"
        "    return WS_RPC_OK;\n"
        "}\n",
        m->fn, s->prefix, m->out_type, m->field, m->macro, m->field, m->in_type,
        m->macro);
}
