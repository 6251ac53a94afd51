/*
 * The bench over TLS; see tls.h.
 */
#include "tls.h"

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nng/supplemental/tls/tls.h>

#define TLS_DIR_ENV "WEBSHOP_BENCH_TLS_DIR"

static bool tls_on;
static char broker_ca[PATH_MAX], broker_cert[PATH_MAX], broker_key[PATH_MAX];
static char certs_dir[PATH_MAX]; /* made by this process; empty when none */

void bench_tls_set(bool on)
{
    tls_on = on;
}

bool bench_tls_on(void)
{
    return tls_on;
}

void bench_tls_broker_fact(const char *key, const char *value)
{
    char *dst = strcmp(key, "broker_tls_ca") == 0     ? broker_ca
                : strcmp(key, "broker_tls_cert") == 0 ? broker_cert
                : strcmp(key, "broker_tls_key") == 0  ? broker_key
                                                      : NULL;
    if (dst != NULL) {
        snprintf(dst, PATH_MAX, "%s", value);
    }
}

int bench_tls_mosq(struct mosquitto *m)
{
    if (broker_ca[0] == '\0') {
        return 0;
    }
    int rc = mosquitto_tls_set(m, broker_ca, NULL, broker_cert, broker_key, NULL);
    if (rc != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "bench: broker TLS (%s): %s\n", broker_cert,
                mosquitto_strerror(rc));
        return -1;
    }
    return 0;
}

int bench_tls_certs_make(const char *script)
{
    char tool[PATH_MAX];
    const char *slash = strrchr(script, '/');
    int dlen = slash != NULL ? (int)(slash - script) : 1;
    snprintf(tool, sizeof(tool), "%.*s/shop_ca", dlen, slash != NULL ? script : ".");
    snprintf(certs_dir, sizeof(certs_dir), "/tmp/webshop-bench-tls-XXXXXX");
    if (mkdtemp(certs_dir) == NULL) {
        certs_dir[0] = '\0';
        perror("bench: mkdtemp");
        return -1;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        /* shop_ca chatters on stdout: keep the bench's table clean. */
        dup2(STDERR_FILENO, STDOUT_FILENO);
        execl(tool, tool, certs_dir, (char *)NULL);
        _exit(127);
    }
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) ||
        WEXITSTATUS(st) != 0) {
        fprintf(stderr, "bench: %s %s failed\n", tool, certs_dir);
        bench_tls_certs_remove();
        return -1;
    }
    setenv(TLS_DIR_ENV, certs_dir, 1);
    return 0;
}

void bench_tls_certs_remove(void)
{
    if (certs_dir[0] == '\0') {
        return;
    }
    DIR *d = opendir(certs_dir);
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            char p[PATH_MAX + 256];
            snprintf(p, sizeof(p), "%s/%s", certs_dir, e->d_name);
            unlink(p);
        }
    }
    if (d != NULL) {
        closedir(d);
    }
    rmdir(certs_dir);
    unsetenv(TLS_DIR_ENV);
    certs_dir[0] = '\0';
}

/* The whole of file, NUL-terminated (free it); NULL when unreadable. */
static char *tls_slurp(const char *dir, const char *name)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "r");
    char *buf = NULL;
    long n = -1;
    if (f != NULL && fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 &&
        fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1)) != NULL) {
        buf[fread(buf, 1, (size_t)n, f)] = '\0';
    }
    if (f != NULL) {
        fclose(f);
    }
    if (buf == NULL) {
        fprintf(stderr, "bench: cannot read %s\n", path);
    }
    return buf;
}

/* A configuration for one end: leaf `who` (who.crt, who.key), trusting
 * ca (a file of the directory). */
static int tls_config(nng_tls_config **out, bool server, const char *who, const char *ca)
{
    const char *dir = getenv(TLS_DIR_ENV);
    if (dir == NULL || dir[0] == '\0') {
        fprintf(stderr, "bench: no %s for the TLS ceiling\n", TLS_DIR_ENV);
        return NNG_EINVAL;
    }
    char crt[96], key[96], cafile[PATH_MAX];
    snprintf(crt, sizeof(crt), "%s.crt", who);
    snprintf(key, sizeof(key), "%s.key", who);
    snprintf(cafile, sizeof(cafile), "%s/%s", dir, ca);
    char *crt_pem = tls_slurp(dir, crt);
    char *key_pem = tls_slurp(dir, key);
    int rv = crt_pem == NULL || key_pem == NULL ? NNG_ENOENT : 0;
    if (rv == 0) {
        rv =
            nng_tls_config_alloc(out, server ? NNG_TLS_MODE_SERVER : NNG_TLS_MODE_CLIENT);
    }
    if (rv == 0 &&
        ((rv = nng_tls_config_auth_mode(*out, NNG_TLS_AUTH_MODE_REQUIRED)) != 0 ||
         (rv = nng_tls_config_ca_file(*out, cafile)) != 0 ||
         (rv = nng_tls_config_own_cert(*out, crt_pem, key_pem, NULL)) != 0 ||
         (!server && (rv = nng_tls_config_server_name(*out, "order")) != 0))) {
        nng_tls_config_free(*out);
    }
    free(crt_pem);
    free(key_pem);
    return rv;
}

int bench_tls_listen(nng_socket sock, char *url, size_t cap)
{
    nng_tls_config *cfg;
    int rv = tls_config(&cfg, true, "order", "front-ca.crt");
    if (rv != 0) {
        return rv;
    }
    nng_listener l;
    int port = 0;
    if ((rv = nng_listener_create(&l, sock, "tls+tcp://127.0.0.1:0")) == 0) {
        if ((rv = nng_listener_set_ptr(l, NNG_OPT_TLS_CONFIG, cfg)) != 0 ||
            (rv = nng_listener_set_bool(l, NNG_OPT_TCP_NODELAY, true)) != 0 ||
            (rv = nng_listener_start(l, 0)) != 0 ||
            (rv = nng_listener_get_int(l, NNG_OPT_TCP_BOUND_PORT, &port)) != 0) {
            nng_listener_close(l);
        }
    }
    nng_tls_config_free(cfg); /* the listener holds its own reference */
    if (rv == 0) {
        snprintf(url, cap, "tls+tcp://127.0.0.1:%d", port);
    }
    return rv;
}

int bench_tls_dial(nng_socket sock, const char *url)
{
    nng_tls_config *cfg;
    int rv = tls_config(&cfg, false, "front", "ca.crt");
    if (rv != 0) {
        return rv;
    }
    nng_dialer d;
    if ((rv = nng_dialer_create(&d, sock, url)) == 0) {
        if ((rv = nng_dialer_set_ptr(d, NNG_OPT_TLS_CONFIG, cfg)) != 0 ||
            (rv = nng_dialer_set_bool(d, NNG_OPT_TCP_NODELAY, true)) != 0 ||
            (rv = nng_dialer_start(d, 0)) != 0) {
            nng_dialer_close(d);
        }
    }
    nng_tls_config_free(cfg);
    return rv;
}
