%%% @doc Erlang client of wasi-nn-backend: a gen_server that owns the Python port program
%%% (`python -m wasi_nn_backend.adapters.erlang', protocol in docs/erlang-protocol.md) and offers
%%% HyperBEAM's dev_wasi_nn_nif API (init_backend, load_by_name_with_config,
%%% init_execution_context, run_inference, close_execution_context, deinit_backend) with the
%%% same names, arities and result shapes, plus streaming.
%%%
%%% Every request gets an integer id; the server keeps a map from id to caller, so many callers
%%% (many sessions) are in flight at once and replies may come back in any order. Each request
%%% has its own timeout: the caller then gets `{error, timeout}' and a late reply is dropped; a
%%% generation that timed out (run_inference, a stream) is cancelled on the port, so its session
%%% is free again at once.
%%% When the port dies every pending caller gets `{error, {port_exit, Status}}' (or
%%% `{error, port_closed}') and the server stops with reason `{port_exit, Status}', for its
%%% supervisor to restart.
%%%
%%% Results: `ok', `{ok, Value}', `{error, Atom}' (timeout, port_closed) or
%%% `{error, {Code, MessageBinary}}' where Code is the lower-case name of the error code in
%%% wasi_nn_backend/errors.py (not_found, invalid_argument, invalid_encoding, model_not_found,
%%% ...), exactly as the port sends it; or `{error, {port_exit, Status}}'.
%%%
%%% Text arguments (paths, JSON, session ids, prompts) may be binaries or strings. A list of
%%% bytes that is valid UTF-8 (e.g. HyperBEAM's `binary_to_list(Utf8Binary)') is taken byte for
%%% byte, as the original NIF read it; any other list is taken as Unicode code points.
-module(wasi_nn).
-behaviour(gen_server).

%% Server
-export([start_link/0, start_link/1, start/0, start/1, stop/0, stop/1, child_spec/1,
         port/0, port/1, os_pid/0, os_pid/1]).
%% HyperBEAM's API (the optional last argument: a timeout in ms, infinity, or options)
-export([init_backend/0, init_backend/1, init_backend/2, init_backend/3,
         deinit_backend/1, deinit_backend/2,
         load_by_name_with_config/3, load_by_name_with_config/4,
         init_execution_context/2, init_execution_context/3,
         close_execution_context/2, close_execution_context/3,
         run_inference/3, run_inference/4, run_inference/5,
         run_inference_stream/4, run_inference_stream/5]).
%% Helpers (exported for the tests)
-export([text/1]).
%% gen_server
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2, code_change/3]).

-define(SERVER, ?MODULE).
-define(DEFAULT_ARGS, ["-m", "wasi_nn_backend.adapters.erlang"]).
-define(LOG_FRAMES, "--log-frames").
-define(DEFAULT_TIMEOUT, 300000).
-define(DEFAULT_SHUTDOWN_WAIT, 5000).

%% A backend context: which server (pid, so a restarted server never sees an old id), the name
%% it was reached by (to tell a restarted server from none), and the port's backend handle.
%% Treat it as opaque.
-record(wasi_nn_ctx, {server :: pid(), id :: term(), name :: server() | undefined}).

-record(state, {port :: port() | undefined,
                os_pid :: non_neg_integer() | undefined,
                next_id = 1 :: pos_integer(),
                pending = #{} :: #{pos_integer() => map()},
                timeout :: timeout(),
                shutdown_wait :: non_neg_integer()}).

-type server() :: pid() | atom() | {global, term()} | {via, module(), term()}.
-type text() :: binary() | string().
-type error() :: {error, atom() | {atom(), term()}}.
-type options() :: timeout() | [{atom(), term()}] | #{atom() => term()}.
-opaque ctx() :: #wasi_nn_ctx{}.
-export_type([ctx/0, server/0, error/0, options/0]).

%%% ------------------------------------------------------------------------------------------
%%% Server
%%% ------------------------------------------------------------------------------------------

