%%% @doc The wasi_nn application's top supervisor (registered as wasi_nn_sup): one child, the
%%% wasi_nn server (wasi_nn:child_spec/1), with options from the application environment.
%%%
%%% When the port program dies (killed, out of memory) the server stops with
%%% `{port_exit, Status}' and is restarted here with a fresh port; contexts made on the old
%%% server then answer `{error, {backend_restarted, _}}' and callers initialise again. More
%%% than ?INTENSITY restarts in ?PERIOD seconds (a port that cannot start) stop the
%%% application, as OTP does, rather than looping on a broken interpreter.
%%%
%%% With `{start_port, false}' the supervisor starts empty: embed
%%% `wasi_nn:child_spec(wasi_nn_sup:server_options())' in your own supervisor instead.
-module(wasi_nn_sup).
-behaviour(supervisor).

-export([start_link/0, server_options/0]).
-export([init/1]).

-define(APP, wasi_nn).
-define(INTENSITY, 5).
-define(PERIOD, 60).
%% The application env keys passed to wasi_nn:start_link/1 as they are; a key that is unset
%% is left out, so wasi_nn's own default applies (python: $WASI_NN_PYTHON, then python3).
-define(SERVER_KEYS, [python, args, env, timeout, shutdown_wait, name]).

start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

%% @doc The wasi_nn server options set in the application environment (a proplist for
%% wasi_nn:start_link/1 or wasi_nn:child_spec/1).
-spec server_options() -> [{atom(), term()}].
server_options() ->
    [{Key, Value} || Key <- ?SERVER_KEYS, {ok, Value} <- [application:get_env(?APP, Key)]].

init([]) ->
    Children = case application:get_env(?APP, start_port, true) of
                   false -> [];
                   true -> [wasi_nn:child_spec(server_options())]
               end,
    {ok, {#{strategy => one_for_one, intensity => ?INTENSITY, period => ?PERIOD}, Children}}.
