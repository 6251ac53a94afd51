/*
 * Finding and loading the PostgreSQL engine of lib/db, which is built as
 * a loadable module (libwebshop-db-pg.so, db_pg.c linked against libpq) so
 * that a program on SQLite never maps libpq and the ~3.5 MB of libraries
 * it pulls in (Kerberos, LDAP, GnuTLS...). The module is opened the first
 * time a postgres URL is opened and never unloaded; its ops table is used
 * as if it were linked in. No rpath: the module is looked for by a fixed
 * rule (db_module_candidates), and a missing module or a missing libpq is
 * one clear error naming what was tried.
 */
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db_int.h"
#include "log.h"

#define DB_MODULE_NAME "libwebshop-db-pg.so"

static pthread_once_t db_module_once = PTHREAD_ONCE_INIT;
static const ws__db_ops *db_module_ops; /* set once by db_module_load */
static char db_module_why[256];         /* why not, when db_module_ops is NULL */

/* Say why the engine is not there (truncated to fit). */
static void db_module_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void db_module_say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(db_module_why, sizeof(db_module_why), fmt, ap);
    va_end(ap);
}

/* Write path into paths (PATH_MAX bytes); false when it does not fit. */
static bool db_module_path(char *out, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static bool db_module_path(char *out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, PATH_MAX, fmt, ap);
    va_end(ap);
    return n > 0 && n < PATH_MAX;
}

/* The directory of the running program (realpath of /proc/self/exe) into
 * dir; false when it cannot be read. */
static bool db_module_exe_dir(char *dir, size_t cap)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n <= 0) {
        return false;
    }
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash == NULL) {
        return false;
    }
    *slash = '\0';
    return snprintf(dir, cap, "%s", exe) < (int)cap;
}

/* The lookup rule, first match wins:
 *   1. $WEBSHOP_DB_PG_MODULE, when set: that file and nothing else;
 *   2. a program inside the build tree: the module built there;
 *   3. <program's dir>/<bindir-to-libdir>/webshop/ (an installed tree,
 *      wherever it was copied or installed with --destdir);
 *   4. <prefix>/<libdir>/webshop/ as configured.
 * Fills paths[] (PATH_MAX bytes each) and returns how many. */
static int db_module_candidates(char paths[][PATH_MAX])
{
    const char *env = getenv("WEBSHOP_DB_PG_MODULE");
    if (env != NULL && env[0] != '\0') {
        return db_module_path(paths[0], "%s", env) ? 1 : 0;
    }
    char dir[PATH_MAX];
    bool have_dir = db_module_exe_dir(dir, sizeof(dir));
    int n = 0;
#ifdef WS_DB_PG_BUILT
    /* Both sides resolved: /proc/self/exe is, the build root may not be. */
    char root_real[PATH_MAX];
    const char *root_dir =
        realpath(WS_BUILD_ROOT, root_real) != NULL ? root_real : WS_BUILD_ROOT;
    size_t root = strlen(root_dir);
    if (have_dir && strncmp(dir, root_dir, root) == 0 &&
        (dir[root] == '/' || dir[root] == '\0')) {
        return db_module_path(paths[0], "%s", WS_DB_PG_BUILT) ? 1 : 0;
    }
#endif
#ifdef WS_DB_PG_RELATIVE
    if (have_dir &&
        db_module_path(paths[n], "%s/%s/" DB_MODULE_NAME, dir, WS_DB_PG_RELATIVE)) {
        n++;
    }
#endif
#ifdef WS_DB_PG_INSTALLED
    if (db_module_path(paths[n], "%s/" DB_MODULE_NAME, WS_DB_PG_INSTALLED)) {
        n++;
    }
#endif
    (void)have_dir;
    return n;
}

/* The engine in the module at handle, or NULL (why filled) when it is not
 * this build's: another version or another layout of the shared structs. */
static const ws__db_ops *db_module_check(void *handle, const char *path)
{
    const ws__db_module *m = dlsym(handle, "ws__db_pg_module");
    if (m == NULL) {
        db_module_say("%s is not a lib/db engine", path);
        return NULL;
    }
    if (strcmp(m->version, WEBSHOP_VERSION) != 0 || m->ops_size != sizeof(ws__db_ops) ||
        m->db_size != sizeof(ws_db) || m->conn_size != sizeof(ws_db_conn) ||
        m->stmt_size != sizeof(ws_db_stmt)) {
        db_module_say("%s is from another build (version %s, this program %s)", path,
                      m->version, WEBSHOP_VERSION);
        return NULL;
    }
    return m->ops;
}

static void db_module_load(void)
{
    char paths[3][PATH_MAX];
    int n = db_module_candidates(paths);
    db_module_say(DB_MODULE_NAME " not found");
    for (int i = 0; i < n && db_module_ops == NULL; i++) {
        bool last = i == n - 1;
        /* A candidate that is not there is skipped; one that is there but
         * cannot load (libpq missing, undefined symbol) is the answer. */
        if (!last && access(paths[i], F_OK) != 0) {
            continue;
        }
        void *h = dlopen(paths[i], RTLD_NOW | RTLD_LOCAL);
        if (h == NULL) {
            const char *e = dlerror();
            db_module_say("%s", e ? e : paths[i]);
            break;
        }
        db_module_ops = db_module_check(h, paths[i]);
        if (db_module_ops == NULL) {
            dlclose(h);
            break;
        }
        ws_log_debug("db_engine_loaded", "engine=postgresql module=%s", paths[i]);
    }
    if (db_module_ops == NULL) {
        ws_log_error("db_engine_unavailable", "engine=postgresql error=%s",
                     db_module_why);
    }
}

const ws__db_ops *ws__db_pg_ops_load(const char **why)
{
    pthread_once(&db_module_once, db_module_load);
    if (db_module_ops == NULL && why != NULL) {
        *why = db_module_why;
    }
    return db_module_ops;
}
