"""Shared by the tests of config/ (tests/config is on sys.path while they run): reading a
parsed setting by its path, expecting an error that names given parts, and the original C
backend's test configs (original_backend.md section 7), which several subjects reuse."""
from __future__ import annotations

import pytest

from wasi_nn_backend.config import RequestParams, parse_config, parse_overrides


def get(cfg, path: str):
    section, field = path.split(".")
    return getattr(getattr(cfg, section), field)


def raises_naming(exc_type, source, *parts, base=None, overrides=False):
    parse = (lambda: parse_overrides(source, base=base or RequestParams())) if overrides \
        else (lambda: parse_config(source, base=base))
    with pytest.raises(exc_type) as info:
        parse()
    for part in parts:
        assert part in info.value.message, (part, info.value.message)
    return info.value.message


# The original's test configs (original_backend.md section 7).
ORIGINAL_CONFIGS = {
    "2_legacy_flat": '{"max_sessions":25,"idle_timeout_ms":150000,"auto_cleanup":false,'
                     '"max_concurrent":2,"queue_size":10}',
    "3_nested": '{"backend":{"max_sessions":100,"idle_timeout_ms":300000,"auto_cleanup":true,'
                '"max_concurrent":8,"queue_size":50},"memory_policy":{"context_shifting":true,'
                '"cache_strategy":"lru","max_cache_tokens":10000},"logging":{"level":"info",'
                '"enable_debug":false},"performance":{"batch_processing":true,"batch_size":512}}',
    "4_legacy_model": '{"n_gpu_layers":48,"ctx_size":1024,"n_predict":256,"batch_size":256,'
                      '"threads":4,"temp":0.8,"top_p":0.9,"repeat_penalty":1.05}',
    "5_enhanced_model": '{"model":{"n_gpu_layers":98,"ctx_size":2048,"n_predict":512,'
                        '"batch_size":512,"threads":8},"sampling":{"temp":0.7,"top_p":0.95,'
                        '"top_k":40,"min_p":0.05,"typical_p":1.0,"repeat_penalty":1.10,'
                        '"presence_penalty":0.0,"frequency_penalty":0.0,"penalty_last_n":64,'
                        '"mirostat":0,"mirostat_tau":5.0,"mirostat_eta":0.1,"seed":-1},'
                        '"stopping":{"stop":["\\n\\n","User:","Assistant:"],"max_tokens":512,'
                        '"max_time_ms":30000,"ignore_eos":false},"memory":{"context_shifting":true,'
                        '"cache_prompt":true,"max_cache_tokens":10000}}',
    "6_inference_init": '{"max_concurrent":4}',
    "6_inference_load": '{"n_gpu_layers":98,"ctx_size":2048,"n_predict":100,'
                        '"sampling":{"temp":0.7}}',
    "7_sampling": '{"model":{"n_gpu_layers":98,"ctx_size":1024,"n_predict":80},"sampling":{'
                  '"temp":0.9,"top_p":0.8,"top_k":30,"min_p":0.1,"typical_p":0.95,'
                  '"repeat_penalty":1.15,"presence_penalty":0.1,"frequency_penalty":0.1,'
                  '"penalty_last_n":32,"mirostat":1,"mirostat_tau":4.0,"mirostat_eta":0.2,'
                  '"seed":12345},"stopping":{"stop":[".","!","?"],"max_tokens":80,'
                  '"ignore_eos":true}}',
    "8_load": '{"n_gpu_layers":98,"ctx_size":2048,"n_predict":50,'
              '"sampling":{"temp":0.7,"top_p":0.9}}',
    "10_cleanup": '{"max_sessions":3,"idle_timeout_ms":100,"auto_cleanup_enabled":true,'
                  '"max_concurrent":2}',
    "10_cleanup_off": '{"max_sessions":2,"idle_timeout_ms":50,"auto_cleanup_enabled":false}',
    "10_load": '{"n_gpu_layers":0,"ctx_size":512,"n_predict":10}',
    "11_concurrency": '{"max_concurrent":2,"queue_size":5}',
    "11_load": '{"n_gpu_layers":98,"ctx_size":1024,"n_predict":50}',
    "12_logging": '{"model":{"n_gpu_layers":49,"ctx_size":2048,"n_predict":128,"batch_size":512,'
                  '"threads":8},"logging":{"level":"debug","enable_debug":true,"timestamps":true,'
                  '"colors":false,"file":"/tmp/wasi_nn_test.log"},"backend":{"max_sessions":50,'
                  '"max_concurrent":4,"queue_size":20}}',
    "13_none": '{"model":{"n_gpu_layers":10,"ctx_size":1024},"logging":{"level":"none"}}',
    "15_switch": '{"model":{"n_gpu_layers":49,"ctx_size":2048,"batch_size":512,"threads":4},'
                 '"backend":{"max_sessions":50,"max_concurrent":4,"queue_size":20},'
                 '"logging":{"level":"info","enable_debug":true}}',
    "22_phase42": '{"model":{"n_gpu_layers":49,"ctx_size":2048,"n_predict":128,"batch_size":512,'
                  '"threads":8},"sampling":{"temp":0.7,"top_p":0.95,"top_k":40},"backend":{'
                  '"max_sessions":100,"max_concurrent":2,"queue_size":5,'
                  '"default_task_timeout_ms":30000,"priority_scheduling_enabled":true,'
                  '"fair_scheduling_enabled":true,"queue_warning_threshold":4,'
                  '"queue_reject_threshold":5}}',
    "25_task_queue": '{"backend":{"max_concurrent":4,"queue_size":10,'
                     '"default_task_timeout_ms":60000,'
                     '"priority_scheduling_enabled":true,"fair_scheduling_enabled":false,'
                     '"queue_warning_threshold":8,"queue_reject_threshold":10},"model":{'
                     '"n_gpu_layers":98,"ctx_size":4096,"threads":16}}',
    "26_unicode": '{"model":{"path":"模型文件.gguf","name":"测试模型",'
                  '"description":"🤖 AI测试 🚀"}}',
    "26_deep": '{"level1":{"level2":{"level3":{"level4":{"level5":{"level6":{"level7":{"level8":'
               '{"level9":{"level10":{"value":"deep"}}}}}}}}}}}',
}