%% @doc Start the server registered as `wasi_nn', linked to the caller.
start_link() -> start_link([]).

%% @doc Options (a proplist or a map):
%%   python: the interpreter (default: $WASI_NN_PYTHON, else python3 on PATH);
%%   args: its arguments (default ["-m", "wasi_nn_backend.adapters.erlang", "--log-frames"]);
%%   port_logs: logger (default: the port program's log lines come as frames and go to
%%     logger, metadata wasi_nn_port => the Python logger's name, at the level the backends'
%%     "logging" config sets) or stderr
%%     (they go to the VM's stderr); only with the default args;
%%   env: [{Name, Value}] added to the port's environment;
%%   timeout: the default per-call timeout, ms or infinity (default 300000);
%%   shutdown_wait: ms to wait on stop for the port's OS process to exit (default 5000);
%%   name: {local, Atom} | {global, Term} | {via, M, Term} | undefined (default {local, wasi_nn}).
start_link(Opts) -> start(link, Opts).

%% @doc Like start_link/0,1 but not linked (for use outside a supervision tree).
start() -> start([]).
start(Opts) -> start(nolink, Opts).

start(Link, Opts0) ->
    Opts = options(Opts0),
    Args = [maps:without([name], Opts)],
    case {Link, maps:get(name, Opts, {local, ?SERVER})} of
        {link, undefined} -> gen_server:start_link(?MODULE, Args, []);
        {link, Name} -> gen_server:start_link(Name, ?MODULE, Args, []);
        {nolink, undefined} -> gen_server:start(?MODULE, Args, []);
        {nolink, Name} -> gen_server:start(Name, ?MODULE, Args, [])
    end.

%% @doc Stop the server: pending callers get {error, port_closed}, the port is closed (the
%% Python side sees EOF, closes every backend and exits) and, where /proc exists, stop waits
%% up to shutdown_wait ms for that OS process to be gone.
stop() -> stop(?SERVER).
stop(Server) -> gen_server:stop(Server).

%% @doc A supervisor child spec for start_link(Opts).
child_spec(Opts) ->
    Id = case maps:get(name, options(Opts), {local, ?SERVER}) of
             {local, Name} -> Name;
             _ -> ?MODULE
         end,
    Wait = maps:get(shutdown_wait, options(Opts), ?DEFAULT_SHUTDOWN_WAIT),
    #{id => Id, start => {?MODULE, start_link, [Opts]}, restart => permanent,
      shutdown => Wait + 5000, type => worker, modules => [?MODULE]}.

%% @doc The port the server owns ({ok, Port}); erlang:port_info(Port, os_pid) gives its pid.
port() -> port(?SERVER).
port(Server) -> safe_call(Server, port).

%% @doc The OS pid of the port program.
os_pid() -> os_pid(?SERVER).
os_pid(Server) -> safe_call(Server, os_pid).

%%% ------------------------------------------------------------------------------------------
%%% HyperBEAM's API
%%% ------------------------------------------------------------------------------------------

%% @doc A backend with default settings on the `wasi_nn' server: {ok, Ctx}.
-spec init_backend() -> {ok, ctx()} | error().
init_backend() -> init_backend(?SERVER, <<>>).

