/*
 * A protoc plugin's command line; see plugin_cli.h.
 */
#include "plugin_cli.h"

#include <string.h>

int plugin_cli(const char *prog, const char *version, const char *help, int argc,
               char **argv, int in_is_tty, FILE *out, FILE *err)
{
    if (argc > 2) {
        fprintf(err, "%s: too many arguments (try --help)\n", prog);
        return 2;
    }
    if (argc == 2) {
        const char *a = argv[1];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            /* protoc's flags are named after the part past "protoc-gen-". */
            const char *name = strncmp(prog, "protoc-gen-", 11) == 0 ? prog + 11 : prog;
            fprintf(out,
                    "usage: protoc --plugin=%s=PATH --%s_out=DIR [--%s_opt=PARAMS] "
                    "FILE.proto...\n"
                    "       %s --help | --version\n\n%s",
                    prog, name, name, prog, help);
            return 0;
        }
        if (strcmp(a, "--version") == 0) {
            fprintf(out, "%s %s\n", prog, version);
            return 0;
        }
        fprintf(err, "%s: unknown argument '%s' (try --help)\n", prog, a);
        return 2;
    }
    if (in_is_tty) {
        fprintf(err,
                "%s: a protoc plugin: protoc runs it and sends a CodeGeneratorRequest on "
                "stdin (try --help)\n",
                prog);
        return 2;
    }
    return PLUGIN_CLI_RUN;
}
