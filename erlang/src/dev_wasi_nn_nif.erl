%%% @doc A drop-in for HyperBEAM's `dev_wasi_nn_nif' (the NIF module under `dev_wasi_nn'), built
%%% on the `wasi_nn' client (the gen_server registered as `wasi_nn', which owns the Python port).
%%% HyperBEAM's device code runs unchanged with its NIF module (and the NIF build) replaced by
%%% this one. Both API generations live here:
%%%
%%%   Generation B / B' (permaweb/HyperBEAM, and the fork with options): the NIF functions
%%%   init_backend/0, init_backend_with_config/1, load_by_name_with_config/3,
%%%   init_execution_context/2, close_execution_context/2, run_inference/3 (Ctx, Exec, Prompt),
%%%   run_inference/4 and run_inference_with_options/4 (+ options JSON), deinit_backend/1, the
%%%   B' stubs set_input/3, compute/2, get_output/3 (they answer unsupported_operation: the C
%%%   side never implemented them), and the Erlang helpers switch_model/2,3,
%%%   init_execution_context_once/2, cleanup_model_contexts/1, cleanup_all_contexts/0,
%%%   get_current_model_info/0.
%%%
%%%   Generation C (the fork's session API): ensure_model_loaded/2, init_session/1 ->
%%%   {ok, Session}, run_inference/2 and run_inference/3 (Session, Prompt[, OptionsJson]).
%%%   run_inference/3 exists in both generations: a Session (a record of this module) as first
%%%   argument means generation C, a backend Ctx means generation B.
%%%
%%% Handles are stable ids of this module, resolved through the cache on every call: a Ctx is
%%% `#dev_wasi_nn_ctx{}', an execution context an integer (as the NIF's), a Session
%%% `#dev_wasi_nn_session{}'. The cache (a named public ETS table owned by a long-lived
%%% process) records what each handle needs to be rebuilt: backend config, model path and
%%% config, session id. So when the `wasi_nn' server restarted under a handle (its port died and
%%% a supervisor restarted it), the next call on that handle re-creates the backend, reloads the
%%% model, re-creates the session (empty: its history died with the port; logged with
%%% logger:warning) and retries once; callers in flight when the port died get an error.
%%%
%%% Text arguments may be charlists (HyperBEAM passes binary_to_list(...)) or binaries; output
%%% is always a binary. Errors: by default as wasi_nn's, `{error, {Code, MessageBinary}}' (Code
%%% from errors.py) or `{error, timeout | port_closed | {port_exit, Status}}'; with the
%%% application env `{wasi_nn, error_style, atom}' (or set_error_style(atom)) the NIF's bare
%%% atoms, mapped by nif_error/2 (the table is in erlang/README.md).
-module(dev_wasi_nn_nif).
-behaviour(gen_server).

%% Generation A/B/B' NIF functions
-export([init_backend/0, init_backend_with_config/1, load_by_name_with_config/3,
         init_execution_context/2, close_execution_context/2, deinit_backend/1,
         run_inference/3, run_inference/4, run_inference_with_options/4,
         set_input/3, compute/2, get_output/3]).
%% Generation B helpers
-export([switch_model/2, switch_model/3, init_execution_context_once/2,
         cleanup_model_contexts/1, cleanup_all_contexts/0, get_current_model_info/0]).
%% Generation C
-export([ensure_model_loaded/2, init_session/1, run_inference/2]).
%% Errors and the cache owner
-export([error_style/0, set_error_style/1, nif_error/2, start_link/0, child_spec/0]).
%% gen_server (the cache owner)
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-define(SERVER, wasi_nn).              % the wasi_nn client we run on
-define(TAB, dev_wasi_nn_nif_cache).   % the cache (ETS), and the name of its owner process
-define(STYLE_KEY, {?MODULE, error_style}).

%% Handles given to callers.
-record(dev_wasi_nn_ctx, {id :: integer()}).
-record(dev_wasi_nn_session, {exec :: integer()}).

%% Cache rows (key first, keypos 2). `wasi' is the wasi_nn context a row was made on: a row
%% whose `wasi' differs from its backend's current one predates a restart.
-record(backend, {key :: {backend, integer()}, config :: binary(), wasi :: term(),
                  model :: undefined | {binary(), binary()}}).