%% @doc init_backend(Server) or init_backend(ConfigJson) (on the `wasi_nn' server).
-spec init_backend(server() | text()) -> {ok, ctx()} | error().
init_backend(Config) when is_binary(Config); is_list(Config) -> init_backend(?SERVER, Config);
init_backend(Server) -> init_backend(Server, <<>>).

-spec init_backend(server(), text()) -> {ok, ctx()} | error().
init_backend(Server, Config) -> init_backend(Server, Config, []).

-spec init_backend(server(), text(), options()) -> {ok, ctx()} | error().
init_backend(Server, Config, Opts) ->
    case with_text([Config], fun([C]) -> request(Server, init_backend, {C}, Opts) end) of
        {ok, Ctx = #wasi_nn_ctx{}} -> {ok, Ctx#wasi_nn_ctx{name = Server}};
        Other -> Other
    end.

-spec deinit_backend(ctx()) -> ok | error().
deinit_backend(Ctx) -> deinit_backend(Ctx, []).
deinit_backend(Ctx, Opts) ->
    with_ctx(Ctx, fun(Server, Id) -> request(Server, deinit_backend, {Id}, Opts) end).

%% @doc Load a GGUF file on this backend: ok (the port's graph handle is not needed: new
%% execution contexts use the graph loaded last, as in HyperBEAM).
-spec load_by_name_with_config(ctx(), text(), text()) -> ok | error().
load_by_name_with_config(Ctx, Path, Config) -> load_by_name_with_config(Ctx, Path, Config, []).
load_by_name_with_config(Ctx, Path, Config, Opts) ->
    with_ctx(Ctx, fun(Server, Id) ->
        with_text([Path, Config], fun([P, C]) ->
            request(Server, load_by_name_with_config, {Id, P, C}, Opts) end) end).

%% @doc The execution context (an integer) of session SessionId; the same id gives the same
%% session (and its chat history).
-spec init_execution_context(ctx(), text()) -> {ok, integer()} | error().
init_execution_context(Ctx, SessionId) -> init_execution_context(Ctx, SessionId, []).
init_execution_context(Ctx, SessionId, Opts) ->
    with_ctx(Ctx, fun(Server, Id) ->
        with_text([SessionId], fun([S]) ->
            request(Server, init_execution_context, {Id, S}, Opts) end) end).

-spec close_execution_context(ctx(), integer()) -> ok | error().
close_execution_context(Ctx, Exec) -> close_execution_context(Ctx, Exec, []).
close_execution_context(Ctx, Exec, Opts) ->
    with_ctx(Ctx, fun(Server, Id) ->
        request(Server, close_execution_context, {Id, Exec}, Opts) end).

%% @doc One chat turn in the session (its history is kept): {ok, ReplyBinary}.
-spec run_inference(ctx(), integer(), text()) -> {ok, binary()} | error().
run_inference(Ctx, Exec, Prompt) -> run_inference(Ctx, Exec, Prompt, <<>>, []).

-spec run_inference(ctx(), integer(), text(), text()) -> {ok, binary()} | error().
run_inference(Ctx, Exec, Prompt, RuntimeConfig) ->
    run_inference(Ctx, Exec, Prompt, RuntimeConfig, []).

%% @doc run_inference/4 with a timeout (ms or infinity) or options ([{timeout, T}]).
-spec run_inference(ctx(), integer(), text(), text(), options()) -> {ok, binary()} | error().
run_inference(Ctx, Exec, Prompt, RuntimeConfig, Opts) ->
    with_ctx(Ctx, fun(Server, Id) ->
        with_text([Prompt, RuntimeConfig], fun([P, R]) ->
            request(Server, run_inference, {Id, Exec, P, R}, Opts) end) end).

%% @doc Streaming chat turn: {ok, Ref} at once, then `{wasi_nn_token, Ref, Piece}' messages and
%% finally `{wasi_nn_done, Ref, UsageJson}' or `{wasi_nn_error, Ref, Reason}' (Reason as the
%% second element of an {error, Reason} result). Options: timeout (for the whole stream) and
%% to (the pid that gets the messages; default the caller).
-spec run_inference_stream(ctx(), integer(), text(), text()) -> {ok, reference()} | error().
run_inference_stream(Ctx, Exec, Prompt, RuntimeConfig) ->
    run_inference_stream(Ctx, Exec, Prompt, RuntimeConfig, []).

-spec run_inference_stream(ctx(), integer(), text(), text(), options()) ->
          {ok, reference()} | error().
run_inference_stream(Ctx, Exec, Prompt, RuntimeConfig, Opts0) ->
    Opts = options(Opts0),
    To = maps:get(to, Opts, self()),
    with_ctx(Ctx, fun(Server, Id) ->
        with_text([Prompt, RuntimeConfig], fun([P, R]) ->
            safe_call(Server, {stream, run_inference_stream, {Id, Exec, P, R},
                               maps:get(timeout, Opts, default), To}) end) end).

%%% ------------------------------------------------------------------------------------------
%%% Client helpers
%%% ------------------------------------------------------------------------------------------

request(Server, Op, Args, Opts) ->
    safe_call(Server, {request, Op, Args, maps:get(timeout, options(Opts), default)}).

%% The server always answers (its own timer, or port death), so the call waits forever; a
%% server that is gone or dies meanwhile reads as a closed port.
safe_call(Server, Request) ->
    try gen_server:call(Server, Request, infinity)
    catch exit:_ -> {error, port_closed}
    end.

