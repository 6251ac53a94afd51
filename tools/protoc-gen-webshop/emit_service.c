/*
 * Emitter of one service: in the header, its method declarations, the
 * server struct P_S_server (one handler pointer per method) and
 * P_S_register(); in the source, the stubs and thunks of its methods and
 * the register function, which hands the thunks to ws_rpc_server_register()
 * with protoc-c's service descriptor and the caller's struct as context, and
 * the service's authorization table (each method's (webshop.v1.allow)) to
 * ws_rpc_server_allow().
 */
#include "gen.h"

void emit_service_header(const gen_service *s, strbuf *out)
{
    strbuf_printf(out, "\n/* ---- service %s ---- */\n\n", s->full_name);
    emit_comment(out, s->comment, "");
    for (size_t i = 0; i < s->n_methods; i++) {
        emit_method_decls(s, &s->methods[i], out);
    }
    strbuf_printf(
        out,
        "\n"
        "/* Server binding of %s: one handler per method, each called as\n"
        " * handler(ctx, req, &resp, call) on an RPC server worker thread,\n"
        " * possibly concurrently. req is owned by the server. On WS_RPC_OK the\n"
        " * handler sets *resp to a message allocated with malloc (the server\n"
        " * frees it with protobuf_c_message_free_unpacked()); on any other code it\n"
        " * leaves *resp NULL and may explain with ws_rpc_call_set_message(). A\n"
        " * NULL handler answers UNIMPLEMENTED. */\n"
        "typedef struct %s_server {\n"
        "    void *ctx; /* passed to every handler */\n",
        s->full_name, s->prefix);
    for (size_t i = 0; i < s->n_methods; i++) {
        emit_method_handler_field(s, &s->methods[i], out);
    }
    strbuf_printf(
        out,
        "} %s_server;\n"
        "\n"
        "/* Register every method of %s on srv (before ws_rpc_server_start()).\n"
        " * impl is borrowed and must outlive the server. WS_EINVAL if impl is\n"
        " * NULL; otherwise what ws_rpc_server_register() returns (WS_EEXIST if\n"
        " * the service is already registered). */\n"
        "ws_err %s_register(ws_rpc_server *srv, const %s_server *impl);\n",
        s->prefix, s->full_name, s->prefix, s->prefix);
}

void emit_service_allow(const gen_service *s, strbuf *out)
{
    if (s->n_methods == 0) {
        return;
    }
    strbuf_puts(out, "    /* Who may call each method over an identity listener (its\n"
                     "     * (webshop.v1.allow) option); NULL: no identity may. */\n");
    for (size_t i = 0; i < s->n_methods; i++) {
        const gen_method *m = &s->methods[i];
        options_bytes id;
        if (m->allow.data == NULL) {
            continue;
        }
        strbuf_printf(out, "    static const char *const allow_%s[] = {", m->field);
        for (size_t k = 0; options_msg_bytes_at(m->allow, GEN_ALLOW_IDENTITIES, k, &id);
             k++) {
            strbuf_printf(out, "\"%.*s\", ", (int)id.len, (const char *)id.data);
        }
        strbuf_puts(out, "NULL};\n");
    }
    strbuf_puts(out, "    static const char *const *const allow[] = {\n");
    for (size_t i = 0; i < s->n_methods; i++) {
        if (s->methods[i].allow.data != NULL) {
            strbuf_printf(out, "        allow_%s,\n", s->methods[i].field);
        } else {
            strbuf_puts(out, "        NULL,\n");
        }
    }
    strbuf_puts(out, "    };\n\n");
}

void emit_service_source(const gen_service *s, strbuf *out)
{
    strbuf_printf(out, "\n/* ---- service %s ---- */\n", s->full_name);
    for (size_t i = 0; i < s->n_methods; i++) {
        emit_method_stubs(s, &s->methods[i], out);
    }
    for (size_t i = 0; i < s->n_methods; i++) {
        emit_method_thunk(s, &s->methods[i], out);
    }
    strbuf_printf(out,
                  "\n"
                  "ws_err %s_register(ws_rpc_server *srv, const %s_server *impl)\n"
                  "{\n",
                  s->prefix, s->prefix);
    if (s->n_methods > 0) {
        /* Same order as protoc-c's descriptor: declaration order. */
        strbuf_puts(out, "    static const ws_rpc_handler_fn handlers[] = {\n");
        for (size_t i = 0; i < s->n_methods; i++) {
            strbuf_printf(out, "        %s__serve,\n", s->methods[i].fn);
        }
        strbuf_puts(out, "    };\n");
        emit_service_allow(s, out);
    } else {
        strbuf_puts(out,
                    "    static const ws_rpc_handler_fn *const handlers = NULL;\n\n");
    }
    strbuf_printf(
        out,
        "    if (impl == NULL) {\n"
        "        return WS_EINVAL;\n"
        "    }\n"
        "    ws_err err = ws_rpc_server_register(srv, &%s__descriptor, handlers,\n"
        "                                        (void *)impl);\n"
        "    if (err == WS_OK) {\n"
        "        err = ws_rpc_server_add_files(srv, %s__files, %s__n_files);\n"
        "    }\n",
        s->lower, s->file_ident, s->file_ident);
    if (s->n_methods > 0) {
        strbuf_printf(out,
                      "    if (err == WS_OK) {\n"
                      "        err = ws_rpc_server_allow(srv, &%s__descriptor, allow);\n"
                      "    }\n",
                      s->lower);
    }
    strbuf_puts(out, "    return err;\n}\n");
}
