/*
 * JSON string literals and comment prose; see openapi_text.h.
 */
#include "openapi_text.h"

#include <stdbool.h>
#include <string.h>

void openapi_text_json_n(ws_buf *out, const char *s, size_t n)
{
    ws_buf_putc(out, '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        switch (ch) {
        case '"':
            ws_buf_puts(out, "\\\"");
            break;
        case '\\':
            ws_buf_puts(out, "\\\\");
            break;
        case '\n':
            ws_buf_puts(out, "\\n");
            break;
        case '\t':
            ws_buf_puts(out, "\\t");
            break;
        default:
            if (ch < 0x20 || ch == 0x7f) {
                ws_buf_printf(out, "\\u%04x", ch);
            } else {
                ws_buf_putc(out, (char)ch);
            }
        }
    }
    ws_buf_putc(out, '"');
}

void openapi_text_json(ws_buf *out, const char *s)
{
    s = s != NULL ? s : "";
    openapi_text_json_n(out, s, strlen(s));
}

const char *openapi_text_comment(const Google__Protobuf__FileDescriptorProto *f,
                                 const int *path, size_t n)
{
    if (f->source_code_info == NULL || n == 0) {
        return NULL;
    }
    for (size_t i = 0; i < f->source_code_info->n_location; i++) {
        const Google__Protobuf__SourceCodeInfo__Location *loc =
            f->source_code_info->location[i];
        if (loc->n_path != n || loc->leading_comments == NULL) {
            continue;
        }
        if (memcmp(loc->path, path, n * sizeof(int)) == 0) {
            return loc->leading_comments;
        }
    }
    return NULL;
}

void openapi_text_prose(ws_buf *text, const char *comment)
{
    const char *p = comment != NULL ? comment : "";
    bool paragraph = false; /* a blank line since the last words */
    size_t start = text->len;
    while (*p != '\0') {
        while (*p == ' ' || *p == '\t') {
            p++;
        }
        const char *nl = strchr(p, '\n');
        size_t len = nl != NULL ? (size_t)(nl - p) : strlen(p);
        while (len > 0 &&
               (p[len - 1] == ' ' || p[len - 1] == '\t' || p[len - 1] == '\r')) {
            len--;
        }
        if (len == 0) {
            paragraph = text->len > start;
        } else {
            if (text->len > start) {
                ws_buf_puts(text, paragraph ? "\n\n" : " ");
            }
            ws_buf_append(text, p, len);
            paragraph = false;
        }
        p = nl != NULL ? nl + 1 : p + strlen(p);
    }
}

void openapi_text_description(ws_buf *out, const char *comment)
{
    ws_buf text;
    ws_buf_init(&text, 0);
    openapi_text_prose(&text, comment);
    if (text.len > 0) {
        ws_buf_puts(out, ",\"description\":");
        openapi_text_json_n(out, text.data, text.len);
    }
    ws_buf_fini(&text);
}
