%%% @doc EUnit tests of dev_wasi_nn_nif, the drop-in for HyperBEAM's NIF module.
%%%
%%% Always run: the error-atom mapping, the error styles and bad handles with no server.
%%%
%%% With WASI_NN_PYTHON (the interpreter with the package) and WASI_NN_MODEL (a GGUF file) set,
%%% each real-port test starts `wasi_nn' under a supervisor of its own (this module's init/1,
%%% with wasi_nn:child_spec/1) and drives the module as HyperBEAM does:
%%%   gen_b       switch_model -> init_execution_context_once -> run_inference/3 (history kept,
%%%               sessions independent), run_inference/4 and _with_options/4 (seed, temperature
%%%               0: reproducible), close, cleanup_all_contexts; and dev_wasi_nn's request path
%%%   gen_c       ensure_model_loaded -> init_session -> run_inference/2,3; a model switch
%%%   concurrent  50 processes x 3 turns (half generation B, half C) equal the sequential run
%%%   kill        kill -9 of the port: the caller in flight gets an error, the supervisor
%%%               restarts wasi_nn, then the same calls on the old handles work (sessions come
%%%               back empty, logged), concurrently too
%%%   atoms       the bare-atom error style against real errors, and the tuple style
%%% Without them the real-port tests are skipped with "real port: skipped (... not set)".
-module(dev_wasi_nn_nif_tests).
-include_lib("eunit/include/eunit.hrl").

-export([init/1, start_server/2, log/2]).

-define(NIF, dev_wasi_nn_nif).
-define(REAL_TIMEOUT, 120).
-define(WAIT, 60000).
%% Greedy, short (the concurrency test runs 150 turns), EOS ignored so every reply has text.
-define(OPTS, "{\"temperature\":0,\"max_tokens\":4,\"ignore_eos\":true}").
-define(SEEDED, "{\"seed\":42,\"temperature\":0,\"max_tokens\":4,\"ignore_eos\":true}").
%% A generation that only a dead port ends.
-define(ENDLESS, "{\"temperature\":0,\"max_tokens\":-1,\"ignore_eos\":true,\"timeout_ms\":0}").
-define(BACKEND_CONFIG, "{\"logging\":{\"level\":\"error\"}}").

%%% ==========================================================================================
%%% Without a port
%%% ==========================================================================================

nif_error_table_test_() ->
    Msg = <<"m">>,
    [{lists:flatten(io_lib:format("~p ~0p -> ~p", [Op, Reason, Atom])),
      ?_assertEqual(Atom, ?NIF:nif_error(Op, Reason))} || {Op, Reason, Atom} <- [
        {init_backend, {invalid_encoding, Msg}, init_failed},
        {init_backend, port_closed, init_failed},
        {load, {model_not_found, Msg}, load_failed},
        {load, {invalid_encoding, Msg}, load_failed},
        {load, {invalid_argument, Msg}, invalid_config},
        {load, {not_found, Msg}, invalid_context},
        {init_execution_context, {not_found, Msg}, invalid_context},
        {init_execution_context, {invalid_argument, Msg}, invalid_session_id},
        {init_execution_context, {busy, Msg}, init_execution_failed},
        {init_session, {runtime_error, Msg}, init_execution_failed},
        {close_execution_context, {not_found, Msg}, invalid_exec_ctx},
        {close_execution_context, {invalid_argument, Msg}, invalid_args},
        {close_execution_context, timeout, close_execution_failed},
        {run_inference, {not_found, Msg}, invalid_exec_ctx},
        {run_inference, {invalid_argument, Msg}, invalid_input},
        {run_inference, {prompt_too_long, Msg}, invalid_input},
        {run_inference, {context_full, Msg}, run_inference_failed},
        {run_inference, {port_exit, 137}, run_inference_failed},
        {run_inference_with_options, {invalid_encoding, Msg}, invalid_options},
        {run_inference_with_options, {invalid_argument, Msg}, invalid_options},
        {run_inference_with_options, {too_large, Msg}, invalid_input},
        {run_inference_with_options, {busy, Msg}, run_inference_failed},
        {deinit_backend, {not_found, Msg}, invalid_context},
        {deinit_backend, timeout, deinit_failed},
        {init_session, {backend_not_initialized, Msg}, backend_not_initialized},
        {no_model, {no_model_loaded, Msg}, no_model_loaded},
        {unsupported, {unsupported_operation, Msg}, unsupported_operation}]].

error_style_test() ->
    try
        ?assertEqual(tuple, ?NIF:error_style()),
        ok = application:set_env(wasi_nn, error_style, atom),
        ?assertEqual(atom, ?NIF:error_style()),
        ?NIF:set_error_style(tuple),   % the override wins over the env
        ?assertEqual(tuple, ?NIF:error_style()),
        ?NIF:set_error_style(default),
        ?assertEqual(atom, ?NIF:error_style())
    after
        application:unset_env(wasi_nn, error_style),
        ?NIF:set_error_style(default)
    end.

%% No wasi_nn server: its errors in the tuple style, the NIF's atoms in the atom style; bad
%% handles are not found, whichever generation's run_inference/3 they reach.
no_server_test() ->
    undefined = whereis(wasi_nn),
    Ctx = {dev_wasi_nn_ctx, -1},
    ?assertEqual({error, port_closed}, ?NIF:init_backend()),
    ?assertMatch({error, {not_found, _}}, ?NIF:run_inference(Ctx, 1, "hi")),
    ?assertMatch({error, {not_found, _}}, ?NIF:run_inference(not_a_ctx, 1, "hi")),
    ?assertMatch({error, {not_found, _}}, ?NIF:run_inference({dev_wasi_nn_session, -1}, "hi")),
    ?assertMatch({error, {not_found, _}}, ?NIF:run_inference({dev_wasi_nn_session, -1}, "hi",
                                                             "{}")),
    ?assertMatch({error, {unsupported_operation, _}}, ?NIF:compute(Ctx, 1)),
    try
        ?NIF:set_error_style(atom),
        ?assertEqual({error, init_failed}, ?NIF:init_backend()),
        ?assertEqual({error, init_failed}, ?NIF:init_backend_with_config(<<"{}">>)),
        ?assertEqual({error, invalid_exec_ctx}, ?NIF:run_inference(Ctx, 1, "hi")),
        ?assertEqual({error, invalid_exec_ctx}, ?NIF:run_inference(Ctx, 1, "hi", ?OPTS)),
        ?assertEqual({error, invalid_context}, ?NIF:deinit_backend(Ctx)),
        ?assertEqual({error, invalid_context}, ?NIF:load_by_name_with_config(Ctx, "m", "{}")),
        ?assertEqual({error, invalid_context}, ?NIF:init_execution_context(Ctx, "s")),
        ?assertEqual({error, invalid_exec_ctx}, ?NIF:close_execution_context(Ctx, 1)),
        ?assertEqual({error, unsupported_operation}, ?NIF:set_input(Ctx, 1, <<>>)),
        ?assertEqual({error, unsupported_operation}, ?NIF:get_output(Ctx, 1, 0)),
        ?assertEqual({error, init_failed}, ?NIF:switch_model("m.gguf", "{}"))
    after
        ?NIF:set_error_style(default)
    end.

no_model_test() ->
    ok = ?NIF:cleanup_all_contexts(),
    ?assertMatch({error, {no_model_loaded, _}}, ?NIF:get_current_model_info()),
    ?assertMatch({error, {no_model_loaded, _}},
                 ?NIF:init_execution_context_once({dev_wasi_nn_ctx, -1}, "s")),
    ?assertMatch({error, {backend_not_initialized, _}}, ?NIF:init_session("s")),
    try
        ?NIF:set_error_style(atom),
        ?assertEqual({error, no_model_loaded}, ?NIF:get_current_model_info()),
        ?assertEqual({error, backend_not_initialized}, ?NIF:init_session("s"))
    after
        ?NIF:set_error_style(default)
    end.

%%% ==========================================================================================
%%% Against the real port (WASI_NN_PYTHON and WASI_NN_MODEL set)
%%% ==========================================================================================

real_port_test_() ->
    case [V || V <- ["WASI_NN_PYTHON", "WASI_NN_MODEL"], getenv(V) =:= false] of
        [] ->
            [{atom_to_list(Name), {timeout, ?REAL_TIMEOUT, fun() -> with_server(Name) end}}
             || Name <- [gen_b, gen_c, concurrent, kill, atoms]];
        Missing ->
            {"real port: skipped (" ++ string:join(Missing, ", ") ++ " not set)", []}
    end.

%% Scenario Name with wasi_nn (registered, python from WASI_NN_PYTHON) under a supervisor
%% made here; the backend config comes from the application env, as in HyperBEAM.
with_server(Name) ->
    ok = application:set_env(wasi_nn, backend_config, ?BACKEND_CONFIG),
    Spec = wasi_nn:child_spec([{timeout, ?WAIT}]),
    {ok, Sup} = supervisor:start_link(?MODULE, [Spec#{start => {?MODULE, start_server,
                                                                 [[{timeout, ?WAIT}], self()]}}]),
    Server = started(),
    try
        scenario(Name, Server)
    after
        ?NIF:cleanup_all_contexts(),
        ?NIF:set_error_style(default),
        application:unset_env(wasi_nn, backend_config),
        unlink(Sup),
        MRef = monitor(process, Sup),
        exit(Sup, shutdown),
        receive {'DOWN', MRef, _, _, _} -> ok after ?WAIT -> error({still_alive, Sup}) end
    end.

%% Supervisor callback: one wasi_nn child.
init([Spec]) -> {ok, {#{strategy => one_for_one, intensity => 5, period => 10}, [Spec]}}.

%% The child's start function: wasi_nn:start_link/1, and a message to the test for each
%% (re)start, so the test waits for a restart without polling.
start_server(Opts, Notify) ->
    case wasi_nn:start_link(Opts) of
        {ok, Pid} -> Notify ! {wasi_nn_started, Pid}, {ok, Pid};
        Other -> Other
    end.

started() ->
    receive {wasi_nn_started, Pid} -> Pid after ?WAIT -> error(wasi_nn_not_started) end.

%%% -- generation B ---------------------------------------------------------------------------

scenario(gen_b, _) ->
    M = model(), C = load_config(),
    {ok, Ctx} = ?NIF:switch_model(M, C),
    ?assertEqual({ok, {M, C, Ctx}}, ?NIF:get_current_model_info()),
    ?assertEqual({ok, Ctx}, ?NIF:switch_model(M, list_to_binary(C))),  % same config: cached
    ?assertEqual({ok, {M, list_to_binary(C), Ctx}}, ?NIF:get_current_model_info()),  % as given
    {ok, E1} = ?NIF:init_execution_context_once(Ctx, "s1"),
    ?assert(is_integer(E1)),
    ?assertEqual({ok, E1}, ?NIF:init_execution_context_once(Ctx, <<"s1">>)),
    {ok, E2} = ?NIF:init_execution_context_once(Ctx, "s2"),
    ?assertNotEqual(E1, E2),
    %% history: the second turn of s1 follows its first; s2 starts from nothing
    A1 = ok(?NIF:run_inference(Ctx, E1, "Hello")),
    A2 = ok(?NIF:run_inference(Ctx, E1, "And then?")),
    B1 = ok(?NIF:run_inference(Ctx, E2, "And then?")),
    ?assertNotEqual(A2, B1),
    %% a new session is independent of s1's history; binaries and charlists alike
    {ok, E3} = ?NIF:init_execution_context(Ctx, "s3"),
    ?assertEqual(A1, ok(?NIF:run_inference(Ctx, E3, <<"Hello">>))),
    %% options: seeded greedy output is reproducible and the options apply (4 tokens, not 8)
    {ok, E4} = ?NIF:init_execution_context_once(Ctx, "o1"),
    {ok, E5} = ?NIF:init_execution_context_once(Ctx, "o2"),
    O1 = ok(?NIF:run_inference(Ctx, E4, "Hello", ?SEEDED)),
    ?assertEqual(O1, ok(?NIF:run_inference_with_options(Ctx, E5, "Hello", ?SEEDED))),
    ?assert(byte_size(O1) < byte_size(A1)),
    ?assertEqual(O1, binary:part(A1, 0, byte_size(O1))),
    %% dev_wasi_nn's request path (binaries from the message, binary_to_list for the NIF)
    ?assertEqual({ok, #{<<"result">> => A1, <<"session-id">> => <<"dev-1">>}},
                 hb_b_infer(M, list_to_binary(C), <<"Hello">>, <<"dev-1">>)),
    %% close, then cleanup: the handles are gone
    ok = ?NIF:close_execution_context(Ctx, E3),
    ?assertMatch({error, {not_found, _}}, ?NIF:close_execution_context(Ctx, E3)),
    ?assertMatch({error, {not_found, _}}, ?NIF:run_inference(Ctx, E3, "Hello")),
    ok = ?NIF:cleanup_all_contexts(),
    ?assertMatch({error, {no_model_loaded, _}}, ?NIF:get_current_model_info()),
    ?assertMatch({error, {not_found, _}}, ?NIF:run_inference(Ctx, E1, "Hello"));

%%% -- generation C ---------------------------------------------------------------------------

scenario(gen_c, _) ->
    M = model(), C = load_config(),
    ok = ?NIF:ensure_model_loaded(M, C),
    ok = ?NIF:ensure_model_loaded(M, C),
    {ok, S1} = ?NIF:init_session("c1"),
    ?assertEqual({ok, S1}, ?NIF:init_session("c1")),   % same id, same model: same session
    X1 = ok(?NIF:run_inference(S1, "Hello")),
    X2 = ok(?NIF:run_inference(S1, "And then?", "{}")),
    {ok, S2} = ?NIF:init_session("c2"),
    Y1 = ok(?NIF:run_inference(S2, "And then?", "")),
    ?assertNotEqual(X2, Y1),                            % c1 kept its history, c2 had none
    {ok, S3} = ?NIF:init_session(<<"c3">>),
    ?assertEqual(X1, ok(?NIF:run_inference(S3, <<"Hello">>, <<"{}">>))),
    %% the device's request path (charlists, the user's options "" when none)
    ?assertEqual({ok, X1}, hb_c_infer(list_to_binary(M), list_to_binary(C), <<"Hello">>,
                                      <<"dev-c">>, "")),
    %% another config of the model: a new backend, new sessions; the old ones are gone
    C2 = "{\"model\":{\"threads\":1,\"n_ctx\":512},\"sampling\":{\"temperature\":0,"
         "\"ignore_eos\":true},\"stopping\":{\"max_tokens\":8}}",
    ok = ?NIF:ensure_model_loaded(M, C2),
    {ok, S4} = ?NIF:init_session("c1"),
    ?assertNotEqual(S1, S4),
    ?assertEqual(Y1, ok(?NIF:run_inference(S4, "And then?"))),  % c1 starts afresh there
    ?assertMatch({error, {not_found, _}}, ?NIF:run_inference(S1, "Hello"));

%%% -- concurrency ----------------------------------------------------------------------------

scenario(concurrent, _) ->
    M = model(), C = load_config(),
    {ok, Ctx} = ?NIF:switch_model(M, C),
    Convs = [[First, "And then?", "Why?"]
             || First <- ["Hello", "Tell me a story", "Hi there", "What is 2+2?", "Name a color"]],
    %% the sequential run: each conversation once, in a session of its own
    Sequential = [begin
                      {ok, E} = ?NIF:init_execution_context_once(Ctx, "seq-" ++ integer_to_list(K)),
                      [ok(?NIF:run_inference(Ctx, E, P, ?OPTS)) || P <- Conv]
                  end || {K, Conv} <- lists:zip(lists:seq(1, length(Convs)), Convs)],
    ?assert(length(lists:usort(Sequential)) > 1),  % the conversations tell the sessions apart
    %% 50 processes at once, each in its own session; even ones through generation C
    Self = self(),
    Workers = [begin
                   K = I rem length(Convs) + 1,
                   {Pid, MRef} = spawn_monitor(fun() ->
                       Self ! {self(), converse(I, Ctx, lists:nth(K, Convs))} end),
                   {Pid, MRef, K}
               end || I <- lists:seq(1, 50)],
    Results = [receive
                   {Pid, Replies} -> demonitor(MRef, [flush]), {K, Replies};
                   {'DOWN', MRef, process, Pid, Why} -> error({worker_died, Why})
               after ?WAIT * 2 -> error(workers_timed_out)
               end || {Pid, MRef, K} <- Workers],
    [?assertEqual({K, lists:nth(K, Sequential)}, {K, Replies}) || {K, Replies} <- Results],
    ok;

%%% -- kill -9 and recovery -------------------------------------------------------------------

scenario(kill, Server) ->
    M = model(), C = load_config(),
    Log = capture_warnings(),
    try kill_scenario(M, C, Server, Log) after logger:remove_handler(Log) end;

%%% -- the bare-atom error style --------------------------------------------------------------

scenario(atoms, _) ->
    M = model(), C = load_config(),
    Missing = "/nonexistent/model.gguf",
    ok = application:set_env(wasi_nn, error_style, atom),
    try
        {ok, Ctx} = ?NIF:init_backend(),
        ?assertEqual({error, load_failed}, ?NIF:load_by_name_with_config(Ctx, Missing, "{}")),
        ?assertEqual({error, load_failed}, ?NIF:load_by_name_with_config(Ctx, M, "{not json")),
        ?assertEqual({error, invalid_config},
                     ?NIF:load_by_name_with_config(Ctx, M, "{\"model\":{\"n_ctx\":-5}}")),
        ok = ?NIF:load_by_name_with_config(Ctx, M, C),
        {ok, E} = ?NIF:init_execution_context(Ctx, "a1"),
        ?assertEqual({error, invalid_exec_ctx}, ?NIF:run_inference(Ctx, -1, "hi")),
        ?assertEqual({error, invalid_options}, ?NIF:run_inference(Ctx, E, "hi", "{oops")),
        ?assertEqual({error, invalid_options},
                     ?NIF:run_inference(Ctx, E, "hi", "{\"max_tokens\":-3}")),
        ?assertEqual({error, invalid_input}, ?NIF:run_inference(Ctx, E, 42)),
        ?assertEqual({error, init_failed}, ?NIF:init_backend_with_config("{oops")),
        ?assertEqual({error, unsupported_operation}, ?NIF:compute(Ctx, E)),
        ?assertMatch({ok, <<_, _/binary>>}, ?NIF:run_inference(Ctx, E, "hi", ?OPTS)),
        ok = ?NIF:close_execution_context(Ctx, E),
        ?assertEqual({error, invalid_exec_ctx}, ?NIF:close_execution_context(Ctx, E)),
        ok = ?NIF:deinit_backend(Ctx),
        ?assertEqual({error, invalid_context}, ?NIF:deinit_backend(Ctx)),
        ?assertEqual({error, invalid_context}, ?NIF:init_execution_context(Ctx, "a2")),
        %% the helpers' wrapper shapes, as HyperBEAM's
        ?assertEqual({error, {model_load_failed, {error, load_failed}}},
                     ?NIF:switch_model(Missing, C)),
        ?assertEqual({error, load_failed}, ?NIF:ensure_model_loaded(Missing, C)),
        ?assertEqual({error, no_model_loaded}, ?NIF:get_current_model_info()),
        ?assertEqual({error, no_model_loaded}, ?NIF:init_execution_context_once(Ctx, "a3")),
        ?assertEqual({error, backend_not_initialized}, ?NIF:init_session("a3")),
        %% the same failures in the default style: wasi_nn's {Code, Message}
        ?NIF:set_error_style(tuple),
        ?assertMatch({error, {model_not_found, <<_/binary>>}}, ?NIF:switch_model(Missing, C)),
        ?assertMatch({error, {model_not_found, <<_/binary>>}},
                     ?NIF:ensure_model_loaded(Missing, C)),
        ?assertMatch({error, {invalid_encoding, <<_/binary>>}},
                     ?NIF:init_backend_with_config("{oops"))
    after
        application:unset_env(wasi_nn, error_style)
    end.

kill_scenario(M, C, Server, Log) ->
    %% before: a generation B session with two turns, a generation C session, and eight
    %% sessions made but not used yet
    {ok, Ctx} = ?NIF:switch_model(M, C),
    {ok, E} = ?NIF:init_execution_context_once(Ctx, "k1"),
    A1 = ok(?NIF:run_inference(Ctx, E, "Hello")),
    A2 = ok(?NIF:run_inference(Ctx, E, "And then?")),
    ok = ?NIF:ensure_model_loaded(M, C),
    {ok, S} = ?NIF:init_session("k2"),
    X1 = ok(?NIF:run_inference(S, "Hello", ?OPTS)),
    Many = [ok(?NIF:init_execution_context_once(Ctx, "r" ++ integer_to_list(I)))
            || I <- lists:seq(1, 8)],
    %% a caller in flight: its request is pending on the port when the port is killed
    {ok, EL} = ?NIF:init_execution_context_once(Ctx, "long"),
    {Caller, CallerRef} = in_flight(Server, fun() ->
        ?NIF:run_inference(Ctx, EL, "Tell me a story", ?ENDLESS) end),
    {ok, OsPid} = wasi_nn:os_pid(),
    ServerRef = monitor(process, Server),
    os:cmd("kill -9 " ++ integer_to_list(OsPid)),
    ?assertEqual({error, {port_exit, 137}},
                 receive {'DOWN', CallerRef, process, Caller, {result, R}} -> R
                 after ?WAIT -> error(caller_not_answered) end),
    receive {'DOWN', ServerRef, process, Server, _} -> ok after ?WAIT -> error(server_alive) end,
    NewServer = started(),
    ?assertNotEqual(Server, NewServer),
    %% after: first eight callers at once on old handles (they recover the backend once), then
    %% the same call sequence as before; every session comes back empty
    Self = self(),
    Pids = [spawn_link(fun() -> Self ! {self(), ?NIF:run_inference(Ctx, Ei, "Hello", ?OPTS)} end)
            || Ei <- Many],
    [?assertEqual({ok, X1}, receive {Pid, R} -> R after ?WAIT -> timeout end) || Pid <- Pids],
    ?assertEqual({ok, Ctx}, ?NIF:switch_model(M, C)),
    ?assertEqual({ok, E}, ?NIF:init_execution_context_once(Ctx, "k1")),
    ?assertEqual({ok, A1}, ?NIF:run_inference(Ctx, E, "Hello")),
    ?assertEqual({ok, A2}, ?NIF:run_inference(Ctx, E, "And then?")),
    ok = ?NIF:ensure_model_loaded(M, C),
    ?assertEqual({ok, S}, ?NIF:init_session("k2")),
    ?assertEqual({ok, X1}, ?NIF:run_inference(S, "Hello", ?OPTS)),
    {ok, NewOsPid} = wasi_nn:os_pid(),
    ?assertNotEqual(OsPid, NewOsPid),
    %% logged: the one backend re-created once; the ten sessions used since, re-created
    Warnings = flush_warnings(Log),
    ?assertEqual(1, count("re-creating backend", Warnings)),
    ?assertEqual(10, count("history is lost", Warnings)).

%% Run Fun in a process whose gen_server call has reached Server's queue and been handled
%% (the trace shows the call arrive; sys:get_state returns after the server handled it), so
%% the request is pending on the port. {Pid, MonitorRef}; it exits {result, Fun()}.
in_flight(Server, Fun) ->
    erlang:trace(Server, true, ['receive']),
    {Pid, MRef} = spawn_monitor(fun() -> exit({result, Fun()}) end),
    receive {trace, Server, 'receive', {'$gen_call', {Pid, _}, _}} -> ok
    after ?WAIT -> error(call_not_sent)
    end,
    erlang:trace(Server, false, ['receive']),
    _ = sys:get_state(Server),
    {Pid, MRef}.

%%% -- HyperBEAM's device code, as it calls the NIF module -------------------------------------

%% dev_wasi_nn:load_and_infer of generation B (permaweb/HyperBEAM): binaries from the message.
hb_b_infer(ModelPath, ModelConfig, Prompt, SessionId) ->
    case ?NIF:switch_model(ModelPath, ModelConfig) of
        {ok, Ctx} ->
            case ?NIF:init_execution_context_once(Ctx, binary_to_list(SessionId)) of
                {ok, Exec} ->
                    case ?NIF:run_inference(Ctx, Exec, binary_to_list(Prompt)) of
                        {ok, Out} -> {ok, #{<<"result">> => Out, <<"session-id">> => SessionId}};
                        Error -> Error
                    end;
                Error -> Error
            end;
        Error -> Error
    end.

%% The generation C device's load_and_infer: every argument a charlist.
hb_c_infer(Model, Config, Prompt, SessionId, UserConfig) ->
    case ?NIF:ensure_model_loaded(binary_to_list(Model), binary_to_list(Config)) of
        ok ->
            case ?NIF:init_session(binary_to_list(SessionId)) of
                {ok, Session} -> ?NIF:run_inference(Session, binary_to_list(Prompt), UserConfig);
                Error -> Error
            end;
        Error -> Error
    end.

%%% -- helpers --------------------------------------------------------------------------------

converse(I, _Ctx, Prompts) when I rem 2 =:= 0 ->
    {ok, Session} = ?NIF:init_session("par-" ++ integer_to_list(I)),
    [ok(?NIF:run_inference(Session, P, ?OPTS)) || P <- Prompts];
converse(I, Ctx, Prompts) ->
    {ok, E} = ?NIF:init_execution_context_once(Ctx, "par-" ++ integer_to_list(I)),
    [ok(?NIF:run_inference(Ctx, E, P, ?OPTS)) || P <- Prompts].

ok({ok, Value}) -> Value;
ok(Other) -> error({not_ok, Other}).

getenv(Name) ->
    case os:getenv(Name) of
        "" -> false;
        V -> V
    end.

model() -> getenv("WASI_NN_MODEL").

%% One llama.cpp thread (a busy 2-CPU machine); greedy 8-token defaults for run_inference/3,
%% which takes no options.
load_config() ->
    "{\"model\":{\"threads\":1},\"sampling\":{\"temperature\":0,\"ignore_eos\":true},"
    "\"stopping\":{\"max_tokens\":8}}".

%% A logger handler sending this process the text of every warning of dev_wasi_nn_nif
%% (it runs in the caller, so a warning is here when the call that logged it returns).
capture_warnings() ->
    Id = list_to_atom("dev_wasi_nn_nif_tests_" ++ integer_to_list(erlang:unique_integer([positive]))),
    ok = logger:add_handler(Id, ?MODULE, #{level => warning, config => #{to => self()}}),
    Id.

log(#{level := warning, msg := Msg}, #{config := #{to := To}}) ->
    Text = case Msg of
               {report, R} -> io_lib:format("~0tp", [R]);
               {string, S} -> S;
               {Format, Args} -> io_lib:format(Format, Args)
           end,
    To ! {warning, unicode:characters_to_binary(Text)};
log(_, _) -> ok.

flush_warnings(Id) ->
    ok = logger:remove_handler(Id),
    flush_warnings().
flush_warnings() ->
    receive {warning, Text} -> [Text | flush_warnings()] after 0 -> [] end.

count(Needle, Texts) ->
    length([T || T <- Texts, binary:match(T, list_to_binary(Needle)) =/= nomatch]).
