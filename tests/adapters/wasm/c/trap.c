/* trap: sets up a context and a prompt, then traps with unreachable (no cleanup). */
#include "nn.h"

int main(int argc, char **argv) {
    uint32_t graph, ctx;
    NN_CHECK(nn_load_alias(NN_DEFAULT_ALIAS, NN_DEFAULT_CONFIG, &graph));
    NN_CHECK(nn_new_context(graph, &ctx));
    NN_CHECK(nn_set_text(ctx, 0, argc > 1 ? argv[1] : "Once upon a time"));
    __builtin_trap();
}
