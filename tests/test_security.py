"""Files that can run code when loaded (SB3 zips, Ray Tune's sweep state) are loaded only
with this user's signature or ``--trust``; the run's record decides the loader, so a zip
planted in a PPO run dir is never opened. A planted pickle payload never runs."""

from __future__ import annotations

import base64
import json
import os
import pickle
import shutil
import stat
import zipfile
from pathlib import Path

import pytest
from run_configs import small_ppo

from stockgym.agents import integrity
from stockgym.agents.integrity import UntrustedFileError, signing_key, write_with_digest
from stockgym.cli import main
from stockgym.experiment import train


@pytest.fixture(autouse=True)
def config_dir(tmp_path, monkeypatch):
    """The signing key lives in a tmp config dir, never the user's."""
    d = tmp_path / "config"
    monkeypatch.setenv(integrity.CONFIG_DIR_ENV, str(d))
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    return d


class _Payload:
    """Unpickling this creates ``marker`` (``open(marker, "w")``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant_zip(path: Path, marker: Path) -> None:
    """An SB3-shaped zip whose ``data`` holds a cloudpickled payload, as SB3's loader
    deserializes it (``":serialized:"`` values are unpickled)."""
    blob = base64.b64encode(pickle.dumps(_Payload(marker))).decode()
    data = {"policy_class": {":type:": "<class 'type'>", ":serialized:": blob}}
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("data", json.dumps(data))


@pytest.fixture(scope="module")
def ppo_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("ppo")
    cfg = small_ppo(tmp / "run", tensorboard=False)
    return train(cfg).run_dir


def _forge_sb3_run(src: Path, dst: Path, marker: Path) -> Path:
    """A copy of a PPO run whose record says sb3-ppo, with a planted ``model/sb3.zip``."""
    shutil.copytree(src, dst)
    record = json.loads((dst / "config.json").read_text())
    record["config"]["algo"] = "sb3-ppo"
    (dst / "config.json").write_text(json.dumps(record))
    plant_zip(dst / "model" / "sb3.zip", marker)
    meta = {"format": "stockgym.sb3_agent", "algo": "sb3-ppo", "config": {"algo": "sb3-ppo"}}
    (dst / "model" / "agent.json").write_text(json.dumps(meta))
    return dst


def test_the_payload_is_real(tmp_path):
    """The control: unpickled through SB3 with trust, the planted zip does create the
    marker, so the refusals below guard something."""
    from stockgym.agents.sb3 import SB3Agent

    marker = tmp_path / "pwned"
    zdir = tmp_path / "m"
    plant_zip(zdir / "sb3.zip", marker)
    (zdir / "agent.json").write_text(
        json.dumps(
            {"format": "stockgym.sb3_agent", "algo": "sb3-ppo", "config": {"algo": "sb3-ppo"}}
        )
    )
    with pytest.raises(Exception):  # noqa: B017 - whatever SB3 makes of the rest
        SB3Agent.load(zdir, trust=True)
    assert marker.exists()


@pytest.mark.parametrize("command", ["signal", "backtest"])
def test_planted_payload_in_an_sb3_run_is_refused(ppo_run, tmp_path, capsys, command):
    marker = tmp_path / "pwned"
    run = _forge_sb3_run(ppo_run, tmp_path / "forged", marker)
    argv = [command, "--model", str(run)]
    if command == "backtest":
        argv += ["--out", str(tmp_path / "bt"), "--no-plots"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"refusing to load {run / 'model' / 'sb3.zip'}" in err and "--trust" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not marker.exists()


@pytest.mark.parametrize("command", ["signal", "backtest"])
def test_stray_zip_in_a_ppo_run_is_never_opened(ppo_run, tmp_path, capsys, command):
    marker = tmp_path / "pwned"
    run = tmp_path / "ppo"
    shutil.copytree(ppo_run, run)
    plant_zip(run / "model" / "sb3.zip", marker)
    argv = [command, "--model", str(run), "--trust"]  # even trusted: the record says ppo
    if command == "backtest":
        argv += ["--out", str(tmp_path / "bt"), "--no-plots"]
    code = main(argv)
    assert code == 0, capsys.readouterr().err
    assert not marker.exists()


def test_signed_zip_loads_and_a_changed_one_is_refused(tmp_path):
    from stockgym.agents.sb3 import SB3Agent

    path = tmp_path / "f.zip"
    write_with_digest(path, b"payload", signed=True)
    sig = Path(str(path) + ".sig")
    assert sig.is_file()
    assert integrity.read_verified(path, signed=True) == b"payload"
    # a tamperer who can write the digest but not the key
    path.write_bytes(b"payloaX")
    write_with_digest(tmp_path / "g.zip", b"payloaX")  # a fresh, unsigned digest
    Path(str(path) + ".sha256").write_bytes(Path(str(tmp_path / "g.zip") + ".sha256").read_bytes())
    with pytest.raises(UntrustedFileError, match=r"f\.zip.*--trust"):
        integrity.read_verified(path, signed=True)
    assert integrity.read_verified(path, signed=True, trust=True) == b"payloaX"
    sig.unlink()
    with pytest.raises(UntrustedFileError, match="no signature"):
        integrity.read_verified(path, signed=True)
    del SB3Agent


def test_a_kill_between_sidecar_and_file_still_verifies(tmp_path):
    """The sidecar is written first and lists the previous value too: the old file with
    the new sidecar (killed in between) verifies; a third version does not."""
    path = tmp_path / "m.zip"
    write_with_digest(path, b"v1", signed=True)
    old = path.read_bytes()
    write_with_digest(path, b"v2", signed=True)
    path.write_bytes(old)  # as if killed after the sidecars, before the file
    assert integrity.read_verified(path, signed=True) == b"v1"
    path.write_bytes(b"v3")
    with pytest.raises(ValueError, match="corrupt"):
        integrity.read_verified(path, signed=True)


def test_signing_key_is_private_and_per_user(config_dir, monkeypatch):
    old = os.umask(0o022)
    try:
        key = signing_key()
    finally:
        os.umask(old)
    f = config_dir / integrity.KEY_FILE
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert signing_key() == key and len(key) == 32
    monkeypatch.setenv(integrity.CONFIG_DIR_ENV, str(config_dir.parent / "other"))
    assert signing_key() != key  # another user's key signs differently


def test_sweep_state_needs_the_signature(tmp_path):
    from stockgym.sweep.state import TUNE_SIG, check_tune_state, sign_tune_state

    sweep = tmp_path / "sweep"
    (sweep / "tune").mkdir(parents=True)
    marker = tmp_path / "pwned"
    (sweep / "tune" / "tuner.pkl").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(UntrustedFileError, match=r"tuner\.pkl.*--trust"):
        check_tune_state(sweep)
    sign_tune_state(sweep)
    assert (sweep / TUNE_SIG).is_file()
    check_tune_state(sweep)  # signed by us: accepted
    (sweep / "tune" / "experiment_state-x.json").write_text("{}")  # planted later
    with pytest.raises(UntrustedFileError, match="experiment_state-x"):
        check_tune_state(sweep)
    check_tune_state(sweep, trust=True)
    assert not marker.exists()


def test_trust_flags_exist():
    from stockgym.cli import build_parser

    parser = build_parser()
    for argv in (
        ["signal", "--model", "x", "--trust"],
        ["backtest", "--model", "x", "--trust"],
        ["sweep", "s.toml", "--resume", "--trust"],
    ):
        assert parser.parse_args(argv).trust is True


def test_trust_without_model_is_refused(capsys):
    assert main(["backtest", "--strategy", "buy_and_hold", "--symbol", "X", "--trust"]) == 2
    assert "--trust applies to --model only" in capsys.readouterr().err


def test_sweep_resume_refuses_planted_state_before_ray_starts(tmp_path, monkeypatch):
    """``run_trials(resume=True)`` checks Tune's state before anything restores it (and
    before Ray is started): a planted ``tuner.pkl`` is refused, its payload never runs."""
    import ray

    from stockgym.sweep.runner import run_trials

    def no_init(*a, **k):
        raise AssertionError("ray.init was called")

    monkeypatch.setattr(ray, "init", no_init)
    sweep = tmp_path / "sweep"
    (sweep / "tune").mkdir(parents=True)
    marker = tmp_path / "pwned"
    (sweep / "tune" / "tuner.pkl").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(UntrustedFileError, match=r"tuner\.pkl.*--trust"):
        run_trials(None, {"trials": []}, sweep, resume=True)
    assert not marker.exists()
