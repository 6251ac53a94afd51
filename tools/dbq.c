/*
 * webshop-dbq URL SQL: run one SQL statement on a database through lib/db
 * (the same seam the services use, so one tool reads both engines) and
 * print each result row on stdout as one JSON array line, every column as
 * its text or null:
 *
 *   $ webshop-dbq sqlite:/var/lib/webshop/order.db 'SELECT id, status FROM orders'
 *   ["0b0c...","2"]
 *
 * URL is any form lib/db opens (db.h): sqlite:PATH or a plain path,
 * postgresql://... or a libpq keyword string. An SQLite file that does not
 * exist is refused rather than created. The statement runs outside any
 * explicit transaction (autocommit), with no parameters; it is meant for
 * tests, the chaos run's checks and an operator's look at a database, not
 * for the services' work. Nothing is migrated: the schema is read as it is.
 *
 * Exit status: 0 when the statement ran to the end (rows printed), 1 when
 * the database could not be opened or the statement failed (one line
 * "webshop-dbq: ..." on stderr with the driver's message; the URL is
 * printed with its password redacted), 2 for a usage error.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "db.h"
#include "log.h"

#define DBQ_EXIT_FAIL  1
#define DBQ_EXIT_USAGE 2

/* Write s as a JSON string: quote, backslash and control bytes escaped;
 * other bytes (UTF-8 included) as they are. */
static void dbq_json_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p == '"' || *p == '\\') {
            fputc('\\', out);
            fputc(*p, out);
        } else if (*p == '\n') {
            fputs("\\n", out);
        } else if (*p == '\t') {
            fputs("\\t", out);
        } else if (*p == '\r') {
            fputs("\\r", out);
        } else if (*p < 0x20 || *p == 0x7f) {
            fprintf(out, "\\u%04x", *p);
        } else {
            fputc(*p, out);
        }
    }
    fputc('"', out);
}

static void dbq_row_print(FILE *out, ws_db_stmt *s)
{
    int n = ws_db_column_count(s);
    fputc('[', out);
    for (int i = 0; i < n; i++) {
        if (i > 0) {
            fputc(',', out);
        }
        const char *text = ws_db_column_text(s, i);
        if (ws_db_column_is_null(s, i) || text == NULL) {
            fputs("null", out);
        } else {
            dbq_json_string(out, text);
        }
    }
    fputs("]\n", out);
}

/* A plain path or sqlite:PATH (not a PostgreSQL URL): the file's path, or
 * NULL. ":memory:" is left to lib/db. */
static const char *dbq_sqlite_path(const char *url)
{
    if (strncmp(url, "postgresql://", 13) == 0 || strncmp(url, "postgres://", 11) == 0) {
        return NULL;
    }
    const char *eq = strchr(url, '=');
    const char *sp = strchr(url, ' ');
    if (eq != NULL && (sp == NULL || eq < sp)) {
        return NULL; /* "keyword=value ...": libpq */
    }
    if (strncmp(url, "sqlite://", 9) == 0) {
        return url + 9;
    }
    if (strncmp(url, "sqlite:", 7) == 0) {
        return url + 7;
    }
    return strchr(url, ':') == NULL ? url : NULL;
}

/* Prepare and step sql to its end, printing rows; the exit status. */
static int dbq_run(ws_db_conn *c, const char *sql, const char *shown)
{
    ws_db_stmt *s = NULL;
    ws_err err = ws_db_prepare(c, sql, &s);
    if (err != WS_OK) {
        fprintf(stderr, "webshop-dbq: %s: statement refused: %s (%s)\n", shown,
                ws_strerror(err), ws_db_last_error(c)->message);
        return DBQ_EXIT_FAIL;
    }
    for (;;) {
        bool row = false;
        err = ws_db_step(s, &row);
        if (err != WS_OK) {
            fprintf(stderr, "webshop-dbq: %s: statement failed: %s (%s)\n", shown,
                    ws_strerror(err), ws_db_last_error(c)->message);
            return DBQ_EXIT_FAIL;
        }
        if (!row) {
            break;
        }
        dbq_row_print(stdout, s);
    }
    ws_db_reset(s);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "webshop-dbq: cannot write the rows to stdout\n");
        return DBQ_EXIT_FAIL;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 3 || argv[1][0] == '\0' || argv[2][0] == '\0') {
        fprintf(stderr,
                "usage: webshop-dbq URL SQL\n"
                "  URL: sqlite:PATH, PATH, postgresql://... or a libpq keyword string\n"
                "  prints each row as one JSON array line (text or null)\n");
        return DBQ_EXIT_USAGE;
    }
    const char *url = argv[1];
    char shown[512];
    ws_db_url_redact(url, shown, sizeof(shown));
    /* lib/db's own log lines would repeat what this tool says once, with
     * the driver's message (WEBSHOP_DBQ_LOG=1 keeps them). */
    const char *keep = getenv("WEBSHOP_DBQ_LOG");
    ws_log_set_level(keep != NULL && keep[0] == '1' ? WS_LOG_DEBUG
                                                    : (ws_log_level)(WS_LOG_ERROR + 1));
    ws_log_set_service("webshop-dbq");

    struct stat st;
    const char *path = dbq_sqlite_path(url);
    if (path != NULL && strcmp(path, ":memory:") != 0 && stat(path, &st) != 0) {
        fprintf(stderr, "webshop-dbq: %s: no such database file\n", shown);
        return DBQ_EXIT_FAIL;
    }
    ws_db_error why = {0};
    ws_db_opts o = {.url = url, .pool_size = 1, .app_name = "webshop-dbq", .error = &why};
    ws_db *db = NULL;
    ws_err err = ws_db_open(&o, &db);
    if (err != WS_OK) {
        fprintf(stderr, "webshop-dbq: %s: cannot open: %s%s%s%s\n", shown,
                ws_strerror(err), why.message[0] ? " (" : "", why.message,
                why.message[0] ? ")" : "");
        return DBQ_EXIT_FAIL;
    }
    ws_db_conn *c = NULL;
    err = ws_db_acquire(db, &c);
    if (err != WS_OK) {
        fprintf(stderr, "webshop-dbq: %s: no connection: %s\n", shown, ws_strerror(err));
        ws_db_close(db);
        return DBQ_EXIT_FAIL;
    }
    int rc = dbq_run(c, argv[2], shown);
    ws_db_release(c);
    ws_db_close(db);
    return rc;
}
