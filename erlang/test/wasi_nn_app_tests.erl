%%% @doc EUnit tests of the wasi_nn OTP application (wasi_nn_app, wasi_nn_sup).
%%%
%%% Always run: settings from the application environment, and the application's life (port up
%%% as soon as application:start/1 returns, a supervised restart after kill -9 of the port's OS
%%% process, stop, start_port = false, an interpreter that cannot start) on a fake port program
%%% (sh, reading fd 3).
%%%
%%% With WASI_NN_PYTHON set (the interpreter with the package) the same life on the real port
%%% program, and with WASI_NN_MODEL (a GGUF file) also an answer before and after the restart;
%%% WASI_NN_LOAD_CONFIG overrides the load config (default one thread).
%%%
%%% Every test starts from a freshly loaded application (its .app env defaults) and leaves it
%%% stopped and unloaded, so the tests and wasi_nn_tests can share a VM (rebar3 eunit).
-module(wasi_nn_app_tests).
-include_lib("eunit/include/eunit.hrl").

-define(APP, wasi_nn).
%% A fake port program: swallows requests until the port closes, never answers.
-define(FAKE, [{python, "/bin/sh"}, {args, ["-c", "exec cat <&3 >/dev/null"]}]).
-define(WAIT_MS, 10000).
-define(REAL_TIMEOUT, 120).
-define(SHORT, <<"{\"temperature\":0,\"max_tokens\":8,\"ignore_eos\":true}">>).

%%% ==========================================================================================
%%% Without Python
%%% ==========================================================================================

app_test_() ->
    {foreach, fun fresh/0, fun cleanup/1,
     [fun env_defaults/0,
      fun server_options_from_env/0,
      fun port_up_at_start/0,
      fun kill9_restarts_server/0,
      fun stop_closes_port/0,
      fun start_port_false/0,
      fun bad_python_fails_start/0]}.

env_defaults() ->
    ?assertEqual({ok, true}, application:get_env(?APP, start_port)),
    ?assertEqual({ok, <<>>}, application:get_env(?APP, backend_config)),
    %% nothing else set: wasi_nn's own defaults apply (python from $WASI_NN_PYTHON, ...)
    ?assertEqual([], wasi_nn_sup:server_options()).

server_options_from_env() ->
    set_env([{timeout, 1234}, {name, {local, other}}, {python, "/usr/bin/python3"},
             {backend_config, <<"{}">>}]),
    ?assertEqual([{python, "/usr/bin/python3"}, {timeout, 1234}, {name, {local, other}}],
                 wasi_nn_sup:server_options()).

%% The port is up when application:start/1 returns, before any request; its settings (env,
%% timeout) came from the application environment.
port_up_at_start() ->
    set_env(?FAKE ++ [{env, [{"WASI_NN_APP_TEST", "yes"}]}, {timeout, 100}]),
    ok = application:start(?APP),
    {ok, OsPid} = wasi_nn:os_pid(),
    ?assert(is_pid(whereis(wasi_nn))),
    ?assertMatch([{wasi_nn, _, worker, [wasi_nn]}], supervisor:which_children(wasi_nn_sup)),
    proc_file_has(OsPid, "environ", <<"WASI_NN_APP_TEST=yes">>),
    ?assertEqual({error, timeout}, wasi_nn:init_backend()).  % the fake never answers

kill9_restarts_server() ->
    set_env(?FAKE),
    ok = application:start(?APP),
    Sup = whereis(wasi_nn_sup),
    S1 = whereis(wasi_nn),
    {ok, OsPid1} = wasi_nn:os_pid(),
    MRef = monitor(process, S1),
    kill9(OsPid1),
    ?assertEqual({port_exit, 137}, receive {'DOWN', MRef, _, _, R} -> R
                                   after ?WAIT_MS -> still_alive end),
    S2 = restarted(wasi_nn, S1),
    {ok, OsPid2} = wasi_nn:os_pid(),
    ?assertNotEqual(OsPid1, OsPid2),
    ?assertEqual(Sup, whereis(wasi_nn_sup)),
    ?assertEqual(S2, whereis(wasi_nn)),
    ?assert(os_process_gone(OsPid1)).

stop_closes_port() ->
    set_env(?FAKE),
    ok = application:start(?APP),
    {ok, OsPid} = wasi_nn:os_pid(),
    ok = application:stop(?APP),
    ?assertEqual(undefined, whereis(wasi_nn)),
    ?assertEqual(undefined, whereis(wasi_nn_sup)),
    ?assertEqual({error, port_closed}, wasi_nn:os_pid()),
    ?assert(os_process_gone(OsPid)).

%% start_port = false: the supervisor runs empty; a server can be added (or embedded in another
%% supervisor) with the env's options.
start_port_false() ->
    set_env([{start_port, false} | ?FAKE]),
    ok = application:start(?APP),
    ?assert(is_pid(whereis(wasi_nn_sup))),
    ?assertEqual([], supervisor:which_children(wasi_nn_sup)),
    ?assertEqual(undefined, whereis(wasi_nn)),
    ?assertEqual({error, port_closed}, wasi_nn:os_pid()),
    {ok, S} = supervisor:start_child(wasi_nn_sup, wasi_nn:child_spec(wasi_nn_sup:server_options())),
    ?assertEqual(S, whereis(wasi_nn)),
    ?assertMatch({ok, _}, wasi_nn:os_pid()).

