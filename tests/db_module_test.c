/*
 * lib/db's PostgreSQL engine is a module (libwebshop-db-pg.so) loaded only
 * for a postgres URL (issue 19: RSS). A pool on SQLite, in this process and
 * in webshop-inventory and webshop-order as they run, maps neither libpq nor
 * the module (nor libsystemd, which lib/notify no longer needs); a postgres
 * URL loads the module from the build tree; a module that is not there is
 * one clear error (WS_ENOTFOUND, naming the file) from ws_db_open and
 * ws_db_check_url, and a service given a postgres URL without it exits
 * saying so instead of waiting for a server.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "db.h"
#include "harness.h"

#define WAIT_MS 20000
#define MISSING "/nonexistent/webshop/libwebshop-db-pg.so"

/* True when /proc/<pid>/maps names a file whose name holds needle. */
static bool maps_have(pid_t pid, const char *needle)
{
    char path[64], line[1024];
    snprintf(path, sizeof(path), "/proc/%ld/maps", (long)pid);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "cannot read %s", path);
    bool found = false;
    while (!found && fgets(line, sizeof(line), f) != NULL) {
        found = strstr(line, needle) != NULL;
    }
    fclose(f);
    return found;
}

static void assert_no_pg_mapped(pid_t pid, const char *who)
{
    cr_assert_not(maps_have(pid, "/libpq.so"), "%s maps libpq", who);
    cr_assert_not(maps_have(pid, "libwebshop-db-pg"), "%s maps the pg module", who);
    cr_assert_not(maps_have(pid, "/libsystemd.so"), "%s maps libsystemd", who);
}

static char *tmpdir;

static void tmp_up(void)
{
    tmpdir = harness_tmpdir_new("db-module");
    cr_assert_not_null(tmpdir);
}

static void tmp_down(void)
{
    harness_tmpdir_free(tmpdir);
    unsetenv("WEBSHOP_DB_PG_MODULE");
}

TestSuite(db_module, .init = tmp_up, .fini = tmp_down, .timeout = 60);

Test(db_module, sqlite_pool_maps_no_libpq)
{
    char url[4200];
    snprintf(url, sizeof(url), "sqlite:%s/a.db", tmpdir);
    ws_db *db = NULL;
    ws_db_opts o = {.url = url, .pool_size = 2};
    cr_assert_eq(ws_db_open(&o, &db), WS_OK);
    ws_db_conn *c = NULL;
    cr_assert_eq(ws_db_acquire(db, &c), WS_OK);
    cr_assert_eq(ws_db_exec(c, "CREATE TABLE t (x INTEGER)"), WS_OK);
    ws_db_release(c);
    assert_no_pg_mapped(getpid(), "a process on SQLite");
    ws_db_close(db);
}

Test(db_module, postgres_url_loads_the_module_from_the_build_tree)
{
    /* Nothing listens on port 1: the engine is loaded, then the connect is
     * refused, which is a server problem (retry), not a missing engine. */
    ws_db *db = NULL;
    ws_db_error e = {0};
    ws_db_opts o = {.url = "postgresql://webshop@127.0.0.1:1/none?connect_timeout=2",
                    .pool_size = 1,
                    .error = &e};
    cr_assert_eq(ws_db_open(&o, &db), WS_EUNAVAIL, "%s", e.message);
    cr_assert_null(db);
    cr_assert(maps_have(getpid(), "libwebshop-db-pg"));
    cr_assert(maps_have(getpid(), "/libpq.so"));
}

Test(db_module, missing_module_is_one_clear_error)
{
    setenv("WEBSHOP_DB_PG_MODULE", MISSING, 1);
    ws_db *db = NULL;
    ws_db_error e = {0};
    ws_db_opts o = {.url = "postgresql://webshop@127.0.0.1:1/none", .error = &e};
    cr_assert_eq(ws_db_open(&o, &db), WS_ENOTFOUND);
    cr_assert_null(db);
    cr_assert_eq(e.err, WS_ENOTFOUND);
    cr_assert_eq(e.engine, WS_DB_POSTGRES);
    cr_assert(strstr(e.message, "PostgreSQL engine unavailable") != NULL, "%s",
              e.message);
    cr_assert(strstr(e.message, MISSING) != NULL, "%s", e.message);

    char detail[512];
    cr_assert_eq(ws_db_check_url("postgresql://webshop@127.0.0.1:1/none", 1, 0, detail,
                                 sizeof(detail)),
                 WS_ENOTFOUND);
    cr_assert(strstr(detail, MISSING) != NULL, "%s", detail);
    /* SQLite is untouched by the missing engine. */
    char url[4200];
    snprintf(url, sizeof(url), "sqlite:%s/b.db", tmpdir);
    ws_db_opts so = {.url = url, .pool_size = 1};
    cr_assert_eq(ws_db_open(&so, &db), WS_OK);
    ws_db_close(db);
    assert_no_pg_mapped(getpid(), "a process without the module");
}

