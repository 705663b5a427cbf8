/* The wasi_ephemeral_nn imports (witx era, core wasm) and small helpers for test guests.
 * Every import takes i32 parameters and returns an i32 errno in witx numbering. */
#ifndef NN_H
#define NN_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define NN_IMPORT(name) __attribute__((import_module("wasi_ephemeral_nn"), import_name(#name)))

enum {
    NN_SUCCESS = 0, NN_INVALID_ARGUMENT = 1, NN_INVALID_ENCODING = 2, NN_BUSY = 4,
    NN_RUNTIME_ERROR = 5, NN_UNSUPPORTED = 6, NN_TOO_LARGE = 7, NN_NOT_FOUND = 8,
    NN_END_OF_SEQUENCE = 100, NN_CONTEXT_FULL = 101, NN_PROMPT_TOO_LONG = 102,
    NN_MODEL_NOT_FOUND = 103,
};
enum { NN_TENSOR_U8 = 3 };

/* The 20-byte tensor record set_input reads from guest memory. */
typedef struct {
    uint32_t dims_ptr, dims_len, type, data_ptr, data_len;
} nn_tensor;

/* Pointers are plain i32 in wasm32; uint32_t parameters let a guest pass bad ones on purpose. */
NN_IMPORT(load_by_name) int32_t nn_load_by_name(uint32_t name, uint32_t name_len,
                                                uint32_t graph_out);
NN_IMPORT(load_by_name_with_config) int32_t nn_load_by_name_with_config(
    uint32_t name, uint32_t name_len, uint32_t config, uint32_t config_len, uint32_t graph_out);
NN_IMPORT(init_execution_context) int32_t nn_init_execution_context(uint32_t graph,
                                                                    uint32_t ctx_out);
NN_IMPORT(set_input) int32_t nn_set_input(uint32_t ctx, uint32_t index, uint32_t tensor);
NN_IMPORT(compute) int32_t nn_compute(uint32_t ctx);
NN_IMPORT(get_output) int32_t nn_get_output(uint32_t ctx, uint32_t index, uint32_t out,
                                            uint32_t out_max_len, uint32_t written_out);
NN_IMPORT(compute_single) int32_t nn_compute_single(uint32_t ctx);
NN_IMPORT(get_output_single) int32_t nn_get_output_single(uint32_t ctx, uint32_t index,
                                                          uint32_t out, uint32_t out_max_len,
                                                          uint32_t written_out);
NN_IMPORT(fini_single) int32_t nn_fini_single(uint32_t ctx);
NN_IMPORT(unload) int32_t nn_unload(uint32_t graph);
NN_IMPORT(finalize_execution_context) int32_t nn_finalize_execution_context(uint32_t ctx);

#define NN_PTR(p) ((uint32_t)(uintptr_t)(p))

/* Settings every test guest uses: greedy, exactly 8 tokens. */
#define NN_DEFAULT_ALIAS "default"
#define NN_DEFAULT_CONFIG "{\"ctx-size\":256}"
#define NN_DEFAULT_METADATA "{\"temperature\":0,\"n-predict\":8,\"ignore-eos\":true}"

static inline int32_t nn_load_alias(const char *alias, const char *config, uint32_t *graph) {
    return nn_load_by_name_with_config(NN_PTR(alias), strlen(alias), NN_PTR(config),
                                       strlen(config), NN_PTR(graph));
}

static inline int32_t nn_new_context(uint32_t graph, uint32_t *ctx) {
    return nn_init_execution_context(graph, NN_PTR(ctx));
}

/* set_input with a u8 tensor of dims [len] holding the text. */
static inline int32_t nn_set_text(uint32_t ctx, uint32_t index, const char *text) {
    static uint32_t dims[1];
    dims[0] = strlen(text);
    nn_tensor tensor = {NN_PTR(dims), 1, NN_TENSOR_U8, NN_PTR(text), dims[0]};
    return nn_set_input(ctx, index, NN_PTR(&tensor));
}

/* Stop at the first failure: the guest exits with that errno and names the call on stderr. */
#define NN_CHECK(call) do { \
        int32_t rc_ = (call); \
        if (rc_ != NN_SUCCESS) { fprintf(stderr, "%s -> %d\n", #call, (int)rc_); return rc_; } \
    } while (0)

#endif
