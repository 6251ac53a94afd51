/*
 * Text in the OpenAPI document: JSON string literals, and the comments of
 * .proto elements (found through the file's source_code_info) turned into
 * descriptions. Comment lines are joined into prose; a blank comment line
 * stays a paragraph break, so Markdown renderers show paragraphs.
 */
#ifndef OPENAPI_TEXT_H
#define OPENAPI_TEXT_H

#include <stddef.h>

#include "buf.h"
#include "google/protobuf/descriptor.pb-c.h"

/* Append s (NULL reads as "") as a JSON string literal: quoted, escaped. */
void openapi_text_json(ws_buf *out, const char *s);

/* The same for the n bytes at s. */
void openapi_text_json_n(ws_buf *out, const char *s, size_t n);

/* The leading comment of the element at path (n ints) in f, or NULL when
 * it has none. Points into f. */
const char *openapi_text_comment(const Google__Protobuf__FileDescriptorProto *f,
                                 const int *path, size_t n);

/* Append comment (may be NULL) to text as prose: each line trimmed, lines
 * joined with one space, a blank line kept as "\n\n". */
void openapi_text_prose(ws_buf *text, const char *comment);

/* Append ,"description":"<prose of comment>" to out; nothing when comment
 * is NULL or blank. */
void openapi_text_description(ws_buf *out, const char *comment);

#endif