/* ---- the services as they run ------------------------------------------- */

static harness_broker broker;

static void svc_up(void)
{
    tmp_up();
    /* The services listen and dial on loopback tcp:// here. */
    setenv("WEBSHOP_INVENTORY_RPC_PLAINTEXT", "true", 1);
    setenv("WEBSHOP_ORDER_RPC_PLAINTEXT", "true", 1);
    cr_assert_eq(harness_broker_start(&broker, tmpdir, NULL), 0);
}

static void svc_down(void)
{
    harness_broker_stop(&broker, SIGTERM);
    tmp_down();
}

static bool port_open(void *ctx)
{
    const int *port = ctx;
    return harness_port_open(*port);
}

/* Start exe on an SQLite file in tmpdir (and the broker), with flag and
 * value appended when flag is not NULL; wait until its RPC port accepts,
 * i.e. its database is open. */
static void svc_start(harness_proc *p, const char *exe, const char *name,
                      const char *flag, const char *value)
{
    char db[4200], log[4200], broker_addr[32], rpc[64], http[16];
    snprintf(db, sizeof(db), "%s/%s.db", tmpdir, name);
    snprintf(log, sizeof(log), "%s/%s.log", tmpdir, name);
    snprintf(broker_addr, sizeof(broker_addr), "127.0.0.1:%d", broker.port);
    int rpc_port = harness_port_reserve();
    int http_port = harness_port_reserve();
    cr_assert_gt(rpc_port, 0);
    cr_assert_gt(http_port, 0);
    snprintf(rpc, sizeof(rpc), "tcp://127.0.0.1:%d", rpc_port);
    snprintf(http, sizeof(http), "%d", http_port);
    char *const argv[] = {
        (char *)exe, "--db-path",   db,   "--broker",   broker_addr,   "--rpc-url",
        rpc,         "--http-port", http, (char *)flag, (char *)value, NULL};
    cr_assert_eq(harness_proc_spawn(p, argv, log), 0);
    cr_assert(harness_wait_until(port_open, &rpc_port, WAIT_MS), "%s did not serve",
              name);
}

TestSuite(db_module_services, .init = svc_up, .fini = svc_down, .timeout = 90);

Test(db_module_services, services_on_sqlite_map_no_libpq)
{
    harness_proc inv = {0}, ord = {0};
    svc_start(&inv, INVENTORY_EXE, "inventory", NULL, NULL);
    /* The order service's inventory URL need not answer for it to start. */
    svc_start(&ord, ORDER_EXE, "order", "--inventory-url", "tcp://127.0.0.1:1");
    assert_no_pg_mapped(inv.pid, "webshop-inventory");
    assert_no_pg_mapped(ord.pid, "webshop-order");
    cr_assert_eq(harness_proc_stop(&ord, SIGTERM, WAIT_MS), 0);
    cr_assert_eq(harness_proc_stop(&inv, SIGTERM, WAIT_MS), 0);
    cr_assert(WIFEXITED(inv.status) && WEXITSTATUS(inv.status) == 0);
    cr_assert(WIFEXITED(ord.status) && WEXITSTATUS(ord.status) == 0);
}

static bool exited(void *ctx)
{
    return !harness_proc_alive(ctx);
}

/* A text file's first 64 KiB into buf; "" when it cannot be read. */
static void read_text(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    size_t n = f != NULL ? fread(buf, 1, cap - 1, f) : 0;
    buf[n] = '\0';
    if (f != NULL) {
        fclose(f);
    }
}

Test(db_module_services, service_without_the_module_exits_saying_so)
{
    char log[4200], broker_addr[32], rpc[64], http[16];
    snprintf(log, sizeof(log), "%s/inventory.log", tmpdir);
    snprintf(broker_addr, sizeof(broker_addr), "127.0.0.1:%d", broker.port);
    snprintf(rpc, sizeof(rpc), "tcp://127.0.0.1:%d", harness_port_reserve());
    snprintf(http, sizeof(http), "%d", harness_port_reserve());
    char *const argv[] = {
        INVENTORY_EXE, "--db-url",    "postgresql://webshop@127.0.0.1:1/none",
        "--broker",    broker_addr,   "--rpc-url",
        rpc,           "--http-port", http,
        NULL};
    setenv("WEBSHOP_DB_PG_MODULE", MISSING, 1);
    harness_proc p = {0};
    cr_assert_eq(harness_proc_spawn(&p, argv, log), 0);
    unsetenv("WEBSHOP_DB_PG_MODULE");
    /* Quickly: a missing engine is not waited for like a server. */
    cr_assert(harness_wait_until(exited, &p, 10000), "still running without its engine");
    cr_assert(WIFEXITED(p.status) && WEXITSTATUS(p.status) != 0);
    static char text[65536];
    read_text(log, text, sizeof(text));
    cr_assert(strstr(text, "event=db_engine_unavailable") != NULL, "%s", text);
    cr_assert(strstr(text, MISSING) != NULL, "%s", text);
}