-record(exec, {key :: {exec, integer()}, backend :: integer(), session :: binary(),
               port :: integer(), wasi :: term()}).
-record(model, {key :: {model, binary()}, backend :: integer(), config :: binary()}).
-record(once, {key :: {once, integer(), binary()}, exec :: integer()}).
%% switch_model's last model, as the caller gave it (get_current_model_info returns that).
-record(current, {key = current, path :: term(), config :: term(), backend :: integer()}).

%%% ------------------------------------------------------------------------------------------
%%% Generation A/B/B': the NIF functions
%%% ------------------------------------------------------------------------------------------

%% @doc A backend with application:get_env(wasi_nn, backend_config, <<>>): {ok, Ctx}.
init_backend() -> init_backend_with_config(default_backend_config()).

init_backend_with_config(Config) -> reply(init_backend, new_backend(Config)).

load_by_name_with_config(Ctx, Path, Config) -> reply(load, load(Ctx, Path, Config)).

%% @doc {ok, Exec}: a new execution context (an integer) of session SessionId.
init_execution_context(Ctx, SessionId) ->
    reply(init_execution_context, new_exec(Ctx, SessionId)).

close_execution_context(Ctx, Exec) -> reply(close_execution_context, close_exec(Ctx, Exec)).

%% @doc Forget the backend (its contexts with it) and close it on the port; ok also when the
%% port it lived on is gone.
deinit_backend(Ctx) ->
    reply(deinit_backend, with_ctx(Ctx, fun drop_backend/1)).

