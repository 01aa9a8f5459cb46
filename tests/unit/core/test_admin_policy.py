"""The admin policy: layers that only narrow, fail-closed on broken files, and no user override."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from desktop.core.config import Settings, load_config
from desktop.core.install.admin import POLICY_ENV, AdminPolicy, load_policy
from desktop.core.results import UpdateOutcome
from desktop.core.shell import Shell


def write(path: Path, obj: object) -> Path:
    path.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
    return path


def test_no_policy_file_restricts_nothing(tmp_path: Path) -> None:
    policy = load_policy([tmp_path / "missing.json", tmp_path / "also-missing" / "policy.json"])
    assert policy == AdminPolicy() and not policy.in_force and policy.describe() == ""


def test_the_admins_file_turns_updates_off_pins_a_channel_caps_versions_and_names_a_feed(tmp_path: Path) -> None:
    admin = write(tmp_path / "admin.json", {
        "shell_updates": False, "channel": "stable", "runtime_versions": "<2", "shell_versions": "<1.5",
        "feed": {"url": "https://updates.example.internal/feed/", "trusted_root": "/etc/desktop-shell/root.json"},
        "message": "Managed by Example IT."})
    policy = load_policy([admin])
    assert (policy.shell_updates, policy.runtime_updates, policy.channel) == (False, True, "stable")
    assert policy.runtime_versions == SpecifierSet("<2") and policy.shell_versions == SpecifierSet("<1.5")
    assert policy.feed is not None and policy.feed.url == "https://updates.example.internal/feed/"
    assert policy.sources == (str(admin),)
    assert policy.describe() == ("Managed by policy: the app's own updates are turned off; channel stable; "
                                 "runtime <2; app <1.5; updates come from your organisation's feed. "
                                 "Managed by Example IT.")


def test_a_weaker_layer_only_narrows(tmp_path: Path) -> None:
    admin = write(tmp_path / "admin.json", {"runtime_updates": False, "channel": "stable", "runtime_versions": "<3",
                                            "feed": {"url": "https://a.example/feed/", "public_key": "k"}})
    extra = write(tmp_path / "extra.json", {"runtime_updates": True, "shell_updates": False, "channel": "alpha",
                                            "runtime_versions": ">=1.5",
                                            "feed": {"url": "https://b.example/feed/", "public_key": "k"}})
    policy = load_policy([admin, extra])
    assert policy.runtime_updates is False  # the weaker layer cannot turn it back on
    assert policy.shell_updates is False  # but it can turn more off
    assert policy.channel == "stable" and policy.feed is not None and policy.feed.url == "https://a.example/feed/"
    assert policy.runtime_versions == SpecifierSet(">=1.5,<3")


@pytest.mark.parametrize(("content", "problem"), [
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "does not hold a JSON object"),
    ('{"runtime_updates": "no"}', "'runtime_updates' must be true or false"),
    ('{"runtime_versions": "two"}', "is not a version specifier"),
    ('{"feed": {"url": "https://x.example/"}}', "needs its 'trusted_root'"),
    ('{"feed": {"url": "https://x.example/", "trusted_root": "root.json"}}', "must be an absolute path"),
    ('{"channel": 7}', "'channel' must be a channel name"),
])
def test_a_broken_policy_file_turns_updates_off_and_says_why(tmp_path: Path, content: str, problem: str) -> None:
    policy = load_policy([write(tmp_path / "policy.json", content)])
    assert (policy.shell_updates, policy.runtime_updates, policy.in_force) == (False, False, True)
    assert len(policy.problems) == 1 and problem in policy.problems[0]
    assert policy.describe().startswith("Managed by policy: updates are off: ")


def test_a_directory_where_the_policy_file_should_be_is_a_problem_too(tmp_path: Path) -> None:
    (tmp_path / "policy.json").mkdir()
    assert load_policy([tmp_path / "policy.json"]).problems == (f"{tmp_path / 'policy.json'} is not a regular file",)


def test_unknown_settings_are_ignored_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    policy = load_policy([write(tmp_path / "p.json", {"auto_update": False, "channel": "beta"})])
    assert policy.channel == "beta" and not policy.problems
    assert "unknown setting 'auto_update' ignored" in caplog.text


def test_the_user_cannot_override_the_policy_with_settings_flags_or_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write(tmp_path / "root.json", "{}")
    monkeypatch.setenv(POLICY_ENV, str(write(tmp_path / "policy.json", {
        "channel": "stable", "feed": {"url": "https://corp.example/feed/", "trusted_root": str(root)}})))
    data = tmp_path / "data"
    Settings(channel="alpha").save(data / "settings.json")
    monkeypatch.setenv("DESKTOP_REGISTRY", "https://elsewhere.example/feed/")
    monkeypatch.setenv("DESKTOP_TRUSTED_ROOT", str(tmp_path / "mine.json"))
    config = load_config(data_dir=data, registry="https://flag.example/feed/", channel="beta",
                         public_key="ed25519:" + "00" * 32, trusted_root=tmp_path / "flag-root.json")
    assert (config.registry_url, config.registry_kind, config.channel) == ("https://corp.example/feed/", "feed",
                                                                           "stable")
    assert (config.trusted_root, config.public_key) == (root, None)
    saved = Shell(config).save_settings(Settings(channel="alpha"))
    assert saved.config.channel == "stable"


def test_runtime_updates_off_means_no_check_and_no_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(POLICY_ENV, str(write(tmp_path / "policy.json", {"runtime_updates": False})))
    # A registry nobody listens on: any request would fail the update instead of disabling it.
    shell = Shell.open(data_dir=tmp_path / "data", registry="http://127.0.0.1:9/feed/",
                       public_key="ed25519:" + "00" * 32)
    report = shell.update()
    assert report.outcome is UpdateOutcome.DISABLED and report.error is None
    check = shell.check()
    assert check.available is None and check.current == report.version
    info = shell.policy_info()
    assert (info.in_force, info.runtime_updates, info.text) == (True, False,
                                                                "Managed by policy: runtime updates are turned off")


def test_the_environment_layer_cannot_loosen_a_stronger_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    admin = write(tmp_path / "admin.json", {"shell_updates": False})
    monkeypatch.setenv(POLICY_ENV, str(write(tmp_path / "mine.json", {"shell_updates": True})))
    from desktop.core.install import admin as module

    monkeypatch.setattr(module, "system_policy_paths", lambda: (admin,))
    policy = load_policy()
    assert policy.shell_updates is False
    assert policy.sources == (str(admin), str(tmp_path / "mine.json"))