%% A context of a server that died: {error, {backend_restarted, _}} when the name it was
%% reached by answers again (a supervisor restarted it: its backends, models and sessions are
%% gone, so the caller must initialise again), {error, port_closed} when nothing does.
with_ctx(#wasi_nn_ctx{server = Server, id = Id, name = Name}, Fun) ->
    case is_pid(Server) andalso node(Server) =:= node() andalso not is_process_alive(Server) of
        true -> gone(Name);
        false -> Fun(Server, Id)
    end;
with_ctx(_, _) -> {error, {invalid_argument, <<"not a wasi_nn backend context">>}}.

gone(Name) ->
    case Name =/= undefined andalso is_pid(whereis_server(Name)) of
        true -> {error, {backend_restarted,
                         <<"the wasi_nn server restarted since this context was made (its "
                           "backends, models and sessions are gone): call init_backend, "
                           "load_by_name_with_config and init_execution_context again">>}};
        false -> {error, port_closed}
    end.

whereis_server(Pid) when is_pid(Pid) -> undefined;   % a pid names one incarnation only
whereis_server(Name) when is_atom(Name) -> whereis(Name);
whereis_server({global, Name}) -> global:whereis_name(Name);
whereis_server({via, Module, Name}) -> Module:whereis_name(Name);
whereis_server(_) -> undefined.

with_text(Values, Fun) ->
    case lists:foldr(fun(V, {ok, Acc}) ->
                             case text(V) of
                                 {ok, B} -> {ok, [B | Acc]};
                                 error -> {bad, V}
                             end;
                        (_, Bad) -> Bad
                     end, {ok, []}, Values) of
        {ok, Binaries} -> Fun(Binaries);
        {bad, V} ->
            {error, {invalid_argument,
                     iolist_to_binary(io_lib:format("not text (a binary or a string): ~0tp",
                                                    [V]))}}
    end.

%% @doc A text argument as a binary: binaries as they are; a list of bytes that is valid UTF-8
%% byte for byte; any other list (and iolist) as Unicode characters. error if it is not text.
-spec text(term()) -> {ok, binary()} | error.
text(B) when is_binary(B) -> {ok, B};
text(L) when is_list(L) ->
    case utf8_bytes(L) of
        {ok, B} -> {ok, B};
        error ->
            try unicode:characters_to_binary(L) of
                B when is_binary(B) -> {ok, B};
                _ -> error
            catch error:_ -> error
            end
    end;
text(_) -> error.

utf8_bytes(L) ->
    try iolist_to_binary(L) of
        B -> case unicode:characters_to_binary(B) of
                 B -> {ok, B};
                 _ -> error
             end
    catch error:_ -> error
    end.

options(Opts) when is_map(Opts) -> Opts;
options(Opts) when is_list(Opts) -> maps:from_list(proplists:unfold(Opts));
options(infinity) -> #{timeout => infinity};
options(T) when is_integer(T), T >= 0 -> #{timeout => T};
options(default) -> #{};
options(Other) -> erlang:error({badarg, Other}).

%%% ------------------------------------------------------------------------------------------
%%% gen_server
%%% ------------------------------------------------------------------------------------------

init([Opts]) ->
    process_flag(trap_exit, true),
    case python(Opts) of
        false ->
            {stop, {no_python, "set the python option or WASI_NN_PYTHON"}};
        Python ->
            Env = [{to_list(K), to_list(V)} || {K, V} <- maps:get(env, Opts, [])],
            PortOpts = [{args, port_args(Opts)}, {packet, 4}, nouse_stdio,
                        binary, exit_status] ++ [{env, Env} || Env =/= []],
            try open_port({spawn_executable, Python}, PortOpts) of
                Port ->
                    OsPid = case erlang:port_info(Port, os_pid) of
                                {os_pid, P} -> P;
                                undefined -> undefined
                            end,
                    {ok, #state{port = Port, os_pid = OsPid,
                                timeout = maps:get(timeout, Opts, ?DEFAULT_TIMEOUT),
                                shutdown_wait = maps:get(shutdown_wait, Opts,
                                                         ?DEFAULT_SHUTDOWN_WAIT)}}
            catch error:Reason ->
                {stop, {open_port_failed, Python, Reason}}
            end
    end.

port_args(Opts) ->
    case {maps:find(args, Opts), maps:get(port_logs, Opts, logger)} of
        {{ok, Args}, _} -> Args;
        {error, logger} -> ?DEFAULT_ARGS ++ [?LOG_FRAMES];
        {error, stderr} -> ?DEFAULT_ARGS
    end.

python(Opts) ->
    case maps:find(python, Opts) of
        {ok, P} -> to_list(P);
        error ->
            case os:getenv("WASI_NN_PYTHON") of
                V when V =:= false; V =:= "" -> os:find_executable("python3");
                V -> V
            end
    end.

to_list(B) when is_binary(B) -> unicode:characters_to_list(B);
to_list(A) when is_atom(A) -> atom_to_list(A);
to_list(L) when is_list(L) -> L.