%% @doc Generation C: run_inference(Session, Prompt, OptionsJson); generation B:
%% run_inference(Ctx, Exec, Prompt). One chat turn: {ok, ReplyBinary}.
run_inference(#dev_wasi_nn_session{exec = Exec}, Prompt, Options) ->
    reply(run_inference_with_options, run(Exec, Prompt, Options));
run_inference(Ctx, Exec, Prompt) ->
    reply(run_inference, run(Ctx, Exec, Prompt, <<>>)).

run_inference(Ctx, Exec, Prompt, Options) ->
    reply(run_inference_with_options, run(Ctx, Exec, Prompt, Options)).

run_inference_with_options(Ctx, Exec, Prompt, Options) ->
    run_inference(Ctx, Exec, Prompt, Options).

%% @doc B' stubs (their C side was never written): unsupported_operation, never a silent ok.
set_input(_Ctx, _Exec, _Input) -> unsupported(set_input).
compute(_Ctx, _Exec) -> unsupported(compute).
get_output(_Ctx, _Exec, _Index) -> unsupported(get_output).

unsupported(Fun) ->
    reply(unsupported, {error, {unsupported_operation,
                                <<"dev_wasi_nn_nif:", (atom_to_binary(Fun))/binary,
                                  " is not implemented: use run_inference">>}}).

%%% ------------------------------------------------------------------------------------------
%%% Generation B: helpers over a cache of one backend per model path
%%% ------------------------------------------------------------------------------------------

%% @doc {ok, Ctx} of the backend holding ModelPath loaded with Config: the cached one when the
%% config is the same, else a new one (an older backend for that path is closed).
switch_model(ModelPath, Config) -> switch_model(ModelPath, Config, undefined).

%% @doc switch_model/2 with the backend config for a new backend (undefined: init_backend/0's).
switch_model(ModelPath, Config, BackendConfig) ->
    case switch(ModelPath, Config, BackendConfig) of
        {error, {load, Reason}} ->
            case error_style() of
                atom -> {error, {model_load_failed, {error, nif_error(load, Reason)}}};
                tuple -> {error, Reason}
            end;
        Other ->
            reply(init_backend, Other)
    end.

%% @doc {ok, {ModelPath, Config, Ctx}} of the last switch_model (as given), or no_model_loaded.
get_current_model_info() ->
    case current() of
        #current{path = Path, config = Config, backend = B} ->
            {ok, {Path, Config, #dev_wasi_nn_ctx{id = B}}};
        undefined ->
            reply(no_model, no_model_loaded())
    end.

%% @doc {ok, Exec} for session SessionId on this backend, made once and then reused.
init_execution_context_once(Ctx, SessionId) ->
    reply(init_execution_context, exec_once(Ctx, SessionId)).

%% @doc Close the backend of ModelPath and forget its contexts; ok.
cleanup_model_contexts(ModelPath) ->
    case text(ModelPath) of
        {ok, Path} ->
            with_lock({model, Path}, fun() ->
                [drop_backend(B) || #model{backend = B} <- lookup({model, Path})],
                ok end);
        _ -> ok
    end.

%% @doc cleanup_model_contexts/1 for every model switch_model loaded; ok. Backends made by
%% init_backend/0,1 belong to their callers and stay.
cleanup_all_contexts() ->
    [cleanup_model_contexts(Path)
     || #model{key = {model, Path}} <- ets:match_object(tab(), #model{_ = '_'})],
    ets:delete(?TAB, current),
    ok.

%%% ------------------------------------------------------------------------------------------
%%% Generation C: one current model, sessions on it
%%% ------------------------------------------------------------------------------------------

%% @doc Make ModelPath with Config the current model (loaded once; as switch_model/2): ok.
ensure_model_loaded(ModelPath, Config) ->
    case switch(ModelPath, Config, undefined) of
        {ok, _Ctx} -> ok;
        {error, {load, Reason}} -> reply(load, {error, Reason});
        Error -> reply(init_backend, Error)
    end.

%% @doc {ok, Session} of session SessionId on the current model (the same Session for the same
%% id and model, so its chat history goes on).
init_session(SessionId) ->
    Result = case current() of
                 #current{backend = B} ->
                     case exec_once(#dev_wasi_nn_ctx{id = B}, SessionId) of
                         {ok, Exec} -> {ok, #dev_wasi_nn_session{exec = Exec}};
                         Error -> Error
                     end;
                 undefined ->
                     {error, {backend_not_initialized,
                              <<"no model loaded: call ensure_model_loaded first">>}}
             end,
    reply(init_session, Result).

run_inference(Session, Prompt) -> run_inference(Session, Prompt, <<>>).

%%% ------------------------------------------------------------------------------------------
%%% Errors
%%% ------------------------------------------------------------------------------------------

%% @doc `tuple' (wasi_nn's errors, the default) or `atom' (the NIF's bare atoms): the override
%% set by set_error_style/1, else the application env `error_style' of `wasi_nn'.
error_style() ->
    case persistent_term:get(?STYLE_KEY, undefined) of
        undefined ->
            case application:get_env(wasi_nn, error_style, tuple) of
                atom -> atom;
                _ -> tuple
            end;
        Style -> Style
    end.

%% @doc Override the error style for this VM (tests); `default' goes back to the app env.
set_error_style(default) -> persistent_term:erase(?STYLE_KEY), ok;
set_error_style(Style) when Style =:= atom; Style =:= tuple ->
    persistent_term:put(?STYLE_KEY, Style).

%% @doc The NIF's bare atom for error Reason ({Code, Message}, or an atom such as timeout,
%% or {port_exit, Status}) of operation Op. The one place the mapping lives.
nif_error(Op, Reason) -> nif_atom(Op, code(Reason)).

code({Code, _}) when is_atom(Code) -> Code;
code(Code) when is_atom(Code) -> Code;
code(_) -> unknown.

%% Conditions of this module's own: the same atom in every operation.
nif_atom(_, no_model_loaded) -> no_model_loaded;
nif_atom(_, backend_not_initialized) -> backend_not_initialized;
nif_atom(_, unsupported_operation) -> unsupported_operation;
nif_atom(init_backend, _) -> init_failed;
nif_atom(load, not_found) -> invalid_context;
nif_atom(load, invalid_argument) -> invalid_config;
nif_atom(load, _) -> load_failed;
nif_atom(Op, not_found) when Op =:= init_execution_context; Op =:= init_session ->
    invalid_context;
nif_atom(Op, invalid_argument) when Op =:= init_execution_context; Op =:= init_session ->
    invalid_session_id;
nif_atom(Op, _) when Op =:= init_execution_context; Op =:= init_session ->
    init_execution_failed;
nif_atom(close_execution_context, not_found) -> invalid_exec_ctx;
nif_atom(close_execution_context, invalid_argument) -> invalid_args;
nif_atom(close_execution_context, _) -> close_execution_failed;
nif_atom(Op, not_found) when Op =:= run_inference; Op =:= run_inference_with_options ->
    invalid_exec_ctx;
nif_atom(run_inference_with_options, Code)
  when Code =:= invalid_argument; Code =:= invalid_encoding ->
    invalid_options;
nif_atom(Op, Code) when (Op =:= run_inference orelse Op =:= run_inference_with_options),
                        (Code =:= invalid_argument orelse Code =:= invalid_encoding orelse
                         Code =:= prompt_too_long orelse Code =:= too_large) ->
    invalid_input;
nif_atom(Op, _) when Op =:= run_inference; Op =:= run_inference_with_options ->
    run_inference_failed;
nif_atom(deinit_backend, not_found) -> invalid_context;
nif_atom(deinit_backend, _) -> deinit_failed;
nif_atom(_, Code) -> Code.

%% A result for the caller: errors in the chosen style.
reply(Op, {error, Reason}) ->
    case error_style() of
        atom -> {error, nif_error(Op, Reason)};
        tuple -> {error, Reason}
    end;
reply(_Op, Result) ->
    Result.

no_model_loaded() ->
    {error, {no_model_loaded, <<"no model loaded: call switch_model first">>}}.

not_found(What, Term) ->
    {error, {not_found, iolist_to_binary(io_lib:format("no such ~s: ~0tp", [What, Term]))}}.

%%% ------------------------------------------------------------------------------------------
%%% Backends, models and execution contexts
%%% ------------------------------------------------------------------------------------------

default_backend_config() -> application:get_env(wasi_nn, backend_config, <<>>).

new_backend(Config0) ->
    with_text([Config0], fun([Config]) ->
        case wasi_nn:init_backend(?SERVER, Config) of
            {ok, Wasi} ->
                B = erlang:unique_integer([positive]),
                ets:insert(tab(), #backend{key = {backend, B}, config = Config, wasi = Wasi}),
                {ok, #dev_wasi_nn_ctx{id = B}};
            Error -> Error
        end end).

load(Ctx, Path0, Config0) ->
    with_text([Path0, Config0], fun([Path, Config]) ->
        with_ctx(Ctx, fun(B) ->
            with_backend(B, fun(#backend{wasi = Wasi}) ->
                case wasi_nn:load_by_name_with_config(Wasi, Path, Config) of
                    ok -> ets:update_element(?TAB, {backend, B},
                                             {#backend.model, {Path, Config}}),
                          ok;
                    Error -> Error
                end end) end) end).

%% switch_model's work: {ok, Ctx}, {error, {load, Reason}} or init_backend's error.
switch(Path0, Config0, BackendConfig) ->
    with_text([Path0, Config0], fun([Path, Config]) ->
        case cached_model(Path, Config) of
            {ok, B} -> switched(Path0, Config0, B);
            error ->
                %% under a lock: callers that switch at once wait for one load, not make many
                with_lock({model, Path}, fun() ->
                    case cached_model(Path, Config) of
                        {ok, B} -> switched(Path0, Config0, B);
                        error ->
                            [drop_backend(Old) || #model{backend = Old} <- lookup({model, Path})],
                            model_backend(Path0, Config0, Path, Config, BackendConfig)
                    end end)
        end end).

cached_model(Path, Config) ->
    case lookup({model, Path}) of
        [#model{backend = B, config = Config}] -> {ok, B};
        _ -> error
    end.

model_backend(Path0, Config0, Path, Config, BackendConfig) ->
    BC = case BackendConfig of
             undefined -> default_backend_config();
             _ -> BackendConfig
         end,
    case new_backend(BC) of
        {ok, Ctx = #dev_wasi_nn_ctx{id = B}} ->
            case load(Ctx, Path, Config) of
                ok ->
                    ets:insert(?TAB, #model{key = {model, Path}, backend = B, config = Config}),
                    switched(Path0, Config0, B);
                {error, Reason} ->
                    drop_backend(B),
                    {error, {load, Reason}}
            end;
        Error -> Error
    end.

switched(Path0, Config0, B) ->
    ets:insert(?TAB, #current{path = Path0, config = Config0, backend = B}),
    {ok, #dev_wasi_nn_ctx{id = B}}.

current() ->
    case lookup(current) of
        [Current] -> Current;
        [] -> undefined
    end.

new_exec(Ctx, SessionId0) ->
    with_text([SessionId0], fun([SessionId]) ->
        with_ctx(Ctx, fun(B) ->
            with_backend(B, fun(#backend{wasi = Wasi}) ->
                case wasi_nn:init_execution_context(Wasi, SessionId) of
                    {ok, Port} ->
                        E = erlang:unique_integer([positive]),
                        ets:insert(?TAB, #exec{key = {exec, E}, backend = B, session = SessionId,
                                               port = Port, wasi = Wasi}),
                        {ok, E};
                    Error -> Error
                end end) end) end).

exec_once(Ctx, SessionId0) ->
    case current() of
        undefined -> no_model_loaded();
        _ ->
            with_text([SessionId0], fun([SessionId]) ->
                with_ctx(Ctx, fun(B) ->
                    Key = {once, B, SessionId},
                    case cached_once(Key) of
                        {ok, E} -> {ok, E};
                        error ->
                            with_lock(Key, fun() ->
                                case cached_once(Key) of
                                    {ok, E} -> {ok, E};
                                    error -> remember_once(Key, new_exec(Ctx, SessionId))
                                end end)
                    end end) end)
    end.

cached_once(Key) ->
    case lookup(Key) of
        [#once{exec = E}] -> case lookup({exec, E}) of [_] -> {ok, E}; [] -> error end;
        [] -> error
    end.

remember_once(Key, {ok, E}) -> ets:insert(?TAB, #once{key = Key, exec = E}), {ok, E};
remember_once(_Key, Error) -> Error.

close_exec(Ctx, Exec) ->
    with_ctx(Ctx, fun(B) ->
        case lookup({exec, Exec}) of
            [#exec{backend = B, port = Port, wasi = Wasi}] ->
                forget_exec(Exec),
                case lookup({backend, B}) of
                    [#backend{wasi = Wasi}] -> gone_is_ok(wasi_nn:close_execution_context(Wasi, Port));
                    _ -> ok   % made before a restart: nothing of it is left on the port
                end;
            _ -> not_found("execution context", Exec)
        end end).

%% One chat turn in execution context Exec (of backend Ctx, when given).
run(Ctx, Exec, Prompt, Options) ->
    with_ctx(Ctx, fun(B) ->
        case lookup({exec, Exec}) of
            [#exec{backend = B}] -> run(Exec, Prompt, Options);
            _ -> not_found("execution context of this backend", Exec)
        end end).

run(Exec, Prompt0, Options0) ->
    with_text([Prompt0, Options0], fun([Prompt, Options]) ->
        with_exec(Exec, fun(Wasi, Port) ->
            wasi_nn:run_inference(Wasi, Port, Prompt, Options) end) end).

%% Close backend B on the port (where it still is) and forget it with its contexts: ok.
drop_backend(B) ->
    Result = case lookup({backend, B}) of
                 [#backend{wasi = Wasi}] -> gone_is_ok(wasi_nn:deinit_backend(Wasi));
                 [] -> ok
             end,
    ets:delete(?TAB, {backend, B}),
    [forget_exec(E) || #exec{key = {exec, E}} <- ets:match_object(?TAB, #exec{backend = B, _ = '_'})],
    ets:match_delete(?TAB, #model{backend = B, _ = '_'}),
    ets:match_delete(?TAB, #current{backend = B, _ = '_'}),
    Result.

forget_exec(E) ->
    ets:delete(?TAB, {exec, E}),
    ets:match_delete(?TAB, #once{exec = E, _ = '_'}).

%% Closing something on a port that died is done: the port took it along.
gone_is_ok(Result) ->
    case restarted(Result) orelse Result =:= {error, port_closed} of
        true -> ok;
        false -> Result
    end.

%%% ------------------------------------------------------------------------------------------
%%% Restart recovery
%%% ------------------------------------------------------------------------------------------

%% Fun(BackendRow) on backend B; when the wasi_nn server restarted under B: rebuild B on the
%% new port and run Fun once more.
with_backend(B, Fun) ->
    case attempt(B, Fun) of
        {restarted, Stale, _Result} ->
            case recover(B, Stale) of
                ok ->
                    case attempt(B, Fun) of
                        {restarted, _, Again} -> Again;   % restarted again: give up
                        Again -> Again
                    end;
                Error -> Error
            end;
        Result -> Result
    end.

attempt(B, Fun) ->
    case lookup({backend, B}) of
        [Row = #backend{wasi = Wasi}] ->
            Result = Fun(Row),
            case restarted(Result) of
                true -> {restarted, Wasi, Result};
                false -> Result
            end;
        [] -> not_found("backend", #dev_wasi_nn_ctx{id = B})
    end.

%% wasi_nn's answer for a context of a server that has died and was restarted (the contract),
%% or a closed port while a server answers again under the name.
restarted({error, {backend_restarted, _}}) -> true;
restarted({error, port_closed}) -> is_pid(whereis(?SERVER));
restarted(_) -> false.

%% Re-create backend B (its config, then its last model) unless another caller already did
%% (its wasi context is no longer Stale). Serialized per backend.
recover(B, Stale) ->
    with_lock({backend, B}, fun() ->
        case lookup({backend, B}) of
            [#backend{wasi = Wasi}] when Wasi =/= Stale -> ok;
            [#backend{config = Config, model = Model}] ->
                logger:warning("dev_wasi_nn_nif: the wasi_nn server restarted: re-creating "
                               "backend ~b (model ~0tp)", [B, Model]),
                case wasi_nn:init_backend(?SERVER, Config) of
                    {ok, Wasi} ->
                        case reload(Wasi, Model) of
                            ok -> ets:update_element(?TAB, {backend, B}, {#backend.wasi, Wasi}),
                                  ok;
                            Error -> wasi_nn:deinit_backend(Wasi), Error
                        end;
                    Error -> Error
                end;
            [] -> not_found("backend", #dev_wasi_nn_ctx{id = B})
        end end).

reload(_Wasi, undefined) -> ok;
reload(Wasi, {Path, Config}) -> wasi_nn:load_by_name_with_config(Wasi, Path, Config).

%% Fun(Wasi, PortExec) on execution context Exec, re-created first when it was made before its
%% backend was rebuilt (same session id; its history is gone).
with_exec(Exec, Fun) ->
    case lookup({exec, Exec}) of
        [#exec{backend = B}] ->
            with_backend(B, fun(#backend{wasi = Wasi}) ->
                case fresh_exec(Exec, Wasi) of
                    {ok, Port} -> Fun(Wasi, Port);
                    Error -> Error
                end end);
        [] -> not_found("execution context", Exec)
    end.

fresh_exec(Exec, Wasi) ->
    case lookup({exec, Exec}) of
        [#exec{wasi = Wasi, port = Port}] -> {ok, Port};
        [_] ->
            with_lock({exec, Exec}, fun() ->
                case lookup({exec, Exec}) of
                    [#exec{wasi = Wasi, port = Port}] -> {ok, Port};
                    [#exec{session = SessionId}] ->
                        case wasi_nn:init_execution_context(Wasi, SessionId) of
                            {ok, Port} ->
                                logger:warning("dev_wasi_nn_nif: session ~0tp re-created on the "
                                               "restarted backend: its history is lost",
                                               [SessionId]),
                                ets:update_element(?TAB, {exec, Exec},
                                                   [{#exec.port, Port}, {#exec.wasi, Wasi}]),
                                {ok, Port};
                            Error -> Error
                        end;
                    [] -> not_found("execution context", Exec)
                end end);
        [] -> not_found("execution context", Exec)
    end.

%%% ------------------------------------------------------------------------------------------
%%% Argument helpers
%%% ------------------------------------------------------------------------------------------

with_ctx(#dev_wasi_nn_ctx{id = B}, Fun) ->
    case lookup({backend, B}) of
        [_] -> Fun(B);
        [] -> not_found("backend", #dev_wasi_nn_ctx{id = B})
    end;
with_ctx(Other, _Fun) ->
    not_found("dev_wasi_nn_nif backend context", Other).

text(Value) -> wasi_nn:text(Value).

with_text(Values, Fun) ->
    case [V || V <- Values, text(V) =:= error] of
        [] -> Fun([B || V <- Values, {ok, B} <- [text(V)]]);
        [Bad | _] ->
            {error, {invalid_argument,
                     iolist_to_binary(io_lib:format("not text (a binary or a string): ~0tp",
                                                    [Bad]))}}
    end.

%%% ------------------------------------------------------------------------------------------
%%% The cache and its owner
%%% ------------------------------------------------------------------------------------------
%%% The table is named, public and owned by a registered process that never calls out (so it
%%% cannot hang or crash on a backend call), as HyperBEAM's cache owner, but started with
%%% gen_server:start so that two first callers cannot make two owners; it also hands out
%%% per-key locks, so that callers loading the same model, creating the same session or
%%% recovering the same backend at once wait for one of them instead of each doing it.
%%% It is started on first use, unlinked (it outlives its first caller); an application may
%%% put child_spec() in its supervision tree instead.

lookup(Key) -> ets:lookup(tab(), Key).

tab() ->
    _ = owner(),
    ?TAB.

owner() ->
    case whereis(?TAB) of
        undefined ->
            case gen_server:start({local, ?TAB}, ?MODULE, [], []) of
                {ok, Pid} -> Pid;
                {error, {already_started, Pid}} -> Pid
            end;
        Pid -> Pid
    end.

%% @doc Start the cache owner linked (for a supervisor).
start_link() -> gen_server:start_link({local, ?TAB}, ?MODULE, [], []).

child_spec() ->
    #{id => ?TAB, start => {?MODULE, start_link, []}, restart => permanent,
      type => worker, modules => [?MODULE]}.

%% Fun() holding lock Key (re-entrant; released when Fun returns or the caller dies).
with_lock(Key, Fun) ->
    Owner = owner(),
    ok = gen_server:call(Owner, {lock, Key}, infinity),
    try Fun() after gen_server:cast(Owner, {unlock, Key, self()}) end.

%% State: Key => {Holder, MonitorRef, Depth, queue of waiting From}.
init([]) ->
    ets:new(?TAB, [set, named_table, public, {keypos, 2}, {read_concurrency, true}]),
    {ok, #{}}.

handle_call({lock, Key}, From = {Pid, _}, Locks) ->
    case maps:find(Key, Locks) of
        error ->
            {reply, ok, Locks#{Key => {Pid, monitor(process, Pid), 1, queue:new()}}};
        {ok, {Pid, MRef, Depth, Queue}} ->
            {reply, ok, Locks#{Key => {Pid, MRef, Depth + 1, Queue}}};
        {ok, {Holder, MRef, Depth, Queue}} ->
            {noreply, Locks#{Key => {Holder, MRef, Depth, queue:in(From, Queue)}}}
    end.

handle_cast({unlock, Key, Pid}, Locks) ->
    case maps:find(Key, Locks) of
        {ok, {Pid, MRef, Depth, Queue}} when Depth > 1 ->
            {noreply, Locks#{Key => {Pid, MRef, Depth - 1, Queue}}};
        {ok, {Pid, _, _, _}} ->
            {noreply, release(Key, Locks)};
        _ ->
            {noreply, Locks}
    end.

handle_info({'DOWN', MRef, process, _Pid, _}, Locks) ->
    case [Key || {Key, {_, M, _, _}} <- maps:to_list(Locks), M =:= MRef] of
        [Key] -> {noreply, release(Key, Locks)};
        [] -> {noreply, Locks}
    end;
handle_info(_Msg, Locks) ->
    {noreply, Locks}.

%% The next waiter gets the lock (a dead one is monitored, so it passes the lock on at once).
release(Key, Locks) ->
    {_, MRef, _, Queue} = maps:get(Key, Locks),
    demonitor(MRef, [flush]),
    case queue:out(Queue) of
        {{value, From = {Pid, _}}, Rest} ->
            gen_server:reply(From, ok),
            Locks#{Key => {Pid, monitor(process, Pid), 1, Rest}};
        {empty, _} ->
            maps:remove(Key, Locks)
    end.
