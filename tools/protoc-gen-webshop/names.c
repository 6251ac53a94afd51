/*
 * Naming rules of the generator: protoc-c's (so that we reference the types
 * and descriptors it generates) and ours (P_S_M). See names.h.
 */
#include "names.h"

#include <ctype.h>
#include <string.h>

/* Strip a leading '.', and split full_name into the part naming the package
 * (replaced by c_package when set) and the rest. Calls piece() once per
 * dot-separated piece, skipping empty ones, as protoc-c's SplitStringUsing
 * does. */
typedef void (*names_piece_fn)(strbuf *out, const char *p, size_t len);

static void names_pieces(strbuf *out, const char *s, names_piece_fn piece, bool *first)
{
    while (*s != '\0') {
        const char *dot = strchr(s, '.');
        size_t len = dot ? (size_t)(dot - s) : strlen(s);

        if (len > 0) {
            if (!*first) {
                strbuf_puts(out, "__");
            }
            *first = false;
            piece(out, s, len);
        }
        s += len;
        if (*s == '.') {
            s++;
        }
    }
}

static void names_full_walk(strbuf *out, const char *full_name, const char *package,
                            const char *c_package, names_piece_fn piece)
{
    const char *rest = full_name;
    bool first = true;

    if (rest[0] == '.') {
        rest++;
    }
    if (c_package != NULL && c_package[0] != '\0') {
        size_t plen = package ? strlen(package) : 0;

        if (plen > 0 && strncmp(rest, package, plen) == 0 && rest[plen] == '.') {
            rest += plen + 1;
        }
        names_pieces(out, c_package, piece, &first);
    }
    names_pieces(out, rest, piece, &first);
}

/* protoc-c ToCamel: drop underscores, upper-case the first letter and each
 * letter after an underscore, keep the rest. */
static void names_piece_camel(strbuf *out, const char *p, size_t len)
{
    bool next_upper = true;

    for (size_t i = 0; i < len; i++) {
        char ch = p[i];

        if (ch == '_') {
            next_upper = true;
        } else if (next_upper) {
            char up = (char)toupper((unsigned char)ch);

            strbuf_putn(out, &up, 1);
            next_upper = false;
        } else {
            strbuf_putn(out, &ch, 1);
        }
    }
}

/* protoc-c CamelToLower: '_' before an upper-case letter that follows a
 * non-upper-case one (never first), letters lower-cased. */
static void names_piece_lower(strbuf *out, const char *p, size_t len)
{
    bool was_upper = true;

    for (size_t i = 0; i < len; i++) {
        char ch = p[i];
        bool is_upper = isupper((unsigned char)ch) != 0;

        if (is_upper) {
            char lo = (char)tolower((unsigned char)ch);

            if (!was_upper) {
                strbuf_puts(out, "_");
            }
            strbuf_putn(out, &lo, 1);
        } else {
            strbuf_putn(out, &ch, 1);
        }
        was_upper = is_upper;
    }
}

void names_c_type(strbuf *out, const char *full_name, const char *package,
                  const char *c_package)
{
    names_full_walk(out, full_name, package, c_package, names_piece_camel);
}

void names_c_lower(strbuf *out, const char *full_name, const char *package,
                   const char *c_package)
{
    names_full_walk(out, full_name, package, c_package, names_piece_lower);
}

void names_snake(strbuf *out, const char *name)
{
    size_t len = strlen(name);

    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)name[i];

        if (isupper(ch)) {
            unsigned char prev = i > 0 ? (unsigned char)name[i - 1] : 0;
            unsigned char next = (unsigned char)name[i + 1];
            bool boundary = i > 0 && (islower(prev) || isdigit(prev) ||
                                      (isupper(prev) && islower(next)));
            char lo = (char)tolower(ch);

            if (boundary) {
                strbuf_puts(out, "_");
            }
            strbuf_putn(out, &lo, 1);
        } else {
            strbuf_putn(out, (const char *)&name[i], 1);
        }
    }
}

void names_package(strbuf *out, const char *package)
{
    for (const char *p = package ? package : ""; *p != '\0'; p++) {
        char ch = *p == '.' ? '_' : (char)tolower((unsigned char)*p);

        strbuf_putn(out, &ch, 1);
    }
}

void names_upper(strbuf *out, const char *s)
{
    for (; *s != '\0'; s++) {
        char ch = (char)toupper((unsigned char)*s);

        strbuf_putn(out, &ch, 1);
    }
}

bool names_is_c_keyword(const char *s)
{
    static const char *const keywords[] = {
        "auto",    "break",  "case",     "char",     "const",      "continue", "default",
        "do",      "double", "else",     "enum",     "extern",     "float",    "for",
        "goto",    "if",     "inline",   "int",      "long",       "register", "restrict",
        "return",  "short",  "signed",   "sizeof",   "static",     "struct",   "switch",
        "typedef", "union",  "unsigned", "void",     "volatile",   "while",    "bool",
        "true",    "false",  "_Bool",    "_Complex", "_Imaginary",
    };

    for (size_t i = 0; i < sizeof(keywords) / sizeof(keywords[0]); i++) {
        if (strcmp(s, keywords[i]) == 0) {
            return true;
        }
    }
    return false;
}
