%%% @doc The wasi_nn OTP application: starting it starts wasi_nn_sup, which starts the wasi_nn
%%% server and with it the Python port program, so the port's start-up (about a second of
%%% Python imports) happens with the application and not on the first request. Settings come
%%% from the application environment (wasi_nn_sup:server_options/0).
-module(wasi_nn_app).
-behaviour(application).

-export([start/2, stop/1]).

start(_Type, _Args) ->
    wasi_nn_sup:start_link().

stop(_State) ->
    ok.
