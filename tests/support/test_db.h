/*
 * A fresh, empty database per test, on the engine the run was started for:
 * PostgreSQL when WS_TEST_PG_URL is set (the test runs under with_pg), else
 * SQLite. Tests that run on both engines register twice in
 * tests/meson.build: once plain (SQLite) and once wrapped in with_pg.
 *
 * On PostgreSQL each fresh database is a new database "t_<pid>_<n>" of the
 * run's cluster (CREATE DATABASE from template0, about 20 ms); the cluster
 * and everything in it go away with the run. On SQLite it is a new file
 * in a new temp dir, removed by test_db_cleanup.
 */
#ifndef WS_TEST_DB_H
#define WS_TEST_DB_H

#include <stdbool.h>
#include <stddef.h>

/* True when the run is on PostgreSQL. */
bool test_db_is_pg(void);

/* "postgresql" or "sqlite", for test names and log lines. */
const char *test_db_engine(void);

/* Make a fresh database and write its URL (for ws_db_opts.url, or a
 * service's --db-url) into url. Returns 0, or -1 with a line on stderr. */
int test_db_fresh(char *url, size_t cap);

/* Remove what test_db_fresh made for url (the SQLite file, its WAL and its
 * dir; a PostgreSQL database is dropped, failing quietly when a connection
 * is still open). url may be NULL or empty. */
void test_db_cleanup(const char *url);

#endif
