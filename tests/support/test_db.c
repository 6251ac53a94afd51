/*
 * Fresh databases for tests (test_db.h), made through lib/db itself: on
 * PostgreSQL a pool of one connection to the run's cluster says CREATE
 * DATABASE (outside a transaction, as it must be).
 */
#include "test_db.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db.h"

static atomic_int test_db_seq;

bool test_db_is_pg(void)
{
    const char *u = getenv("WS_TEST_PG_URL");
    return u != NULL && u[0] != '\0';
}

const char *test_db_engine(void)
{
    return test_db_is_pg() ? "postgresql" : "sqlite";
}

/* Run one statement on the cluster's maintenance database. */
static int test_db_admin(const char *sql)
{
    ws_db *db = NULL;
    ws_db_opts o = {.url = getenv("WS_TEST_PG_URL"), .pool_size = 1};
    if (ws_db_open(&o, &db) != WS_OK) {
        fprintf(stderr, "test_db: cannot open %s\n", o.url);
        return -1;
    }
    ws_db_conn *c = NULL;
    ws_err err = ws_db_acquire(db, &c);
    if (err == WS_OK) {
        err = ws_db_exec(c, sql);
        if (err != WS_OK) {
            fprintf(stderr, "test_db: %s: %s\n", sql, ws_db_last_error(c)->message);
        }
        ws_db_release(c);
    }
    ws_db_close(db);
    return err == WS_OK ? 0 : -1;
}

int test_db_fresh(char *url, size_t cap)
{
    int n = atomic_fetch_add(&test_db_seq, 1);
    if (test_db_is_pg()) {
        char name[64], sql[160];
        snprintf(name, sizeof(name), "t_%ld_%d", (long)getpid(), n);
        snprintf(sql, sizeof(sql), "CREATE DATABASE %s TEMPLATE template0", name);
        if (test_db_admin(sql) != 0) {
            return -1;
        }
        /* The cluster's URL is a keyword string; a later dbname= wins. */
        int w = snprintf(url, cap, "%s dbname=%s", getenv("WS_TEST_PG_URL"), name);
        return w > 0 && (size_t)w < cap ? 0 : -1;
    }
    char dir[] = "/tmp/ws-test-db-XXXXXX";
    if (mkdtemp(dir) == NULL) {
        perror("test_db: mkdtemp");
        return -1;
    }
    int w = snprintf(url, cap, "sqlite:%s/test.db", dir);
    return w > 0 && (size_t)w < cap ? 0 : -1;
}

void test_db_cleanup(const char *url)
{
    if (url == NULL || url[0] == '\0') {
        return;
    }
    if (strncmp(url, "sqlite:", 7) == 0) {
        const char *path = url + 7;
        static const char *const suffix[] = {"", "-wal", "-shm", "-journal"};
        char p[512];
        for (size_t i = 0; i < sizeof(suffix) / sizeof(suffix[0]); i++) {
            snprintf(p, sizeof(p), "%s%s", path, suffix[i]);
            unlink(p);
        }
        const char *slash = strrchr(path, '/');
        if (slash != NULL && (size_t)(slash - path) < sizeof(p)) {
            memcpy(p, path, (size_t)(slash - path));
            p[slash - path] = '\0';
            rmdir(p);
        }
        return;
    }
    const char *db = strstr(url, " dbname=t_");
    if (db != NULL && test_db_is_pg()) {
        char sql[160];
        snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s", db + 8);
        test_db_admin(sql);
    }
}
