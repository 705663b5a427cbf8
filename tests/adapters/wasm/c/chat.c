/* chat: load "default" -> one context -> prompt (argv[1]) + metadata (argv[2] or the default)
 * -> compute -> text on stdout, usage JSON on stderr. Exit code: the first failing errno. */
#include "nn.h"

static char text[1 << 16], usage[1 << 12];

int main(int argc, char **argv) {
    const char *prompt = argc > 1 ? argv[1] : "Once upon a time";
    const char *metadata = argc > 2 ? argv[2] : NN_DEFAULT_METADATA;
    uint32_t graph, ctx, text_len, usage_len;

    NN_CHECK(nn_load_alias(NN_DEFAULT_ALIAS, NN_DEFAULT_CONFIG, &graph));
    NN_CHECK(nn_new_context(graph, &ctx));
    NN_CHECK(nn_set_text(ctx, 0, prompt));
    NN_CHECK(nn_set_text(ctx, 1, metadata));
    NN_CHECK(nn_compute(ctx));
    NN_CHECK(nn_get_output(ctx, 0, NN_PTR(text), sizeof text, NN_PTR(&text_len)));
    NN_CHECK(nn_get_output(ctx, 1, NN_PTR(usage), sizeof usage, NN_PTR(&usage_len)));
    fwrite(text, 1, text_len, stdout);
    fwrite(usage, 1, usage_len, stderr);
    NN_CHECK(nn_finalize_execution_context(ctx));
    return 0;
}