handle_call({request, Op, Args, Timeout}, From, State) ->
    case submit(Op, Args, Timeout, #{kind => call, from => From}, State) of
        {ok, State1} -> {noreply, State1};
        error -> {reply, {error, port_closed}, State}
    end;
handle_call({stream, Op, Args, Timeout, To}, _From, State) ->
    Ref = make_ref(),
    case submit(Op, Args, Timeout, #{kind => stream, to => To, ref => Ref}, State) of
        {ok, State1} -> {reply, {ok, Ref}, State1};
        error -> {reply, {error, port_closed}, State}
    end;
handle_call(port, _From, State = #state{port = Port}) when Port =/= undefined ->
    {reply, {ok, Port}, State};
handle_call(os_pid, _From, State = #state{os_pid = OsPid}) when OsPid =/= undefined ->
    {reply, {ok, OsPid}, State};
handle_call(_, _From, State) ->
    {reply, {error, port_closed}, State}.

%% Send {Id, Op, Args} and remember who waits for Id (and its timer); error: no port.
submit(_Op, _Args, _Timeout, _Waiter, #state{port = undefined}) ->
    error;
submit(Op, Args0, Timeout0, Waiter, State = #state{port = Port, next_id = Id}) ->
    Timeout = case Timeout0 of default -> State#state.timeout; T -> T end,
    Args = with_options(Op, Args0, Timeout),
    try port_command(Port, term_to_binary({Id, Op, Args})) of
        true ->
            Timer = case Timeout of
                        infinity -> undefined;
                        _ -> erlang:send_after(Timeout, self(), {request_timeout, Id})
                    end,
            telemetry(start, Op, #{system_time => erlang:system_time()}, #{id => Id}),
            Entry = Waiter#{op => Op, timer => Timer,
                            started => erlang:monotonic_time()},
            {ok, State#state{next_id = Id + 1,
                             pending = maps:put(Id, Entry, State#state.pending)}}
    catch error:_ ->
        error
    end.

%% A generation's Options (docs/erlang-protocol.md): the call's timeout as its deadline on the
%% backend, which then never ends it sooner than the caller waits (a timeout_ms in the
%% RuntimeConfigJson still wins), and usage in run_inference's reply (for telemetry; the
%% caller gets {ok, Reply} as always).
with_options(Op, {Ctx, Exec, Prompt, Runtime}, Timeout)
  when Op =:= run_inference; Op =:= run_inference_stream ->
    {Ctx, Exec, Prompt, Runtime, #{timeout => Timeout, usage => Op =:= run_inference}};
with_options(_Op, Args, _Timeout) ->
    Args.

%% telemetry:execute([wasi_nn, request, start | stop], Measurements, Metadata) when the
%% telemetry application is there; nothing otherwise (no dependency).
telemetry(Event, Op, Measurements, Metadata) ->
    case erlang:function_exported(telemetry, execute, 3) of
        true ->
            catch telemetry:execute([wasi_nn, request, Event], Measurements,
                                    Metadata#{op => Op}),
            ok;
        false -> ok
    end.

handle_cast(_Msg, State) ->
    {noreply, State}.

handle_info({Port, {data, Frame}}, State = #state{port = Port}) ->
    try binary_to_term(Frame) of
        {Id, Reply} when is_integer(Id) -> {noreply, deliver(Id, Reply, State)};
        {log, Level, Name, Message} ->
            port_log(Level, Name, Message),
            {noreply, State};
        Other ->
            logger:warning("wasi_nn: frame for no request: ~0tp", [Other]),
            {noreply, State}
    catch error:_ ->
        logger:warning("wasi_nn: unreadable frame of ~b bytes", [byte_size(Frame)]),
        {noreply, State}
    end;
handle_info({request_timeout, Id}, State = #state{pending = Pending}) ->
    case maps:take(Id, Pending) of
        {Entry, Rest} ->
            finish(Entry, {error, timeout}),
            {noreply, cancel(Id, Entry, State#state{pending = Rest})};
        error ->
            {noreply, State}
    end;
handle_info({Port, {exit_status, Status}}, State = #state{port = Port}) ->
    State1 = fail_all({error, {port_exit, Status}}, State#state{port = undefined}),
    {stop, {port_exit, Status}, State1};
handle_info({'EXIT', Port, Reason}, State = #state{port = Port}) ->
    State1 = fail_all({error, port_closed}, State#state{port = undefined}),
    {stop, {port_closed, Reason}, State1};
handle_info(_Msg, State) ->
    {noreply, State}.

%% A log line of the port program (--log-frames) into logger. No domain: OTP's default handler
%% drops events of domains other than otp's; metadata wasi_nn_port names the Python logger,
%% for a filter or formatter to pick out.
port_log(Level0, Name, Message) ->
    Level = case lists:member(Level0, [emergency, alert, critical, error, warning, notice,
                                       info, debug]) of
                true -> Level0;
                false -> notice
            end,
    logger:log(Level, "~ts: ~ts", [Name, Message], #{wasi_nn_port => Name}).

%% A generation that timed out: ask the port to stop it ({NewId, cancel, {Id}}), so its session
%% is free for the next request. Nobody waits for the `ok'; it and the cancelled request's own
%% error reply come for no pending request and are dropped.
cancel(Id, #{op := Op}, State = #state{port = Port, next_id = CancelId})
  when Port =/= undefined, (Op =:= run_inference orelse Op =:= run_inference_stream) ->
    try port_command(Port, term_to_binary({CancelId, cancel, {Id}})) of
        true -> State#state{next_id = CancelId + 1}
    catch error:_ -> State
    end;
cancel(_Id, _Entry, State) ->
    State.

%% A frame {Id, Reply}: to the caller waiting for Id; dropped when none is (late, timed out).
deliver(Id, Reply, State = #state{pending = Pending}) ->
    case maps:find(Id, Pending) of
        error ->
            State;
        {ok, Entry = #{kind := call}} ->
            finish(Entry, Reply),
            State#state{pending = maps:remove(Id, Pending)};
        {ok, Entry = #{kind := stream, to := To, ref := Ref}} ->
            case Reply of
                {token, Piece} ->
                    To ! {wasi_nn_token, Ref, Piece},
                    State;
                _ ->
                    finish(Entry, Reply),
                    State#state{pending = maps:remove(Id, Pending)}
            end
    end.

%% The end of a request: its reply (shaped as HyperBEAM's) or the error that ended it.
finish(Entry = #{timer := Timer, op := Op, started := Started}, Reply) ->
    Timer =:= undefined orelse erlang:cancel_timer(Timer),
    telemetry(stop, Op, #{duration => erlang:monotonic_time() - Started},
              stop_metadata(Reply)),
    case Entry of
        #{kind := call, from := From, op := Op} ->
            gen_server:reply(From, shape(Op, Reply));
        #{kind := stream, to := To, ref := Ref} ->
            To ! case Reply of
                     {done, Usage} -> {wasi_nn_done, Ref, Usage};
                     {error, Reason} -> {wasi_nn_error, Ref, Reason};
                     Other -> {wasi_nn_error, Ref, {unexpected_reply, Other}}
                 end
    end.

%% stop's metadata: ok, or the error; a generation's usage JSON (token counts) when it came.
stop_metadata({ok, _Reply, Usage}) -> #{result => ok, usage => Usage};
stop_metadata({done, Usage}) -> #{result => ok, usage => Usage};
stop_metadata({error, Reason}) -> #{result => error, error => Reason};
stop_metadata(_) -> #{result => ok}.

shape(init_backend, {ok, Id}) -> {ok, #wasi_nn_ctx{server = self(), id = Id}};
shape(run_inference, {ok, Reply, _Usage}) -> {ok, Reply};
shape(load_by_name_with_config, {ok, _Graph}) -> ok;
shape(_Op, Reply) -> Reply.

fail_all(Error, State = #state{pending = Pending}) ->
    [finish(Entry, Error) || {_Id, Entry} <- lists:keysort(1, maps:to_list(Pending))],
    State#state{pending = #{}}.

terminate(_Reason, State = #state{port = Port, os_pid = OsPid}) ->
    fail_all({error, port_closed}, State),
    case Port of
        undefined -> ok;
        _ ->
            catch port_close(Port),
            wait_os_exit(OsPid, State#state.shutdown_wait)
    end,
    ok.

%% After port_close the port sends nothing more; where /proc shows processes, wait (bounded)
%% for the port program to have exited and been reaped.
wait_os_exit(undefined, _) -> ok;
wait_os_exit(OsPid, Wait) ->
    case filelib:is_dir("/proc/self") of
        false -> ok;
        true -> wait_gone("/proc/" ++ integer_to_list(OsPid),
                          erlang:monotonic_time(millisecond) + Wait)
    end.

wait_gone(Dir, Deadline) ->
    case filelib:is_dir(Dir) andalso erlang:monotonic_time(millisecond) < Deadline of
        true -> timer:sleep(10), wait_gone(Dir, Deadline);
        false -> ok
    end.

code_change(_OldVsn, State, _Extra) ->
    {ok, State}.
