/*
 * billing-client URL ACCOUNT CENTS: charges ACCOUNT through the server at
 * URL and prints the balance the charge left and the one GetBalance reads
 * back ("balance=N read=N"), then the charge's reply in its proto3 JSON
 * form ("reply={...}", its charged_at an RFC 3339 string). A status other
 * than OK is printed as "CODE: message" on stderr, exit 1.
 */
#include <stdio.h>
#include <stdlib.h>

#include <webshop/json.h>
#include <webshop/rpc_client.h>

#include "billing.rpc.h"

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: billing-client URL ACCOUNT CENTS\n");
        return 2;
    }
    const char *urls[] = {argv[1]};
    ws_rpc_client_opts o = {.urls = urls, .n_urls = 1};
    ws_rpc_client *c = NULL;
    if (ws_rpc_client_open(&o, &c) != WS_OK) {
        fprintf(stderr, "billing-client: bad URL %s\n", argv[1]);
        return 2;
    }
    Acme__Billing__V1__ChargeRequest req = ACME__BILLING__V1__CHARGE_REQUEST__INIT;
    req.account = argv[2];
    req.cents = strtoll(argv[3], NULL, 10);
    req.purpose = ACME__BILLING__V1__PURPOSE__PURPOSE_ORDER;
    Acme__Billing__V1__ChargeReply *resp = NULL;
    char msg[WS_RPC_MSG_LEN];
    ws_rpc_code code =
        acme_billing_v1_billing_charge_ex(c, &req, &resp, 5000, msg, sizeof(msg));
    if (code != WS_RPC_OK) {
        fprintf(stderr, "%s: %s\n", ws_rpc_code_name(code), msg);
        ws_rpc_client_close(c);
        return 1;
    }
    long long balance = (long long)resp->balance_cents;
    ws_buf json;
    ws_buf_init(&json, 0);
    int bad = resp->charged_at == NULL || ws_json_encode(&resp->base, 0, &json) != WS_OK;
    acme__billing__v1__charge_reply__free_unpacked(resp, NULL);
    if (bad) {
        fprintf(stderr, "billing-client: a reply without a time\n");
        ws_buf_fini(&json);
        ws_rpc_client_close(c);
        return 1;
    }

    Acme__Billing__V1__GetBalanceRequest get = ACME__BILLING__V1__GET_BALANCE_REQUEST__INIT;
    get.account = argv[2];
    Acme__Billing__V1__GetBalanceReply *got = NULL;
    code = acme_billing_v1_billing_get_balance_ex(c, &get, &got, 5000, msg, sizeof(msg));
    if (code != WS_RPC_OK) {
        fprintf(stderr, "%s: %s\n", ws_rpc_code_name(code), msg);
        ws_buf_fini(&json);
        ws_rpc_client_close(c);
        return 1;
    }
    printf("balance=%lld read=%lld\nreply=%s\n", balance, (long long)got->balance_cents,
           json.data);
    ws_buf_fini(&json);
    acme__billing__v1__get_balance_reply__free_unpacked(got, NULL);
    ws_rpc_client_close(c);
    return 0;
}
