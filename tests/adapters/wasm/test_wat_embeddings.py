"""A WAT guest loads the tiny model with WasmEdge's {"embedding": true} and reads the embedding
JSON with get_output, as WasmEdge's wasmedge-ggml embedding example does: the same bytes the
Python API gives."""
from __future__ import annotations

import json

from wasi_nn_backend.api.backend import Backend
from wasi_nn_backend.api.exec_context import embedding_json

SUCCESS, UNSUPPORTED_OPERATION = 0, 6
CONFIG = b'{"embedding": true, "ctx-size": 128, "threads": 1}'
LOAD_WITH_CONFIG = ("(call $rec (call $load_by_name_with_config (i32.const {alias}) "
                    "(i32.const {alias_len}) (i32.const {config}) (i32.const {config_len}) "
                    "(i32.const {GRAPH})))")
COMPUTE_SINGLE = "(call $rec (call $compute_single (i32.load (i32.const {CTX}))))"


def test_a_guest_reads_wasmedges_embedding_json(nn_host, wat, tiny_model_path):
    body = "\n".join([LOAD_WITH_CONFIG, wat.NEW_CONTEXT, wat.SET_PROMPT, wat.COMPUTE,
                      wat.GET_TEXT, COMPUTE_SINGLE])
    run = wat.run(body, {**wat.CHAT_DATA, "config": CONFIG}, host=nn_host)

    assert run.values == [SUCCESS] * 5 + [UNSUPPORTED_OPERATION]
    document = json.loads(run.stdout)
    assert document["n_embedding"] == 64 == len(document["embedding"])
    with Backend({"logging": {"level": "error"}}) as backend:
        graph = backend.load(tiny_model_path, CONFIG)
        expected = embedding_json(graph.session().embed(wat.PROMPT.decode()))
    assert run.stdout == expected
