"""One sequence sampled token by token through llm.Sampler on a bare Context (tests of the
sampler chain and grammars, below the engine)."""
from __future__ import annotations

from wasi_nn_backend.llm.batch import Batch
from wasi_nn_backend.llm.sampler import Sampler


def sample_text(ctx, params, prompt: str, steps: int) -> tuple[str, bool]:
    """(text, finished): the text sampled after ``prompt`` until EOG or ``steps`` tokens;
    finished is True when the model ended with EOG."""
    model, batch = ctx.model, Batch(64)
    ctx.seq_rm(0)
    tokens = model.tokenize(prompt, add_special=True, parse_special=True)
    with Sampler(model, params, n_ctx=512) as sampler:
        sampler.accept_prompt(tokens)
        index, pos, out = batch.add_sequence(tokens, 0, 0), len(tokens), []
        for _ in range(steps):
            assert ctx.decode(batch) == 0
            token = sampler.sample(ctx, index)
            if model.is_eog(token):
                return model.detokenize(out), True
            out.append(token)
            batch.clear()
            index = batch.add(token, pos, 0, True)
            pos += 1
    return model.detokenize(out), False
