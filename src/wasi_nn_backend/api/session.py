"""A Session: one conversation on a graph, with its own KV sequence.

Two ways to drive it, both real:
* chat (``chat``, ``chat_stream``; the original's run_inference): the input is the user's
  message; the session keeps the history, applies the model's chat template, and only the new
  tokens are prefilled;
* completion (``complete``, ``complete_stream``; WASI-NN set_input/compute/get_output): the
  input is the whole prompt (text, or token ids a caller tokenized already); the longest
  prefix it shares with the sequence is reused.
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ..config import MAX_TIMEOUT_MS, RequestParams, parse_overrides
from ..core.clock import Clock
from ..core.request import Completion, SequenceState
from ..engine.streams import Stream
from ..errors import BackendRuntimeError, InvalidArgument, NotFound, WasiNnError
from .chat import Turn, continuation_tokens

if TYPE_CHECKING:
    from .models import LoadedModel

Overrides = dict[str, Any] | str | bytes | None
Prompt = str | bytes | Sequence[int]     # text, or token ids (list or tuple)


class SessionOwner(Protocol):
    """What a Session asks of the Backend that made it."""

    clock: Clock

    def close_session(self, session: Session) -> None: ...


class GraphRef(Protocol):
    """The graph a session was opened on, as the session sees it (api/graph.py's Graph)."""

    handle: int


class Session:
    def __init__(self, owner: SessionOwner, graph: GraphRef, loaded: LoadedModel, handle: int,
                 name: str | None, system: str | None) -> None:
        self.owner = owner
        self.graph = graph
        # The model this session runs on, for its whole life: a hot swap of the graph gives
        # new sessions the new model; this one finishes its conversation where it began.
        self.loaded = loaded
        self.handle = handle
        self.name = name
        self.state = SequenceState(session_id=handle)
        self.context_params: RequestParams = loaded.defaults  # set_input index 1 changes it
        self._touched = owner.clock.now()
        self._embedding = 0                          # embed calls in progress
        self._embedding_lock = threading.Lock()
        self._messages: list[dict[str, str]] = []
        if system:
            self._messages.append({"role": "system", "content": system})
        self._turn: Turn | None = None
        self._in_flight: tuple[list[dict[str, str]], str, Stream] | None = None
        self._lock = threading.RLock()       # one chat turn / submit at a time
        self._close_lock = threading.Lock()  # never held while waiting for the engine
        self._streams: list[Stream] = []     # submitted, maybe not finished
        self._closed = False

    # -- chat --------------------------------------------------------------------------------
    def chat(self, message: str, overrides: Overrides = None, *,
             deliver: Callable[[Completion], None] | None = None, **kwargs: Any) -> Completion:
        """Send a user message; the assistant's reply (the history keeps both). ``deliver``
        (the function API's run_inference) is called with the reply before the turn joins
        the history: if it raises, the turn leaves no trace and the error propagates."""
        with self._lock:
            completion = self.chat_stream(message, overrides, **kwargs).result()
            if deliver is not None:
                try:
                    deliver(completion)
                except BaseException:
                    self._in_flight = None   # not delivered: not a turn to build on
                    raise
            self._settle()
            return completion

    def chat_stream(self, message: str, overrides: Overrides = None, *,
                    default_timeout_ms: int | None = None, **kwargs: Any) -> Stream:
        """Like chat, but the reply's text arrives piece by piece on the returned Stream.
        ``default_timeout_ms``: the deadline when neither ``overrides`` nor ``kwargs`` set
        timeout_ms (a caller's own timeout, so the backend never ends the turn sooner than
        the caller waits; 0 = none), instead of backend.default_task_timeout_ms."""
        if not isinstance(message, str):
            raise InvalidArgument(f"a chat message must be text, not {type(message).__name__}")
        started = self.owner.clock.now()   # tokenizing counts against the deadline
        params = self._params(overrides, kwargs)
        if default_timeout_ms is not None and params.timeout_ms is None:
            if not 0 <= default_timeout_ms <= MAX_TIMEOUT_MS:
                raise InvalidArgument(f"default_timeout_ms must be in [0, {MAX_TIMEOUT_MS}], "
                                      f"got {default_timeout_ms}")
            params = params.model_copy(update={"timeout_ms": default_timeout_ms})
        with self._lock, self._while_open():
            self._check_open()
            self._settle()
            model = self.loaded.model
            model.check_fits(message, self.loaded.config.model.n_ctx, "the message")
            messages = self._messages + [{"role": "user", "content": message}]
            text = model.render_chat(messages, add_generation_prompt=True,
                                     template=self.loaded.config.model.chat_template)
            tokens = continuation_tokens(model, self._turn, text)
            stream = self._submit(tokens, params, truncate_ok=True, started_at=started)
            self._in_flight = (messages, text, stream)
            return stream

    @property
    def history(self) -> list[dict[str, str]]:
        with self._lock:
            self._settle()
            return [dict(m) for m in self._messages]

    def _settle(self) -> None:
        """Fold a finished (or wait for a running) chat turn into the history. A turn that
        failed or was cut short leaves the history as it was before it."""
        if self._in_flight is None:
            return
        messages, text, stream = self._in_flight
        self._in_flight = None
        try:
            completion = stream.result()
        except WasiNnError:
            return
        if completion.error() is not None:
            return  # cut short (context full, deadline, closed): not a turn to build on
        self._messages = messages + [{"role": "assistant", "content": completion.text}]
        self._turn = Turn(text, completion)

    # -- completion --------------------------------------------------------------------------
    def complete(self, prompt: Prompt, overrides: Overrides = None, **kwargs: Any
                 ) -> Completion:
        """Continue a raw prompt (no chat template): text, or token ids as they go into
        the context (a caller that tokenized the text already: no BOS is added)."""
        return self.complete_stream(prompt, overrides, **kwargs).result()

    def complete_stream(self, prompt: Prompt, overrides: Overrides = None, **kwargs: Any
                        ) -> Stream:
        started = self.owner.clock.now()   # tokenizing counts against the deadline
        params = self._params(overrides, kwargs)
        tokens = self.tokenize_prompt(prompt)
        with self._lock, self._while_open():
            self._check_open()
            self._settle()
            return self._submit(tokens, params, truncate_ok=False, started_at=started)

    # -- embeddings --------------------------------------------------------------------------
    def embed(self, texts: str | bytes | Sequence[str | bytes]) -> list[Any]:
        """Embeddings of ``texts`` (a graph loaded with embedding: true): one vector (a list of
        floats) per text, in order; one text (not in a list) gives one vector. With pooling
        ``none`` each text gives a list of per-token vectors instead. All texts, and those of
        other sessions' calls made meanwhile, share decodes. InvalidArgument for an empty
        text, PromptTooLong for one over the graph's limit (min of n_ctx and n_ubatch)."""
        single = isinstance(texts, (str, bytes))
        if not single and not isinstance(texts, Sequence):
            raise InvalidArgument(f"texts must be a string or a list of strings, "
                                  f"not {type(texts).__name__}")
        items = [texts] if single else list(texts)
        self._check_open()
        tokens = []
        for index, text in enumerate(items):
            if not isinstance(text, (str, bytes)):
                raise InvalidArgument(f"text {index} must be a string, not {type(text).__name__}")
            if not text:
                raise InvalidArgument(f"text {index} is empty")
            tokens.append(self.tokenize_prompt(text, limit=self.loaded.engine.embed_limit))
        with self._embeds(), self._while_open():
            vectors = self.loaded.engine.embed(tokens).result()
        result = [vector.tolist() for vector in vectors]
        return result[0] if single else result

    def tokenize_prompt(self, prompt: Prompt, *, limit: int | None = None) -> list[int]:
        """The prompt's tokens; PromptTooLong without tokenizing when it cannot make fewer
        than ``limit`` tokens (default: what a session's context holds for a prompt). Token
        ids are checked (each in the vocabulary, at most ``limit``) and kept as they are."""
        self._check_open()   # NotFound, not the freed model's runtime_error, once unloaded
        if limit is None:
            limit = self.loaded.config.model.n_ctx - 1   # one token is left to generate
        if isinstance(prompt, bytes):
            try:
                prompt = prompt.decode("utf-8")
            except UnicodeDecodeError as error:
                raise InvalidArgument(f"the prompt is not valid UTF-8: {error}") from None
        if not isinstance(prompt, (str, list, tuple)):
            raise InvalidArgument(f"a prompt must be text or a list of token ids, "
                                  f"not {type(prompt).__name__}")
        with self._while_open():
            return self.loaded.model.prompt_tokens(prompt, limit)

    @contextlib.contextmanager
    def _embeds(self) -> Iterator[None]:
        """An embed call: the session is not idle while it runs, and idle from its end."""
        with self._embedding_lock:
            self._embedding += 1
        try:
            yield
        finally:
            with self._embedding_lock:
                self._embedding -= 1
            self.touch()

    # -- shared ------------------------------------------------------------------------------
    def set_context_overrides(self, overrides: Overrides) -> list[str]:
        """Per-context settings (WASI-NN set_input index 1): they apply to this session's later
        requests only. Returns the warnings (unknown keys)."""
        params, warnings = parse_overrides(overrides, base=self.loaded.defaults)
        self._check_grammar(params)
        with self._lock:
            self.context_params = params
        return warnings

    def _params(self, overrides: Overrides, kwargs: dict[str, Any]) -> RequestParams:
        params = self.context_params
        if overrides:
            params, _ = parse_overrides(overrides, base=params)
        if kwargs:
            params, _ = parse_overrides(kwargs, base=params)
        self._check_grammar(params)
        return params

    def _check_grammar(self, params: RequestParams) -> None:
        sampling = params.sampling
        if sampling.grammar or sampling.json_schema:
            with self._while_open():
                self.loaded.engine.check_sampling(sampling)

    def _submit(self, tokens: list[int], params: RequestParams, *, truncate_ok: bool,
                started_at: float) -> Stream:
        self.touch()
        stream = self.loaded.engine.submit(self.state, tokens, params, truncate_ok=truncate_ok,
                                           started_at=started_at)
        self._streams = [s for s in self._streams if not s.done] + [stream]
        return stream

    def touch(self) -> None:
        self._touched = self.owner.clock.now()

    @property
    def last_activity(self) -> float:
        """When this session was last active, on the backend's clock (the engines run on
        it): now while a request of it runs, else when its last request ended, finished or
        failed (idle time counts from there, not from when the request started)."""
        now = self.owner.clock.now()
        if self.state.busy or self._embedding:
            return now
        latest = self._touched
        for stream in list(self._streams):
            if not stream.done:
                return now
            ended = stream.ended_at
            if ended is not None:
                latest = max(latest, ended)
        return latest

    @property
    def running(self) -> bool:
        """A request of it is queued or generating (idle cleanup and LRU leave it alone)."""
        return (self.state.busy or self._embedding > 0
                or any(not stream.done for stream in list(self._streams)))

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise NotFound(f"session {self.handle} is closed")

    @contextlib.contextmanager
    def _while_open(self) -> Iterator[None]:
        """Work on the session's model from the caller's thread: the model is not freed
        under it (an unload waits for the C call in progress), and if the session was closed
        meanwhile (closed, evicted, its graph unloaded) the caller gets not_found, as for any
        call on a closed session, not the freed model's runtime_error."""
        try:
            with self.loaded.using():
                yield
        except BackendRuntimeError:
            if self._closed:
                raise NotFound(f"session {self.handle} was closed during the call") from None
            raise

    def close(self) -> None:
        """End the session: a running request stops within one engine step; its KV is freed."""
        self.owner.close_session(self)

    def end(self) -> None:
        """The owner's part of closing (after it took the session out of its tables): stop
        the session's requests and free its KV sequence. Idempotent; use close()."""
        # Not self._lock: a chat turn holds it while it waits for its reply, and closing must
        # cancel that reply (within one engine step), not wait for it.
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        if self.loaded.engine.alive:
            try:
                self.loaded.engine.close_session(self.state).result()
            except WasiNnError:
                pass  # the engine closed meanwhile: nothing left to free

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
