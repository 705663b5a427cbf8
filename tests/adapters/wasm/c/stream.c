/* stream: like chat, but compute_single / get_output_single one token at a time until
 * end_of_sequence; each piece goes to stdout as it comes, the usage JSON to stderr. */
#include "nn.h"

static char piece[1 << 12], usage[1 << 12];

int main(int argc, char **argv) {
    const char *prompt = argc > 1 ? argv[1] : "Once upon a time";
    const char *metadata = argc > 2 ? argv[2] : NN_DEFAULT_METADATA;
    uint32_t graph, ctx, piece_len, usage_len;

    NN_CHECK(nn_load_alias(NN_DEFAULT_ALIAS, NN_DEFAULT_CONFIG, &graph));
    NN_CHECK(nn_new_context(graph, &ctx));
    NN_CHECK(nn_set_text(ctx, 0, prompt));
    NN_CHECK(nn_set_text(ctx, 1, metadata));
    for (;;) {
        int32_t rc = nn_compute_single(ctx);
        if (rc == NN_END_OF_SEQUENCE) break;
        NN_CHECK(rc);
        NN_CHECK(nn_get_output_single(ctx, 0, NN_PTR(piece), sizeof piece, NN_PTR(&piece_len)));
        fwrite(piece, 1, piece_len, stdout);
        fflush(stdout);
    }
    NN_CHECK(nn_get_output_single(ctx, 1, NN_PTR(usage), sizeof usage, NN_PTR(&usage_len)));
    fwrite(usage, 1, usage_len, stderr);
    NN_CHECK(nn_fini_single(ctx));
    return 0;
}
