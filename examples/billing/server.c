/*
 * billing-server URL: serves acme.billing.v1.Billing on URL (tcp://HOST:0
 * picks a free port) with the webshop SDK, prints the URL it listens on as
 * its first line of stdout, and stops at SIGTERM or SIGINT.
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <webshop/rpc_server.h>

#include "billing.rpc.h"

#define MAX_ACCOUNTS 64

typedef struct ledger {
    pthread_mutex_t mu;
    char names[MAX_ACCOUNTS][64];
    int64_t cents[MAX_ACCOUNTS];
    int n;
} ledger;

/* The account's slot, made when create is set; -1 when full or unknown. */
static int ledger_slot(ledger *l, const char *name, int create)
{
    for (int i = 0; i < l->n; i++) {
        if (strcmp(l->names[i], name) == 0) {
            return i;
        }
    }
    if (!create || l->n == MAX_ACCOUNTS) {
        return -1;
    }
    snprintf(l->names[l->n], sizeof(l->names[0]), "%s", name);
    l->cents[l->n] = 0;
    return l->n++;
}

static ws_rpc_code billing_charge(void *ctx, const Acme__Billing__V1__ChargeRequest *req,
                                  Acme__Billing__V1__ChargeReply **resp, ws_rpc_call *call)
{
    ledger *l = ctx;
    if (req->account[0] == '\0' || strlen(req->account) >= sizeof(l->names[0])) {
        ws_rpc_call_set_message(call, "account: must be 1..63 characters");
        return WS_RPC_INVALID_ARGUMENT;
    }
    if (req->cents < 1) {
        ws_rpc_call_set_message(call, "cents: must be at least 1");
        return WS_RPC_INVALID_ARGUMENT;
    }
    Acme__Billing__V1__ChargeReply *r = malloc(sizeof(*r));
    if (r == NULL) {
        return WS_RPC_RESOURCE_EXHAUSTED;
    }
    acme__billing__v1__charge_reply__init(r);
    /* Freed with the reply (free_unpacked), so from the heap too. */
    r->charged_at = malloc(sizeof(*r->charged_at));
    if (r->charged_at == NULL) {
        free(r);
        return WS_RPC_RESOURCE_EXHAUSTED;
    }
    google__protobuf__timestamp__init(r->charged_at);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    r->charged_at->seconds = now.tv_sec;
    r->charged_at->nanos = (int32_t)now.tv_nsec;
    pthread_mutex_lock(&l->mu);
    int i = ledger_slot(l, req->account, 1);
    if (i >= 0) {
        l->cents[i] += req->cents;
        r->balance_cents = l->cents[i];
    }
    pthread_mutex_unlock(&l->mu);
    if (i < 0) {
        acme__billing__v1__charge_reply__free_unpacked(r, NULL);
        ws_rpc_call_set_message(call, "no room for another account");
        return WS_RPC_RESOURCE_EXHAUSTED;
    }
    *resp = r;
    return WS_RPC_OK;
}

static ws_rpc_code billing_get_balance(void *ctx,
                                       const Acme__Billing__V1__GetBalanceRequest *req,
                                       Acme__Billing__V1__GetBalanceReply **resp,
                                       ws_rpc_call *call)
{
    (void)call;
    ledger *l = ctx;
    Acme__Billing__V1__GetBalanceReply *r = malloc(sizeof(*r));
    if (r == NULL) {
        return WS_RPC_RESOURCE_EXHAUSTED;
    }
    acme__billing__v1__get_balance_reply__init(r);
    pthread_mutex_lock(&l->mu);
    int i = ledger_slot(l, req->account, 0);
    r->balance_cents = i >= 0 ? l->cents[i] : 0;
    pthread_mutex_unlock(&l->mu);
    *resp = r;
    return WS_RPC_OK;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: billing-server URL\n");
        return 2;
    }
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);

    static ledger l = {.mu = PTHREAD_MUTEX_INITIALIZER};
    const acme_billing_v1_billing_server impl = {
        .ctx = &l, .charge = billing_charge, .get_balance = billing_get_balance};
    ws_rpc_server_opts o = {.url = argv[1]};
    ws_rpc_server *srv = NULL;
    ws_err err = ws_rpc_server_open(&o, &srv);
    if (err == WS_OK) {
        err = acme_billing_v1_billing_register(srv, &impl);
    }
    if (err == WS_OK) {
        err = ws_rpc_server_start(srv);
    }
    if (err != WS_OK) {
        fprintf(stderr, "billing-server: %s: %s\n", argv[1], ws_strerror(err));
        ws_rpc_server_close(srv);
        return 1;
    }
    printf("%s\n", ws_rpc_server_url(srv));
    fflush(stdout);
    int sig = 0;
    sigwait(&stop, &sig);
    ws_rpc_server_close(srv);
    return 0;
}
