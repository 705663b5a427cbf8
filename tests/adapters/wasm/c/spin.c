/* spin: sets up a context and a prompt, then loops forever without calling the host; only the
 * host's time limit ends it. */
#include "nn.h"

int main(int argc, char **argv) {
    uint32_t graph, ctx;
    NN_CHECK(nn_load_alias(NN_DEFAULT_ALIAS, NN_DEFAULT_CONFIG, &graph));
    NN_CHECK(nn_new_context(graph, &ctx));
    NN_CHECK(nn_set_text(ctx, 0, argc > 1 ? argv[1] : "Once upon a time"));
    for (volatile uint64_t spins = 0;; spins++) {
    }
}
