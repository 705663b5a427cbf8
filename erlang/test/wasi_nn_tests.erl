%%% @doc EUnit tests of wasi_nn.
%%%
%%% Always run: text conversion, argument checks, and the server's mechanics (timeouts, late
%%% replies, port death, stop, a supervisor restart) against fake port programs written in sh.
%%%
%%% Against the real port program (python -m wasi_nn_backend.adapters.erlang) when
%%% WASI_NN_PYTHON (the interpreter) and WASI_NN_MODEL (a GGUF file) are set. Optional:
%%%   WASI_NN_BACKEND_CONFIG  init_backend's JSON (default {"logging":{"level":"error"}})
%%%   WASI_NN_LOAD_CONFIG     load_by_name_with_config's JSON (default {})
%%%   WASI_NN_RUNTIME_CONFIG  the short requests' runtime JSON (default greedy, 8 tokens)
%%%   WASI_NN_LONG_CONFIG     a generation that runs for seconds (default: 10^6 tokens, 3 s cap)
%%%   WASI_NN_MSG_A, _B, _A2  the chat messages (defaults "Hello", "Tell me a story", "And then?")
%%%   WASI_NN_EXPECT_A, _B, _A_A2, _B_A2  base64 of the replies the Python API gives (A in a new
%%%                           session; B; A2 after A; A2 after B): checked when set.
%%%
%%% Each real-port scenario is also a function for one VM run:
%%%   erl -noshell -pa DIR -eval 'wasi_nn_tests:run(concurrent)'
%%% prints "REPORT Key Kind Value" lines (Kind: int, b64, term), then "SCENARIO OK" and halts 0,
%%% or prints "SCENARIO FAILED ..." and halts 1.
-module(wasi_nn_tests).
-include_lib("eunit/include/eunit.hrl").

-export([run/1, scenario/2, scenarios/0, setup/0, cleanup/1]).
-export([init/1]).  % supervisor callback for the supervision tests

-define(SHORT, <<"{\"temperature\":0,\"max_tokens\":8,\"ignore_eos\":true}">>).
-define(LONG, <<"{\"temperature\":0,\"max_tokens\":1000000,\"ignore_eos\":true,"
                "\"max_time_ms\":3000}">>).
%% a generation that never ends by itself (no token limit, no deadline): only a cancel stops it
-define(ENDLESS, <<"{\"temperature\":0,\"max_tokens\":-1,\"ignore_eos\":true,"
                   "\"timeout_ms\":0}">>).
-define(REAL_TIMEOUT, 120).

%%% ==========================================================================================
%%% Without a port
%%% ==========================================================================================