bad_python_fails_start() ->
    set_env([{python, "/nonexistent/python"}]),
    ?assertMatch({error, {{shutdown, {failed_to_start_child, wasi_nn,
                                      {open_port_failed, "/nonexistent/python", _}}}, _}},
                 quietly(fun() -> application:start(?APP) end)),
    ?assertEqual(undefined, whereis(wasi_nn_sup)).

%%% ==========================================================================================
%%% The real port (WASI_NN_PYTHON set; WASI_NN_MODEL for the answers)
%%% ==========================================================================================

real_app_test_() ->
    case os:getenv("WASI_NN_PYTHON") of
        V when V =:= false; V =:= "" ->
            {"application on the real port: skipped (WASI_NN_PYTHON not set)", []};
        _ ->
            {"application on the real port", {setup, fun fresh/0, fun cleanup/1,
              {timeout, ?REAL_TIMEOUT, fun real_life/0}}}
    end.

%% python unset in the env: the server takes $WASI_NN_PYTHON, as HyperBEAM's start would.
real_life() ->
    ok = application:start(?APP),
    {ok, OsPid1} = wasi_nn:os_pid(),  % up before any request
    proc_file_has(OsPid1, "cmdline", <<"wasi_nn_backend.adapters.erlang">>),
    {Ctx1, Answer1} = use_backend(),
    S1 = whereis(wasi_nn),
    kill9(OsPid1),
    restarted(wasi_nn, S1),
    {ok, OsPid2} = wasi_nn:os_pid(),
    ?assertNotEqual(OsPid1, OsPid2),
    ?assert(os_process_gone(OsPid1)),
    ?assertMatch({error, {backend_restarted, <<_/binary>>}},
                 wasi_nn:init_execution_context(Ctx1, "s")),
    {_Ctx2, Answer2} = use_backend(),
    ?assertEqual(Answer1, Answer2),  % greedy: the new port answers as the old one did
    ok = application:stop(?APP),
    ?assertEqual(undefined, whereis(wasi_nn)),
    ?assert(os_process_gone(OsPid2)).

%% A backend on the registered server and, with WASI_NN_MODEL, one greedy answer: {Ctx, Answer}.
use_backend() ->
    {ok, Ctx} = wasi_nn:init_backend(<<"{\"logging\":{\"level\":\"error\"}}">>),
    case os:getenv("WASI_NN_MODEL") of
        V when V =:= false; V =:= "" -> {Ctx, no_model};
        Model ->
            LoadConfig = os:getenv("WASI_NN_LOAD_CONFIG", "{\"model\":{\"threads\":1}}"),
            ok = wasi_nn:load_by_name_with_config(Ctx, Model, LoadConfig),
            {ok, Exec} = wasi_nn:init_execution_context(Ctx, "app-test"),
            {ok, Answer} = wasi_nn:run_inference(Ctx, Exec, "Hello", ?SHORT),
            ?assert(byte_size(Answer) > 0),
            {Ctx, Answer}
    end.

%%% ==========================================================================================
%%% Helpers
%%% ==========================================================================================

%% The application stopped and loaded afresh (env = the .app file's defaults).
fresh() ->
    cleanup(undefined),
    ok = application:load(?APP).

cleanup(_) ->
    _ = application:stop(?APP),
    _ = application:unload(?APP),
    ok.

set_env(Pairs) ->
    [ok = application:set_env(?APP, K, V) || {K, V} <- Pairs],
    ok.

kill9(OsPid) ->
    os:cmd("kill -9 " ++ integer_to_list(OsPid)).

%% The new pid registered as Name once a supervisor has restarted the server Old.
restarted(Name, Old) ->
    until(fun() ->
                  case whereis(Name) of
                      Pid when is_pid(Pid), Pid =/= Old -> {ok, Pid};
                      _ -> false
                  end
          end).

%% true once the OS process has exited and been reaped (no /proc entry, not even a zombie).
os_process_gone(OsPid) ->
    Dir = "/proc/" ++ integer_to_list(OsPid),
    until(fun() -> (not filelib:is_dir(Dir)) andalso {ok, true} end).

%% /proc/OsPid/File (cmdline, environ) shows Needle. Polled: the OS pid is known as soon as
%% the port's process is forked, a moment before it execs the program.
proc_file_has(OsPid, File, Needle) ->
    Path = "/proc/" ++ integer_to_list(OsPid) ++ "/" ++ File,
    until(fun() ->
                  case file:read_file(Path) of
                      {ok, Text} -> binary:match(Text, Needle) =/= nomatch andalso {ok, true};
                      {error, _} -> false
                  end
          end).

%% Poll Fun every 10 ms until it gives {ok, Value}; fail after ?WAIT_MS.
until(Fun) -> until(Fun, erlang:monotonic_time(millisecond) + ?WAIT_MS).
until(Fun, Deadline) ->
    case Fun() of
        {ok, Value} -> Value;
        false ->
            case erlang:monotonic_time(millisecond) < Deadline of
                true -> timer:sleep(10), until(Fun, Deadline);
                false -> error({timed_out_waiting, Fun})
            end
    end.

%% Fun() with the logger silenced (an expected crash report is not a test failure).
quietly(Fun) ->
    #{level := Level} = logger:get_primary_config(),
    ok = logger:set_primary_config(level, none),
    try Fun() after logger:set_primary_config(level, Level) end.
