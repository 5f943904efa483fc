"""init() takes every keyword of Ray's ray.init: honours what actorhub can, warns in one line about the rest."""

from __future__ import annotations

import inspect
import logging
import os
from pathlib import Path

import pytest

import actorhub
from actorhub.api import cluster as _cluster
from actorhub.api import init_options
from actorhub.exceptions import OptionsError
from actorhub.job_config import JobConfig

RAY_INIT_KEYWORDS = {
    "address", "num_cpus", "num_gpus", "resources", "labels", "object_store_memory", "local_mode",
    "ignore_reinit_error", "include_dashboard", "dashboard_host", "dashboard_port", "job_config",
    "configure_logging", "logging_level", "logging_format", "logging_config", "log_to_driver", "namespace",
    "runtime_env", "storage", "enable_resource_isolation", "cgroup_path", "system_reserved_cpu",
    "system_reserved_memory", "proxy_server_url",
}
RAY_HIDDEN_KEYWORDS = {
    "_enable_object_reconstruction", "_redis_max_memory", "_plasma_directory", "_node_ip_address",
    "_driver_object_store_memory", "_memory", "_redis_password", "_temp_dir", "_metrics_export_port",
    "_system_config", "_tracing_startup_hook", "_node_name", "_skip_env_hook",
}


def _resolve(**given: object) -> init_options.InitOptions:
    params = inspect.signature(actorhub.init).parameters
    args = {name: p.default for name, p in params.items() if name not in {"address", "num_cpus",
            "object_store_memory", "ignore_reinit_error", "logging_level", "namespace", "kwargs"}}
    hidden = {k: v for k, v in given.items() if k.startswith("_")}
    args.update({k: v for k, v in given.items() if not k.startswith("_")})
    return init_options.resolve(**args, hidden=hidden)  # type: ignore[arg-type]


def test_signature_has_every_ray_keyword() -> None:
    params = inspect.signature(actorhub.init).parameters
    assert RAY_INIT_KEYWORDS <= set(params), RAY_INIT_KEYWORDS - set(params)
    assert params["kwargs"].kind is inspect.Parameter.VAR_KEYWORD
    assert RAY_HIDDEN_KEYWORDS <= set(init_options._HIDDEN_IGNORED) | set(init_options.HIDDEN_HONOURED)


def test_ignored_options_are_named_and_honoured_ones_are_not() -> None:
    out = _resolve(
        num_gpus=1, resources={"TPU": 2}, dashboard_port=8265, include_dashboard=True, local_mode=True,
        storage="s3://x", _system_config={"a": 1}, _metrics_export_port=9000, _redis_password="5241590000000000",
        log_to_driver=False, runtime_env={"env_vars": {"A": "1"}}, _temp_dir="/tmp/x", _node_ip_address="10.0.0.2",
        _tracing_startup_hook="mod:setup",
    )
    line = init_options.warning_line(out.ignored)
    assert line.startswith("actorhub.init: ignoring ")
    assert "\n" not in line
    for shown in ("local_mode=True", "storage='s3://x'", "_system_config=", "_metrics_export_port=9000"):
        assert shown in line, (shown, line)
    for honoured in ("_redis_password", "log_to_driver", "runtime_env", "_temp_dir", "_node_ip_address",
                     "_tracing_startup_hook", "num_gpus", "resources", "dashboard"):
        assert honoured not in line, (honoured, line)
    assert out.config["log_to_driver"] is False
    assert out.config["job_runtime_env"] == {"env_vars": {"A": "1"}}
    assert out.config["session_root"] == Path("/tmp/x")
    assert out.config["node_ip_address"] == "10.0.0.2"
    assert out.config["tracing_startup_hook"] == "mod:setup"
    assert out.config["num_gpus"] == 1 and out.config["resources"] == {"TPU": 2.0}  # the local node's
    assert out.config["include_dashboard"] is True and out.config["dashboard_port"] == 8265
    assert _resolve().ignored == []  # Ray's defaults: nothing to warn about