text_test_() ->
    [?_assertEqual({ok, <<"abc">>}, wasi_nn:text(<<"abc">>)),
     ?_assertEqual({ok, <<"abc">>}, wasi_nn:text("abc")),
     ?_assertEqual({ok, <<>>}, wasi_nn:text("")),
     %% HyperBEAM's binary_to_list(Utf8): bytes, taken as they are
     ?_assertEqual({ok, <<"h\303\251">>}, wasi_nn:text(binary_to_list(<<"h\303\251">>))),
     %% a list of code points (not valid UTF-8 as bytes): encoded
     ?_assertEqual({ok, <<"h\303\251">>}, wasi_nn:text([$h, 16#e9])),
     ?_assertEqual({ok, <<226, 130, 172>>}, wasi_nn:text([16#20ac])),
     ?_assertEqual({ok, <<"ab">>}, wasi_nn:text([<<"a">>, "b"])),
     ?_assertEqual(error, wasi_nn:text(42)),
     ?_assertEqual(error, wasi_nn:text([foo])),
     ?_assertEqual(error, wasi_nn:text(["a", -1]))].

bad_arguments_test_() ->
    [?_assertMatch({error, {invalid_argument, <<_/binary>>}},
                   wasi_nn:run_inference(not_a_ctx, 1, "hi")),
     ?_assertMatch({error, {invalid_argument, <<_/binary>>}},
                   wasi_nn:deinit_backend({some, tuple})),
     %% checked before the server is asked (self() is no server: it would never answer)
     ?_assertMatch({error, {invalid_argument, <<_/binary>>}},
                   wasi_nn:init_backend(self(), 42))].

not_started_test() ->
    undefined = whereis(wasi_nn),
    ?assertEqual({error, port_closed}, wasi_nn:init_backend()),
    ?assertEqual({error, port_closed}, wasi_nn:init_backend(<<"{}">>)),
    ?assertEqual({error, port_closed}, wasi_nn:os_pid()).

no_python_test() ->
    ?assertMatch({error, {open_port_failed, "/nonexistent/python", _}},
                 wasi_nn:start([{name, undefined}, {python, "/nonexistent/python"}])).

%%% -- fake ports: sh scripts on fds 3 (requests) and 4 (replies) -----------------------------

%% A server on `sh -c Script'; the script's requests come on fd 3, replies go to fd 4.
fake(Script) -> fake(Script, []).
fake(Script, Opts) ->
    {ok, S} = wasi_nn:start([{name, undefined}, {python, "/bin/sh"}, {args, ["-c", Script]},
                             {timeout, 10000} | Opts]),
    S.

silent() -> "exec cat <&3 >/dev/null".

%% printf argument writing {packet,4} frame(s) of Term(s)
frame_printf(Terms) ->
    Bytes = << <<(byte_size(F)):32, F/binary>> || F <- [term_to_binary(T) || T <- Terms] >>,
    "printf '" ++ lists:flatten([io_lib:format("\\~3.8.0b", [B]) || <<B>> <= Bytes]) ++ "'".

fake_reply_test() ->
    %% read (part of) request 1, answer it, then swallow the rest
    S = fake("head -c 4 <&3 >/dev/null; " ++ frame_printf([{1, {ok, 7}}]) ++ " >&4; "
             ++ silent()),
    {ok, Ctx} = wasi_nn:init_backend(S, <<>>),
    %% the record: server pid, the port's handle, the server as the caller named it
    ?assertEqual({wasi_nn_ctx, S, 7, S}, Ctx),
    ok = wasi_nn:stop(S).

fake_garbage_frame_test() ->
    %% a frame that is not a term, then one for nobody, then the answer: the server carries on
    S = fake("printf '\\000\\000\\000\\002ab' >&4; head -c 4 <&3 >/dev/null; "
             ++ frame_printf([{99, ok}, {undefined, {error, {invalid_argument, <<"x">>}}},
                              {1, {ok, 3}}]) ++ " >&4; " ++ silent()),
    ?assertMatch({ok, {wasi_nn_ctx, S, 3, S}}, wasi_nn:init_backend(S, <<>>)),
    ok = wasi_nn:stop(S).

fake_timeout_and_late_reply_test() ->
    S = fake("head -c 4 <&3 >/dev/null; sleep 1; " ++ frame_printf([{1, {ok, 5}}])
             ++ " >&4; " ++ silent()),
    T0 = now_ms(),
    ?assertEqual({error, timeout}, wasi_nn:init_backend(S, <<>>, 100)),
    ?assert(now_ms() - T0 >= 100),   % the answer is the timeout, not the late reply
    timer:sleep(1500),  % the late reply has come and was dropped
    ?assertEqual([], flush()),
    ?assert(is_process_alive(S)),
    ?assertEqual({error, timeout}, wasi_nn:init_backend(S, <<>>, [{timeout, 50}])),
    ok = wasi_nn:stop(S).

fake_default_timeout_test() ->
    S = fake(silent(), [{timeout, 80}]),
    T0 = now_ms(),
    ?assertEqual({error, timeout}, wasi_nn:init_backend(S, "{}")),
    ?assert(now_ms() - T0 >= 80),
    ok = wasi_nn:stop(S).

fake_stream_timeout_test() ->
    S = fake(silent()),
    Ctx = {wasi_nn_ctx, S, 1, S},
    {ok, Ref} = wasi_nn:run_inference_stream(Ctx, 1, "hi", <<>>, 100),
    ?assert(is_reference(Ref)),
    ?assertEqual({error, timeout}, wait_end(Ref, 5000)),
    ok = wasi_nn:stop(S).

fake_timeout_sends_cancel_test() ->
    %% the port gets {2, cancel, {1}} after request 1 (a generation) timed out; {3, ...} next
    File = filename:join(tmp_dir(), "wasi_nn_cancel_" ++ os:getpid() ++ "_"
                         ++ integer_to_list(erlang:unique_integer([positive]))),
    S = fake("exec cat <&3 >" ++ File),
    Ctx = {wasi_nn_ctx, S, 1, S},
    ?assertEqual({error, timeout}, wasi_nn:run_inference(Ctx, 4, "hi", <<>>, 50)),
    {ok, Ref} = wasi_nn:run_inference_stream(Ctx, 5, "hi", <<>>, 50),
    ?assertEqual({error, timeout}, wait_end(Ref, 5000)),
    ?assertEqual({error, timeout}, wasi_nn:init_backend(S, <<>>, 50)),  % not a generation
    ok = wasi_nn:stop(S),
    {ok, Bytes} = file:read_file(File),
    file:delete(File),
    %% a generation carries its Options: the call's timeout as its deadline on the backend
    ?assertEqual([{1, run_inference, {1, 4, <<"hi">>, <<>>, #{timeout => 50, usage => true}}},
                  {2, cancel, {1}},
                  {3, run_inference_stream, {1, 5, <<"hi">>, <<>>,
                                             #{timeout => 50, usage => false}}},
                  {4, cancel, {3}},
                  {5, init_backend, {<<>>}}],
                 frames(Bytes)).

frames(<<Size:32, Frame:Size/binary, Rest/binary>>) -> [binary_to_term(Frame) | frames(Rest)];
frames(<<>>) -> [].

fake_stream_messages_test() ->
    %% tokens, then done, to another process (the `to' option)
    S = fake("head -c 4 <&3 >/dev/null; " ++
             frame_printf([{1, {token, <<"Hel">>}}, {1, {token, <<"lo">>}},
                           {1, {done, <<"{\"n\":2}">>}}, {1, {token, <<"late">>}}])
             ++ " >&4; " ++ silent()),
    Self = self(),
    Collector = spawn_link(fun() -> receive {ref, R} -> Self ! {collected, collect(R, 5000)} end
                           end),
    {ok, Ref} = wasi_nn:run_inference_stream({wasi_nn_ctx, S, 1, S}, 1, "hi", <<>>,
                                             #{to => Collector}),
    Collector ! {ref, Ref},
    ?assertEqual({[<<"Hel">>, <<"lo">>], {done, <<"{\"n\":2}">>}},
                 receive {collected, C} -> C after 5000 -> no_collect end),
    ?assertEqual([], flush()),
    ok = wasi_nn:stop(S).

fake_stream_error_test() ->
    S = fake("head -c 4 <&3 >/dev/null; " ++
             frame_printf([{1, {token, <<"a">>}}, {1, {error, {context_full, <<"full">>}}}])
             ++ " >&4; " ++ silent()),
    {ok, Ref} = wasi_nn:run_inference_stream({wasi_nn_ctx, S, 1, S}, 1, "hi", <<>>),
    ?assertEqual({[<<"a">>], {error, {context_full, <<"full">>}}}, collect(Ref, 5000)),
    ok = wasi_nn:stop(S).

fake_port_exit_test() ->
    S = fake("head -c 4 <&3 >/dev/null; exit 7"),
    MRef = monitor(process, S),
    ?assertEqual({error, {port_exit, 7}}, wasi_nn:init_backend(S, <<>>)),
    ?assertEqual({port_exit, 7}, receive {'DOWN', MRef, _, _, R} -> R after 5000 -> alive end),
    ?assertEqual({error, port_closed}, wasi_nn:init_backend(S, <<>>)).

fake_kill_test() ->
    S = fake(silent()),
    {ok, Port} = wasi_nn:port(S),
    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
    ?assertEqual({ok, OsPid}, wasi_nn:os_pid(S)),
    MRef = monitor(process, S),
    Self = self(),
    Callers = [spawn_link(fun() -> Self ! {self(), wasi_nn:init_backend(S, <<>>, infinity)} end)
               || _ <- [1, 2, 3]],
    {ok, Ref} = wasi_nn:run_inference_stream({wasi_nn_ctx, S, 1, S}, 1, "hi", <<>>, infinity),
    wait_pending(S, 4),
    kill9(OsPid),
    [?assertEqual({error, {port_exit, 137}}, receive {C, R} -> R after 5000 -> none end)
     || C <- Callers],
    ?assertEqual({error, {port_exit, 137}}, wait_end(Ref, 5000)),
    ?assertEqual({port_exit, 137}, receive {'DOWN', MRef, _, _, R} -> R after 5000 -> alive end),
    ?assertEqual(false, os_process_exists(OsPid)).

fake_stop_test() ->
    S = fake(silent()),
    {ok, OsPid} = wasi_nn:os_pid(S),
    Self = self(),
    Caller = spawn_link(fun() -> Self ! {self(), wasi_nn:init_backend(S, <<>>, infinity)} end),
    {ok, Ref} = wasi_nn:run_inference_stream({wasi_nn_ctx, S, 1, S}, 1, "hi", <<>>),
    wait_pending(S, 2),
    ok = wasi_nn:stop(S),
    ?assertEqual({error, port_closed}, receive {Caller, R} -> R after 5000 -> none end),
    ?assertEqual({error, port_closed}, wait_end(Ref, 1000)),
    ?assertNot(is_process_alive(S)),
    ?assertEqual(gone, proc_state(OsPid)).

fake_supervised_test() ->
    process_flag(trap_exit, true),
    Spec = wasi_nn:child_spec([{python, "/bin/sh"}, {args, ["-c", silent()]},
                               {name, {local, wasi_nn}}]),
    ?assertMatch(#{id := wasi_nn, start := {wasi_nn, start_link, _}}, Spec),
    {ok, Sup} = supervisor:start_link(?MODULE, [Spec]),
    try
        S1 = whereis(wasi_nn),
        {ok, OsPid1} = wasi_nn:os_pid(),
        kill9(OsPid1),
        S2 = wait_restarted(wasi_nn, S1, 5000),
        {ok, OsPid2} = wasi_nn:os_pid(),
        ?assertNotEqual(OsPid1, OsPid2),
        ?assertEqual({error, timeout}, wasi_nn:init_backend(S2, <<>>, 50))
    after
        unlink(Sup),
        exit(Sup, shutdown),
        wait_dead(Sup, 10000),
        process_flag(trap_exit, false)
    end,
    ?assertEqual(undefined, whereis(wasi_nn)).

init([Spec]) -> {ok, {#{strategy => one_for_one, intensity => 5, period => 10}, [Spec]}}.

%%% ==========================================================================================
%%% Against the real port (WASI_NN_PYTHON and WASI_NN_MODEL set)
%%% ==========================================================================================

%% Scenarios on one shared server (setup/0), and those that make their own.
scenarios() ->
    [basic, sessions, text_args, concurrent, long_short, streaming, errors, timeout, deinit]
    ++ own_server().
own_server() -> [kill, stop, supervised].

real_port_test_() ->
    case real_env() of
        {error, Missing} ->
            {"real port: skipped (" ++ Missing ++ " not set)", []};
        ok ->
            [{setup, fun setup/0, fun cleanup/1,
              fun(F) -> [scenario_test(N, F) || N <- scenarios() -- own_server()] end}
             | [scenario_test(N, undefined) || N <- own_server()]]
    end.

scenario_test(Name, F) ->
    {atom_to_list(Name), {timeout, ?REAL_TIMEOUT, fun() -> scenario(Name, F) end}}.

real_env() ->
    case [V || V <- ["WASI_NN_PYTHON", "WASI_NN_MODEL"], getenv(V) =:= false] of
        [] -> ok;
        Missing -> {error, string:join(Missing, ", ")}
    end.

%% One scenario in this VM (for pytest): prints its report, halts 0 (ok) or 1.
run(Name) when is_list(Name) -> run(list_to_atom(Name));
run(Name) ->
    Status = try
                 ok = real_env(),
                 F = case lists:member(Name, own_server()) of
                         true -> undefined;
                         false -> setup()
                     end,
                 Report = try scenario(Name, F) after F =:= undefined orelse cleanup(F) end,
                 [print_report(K, V) || {K, V} <- Report],
                 io:format("SCENARIO OK ~s~n", [Name]),
                 0
             catch Class:Reason:Stack ->
                 io:format("SCENARIO FAILED ~s~n~p:~p~n~p~n", [Name, Class, Reason, Stack]),
                 1
             end,
    halt(Status).

print_report(K, V) when is_integer(V) -> io:format("REPORT ~s int ~b~n", [K, V]);
print_report(K, V) when is_binary(V) -> io:format("REPORT ~s b64 ~s~n", [K, base64:encode(V)]);
print_report(K, V) -> io:format("REPORT ~s term ~0tp~n", [K, V]).

setup() ->
    {ok, S} = wasi_nn:start([{name, undefined}, {python, getenv("WASI_NN_PYTHON")},
                             {timeout, 60000}]),
    {ok, Ctx} = wasi_nn:init_backend(S, backend_config()),
    ok = wasi_nn:load_by_name_with_config(Ctx, model(), load_config()),
    #{server => S, ctx => Ctx}.

cleanup(#{server := S}) ->
    catch wasi_nn:stop(S),
    ok.

%%% -- the scenarios; each returns a report [{Key, Value}] ------------------------------------

scenario(basic, #{ctx := Ctx}) ->
    {ok, E} = wasi_nn:init_execution_context(Ctx, sid("basic")),
    ?assert(is_integer(E)),
    {ok, Text} = wasi_nn:run_inference(Ctx, E, msg(a), short()),
    ?assert(is_binary(Text) andalso byte_size(Text) > 0),
    check_expected(a, Text),
    ok = wasi_nn:close_execution_context(Ctx, E),
    [{text, Text}, {exec, E}];

scenario(sessions, #{ctx := Ctx}) ->
    Id1 = sid("same"), Id2 = sid("other"),
    {ok, E1} = wasi_nn:init_execution_context(Ctx, Id1),
    {ok, E1b} = wasi_nn:init_execution_context(Ctx, binary_to_list(Id1)),
    {ok, E2} = wasi_nn:init_execution_context(Ctx, Id2),
    ?assertEqual(E1, E1b),      % same session id: same session
    ?assertNotEqual(E1, E2),
    ok = wasi_nn:close_execution_context(Ctx, E1),
    {ok, E1c} = wasi_nn:init_execution_context(Ctx, Id1),  % closed: a new one
    ?assertNotEqual(E1, E1c),
    [ok = wasi_nn:close_execution_context(Ctx, E) || E <- [E1c, E2]],
    [{exec1, E1}, {exec2, E2}, {exec1_again, E1c}];

scenario(text_args, #{ctx := Ctx}) ->
    %% binaries, charlists, and HyperBEAM's binary_to_list(Utf8) give the same answers
    Prompt = <<"Caf\303\251 ", (msg(a))/binary>>,
    Forms = [{Prompt, short()},
             {binary_to_list(Prompt), binary_to_list(short())},
             {unicode:characters_to_list(Prompt), [short()]}],
    Answers = [begin
                   {ok, E} = wasi_nn:init_execution_context(Ctx, binary_to_list(sid("text"))),
                   {ok, A} = wasi_nn:run_inference(Ctx, E, P, R),
                   ok = wasi_nn:close_execution_context(Ctx, E),
                   A
               end || {P, R} <- Forms],
    [A1 | _] = Answers,
    ?assertEqual([A1, A1, A1], Answers),
    [{text, A1}];

scenario(concurrent, #{ctx := Ctx, server := Server}) ->
    %% two Erlang processes, two sessions, one message each, sent at the same moment
    {ok, E1} = wasi_nn:init_execution_context(Ctx, sid("conc-a")),
    {ok, E2} = wasi_nn:init_execution_context(Ctx, sid("conc-b")),
    Self = self(),
    Worker = fun(Tag, E, Msg) ->
                 spawn_link(fun() ->
                     receive go -> ok end,
                     T0 = now_us(),
                     R = wasi_nn:run_inference(Ctx, E, Msg, short()),
                     Self ! {Tag, R, T0, now_us()}
                 end)
             end,
    Ws = [Worker(a, E1, msg(a)), Worker(b, E2, msg(b))],
    release_together(Server, Ws),
    {{ok, A}, SentA, GotA} = receive {a, Ra, S0, S1} -> {Ra, S0, S1} after 60000 -> error(a) end,
    {{ok, B}, SentB, GotB} = receive {b, Rb, S2, S3} -> {Rb, S2, S3} after 60000 -> error(b) end,
    %% both requests were in flight before either reply arrived
    ?assert(max(SentA, SentB) < min(GotA, GotB)),
    check_expected(a, A),
    check_expected(b, B),
    %% second turns, again concurrently: each session answers from its own history
    Ws2 = [Worker(a, E1, msg(a2)), Worker(b, E2, msg(a2))],
    release_together(Server, Ws2),
    {{ok, A2}, _, _} = receive {a, Ra2, S4, S5} -> {Ra2, S4, S5} after 60000 -> error(a2) end,
    {{ok, B2}, _, _} = receive {b, Rb2, S6, S7} -> {Rb2, S6, S7} after 60000 -> error(b2) end,
    check_expected(a_a2, A2),
    check_expected(b_a2, B2),
    [ok = wasi_nn:close_execution_context(Ctx, E) || E <- [E1, E2]],
    T = min(SentA, SentB),
    [{a, A}, {b, B}, {a_a2, A2}, {b_a2, B2},
     {sent_a_us, SentA - T}, {sent_b_us, SentB - T}, {got_a_us, GotA - T},
     {got_b_us, GotB - T}];

scenario(long_short, #{ctx := Ctx}) ->
    %% a long generation streams to this process; a short request in another session, sent
    %% once the long one is producing tokens, is answered while the long one keeps going.
    %% Tokens are counted by message order, not by clocks (a loaded machine stamps them
    %% late): the server relays the long one's tokens and the short reply in the order the
    %% port gives them, and Erlang keeps one sender's order, so every token relayed before
    %% the reply is in the mailbox when the call returns
    {ok, L} = wasi_nn:init_execution_context(Ctx, sid("long")),
    {ok, S} = wasi_nn:init_execution_context(Ctx, sid("short")),
    {ok, Ref} = wasi_nn:run_inference_stream(Ctx, L, msg(a), long()),
    receive {wasi_nn_token, Ref, _} -> ok after 60000 -> error(no_first_token) end,
    FirstToken = now_us(),
    Before = 1 + drain_tokens(Ref),
    T0 = now_us(),
    {ok, Short} = wasi_nn:run_inference(Ctx, S, msg(b), short()),
    T1 = now_us(),
    During = drain_tokens(Ref),
    StillGoing = receive {wasi_nn_done, Ref, _} -> false;
                         {wasi_nn_error, Ref, _} -> false
                 after 0 -> true end,
    check_expected(b, Short),
    %% stop the long one: closing its session ends a running request
    ok = wasi_nn:close_execution_context(Ctx, L),
    {Rest, End} = collect(Ref, 60000),
    EndTime = now_us(),
    ?assert(FirstToken =< T0),   % the long one was generating when the short one was sent
    ?assert(StillGoing),         % ... and still going when the short one was answered
    ?assert(During >= 1),        % ... producing tokens meanwhile
    ok = wasi_nn:close_execution_context(Ctx, S),
    LongEnd = case End of {done, _} -> done; Other -> Other end,
    [{short, Short}, {long_tokens, Before + During + length(Rest)},
     {long_tokens_during_short, During}, {long_tokens_after_short, length(Rest)},
     {short_us, T1 - T0}, {long_end, LongEnd}, {first_token_us, FirstToken - T0},
     {long_end_us, EndTime - T0}];

scenario(streaming, #{ctx := Ctx}) ->
    {ok, E1} = wasi_nn:init_execution_context(Ctx, sid("stream")),
    {ok, Ref} = wasi_nn:run_inference_stream(Ctx, E1, msg(a), short()),
    {Pieces, End} = collect(Ref, 60000),
    ?assertMatch({done, <<"{", _/binary>>}, End),
    {done, Usage} = End,
    Joined = iolist_to_binary(Pieces),
    {ok, E2} = wasi_nn:init_execution_context(Ctx, sid("plain")),
    {ok, Plain} = wasi_nn:run_inference(Ctx, E2, msg(a), short()),
    ?assertEqual(Plain, Joined),
    ?assert(length(Pieces) > 1),
    check_expected(a, Joined),
    %% the streamed turn joined the history like a plain one
    {ok, Next1} = wasi_nn:run_inference(Ctx, E1, msg(a2), short()),
    {ok, Next2} = wasi_nn:run_inference(Ctx, E2, msg(a2), short()),
    ?assertEqual(Next2, Next1),
    [ok = wasi_nn:close_execution_context(Ctx, E) || E <- [E1, E2]],
    [{pieces, length(Pieces)}, {text, Joined}, {usage, Usage}];

scenario(errors, #{ctx := Ctx}) ->
    Model = model(),
    Cases =
        [{bad_session, not_found, fun() -> wasi_nn:run_inference(Ctx, 999999, "hi", short()) end},
         {bad_session_stream, not_found,
          fun() -> stream_result(wasi_nn:run_inference_stream(Ctx, 999999, "hi", short())) end},
         {closed_session, not_found,
          fun() -> {ok, E} = wasi_nn:init_execution_context(Ctx, sid("closed")),
                   ok = wasi_nn:close_execution_context(Ctx, E),
                   wasi_nn:run_inference(Ctx, E, "hi", short()) end},
         {close_twice, not_found,
          fun() -> {ok, E} = wasi_nn:init_execution_context(Ctx, sid("twice")),
                   ok = wasi_nn:close_execution_context(Ctx, E),
                   wasi_nn:close_execution_context(Ctx, E) end},
         {bad_backend, not_found,
          fun() -> wasi_nn:init_execution_context(setelement(3, Ctx, 987654), "x") end},
         {missing_model, model_not_found,
          fun() -> wasi_nn:load_by_name_with_config(Ctx, "/nonexistent/model.gguf", "{}") end},
         {not_gguf, invalid_encoding,
          fun() -> Path = not_gguf_file(),
                   try wasi_nn:load_by_name_with_config(Ctx, Path, "{}")
                   after file:delete(Path) end end},
         {config_not_json, invalid_encoding,
          fun() -> wasi_nn:load_by_name_with_config(Ctx, Model, "{not json") end},
         {config_bad_value, invalid_argument,
          fun() -> wasi_nn:load_by_name_with_config(Ctx, Model,
                                                    "{\"model\":{\"n_ctx\":-5}}") end},
         {backend_config_not_json, invalid_encoding,
          fun() -> wasi_nn:init_backend(element(2, Ctx), "{oops") end},
         {runtime_config_not_json, invalid_encoding,
          fun() -> {ok, E} = wasi_nn:init_execution_context(Ctx, sid("rc")),
                   wasi_nn:run_inference(Ctx, E, "hi", "{oops") end},
         {runtime_config_bad_value, invalid_argument,
          fun() -> {ok, E} = wasi_nn:init_execution_context(Ctx, sid("rc2")),
                   wasi_nn:run_inference(Ctx, E, "hi", "{\"max_tokens\":-3}") end},
         {exec_not_integer, invalid_argument,
          fun() -> wasi_nn:run_inference(Ctx, <<"one">>, "hi", short()) end}],
    Results = [{Name, Code, F()} || {Name, Code, F} <- Cases],
    [?assertMatch({Name, Code, {error, {Code, <<_/binary>>}}}, R)
     || R = {Name, Code, _} <- Results],
    %% a prompt that is not UTF-8: refused (the code is reported, not pinned)
    {ok, E8} = wasi_nn:init_execution_context(Ctx, sid("utf8")),
    {error, {Utf8Code, _}} = wasi_nn:run_inference(Ctx, E8, <<"bad ", 255, 254>>, short()),
    ?assert(lists:member(Utf8Code, [invalid_argument, invalid_encoding])),
    %% the backend still works after all that
    {ok, Ok} = wasi_nn:run_inference(Ctx, E8, msg(a), short()),
    check_expected(a, Ok),
    [{Name, {error, {Code, Msg}}} || {Name, _, {error, {Code, Msg}}} <- Results]
        ++ [{non_utf8_prompt, Utf8Code}];

scenario(timeout, #{ctx := Ctx}) ->
    %% a per-call timeout shorter than the generation: {error, timeout} at the deadline; the
    %% generation is endless, so only the cancel sent at the timeout stops it
    {ok, E} = wasi_nn:init_execution_context(Ctx, sid("slow")),
    T0 = now_ms(),
    ?assertEqual({error, timeout}, wasi_nn:run_inference(Ctx, E, msg(a), ?ENDLESS, 300)),
    Waited = now_ms() - T0,
    ?assert(Waited >= 300 andalso Waited < 10000),   % the endless one would take 30 s
    %% the next request of that session answers (without the cancel it would wait for the
    %% endless generation and time out itself); the late replies were dropped (nothing stray)
    T1 = now_ms(),
    {ok, Next} = wasi_nn:run_inference(Ctx, E, msg(b), short(), [{timeout, 30000}]),
    Queued = now_ms() - T1,
    ?assert(is_binary(Next)),
    ?assertEqual([], flush()),
    %% a stream's timeout ends it with {wasi_nn_error, Ref, timeout} and nothing after; it is
    %% cancelled too: the session answers the next request
    {ok, E2} = wasi_nn:init_execution_context(Ctx, sid("slow-stream")),
    {ok, Ref} = wasi_nn:run_inference_stream(Ctx, E2, msg(a), ?ENDLESS, #{timeout => 300}),
    {Pieces, End} = collect(Ref, 10000),
    ?assertEqual({error, timeout}, End),
    T2 = now_ms(),
    {ok, NextStream} = wasi_nn:run_inference(Ctx, E2, msg(b), short(), [{timeout, 30000}]),
    StreamQueued = now_ms() - T2,
    ?assert(is_binary(NextStream)),
    ok = wasi_nn:close_execution_context(Ctx, E2),
    timer:sleep(200),
    ?assertEqual([], [M || M <- flush(), element(2, M) =:= Ref]),
    ok = wasi_nn:close_execution_context(Ctx, E),
    [{timeout_after_ms, Waited}, {next_waited_ms, Queued}, {stream_pieces, length(Pieces)},
     {next_after_stream_ms, StreamQueued}];

scenario(deinit, #{server := S}) ->
    {ok, Ctx} = wasi_nn:init_backend(S, backend_config()),
    ok = wasi_nn:load_by_name_with_config(Ctx, model(), load_config()),
    {ok, E} = wasi_nn:init_execution_context(Ctx, "d"),
    {ok, A} = wasi_nn:run_inference(Ctx, E, msg(a), short()),
    check_expected(a, A),
    ok = wasi_nn:deinit_backend(Ctx),
    ?assertMatch({error, {not_found, _}}, wasi_nn:run_inference(Ctx, E, msg(a), short())),
    ?assertMatch({error, {not_found, _}}, wasi_nn:deinit_backend(Ctx)),
    [{text, A}];

scenario(kill, _) ->
    %% kill -9 the port program: every pending caller hears of it, the server stops
    #{server := S, ctx := Ctx} = setup(),
    {ok, Port} = wasi_nn:port(S),
    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
    MRef = monitor(process, S),
    Execs = [begin {ok, E} = wasi_nn:init_execution_context(Ctx, sid("k")), E end
             || _ <- [1, 2, 3]],
    [E1, E2, E3] = Execs,
    Self = self(),
    %% endless: the kill must find them running however slow the machine
    Callers = [spawn_link(fun() -> Self ! {self(), wasi_nn:run_inference(Ctx, E, msg(a),
                                                                         ?ENDLESS, infinity)}
                          end)
               || E <- [E1, E2]],
    {ok, Ref} = wasi_nn:run_inference_stream(Ctx, E3, msg(a), ?ENDLESS, infinity),
    receive {wasi_nn_token, Ref, _} -> ok after 60000 -> error(no_first_token) end,
    wait_pending(S, 3),
    kill9(OsPid),
    Results = [receive {C, R} -> R after 10000 -> no_reply end || C <- Callers],
    StreamEnd = wait_end(Ref, 10000),
    [?assert(is_port_death(R)) || R <- [StreamEnd | Results]],
    Down = receive {'DOWN', MRef, _, _, Why} -> Why after 10000 -> alive end,
    ?assertEqual({port_exit, 137}, Down),
    ?assertEqual({error, port_closed}, wasi_nn:run_inference(Ctx, E1, msg(a), short())),
    ?assertEqual(false, os_process_exists(OsPid)),
    [{os_pid, OsPid}, {callers, Results}, {stream, StreamEnd}, {server_exit, Down}];

scenario(stop, _) ->
    %% stop with requests in flight: they get {error, port_closed}; the port program exits
    %% (EOF on fd 3) and is reaped before stop returns
    #{server := S, ctx := Ctx} = setup(),
    {ok, OsPid} = wasi_nn:os_pid(S),
    {ok, E1} = wasi_nn:init_execution_context(Ctx, sid("st")),
    {ok, E2} = wasi_nn:init_execution_context(Ctx, sid("st")),
    Self = self(),
    Caller = spawn_link(fun() -> Self ! {self(), wasi_nn:run_inference(Ctx, E1, msg(a), long(),
                                                                       infinity)} end),
    {ok, Ref} = wasi_nn:run_inference_stream(Ctx, E2, msg(a), long(), infinity),
    receive {wasi_nn_token, Ref, _} -> ok after 60000 -> error(no_first_token) end,
    wait_pending(S, 2),
    T0 = now_ms(),
    ok = wasi_nn:stop(S),
    StopMs = now_ms() - T0,
    ?assertEqual(gone, proc_state(OsPid)),  % exited and reaped before stop returned
    ?assertEqual({error, port_closed}, receive {Caller, R} -> R after 5000 -> no_reply end),
    ?assertEqual({error, port_closed}, wait_end(Ref, 5000)),
    ?assertNot(is_process_alive(S)),
    ?assertEqual({error, port_closed}, wasi_nn:run_inference(Ctx, E1, msg(a), short())),
    [{os_pid, OsPid}, {stop_ms, StopMs}];

scenario(supervised, _) ->
    %% HyperBEAM style: the registered server under a supervisor, init_backend/0; killing
    %% the port restarts the server with a fresh port; old contexts read as a closed port
    process_flag(trap_exit, true),
    Spec = wasi_nn:child_spec([{python, getenv("WASI_NN_PYTHON")}]),
    {ok, Sup} = supervisor:start_link(?MODULE, [Spec]),
    try
        {ok, Ctx} = wasi_nn:init_backend(),
        ok = wasi_nn:load_by_name_with_config(Ctx, binary_to_list(model()),
                                              binary_to_list(load_config())),
        {ok, E} = wasi_nn:init_execution_context(Ctx, "sup"),
        {ok, A} = wasi_nn:run_inference(Ctx, E, msg(a), short()),
        check_expected(a, A),
        {ok, OsPid1} = wasi_nn:os_pid(),
        S1 = whereis(wasi_nn),
        kill9(OsPid1),
        _S2 = wait_restarted(wasi_nn, S1, 10000),
        %% the old context says the server restarted (not a closed port): initialise again
        ?assertMatch({error, {backend_restarted, <<_/binary>>}},
                     wasi_nn:run_inference(Ctx, E, msg(a), short())),
        {ok, Ctx2} = wasi_nn:init_backend(),
        ok = wasi_nn:load_by_name_with_config(Ctx2, model(), load_config()),
        {ok, E2} = wasi_nn:init_execution_context(Ctx2, "sup"),
        {ok, A2} = wasi_nn:run_inference(Ctx2, E2, msg(a), short()),
        ?assertEqual(A, A2),
        {ok, OsPid2} = wasi_nn:os_pid(),
        ?assertNotEqual(OsPid1, OsPid2),
        [{text, A}, {os_pid_before, OsPid1}, {os_pid_after, OsPid2}]
    after
        unlink(Sup),
        exit(Sup, shutdown),
        wait_dead(Sup, 15000),
        process_flag(trap_exit, false)
    end.

%%% -- helpers --------------------------------------------------------------------------------

getenv(Name) ->
    case os:getenv(Name) of
        "" -> false;
        V -> V
    end.

env_bin(Name, Default) ->
    case getenv(Name) of
        false -> Default;
        V -> unicode:characters_to_binary(V)
    end.

model() -> env_bin("WASI_NN_MODEL", <<>>).
backend_config() -> env_bin("WASI_NN_BACKEND_CONFIG", <<"{\"logging\":{\"level\":\"error\"}}">>).
load_config() -> env_bin("WASI_NN_LOAD_CONFIG", <<"{}">>).
short() -> env_bin("WASI_NN_RUNTIME_CONFIG", ?SHORT).
long() -> env_bin("WASI_NN_LONG_CONFIG", ?LONG).

msg(a) -> env_bin("WASI_NN_MSG_A", <<"Hello">>);
msg(b) -> env_bin("WASI_NN_MSG_B", <<"Tell me a story">>);
msg(a2) -> env_bin("WASI_NN_MSG_A2", <<"And then?">>).

check_expected(Key, Text) ->
    Var = "WASI_NN_EXPECT_" ++ string:uppercase(atom_to_list(Key)),
    case getenv(Var) of
        false -> ok;
        B64 -> ?assertEqual({Var, base64:decode(B64)}, {Var, Text})
    end.

%% A session id no other test uses.
sid(Prefix) ->
    iolist_to_binary([Prefix, $-, integer_to_list(erlang:unique_integer([positive]))]).

now_us() -> erlang:monotonic_time(microsecond).
now_ms() -> erlang:monotonic_time(millisecond).

flush() ->
    receive M -> [M | flush()] after 0 -> [] end.

%% A stream's pieces and its end: {done, Usage} | {error, Reason} | timeout (of the wait).
collect(Ref, Wait) -> collect(Ref, Wait, []).
collect(Ref, Wait, Acc) ->
    receive
        {wasi_nn_token, Ref, Piece} -> collect(Ref, Wait, [Piece | Acc]);
        {wasi_nn_done, Ref, Usage} -> {lists:reverse(Acc), {done, Usage}};
        {wasi_nn_error, Ref, Reason} -> {lists:reverse(Acc), {error, Reason}}
    after Wait -> {lists:reverse(Acc), no_end}
    end.

wait_end(Ref, Wait) -> element(2, collect(Ref, Wait)).

stream_result({ok, Ref}) -> wait_end(Ref, 60000);
stream_result(Error) -> {not_a_stream, Error}.

%% Let the workers go while the server is held, and let it on once both calls wait in its
%% queue: neither can be answered before the other was sent, however the OS schedules them.
release_together(Server, Workers) ->
    ok = sys:suspend(Server),
    [W ! go || W <- Workers],
    wait_queued(Server, length(Workers), 1000),
    ok = sys:resume(Server).

wait_queued(_S, N, 0) -> error({not_queued, N});
wait_queued(S, N, Tries) ->
    {messages, Queue} = erlang:process_info(S, messages),
    case length([C || {'$gen_call', _, _} = C <- Queue]) >= N of
        true -> ok;
        false -> timer:sleep(5), wait_queued(S, N, Tries - 1)
    end.

%% The pieces of a stream already in the mailbox, counted (none waited for).
drain_tokens(Ref) ->
    receive {wasi_nn_token, Ref, _} -> 1 + drain_tokens(Ref) after 0 -> 0 end.

is_port_death({error, {port_exit, _}}) -> true;
is_port_death({error, port_closed}) -> true;
is_port_death(_) -> false.

%% Wait until the server holds N pending requests (so a kill or stop finds them in flight).
wait_pending(S, N) -> wait_pending(S, N, 500).
wait_pending(_S, N, 0) -> error({not_pending, N});
wait_pending(S, N, Tries) ->
    %% #state.pending is element 5 of the server's state record
    case map_size(element(5, sys:get_state(S))) >= N of
        true -> ok;
        false -> timer:sleep(10), wait_pending(S, N, Tries - 1)
    end.

kill9(OsPid) ->
    os:cmd("kill -9 " ++ integer_to_list(OsPid)).

%% false once the process has exited and been reaped (no /proc entry: not even a zombie);
%% polled for up to 2 s, else {still_there, OsPid, State}.
os_process_exists(OsPid) -> os_process_exists(OsPid, 200).
os_process_exists(OsPid, 0) -> {still_there, OsPid, proc_state(OsPid)};
os_process_exists(OsPid, Tries) ->
    case proc_state(OsPid) of
        gone -> false;
        _ -> timer:sleep(10), os_process_exists(OsPid, Tries - 1)
    end.

proc_state(OsPid) ->
    case file:read_file("/proc/" ++ integer_to_list(OsPid) ++ "/stat") of
        {ok, Stat} ->
            [_, AfterName] = binary:split(Stat, <<") ">>),
            binary:part(AfterName, 0, 1);  % R, S, Z, ...
        {error, _} -> gone
    end.

wait_restarted(Name, Old, Wait) when Wait > 0 ->
    case whereis(Name) of
        Pid when is_pid(Pid), Pid =/= Old -> Pid;
        _ -> timer:sleep(20), wait_restarted(Name, Old, Wait - 20)
    end;
wait_restarted(Name, _Old, _) -> error({not_restarted, Name}).

wait_dead(Pid, Wait) ->
    MRef = monitor(process, Pid),
    receive {'DOWN', MRef, _, _, _} -> ok after Wait -> error({still_alive, Pid}) end.

not_gguf_file() ->
    Path = filename:join(tmp_dir(), "wasi_nn_not_gguf_" ++ os:getpid() ++ ".gguf"),
    ok = file:write_file(Path, <<"this is not a GGUF file\n">>),
    Path.

tmp_dir() ->
    case getenv("TMPDIR") of
        false -> "/tmp";
        D -> D
    end.
