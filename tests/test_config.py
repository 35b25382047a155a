"""Configuration: defaults < TOML < DOWNSTREAM_* < command line, and clear errors."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from downstream_tx.config import SETTINGS, ConfigError, load_config, mask_db_url, parse_db_url, public_url_from_endpoint
from downstream_tx.tap import Options, config_from_options


def write(tmp_path, text):
    path = tmp_path / "node.toml"
    path.write_text(text)
    return str(path)


def test_defaults_documented_and_sane():
    config = load_config(None, environ={})
    assert config.listen == "tcp:5000:interface=127.0.0.1"
    assert config.data_dir == "./downstream-data"
    assert config.db_url == "sqlite:///./downstream-data/downstream.db"
    assert config.chunk_path == "./downstream-data/chunks"
    assert config.base_url == "http://127.0.0.1:5000"
    assert config.tick == 1.0 and config.max_failures == 3
    assert config.challenge_batch == 100 and config.challenge_low_water == 20
    for s in SETTINGS:
        assert s.help, s.name


def test_precedence_file_env_command_line(tmp_path):
    path = write(tmp_path, 'tick = 5\nmax_failures = 4\nlisten = "tcp:7000"\npublic_url = "http://file"\n')
    env = {"DOWNSTREAM_MAX_FAILURES": "6", "DOWNSTREAM_LISTEN": "tcp:7001"}
    config = load_config(path, env, {"listen": "tcp:7002"})
    assert config.tick == 5.0  # file
    assert config.max_failures == 6  # env beats file
    assert config.listen == "tcp:7002"  # command line beats env
    assert config.public_url == "http://file"


def test_config_file_from_environment(tmp_path):
    path = write(tmp_path, "challenge_batch = 50\n")
    assert load_config(None, {"DOWNSTREAM_CONFIG": path}).challenge_batch == 50


def test_downstream_table_allowed(tmp_path):
    path = write(tmp_path, "[downstream]\ntick = 2\n")
    assert load_config(path, {}).tick == 2.0


def test_one_rule_for_keys_top_level_and_in_the_table(tmp_path):
    """Keys are the documented names (underscores), at the top level, in [downstream], or both."""
    both = load_config(write(tmp_path, 'tick = 2\n[downstream]\nmax_failures = 5\n'), {})
    assert (both.tick, both.max_failures) == (2.0, 5)
    for text, message in [
        ('public-url = "http://a.example"\n', "unknown setting 'public-url' (settings are spelt with underscores: "
                                              "public_url)"),
        ('[downstream]\npublic-url = "http://a.example"\n', "unknown setting [downstream] 'public-url' (settings "
                                                            "are spelt with underscores: public_url)"),
        ('tick = 2\n[downstream]\ntick = 3\n', "'tick' is set both at the top level and in [downstream]"),
        ('[other]\ntick = 3\n', "unknown setting 'other'"),
        ('downstream = 3\n', "'downstream' must be a table"),
    ]:
        with pytest.raises(ConfigError) as e:
            load_config(write(tmp_path, text), {})
        assert message in str(e.value) and "\n" not in str(e.value)


def test_sources_name_where_each_value_came_from(tmp_path):
    path = write(tmp_path, 'tick = 2\nlisten = "tcp:7000"\n')
    config = load_config(path, {"DOWNSTREAM_MAX_FAILURES": "6"}, {"listen": "tcp:7002"})
    rows = {name: (value, source) for name, value, source in config.describe_sources()}
    assert rows["tick"] == ("2.0", f"file {path}")
    assert rows["max_failures"] == ("6", "env DOWNSTREAM_MAX_FAILURES")
    assert rows["listen"] == ("tcp:7002", "flag --listen")
    assert rows["max_body_size"] == ("1048576", "default")
    # derived defaults are shown resolved, not blank
    assert rows["chunk_dir"] == ("./downstream-data/chunks", "default (<data_dir>/chunks)")
    assert rows["db"][0] == "sqlite:///./downstream-data/downstream.db"
    assert rows["public_url"][0] == "http://127.0.0.1:7002"
    assert config.replace(public_url="http://x.example").source_of("public_url") == "derived at start"


@pytest.mark.parametrize("source, message", [
    ({"DOWNSTREAM_LISTEN": "tcp:notaport"}, "listen: the port of a tcp: endpoint must be a number"),
    ({"DOWNSTREAM_LISTEN": "tcp:99999"}, "listen: the port of a tcp: endpoint must be a number"),
    ({"DOWNSTREAM_LISTEN": "systemd:domain=INET"}, "listen: a systemd: endpoint needs exactly one of index"),
    ({"DOWNSTREAM_LISTEN": "ssl:443"}, "listen: a ssl: endpoint needs privateKey"),
    ({"DOWNSTREAM_METRICS_LISTEN": "tcp:x"}, "metrics_listen: the port of a tcp: endpoint"),
    ({"DOWNSTREAM_MAX_BODY_SIZE": "4XB"}, "max_body_size: expected a whole number (sizes may end in KiB"),
    ({"DOWNSTREAM_PUBLIC_URL": "node.example:5000"}, "public_url: must be an http:// or https:// URL"),
    ({"DOWNSTREAM_PUBLIC_URL": "http://node.example:50x0"}, "public_url: the port is not a number"),
    ({"DOWNSTREAM_PUBLIC_URL": "ftp://node.example"}, "public_url: must be an http:// or https:// URL"),
    ({"DOWNSTREAM_PUBLIC_URL": "http://:pw@node.example"}, "public_url: must be scheme://host[:port][/path]"),
    ({"DOWNSTREAM_REQUIRE_SIGNATURE": "true"}, "signature_names_node: signed messages must name this node's "
                                               "public_url, which is not set: set public_url"),
    ({"DOWNSTREAM_DB": "mysql://u:p@h:port/d"}, "db: the port is not a number"),
])
def test_listeners_sizes_and_urls_are_checked_when_loaded(source, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, source)
    assert message in str(e.value), str(e.value)
    assert "invalid literal" not in str(e.value) and "db: db:" not in str(e.value)


def test_good_listeners_and_urls_pass():
    for listen in ("tcp:0", "tcp:port=80:interface=0.0.0.0", "tcp6:5000:interface=\\:\\:", "unix:/run/x.sock",
                   "systemd:domain=INET:index=0", "ssl:443:privateKey=k.pem:certKey=c.pem"):
        assert load_config(None, {"DOWNSTREAM_LISTEN": listen}).listen == listen
    for url in ("http://node.example:5000", "https://node.example/downstream", "http://127.0.0.1:5000/"):
        assert load_config(None, {"DOWNSTREAM_PUBLIC_URL": url}).public_url == url
    # signatures naming this node need its public URL; without that check, none is needed
    assert load_config(None, {"DOWNSTREAM_REQUIRE_SIGNATURE": "true", "DOWNSTREAM_PUBLIC_URL": "http://n.example"})
    assert load_config(None, {"DOWNSTREAM_REQUIRE_SIGNATURE": "true", "DOWNSTREAM_SIGNATURE_NAMES_NODE": "false"})


def test_db_password_file_keeps_the_password_out_of_the_url(tmp_path):
    secret = tmp_path / "db.pw"
    secret.write_text("p@ss:w/rd%\n")
    config = load_config(None, {"DOWNSTREAM_DB": "mysql://node@db.example/downstream",
                                "DOWNSTREAM_DB_PASSWORD_FILE": str(secret)})
    url = parse_db_url(config.db_url)
    assert (url.user, url.password, url.host, url.database) == ("node", "p@ss:w/rd%", "db.example", "downstream")
    assert "p@ss" not in repr(config) and "p@ss" not in repr(config.describe_sources())
    with pytest.raises(ConfigError, match="db_password_file: the db URL has a password too"):
        load_config(None, {"DOWNSTREAM_DB": "mysql://node:x@db/d", "DOWNSTREAM_DB_PASSWORD_FILE": str(secret)})
    with pytest.raises(ConfigError, match="db_password_file: only a mysql:// database"):
        load_config(None, {"DOWNSTREAM_DB_PASSWORD_FILE": str(secret)})
    with pytest.raises(ConfigError, match="db_password_file: cannot read"):
        load_config(None, {"DOWNSTREAM_DB": "mysql://node@db/d", "DOWNSTREAM_DB_PASSWORD_FILE": str(tmp_path / "no")})


def test_command_line_options_cover_every_setting(tmp_path):
    options = Options()
    options.parseOptions(["--tick", "0.5", "--max-failures", "7", "--db", "sqlite:///x.db", "--data-dir", "d"])
    config = config_from_options(options, environ={})
    assert (config.tick, config.max_failures, config.db_url, config.data_dir) == (0.5, 7, "sqlite:///x.db", "d")
    flags = {o[0] for o in Options.optParameters}
    assert {s.option for s in SETTINGS} <= flags


@pytest.mark.parametrize(
    "source, message",
    [
        ({"DOWNSTREAM_TICK": "fast"}, "tick:"),
        ({"DOWNSTREAM_TICK": "0"}, "tick: must be greater than 0"),
        ({"DOWNSTREAM_MAX_FAILURES": "0"}, "max_failures: must be at least 1"),
        ({"DOWNSTREAM_DB": "postgres://x"}, "db: must start with sqlite:/// or mysql://"),
        ({"DOWNSTREAM_DB": "mysql://u:p@h/"}, "db: mysql URL needs a database name"),
        ({"DOWNSTREAM_WHITELIST": "maybe"}, "whitelist: expected true or false"),
        ({"DOWNSTREAM_LOG_FORMAT": "xml"}, "log_format: must be one of text, json"),
        ({"DOWNSTREAM_TRUSTED_PROXIES": "10.0.0.1, nope"}, "trusted_proxies:"),
        ({"DOWNSTREAM_SEEDED_POOL": "1024"}, "seeded_pool:"),
        ({"DOWNSTREAM_CHALLENGE_LOW_WATER": "500"}, "challenge_low_water: must be smaller"),
    ],
)
def test_invalid_settings_name_the_setting(source, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, source)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_secret_not_echoed_in_errors_and_masked_in_describe():
    with pytest.raises(ConfigError) as e:
        load_config(None, {"DOWNSTREAM_DB": "ftp://user:hunter2@host/db"})
    assert "hunter2" not in str(e.value)
    config = load_config(None, {"DOWNSTREAM_DB": "mysql://user:hunter2@db.example:3306/node"})
    shown = dict(config.describe())
    assert shown["db"] == "mysql://user:***@db.example:3306/node"
    assert "hunter2" not in repr(config.describe())


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(str(tmp_path / "missing.toml"), {})
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "tick = = 1"), {})
    with pytest.raises(ConfigError, match="unknown setting 'tock'"):
        load_config(write(tmp_path, "tock = 1"), {})
    with pytest.raises(ConfigError, match="max_failures: expected an integer"):
        load_config(write(tmp_path, 'max_failures = true'), {})


def test_sizes_and_pools():
    config = load_config(None, {"DOWNSTREAM_MAX_FILE_SIZE": "2MiB", "DOWNSTREAM_SEEDED_POOL": "1MiB:3, 4096:2"})
    assert config.max_file_size == 2 << 20
    assert config.seeded_pool == ((4096, 2), (1 << 20, 3))


def test_db_urls():
    assert parse_db_url("sqlite:///rel/x.db").path == "rel/x.db"
    assert parse_db_url("sqlite:////abs/x.db").path == "/abs/x.db"
    url = parse_db_url("mysql://us%40er:p%3Ass@db:3307/name")
    assert (url.user, url.password, url.host, url.port, url.database) == ("us@er", "p:ss", "db", 3307, "name")
    assert mask_db_url("mysql://a:b@h/d") == "mysql://a:***@h/d"


def test_public_url_from_endpoint():
    assert public_url_from_endpoint("tcp:8080:interface=10.1.2.3") == "http://10.1.2.3:8080"
    assert public_url_from_endpoint("tcp:port=80") == "http://127.0.0.1:80"
    assert public_url_from_endpoint("ssl:port=8443:privateKey=k.pem") == "https://127.0.0.1:8443"
    assert public_url_from_endpoint("tcp:5000:interface=\\:\\:1") == "http://[::1]:5000"


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from([s.env for s in SETTINGS]), st.text(max_size=30), max_size=4))
def test_any_environment_either_loads_or_raises_config_error(env):
    try:
        load_config(None, env)
    except ConfigError as e:
        assert str(e).split(":")[0] in {s.name for s in SETTINGS} | {"db"}


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_config_file_either_loads_or_raises_config_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("cfg") / "c.toml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        load_config(str(path), {})
    except ConfigError:
        pass


def _of_type(value, hint) -> bool:
    """``value`` is of the type ``hint`` (a class, ``X | None``, ``tuple[X, ...]``)."""
    import types
    import typing

    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_of_type(value, arg) for arg in typing.get_args(hint))
    if origin is tuple:
        args = typing.get_args(hint)
        return isinstance(value, tuple) and all(_of_type(v, args[0]) for v in value)
    if hint is type(None):
        return value is None
    return isinstance(value, hint) and not (hint is int and isinstance(value, bool))


def test_the_config_is_one_typed_field_per_setting():
    """Parsed once into typed fields: a setting's value (its default, and a value read) is of its
    field's type; a name that is not a setting is no attribute."""
    import dataclasses
    import typing

    from downstream_tx.config import SETTINGS, Config

    hints = typing.get_type_hints(Config)
    fields = [f.name for f in dataclasses.fields(Config)]
    assert fields[:len(SETTINGS)] == [s.name for s in SETTINGS]
    assert fields[len(SETTINGS):] == ["sources", "db_password", "config_file"]
    config = load_config(None, environ={}, overrides={"trusted_proxies": "10.0.0.0/8", "seeded_pool": "1MiB:2",
                                                     "tick": "2", "workers": "3", "public_url": "http://n:1"})
    for s in SETTINGS:
        assert _of_type(s.default, hints[s.name]), s.name
        assert _of_type(getattr(config, s.name), hints[s.name]), s.name
    assert (config.tick, config.workers, config.seeded_pool) == (2.0, 3, ((1 << 20, 2),))
    with pytest.raises(AttributeError):
        config.no_such_setting  # noqa: B018
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.tick = 3.0
    assert config.replace(tick=5.0).tick == 5.0 and config.replace(tick=5.0).source_of("tick") == "derived at start"
    with pytest.raises(TypeError):
        config.replace(no_such_setting=1)