def test_job_config_runtime_env_namespace_and_lifetime() -> None:
    job = JobConfig(runtime_env={"env_vars": {"J": "1"}}, ray_namespace="jobs", default_actor_lifetime="detached",
                    metadata={"team": "x"}, code_search_path=["/java"])
    out = _resolve(job_config=job)
    assert out.config["job_runtime_env"] == {"env_vars": {"J": "1"}}
    assert out.namespace == "jobs" and out.default_actor_lifetime == "detached"
    assert any("code_search_path" in item for item in out.ignored)
    # init()'s own runtime_env replaces the job config's, as in Ray.
    assert _resolve(job_config=job, runtime_env={"pip": ["x"]}).config["job_runtime_env"] == {"pip": ["x"]}
    assert JobConfig.from_json(job.to_json()).to_json() == job.to_json()


def test_bad_values_raise_typed_errors() -> None:
    with pytest.raises(TypeError, match="_no_such_option"):
        actorhub.init(_no_such_option=1)
    with pytest.raises(OptionsError, match="default_actor_lifetime"):
        JobConfig(default_actor_lifetime="forever")
    with pytest.raises(OptionsError, match="job_config"):
        actorhub.init(job_config={"runtime_env": {}})  # type: ignore[arg-type]
    with pytest.raises(OptionsError, match="runtime_env"):
        actorhub.init(runtime_env=["pip"])  # type: ignore[arg-type]
    with pytest.raises(OptionsError, match="namespace"):
        actorhub.init(namespace="")
    assert not actorhub.is_initialized()


@actorhub.remote
class Plain:
    def ping(self) -> str:
        return "pong"

    def pid(self) -> int:
        return os.getpid()


HOOK = """
import os


def setup():
    with open(os.environ["H5_HOOK_OUT"], "a") as out:
        out.write(f"{os.getpid()}\\n")
"""


def test_init_honours_options_and_is_a_context(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "root"
    root.mkdir(mode=0o700)
    (tmp_path / "h5_init_hook.py").write_text(HOOK)
    hook_out = tmp_path / "hook-ran"
    monkeypatch.setenv("H5_HOOK_OUT", str(hook_out))
    # Workers import the hook's module: it must be on their path.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    job = JobConfig(default_actor_lifetime="detached", runtime_env={"env_vars": {"J": "1"}})
    with caplog.at_level(logging.WARNING, logger="actorhub"):
        context = actorhub.init(
            num_cpus=1, _temp_dir=str(root), storage="s3://bucket", num_gpus=2, log_to_driver=False,
            job_config=job, namespace="init-options", _tracing_startup_hook="h5_init_hook:setup",
        )
    with context as ctx:
        warnings = [r.getMessage() for r in caplog.records if "actorhub.init: ignoring" in r.getMessage()]
        assert len(warnings) == 1, warnings
        assert "storage='s3://bucket'" in warnings[0] and "num_gpus" not in warnings[0]
        assert ctx["address"] == ctx.address and ctx.address_info["address"] == ctx.address
        assert ctx.dashboard_url is None
        assert Path(ctx["session_dir"]).parent == root
        config = _cluster.driver_config()
        assert config is not None and config.log_to_driver is False
        assert config.job_runtime_env == {"env_vars": {"J": "1"}}
        assert actorhub.get_runtime_context().namespace == "init-options"
        detached = Plain.remote()
        attached = Plain.options(lifetime="non_detached").remote()
        assert actorhub.get([detached.ping.remote(), attached.ping.remote()]) == ["pong", "pong"]
        runtime = _cluster.connected_runtime()
        assert runtime.hub.actor_info(detached.actor_id).detached is True
        assert runtime.hub.actor_info(attached.actor_id).detached is False
        # The startup hook ran in the actor's worker (a cluster init() started gets it).
        assert str(actorhub.get(detached.pid.remote())) in hook_out.read_text().split()
        assert actorhub.init(ignore_reinit_error=True) is context
    assert not actorhub.is_initialized()


def test_logging_format_configures_one_handler() -> None:
    logger = logging.getLogger("actorhub-init-options-test")
    try:
        init_options.configure_logging(logger, "info", "%(levelname)s|%(message)s")
        init_options.configure_logging(logger, "debug", "%(message)s!")  # a second init(): replaced, not added
        own = [h for h in logger.handlers if getattr(h, init_options._OWN_HANDLER, False)]
        assert len(own) == 1 and logger.level == logging.DEBUG
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
        assert own[0].format(record) == "hello!"
    finally:
        logger.handlers.clear()
