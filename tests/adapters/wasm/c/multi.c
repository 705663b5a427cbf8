/* multi: one context per prompt (argv[1..], at most 4), streamed round-robin with
 * compute_single so all of them are in flight together. Prints each context's text followed
 * by a NUL byte, in argv order. */
#include "nn.h"

#define MAX_CONTEXTS 4

static char text[MAX_CONTEXTS][1 << 12];
static uint32_t text_len[MAX_CONTEXTS];

int main(int argc, char **argv) {
    int count = argc - 1 < MAX_CONTEXTS ? argc - 1 : MAX_CONTEXTS;
    uint32_t graph, ctx[MAX_CONTEXTS], written;
    int done[MAX_CONTEXTS] = {0}, remaining = count;

    NN_CHECK(nn_load_alias(NN_DEFAULT_ALIAS, NN_DEFAULT_CONFIG, &graph));
    for (int i = 0; i < count; i++) {
        NN_CHECK(nn_new_context(graph, &ctx[i]));
        NN_CHECK(nn_set_text(ctx[i], 0, argv[i + 1]));
        NN_CHECK(nn_set_text(ctx[i], 1, NN_DEFAULT_METADATA));
    }
    while (remaining > 0) {
        for (int i = 0; i < count; i++) {
            if (done[i]) continue;
            int32_t rc = nn_compute_single(ctx[i]);
            if (rc == NN_END_OF_SEQUENCE) { done[i] = 1; remaining--; continue; }
            NN_CHECK(rc);
            uint32_t room = sizeof text[i] - text_len[i];
            NN_CHECK(nn_get_output_single(ctx[i], 0, NN_PTR(text[i] + text_len[i]), room,
                                          NN_PTR(&written)));
            text_len[i] += written;
        }
    }
    for (int i = 0; i < count; i++) {
        fwrite(text[i], 1, text_len[i], stdout);
        fputc('\0', stdout);
        NN_CHECK(nn_fini_single(ctx[i]));
    }
    return 0;
}
