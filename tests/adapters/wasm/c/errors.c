/* errors: calls that must fail with a specific errno while the guest carries on. Prints one
 * "name=value" line per check; exits 0 once every call has returned (whatever it returned). */
#include "nn.h"

static char text[1 << 12];

static void report(const char *name, int32_t value) { printf("%s=%d\n", name, (int)value); }

int main(void) {
    uint32_t graph = 0, ctx = 0, written = 0, unknown_graph = 0;
    const char *unknown = "no-such-model";

    /* An unknown alias: the host's code for it, nothing written to the out-pointer. */
    report("unknown_alias", nn_load_by_name(NN_PTR(unknown), strlen(unknown),
                                            NN_PTR(&unknown_graph)));
    report("load", nn_load_alias(NN_DEFAULT_ALIAS, NN_DEFAULT_CONFIG, &graph));
    report("init", nn_new_context(graph, &ctx));

    /* A tensor pointer past the end of linear memory (and one that straddles it). */
    report("bad_tensor_ptr", nn_set_input(ctx, 0, 0xFFFFFFF0u));
    report("straddling_tensor_ptr", nn_set_input(ctx, 0, 0xFFFFFFFFu - 10));
    /* A well-formed tensor whose data pointer is out of bounds. */
    uint32_t dims[1] = {16};
    nn_tensor bad_data = {NN_PTR(dims), 1, NN_TENSOR_U8, 0xFFFFFF00u, 0x1000};
    report("bad_data_ptr", nn_set_input(ctx, 0, NN_PTR(&bad_data)));

    /* The context still works after the bad calls. */
    report("set_prompt", nn_set_text(ctx, 0, "Once upon a time"));
    report("set_metadata", nn_set_text(ctx, 1, NN_DEFAULT_METADATA));
    report("compute", nn_compute(ctx));

    /* Too small a buffer: too_large, and the size needed in bytes_written. */
    written = 0;
    report("small_buffer", nn_get_output(ctx, 0, NN_PTR(text), 1, NN_PTR(&written)));
    report("needed", (int32_t)written);
    uint32_t needed = written;
    written = 0;
    report("full_buffer", nn_get_output(ctx, 0, NN_PTR(text), sizeof text, NN_PTR(&written)));
    report("full_written", (int32_t)written);
    report("matches_needed", written == needed);
    /* An output pointer out of bounds. */
    report("bad_out_ptr", nn_get_output(ctx, 0, 0xFFFFFF00u, 0x1000, NN_PTR(&written)));
    /* An unknown context handle. */
    report("unknown_context", nn_compute(ctx + 1000));
    fwrite(text, 1, needed < sizeof text ? needed : 0, stdout);
    fputc('\n', stdout);
    return 0;
}
